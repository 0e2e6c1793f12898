//! Calico's way of distributing routes: `routing = "bgp"` runs one BIRD 2 per node
//! (a real BGP daemon, not a home-made speaker), supervised by the agent. BIRD
//! announces the node's pod CIDR and learns the others'; the agent reads what it
//! learned over BIRD's control socket, judges it against the store's subnet
//! assignment, and plans from it — the store still assigns, BGP only distributes.
mod config;
pub mod control;
mod daemon;
mod learned;
mod settle;

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

pub use self::{
    config::{render, HOLD_SECS},
    control::{BirdRoute, PeerRestart, Recovery, Session},
    daemon::Paths,
    learned::{judge, Ignored, Learned, Refusal},
};
use crate::net::Ipv4Net;

#[derive(Debug, thiserror::Error)]
pub enum BgpError {
    #[error("routing = \"bgp\" runs BIRD 2 on every node, and `bird` is not installed (Debian package bird2)")]
    NotInstalled,
    #[error("start BIRD: {0}")]
    Start(String),
    #[error("BIRD's files: {0}")]
    Files(String),
    #[error("BIRD's control socket: {0}")]
    Control(String),
    #[error("BIRD refused: {0}")]
    Refused(String),
}

/// The longest routes a restarted BIRD has not relearned yet are kept (see
/// `settle`): a daemon restart must not flap the node's routes, and a peer that
/// does not come back must not keep them for long.
const SETTLE: Duration = Duration::from_secs(15);

/// What one look at BIRD found.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub routes: Vec<BirdRoute>,
    pub sessions: Vec<Session>,
    /// BIRD's graceful restart recovery, and what each peer said about graceful
    /// restart (only asked for after a restart).
    pub recovery: Recovery,
    pub peer_restart: BTreeMap<String, PeerRestart>,
}

/// The node's BIRD, as the agent runs it.
pub struct Speaker {
    paths: Paths,
    config: String,
    pid: u32,
    /// After the agent restarted a dead BIRD: the wait before routes it has not
    /// relearned may go.
    settle: Option<settle::Settle>,
    restarts: u64,
}

impl Speaker {
    /// Writes `config` and starts BIRD on it — or, when one already serves these
    /// files (an agent restarted with `--keep-pins`), adopts it and has it re-read
    /// the configuration, so its sessions and routes never went away.
    pub async fn start(state_dir: &Path, config: String) -> Result<Self, BgpError> {
        let paths = Paths::under(state_dir);
        daemon::write_config(&paths, &config)?;
        let pid = match daemon::running(&paths) {
            Some(pid) => {
                control::request(&paths.socket, "configure").await?;
                tracing::info!(pid, "BIRD already runs for this node: adopted");
                pid
            }
            None => {
                let pid = daemon::start(&paths, false)?;
                tracing::info!(pid, socket = %paths.socket.display(), "BIRD started");
                pid
            }
        };
        Ok(Self {
            paths,
            config,
            pid,
            settle: None,
            restarts: 0,
        })
    }

    /// Makes BIRD run `config` (a spec change: nodes, peers), if it differs.
    pub async fn configure(&mut self, config: String) -> Result<(), BgpError> {
        if config == self.config {
            return Ok(());
        }
        daemon::write_config(&self.paths, &config)?;
        self.config = config;
        control::request(&self.paths.socket, "configure").await?;
        tracing::info!("BIRD reconfigured");
        Ok(())
    }

    /// BIRD's routes and sessions. When BIRD is gone, it is started again (and the
    /// error says what happened); while it runs but does not answer, only the error.
    pub async fn poll(&mut self) -> Result<Snapshot, BgpError> {
        match self.query().await {
            Ok(s) => Ok(s),
            Err(e) if daemon::running(&self.paths).is_some() => Err(e),
            Err(e) => {
                tracing::warn!("BIRD (pid {}) is gone ({e}); starting it again", self.pid);
                self.pid = daemon::start(&self.paths, true)?;
                self.restarts += 1;
                let quiet = Duration::from_secs(HOLD_SECS.into());
                self.settle = Some(settle::Settle::new(Instant::now(), SETTLE, quiet));
                Err(BgpError::Start(format!(
                    "BIRD was gone and is started again (pid {})",
                    self.pid
                )))
            }
        }
    }

    /// Sessions, then recovery, then routes: the order `Settle::observe` relies on.
    async fn query(&self) -> Result<Snapshot, BgpError> {
        let socket = &self.paths.socket;
        // While settling, the details say which peers promised End-of-RIB.
        let settling = self.settle.is_some();
        let command = if settling {
            "show protocols all"
        } else {
            "show protocols"
        };
        let protocols = control::request(socket, command).await?;
        let recovery = if settling {
            control::parse_status(&control::request(socket, "show status").await?)
        } else {
            Recovery::default()
        };
        let routes = control::request(socket, "show route all").await?;
        Ok(Snapshot {
            routes: control::parse_routes(&routes),
            sessions: control::parse_protocols(&protocols),
            recovery,
            peer_restart: control::parse_peer_restart(&protocols),
        })
    }

    /// Still relearning after a restart: routes missing from `snapshot` are only not
    /// sent again yet. (Peers keep this node's routes meanwhile: graceful restart.)
    pub fn settling(&mut self, snapshot: &Snapshot) -> bool {
        let Some(settle) = self.settle.as_mut() else {
            return false;
        };
        let now = Instant::now();
        let Some(why) = settle.observe(
            now,
            snapshot.recovery,
            &snapshot.sessions,
            &snapshot.peer_restart,
            &snapshot.routes,
        ) else {
            return true;
        };
        tracing::info!(
            after = ?now.duration_since(settle.started()),
            ?why,
            "BIRD relearned after its restart: routes it did not announce again go now"
        );
        self.settle = None;
        false
    }

    /// The published view: `snapshot` judged into `learned`.
    pub fn state(&self, snapshot: &Snapshot, learned: &Learned) -> BgpState {
        BgpState {
            pid: Some(self.pid),
            socket: self.paths.socket.clone(),
            sessions: snapshot.sessions.clone(),
            routes: learned.accepted.clone(),
            ignored: learned.ignored.clone(),
            restarts: self.restarts,
            error: None,
        }
    }

    /// Stops BIRD: its peers hear it and withdraw this node's routes at once.
    pub fn stop(self) {
        daemon::stop(&self.paths);
        tracing::info!(pid = self.pid, "BIRD stopped");
    }
}

/// The PID of the BIRD serving the node whose state dir is `state_dir`, if one runs.
pub fn daemon_pid(state_dir: &Path) -> Option<u32> {
    daemon::running(&Paths::under(state_dir))
}

/// Stops the BIRD an agent left running for `state_dir` (stopped with `--keep-pins`,
/// or killed), by the PID its pid file names.
pub fn stop_daemon(state_dir: &Path) {
    daemon::stop(&Paths::under(state_dir));
}

/// BGP as the agent last saw it, published in `agent.json` for `netpath status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BgpState {
    pub pid: Option<u32>,
    /// For `birdc -s SOCKET`.
    pub socket: PathBuf,
    pub sessions: Vec<Session>,
    /// The pod CIDRs learned and used, with their next hops.
    pub routes: BTreeMap<Ipv4Net, Ipv4Addr>,
    /// What peers announced that was not used, and why.
    pub ignored: Vec<Ignored>,
    /// How often the agent had to start BIRD again.
    pub restarts: u64,
    /// Why the last look at BIRD failed.
    pub error: Option<String>,
}
