//! The network-policy part of the bench report: netpath with N policies against
//! none and against iptables + ipset, the programs' time per verdict, and how fast
//! a policy is enforced. Ratios are medians of per-round ratios (both sides measured
//! in the same round).
use std::{collections::BTreeMap, fmt::Write as _};

use super::{
    policy::{PolicyCost, PolicyRate, PolicyRun},
    stats, Run,
};

fn rounds<T>(v: &[T], pick: impl Fn(&T) -> Option<(usize, f64)>) -> BTreeMap<usize, f64> {
    v.iter().filter_map(pick).collect()
}

fn ratios(a: &BTreeMap<usize, f64>, b: &BTreeMap<usize, f64>) -> Vec<f64> {
    a.iter()
        .filter_map(|(r, x)| b.get(r).map(|y| x / y))
        .collect()
}

fn rate(p: &PolicyRun, rules: usize, f: Metric) -> BTreeMap<usize, f64> {
    rounds(&p.rates, |s| (s.rules == rules).then(|| (s.round, f(s))))
}

/// netpath with `rules` policies against none, per round.
pub fn vs_none(run: &Run, rules: usize, f: Metric) -> Vec<f64> {
    ratios(&rate(&run.policy, rules, f), &rate(&run.policy, 0, f))
}

/// netpath's connection rate with `rules` policies against the kernel path's with
/// the same policies as iptables + ipset, per round.
pub fn vs_kernel(run: &Run, rules: usize) -> Vec<f64> {
    let kernel = rounds(&run.policy.kernel, |k| {
        (k.rules == rules).then_some((k.round, k.crr))
    });
    ratios(&rate(&run.policy, rules, |s| s.crr), &kernel)
}

pub type Metric = fn(&PolicyRate) -> f64;

pub fn crr(s: &PolicyRate) -> f64 {
    s.crr
}
pub fn tcp1(s: &PolicyRate) -> f64 {
    s.tcp1_gbps
}
/// Latency as a rate, so the ratio reads "higher is better".
pub fn rr(s: &PolicyRate) -> f64 {
    1.0 / s.rr_p50_us
}

/// Nearest-rank percentile.
pub fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

pub fn enforce_p99_ms(run: &Run) -> f64 {
    run.policy
        .control
        .as_ref()
        .map_or(f64::NAN, |c| percentile(c.enforce_ms.clone(), 99.0))
}

fn fmt(v: Vec<f64>, digits: usize) -> String {
    let (m, lo, hi) = stats(v);
    if m.is_nan() {
        return "–".into();
    }
    format!("{m:.digits$} ({lo:.digits$}–{hi:.digits$})")
}

fn sizes(p: &PolicyRun) -> Vec<usize> {
    let mut s: Vec<usize> = p.rates.iter().map(|r| r.rules).collect();
    s.sort_unstable();
    s.dedup();
    s
}

pub fn write_markdown(md: &mut String, run: &Run) {
    let p = &run.policy;
    if p.rates.is_empty() && p.control.is_none() {
        return;
    }
    let _ = writeln!(
        md,
        "\n## Network policy\n\nTwo netpath nodes (direct), a client pod on one and the server pod \
         on the other; N NetworkPolicies select the server, one ingress rule each (a distinct peer \
         on a port of its own: every other one a labelled pod record, the rest a /32 ipBlock), and \
         one more allows the client. Each round measures every size in one lab, the order rotated \
         round to round; the connection tables are emptied before each test, so every connection \
         is judged at its first packet. Figures are medians (min–max) over rounds; ratios are \
         per-round ratios to no policy.\n\n\
         | policies | conn/s | vs none | TCP 1 stream Gbit/s | vs none | TCP RR p50 µs | RR rate vs none | written -> applied ms |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    let all = |n: usize, f: fn(&PolicyRate) -> f64| rate(p, n, f).into_values().collect();
    for n in sizes(p) {
        let _ = writeln!(
            md,
            "| {n} | {} | {} | {} | {} | {} | {} | {} |",
            fmt(all(n, crr), 0),
            fmt(vs_none(run, n, crr), 3),
            fmt(all(n, tcp1), 2),
            fmt(vs_none(run, n, tcp1), 3),
            fmt(all(n, |s| s.rr_p50_us), 1),
            fmt(vs_none(run, n, rr), 3),
            fmt(all(n, |s| s.applied_ms), 0),
        );
    }
    kernel_table(md, run);
    costs_table(md, p);
    control(md, p);
}

fn kernel_table(md: &mut String, run: &Run) {
    let k = &run.policy.kernel;
    if k.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "\nAgainst the kernel path with the same policies as kube-router and Weave-npc write them: \
         Calico's kernel path (pod veths with /32 host routes and proxy ARP for a link-local \
         gateway, kernel routes between the nodes, no bridge), on the server's node an ipset per \
         policy (its peer) and one for the client, `FORWARD` -> conntrack ESTABLISHED,RELATED \
         accept -> the server's chain, one `-m set --match-set … src -p tcp --dport …` rule per \
         policy (the client's in the middle) -> DROP, loaded with iptables-restore (nf_tables \
         backend). 0: no rules at all (no conntrack either), against netpath with no policy.\n\n\
         | policies | iptables + ipset conn/s | netpath conn/s | netpath / iptables |\n| --- | --- | --- | --- |"
    );
    let mut ns: Vec<usize> = k.iter().map(|r| r.rules).collect();
    ns.sort_unstable();
    ns.dedup();
    for n in ns {
        let kernel = k.iter().filter(|r| r.rules == n).map(|r| r.crr).collect();
        let _ = writeln!(
            md,
            "| {n} | {} | {} | {} |",
            fmt(kernel, 0),
            fmt(rate(&run.policy, n, crr).into_values().collect(), 0),
            fmt(vs_kernel(run, n), 2),
        );
    }
}

/// The programs' time with policy minus without, same round: per packet of an
/// established connection (the ping-pong), per connection, and what is left for the
/// first packet once the connection's other packets are counted at the per-packet
/// figure.
fn costs_table(md: &mut String, p: &PolicyRun) {
    if p.costs.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "\nTime inside netpath's programs, both nodes summed (kernel run-time statistics on for \
         these runs only): per packet during a TCP ping-pong (every packet of an established \
         connection: the server's points find the connection, the client's find no policy), and \
         per connection of the connection test (a fresh table: the SYN is judged). Added by \
         policy = with minus without, same round; the first packet's verdict = added per \
         connection − (packets per connection − 1) × added per packet.\n\n\
         | policies | ns/packet | added per packet | ns/connection | packets/connection | added per connection | first packet's verdict ns |\n\
         | --- | --- | --- | --- | --- | --- | --- |"
    );
    let by = |n: usize, f: fn(&PolicyCost) -> f64| {
        rounds(&p.costs, |c| (c.rules == n).then(|| (c.round, f(c))))
    };
    let diff = |n: usize, f: fn(&PolicyCost) -> f64| -> BTreeMap<usize, f64> {
        let none = by(0, f);
        by(n, f)
            .into_iter()
            .filter_map(|(r, x)| none.get(&r).map(|y| (r, x - y)))
            .collect()
    };
    let mut ns: Vec<usize> = p.costs.iter().map(|c| c.rules).collect();
    ns.sort_unstable();
    ns.dedup();
    for n in ns {
        let (pkt, conn, pkts) = (
            diff(n, |c| c.rr_ns_per_packet),
            diff(n, |c| c.crr_ns_per_conn),
            by(n, |c| c.crr_packets_per_conn),
        );
        let first: Vec<f64> = conn
            .iter()
            .filter_map(|(r, c)| Some(c - (pkts.get(r)? - 1.0) * pkt.get(r)?))
            .collect();
        let vals = |m: &BTreeMap<usize, f64>| m.values().copied().collect::<Vec<_>>();
        let _ = writeln!(
            md,
            "| {n} | {} | {} | {} | {} | {} | {} |",
            fmt(vals(&by(n, |c| c.rr_ns_per_packet)), 0),
            fmt(vals(&pkt), 0),
            fmt(vals(&by(n, |c| c.crr_ns_per_conn)), 0),
            fmt(vals(&pkts), 1),
            fmt(vals(&conn), 0),
            if n == 0 { "–".into() } else { fmt(first, 0) },
        );
    }
}

fn control(md: &mut String, p: &PolicyRun) {
    let Some(c) = &p.control else {
        return;
    };
    let ms = &c.enforce_ms;
    let _ = writeln!(
        md,
        "\nPolicy written -> enforced on every node ({} policies in place, {} writes of one changed \
         policy to the spec file; enforced: every agent published its pass over it and the \
         server's node holds the new revision): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; its \
         agent resident {:.1} MiB. {} policies from a cold start (the server's agent stopped, its \
         pins gone, started again): enforced in {:.2} s; agent resident {:.1} MiB 5 s after, \
         peak {:.1} MiB.",
        c.in_place,
        ms.len(),
        percentile(ms.clone(), 50.0),
        percentile(ms.clone(), 99.0),
        percentile(ms.clone(), 100.0),
        c.in_place_rss_mib,
        c.cold_policies,
        c.cold_enforced_s,
        c.cold_rss_mib,
        c.cold_peak_mib,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::policy::KernelRate;

    fn rate(rules: usize, round: usize, crr: f64) -> PolicyRate {
        PolicyRate {
            rules,
            round,
            crr,
            tcp1_gbps: 10.0,
            rr_p50_us: 20.0,
            applied_ms: 300.0,
        }
    }

    #[test]
    fn ratios_pair_rounds_and_the_tables_show_them() {
        let mut run = Run::default();
        run.policy.rates = vec![
            rate(0, 0, 1000.0),
            rate(0, 1, 2000.0),
            rate(10_000, 0, 990.0),
            rate(10_000, 1, 1900.0),
        ];
        run.policy.kernel = vec![KernelRate {
            rules: 10_000,
            round: 1,
            crr: 950.0,
        }];
        // per round 0.99 and 0.95: the median of ratios, not of rates
        assert!((stats(vs_none(&run, 10_000, crr)).0 - 0.97).abs() < 1e-9);
        assert_eq!(vs_kernel(&run, 10_000), vec![2.0]);
        let mut md = String::new();
        write_markdown(&mut md, &run);
        assert!(
            md.contains("| 10000 | 1445 (990–1900) | 0.970 (0.950–0.990) |"),
            "{md}"
        );
        assert!(
            md.contains("| 10000 | 950 (950–950) | 1445 (990–1900) | 2.00"),
            "{md}"
        );
        assert_eq!(percentile((1..=50).map(f64::from).collect(), 99.0), 50.0);
        assert_eq!(percentile((1..=100).map(f64::from).collect(), 50.0), 50.0);
    }
}
