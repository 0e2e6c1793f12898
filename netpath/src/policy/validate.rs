//! The checks a namespace, pod or policy record passes, every mistake naming its
//! field (`policies[2] (x/allow-80).spec.ingress[0].from[1].ipBlock.except[0] =
//! "10.0.0.0/8": not inside cidr 10.1.0.0/16`): each record alone, then no two of a
//! kind with one (namespace, name). A bad record is left out alone (`admit_each`);
//! the rest keep working.
use std::collections::HashMap;

pub use super::checks::{Field, PolicyError};
use super::{
    checks::*,
    records::{Namespace, NetworkPolicy, ObjectMeta, PodRecord},
    resolve::resolve,
};

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
