//! The flags of the gossip store: where to listen, whom to join through, the
//! cluster's settings and key.
use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;

use crate::store::{
    config_file,
    gossip::{GossipOptions, DEFAULT_PORT},
};

#[derive(Args)]
pub struct GossipArgs {
    /// Gossip store: other nodes to join through, ADDR[:PORT], comma-separated (none:
    /// this is the cluster's first node).
    #[arg(long, value_delimiter = ',')]
    peers: Vec<String>,
    /// Gossip store: the UDP port every node gossips on.
    #[arg(long, default_value_t = DEFAULT_PORT)]
    gossip_port: u16,
    /// Gossip store: the cluster's settings, the same on every node (a node whose
    /// settings differ from the cluster's is refused): a cluster config (TOML:
    /// cluster_cidr, backend, ..., subnet_len) or a spec file (its settings whole).
    #[arg(long)]
    cluster_config: Option<PathBuf>,
    /// Gossip store: a file holding the cluster key; every datagram is then
    /// authenticated (HMAC-SHA-256) and one without a valid tag dropped.
    #[arg(long)]
    cluster_key: Option<PathBuf>,
    /// Gossip store: how long a node may be gone before its subnet is free again
    /// (e.g. 90s, 30m, 1h).
    #[arg(long, value_parser = parse_duration, default_value = "1h")]
    forget_after: Duration,
    /// Gossip store: how long a joining node waits for its pod CIDR claim to settle
    /// before the agent starts anyway, handing out no pod addresses until it settles
    /// (e.g. 60s, 2m).
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    join_wait: Duration,
}

impl GossipArgs {
    pub fn options(&self) -> Result<GossipOptions> {
        let path = self
            .cluster_config
            .as_ref()
            .ok_or_else(|| anyhow!("--cluster-config is required with the gossip store"))?;
        let config = config_file::read(path)?;
        let key = match &self.cluster_key {
            Some(p) => {
                let k = std::fs::read(p).with_context(|| format!("read {}", p.display()))?;
                let k = k.trim_ascii().to_vec();
                if k.len() < 16 {
                    bail!("{}: a cluster key needs at least 16 bytes", p.display());
                }
                Some(k)
            }
            None => None,
        };
        let seeds = self
            .peers
            .iter()
            .map(|p| peer(p, self.gossip_port))
            .collect::<Result<_>>()?;
        Ok(GossipOptions {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), self.gossip_port),
            seeds,
            key,
            config,
            forget_after: self.forget_after,
            join_wait: self.join_wait,
        })
    }
}

/// `ADDR` or `ADDR:PORT`.
fn peer(s: &str, port: u16) -> Result<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let ip: Ipv4Addr = s
        .parse()
        .map_err(|_| anyhow!("--peers {s:?}: want ADDR or ADDR:PORT"))?;
    Ok(SocketAddr::new(ip.into(), port))
}

/// `90s`, `30m`, `1h` or plain seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?}: want e.g. 90s, 30m or 1h"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("{s:?}: the unit is s, m or h")),
    };
    if secs == 0 {
        return Err(format!("{s:?}: must be more than 0"));
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::gossip::DEFAULT_JOIN_WAIT;

    #[test]
    fn durations_and_peers_parse_or_say_why() {
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert!(parse_duration("1d").unwrap_err().contains("unit"));
        assert!(parse_duration("0s").is_err());
        assert_eq!(
            peer("10.0.0.1", 7946).unwrap(),
            "10.0.0.1:7946".parse().unwrap()
        );
        assert_eq!(
            peer("10.0.0.1:9000", 7946).unwrap(),
            "10.0.0.1:9000".parse().unwrap()
        );
        assert!(peer("node1", 7946).is_err());
    }

    #[test]
    fn the_join_wait_defaults_to_the_product_constant() {
        #[derive(clap::Parser)]
        struct Flags {
            #[command(flatten)]
            gossip: GossipArgs,
        }
        let f = <Flags as clap::Parser>::parse_from(["netpath"]);
        assert_eq!(f.gossip.join_wait, DEFAULT_JOIN_WAIT);
        let f = <Flags as clap::Parser>::parse_from(["netpath", "--join-wait", "2s"]);
        assert_eq!(f.gossip.join_wait, Duration::from_secs(2));
    }
}
