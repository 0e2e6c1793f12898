//! What the entry points are built from, one concern a module: header access and
//! arithmetic (`packet`, `ipv4`, `l4`, `csum`, `rewrite`), delivery and tunnels
//! (`deliver`, `vxlan`, `ipip`, `tunnel`), translations (`nat`, `service`, `reject`),
//! and the maps, counters, events, diagnostic lines and clock they all use.
pub mod clock;
pub mod csum;
pub mod deliver;
pub mod diag;
pub mod ipip;
pub mod ipv4;
pub mod l4;
pub mod maps;
pub mod monitor;
pub mod nat;
pub mod packet;
pub mod policy;
pub mod reject;
pub mod rewrite;
pub mod service;
pub mod stats;
pub mod tunnel;
pub mod vxlan;
