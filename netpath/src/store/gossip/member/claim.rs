//! This node's own claim: made (the subnet its pods' addresses are from, else a
//! free one), judged against every claim heard by the rule in `claims`, settled
//! once it has stood unchallenged, or lost.
use std::{cmp::Reverse, collections::BTreeSet, net::Ipv4Addr, time::Duration};

use foca::State;
use tokio::time::Instant;

use super::{
    saved::{write_claim, SavedClaim},
    Member, Verdict, BUILD_WHILE_BUSY, TICK,
};
use crate::{
    net::Ipv4Net,
    store::{
        gossip::{
            claims::{holders, Claim},
            peer::Peer,
            unix_ms, GossipError,
        },
        model::{pick_subnet_after_conflict, NodeRecord},
    },
};

/// How long a claim must stand unchallenged before the node hands out addresses.
pub const CLAIM_SETTLE: Duration = Duration::from_secs(3);

impl Member {
    /// Every member this node knows of, in name order (the newest generation of a
    /// name), borrowed. Sorted in a vector, not inserted in a map: this runs for every
    /// build, and the tree's node allocations were most of its cost at 1 000 members.
    pub(super) fn known(&self) -> Vec<(&Peer, State)> {
        let me = self.swim.identity();
        let mut out: Vec<(&Peer, State)> = std::iter::once((me, State::Alive))
            .chain(
                self.swim
                    .members()
                    .filter(|m| m.id().name != me.name)
                    .map(|m| (m.id(), m.state())),
            )
            .collect();
        // Newest generation first within a name, so dedup keeps it.
        out.sort_unstable_by(|(a, _), (b, _)| {
            (a.name.as_str(), Reverse(a.generation)).cmp(&(b.name.as_str(), Reverse(b.generation)))
        });
        out.dedup_by(|later, first| later.0.name == first.0.name);
        out
    }

    /// The claims that count: members with this node's settings claiming a subnet
    /// of the cluster.
    pub(super) fn claims<'a>(&self, known: &[(&'a Peer, State)]) -> Vec<Claim<'a>> {
        let settings = self.swim.identity().settings;
        known
            .iter()
            .filter(|(p, _)| p.settings == settings && self.claims_in_cluster(p))
            .map(|(p, _)| Claim {
                node: &p.name,
                subnet: p.record.pod_cidr,
                claimed_ms: p.claimed_ms,
                settled: p.settled,
            })
            .collect()
    }

    pub(super) fn claims_in_cluster(&self, p: &Peer) -> bool {
        let c = self.config.settings.cluster_cidr;
        p.record.pod_cidr.prefix == self.config.subnet_len && c.contains_net(&p.record.pod_cidr)
    }

    /// Claims a subnet: the one its pods' addresses are from, else a free one.
    pub(super) fn claim(&mut self, held: &[Ipv4Addr]) -> Result<(), GossipError> {
        let known = self.known();
        let me = self.swim.identity().clone();
        let taken: BTreeSet<Ipv4Net> = known
            .iter()
            .filter(|(p, _)| p.name != me.name && self.claims_in_cluster(p))
            .map(|(p, _)| p.record.pod_cidr)
            .collect();
        let cluster = self.config.settings.cluster_cidr;
        let len = self.config.subnet_len;
        let ours = held
            .first()
            .map(|a| Ipv4Net::new(*a, len).subnet())
            .filter(|n| cluster.contains_net(n) && !taken.iter().any(|t| t.overlaps(n)));
        let pod_cidr = match ours {
            Some(n) if self.attempts == 0 => n,
            _ => pick_subnet_after_conflict(cluster, len, &taken, &me.name, self.attempts).ok_or(
                GossipError::Full {
                    cluster,
                    len,
                    node: me.name.clone(),
                },
            )?,
        };
        self.attempts += 1;
        let claimed_ms = unix_ms();
        let next = Peer {
            generation: me.generation + 1,
            record: NodeRecord {
                pod_cidr,
                ..me.record
            },
            claimed_ms,
            settled: false,
            ..me
        };
        self.swim.change_identity(next)?;
        // A joining node may know nobody yet: its claim must reach the seeds.
        self.swim.announce_to_seeds();
        write_claim(
            &self.claim_file,
            SavedClaim {
                pod_cidr,
                claimed_ms,
                settled: false,
            },
        )?;
        self.standing_since = None;
        self.claimed_at = Some(Instant::now());
        self.dirty = true;
        self.verdict = None;
        tracing::info!(%pod_cidr, attempt = self.attempts, "gossip: claimed a pod CIDR");
        Ok(())
    }

    /// Judges this node's own claim: standing, settled, or lost. A claim lost
    /// before it settled has handed out no address: another is claimed at once. A
    /// settled one (only an earlier settled claim beats it) may have: it moves only
    /// while the node joins with no pods (`no_pods`), else the clash is reported.
    pub(super) fn judge(&mut self, no_pods: bool) {
        let me = self.swim.identity().clone();
        if !self.claims_in_cluster(&me) {
            self.lost = Some("it has claimed no pod CIDR yet".into());
            return;
        }
        // While news streams in, the rule is evaluated at most once per
        // `BUILD_WHILE_BUSY` (a claim cannot settle meanwhile anyway).
        let busy = self.last_news.elapsed() < TICK
            && self
                .judged_at
                .is_some_and(|t| t.elapsed() < BUILD_WHILE_BUSY);
        let verdict = match &self.verdict {
            Some(v) => v.clone(),
            None if busy => return,
            None => {
                let v = self.judge_claims(&me);
                self.verdict = Some(v.clone());
                self.judged_at = Some(Instant::now());
                v
            }
        };
        if let Verdict::LostTo(winner) = verdict {
            self.standing_since = None;
            if me.settled && !no_pods {
                self.lost = Some(format!(
                    "node {winner} settled on {} earlier, out of this node's hearing (both \
                     started without --peers, or a partition longer than --forget-after): \
                     restart this node's agent without pods to claim another",
                    me.record.pod_cidr
                ));
                return;
            }
            tracing::warn!(
                pod_cidr = %me.record.pod_cidr,
                winner,
                settled = me.settled,
                "gossip: another claim holds this node's subnet; claiming another"
            );
            if let Err(e) = self.claim(&[]) {
                self.lost = Some(format!("{e}"));
            }
            return;
        }
        if me.settled {
            self.lost = None;
            return;
        }
        let now = Instant::now();
        let since = (*self.standing_since.get_or_insert(now)).max(self.claims_news);
        let can_hear = !self.swim.has_seeds() || self.swim.heard();
        self.lost = if can_hear && now - since >= CLAIM_SETTLE {
            self.settle(me).err().map(|e| e.to_string())
        } else {
            Some(format!(
                "its claim of {} is not settled yet ({} s unchallenged needed{})",
                me.record.pod_cidr,
                CLAIM_SETTLE.as_secs(),
                if can_hear {
                    ""
                } else {
                    ", and no peer heard yet"
                }
            ))
        };
    }

    /// The claim stood long enough: the cluster hears that it settled (the rule
    /// ranks it so from now on), the disk keeps it, and the node may hand out
    /// addresses from it.
    fn settle(&mut self, me: Peer) -> Result<(), GossipError> {
        let pod_cidr = me.record.pod_cidr;
        let claimed_ms = me.claimed_ms;
        let next = Peer {
            generation: me.generation + 1,
            settled: true,
            ..me
        };
        // Told to the members this node hears, not knocked on the seeds: a knock
        // asks a seed for its whole member list, and a burst of joins settles at
        // about one moment, all asking the same few seeds.
        self.swim.change_identity(next)?;
        self.dirty = true;
        self.verdict = None;
        let saved = SavedClaim {
            pod_cidr,
            claimed_ms,
            settled: true,
        };
        if let Err(e) = write_claim(&self.claim_file, saved) {
            tracing::warn!("{e}");
        }
        tracing::info!(%pod_cidr, "gossip: the claim settled");
        Ok(())
    }

    /// Evaluates the claim rule on every claim heard.
    fn judge_claims(&self, me: &Peer) -> Verdict {
        // A claim nobody else's overlaps stands whatever the order (the common case,
        // and a walk with no allocation); only a clash needs the whole rule.
        let clash = self.swim.members().any(|m| {
            let p = m.id();
            p.name != me.name
                && p.settings == me.settings
                && self.claims_in_cluster(p)
                && p.record.pod_cidr.overlaps(&me.record.pod_cidr)
        });
        if !clash {
            return Verdict::Stands;
        }
        let known = self.known();
        let claims = self.claims(&known);
        if holders(&claims).contains(me.name.as_str()) {
            return Verdict::Stands;
        }
        let winner = known
            .iter()
            .find(|(p, _)| p.name != me.name && p.record.pod_cidr.overlaps(&me.record.pod_cidr))
            .map_or("another node".to_string(), |(p, _)| p.name.clone());
        Verdict::LostTo(winner)
    }
}
