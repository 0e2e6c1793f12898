//! The service maps from user space: the front ends as reconcile writes them, the
//! flow tables' fill, and the collector that frees what went idle.
use std::collections::{BTreeMap, HashSet};

use anyhow::{Context, Result};
use netpath_common::{
    service_flow_expired, Affinity, AffinityKey, Backend, BackendKey, Service, ServiceFlow,
    ServiceKey, ServiceReply, SlotKey, Tuple, SERVICE_FLOW_CAPACITY,
};

use super::{maps::is_missing, Pinned};
use crate::plan::ServiceTable;

/// Entries in use in the service flow maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ServiceUsage {
    pub flows: usize,
    pub replies: usize,
    pub affinities: usize,
    pub capacity: u32,
}

/// Every entry of a hash map that programs change while it is walked: an entry that
/// vanished is skipped, one seen twice (the walk restarts when its key goes) once.
fn entries<K: aya::Pod + Ord, V: aya::Pod>(
    map: &aya::maps::HashMap<aya::maps::MapData, K, V>,
) -> BTreeMap<K, V> {
    map.iter().filter_map(|e| e.ok()).collect()
}

impl Pinned {
    /// What `SERVICES`, `SVC_SLOTS` and `SVC_BACKENDS` hold now.
    pub fn service_table(&self) -> ServiceTable {
        ServiceTable {
            services: entries(&self.SERVICES),
            slots: entries(&self.SVC_SLOTS),
            backends: entries(&self.SVC_BACKENDS),
        }
    }

    pub fn set_service(&mut self, k: ServiceKey, v: Service) -> Result<()> {
        self.SERVICES.insert(k, v, 0).context("insert service")
    }

    pub fn remove_service(&mut self, k: ServiceKey) -> Result<()> {
        match self.SERVICES.remove(&k) {
            Err(e) if is_missing(&e) => Ok(()),
            r => r.context("remove service"),
        }
    }

    pub fn set_slot(&mut self, k: SlotKey, v: Backend) -> Result<()> {
        self.SVC_SLOTS
            .insert(k, v, 0)
            .context("insert service slot")
    }

    pub fn remove_slot(&mut self, k: SlotKey) -> Result<()> {
        match self.SVC_SLOTS.remove(&k) {
            Err(e) if is_missing(&e) => Ok(()),
            r => r.context("remove service slot"),
        }
    }

    pub fn set_backend(&mut self, k: BackendKey, v: u32) -> Result<()> {
        self.SVC_BACKENDS
            .insert(k, v, 0)
            .context("insert service backend")
    }

    pub fn remove_backend(&mut self, k: BackendKey) -> Result<()> {
        match self.SVC_BACKENDS.remove(&k) {
            Err(e) if is_missing(&e) => Ok(()),
            r => r.context("remove service backend"),
        }
    }

    pub fn service_flows(&self) -> BTreeMap<Tuple, ServiceFlow> {
        entries(&self.SVC_FLOWS)
    }

    pub fn service_replies(&self) -> BTreeMap<Tuple, ServiceReply> {
        entries(&self.SVC_REV)
    }

    pub fn affinities(&self) -> BTreeMap<AffinityKey, Affinity> {
        entries(&self.SVC_AFFINITY)
    }

    pub fn service_usage(&self) -> ServiceUsage {
        ServiceUsage {
            flows: self.SVC_FLOWS.keys().filter(|k| k.is_ok()).count(),
            replies: self.SVC_REV.keys().filter(|k| k.is_ok()).count(),
            affinities: self.SVC_AFFINITY.keys().filter(|k| k.is_ok()).count(),
            capacity: SERVICE_FLOW_CAPACITY,
        }
    }
}

/// The reply side a flow's backend answers on.
pub fn reply_key(client: &Tuple, f: &ServiceFlow) -> Tuple {
    Tuple {
        src: f.backend.addr,
        dst: f.source,
        src_port: f.backend.port,
        dst_port: f.source_port,
        proto: client.proto,
        _pad: [0; 3],
    }
}

/// What one service collector pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServicesCollected {
    pub flows: usize,
    pub orphans: usize,
    pub affinities: usize,
}

/// Frees idle service flows with their reply sides, reply sides no flow leads to,
/// and affinities past their service's timeout.
#[derive(Default)]
pub struct ServiceCollector {
    /// Reply sides without their flow at the last pass: a program inserts a node
    /// port's reply side just before its flow, so only a second sighting counts.
    suspects: HashSet<Tuple>,
}

impl ServiceCollector {
    pub fn run(&mut self, pinned: &mut Pinned, now_ns: u64) -> ServicesCollected {
        let mut done = ServicesCollected::default();
        let replies = pinned.service_replies();
        let mut led_to = HashSet::new();
        for (k, f) in pinned.service_flows() {
            let rk = reply_key(&k, &f);
            let r = replies.get(&rk);
            if !service_flow_expired(k.proto, &f, r, now_ns) {
                led_to.insert(rk);
                continue;
            }
            // Read again: a packet may have revived it since the walk.
            let fresh_flow = pinned.SVC_FLOWS.get(&k, 0).ok();
            let fresh_reply = pinned.SVC_REV.get(&rk, 0).ok();
            match fresh_flow {
                Some(f) if service_flow_expired(k.proto, &f, fresh_reply.as_ref(), now_ns) => {}
                _ => {
                    led_to.insert(rk);
                    continue;
                }
            }
            if pinned.SVC_FLOWS.remove(&k).is_ok() {
                done.flows += 1;
            }
            let _ = pinned.SVC_REV.remove(&rk);
        }
        let mut suspects = HashSet::new();
        for (rk, r) in replies {
            if led_to.contains(&rk) {
                continue;
            }
            let client = Tuple {
                src: r.client,
                dst: r.front,
                src_port: r.client_port,
                dst_port: r.front_port,
                proto: rk.proto,
                _pad: [0; 3],
            };
            // A flow that moved to another backend leaves its old reply side behind.
            let owned = pinned
                .SVC_FLOWS
                .get(&client, 0)
                .is_ok_and(|f| reply_key(&client, &f) == rk);
            if owned {
                continue;
            }
            if self.suspects.contains(&rk) {
                if pinned.SVC_REV.remove(&rk).is_ok() {
                    done.orphans += 1;
                }
            } else {
                suspects.insert(rk);
            }
        }
        self.suspects = suspects;
        for (ak, a) in pinned.affinities() {
            let timeout = pinned
                .SERVICES
                .get(&ak.service, 0)
                .map(|s| s.affinity_secs as u64 * 1_000_000_000)
                .unwrap_or(0);
            if now_ns.saturating_sub(a.last_seen) > timeout
                && pinned.SVC_AFFINITY.remove(&ak).is_ok()
            {
                done.affinities += 1;
            }
        }
        done
    }
}
