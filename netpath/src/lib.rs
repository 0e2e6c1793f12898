//! netpath userspace: agent, datapath loader, lab and CLI.
pub mod datapath;
pub mod netlink;
pub mod netns;
