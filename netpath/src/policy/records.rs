//! Namespaces, pods and NetworkPolicies shaped exactly like the Kubernetes objects,
//! so what `kubectl get ... -o json` prints reads unchanged (fields netpath does not
//! use, such as `status` of a policy or `managedFields`, are ignored). Values a user
//! can get wrong (ports, CIDRs, operators, protocols) are kept as written and
//! checked by `validate`, which names the field; only a value of the wrong type
//! fails to parse.
use std::{collections::BTreeMap, fmt};

use serde::{Deserialize, Serialize};

/// The label every namespace carries, set by Kubernetes to the namespace's name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl ObjectMeta {
    /// The namespace, "" when absent.
    pub fn ns(&self) -> &str {
        self.namespace.as_deref().unwrap_or("")
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Namespace {
    #[serde(default)]
    pub metadata: ObjectMeta,
}

/// A pod's labels, named ports and addresses: what policy needs of it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodRecord {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: PodSpec,
    #[serde(default)]
    pub status: PodStatus,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<Container>,
    /// A pod on the node's own network is no policy peer (as in Calico): its
    /// address is the node's.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_network: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ContainerPort>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Checked to be 1-65535 by `validate`.
    pub container_port: i64,
    #[serde(default)]
    pub protocol: PolicyProtocol,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    #[serde(default, rename = "podIP", skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<String>,
    #[serde(default, rename = "podIPs", skip_serializing_if = "Vec::is_empty")]
    pub pod_ips: Vec<PodIp>,
    /// `Succeeded` and `Failed` pods hold no address any more: no policy peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodIp {
    pub ip: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicy {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: NetworkPolicySpec,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    #[serde(default)]
    pub pod_selector: LabelSelector,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_types: Option<Vec<PolicyType>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<IngressRule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<EgressRule>,
}

impl NetworkPolicySpec {
    /// (Ingress, Egress) as Kubernetes defaults them: as listed, else Ingress, and
    /// Egress too when there are egress rules.
    pub fn directions(&self) -> (bool, bool) {
        match &self.policy_types {
            Some(t) if !t.is_empty() => (
                t.contains(&PolicyType::Ingress),
                t.contains(&PolicyType::Egress),
            ),
            _ => (true, !self.egress.is_empty()),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngressRule {
    /// Absent or empty: every source.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<Peer>,
    /// Absent or empty: every protocol and port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PolicyPort>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EgressRule {
    /// Absent or empty: every destination.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<Peer>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PolicyPort>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Peer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_block: Option<IpBlock>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpBlock {
    pub cidr: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyPort {
    /// Absent: TCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<PolicyProtocol>,
    /// A number or a container port's name; absent: every port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<IntOrString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_port: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    Int(i64),
    Str(String),
}

impl fmt::Display for IntOrString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Int(n) => write!(f, "{n}"),
            Self::Str(s) => f.write_str(s),
        }
    }
}

/// All of `matchLabels` and all of `matchExpressions` hold; empty: everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<SelectorRequirement>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SelectorRequirement {
    pub key: String,
    pub operator: SelectorOperator,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// Enumerations read any text, so that `validate` can refuse an unknown value with
/// its field's path (serde's own error would not name it).
macro_rules! open_enum {
    ($(#[$m:meta])* $t:ident { $($v:ident),+ } $(default $d:ident)?) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(from = "String", into = "String")]
        pub enum $t {
            $($v,)+
            /// Not a value Kubernetes knows: refused by `validate`.
            Unknown(String),
        }
        impl $t {
            /// The values Kubernetes knows, as it spells them.
            pub const KNOWN: &'static [&'static str] = &[$(stringify!($v)),+];
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$v => stringify!($v),)+
                    Self::Unknown(s) => s,
                }
            }
        }
        impl From<String> for $t {
            fn from(s: String) -> Self {
                match s.as_str() {
                    $(stringify!($v) => Self::$v,)+
                    _ => Self::Unknown(s),
                }
            }
        }
        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.as_str().to_string()
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        $(impl Default for $t {
            fn default() -> Self {
                Self::$d
            }
        })?
    };
}

open_enum!(SelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist
});
open_enum!(PolicyType { Ingress, Egress });
open_enum!(
    #[allow(clippy::upper_case_acronyms)]
    PolicyProtocol { TCP, UDP, SCTP } default TCP
);

impl PolicyProtocol {
    /// The IP protocol number, `None` for an unknown protocol.
    pub fn number(&self) -> Option<u8> {
        match self {
            Self::TCP => Some(6),
            Self::UDP => Some(17),
            Self::SCTP => Some(132),
            Self::Unknown(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `kubectl get networkpolicy -o json` prints, with fields netpath ignores.
    const KUBECTL: &str = r#"{
      "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
      "metadata": {"name": "allow-80", "namespace": "x", "resourceVersion": "12",
                   "managedFields": [{"manager": "kubectl"}], "uid": "u"},
      "spec": {
        "podSelector": {"matchExpressions": [{"key": "pod", "operator": "In", "values": ["a", "b"]}]},
        "ingress": [{"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"pod": "c"}}},
                              {"ipBlock": {"cidr": "10.1.0.0/16", "except": ["10.1.2.0/24"]}}],
                     "ports": [{"port": 80}, {"protocol": "UDP", "port": "serve-81-udp"},
                               {"port": 8000, "endPort": 8080, "protocol": "SCTP"}]}],
        "egress": [{}]
      },
      "status": {}
    }"#;

    #[test]
    fn kubectl_output_reads_with_defaults() {
        let p: NetworkPolicy = serde_json::from_str(KUBECTL).unwrap();
        assert_eq!(
            (p.metadata.ns(), p.metadata.name.as_str()),
            ("x", "allow-80")
        );
        assert_eq!(
            p.spec.directions(),
            (true, true),
            "egress rules imply Egress"
        );
        let rule = &p.spec.ingress[0];
        assert_eq!(
            rule.from[0].namespace_selector,
            Some(LabelSelector::default())
        );
        assert_eq!(rule.ports[0].protocol, None);
        assert_eq!(
            rule.ports[1].port,
            Some(IntOrString::Str("serve-81-udp".into()))
        );
        assert_eq!(rule.ports[2].protocol, Some(PolicyProtocol::SCTP));
        let back: NetworkPolicy =
            serde_json::from_value(serde_json::to_value(&p).unwrap()).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn policy_types_default_as_kubernetes_does() {
        let mut s = NetworkPolicySpec::default();
        assert_eq!(s.directions(), (true, false));
        s.egress.push(EgressRule::default());
        assert_eq!(s.directions(), (true, true));
        s.policy_types = Some(vec![PolicyType::Egress]);
        assert_eq!(s.directions(), (false, true));
        s.policy_types = Some(vec![]);
        assert_eq!(
            s.directions(),
            (true, true),
            "an empty list is defaulted too"
        );
    }

    #[test]
    fn pods_read_addresses_and_named_ports() {
        let p: PodRecord = serde_json::from_str(
            r#"{"metadata": {"name": "a", "namespace": "x", "labels": {"pod": "a"}},
                "spec": {"containers": [{"name": "c", "image": "i",
                         "ports": [{"name": "serve-80-tcp", "containerPort": 80}]}]},
                "status": {"podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.1.5"}, {"ip": "fd00::5"}]}}"#,
        )
        .unwrap();
        let port = &p.spec.containers[0].ports[0];
        assert_eq!(
            (port.container_port, &port.protocol),
            (80, &PolicyProtocol::TCP)
        );
        assert_eq!(p.status.pod_ip.as_deref(), Some("10.244.1.5"));
        assert_eq!(p.status.pod_ips[1].ip, "fd00::5");
        let op: SelectorOperator = serde_json::from_str(r#""Exist""#).unwrap();
        assert_eq!(op, SelectorOperator::Unknown("Exist".into()));
    }
}
