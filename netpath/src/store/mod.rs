//! Where the cluster's desired state comes from: the spec file (the default), etcd,
//! or the nodes themselves by gossip, where nodes join, leave and restart. Each kind
//! joins in its own way (`join`); after that every store is one `Store` to the agent:
//! the spec as joined, whether the node lost its own record, and the updates it
//! follows.
pub mod config_file;
pub mod etcd;
pub mod file;
pub mod gossip;
pub mod model;

use std::{
    future::Future,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    pin::Pin,
    sync::Arc,
};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Notify};

use crate::{
    net::{Ipv4Net, Mac},
    spec::{ClusterSpec, SpecError},
};

/// What a store tells the agent.
#[derive(Debug)]
pub enum Update {
    /// The cluster changed (or was re-read): reconcile toward this; the second value
    /// names the records left out of it.
    Spec(ClusterSpec, Vec<String>),
    /// A new version of the spec could not be taken whole (a spec file that does
    /// not parse, bad settings): the agent keeps forwarding on the last good one.
    Refused(String),
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

/// The kinds of store a cluster's state can come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// A spec file (`--config`), re-read when it changes.
    #[default]
    File,
    /// etcd: nodes join, leave and restart (`--etcd-endpoints`).
    Etcd,
    /// Gossip among the nodes themselves (`--peers`): no store to run.
    Gossip,
}

impl StoreKind {
    pub fn name(self) -> &'static str {
        match self {
            StoreKind::File => "spec file",
            StoreKind::Etcd => "etcd",
            StoreKind::Gossip => "gossip",
        }
    }
}

/// Where a node's store is and how to reach it.
pub enum Source {
    /// A spec file, re-read when it changes.
    File(PathBuf),
    /// etcd: the node joins (reserving its pod CIDR) and follows the cluster.
    Etcd {
        opts: etcd::EtcdOptions,
        /// This node's underlay address; default: the address of the interface
        /// that holds the default route.
        underlay: Option<Ipv4Net>,
    },
    /// Gossip: the node joins through any other node, claiming its pod CIDR.
    Gossip {
        opts: gossip::GossipOptions,
        underlay: Option<Ipv4Net>,
    },
}

impl Source {
    pub fn kind(&self) -> StoreKind {
        match self {
            Source::File(_) => StoreKind::File,
            Source::Etcd { .. } => StoreKind::Etcd,
            Source::Gossip { .. } => StoreKind::Gossip,
        }
    }

    /// Where, for people: `file PATH`, `etcd ENDPOINTS under PREFIX`, `gossip on …`.
    pub fn describe(&self) -> String {
        match self {
            Source::File(path) => format!("file {}", path.display()),
            Source::Etcd { opts, .. } => {
                format!("etcd {} under {}", opts.endpoints.join(","), opts.prefix)
            }
            Source::Gossip { opts, .. } => {
                let seeds: Vec<String> = opts.seeds.iter().map(ToString::to_string).collect();
                format!("gossip on {} through {}", opts.listen, seeds.join(","))
            }
        }
    }

    /// The underlay address the user gave, for a store nodes join.
    pub fn underlay(&self) -> Option<Ipv4Net> {
        match self {
            Source::File(_) => None,
            Source::Etcd { underlay, .. } | Source::Gossip { underlay, .. } => *underlay,
        }
    }
}

/// What a node joining a store (etcd, gossip) brings: its underlay address, the
/// addresses its pods hold (so it asks for the subnet they are from), its VTEP MAC,
/// and its state dir (where gossip keeps its claim).
pub struct Joining<'a> {
    pub underlay: Ipv4Net,
    pub held: Vec<Ipv4Addr>,
    pub mac: Mac,
    pub state_dir: &'a Path,
}

/// Why a store could not be joined or read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("join the cluster in etcd: {0}")]
    Etcd(etcd::StoreError),
    #[error("join the cluster by gossip: {0}")]
    Gossip(gossip::GossipError),
    #[error("the {0} store needs this node's joining details")]
    NotJoining(&'static str),
}

/// A store the agent follows, whatever its kind.
pub trait Store: Send {
    fn kind(&self) -> StoreKind;
    /// The cluster as joined, and the records left out of it, each named.
    fn spec(&self) -> Result<(ClusterSpec, Vec<String>), Error>;
    /// Why this node may not hand out addresses from its pod CIDR now (its own
    /// record lost or taken); `None` when it may.
    fn lost(&self) -> Option<String>;
    /// Follows the store until `tx`'s receiver goes, sending every change; `reread`
    /// asks for a fresh read (SIGHUP).
    fn run(
        self: Box<Self>,
        tx: mpsc::Sender<Update>,
        reread: Arc<Notify>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// Joins the store `source` names as node `node`: the file is read, etcd and gossip
/// are joined with what `joining` brings (needed for them only).
pub async fn join(
    source: &Source,
    node: &str,
    joining: Option<Joining<'_>>,
) -> Result<Box<dyn Store>, Error> {
    let need = |kind: StoreKind| joining.ok_or(Error::NotJoining(kind.name()));
    Ok(match source {
        Source::File(path) => Box::new(file::FileStore::open(path)?),
        Source::Etcd { opts, .. } => {
            let j = need(StoreKind::Etcd)?;
            Box::new(
                etcd::Member::join(opts, node, j.underlay, j.mac, &j.held, j.state_dir)
                    .await
                    .map_err(Error::Etcd)?,
            )
        }
        Source::Gossip { opts, .. } => {
            let j = need(StoreKind::Gossip)?;
            Box::new(
                gossip::Member::join(opts, node, j.underlay, j.mac, &j.held, j.state_dir)
                    .await
                    .map_err(Error::Gossip)?,
            )
        }
    })
}
