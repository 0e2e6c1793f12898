//! What one policy's rules allow one local pod, as peer blocks with their ports.
//! Named ports are resolved here: for ingress against the local pod (the
//! destination), for egress against each destination pod, so an egress rule with a
//! named port gives every peer pod its own ports; an `ipBlock` destination is no pod
//! and takes numbered ports only.
use netpath_common::POLICY_INGRESS;

use super::{
    cidr::IpNet,
    peers::{Allow, Grant},
    ports::PortRange,
    records::PodRecord,
    resolve::{PeerSel, PortMatch, Resolved, Rule},
    world::{named_ports, World},
};

/// Pod indices of each peer of each rule of each direction of a policy.
type PolicyPods = [Vec<Vec<Vec<usize>>>; 2];

pub(crate) struct Grants<'w, 'a> {
    world: &'w World<'a>,
    policies: &'w [Resolved<'a>],
    /// Per policy, the pods its peers name: the same for every local pod, so
    /// selected once, when a local pod first needs it.
    pods: Vec<Option<PolicyPods>>,
}

impl<'w, 'a> Grants<'w, 'a> {
    pub fn new(world: &'w World<'a>, policies: &'w [Resolved<'a>]) -> Self {
        Self {
            world,
            policies,
            pods: (0..policies.len()).map(|_| None).collect(),
        }
    }

    /// Appends what policy `i` allows in `direction` to the local pod of `record`;
    /// false when the policy leaves that direction alone.
    pub fn of(
        &mut self,
        i: usize,
        direction: u8,
        record: Option<&PodRecord>,
        out: &mut Vec<Grant>,
    ) -> bool {
        let p = &self.policies[i];
        let (d, rules) = if direction == POLICY_INGRESS {
            (0, &p.ingress)
        } else {
            (1, &p.egress)
        };
        let Some(rules) = rules else {
            return false;
        };
        let world = self.world;
        let pods = self.pods[i].get_or_insert_with(|| policy_pods(world, p));
        for (rule, pods) in rules.iter().zip(&pods[d]) {
            rule_grants(world, direction == POLICY_INGRESS, rule, pods, record, out);
        }
        true
    }
}

fn policy_pods(world: &World, p: &Resolved) -> PolicyPods {
    let of_rules = |rules: &Option<Vec<Rule>>| -> Vec<Vec<Vec<usize>>> {
        rules
            .iter()
            .flatten()
            .map(|r| {
                r.peers
                    .iter()
                    .map(|peer| match peer {
                        PeerSel::Block { .. } => Vec::new(),
                        PeerSel::Pods { pods, namespaces } => {
                            world.select(p.namespace, *pods, *namespaces)
                        }
                    })
                    .collect()
            })
            .collect()
    };
    [of_rules(&p.ingress), of_rules(&p.egress)]
}

/// One rule's grants; `pods` are the pods each of its peers names.
fn rule_grants(
    world: &World,
    ingress: bool,
    rule: &Rule,
    pods: &[Vec<usize>],
    local: Option<&PodRecord>,
    out: &mut Vec<Grant>,
) {
    let grant = |block: IpNet, except: Vec<IpNet>, allow: Allow| Grant {
        block,
        except,
        allow,
    };
    let any = rule.ports.is_empty();
    let mut numbered: Vec<PortRange> = Vec::new();
    let mut named: Vec<(u8, &str)> = Vec::new();
    for p in &rule.ports {
        match p.port {
            PortMatch::Range(lo, hi) => numbered.push((p.protocol, lo, hi)),
            PortMatch::Named(n) => named.push((p.protocol, n)),
        }
    }
    let resolve = |record: Option<&PodRecord>| -> Vec<PortRange> {
        named
            .iter()
            .flat_map(|&(proto, name)| named_ports(record, name, proto).map(move |n| (proto, n, n)))
            .collect()
    };
    let with_named = |record| {
        let mut all = numbered.clone();
        all.extend(resolve(record));
        Allow::Ports(all)
    };
    // What every peer that is not a pod of this rule may use.
    let fixed = match (any, ingress) {
        (true, _) => Allow::Any,
        (false, true) => with_named(local),
        (false, false) => Allow::Ports(numbered.clone()),
    };
    if rule.peers.is_empty() {
        for v6 in [false, true] {
            out.push(grant(IpNet::all(v6), Vec::new(), fixed.clone()));
        }
        if !any && !ingress && !named.is_empty() {
            for q in &world.pods {
                let ports = resolve(q.record);
                if !ports.is_empty() {
                    out.push(grant(q.addr, Vec::new(), Allow::Ports(ports)));
                }
            }
        }
        return;
    }
    for (peer, pods) in rule.peers.iter().zip(pods) {
        match peer {
            PeerSel::Block { cidr, except } => {
                out.push(grant(*cidr, except.clone(), fixed.clone()))
            }
            PeerSel::Pods { .. } => {
                for &q in pods {
                    let q = &world.pods[q];
                    let allow = match (any, ingress) {
                        (false, false) => with_named(q.record),
                        _ => fixed.clone(),
                    };
                    out.push(grant(q.addr, Vec::new(), allow));
                }
            }
        }
    }
}
