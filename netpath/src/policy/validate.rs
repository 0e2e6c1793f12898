//! The checks a namespace, pod or policy record passes, every mistake naming its
//! field (`policies[2] (x/allow-80).spec.ingress[0].from[1].ipBlock.except[0] =
//! "10.0.0.0/8": not inside cidr 10.1.0.0/16`): each record alone, then no two of a
//! kind with one (namespace, name). A bad record is left out alone (`admit_each`);
//! the rest keep working.
use std::{collections::HashMap, fmt, net::IpAddr};

use super::{
    records::{LabelSelector, Namespace, NetworkPolicy, ObjectMeta, PodRecord, SelectorOperator},
    resolve::resolve,
};

/// A record's mistake: its field, the value written there and why it is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} = {value:?}: {why}")]
pub struct PolicyError {
    pub field: String,
    pub value: String,
    pub why: String,
}

/// Where in a record a value is, as the errors print it.
#[derive(Debug, Clone)]
pub struct Field(String);

impl Field {
    /// `policies[2] (x/allow-80)`: the record by its place in its list and its name.
    pub(crate) fn record(list: &str, i: usize, meta: &ObjectMeta) -> Self {
        Self(match (meta.namespace.as_deref(), meta.name.as_str()) {
            (_, "") => format!("{list}[{i}]"),
            (Some(ns), name) if !ns.is_empty() => format!("{list}[{i}] ({ns}/{name})"),
            (_, name) => format!("{list}[{i}] ({name})"),
        })
    }

    /// The record itself, its fields named from its top (`spec.ingress[0]`): a
    /// record named by where it is kept (an etcd key, a manifest's document).
    pub(crate) fn object() -> Self {
        Self(String::new())
    }

    pub(crate) fn at(&self, name: &str) -> Self {
        match self.0.as_str() {
            "" => Self(name.to_string()),
            path => Self(format!("{path}.{name}")),
        }
    }

    pub(crate) fn nth(&self, name: &str, i: usize) -> Self {
        Self(format!("{}[{i}]", self.at(name).0))
    }

    pub(crate) fn err(&self, value: impl fmt::Display, why: impl Into<String>) -> PolicyError {
        PolicyError {
            field: self.0.clone(),
            value: value.to_string(),
            why: why.into(),
        }
    }
}

const DNS_LABEL: &str = "must be 1-63 of [a-z0-9-], not starting or ending with -";
const DNS_SUBDOMAIN: &str =
    "must be at most 253 of [a-z0-9-.], in labels that start and end with [a-z0-9]";
const LABEL_NAME: &str =
    "must be 1-63 of [A-Za-z0-9-_.], starting and ending with a letter or digit";

/// A DNS label (RFC 1123), as Kubernetes names namespaces.
pub(crate) fn dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// A DNS subdomain, as Kubernetes names pods and policies.
pub(crate) fn dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(dns_label)
}

/// The name part of a label key, or a label value when not empty.
fn label_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// A label key: `[prefix/]name`, the prefix a DNS subdomain.
fn check_label_key(at: &Field, key: &str) -> Result<(), PolicyError> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        if p.is_empty() || !dns_subdomain(p) {
            return Err(at.err(key, format!("the key's prefix {DNS_SUBDOMAIN}")));
        }
    }
    if !label_name(name) {
        return Err(at.err(key, format!("the key's name {LABEL_NAME}")));
    }
    Ok(())
}

fn check_label_value(at: &Field, value: &str) -> Result<(), PolicyError> {
    if !value.is_empty() && !label_name(value) {
        return Err(at.err(value, format!("a label value is empty or {LABEL_NAME}")));
    }
    Ok(())
}

/// An IANA service name, as a named port is: 1-15 of [a-z0-9-] with a letter, no
/// `--`.
pub(crate) fn port_name(s: &str) -> bool {
    dns_label(s) && s.len() <= 15 && s.bytes().any(|c| c.is_ascii_lowercase()) && !s.contains("--")
}

pub(crate) const PORT_NAME: &str = "a named port is 1-15 of [a-z0-9-] with a letter, no --";

fn check_labels(
    at: &Field,
    labels: &std::collections::BTreeMap<String, String>,
) -> Result<(), PolicyError> {
    for (k, v) in labels {
        check_label_key(at, k)?;
        check_label_value(&at.at(k), v)?;
    }
    Ok(())
}

pub(crate) fn check_selector(at: &Field, sel: &LabelSelector) -> Result<(), PolicyError> {
    check_labels(&at.at("matchLabels"), &sel.match_labels)?;
    for (j, e) in sel.match_expressions.iter().enumerate() {
        let at = at.nth("matchExpressions", j);
        check_label_key(&at.at("key"), &e.key)?;
        let needs_values = match &e.operator {
            SelectorOperator::In | SelectorOperator::NotIn => true,
            SelectorOperator::Exists | SelectorOperator::DoesNotExist => false,
            SelectorOperator::Unknown(op) => {
                return Err(at.at("operator").err(
                    op,
                    format!("must be one of {}", SelectorOperator::KNOWN.join(", ")),
                ))
            }
        };
        let values = at.at("values");
        match (needs_values, e.values.is_empty()) {
            (true, true) => return Err(values.err("[]", format!("{} needs values", e.operator))),
            (false, false) => {
                return Err(values.err(
                    e.values.join(","),
                    format!("{} takes no values", e.operator),
                ))
            }
            _ => {}
        }
        for (k, v) in e.values.iter().enumerate() {
            check_label_value(&at.nth("values", k), v)?;
        }
    }
    Ok(())
}

/// A record of a list the store and the spec file hold.
pub trait Record: Sized {
    /// The list's name in the spec file (`policies`).
    const LIST: &'static str;
    /// One record's kind as messages name it (`policy`).
    const KIND: &'static str;
    fn meta(&self) -> &ObjectMeta;
    /// The record alone; `at` is the record itself.
    fn check_at(&self, at: &Field) -> Result<(), PolicyError>;
    /// Namespaced kinds need a namespace.
    const NAMESPACED: bool = true;

    fn check(&self, i: usize) -> Result<(), PolicyError> {
        self.check_as(&Field::record(Self::LIST, i, self.meta()))
    }

    /// The record alone, its fields named from its top (`spec.podSelector`): what
    /// the etcd store and `netpath apply` name beside the record's key or document.
    fn check_object(&self) -> Result<(), PolicyError> {
        self.check_as(&Field::object())
    }

    fn check_as(&self, at: &Field) -> Result<(), PolicyError> {
        check_meta::<Self>(&at.at("metadata"), self.meta())?;
        self.check_at(at)
    }
}

fn check_meta<R: Record>(at: &Field, m: &ObjectMeta) -> Result<(), PolicyError> {
    let name = at.at("name");
    if m.name.is_empty() {
        return Err(name.err("", format!("a {} needs a name", R::KIND)));
    }
    let (ok, rule) = if R::NAMESPACED {
        (dns_subdomain(&m.name), DNS_SUBDOMAIN)
    } else {
        (dns_label(&m.name), DNS_LABEL)
    };
    if !ok {
        return Err(name.err(&m.name, rule));
    }
    if R::NAMESPACED && !dns_label(m.ns()) {
        let why = match m.ns() {
            "" => format!("a {} needs a namespace", R::KIND),
            _ => DNS_LABEL.to_string(),
        };
        return Err(at.at("namespace").err(m.ns(), why));
    }
    check_labels(&at.at("labels"), &m.labels)
}

impl Record for NetworkPolicy {
    const LIST: &'static str = "policies";
    const KIND: &'static str = "policy";
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn check_at(&self, at: &Field) -> Result<(), PolicyError> {
        resolve(at, self).map(drop)
    }
}

impl Record for Namespace {
    const LIST: &'static str = "namespaces";
    const KIND: &'static str = "namespace";
    const NAMESPACED: bool = false;
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn check_at(&self, _: &Field) -> Result<(), PolicyError> {
        Ok(())
    }
}

impl Record for PodRecord {
    const LIST: &'static str = "pods";
    const KIND: &'static str = "pod";
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn check_at(&self, at: &Field) -> Result<(), PolicyError> {
        let spec = at.at("spec");
        for (c, container) in self.spec.containers.iter().enumerate() {
            let container_at = spec.nth("containers", c);
            for (j, p) in container.ports.iter().enumerate() {
                let at = container_at.nth("ports", j);
                if let Some(n) = &p.name {
                    if !port_name(n) {
                        return Err(at.at("name").err(n, PORT_NAME));
                    }
                }
                if !(1..=65535).contains(&p.container_port) {
                    return Err(at
                        .at("containerPort")
                        .err(p.container_port, "must be 1-65535"));
                }
                check_protocol(&at.at("protocol"), &p.protocol)?;
            }
        }
        let status = at.at("status");
        if let Some(ip) = &self.status.pod_ip {
            check_ip(&status.at("podIP"), ip)?;
        }
        for (j, ip) in self.status.pod_ips.iter().enumerate() {
            check_ip(&status.nth("podIPs", j).at("ip"), &ip.ip)?;
        }
        Ok(())
    }
}

pub(crate) fn check_protocol(
    at: &Field,
    p: &super::records::PolicyProtocol,
) -> Result<u8, PolicyError> {
    p.number().ok_or_else(|| {
        at.err(
            p,
            format!(
                "must be one of {}",
                super::records::PolicyProtocol::KNOWN.join(", ")
            ),
        )
    })
}

fn check_ip(at: &Field, ip: &str) -> Result<IpAddr, PolicyError> {
    ip.parse()
        .map_err(|_| at.err(ip, "not an IPv4 or IPv6 address"))
}

/// Each record alone, then no (namespace, name) twice; the first mistake.
pub fn validate_all<R: Record>(records: &[R]) -> Result<(), PolicyError> {
    let mut taken = HashMap::new();
    for (i, r) in records.iter().enumerate() {
        admit(&mut taken, i, r)?;
    }
    Ok(())
}

/// The records that pass, each judged alone and against those admitted before it:
/// a bad one is left out (the second value names it and its field), the rest kept.
/// Each record comes with its index in the source (what errors name).
pub fn admit_each<R: Record>(
    records: impl IntoIterator<Item = (usize, R)>,
) -> (Vec<R>, Vec<String>) {
    let mut taken = HashMap::new();
    let (mut admitted, mut left_out) = (Vec::new(), Vec::new());
    for (i, r) in records {
        match admit(&mut taken, i, &r) {
            Ok(()) => admitted.push(r),
            Err(e) => left_out.push(format!("{} left out: {e}", R::KIND)),
        }
    }
    (admitted, left_out)
}

fn admit<R: Record>(
    taken: &mut HashMap<(String, String), usize>,
    i: usize,
    r: &R,
) -> Result<(), PolicyError> {
    r.check(i)?;
    let m = r.meta();
    let key = (m.ns().to_string(), m.name.clone());
    if let Some(j) = taken.get(&key) {
        let at = Field::record(R::LIST, i, m).at("metadata").at("name");
        return Err(at.err(&m.name, format!("duplicate of {}[{j}]", R::LIST)));
    }
    taken.insert(key, i);
    Ok(())
}
