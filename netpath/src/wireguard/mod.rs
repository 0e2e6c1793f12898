//! Encryption between nodes with WireGuard. Each node has a key pair (`keys`) and
//! publishes its public key with its node record; pods' packets to other nodes go
//! through a WireGuard device whose peers are the other nodes (allowed IPs: their pod
//! CIDRs and node address). Where the kernel has no WireGuard, a process of our own
//! (`device`, built on Cloudflare's boringtun) serves a TUN device with the same wire
//! format, supervised by the agent as BIRD is (`daemon`).
pub mod config;
pub mod daemon;
pub mod device;
pub mod keys;
mod tun;

pub use self::keys::{KeyError, PublicKey};

/// The device's name on every node.
pub const DEVICE: &str = "netpath-wg";

/// WireGuard's default UDP port.
pub const DEFAULT_PORT: u16 = 51820;

/// Bytes WireGuard adds to an IPv4 packet: outer IPv4 (20) + UDP (8) + its header
/// (16) + the authentication tag (16).
pub const OVERHEAD_V4: u32 = 60;

#[derive(Debug, thiserror::Error)]
pub enum WireguardError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("the WireGuard device's files: {0}")]
    Files(String),
    #[error("the TUN device {name}: {why}")]
    Tun { name: String, why: String },
    #[error("the WireGuard socket on port {port}: {why}")]
    Socket { port: u16, why: String },
    #[error("start the user-space WireGuard device: {0}")]
    Start(String),
    #[error("the device's configuration {path}: {why}")]
    Config { path: String, why: String },
}
