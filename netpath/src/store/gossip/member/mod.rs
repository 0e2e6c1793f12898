//! This node's membership in a gossip cluster, over the SWIM transport (`swim`).
//! The membership identity carries each node's record (see `Peer`), so the members
//! a node knows of are the cluster; the claims rule picks who holds which pod CIDR
//! (`claim`), and the agent is told the spec whenever it changes. How a node comes
//! in is `join`; its claim outlives the process in `saved`.
//!
//! A node's own claim is settled, and its pods get addresses, once the claim has
//! stood unchallenged, with no news of claims, for `CLAIM_SETTLE` while the node
//! could hear the cluster: an earlier claim of the same subnet reaches it within that
//! time (it spreads in ~1 s, and a burst of joins keeps the clock from running), so
//! of two live nodes that can hear each other at most one settles on a subnet. The
//! cluster hears that it settled, and a settled claim outranks every unsettled one:
//! a node that claimed while it heard nobody never takes the subnet of pods that
//! run. A claim that loses before it settles has handed out no address and is made
//! again at once, while joining or running.
mod claim;
mod join;
mod saved;

use std::{path::PathBuf, time::Duration};

use foca::State;
use tokio::{sync::mpsc, time::Instant};

pub use self::claim::CLAIM_SETTLE;
use super::{claims::holders, swim::Swim, GossipError};
use crate::{
    net::Ipv4Net,
    spec::ClusterSpec,
    store::{
        model::{assemble, ClusterConfig},
        Update,
    },
};

/// How often claims are judged and a lone node asks its seeds again.
const TICK: Duration = Duration::from_millis(250);
/// A spec is built at the first tick after news, then at most this often while news
/// keeps arriving: each build walks the whole membership, and on a big cluster in a
/// burst of joins every member would build one each tick.
const BUILD_WHILE_BUSY: Duration = Duration::from_secs(1);

pub struct Member {
    swim: Swim,
    config: ClusterConfig,
    claim_file: PathBuf,
    pub counters: std::sync::Arc<super::Counters>,
    /// Since when this node's claim has stood (None: it does not now).
    standing_since: Option<Instant>,
    /// When membership news last arrived (builds are spaced while it streams in).
    last_news: Instant,
    /// When news that may bring a claim last arrived: a claim settles only once the
    /// cluster has been quiet for `CLAIM_SETTLE` (in a burst of joins, claims are
    /// still on their way).
    claims_news: Instant,
    /// When this node last claimed a subnet.
    claimed_at: Option<Instant>,
    attempts: usize,
    lost: Option<String>,
    last_sent: Option<ClusterSpec>,
    last_lost: Option<Option<String>>,
    /// The membership changed since the spec was last built: it is built again at
    /// the next tick, so a burst of joins costs one build per tick, not one each.
    dirty: bool,
    /// When the spec was last built: while news keeps coming (a thousand nodes
    /// joining), at most one build per `BUILD_WHILE_BUSY`.
    built_at: Option<Instant>,
    /// The verdict on this node's own claim, judged again only after news.
    verdict: Option<Verdict>,
    judged_at: Option<Instant>,
}

/// Whether this node's claim stands, else who holds its subnet.
#[derive(Debug, Clone)]
enum Verdict {
    Stands,
    LostTo(String),
}

impl Member {
    fn new(swim: Swim, config: ClusterConfig, claim_file: PathBuf) -> Self {
        Self {
            counters: swim.counters.clone(),
            swim,
            config,
            claim_file,
            standing_since: None,
            last_news: Instant::now(),
            claims_news: Instant::now(),
            claimed_at: None,
            attempts: 0,
            lost: None,
            last_sent: None,
            last_lost: None,
            dirty: true,
            built_at: None,
            verdict: None,
            judged_at: None,
        }
    }

    /// Why this node may not hand out pod addresses now, if it may not.
    pub fn lost(&self) -> Option<&str> {
        self.lost.as_deref()
    }

    /// The pod CIDR this node claims.
    pub fn pod_cidr(&self) -> Ipv4Net {
        self.swim.identity().record.pod_cidr
    }

    /// When this node last claimed its subnet (None: its claim came from disk): the
    /// moment its news started spreading.
    pub fn claimed_at(&self) -> Option<Instant> {
        self.claimed_at
    }

    /// The cluster as this node hears it: itself and every live member whose claim
    /// stands and whose settings are this node's; the rest named in the notes.
    pub fn spec(&self) -> Result<(ClusterSpec, Vec<String>), GossipError> {
        let me = self.swim.identity();
        let mut notes = Vec::new();
        let known = self.known();
        let claims = self.claims(&known);
        let standing = holders(&claims);
        let mut candidates = Vec::new();
        for (p, state) in &known {
            if p.name == me.name || *state == State::Down {
                continue;
            }
            if p.settings != me.settings {
                notes.push(format!(
                    "node {}: its cluster settings differ from this node's",
                    p.name
                ));
            } else if !self.claims_in_cluster(p) {
                // Still listening before it claims: not news.
            } else if !standing.contains(p.name.as_str()) {
                notes.push(format!(
                    "node {}: its claim of {} lost to a settled or earlier one",
                    p.name, p.record.pod_cidr
                ));
            } else {
                candidates.push((p.name.as_str(), &p.record));
            }
        }
        let (spec, refused) = assemble(&self.config, Some((&me.name, &me.record)), candidates)?;
        notes.extend(refused);
        Ok((spec, notes))
    }

    /// Follows the cluster: membership datagrams, timers, claims judged every tick.
    pub async fn run(mut self, tx: mpsc::Sender<Update>) {
        let mut buf = Swim::buffer();
        let mut tick = tokio::time::interval(TICK);
        let mut dropped = 0;
        self.swim.start_following();
        if tx.send(Update::Watching).await.is_err() {
            return;
        }
        let _ = self.send_updates(&tx).await;
        loop {
            let stepped = tokio::select! {
                () = self.swim.step(&mut buf, None) => true,
                _ = tick.tick() => false,
            };
            self.take_news();
            if stepped {
                continue;
            }
            self.swim.keep_in_touch();
            self.take_news();
            // A lost claim is judged afresh each tick: the winner may be forgotten
            // (`--forget-after`) with no news about it.
            if matches!(self.verdict, Some(Verdict::LostTo(_))) {
                self.verdict = None;
            }
            // Only what can change a verdict: news, or a claim still settling.
            if self.dirty || self.lost.is_some() {
                self.judge(false);
            }
            let now = self.counters.dropped();
            if now != dropped {
                dropped = now;
                if tx.send(Update::Dropped(now)).await.is_err() {
                    return;
                }
            }
            if self.send_updates(&tx).await.is_err() {
                return;
            }
            self.swim.drain();
            self.take_news();
        }
    }

    /// What the transport heard that can change a verdict or the spec.
    fn take_news(&mut self) {
        let news = self.swim.take_news();
        if news.membership {
            self.dirty = true;
            self.verdict = None;
            self.last_news = Instant::now();
        }
        if news.claims {
            self.claims_news = Instant::now();
        }
    }

    /// Tells the agent what changed: the spec, and whether the node may hand out
    /// addresses.
    async fn send_updates(&mut self, tx: &mpsc::Sender<Update>) -> Result<(), ()> {
        if self.last_lost.as_ref() != Some(&self.lost) {
            tx.send(Update::Membership(self.lost.clone()))
                .await
                .map_err(|_| ())?;
            self.last_lost = Some(self.lost.clone());
        }
        let busy = self.last_news.elapsed() < TICK
            && self
                .built_at
                .is_some_and(|t| t.elapsed() < BUILD_WHILE_BUSY);
        if !self.dirty || busy {
            return Ok(());
        }
        self.dirty = false;
        self.built_at = Some(Instant::now());
        match self.spec() {
            Ok((spec, notes)) if self.last_sent.as_ref() != Some(&spec) => {
                self.last_sent = Some(spec.clone());
                tx.send(Update::Spec(spec, notes)).await.map_err(|_| ())
            }
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::warn!("gossip: the cluster as heard makes no valid spec: {e}");
                Ok(())
            }
        }
    }

    /// Reads datagrams (and runs timers) for a while, before the node claims.
    async fn listen_for(&mut self, span: Duration) {
        let end = Instant::now() + span;
        let mut buf = Swim::buffer();
        while Instant::now() < end {
            self.swim.step(&mut buf, Some(end)).await;
            self.take_news();
        }
    }
}

impl crate::store::Store for Member {
    fn kind(&self) -> crate::store::StoreKind {
        crate::store::StoreKind::Gossip
    }

    fn spec(&self) -> Result<(ClusterSpec, Vec<String>), crate::store::Error> {
        Member::spec(self).map_err(crate::store::Error::Gossip)
    }

    fn lost(&self) -> Option<String> {
        Member::lost(self).map(str::to_string)
    }

    fn run(
        self: Box<Self>,
        tx: mpsc::Sender<Update>,
        _reread: std::sync::Arc<tokio::sync::Notify>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        // Membership news arrives as it happens: a re-read asks nothing of the peers.
        Box::pin(Member::run(*self, tx))
    }
}
