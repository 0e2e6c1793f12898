//! The bench's goals, each written once: what is measured, how, and the bar it must
//! clear; the report prints the bar from the same value it checks.
use std::fmt;

use super::{
    policy_report::{self as pol, enforce_p99_ms, vs_kernel, vs_none},
    series, stats, PathKind, Run, Sample,
};

/// A bar a figure must clear.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Goal {
    AtLeast(f64),
    Above(f64),
    AtMost(f64),
}

impl Goal {
    pub fn met(self, v: f64) -> bool {
        v.is_finite()
            && match self {
                Goal::AtLeast(g) => v >= g,
                Goal::Above(g) => v > g,
                Goal::AtMost(g) => v <= g,
            }
    }
}

impl fmt::Display for Goal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (sign, g) = match *self {
            Goal::AtLeast(g) => ("≥", g),
            Goal::Above(g) => (">", g),
            Goal::AtMost(g) => ("≤", g),
        };
        // Ratios read as ratios (1.00), counts as counts (1000).
        if g >= 10.0 && g.fract() == 0.0 {
            write!(f, "{sign} {g:.0}")
        } else {
            write!(f, "{sign} {g:.2}")
        }
    }
}

pub struct Target {
    pub what: String,
    pub value: f64,
    pub goal: Goal,
}

impl Target {
    pub fn met(&self) -> bool {
        self.goal.met(self.value)
    }
}

type Metric = fn(&Sample) -> f64;
/// (what, path, baseline, metric, goal)
type Ratio = (&'static str, PathKind, PathKind, Metric, Goal);
/// (what, figure, goal)
type Figure = (&'static str, fn(&Run) -> f64, Goal);

fn tcp1(s: &Sample) -> f64 {
    s.tcp1_gbps
}
fn tcp2(s: &Sample) -> f64 {
    s.tcp2_gbps
}
/// Latency as a rate (1/p50), so every ratio reads "higher is better".
fn rr(s: &Sample) -> f64 {
    1.0 / s.tcp_p50_us
}
fn crr(s: &Sample) -> f64 {
    s.crr_per_s
}
fn pps(s: &Sample) -> f64 {
    s.udp64_kpps
}
fn cpu(s: &Sample) -> f64 {
    s.cpu_ns_per_pkt
}

/// netpath's paths against their baselines of the same round: (what, path,
/// baseline, metric, goal), the median of per-round ratios.
const RATIOS: &[Ratio] = {
    use Goal::*;
    use PathKind::*;
    &[
        (
            "same node: TCP vs veth pair",
            NetpathLocal,
            VethPair,
            tcp1,
            AtLeast(0.98),
        ),
        (
            "same node: TCP vs bridge",
            NetpathLocal,
            Bridge,
            tcp1,
            AtLeast(1.0),
        ),
        (
            "across a router, BGP-routed: TCP vs N2N across it",
            NetpathBgpRouted,
            N2NRouted,
            tcp1,
            AtLeast(0.95),
        ),
        (
            "across nodes direct: TCP vs N2N",
            NetpathDirect,
            N2N,
            tcp1,
            AtLeast(1.0),
        ),
        (
            "across nodes direct: RR rate vs N2N",
            NetpathDirect,
            N2N,
            rr,
            AtLeast(0.95),
        ),
        (
            "across nodes direct: conn/s vs N2N",
            NetpathDirect,
            N2N,
            crr,
            AtLeast(0.95),
        ),
        (
            "pod -> outside: TCP vs nftables masquerade",
            NetpathMasquerade,
            NftMasquerade,
            tcp1,
            AtLeast(1.0),
        ),
        (
            "pod -> outside: conn/s vs nftables masquerade",
            NetpathMasquerade,
            NftMasquerade,
            crr,
            AtLeast(1.0),
        ),
        (
            "pod -> outside: RR rate vs nftables masquerade",
            NetpathMasquerade,
            NftMasquerade,
            rr,
            AtLeast(1.0),
        ),
        (
            "pod -> outside: CPU per packet vs nftables (lower is better)",
            NetpathMasquerade,
            NftMasquerade,
            cpu,
            AtMost(1.0),
        ),
        (
            "overlay, one subnet: TCP vs kernel vxlan",
            NetpathVxlan,
            KernelVxlan,
            tcp1,
            AtLeast(1.10),
        ),
        (
            "overlay, routed, bridge fabric: TCP vs kernel vxlan",
            NetpathVxlanRouted,
            KernelVxlanRouted,
            tcp1,
            AtLeast(1.0),
        ),
        (
            "overlay, routed, bridge fabric: TCP 2 streams vs kernel vxlan",
            NetpathVxlanRouted,
            KernelVxlanRouted,
            tcp2,
            AtLeast(1.0),
        ),
        (
            "overlay, routed, bridge fabric: RR rate vs kernel vxlan",
            NetpathVxlanRouted,
            KernelVxlanRouted,
            rr,
            Above(1.0),
        ),
        (
            "overlay, routed, bridge fabric: 64 B packet rate vs kernel vxlan",
            NetpathVxlanRouted,
            KernelVxlanRouted,
            pps,
            Above(1.0),
        ),
        (
            "overlay, routed, bridge fabric: conn/s vs kernel vxlan",
            NetpathVxlanRouted,
            KernelVxlanRouted,
            crr,
            Above(1.0),
        ),
        (
            "overlay, routed, veth fabric: TCP vs kernel vxlan",
            NetpathVxlanRoutedVeth,
            KernelVxlanRoutedVeth,
            tcp1,
            AtLeast(1.10),
        ),
        (
            "overlay, one subnet: TCP vs N2N",
            NetpathVxlan,
            N2N,
            tcp1,
            AtLeast(0.85),
        ),
        (
            "overlay, routed: TCP vs N2N across router",
            NetpathVxlanRouted,
            N2NRouted,
            tcp1,
            AtLeast(0.85),
        ),
    ]
};

/// Figures of the scale, memory, store and CNI runs: (what, figure, goal).
const FIGURES: &[Figure] = {
    use Goal::*;
    &[
        (
            "per-packet CPU, 100 000 vs 10 routes",
            |r| scale_cpu(r, 100_000) / scale_cpu(r, 10),
            AtMost(1.05),
        ),
        (
            "agent RSS with 100 000 peers, MiB",
            |r| {
                r.agent_memory
                    .iter()
                    .find(|m| m.peers == 100_000)
                    .map_or(f64::NAN, |m| m.rss_kib / 1024.0)
            },
            AtMost(30.0),
        ),
        (
            "agent started on a spec of 100 001 nodes: converged, s",
            |r| cold_start(r).map_or(f64::NAN, |c| c.converged_s),
            AtMost(60.0),
        ),
        (
            "agent started on a spec of 100 001 nodes: resident after, MiB",
            |r| cold_start(r).map_or(f64::NAN, |c| c.rss_mib),
            AtMost(30.0),
        ),
        (
            "etcd: join reaches 1 000 agents, p99 ms",
            |r| etcd_at_1000(r).map_or(f64::NAN, |s| s.join_p99_ms),
            AtMost(1000.0),
        ),
        (
            "etcd: removal reaches 1 000 agents, p99 ms",
            |r| etcd_at_1000(r).map_or(f64::NAN, |s| s.leave_p99_ms),
            AtMost(1000.0),
        ),
        (
            "gossip: a join reaches 1 000 members, p99 ms",
            |r| gossip_at_1000(r).map_or(f64::NAN, |s| s.join_p99_ms),
            AtMost(2000.0),
        ),
        (
            "gossip: bytes per second per member at rest, 1 000 members",
            |r| gossip_at_1000(r).map_or(f64::NAN, |s| s.bytes_per_s_per_member),
            AtMost(10240.0),
        ),
        (
            "CNI ADD+DEL p50 vs bridge + host-local",
            |r| cni_ratio(r, |c| c.add_del_p50_ms),
            AtMost(1.0),
        ),
        (
            "CNI ADD+DEL p99 vs bridge + host-local",
            |r| cni_ratio(r, |c| c.add_del_p99_ms),
            AtMost(1.0),
        ),
        (
            "policy: written -> enforced on every node, 1 000 in place, p99 ms",
            enforce_p99_ms,
            AtMost(1000.0),
        ),
        (
            "policy: 10 000 from a cold start, enforced s",
            |r| cold(r, |c| c.cold_enforced_s),
            AtMost(15.0),
        ),
        (
            "policy: 10 000 from a cold start, agent resident MiB",
            |r| cold(r, |c| c.cold_rss_mib),
            AtMost(50.0),
        ),
    ]
};

/// Network policy against none and against iptables + ipset, by policies selecting
/// the server (0 in the metric's place: against iptables): (what, policies,
/// metric, goal), the median of per-round ratios.
type PolicyRatio = (&'static str, usize, Option<pol::Metric>, Goal);
// One row a goal: a table reads as one.
#[rustfmt::skip]
const POLICY_RATIOS: &[PolicyRatio] = {
    use Goal::*;
    &[
        ("policy: conn/s, 1 policy vs none", 1, Some(pol::crr), AtLeast(0.97)),
        ("policy: conn/s, 100 policies vs none", 100, Some(pol::crr), AtLeast(0.97)),
        ("policy: conn/s, 10 000 policies vs none", 10_000, Some(pol::crr), AtLeast(0.97)),
        ("policy: TCP 1 stream, 10 000 policies vs none", 10_000, Some(pol::tcp1), AtLeast(0.98)),
        ("policy: RR rate, 10 000 policies vs none", 10_000, Some(pol::rr), AtLeast(0.98)),
        ("policy: conn/s vs iptables + ipset, 1 policy", 1, None, AtLeast(1.0)),
        ("policy: conn/s vs iptables + ipset, 10 000 policies", 10_000, None, AtLeast(2.0)),
    ]
};

fn cold(run: &Run, f: fn(&super::policy_control::PolicyControl) -> f64) -> f64 {
    run.policy.control.as_ref().map_or(f64::NAN, f)
}

fn med(v: Vec<f64>) -> f64 {
    stats(v).0
}

/// Per-round ratio `path / other`.
pub fn ratio(run: &Run, path: PathKind, other: PathKind, metric: Metric) -> Vec<f64> {
    let a = series(run, path, metric);
    let b = series(run, other, metric);
    a.iter()
        .filter_map(|(r, x)| b.get(r).map(|y| x / y))
        .collect()
}

fn scale_cpu(run: &Run, routes: usize) -> f64 {
    med(run
        .scale
        .iter()
        .filter(|s| s.routes == routes)
        .map(|s| s.cpu_ns_per_pkt)
        .collect())
}

fn cold_start(run: &Run) -> Option<&super::cold_start::ColdStart> {
    run.cold_start.iter().find(|c| c.nodes >= 100_001)
}

fn etcd_at_1000(run: &Run) -> Option<&super::store::StoreScale> {
    run.store_scale.iter().find(|s| s.agents == 1000)
}

fn gossip_at_1000(run: &Run) -> Option<&super::gossip::GossipScale> {
    run.gossip_scale.iter().find(|s| s.members == 1000)
}

fn cni_ratio(run: &Run, pick: fn(&super::cni::CniLatency) -> f64) -> f64 {
    let of = |name: &str| {
        run.cni
            .iter()
            .find(|c| c.plugin == name)
            .map_or(f64::NAN, pick)
    };
    of("netpath") / of("bridge + host-local")
}

/// Every goal with what this run measured for it.
pub fn targets(run: &Run) -> Vec<Target> {
    let ratios = RATIOS
        .iter()
        .map(|&(what, path, base, metric, goal)| Target {
            what: what.to_string(),
            value: med(ratio(run, path, base, metric)),
            goal,
        });
    let figures = FIGURES.iter().map(|&(what, figure, goal)| Target {
        what: what.to_string(),
        value: figure(run),
        goal,
    });
    let policy = POLICY_RATIOS.iter().map(|&(what, n, metric, goal)| Target {
        what: what.to_string(),
        value: med(metric.map_or_else(|| vs_kernel(run, n), |m| vs_none(run, n, m))),
        goal,
    });
    ratios.chain(policy).chain(figures).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_goal_prints_the_bar_it_checks() {
        assert_eq!(Goal::AtLeast(0.98).to_string(), "≥ 0.98");
        assert_eq!(Goal::AtMost(1000.0).to_string(), "≤ 1000");
        assert_eq!(Goal::Above(1.0).to_string(), "> 1.00");
        assert!(Goal::AtLeast(1.0).met(1.0) && !Goal::Above(1.0).met(1.0));
        assert!(Goal::AtMost(30.0).met(29.9) && !Goal::AtMost(30.0).met(f64::NAN));
    }
}
