//! netpath in the host's fixed CNI paths (/opt/cni/bin, /etc/cni/net.d), where ctr
//! looks, for as long as a lab with containers runs.
use std::{
    fs::File,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use netpath::cni::install::{self, InstallOptions, CONFLIST};

const HOST_LOCK: &str = "/run/lock/netpath-lab-cni.lock";
const LOCK_WAIT: Duration = Duration::from_secs(300);

/// netpath installed in the host's CNI paths for as long as this lives, under an
/// exclusive lock (one lab with containers at a time); what was there before is put
/// back, what did not exist is removed.
pub struct HostCniInstall {
    _lock: File,
    created: Vec<PathBuf>,
    replaced: Vec<(PathBuf, Option<Vec<u8>>)>,
}

impl HostCniInstall {
    pub fn new(netpath_bin: &Path) -> Result<Self> {
        let lock = lock_host_paths()?;
        let mut me = Self {
            _lock: lock,
            created: Vec::new(),
            replaced: Vec::new(),
        };
        let opts = InstallOptions {
            bin_dir: install::DEFAULT_BIN_DIR.into(),
            conf_dir: install::DEFAULT_CONF_DIR.into(),
            network: "netpath-lab".into(),
            node: None,
            state_root: None,
        };
        for d in ["/opt/cni", "/opt/cni/bin", "/etc/cni", "/etc/cni/net.d"] {
            if !Path::new(d).exists() {
                std::fs::create_dir(d).with_context(|| format!("create {d}"))?;
                me.created.push(d.into());
            }
        }
        for f in [opts.bin_dir.join("netpath"), opts.conf_dir.join(CONFLIST)] {
            let before = std::fs::read(&f).ok();
            me.replaced.push((f, before));
        }
        install::install(netpath_bin, &opts)?;
        // ctr takes the first configuration by name: it must be ours.
        let mut confs: Vec<String> = std::fs::read_dir(&opts.conf_dir)?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| {
                [".conf", ".conflist", ".json"]
                    .iter()
                    .any(|s| n.ends_with(s))
            })
            .collect();
        confs.sort();
        if confs.first().map(String::as_str) != Some(CONFLIST) {
            bail!(
                "{} holds {:?}, which sorts before {CONFLIST}: ctr would use it instead",
                opts.conf_dir.display(),
                confs.first()
            );
        }
        Ok(me)
    }
}

fn lock_host_paths() -> Result<File> {
    std::fs::create_dir_all("/run/lock")?;
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(HOST_LOCK)
        .with_context(|| format!("open {HOST_LOCK}"))?;
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        // SAFETY: flock on an fd we own; released when it closes.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(f);
        }
        if Instant::now() > deadline {
            bail!(
                "another lab with containers holds {HOST_LOCK} (the host's CNI paths) for over {} s",
                LOCK_WAIT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Drop for HostCniInstall {
    fn drop(&mut self) {
        for (f, before) in self.replaced.drain(..) {
            let _ = match before {
                Some(bytes) => std::fs::write(&f, bytes),
                None => std::fs::remove_file(&f),
            };
        }
        for d in self.created.drain(..).rev() {
            let _ = std::fs::remove_dir(&d);
        }
    }
}
