//! The bench's outputs: Markdown tables, raw JSON, SVG bar charts with spread.
use std::{collections::BTreeMap, fmt::Write as _, path::Path};

use anyhow::{Context, Result};

use super::{series, stats, PathKind, Run, Sample};

/// Today's date (UTC) as YYYY-MM-DD, from the days since the epoch.
pub fn today() -> String {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

type Metric = (&'static str, fn(&Sample) -> f64, bool);

/// (name, accessor, higher is better)
const METRICS: [Metric; 10] = [
    ("TCP 1 stream Gbit/s", |s| s.tcp1_gbps, true),
    ("retransmits/s", |s| s.tcp1_retrans_per_s, false),
    ("TCP 2 streams Gbit/s", |s| s.tcp2_gbps, true),
    ("TCP RR p50 µs", |s| s.tcp_p50_us, false),
    ("TCP RR p99 µs", |s| s.tcp_p99_us, false),
    ("UDP RR p50 µs", |s| s.udp_p50_us, false),
    ("UDP RR p99 µs", |s| s.udp_p99_us, false),
    ("UDP 64 B kpps", |s| s.udp64_kpps, true),
    ("CPU ns/packet", |s| s.cpu_ns_per_pkt, false),
    ("TCP conn/s", |s| s.crr_per_s, true),
];

fn fmt_stat(v: Vec<f64>) -> String {
    let (m, lo, hi) = stats(v);
    if m.is_nan() {
        return "–".into();
    }
    let p = if m >= 100.0 {
        0
    } else if m >= 10.0 {
        1
    } else {
        2
    };
    format!("{m:.p$} ({lo:.p$}–{hi:.p$})")
}

/// Per-round ratio `path / other`, as median (min–max).
fn ratio(run: &Run, path: PathKind, other: PathKind, metric: fn(&Sample) -> f64) -> Vec<f64> {
    let a = series(run, path, metric);
    let b = series(run, other, metric);
    a.iter()
        .filter_map(|(r, x)| b.get(r).map(|y| x / y))
        .collect()
}

pub struct Target {
    pub what: String,
    pub value: f64,
    pub goal: &'static str,
    pub met: bool,
}

fn med(v: Vec<f64>) -> f64 {
    stats(v).0
}

fn target(
    t: &mut Vec<Target>,
    what: impl Into<String>,
    v: f64,
    goal: &'static str,
    ok: fn(f64) -> bool,
) {
    t.push(Target {
        what: what.into(),
        value: v,
        goal,
        met: v.is_finite() && ok(v),
    });
}

pub fn targets(run: &Run) -> Vec<Target> {
    use PathKind::*;
    let tcp1 = |s: &Sample| s.tcp1_gbps;
    // Latency as a rate (1/p50), so every ratio reads "higher is better".
    let rr = |s: &Sample| 1.0 / s.tcp_p50_us;
    let crr = |s: &Sample| s.crr_per_s;
    let r = |a, b, m| med(ratio(run, a, b, m));
    let mut t = Vec::new();
    target(
        &mut t,
        "same node: TCP vs veth pair",
        r(NetpathLocal, VethPair, tcp1),
        "≥ 0.98",
        |v| v >= 0.98,
    );
    target(
        &mut t,
        "same node: TCP vs bridge",
        r(NetpathLocal, Bridge, tcp1),
        "≥ 1.00",
        |v| v >= 1.0,
    );
    target(
        &mut t,
        "across a router, BGP-routed: TCP vs N2N across it",
        r(NetpathBgpRouted, N2NRouted, tcp1),
        "≥ 0.95",
        |v| v >= 0.95,
    );
    target(
        &mut t,
        "across nodes direct: TCP vs N2N",
        r(NetpathDirect, N2N, tcp1),
        "≥ 1.00",
        |v| v >= 1.0,
    );
    target(
        &mut t,
        "across nodes direct: RR rate vs N2N",
        r(NetpathDirect, N2N, rr),
        "≥ 0.95",
        |v| v >= 0.95,
    );
    target(
        &mut t,
        "across nodes direct: conn/s vs N2N",
        r(NetpathDirect, N2N, crr),
        "≥ 0.95",
        |v| v >= 0.95,
    );
    target(
        &mut t,
        "pod -> outside: TCP vs nftables masquerade",
        r(NetpathMasquerade, NftMasquerade, tcp1),
        "≥ 1.00",
        |v| v >= 1.0,
    );
    target(
        &mut t,
        "pod -> outside: conn/s vs nftables masquerade",
        r(NetpathMasquerade, NftMasquerade, crr),
        "≥ 1.00",
        |v| v >= 1.0,
    );
    target(
        &mut t,
        "pod -> outside: RR rate vs nftables masquerade",
        r(NetpathMasquerade, NftMasquerade, rr),
        "≥ 1.00",
        |v| v >= 1.0,
    );
    target(
        &mut t,
        "pod -> outside: CPU per packet vs nftables (lower is better)",
        r(NetpathMasquerade, NftMasquerade, |s: &Sample| {
            s.cpu_ns_per_pkt
        }),
        "≤ 1.00",
        |v| v <= 1.0,
    );
    target(
        &mut t,
        "overlay, one subnet: TCP vs kernel vxlan",
        r(NetpathVxlan, KernelVxlan, tcp1),
        "≥ 1.10",
        |v| v >= 1.10,
    );
    let tcp2 = |s: &Sample| s.tcp2_gbps;
    let pps = |s: &Sample| s.udp64_kpps;
    target(
        &mut t,
        "overlay, routed, bridge fabric: TCP vs kernel vxlan",
        r(NetpathVxlanRouted, KernelVxlanRouted, tcp1),
        "≥ 1.00",
        |v| v >= 1.0,
    );
    target(
        &mut t,
        "overlay, routed, bridge fabric: TCP 2 streams vs kernel vxlan",
        r(NetpathVxlanRouted, KernelVxlanRouted, tcp2),
        "≥ 1.00",
        |v| v >= 1.0,
    );
    for (what, m) in [
        ("RR rate", rr as fn(&Sample) -> f64),
        ("64 B packet rate", pps),
        ("conn/s", crr),
    ] {
        target(
            &mut t,
            format!("overlay, routed, bridge fabric: {what} vs kernel vxlan"),
            r(NetpathVxlanRouted, KernelVxlanRouted, m),
            "> 1.00",
            |v| v > 1.0,
        );
    }
    target(
        &mut t,
        "overlay, routed, veth fabric: TCP vs kernel vxlan",
        r(NetpathVxlanRoutedVeth, KernelVxlanRoutedVeth, tcp1),
        "≥ 1.10",
        |v| v >= 1.10,
    );
    target(
        &mut t,
        "overlay, one subnet: TCP vs N2N",
        r(NetpathVxlan, N2N, tcp1),
        "≥ 0.85",
        |v| v >= 0.85,
    );
    target(
        &mut t,
        "overlay, routed: TCP vs N2N across router",
        r(NetpathVxlanRouted, N2NRouted, tcp1),
        "≥ 0.85",
        |v| v >= 0.85,
    );
    let cpu = |n: usize| {
        med(run
            .scale
            .iter()
            .filter(|s| s.routes == n)
            .map(|s| s.cpu_ns_per_pkt)
            .collect())
    };
    target(
        &mut t,
        "per-packet CPU, 100 000 vs 10 routes",
        cpu(100_000) / cpu(10),
        "≤ 1.05",
        |v| v <= 1.05,
    );
    let rss = run
        .agent_memory
        .iter()
        .find(|m| m.peers == 100_000)
        .map_or(f64::NAN, |m| m.rss_kib / 1024.0);
    target(
        &mut t,
        "agent RSS with 100 000 peers, MiB",
        rss,
        "≤ 30",
        |v| v <= 30.0,
    );
    let cold = run.cold_start.iter().find(|c| c.nodes >= 100_001);
    target(
        &mut t,
        "agent started on a spec of 100 001 nodes: converged, s",
        cold.map_or(f64::NAN, |c| c.converged_s),
        "≤ 60",
        |v| v <= 60.0,
    );
    target(
        &mut t,
        "agent started on a spec of 100 001 nodes: resident after, MiB",
        cold.map_or(f64::NAN, |c| c.rss_mib),
        "≤ 30",
        |v| v <= 30.0,
    );
    let cni = |pick: fn(&super::cni::CniLatency) -> f64| {
        let of = |name: &str| {
            run.cni
                .iter()
                .find(|c| c.plugin == name)
                .map_or(f64::NAN, pick)
        };
        of("netpath") / of("bridge + host-local")
    };
    let at_1000 = run.store_scale.iter().find(|s| s.agents == 1000);
    target(
        &mut t,
        "etcd: join reaches 1 000 agents, p99 ms",
        at_1000.map_or(f64::NAN, |s| s.join_p99_ms),
        "≤ 1000",
        |v| v <= 1000.0,
    );
    target(
        &mut t,
        "etcd: removal reaches 1 000 agents, p99 ms",
        at_1000.map_or(f64::NAN, |s| s.leave_p99_ms),
        "≤ 1000",
        |v| v <= 1000.0,
    );
    let gossip_1000 = run.gossip_scale.iter().find(|s| s.members == 1000);
    target(
        &mut t,
        "gossip: a join reaches 1 000 members, p99 ms",
        gossip_1000.map_or(f64::NAN, |s| s.join_p99_ms),
        "≤ 2000",
        |v| v <= 2000.0,
    );
    target(
        &mut t,
        "gossip: bytes per second per member at rest, 1 000 members",
        gossip_1000.map_or(f64::NAN, |s| s.bytes_per_s_per_member),
        "≤ 10240",
        |v| v <= 10240.0,
    );
    target(
        &mut t,
        "CNI ADD+DEL p50 vs bridge + host-local",
        cni(|c| c.add_del_p50_ms),
        "≤ 1.00",
        |v| v <= 1.0,
    );
    target(
        &mut t,
        "CNI ADD+DEL p99 vs bridge + host-local",
        cni(|c| c.add_del_p99_ms),
        "≤ 1.00",
        |v| v <= 1.0,
    );
    t
}

/// The paths this run measured, in bench order.
fn measured(run: &Run) -> Vec<PathKind> {
    PathKind::ALL
        .into_iter()
        .filter(|p| run.samples.iter().any(|s| s.path == *p))
        .collect()
}

pub fn markdown(run: &Run) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# netpath bench — {}\n", run.date);
    let _ = writeln!(
        md,
        "Kernel {}, {} CPUs; {} rounds (interleaved: every path once per round), {} s per test{}. \
         Figures are medians over rounds with (min–max). Latency is the full round trip of a 64-byte \
         ping-pong (sockperf) with both ends pinned to CPU 0. CPU ns/packet is the whole machine's \
         busy time (/proc/stat) during the 64-byte UDP run divided by packets received; `perf stat` \
         {}.\n",
        run.kernel,
        run.cpus,
        run.rounds,
        run.seconds_per_test,
        if run.quick { " (--quick)" } else { "" },
        if run.perf_stat { "works here too" } else { "cannot count cycles on this machine (no PMU in the VM), so it is not used" }
    );
    let _ = writeln!(md, "## Targets\n\n| target | measured (median ratio) | goal | met |\n| --- | --- | --- | --- |");
    for t in targets(run) {
        let _ = writeln!(
            md,
            "| {} | {:.3} | {} | {} |",
            t.what,
            t.value,
            t.goal,
            if t.met { "yes" } else { "no" }
        );
    }
    let _ = writeln!(md, "\n## Figures per path\n");
    let mut header = String::from("| path |");
    let mut sep = String::from("| --- |");
    for (name, _, _) in METRICS {
        header += &format!(" {name} |");
        sep += " --- |";
    }
    let _ = writeln!(md, "{header}\n{sep}");
    for path in measured(run) {
        let mut row = format!("| {} |", path.label());
        for (_, f, _) in METRICS {
            row += &format!(
                " {} |",
                fmt_stat(series(run, path, f).into_values().collect())
            );
        }
        let _ = writeln!(md, "{row}");
    }
    let _ = writeln!(md, "\n## Ratios (same round, median (min–max))\n");
    let _ = writeln!(md, "netpath against its classic counterpart (> 1 is better for throughput and rate, < 1 for latency and CPU):\n");
    let _ = writeln!(
        md,
        "{}\n{}",
        header.replace("| path |", "| netpath vs classic |"),
        sep
    );
    for path in measured(run) {
        if let Some(classic) = path.classic() {
            let mut row = format!("| {} / {} |", path.label(), classic.label());
            for (_, f, _) in METRICS {
                row += &format!(" {} |", fmt_stat(ratio(run, path, classic, f)));
            }
            let _ = writeln!(md, "{row}");
        }
    }
    let _ = writeln!(
        md,
        "\nEvery cross-node path against N2N of the same round (the nodes themselves over the same \
         underlay: the cross-node limit):\n"
    );
    let _ = writeln!(
        md,
        "{}\n{}",
        header.replace("| path |", "| path / N2N |"),
        sep
    );
    for path in measured(run) {
        if let Some(n2n) = path.n2n() {
            let mut row = format!("| {} / {} |", path.label(), n2n.label());
            for (_, f, _) in METRICS {
                row += &format!(" {} |", fmt_stat(ratio(run, path, n2n, f)));
            }
            let _ = writeln!(md, "{row}");
        }
    }
    programs_per_packet(&mut md, run);
    let _ = writeln!(
        md,
        "\nEvery path against the direct veth pair of the same round:\n"
    );
    let _ = writeln!(
        md,
        "{}\n{}",
        header.replace("| path |", "| path / veth pair |"),
        sep
    );
    for path in measured(run)
        .into_iter()
        .filter(|p| *p != PathKind::VethPair)
    {
        let mut row = format!("| {} |", path.label());
        for (_, f, _) in METRICS {
            row += &format!(" {} |", fmt_stat(ratio(run, path, PathKind::VethPair, f)));
        }
        let _ = writeln!(md, "{row}");
    }
    let _ = writeln!(
        md,
        "\n## Scale: netpath direct with many routes and 1 000 extra endpoints in the maps\n\n\
         The bench writes the extra routes and endpoints straight into the pinned maps (the agent \
         does not hold them), so the agent's RSS is its own baseline and the map memory is what \
         the routes cost.\n"
    );
    let _ = writeln!(md, "| routes in LPM | UDP 64 B kpps | CPU ns/packet | ratio to 10 routes | UDP RR p50 µs | BPF map memory KiB | agent RSS KiB |\n| --- | --- | --- | --- | --- | --- | --- |");
    let mut by: BTreeMap<usize, Vec<&super::ScaleSample>> = BTreeMap::new();
    for s in &run.scale {
        by.entry(s.routes).or_default().push(s);
    }
    let base = by
        .get(&10)
        .map(|v| med(v.iter().map(|s| s.cpu_ns_per_pkt).collect()));
    for (routes, v) in &by {
        let cpu = med(v.iter().map(|s| s.cpu_ns_per_pkt).collect());
        let _ = writeln!(
            md,
            "| {routes} | {} | {} | {:.3} | {} | {} | {} |",
            fmt_stat(v.iter().map(|s| s.udp64_kpps).collect()),
            fmt_stat(v.iter().map(|s| s.cpu_ns_per_pkt).collect()),
            base.map_or(f64::NAN, |b| cpu / b),
            fmt_stat(v.iter().map(|s| s.udp_p50_us).collect()),
            fmt_stat(v.iter().map(|s| s.map_kib).collect()),
            fmt_stat(v.iter().map(|s| s.agent_rss_kib).collect()),
        );
    }
    if let Some(c) = &run.control_plane {
        let _ = writeln!(
            md,
            "\n## Control plane\n\nA {}-node cluster spec: parse and validate {:.1} ms; program one node's maps \
             ({} routes + {} tunnel peers, as a diff) {:.1} ms; install its {} kernel routes over netlink {:.1} ms.",
            c.nodes + 1,
            c.parse_validate_ms,
            c.nodes,
            c.nodes,
            c.program_maps_ms,
            c.nodes,
            c.program_kernel_routes_ms
        );
    }
    if !run.agent_memory.is_empty() {
        let _ = writeln!(
            md,
            "\n## Memory\n\nOne node's agent given a spec with this many other nodes (one pod CIDR \
             route, one tunnel peer and one kernel route each), measured once every kernel route \
             is in place; RSS is the median of readings after that, 3 s of them (25 s, two \
             resync passes, with 100 000 peers), the highest beside it (a resync pass \
             allocates for a moment):\n\n| peers (routes) | agent RSS MiB | highest MiB | BPF map memory MiB | converged in ms |\n| --- | --- | --- | --- | --- |"
        );
        for m in &run.agent_memory {
            let _ = writeln!(
                md,
                "| {} | {:.1} | {:.1} | {:.1} | {:.0} |",
                m.peers,
                m.rss_kib / 1024.0,
                m.rss_max_kib / 1024.0,
                m.map_kib / 1024.0,
                m.converge_ms
            );
        }
    }
    if !run.cni.is_empty() {
        let _ = writeln!(
            md,
            "\n## CNI ADD+DEL round trip\n\nA runtime's cost per pod: exec the plugin(s), wire and \
             allocate, unwire and free; cycles interleaved with the reference plugins.\n\n\
             | plugin | cycles | p50 ms | p99 ms |\n| --- | --- | --- | --- |"
        );
        for c in &run.cni {
            let _ = writeln!(
                md,
                "| {} | {} | {:.1} | {:.1} |",
                c.plugin, c.cycles, c.add_del_p50_ms, c.add_del_p99_ms
            );
        }
    }
    super::services_report::write_markdown(&mut md, run);
    super::cold_start::write_markdown(&mut md, &run.cold_start);
    if !run.bgp_convergence.is_empty() {
        let _ = writeln!(
            md,
            "\n## Route convergence by BGP\n\nN speakers: real nodes (agent + BIRD each) in a \
             full iBGP mesh, or each peering with the fabric router (FRR); one more joins through \
             the spec file. Time until every node routes its pod CIDR (its ROUTES entry), from the \
             spec naming it (its agent's start included) and from its agent being ready.\n\n\
             | speakers | topology | join -> routed ms | ready -> routed ms | cold up ms |\n\
             | --- | --- | --- | --- | --- |"
        );
        for c in &run.bgp_convergence {
            let _ = writeln!(
                md,
                "| {} | {} | {:.0} | {:.0} | {:.0} |",
                c.speakers, c.topology, c.join_to_routed_ms, c.ready_to_routed_ms, c.cold_ms
            );
        }
    }
    if !run.store_scale.is_empty() {
        let _ = writeln!(
            md,
            "\n## Control plane on etcd\n\nM agent control loops in one process (the product's \
             store, plan and diff; an in-memory sink instead of maps) against the lab's 3-member \
             etcd; a node joins, then is removed (`node remove`): time until every loop planned \
             the change, counted from the start of the joining node's own join call (its \
             reservation, record and first listing: \"own join\") and from the removal.\n\n\
             | loops | own join ms | join p50 ms | join p99 ms | leave p50 ms | leave p99 ms \
             | etcd messages/s idle | KiB per loop |\n| --- | --- | --- | --- | --- | --- | --- | --- |"
        );
        for s in &run.store_scale {
            if let Some(e) = &s.error {
                let _ = writeln!(md, "| {} | not measured: {e} | | | | | | |", s.agents);
                continue;
            }
            let _ = writeln!(
                md,
                "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
                s.agents,
                s.join_call_ms,
                s.join_p50_ms,
                s.join_p99_ms,
                s.leave_p50_ms,
                s.leave_p99_ms,
                s.etcd_requests_per_s,
                s.kib_per_agent
            );
        }
    }
    if !run.gossip_scale.is_empty() {
        let _ = writeln!(
            md,
            "\n## Control plane by gossip\n\nM members in one process, each on a loopback \
             address of its own (the product's membership, wire with a cluster key, and claims), \
             booting in waves of 50 every second with the first three as their peers; then a new \
             member joins: time from its claim \
             to every member's spec holding it (specs are built at the first 250-ms tick after news, at most once a second while \
             news streams in); bytes each member \
             sends per second while the cluster idles, and the members declared down meanwhile \
             (summed over every member's view: false verdicts, as all are alive); this process's \
             memory per member.\n\n\
             | members | all joined and heard, ms | join p50 ms | join p99 ms | bytes/s per member idle \
             | declared down while idle | KiB per member |\n| --- | --- | --- | --- | --- | --- | --- |"
        );
        for s in &run.gossip_scale {
            if let Some(e) = &s.error {
                let _ = writeln!(md, "| {} | not measured: {e} | | | | | |", s.members);
                continue;
            }
            let _ = writeln!(
                md,
                "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {:.0} |",
                s.members,
                s.converged_ms,
                s.join_p50_ms,
                s.join_p99_ms,
                s.bytes_per_s_per_member,
                s.declared_down_at_rest,
                s.kib_per_member
            );
        }
    }
    let _ = writeln!(
        md,
        "\n![throughput](throughput.svg)\n\n![latency](latency.svg)"
    );
    if !run.service_rates.is_empty() {
        let _ = writeln!(md, "\n![services](services.svg)");
    }
    md
}

/// Horizontal bars (median) with whiskers (min–max), one per path.
fn svg_bars(run: &Run, title: &str, unit: &str, metric: fn(&Sample) -> f64) -> String {
    let rows: Vec<(String, f64, f64, f64)> = measured(run)
        .iter()
        .map(|p| {
            let (m, lo, hi) = stats(series(run, *p, metric).into_values().collect());
            (p.label().to_string(), m, lo, hi)
        })
        .collect();
    let max = rows.iter().map(|r| r.3).fold(0.0f64, f64::max).max(1e-9);
    let (left, width, row_h) = (190.0, 420.0, 28.0);
    let height = 50.0 + row_h * rows.len() as f64;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"10\" y=\"20\" font-size=\"14\">{title} ({unit}; median, whiskers min–max)</text>\n",
        left + width + 90.0
    );
    for (i, (label, m, lo, hi)) in rows.iter().enumerate() {
        let y = 35.0 + row_h * i as f64;
        let color = if label.starts_with("netpath") {
            "#2a7ab0"
        } else {
            "#999999"
        };
        let w = |v: f64| if v.is_finite() { v / max * width } else { 0.0 };
        let _ = writeln!(
            s,
            "<text x=\"10\" y=\"{}\">{label}</text><rect x=\"{left}\" y=\"{y}\" width=\"{:.1}\" height=\"18\" fill=\"{color}\"/>\
             <line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{}\" y2=\"{}\" stroke=\"black\"/><text x=\"{:.1}\" y=\"{}\">{m:.2}</text>",
            y + 13.0,
            w(*m),
            left + w(*lo),
            left + w(*hi),
            y + 9.0,
            y + 9.0,
            left + w(*hi) + 6.0,
            y + 13.0
        );
    }
    s + "</svg>\n"
}

pub fn write(run: &Run, out: &Path) -> Result<()> {
    let w = |name: &str, body: String| {
        let p = out.join(name);
        std::fs::write(&p, body).with_context(|| format!("write {}", p.display()))
    };
    w("report.json", serde_json::to_string_pretty(run)?)?;
    w("report.md", markdown(run))?;
    w(
        "throughput.svg",
        svg_bars(run, "TCP throughput, 1 stream", "Gbit/s", |s| s.tcp1_gbps),
    )?;
    w(
        "latency.svg",
        svg_bars(run, "TCP request/response p50", "µs round trip", |s| {
            s.tcp_p50_us
        }),
    )?;
    if !run.service_rates.is_empty() {
        w("services.svg", super::services_report::svg(run))?;
    }
    Ok(())
}

/// Where netpath's per-packet time goes: each program's run time per run in the
/// first round's extra ping-pong, and all programs' time per connection.
fn programs_per_packet(md: &mut String, run: &Run) {
    let profiled: Vec<&Sample> = run
        .samples
        .iter()
        .filter(|s| !s.rr_programs.is_empty())
        .collect();
    if profiled.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "\nTime inside netpath's programs (first round, an extra TCP ping-pong and connection \
         run with the kernel's run-time statistics on; they add two clock reads per run): ns per \
         run of each program during the ping-pong (each packet passes one program per hop), and \
         all programs' time per connection.\n\n| path | ns per run during ping-pong | programs per \
         connection |\n| --- | --- | --- |"
    );
    for s in profiled {
        // The programs each packet passes, not the few runs of the test's setup.
        let most = s
            .rr_programs
            .iter()
            .map(|c| c.runs_per_unit)
            .fold(0.0, f64::max);
        let per_run: Vec<String> = s
            .rr_programs
            .iter()
            .filter(|c| c.runs_per_unit >= most / 10.0)
            .map(|c| format!("{} {:.0}", c.program, c.ns_per_unit / c.runs_per_unit))
            .collect();
        let conn_ns: f64 = s.crr_programs.iter().map(|c| c.ns_per_unit).sum();
        let conn_runs: f64 = s.crr_programs.iter().map(|c| c.runs_per_unit).sum();
        let _ = writeln!(
            md,
            "| {} | {} | {:.1} us in {:.0} runs |",
            s.path.label(),
            per_run.join(" · "),
            conn_ns / 1e3,
            conn_runs
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_is_iso() {
        let d = today();
        assert_eq!(d.len(), 10);
        assert!(d.starts_with("20"), "{d}");
    }
}
