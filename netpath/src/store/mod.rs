//! Where the cluster's desired state comes from: the spec file (the default) or
//! etcd, where nodes join, leave and restart. Either way the agent gets a
//! `ClusterSpec` and reconciles toward it.
pub mod etcd;
pub mod model;
