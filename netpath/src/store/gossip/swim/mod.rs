//! The transport under a member: SWIM (the `foca` crate) over one UDP socket, every
//! datagram through `Wire` (the cluster key's tag checked before anything is
//! parsed), and the timers foca asks for; what SWIM lacks is in `asks`. What it
//! learned that can change a claim's fate is kept as `News` for the member to take.
mod asks;
mod bound;

pub(super) use bound::Bound;

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
    net::SocketAddr,
    num::{NonZeroU8, NonZeroUsize},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use foca::{
    AccumulatingRuntime, Config, Foca, Member as SwimMember, NoCustomBroadcast, OwnedNotification,
    PeriodicParams, PostcardCodec, Timer,
};
use rand::rngs::StdRng;
use tokio::{net::UdpSocket, time::Instant};

use super::{
    peer::Peer,
    unix_ms,
    wire::{Dropped, Kind, Wire},
    GossipError,
};

/// SWIM's probe period and round trip: a dead node is suspected within about two
/// periods of its death and declared down `SUSPECT_TO_DOWN` later, times the
/// digits of the cluster's size (`suspicion_scale`): the more members, the longer
/// a suspicion takes to reach the suspect so it can refute it.
const PROBE_PERIOD: Duration = Duration::from_millis(500);
const PROBE_RTT: Duration = Duration::from_millis(200);
const SUSPECT_TO_DOWN: Duration = Duration::from_secs(2);
/// How long a node that hears nobody waits before it knocks on its seeds again.
const KNOCK_AGAIN_AFTER: Duration = Duration::from_secs(2);
const RECV_BUF: usize = 65_536;
/// A datagram as large as one frame of a 1500-byte underlay carries.
const DATAGRAM: usize = 1400;
/// How often a node asks a random member for every member it knows: what news
/// alone missed (a partition, updates retransmitted out) arrives within this. The
/// ask carries a digest of the asker's view, and a member whose view matches sends
/// nothing: at rest every view matches, and the full views (54 datagrams each at
/// 1 000 members) had overflowed receive buffers, losing probes' answers.
const SYNC_EVERY: Duration = Duration::from_secs(20);

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
    pub(super) fn count(&self, why: Dropped) {
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

/// Membership news since the member last looked.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct News {
    /// A member came, went, or changed its identity.
    pub membership: bool,
    /// ... in a way that may bring a claim this node has not weighed: anything but
    /// a member whose claim settled (or that came back with the claim it had). A
    /// claim settles only after `CLAIM_SETTLE` without such news.
    pub claims: bool,
}

type Foca_ = Foca<Peer, PostcardCodec, StdRng, NoCustomBroadcast>;

pub(super) struct Swim {
    foca: Foca_,
    rt: AccumulatingRuntime<Peer>,
    socket: UdpSocket,
    wire: Wire,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    pending: HashMap<u64, Timer<Peer>>,
    next_timer: u64,
    /// This node's cluster settings, sent to a joiner that asks.
    settings_json: Vec<u8>,
    seeds: Vec<SocketAddr>,
    /// Which seed is asked for the member list next (counts up from a point set by
    /// the node's name).
    knocks: usize,
    pub counters: Arc<Counters>,
    /// Whether an authentic datagram from another node has arrived.
    heard: bool,
    /// Whether a member list (a `Members` datagram) has arrived.
    got_members: bool,
    forget_after: Duration,
    /// The suspicion scale in force (see `suspicion_scale`).
    scale: u32,
    news: News,
    lonely_since: Instant,
    synced: Instant,
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

impl Swim {
    /// This node's identity as the cluster hears it.
    pub fn identity(&self) -> &Peer {
        self.foca.identity()
    }

    /// Every member this node knows of (alive, suspected, down but not forgotten),
    /// itself not among them.
    pub fn members(&self) -> impl Iterator<Item = &SwimMember<Peer>> {
        self.foca.iter_membership_state()
    }

    pub fn has_seeds(&self) -> bool {
        !self.seeds.is_empty()
    }

    pub fn heard(&self) -> bool {
        self.heard
    }

    pub fn got_members(&self) -> bool {
        self.got_members
    }

    /// The news since the last call.
    pub fn take_news(&mut self) -> News {
        std::mem::take(&mut self.news)
    }

    /// Spreads a new identity to the members this node knows (foca gossips it at
    /// once, and starts it disconnected until a member answers it).
    pub fn change_identity(&mut self, next: Peer) -> Result<(), GossipError> {
        self.foca
            .change_identity(next, &mut self.rt)
            .map_err(|e| GossipError::Swim(e.to_string()))?;
        self.drain();
        Ok(())
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
    pub async fn step(&mut self, buf: &mut [u8], until: Option<Instant>) {
        let next = self.timers.peek().map(|Reverse((at, _))| *at);
        let wake = match (next, until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        tokio::select! {
            got = self.socket.recv_from(buf) => match got {
                Ok((n, from)) => {
                    // Copied out so the handler may borrow the transport.
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

    /// A buffer for `step`.
    pub fn buffer() -> Vec<u8> {
        vec![0u8; RECV_BUF]
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
            Ok((Kind::SettingsAsk, _)) => self.send_settings(from),
            Ok((Kind::Settings, _)) => {}
            Ok((Kind::MembersAsk, payload)) => {
                self.heard = true;
                self.on_members_ask(payload, from);
            }
            Ok((Kind::Members, payload)) => {
                self.heard = true;
                self.got_members = true;
                self.on_members(payload, from);
            }
        }
    }

    /// Sends a sealed datagram, counting what it costs.
    fn send(&self, d: &[u8], to: SocketAddr) {
        if self.socket.try_send_to(d, to).is_ok() {
            self.counters
                .sent_bytes
                .fetch_add(d.len() as u64, Ordering::Relaxed);
        }
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

    pub fn announce_to_seeds(&mut self) {
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

    /// Sends what foca produced, schedules its timers and notes its news.
    pub fn drain(&mut self) {
        while let Some((to, data)) = self.rt.to_send() {
            let d = self.wire.seal(Kind::Membership, unix_ms(), &data);
            self.send(&d, to.gossip);
        }
        while let Some((after, timer)) = self.rt.to_schedule() {
            let id = self.next_timer;
            self.next_timer += 1;
            self.pending.insert(id, timer);
            self.timers.push(Reverse((Instant::now() + after, id)));
        }
        while let Some(n) = self.rt.to_notify() {
            let claims = match &n {
                OwnedNotification::MemberUp(_)
                | OwnedNotification::MemberDown(_)
                | OwnedNotification::Rejoin(_) => Some(true),
                // Every member's claim settling would otherwise hold off every other
                // member's settling, in waves through a burst of joins.
                OwnedNotification::Rename(old, new) => Some(!old.same_claim(new)),
                _ => None,
            };
            if let Some(claims) = claims {
                self.news.membership = true;
                self.news.claims |= claims;
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
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
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
}
