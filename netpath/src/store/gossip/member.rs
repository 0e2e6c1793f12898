//! This node's membership in a gossip cluster: SWIM (the `foca` crate) over one
//! UDP socket, every datagram through `Wire` (the cluster key's tag checked before
//! anything is parsed). The membership identity carries each node's record (see
//! `Peer`), so the members a node knows of are the cluster; the claims rule picks
//! who holds which pod CIDR, and the agent is told the spec whenever it changes.
//!
//! A node's own claim is settled, and its pods get addresses, once the claim has
//! stood unchallenged, with no membership news, for `CLAIM_SETTLE` while the node
//! could hear the cluster: an earlier claim of the same subnet reaches it within that
//! time (it spreads in ~1 s, and a burst of joins keeps the clock from running), so
//! of two live nodes that can hear each other at most one settles on a subnet. The
//! one that loses claims another before it hands out any address.
use std::{
    cmp::Reverse,
    collections::{BTreeSet, BinaryHeap, HashMap, HashSet},
    net::{Ipv4Addr, SocketAddr},
    num::{NonZeroU8, NonZeroUsize},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use foca::{
    AccumulatingRuntime, Config, Foca, Member as SwimMember, NoCustomBroadcast, OwnedNotification,
    PeriodicParams, PostcardCodec, State, Timer,
};
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use tokio::{net::UdpSocket, sync::mpsc, time::Instant};

use super::{
    claims::{holders, Claim},
    peer::Peer,
    wire::{Dropped, Kind, Wire},
    GossipError, GossipOptions,
};
use crate::{
    net::{Ipv4Net, Mac},
    spec::ClusterSpec,
    store::{
        model::{assemble, pick_subnet_after_conflict, valid_node_name, ClusterConfig, NodeRecord},
        Update,
    },
};

/// SWIM's probe period and round trip: a dead node is suspected within about two
/// periods of its death and declared down `SUSPECT_TO_DOWN` later, times the
/// digits of the cluster's size (`suspicion_scale`): the more members, the longer
/// a suspicion takes to reach the suspect so it can refute it.
const PROBE_PERIOD: Duration = Duration::from_millis(500);
const PROBE_RTT: Duration = Duration::from_millis(200);
const SUSPECT_TO_DOWN: Duration = Duration::from_secs(2);
/// How long a claim must stand unchallenged before the node hands out addresses.
pub const CLAIM_SETTLE: Duration = Duration::from_secs(3);
/// How long a joining node listens before it claims a subnet.
const LISTEN_BEFORE_CLAIM: Duration = Duration::from_millis(1500);
/// How long a joining node waits for a seed's member list before it asks the next.
const ASK_NEXT_SEED_AFTER: Duration = Duration::from_millis(500);
/// How long a joining node waits for a seed's settings.
const SETTINGS_WAIT: Duration = Duration::from_secs(2);
/// How often claims are judged and a lone node asks its seeds again.
const TICK: Duration = Duration::from_millis(250);
const RECV_BUF: usize = 65_536;
/// A datagram as large as one frame of a 1500-byte underlay carries.
const DATAGRAM: usize = 1400;
const CLAIM_FILE: &str = "gossip-claim.json";
/// How often a node asks a random member for every member it knows: what news
/// alone missed (a partition, updates retransmitted out) arrives within this. The
/// ask carries a digest of the asker's view, and a member whose view matches sends
/// nothing: at rest every view matches, and the full views (54 datagrams each at
/// 1 000 members) had overflowed receive buffers, losing probes' answers.
const SYNC_EVERY: Duration = Duration::from_secs(20);
/// A spec is built at the first tick after news, then at most this often while news
/// keeps arriving: each build walks the whole membership, and on a big cluster in a
/// burst of joins every member would build one each tick.
const BUILD_WHILE_BUSY: Duration = Duration::from_secs(1);

/// Datagrams dropped, by reason.
#[derive(Debug, Default)]
pub struct Counters {
    pub bad_tag: AtomicU64,
    pub stale: AtomicU64,
    pub malformed: AtomicU64,
    /// Bytes this node sent, datagram headers and tags included: what gossip costs.
    pub sent_bytes: AtomicU64,
    /// Members this node saw declared down (probe timeouts, or news of them).
    pub declared_down: AtomicU64,
}

impl Counters {
    fn count(&self, why: Dropped) {
        let c = match why {
            Dropped::Tag => &self.bad_tag,
            Dropped::Stale(_) => &self.stale,
            Dropped::Short | Dropped::Foreign | Dropped::Kind(_) => &self.malformed,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn dropped(&self) -> u64 {
        self.bad_tag.load(Ordering::Relaxed)
            + self.stale.load(Ordering::Relaxed)
            + self.malformed.load(Ordering::Relaxed)
    }
}

/// A claim as kept on disk: a restarted node asks for its subnet back first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct SavedClaim {
    pod_cidr: Ipv4Net,
    claimed_ms: u64,
    /// Whether it settled: only a settled claim is the node's at once on a restart.
    settled: bool,
}

type Swim = Foca<Peer, PostcardCodec, StdRng, NoCustomBroadcast>;

pub struct Member {
    foca: Swim,
    rt: AccumulatingRuntime<Peer>,
    socket: Arc<UdpSocket>,
    wire: Wire,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    pending: HashMap<u64, Timer<Peer>>,
    next_timer: u64,
    config: ClusterConfig,
    settings_json: Vec<u8>,
    seeds: Vec<SocketAddr>,
    claim_file: PathBuf,
    pub counters: Arc<Counters>,
    /// Since when this node's claim has stood (None: it does not now).
    standing_since: Option<Instant>,
    /// When membership news last arrived: a claim settles only once the cluster has
    /// been quiet for `CLAIM_SETTLE` (in a burst of joins, claims are still on
    /// their way).
    last_news: Instant,
    /// When this node last claimed a subnet.
    claimed_at: Option<Instant>,
    /// Whether an authentic datagram from another node has arrived.
    heard: bool,
    /// The claim was read back from disk: settled before this start.
    restored: bool,
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
    forget_after: Duration,
    /// The suspicion scale in force (see `suspicion_scale`).
    scale: u32,
    /// Which seed is asked for the member list next (counts up from a point set by
    /// the node's name).
    knocks: usize,
    /// Whether a member list (a `Members` datagram) has arrived.
    got_members: bool,
}

/// Whether this node's claim stands, else who holds its subnet.
#[derive(Debug, Clone)]
enum Verdict {
    Stands,
    LostTo(String),
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The cluster settings' digest every member publishes.
fn digest(json: &[u8]) -> u64 {
    crate::files::fnv1a(json.iter().copied())
}

/// As memberlist scales its suspicion timeout: 1 up to 9 members, 2 up to 99, 3 up
/// to 999, 4 beyond. Measured in the bench: with 1 000 members and a fixed 2 s,
/// live members were declared down faster than they could refute it.
fn suspicion_scale(members: usize) -> u32 {
    let mut digits = 1;
    let mut n = members / 10;
    while n > 0 && digits < 4 {
        digits += 1;
        n /= 10;
    }
    digits
}

fn swim_config(forget_after: Duration) -> Config {
    let mut c = Config::new_lan(std::num::NonZeroU32::new(32).expect("nonzero"));
    c.probe_period = PROBE_PERIOD;
    c.probe_rtt = PROBE_RTT;
    c.suspect_to_down_after = SUSPECT_TO_DOWN;
    c.max_transmissions = NonZeroU8::new(10).expect("nonzero");
    c.max_packet_size = NonZeroUsize::new(DATAGRAM).expect("nonzero");
    c.remove_down_after = Some(forget_after);
    c.notify_down_members = true;
    c.periodic_gossip = Some(PeriodicParams {
        frequency: Duration::from_millis(200),
        num_members: NonZeroUsize::new(3).expect("nonzero"),
    });
    // A healed partition: each side keeps knocking on the members it saw go down.
    c.periodic_announce_to_down_members = Some(PeriodicParams {
        frequency: Duration::from_secs(3),
        num_members: NonZeroUsize::new(2).expect("nonzero"),
    });
    c
}

impl Member {
    /// Joins: compares this node's settings with a seed's, listens, claims a pod
    /// CIDR (its saved one, the one its pods' addresses are from, or a free one).
    pub async fn join(
        opts: &GossipOptions,
        name: &str,
        underlay: Ipv4Net,
        vtep_mac: Mac,
        held: &[Ipv4Addr],
        state_dir: &Path,
    ) -> Result<Self, GossipError> {
        if !valid_node_name(name) {
            return Err(GossipError::NodeName(name.into()));
        }
        opts.config.validate()?;
        let socket = UdpSocket::bind(opts.listen)
            .await
            .map_err(|e| GossipError::Bind(opts.listen, e))?;
        let wire = Wire::new(opts.key.as_deref());
        let settings_json = serde_json::to_vec(&opts.config).expect("plain data");
        let counters = Arc::new(Counters::default());
        let gossip = SocketAddr::new(underlay.addr.into(), opts.listen.port());
        // Every node may be given the same seed list, itself among it.
        let seeds: Vec<SocketAddr> = opts
            .seeds
            .iter()
            .copied()
            .filter(|s| *s != gossip)
            .collect();
        compare_settings(&socket, &wire, &seeds, &opts.config, &counters).await?;
        let claim_file = state_dir.join(CLAIM_FILE);
        // A saved claim outside the cluster's settings (changed since) is void.
        let cluster = opts.config.settings.cluster_cidr;
        let saved = read_claim(&claim_file).filter(|s| {
            s.pod_cidr.prefix == opts.config.subnet_len && cluster.contains_net(&s.pod_cidr)
        });
        let me = Peer {
            name: name.to_string(),
            gossip,
            generation: unix_ms(),
            record: NodeRecord {
                underlay,
                // Provisional until claimed: a /32 of the underlay, outside any
                // cluster CIDR's claims (members without a claim are not counted).
                pod_cidr: saved.map_or(Ipv4Net::new(underlay.addr, 32), |s| s.pod_cidr),
                vtep_mac,
            },
            claimed_ms: saved.map_or(0, |s| s.claimed_ms),
            settings: digest(&settings_json),
        };
        let foca = Foca::new(
            me,
            swim_config(opts.forget_after),
            rand::make_rng::<StdRng>(),
            PostcardCodec,
        );
        let mut member = Self {
            foca,
            rt: AccumulatingRuntime::new(),
            socket: Arc::new(socket),
            wire,
            timers: BinaryHeap::new(),
            pending: HashMap::new(),
            next_timer: 0,
            config: opts.config.clone(),
            settings_json,
            seeds,
            claim_file,
            counters,
            standing_since: None,
            last_news: Instant::now(),
            claimed_at: None,
            heard: false,
            restored: saved.is_some_and(|s| s.settled),
            attempts: 0,
            lost: None,
            last_sent: None,
            last_lost: None,
            dirty: true,
            built_at: None,
            verdict: None,
            judged_at: None,
            forget_after: opts.forget_after,
            scale: 1,
            knocks: crate::files::fnv1a(name.bytes()) as usize,
            got_members: false,
        };
        member.announce_to_seeds();
        if saved.is_none() {
            // While no seed has sent the member list (one down, its answer lost),
            // the next is asked: the claim is made knowing the cluster.
            let end = Instant::now() + LISTEN_BEFORE_CLAIM;
            while !member.seeds.is_empty() && Instant::now() < end {
                member.listen_for(ASK_NEXT_SEED_AFTER).await;
                if !member.got_members {
                    member.ask_next_seed();
                }
            }
            member.claim(held)?;
        }
        // The claim settles (or loses and is made again) before the agent starts:
        // a running node never moves its pod CIDR.
        let deadline = Instant::now() + opts.join_wait;
        loop {
            member.judge(true);
            if member.lost.is_none() || Instant::now() >= deadline {
                break;
            }
            member.listen_for(TICK).await;
        }
        Ok(member)
    }

    /// Why this node may not hand out pod addresses now, if it may not.
    pub fn lost(&self) -> Option<&str> {
        self.lost.as_deref()
    }

    /// The pod CIDR this node claims.
    pub fn pod_cidr(&self) -> Ipv4Net {
        self.foca.identity().record.pod_cidr
    }

    /// When this node last claimed its subnet (None: its claim came from disk): the
    /// moment its news started spreading.
    pub fn claimed_at(&self) -> Option<Instant> {
        self.claimed_at
    }

    /// The cluster as this node hears it: itself and every live member whose claim
    /// stands and whose settings are this node's; the rest named in the notes.
    pub fn spec(&self) -> Result<(ClusterSpec, Vec<String>), GossipError> {
        let me = self.foca.identity();
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
                    "node {}: its claim of {} lost to an earlier one",
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
        let mut buf = vec![0u8; RECV_BUF];
        let mut tick = tokio::time::interval(TICK);
        let mut lonely_since = Instant::now();
        let mut synced = Instant::now();
        let mut dropped = 0;
        if tx.send(Update::Watching).await.is_err() {
            return;
        }
        let _ = self.send_updates(&tx).await;
        loop {
            tokio::select! {
                () = self.step(&mut buf, None) => continue,
                _ = tick.tick() => {}
            }
            // Push-pull: a random member's full view, for what news missed.
            if synced.elapsed() >= SYNC_EVERY {
                synced = Instant::now();
                let n = self.foca.num_members();
                if n > 0 {
                    let pick = rand::random_range(0..n);
                    let to = self.foca.iter_members().nth(pick).map(|m| m.id().gossip);
                    if let Some(to) = to {
                        let digest = self.view_digest();
                        self.ask_members(to, Some(digest));
                    }
                }
            }
            // A node that hears nobody keeps asking its seeds (a seed that started
            // later, a healed partition).
            if self.foca.num_members() > 0 {
                lonely_since = Instant::now();
            } else if lonely_since.elapsed() >= Duration::from_secs(2) {
                self.announce_to_seeds();
                lonely_since = Instant::now();
            }
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
            self.drain();
        }
    }

    /// Keeps the suspicion timeout in step with the cluster's size.
    fn rescale(&mut self) {
        let scale = suspicion_scale(self.foca.num_members() + 1);
        if scale == self.scale {
            return;
        }
        let mut c = swim_config(self.forget_after);
        c.suspect_to_down_after = SUSPECT_TO_DOWN * scale;
        match self.foca.set_config(c) {
            Ok(()) => self.scale = scale,
            Err(e) => tracing::warn!("gossip: rescale the failure detector: {e}"),
        }
    }

    /// Handles one datagram or the timers due (by `until` at the latest), then
    /// sends what that produced. Cancel-safe: it is only ever cut off while
    /// waiting.
    async fn step(&mut self, buf: &mut [u8], until: Option<Instant>) {
        let next = self.timers.peek().map(|Reverse((at, _))| *at);
        let wake = match (next, until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        tokio::select! {
            got = self.socket.recv_from(buf) => match got {
                Ok((n, from)) => {
                    // Copied out so the handler may borrow the member.
                    let d = buf[..n].to_vec();
                    self.on_datagram(&d, from);
                }
                Err(e) => tracing::warn!("gossip: receive: {e}"),
            },
            _ = sleep_until(wake) => self.fire_timers(),
        }
        self.rescale();
        self.drain();
    }

    /// Every member this node knows of, in name order (the newest generation of a
    /// name), borrowed. Sorted in a vector, not inserted in a map: this runs for every
    /// build, and the tree's node allocations were most of its cost at 1 000 members.
    fn known(&self) -> Vec<(&Peer, State)> {
        let me = self.foca.identity();
        let mut out: Vec<(&Peer, State)> = std::iter::once((me, State::Alive))
            .chain(
                self.foca
                    .iter_membership_state()
                    .filter(|m| m.id().name != me.name)
                    .map(|m| (m.id(), m.state())),
            )
            .collect();
        // Newest generation first within a name, so dedup keeps it.
        out.sort_unstable_by(|(a, _), (b, _)| {
            (a.name.as_str(), Reverse(a.generation)).cmp(&(b.name.as_str(), Reverse(b.generation)))
        });
        out.dedup_by(|later, first| later.0.name == first.0.name);
        out
    }

    /// The claims that count: members with this node's settings claiming a subnet
    /// of the cluster.
    fn claims<'a>(&self, known: &[(&'a Peer, State)]) -> Vec<Claim<'a>> {
        let settings = self.foca.identity().settings;
        known
            .iter()
            .filter(|(p, _)| p.settings == settings && self.claims_in_cluster(p))
            .map(|(p, _)| Claim {
                node: &p.name,
                subnet: p.record.pod_cidr,
                claimed_ms: p.claimed_ms,
            })
            .collect()
    }

    fn claims_in_cluster(&self, p: &Peer) -> bool {
        let c = self.config.settings.cluster_cidr;
        p.record.pod_cidr.prefix == self.config.subnet_len && c.contains_net(&p.record.pod_cidr)
    }

    /// Claims a subnet: the one its pods' addresses are from, else a free one.
    fn claim(&mut self, held: &[Ipv4Addr]) -> Result<(), GossipError> {
        let known = self.known();
        let me = self.foca.identity().clone();
        let taken: BTreeSet<Ipv4Net> = known
            .iter()
            .filter(|(p, _)| p.name != me.name && self.claims_in_cluster(p))
            .map(|(p, _)| p.record.pod_cidr)
            .collect();
        let cluster = self.config.settings.cluster_cidr;
        let len = self.config.subnet_len;
        let ours = held
            .first()
            .map(|a| Ipv4Net::new(*a, len).subnet())
            .filter(|n| cluster.contains_net(n) && !taken.iter().any(|t| t.overlaps(n)));
        let pod_cidr = match ours {
            Some(n) if self.attempts == 0 => n,
            _ => pick_subnet_after_conflict(cluster, len, &taken, &me.name, self.attempts).ok_or(
                GossipError::Full {
                    cluster,
                    len,
                    node: me.name.clone(),
                },
            )?,
        };
        self.attempts += 1;
        let claimed_ms = unix_ms();
        let next = Peer {
            generation: me.generation + 1,
            record: NodeRecord {
                pod_cidr,
                ..me.record
            },
            claimed_ms,
            ..me
        };
        self.foca
            .change_identity(next, &mut self.rt)
            .map_err(|e| GossipError::Swim(e.to_string()))?;
        // The new identity starts disconnected: knock again.
        self.announce_to_seeds();
        write_claim(
            &self.claim_file,
            SavedClaim {
                pod_cidr,
                claimed_ms,
                settled: false,
            },
        )?;
        self.standing_since = None;
        self.claimed_at = Some(Instant::now());
        self.restored = false;
        self.dirty = true;
        self.verdict = None;
        tracing::info!(%pod_cidr, attempt = self.attempts, "gossip: claimed a pod CIDR");
        Ok(())
    }

    /// Judges this node's own claim: standing, settled, or lost: claimed again while
    /// joining (`may_reclaim`), else reported (its pods' addresses clash now).
    fn judge(&mut self, may_reclaim: bool) {
        let me = self.foca.identity().clone();
        if !self.claims_in_cluster(&me) {
            self.lost = Some("it has claimed no pod CIDR yet".into());
            return;
        }
        // While news streams in, the rule is evaluated at most once per
        // `BUILD_WHILE_BUSY` (a claim cannot settle meanwhile anyway).
        let busy = self.last_news.elapsed() < TICK
            && self
                .judged_at
                .is_some_and(|t| t.elapsed() < BUILD_WHILE_BUSY);
        let verdict = match &self.verdict {
            Some(v) => v.clone(),
            None if busy => return,
            None => {
                let v = self.judge_claims(&me);
                self.verdict = Some(v.clone());
                self.judged_at = Some(Instant::now());
                v
            }
        };
        if let Verdict::LostTo(winner) = verdict {
            self.standing_since = None;
            if !may_reclaim {
                self.lost = Some(format!(
                    "node {winner} claimed {} earlier (a healed partition?): restart this \
                     node's agent without pods to claim another",
                    me.record.pod_cidr
                ));
                return;
            }
            tracing::warn!(
                pod_cidr = %me.record.pod_cidr,
                winner,
                "gossip: an earlier claim holds this node's subnet; claiming another"
            );
            if let Err(e) = self.claim(&[]) {
                self.lost = Some(format!("{e}"));
            }
            return;
        }
        let now = Instant::now();
        let since = (*self.standing_since.get_or_insert(now)).max(self.last_news);
        let can_hear = self.seeds.is_empty() || self.heard;
        self.lost = if self.restored || (can_hear && now - since >= CLAIM_SETTLE) {
            if !self.restored {
                self.restored = true;
                let saved = SavedClaim {
                    pod_cidr: me.record.pod_cidr,
                    claimed_ms: me.claimed_ms,
                    settled: true,
                };
                if let Err(e) = write_claim(&self.claim_file, saved) {
                    tracing::warn!("{e}");
                }
            }
            None
        } else {
            Some(format!(
                "its claim of {} is not settled yet ({} s unchallenged needed{})",
                me.record.pod_cidr,
                CLAIM_SETTLE.as_secs(),
                if can_hear {
                    ""
                } else {
                    ", and no peer heard yet"
                }
            ))
        };
    }

    /// Evaluates the claim rule on every claim heard.
    fn judge_claims(&self, me: &Peer) -> Verdict {
        // A claim nobody else's overlaps stands whatever the order (the common case,
        // and a walk with no allocation); only a clash needs the whole rule.
        let clash = self.foca.iter_membership_state().any(|m| {
            let p = m.id();
            p.name != me.name
                && p.settings == me.settings
                && self.claims_in_cluster(p)
                && p.record.pod_cidr.overlaps(&me.record.pod_cidr)
        });
        if !clash {
            return Verdict::Stands;
        }
        let known = self.known();
        let claims = self.claims(&known);
        if holders(&claims).contains(me.name.as_str()) {
            return Verdict::Stands;
        }
        let winner = known
            .iter()
            .find(|(p, _)| p.name != me.name && p.record.pod_cidr.overlaps(&me.record.pod_cidr))
            .map_or("another node".to_string(), |(p, _)| p.name.clone());
        Verdict::LostTo(winner)
    }

    fn on_datagram(&mut self, d: &[u8], from: SocketAddr) {
        match self.wire.open(d, unix_ms()) {
            Err(why) => {
                self.counters.count(why);
                tracing::debug!(%from, "gossip: dropped a datagram: {why}");
            }
            Ok((Kind::Membership, payload)) => {
                self.heard = true;
                // An authentic datagram foca turns down is protocol state (one meant
                // for this node's previous identity, say), not an attack: not counted.
                if let Err(e) = self.foca.handle_data(payload, &mut self.rt) {
                    tracing::debug!(%from, "gossip: membership datagram refused: {e}");
                }
            }
            Ok((Kind::SettingsAsk, _)) => {
                let reply = self
                    .wire
                    .seal(Kind::Settings, unix_ms(), &self.settings_json);
                let _ = self.socket.try_send_to(&reply, from);
            }
            Ok((Kind::Settings, _)) => {}
            Ok((Kind::MembersAsk, payload)) => {
                self.heard = true;
                // An ask without a digest (a node that only joins) gets every member.
                let theirs = <[u8; 8]>::try_from(payload).ok().map(u64::from_le_bytes);
                if theirs != Some(self.view_digest()) {
                    self.send_members(from);
                }
            }
            Ok((Kind::Members, payload)) => {
                self.heard = true;
                self.got_members = true;
                match postcard::from_bytes::<Vec<SwimMember<Peer>>>(payload) {
                    Ok(members) => {
                        // Discovery only: what this node already knows of a member
                        // (alive, suspected or down) is SWIM's to change. A full
                        // view carries other nodes' suspicions and verdicts, and
                        // applied, spread them past the suspect's chance to refute:
                        // with 1 000 members, a storm of live nodes declared down.
                        let me = self.foca.identity();
                        let known: HashSet<(SocketAddr, u64)> = self
                            .foca
                            .iter_membership_state()
                            .map(|m| m.id())
                            .chain([me])
                            .map(|p| (p.gossip, p.generation))
                            .collect();
                        let new = members
                            .into_iter()
                            .filter(|m| !known.contains(&(m.id().gossip, m.id().generation)));
                        let _ = self.foca.apply_many(new, false, &mut self.rt);
                    }
                    Err(e) => tracing::warn!(%from, "gossip: members datagram unreadable: {e}"),
                }
            }
        }
    }

    /// Every member this node knows, itself included, in datagrams of `DATAGRAM`.
    fn send_members(&mut self, to: SocketAddr) {
        let me = SwimMember::alive(self.foca.identity().clone());
        let all: Vec<SwimMember<Peer>> = std::iter::once(me)
            .chain(self.foca.iter_membership_state().cloned())
            .collect();
        let room = DATAGRAM - self.wire.overhead();
        let mut chunk: Vec<SwimMember<Peer>> = Vec::new();
        let send = |chunk: &[SwimMember<Peer>], this: &Self| {
            let Ok(bytes) = postcard::to_allocvec(chunk) else {
                return;
            };
            let d = this.wire.seal(Kind::Members, unix_ms(), &bytes);
            if this.socket.try_send_to(&d, to).is_ok() {
                this.counters
                    .sent_bytes
                    .fetch_add(d.len() as u64, Ordering::Relaxed);
            }
        };
        // A sequence is its length as a varint (at most 3 bytes here) and its items.
        let mut size = 3;
        for m in all {
            let item = postcard::to_allocvec(&m).map_or(usize::MAX / 2, |b| b.len());
            if size + item > room && !chunk.is_empty() {
                send(&chunk, self);
                chunk.clear();
                size = 3;
            }
            chunk.push(m);
            size += item;
        }
        if !chunk.is_empty() {
            send(&chunk, self);
        }
    }

    /// Asks `to` (a seed, or a random member) for every member it knows, unless
    /// their view is this node's (`digest`).
    fn ask_members(&mut self, to: SocketAddr, digest: Option<u64>) {
        let payload = digest.map(u64::to_le_bytes);
        let d = self.wire.seal(
            Kind::MembersAsk,
            unix_ms(),
            payload.as_ref().map_or(&[], |p| p),
        );
        let _ = self.socket.try_send_to(&d, to);
    }

    /// The digest of the identities this node holds live, its own among them.
    fn view_digest(&self) -> u64 {
        view_digest(
            self.foca
                .iter_membership_state()
                .filter(|m| m.state() != State::Down)
                .map(|m| m.id())
                .chain([self.foca.identity()]),
        )
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, id))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            if let Some(t) = self.pending.remove(&id) {
                let _ = self.foca.handle_timer(t, &mut self.rt);
            }
        }
    }

    fn announce_to_seeds(&mut self) {
        let me = self.foca.identity().clone();
        self.ask_next_seed();
        for s in self.seeds.clone() {
            if s == me.gossip {
                continue;
            }
            // foca addresses an announce by identity; only its address is used.
            let to = Peer {
                gossip: s,
                generation: 0,
                ..me.clone()
            };
            let _ = self.foca.announce(to, &mut self.rt);
        }
        self.drain();
    }

    /// Asks one seed for the member list, the next one at the next knock: all of
    /// them answering at once overflowed a joiner's receive buffer. Each node starts
    /// at a seed of its own (by its name), so no one seed answers every joiner.
    fn ask_next_seed(&mut self) {
        if self.seeds.is_empty() {
            return;
        }
        let s = self.seeds[self.knocks % self.seeds.len()];
        self.knocks = self.knocks.wrapping_add(1);
        self.ask_members(s, None);
    }

    /// Sends what foca produced and schedules its timers.
    fn drain(&mut self) {
        while let Some((to, data)) = self.rt.to_send() {
            let d = self.wire.seal(Kind::Membership, unix_ms(), &data);
            if self.socket.try_send_to(&d, to.gossip).is_ok() {
                self.counters
                    .sent_bytes
                    .fetch_add(d.len() as u64, Ordering::Relaxed);
            }
        }
        while let Some((after, timer)) = self.rt.to_schedule() {
            let id = self.next_timer;
            self.next_timer += 1;
            self.pending.insert(id, timer);
            self.timers.push(Reverse((Instant::now() + after, id)));
        }
        while let Some(n) = self.rt.to_notify() {
            if matches!(
                n,
                OwnedNotification::MemberUp(_)
                    | OwnedNotification::MemberDown(_)
                    | OwnedNotification::Rename(..)
                    | OwnedNotification::Rejoin(_)
            ) {
                self.dirty = true;
                self.verdict = None;
                self.last_news = Instant::now();
            }
            match n {
                OwnedNotification::MemberUp(p) => tracing::debug!(node = p.name, "gossip: up"),
                OwnedNotification::MemberDown(p) => {
                    self.counters.declared_down.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(node = p.name, "gossip: node declared down")
                }
                OwnedNotification::Defunct => {
                    tracing::warn!("gossip: this node was declared down; rejoining")
                }
                _ => {}
            }
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
        let mut buf = vec![0u8; RECV_BUF];
        while Instant::now() < end {
            self.step(&mut buf, Some(end)).await;
        }
    }
}

/// A digest of a set of identities, in no order: two nodes that hold the same
/// members live have the same digest, whatever order they heard them in.
fn view_digest<'a>(ids: impl Iterator<Item = &'a Peer>) -> u64 {
    ids.map(|p| {
        let addr = match p.gossip.ip() {
            std::net::IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            std::net::IpAddr::V6(a) => a.octets(),
        };
        crate::files::fnv1a(
            addr.into_iter()
                .chain(p.gossip.port().to_le_bytes())
                .chain(p.generation.to_le_bytes()),
        )
    })
    .fold(0, u64::wrapping_add)
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Asks the seeds for their settings and refuses to join a cluster whose differ,
/// naming the first field that does. Silent seeds are no refusal: the first node of
/// a cluster may be started after the others.
async fn compare_settings(
    socket: &UdpSocket,
    wire: &Wire,
    seeds: &[SocketAddr],
    ours: &ClusterConfig,
    counters: &Counters,
) -> Result<(), GossipError> {
    if seeds.is_empty() {
        return Ok(());
    }
    let ask = wire.seal(Kind::SettingsAsk, unix_ms(), &[]);
    for s in seeds {
        let _ = socket.send_to(&ask, s).await;
    }
    let mut buf = vec![0u8; RECV_BUF];
    let end = Instant::now() + SETTINGS_WAIT;
    loop {
        let got = tokio::time::timeout_at(end, socket.recv_from(&mut buf)).await;
        let Ok(Ok((n, from))) = got else {
            tracing::warn!("gossip: no seed answered with its settings; joining on this node's");
            return Ok(());
        };
        match wire.open(&buf[..n], unix_ms()) {
            Ok((Kind::Settings, payload)) => {
                let theirs: serde_json::Value = serde_json::from_slice(payload).map_err(|e| {
                    GossipError::Settings(format!("{from} sent unreadable settings: {e}"))
                })?;
                let mine = serde_json::to_value(ours).expect("plain data");
                return match first_difference(&mine, &theirs) {
                    None => Ok(()),
                    Some((field, a, b)) => Err(GossipError::Settings(format!(
                        "{field} is {a} here but {b} in the cluster (as {from} has it)"
                    ))),
                };
            }
            Ok(_) => {}
            Err(why) => counters.count(why),
        }
    }
}

/// The first field (in name order) whose value differs between two settings.
fn first_difference(
    a: &serde_json::Value,
    b: &serde_json::Value,
) -> Option<(String, String, String)> {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return (a != b).then(|| ("settings".into(), a.to_string(), b.to_string()));
    };
    let names: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    names.into_iter().find_map(|k| {
        let (x, y) = (a.get(k), b.get(k));
        (x != y).then(|| {
            let show = |v: Option<&serde_json::Value>| v.map_or("unset".into(), |v| v.to_string());
            (k.clone(), show(x), show(y))
        })
    })
}

fn read_claim(path: &Path) -> Option<SavedClaim> {
    let text = std::fs::read(path).ok()?;
    match serde_json::from_slice(&text) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!("{}: {e}; claiming anew", path.display());
            None
        }
    }
}

fn write_claim(path: &Path, c: SavedClaim) -> Result<(), GossipError> {
    let body = serde_json::to_vec(&c).expect("plain data");
    // Before the agent's first state: its directory may not exist yet.
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| GossipError::Save(path.into(), e))?;
    }
    crate::files::write_atomic(path, &body, true).map_err(|e| GossipError::Save(path.into(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suspicion_grows_with_the_digits_of_the_cluster_size() {
        let scales: Vec<u32> = [1, 9, 10, 99, 100, 999, 1000, 100_000]
            .into_iter()
            .map(suspicion_scale)
            .collect();
        assert_eq!(scales, [1, 1, 2, 2, 3, 3, 4, 4]);
    }

    #[test]
    fn views_of_the_same_members_have_one_digest_in_any_order() {
        let peer = |i: u8, generation: u64| Peer {
            name: format!("n{i}"),
            gossip: SocketAddr::from(([10, 0, 0, i], 7946)),
            generation,
            record: NodeRecord {
                underlay: Ipv4Net::new(Ipv4Addr::new(10, 0, 0, i), 24),
                pod_cidr: Ipv4Net::new(Ipv4Addr::new(10, 244, i, 0), 24),
                vtep_mac: crate::spec::derived_vtep_mac(Ipv4Addr::new(10, 0, 0, i)),
            },
            claimed_ms: 1,
            settings: 7,
        };
        let a = [peer(1, 5), peer(2, 5), peer(3, 5)];
        let b = [peer(3, 5), peer(1, 5), peer(2, 5)];
        assert_eq!(view_digest(a.iter()), view_digest(b.iter()));
        // A member missing, or heard at another generation, shows.
        assert_ne!(view_digest(a.iter()), view_digest(a[..2].iter()));
        let renewed = [peer(1, 5), peer(2, 6), peer(3, 5)];
        assert_ne!(view_digest(a.iter()), view_digest(renewed.iter()));
    }

    #[test]
    fn the_first_differing_setting_is_named() {
        let a = serde_json::json!({"cluster_cidr": "10.244.0.0/16", "vni": 1, "port": 8472});
        let b = serde_json::json!({"cluster_cidr": "10.244.0.0/16", "vni": 2, "port": 4789});
        assert_eq!(
            first_difference(&a, &b),
            Some(("port".into(), "8472".into(), "4789".into()))
        );
        assert_eq!(first_difference(&a, &a), None);
        let c = serde_json::json!({"cluster_cidr": "10.244.0.0/16", "vni": 1, "port": 8472, "mtu": 1400});
        assert_eq!(
            first_difference(&a, &c),
            Some(("mtu".into(), "unset".into(), "1400".into()))
        );
    }
}
