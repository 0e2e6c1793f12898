//! `netpath status`: the agent's published state and a snapshot of the pinned maps.
use std::path::Path;

use anyhow::Result;

use crate::{
    datapath::Pinned,
    health::{self, Report},
    net::Mac,
    netlink::Netlink,
    state::{process_alive, AgentState},
};

fn mac_str(m: &[u8; 6]) -> String {
    Mac(*m).to_string()
}

pub fn show(dir: &Path, state_dir: &Path, json: bool) -> Result<()> {
    let agent = AgentState::read(state_dir)?;
    let pinned = Pinned::open(dir)?;
    let endpoints = pinned.endpoints()?;
    let counters = pinned.counters()?;
    let mode = pinned.redirect_mode()?;
    let routes = pinned.routes()?;
    let nodes = pinned.nodes()?;
    let settings = pinned.settings()?;
    let nat = pinned.nat_usage();
    let ready = health::readiness(agent.as_ref());
    let healthy = node_health(agent.as_ref())?;
    let fill = pinned.fill(dir)?;
    let loss = pinned.event_loss()?;
    let masquerade = serde_json::json!({
        "enabled": settings.masquerade != 0,
        "ports": format!("{}-{}", settings.nat_port_min, settings.nat_port_max),
        "exempt": pinned.nat_exempt()?.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        "flows": nat.flows,
        "translations": nat.translations,
        "capacity": nat.capacity,
    });
    if json {
        let eps: Vec<_> = endpoints
            .iter()
            .map(|(ip, ep)| {
                serde_json::json!({
                    "ip": ip.to_string(),
                    "ifindex": ep.ifindex,
                    "pod_mac": mac_str(&ep.pod_mac),
                    "host_mac": mac_str(&ep.host_mac),
                })
            })
            .collect();
        let doc = serde_json::json!({
            "pins": dir.display().to_string(),
            "agent": agent,
            "redirect": mode.name(),
            "tc_attach": pinned.tc_attach()?.name(),
            "endpoints": eps,
            "routes": routes.iter().map(|(net, p, r)| serde_json::json!({
                "pod_cidr": format!("{net}/{p}"),
                "node_ip": std::net::Ipv4Addr::from(r.node_ip).to_string(),
                "mode": netpath_common::RouteMode::from_u32(r.mode).map(|m| m.name()).unwrap_or("invalid"),
                "vtep_mac": mac_str(&r.vtep_mac),
            })).collect::<Vec<_>>(),
            "nodes": nodes.iter().map(|(ip, _)| ip.to_string()).collect::<Vec<_>>(),
            "masquerade": masquerade,
            "ready": ready,
            "health": healthy,
            "maps": fill,
            "monitor_events": loss,
            "counters": counters,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!(
        "pins: {}   redirect: {}   tc attach: {}",
        dir.display(),
        mode.name(),
        pinned.tc_attach()?.name()
    );
    match &agent {
        None => println!(
            "agent: no state published in {} (not running?)",
            state_dir.display()
        ),
        Some(a) => {
            println!(
                "agent: pid {}   ready: {}   reconciles: {}   pod cidr {}   pod mtu {}",
                a.pid, a.ready, a.reconciles, a.pod_cidr, a.pod_mtu
            );
            let watching = if a.store.starts_with("etcd") && !a.store_watching {
                "   (watch not live yet)"
            } else {
                ""
            };
            println!("store: {}{watching}", a.store);
            if let Some(addr) = &a.metrics_addr {
                println!("metrics: http://{addr}/metrics   health: /healthz   ready: /readyz");
            }
            if let Some(e) = &a.store_error {
                println!("store: UNREACHABLE, forwarding on the last state: {e}");
            }
            if let Some(e) = &a.spec_error {
                println!("spec: REFUSED, forwarding on the last good one: {e}");
            }
            for p in &a.problems {
                println!("problem: {p}");
            }
        }
    }
    print_report("ready", &ready);
    print_report("healthy", &healthy);
    println!("\nendpoints ({}):", endpoints.len());
    for (ip, ep) in &endpoints {
        println!(
            "  {ip:<15} ifindex {:<5} pod {}  host {}",
            ep.ifindex,
            mac_str(&ep.pod_mac),
            mac_str(&ep.host_mac)
        );
    }
    println!("\nroutes ({}):", routes.len());
    for (net, p, r) in &routes {
        println!(
            "  {:<18} via {:<15} {}",
            format!("{net}/{p}"),
            std::net::Ipv4Addr::from(r.node_ip),
            netpath_common::RouteMode::from_u32(r.mode)
                .map(|m| m.name())
                .unwrap_or("invalid")
        );
    }
    if settings.masquerade != 0 {
        println!(
            "\nmasquerade: on, ports {}-{}; flows {}/{} (translations {}/{}); exempt: {}",
            settings.nat_port_min,
            settings.nat_port_max,
            nat.flows,
            nat.capacity,
            nat.translations,
            nat.capacity,
            pinned
                .nat_exempt()?
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    } else {
        println!("\nmasquerade: off");
    }
    println!("\nmaps (entries/capacity):");
    for f in &fill {
        match f.entries {
            Some(n) => println!("  {:<14} {n}/{}", f.name, f.capacity),
            None => println!("  {:<14} ring of {} bytes", f.name, f.capacity),
        }
    }
    if loss.suppressed + loss.lost > 0 {
        println!(
            "monitor events: {} over the budget, {} lost (ring full)",
            loss.suppressed, loss.lost
        );
    }
    println!("\ncounters:");
    for c in counters.iter().filter(|c| c.packets > 0) {
        println!("  {:<10} {:<22} {}", c.program, c.reason, c.packets);
    }
    Ok(())
}

/// The agent's process is checked here, the attachments through the kernel.
fn node_health(agent: Option<&AgentState>) -> Result<Report> {
    let alive = agent.is_some_and(|a| process_alive(a.pid));
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let nl = Netlink::new()?;
            Ok(health::health(&nl, agent, alive).await)
        })
}

fn print_report(what: &str, r: &Report) {
    if r.ok {
        println!("{what}: yes");
    } else {
        println!("{what}: NO — {}", r.failing.join("; "));
    }
}
