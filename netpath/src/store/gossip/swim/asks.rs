//! What a node asks of another outside SWIM: the member list (a joiner's, and
//! anti-entropy between views), and the knocks of a node that hears nobody on its
//! seeds; it answers a joiner's ask for the settings.
use std::{collections::HashSet, net::SocketAddr};

use foca::{Member as SwimMember, State};
use tokio::time::Instant;

use super::{Swim, DATAGRAM, KNOCK_AGAIN_AFTER, SYNC_EVERY};
use crate::store::gossip::{peer::Peer, unix_ms, wire::Kind};

impl Swim {
    /// Resets the clocks of `keep_in_touch`: the member starts following.
    pub fn start_following(&mut self) {
        self.lonely_since = Instant::now();
        self.synced = Instant::now();
    }

    /// What SWIM does not: a random member's full view now and then, for what news
    /// missed (push-pull), and a node that hears nobody keeps knocking on its seeds
    /// (a seed that started later, a healed partition).
    pub fn keep_in_touch(&mut self) {
        if self.synced.elapsed() >= SYNC_EVERY {
            self.synced = Instant::now();
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
        if self.foca.num_members() > 0 {
            self.lonely_since = Instant::now();
        } else if self.lonely_since.elapsed() >= KNOCK_AGAIN_AFTER {
            self.announce_to_seeds();
            self.lonely_since = Instant::now();
        }
    }

    pub(super) fn send_settings(&self, to: SocketAddr) {
        let reply = self
            .wire
            .seal(Kind::Settings, unix_ms(), &self.settings_json);
        let _ = self.socket.try_send_to(&reply, to);
    }

    /// An ask without a digest (a node that only joins) gets every member; one
    /// whose digest is this node's view gets nothing.
    pub(super) fn on_members_ask(&mut self, payload: &[u8], from: SocketAddr) {
        let theirs = <[u8; 8]>::try_from(payload).ok().map(u64::from_le_bytes);
        if theirs != Some(self.view_digest()) {
            self.send_members(from);
        }
    }

    pub(super) fn on_members(&mut self, payload: &[u8], from: SocketAddr) {
        match postcard::from_bytes::<Vec<SwimMember<Peer>>>(payload) {
            Ok(members) => self.discover(members),
            Err(e) => tracing::warn!(%from, "gossip: members datagram unreadable: {e}"),
        }
    }

    /// Discovery only: what this node already knows of a member (alive, suspected
    /// or down) is SWIM's to change. A full view carries other nodes' suspicions and
    /// verdicts, and applied, spread them past the suspect's chance to refute: with
    /// 1 000 members, a storm of live nodes declared down.
    fn discover(&mut self, members: Vec<SwimMember<Peer>>) {
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
            this.send(&d, to);
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

    /// Asks one seed for the member list, the next one at the next knock: all of
    /// them answering at once overflowed a joiner's receive buffer. Each node starts
    /// at a seed of its own (by its name), so no one seed answers every joiner.
    pub fn ask_next_seed(&mut self) {
        if self.seeds.is_empty() {
            return;
        }
        let s = self.seeds[self.knocks % self.seeds.len()];
        self.knocks = self.knocks.wrapping_add(1);
        self.ask_members(s, None);
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

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::{net::Ipv4Net, store::model::NodeRecord};

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
            settled: true,
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
}
