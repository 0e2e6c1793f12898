//! One real `netpath agent` process per netpath node: started with the lab's store,
//! waited for until ready, stopped, killed; stopped by PID on drop.
use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use netpath::net::Ipv4Net;

use super::{prefix, stores::etcd_args, Lab, LabConfig, Node};
use crate::process::Spawned;

/// How long an agent may take to load, verify and attach its programs: seconds on
/// hardware, far more in an emulated VM (no KVM) running tests in parallel.
const AGENT_READY_WITHIN: Duration = Duration::from_secs(60);

/// A running agent process, stopped (SIGTERM, then SIGKILL after 5 s) on drop.
pub(super) struct AgentProcess {
    pub(super) child: Spawned,
    pub(super) node: String,
    pub(super) log: PathBuf,
}

impl AgentProcess {
    pub(super) fn stop(&mut self) {
        if self.child.stop() {
            tracing::warn!(node = %self.node, "agent ignored SIGTERM; killed it");
        }
    }
}

impl Lab {
    /// The PID of node `i`'s agent while it runs.
    pub fn agent_pid(&self, i: usize) -> Option<u32> {
        self.agents.get(i)?.as_ref().map(|a| a.child.id())
    }

    /// Kills node `i`'s agent with SIGKILL: no cleanup of any kind.
    pub fn kill_agent(&mut self, i: usize) {
        if let Some(mut a) = self.agents.get_mut(i).and_then(Option::take) {
            let _ = a.child.0.kill();
            let _ = a.child.0.wait();
        }
    }

    /// Stops node `i`'s agent (SIGTERM; it cleans up unless started with keep_pins).
    pub fn stop_agent(&mut self, i: usize) {
        if let Some(mut a) = self.agents.get_mut(i).and_then(Option::take) {
            a.stop();
        }
    }

    /// Starts node `i`'s agent and waits until its pins are usable.
    pub fn start_agent(&mut self, i: usize, cfg: &LabConfig) -> Result<()> {
        self.spawn_agent(i, cfg)?;
        self.wait_agent_ready(i)
    }

    /// Starts node `i`'s agent without waiting for it to be ready.
    pub fn spawn_agent(&mut self, i: usize, cfg: &LabConfig) -> Result<()> {
        self.stop_agent(i);
        let node = &self.nodes[i];
        let log = self.agent_log_path(node);
        let out = std::fs::File::create(&log)?;
        let mut cmd = Command::new(&cfg.agent_bin);
        cmd.arg("agent");
        match (&self.etcd, &self.gossip) {
            (Some(cluster), _) => {
                cmd.args(["--store", "etcd"])
                    .args(etcd_args(cluster))
                    .args(["--lease-ttl", &cfg.lease_ttl.to_string()]);
            }
            (None, Some(args)) => {
                cmd.args(["--store", "gossip", "--underlay"])
                    .arg(node.spec.underlay.to_string())
                    .args(args);
            }
            (None, None) => {
                cmd.arg("--config").arg(&self.spec_file);
            }
        }
        cmd.args(["--node", &node.spec.name])
            .arg("--pin-dir")
            .arg(&node.pin_dir)
            .arg("--state-dir")
            .arg(node.state_dir())
            .arg("--netns")
            .arg(node.ns.path());
        if cfg.keep_pins {
            cmd.arg("--keep-pins");
        }
        for (_, args) in cfg.agent_args.iter().filter(|(n, _)| *n == i) {
            cmd.args(args);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("start agent {}", cfg.agent_bin.display()))?;
        prefix::record_pid(&self.workdir, child.id());
        self.agents[i] = Some(AgentProcess {
            child: Spawned::signalled(child, libc::SIGTERM, Duration::from_secs(5)),
            node: node.name.clone(),
            log,
        });
        Ok(())
    }

    /// Waits until node `i`'s agent says it is ready (and with etcd, watching).
    pub fn wait_agent_ready(&mut self, i: usize) -> Result<()> {
        let node = &self.nodes[i];
        let Some(agent) = self.agents[i].as_mut() else {
            bail!("no agent started for {}", node.name);
        };
        let log = agent.log.clone();
        let deadline = Instant::now() + AGENT_READY_WITHIN;
        let state_dir = node.state_dir();
        // With etcd, ready means watching too: a change before that would reach the
        // node only on its first watch response.
        let watching = || {
            self.etcd.is_none()
                || netpath::state::AgentState::read(&state_dir)
                    .ok()
                    .flatten()
                    .is_some_and(|s| s.store_watching)
        };
        loop {
            if std::fs::read_to_string(&log).is_ok_and(|l| l.contains("agent ready")) && watching()
            {
                break;
            }
            if let Some(status) = agent.child.0.try_wait()? {
                bail!(
                    "agent for {} exited with {status}:\n{}",
                    node.name,
                    std::fs::read_to_string(&agent.log).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "agent for {} not ready after {} s; its log ({}):\n{}",
                    node.name,
                    AGENT_READY_WITHIN.as_secs(),
                    log.display(),
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.etcd.is_some() || self.gossip.is_some() {
            // The pod CIDR is whatever etcd reserved or the gossip claimed for the node.
            let state = netpath::state::AgentState::read(&self.nodes[i].state_dir())?
                .context("the agent published no state")?;
            let cidr: Ipv4Net = state
                .pod_cidr
                .context("the ready agent published no pod CIDR")?;
            self.nodes[i].spec.pod_cidr = cidr;
            let name = self.nodes[i].spec.name.clone();
            match self.spec.nodes.iter_mut().find(|n| n.name == name) {
                Some(n) => n.pod_cidr = cidr,
                None => self.spec.nodes.push(self.nodes[i].spec.clone()),
            }
        }
        Ok(())
    }

    /// The agent's log so far (the last run's, once it stopped), for failure reports.
    pub fn agent_log(&self, node: usize) -> String {
        let Some(n) = self.nodes.get(node) else {
            return String::new();
        };
        std::fs::read_to_string(self.agent_log_path(n)).unwrap_or_default()
    }

    fn agent_log_path(&self, node: &Node) -> PathBuf {
        self.workdir.join(format!("{}.log", node.name))
    }
}
