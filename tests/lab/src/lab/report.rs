//! The lab's check table, grouped by step and path.
use std::collections::BTreeSet;

use super::Invariant;
use crate::check::CheckResult;

/// Prints checks grouped by step and path, failures in full, then the invariants;
/// returns whether everything passed.
pub fn print_report(checks: &[CheckResult], invariants: &[Invariant], verbose: bool) -> bool {
    use std::collections::BTreeMap;
    /// (step, path, proto) -> (passed, total, what the receivers saw)
    type Group = (usize, usize, BTreeSet<String>);
    let mut groups: BTreeMap<(String, String, String), Group> = BTreeMap::new();
    for c in checks {
        let key = (
            c.step.clone(),
            c.path.clone(),
            format!("{:?}", c.proto).to_lowercase(),
        );
        let g = groups.entry(key).or_default();
        g.1 += 1;
        if c.ok() {
            g.0 += 1;
        }
        if c.seen_src.is_some() {
            g.2.insert(if c.seen_src == Some(c.expected_src) {
                c.expected_is.to_string()
            } else {
                "OTHER".to_string()
            });
        }
    }
    println!(
        "{:<14} {:<24} {:<5} {:>9}  {:<18} result",
        "step", "path", "proto", "passed", "receiver saw"
    );
    for ((step, path, proto), (ok, total, seen)) in &groups {
        println!(
            "{:<14} {:<24} {:<5} {:>4}/{:<4}  {:<18} {}",
            step,
            path,
            proto,
            ok,
            total,
            if seen.is_empty() {
                "(reply only)".to_string()
            } else {
                seen.iter().cloned().collect::<Vec<_>>().join(", ")
            },
            if ok == total { "PASS" } else { "FAIL" }
        );
    }
    let mut all = true;
    for c in checks {
        all &= c.ok();
        if verbose || !c.ok() {
            println!(
                "  {} {} -> {} {:?} dst {} saw {} {}",
                c.step,
                c.from,
                c.to,
                c.proto,
                c.dst,
                c.seen_src
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "-".into()),
                match (&c.error, c.ok()) {
                    (_, true) => "ok".to_string(),
                    (Some(e), _) => format!("FAIL: {e}"),
                    (None, false) => format!("FAIL: expected source {}", c.expected_src),
                }
            );
        }
    }
    println!();
    for i in invariants {
        all &= i.ok;
        println!(
            "{:<26} {:<28} {}",
            i.node,
            i.what,
            if i.ok {
                "PASS".to_string()
            } else {
                format!("FAIL: {}", i.detail)
            }
        );
    }
    all
}
