//! Where the cluster's desired state comes from: the spec file (the default),
//! etcd, or the nodes themselves by gossip, where nodes join, leave and restart.
//! Either way the agent gets a `ClusterSpec` and reconciles toward it.
pub mod config_file;
pub mod etcd;
pub mod gossip;
pub mod model;

use crate::spec::ClusterSpec;

/// What a store that nodes join (etcd, gossip) tells the agent.
#[derive(Debug)]
pub enum Update {
    /// The cluster changed (or was re-read): reconcile toward this.
    Spec(ClusterSpec, Vec<String>),
    /// The store cannot be reached; the datapath keeps the last state.
    Disconnected(String),
    /// The store is followed live: from here on changes reach this node as they
    /// happen.
    Watching,
    /// Whether this node holds its pod CIDR: `Some(why)` when it may not hand out
    /// addresses from it (its reservation taken by another node, its claim not
    /// settled), `None` once it may.
    Membership(Option<String>),
    /// Gossip: datagrams dropped unread so far.
    Dropped(u64),
}
