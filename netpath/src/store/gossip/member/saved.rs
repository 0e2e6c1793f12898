//! The node's claim on disk, in its state directory: a restarted node asks for its
//! subnet back first, and a settled one is the node's at once.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{
    net::Ipv4Net,
    store::{gossip::GossipError, model::ClusterConfig},
};

const CLAIM_FILE: &str = "gossip-claim.json";

/// A claim as kept on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct SavedClaim {
    pub pod_cidr: Ipv4Net,
    pub claimed_ms: u64,
    /// Whether it settled: only a settled claim is the node's at once on a restart.
    pub settled: bool,
}

/// Where the node in `state_dir` keeps its claim.
pub(super) fn claim_file(state_dir: &Path) -> PathBuf {
    state_dir.join(CLAIM_FILE)
}

/// The claim saved at `path`, unless the cluster's settings changed since so that
/// it is no subnet of theirs (then it is void).
pub(super) fn restore(path: &Path, config: &ClusterConfig) -> Option<SavedClaim> {
    let cluster = config.settings.cluster_cidr;
    read_claim(path)
        .filter(|s| s.pod_cidr.prefix == config.subnet_len && cluster.contains_net(&s.pod_cidr))
}

fn read_claim(path: &Path) -> Option<SavedClaim> {
    let text = std::fs::read(path).ok()?;
    match serde_json::from_slice(&text) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!("{}: {e}; claiming anew", path.display());
            None
        }
    }
}

pub(super) fn write_claim(path: &Path, c: SavedClaim) -> Result<(), GossipError> {
    let body = serde_json::to_vec(&c).expect("plain data");
    // Before the agent's first state: its directory may not exist yet.
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| GossipError::Save(path.into(), e))?;
    }
    crate::files::write_atomic(path, &body, true).map_err(|e| GossipError::Save(path.into(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> ClusterConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn a_saved_claim_comes_back_unless_the_settings_moved_it_out() {
        let dir = std::env::temp_dir().join(format!("netpath-saved-claim-{}", std::process::id()));
        let path = claim_file(&dir);
        let ours = config("cluster_cidr = \"10.244.0.0/16\"\nsubnet_len = 24\n");
        let c = SavedClaim {
            pod_cidr: "10.244.7.0/24".parse().unwrap(),
            claimed_ms: 5,
            settled: true,
        };
        write_claim(&path, c).unwrap();
        assert_eq!(restore(&path, &ours), Some(c));
        let moved = config("cluster_cidr = \"10.245.0.0/16\"\nsubnet_len = 24\n");
        assert_eq!(restore(&path, &moved), None);
        let smaller = config("cluster_cidr = \"10.244.0.0/16\"\nsubnet_len = 26\n");
        assert_eq!(restore(&path, &smaller), None);
        std::fs::write(&path, b"not a claim").unwrap();
        assert_eq!(restore(&path, &ours), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
