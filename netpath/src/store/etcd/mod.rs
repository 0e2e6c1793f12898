//! The etcd store: the cluster config, subnet reservations kept across restarts,
//! and each node's liveness record on its lease (layout in `model.rs`). This module
//! is the client and the administration (`cluster init`, `node remove`); a node's
//! membership — join, watch, lease, its own keys — is `member.rs`.
mod keys;
mod member;
mod records;
mod reserve;
mod view;

use std::{path::PathBuf, time::Duration};

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, PutOptions,
    TlsOptions, Txn, TxnOp, TxnOpResponse,
};

pub use self::keys::Keys;
pub use self::member::Member;
pub use self::records::{KeyedRecord, PolicyView};
use self::view::Reservation;
pub use self::view::{EndpointSlice, View, DEFAULT_PREFIX};
use super::model::ClusterConfig;
use crate::net::Ipv4Net;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    // Causes are in the messages, not `source`s: `{:#}` would print them twice.
    #[error("etcd: {0}")]
    Etcd(etcd_client::Error),
    #[error("read {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("TLS options: {0}")]
    Tls(String),
    #[error("the cluster under {0} is not initialized: run `netpath cluster init`")]
    NotInitialized(String),
    #[error("cluster config: {0}")]
    Config(String),
    #[error("this node's WireGuard key: {0}")]
    Key(String),
    #[error("no free /{len} left in {cluster} for node {node}")]
    NoSubnet {
        node: String,
        cluster: Ipv4Net,
        len: u8,
    },
    #[error("node name {0:?} must be 1-32 characters of [A-Za-z0-9_-]")]
    NodeName(String),
    #[error(transparent)]
    Spec(#[from] crate::spec::SpecError),
    /// A stream ended or must be opened anew; the caller re-syncs.
    #[error("{0}")]
    Restart(&'static str),
    #[error("gave up reserving a subnet after {0} conflicting attempts")]
    Contended(usize),
}

impl From<etcd_client::Error> for StoreError {
    fn from(e: etcd_client::Error) -> Self {
        Self::Etcd(e)
    }
}

pub(super) type Result<T, E = StoreError> = std::result::Result<T, E>;

/// How to reach etcd.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    pub endpoints: Vec<String>,
    pub prefix: String,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Seconds a node stays in the cluster after its agent stops renewing.
    pub lease_ttl: i64,
}

fn read(path: &PathBuf) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|cause| StoreError::Read {
        path: path.clone(),
        cause,
    })
}

pub async fn connect(o: &EtcdOptions) -> Result<Client> {
    let mut opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(5))
        .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2));
    match (&o.ca, &o.cert, &o.key) {
        (None, None, None) => {}
        (Some(ca), cert, key) => {
            let mut tls = TlsOptions::new().ca_certificate(Certificate::from_pem(read(ca)?));
            match (cert, key) {
                (Some(c), Some(k)) => tls = tls.identity(Identity::from_pem(read(c)?, read(k)?)),
                (None, None) => {}
                _ => {
                    return Err(StoreError::Tls(
                        "--etcd-cert and --etcd-key go together".into(),
                    ))
                }
            }
            opts = opts.with_tls(tls);
        }
        (None, _, _) => {
            return Err(StoreError::Tls(
                "a client certificate needs --etcd-ca too".into(),
            ))
        }
    }
    // One member at a time, each probed, starting after the one used last: a dead
    // member is skipped at once instead of failing requests at random.
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let start = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut last = None;
    for k in 0..o.endpoints.len() {
        let ep = &o.endpoints[(start + k) % o.endpoints.len()];
        let probed = async {
            let mut c = Client::connect([ep], Some(opts.clone())).await?;
            c.status().await?;
            Ok::<_, etcd_client::Error>(c)
        };
        match probed.await {
            Ok(c) => return Ok(c),
            Err(e) => {
                tracing::debug!(endpoint = %ep, "etcd: {e}");
                last = Some(e);
            }
        }
    }
    Err(last.map_or_else(
        || StoreError::Config("no etcd endpoints given".into()),
        StoreError::Etcd,
    ))
}

/// Writes the cluster config once. Returns false when the same config is there
/// already; a different one is an error (re-initializing would move every node).
pub async fn init_cluster(
    client: &mut Client,
    keys: &Keys,
    config: &ClusterConfig,
) -> Result<bool> {
    config.validate()?;
    let value = serde_json::to_vec(config).expect("config serializes");
    let txn = Txn::new()
        .when(vec![Compare::create_revision(
            keys.config(),
            CompareOp::Equal,
            0,
        )])
        .and_then(vec![TxnOp::put(keys.config(), value, None)]);
    if client.txn(txn).await?.succeeded() {
        return Ok(true);
    }
    let existing = client.get(keys.config(), None).await?;
    let same = existing
        .kvs()
        .first()
        .and_then(|kv| serde_json::from_slice::<ClusterConfig>(kv.value()).ok())
        .is_some_and(|c| &c == config);
    if same {
        Ok(false)
    } else {
        Err(StoreError::Config(format!(
            "{} already holds another config; remove it first to start a new cluster",
            keys.config()
        )))
    }
}

/// Whether `name`'s record sits on a live lease: its agent runs (and would claim its
/// keys again at once).
pub async fn node_alive(client: &mut Client, keys: &Keys, name: &str) -> Result<bool> {
    let resp = client.get(keys.node(name), None).await?;
    let Some(lease) = resp.kvs().first().map(|kv| kv.lease()).filter(|l| *l != 0) else {
        return Ok(false);
    };
    Ok(client
        .lease_time_to_live(lease, None)
        .await
        .is_ok_and(|r| r.ttl() > 0))
}

/// Releases a node: its liveness record and its subnet reservation. Returns what
/// was removed.
pub async fn remove_node(client: &mut Client, keys: &Keys, name: &str) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    if client.delete(keys.node(name), None).await?.deleted() > 0 {
        removed.push(keys.node(name));
    }
    let subnets = client
        .get(keys.subnets(), Some(GetOptions::new().with_prefix()))
        .await?;
    for kv in subnets.kvs() {
        let ours = serde_json::from_slice::<Reservation>(kv.value()).is_ok_and(|r| r.node == name);
        if ours {
            let key = kv.key_str()?.to_string();
            // Only if it is still ours when deleted.
            let txn = Txn::new()
                .when(vec![Compare::mod_revision(
                    key.clone(),
                    CompareOp::Equal,
                    kv.mod_revision(),
                )])
                .and_then(vec![TxnOp::delete(key.clone(), None)]);
            if client.txn(txn).await?.succeeded() {
                removed.push(key);
            }
        }
    }
    Ok(removed)
}

/// What a write did to its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Created,
    Changed,
    /// Put again with the value it had.
    Unchanged,
    Removed,
    /// A delete of a key that was not there.
    Absent,
}

/// etcd's default `--max-txn-ops`.
const MAX_TXN_OPS: usize = 128;

/// Puts (`Some`) and deletes (`None`), in order, in transactions of at most
/// `MAX_TXN_OPS` operations: all or nothing when they fit in one.
pub async fn write_keys(
    client: &mut Client,
    writes: &[(String, Option<Vec<u8>>)],
) -> Result<Vec<Written>> {
    let mut done = Vec::with_capacity(writes.len());
    for chunk in writes.chunks(MAX_TXN_OPS) {
        let ops: Vec<TxnOp> = chunk
            .iter()
            .map(|(k, v)| match v {
                Some(v) => TxnOp::put(
                    k.as_str(),
                    v.as_slice(),
                    Some(PutOptions::new().with_prev_key()),
                ),
                None => TxnOp::delete(k.as_str(), None),
            })
            .collect();
        let resp = client.txn(Txn::new().and_then(ops)).await?;
        for ((_, v), r) in chunk.iter().zip(resp.op_responses()) {
            done.push(match (v, r) {
                (Some(v), TxnOpResponse::Put(p)) => match p.prev_key() {
                    None => Written::Created,
                    Some(kv) if kv.value() == v.as_slice() => Written::Unchanged,
                    Some(_) => Written::Changed,
                },
                (None, TxnOpResponse::Delete(d)) if d.deleted() > 0 => Written::Removed,
                (None, _) => Written::Absent,
                (Some(_), _) => return Err(StoreError::Restart("etcd answered a put oddly")),
            });
        }
    }
    Ok(done)
}

/// Everything under the prefix as an agent would see it.
pub async fn read_view(client: &mut Client, keys: &Keys) -> Result<View> {
    Ok(list(client, keys).await?.0)
}

/// Everything under the prefix, and the revision it was read at.
pub(super) async fn list(client: &mut Client, keys: &Keys) -> Result<(View, i64)> {
    let resp = client
        .get(keys.root(), Some(GetOptions::new().with_prefix()))
        .await?;
    let revision = resp.header().map_or(0, |h| h.revision());
    let mut view = View::default();
    for kv in resp.kvs() {
        match kv.key_str() {
            Ok(k) => view.apply(keys, k, Some(kv.value()), kv.create_revision()),
            Err(_) => tracing::warn!("etcd: a key under {} is not UTF-8; ignored", keys.prefix),
        }
    }
    Ok((view, revision))
}
