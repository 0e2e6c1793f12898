//! Named network namespaces (`/run/netns/NAME`, as `ip netns` makes them) and running
//! code inside one. `setns` is per thread, so work runs on a scoped thread that enters
//! the namespace and leaves with it.
use std::{
    fs::File,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};

const NETNS_DIR: &str = "/run/netns";

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

/// A network namespace this process created; unmounted and removed on drop.
#[derive(Debug)]
pub struct NetNs {
    name: String,
    path: PathBuf,
}

impl NetNs {
    pub fn create(name: &str) -> Result<Self> {
        if name.is_empty() || name.len() > 64 || name.contains(['/', '\0']) {
            bail!("invalid namespace name {name:?}");
        }
        std::fs::create_dir_all(NETNS_DIR).with_context(|| format!("create {NETNS_DIR}"))?;
        let path = Path::new(NETNS_DIR).join(name);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .with_context(|| format!("create {} (namespace already exists?)", path.display()))?;
        // From here on the guard owns the mount point, so failures below still clean up.
        let ns = NetNs {
            name: name.to_string(),
            path,
        };
        let target = ns.path.clone();
        std::thread::spawn(move || -> Result<()> {
            // SAFETY: unshare only affects this short-lived thread.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error()).context("unshare(CLONE_NEWNET)");
            }
            bind_mount(Path::new("/proc/thread-self/ns/net"), &target)
        })
        .join()
        .expect("netns creation thread panicked")?;
        ns.run(|| crate::netlink::Netlink::new()?.set_up_by_name("lo"))
            .context("bring up lo")?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&self) -> Result<File> {
        File::open(&self.path).with_context(|| format!("open {}", self.path.display()))
    }

    pub fn run<T: Send>(&self, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        run_in(&self.path, f).with_context(|| format!("in namespace {}", self.name))
    }
}

fn bind_mount(src: &Path, dst: &Path) -> Result<()> {
    let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let (s, d) = (c(src), c(dst));
    // SAFETY: valid C strings; a bind mount has no data argument.
    let rc = unsafe {
        libc::mount(
            s.as_ptr(),
            d.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("bind-mount {} on {}", src.display(), dst.display()));
    }
    Ok(())
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let p = std::ffi::CString::new(self.path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: valid C string. Errors are ignored: drop must not panic, and a failed
        // unmount leaves the file busy, which the removal below reports.
        unsafe { libc::umount2(p.as_ptr(), libc::MNT_DETACH) };
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!("remove {}: {e}", self.path.display());
        }
    }
}
