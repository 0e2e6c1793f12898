//! Services against kube-proxy as it really runs: two flannel-style nodes (host-gw,
//! bridge) with the rules kube-proxy's iptables mode writes for N services
//! (KUBE-SERVICES -> KUBE-SVC-* -> KUBE-SEP-* with statistic-random DNAT), against
//! netpath with the same N services in its maps. The measured service is the last
//! one kube-proxy's chain walks (its first-packet cost grows with the services in
//! front of it); netpath's is one hash lookup whatever N is.
use std::{
    fmt::Write as _,
    io::Write as _,
    net::{Ipv4Addr, SocketAddrV4},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use netpath::spec::{Backend, Protocol, ServicePort, ServiceSpec, TargetPort};

use super::{
    prog_stats::{self, ProgCost},
    tools::{self, Ends, CRR_PORT},
};
use crate::{
    lab::{generated_spec, Lab, LabConfig, NodeKind},
    netns,
    service::{cluster_ip, endpoint},
};

/// Where the services' addresses start; the measured one is the last.
const FIRST_VIP: u32 = u32::from_be_bytes([10, 96, 0, 1]);
const PORT: u16 = 80;
/// The connection test through the ClusterIP beside the direct one (see `overhead`).
const CRR_VIA: u16 = CRR_PORT + 1;

#[derive(Debug, Clone, Serialize)]
pub struct ServiceRate {
    pub services: usize,
    pub round: usize,
    /// Connections per second through the ClusterIP (connect, 64-byte request and
    /// response, close).
    pub netpath_crr: f64,
    pub kube_proxy_crr: f64,
    /// Median TCP handshake through the ClusterIP, microseconds.
    pub netpath_connect_us: f64,
    pub kube_proxy_connect_us: f64,
}

/// Through a ClusterIP against the same backend addressed directly, on netpath.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceOverhead {
    pub round: usize,
    pub tcp1_vip_gbps: f64,
    pub tcp1_direct_gbps: f64,
    pub rr_vip_p50_us: f64,
    pub rr_direct_p50_us: f64,
    pub crr_vip: f64,
    pub crr_direct: f64,
    /// Where the connection tests' time went in the programs (both nodes), per
    /// connection.
    pub crr_vip_programs: Vec<ProgCost>,
    pub crr_direct_programs: Vec<ProgCost>,
}

fn vip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(FIRST_VIP + i as u32)
}

/// `n` services of one port each toward `backend`; the last, the measured one, also
/// carries the throughput and ping-pong tools' ports.
fn services(n: usize, backend: Ipv4Addr) -> Vec<ServiceSpec> {
    (0..n)
        .map(|i| {
            let mut s = cluster_ip(&format!("s{i}"), vip(i), PORT, CRR_PORT, &[backend]);
            s.ports.truncate(1);
            if i == n - 1 {
                for (name, protocol, port) in [
                    ("iperf", Protocol::TCP, 5201),
                    ("pp-tcp", Protocol::TCP, 11111),
                    ("pp-udp", Protocol::UDP, 11111),
                ] {
                    s.ports.push(ServicePort {
                        name: name.into(),
                        protocol,
                        port,
                        target_port: Some(TargetPort::Number(port)),
                        node_port: None,
                    });
                }
            }
            s.endpoints = vec![endpoint(backend)];
            s
        })
        .collect()
}

fn two_nodes(kind: NodeKind) -> Result<Lab> {
    let mut cfg = LabConfig::with_spec(generated_spec(2, Backend::Direct)?, 1)?;
    cfg.kinds = (0..2).map(|i| (i, kind)).collect();
    Lab::up(&cfg)
}

/// kube-proxy's iptables mode for `n` services, one endpoint each, as
/// `iptables-restore` input.
fn kube_proxy_rules(n: usize, backend: Ipv4Addr) -> String {
    let mut r = String::from("*nat\n:KUBE-SERVICES - [0:0]\n");
    for i in 0..n {
        let _ = writeln!(r, ":KUBE-SVC-{i:06} - [0:0]\n:KUBE-SEP-{i:06} - [0:0]");
    }
    r.push_str(
        "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n",
    );
    r.push_str("-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n");
    for i in 0..n {
        let _ = writeln!(
            r,
            "-A KUBE-SERVICES -d {}/32 -p tcp -m tcp --dport {PORT} -j KUBE-SVC-{i:06}",
            vip(i)
        );
        // With one endpoint kube-proxy jumps straight; with k it writes k-1
        // statistic rules before the last: one here keeps the chain as written for one.
        let _ = writeln!(
            r,
            "-A KUBE-SVC-{i:06} -m statistic --mode random --probability 1.00000000000 -j KUBE-SEP-{i:06}"
        );
        let _ = writeln!(
            r,
            "-A KUBE-SEP-{i:06} -p tcp -m tcp -j DNAT --to-destination {backend}:{CRR_PORT}"
        );
    }
    r.push_str("COMMIT\n");
    r
}

/// Runs `argv` inside `ns` with `input` on its standard input (`iptables-restore`,
/// `ipset restore`).
pub(super) fn pipe_in(ns: &std::path::Path, argv: &[&str], input: &str) -> Result<()> {
    netns::run_in(ns, || {
        let mut child = Command::new(argv[0])
            .args(&argv[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("start {}", argv[0]))?;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(input.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "{}: {}",
                argv[0],
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    })
}

fn ends(lab: &Lab) -> Ends<'_> {
    let server = &lab.nodes[1].pods[0];
    Ends {
        client: lab.nodes[0].pods[0].ns.path(),
        server: server.ns.path(),
        server_ip: server.ip,
    }
}

fn rate(lab: &Lab, n: usize, secs: u32) -> Result<(f64, f64)> {
    let e = ends(lab);
    let dst = SocketAddrV4::new(vip(n - 1), PORT);
    let connect = tools::connect_p50_us(&e, dst, 500)?;
    let crr = tools::crr_per_s_to(&e, dst, CRR_PORT, secs)?;
    Ok((crr, connect))
}

/// One round at `n` services: netpath and kube-proxy, built one after the other.
pub fn measure(n: usize, round: usize, secs: u32) -> Result<ServiceRate> {
    let lab = two_nodes(NodeKind::Netpath)?;
    let backend = lab.nodes[1].pods[0].ip;
    let mut d = lab.spec.to_draft();
    d.services = services(n, backend);
    lab.write_spec(&d.validate()?)?;
    let want = n as u32 + 3;
    crate::wait_for("the services in the maps", Duration::from_secs(120), || {
        lab.nodes[0]
            .pinned()
            .and_then(|p| p.settings())
            .is_ok_and(|s| s.services == want)
    });
    let (netpath_crr, netpath_connect_us) = rate(&lab, n, secs)?;
    drop(lab);
    let lab = two_nodes(NodeKind::HostGw)?;
    let backend = lab.nodes[1].pods[0].ip;
    pipe_in(
        lab.nodes[0].ns.path(),
        &["iptables-restore", "--noflush"],
        &kube_proxy_rules(n, backend),
    )
    .context("iptables-restore (Debian package iptables)")?;
    let (kube_proxy_crr, kube_proxy_connect_us) = rate(&lab, n, secs)?;
    Ok(ServiceRate {
        services: n,
        round,
        netpath_crr,
        kube_proxy_crr,
        netpath_connect_us,
        kube_proxy_connect_us,
    })
}

/// One round of the ClusterIP's own cost on netpath: throughput, ping-pong and
/// connection rate through it, against the backend addressed directly.
pub fn overhead(round: usize, secs: u32) -> Result<ServiceOverhead> {
    let lab = two_nodes(NodeKind::Netpath)?;
    let backend = lab.nodes[1].pods[0].ip;
    let mut d = lab.spec.to_draft();
    d.services = services(1, backend);
    d.services[0].ports.push(ServicePort {
        name: "crr".into(),
        protocol: Protocol::TCP,
        port: CRR_VIA,
        target_port: Some(TargetPort::Number(CRR_VIA)),
        node_port: None,
    });
    lab.write_spec(&d.validate()?)?;
    crate::wait_for("the service in the maps", Duration::from_secs(30), || {
        lab.nodes[0]
            .pinned()
            .and_then(|p| p.settings())
            .is_ok_and(|s| s.services == 5)
    });
    let direct = ends(&lab);
    let through = Ends {
        server_ip: vip(0),
        ..direct.clone()
    };
    let (tcp1_vip_gbps, _) = tools::tcp_gbps(&through, secs, 1)?;
    let (tcp1_direct_gbps, _) = tools::tcp_gbps(&direct, secs, 1)?;
    let (rr_vip_p50_us, _) = tools::latency_us_to(&direct, vip(0), secs, true)?;
    let (rr_direct_p50_us, _) = tools::latency_us(&direct, secs, true)?;
    // Each on a port of its own: the backend closes first, so every connection
    // leaves a TIME_WAIT there, and a later connection on the same ports (the other
    // test's, the kernel reusing ephemeral ports) would wait on it.
    let _stats = prog_stats::enable()?;
    let (crr_vip, crr_vip_programs) = profiled(secs, || {
        tools::crr_per_s_to(&direct, SocketAddrV4::new(vip(0), CRR_VIA), CRR_VIA, secs)
    })?;
    let (crr_direct, crr_direct_programs) = profiled(secs, || tools::crr_per_s(&direct, secs))?;
    Ok(ServiceOverhead {
        round,
        tcp1_vip_gbps,
        tcp1_direct_gbps,
        rr_vip_p50_us,
        rr_direct_p50_us,
        crr_vip,
        crr_direct,
        crr_vip_programs,
        crr_direct_programs,
    })
}

/// A rate test and the programs' time per unit of it.
fn profiled(secs: u32, test: impl FnOnce() -> Result<f64>) -> Result<(f64, Vec<ProgCost>)> {
    let before = prog_stats::snapshot()?;
    let rate = test()?;
    let after = prog_stats::snapshot()?;
    Ok((
        rate,
        prog_stats::between(&before, &after, rate * f64::from(secs)),
    ))
}
