//! `netpath agent`: the flags that start a node's agent.
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

use super::{etcd_admin::EtcdArgs, gossip_args::GossipArgs};
use crate::{agent, net::Ipv4Net, netns, spec::ClusterSpec, store::StoreKind};

#[derive(Args)]
pub struct AgentCmd {
    /// Cluster spec (TOML), with the file store.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "file")]
    store: StoreKind,
    #[command(flatten)]
    etcd: EtcdArgs,
    #[command(flatten)]
    gossip: GossipArgs,
    /// This node's underlay address with the etcd or gossip store (default: the
    /// address of the interface holding the default route).
    #[arg(long)]
    underlay: Option<Ipv4Net>,
    /// This node's name in the spec (may be left out when the spec has one node).
    #[arg(long)]
    node: Option<String>,
    /// Pin directory (default: <bpffs_root>/<node>).
    #[arg(long)]
    pin_dir: Option<PathBuf>,
    /// Where the agent publishes its state (default: /run/netpath/<node>).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Enter this network namespace first.
    #[arg(long)]
    netns: Option<PathBuf>,
    /// Leave maps, programs and routes in place on exit so pods keep working.
    #[arg(long)]
    keep_pins: bool,
    /// Serve /metrics, /healthz and /readyz here (inside the agent's network
    /// namespace); `off` serves nothing.
    #[arg(long, default_value = "127.0.0.1:9970")]
    metrics_addr: String,
    /// The cgroup v2 root whose sockets the node's ClusterIP translation sees
    /// (default: where cgroup v2 is mounted, /sys/fs/cgroup or, on a hybrid host,
    /// /sys/fs/cgroup/unified); without one the node's own processes reach no
    /// ClusterIP.
    #[arg(long)]
    cgroup: Option<PathBuf>,
    /// With `encryption = "wireguard"`: the kernel's WireGuard or netpath's own
    /// user-space device (auto: the kernel's where it has one).
    #[arg(long, value_enum, default_value_t)]
    wireguard: crate::wireguard::Implementation,
}

impl AgentCmd {
    pub fn run(self) -> Result<bool> {
        let metrics_addr =
            match self.metrics_addr.as_str() {
                "off" => None,
                a => Some(a.parse::<std::net::SocketAddr>().map_err(|e| {
                    anyhow::anyhow!("--metrics-addr {a:?}: {e} (want IP:PORT or off)")
                })?),
            };
        let source = match (self.store, self.config) {
            (StoreKind::File, Some(path)) => agent::Source::File(path),
            (StoreKind::File, None) => bail!("--config is required with the file store"),
            (StoreKind::Etcd, Some(_)) => bail!("--config and --store etcd exclude each other"),
            (StoreKind::Etcd, None) => agent::Source::Etcd {
                opts: self.etcd.options()?,
                underlay: self.underlay,
            },
            (StoreKind::Gossip, Some(_)) => {
                bail!("--config and --store gossip exclude each other (see --cluster-config)")
            }
            (StoreKind::Gossip, None) => agent::Source::Gossip {
                opts: self.gossip.options()?,
                underlay: self.underlay,
            },
        };
        let node = match (self.node, &source) {
            (Some(n), _) => n,
            (None, agent::Source::Etcd { .. }) => bail!("--node is required with the etcd store"),
            (None, agent::Source::Gossip { .. }) => {
                bail!("--node is required with the gossip store")
            }
            (None, agent::Source::File(config)) => only_node(config)?,
        };
        // Before any thread exists, so every thread of the agent lives inside it.
        if let Some(ns) = self.netns {
            netns::enter(&ns)?;
        }
        agent::run(agent::AgentArgs {
            source,
            node,
            pin_dir: self.pin_dir,
            state_dir: self.state_dir,
            keep_pins: self.keep_pins,
            metrics_addr,
            cgroup: self.cgroup,
            wireguard: self.wireguard,
        })?;
        Ok(true)
    }
}

/// The node of a one-node spec (`--node` may be left out then).
fn only_node(config: &std::path::Path) -> Result<String> {
    let spec = ClusterSpec::from_file(config)?;
    match spec.nodes.as_slice() {
        [only] => Ok(only.name.clone()),
        _ => bail!(
            "--node is required: the spec has {} nodes",
            spec.nodes.len()
        ),
    }
}
