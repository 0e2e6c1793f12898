//! `netpath status` and `netpath monitor`: looking at a running node, from anywhere
//! on the host.
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

use crate::{
    datapath, monitor,
    spec::DEFAULT_BPFFS_ROOT,
    state::{self, AgentState},
    status,
};

/// Which node's pins and published state a command reads. The pins are where the
/// node's agent says it put them; the flags override that.
#[derive(Args, Clone)]
pub struct NodeArgs {
    #[arg(long)]
    node: String,
    /// The node's pin directory (default: the one its agent published, else
    /// <bpffs-root>/<node>).
    #[arg(long)]
    pin_dir: Option<PathBuf>,
    /// Where agents pin unless told otherwise.
    #[arg(long)]
    bpffs_root: Option<PathBuf>,
    /// Where the node's agent publishes its state (default: /run/netpath/<node>);
    /// the monitor's lock lives beside it.
    #[arg(long)]
    state_dir: Option<PathBuf>,
}

impl NodeArgs {
    fn state_dir(&self) -> PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(|| state::default_dir(&self.node))
    }

    /// The published state (None: none published) and the pin directory in force.
    fn resolve(&self) -> Result<(Option<AgentState>, PathBuf)> {
        // With the pins named, a damaged state file does not stand in the way.
        let agent = match AgentState::read(&self.state_dir()) {
            Err(e) if self.pin_dir.is_none() => return Err(e),
            Err(e) => {
                tracing::warn!("{e:#}");
                None
            }
            Ok(a) => a,
        };
        let published = agent
            .as_ref()
            .map(|a| a.pin_dir.clone())
            .filter(|d| !d.as_os_str().is_empty());
        let dir = match (&self.pin_dir, &self.bpffs_root, published) {
            (Some(d), _, _) => d.clone(),
            (None, Some(root), _) => datapath::node_dir(root, &self.node),
            (None, None, Some(d)) => d,
            (None, None, None) => datapath::node_dir(DEFAULT_BPFFS_ROOT.as_ref(), &self.node),
        };
        Ok((agent, dir))
    }
}

#[derive(Args)]
pub struct StatusCmd {
    #[command(flatten)]
    at: NodeArgs,
    #[arg(long)]
    json: bool,
}

impl StatusCmd {
    /// `Ok(false)`: the node is not ready or not healthy (exit code 1).
    pub fn run(self) -> Result<bool> {
        let (agent, dir) = self.at.resolve()?;
        let snapshot = status::gather(&dir, &self.at.state_dir(), agent)?;
        status::render(&snapshot, self.json)?;
        Ok(snapshot.ok())
    }
}

#[derive(Args)]
pub struct MonitorCmd {
    #[command(flatten)]
    at: NodeArgs,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
    /// Only events of this reason (a name `netpath status` prints, e.g. drop-spoofed).
    #[arg(long)]
    reason: Option<String>,
    /// Only packets from or to this address.
    #[arg(long)]
    ip: Option<std::net::Ipv4Addr>,
    /// Also trace forwarded packets (redirected, encapsulated, decapsulated, …).
    #[arg(long)]
    trace: bool,
    /// With --trace: one forwarded packet in N per CPU.
    #[arg(long, default_value_t = 1)]
    sample: u32,
}

impl MonitorCmd {
    pub fn run(self) -> Result<bool> {
        let reason = self
            .reason
            .map(|r| monitor::reason_named(&r))
            .transpose()
            .map_err(|e| anyhow::anyhow!("--reason: {e}"))?;
        if self.sample == 0 {
            bail!("--sample must be 1 or more");
        }
        let (_, dir) = self.at.resolve()?;
        let lock_path = PathBuf::from(format!("{}.monitor.lock", self.at.state_dir().display()));
        monitor::run(monitor::MonitorArgs {
            dir,
            lock_path,
            node: self.at.node,
            json: self.json,
            filter: monitor::Filter {
                reason,
                ip: self.ip,
            },
            trace_every: self.trace.then_some(self.sample),
        })?;
        Ok(true)
    }
}
