//! Network policy's cost (`--policy`). netpath with N NetworkPolicies selecting the
//! server pod, one ingress rule each (a distinct peer on a port of its own: every
//! other rule a pod record by label, the rest a /32 ipBlock) plus the one that
//! allows the client, against netpath with none: same lab, interleaved, the order
//! rotated each round. Then the same policies as kube-router and Weave-npc write
//! them (an ipset per policy, a chain for the selected pod, conntrack first) on
//! Calico's kernel path; the programs' time per packet and per connection; and how
//! fast a written policy is enforced.
use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream},
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use serde::Serialize;
use serde_json::json;

use netpath::{
    policy::{Namespace, NetworkPolicy, PodRecord},
    spec::Backend,
};

use super::{
    plan::{Plan, Progress},
    prog_stats::{self, ProgCost},
    tools::{self, Ends},
};
use crate::lab::{generated_spec, Lab, LabConfig, NodeKind};

const NAMESPACE: &str = "bench";
/// Pod-record peers' addresses: in the cluster CIDR, on no node of the lab.
const PEER_PODS: u32 = u32::from_be_bytes([10, 244, 128, 0]);
/// ipBlock peers' addresses: outside the cluster.
const PEER_BLOCKS: u32 = u32::from_be_bytes([172, 20, 0, 0]);
/// Sizes whose programs' time is measured too (with none, always).
const COST_SIZES: [usize; 2] = [1, 10_000];

#[derive(Debug, Clone, Default, Serialize)]
pub struct PolicyRun {
    pub rates: Vec<PolicyRate>,
    pub costs: Vec<PolicyCost>,
    pub kernel: Vec<KernelRate>,
    pub control: Option<super::policy_control::PolicyControl>,
}

/// netpath with `rules` policies (0: none) in one round.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyRate {
    pub rules: usize,
    pub round: usize,
    pub crr: f64,
    pub tcp1_gbps: f64,
    pub rr_p50_us: f64,
    /// From the spec written to every agent having applied it.
    pub applied_ms: f64,
}

/// The programs' time (both nodes, run-time statistics on for these tests only).
#[derive(Debug, Clone, Serialize)]
pub struct PolicyCost {
    pub rules: usize,
    pub round: usize,
    /// Ping-pong: all programs' time per packet (a packet leaves a pod once).
    pub rr_ns_per_packet: f64,
    /// Connection test: all programs' time per connection, and its packets.
    pub crr_ns_per_conn: f64,
    pub crr_packets_per_conn: f64,
}

/// The kernel path with `rules` policies as iptables + ipset (0: no rules at all).
#[derive(Debug, Clone, Serialize)]
pub struct KernelRate {
    pub rules: usize,
    pub round: usize,
    pub crr: f64,
}

pub(super) fn peer_pod(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(PEER_PODS + 1 + (i / 2) as u32)
}

pub(super) fn peer_block(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(PEER_BLOCKS + 1 + (i / 2) as u32)
}

pub(super) fn peer_port(i: usize) -> u16 {
    8000 + (i % 1000) as u16
}

/// Policy `i`: the server may hear peer `i` on `port`.
pub(super) fn rule(i: usize, port: u16) -> NetworkPolicy {
    let peer = if i.is_multiple_of(2) {
        json!({"podSelector": {"matchLabels": {"peer": format!("p{i}")}}})
    } else {
        json!({"ipBlock": {"cidr": format!("{}/32", peer_block(i))}})
    };
    policy(
        &format!("rule-{i}"),
        json!([{"from": [peer], "ports": [{"protocol": "TCP", "port": port}]}]),
    )
}

fn policy(name: &str, ingress: serde_json::Value) -> NetworkPolicy {
    crate::policy::policy(json!({
        "metadata": {"namespace": NAMESPACE, "name": name},
        "spec": {"podSelector": {"matchLabels": {"app": "server"}},
                 "policyTypes": ["Ingress"], "ingress": ingress},
    }))
}

/// `n` rules and the one allowing the client (every port).
pub(super) fn policies(n: usize) -> Vec<NetworkPolicy> {
    let client = json!([{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}]);
    (0..n)
        .map(|i| rule(i, peer_port(i)))
        .chain((n > 0).then(|| policy("allow-client", client)))
        .collect()
}

type Records = (Vec<Namespace>, Vec<PodRecord>);

/// The namespace, the client and server, and the pod-record peers of `n` rules:
/// what a watcher of the API server would have written.
fn records(client: Ipv4Addr, server: Ipv4Addr, n: usize) -> Records {
    let pod = |name: &str, labels: serde_json::Value, ip: Ipv4Addr| {
        serde_json::from_value(json!({
            "metadata": {"namespace": NAMESPACE, "name": name, "labels": labels},
            "status": {"podIP": ip.to_string()},
        }))
        .expect("pod record")
    };
    let ns = json!({"metadata": {"name": NAMESPACE}});
    let pods = [
        pod("client", json!({"app": "client"}), client),
        pod("server", json!({"app": "server"}), server),
    ]
    .into_iter()
    .chain((0..n).step_by(2).map(|i| {
        pod(
            &format!("peer-{i}"),
            json!({"peer": format!("p{i}")}),
            peer_pod(i),
        )
    }))
    .collect();
    (vec![serde_json::from_value(ns).expect("namespace")], pods)
}

/// Two netpath nodes (direct), the client pod on the first, the server on the
/// second, tied to their records as containerd's CRI would tie them.
pub(super) fn netpath_lab() -> Result<(Box<Lab>, LabConfig)> {
    let mut cfg = LabConfig::with_spec(generated_spec(2, Backend::Direct)?, 0)?;
    cfg.kinds = vec![(0, NodeKind::Netpath), (1, NodeKind::Netpath)];
    let mut lab = Box::new(Lab::up(&cfg)?);
    lab.attach_pod_as(0, NAMESPACE, "client")?;
    lab.attach_pod_as(1, NAMESPACE, "server")?;
    Ok((lab, cfg))
}

pub(super) fn ends(lab: &Lab) -> Ends<'_> {
    let server = &lab.nodes[1].pods[0];
    Ends {
        client: lab.nodes[0].pods[0].ns.path(),
        server: server.ns.path(),
        server_ip: server.ip,
    }
}

pub(super) fn lab_records(lab: &Lab, n: usize) -> Records {
    records(lab.nodes[0].pods[0].ip, lab.nodes[1].pods[0].ip, n)
}

pub(super) fn server_rev(lab: &Lab) -> u32 {
    lab.nodes[1]
        .pinned()
        .and_then(|p| p.settings())
        .map_or(0, |s| s.policy_rev)
}

/// Writes the spec with these records and policies; returns once every agent
/// published a pass over it (published after the maps are written) and the
/// server's policy revision is no longer `old_rev` (when it must change).
pub(super) fn apply(
    lab: &Lab,
    recs: &Records,
    policies: Vec<NetworkPolicy>,
    old_rev: Option<u32>,
) -> Result<Duration> {
    let mut d = lab.spec.to_draft();
    (d.namespaces, d.pods, d.policies) = (recs.0.clone(), recs.1.clone(), policies);
    let text = d.validate()?.to_toml();
    if std::fs::read_to_string(lab.spec_path()).ok().as_deref() == Some(&text) {
        return Ok(Duration::ZERO);
    }
    let written = netpath::state::unix_ms();
    let t = Instant::now();
    lab.write_spec_text(&text)?;
    let synced = |i: usize| {
        netpath::state::AgentState::read(&lab.nodes[i].state_dir())
            .ok()
            .flatten()
            .and_then(|s| s.store_synced_unix_ms)
            .is_some_and(|ms| ms >= written)
    };
    while !((0..lab.nodes.len()).all(synced) && old_rev.is_none_or(|r| server_rev(lab) != r)) {
        if t.elapsed() > Duration::from_secs(120) {
            bail!("policy not applied in 120 s:\n{}", lab.agent_log(1));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(t.elapsed())
}

/// The server pod is isolated: a node's own connection to a closed port on it gets
/// no refusal back (its SYN dropped) rather than a reset.
pub(super) fn check_isolated(node_ns: &std::path::Path, server: Ipv4Addr) -> Result<()> {
    let addr = SocketAddr::V4(SocketAddrV4::new(server, 9));
    let r = crate::netns::run_in(node_ns, || {
        Ok(TcpStream::connect_timeout(
            &addr,
            Duration::from_millis(300),
        ))
    })?;
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Ok(()),
        other => bail!("the server is not isolated: a node's connect gave {other:?}"),
    }
}

/// Empties the connection tables, so each test's connections are judged anew.
fn forget_connections(lab: &Lab) -> Result<()> {
    for n in &lab.nodes {
        n.pinned()?.collect_policy_connections(u64::MAX);
    }
    Ok(())
}

/// Every part `plan` asks for, each round's netpath sizes in a rotated order.
pub fn measure(plan: &Plan, p: &mut Progress) -> Result<PolicyRun> {
    let mut run = PolicyRun::default();
    let rounds = plan.policy_rounds;
    for round in 0..rounds {
        p.tick(&format!(
            "round {}/{rounds}: netpath with 0/{:?} policies selecting the server",
            round + 1,
            plan.policy_sizes
        ))?;
        netpath_round(&plan.policy_sizes, round, plan.secs, &mut run)?;
        p.tick(&format!(
            "round {}/{rounds}: iptables + ipset policy on Calico's kernel path",
            round + 1
        ))?;
        for n in [0, 1, 10_000] {
            let crr = super::policy_iptables::kernel_rate(n, plan.secs)?;
            run.kernel.push(KernelRate {
                rules: n,
                round,
                crr,
            });
        }
    }
    if plan.policy_control {
        p.tick("policy written -> enforced with 1 000 in place; 10 000 from a cold start")?;
        run.control = Some(super::policy_control::measure()?);
    }
    Ok(run)
}

fn netpath_round(sizes: &[usize], round: usize, secs: u32, run: &mut PolicyRun) -> Result<()> {
    let (lab, _cfg) = netpath_lab()?;
    let e = ends(&lab);
    let recs = lab_records(&lab, sizes.iter().copied().max().unwrap_or(0));
    let mut order: Vec<usize> = std::iter::once(0).chain(sizes.iter().copied()).collect();
    let len = order.len();
    order.rotate_left(round % len);
    for n in order {
        let applied = apply(&lab, &recs, policies(n), None)?;
        if n > 0 {
            check_isolated(lab.nodes[0].ns.path(), e.server_ip)?;
        }
        forget_connections(&lab)?;
        let crr = tools::crr_per_s(&e, secs)?;
        let (tcp1_gbps, _) = tools::tcp_gbps(&e, secs, 1)?;
        let (rr_p50_us, _) = tools::latency_us(&e, secs, true)?;
        run.rates.push(PolicyRate {
            rules: n,
            round,
            crr,
            tcp1_gbps,
            rr_p50_us,
            applied_ms: applied.as_secs_f64() * 1e3,
        });
        if n == 0 || COST_SIZES.contains(&n) {
            run.costs.push(costs(&lab, &e, n, round, secs)?);
        }
    }
    Ok(())
}

fn runs_of(costs: &[ProgCost], program: &str) -> f64 {
    costs
        .iter()
        .filter(|c| c.program.starts_with(program))
        .map(|c| c.runs_per_unit)
        .sum()
}

fn costs(lab: &Lab, e: &Ends, rules: usize, round: usize, secs: u32) -> Result<PolicyCost> {
    let _stats = prog_stats::enable()?;
    let a = prog_stats::snapshot()?;
    tools::latency_us(e, secs, true)?;
    let b = prog_stats::snapshot()?;
    let rr = prog_stats::between(&a, &b, 1.0);
    forget_connections(lab)?;
    let c = prog_stats::snapshot()?;
    let conns = tools::crr_per_s(e, secs)? * f64::from(secs);
    let d = prog_stats::snapshot()?;
    let crr = prog_stats::between(&c, &d, conns);
    let total = |v: &[ProgCost]| v.iter().map(|c| c.ns_per_unit).sum::<f64>();
    Ok(PolicyCost {
        rules,
        round,
        rr_ns_per_packet: total(&rr) / runs_of(&rr, "from_pod").max(1.0),
        crr_ns_per_conn: total(&crr),
        crr_packets_per_conn: runs_of(&crr, "from_pod"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_records_and_policies_make_a_valid_spec() {
        let (client, server) = (Ipv4Addr::new(10, 244, 1, 2), Ipv4Addr::new(10, 244, 2, 2));
        let (ns, pods) = records(client, server, 4);
        let mut d = generated_spec(2, Backend::Direct).unwrap().to_draft();
        (d.namespaces, d.pods, d.policies) = (ns, pods, policies(4));
        let spec = d.validate().expect("a valid spec");
        assert_eq!(spec.policy.policies.len(), 5, "4 rules and the client's");
        assert_eq!(spec.policy.pods.len(), 4, "client, server, peers 0 and 2");
        assert_eq!(
            spec.policy.pods[3].status.pod_ip.as_deref(),
            Some("10.244.128.2")
        );
    }
}
