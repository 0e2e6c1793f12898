//! Prometheus metrics of one node in the text format: packet fates and map fill read
//! from the pinned maps at scrape time, the agent's own counters beside them.
use std::path::Path;

use anyhow::Result;
use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::{ConstGauge, Gauge},
        histogram::Histogram,
        info::Info,
    },
    registry::Registry,
};

use crate::{datapath::Pinned, state::AgentState};

/// What the agent counts itself; cheap to clone (the handles share their values).
#[derive(Clone)]
pub struct AgentMetrics {
    pub reconciles: Counter,
    pub reconcile_errors: Counter,
    pub reconcile_seconds: Histogram,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        Self {
            reconciles: Counter::default(),
            reconcile_errors: Counter::default(),
            // 1 ms .. ~16 s: a small node's pass to a 100 000-route one.
            reconcile_seconds: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 15),
            ),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Fate {
    program: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MapLabel {
    map: &'static str,
}

/// The page `/metrics` serves. `dir` is the node's pin directory; without pins
/// (still starting) the datapath metrics are left out, the rest is there.
pub fn render(
    dir: &Path,
    state: &AgentState,
    m: &AgentMetrics,
    now_unix_ms: u64,
) -> Result<String> {
    let mut reg = Registry::with_prefix("netpath");
    reg.register(
        "build",
        "This agent's version and the kernel it runs on",
        Info::new(vec![
            ("version", env!("CARGO_PKG_VERSION").to_string()),
            ("kernel", crate::state::kernel_release()),
        ]),
    );
    reg.register("reconciles", "Plan-and-apply passes", m.reconciles.clone());
    reg.register(
        "reconcile_errors",
        "Passes that failed (the datapath keeps its last state)",
        m.reconcile_errors.clone(),
    );
    reg.register(
        "reconcile_duration_seconds",
        "How long a plan-and-apply pass took",
        m.reconcile_seconds.clone(),
    );
    let ready = crate::health::readiness(Some(state));
    reg.register("ready", "1 when /readyz says ready", gauge(ready.ok as i64));
    reg.register(
        "spec_refused",
        "1 while the last spec edit is refused and the last good spec forwards",
        gauge(state.spec_error.is_some() as i64),
    );
    reg.register(
        "records_left_out",
        "Records in the store left out of the spec (named in status and the log)",
        gauge(state.left_out.len() as i64),
    );
    reg.register(
        "policy_refused",
        "1 while the last network policy change is refused (the programs keep the last policy)",
        gauge(state.policy_error.is_some() as i64),
    );
    reg.register(
        "policy_selected_pods",
        "Local pods some network policy selects",
        gauge(state.policy.len() as i64),
    );
    let store_up = state.store_error.is_none() && state.spec_error.is_none();
    reg.register(
        "store_up",
        "1 when the last read of the store succeeded and its spec was accepted",
        gauge(store_up as i64),
    );
    if state.store_kind == crate::store::StoreKind::Etcd {
        reg.register(
            "store_watching",
            "1 while the etcd watch is live",
            gauge(state.store_watching as i64),
        );
    }
    if state.store_kind == crate::store::StoreKind::Gossip {
        reg.register(
            "gossip_dropped",
            "Gossip datagrams dropped unread: no valid tag (wrong or missing key), replayed, stale or malformed",
            ConstCounter::new(state.store_dropped),
        );
    }
    if let Some(at) = state.store_synced_unix_ms {
        reg.register(
            "store_last_sync_age_seconds",
            "Seconds since the store last confirmed this node's view",
            ConstGauge::new(now_unix_ms.saturating_sub(at) as f64 / 1000.0),
        );
    }
    if let Some(b) = &state.bgp {
        bgp_metrics(&mut reg, b);
    }
    if let Some(w) = &state.wireguard {
        wireguard_metrics(&mut reg, w);
    }
    if let Ok(pinned) = Pinned::open(dir) {
        datapath_metrics(&mut reg, dir, &pinned)?;
    }
    let mut out = String::new();
    encode(&mut out, &reg)?;
    Ok(out)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabel {
    reason: &'static str,
}

fn bgp_metrics(reg: &mut Registry, b: &crate::bgp::BgpState) {
    let up = b.sessions.iter().filter(|s| s.established()).count();
    reg.register(
        "bgp_sessions",
        "BGP sessions BIRD has configured",
        gauge(b.sessions.len() as i64),
    );
    reg.register(
        "bgp_sessions_established",
        "BGP sessions in state Established",
        gauge(up as i64),
    );
    reg.register(
        "bgp_routes_learned",
        "Pod CIDRs learned by BGP and routed",
        gauge(b.routes.len() as i64),
    );
    let ignored = Family::<RefusalLabel, Gauge>::default();
    for why in crate::bgp::Refusal::ALL {
        let n = b.ignored.iter().filter(|i| i.why == why).count();
        ignored
            .get_or_create(&RefusalLabel { reason: why.name() })
            .set(n as i64);
    }
    reg.register(
        "bgp_routes_ignored",
        "Routes peers announce that are not used, by reason",
        ignored,
    );
    reg.register(
        "bgp_daemon_restarts",
        "Times the agent started BIRD again after it died",
        ConstCounter::new(b.restarts),
    );
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabel {
    peer: String,
}

fn wireguard_metrics(reg: &mut Registry, w: &crate::wireguard::WireguardState) {
    reg.register(
        "wireguard_nodes_without_key",
        "Other nodes without a WireGuard key: their pods get nothing from this node",
        gauge(w.without_key.len() as i64),
    );
    let Some(s) = &w.stats else { return };
    reg.register(
        "wireguard_peers",
        "WireGuard peers configured (other nodes with a key)",
        gauge(s.peers.len() as i64),
    );
    let age = Family::<PeerLabel, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    let sent = Family::<PeerLabel, Counter>::default();
    let received = Family::<PeerLabel, Counter>::default();
    for p in &s.peers {
        let l = PeerLabel {
            peer: p.public_key.to_string(),
        };
        if let Some(ms) = p.handshake_age_ms {
            age.get_or_create(&l).set(ms as f64 / 1000.0);
        }
        sent.get_or_create(&l).inc_by(p.tx_bytes);
        received.get_or_create(&l).inc_by(p.rx_bytes);
    }
    reg.register(
        "wireguard_handshake_age_seconds",
        "Seconds since the last completed handshake with each peer (absent: none yet)",
        age,
    );
    reg.register(
        "wireguard_sent_bytes",
        "Bytes sent to each peer through WireGuard",
        sent,
    );
    reg.register(
        "wireguard_received_bytes",
        "Bytes received from each peer through WireGuard",
        received,
    );
    reg.register(
        "wireguard_refused",
        "Datagrams the user-space device refused: an unknown key, garbage, a failed authentication",
        ConstCounter::new(s.refused),
    );
    reg.register(
        "wireguard_no_peer",
        "Packets the user-space device had no peer for (dropped, never sent in clear)",
        ConstCounter::new(s.no_peer),
    );
}

fn gauge(v: i64) -> ConstGauge {
    ConstGauge::new(v)
}

fn datapath_metrics(reg: &mut Registry, dir: &Path, pinned: &Pinned) -> Result<()> {
    // A fresh registry per scrape: a new counter raised by the kernel's total is
    // that total.
    let packets = Family::<Fate, Counter>::default();
    for c in pinned.counters()? {
        packets
            .get_or_create(&Fate {
                program: c.program,
                reason: c.reason,
            })
            .inc_by(c.packets);
    }
    reg.register(
        "packets",
        "Packets by program and fate (summed over CPUs)",
        packets,
    );
    let entries = Family::<MapLabel, Gauge>::default();
    let capacity = Family::<MapLabel, Gauge>::default();
    for fill in pinned.fill(dir)? {
        let label = MapLabel { map: fill.name };
        if let Some(n) = fill.entries {
            entries.get_or_create(&label).set(n as i64);
        }
        capacity.get_or_create(&label).set(fill.capacity as i64);
    }
    reg.register("map_entries", "Entries in use per map", entries);
    reg.register(
        "map_capacity",
        "Entries each map holds at most (EVENTS: bytes)",
        capacity,
    );
    let endpoints = pinned.endpoints()?.len();
    reg.register(
        "endpoints",
        "Pods wired on this node",
        gauge(endpoints as i64),
    );
    reg.register(
        "peer_nodes",
        "Other nodes this one forwards to",
        gauge(pinned.nodes()?.len() as i64),
    );
    let table = pinned.service_table();
    reg.register(
        "services",
        "Service front ends on this node (ClusterIP ports and this node's node ports)",
        gauge(table.services.len() as i64),
    );
    reg.register(
        "service_backends",
        "Ready backends over all front ends (slots of the random pick)",
        gauge(table.slots.len() as i64),
    );
    let usage = pinned.service_usage();
    reg.register(
        "service_flows",
        "Flows through a front end pinned to their backend (SVC_FLOWS)",
        gauge(usage.flows as i64),
    );
    let loss = pinned.event_loss()?;
    reg.register(
        "monitor_events_suppressed",
        "Monitor events over the per-CPU budget (the packets are counted all the same)",
        ConstCounter::new(loss.suppressed),
    );
    reg.register(
        "monitor_events_lost",
        "Monitor events the full ring buffer had no room for",
        ConstCounter::new(loss.lost),
    );
    Ok(())
}
