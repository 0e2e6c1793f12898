//! The node's BIRD process: its files under the agent's state dir, started as a
//! daemon of its own (so it outlives an agent stopped with `--keep-pins` and the
//! sessions stay up across an agent restart), found again by its pid file, stopped
//! by PID.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use super::BgpError;

/// Where BIRD comes from: Debian's `bird2` package.
const BIRD: &str = "bird";

/// One node's BIRD files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub dir: PathBuf,
    pub conf: PathBuf,
    pub socket: PathBuf,
    pub pid: PathBuf,
    pub log: PathBuf,
    /// What BIRD says before it has its log (a configuration it cannot parse).
    pub stderr: PathBuf,
}

impl Paths {
    pub fn under(state_dir: &Path) -> Self {
        let dir = state_dir.join("bird");
        Self {
            conf: dir.join("bird.conf"),
            socket: dir.join("bird.ctl"),
            pid: dir.join("bird.pid"),
            log: dir.join("bird.log"),
            stderr: dir.join("bird.stderr"),
            dir,
        }
    }
}

/// The PID of the BIRD that serves `paths`, if one runs: the pid file names a live
/// `bird` whose command line names our socket (never another program that reused
/// the number).
pub fn running(paths: &Paths) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(&paths.pid)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let ours = args
        .first()
        .is_some_and(|a| Path::new(std::str::from_utf8(a).unwrap_or("")).ends_with(BIRD))
        && args
            .iter()
            .any(|a| *a == paths.socket.as_os_str().as_encoded_bytes());
    ours.then_some(pid)
}

/// Writes `config` where BIRD reads it (atomically: BIRD may re-read it any time).
pub fn write_config(paths: &Paths, config: &str) -> Result<(), BgpError> {
    let io = |what: &str, e: std::io::Error| BgpError::Files(format!("{what}: {e}"));
    std::fs::create_dir_all(&paths.dir).map_err(|e| io(&paths.dir.display().to_string(), e))?;
    crate::files::write_atomic(&paths.conf, config.as_bytes(), false)
        .map_err(|e| io(&paths.conf.display().to_string(), e))
}

/// Starts BIRD on the written configuration; it forks and the parent returns once
/// the configuration is read, so a bad one fails here with BIRD's own words.
/// `recovering`: BIRD died and its peers hold its routes as stale — it comes back
/// with graceful restart recovery (`-R`, the Restart State bit in its OPEN), so they
/// keep them until it has sent them again instead of flushing them at once.
pub fn start(paths: &Paths, recovering: bool) -> Result<u32, BgpError> {
    let stderr = std::fs::File::create(&paths.stderr)
        .map_err(|e| BgpError::Files(format!("{}: {e}", paths.stderr.display())))?;
    let mut bird = Command::new(BIRD);
    if recovering {
        bird.arg("-R");
    }
    let status = bird
        .arg("-c")
        .arg(&paths.conf)
        .arg("-s")
        .arg(&paths.socket)
        .arg("-P")
        .arg(&paths.pid)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .status()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => BgpError::NotInstalled,
            _ => BgpError::Start(e.to_string()),
        })?;
    if !status.success() {
        let said = std::fs::read_to_string(&paths.stderr).unwrap_or_default();
        return Err(BgpError::Start(format!("{status}: {}", said.trim())));
    }
    // The pid file appears as the daemon settles.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        if let Some(pid) = running(paths) {
            return Ok(pid);
        }
        if Instant::now() > deadline {
            return Err(BgpError::Start(format!(
                "BIRD started but wrote no pid file at {}",
                paths.pid.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops the BIRD serving `paths` (SIGTERM: it tells its peers, which withdraw the
/// node's routes at once) and removes its files.
pub fn stop(paths: &Paths) {
    if let Some(pid) = running(paths) {
        // SAFETY: kill with a PID checked to be our BIRD just above.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while running(paths) == Some(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if running(paths) == Some(pid) {
            tracing::warn!(pid, "BIRD did not stop within 3 s; killing it");
            // SAFETY: as above.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
    }
    let _ = crate::files::remove_dir_all_if_present(&paths.dir);
}
