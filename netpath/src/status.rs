//! `netpath status`: the agent's published state and a snapshot of the pinned maps,
//! gathered once into a `Snapshot` and then printed as text or JSON. Health is
//! judged inside the agent's network namespace (device names and attachments are
//! per namespace), wherever the command itself runs.
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::{
    datapath::{Counter, EventLoss, Fill, Pinned},
    health::{self, Report},
    net::Mac,
    netlink::Netlink,
    state::{process_alive, AgentState, NetnsId},
};

#[derive(Debug, Serialize)]
pub struct EndpointRow {
    pub ip: String,
    pub ifindex: u32,
    pub pod_mac: String,
    pub host_mac: String,
}

#[derive(Debug, Serialize)]
pub struct RouteRow {
    pub pod_cidr: String,
    pub node_ip: String,
    pub mode: &'static str,
    pub vtep_mac: String,
}

#[derive(Debug, Serialize)]
pub struct MasqueradeRow {
    pub enabled: bool,
    pub ports: String,
    pub exempt: Vec<String>,
    pub flows: usize,
    pub translations: usize,
    pub capacity: u32,
}

/// A service front end as the programs see it.
#[derive(Debug, Serialize)]
pub struct ServiceRow {
    /// `ADDRESS:PORT/PROTOCOL`: a ClusterIP's, or this node's node port.
    pub front: String,
    /// Ready backends (new flows) and the rest that keep their flows.
    pub ready: Vec<String>,
    pub terminating: Vec<String>,
    pub affinity_secs: Option<u32>,
    /// A remote backend sees this node as the client (node port, Cluster policy).
    pub snat_remote: bool,
}

#[derive(Debug, Serialize)]
pub struct ServicesView {
    /// The service range (None: the cluster has none).
    pub range: Option<String>,
    pub node_ports: String,
    /// The node's own sockets are translated (cgroup programs attached).
    pub host_sockets: bool,
    pub front_ends: Vec<ServiceRow>,
    pub flows: usize,
    pub replies: usize,
    pub affinities: usize,
    pub capacity: u32,
}

/// Everything `netpath status` shows, read once.
#[derive(Debug, Serialize)]
pub struct Snapshot {
    pub pins: String,
    pub agent: Option<AgentState>,
    /// What the pins hold; None when they cannot be read (a node starting).
    #[serde(flatten)]
    pub datapath: Option<DatapathView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pins_error: Option<String>,
    pub ready: Report,
    pub health: Report,
    #[serde(skip)]
    state_dir: PathBuf,
}

/// The pinned maps' content.
#[derive(Debug, Serialize)]
pub struct DatapathView {
    pub redirect: &'static str,
    pub tc_attach: &'static str,
    pub endpoints: Vec<EndpointRow>,
    pub routes: Vec<RouteRow>,
    pub nodes: Vec<String>,
    pub masquerade: MasqueradeRow,
    pub services: ServicesView,
    pub maps: Vec<Fill>,
    pub monitor_events: EventLoss,
    pub counters: Vec<Counter>,
}

impl Snapshot {
    /// Whether the node serves pods: ready and healthy.
    pub fn ok(&self) -> bool {
        self.ready.ok && self.health.ok
    }
}

fn mac_str(m: &[u8; 6]) -> String {
    Mac(*m).to_string()
}

/// Reads the node's state and maps; `agent` is what its agent published (None:
/// nothing published). Pins that cannot be read are an error only when no agent
/// published anything either; otherwise the node is shown as not ready.
pub fn gather(dir: &Path, state_dir: &Path, agent: Option<AgentState>) -> Result<Snapshot> {
    let (datapath, pins_error) = match read_datapath(dir) {
        Ok(d) => (Some(d), None),
        Err(e) if agent.is_some() => (None, Some(format!("{e:#}"))),
        Err(e) => return Err(e),
    };
    let mut ready = health::readiness(agent.as_ref());
    if let Some(e) = &pins_error {
        ready = ready.with_failing("pins readable", e.clone());
    }
    Ok(Snapshot {
        pins: dir.display().to_string(),
        datapath,
        pins_error,
        ready,
        health: node_health(agent.as_ref())?,
        agent,
        state_dir: state_dir.to_path_buf(),
    })
}

fn read_datapath(dir: &Path) -> Result<DatapathView> {
    let pinned = Pinned::open(dir)?;
    let settings = pinned.settings()?;
    let nat = pinned.nat_usage();
    let endpoints = pinned
        .endpoints()?
        .into_iter()
        .map(|(ip, ep)| EndpointRow {
            ip: ip.to_string(),
            ifindex: ep.ifindex,
            pod_mac: mac_str(&ep.pod_mac),
            host_mac: mac_str(&ep.host_mac),
        })
        .collect();
    let routes = pinned
        .routes()?
        .into_iter()
        .map(|(net, p, r)| RouteRow {
            pod_cidr: format!("{net}/{p}"),
            node_ip: std::net::Ipv4Addr::from(r.node_ip).to_string(),
            mode: netpath_common::RouteMode::from_u32(r.mode).map_or("invalid", |m| m.name()),
            vtep_mac: mac_str(&r.vtep_mac),
        })
        .collect();
    Ok(DatapathView {
        redirect: pinned.redirect_mode()?.name(),
        tc_attach: pinned.tc_attach()?.name(),
        endpoints,
        routes,
        nodes: pinned
            .nodes()?
            .iter()
            .map(|(ip, _)| ip.to_string())
            .collect(),
        masquerade: MasqueradeRow {
            enabled: settings.masquerade != 0,
            ports: format!("{}-{}", settings.nat_port_min, settings.nat_port_max),
            exempt: pinned.nat_exempt()?.iter().map(|n| n.to_string()).collect(),
            flows: nat.flows,
            translations: nat.translations,
            capacity: nat.capacity,
        },
        services: services_view(&pinned, &settings),
        maps: pinned.fill(dir)?,
        monitor_events: pinned.event_loss()?,
        counters: pinned.counters()?,
    })
}

fn services_view(pinned: &Pinned, settings: &netpath_common::Settings) -> ServicesView {
    let addr = |a: [u8; 4], p: [u8; 2]| format!("{}:{}", Ipv4Addr::from(a), u16::from_be_bytes(p));
    let table = pinned.service_table();
    let front_ends = table
        .services
        .iter()
        .map(|(k, svc)| {
            let proto = match k.proto {
                netpath_common::IPPROTO_TCP => "tcp",
                netpath_common::IPPROTO_UDP => "udp",
                _ => "?",
            };
            let (mut ready, mut terminating) = (Vec::new(), Vec::new());
            for (bk, state) in table.backends.range(
                netpath_common::BackendKey {
                    service: *k,
                    backend: Default::default(),
                }..,
            ) {
                if bk.service != *k {
                    break;
                }
                let b = addr(bk.backend.addr, bk.backend.port);
                if *state == netpath_common::BACKEND_READY {
                    ready.push(b);
                } else {
                    terminating.push(b);
                }
            }
            ServiceRow {
                front: format!("{}/{proto}", addr(k.addr, k.port)),
                ready,
                terminating,
                affinity_secs: (svc.flags & netpath_common::SVC_AFFINITY != 0)
                    .then_some(svc.affinity_secs),
                snat_remote: svc.flags & netpath_common::SVC_SNAT_REMOTE != 0,
            }
        })
        .collect();
    let usage = pinned.service_usage();
    ServicesView {
        range: (settings.service_prefix > 0).then(|| {
            format!(
                "{}/{}",
                Ipv4Addr::from(settings.service_ip),
                settings.service_prefix
            )
        }),
        node_ports: format!("{}-{}", settings.node_port_min, settings.node_port_max),
        host_sockets: settings.host_netns_cookie != 0,
        front_ends,
        flows: usage.flows,
        replies: usage.replies,
        affinities: usage.affinities,
        capacity: usage.capacity,
    }
}

/// The agent's process is checked here, the attachments through the kernel, in the
/// agent's network namespace.
fn node_health(agent: Option<&AgentState>) -> Result<Report> {
    let alive = agent.is_some_and(|a| process_alive(a.pid));
    let judge = || -> Result<Report> {
        crate::files::one_shot_runtime()?.block_on(async {
            let nl = Netlink::new()?;
            Ok(health::health(&nl, agent, alive).await)
        })
    };
    match agent
        .filter(|_| alive)
        .and_then(|a| Some((a.pid, a.netns?)))
    {
        Some((pid, id)) if NetnsId::current().ok() != Some(id) => {
            let path = PathBuf::from(format!("/proc/{pid}/ns/net"));
            // The pid could have been reused (or the agent gone) since it published.
            if NetnsId::of(&path).ok() != Some(id) {
                return Ok(Report::failing(
                    "agent alive",
                    format!("pid {pid} no longer serves the published network namespace"),
                ));
            }
            crate::netns::run_in(&path, judge)
                .with_context(|| format!("judge health inside {}", path.display()))
        }
        _ => judge(),
    }
}

/// Prints the snapshot: JSON, or the text a user reads.
pub fn render(s: &Snapshot, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(s)?);
        return Ok(());
    }
    match &s.datapath {
        Some(d) => println!(
            "pins: {}   redirect: {}   tc attach: {}",
            s.pins, d.redirect, d.tc_attach
        ),
        None => println!(
            "pins: {}: NOT READABLE — {}",
            s.pins,
            s.pins_error.as_deref().unwrap_or("")
        ),
    }
    match &s.agent {
        None => println!(
            "agent: no state published in {} (not running?)",
            s.state_dir.display()
        ),
        Some(a) => render_agent(a),
    }
    print_report("ready", &s.ready);
    print_report("healthy", &s.health);
    if let Some(d) = &s.datapath {
        render_datapath(d);
    }
    Ok(())
}

fn render_datapath(s: &DatapathView) {
    println!("\nendpoints ({}):", s.endpoints.len());
    for e in &s.endpoints {
        println!(
            "  {:<15} ifindex {:<5} pod {}  host {}",
            e.ip, e.ifindex, e.pod_mac, e.host_mac
        );
    }
    println!("\nroutes ({}):", s.routes.len());
    for r in &s.routes {
        println!("  {:<18} via {:<15} {}", r.pod_cidr, r.node_ip, r.mode);
    }
    let m = &s.masquerade;
    if m.enabled {
        println!(
            "\nmasquerade: on, ports {}; flows {}/{} (translations {}/{}); exempt: {}",
            m.ports,
            m.flows,
            m.capacity,
            m.translations,
            m.capacity,
            m.exempt.join(", ")
        );
    } else {
        println!("\nmasquerade: off");
    }
    render_services(&s.services);
    println!("\nmaps (entries/capacity):");
    for f in &s.maps {
        match f.entries {
            Some(n) => println!("  {:<14} {n}/{}", f.name, f.capacity),
            None => println!("  {:<14} ring of {} bytes", f.name, f.capacity),
        }
    }
    let loss = s.monitor_events;
    if loss.suppressed + loss.lost > 0 {
        println!(
            "monitor events: {} over the budget, {} lost (ring full)",
            loss.suppressed, loss.lost
        );
    }
    println!("\ncounters:");
    for c in s.counters.iter().filter(|c| c.packets > 0) {
        println!("  {:<10} {:<22} {}", c.program, c.reason, c.packets);
    }
}

fn render_services(v: &ServicesView) {
    let range = v.range.as_deref().unwrap_or("none (set service_cidr)");
    let host = if v.host_sockets {
        "translated"
    } else {
        "NOT translated (no cgroup v2)"
    };
    println!(
        "\nservices: range {range}, node ports {}; the node's own sockets {host}; flows {}/{} (replies {}, affine clients {})",
        v.node_ports, v.flows, v.capacity, v.replies, v.affinities
    );
    for f in &v.front_ends {
        let mut notes = Vec::new();
        if let Some(t) = f.affinity_secs {
            notes.push(format!("affinity {t}s"));
        }
        if f.snat_remote {
            notes.push("remote backends see the node".to_string());
        }
        if !f.terminating.is_empty() {
            notes.push(format!("terminating {}", f.terminating.join(", ")));
        }
        let ready = if f.ready.is_empty() {
            "NO READY BACKEND (refused)".to_string()
        } else {
            f.ready.join(", ")
        };
        let notes = if notes.is_empty() {
            String::new()
        } else {
            format!("  [{}]", notes.join("; "))
        };
        println!("  {:<24} -> {ready}{notes}", f.front);
    }
}

fn render_agent(a: &AgentState) {
    println!(
        "agent: pid {}   ready: {}   reconciles: {}   pod cidr {}   pod mtu {}",
        a.pid,
        a.ready,
        a.reconciles,
        a.pod_cidr
            .map_or_else(|| "none".to_string(), |c| c.to_string()),
        a.pod_mtu
    );
    let watching = if a.store_kind == crate::store::StoreKind::Etcd && !a.store_watching {
        "   (watch not live yet)"
    } else {
        ""
    };
    println!("store: {}{watching}", a.store);
    if a.store_dropped > 0 {
        println!(
            "store: {} datagrams dropped unread (bad tag, replayed or not gossip)",
            a.store_dropped
        );
    }
    if let Some(addr) = &a.metrics_addr {
        println!("metrics: http://{addr}/metrics   health: /healthz   ready: /readyz");
    }
    if let Some(e) = &a.store_error {
        println!("store: UNREACHABLE, forwarding on the last state: {e}");
    }
    if let Some(e) = &a.membership_error {
        println!("membership: LOST — {e}");
    }
    if let Some(e) = &a.spec_error {
        println!("spec: REFUSED, forwarding on the last good one: {e}");
    }
    for p in &a.problems {
        println!("problem: {p}");
    }
    if let Some(b) = &a.bgp {
        render_bgp(b);
    }
    if let Some(w) = &a.wireguard {
        render_wireguard(w);
    }
    if !a.policy.is_empty() {
        println!("network policy (pods it selects; every other pod is open):");
        for (pod, policies) in &a.policy {
            println!("  {pod:<15} {}", policies.join(", "));
        }
    }
}

fn render_wireguard(w: &crate::wireguard::WireguardState) {
    let pid = w.pid.map_or_else(String::new, |p| format!(" (pid {p})"));
    println!(
        "encryption: WireGuard, {} device {}{pid}: {}",
        w.implementation, w.device, w.why
    );
    println!("  public key {}", w.public_key);
    let Some(s) = &w.stats else {
        println!("  no stats from the device yet");
        return;
    };
    for p in &s.peers {
        let handshake = p.handshake_age_ms.map_or_else(
            || "no handshake yet".into(),
            |ms| format!("handshake {:.1} s ago", ms as f64 / 1e3),
        );
        println!(
            "  peer {} at {}: {handshake}, sent {} B, received {} B",
            p.public_key, p.endpoint, p.tx_bytes, p.rx_bytes
        );
    }
    println!(
        "  refused {} datagrams (unknown key, garbage, failed authentication); {} packets \
         for no peer; {} from a source the peer may not use",
        s.refused, s.no_peer, s.spoofed
    );
}

fn render_bgp(b: &crate::bgp::BgpState) {
    let pid = b.pid.map_or_else(|| "none".into(), |p| p.to_string());
    println!(
        "
bgp: BIRD pid {pid}   restarts {}   (birdc -s {} show protocols)",
        b.restarts,
        b.socket.display()
    );
    if let Some(e) = &b.error {
        println!("  error: {e}");
    }
    for s in &b.sessions {
        println!("  session {:<22} {:<6} {}", s.name, s.state, s.info);
    }
    for (net, hop) in &b.routes {
        println!("  learned {net:<18} via {hop}");
    }
    for i in &b.ignored {
        let hop = i.next_hop.map_or_else(|| "-".into(), |h| h.to_string());
        println!(
            "  IGNORED {:<18} via {hop:<15} from {}: {}",
            i.prefix,
            i.from,
            i.why.name()
        );
    }
}

fn print_report(what: &str, r: &Report) {
    if r.ok {
        println!("{what}: yes");
    } else {
        println!("{what}: NO — {}", r.failing.join("; "));
    }
    for w in &r.warnings {
        println!("  warning: {w}");
    }
}
