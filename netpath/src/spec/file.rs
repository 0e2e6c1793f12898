//! The spec as a TOML file: one source of a `SpecDraft`, and the format the lab
//! writes for its agents.
use std::{
    fmt,
    path::{Path, PathBuf},
};

use serde::Deserialize;

use super::{invalid, ClusterSettings, ClusterSpec, NodeDraft, SpecDraft, SpecError};
use crate::net::Ipv4Net;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    name: String,
    underlay: String,
    pod_cidr: String,
    vtep_mac: Option<String>,
}

fn net(field: String, text: &str) -> Result<Ipv4Net, SpecError> {
    text.parse().map_err(|why: &str| invalid(field, text, why))
}

/// The nodes as written: strings, so a value that does not parse names its field.
fn nodes(raw: Vec<RawNode>) -> Result<Vec<NodeDraft>, SpecError> {
    let mut nodes = Vec::with_capacity(raw.len());
    for (i, n) in raw.into_iter().enumerate() {
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
    Ok(nodes)
}

fn parse_error(message: impl fmt::Display) -> SpecError {
    SpecError::Parse {
        path: PathBuf::from("<spec>"),
        message: message.to_string().trim().to_string(),
    }
}

impl SpecDraft {
    /// A TOML spec: the settings at the top level (`ClusterSettings`), beside
    /// `bpffs_root` and the `[[nodes]]`. Read in two steps so that a bad value names
    /// its key, which serde cannot do for a flattened struct.
    pub fn parse(text: &str) -> Result<Self, SpecError> {
        let mut top: toml::Table = toml::from_str(text).map_err(parse_error)?;
        let raw_nodes: Vec<RawNode> = match top.remove("nodes") {
            None => Vec::new(),
            Some(v) => v
                .try_into()
                .map_err(|e| parse_error(format!("nodes: {e}")))?,
        };
        let bpffs_root: Option<PathBuf> = top
            .remove("bpffs_root")
            .map(|v| v.try_into())
            .transpose()
            .map_err(|e| parse_error(format!("bpffs_root: {e}")))?;
        let services = match top.remove("services") {
            None => Vec::new(),
            Some(toml::Value::Array(list)) => list
                .into_iter()
                .enumerate()
                .map(|(i, v)| {
                    v.try_into()
                        .map_err(|e| parse_error(format!("services[{i}]: {e}")))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(parse_error(
                    "services: must be an array of tables ([[services]])",
                ))
            }
        };
        let settings: ClusterSettings = toml::Value::Table(top).try_into().map_err(parse_error)?;
        Ok(SpecDraft {
            settings,
            bpffs_root,
            nodes: nodes(raw_nodes)?,
            services,
        })
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
