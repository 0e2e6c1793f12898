//! The cluster as it is kept in etcd, and how it becomes a `ClusterSpec`. Pure: the
//! keys, their values, and the view of them; the client is in `member.rs`.
//!
//! ```text
//! <prefix>/config                  ClusterConfig (JSON), written once by `netpath cluster init`
//! <prefix>/subnets/10.244.3.0-24   {"node": "node3"}            a reservation, no lease: kept across restarts
//! <prefix>/nodes/node3             NodeRecord (JSON), on the node's lease: it is alive
//! <prefix>/services/default/web     ServiceSpec (JSON): a Service, its endpoints optional
//! <prefix>/endpoints/default/web    EndpointSlice (JSON): the service's endpoints, as a
//!                                   controller keeps them (replaces the service's own)
//! <prefix>/namespaces/x             Namespace, Pod and NetworkPolicy records as
//! <prefix>/pods/x/a                 `kubectl get -o json` prints them (`records.rs`)
//! <prefix>/policies/x/allow-80
//! ```
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::keys::{parse_subnet_key, Keys};
use super::records::PolicyView;
use crate::{
    net::Ipv4Net,
    spec::{admit_each, ClusterSpec, EndpointPort, EndpointRecord, ServiceSpec, SpecError},
    store::model::{assemble, valid_node_name, ClusterConfig, NodeRecord},
};

pub const DEFAULT_PREFIX: &str = "/netpath";

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

/// `<namespace>/<name>` of a service key's tail.
fn service_name(tail: &str) -> Option<(String, String)> {
    let (ns, name) = tail.split_once('/')?;
    (!ns.is_empty() && !name.is_empty() && !name.contains('/'))
        .then(|| (ns.to_string(), name.to_string()))
}

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
    /// Namespaces, pods and policies, each checked as it arrived.
    pub policy: PolicyView,
    /// Node name -> its WireGuard public key.
    pub wireguard: BTreeMap<String, crate::wireguard::PublicKey>,
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
        } else if let Some(name) = key.strip_prefix(&keys.wireguard_keys()) {
            if !valid_node_name(name) {
                return refuse(self, "invalid node name".into());
            }
            let parsed = value.map(|v| {
                std::str::from_utf8(v)
                    .map_err(|e| e.to_string())
                    .and_then(|t| t.trim().parse().map_err(|e| format!("{e}")))
            });
            match parsed {
                None => {
                    self.wireguard.remove(name);
                }
                Some(Ok(k)) => {
                    self.wireguard.insert(name.to_string(), k);
                }
                Some(Err(e)) => {
                    self.wireguard.remove(name);
                    refuse(self, format!("WireGuard key refused: {e}"));
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
        } else if let Some(done) = self.policy.apply(keys, key, value) {
            if let Err(why) = done {
                refuse(self, why);
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
        for n in &mut d.nodes {
            n.wireguard_key = self.wireguard.get(&n.name).copied();
        }
        let mut spec = d.validate()?;
        // Each record was checked alone as it arrived, and keys are unique.
        spec.policy = self.policy.records();
        Ok((spec, left_out))
    }
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
    fn a_nodes_wireguard_key_reaches_its_spec_entry_and_a_bad_one_is_refused() {
        let k = keys();
        let mut v = View::default();
        v.apply(&k, &k.config(), Some(&config()), REV);
        for (node, ip, cidr) in [
            ("a", "192.168.56.11/24", "10.244.1.0/24"),
            ("b", "192.168.56.12/24", "10.244.2.0/24"),
        ] {
            let reservation = format!(r#"{{"node":"{node}"}}"#);
            v.apply(&k, &k.subnet(&net(cidr)), Some(reservation.as_bytes()), REV);
            v.apply(&k, &k.node(node), Some(&record(ip, cidr)), REV);
        }
        let key = "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=";
        v.apply(&k, &k.wireguard_key("a"), Some(key.as_bytes()), REV);
        v.apply(&k, &k.wireguard_key("b"), Some(b"not a key"), REV);
        let (spec, _) = v.spec(None).unwrap();
        let of = |n: &str| {
            spec.nodes
                .iter()
                .find(|x| x.name == n)
                .unwrap()
                .wireguard_key
        };
        assert_eq!(of("a").map(|k| k.to_string()).as_deref(), Some(key));
        assert_eq!(of("b"), None);
        let why = &v.refused[&k.wireguard_key("b")];
        assert!(why.starts_with("WireGuard key refused"), "{why}");
        v.apply(&k, &k.wireguard_key("a"), None, REV);
        assert_eq!(v.spec(None).unwrap().0.nodes[0].wireguard_key, None);
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
