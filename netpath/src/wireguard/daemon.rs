//! The user-space device's process: `netpath wireguard device`, started by the agent
//! in a session of its own (so it outlives an agent restart and encrypted traffic is
//! not cut), found again by its pid file, stopped by PID.
use std::{
    os::unix::process::CommandExt,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use super::{config::Paths, WireguardError};

/// The PID of the device process serving `state_dir`, if one runs: the pid file
/// names a live process whose command line is ours for this state dir (never
/// another program that reused the number).
pub fn running(paths: &Paths, state_dir: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(&paths.pid)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let ours = args
        .windows(2)
        .any(|w| w == [b"wireguard".as_slice(), b"device"])
        && args.contains(&state_dir.as_os_str().as_encoded_bytes());
    ours.then_some(pid)
}

/// Starts the device process (this binary) for `device` on the config written
/// already; returns once it serves (its stats file appears) or says why not.
pub fn start(paths: &Paths, state_dir: &Path, device: &str) -> Result<u32, WireguardError> {
    let files = |e: std::io::Error| WireguardError::Files(format!("{}: {e}", paths.log.display()));
    std::fs::create_dir_all(&paths.dir).map_err(files)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&paths.log)
        .map_err(files)?;
    let exe = std::env::current_exe().map_err(|e| WireguardError::Start(e.to_string()))?;
    let _ = std::fs::remove_file(&paths.stats);
    let mut cmd = Command::new(exe);
    cmd.args(["wireguard", "device", "--name", device, "--state-dir"])
        .arg(state_dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(files)?)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe; a session of its own keeps the device out
    // of the agent's process group and its signals.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| WireguardError::Start(e.to_string()))?;
    let pid = child.id();
    crate::files::write_atomic(&paths.pid, format!("{pid}\n").as_bytes(), false).map_err(files)?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if paths.stats.exists() {
            // Reaped by nobody once the agent is gone: the device is its own
            // session's leader, and the agent's exit reparents it.
            std::mem::forget(child);
            return Ok(pid);
        }
        if let Ok(Some(status)) = child.try_wait() {
            let said = std::fs::read_to_string(&paths.log).unwrap_or_default();
            let last: Vec<&str> = said.lines().rev().take(3).collect();
            return Err(WireguardError::Start(format!(
                "{status}: {}",
                last.into_iter().rev().collect::<Vec<_>>().join(" | ")
            )));
        }
        if Instant::now() > deadline {
            return Err(WireguardError::Start(format!(
                "the device process {pid} did not start serving in 5 s (log: {})",
                paths.log.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops the device process serving `state_dir` and removes its files (the key
/// stays: it is the node's identity).
pub fn stop(paths: &Paths, state_dir: &Path) {
    if let Some(pid) = running(paths, state_dir) {
        // SAFETY: kill with a PID checked to be our device just above.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while running(paths, state_dir) == Some(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if running(paths, state_dir) == Some(pid) {
            tracing::warn!(
                pid,
                "the WireGuard device did not stop within 3 s; killing it"
            );
            // SAFETY: as above.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
    }
    for f in [&paths.pid, &paths.config, &paths.stats, &paths.log] {
        let _ = crate::files::remove_file_if_present(f);
    }
}

/// Collects the device process's exit status if it ended while this agent (its
/// parent) runs, so no zombie is left behind.
pub fn reap(pid: u32) {
    // SAFETY: waitpid on one PID we started, without blocking.
    unsafe {
        libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), libc::WNOHANG);
    }
}
