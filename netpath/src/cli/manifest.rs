//! Kubernetes manifests for `netpath apply`: YAML or JSON, one object, a `kind:
//! List` with `items`, or several YAML documents separated by `---`, as `kubectl
//! get -o yaml|json` prints them or as users write them. Every document is read and
//! checked before anything is written: one bad document refuses the whole apply,
//! each mistake named by its file, document and field.
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::kube_services;
use crate::{
    policy::{Namespace, NetworkPolicy, PodRecord, Record},
    spec::ServiceSpec,
    store::etcd::EndpointSlice,
};

/// What a manifest's document becomes.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    Namespace(Namespace),
    /// Only what policy reads of a pod: metadata, container ports, addresses.
    Pod(PodRecord),
    Policy(NetworkPolicy),
    /// A Service without endpoints: those come from EndpointSlices.
    Service(ServiceSpec),
    /// The endpoints of `service`: its EndpointSlices in the manifest, merged.
    Endpoints {
        namespace: String,
        service: String,
        slice: EndpointSlice,
    },
}

impl Object {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Namespace(_) => "Namespace",
            Self::Pod(_) => "Pod",
            Self::Policy(_) => "NetworkPolicy",
            Self::Service(_) => "Service",
            Self::Endpoints { .. } => "EndpointSlice",
        }
    }

    /// (namespace, name); "" for a namespace's namespace. Endpoints are named by
    /// their service.
    pub fn id(&self) -> (String, String) {
        let meta = |m: &crate::policy::ObjectMeta| (m.ns().to_string(), m.name.clone());
        match self {
            Self::Namespace(n) => meta(&n.metadata),
            Self::Pod(p) => meta(&p.metadata),
            Self::Policy(p) => meta(&p.metadata),
            Self::Service(s) => (s.namespace.clone(), s.name.clone()),
            Self::Endpoints {
                namespace, service, ..
            } => (namespace.clone(), service.clone()),
        }
    }

    /// `NetworkPolicy x/deny`, as messages name it.
    pub fn describe(&self) -> String {
        match self.id() {
            (ns, name) if ns.is_empty() => format!("{} {name}", self.kind()),
            (ns, name) => format!("{} {ns}/{name}", self.kind()),
        }
    }
}

/// One object and where it was written.
#[derive(Debug, Clone)]
pub struct Doc {
    /// `policy.yaml document 2`, `all.json document 1 items[3]`.
    pub at: String,
    pub object: Object,
}

/// Every object of `files`, each checked alone; all the mistakes at once.
/// `namespace` is where namespaced objects without one go (kubectl's `-n`).
pub fn read_all(files: &[impl AsRef<Path>], namespace: &str) -> Result<Vec<Doc>> {
    let mut values = Vec::new();
    for f in files {
        let path = f.as_ref();
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        values.extend(documents(&path.display().to_string(), &text)?);
    }
    check_all(values, namespace)
}

/// Named documents as objects, each checked alone; all the mistakes at once.
pub fn check_all(values: Vec<(String, Value)>, namespace: &str) -> Result<Vec<Doc>> {
    let mut docs: Vec<Doc> = Vec::new();
    let mut errors = Vec::new();
    for (at, v) in values {
        match object(v, namespace) {
            Ok(object) => docs.push(Doc { at, object }),
            Err(e) => errors.push(format!("{at}: {e}")),
        }
    }
    docs = merge_endpoints(docs, &mut errors);
    for (i, d) in docs.iter().enumerate() {
        let same = |e: &Doc| e.object.kind() == d.object.kind() && e.object.id() == d.object.id();
        if let Some(first) = docs[..i].iter().find(|e| same(e)) {
            errors.push(format!(
                "{}: {}: also in {}; give each object once",
                d.at,
                d.object.describe(),
                first.at
            ));
        }
    }
    if !errors.is_empty() {
        bail!(
            "nothing applied: {} refused:\n  {}",
            if errors.len() == 1 {
                "a document is".to_string()
            } else {
                format!("{} documents are", errors.len())
            },
            errors.join("\n  ")
        );
    }
    Ok(docs)
}

/// A file's documents, each named; a `List` spread into its items. JSON (one
/// object, or several one after another) when it starts with `{`, else YAML.
pub fn documents(file: &str, text: &str) -> Result<Vec<(String, Value)>> {
    let raw: Vec<Value> = if text.trim_start().starts_with('{') {
        serde_json::Deserializer::from_str(text)
            .into_iter::<Value>()
            .collect::<Result<_, _>>()
            .with_context(|| format!("{file}: not valid JSON"))?
    } else {
        use serde::Deserialize;
        serde_norway::Deserializer::from_str(text)
            .enumerate()
            .map(|(i, d)| {
                Value::deserialize(d).with_context(|| format!("{file} document {}", i + 1))
            })
            .collect::<Result<_>>()?
    };
    let mut out = Vec::new();
    for (i, v) in raw.into_iter().enumerate() {
        let at = format!("{file} document {}", i + 1);
        match v {
            // An empty document (a trailing `---`) holds nothing.
            Value::Null => {}
            Value::Object(ref m) if m.get("kind").and_then(Value::as_str) == Some("List") => {
                let Some(Value::Array(items)) = m.get("items") else {
                    bail!("{at}: a List without items");
                };
                for (k, item) in items.iter().enumerate() {
                    out.push((format!("{at} items[{k}]"), item.clone()));
                }
            }
            Value::Object(_) => out.push((at, v)),
            other => bail!("{at}: not an object but {other}"),
        }
    }
    Ok(out)
}

const KINDS: &[(&str, &str)] = &[
    ("Namespace", "v1"),
    ("Pod", "v1"),
    ("NetworkPolicy", "networking.k8s.io/v1"),
    ("Service", "v1"),
    ("EndpointSlice", "discovery.k8s.io/v1"),
];

/// One document as the object it describes, checked alone.
fn object(v: Value, namespace: &str) -> Result<Object, String> {
    let text = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default();
    let (kind, api) = (text("kind").to_string(), text("apiVersion").to_string());
    let who = {
        let m = |k: &str| v["metadata"].get(k).and_then(Value::as_str);
        match (m("namespace"), m("name")) {
            (Some(ns), Some(name)) => format!(" {ns}/{name}"),
            (None, Some(name)) => format!(" {name}"),
            _ => String::new(),
        }
    };
    let want = KINDS.iter().find(|(k, _)| *k == kind).map(|(_, a)| *a);
    let object = match want {
        None if kind.is_empty() => return Err("no kind: every document says its kind".into()),
        None => {
            let known: Vec<&str> = KINDS.iter().map(|(k, _)| *k).collect();
            return Err(format!(
                "kind {kind:?}{who}: not one netpath applies ({})",
                known.join(", ")
            ));
        }
        Some(a) if a != api => {
            return Err(format!(
                "{kind}{who}: apiVersion {api:?} is not one netpath reads (it reads {a})"
            ))
        }
        Some(_) => match kind.as_str() {
            "Namespace" => record(v, None).map(Object::Namespace),
            "Pod" => record(v, Some(namespace)).map(Object::Pod),
            "NetworkPolicy" => record(v, Some(namespace)).map(Object::Policy),
            "Service" => kube_services::service(v, namespace).map(Object::Service),
            _ => kube_services::endpoint_slice(v, namespace).map(|(namespace, service, slice)| {
                Object::Endpoints {
                    namespace,
                    service,
                    slice,
                }
            }),
        }
        .map_err(|e| format!("{kind}{who}: {e}"))?,
    };
    Ok(object)
}

/// A policy record, its namespace filled in (`namespace` is None for a namespace)
/// and checked, mistakes naming the field from the object's top.
fn record<R: Record + DeserializeOwned>(v: Value, namespace: Option<&str>) -> Result<R, String> {
    let mut v = v;
    if let (Some(ns), Some(meta)) = (
        namespace,
        v.get_mut("metadata").and_then(Value::as_object_mut),
    ) {
        meta.entry("namespace").or_insert_with(|| Value::from(ns));
    }
    let r: R = serde_json::from_value(v).map_err(|e| e.to_string())?;
    r.check_object().map_err(|e| e.to_string())?;
    Ok(r)
}

/// A service's slices merged into one `Endpoints` object, at the first slice's
/// place (netpath keeps one set of endpoints per service).
fn merge_endpoints(docs: Vec<Doc>, errors: &mut Vec<String>) -> Vec<Doc> {
    let mut out: Vec<Doc> = Vec::with_capacity(docs.len());
    for d in docs {
        let Object::Endpoints {
            namespace,
            service,
            slice,
        } = &d.object
        else {
            out.push(d);
            continue;
        };
        let earlier = out.iter_mut().find_map(|e| match &mut e.object {
            Object::Endpoints {
                namespace: n,
                service: s,
                slice,
            } if n == namespace && s == service => Some(slice),
            _ => None,
        });
        match earlier {
            None => out.push(d),
            Some(into) => {
                if let Err(e) = kube_services::merge_slice(into, slice) {
                    errors.push(format!("{}: {}: {e}", d.at, d.object.describe()));
                }
            }
        }
    }
    out
}

pub(super) fn is_service(o: &Object) -> bool {
    matches!(o, Object::Service(_) | Object::Endpoints { .. })
}

/// The notes of `left_out` about the services (or their endpoints) in `docs`.
pub fn services_left_out(docs: &[Doc], left_out: &[String]) -> Vec<String> {
    left_out
        .iter()
        .filter(|n| {
            docs.iter().filter(|d| is_service(&d.object)).any(|d| {
                let (ns, name) = d.object.id();
                n.starts_with(&format!("service {ns}/{name} left out"))
            })
        })
        .cloned()
        .collect()
}
