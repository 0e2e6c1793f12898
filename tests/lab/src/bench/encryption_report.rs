//! The encryption part of the bench report: netpath with WireGuard against without,
//! medians (min–max) over rounds, ratios per round.
use std::{collections::BTreeMap, fmt::Write as _};

use super::{encryption::EncryptionRate, stats, Run};

type Metric = fn(&EncryptionRate) -> f64;

fn by_round(run: &Run, encrypted: bool, f: Metric) -> BTreeMap<usize, f64> {
    run.encryption
        .rates
        .iter()
        .filter(|r| r.encrypted == encrypted)
        .map(|r| (r.round, f(r)))
        .collect()
}

/// Encrypted over plain, per round.
pub fn vs_plain(run: &Run, f: Metric) -> Vec<f64> {
    let (with, without) = (by_round(run, true, f), by_round(run, false, f));
    with.iter()
        .filter_map(|(r, x)| without.get(r).map(|y| x / y))
        .collect()
}

fn fmt(v: Vec<f64>, digits: usize) -> String {
    let (m, lo, hi) = stats(v);
    if m.is_nan() {
        return "–".into();
    }
    format!("{m:.digits$} ({lo:.digits$}–{hi:.digits$})")
}

pub fn write_markdown(md: &mut String, run: &Run) {
    let rates = &run.encryption.rates;
    if rates.is_empty() {
        return;
    }
    let implementation = rates
        .iter()
        .find_map(|r| r.implementation.clone())
        .unwrap_or_else(|| "?".into());
    let _ = writeln!(md, "\n## Encryption\n");
    let _ = writeln!(
        md,
        "Two netpath nodes (direct), a pod on each, without and with `encryption = \"wireguard\"` \
         ({implementation} WireGuard on this kernel), both in every round, the order alternating. \
         CPU: seconds all CPUs were busy during the TCP 1 stream test, per GB it moved. \
         Medians (min–max) over rounds; ratios are per-round, encrypted / plain.\n"
    );
    let _ = writeln!(
        md,
        "| | TCP 1 stream Gbit/s | CPU s per GB | TCP RR p50 µs | conn/s |\n| --- | --- | --- | --- | --- |"
    );
    for (name, encrypted) in [("plain", false), ("WireGuard", true)] {
        let col = |f: Metric, d| fmt(by_round(run, encrypted, f).into_values().collect(), d);
        let _ = writeln!(
            md,
            "| {name} | {} | {} | {} | {} |",
            col(|r| r.tcp1_gbps, 2),
            col(|r| r.cpu_s_per_gb, 2),
            col(|r| r.rr_p50_us, 1),
            col(|r| r.crr, 0)
        );
    }
    let _ = writeln!(
        md,
        "| WireGuard / plain | {} | {} | {} | {} |",
        fmt(vs_plain(run, |r| r.tcp1_gbps), 3),
        fmt(vs_plain(run, |r| r.cpu_s_per_gb), 3),
        fmt(vs_plain(run, |r| r.rr_p50_us), 3),
        fmt(vs_plain(run, |r| r.crr), 3)
    );
}
