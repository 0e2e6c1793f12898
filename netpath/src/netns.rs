//! Entering network namespaces. `setns` is per thread, so work for another namespace
//! runs on a scoped thread that enters it and ends with it.
use std::{fs::File, os::fd::AsRawFd, path::Path};

use anyhow::{Context, Result};

/// Enters the namespace at `path` on the calling thread (and the threads it spawns later).
pub fn enter(path: &Path) -> Result<()> {
    let file = File::open(path).with_context(|| format!("open netns {}", path.display()))?;
    // SAFETY: plain syscall on an fd we own.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("setns into {}", path.display()));
    }
    Ok(())
}

/// Runs `f` on a fresh thread inside the namespace at `path` and returns its result.
pub fn run_in<T: Send>(path: &Path, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter(path)?;
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}
