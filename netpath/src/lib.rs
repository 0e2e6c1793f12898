//! netpath userspace: agent, datapath loader, lab and CLI.
pub mod agent;
pub mod bench;
pub mod check;
pub mod cli;
pub mod config;
pub mod csum;
pub mod datapath;
pub mod lab;
pub mod netlink;
pub mod netns;
pub mod reconcile;
