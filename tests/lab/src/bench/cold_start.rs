//! An agent started cold on a big cluster's spec, the way a user starts one: a node
//! in a namespace and a spec file naming N nodes (`backend = "direct"`, every node on
//! one /12 underlay, /26 pod CIDRs from 10.0.0.0/8), so every peer has a gateway of
//! its own. Measured: from the agent's start to every map entry and kernel route in
//! place, its resident memory then and at its peak, and what it logged meanwhile.
use std::{
    fmt::Write as _,
    net::Ipv4Addr,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use netpath::netlink::PROTO_AGENT;

use super::tools;
use crate::{lab::agent_binary, netns::NetNs, nl::Nl, process::Spawned};

#[derive(Debug, Clone, Serialize)]
pub struct ColdStart {
    pub nodes: usize,
    /// From the agent's start to every route in its maps and the kernel.
    pub converged_s: f64,
    /// Resident memory once converged, and the most it ever held.
    pub rss_mib: f64,
    pub peak_rss_mib: f64,
    /// When the agent's first log line appeared, seconds after its start.
    pub first_log_s: f64,
    /// Log lines saying how far a long pass got.
    pub progress_lines: usize,
}

const UNDERLAY: u32 = u32::from_be_bytes([172, 16, 0, 1]);

/// Node `i`: (underlay address, pod CIDR base).
fn node(i: usize) -> (Ipv4Addr, Ipv4Addr) {
    (
        Ipv4Addr::from(UNDERLAY + i as u32),
        Ipv4Addr::from((10u32 << 24) + 64 * i as u32),
    )
}

/// The spec file a user would write for such a cluster (node `n0` is ours).
fn spec_toml(nodes: usize) -> String {
    let mut s = String::from("cluster_cidr = \"10.0.0.0/8\"\nbackend = \"direct\"\n");
    for i in 0..nodes {
        let (ip, pods) = node(i);
        let _ = write!(
            s,
            "\n[[nodes]]\nname = \"n{i}\"\nunderlay = \"{ip}/12\"\npod_cidr = \"{pods}/26\"\n"
        );
    }
    s
}

/// Cleans up what the agent's stop leaves to us: its pins and its work directory.
struct Leftovers {
    pins: PathBuf,
    dir: PathBuf,
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        let _ = netpath::datapath::remove_pins(&self.pins);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn measure(nodes: usize) -> Result<ColdStart> {
    let (prefix, workdir) = crate::lab::reserve_prefix()?;
    let name = format!("{prefix}-cold");
    let ns = NetNs::create(&name)?;
    let _left = Leftovers {
        pins: netpath::datapath::node_dir(
            std::path::Path::new(netpath::spec::DEFAULT_BPFFS_ROOT),
            &name,
        ),
        dir: workdir.clone(),
    };
    ns.run(|| {
        let nl = Nl::new()?;
        nl.add_veth("eth0", "wire")?;
        let eth0 = nl.index("eth0")?;
        nl.add_address(eth0, Ipv4Addr::from(UNDERLAY), 12)?;
        nl.set_up(eth0)?;
        nl.set_up_by_name("wire")
    })?;
    let spec = workdir.join("cluster.toml");
    std::fs::write(&spec, spec_toml(nodes))?;
    let log = workdir.join("agent.log");
    let out = std::fs::File::create(&log)?;
    let started = Instant::now();
    let child = Command::new(agent_binary()?)
        .args(["agent", "--node", "n0", "--metrics-addr", "off", "--config"])
        .arg(&spec)
        .arg("--pin-dir")
        .arg(&_left.pins)
        .arg("--state-dir")
        .arg(workdir.join("state"))
        .arg("--netns")
        .arg(ns.path())
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .context("start the agent")?;
    let agent = Spawned::terminating(child);
    let pid = agent.0.id();
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let mut first_log_s = None;
    let mut peak_kib = 0.0f64;
    let deadline = started + Duration::from_secs(900);
    loop {
        let text = read_log();
        if first_log_s.is_none() && !text.is_empty() {
            first_log_s = Some(started.elapsed().as_secs_f64());
        }
        // VmHWM is gone once the process is; sample it while it runs.
        peak_kib = peak_kib.max(tools::status_kib(pid, "VmHWM:").unwrap_or(0.0));
        if text.contains("agent ready") {
            break;
        }
        if Instant::now() > deadline {
            bail!("agent not ready after 900 s:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let converged_s = started.elapsed().as_secs_f64();
    // Ready follows the first pass; prove that pass left everything in place.
    let peers = nodes - 1;
    let routes = ns.run(|| {
        Ok(Nl::new()?
            .routes()?
            .iter()
            .filter(|r| r.protocol == PROTO_AGENT)
            .count())
    })?;
    let entries = netpath::datapath::Pinned::open(&_left.pins)?
        .routes()?
        .len();
    if routes != peers || entries != peers {
        bail!(
            "ready with {routes} kernel routes and {entries} map entries of {peers}:\n{}",
            read_log()
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    let rss_kib = tools::status_kib(pid, "VmRSS:")?;
    peak_kib = peak_kib.max(tools::status_kib(pid, "VmHWM:")?);
    let text = read_log();
    drop(agent);
    Ok(ColdStart {
        nodes,
        converged_s,
        rss_mib: rss_kib / 1024.0,
        peak_rss_mib: peak_kib / 1024.0,
        first_log_s: first_log_s.unwrap_or(converged_s),
        progress_lines: text.lines().filter(|l| l.contains(" of ")).count(),
    })
}

/// The report's section, with the marks beside the figures.
pub fn write_markdown(md: &mut String, runs: &[ColdStart]) {
    if runs.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "\n## An agent started on a big cluster\n\nOne node in a namespace, its agent started on a \
         spec file of N nodes (`backend = \"direct\"`, one /12 underlay, /26 pod CIDRs): every peer \
         has a gateway of its own. Converged: every map entry and kernel route in place (checked). \
         Marks: converged <= 60 s, resident <= 30 MiB after.\n\n\
         | nodes | converged s | resident MiB after | peak MiB | first log line s | progress lines |\n\
         | --- | --- | --- | --- | --- | --- |"
    );
    for r in runs {
        let _ = writeln!(
            md,
            "| {} | {:.1} | {:.1} | {:.1} | {:.2} | {} |",
            r.nodes, r.converged_s, r.rss_mib, r.peak_rss_mib, r.first_log_s, r.progress_lines
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_is_a_users_and_every_node_has_its_own_gateway_and_cidr() {
        let s = spec_toml(3);
        let spec = netpath::spec::ClusterSpec::parse(&s).unwrap();
        assert_eq!(spec.nodes.len(), 3);
        assert_eq!(spec.nodes[2].underlay.to_string(), "172.16.0.3/12");
        assert_eq!(spec.nodes[2].pod_cidr.to_string(), "10.0.0.128/26");
        let (last, pods) = node(100_000);
        assert_eq!(last, Ipv4Addr::new(172, 17, 134, 161));
        assert_eq!(pods, Ipv4Addr::new(10, 97, 168, 0));
    }
}
