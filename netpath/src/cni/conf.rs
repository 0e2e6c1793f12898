//! What the runtime hands the plugin: the environment (CNI_*) and the network
//! configuration on stdin, checked with errors that name the offending field.
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use serde_json::Value;

use super::{code, CniError, CniResult};
use crate::ipam::AttachmentId;

pub const SUPPORTED_VERSIONS: [&str; 3] = ["0.4.0", "1.0.0", "1.1.0"];
pub const LATEST: &str = "1.1.0";

/// The CNI_* environment of one invocation.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub command: Option<String>,
    pub container_id: Option<String>,
    pub netns: Option<String>,
    pub ifname: Option<String>,
    pub args: Option<String>,
}

impl Env {
    pub fn from_process() -> Self {
        let var = |k| std::env::var(k).ok().filter(|v: &String| !v.is_empty());
        Self {
            command: var("CNI_COMMAND"),
            container_id: var("CNI_CONTAINERID"),
            netns: var("CNI_NETNS"),
            ifname: var("CNI_IFNAME"),
            args: var("CNI_ARGS"),
        }
    }

    /// CNI_CONTAINERID, checked as the spec defines it: alphanumerics, `_`, `.`, `-`,
    /// starting with an alphanumeric.
    pub fn container_id(&self) -> CniResult<&str> {
        let id = self
            .container_id
            .as_deref()
            .ok_or_else(|| missing("CNI_CONTAINERID"))?;
        let ok = id.starts_with(|c: char| c.is_ascii_alphanumeric())
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !ok {
            return Err(CniError::new(
                code::BAD_ENVIRONMENT,
                format!("CNI_CONTAINERID {id:?} is not a valid container id"),
            ));
        }
        Ok(id)
    }

    pub fn ifname(&self) -> CniResult<&str> {
        let name = self
            .ifname
            .as_deref()
            .ok_or_else(|| missing("CNI_IFNAME"))?;
        if name.len() > 15 || name == "." || name == ".." || name.contains(['/', ':', ' ', '\0']) {
            return Err(CniError::new(
                code::BAD_ENVIRONMENT,
                format!("CNI_IFNAME {name:?} is not a valid interface name"),
            ));
        }
        Ok(name)
    }

    pub fn netns(&self) -> CniResult<&Path> {
        self.netns
            .as_deref()
            .map(Path::new)
            .ok_or_else(|| missing("CNI_NETNS"))
    }

    pub fn attachment(&self) -> CniResult<AttachmentId> {
        Ok(AttachmentId {
            container_id: self.container_id()?.to_string(),
            ifname: self.ifname()?.to_string(),
        })
    }

    /// CNI_ARGS: `K=V;K=V`. Kubernetes' pod keys are understood; anything else is
    /// an error unless `IgnoreUnknown=1` (or true) is among them.
    pub fn pod_args(&self) -> CniResult<PodArgs> {
        let mut out = PodArgs::default();
        let Some(raw) = self.args.as_deref() else {
            return Ok(out);
        };
        let mut unknown = Vec::new();
        let mut ignore_unknown = false;
        for pair in raw.split(';').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').ok_or_else(|| {
                CniError::new(
                    code::BAD_ENVIRONMENT,
                    format!("CNI_ARGS: {pair:?} is not KEY=VALUE"),
                )
            })?;
            match k {
                "IgnoreUnknown" => ignore_unknown = matches!(v, "1" | "true" | "True"),
                "K8S_POD_NAMESPACE" => out.namespace = Some(v.to_string()),
                "K8S_POD_NAME" => out.name = Some(v.to_string()),
                "K8S_POD_INFRA_CONTAINER_ID" | "K8S_POD_UID" => {}
                _ => unknown.push(k.to_string()),
            }
        }
        if !unknown.is_empty() && !ignore_unknown {
            return Err(CniError::new(
                code::BAD_ENVIRONMENT,
                format!(
                    "CNI_ARGS: unknown key(s) {} (add IgnoreUnknown=1 to tolerate them)",
                    unknown.join(", ")
                ),
            ));
        }
        Ok(out)
    }
}

fn missing(var: &str) -> CniError {
    CniError::new(code::BAD_ENVIRONMENT, format!("{var} is not set"))
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodArgs {
    pub namespace: Option<String>,
    pub name: Option<String>,
}

/// The network configuration, as far as this plugin reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    /// Which node's state to use; found by network namespace when absent.
    pub node: Option<String>,
    /// Where agents publish node state (default /run/netpath).
    pub state_root: PathBuf,
    /// Pod MTU below the node's (never above it: the overlay needs its headroom).
    pub mtu: Option<u32>,
    pub log_file: Option<PathBuf>,
    pub prev_result: Option<Value>,
    pub valid_attachments: Option<BTreeSet<AttachmentId>>,
}

fn invalid(field: &str, why: impl std::fmt::Display) -> CniError {
    CniError::new(
        code::INVALID_CONFIG,
        format!("invalid network configuration: {field}: {why}"),
    )
}

fn opt_str<'a>(v: &'a Value, field: &str) -> CniResult<Option<&'a str>> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(invalid(field, "must be a string")),
    }
}

/// The version the config asks for, before anything else is read (so that an error
/// about the rest can be printed in it).
pub fn version_of(v: &Value) -> Option<&str> {
    v.get("cniVersion").and_then(Value::as_str)
}

pub fn check_version(version: &str) -> CniResult<()> {
    if SUPPORTED_VERSIONS.contains(&version) {
        return Ok(());
    }
    Err(CniError::new(
        code::INCOMPATIBLE_VERSION,
        format!(
            "CNI version {version:?} is not supported; this plugin speaks {}",
            SUPPORTED_VERSIONS.join(", ")
        ),
    ))
}

/// Whether `version` has the STATUS and GC verbs.
pub fn has_status_and_gc(version: &str) -> bool {
    version == "1.1.0"
}

impl NetConf {
    pub fn parse(v: &Value) -> CniResult<Self> {
        if !v.is_object() {
            return Err(CniError::new(
                code::UNDECODABLE,
                "the network configuration must be a JSON object",
            ));
        }
        let cni_version = opt_str(v, "cniVersion")?
            .ok_or_else(|| invalid("cniVersion", "missing"))?
            .to_string();
        check_version(&cni_version)?;
        let name = opt_str(v, "name")?
            .ok_or_else(|| invalid("name", "missing"))?
            .to_string();
        if name.is_empty() {
            return Err(invalid("name", "must not be empty"));
        }
        match opt_str(v, "type")? {
            Some("netpath") | None => {}
            Some(other) => return Err(invalid("type", format!("{other:?} is not \"netpath\""))),
        }
        Ok(Self {
            cni_version,
            name,
            node: node(v)?,
            state_root: state_root(v)?,
            mtu: mtu(v)?,
            log_file: opt_str(v, "logFile")?.map(PathBuf::from),
            prev_result: prev_result(v)?,
            valid_attachments: valid_attachments(v)?,
        })
    }
}

fn node(v: &Value) -> CniResult<Option<String>> {
    let node = opt_str(v, "node")?.map(str::to_string);
    if let Some(n) = &node {
        if n.is_empty() || n.contains(['/', '\0']) || n == "." || n == ".." {
            return Err(invalid("node", format!("{n:?} is not a node name")));
        }
    }
    Ok(node)
}

fn state_root(v: &Value) -> CniResult<PathBuf> {
    let state_root = opt_str(v, "stateRoot")?.map_or_else(
        || PathBuf::from(crate::state::DEFAULT_STATE_ROOT),
        PathBuf::from,
    );
    if !state_root.is_absolute() {
        return Err(invalid("stateRoot", "must be an absolute path"));
    }
    Ok(state_root)
}

fn mtu(v: &Value) -> CniResult<Option<u32>> {
    match v.get("mtu") {
        None | Some(Value::Null) => Ok(None),
        Some(m) => match m.as_u64() {
            Some(m @ 68..=65535) => Ok(Some(m as u32)),
            _ => Err(invalid("mtu", "must be a number from 68 to 65535")),
        },
    }
}

fn prev_result(v: &Value) -> CniResult<Option<Value>> {
    match v.get("prevResult") {
        None | Some(Value::Null) => Ok(None),
        Some(p @ Value::Object(_)) => Ok(Some(p.clone())),
        Some(_) => Err(invalid("prevResult", "must be an object")),
    }
}

/// GC's list of attachments still in use.
fn valid_attachments(v: &Value) -> CniResult<Option<BTreeSet<AttachmentId>>> {
    const FIELD: &str = "cni.dev/valid-attachments";
    let items = match v.get(FIELD) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(invalid(FIELD, "must be an array")),
    };
    let entry = |a: &Value| -> CniResult<AttachmentId> {
        let field = |k: &str| {
            a.get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| invalid(FIELD, format!("every entry needs a string {k:?}")))
        };
        Ok(AttachmentId {
            container_id: field("containerID")?,
            ifname: field("ifname")?,
        })
    };
    items.iter().map(entry).collect::<CniResult<_>>().map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(j: &str) -> CniResult<NetConf> {
        NetConf::parse(&serde_json::from_str(j).unwrap())
    }

    #[test]
    fn config_errors_name_the_field_and_carry_the_spec_codes() {
        let ok = conf(r#"{"cniVersion":"1.0.0","name":"n","type":"netpath","mtu":1400}"#).unwrap();
        assert_eq!(ok.mtu, Some(1400));
        assert_eq!(ok.state_root, PathBuf::from("/run/netpath"));
        let e = conf(r#"{"cniVersion":"0.3.1","name":"n"}"#).unwrap_err();
        assert_eq!(e.code, code::INCOMPATIBLE_VERSION);
        for (j, field) in [
            (r#"{"name":"n"}"#, "cniVersion"),
            (r#"{"cniVersion":"1.0.0"}"#, "name"),
            (
                r#"{"cniVersion":"1.0.0","name":"n","type":"bridge"}"#,
                "type",
            ),
            (r#"{"cniVersion":"1.0.0","name":"n","mtu":10}"#, "mtu"),
            (r#"{"cniVersion":"1.0.0","name":"n","mtu":"big"}"#, "mtu"),
            (
                r#"{"cniVersion":"1.0.0","name":"n","stateRoot":"rel"}"#,
                "stateRoot",
            ),
            (r#"{"cniVersion":"1.0.0","name":"n","node":"../x"}"#, "node"),
            (
                r#"{"cniVersion":"1.0.0","name":"n","prevResult":3}"#,
                "prevResult",
            ),
            (
                r#"{"cniVersion":"1.1.0","name":"n","cni.dev/valid-attachments":[{"ifname":"eth0"}]}"#,
                "cni.dev/valid-attachments",
            ),
        ] {
            let e = conf(j).unwrap_err();
            assert_eq!(e.code, code::INVALID_CONFIG, "{j}");
            assert!(e.msg.contains(field), "{j}: {}", e.msg);
        }
        assert_eq!(conf("[1]").unwrap_err().code, code::UNDECODABLE);
    }

    #[test]
    fn cni_args_understand_kubernetes_and_ignore_unknown() {
        let env = |a: &str| Env {
            args: Some(a.into()),
            ..Default::default()
        };
        let p = env("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;FOO=bar")
            .pod_args()
            .unwrap();
        assert_eq!(p.namespace.as_deref(), Some("default"));
        assert_eq!(p.name.as_deref(), Some("web-0"));
        let e = env("K8S_POD_NAME=x;FOO=bar").pod_args().unwrap_err();
        assert_eq!(e.code, code::BAD_ENVIRONMENT);
        assert!(e.msg.contains("FOO"), "{}", e.msg);
        assert_eq!(
            env("garbage").pod_args().unwrap_err().code,
            code::BAD_ENVIRONMENT
        );
    }

    #[test]
    fn environment_is_checked() {
        let env = Env {
            container_id: Some("-bad".into()),
            ifname: Some("eth0/1".into()),
            ..Default::default()
        };
        assert_eq!(env.container_id().unwrap_err().code, code::BAD_ENVIRONMENT);
        assert_eq!(env.ifname().unwrap_err().code, code::BAD_ENVIRONMENT);
        assert!(Env::default()
            .netns()
            .unwrap_err()
            .msg
            .contains("CNI_NETNS"));
    }
}
