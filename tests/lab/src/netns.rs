//! Named network namespaces (`/run/netns/NAME`, as `ip netns` makes them) that the
//! lab creates and removes; code runs inside one on a scoped thread.
use std::{
    fs::File,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
pub use netpath::netns::{enter, run_in};

pub const NETNS_DIR: &str = "/run/netns";

/// Makes /run/netns a shared mount of itself, as iproute2 does the first time it
/// creates a namespace. Done before we mount anything there: if iproute2 did it later
/// it would stack a fresh mount over ours, hiding our namespace files from our own
/// teardown (and from `ip netns del`).
fn prepare_netns_dir() -> Result<()> {
    static ONCE: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let mut done = ONCE.lock().unwrap_or_else(|p| p.into_inner());
    if *done {
        return Ok(());
    }
    std::fs::create_dir_all(NETNS_DIR).with_context(|| format!("create {NETNS_DIR}"))?;
    let dir = c"/run/netns";
    let none = std::ptr::null::<libc::c_char>();
    // SAFETY: valid C strings; propagation changes take no data.
    let shared = |flags| unsafe { libc::mount(none, dir.as_ptr(), none, flags, std::ptr::null()) };
    if shared(libc::MS_SHARED | libc::MS_REC) != 0 {
        // Not a mount point yet: bind it onto itself first.
        // SAFETY: valid C strings; a bind mount has no data argument.
        let rc = unsafe {
            libc::mount(
                dir.as_ptr(),
                dir.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            )
        };
        if rc != 0 || shared(libc::MS_SHARED | libc::MS_REC) != 0 {
            return Err(std::io::Error::last_os_error())
                .context("make /run/netns a shared bind mount (as iproute2 does)");
        }
    }
    *done = true;
    Ok(())
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
        prepare_netns_dir()?;
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
        ns.run(|| crate::nl::Nl::new()?.set_up_by_name("lo"))
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
