//! When a restarted BIRD has relearned enough that the routes it did not announce
//! again may go. Its sessions come up within a second or two, but a peer sends its
//! routes only after that (FRR waits for its `coalesce-time`, 1 s by default): what
//! is missing right after Established is not withdrawn, only not sent yet.
//!
//! A peer that promised End-of-RIB is waited for by BIRD itself: `-R` keeps its
//! graceful restart recovery open until every such peer has sent it, and `show
//! status` says so. A peer that did not (no graceful restart capability, or one
//! restarting itself: the R bit, which FRR also sets during its own first
//! `restart-time` after it starts) is released by BIRD at once; its routes are
//! trusted only once they stopped changing for the hold time. Which kind a peer is
//! shows in its capabilities — except for a helper that lists no address family
//! (FRR at its defaults), whose R bit BIRD does not show: such a peer counts as
//! awaited only when BIRD's count of channels it waits for proves it. Both ways
//! are bounded by a cap, so a peer that never comes back does not keep stale
//! routes for ever.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use super::control::{BirdRoute, PeerRestart, Recovery, Session};
use crate::net::Ipv4Net;

/// Why the old routes stopped being kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Every peer's End-of-RIB arrived (BIRD's recovery ended with all sessions up).
    EndOfRib,
    /// Some peer promised no End-of-RIB; its routes have been quiet for the hold time.
    Quiet,
    /// The cap ran out first.
    Cap,
}

/// What is known of one session since it came up after the restart.
#[derive(Debug)]
struct Peer {
    /// BIRD was seen waiting for this peer's End-of-RIB.
    awaited: bool,
    /// Its routes as last seen, and since when they are so.
    routes: Vec<(Ipv4Net, Option<Ipv4Addr>)>,
    since: Instant,
}

/// The wait after one restart.
#[derive(Debug)]
pub struct Settle {
    started: Instant,
    cap: Duration,
    quiet: Duration,
    peers: BTreeMap<String, Peer>,
    /// Sessions that were up after the restart and went down again: their peer
    /// left (its routes went with it) or restarts itself (BIRD keeps its routes as
    /// stale meanwhile) — either way nothing to wait for.
    gone: BTreeSet<String>,
}

impl Settle {
    pub fn new(started: Instant, cap: Duration, quiet: Duration) -> Self {
        Self {
            started,
            cap,
            quiet,
            peers: BTreeMap::new(),
            gone: BTreeSet::new(),
        }
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    /// One look at BIRD at `now`: `None` while the old routes are still to be kept.
    /// `sessions` (with their `caps`) must have been read before `recovery`, and
    /// `routes` after it: then a session seen up was up when the count was taken
    /// (so it is never counted as waited for by mistake), and the routes include
    /// every End-of-RIB counted.
    pub fn observe(
        &mut self,
        now: Instant,
        recovery: Recovery,
        sessions: &[Session],
        caps: &BTreeMap<String, PeerRestart>,
        routes: &[BirdRoute],
    ) -> Option<Settled> {
        if now.duration_since(self.started) >= self.cap {
            return Some(Settled::Cap);
        }
        let down = sessions.iter().filter(|s| !s.established()).count();
        let up: Vec<&Session> = sessions.iter().filter(|s| s.established()).collect();
        for s in sessions {
            if s.established() {
                self.gone.remove(&s.name);
            } else if self.peers.remove(&s.name).is_some() {
                self.gone.insert(s.name.clone());
            }
        }
        let awaited_down = sessions
            .iter()
            .filter(|s| !s.established() && !self.gone.contains(&s.name))
            .count();
        // Each BGP channel holds one lock from BIRD's start: until its session is
        // up, then until End-of-RIB if the peer promised one. What is left after
        // the sessions not up are the up ones still waited for; only when that is
        // all of them is it known which they are.
        let waited_up = (recovery.waiting as usize).saturating_sub(down);
        let all_waited = recovery.in_progress && waited_up >= up.len();
        for s in &up {
            let mine = of_session(routes, &s.name);
            let peer = self.peers.entry(s.name.clone()).or_insert_with(|| Peer {
                awaited: false,
                routes: mine.clone(),
                since: now,
            });
            peer.awaited = match caps.get(&s.name) {
                Some(PeerRestart::Awaited) => true,
                Some(PeerRestart::Absent | PeerRestart::Restarting) => false,
                Some(PeerRestart::Hidden) | None => peer.awaited || all_waited,
            };
            if peer.routes != mine {
                peer.routes = mine;
                peer.since = now;
            }
        }
        if recovery.in_progress || awaited_down > 0 {
            return None;
        }
        let quiet = |p: &Peer| now.duration_since(p.since) >= self.quiet;
        if self.peers.values().all(|p| p.awaited) {
            Some(Settled::EndOfRib)
        } else if self.peers.values().all(|p| p.awaited || quiet(p)) {
            Some(Settled::Quiet)
        } else {
            None
        }
    }
}

/// What `session` taught, in a form that compares across looks.
fn of_session(routes: &[BirdRoute], session: &str) -> Vec<(Ipv4Net, Option<Ipv4Addr>)> {
    let mut out: Vec<_> = routes
        .iter()
        .filter(|r| r.bgp && r.protocol == session)
        .map(|r| (r.prefix, r.next_hop))
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: Duration = Duration::from_secs(15);
    const HOLD: Duration = Duration::from_secs(9);

    fn session(name: &str, up: bool) -> Session {
        Session {
            name: name.into(),
            state: if up { "up" } else { "start" }.into(),
            info: if up { "Established" } else { "Active" }.into(),
        }
    }

    fn route(cidr: &str, from: &str) -> BirdRoute {
        BirdRoute {
            prefix: cidr.parse().unwrap(),
            protocol: from.into(),
            best: true,
            bgp: true,
            next_hop: Some(Ipv4Addr::new(192, 168, 56, 1)),
        }
    }

    /// A wait started at t0, looked at `ms` after it.
    struct Looks {
        t0: Instant,
        settle: Settle,
        caps: BTreeMap<String, PeerRestart>,
    }

    impl Looks {
        fn new(caps: &[(&str, PeerRestart)]) -> Self {
            let t0 = Instant::now();
            Self {
                t0,
                settle: Settle::new(t0, CAP, HOLD),
                caps: caps.iter().map(|(n, c)| (n.to_string(), *c)).collect(),
            }
        }

        fn at(
            &mut self,
            ms: u64,
            waiting: u32,
            sessions: &[Session],
            routes: &[BirdRoute],
        ) -> Option<Settled> {
            let recovery = Recovery {
                in_progress: waiting > 0,
                waiting,
            };
            let now = self.t0 + Duration::from_millis(ms);
            self.settle
                .observe(now, recovery, sessions, &self.caps, routes)
        }
    }

    /// The bug: the session is up but the peer has not sent its routes yet.
    #[test]
    fn a_peer_bird_waits_for_is_held_until_its_end_of_rib_not_until_established() {
        let mut l = Looks::new(&[]);
        let (down, up) = ([session("peer", false)], [session("peer", true)]);
        assert_eq!(l.at(300, 1, &down, &[]), None);
        // Up, no routes yet, BIRD still waits for its End-of-RIB (the count shows it).
        assert_eq!(l.at(1300, 1, &up, &[]), None);
        assert_eq!(l.at(1800, 1, &up, &[]), None);
        let learned = [route("10.244.3.0/24", "peer")];
        assert_eq!(l.at(2400, 0, &up, &learned), Some(Settled::EndOfRib));
    }

    #[test]
    fn a_peer_whose_capabilities_promise_end_of_rib_needs_no_look_before_it() {
        let mut l = Looks::new(&[("peer", PeerRestart::Awaited)]);
        let learned = [route("10.244.3.0/24", "peer")];
        // Up, End-of-RIB received and recovery over before the first look.
        let up = [session("peer", true)];
        assert_eq!(l.at(900, 0, &up, &learned), Some(Settled::EndOfRib));
    }

    #[test]
    fn a_peer_bird_did_not_wait_for_is_held_until_its_routes_are_quiet_for_the_hold_time() {
        for caps in [
            &[][..],
            &[("peer", PeerRestart::Hidden)],
            &[("peer", PeerRestart::Restarting)],
            &[("peer", PeerRestart::Absent)],
        ] {
            let mut l = Looks::new(caps);
            let up = [session("peer", true)];
            // Recovery ended as the session came up: BIRD did not wait for it.
            assert_eq!(l.at(1300, 0, &up, &[]), None, "{caps:?}");
            let learned = [route("10.244.3.0/24", "peer")];
            assert_eq!(l.at(2400, 0, &up, &learned), None);
            assert_eq!(l.at(11300, 0, &up, &learned), None);
            assert_eq!(
                l.at(11400, 0, &up, &learned),
                Some(Settled::Quiet),
                "9 s after the last change: {caps:?}"
            );
        }
    }

    #[test]
    fn a_count_never_makes_a_peer_awaited_that_its_capabilities_say_is_not() {
        let mut l = Looks::new(&[("peer", PeerRestart::Restarting)]);
        let (up, down) = ([session("peer", true)], [session("other", false)]);
        let both = [up[0].clone(), down[0].clone()];
        // 2 locks, one session down: the count alone would take "peer" as awaited.
        assert_eq!(l.at(1000, 2, &both, &[]), None);
        assert!(!l.settle.peers["peer"].awaited);
    }

    #[test]
    fn a_peer_that_never_comes_back_holds_only_until_the_cap() {
        let mut l = Looks::new(&[]);
        let down = [session("peer", false)];
        assert_eq!(l.at(7500, 0, &down, &[]), None);
        assert_eq!(l.at(15000, 1, &down, &[]), Some(Settled::Cap));
    }

    #[test]
    fn with_two_hidden_peers_only_a_count_that_covers_every_up_session_marks_them_awaited() {
        let mut l = Looks::new(&[]);
        // a is up, b is not: 2 locks = b's + a's End-of-RIB still awaited.
        let one_up = [session("a", true), session("b", false)];
        assert_eq!(l.at(1000, 2, &one_up, &[]), None);
        // Both up, one lock left: a's End-of-RIB came, or b promised none — which
        // one is not known, so b is not taken as awaited.
        let both = [session("a", true), session("b", true)];
        assert_eq!(l.at(1500, 1, &both, &[]), None);
        let routes = [route("10.244.2.0/24", "a"), route("10.244.3.0/24", "b")];
        assert_eq!(l.at(2000, 0, &both, &routes), None);
        assert!(l.settle.peers["a"].awaited && !l.settle.peers["b"].awaited);
        assert_eq!(
            l.at(11000, 0, &both, &routes),
            Some(Settled::Quiet),
            "b quiet since 2 s"
        );
    }

    #[test]
    fn a_session_that_drops_is_judged_afresh_when_it_is_back() {
        let mut l = Looks::new(&[]);
        let up = [session("peer", true)];
        assert_eq!(l.at(1000, 1, &up, &[]), None);
        assert_eq!(l.at(1500, 1, &[session("peer", false)], &[]), None);
        assert!(l.settle.peers.is_empty());
        assert_eq!(l.at(2000, 0, &up, &[]), None);
        assert_eq!(l.at(11000, 0, &up, &[]), Some(Settled::Quiet));
    }

    /// A node stopped while another's BIRD relearns: its routes must go at once,
    /// not stay until the cap because its session is down for good.
    #[test]
    fn a_session_that_went_down_after_the_restart_is_not_waited_for() {
        let mut l = Looks::new(&[("a", PeerRestart::Awaited), ("b", PeerRestart::Awaited)]);
        let both = [session("a", true), session("b", true)];
        assert_eq!(l.at(1000, 2, &both, &[]), None);
        let b_left = [session("a", true), session("b", false)];
        assert_eq!(l.at(1500, 1, &b_left, &[]), None, "a's End-of-RIB to come");
        let learned = [route("10.244.1.0/24", "a")];
        assert_eq!(l.at(2500, 0, &b_left, &learned), Some(Settled::EndOfRib));
        // One that was never up since the restart is still waited for (to the cap).
        let mut l = Looks::new(&[("a", PeerRestart::Awaited)]);
        assert_eq!(l.at(2500, 0, &b_left, &learned), None);
    }
}
