//! Which node the plugin serves: the agent that publishes state for the network
//! namespace the plugin runs in (or the one the config names). Several lab nodes
//! on one host each have their own state directory under the state root.
use std::{
    fs::File,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use super::{code, CniError, CniResult, NetConf};
use crate::{
    ipam::{self, AttachmentId},
    state::{self, AgentState, NetnsId},
};

/// A node's state directory and what its agent last published there.
#[derive(Debug, Clone)]
pub struct Node {
    pub dir: PathBuf,
    pub agent: AgentState,
}

impl Node {
    /// Why pods cannot be wired now, if they cannot.
    pub fn not_ready(&self) -> Option<String> {
        let a = &self.agent;
        if !state::process_alive(a.pid) {
            return Some(format!(
                "the netpath agent of node {} (pid {}) is not running",
                a.node, a.pid
            ));
        }
        if let Some(e) = &a.membership_error {
            return Some(format!(
                "node {} may not hand out pod addresses: {e}",
                a.node
            ));
        }
        if !a.ready {
            return Some(format!(
                "the netpath agent of node {} has not finished starting",
                a.node
            ));
        }
        if let Some(e) = &a.spec_error {
            tracing::warn!("node {}: agent refused the latest spec: {e}", a.node);
        }
        None
    }

    pub fn ready(&self) -> CniResult<()> {
        match self.not_ready() {
            None => Ok(()),
            Some(why) => Err(CniError::new(code::TRY_AGAIN_LATER, why)),
        }
    }
}

fn state_dirs(root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// The node this invocation serves, or None when no agent has published state
/// for it (never started, or stopped and cleaned up).
pub fn locate(conf: &NetConf) -> CniResult<Option<Node>> {
    let read = |dir: PathBuf| -> CniResult<Option<Node>> {
        match AgentState::read(&dir) {
            Ok(Some(agent)) => Ok(Some(Node { dir, agent })),
            Ok(None) => Ok(None),
            Err(e) => Err(
                CniError::new(code::IO_FAILURE, "cannot read the node's agent state")
                    .with_details(format!("{e:#}")),
            ),
        }
    };
    if let Some(name) = &conf.node {
        return read(conf.state_root.join(name));
    }
    let here = NetnsId::current().map_err(|e| {
        CniError::new(code::IO_FAILURE, "cannot identify this network namespace").with_details(e)
    })?;
    let mut found: Vec<Node> = Vec::new();
    for dir in state_dirs(&conf.state_root) {
        // Another node's damaged file is that node's problem, not this one's.
        if let Ok(Some(agent)) = AgentState::read(&dir) {
            if agent.netns == Some(here) {
                found.push(Node { dir, agent });
            }
        }
    }
    // A namespace inode can be reused after a node is gone: the live agent wins.
    found.sort_by_key(|n| !state::process_alive(n.agent.pid));
    Ok(found.into_iter().next())
}

/// The state directory whose address book holds `id`, searched across all nodes
/// (DEL and GC must work after the agent is gone and its state file with it).
pub fn book_holding(root: &Path, id: &AttachmentId) -> CniResult<Option<PathBuf>> {
    for dir in state_dirs(root)
        .into_iter()
        .filter(|d| ipam::Store::exists(d))
    {
        let store = ipam::Store::open(&dir).map_err(ipam_error)?;
        if store.book.find(id).is_some() {
            return Ok(Some(dir));
        }
    }
    Ok(None)
}

pub fn ipam_error(e: ipam::IpamError) -> CniError {
    match e {
        ipam::IpamError::Exhausted(..) => CniError::new(code::NO_FREE_ADDRESS, e.to_string()),
        ipam::IpamError::TooSmall(_) => CniError::new(code::INVALID_CONFIG, e.to_string()),
        _ => CniError::new(code::IO_FAILURE, e.to_string()),
    }
}

/// Makes the node's pins reachable. `ip netns exec` (how runtimes are started in
/// a lab node) mounts a fresh /sys in a private mount namespace, which hides the
/// host's bpffs; the agent's mount namespace still has it. Must run before any
/// thread is started (setns of a mount namespace needs a single-threaded caller).
pub fn see_pins(pin_dir: &Path, agent_pid: u32) -> CniResult<()> {
    if pin_dir.exists() {
        return Ok(());
    }
    let path = format!("/proc/{agent_pid}/ns/mnt");
    let unreachable = |why: String| {
        CniError::new(
            code::TRY_AGAIN_LATER,
            format!(
                "the node's pins at {} are not visible here",
                pin_dir.display()
            ),
        )
        .with_details(why)
    };
    let ns = File::open(&path).map_err(|e| unreachable(format!("open {path}: {e}")))?;
    // Entering a mount namespace resets the root to the namespace's; the agent may
    // run chrooted inside it (as in the test VMs), so take its root along.
    let root_path = format!("/proc/{agent_pid}/root");
    let root = File::open(&root_path).map_err(|e| unreachable(format!("open {root_path}: {e}")))?;
    // SAFETY: plain syscalls on fds we own and a static path; the process has one
    // thread here.
    let entered = unsafe {
        libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNS) == 0
            && libc::fchdir(root.as_raw_fd()) == 0
            && libc::chroot(c".".as_ptr()) == 0
            && libc::chdir(c"/".as_ptr()) == 0
    };
    if !entered {
        return Err(unreachable(format!(
            "enter {path}: {}",
            std::io::Error::last_os_error()
        )));
    }
    if pin_dir.exists() {
        Ok(())
    } else {
        Err(unreachable(
            "not in the agent's mount namespace either".into(),
        ))
    }
}
