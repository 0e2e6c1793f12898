//! How a node comes in: its settings compared with a seed's, its saved claim taken
//! up, the cluster listened to before it claims, and its claim given time to settle
//! before the agent starts.
use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    time::Duration,
};

use tokio::time::Instant;

use super::{saved, Member, TICK};
use crate::{
    net::{Ipv4Net, Mac},
    store::{
        gossip::{peer::Peer, swim::Bound, unix_ms, GossipError, GossipOptions},
        model::{valid_node_name, ClusterConfig, NodeRecord},
    },
};

/// How long a joining node listens before it claims a subnet.
const LISTEN_BEFORE_CLAIM: Duration = Duration::from_millis(1500);
/// How long a joining node waits for a seed's member list before it asks the next.
const ASK_NEXT_SEED_AFTER: Duration = Duration::from_millis(500);
/// How long a joining node waits for a seed's settings.
const SETTINGS_WAIT: Duration = Duration::from_secs(2);

impl Member {
    /// Joins: compares this node's settings with a seed's, listens, claims a pod
    /// CIDR (its saved one, the one its pods' addresses are from, or a free one).
    pub async fn join(
        opts: &GossipOptions,
        name: &str,
        underlay: Ipv4Net,
        vtep_mac: Mac,
        held: &[Ipv4Addr],
        state_dir: &Path,
    ) -> Result<Self, GossipError> {
        if !valid_node_name(name) {
            return Err(GossipError::NodeName(name.into()));
        }
        opts.config.validate()?;
        let settings_json = serde_json::to_vec(&opts.config).expect("plain data");
        let gossip = SocketAddr::new(underlay.addr.into(), opts.listen.port());
        // Every node may be given the same seed list, itself among it.
        let seeds = opts.seeds.iter().copied().filter(|s| *s != gossip);
        let bound = Bound::bind(
            opts.listen,
            opts.key.as_deref(),
            seeds.collect(),
            settings_json.clone(),
            opts.forget_after,
        )
        .await?;
        compare_settings(&bound, &opts.config).await?;
        let claim_file = saved::claim_file(state_dir);
        let saved = saved::restore(&claim_file, &opts.config);
        let me = Peer {
            name: name.to_string(),
            gossip,
            generation: unix_ms(),
            record: NodeRecord {
                underlay,
                // Provisional until claimed: a /32 of the underlay, outside any
                // cluster CIDR's claims (members without a claim are not counted).
                pod_cidr: saved.map_or(Ipv4Net::new(underlay.addr, 32), |s| s.pod_cidr),
                vtep_mac,
            },
            claimed_ms: saved.map_or(0, |s| s.claimed_ms),
            settled: saved.is_some_and(|s| s.settled),
            settings: digest(&settings_json),
        };
        let swim = bound.join_as(me, crate::files::fnv1a(name.bytes()) as usize);
        let mut member = Self::new(swim, opts.config.clone(), claim_file);
        member.swim.announce_to_seeds();
        if saved.is_none() {
            member.listen_then_claim(held).await?;
        }
        member.wait_to_settle(opts.join_wait, held.is_empty()).await;
        Ok(member)
    }

    /// Listens before claiming, so the claim is made knowing the cluster: while no
    /// seed has sent the member list (one down, its answer lost), the next is asked.
    async fn listen_then_claim(&mut self, held: &[Ipv4Addr]) -> Result<(), GossipError> {
        let end = Instant::now() + LISTEN_BEFORE_CLAIM;
        while self.swim.has_seeds() && Instant::now() < end {
            self.listen_for(ASK_NEXT_SEED_AFTER).await;
            if !self.swim.got_members() {
                self.swim.ask_next_seed();
            }
        }
        self.claim(held)
    }

    /// The claim settles (or loses and is made again) before the agent starts, for
    /// `within` at most, the node knocking on its seeds while it hears nobody (a
    /// seed started later is heard within seconds, not after the wait). `no_pods`:
    /// no pod holds an address, so even a settled claim may move.
    async fn wait_to_settle(&mut self, within: Duration, no_pods: bool) {
        let deadline = Instant::now() + within;
        loop {
            self.judge(no_pods);
            // A settled claim that lost, with pods, waits for nothing: it is reported.
            let settled = self.swim.identity().settled;
            if self.lost.is_none() || settled || Instant::now() >= deadline {
                break;
            }
            self.listen_for(TICK).await;
            self.swim.keep_in_touch();
            self.take_news();
        }
    }
}

/// The cluster settings' digest every member publishes.
fn digest(json: &[u8]) -> u64 {
    crate::files::fnv1a(json.iter().copied())
}

/// Refuses to join a cluster whose settings (as the first seed to answer has them)
/// differ from this node's, naming the first field that does. Silent seeds are no
/// refusal: the first node of a cluster may be started after the others.
async fn compare_settings(bound: &Bound, ours: &ClusterConfig) -> Result<(), GossipError> {
    if bound.seeds().is_empty() {
        return Ok(());
    }
    let Some((from, payload)) = bound.ask_settings(SETTINGS_WAIT).await else {
        tracing::warn!("gossip: no seed answered with its settings; joining on this node's");
        return Ok(());
    };
    let theirs: serde_json::Value = serde_json::from_slice(&payload)
        .map_err(|e| GossipError::Settings(format!("{from} sent unreadable settings: {e}")))?;
    let mine = serde_json::to_value(ours).expect("plain data");
    match first_difference(&mine, &theirs) {
        None => Ok(()),
        Some((field, a, b)) => Err(GossipError::Settings(format!(
            "{field} is {a} here but {b} in the cluster (as {from} has it)"
        ))),
    }
}

/// The first field (in name order) whose value differs between two settings.
fn first_difference(
    a: &serde_json::Value,
    b: &serde_json::Value,
) -> Option<(String, String, String)> {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return (a != b).then(|| ("settings".into(), a.to_string(), b.to_string()));
    };
    let names: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    names.into_iter().find_map(|k| {
        let (x, y) = (a.get(k), b.get(k));
        (x != y).then(|| {
            let show = |v: Option<&serde_json::Value>| v.map_or("unset".into(), |v| v.to_string());
            (k.clone(), show(x), show(y))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_differing_setting_is_named() {
        let a = serde_json::json!({"cluster_cidr": "10.244.0.0/16", "vni": 1, "port": 8472});
        let b = serde_json::json!({"cluster_cidr": "10.244.0.0/16", "vni": 2, "port": 4789});
        assert_eq!(
            first_difference(&a, &b),
            Some(("port".into(), "8472".into(), "4789".into()))
        );
        assert_eq!(first_difference(&a, &a), None);
        let c = serde_json::json!({"cluster_cidr": "10.244.0.0/16", "vni": 1, "port": 8472, "mtu": 1400});
        assert_eq!(
            first_difference(&a, &c),
            Some(("mtu".into(), "unset".into(), "1400".into()))
        );
    }
}
