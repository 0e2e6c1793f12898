//! Yes/no facts about a netpath node: no bridge device, no firewall rule.
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::nl::Nl;

/// A yes/no fact about a node.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Invariant {
    pub node: String,
    pub what: String,
    pub ok: bool,
    pub detail: String,
}

impl Invariant {
    pub(super) fn from_result(node: &str, what: &str, r: Result<String>) -> Self {
        let (ok, detail) = match r {
            Ok(d) => (true, d),
            Err(e) => (false, format!("{e:#}")),
        };
        Self {
            node: node.into(),
            what: what.into(),
            ok,
            detail,
        }
    }
}

pub(super) fn no_bridge() -> Result<String> {
    let links = Nl::new()?.links()?;
    let bridges: Vec<_> = links
        .iter()
        .filter(|l| l.kind.as_deref() == Some("bridge"))
        .map(|l| l.name.clone())
        .collect();
    if !bridges.is_empty() {
        bail!("bridge devices present: {}", bridges.join(", "));
    }
    let kinds: Vec<String> = links
        .iter()
        .map(|l| format!("{}({})", l.name, l.kind.as_deref().unwrap_or("-")))
        .collect();
    Ok(kinds.join(" "))
}

pub(super) fn no_firewall_rules() -> Result<String> {
    // Per-namespace list of loaded legacy iptables tables.
    let legacy =
        std::fs::read_to_string("/proc/thread-self/net/ip_tables_names").unwrap_or_default();
    if !legacy.trim().is_empty() {
        bail!(
            "iptables tables loaded: {}",
            legacy.split_whitespace().collect::<Vec<_>>().join(", ")
        );
    }
    // A child forked from this thread inherits its network namespace.
    let out = Command::new("nft")
        .args(["list", "ruleset"])
        .output()
        .context("run `nft list ruleset` (install the nftables package)")?;
    if !out.status.success() {
        bail!(
            "nft list ruleset failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let rules = String::from_utf8_lossy(&out.stdout);
    if !rules.trim().is_empty() {
        bail!("nftables ruleset not empty:\n{rules}");
    }
    Ok("no iptables tables, empty nft ruleset".into())
}
