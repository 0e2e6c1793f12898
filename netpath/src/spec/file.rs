//! The spec as a TOML file: one source of a `SpecDraft`, and the format the lab
//! writes for its agents.
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{
    invalid, Backend, ClusterSpec, Decap, NodeDraft, PortRange, Redirect, SpecDraft, SpecError,
    VxlanDevice,
};
use crate::net::Ipv4Net;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    cluster_cidr: String,
    #[serde(default)]
    backend: Backend,
    #[serde(default = "default_vni")]
    vni: u32,
    #[serde(default = "default_port")]
    port: u16,
    mtu: Option<u32>,
    #[serde(default)]
    redirect: Redirect,
    #[serde(default)]
    decap: Decap,
    #[serde(default)]
    vxlan_device: VxlanDevice,
    bpffs_root: Option<PathBuf>,
    #[serde(default = "yes")]
    masquerade: bool,
    #[serde(default)]
    no_masquerade: Vec<String>,
    masquerade_ports: Option<String>,
    #[serde(default)]
    nodes: Vec<RawNode>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    name: String,
    underlay: String,
    pod_cidr: String,
    vtep_mac: Option<String>,
}

fn yes() -> bool {
    true
}

fn default_vni() -> u32 {
    netpath_common::DEFAULT_VNI
}

fn default_port() -> u16 {
    netpath_common::DEFAULT_VXLAN_PORT
}

fn net(field: String, text: &str) -> Result<Ipv4Net, SpecError> {
    text.parse().map_err(|why: &str| invalid(field, text, why))
}

impl RawSpec {
    /// Strings to typed values; a value that does not parse names its field.
    fn into_draft(self) -> Result<SpecDraft, SpecError> {
        let mut nodes = Vec::with_capacity(self.nodes.len());
        for (i, n) in self.nodes.into_iter().enumerate() {
            let f = |name: &str| format!("nodes[{i}].{name}");
            let vtep_mac = match &n.vtep_mac {
                None => None,
                Some(m) => Some(
                    m.parse()
                        .map_err(|why: &str| invalid(f("vtep_mac"), m, why))?,
                ),
            };
            nodes.push(NodeDraft {
                underlay: net(f("underlay"), &n.underlay)?,
                pod_cidr: net(f("pod_cidr"), &n.pod_cidr)?,
                name: n.name,
                vtep_mac,
            });
        }
        let no_masquerade = self
            .no_masquerade
            .iter()
            .enumerate()
            .map(|(i, t)| net(format!("no_masquerade[{i}]"), t))
            .collect::<Result<Vec<_>, _>>()?;
        let masquerade_ports = match &self.masquerade_ports {
            None => PortRange::default(),
            Some(t) => t
                .parse()
                .map_err(|why: String| invalid("masquerade_ports", t, why))?,
        };
        Ok(SpecDraft {
            cluster_cidr: net("cluster_cidr".into(), &self.cluster_cidr)?,
            backend: self.backend,
            vni: self.vni,
            port: self.port,
            mtu: self.mtu,
            redirect: self.redirect,
            decap: self.decap,
            vxlan_device: self.vxlan_device,
            bpffs_root: self.bpffs_root,
            masquerade: self.masquerade,
            no_masquerade,
            masquerade_ports,
            nodes,
        })
    }
}

impl SpecDraft {
    pub fn parse(text: &str) -> Result<Self, SpecError> {
        let raw: RawSpec = toml::from_str(text).map_err(|e| SpecError::Parse {
            path: PathBuf::from("<spec>"),
            message: e.to_string().trim().to_string(),
        })?;
        raw.into_draft()
    }
}

impl ClusterSpec {
    pub fn from_file(path: &Path) -> Result<Self, SpecError> {
        let bytes = std::fs::read(path).map_err(|source| SpecError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(path, &bytes)
    }

    /// A spec file's bytes, read already; `path` names it in errors.
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self, SpecError> {
        let text = std::str::from_utf8(bytes).map_err(|e| SpecError::Parse {
            path: path.to_path_buf(),
            message: format!("not UTF-8: {e}"),
        })?;
        Self::parse(text).map_err(|e| match e {
            SpecError::Parse { message, .. } => SpecError::Parse {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<Self, SpecError> {
        SpecDraft::parse(text)?.validate()
    }

    /// The spec as a TOML document (what the lab writes for its agents).
    pub fn to_toml(&self) -> String {
        toml::to_string(&self.to_draft()).expect("a spec always serializes to TOML")
    }
}
