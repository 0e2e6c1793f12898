//! The agent's published state: one JSON file per node (`<state dir>/agent.json`,
//! default state dir `/run/netpath/<node>`), written atomically, read by `netpath
//! status` and by anything that needs to know whether the node is ready.
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::{net::Ipv4Net, store::StoreKind};

pub const DEFAULT_STATE_ROOT: &str = "/run/netpath";
const FILE: &str = "agent.json";

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AgentState {
    pub node: String,
    pub pid: u32,
    pub pin_dir: PathBuf,
    pub spec_file: PathBuf,
    /// Which kind of store the spec comes from.
    #[serde(default)]
    pub store_kind: StoreKind,
    /// Where exactly: `file PATH` or `etcd ENDPOINTS under PREFIX`.
    #[serde(default)]
    pub store: String,
    /// Set while the store cannot be reached (the datapath forwards on the last state).
    #[serde(default)]
    pub store_error: Option<String>,
    /// etcd only: the watch is live, so changes reach this node as they happen.
    #[serde(default)]
    pub store_watching: bool,
    /// Gossip only: datagrams dropped unread (no valid tag for the cluster key,
    /// replayed, or not gossip at all).
    #[serde(default)]
    pub store_dropped: u64,
    /// The subnet this node's pods get addresses from, as of the last pass; None
    /// while the node has none it may hand out (starting, or its reservation lost).
    #[serde(default)]
    pub pod_cidr: Option<Ipv4Net>,
    pub pod_mtu: u32,
    /// Maps loaded, programs attached, routes applied at least once.
    pub ready: bool,
    /// The programs are loaded and pinned and the underlay ones attached.
    #[serde(default)]
    pub maps_loaded: bool,
    /// What the agent waits for before it can load (e.g. its underlay address).
    #[serde(default)]
    pub waiting: Option<String>,
    /// Why the last plan-and-apply pass failed (the datapath keeps its last state).
    #[serde(default)]
    pub reconcile_error: Option<String>,
    /// When the store last confirmed this node's view (Unix ms): the spec file read
    /// and accepted, or an etcd update or watch confirmation.
    #[serde(default)]
    pub store_synced_unix_ms: Option<u64>,
    /// The underlay interface, and whether the node has its kernel VXLAN device:
    /// where the programs must be attached.
    #[serde(default)]
    pub underlay: String,
    #[serde(default)]
    pub tunnel: bool,
    /// Where the agent serves /metrics, /healthz and /readyz (None: off).
    #[serde(default)]
    pub metrics_addr: Option<String>,
    /// How many times the desired state was planned and applied.
    pub reconciles: u64,
    /// Why the last spec file read was refused; the agent keeps the last good one.
    /// A warning condition, not "not ready": the pods' network works on that spec.
    pub spec_error: Option<String>,
    /// Records the store holds that were left out of the spec (a service with a
    /// bad field), each named with its field; the rest of the spec is in force.
    #[serde(default)]
    pub left_out: Vec<String>,
    /// Peers the last plan had to leave out, and why.
    pub problems: Vec<String>,
    /// Why this node may not hand out addresses from its pod CIDR any more (its
    /// reservation was released and taken by another node): until it is settled
    /// the node is not ready and the CNI plugin wires no pods.
    #[serde(default)]
    pub membership_error: Option<String>,
    /// The network namespace the agent serves: how a CNI plugin started in a
    /// node's namespace finds its node's state among several on one host.
    #[serde(default)]
    pub netns: Option<NetnsId>,
    /// With `routing = "bgp"`: the node's BIRD, its sessions and what it learned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp: Option<crate::bgp::BgpState>,
    /// With `encryption = "wireguard"`: the node's device, its key and its peers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard: Option<crate::wireguard::WireguardState>,
    /// Each local pod some network policy selects (by address) -> those policies
    /// ("namespace/name"); a pod not here is open.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub policy: std::collections::BTreeMap<String, Vec<String>>,
    /// Why the last policy change was not applied (the programs keep the last
    /// policy: a refused change never opens a pod).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_error: Option<String>,
}

/// A network namespace's identity: the nsfs device and inode of its handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetnsId {
    pub dev: u64,
    pub ino: u64,
}

impl NetnsId {
    pub fn of(path: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path)?;
        Ok(Self {
            dev: m.dev(),
            ino: m.ino(),
        })
    }

    /// The calling thread's namespace.
    pub fn current() -> std::io::Result<Self> {
        Self::of(Path::new("/proc/thread-self/ns/net"))
    }
}

/// Whether process `pid` exists (signal 0 probes without signalling).
pub fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks for existence and permission.
    pid > 0
        && (unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM))
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

pub fn default_dir(node: &str) -> PathBuf {
    Path::new(DEFAULT_STATE_ROOT).join(node)
}

impl AgentState {
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let path = dir.join(FILE);
        crate::files::write_atomic(&path, &serde_json::to_vec_pretty(self)?, false)
            .with_context(|| format!("publish {}", path.display()))
    }

    /// The published state, or None when no agent has published one here.
    pub fn read(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(FILE);
        match std::fs::read(&path) {
            Ok(b) => {
                let mut s: Self = serde_json::from_slice(&b)
                    .with_context(|| format!("parse {}", path.display()))?;
                // Written before `store_kind` existed: the description says it.
                let typed = serde_json::from_slice::<serde_json::Value>(&b)
                    .is_ok_and(|v| v.get("store_kind").is_some());
                if !typed && s.store.starts_with("etcd ") {
                    s.store_kind = StoreKind::Etcd;
                }
                Ok(Some(s))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
        }
    }

    pub fn remove(dir: &Path) {
        let _ = std::fs::remove_file(dir.join(FILE));
        let _ = std::fs::remove_dir(dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_missing_is_none() {
        let dir = std::env::temp_dir().join(format!("netpath-state-test-{}", std::process::id()));
        assert_eq!(AgentState::read(&dir).unwrap(), None);
        let s = AgentState {
            node: "n1".into(),
            spec_error: Some("nodes[0].pod_cidr = \"x\": bad".into()),
            ..Default::default()
        };
        s.write(&dir).unwrap();
        assert_eq!(AgentState::read(&dir).unwrap(), Some(s));
        AgentState::remove(&dir);
        assert!(!dir.exists());
    }

    #[test]
    fn an_older_agents_file_reads_with_its_store_kind_inferred() {
        let dir = std::env::temp_dir().join(format!("netpath-state-old-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let old = r#"{"node":"n1","pid":1,"pin_dir":"/p","spec_file":"","store":"etcd http://e:2379 under /netpath","pod_cidr":"10.244.1.0/24","pod_mtu":1450,"ready":true,"reconciles":3,"spec_error":null,"problems":[]}"#;
        std::fs::write(dir.join(FILE), old).unwrap();
        let s = AgentState::read(&dir).unwrap().unwrap();
        assert_eq!(s.store_kind, StoreKind::Etcd);
        assert_eq!(s.pod_cidr, Some("10.244.1.0/24".parse().unwrap()));
        let file = old.replace("etcd http://e:2379 under /netpath", "file /spec.toml");
        std::fs::write(dir.join(FILE), file).unwrap();
        assert_eq!(
            AgentState::read(&dir).unwrap().unwrap().store_kind,
            StoreKind::File
        );
        AgentState::remove(&dir);
    }
}
