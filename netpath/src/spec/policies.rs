//! The spec file's policy records: `[[namespaces]]`, `[[pods]]` and `[[policies]]`,
//! each shaped like its Kubernetes object. Each record is read alone, so one that
//! does not parse is named and left out by an agent, and refused by strict
//! validation, like a bad service.
use std::sync::Arc;

use serde::de::DeserializeOwned;

use super::{
    file::{parse_error, Entries},
    invalid, ClusterSpec, SpecError,
};
use crate::policy::{self, Namespace, NetworkPolicy, PodRecord, PolicyError, Record};

impl From<PolicyError> for SpecError {
    fn from(e: PolicyError) -> Self {
        invalid(e.field, e.value, e.why)
    }
}

/// A record of a list that did not parse: the list, its index, the message.
pub(crate) type Unparsed = (&'static str, usize, String);

/// The records of the three lists, as parsed.
#[derive(Debug, Default)]
pub(crate) struct Records {
    pub namespaces: Vec<Namespace>,
    pub pods: Vec<PodRecord>,
    pub policies: Vec<NetworkPolicy>,
}

/// The three lists' records; None when an entry did not stand alone.
pub(crate) fn parse<'a>(
    lists: &mut impl FnMut(&'static str) -> Result<Option<Entries<'a>>, SpecError>,
) -> Result<Option<(Records, Vec<Unparsed>)>, SpecError> {
    let mut unparsed = Vec::new();
    let (Some(namespaces), Some(pods), Some(policies)) = (
        list(lists(Namespace::LIST)?, &mut unparsed),
        list(lists(PodRecord::LIST)?, &mut unparsed),
        list(lists(NetworkPolicy::LIST)?, &mut unparsed),
    ) else {
        return Ok(None);
    };
    let records = Records {
        namespaces,
        pods,
        policies,
    };
    Ok(Some((records, unparsed)))
}

fn list<R: Record + DeserializeOwned>(
    entries: Option<Entries<'_>>,
    unparsed: &mut Vec<Unparsed>,
) -> Option<Vec<R>> {
    let mut records = Vec::new();
    for (i, v) in entries.into_iter().flatten().enumerate() {
        let v = v?;
        let who = record_name(&v);
        match v.try_into() {
            Ok(r) => records.push(r),
            Err(e) => unparsed.push((
                R::LIST,
                i,
                // toml names the field on a line of its own ("in `spec.ingress`").
                format!("{}[{i}]{who}: {e}", R::LIST)
                    .trim()
                    .replace('\n', " "),
            )),
        }
    }
    Some(records)
}

/// " (namespace/name)" when a record that does not parse still says that much.
fn record_name(v: &toml::Value) -> String {
    let meta = |k: &str| {
        v.get("metadata")
            .and_then(|m| m.get(k))
            .and_then(toml::Value::as_str)
    };
    match (meta("namespace"), meta("name")) {
        (Some(ns), Some(name)) => format!(" ({ns}/{name})"),
        (None, Some(name)) => format!(" ({name})"),
        _ => String::new(),
    }
}

/// Strict: the first bad record.
pub(crate) fn validate(spec: &ClusterSpec, unparsed: &[Unparsed]) -> Result<(), SpecError> {
    if let Some((_, _, message)) = unparsed.first() {
        return Err(parse_error(message));
    }
    policy::validate_all(&spec.policy.namespaces)?;
    policy::validate_all(&spec.policy.pods)?;
    policy::validate_all(&spec.policy.policies)?;
    Ok(())
}

/// Leaves out each bad record alone; the messages name them.
pub(crate) fn admit(spec: &mut ClusterSpec, unparsed: &[Unparsed]) -> Vec<String> {
    let mut left_out = Vec::new();
    let mut r = Arc::unwrap_or_clone(std::mem::take(&mut spec.policy));
    r.namespaces = admit_list(std::mem::take(&mut r.namespaces), unparsed, &mut left_out);
    r.pods = admit_list(std::mem::take(&mut r.pods), unparsed, &mut left_out);
    r.policies = admit_list(std::mem::take(&mut r.policies), unparsed, &mut left_out);
    spec.policy = Arc::new(r);
    left_out
}

fn admit_list<R: Record>(
    records: Vec<R>,
    unparsed: &[Unparsed],
    left_out: &mut Vec<String>,
) -> Vec<R> {
    let skipped: Vec<usize> = unparsed
        .iter()
        .filter(|(l, _, _)| *l == R::LIST)
        .map(|(_, i, _)| *i)
        .collect();
    // The index each parsed record had in the file, the unparsed ones skipped.
    let index = (0..).filter(|i| !skipped.contains(i));
    let (admitted, refused) = policy::admit_each(index.zip(records));
    left_out.extend(refused);
    left_out.extend(
        unparsed
            .iter()
            .filter(|(l, _, _)| *l == R::LIST)
            .map(|(_, _, e)| format!("{} left out: {e}", R::KIND)),
    );
    admitted
}

#[cfg(test)]
mod tests {
    use super::super::{ClusterSpec, SpecDraft};

    const NODES: &str = r#"
cluster_cidr = "10.244.0.0/16"
[[nodes]]
name = "a"
underlay = "192.168.56.11/24"
pod_cidr = "10.244.1.0/24"
"#;

    fn policy(name: &str, spec: &str) -> String {
        format!("\n[[policies]]\nmetadata = {{ namespace = \"x\", name = \"{name}\" }}\n{spec}\n")
    }

    fn pod(name: &str) -> String {
        format!("\n[[pods]]\nmetadata = {{ namespace = \"x\", name = \"{name}\" }}\nstatus = {{ podIP = \"10.244.1.5\" }}\n")
    }

    #[test]
    fn a_bad_record_is_left_out_alone_by_an_agent_and_refused_by_strict_validation() {
        let text = format!(
            "{NODES}{}{}{}{}{}{}",
            policy("good", "spec = { podSelector = {} }"),
            policy(
                "bad-op",
                r#"spec = { podSelector = { matchExpressions = [{ key = "k", operator = "Equal" }] } }"#
            ),
            policy("unparsed", r#"spec = { ingress = "all" }"#),
            policy("good", "spec = {}"),
            pod("a"),
            pod("a"),
        );
        let (spec, left_out) = SpecDraft::parse(&text)
            .unwrap()
            .validate_admitting()
            .unwrap();
        let names: Vec<&str> = spec
            .policy
            .policies
            .iter()
            .map(|p| p.metadata.name.as_str())
            .collect();
        assert_eq!(names, ["good"]);
        assert_eq!(spec.policy.pods.len(), 1);
        let want = [
            "pod left out: pods[1] (x/a).metadata.name = \"a\": duplicate of pods[0]",
            "policy left out: policies[1] (x/bad-op).spec.podSelector.matchExpressions[0].operator = \"Equal\": must be one of In, NotIn, Exists, DoesNotExist",
            "policy left out: policies[3] (x/good).metadata.name = \"good\": duplicate of policies[0]",
        ];
        for w in want {
            assert!(left_out.iter().any(|l| l == w), "{w} not in {left_out:#?}");
        }
        assert!(
            left_out.iter().any(
                |l| l.starts_with("policy left out: policies[2] (x/unparsed): ")
                    && l.ends_with("in `spec.ingress`")
            ),
            "{left_out:#?}"
        );
        assert_eq!(left_out.len(), 4, "{left_out:#?}");
        // Strictly, the first mistake refuses the file, named.
        let e = ClusterSpec::parse(&text).unwrap_err().to_string();
        assert!(e.contains("policies[2] (x/unparsed)"), "{e}");
        let parsed_only = text.replace(r#"ingress = "all""#, "podSelector = {}");
        let e = ClusterSpec::parse(&parsed_only).unwrap_err().to_string();
        assert!(e.starts_with("pods[1] (x/a).metadata.name"), "{e}");
        let one_pod = parsed_only.replacen(&pod("a"), "", 1);
        let e = ClusterSpec::parse(&one_pod).unwrap_err().to_string();
        assert!(
            e.starts_with("policies[1] (x/bad-op).spec.podSelector"),
            "{e}"
        );
    }

    #[test]
    fn the_spec_feeds_the_compiler() {
        use crate::policy::{compile, policy_input_from, LocalPod};
        let text = format!(
            "{NODES}{}{}",
            policy("deny", "spec = { podSelector = {} }"),
            pod("a")
        );
        let spec = ClusterSpec::parse(&text).unwrap();
        let local = [LocalPod {
            ip: "10.244.1.5".parse().unwrap(),
            namespace: "x".into(),
            name: "a".into(),
        }];
        let c = compile(&policy_input_from(&spec, &local)).unwrap();
        assert_eq!(
            c.selected_by.values().next().unwrap(),
            &["x/deny".to_string()]
        );
        assert_ne!(c.rev, 0);
    }
}
