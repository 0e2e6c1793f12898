//! The bench's outputs: Markdown tables, raw JSON, SVG bar charts with spread.
use std::{collections::BTreeMap, fmt::Write as _, path::Path};

use anyhow::{Context, Result};

use super::{
    series, stats,
    targets::{ratio, targets},
    PathKind, Run, Sample,
};

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

/// The paths this run measured, in bench order.
fn measured(run: &Run) -> Vec<PathKind> {
    PathKind::ALL
        .into_iter()
        .filter(|p| run.samples.iter().any(|s| s.path == *p))
        .collect()
}

pub fn markdown(run: &Run) -> String {
    let mut md = String::new();
    intro(&mut md, run);
    targets_table(&mut md, run);
    path_tables(&mut md, run);
    scale_table(&mut md, run);
    super::control_report::write_markdown(&mut md, run);
    super::policy_report::write_markdown(&mut md, run);
    super::encryption_report::write_markdown(&mut md, run);
    let _ = writeln!(
        md,
        "\n![throughput](throughput.svg)\n\n![latency](latency.svg)"
    );
    if !run.service_rates.is_empty() {
        let _ = writeln!(md, "\n![services](services.svg)");
    }
    md
}

/// The run's conditions and how to read its figures.
fn intro(md: &mut String, run: &Run) {
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
}

fn targets_table(md: &mut String, run: &Run) {
    let _ = writeln!(md, "## Targets\n\n| target | measured (median ratio) | goal | met |\n| --- | --- | --- | --- |");
    for t in targets(run) {
        let _ = writeln!(
            md,
            "| {} | {:.3} | {} | {} |",
            t.what,
            t.value,
            t.goal,
            if t.met() { "yes" } else { "no" }
        );
    }
}

/// Each path's figures, then its ratios to its classic counterpart, to N2N and to
/// the veth pair.
fn path_tables(md: &mut String, run: &Run) {
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
    programs_per_packet(md, run);
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
}

fn scale_table(md: &mut String, run: &Run) {
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
        .map(|v| stats(v.iter().map(|s| s.cpu_ns_per_pkt).collect()).0);
    for (routes, v) in &by {
        let cpu = stats(v.iter().map(|s| s.cpu_ns_per_pkt).collect()).0;
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
