//! The cluster as it is kept in etcd, and how it becomes a `ClusterSpec`. Pure:
//! keys, values, subnet choice and assembly; the client is in `etcd.rs`.
//!
//! ```text
//! <prefix>/config                  ClusterConfig (JSON), written once by `netpath cluster init`
//! <prefix>/subnets/10.244.3.0-24   {"node": "node3"}            a reservation, no lease: kept across restarts
//! <prefix>/nodes/node3             NodeRecord (JSON), on the node's lease: it is alive
//! <prefix>/services/default/web     ServiceSpec (JSON): a Service, its endpoints optional
//! <prefix>/endpoints/default/web    EndpointSlice (JSON): the service's endpoints, as a
//!                                   controller keeps them (replaces the service's own)
//! ```
use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use serde::{Deserialize, Serialize};

use crate::{
    net::{CidrSet, Ipv4Net, Mac},
    spec::{
        admit_each, ClusterSettings, ClusterSpec, EndpointPort, EndpointRecord, ServiceSpec,
        SpecDraft, SpecError,
    },
};

pub const DEFAULT_PREFIX: &str = "/netpath";

/// What `netpath cluster init` writes: the cluster's settings and the length of
/// the pod CIDR each joining node reserves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    #[serde(flatten)]
    pub settings: ClusterSettings,
    /// Prefix length of every node's pod CIDR.
    pub subnet_len: u8,
}

impl ClusterConfig {
    pub fn draft(&self) -> SpecDraft {
        SpecDraft::of(self.settings.clone())
    }

    /// Checks with the spec's own rules and messages (a spec without nodes is
    /// fine here: nodes join later).
    pub fn validate(&self) -> Result<(), SpecError> {
        let cidr = self.settings.cluster_cidr;
        if !(8..=30).contains(&self.subnet_len) || self.subnet_len < cidr.prefix {
            return Err(SpecError::Invalid {
                field: "subnet_len".into(),
                value: self.subnet_len.to_string(),
                why: format!(
                    "must be from {} (the cluster CIDR's length) to 30",
                    cidr.prefix.max(8)
                ),
            });
        }
        self.settings.validate()
    }
}

/// A live node, as it publishes itself on its lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeRecord {
    pub underlay: Ipv4Net,
    pub pod_cidr: Ipv4Net,
    pub vtep_mac: Mac,
}

/// A service's endpoints kept apart from the service, as Kubernetes keeps an
/// EndpointSlice apart from its Service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSlice {
    pub endpoints: Vec<EndpointRecord>,
    #[serde(default)]
    pub ports: Vec<EndpointPort>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reservation {
    pub node: String,
}

/// The key naming a subnet: `10.244.3.0-24` (no `/` inside a key segment).
pub fn subnet_key(net: &Ipv4Net) -> String {
    format!("{}-{}", net.network(), net.prefix)
}

pub fn parse_subnet_key(k: &str) -> Option<Ipv4Net> {
    let (a, p) = k.split_once('-')?;
    let net = Ipv4Net::new(a.parse().ok()?, p.parse().ok()?);
    (net.prefix <= 32 && net.network() == net.addr).then_some(net)
}

/// Keys under one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    pub prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.trim_end_matches('/').to_string(),
        }
    }
    pub fn root(&self) -> String {
        format!("{}/", self.prefix)
    }
    pub fn config(&self) -> String {
        format!("{}/config", self.prefix)
    }
    pub fn subnets(&self) -> String {
        format!("{}/subnets/", self.prefix)
    }
    pub fn subnet(&self, net: &Ipv4Net) -> String {
        format!("{}{}", self.subnets(), subnet_key(net))
    }
    pub fn nodes(&self) -> String {
        format!("{}/nodes/", self.prefix)
    }
    pub fn node(&self, name: &str) -> String {
        format!("{}{name}", self.nodes())
    }
    pub fn services(&self) -> String {
        format!("{}/services/", self.prefix)
    }
    pub fn service(&self, namespace: &str, name: &str) -> String {
        format!("{}{namespace}/{name}", self.services())
    }
    pub fn endpoint_slices(&self) -> String {
        format!("{}/endpoints/", self.prefix)
    }
    pub fn endpoint_slice(&self, namespace: &str, name: &str) -> String {
        format!("{}{namespace}/{name}", self.endpoint_slices())
    }
}

/// `<namespace>/<name>` of a service key's tail.
fn service_name(tail: &str) -> Option<(String, String)> {
    let (ns, name) = tail.split_once('/')?;
    (!ns.is_empty() && !name.is_empty() && !name.contains('/'))
        .then(|| (ns.to_string(), name.to_string()))
}

pub use crate::spec::valid_name as valid_node_name;

/// Everything under the prefix, as read or watched, parsed leniently: a value that
/// does not parse is reported and left out, never fatal.
#[derive(Debug, Clone, Default)]
pub struct View {
    pub config: Option<ClusterConfig>,
    /// subnet → node
    pub subnets: BTreeMap<Ipv4Net, String>,
    /// node → (the record key's create revision, record)
    pub nodes: BTreeMap<String, (i64, NodeRecord)>,
    /// (namespace, name) → service, and its endpoints kept apart.
    pub services: BTreeMap<(String, String), ServiceSpec>,
    pub endpoint_slices: BTreeMap<(String, String), EndpointSlice>,
    /// Keys whose values were refused, and why (the latest per key).
    pub refused: BTreeMap<String, String>,
}

impl View {
    /// Applies one key's new value (`None`: deleted); `created` is the key's create
    /// revision (who was first, when two records clash).
    pub fn apply(&mut self, keys: &Keys, key: &str, value: Option<&[u8]>, created: i64) {
        self.refused.remove(key);
        let refuse = |v: &mut Self, why: String| {
            v.refused.insert(key.to_string(), why);
        };
        if key == keys.config() {
            match value.map(serde_json::from_slice::<ClusterConfig>) {
                None => self.config = None,
                Some(Ok(c)) => match c.validate() {
                    Ok(()) => self.config = Some(c),
                    Err(e) => refuse(self, format!("cluster config refused: {e}")),
                },
                Some(Err(e)) => refuse(self, format!("cluster config is not valid JSON: {e}")),
            }
        } else if let Some(k) = key.strip_prefix(&keys.subnets()) {
            let Some(net) = parse_subnet_key(k) else {
                return refuse(self, "not a subnet key".into());
            };
            match value.map(serde_json::from_slice::<Reservation>) {
                None => {
                    self.subnets.remove(&net);
                }
                Some(Ok(r)) if valid_node_name(&r.node) => {
                    self.subnets.insert(net, r.node);
                }
                Some(Ok(r)) => refuse(
                    self,
                    format!("reservation for invalid node name {:?}", r.node),
                ),
                Some(Err(e)) => refuse(self, format!("reservation is not valid JSON: {e}")),
            }
        } else if let Some(name) = key.strip_prefix(&keys.nodes()) {
            if !valid_node_name(name) {
                return refuse(self, "invalid node name".into());
            }
            match value.map(serde_json::from_slice::<NodeRecord>) {
                None => {
                    self.nodes.remove(name);
                }
                Some(Ok(r)) => {
                    self.nodes.insert(name.to_string(), (created, r));
                }
                Some(Err(e)) => {
                    self.nodes.remove(name);
                    refuse(self, format!("node record is not valid JSON: {e}"));
                }
            }
        } else if let Some(tail) = key.strip_prefix(&keys.services()) {
            let Some(id) = service_name(tail) else {
                return refuse(self, "not <prefix>/services/<namespace>/<name>".into());
            };
            match value.map(serde_json::from_slice::<ServiceSpec>) {
                None => {
                    self.services.remove(&id);
                }
                Some(Ok(s)) if (s.namespace.as_str(), s.name.as_str()) == (&id.0, &id.1) => {
                    self.services.insert(id, s);
                }
                Some(Ok(s)) => {
                    self.services.remove(&id);
                    refuse(
                        self,
                        format!(
                            "service record names {}/{}, not its key's",
                            s.namespace, s.name
                        ),
                    );
                }
                Some(Err(e)) => {
                    self.services.remove(&id);
                    refuse(self, format!("service record is not valid JSON: {e}"));
                }
            }
        } else if let Some(tail) = key.strip_prefix(&keys.endpoint_slices()) {
            let Some(id) = service_name(tail) else {
                return refuse(self, "not <prefix>/endpoints/<namespace>/<name>".into());
            };
            match value.map(serde_json::from_slice::<EndpointSlice>) {
                None => {
                    self.endpoint_slices.remove(&id);
                }
                Some(Ok(e)) => {
                    self.endpoint_slices.insert(id, e);
                }
                Some(Err(e)) => {
                    self.endpoint_slices.remove(&id);
                    refuse(self, format!("endpoint slice is not valid JSON: {e}"));
                }
            }
        } else {
            refuse(self, "unknown key under the prefix".into());
        }
    }

    /// The services with their endpoint slices folded in, each one checked against
    /// `spec` alone and then against those admitted before it (by name): a bad
    /// record is left out, named in the second value, and the rest kept.
    fn services_for(&self, spec: &ClusterSpec) -> (Vec<ServiceSpec>, Vec<String>) {
        let services = self.services.iter().map(|(id, s)| {
            let mut s = s.clone();
            if let Some(slice) = self.endpoint_slices.get(id) {
                s.endpoints = slice.endpoints.clone();
                s.endpoint_ports = slice.ports.clone();
            }
            s
        });
        admit_each(services.enumerate(), &spec.settings, &spec.nodes)
    }

    /// Whether a change of `key` (already applied) can change the spec: a new
    /// reservation for a node without a record cannot.
    pub fn affects_spec(&self, keys: &Keys, key: &str, put: bool) -> bool {
        let Some(k) = key.strip_prefix(&keys.subnets()) else {
            return true;
        };
        if !put {
            return true;
        }
        parse_subnet_key(k)
            .and_then(|net| self.subnets.get(&net))
            .is_none_or(|node| self.nodes.contains_key(node))
    }

    /// The subnet reserved for `node`, if any (the lowest, should there be several).
    pub fn reservation_of(&self, node: &str) -> Option<Ipv4Net> {
        self.subnets
            .iter()
            .find(|(_, n)| n.as_str() == node)
            .map(|(net, _)| *net)
    }

    /// The cluster as a spec: the config and every live node whose record matches
    /// its reservation; `local` (this agent's own node) is always in. Nodes that
    /// would make the spec invalid (an address or CIDR clash) are left out and
    /// named in the second value.
    pub fn spec(
        &self,
        local: Option<(&str, &NodeRecord)>,
    ) -> Result<(ClusterSpec, Vec<String>), SpecError> {
        let config = self.config.as_ref().ok_or_else(|| SpecError::Invalid {
            field: "config".into(),
            value: String::new(),
            why: "the cluster is not initialized: run `netpath cluster init`".into(),
        })?;
        let mut left_out = Vec::new();
        let mut candidates: Vec<(i64, &str, &NodeRecord)> = Vec::new();
        for (name, (created, rec)) in &self.nodes {
            if local.is_some_and(|(l, _)| l == name) {
                continue;
            }
            match self.subnets.get(&rec.pod_cidr) {
                Some(owner) if owner == name => candidates.push((*created, name, rec)),
                Some(owner) => left_out.push(format!(
                    "node {name}: claims {} reserved by {owner}",
                    rec.pod_cidr
                )),
                None => left_out.push(format!(
                    "node {name}: claims {} without a reservation",
                    rec.pod_cidr
                )),
            }
        }
        candidates.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        let candidates: Vec<(&str, &NodeRecord)> =
            candidates.into_iter().map(|(_, n, r)| (n, r)).collect();
        let (spec, refused) = assemble(config, local, candidates)?;
        left_out.extend(refused);
        let (services, refused) = self.services_for(&spec);
        left_out.extend(refused);
        let mut d = spec.to_draft();
        d.services = services;
        d.validate().map(|s| (s, left_out))
    }
}

/// The spec of a cluster config and its nodes: `local` (the agent's own node) always
/// in, `candidates` admitted in the order given while the spec stays valid (the
/// node that held an address first keeps it); those left out are named.
pub fn assemble(
    config: &ClusterConfig,
    local: Option<(&str, &NodeRecord)>,
    candidates: Vec<(&str, &NodeRecord)>,
) -> Result<(ClusterSpec, Vec<String>), SpecError> {
    let draft = |nodes: &[(&str, &NodeRecord)]| {
        let mut d = config.draft();
        for (name, r) in local.into_iter().chain(nodes.iter().copied()) {
            d = d.node(name, r.underlay, r.pod_cidr);
            d.nodes.last_mut().expect("just added").vtep_mac = Some(r.vtep_mac);
        }
        d
    };
    if let Ok(spec) = draft(&candidates).validate() {
        return Ok((spec, Vec::new()));
    }
    let mut admitted: Vec<(&str, &NodeRecord)> = Vec::new();
    let mut left_out = Vec::new();
    for c in candidates {
        admitted.push(c);
        if let Err(e) = draft(&admitted).validate() {
            admitted.pop();
            left_out.push(format!("node {}: {e}", c.0));
        }
    }
    Ok((draft(&admitted).validate()?, left_out))
}

/// The first free subnet of `len` bits in `cluster`, skipping the cluster's first
/// (10.244.0.0/24 stays free, as in flannel's layout).
pub fn pick_subnet(cluster: Ipv4Net, len: u8, taken: &BTreeSet<Ipv4Net>) -> Option<Ipv4Net> {
    free_subnets(cluster, len, taken, 1).into_iter().next()
}

/// The cluster's subnets of `len` bits, by index (1 ..= slots: the first one stays
/// free, as in flannel's layout); None when `len` does not fit the cluster.
fn subnets(cluster: Ipv4Net, len: u8) -> Option<(u64, impl Fn(u64) -> Ipv4Net)> {
    if len < cluster.prefix || len > 30 {
        return None;
    }
    let slots = (1u64 << (len - cluster.prefix)) - 1;
    let step = 1u64 << (32 - len);
    let base = u64::from(u32::from(cluster.network()));
    Some((slots, move |i: u64| {
        Ipv4Net::new(Ipv4Addr::from((base + i * step) as u32), len)
    }))
}

/// Up to `limit` free subnets, in address order.
pub fn free_subnets(
    cluster: Ipv4Net,
    len: u8,
    taken: &BTreeSet<Ipv4Net>,
    limit: usize,
) -> Vec<Ipv4Net> {
    let Some((slots, nth)) = subnets(cluster, len) else {
        return Vec::new();
    };
    let taken: CidrSet = taken.iter().collect();
    (1..=slots)
        .map(nth)
        .filter(|n| !taken.overlaps(n))
        .take(limit)
        .collect()
}

/// After losing a race for the first free subnet: a free one found from a start
/// chosen by node and attempt, so racing joiners spread over the whole cluster
/// range instead of colliding again (with a thousand nodes claiming at once, a
/// choice among the first 32 free subnets left each round with ~32 winners). A few
/// lookups, not a walk of the range: every member of a big cluster may claim at
/// once.
pub fn pick_subnet_after_conflict(
    cluster: Ipv4Net,
    len: u8,
    taken: &BTreeSet<Ipv4Net>,
    node: &str,
    attempt: usize,
) -> Option<Ipv4Net> {
    let (slots, nth) = subnets(cluster, len)?;
    let taken: CidrSet = taken.iter().collect();
    let start = crate::files::fnv1a(node.bytes().chain(attempt.to_le_bytes())) % slots.max(1);
    (0..slots)
        .map(|k| nth(1 + (start + k) % slots))
        .find(|n| !taken.overlaps(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    const REV: i64 = 0;

    fn keys() -> Keys {
        Keys::new("/netpath")
    }

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn config() -> Vec<u8> {
        br#"{"cluster_cidr":"10.244.0.0/16","subnet_len":24,"backend":"auto"}"#.to_vec()
    }

    fn record(ip: &str, cidr: &str) -> Vec<u8> {
        serde_json::to_vec(&NodeRecord {
            underlay: net(ip),
            pod_cidr: net(cidr),
            vtep_mac: crate::spec::derived_vtep_mac(net(ip).addr),
        })
        .unwrap()
    }

    #[test]
    fn subnets_are_picked_first_free_and_keys_round_trip() {
        let c = net("10.244.0.0/16");
        let mut taken = BTreeSet::new();
        assert_eq!(pick_subnet(c, 24, &taken), Some(net("10.244.1.0/24")));
        taken.insert(net("10.244.1.0/24"));
        taken.insert(net("10.244.2.0/23"));
        assert_eq!(pick_subnet(c, 24, &taken), Some(net("10.244.4.0/24")));
        assert_eq!(pick_subnet(net("10.0.0.0/30"), 31, &taken), None);
        // After a conflict: a free one, different per node, from the whole range.
        let spread: BTreeSet<_> = (0..20)
            .filter_map(|i| pick_subnet_after_conflict(c, 24, &taken, &format!("n{i}"), 1))
            .collect();
        assert!(spread.len() > 5, "{spread:?}");
        assert!(spread.iter().all(|n| !taken.iter().any(|t| t.overlaps(n))));
        let full: BTreeSet<_> = (1..4)
            .map(|i| net(&format!("10.9.0.{}/26", i * 64)))
            .collect();
        assert_eq!(pick_subnet(net("10.9.0.0/24"), 26, &full), None);
        assert_eq!(
            pick_subnet_after_conflict(net("10.9.0.0/24"), 26, &full, "n", 3),
            None
        );
        let one_left: BTreeSet<_> = full.iter().skip(1).copied().collect();
        assert_eq!(
            pick_subnet_after_conflict(net("10.9.0.0/24"), 26, &one_left, "n", 3),
            Some(net("10.9.0.64/26"))
        );
        let n = net("10.244.3.0/24");
        assert_eq!(parse_subnet_key(&subnet_key(&n)), Some(n));
        assert_eq!(parse_subnet_key("10.244.3.1-24"), None);
        assert_eq!(parse_subnet_key("junk"), None);
    }

    #[test]
    fn services_come_with_their_endpoint_slices_and_a_bad_one_is_left_out_alone() {
        let k = keys();
        let mut v = View::default();
        v.apply(&k, &k.config(), Some(&config()), REV);
        v.apply(
            &k,
            &k.subnet(&net("10.244.1.0/24")),
            Some(br#"{"node":"a"}"#),
            REV,
        );
        v.apply(
            &k,
            &k.node("a"),
            Some(&record("192.168.56.11/24", "10.244.1.0/24")),
            REV,
        );
        let web = br#"{"namespace":"default","name":"web","cluster_ip":"10.96.0.10",
            "ports":[{"port":80,"target_port":8080}],
            "endpoints":[{"address":"10.244.1.9"}]}"#;
        v.apply(&k, &k.service("default", "web"), Some(web), REV);
        // A VIP inside the pod CIDR: refused, named, and the rest stays.
        let bad = br#"{"namespace":"default","name":"bad","cluster_ip":"10.244.1.99",
            "ports":[{"port":80}]}"#;
        v.apply(&k, &k.service("default", "bad"), Some(bad), REV);
        // A record under another service's key.
        v.apply(&k, &k.service("default", "other"), Some(web), REV);
        assert!(v.refused[&k.service("default", "other")].contains("not its key's"));
        let slice = br#"{"endpoints":[{"address":"10.244.1.5"},{"address":"10.244.1.6","ready":false,"terminating":true}]}"#;
        v.apply(&k, &k.endpoint_slice("default", "web"), Some(slice), REV);
        v.apply(&k, &k.endpoint_slice("default", "web/x"), Some(slice), REV);
        assert!(v
            .refused
            .contains_key(&k.endpoint_slice("default", "web/x")));
        let (spec, left_out) = v.spec(None).unwrap();
        assert_eq!(spec.services.len(), 1);
        let addrs: Vec<String> = spec.services[0]
            .endpoints
            .iter()
            .map(|e| e.address.to_string())
            .collect();
        assert_eq!(
            addrs,
            ["10.244.1.5", "10.244.1.6"],
            "the slice replaces the record's own"
        );
        assert_eq!(left_out.len(), 1, "{left_out:?}");
        assert!(
            left_out[0].contains("service default/bad")
                && left_out[0].contains("cluster_ip = \"10.244.1.99\""),
            "{left_out:?}"
        );
        v.apply(&k, &k.service("default", "web"), None, REV);
        assert!(v.spec(None).unwrap().0.services.is_empty());
    }

    #[test]
    fn a_view_becomes_a_spec_and_bad_values_are_left_out() {
        let k = keys();
        let mut v = View::default();
        assert!(v.spec(None).is_err(), "no config yet");
        v.apply(&k, &k.config(), Some(&config()), REV);
        for (n, cidr) in [
            ("node1", "10.244.1.0/24"),
            ("node2", "10.244.2.0/24"),
            ("evil", "10.244.9.0/24"),
        ] {
            v.apply(
                &k,
                &k.subnet(&net(cidr)),
                Some(format!(r#"{{"node":"{n}"}}"#).as_bytes()),
                REV,
            );
        }
        v.apply(
            &k,
            &k.node("node1"),
            Some(&record("192.168.56.11/24", "10.244.1.0/24")),
            5,
        );
        v.apply(
            &k,
            &k.node("node2"),
            Some(&record("192.168.56.12/24", "10.244.2.0/24")),
            6,
        );
        // Claims node1's CIDR: refused. Same underlay as node1, but later: refused,
        // although its name sorts first.
        v.apply(
            &k,
            &k.node("thief"),
            Some(&record("192.168.56.13/24", "10.244.1.0/24")),
            7,
        );
        v.apply(
            &k,
            &k.node("evil"),
            Some(&record("192.168.56.11/24", "10.244.9.0/24")),
            8,
        );
        v.apply(&k, &k.node("junk"), Some(b"{not json"), REV);
        v.apply(&k, "/netpath/elsewhere", Some(b"x"), REV);
        v.apply(&k, &k.subnet(&net("10.244.7.0/24")), Some(b"[]"), REV);
        let (spec, left_out) = v.spec(None).unwrap();
        let names: Vec<_> = spec.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["node1", "node2"]);
        assert_eq!(left_out.len(), 2, "{left_out:?}");
        assert!(left_out.iter().any(|l| l.contains("thief")));
        assert!(left_out.iter().any(|l| l.contains("evil")));
        assert_eq!(v.refused.len(), 3, "{:?}", v.refused);
        assert_eq!(v.reservation_of("node2"), Some(net("10.244.2.0/24")));
        // A reservation for a node without a record changes nothing yet.
        assert!(
            !v.affects_spec(&k, &k.subnet(&net("10.244.9.0/24")), true)
                || v.nodes.contains_key("evil")
        );
        v.apply(
            &k,
            &k.subnet(&net("10.244.5.0/24")),
            Some(br#"{"node":"newcomer"}"#),
            REV,
        );
        assert!(!v.affects_spec(&k, &k.subnet(&net("10.244.5.0/24")), true));
        assert!(v.affects_spec(&k, &k.subnet(&net("10.244.5.0/24")), false));
        assert!(v.affects_spec(&k, &k.node("node2"), true));
        // A deletion takes the node out.
        v.apply(&k, &k.node("node2"), None, REV);
        assert_eq!(v.spec(None).unwrap().0.nodes.len(), 1);
        // The local node is always in, record or not.
        let me = NodeRecord {
            underlay: net("192.168.57.13/24"),
            pod_cidr: net("10.244.3.0/24"),
            vtep_mac: crate::spec::derived_vtep_mac(net("192.168.57.13/24").addr),
        };
        assert_eq!(v.spec(Some(("node3", &me))).unwrap().0.nodes.len(), 2);
    }

    #[test]
    fn an_invalid_config_is_refused_with_the_spec_message() {
        let k = keys();
        let mut v = View::default();
        v.apply(
            &k,
            &k.config(),
            Some(br#"{"cluster_cidr":"10.244.0.0/16","subnet_len":24,"vni":0}"#),
            REV,
        );
        assert!(v.config.is_none());
        assert!(v.refused[&k.config()].contains("vni"), "{:?}", v.refused);
        v.apply(
            &k,
            &k.config(),
            Some(br#"{"cluster_cidr":"10.244.0.0/16","subnet_len":12}"#),
            REV,
        );
        assert!(v.refused[&k.config()].contains("subnet_len"));
        v.apply(
            &k,
            &k.config(),
            Some(br#"{"cluster_cidr":"10.244.0.0/16","subnet_len":24,"x":1}"#),
            REV,
        );
        assert!(v.refused[&k.config()].contains("unknown field"));
    }
}
