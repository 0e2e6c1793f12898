//! Nodes joining and leaving a running lab through etcd, timed from the etcd
//! event to the other nodes' maps.
use std::time::{Duration, Instant};

use anyhow::Result;
use netpath::net::Ipv4Net;

use super::{Lab, LabConfig};
use crate::check;

/// How long a membership change may take to reach every other node's maps.
pub const PROPAGATION_WITHIN: Duration = Duration::from_secs(1);

impl Lab {
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

    /// A node joins (agent started, reservation made, record published) and must be
    /// routed by everyone and reachable pod to pod; then it leaves (agent stopped,
    /// `netpath node remove`) and must vanish everywhere. Returns report lines.
    pub fn check_join_and_leave(&mut self, cfg: &LabConfig) -> Result<Vec<(String, bool)>> {
        let first = self.nodes[0].spec.underlay;
        let underlay = Ipv4Net::new(first.subnet().nth(40), first.prefix);
        let j = self.join_node("node-join", underlay, 1, cfg)?;
        let cidr = self.nodes[j].spec.pod_cidr;
        let joined = self.time_per_node(PROPAGATION_WITHIN, j, |lab, i| lab.routes(i, cidr))?;
        let mut out = vec![(
            format!(
                "join: {cidr} routed by every node after its agent was ready: {}",
                report(&joined)
            ),
            within(&joined),
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
        let t = Instant::now();
        self.remove_node_from_etcd("node-join", cfg)?;
        let removed = t.elapsed();
        let gone = self.time_per_node(PROPAGATION_WITHIN, j, |lab, i| {
            lab.routes(i, cidr).map(|r| !r)
        })?;
        out.push((
            format!(
                "leave: `netpath node remove` took {} ms; {cidr} gone from every node: {}",
                removed.as_millis(),
                report(&gone)
            ),
            within(&gone),
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

fn within(times: &[(String, Option<Duration>)]) -> bool {
    times
        .iter()
        .all(|(_, d)| d.is_some_and(|d| d <= PROPAGATION_WITHIN))
}
