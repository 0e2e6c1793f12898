//! netpath: the node agent, the datapath loader and the CLI — what a user installs
//! on a node. Data flows one way: spec → plan → reconcile → maps → kernel programs.
pub mod agent;
pub mod bgp;
pub mod cli;
pub mod cni;
pub mod datapath;
pub mod endpoint;
pub mod files;
pub mod health;
pub mod ipam;
pub mod logging;
pub mod metrics;
pub mod monitor;
pub mod net;
pub mod netlink;
pub mod netns;
pub mod nexthop;
pub mod plan;
pub mod pod;
pub mod reconcile;
pub mod rtsock;
pub mod serve;
pub mod spec;
pub mod state;
pub mod status;
pub mod store;
pub mod tunnel;
