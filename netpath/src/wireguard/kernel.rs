//! The kernel's WireGuard device, where the kernel has one: made over rtnetlink,
//! configured and read with `wg` (Debian package wireguard-tools), which speaks the
//! kernel's generic-netlink interface. Same keys, same peers, same wire as the
//! user-space device.
use std::{
    collections::BTreeSet,
    net::SocketAddrV4,
    path::Path,
    process::{Command, Stdio},
    time::{SystemTime, UNIX_EPOCH},
};

use super::{
    config::{DeviceConfig, DeviceStats, PeerStats},
    keys::PRIVATE_FILE,
    PublicKey, WireguardError,
};

const WG: &str = "wg";

fn wg(args: &[&str]) -> Result<String, WireguardError> {
    let out = Command::new(WG)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => WireguardError::Start(
                "the kernel's WireGuard is configured with `wg`, and it is not installed \
                 (Debian package wireguard-tools)"
                    .into(),
            ),
            _ => WireguardError::Start(format!("run wg: {e}")),
        })?;
    if !out.status.success() {
        return Err(WireguardError::Start(format!(
            "wg {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether `wg` is there to configure a kernel device.
pub fn tools_present() -> bool {
    Command::new(WG)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Gives `device` the node's key, the port and exactly the config's peers.
pub fn configure(
    device: &str,
    state_dir: &Path,
    config: &DeviceConfig,
) -> Result<(), WireguardError> {
    let key = state_dir.join(PRIVATE_FILE);
    let port = config.listen_port.to_string();
    let key = key.to_string_lossy();
    let mut args: Vec<String> = ["set", device, "listen-port", &port, "private-key", &key]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let want: BTreeSet<PublicKey> = config.peers.iter().map(|p| p.public_key).collect();
    for stale in peers(device)?.difference(&want) {
        args.extend(["peer".into(), stale.to_string(), "remove".into()]);
    }
    for p in &config.peers {
        let allowed: Vec<String> = p.allowed_ips.iter().map(|n| n.to_string()).collect();
        args.extend([
            "peer".into(),
            p.public_key.to_string(),
            "endpoint".into(),
            p.endpoint.to_string(),
            // A plain list replaces what the peer had (`+`/`-` would edit it).
            "allowed-ips".into(),
            allowed.join(","),
        ]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    wg(&args).map(drop)
}

fn peers(device: &str) -> Result<BTreeSet<PublicKey>, WireguardError> {
    Ok(wg(&["show", device, "peers"])?
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect())
}

/// What the device reports, in the user-space device's terms (the kernel counts no
/// refusals: those columns stay 0).
pub fn stats(device: &str) -> Result<DeviceStats, WireguardError> {
    let dump = wg(&["show", device, "dump"])?;
    let mut lines = dump.lines();
    let mut stats = DeviceStats::default();
    if let Some(first) = lines.next() {
        let f: Vec<&str> = first.split('\t').collect();
        stats.public_key = f.get(1).and_then(|k| k.parse().ok());
        stats.listen_port = f.get(2).and_then(|p| p.parse().ok()).unwrap_or(0);
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    for line in lines {
        let f: Vec<&str> = line.split('\t').collect();
        let (Some(key), Some(endpoint)) = (
            f.first().and_then(|k| k.parse().ok()),
            f.get(2).and_then(|e| e.parse::<SocketAddrV4>().ok()),
        ) else {
            continue;
        };
        let handshake: u64 = f.get(4).and_then(|h| h.parse().ok()).unwrap_or(0);
        stats.peers.push(PeerStats {
            public_key: key,
            endpoint,
            handshake_age_ms: (handshake != 0).then(|| now.saturating_sub(handshake) * 1000),
            rx_bytes: f.get(5).and_then(|b| b.parse().ok()).unwrap_or(0),
            tx_bytes: f.get(6).and_then(|b| b.parse().ok()).unwrap_or(0),
        });
    }
    Ok(stats)
}
