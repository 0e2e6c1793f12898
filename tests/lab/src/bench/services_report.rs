//! The Services part of the bench report: netpath against kube-proxy per number of
//! services, as a table and as curves (the point is how each grows with N).
use std::fmt::Write as _;

use super::{prog_stats::ProgCost, services::ServiceRate, stats, Run};

/// The service counts measured, ascending.
fn sizes(run: &Run) -> Vec<usize> {
    let mut sizes: Vec<usize> = run.service_rates.iter().map(|r| r.services).collect();
    sizes.sort_unstable();
    sizes.dedup();
    sizes
}

/// (median, min, max) of `f` over the rounds at `n` services.
fn at(run: &Run, n: usize, f: impl Fn(&ServiceRate) -> f64) -> (f64, f64, f64) {
    stats(
        run.service_rates
            .iter()
            .filter(|r| r.services == n)
            .map(f)
            .collect(),
    )
}

/// Medians over rounds of each round's ratio (both measured in the same round, one
/// after the other).
pub fn write_markdown(md: &mut String, run: &Run) {
    if run.service_rates.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "\n## Services: netpath against kube-proxy (iptables mode)\n\nTwo nodes, a client pod on one \
         and the backend pod on the other; N ClusterIP services, the measured one last in \
         kube-proxy's KUBE-SERVICES chain (what a packet to it walks). kube-proxy: flannel-style \
         nodes (host-gw, bridge) with the rules its iptables mode writes (KUBE-SERVICES -> \
         KUBE-SVC -> KUBE-SEP, statistic random DNAT), restored with iptables-restore; netpath: \
         the same services in its maps. Connection rate: connect, a 64-byte request and \
         response, close; first packet: the median TCP handshake through the ClusterIP.\n\n\
         | services | netpath conn/s | kube-proxy conn/s | ratio | netpath handshake us | kube-proxy handshake us | ratio |\n\
         | --- | --- | --- | --- | --- | --- | --- |"
    );
    for n in sizes(run) {
        let med = |f: fn(&ServiceRate) -> f64| at(run, n, f).0;
        let _ = writeln!(
            md,
            "| {n} | {:.0} | {:.0} | {:.2}x | {:.1} | {:.1} | {:.2}x |",
            med(|r| r.netpath_crr),
            med(|r| r.kube_proxy_crr),
            med(|r| r.netpath_crr / r.kube_proxy_crr),
            med(|r| r.netpath_connect_us),
            med(|r| r.kube_proxy_connect_us),
            med(|r| r.netpath_connect_us / r.kube_proxy_connect_us),
        );
    }
    if run.service_overhead.is_empty() {
        return;
    }
    let o = &run.service_overhead;
    let med = |f: fn(&super::services::ServiceOverhead) -> f64| stats(o.iter().map(f).collect()).0;
    let _ = writeln!(
        md,
        "\nThrough a ClusterIP against the same backend addressed directly (netpath, medians of \
         per-round ratios): TCP 1 stream {:.2}x ({:.2} vs {:.2} Gbit/s), TCP ping-pong p50 \
         {:.2}x the latency ({:.1} vs {:.1} us), connection rate {:.2}x ({:.0} vs {:.0}/s).",
        med(|s| s.tcp1_vip_gbps / s.tcp1_direct_gbps),
        med(|s| s.tcp1_vip_gbps),
        med(|s| s.tcp1_direct_gbps),
        med(|s| s.rr_vip_p50_us / s.rr_direct_p50_us),
        med(|s| s.rr_vip_p50_us),
        med(|s| s.rr_direct_p50_us),
        med(|s| s.crr_vip / s.crr_direct),
        med(|s| s.crr_vip),
        med(|s| s.crr_direct),
    );
    programs_per_connection(md, o);
}

/// The programs' time per connection through the ClusterIP and direct (medians over
/// rounds, run-time statistics on during those tests only): what the translation
/// costs inside the datapath, beside the rates.
fn programs_per_connection(md: &mut String, o: &[super::services::ServiceOverhead]) {
    let mut names: Vec<&str> = o
        .iter()
        .flat_map(|s| s.crr_vip_programs.iter().chain(&s.crr_direct_programs))
        .map(|c| c.program.as_str())
        .collect();
    names.sort_unstable();
    names.dedup();
    if names.is_empty() {
        return;
    }
    let per = |costs: &[ProgCost], name: &str, f: fn(&ProgCost) -> f64| {
        costs.iter().find(|c| c.program == name).map_or(0.0, f)
    };
    let _ = writeln!(
        md,
        "\n| program (both nodes) | ns/connection via ClusterIP | direct | runs/connection via ClusterIP | direct | ns/run via ClusterIP | direct |\n| --- | --- | --- | --- | --- | --- | --- |"
    );
    for name in names.iter().copied().chain(["all"]) {
        let col = |vip: bool, f: fn(&ProgCost) -> f64| {
            stats(
                o.iter()
                    .map(|s| {
                        let costs = if vip {
                            &s.crr_vip_programs
                        } else {
                            &s.crr_direct_programs
                        };
                        if name == "all" {
                            costs.iter().map(f).sum()
                        } else {
                            per(costs, name, f)
                        }
                    })
                    .collect(),
            )
            .0
        };
        let (nv, nd) = (col(true, |c| c.ns_per_unit), col(false, |c| c.ns_per_unit));
        let (rv, rd) = (
            col(true, |c| c.runs_per_unit),
            col(false, |c| c.runs_per_unit),
        );
        let _ = writeln!(
            md,
            "| {name} | {nv:.0} | {nd:.0} | {rv:.1} | {rd:.1} | {:.0} | {:.0} |",
            if rv > 0.0 { nv / rv } else { 0.0 },
            if rd > 0.0 { nd / rd } else { 0.0 },
        );
    }
}

type Curve = (&'static str, &'static str, fn(&ServiceRate) -> f64);

/// Two panels (connection rate, handshake) of one curve per dataplane over the
/// number of services on a log axis, medians with min–max whiskers.
pub fn svg(run: &Run) -> String {
    let panels: [(&str, [Curve; 2]); 2] = [
        (
            "connections/s through a ClusterIP",
            [
                ("netpath", "#2a7ab0", |r| r.netpath_crr),
                ("kube-proxy (iptables)", "#999999", |r| r.kube_proxy_crr),
            ],
        ),
        (
            "TCP handshake through a ClusterIP, µs (median)",
            [
                ("netpath", "#2a7ab0", |r| r.netpath_connect_us),
                ("kube-proxy (iptables)", "#999999", |r| {
                    r.kube_proxy_connect_us
                }),
            ],
        ),
    ];
    let ns = sizes(run);
    let (pw, ph, left, top) = (420.0, 220.0, 60.0, 40.0);
    let width = left + 2.0 * (pw + left);
    let height = top + ph + 60.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    let lx = |n: usize| (n.max(1) as f64).log10();
    let (x0, x1) = (
        ns.first().map_or(0.0, |n| lx(*n)),
        ns.last().map_or(1.0, |n| lx(*n)),
    );
    let span = (x1 - x0).max(1e-9);
    for (p, (title, curves)) in panels.iter().enumerate() {
        let ox = left + p as f64 * (pw + left);
        let max = curves
            .iter()
            .flat_map(|c| ns.iter().map(move |n| at(run, *n, c.2).2))
            .filter(|v| v.is_finite())
            .fold(0.0f64, f64::max)
            .max(1e-9)
            * 1.1;
        let x = |n: usize| ox + (lx(n) - x0) / span * pw;
        let y = |v: f64| top + ph - v / max * ph;
        let _ = writeln!(
            s,
            "<text x=\"{ox}\" y=\"20\" font-size=\"14\">{title}</text>\
             <line x1=\"{ox}\" x2=\"{ox}\" y1=\"{top}\" y2=\"{}\" stroke=\"black\"/>\
             <line x1=\"{ox}\" x2=\"{}\" y1=\"{}\" y2=\"{}\" stroke=\"black\"/>\
             <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{max:.0}</text><text x=\"{}\" y=\"{}\" text-anchor=\"end\">0</text>",
            top + ph,
            ox + pw,
            top + ph,
            top + ph,
            ox - 4.0,
            top + 10.0,
            ox - 4.0,
            top + ph
        );
        for n in &ns {
            let _ = writeln!(
                s,
                "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{n}</text>",
                x(*n),
                top + ph + 16.0
            );
        }
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">services (log scale)</text>",
            ox + pw / 2.0,
            top + ph + 34.0
        );
        for (i, (label, color, f)) in curves.iter().enumerate() {
            let pts: Vec<(f64, f64, f64, f64)> = ns
                .iter()
                .map(|n| {
                    let (m, lo, hi) = at(run, *n, f);
                    (x(*n), y(m), y(lo), y(hi))
                })
                .filter(|p| p.1.is_finite())
                .collect();
            let line: Vec<String> = pts
                .iter()
                .map(|p| format!("{:.1},{:.1}", p.0, p.1))
                .collect();
            let _ = writeln!(
                s,
                "<polyline points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"/>",
                line.join(" ")
            );
            for (px, py, lo, hi) in &pts {
                let _ = writeln!(
                    s,
                    "<circle cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"3\" fill=\"{color}\"/>\
                     <line x1=\"{px:.1}\" x2=\"{px:.1}\" y1=\"{lo:.1}\" y2=\"{hi:.1}\" stroke=\"{color}\"/>"
                );
            }
            let _ = writeln!(
                s,
                "<text x=\"{:.1}\" y=\"{}\" fill=\"{color}\">{label}</text>",
                ox + 10.0,
                height - 10.0 - 14.0 * (1 - i) as f64
            );
        }
    }
    s + "</svg>\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(services: usize, round: usize, np: f64, kp: f64) -> ServiceRate {
        ServiceRate {
            services,
            round,
            netpath_crr: np,
            kube_proxy_crr: kp,
            netpath_connect_us: 30.0,
            kube_proxy_connect_us: 30.0 + services as f64 / 10.0,
        }
    }

    #[test]
    fn table_rows_are_per_size_with_median_ratios_and_the_chart_has_both_curves() {
        let run = Run {
            service_rates: vec![
                rate(10_000, 0, 9000.0, 3000.0),
                rate(1, 0, 9000.0, 6000.0),
                rate(1, 1, 8000.0, 8000.0),
                rate(1, 2, 9000.0, 5000.0),
            ],
            ..Run::default()
        };
        let mut md = String::new();
        write_markdown(&mut md, &run);
        let rows: Vec<&str> = md.lines().filter(|l| l.starts_with("| 1")).collect();
        assert_eq!(rows.len(), 2, "{md}");
        // per-round ratios 1.5, 1.0, 1.8: median 1.5, not 9000/6000 from separate medians
        assert!(
            rows[0].starts_with("| 1 | 9000 | 6000 | 1.50x"),
            "{}",
            rows[0]
        );
        assert!(
            rows[1].starts_with("| 10000 | 9000 | 3000 | 3.00x"),
            "{}",
            rows[1]
        );
        let svg = svg(&run);
        assert_eq!(
            svg.matches("<polyline").count(),
            4,
            "two panels, two curves each"
        );
        assert!(svg.contains(">10000</text>") && svg.contains("kube-proxy"));
    }
}
