//! The pods policy can name as peers, with their labels, namespaces' labels and
//! named ports: every pod record's addresses, and this node's pods as the agent
//! bound them (a binding wins over a record's stale address).
use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
};

use super::{
    cidr::IpNet,
    records::{LabelSelector, Namespace, NetworkPolicy, PodRecord},
    selector::{namespace_labels, Labels},
};

/// A pod on this node as the agent bound it (CNI args name its record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalPod {
    pub ip: IpAddr,
    pub namespace: String,
    pub name: String,
}

/// What policy is compiled from: the records (admitted already: see
/// `admit_each`) and this node's pods.
#[derive(Debug, Clone, Copy)]
pub struct PolicyInput<'a> {
    pub namespaces: &'a [Namespace],
    pub pods: &'a [PodRecord],
    pub policies: &'a [NetworkPolicy],
    pub local: &'a [LocalPod],
}

static NO_LABELS: Labels = BTreeMap::new();

/// One address of a pod.
#[derive(Debug)]
pub(crate) struct PeerPod<'a> {
    pub addr: IpNet,
    pub namespace: &'a str,
    pub record: Option<&'a PodRecord>,
}

impl PeerPod<'_> {
    pub fn labels(&self) -> &Labels {
        self.record.map_or(&NO_LABELS, |r| &r.metadata.labels)
    }
}

pub(crate) struct World<'a> {
    /// By address.
    pub pods: Vec<PeerPod<'a>>,
    records: HashMap<(&'a str, &'a str), &'a PodRecord>,
    namespaces: HashMap<&'a str, Labels>,
}

impl<'a> World<'a> {
    pub fn new(input: &PolicyInput<'a>) -> Self {
        let mut records = HashMap::with_capacity(input.pods.len());
        let mut owners: BTreeMap<IpNet, (&'a str, &'a str)> = BTreeMap::new();
        for r in input.pods {
            let key = (r.metadata.ns(), r.metadata.name.as_str());
            records.entry(key).or_insert(r);
            for ip in addresses(r) {
                owners.entry(ip).or_insert(key);
            }
        }
        for LocalPod {
            ip,
            namespace,
            name,
        } in input.local
        {
            owners.insert(IpNet::host(*ip), (namespace, name));
        }
        let ns_records: HashMap<&str, _> = input
            .namespaces
            .iter()
            .map(|n| (n.metadata.name.as_str(), n))
            .rev()
            .collect();
        let mut namespaces = HashMap::new();
        let pods = owners
            .into_iter()
            .map(|(addr, (namespace, name))| {
                namespaces.entry(namespace).or_insert_with(|| {
                    namespace_labels(namespace, ns_records.get(namespace).copied())
                });
                PeerPod {
                    addr,
                    namespace,
                    record: records.get(&(namespace, name)).copied(),
                }
            })
            .collect();
        Self {
            pods,
            records,
            namespaces,
        }
    }

    pub fn record(&self, namespace: &str, name: &str) -> Option<&'a PodRecord> {
        self.records.get(&(namespace, name)).copied()
    }

    /// The pods a peer with these selectors names, for a policy of `own_namespace`:
    /// a pod selector alone picks from that namespace, a namespace selector alone
    /// every pod of the namespaces it matches, both together the pods matching both.
    pub fn select(
        &self,
        own_namespace: &str,
        pods: Option<&LabelSelector>,
        namespaces: Option<&LabelSelector>,
    ) -> Vec<usize> {
        (0..self.pods.len())
            .filter(|&i| {
                let p = &self.pods[i];
                let in_namespace = match namespaces {
                    None => p.namespace == own_namespace,
                    Some(sel) => sel.matches(&self.namespaces[p.namespace]),
                };
                in_namespace && pods.is_none_or(|sel| sel.matches(p.labels()))
            })
            .collect()
    }
}

/// A pod record's addresses, when it holds any: not for pods on the node's
/// network or pods that ended.
fn addresses(r: &PodRecord) -> impl Iterator<Item = IpNet> + '_ {
    let ended = matches!(r.status.phase.as_deref(), Some("Succeeded" | "Failed"));
    let holds = !r.spec.host_network && !ended;
    let texts = r
        .status
        .pod_ip
        .iter()
        .chain(r.status.pod_ips.iter().map(|p| &p.ip));
    texts
        .filter(move |_| holds)
        .filter_map(|t| t.parse().ok())
        .map(IpNet::host)
}

/// The ports a pod declares under `name` for `protocol`.
pub(crate) fn named_ports<'r>(
    record: Option<&'r PodRecord>,
    name: &'r str,
    protocol: u8,
) -> impl Iterator<Item = u16> + 'r {
    record
        .into_iter()
        .flat_map(|r| &r.spec.containers)
        .flat_map(|c| &c.ports)
        .filter(move |p| p.name.as_deref() == Some(name) && p.protocol.number() == Some(protocol))
        .filter_map(|p| u16::try_from(p.container_port).ok())
}
