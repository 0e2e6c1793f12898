//! Nodes joining and leaving a running lab through etcd, timed from the etcd
//! event to the other nodes' maps.
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use netpath::net::Ipv4Net;

use super::{Lab, LabConfig};
use crate::check;

/// How long a membership change may take to reach every other node's maps.
pub const PROPAGATION_WITHIN: Duration = Duration::from_secs(1);

impl Lab {
    /// Whether every running netpath node other than `except` routes `cidr`.
    fn everyone_routes(&self, cidr: Ipv4Net, except: usize) -> Result<bool> {
        for (i, n) in self.nodes.iter().enumerate() {
            if i == except || self.agent_pid(i).is_none() {
                continue;
            }
            let routes = n.pinned()?.routes()?;
            if !routes
                .iter()
                .any(|(net, p, _)| *net == cidr.network() && *p == cidr.prefix)
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn nobody_routes(&self, cidr: Ipv4Net, except: usize) -> Result<bool> {
        for (i, n) in self.nodes.iter().enumerate() {
            if i == except || self.agent_pid(i).is_none() {
                continue;
            }
            let routes = n.pinned()?.routes()?;
            if routes
                .iter()
                .any(|(net, p, _)| *net == cidr.network() && *p == cidr.prefix)
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Polls `cond` every 5 ms for up to `within` (and a grace of 4× that, so a
    /// slow run reports its time rather than a bare failure); returns the time taken.
    fn time_until(
        &self,
        within: Duration,
        cond: impl Fn(&Lab) -> Result<bool>,
    ) -> Result<Duration> {
        let t = Instant::now();
        while t.elapsed() < within * 4 {
            if cond(self)? {
                return Ok(t.elapsed());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        bail!("not within {:?}", within * 4)
    }

    /// A node joins (agent started, reservation made, record published) and must be
    /// routed by everyone and reachable pod to pod; then it leaves (agent stopped,
    /// `netpath node remove`) and must vanish everywhere. Returns report lines.
    pub fn check_join_and_leave(&mut self, cfg: &LabConfig) -> Result<Vec<(String, bool)>> {
        let first = self.nodes[0].spec.underlay;
        let underlay = Ipv4Net::new(first.subnet().nth(40), first.prefix);
        let j = self.join_node("node-join", underlay, 1, cfg)?;
        let cidr = self.nodes[j].spec.pod_cidr;
        let joined = self.time_until(PROPAGATION_WITHIN, |lab| lab.everyone_routes(cidr, j))?;
        let mut out = vec![(
            format!(
                "join: {cidr} routed by every node {} ms after its agent was ready",
                joined.as_millis()
            ),
            joined <= PROPAGATION_WITHIN,
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
        let gone = self.time_until(PROPAGATION_WITHIN, |lab| lab.nobody_routes(cidr, j))?;
        out.push((
            format!(
                "leave: `netpath node remove` took {} ms; {cidr} gone from every node {} ms later",
                removed.as_millis(),
                gone.as_millis()
            ),
            gone <= PROPAGATION_WITHIN,
        ));
        Ok(out)
    }
}
