//! Services as the store holds them, shaped like Kubernetes' Service with its
//! EndpointSlice folded in (`endpoints`, `endpoint_ports`), so a watcher of the
//! Kubernetes API could fill the same records. `service_checks` checks them.
use std::{fmt, net::Ipv4Addr, str::FromStr};

use serde::{Deserialize, Serialize};

use super::NodeSpec;

/// Kubernetes' default `sessionAffinityConfig.clientIP.timeoutSeconds` (3 h).
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10800;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    pub namespace: String,
    pub name: String,
    #[serde(rename = "type", default)]
    pub kind: ServiceType,
    pub cluster_ip: Ipv4Addr,
    pub ports: Vec<ServicePort>,
    #[serde(default)]
    pub session_affinity: SessionAffinity,
    /// Seconds a client keeps its backend (ClientIP affinity).
    #[serde(default = "default_affinity_timeout")]
    pub affinity_timeout: u32,
    /// `Local`: pods reach only backends on their own node.
    #[serde(default)]
    pub internal_traffic_policy: TrafficPolicy,
    /// `Local`: a node port uses only this node's backends and keeps the client's
    /// address; `Cluster`: any backend, a remote one seeing the node as the client.
    #[serde(default)]
    pub external_traffic_policy: TrafficPolicy,
    /// The EndpointSlice's endpoints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<EndpointRecord>,
    /// The EndpointSlice's ports: the backend port of each service port by its
    /// name, as the slice's controller resolved a named `target_port`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoint_ports: Vec<EndpointPort>,
}

fn default_affinity_timeout() -> u32 {
    DEFAULT_AFFINITY_TIMEOUT
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServicePort {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default)]
    pub protocol: Protocol,
    pub port: u16,
    /// The backends' port: a number, or a name resolved through `endpoint_ports`;
    /// `port` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<TargetPort>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetPort {
    Number(u16),
    Name(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointRecord {
    pub address: Ipv4Addr,
    /// The node the pod runs on; derived from the pod CIDRs when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Takes new connections.
    #[serde(default = "yes")]
    pub ready: bool,
    /// Answers connections (Kubernetes: defaults to `ready`); a terminating endpoint
    /// still serving keeps its connections but gets no new ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving: Option<bool>,
    #[serde(default)]
    pub terminating: bool,
}

fn yes() -> bool {
    true
}

impl EndpointRecord {
    pub fn takes_new(&self) -> bool {
        self.ready && !self.terminating
    }
    pub fn serving(&self) -> bool {
        self.serving.unwrap_or(self.ready)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointPort {
    #[serde(default)]
    pub name: String,
    pub port: u16,
}

macro_rules! named_enum {
    ($(#[$m:meta])* $t:ident { $($v:ident = $s:literal),+ $(,)? } default $d:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "&'static str")]
        pub enum $t {
            #[default]
            $d,
            $($v),+
        }
        impl $t {
            pub fn name(self) -> &'static str {
                match self {
                    Self::$d => stringify!($d),
                    $(Self::$v => $s),+
                }
            }
        }
        impl From<$t> for &'static str {
            fn from(v: $t) -> Self {
                v.name()
            }
        }
        impl TryFrom<String> for $t {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                s.parse()
            }
        }
        impl FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    stringify!($d) => Ok(Self::$d),
                    $($s => Ok(Self::$v),)+
                    _ => Err(format!(
                        "{s:?} is not one of {}",
                        [stringify!($d), $($s),+].join(", ")
                    )),
                }
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

named_enum!(
    /// SCTP is refused: the programs translate TCP and UDP.
    Protocol { UDP = "UDP" } default TCP
);
named_enum!(ServiceType { NodePort = "NodePort" } default ClusterIP);
named_enum!(SessionAffinity { ClientIP = "ClientIP" } default None);
named_enum!(TrafficPolicy { Local = "Local" } default Cluster);

impl Protocol {
    pub fn number(self) -> u8 {
        match self {
            Self::TCP => netpath_common::IPPROTO_TCP,
            Self::UDP => netpath_common::IPPROTO_UDP,
        }
    }
}

impl ServicePort {
    /// The backends' port, `None` when a named target port has no resolution.
    pub fn backend_port(&self, endpoint_ports: &[EndpointPort]) -> Option<u16> {
        if let Some(p) = endpoint_ports.iter().find(|p| p.name == self.name) {
            return Some(p.port);
        }
        match &self.target_port {
            None => Some(self.port),
            Some(TargetPort::Number(n)) => Some(*n),
            Some(TargetPort::Name(_)) => None,
        }
    }
}

impl ServiceSpec {
    /// The node a backend runs on: as recorded, or the owner of its pod CIDR.
    pub fn endpoint_node<'a>(e: &'a EndpointRecord, nodes: &'a [NodeSpec]) -> Option<&'a str> {
        match &e.node {
            Some(n) => Some(n.as_str()),
            None => nodes
                .iter()
                .find(|n| n.pod_cidr.contains(e.address))
                .map(|n| n.name.as_str()),
        }
    }
}
