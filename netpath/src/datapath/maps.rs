//! Typed access to one node's pinned maps.
use std::{net::Ipv4Addr, path::Path};

use crate::net::Ipv4Net;

use anyhow::{anyhow, Context, Result};
use aya::maps::{
    lpm_trie::{Key, LpmTrie},
    Array, HashMap, Map, MapData, PerCpuArray,
};
use netpath_common::{
    names, stats_index, Affinity, AffinityKey, Backend, BackendKey, Endpoint, Flow, FlowKey,
    MonitorConfig, MonitorLimit, NatKey, NatTarget, Peer, Program, Reason, RedirectMode, Route,
    Service, ServiceFlow, ServiceKey, ServiceReply, Settings, SlotKey, SockRevKey, TcAttach, Tuple,
};

/// The pinned maps of one node.
pub struct Pinned {
    endpoints: HashMap<MapData, [u8; 4], Endpoint>,
    routes: LpmTrie<MapData, [u8; 4], Route>,
    nodes: HashMap<MapData, [u8; 4], Peer>,
    stats: PerCpuArray<MapData, u64>,
    settings: Array<MapData, Settings>,
    pub(super) nat_out: HashMap<MapData, FlowKey, Flow>,
    pub(super) nat_in: HashMap<MapData, NatKey, NatTarget>,
    nat_exempt: LpmTrie<MapData, [u8; 4], u32>,
    monitor: Array<MapData, MonitorConfig>,
    monitor_limit: PerCpuArray<MapData, MonitorLimit>,
    pub(super) services: HashMap<MapData, ServiceKey, Service>,
    pub(super) svc_slots: HashMap<MapData, SlotKey, Backend>,
    pub(super) svc_backends: HashMap<MapData, BackendKey, u32>,
    pub(super) svc_flows: HashMap<MapData, Tuple, ServiceFlow>,
    pub(super) svc_rev: HashMap<MapData, Tuple, ServiceReply>,
    pub(super) svc_affinity: HashMap<MapData, AffinityKey, Affinity>,
    sock_rev: HashMap<MapData, SockRevKey, Backend>,
    pod_netns: HashMap<MapData, u64, [u8; 4]>,
}

/// What the per-CPU event budgets held back, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct EventLoss {
    /// Over the budget: counted, not emitted.
    pub suppressed: u64,
    /// No room in the ring buffer (no monitor reading, or one too slow).
    pub lost: u64,
}

/// One map's fill: entries in use (None for the ring buffer, whose capacity is in
/// bytes) against the most it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Fill {
    pub name: &'static str,
    pub entries: Option<usize>,
    pub capacity: u32,
}

/// A counter with its (program, reason) and the sum over CPUs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Counter {
    pub program: &'static str,
    pub reason: &'static str,
    pub drop: bool,
    pub packets: u64,
}

fn open_map(dir: &Path, name: &str) -> Result<Map> {
    let path = dir.join(name);
    let data = MapData::from_pin(&path).with_context(|| {
        format!(
            "open pinned map {} (is the agent running for this node?)",
            path.display()
        )
    })?;
    Map::from_map_data(data).with_context(|| format!("map {}", path.display()))
}

impl Pinned {
    pub fn open(dir: &Path) -> Result<Self> {
        Ok(Self {
            endpoints: open_map(dir, names::ENDPOINTS)?.try_into()?,
            routes: open_map(dir, names::ROUTES)?.try_into()?,
            nodes: open_map(dir, names::NODES)?.try_into()?,
            stats: open_map(dir, names::STATS)?.try_into()?,
            settings: open_map(dir, names::SETTINGS)?.try_into()?,
            nat_out: open_map(dir, names::NAT_OUT)?.try_into()?,
            nat_in: open_map(dir, names::NAT_IN)?.try_into()?,
            nat_exempt: open_map(dir, names::NAT_EXEMPT)?.try_into()?,
            monitor: open_map(dir, names::MONITOR)?.try_into()?,
            monitor_limit: open_map(dir, names::MONITOR_LIMIT)?.try_into()?,
            services: open_map(dir, names::SERVICES)?.try_into()?,
            svc_slots: open_map(dir, names::SVC_SLOTS)?.try_into()?,
            svc_backends: open_map(dir, names::SVC_BACKENDS)?.try_into()?,
            svc_flows: open_map(dir, names::SVC_FLOWS)?.try_into()?,
            svc_rev: open_map(dir, names::SVC_REV)?.try_into()?,
            svc_affinity: open_map(dir, names::SVC_AFFINITY)?.try_into()?,
            sock_rev: open_map(dir, names::SOCK_REV)?.try_into()?,
            pod_netns: open_map(dir, names::POD_NETNS)?.try_into()?,
        })
    }

    /// Every map's fill. Hash maps and tries are walked key by key (a scrape of a
    /// 100 000-route node walks 100 000 keys); arrays are always full.
    pub fn fill(&self, dir: &Path) -> Result<Vec<Fill>> {
        let capacity = |name: &str| -> Result<u32> {
            let path = dir.join(name);
            Ok(aya::maps::MapInfo::from_pin(&path)
                .with_context(|| format!("inspect {}", path.display()))?
                .max_entries())
        };
        let counted = [
            (
                names::ENDPOINTS,
                self.endpoints.keys().filter(|k| k.is_ok()).count(),
            ),
            (
                names::ROUTES,
                self.routes.keys().filter(|k| k.is_ok()).count(),
            ),
            (
                names::NODES,
                self.nodes.keys().filter(|k| k.is_ok()).count(),
            ),
            (
                names::NAT_OUT,
                self.nat_out.keys().filter(|k| k.is_ok()).count(),
            ),
            (
                names::NAT_IN,
                self.nat_in.keys().filter(|k| k.is_ok()).count(),
            ),
            (
                names::NAT_EXEMPT,
                self.nat_exempt.keys().filter(|k| k.is_ok()).count(),
            ),
            (
                names::SERVICES,
                self.services.keys().filter(|k| k.is_ok()).count(),
            ),
            (
                names::SVC_SLOTS,
                self.svc_slots.keys().filter(|k| k.is_ok()).count(),
            ),
            (
                names::SVC_BACKENDS,
                self.svc_backends.keys().filter(|k| k.is_ok()).count(),
            ),
            (
                names::SVC_FLOWS,
                self.svc_flows.keys().filter(|k| k.is_ok()).count(),
            ),
            (
                names::SVC_REV,
                self.svc_rev.keys().filter(|k| k.is_ok()).count(),
            ),
            (
                names::SVC_AFFINITY,
                self.svc_affinity.keys().filter(|k| k.is_ok()).count(),
            ),
            (
                names::SOCK_REV,
                self.sock_rev.keys().filter(|k| k.is_ok()).count(),
            ),
            (
                names::POD_NETNS,
                self.pod_netns.keys().filter(|k| k.is_ok()).count(),
            ),
        ];
        let mut out = Vec::new();
        for (name, n) in counted {
            out.push(Fill {
                name,
                entries: Some(n),
                capacity: capacity(name)?,
            });
        }
        for name in [
            names::STATS,
            names::SETTINGS,
            names::MONITOR,
            names::MONITOR_LIMIT,
        ] {
            let c = capacity(name)?;
            out.push(Fill {
                name,
                entries: Some(c as usize),
                capacity: c,
            });
        }
        out.push(Fill {
            name: names::EVENTS,
            entries: None,
            capacity: capacity(names::EVENTS)?,
        });
        Ok(out)
    }

    pub fn monitor_config(&self) -> Result<MonitorConfig> {
        self.monitor.get(&0, 0).context("read MONITOR")
    }

    pub fn write_monitor_config(&mut self, c: MonitorConfig) -> Result<()> {
        self.monitor.set(0, c, 0).context("write MONITOR")
    }

    pub fn event_loss(&self) -> Result<EventLoss> {
        let per_cpu = self
            .monitor_limit
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
        self.settings.set(0, s, 0).context("write settings")
    }

    pub fn settings(&self) -> Result<Settings> {
        self.settings.get(&0, 0).context("read settings")
    }

    pub fn endpoints(&self) -> Result<Vec<(Ipv4Addr, Endpoint)>> {
        let mut out = Vec::new();
        for item in self.endpoints.iter() {
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
        self.endpoints
            .insert(ip.octets(), ep, 0)
            .with_context(|| format!("insert endpoint {ip}"))
    }

    pub fn remove_endpoint(&mut self, ip: Ipv4Addr) -> Result<Option<Endpoint>> {
        let old = self.endpoints.get(&ip.octets(), 0).ok();
        match self.endpoints.remove(&ip.octets()) {
            Ok(()) => Ok(old),
            // Removed by a concurrent DEL since it was read: gone is gone.
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("remove endpoint {ip}")),
        }
    }

    pub fn routes(&self) -> Result<Vec<(Ipv4Addr, u8, Route)>> {
        let mut out = Vec::new();
        for item in self.routes.iter() {
            let (k, v) = item.context("read route")?;
            out.push((Ipv4Addr::from(k.data()), k.prefix_len() as u8, v));
        }
        out.sort_by_key(|(ip, p, _)| (*ip, *p));
        Ok(out)
    }

    pub fn set_route(&mut self, net: Ipv4Addr, prefix: u8, route: Route) -> Result<()> {
        self.routes
            .insert(&Key::new(prefix as u32, net.octets()), route, 0)
            .with_context(|| format!("insert route {net}/{prefix}"))
    }

    /// Removes a route; one already gone is removed.
    pub fn remove_route(&mut self, net: Ipv4Addr, prefix: u8) -> Result<()> {
        match self.routes.remove(&Key::new(prefix as u32, net.octets())) {
            Err(e) if is_missing(&e) => Ok(()),
            r => r.with_context(|| format!("remove route {net}/{prefix}")),
        }
    }

    pub fn nodes(&self) -> Result<Vec<(Ipv4Addr, Peer)>> {
        let mut out = Vec::new();
        for item in self.nodes.iter() {
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
        self.nodes
            .insert(ip.octets(), peer, 0)
            .with_context(|| format!("insert node {ip}"))
    }

    pub fn remove_node(&mut self, ip: Ipv4Addr) -> Result<()> {
        match self.nodes.remove(&ip.octets()) {
            Err(e) if is_missing(&e) => Ok(()),
            r => r.with_context(|| format!("remove node {ip}")),
        }
    }

    pub fn nat_exempt(&self) -> Result<Vec<Ipv4Net>> {
        let mut out = Vec::new();
        for item in self.nat_exempt.iter() {
            let (k, _) = item.context("read NAT_EXEMPT")?;
            out.push(Ipv4Net::new(Ipv4Addr::from(k.data()), k.prefix_len() as u8));
        }
        out.sort();
        Ok(out)
    }

    pub fn set_nat_exempt(&mut self, net: Ipv4Net) -> Result<()> {
        self.nat_exempt
            .insert(&Key::new(net.prefix as u32, net.addr.octets()), 1, 0)
            .with_context(|| format!("insert NAT exemption {net}"))
    }

    pub fn remove_nat_exempt(&mut self, net: Ipv4Net) -> Result<()> {
        match self
            .nat_exempt
            .remove(&Key::new(net.prefix as u32, net.addr.octets()))
        {
            Err(e) if is_missing(&e) => Ok(()),
            r => r.with_context(|| format!("remove NAT exemption {net}")),
        }
    }

    pub fn counter(&self, program: Program, reason: Reason) -> Result<u64> {
        let values = self
            .stats
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

/// A key that is not (or no longer) in the map.
pub(super) fn is_missing(e: &aya::maps::MapError) -> bool {
    match e {
        aya::maps::MapError::KeyNotFound => true,
        aya::maps::MapError::SyscallError(e) => e.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}
