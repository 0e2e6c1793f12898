//! Policy records under the prefix, each the JSON `kubectl get ... -o json` prints,
//! so a watcher of a real API server writes them unchanged:
//!
//! ```text
//! <prefix>/namespaces/x            Namespace
//! <prefix>/pods/x/a                Pod (labels, named ports, status.podIP)
//! <prefix>/policies/x/allow-80     NetworkPolicy
//! ```
//!
//! Read leniently, like services: a value that does not parse, names another
//! object than its key, or fails its checks is refused with the key and the field
//! named, and the rest keep working.
use std::{
    collections::BTreeMap,
    sync::{Arc, OnceLock},
};

use serde::{de::DeserializeOwned, Serialize};

use super::keys::Keys;
use crate::policy::{Namespace, NetworkPolicy, ObjectMeta, PodRecord, PolicyRecords, Record};

/// A record kept under `<prefix>/<LIST>/...`: Record::LIST names its key segment.
pub trait KeyedRecord: Record + DeserializeOwned + Serialize + Clone {
    fn meta_mut(&mut self) -> &mut ObjectMeta;
}

impl KeyedRecord for Namespace {
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl KeyedRecord for PodRecord {
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl KeyedRecord for NetworkPolicy {
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// (namespace, name); the namespace is "" for a namespace record.
pub type Id = (String, String);

impl Keys {
    /// `<prefix>/policies/`, as the other lists end.
    pub fn list_of<R: KeyedRecord>(&self) -> String {
        format!("{}/{}/", self.prefix, R::LIST)
    }

    /// Where `R`'s record `namespace/name` is kept (`namespace` unused for a
    /// namespace record).
    pub fn record_of<R: KeyedRecord>(&self, namespace: &str, name: &str) -> String {
        if R::NAMESPACED {
            format!("{}{namespace}/{name}", self.list_of::<R>())
        } else {
            format!("{}{name}", self.list_of::<R>())
        }
    }

    pub fn namespace(&self, name: &str) -> String {
        self.record_of::<Namespace>("", name)
    }
    pub fn pod(&self, namespace: &str, name: &str) -> String {
        self.record_of::<PodRecord>(namespace, name)
    }
    pub fn policy(&self, namespace: &str, name: &str) -> String {
        self.record_of::<NetworkPolicy>(namespace, name)
    }
}

/// The id a key's tail (what follows `<prefix>/<LIST>/`) names.
fn id_of<R: KeyedRecord>(tail: &str) -> Option<Id> {
    let id = if R::NAMESPACED {
        let (ns, name) = tail.split_once('/')?;
        (ns.to_string(), name.to_string())
    } else {
        (String::new(), tail.to_string())
    };
    let ok = (!R::NAMESPACED || !id.0.is_empty()) && !id.1.is_empty() && !id.1.contains('/');
    ok.then_some(id)
}

/// A key's value as a record of its kind: parsed, its namespace and name those of
/// its key (filled in where the object leaves them out), and checked.
pub fn read<R: KeyedRecord>(id: &Id, value: &[u8]) -> Result<R, String> {
    let mut r: R = serde_json::from_slice(value)
        .map_err(|e| format!("{} record is not valid JSON: {e}", R::KIND))?;
    let (ns, name) = id;
    let meta = r.meta_mut();
    if meta.name.is_empty() {
        meta.name = name.clone();
    }
    if R::NAMESPACED && meta.ns().is_empty() {
        meta.namespace = Some(ns.clone());
    }
    let named = (meta.ns(), meta.name.as_str());
    if named != (ns.as_str(), name.as_str()) {
        let named = match named {
            ("", name) => name.to_string(),
            (ns, name) => format!("{ns}/{name}"),
        };
        return Err(format!("{} record names {named}, not its key's", R::KIND));
    }
    r.check_object()
        .map_err(|e| format!("{} left out: {e}", R::KIND))?;
    Ok(r)
}

/// The namespace, pod and policy records under the prefix, each checked already.
#[derive(Debug, Clone, Default)]
pub struct PolicyView {
    pub namespaces: BTreeMap<Id, Namespace>,
    pub pods: BTreeMap<Id, PodRecord>,
    pub policies: BTreeMap<Id, NetworkPolicy>,
    /// The records as a spec holds them, built once per change: a spec is built
    /// on every watch event, and an unchanged `Arc` compares equal at once.
    built: OnceLock<Arc<PolicyRecords>>,
}

impl PolicyView {
    /// Applies `key`'s new value (`None`: deleted) when it is a policy record's
    /// key: `None` when it is not one, else whether the value was refused and why.
    pub fn apply(
        &mut self,
        keys: &Keys,
        key: &str,
        value: Option<&[u8]>,
    ) -> Option<Result<(), String>> {
        let done = apply_in(&mut self.namespaces, keys, key, value)
            .or_else(|| apply_in(&mut self.pods, keys, key, value))
            .or_else(|| apply_in(&mut self.policies, keys, key, value))?;
        self.built = OnceLock::new();
        Some(done)
    }

    pub fn records(&self) -> Arc<PolicyRecords> {
        self.built
            .get_or_init(|| {
                Arc::new(PolicyRecords {
                    namespaces: self.namespaces.values().cloned().collect(),
                    pods: self.pods.values().cloned().collect(),
                    policies: self.policies.values().cloned().collect(),
                })
            })
            .clone()
    }
}

fn apply_in<R: KeyedRecord>(
    map: &mut BTreeMap<Id, R>,
    keys: &Keys,
    key: &str,
    value: Option<&[u8]>,
) -> Option<Result<(), String>> {
    let tail = key.strip_prefix(&keys.list_of::<R>())?;
    let Some(id) = id_of::<R>(tail) else {
        let shape = if R::NAMESPACED {
            "<namespace>/<name>"
        } else {
            "<name>"
        };
        return Some(Err(format!("not <prefix>/{}/{shape}", R::LIST)));
    };
    // A bad value replaces a good one: the key no longer holds that record.
    let read = value.map(|v| read::<R>(&id, v)).transpose();
    Some(match read {
        Ok(Some(r)) => {
            map.insert(id, r);
            Ok(())
        }
        Ok(None) => {
            map.remove(&id);
            Ok(())
        }
        Err(why) => {
            map.remove(&id);
            Err(why)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::new("/netpath")
    }

    #[test]
    fn keys_name_each_kind() {
        let k = keys();
        assert_eq!(k.namespace("x"), "/netpath/namespaces/x");
        assert_eq!(k.pod("x", "a"), "/netpath/pods/x/a");
        assert_eq!(k.policy("x", "p"), "/netpath/policies/x/p");
        assert_eq!(id_of::<Namespace>("x"), Some((String::new(), "x".into())));
        assert_eq!(id_of::<Namespace>("x/y"), None);
        assert_eq!(id_of::<PodRecord>("x"), None);
        assert_eq!(id_of::<PodRecord>("/a"), None);
        assert_eq!(id_of::<PodRecord>("x/a/b"), None);
    }

    #[test]
    fn a_record_takes_its_keys_name_or_must_agree_with_it() {
        let id = ("x".to_string(), "p".to_string());
        let p: NetworkPolicy = read(&id, br#"{"spec": {}}"#).unwrap();
        assert_eq!((p.metadata.ns(), p.metadata.name.as_str()), ("x", "p"));
        let e = read::<NetworkPolicy>(&id, br#"{"metadata": {"namespace": "y", "name": "p"}}"#)
            .unwrap_err();
        assert_eq!(e, "policy record names y/p, not its key's");
        let ns: Namespace = read(&(String::new(), "x".into()), br#"{}"#).unwrap();
        assert_eq!(ns.metadata.name, "x");
        let e = read::<Namespace>(
            &(String::new(), "x".into()),
            br#"{"metadata": {"name": "z"}}"#,
        )
        .unwrap_err();
        assert_eq!(e, "namespace record names z, not its key's");
    }

    /// Through the whole view, as an agent reads the keys: into the spec, a bad
    /// record left out alone with its key and field named.
    #[test]
    fn records_reach_the_spec_and_a_bad_one_is_left_out_alone() {
        use crate::store::{etcd::View, model::NodeRecord};
        let k = keys();
        let me = NodeRecord {
            underlay: "192.168.56.11/24".parse().unwrap(),
            pod_cidr: "10.244.1.0/24".parse().unwrap(),
            vtep_mac: crate::spec::derived_vtep_mac([192, 168, 56, 11].into()),
        };
        let local = Some(("a", &me));
        let mut v = View::default();
        let put = |v: &mut View, key: &str, value: &str| {
            v.apply(&k, key, Some(value.as_bytes()), 0);
        };
        put(
            &mut v,
            &k.config(),
            r#"{"cluster_cidr":"10.244.0.0/16","subnet_len":24}"#,
        );
        put(
            &mut v,
            &k.namespace("x"),
            r#"{"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "x", "labels": {"team": "a"}, "uid": "u1"}}"#,
        );
        put(
            &mut v,
            &k.pod("x", "a"),
            r#"{"metadata": {"labels": {"pod": "a"}},
            "spec": {"containers": [{"name": "c", "image": "i",
                     "ports": [{"name": "http", "containerPort": 80}]}]},
            "status": {"podIP": "10.244.1.5"}}"#,
        );
        put(
            &mut v,
            &k.policy("x", "deny"),
            r#"{"apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy", "metadata": {"namespace": "x", "name": "deny"},
            "spec": {"podSelector": {}}}"#,
        );
        put(
            &mut v,
            &k.policy("x", "bad"),
            r#"{"spec": {"podSelector":
            {"matchExpressions": [{"key": "k", "operator": "Equal", "values": ["v"]}]}}}"#,
        );
        put(
            &mut v,
            &k.policy("x", "other"),
            r#"{"metadata": {"namespace": "x", "name": "deny"}}"#,
        );
        put(
            &mut v,
            &k.pod("x", "b"),
            r#"{"status": {"podIP": "10.244.1.300"}}"#,
        );
        put(&mut v, "/netpath/pods/x", "{}");
        put(&mut v, &k.namespace("y"), "{not json");
        let (spec, _) = v.spec(local).unwrap();
        let names = |p: &PolicyRecords| {
            let ids = |m: &[&ObjectMeta]| {
                m.iter()
                    .map(|m| format!("{}/{}", m.ns(), m.name))
                    .collect::<Vec<_>>()
            };
            (
                ids(&p.namespaces.iter().map(|r| &r.metadata).collect::<Vec<_>>()),
                ids(&p.pods.iter().map(|r| &r.metadata).collect::<Vec<_>>()),
                ids(&p.policies.iter().map(|r| &r.metadata).collect::<Vec<_>>()),
            )
        };
        assert_eq!(
            names(&spec.policy),
            (
                vec!["/x".to_string()],
                vec!["x/a".to_string()],
                vec!["x/deny".to_string()]
            )
        );
        assert_eq!(spec.policy.namespaces[0].metadata.labels["team"], "a");
        assert_eq!(
            v.refused[&k.policy("x", "bad")],
            "policy left out: spec.podSelector.matchExpressions[0].operator = \"Equal\": \
             must be one of In, NotIn, Exists, DoesNotExist"
        );
        assert!(v.refused[&k.policy("x", "other")].contains("names x/deny, not its key's"));
        assert_eq!(
            v.refused[&k.pod("x", "b")],
            "pod left out: status.podIP = \"10.244.1.300\": not an IPv4 or IPv6 address"
        );
        assert_eq!(
            v.refused["/netpath/pods/x"],
            "not <prefix>/pods/<namespace>/<name>"
        );
        assert!(v.refused[&k.namespace("y")].starts_with("namespace record is not valid JSON"));
        assert_eq!(v.refused.len(), 5, "{:?}", v.refused);
        // Unchanged records: the same shared value, so the agent sees no change.
        let again = v.spec(local).unwrap().0;
        assert!(Arc::ptr_eq(&spec.policy, &again.policy));
        // A record changes, then goes: the spec follows; a fixed value is no longer refused.
        assert!(v.affects_spec(&k, &k.policy("x", "deny"), false));
        put(
            &mut v,
            &k.policy("x", "bad"),
            r#"{"spec": {"podSelector": {}}}"#,
        );
        assert!(!v.refused.contains_key(&k.policy("x", "bad")));
        v.apply(&k, &k.policy("x", "deny"), None, 0);
        let (spec, _) = v.spec(local).unwrap();
        assert_eq!(names(&spec.policy).2, ["x/bad"]);
        // A good record overwritten by a bad value is gone, not kept.
        put(
            &mut v,
            &k.pod("x", "a"),
            r#"{"spec": {"containers": [{"ports": [{"containerPort": 0}]}]}}"#,
        );
        assert!(v.spec(local).unwrap().0.policy.pods.is_empty());
        assert!(v.refused[&k.pod("x", "a")].contains("spec.containers[0].ports[0].containerPort"));
    }
}
