//! Per-run name prefixes: reserved by creating a work directory, so two labs never
//! share one. The work directory records the lab's PID and its agents' PIDs, so a
//! later lab can clean up after one whose process died (killed, or its terminal
//! gone): namespaces, pins, published state and the agents it started.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

const WORKDIR_PREFIX: &str = "netpath-np";
const OWNER: &str = "owner.pid";
const AGENTS: &str = "agents.pid";

pub fn reserve_prefix() -> Result<(String, PathBuf)> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    remove_stale_runs();
    for _ in 0..64 {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        // splitmix64 over (pid, sequence, time) so nearby inputs land far apart.
        let mut z = ((std::process::id() as u64) << 32 | SEQ.fetch_add(1, Ordering::Relaxed))
            ^ t.rotate_left(17);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let prefix = format!("np{:05x}", z & 0xfffff);
        let workdir = std::env::temp_dir().join(format!("netpath-{prefix}"));
        match std::fs::create_dir(&workdir) {
            Ok(()) => {
                std::fs::write(workdir.join(OWNER), std::process::id().to_string())?;
                return Ok((prefix, workdir));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("create {}", workdir.display())),
        }
    }
    bail!(
        "could not reserve a lab prefix in {}",
        std::env::temp_dir().display()
    )
}

/// Notes an agent this lab started, for the cleanup of a dead lab.
pub fn record_pid(workdir: &Path, pid: u32) {
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(workdir.join(AGENTS))
    {
        let _ = writeln!(f, "{pid}");
    }
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Whether `pid` is still a `netpath agent` (not a recycled PID of something else).
fn is_agent(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
        let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
        args.first().is_some_and(|a| a.ends_with(b"netpath")) && args.get(1) == Some(&&b"agent"[..])
    })
}

/// Removes what earlier runs left behind when their owner process is gone.
fn remove_stale_runs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(id) = name.strip_prefix(WORKDIR_PREFIX) else {
            continue;
        };
        let workdir = e.path();
        // No owner file yet: a lab between creating the dir and writing it; leave it.
        let Some(owner) = read_pid(&workdir.join(OWNER)) else {
            continue;
        };
        if alive(owner) {
            continue;
        }
        let prefix = format!("np{id}");
        tracing::warn!(
            prefix,
            owner,
            "cleaning up after a lab whose process is gone"
        );
        for pid in std::fs::read_to_string(workdir.join(AGENTS))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse::<u32>().ok())
        {
            if is_agent(pid) {
                // SAFETY: signalling a process this lab family started, by PID.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
        remove_matching(Path::new(crate::netns::NETNS_DIR), &prefix, |p| {
            let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).ok();
            if let Some(c) = c {
                // SAFETY: valid C string.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
            std::fs::remove_file(p)
        });
        remove_matching(Path::new(netpath::spec::DEFAULT_BPFFS_ROOT), &prefix, |p| {
            std::fs::remove_dir_all(p)
        });
        // A node's BIRD outlives its agent by design: stop it by its pid file first.
        remove_matching(
            Path::new(netpath::state::DEFAULT_STATE_ROOT),
            &prefix,
            |p| {
                netpath::bgp::stop_daemon(p);
                std::fs::remove_dir_all(p)
            },
        );
        let _ = std::fs::remove_dir_all(super::etcd::data_root(&format!("{prefix}-etcd")));
        super::bgp_router::stop_left_behind(&workdir);
        let _ = std::fs::remove_dir_all(&workdir);
    }
}

fn remove_matching(dir: &Path, prefix: &str, remove: impl Fn(&Path) -> std::io::Result<()>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name()
            .to_string_lossy()
            .starts_with(&format!("{prefix}-"))
        {
            if let Err(err) = remove(&e.path()) {
                tracing::warn!("remove {}: {err}", e.path().display());
            }
        }
    }
}
