//! The netpath lab and everything measured or checked with it: clusters of network
//! namespaces on one host wired through the product's own `endpoint` module, traffic
//! checks, flannel-style baselines, the bench, and helpers for the integration tests.
pub mod bench;
pub mod check;
pub mod cni;
pub mod csum;
pub mod lab;
pub mod netns;
pub mod nl;
pub mod observe;
pub mod ping;
pub mod policy;
pub mod process;
pub mod service;
pub mod support;
pub mod transfer;

pub use support::*;
