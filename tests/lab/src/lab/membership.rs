//! Nodes joining and leaving a running lab (through the spec file, etcd or gossip),
//! and the join and leave timed from the event to the other nodes' maps.
use std::{
    collections::BTreeSet,
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use netpath::{
    net::Ipv4Net,
    spec::{NodeSpec, Routing},
};

use super::{Lab, LabConfig, NodeKind};
use crate::check;

/// How long a membership change may take to reach every other node's maps.
pub const PROPAGATION_WITHIN: Duration = Duration::from_secs(1);
/// How long a stopped node may stay routed with gossip: the failure detector's
/// bound (suspected within ~1 s, declared down 2 s later; see `store::gossip`).
pub const GOSSIP_GONE_WITHIN: Duration = Duration::from_secs(8);
/// With routes by BGP a joining node is routed once its sessions are up and its
/// route passed on: BIRD's connect delay (1 s) plus the OPEN exchange and an
/// UPDATE through the router, about 1.0-1.2 s here.
pub const BGP_JOIN_WITHIN: Duration = Duration::from_secs(3);

impl Lab {
    /// Adds a netpath node to a spec-file lab: the spec gains it (every agent follows
    /// the file), then its namespace, agent and pods come up. Returns its index.
    pub fn add_spec_node(
        &mut self,
        name: &str,
        underlay: Ipv4Net,
        pod_cidr: Ipv4Net,
        pods: usize,
        cfg: &LabConfig,
    ) -> Result<usize> {
        let spec = self
            .spec
            .to_draft()
            .node(name, underlay, pod_cidr)
            .validate()?;
        let node_spec = spec.node(name)?.clone();
        let subnets: BTreeSet<Ipv4Net> = spec.nodes.iter().map(|n| n.underlay.subnet()).collect();
        let subnet = underlay.subnet();
        let subnet_index = subnets
            .iter()
            .position(|s| *s == subnet)
            .expect("the new node's subnet is among the spec's");
        if !self
            .spec
            .nodes
            .iter()
            .any(|n| n.underlay.subnet() == subnet)
        {
            bail!("{underlay} is on none of the lab's underlay subnets");
        }
        self.write_spec(&spec)?;
        self.spec = spec;
        let node = self.add_node(&node_spec, NodeKind::Netpath, subnet_index, &subnet, cfg)?;
        self.nodes.push(node);
        self.agents.push(None);
        let i = self.nodes.len() - 1;
        self.start_agent(i, cfg)?;
        self.attach_pods(i, pods)?;
        Ok(i)
    }

    /// A new netpath node joining through etcd while the lab runs: its namespace on
    /// the first underlay subnet at `underlay`, its agent, `pods` pods. Returns its index.
    pub fn join_node(
        &mut self,
        name: &str,
        underlay: Ipv4Net,
        pods: usize,
        cfg: &LabConfig,
    ) -> Result<usize> {
        let subnet = underlay.subnet();
        // The fabric's bridges are numbered by the sorted underlay subnets.
        let known: BTreeSet<Ipv4Net> = self
            .spec
            .nodes
            .iter()
            .map(|n| n.underlay.subnet())
            .collect();
        let subnet_index = known
            .iter()
            .position(|s| *s == subnet)
            .with_context(|| format!("{underlay} is on none of the lab's underlay subnets"))?;
        let placeholder = NodeSpec {
            name: name.to_string(),
            underlay,
            pod_cidr: Ipv4Net::new(Ipv4Addr::UNSPECIFIED, 32),
            vtep_mac: netpath::spec::derived_vtep_mac(underlay.addr),
            wireguard_key: None,
        };
        let node = self.add_node(&placeholder, NodeKind::Netpath, subnet_index, &subnet, cfg)?;
        self.nodes.push(node);
        self.agents.push(None);
        let i = self.nodes.len() - 1;
        self.start_agent(i, cfg)?;
        self.attach_pods(i, pods)?;
        Ok(i)
    }

    /// Whether node `i`'s maps route `cidr`.
    fn routes(&self, i: usize, cidr: Ipv4Net) -> Result<bool> {
        Ok(self.nodes[i]
            .pinned()?
            .routes()?
            .iter()
            .any(|(net, p, _)| *net == cidr.network() && *p == cidr.prefix))
    }

    /// Polls every running node other than `except` every 5 ms until each meets
    /// `cond` or `within` × 4 has passed (so a slow run reports its times rather
    /// than a bare failure). Returns each node's time, `None` for never.
    fn time_per_node(
        &self,
        within: Duration,
        except: usize,
        cond: impl Fn(&Lab, usize) -> Result<bool>,
    ) -> Result<Vec<(String, Option<Duration>)>> {
        let watched: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| i != except && self.agent_pid(i).is_some())
            .collect();
        let mut seen: Vec<Option<Duration>> = vec![None; watched.len()];
        let t = Instant::now();
        while t.elapsed() < within * 4 && seen.iter().any(Option::is_none) {
            for (k, &i) in watched.iter().enumerate() {
                if seen[k].is_none() && cond(self, i)? {
                    seen[k] = Some(t.elapsed());
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(watched
            .iter()
            .zip(seen)
            .map(|(&i, d)| (self.nodes[i].name.clone(), d))
            .collect())
    }

    /// A node joins (agent started, reservation made or claim settled, record
    /// published) and must be routed by everyone and reachable pod to pod; then it
    /// leaves (agent stopped; with etcd `netpath node remove`, with gossip the failure
    /// detector's verdict) and must vanish everywhere. Returns report lines.
    pub fn check_join_and_leave(&mut self, cfg: &LabConfig) -> Result<Vec<(String, bool)>> {
        let first = self.nodes[0].spec.underlay;
        let underlay = Ipv4Net::new(first.subnet().nth(40), first.prefix);
        let j = self.join_node("node-join", underlay, 1, cfg)?;
        let cidr = self.nodes[j].spec.pod_cidr;
        let bound = if self.spec.settings.routing == Routing::Bgp {
            BGP_JOIN_WITHIN
        } else {
            PROPAGATION_WITHIN
        };
        let joined = self.time_per_node(bound, j, |lab, i| lab.routes(i, cidr))?;
        let mut out = vec![(
            format!(
                "join: {cidr} routed by every node after its agent was ready: {}",
                report(&joined)
            ),
            within(&joined, bound),
        )];
        let (a, b) = (&self.nodes[0].pods[0], &self.nodes[j].pods[0]);
        let seen = check::tcp(a.ns.path(), b.ns.path(), b.ip);
        out.push((
            format!(
                "join: {} -> {} over TCP, source seen {:?}",
                a.ip,
                b.ip,
                seen.as_ref().ok()
            ),
            seen.as_ref().is_ok_and(|s| *s == a.ip),
        ));
        self.stop_agent(j);
        let gossip = self.gossip.is_some();
        let t = Instant::now();
        if !gossip {
            self.remove_node_from_etcd("node-join", cfg)?;
        }
        let removed = t.elapsed();
        let bound = if gossip {
            GOSSIP_GONE_WITHIN
        } else {
            PROPAGATION_WITHIN
        };
        let gone = self.time_per_node(bound, j, |lab, i| lab.routes(i, cidr).map(|r| !r))?;
        let how = if gossip {
            format!(
                "agent stopped for good, declared down (bound {} s)",
                bound.as_secs()
            )
        } else {
            format!("`netpath node remove` took {} ms", removed.as_millis())
        };
        out.push((
            format!(
                "leave: {how}; {cidr} gone from every node: {}",
                report(&gone)
            ),
            within(&gone, bound),
        ));
        Ok(out)
    }
}

fn report(times: &[(String, Option<Duration>)]) -> String {
    times
        .iter()
        .map(|(name, d)| match d {
            Some(d) => format!("{name} {} ms", d.as_millis()),
            None => format!("{name} never"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn within(times: &[(String, Option<Duration>)], bound: Duration) -> bool {
    times.iter().all(|(_, d)| d.is_some_and(|d| d <= bound))
}
