//! Kubernetes NetworkPolicy, the userspace half: the records (shaped like the
//! Kubernetes objects), their checks, label selectors, and the compiler that turns
//! them into the maps the programs judge new connections with
//! (`netpath_common::policy` describes the maps and the programs' lookup).
//!
//! The agent admits records with [`admit_each`] (a bad one is left out alone, its
//! field named), then calls [`compile`] with this node's pods and installs the
//! [`Compiled`] maps, or keeps what it has when the maps would not fit.
mod checks;
mod cidr;
mod compile;
mod grants;
mod ids;
mod output;
mod peers;
mod ports;
mod records;
mod resolve;
mod selector;
mod validate;
mod world;

pub use self::cidr::{CidrError, IpNet};
pub use self::compile::{compile, CompileError};
pub use self::output::{Compiled, PolicyMaps};
pub use self::ports::{prefix_blocks, PortRange};
pub use self::records::*;
pub use self::selector::{namespace_labels, Labels};
pub use self::validate::{admit_each, validate_all, PolicyError, Record};
pub use self::world::{LocalPod, PolicyInput};

use crate::spec::ClusterSpec;

/// The spec's records with this node's pods: what [`compile`] takes.
pub fn policy_input_from<'a>(spec: &'a ClusterSpec, local: &'a [LocalPod]) -> PolicyInput<'a> {
    PolicyInput {
        namespaces: &spec.policy.namespaces,
        pods: &spec.policy.pods,
        policies: &spec.policy.policies,
        local,
    }
}

/// The records policy is compiled from, as a spec holds them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyRecords {
    pub namespaces: Vec<Namespace>,
    pub pods: Vec<PodRecord>,
    pub policies: Vec<NetworkPolicy>,
}

#[cfg(test)]
mod tests;
