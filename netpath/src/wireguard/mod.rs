//! Encryption between nodes with WireGuard. Each node has a key pair (`keys`) and
//! publishes its public key with its node record; pods' packets to other nodes go
//! through a WireGuard device whose peers are the other nodes (allowed IPs: their pod
//! CIDRs and node address). Where the kernel has no WireGuard, a process of our own
//! (`device`, built on Cloudflare's boringtun) serves a TUN device with the same wire
//! format, supervised by the agent as BIRD is (`daemon`).
pub mod config;
pub mod daemon;
pub mod device;
pub mod kernel;
pub mod keys;
mod tun;

pub use self::keys::{KeyError, PublicKey};

/// Which WireGuard a node runs (`netpath agent --wireguard`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Implementation {
    /// The kernel's where it has WireGuard and `wg` is installed, else netpath's own.
    #[default]
    Auto,
    /// The kernel's, or the agent does not start.
    Kernel,
    /// netpath's own user-space device, even where the kernel has WireGuard.
    UserSpace,
}

/// What `netpath status` shows of a node's encryption.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WireguardState {
    /// "user-space" (netpath's own device) or "kernel".
    pub implementation: String,
    /// Why that one.
    pub why: String,
    pub device: String,
    pub public_key: PublicKey,
    /// The user-space device's process.
    pub pid: Option<u32>,
    /// What the device last reported.
    pub stats: Option<config::DeviceStats>,
    /// Other nodes without a key: their pods get nothing from this node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub without_key: Vec<String>,
}

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
