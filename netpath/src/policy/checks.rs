//! The checks every record's fields pass, each mistake naming its field: names,
//! labels, selectors, protocols, addresses. `validate` applies them to whole
//! records, `resolve` while it reads a policy for the compiler.
use std::{fmt, net::IpAddr};

use super::records::{LabelSelector, ObjectMeta, SelectorOperator};

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

pub(crate) const DNS_LABEL: &str = "must be 1-63 of [a-z0-9-], not starting or ending with -";
pub(crate) const DNS_SUBDOMAIN: &str =
    "must be at most 253 of [a-z0-9-.], in labels that start and end with [a-z0-9]";
pub(crate) const LABEL_NAME: &str =
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
pub(crate) fn label_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// A label key: `[prefix/]name`, the prefix a DNS subdomain.
pub(crate) fn check_label_key(at: &Field, key: &str) -> Result<(), PolicyError> {
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

pub(crate) fn check_label_value(at: &Field, value: &str) -> Result<(), PolicyError> {
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

pub(crate) fn check_labels(
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

pub(crate) fn check_ip(at: &Field, ip: &str) -> Result<IpAddr, PolicyError> {
    ip.parse()
        .map_err(|_| at.err(ip, "not an IPv4 or IPv6 address"))
}
