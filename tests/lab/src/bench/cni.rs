//! CNI ADD+DEL round trips: netpath's plugin against the reference `bridge` +
//! `host-local` plugins (Debian containernetworking-plugins), each in its own lab
//! node, cycles interleaved so drift hits both alike. Each cycle is what a runtime
//! pays per pod: exec the plugin(s), wire, allocate, unwire, free.
use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use serde::Serialize;
use serde_json::json;

use crate::{
    cni::{self, Call},
    lab::{agent_binary, Lab, LabConfig},
    netns::NetNs,
};

const REFERENCE_DIR: &str = "/usr/lib/cni";

#[derive(Debug, Clone, Serialize)]
pub struct CniLatency {
    pub plugin: String,
    pub cycles: usize,
    pub add_del_p50_ms: f64,
    pub add_del_p99_ms: f64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summarize(plugin: &str, mut ms: Vec<f64>) -> CniLatency {
    ms.sort_by(f64::total_cmp);
    CniLatency {
        plugin: plugin.into(),
        cycles: ms.len(),
        add_del_p50_ms: percentile(&ms, 0.50),
        add_del_p99_ms: percentile(&ms, 0.99),
    }
}

fn cycle(
    plugin: &Path,
    node: &Path,
    id: &str,
    pod: &NetNs,
    conf: &serde_json::Value,
) -> Result<Duration> {
    let t = Instant::now();
    let add = cni::run(plugin, node, &Call::new("ADD", id, Some(pod.path())), conf)?;
    if !add.success {
        bail!("{} ADD: {}", plugin.display(), add.stdout);
    }
    let del = cni::run(
        plugin,
        node,
        &Call::new("DEL", id, Some(pod.path())),
        &cni::with_prev(conf, &add.json),
    )?;
    if !del.success {
        bail!("{} DEL: {}", plugin.display(), del.stdout);
    }
    Ok(t.elapsed())
}

/// `cycles` interleaved ADD+DEL cycles of each plugin.
pub fn round_trips(cycles: usize) -> Result<Vec<CniLatency>> {
    let reference = Path::new(REFERENCE_DIR).join("bridge");
    if !reference.exists() {
        bail!(
            "{} missing: install containernetworking-plugins",
            reference.display()
        );
    }
    let lab = Lab::up(&LabConfig::new(1, 0)?)?;
    let ref_node = NetNs::create(&format!("{}-refnode", lab.prefix))?;
    let pod = NetNs::create(&format!("{}-cnipod", lab.prefix))?;
    let host_local_dir = std::env::temp_dir().join(format!("{}-host-local", lab.prefix));
    let ours = cni::conf("1.0.0");
    let theirs = json!({
        "cniVersion": "1.0.0", "name": "reference", "type": "bridge",
        "bridge": "cni0", "isGateway": true, "ipMasq": false,
        "ipam": {
            "type": "host-local",
            "ranges": [[{ "subnet": "10.99.0.0/24" }]],
            "dataDir": host_local_dir.display().to_string(),
        },
    });
    let netpath = agent_binary()?;
    let mut ours_ms = Vec::with_capacity(cycles);
    let mut theirs_ms = Vec::with_capacity(cycles);
    let result = (|| -> Result<()> {
        for i in 0..cycles {
            let id = format!("bench{i}");
            ours_ms.push(
                cycle(&netpath, lab.nodes[0].ns.path(), &id, &pod, &ours)?.as_secs_f64() * 1e3,
            );
            theirs_ms
                .push(cycle(&reference, ref_node.path(), &id, &pod, &theirs)?.as_secs_f64() * 1e3);
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&host_local_dir);
    result?;
    Ok(vec![
        summarize("netpath", ours_ms),
        summarize("bridge + host-local", theirs_ms),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_from_the_sorted_samples() {
        let s = summarize("x", (1..=100).rev().map(f64::from).collect());
        assert_eq!(s.add_del_p50_ms, 51.0);
        assert_eq!(s.add_del_p99_ms, 99.0);
        assert!(summarize("x", vec![]).add_del_p50_ms.is_nan());
    }
}
