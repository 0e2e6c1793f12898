//! Weave's way: nodes find each other peer to peer, with no store to run. Each
//! node is started with the cluster's settings and the address of any other node;
//! membership (who is alive, and each node's record) spreads by gossip, pod CIDRs
//! are claimed without a coordinator (`claims`), and every node builds the same
//! `ClusterSpec` from what it has heard.
//!
//! Bounds, with the timings in `swim`: a joining node is known everywhere within
//! about a second; a node that dies is suspected within about two probe periods
//! (1 s) and its routes go everywhere when it is declared down 2 s later: ~4 s in
//! all, longer only in large clusters where probes reach it later (at most one
//! probe period per member). A node gone longer than `--forget-after` frees its
//! subnet.
mod claims;
mod member;
mod peer;
mod swim;
mod wire;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

pub use member::{Member, CLAIM_SETTLE};
pub use swim::Counters;

use crate::{net::Ipv4Net, store::model::ClusterConfig};

pub const DEFAULT_PORT: u16 = 7946;
/// How long a joining node waits, by default, for its claim to settle before the
/// agent starts anyway.
pub const DEFAULT_JOIN_WAIT: Duration = Duration::from_secs(60);

/// How a node takes part.
#[derive(Debug, Clone)]
pub struct GossipOptions {
    /// Where to listen (the port is also the one the node is known by).
    pub listen: SocketAddr,
    /// Other nodes' gossip addresses to join through.
    pub seeds: Vec<SocketAddr>,
    /// The cluster key: every datagram is authenticated with it.
    pub key: Option<Vec<u8>>,
    /// The cluster's settings, the same on every node.
    pub config: ClusterConfig,
    /// How long a node may be gone before its subnet is free again.
    pub forget_after: Duration,
    /// How long a joining node may take to settle its claim before the agent starts
    /// anyway (handing out no pod addresses until the claim settles).
    pub join_wait: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum GossipError {
    #[error("node name {0:?} must be 1-32 characters of [A-Za-z0-9_-]")]
    NodeName(String),
    // The cause in the message, not a `source`: `{:#}` would print it twice.
    #[error("cluster settings: {0}")]
    Spec(crate::spec::SpecError),
    #[error("listen for gossip on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error("this node's cluster settings differ from the cluster's: {0}")]
    Settings(String),
    #[error("no free /{len} left in {cluster} for node {node}")]
    Full {
        cluster: Ipv4Net,
        len: u8,
        node: String,
    },
    #[error("membership: {0}")]
    Swim(String),
    #[error("save the claim to {0}: {1}")]
    Save(PathBuf, std::io::Error),
}

impl From<crate::spec::SpecError> for GossipError {
    fn from(e: crate::spec::SpecError) -> Self {
        Self::Spec(e)
    }
}

/// Now, in Unix milliseconds: the clock claims are ordered by and datagrams carry.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
