//! Typed access to one node's pinned maps.
use std::net::Ipv4Addr;

use crate::net::Ipv4Net;

use anyhow::{anyhow, Context, Result};
use aya::maps::lpm_trie::Key;
use netpath_common::{
    stats_index, Endpoint, MonitorConfig, NetAddr, Peer, Program, Reason, RedirectMode, Route,
    Settings, TcAttach,
};

pub use super::pinned::{Fill, Pinned};

/// What the per-CPU event budgets held back, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct EventLoss {
    /// Over the budget: counted, not emitted.
    pub suppressed: u64,
    /// No room in the ring buffer (no monitor reading, or one too slow).
    pub lost: u64,
}

/// A counter with its (program, reason) and the sum over CPUs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Counter {
    pub program: &'static str,
    pub reason: &'static str,
    pub drop: bool,
    pub packets: u64,
}

impl Pinned {
    pub fn monitor_config(&self) -> Result<MonitorConfig> {
        self.MONITOR.get(&0, 0).context("read MONITOR")
    }

    pub fn write_monitor_config(&mut self, c: MonitorConfig) -> Result<()> {
        self.MONITOR.set(0, c, 0).context("write MONITOR")
    }

    pub fn event_loss(&self) -> Result<EventLoss> {
        let per_cpu = self
            .MONITOR_LIMIT
            .get(&0, 0)
            .context("read MONITOR_LIMIT")?;
        Ok(per_cpu
            .iter()
            .fold(EventLoss::default(), |acc, l| EventLoss {
                suppressed: acc.suppressed + l.suppressed,
                lost: acc.lost + l.lost,
            }))
    }

    pub fn write_settings(&mut self, s: Settings) -> Result<()> {
        self.SETTINGS.set(0, s, 0).context("write settings")
    }

    pub fn settings(&self) -> Result<Settings> {
        self.SETTINGS.get(&0, 0).context("read settings")
    }

    pub fn endpoints(&self) -> Result<Vec<(Ipv4Addr, Endpoint)>> {
        let mut out = Vec::new();
        for item in self.ENDPOINTS.iter() {
            let (k, v) = item.context("read endpoint")?;
            out.push((Ipv4Addr::from(k), v));
        }
        // A hash map walked while others delete from it restarts from its first key
        // when the current one goes, so keys can come twice.
        out.sort_by_key(|(ip, _)| *ip);
        out.dedup_by_key(|(ip, _)| *ip);
        Ok(out)
    }

    pub fn insert_endpoint(&mut self, ip: Ipv4Addr, ep: Endpoint) -> Result<()> {
        self.ENDPOINTS
            .insert(ip.octets(), ep, 0)
            .with_context(|| format!("insert endpoint {ip}"))
    }

    pub fn remove_endpoint(&mut self, ip: Ipv4Addr) -> Result<Option<Endpoint>> {
        let old = self.ENDPOINTS.get(&ip.octets(), 0).ok();
        match self.ENDPOINTS.remove(&ip.octets()) {
            Ok(()) => Ok(old),
            // Removed by a concurrent DEL since it was read: gone is gone.
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("remove endpoint {ip}")),
        }
    }

    pub fn routes(&self) -> Result<Vec<(Ipv4Addr, u8, Route)>> {
        let mut out = Vec::new();
        for item in self.ROUTES.iter() {
            let (k, v) = item.context("read route")?;
            if let Some(net) = trie_net(&k) {
                out.push((net.addr, net.prefix, v));
            }
        }
        out.sort_by_key(|(ip, p, _)| (*ip, *p));
        Ok(out)
    }

    pub fn set_route(&mut self, net: Ipv4Addr, prefix: u8, route: Route) -> Result<()> {
        self.ROUTES
            .insert(&trie_key(Ipv4Net::new(net, prefix)), route, 0)
            .with_context(|| format!("insert route {net}/{prefix}"))
    }

    /// Removes a route; one already gone is removed.
    pub fn remove_route(&mut self, net: Ipv4Addr, prefix: u8) -> Result<()> {
        match self.ROUTES.remove(&trie_key(Ipv4Net::new(net, prefix))) {
            Err(e) if is_missing(&e) => Ok(()),
            r => r.with_context(|| format!("remove route {net}/{prefix}")),
        }
    }

    pub fn nodes(&self) -> Result<Vec<(Ipv4Addr, Peer)>> {
        let mut out = Vec::new();
        for item in self.NODES.iter() {
            let (k, v) = item.context("read node")?;
            out.push((Ipv4Addr::from(k), v));
        }
        // A hash map walked while others delete from it restarts from its first key
        // when the current one goes, so keys can come twice.
        out.sort_by_key(|(ip, _)| *ip);
        out.dedup_by_key(|(ip, _)| *ip);
        Ok(out)
    }

    pub fn set_node(&mut self, ip: Ipv4Addr, peer: Peer) -> Result<()> {
        self.NODES
            .insert(ip.octets(), peer, 0)
            .with_context(|| format!("insert node {ip}"))
    }

    pub fn remove_node(&mut self, ip: Ipv4Addr) -> Result<()> {
        match self.NODES.remove(&ip.octets()) {
            Err(e) if is_missing(&e) => Ok(()),
            r => r.with_context(|| format!("remove node {ip}")),
        }
    }

    pub fn nat_exempt(&self) -> Result<Vec<Ipv4Net>> {
        let mut out = Vec::new();
        for item in self.NAT_EXEMPT.iter() {
            let (k, _) = item.context("read NAT_EXEMPT")?;
            out.extend(trie_net(&k));
        }
        out.sort();
        Ok(out)
    }

    pub fn set_nat_exempt(&mut self, net: Ipv4Net) -> Result<()> {
        self.NAT_EXEMPT
            .insert(&trie_key(net), 1, 0)
            .with_context(|| format!("insert NAT exemption {net}"))
    }

    pub fn remove_nat_exempt(&mut self, net: Ipv4Net) -> Result<()> {
        match self.NAT_EXEMPT.remove(&trie_key(net)) {
            Err(e) if is_missing(&e) => Ok(()),
            r => r.with_context(|| format!("remove NAT exemption {net}")),
        }
    }

    pub fn counter(&self, program: Program, reason: Reason) -> Result<u64> {
        let values = self
            .STATS
            .get(&stats_index(program, reason), 0)
            .context("read stats")?;
        Ok(values.iter().sum())
    }

    pub fn counters(&self) -> Result<Vec<Counter>> {
        let mut out = Vec::new();
        for program in Program::ALL {
            for reason in Reason::ALL {
                out.push(Counter {
                    program: program.name(),
                    reason: reason.name(),
                    drop: reason.is_drop(),
                    packets: self.counter(program, reason)?,
                });
            }
        }
        Ok(out)
    }

    pub fn tc_attach(&self) -> Result<TcAttach> {
        let raw = self.settings()?.tc_attach;
        TcAttach::from_u32(raw).ok_or_else(|| anyhow!("bad tc attach mode {raw} in SETTINGS"))
    }

    pub fn redirect_mode(&self) -> Result<RedirectMode> {
        let raw = self.settings()?.redirect_mode;
        RedirectMode::from_u32(raw).ok_or_else(|| anyhow!("bad redirect mode {raw} in SETTINGS"))
    }
}

/// The LPM tries' key of an IPv4 prefix.
fn trie_key(net: Ipv4Net) -> Key<NetAddr> {
    Key::new(
        NetAddr::trie_bits(net.prefix as u32),
        NetAddr::v4(net.addr.octets()),
    )
}

/// The IPv4 prefix of an LPM trie key (None: another family).
fn trie_net(k: &Key<NetAddr>) -> Option<Ipv4Net> {
    let addr = k.data().as_v4()?;
    Some(Ipv4Net::new(
        Ipv4Addr::from(addr),
        NetAddr::prefix_of(k.prefix_len()) as u8,
    ))
}

/// A key that is not (or no longer) in the map.
pub(super) fn is_missing(e: &aya::maps::MapError) -> bool {
    match e {
        aya::maps::MapError::KeyNotFound => true,
        aya::maps::MapError::SyscallError(e) => e.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}
