//! The spec file's policy records: `[[namespaces]]`, `[[pods]]` and `[[policies]]`,
//! each shaped like its Kubernetes object. Each record is read alone, so one that
//! does not parse is named and left out by an agent, and refused by strict
//! validation, like a bad service.
use std::sync::Arc;

use serde::de::DeserializeOwned;

use super::{file::parse_error, invalid, ClusterSpec, SpecError};
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

/// Takes the three lists out of the spec's table.
pub(crate) fn parse(top: &mut toml::Table) -> Result<(Records, Vec<Unparsed>), SpecError> {
    let mut unparsed = Vec::new();
    let records = Records {
        namespaces: list(top, &mut unparsed)?,
        pods: list(top, &mut unparsed)?,
        policies: list(top, &mut unparsed)?,
    };
    Ok((records, unparsed))
}

fn list<R: Record + DeserializeOwned>(
    top: &mut toml::Table,
    unparsed: &mut Vec<Unparsed>,
) -> Result<Vec<R>, SpecError> {
    let list = match top.remove(R::LIST) {
        None => return Ok(Vec::new()),
        Some(toml::Value::Array(list)) => list,
        Some(_) => {
            return Err(parse_error(format!(
                "{0}: must be an array of tables ([[{0}]])",
                R::LIST
            )))
        }
    };
    let mut records = Vec::with_capacity(list.len());
    for (i, v) in list.into_iter().enumerate() {
        let who = record_name(&v);
        match v.try_into() {
            Ok(r) => records.push(r),
            Err(e) => unparsed.push((
                R::LIST,
                i,
                format!("{}[{i}]{who}: {e}", R::LIST).trim().to_string(),
            )),
        }
    }
    Ok(records)
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
