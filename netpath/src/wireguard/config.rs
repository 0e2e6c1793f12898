//! What the user-space device serves: written by the agent (atomically), read by the
//! device whenever it changes. The private key is not in it: the device reads the
//! node's key file itself, so a rotation is a new key file and a new config.
use std::{
    net::SocketAddrV4,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::{PublicKey, WireguardError};
use crate::net::Ipv4Net;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    pub listen_port: u16,
    pub peers: Vec<PeerConfig>,
}

/// Another node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    pub public_key: PublicKey,
    pub endpoint: SocketAddrV4,
    /// What it may send from and is sent to: its pod CIDR and its node address.
    pub allowed_ips: Vec<Ipv4Net>,
}

/// The user-space device's files, under the node's state dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub pid: PathBuf,
    pub log: PathBuf,
    /// Its peers' handshakes and bytes, and its drops (written every second).
    pub stats: PathBuf,
}

impl Paths {
    pub fn under(state_dir: &Path) -> Self {
        let dir = state_dir.join("wireguard");
        Self {
            config: dir.join("device.json"),
            pid: dir.join("device.pid"),
            log: dir.join("device.log"),
            stats: dir.join("stats.json"),
            dir,
        }
    }
}

impl DeviceConfig {
    pub fn read(path: &Path) -> Result<Self, WireguardError> {
        let err = |why: String| WireguardError::Config {
            path: path.display().to_string(),
            why,
        };
        let text = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        serde_json::from_slice(&text).map_err(|e| err(e.to_string()))
    }

    pub fn write(&self, path: &Path) -> Result<(), WireguardError> {
        let err = |why: String| WireguardError::Config {
            path: path.display().to_string(),
            why,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        }
        let text = serde_json::to_vec_pretty(self).expect("a config serializes");
        crate::files::write_atomic(path, &text, false).map_err(|e| err(e.to_string()))
    }
}

/// What the device reports (`Paths::stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceStats {
    pub public_key: Option<PublicKey>,
    pub listen_port: u16,
    pub peers: Vec<PeerStats>,
    /// Datagrams that named no peer this device knows (a stranger's handshake, an
    /// unknown index) or failed their authentication.
    pub refused: u64,
    /// Pod packets for an address no peer is allowed: dropped, never sent in clear.
    pub no_peer: u64,
    /// Decrypted packets from an address the sending peer is not allowed.
    pub spoofed: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStats {
    pub public_key: PublicKey,
    pub endpoint: SocketAddrV4,
    /// Milliseconds since the last completed handshake (None: none yet).
    pub handshake_age_ms: Option<u64>,
    pub tx_bytes: u64,
    pub rx_bytes: u64,
}
