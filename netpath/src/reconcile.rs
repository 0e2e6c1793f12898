//! Desired state -> settings, maps and kernel routes, applied as a diff against what
//! is there now (read back from the pins and the kernel every time, never from
//! memory), so a restart, a spec change or a killed predecessor's leftovers all
//! converge the same way. The one writer of every map the agent owns.
use std::{collections::BTreeMap, net::Ipv4Addr};

use anyhow::Result;
use futures::StreamExt;
use netpath_common::{
    NetAddr, Peer, PolicyEndpoint, PolicyPeer, PolicyPeerKey, PolicyPortKey, Route, Settings,
    TrieKey,
};

use crate::{
    datapath::Pinned,
    net::Ipv4Net,
    netlink::{Netlink, RouteSpec, RouteSummary, PROTO_AGENT},
    nexthop::{self, Nexthop},
    plan::{Desired, ServiceTable},
    policy::PolicyMaps,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change<K, V> {
    Put(K, V),
    Remove(K),
}

/// The changes that turn `current` into `desired`.
pub fn diff<K: Ord + Clone, V: PartialEq + Clone>(
    current: &BTreeMap<K, V>,
    desired: &BTreeMap<K, V>,
) -> Vec<Change<K, V>> {
    let mut out = Vec::new();
    for (k, v) in desired {
        if current.get(k) != Some(v) {
            out.push(Change::Put(k.clone(), v.clone()));
        }
    }
    for k in current.keys() {
        if !desired.contains_key(k) {
            out.push(Change::Remove(k.clone()));
        }
    }
    out
}

/// How much an `apply` changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    pub settings: bool,
    pub map_entries: usize,
    pub kernel_routes: usize,
}

/// The kernel routes the agent owns in `table` (by protocol), keyed like `Desired`.
pub fn owned_routes(table: &[RouteSummary]) -> BTreeMap<Ipv4Net, RouteSpec> {
    table
        .iter()
        .filter(|r| r.protocol == PROTO_AGENT)
        .map(|r| {
            let spec = RouteSpec {
                dst: r.dst,
                oif: r.oif.unwrap_or(0),
                gateway: r.gateway,
                mtu: r.mtu,
                protocol: r.protocol,
            };
            (r.dst, spec)
        })
        .collect()
}

/// Writes the programs' settings if they differ; whether they did. Reconcile's
/// passes call it first, and the agent at start-up, before it changes a device
/// the old settings name.
pub fn apply_settings(pinned: &mut Pinned, want: Settings) -> Result<bool> {
    let changed = pinned.settings()? != want;
    if changed {
        pinned.write_settings(want)?;
    }
    Ok(changed)
}

/// Applies `want` to the pinned maps: the service maps, the settings (what every
/// other entry is read with), then the entries; returns whether the settings
/// changed and how many entries did.
pub fn apply_maps(pinned: &mut Pinned, want: &Desired) -> Result<(bool, usize)> {
    // Services before the settings that count them: a program that sees a front end
    // counted finds it (a removed one is refused meanwhile, as it will be).
    let services = apply_services(pinned, &want.services)?;
    // Policy entries before the revision that tells the programs to use them, and
    // the ones no longer used after it.
    let policy = policy_changes(pinned, &want.policy);
    let mut policy_n = apply_policy_puts(pinned, &policy)?;
    let settings = apply_settings(pinned, want.settings)?;
    policy_n += apply_policy_removals(pinned, policy)?;
    let routes: BTreeMap<Ipv4Net, Route> = pinned
        .routes()?
        .into_iter()
        .map(|(ip, p, r)| (Ipv4Net::new(ip, p), r))
        .collect();
    let nodes: BTreeMap<Ipv4Addr, Peer> = pinned.nodes()?.into_iter().collect();
    let (node_changes, route_changes) = (diff(&nodes, &want.nodes), diff(&routes, &want.routes));
    let exempt: BTreeMap<Ipv4Net, ()> = pinned.nat_exempt()?.into_iter().map(|n| (n, ())).collect();
    // Exemptions first, so a pod never sees its flow to a node translated.
    let exempt_changes = diff(&exempt, &want.nat_exempt);
    let n = node_changes.len() + route_changes.len() + exempt_changes.len();
    let mut progress = Progress::new("map entries", n);
    for c in &exempt_changes {
        match c {
            Change::Put(net, ()) => pinned.set_nat_exempt(*net)?,
            Change::Remove(net) => pinned.remove_nat_exempt(*net)?,
        }
        progress.step();
    }
    // Puts: nodes first (a route is only useful once its node's tunnel is accepted);
    // removals: routes first, then the nodes they pointed at.
    for c in &node_changes {
        if let Change::Put(ip, p) = c {
            pinned.set_node(*ip, *p)?;
            progress.step();
        }
    }
    for c in route_changes {
        match c {
            Change::Put(net, r) => pinned.set_route(net.addr, net.prefix, r)?,
            Change::Remove(net) => pinned.remove_route(net.addr, net.prefix)?,
        }
        progress.step();
    }
    for c in node_changes {
        if let Change::Remove(ip) = c {
            pinned.remove_node(ip)?;
            progress.step();
        }
    }
    Ok((settings, n + services + policy_n))
}

struct PolicyChanges {
    endpoints: Vec<Change<NetAddr, PolicyEndpoint>>,
    peers: Vec<Change<TrieKey<PolicyPeerKey>, PolicyPeer>>,
    ports: Vec<Change<TrieKey<PolicyPortKey>, u32>>,
}

fn policy_changes(pinned: &Pinned, want: &PolicyMaps) -> PolicyChanges {
    let have = pinned.policy_maps();
    PolicyChanges {
        endpoints: endpoint_changes(&have.endpoints, want),
        peers: diff(&have.peers, &want.peers),
        ports: diff(&have.ports, &want.ports),
    }
}

/// The pods' entries to change. A pod the CNI plugin closed at ADD (rule set 0)
/// stays closed until a pass that planned with it decides: a plan made before its ADD
/// must not open it.
fn endpoint_changes(
    have: &BTreeMap<NetAddr, PolicyEndpoint>,
    want: &PolicyMaps,
) -> Vec<Change<NetAddr, PolicyEndpoint>> {
    let mut changes = diff(have, &want.endpoints);
    changes.retain(|c| match c {
        Change::Remove(a) => have[a] != PolicyEndpoint::CLOSED || want.known.contains(a),
        Change::Put(..) => true,
    });
    changes
}

/// Ports, then peers, then the pods that use them: a rule set is whole before any
/// pod points at it.
fn apply_policy_puts(pinned: &mut Pinned, c: &PolicyChanges) -> Result<usize> {
    let mut n = 0;
    for ch in &c.ports {
        if let Change::Put(k, v) = ch {
            pinned.set_policy_port(*k, *v)?;
            n += 1;
        }
    }
    for ch in &c.peers {
        if let Change::Put(k, v) = ch {
            pinned.set_policy_peer(*k, *v)?;
            n += 1;
        }
    }
    for ch in &c.endpoints {
        match ch {
            Change::Put(k, v) => pinned.set_policy_endpoint(*k, *v)?,
            Change::Remove(k) => pinned.remove_policy_endpoint(*k)?,
        }
        n += 1;
    }
    Ok(n)
}

/// What no pod points at any more: peers, then ports.
fn apply_policy_removals(pinned: &mut Pinned, c: PolicyChanges) -> Result<usize> {
    let mut n = 0;
    for ch in c.peers {
        if let Change::Remove(k) = ch {
            pinned.remove_policy_peer(k)?;
            n += 1;
        }
    }
    for ch in c.ports {
        if let Change::Remove(k) = ch {
            pinned.remove_policy_port(k)?;
            n += 1;
        }
    }
    Ok(n)
}

/// Applies the service maps so that a program never finds a front end pointing at a
/// slot that is not filled: backends and slots are put before the front ends that
/// count them, and removed after.
pub fn apply_services(pinned: &mut Pinned, want: &ServiceTable) -> Result<usize> {
    let have = pinned.service_table();
    let backends = diff(&have.backends, &want.backends);
    let slots = diff(&have.slots, &want.slots);
    let services = diff(&have.services, &want.services);
    let n = backends.len() + slots.len() + services.len();
    for c in &backends {
        if let Change::Put(k, v) = c {
            pinned.set_backend(*k, *v)?;
        }
    }
    for c in &slots {
        if let Change::Put(k, v) = c {
            pinned.set_slot(*k, *v)?;
        }
    }
    for c in services {
        match c {
            Change::Put(k, v) => pinned.set_service(k, v)?,
            Change::Remove(k) => pinned.remove_service(k)?,
        }
    }
    for c in slots {
        if let Change::Remove(k) = c {
            pinned.remove_slot(k)?;
        }
    }
    for c in backends {
        if let Change::Remove(k) = c {
            pinned.remove_backend(k)?;
        }
    }
    Ok(n)
}

/// Says how far a long pass got every `PROGRESS_EVERY`, and at the end how long it
/// took (only when it said anything: small passes stay quiet).
struct Progress {
    what: &'static str,
    total: usize,
    done: usize,
    started: std::time::Instant,
    said: Option<std::time::Instant>,
}

impl Progress {
    fn new(what: &'static str, total: usize) -> Self {
        Self {
            what,
            total,
            done: 0,
            started: std::time::Instant::now(),
            said: None,
        }
    }

    fn step(&mut self) {
        self.done += 1;
        let last = self.said.unwrap_or(self.started);
        if last.elapsed() >= PROGRESS_EVERY {
            self.said = Some(std::time::Instant::now());
            tracing::info!("{}: {} of {} applied", self.what, self.done, self.total);
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if self.said.is_some() {
            tracing::info!(
                "{}: {} of {} applied in {:.1} s",
                self.what,
                self.done,
                self.total,
                self.started.elapsed().as_secs_f64()
            );
        }
    }
}

/// How many route requests are in flight at once: the kernel answers each in
/// microseconds, so the round trips, not the kernel, bound a large table.
const ROUTES_IN_FLIGHT: usize = 64;
/// How often a long route pass says how far it got.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// The nexthop objects `want`'s kernel routes go through: one per gateway.
fn wanted_nexthops(want: &Desired) -> BTreeMap<u32, Nexthop> {
    want.kernel_routes
        .values()
        .filter_map(|r| {
            let gw = r.gateway?;
            let nh = Nexthop {
                id: nexthop::id_of(gw),
                gateway: Some(gw),
                oif: r.oif,
                protocol: PROTO_AGENT,
            };
            Some((nh.id, nh))
        })
        .collect()
}

/// Applies `want`'s kernel routes to the main table as it was dumped (`table`):
/// nexthop objects first (see `nexthop` for why routes name them), then the routes
/// that differ, then the deletions of owned routes and objects no longer desired.
pub async fn apply_routes(nl: &Netlink, table: &[RouteSummary], want: &Desired) -> Result<usize> {
    let current = owned_routes(table);
    let mut changes = diff(&current, &want.kernel_routes);
    // Routes an older agent put with their gateway inline: the same route, but each
    // one a link in the chain every later insert walks.
    changes.extend(
        table
            .iter()
            .filter(|r| r.protocol == PROTO_AGENT && r.gateway.is_some() && r.nh_id.is_none())
            .filter_map(|r| want.kernel_routes.get(&r.dst))
            .filter(|w| current.get(&w.dst) == Some(*w))
            .map(|w| Change::Put(w.dst, *w)),
    );
    let all = nl.nexthops()?;
    let have: BTreeMap<u32, Nexthop> = all
        .iter()
        .filter(|n| n.protocol == PROTO_AGENT)
        .map(|n| (n.id, *n))
        .collect();
    let nh_changes = diff(&have, &wanted_nexthops(want));
    for c in &nh_changes {
        if let Change::Put(id, nh) = c {
            if let Some(other) = all
                .iter()
                .find(|n| n.id == *id && n.protocol != PROTO_AGENT)
            {
                anyhow::bail!(
                    "nexthop id {id} (netpath's id for gateway {:?}) is taken by protocol {}: \
                     remove it (ip nexthop del id {id})",
                    nh.gateway,
                    other.protocol
                );
            }
            nl.replace_nexthop(nh)?;
        }
    }
    let total = changes.len();
    let mut progress = Progress::new("kernel routes", total);
    let nh_ids: BTreeMap<Ipv4Net, u32> = table
        .iter()
        .filter(|r| r.protocol == PROTO_AGENT)
        .filter_map(|r| Some((r.dst, r.nh_id?)))
        .collect();
    let nh_of = |dst: Ipv4Net| nh_ids.get(&dst).copied();
    let mut results = futures::stream::iter(changes.into_iter().map(|c| async move {
        match c {
            Change::Put(_, r) => nl.replace_route_via_nexthop(&r).await,
            Change::Remove(dst) => nl.delete_route(dst, Some(PROTO_AGENT), nh_of(dst)).await,
        }
    }))
    .buffer_unordered(ROUTES_IN_FLIGHT);
    while let Some(r) = results.next().await {
        r?;
        progress.step();
    }
    drop(progress);
    for c in &nh_changes {
        if let Change::Remove(id) = c {
            nl.delete_nexthop(*id)?;
        }
    }
    Ok(total + nh_changes.len())
}

/// Applies everything `want` holds; `table` is the route table `want` was planned
/// from (dumped once per pass).
pub async fn apply(
    pinned: &mut Pinned,
    nl: &Netlink,
    table: &[RouteSummary],
    want: &Desired,
) -> Result<Applied> {
    let (settings, map_entries) = apply_maps(pinned, want)?;
    let kernel_routes = apply_routes(nl, table, want).await?;
    Ok(Applied {
        settings,
        map_entries,
        kernel_routes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_closed_at_add_opens_only_by_a_plan_that_knew_it() {
        let addr = |d| NetAddr::v4([10, 244, 1, d]);
        let selected = PolicyEndpoint {
            rule_set: 7,
            ..PolicyEndpoint::CLOSED
        };
        let have: BTreeMap<_, _> = [
            (addr(2), PolicyEndpoint::CLOSED), // planned: no policy selects it
            (addr(3), PolicyEndpoint::CLOSED), // ADD after the plan's book read
            (addr(4), selected),               // no longer selected
            (addr(5), PolicyEndpoint::CLOSED), // planned: selected
        ]
        .into();
        let want = PolicyMaps {
            endpoints: [(addr(5), selected)].into(),
            known: [addr(2), addr(4), addr(5)].into(),
            ..Default::default()
        };
        assert_eq!(
            endpoint_changes(&have, &want),
            vec![
                Change::Put(addr(5), selected),
                Change::Remove(addr(2)),
                Change::Remove(addr(4)),
            ]
        );
    }

    #[test]
    fn diff_puts_changed_and_removes_stale_entries() {
        let cur: BTreeMap<u32, &str> = [(1, "a"), (2, "b"), (3, "c")].into();
        let want: BTreeMap<u32, &str> = [(1, "a"), (2, "B"), (4, "d")].into();
        let d = diff(&cur, &want);
        assert_eq!(
            d,
            vec![Change::Put(2, "B"), Change::Put(4, "d"), Change::Remove(3)]
        );
        assert!(diff(&want, &want).is_empty());
    }
}
