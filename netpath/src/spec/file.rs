//! The spec as a TOML file: one source of a `SpecDraft`, and the format the lab
//! writes for its agents.
use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
};

use serde::Deserialize;

use super::{invalid, split, ClusterSettings, ClusterSpec, NodeDraft, SpecDraft, SpecError};
use crate::net::Ipv4Net;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    name: String,
    underlay: String,
    pod_cidr: String,
    vtep_mac: Option<String>,
    wireguard_key: Option<String>,
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
        let wireguard_key = match &n.wireguard_key {
            None => None,
            Some(k) => Some(k.parse().map_err(|e: crate::wireguard::KeyError| {
                invalid(f("wireguard_key"), k, e.to_string())
            })?),
        };
        nodes.push(NodeDraft {
            underlay: net(f("underlay"), &n.underlay)?,
            pod_cidr: net(f("pod_cidr"), &n.pod_cidr)?,
            name: n.name,
            vtep_mac,
            wireguard_key,
        });
    }
    Ok(nodes)
}

/// "service NAMESPACE/NAME: " when a record that does not parse still says that much.
fn record_name(v: &toml::Value) -> String {
    let field = |k: &str| v.get(k).and_then(toml::Value::as_str);
    match (field("namespace"), field("name")) {
        (Some(ns), Some(name)) => format!("service {ns}/{name}: "),
        _ => String::new(),
    }
}

/// A parse error named by the file it is in.
fn at(path: &Path, e: SpecError) -> SpecError {
    match e {
        SpecError::Parse { message, .. } => SpecError::Parse {
            path: path.to_path_buf(),
            message,
        },
        other => other,
    }
}

pub(crate) fn parse_error(message: impl fmt::Display) -> SpecError {
    SpecError::Parse {
        path: PathBuf::from("<spec>"),
        message: message.to_string().trim().to_string(),
    }
}

impl SpecDraft {
    /// A TOML spec: the settings at the top level (`ClusterSettings`), beside
    /// `bpffs_root` and the `[[nodes]]`. Read in two steps so that a bad value names
    /// its key, which serde cannot do for a flattened struct. The record lists are
    /// parsed one entry at a time where the text allows it (see `split`).
    pub fn parse(text: &str) -> Result<Self, SpecError> {
        if let Some(cut) = split::split(text) {
            if let Some(draft) = Self::from_split(cut)? {
                return Ok(draft);
            }
        }
        Self::from_table(toml::from_str(text).map_err(parse_error)?)
    }

    /// None: the cut did not stand alone, and the whole text must be parsed.
    fn from_split(cut: split::Split<'_>) -> Result<Option<Self>, SpecError> {
        let Ok(top) = toml::from_str::<toml::Table>(&cut.rest) else {
            return Ok(None);
        };
        if cut.entries.keys().any(|l| top.contains_key(*l)) {
            return Ok(None);
        }
        let mut lists = cut.entries;
        Self::from_parts(top, |list| {
            Ok(lists.remove(list).map(|texts| {
                Box::new(texts.into_iter().map(move |t| split::entry(list, t))) as Entries<'_>
            }))
        })
    }

    /// A spec from its TOML table, parsed already.
    pub fn from_table(top: toml::Table) -> Result<Self, SpecError> {
        let mut lists = BTreeMap::new();
        let mut top = top;
        for list in split::LISTS {
            match top.remove(list) {
                None => {}
                Some(toml::Value::Array(entries)) => {
                    lists.insert(list, entries);
                }
                Some(_) => {
                    return Err(parse_error(format!(
                        "{list}: must be an array of tables ([[{list}]])"
                    )))
                }
            }
        }
        let draft = Self::from_parts(top, |list| {
            Ok(lists
                .remove(list)
                .map(|v| Box::new(v.into_iter().map(Some)) as Entries<'_>))
        })?;
        Ok(draft.expect("entries parsed with the file always stand"))
    }

    /// The spec from the table of everything but the record lists, and those lists'
    /// entries. None when an entry did not stand alone.
    fn from_parts<'a>(
        mut top: toml::Table,
        mut lists: impl FnMut(&'static str) -> Result<Option<Entries<'a>>, SpecError>,
    ) -> Result<Option<Self>, SpecError> {
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
        // Each service parsed alone: one that does not parse is named, and left out
        // by an agent that follows the file, not a reason to refuse the rest.
        let (mut services, mut unparsed) = (Vec::new(), Vec::new());
        for (i, v) in lists("services")?.into_iter().flatten().enumerate() {
            let Some(v) = v else { return Ok(None) };
            let who = record_name(&v);
            match v.try_into() {
                Ok(s) => services.push(s),
                Err(e) => unparsed.push((i, format!("{who}services[{i}]: {e}").trim().to_string())),
            }
        }
        let Some((records, unparsed_records)) = super::policies::parse(&mut lists)? else {
            return Ok(None);
        };
        let settings: ClusterSettings = toml::Value::Table(top).try_into().map_err(parse_error)?;
        Ok(Some(SpecDraft {
            settings,
            bpffs_root,
            nodes: nodes(raw_nodes)?,
            services,
            unparsed,
            namespaces: records.namespaces,
            pods: records.pods,
            policies: records.policies,
            unparsed_records,
        }))
    }
}

/// A record list's entries in file order: None for one that did not stand alone.
pub(crate) type Entries<'a> = Box<dyn Iterator<Item = Option<toml::Value>> + 'a>;

impl ClusterSpec {
    pub fn from_file(path: &Path) -> Result<Self, SpecError> {
        let bytes = std::fs::read(path).map_err(|error| SpecError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        Self::from_bytes(path, &bytes)
    }

    /// A spec file's bytes, read already; `path` names it in errors.
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self, SpecError> {
        let draft = Self::draft_from_bytes(path, bytes)?;
        draft.validate().map_err(|e| at(path, e))
    }

    /// As `from_bytes`, with bad records (services) left out and named instead of
    /// refusing the whole file: what an agent follows.
    pub fn from_bytes_admitting(
        path: &Path,
        bytes: &[u8],
    ) -> Result<(Self, Vec<String>), SpecError> {
        let draft = Self::draft_from_bytes(path, bytes)?;
        draft.validate_admitting().map_err(|e| at(path, e))
    }

    fn draft_from_bytes(path: &Path, bytes: &[u8]) -> Result<SpecDraft, SpecError> {
        let text = std::str::from_utf8(bytes).map_err(|e| SpecError::Parse {
            path: path.to_path_buf(),
            message: format!("not UTF-8: {e}"),
        })?;
        SpecDraft::parse(text).map_err(|e| at(path, e))
    }

    pub fn parse(text: &str) -> Result<Self, SpecError> {
        SpecDraft::parse(text)?.validate()
    }

    /// The spec as a TOML document (what the lab writes for its agents).
    pub fn to_toml(&self) -> String {
        toml::to_string(&self.to_draft()).expect("a spec always serializes to TOML")
    }
}
