//! A node's membership in the etcd store. A node joins by reserving a subnet in a
//! compare-and-create transaction (or asking again for the one its pods' addresses
//! are from), then publishes itself on a lease; a watch from the last seen revision
//! keeps its view current, a compacted revision or a lost connection leads to a full
//! re-list, and an expired lease to a new one. Its own keys are kept as they must be
//! all along (`hold_reservation`).
use std::time::Duration;

use etcd_client::{Client, EventType, PutOptions, WatchOptions, WatchResponse};
use tokio::sync::mpsc;

use super::{
    connect,
    keys::Keys,
    list,
    reserve::{claim, reserve},
    view::{Reservation, View},
    EtcdOptions, Result, StoreError,
};
use crate::{
    net::Ipv4Net,
    spec::ClusterSpec,
    store::{
        model::{valid_node_name, NodeRecord},
        Update,
    },
};

/// This node's membership: its reservation, its lease and its view of the rest.
pub struct Member {
    client: Client,
    opts: EtcdOptions,
    keys: Keys,
    name: String,
    pub record: NodeRecord,
    /// This node's WireGuard public key, published with encryption on.
    wireguard_key: Option<crate::wireguard::PublicKey>,
    lease: i64,
    view: View,
    revision: i64,
    /// Why this node does not hold its pod CIDR now (see `Update::Membership`).
    lost: Option<String>,
    /// What the agent was last told of `lost` (None: nothing since the join, whose
    /// `lost()` it read).
    reported: Option<Option<String>>,
}

impl Member {
    /// Joins: reserves a subnet (or finds this node's reservation: same node, same
    /// pod CIDR, always) and publishes the node on a fresh lease.
    pub async fn join(
        opts: &EtcdOptions,
        name: &str,
        underlay: Ipv4Net,
        vtep_mac: crate::net::Mac,
        held: &[std::net::Ipv4Addr],
        state_dir: &std::path::Path,
    ) -> Result<Self> {
        if !valid_node_name(name) {
            return Err(StoreError::NodeName(name.into()));
        }
        let keys = Keys::new(&opts.prefix);
        let mut client = connect(opts).await?;
        let reserved = reserve(&mut client, &keys, name, held).await?;
        let pod_cidr = reserved.net;
        let lease = client.lease_grant(opts.lease_ttl, None).await?.id();
        let record = NodeRecord {
            underlay,
            pod_cidr,
            vtep_mac,
        };
        if reserved.ours {
            // Before the list, which can take long on a big cluster: peers see the
            // node as soon as it holds its subnet.
            put_record(&mut client, &keys, name, &record, lease).await?;
        }
        let (view, revision) = list(&mut client, &keys).await?;
        // Published only with encryption on: a cluster without it never sees the key.
        let encrypted = view
            .config
            .as_ref()
            .is_some_and(|c| c.settings.encryption == crate::spec::Encryption::Wireguard);
        let wireguard_key = if encrypted {
            Some(
                crate::wireguard::keys::KeyPair::load_or_create(state_dir)
                    .map_err(|e| StoreError::Key(e.to_string()))?
                    .public,
            )
        } else {
            None
        };
        let mut member = Self {
            client,
            opts: opts.clone(),
            keys,
            name: name.to_string(),
            record,
            wireguard_key,
            lease,
            view,
            revision,
            lost: None,
            reported: None,
        };
        // Checks the keys as listed (a subnet held by another: no record).
        member.hold_reservation().await?;
        // What the agent reads from `lost()` now, it has been told.
        member.reported = Some(member.lost.clone());
        tracing::debug!(node = name, %pod_cidr, lease, lost = ?member.lost, "joined the cluster in etcd");
        Ok(member)
    }

    /// Why this node does not hold its pod CIDR, if it does not.
    pub fn lost(&self) -> Option<&str> {
        self.lost.as_deref()
    }

    /// The cluster as this node sees it now.
    pub fn spec(&self) -> Result<(ClusterSpec, Vec<String>)> {
        let (spec, mut notes) = self.view.spec(Some((&self.name, &self.record)))?;
        notes.extend(
            self.view
                .refused
                .iter()
                .map(|(k, why)| format!("{k}: {why}")),
        );
        Ok((spec, notes))
    }

    /// Keeps the lease alive and the view current until the receiver goes away,
    /// reconnecting with backoff over all endpoints.
    pub async fn run(mut self, tx: mpsc::Sender<Update>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let why = match self.follow(&tx).await {
                Ok(()) => return,
                Err(e) => e.to_string(),
            };
            // Another member may serve at once (one of three lost changes nothing).
            if self.resync().await.is_ok() {
                tracing::info!("etcd: {why}; continued on another member");
                if self.send_spec(&tx).await.is_err() {
                    return;
                }
                continue;
            }
            tracing::warn!("etcd: {why}; forwarding on the last state, reconnecting");
            if tx.send(Update::Disconnected(why)).await.is_err() {
                return;
            }
            loop {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                match self.resync().await {
                    Ok(()) => break,
                    Err(e) => tracing::debug!("etcd: still unreachable: {e}"),
                }
            }
            backoff = Duration::from_millis(100);
            tracing::info!(revision = self.revision, "etcd: reconnected");
            if self.send_spec(&tx).await.is_err() {
                return;
            }
        }
    }

    /// After a disconnection: a new client, the reservation re-validated (it may
    /// have been released while this node was away), the record on a live lease,
    /// and a full re-list.
    async fn resync(&mut self) -> Result<()> {
        let mut client = connect(&self.opts).await?;
        // The lease first: a record put on an expired one is refused. (An unknown
        // lease answers TTL -1, not an error: an error is a reason to retry.)
        let alive = client.lease_time_to_live(self.lease, None).await?.ttl() > 0;
        if !alive {
            tracing::warn!(
                lease = self.lease,
                "etcd: this node's lease expired; a new one"
            );
            self.lease = client.lease_grant(self.opts.lease_ttl, None).await?.id();
        }
        let (view, revision) = list(&mut client, &self.keys).await?;
        self.client = client;
        self.view = view;
        self.revision = revision;
        // Put again whatever it looks like: an equal record may sit on an expired
        // lease that etcd has not revoked yet, or on one granted before a restart.
        self.view.nodes.remove(&self.name);
        self.view.wireguard.remove(&self.name);
        // Never another subnet while running: the pods hold addresses from this one.
        self.hold_reservation().await
    }

    /// This node's record, on its lease.
    async fn put_record(&mut self) -> Result<i64> {
        put_record(
            &mut self.client,
            &self.keys,
            &self.name,
            &self.record,
            self.lease,
        )
        .await
    }

    /// Keeps this node's own keys as they must be, after the view changed: its
    /// reservation (claimed again if it was deleted and the subnet is still free)
    /// and its record (published again if it was deleted or changed behind its
    /// back). A subnet another node reserved meanwhile is lost: the record is not
    /// published then (it would claim someone else's subnet), and `lost` says why.
    async fn hold_reservation(&mut self) -> Result<()> {
        let mine = self.record.pod_cidr;
        let owner = match self.view.subnets.get(&mine) {
            Some(owner) => Some(owner.clone()),
            None => {
                if claim(&mut self.client, &self.keys, &self.name, mine).await? {
                    tracing::warn!(
                        subnet = %mine,
                        "etcd: this node's reservation was missing; claimed its subnet again"
                    );
                    self.view.subnets.insert(mine, self.name.clone());
                    Some(self.name.clone())
                } else {
                    // Someone claimed it between our read and our write: read who.
                    let resp = self.client.get(self.keys.subnet(&mine), None).await?;
                    resp.kvs()
                        .first()
                        .and_then(|kv| serde_json::from_slice::<Reservation>(kv.value()).ok())
                        .map(|r| r.node)
                }
            }
        };
        self.lost = match owner {
            Some(o) if o == self.name => None,
            Some(o) => Some(format!(
                "its pod CIDR {mine} is reserved by {o:?} now (this node's reservation was \
                 released behind its back); stop {o}'s agent and release it with \
                 `netpath node remove {o}`, or remove this node's pods and restart its agent \
                 to get another subnet"
            )),
            None => Some(format!("its pod CIDR {mine} could not be reserved again")),
        };
        let published = self.view.nodes.get(&self.name).map(|(_, r)| r.clone());
        match (&self.lost, published) {
            (None, Some(r)) if r == self.record => {}
            (None, published) => {
                match published {
                    Some(r) => tracing::warn!(
                        ?r,
                        "etcd: this node's record was changed by someone else; published it again"
                    ),
                    None => tracing::info!("etcd: publishing this node's record"),
                }
                let created = self.put_record().await?;
                self.view
                    .nodes
                    .insert(self.name.clone(), (created, self.record.clone()));
            }
            // Lost: no record claiming another node's subnet.
            (Some(_), Some(_)) => {
                self.client.delete(self.keys.node(&self.name), None).await?;
                self.view.nodes.remove(&self.name);
            }
            (Some(_), None) => {}
        }
        if let (None, Some(k)) = (&self.lost, self.wireguard_key) {
            if self.view.wireguard.get(&self.name) != Some(&k) {
                self.client
                    .put(
                        self.keys.wireguard_key(&self.name),
                        k.to_string(),
                        Some(PutOptions::new().with_lease(self.lease)),
                    )
                    .await?;
                self.view.wireguard.insert(self.name.clone(), k);
            }
        }
        Ok(())
    }

    async fn send_spec(&mut self, tx: &mpsc::Sender<Update>) -> std::result::Result<(), ()> {
        let known = self.reported.clone().unwrap_or(None);
        if known != self.lost {
            tx.send(Update::Membership(self.lost.clone()))
                .await
                .map_err(|_| ())?;
        }
        self.reported = Some(self.lost.clone());
        match self.spec() {
            Ok((spec, notes)) => tx.send(Update::Spec(spec, notes)).await.map_err(|_| ()),
            Err(e) => {
                tracing::error!(
                    "etcd: the cluster as stored is not usable, keeping the last state: {e}"
                );
                Ok(())
            }
        }
    }

    /// Watches from the last seen revision and renews the lease; returns on a
    /// connection error (Err) or when the agent is gone (Ok).
    async fn follow(&mut self, tx: &mpsc::Sender<Update>) -> Result<()> {
        let (mut keeper, mut renewals) = self.client.lease_keep_alive(self.lease).await?;
        let mut stream = self
            .client
            .watch(
                self.keys.root(),
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(self.revision + 1)
                        .with_progress_notify(),
                ),
            )
            .await?;
        let every = Duration::from_secs((self.opts.lease_ttl / 3).max(1) as u64);
        let mut renew = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = tx.closed() => return Ok(()),
                _ = renew.tick() => keeper.keep_alive().await?,
                msg = renewals.message() => match msg? {
                    Some(r) if r.ttl() > 0 => {}
                    Some(_) => {
                        // The lease expired (a long pause): publish anew.
                        tracing::warn!("etcd: lease {} expired; publishing this node again", self.lease);
                        return Err(StoreError::Restart("lease expired"));
                    }
                    None => return Err(StoreError::Restart("lease renewal stream ended")),
                },
                msg = stream.message() => {
                    let Some(resp) = msg? else {
                        return Err(StoreError::Restart("watch stream ended"));
                    };
                    if self.on_watch(resp, tx).await? == Flow::AgentGone {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// One watch response: applied to the view, this node's own keys kept, and the
    /// spec sent on when it changed.
    async fn on_watch(&mut self, resp: WatchResponse, tx: &mpsc::Sender<Update>) -> Result<Flow> {
        if resp.created() && tx.send(Update::Watching).await.is_err() {
            return Ok(Flow::AgentGone);
        }
        if resp.compact_revision() > 0 || resp.canceled() {
            // History gone past our revision: only a full re-list is right, which
            // the resync after this restart does.
            tracing::info!(
                revision = self.revision,
                "etcd: watch compacted; re-listing"
            );
            return Err(StoreError::Restart("watch restarted after compaction"));
        }
        if let Some(h) = resp.header() {
            self.revision = self.revision.max(h.revision());
        }
        let mut changed = false;
        let mut own = false;
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            let Ok(key) = kv.key_str() else { continue };
            let value = (ev.event_type() == EventType::Put).then(|| kv.value());
            self.view
                .apply(&self.keys, key, value, kv.create_revision());
            self.revision = self.revision.max(kv.mod_revision());
            if let Some(why) = self.view.refused.get(key) {
                tracing::warn!("etcd: {key}: {why}; ignored");
            }
            changed |= self.view.affects_spec(&self.keys, key, value.is_some());
            own |= key == self.keys.node(&self.name) || key.starts_with(&self.keys.subnets());
        }
        if own {
            let was = self.lost.clone();
            self.hold_reservation().await?;
            if self.lost != was {
                match &self.lost {
                    Some(why) => tracing::error!("etcd: this node lost its subnet: {why}"),
                    None => tracing::info!("etcd: this node holds its subnet again"),
                }
                changed = true;
            }
        }
        // A new reservation alone (a node on its way in) changes no plan: with many
        // agents, skipping it halves the work per join.
        if changed && self.send_spec(tx).await.is_err() {
            return Ok(Flow::AgentGone);
        }
        Ok(Flow::Go)
    }
}

/// Whether the member goes on after a watch response.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Go,
    /// The agent dropped its receiver: it is stopping.
    AgentGone,
}

/// `name`'s record on `lease`; returns the revision of the put.
async fn put_record(
    client: &mut Client,
    keys: &Keys,
    name: &str,
    record: &NodeRecord,
    lease: i64,
) -> Result<i64> {
    let value = serde_json::to_vec(record).expect("record serializes");
    let resp = client
        .put(
            keys.node(name),
            value,
            Some(PutOptions::new().with_lease(lease)),
        )
        .await?;
    Ok(resp.header().map_or(0, |h| h.revision()))
}

impl crate::store::Store for Member {
    fn kind(&self) -> crate::store::StoreKind {
        crate::store::StoreKind::Etcd
    }

    fn spec(&self) -> std::result::Result<(ClusterSpec, Vec<String>), crate::store::Error> {
        Member::spec(self).map_err(crate::store::Error::Etcd)
    }

    fn lost(&self) -> Option<String> {
        Member::lost(self).map(str::to_string)
    }

    fn run(
        self: Box<Self>,
        tx: mpsc::Sender<Update>,
        _reread: std::sync::Arc<tokio::sync::Notify>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        // The watch keeps the view current: a re-read asks nothing of etcd.
        Box::pin(Member::run(*self, tx))
    }
}
