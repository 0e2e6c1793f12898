//! Cost as the cluster grows: per-packet work with many routes and endpoints in the
//! maps, and the time to take a large spec to programmed maps and kernel routes.
use std::{net::Ipv4Addr, time::Instant};

use anyhow::{Context, Result};
use netpath::{
    datapath::Pinned,
    net::Ipv4Net,
    netlink::{Netlink, RouteSummary},
    plan::{self, Probed, Underlay},
    reconcile,
    spec::ClusterSpec,
};
use netpath_common::{Endpoint, Route, RouteMode};

use super::{build, tools, warm_up, ControlPlane, PathKind, ScaleSample};
use crate::lab;

/// Fills node 0's maps with `routes` extra /32 routes and `endpoints` extra endpoints
/// that no packet of the test matches, then measures pod -> pod across nodes.
pub(super) fn measure_scale(
    routes: usize,
    endpoints: usize,
    round: usize,
    secs: u32,
) -> Result<ScaleSample> {
    let topo = build(PathKind::NetpathDirect)?;
    let lab = topo.lab();
    let mut pinned = lab.nodes[0].pinned()?;
    add_unused_routes(&mut pinned, 0..routes as u32)?;
    let ep_base = u32::from(Ipv4Addr::new(10, 250, 0, 0));
    for i in 0..endpoints as u32 {
        pinned.insert_endpoint(
            Ipv4Addr::from(ep_base + i),
            Endpoint {
                ifindex: 0,
                pod_mac: [0x0e, 0, 0, 0, 0, 2],
                host_mac: [0x0e, 0, 0, 0, 0, 3],
            },
        )?;
    }
    let e = topo.ends();
    warm_up(&e)?;
    let (pps, cpu_us) = tools::udp_small(&e, secs)?;
    let (p50, _) = tools::latency_us(&e, secs, false)?;
    let map_kib = tools::map_memory_kib(&lab.nodes[0].pin_dir)?;
    let agent_rss_kib = lab
        .agent_pid(0)
        .context("node 0 has no agent")
        .and_then(tools::rss_kib)?;
    Ok(ScaleSample {
        routes,
        endpoints,
        round,
        udp64_kpps: pps / 1e3,
        cpu_ns_per_pkt: cpu_us * 1e3,
        udp_p50_us: p50,
        map_kib,
        agent_rss_kib,
    })
}

/// /32 routes in 100.64.0.0/10 (numbered by `range`) that no packet of the bench
/// matches: what a large cluster puts in a node's ROUTES trie.
pub(super) fn add_unused_routes(pinned: &mut Pinned, range: std::ops::Range<u32>) -> Result<()> {
    let base = u32::from(Ipv4Addr::new(100, 64, 0, 0));
    for i in range {
        pinned.set_route(
            Ipv4Addr::from(base + i),
            32,
            Route {
                node_ip: [192, 168, 56, 250],
                mode: RouteMode::Direct as u32,
                vtep_mac: [0x0e, 0, 0, 0, 0, 1],
                _pad: [0; 2],
                next_hop: [192, 168, 56, 250],
            },
        )?;
    }
    Ok(())
}

/// Time to take a 1000-node cluster spec to programmed maps and kernel routes.
pub(super) fn control_plane(nodes: usize) -> Result<ControlPlane> {
    let mut text = String::from("cluster_cidr = \"10.0.0.0/8\"\nbackend = \"auto\"\n");
    for i in 0..=nodes {
        text += &format!(
            "[[nodes]]\nname = \"n{i}\"\nunderlay = \"172.16.{}.{}/16\"\npod_cidr = \"10.{}.{}.0/24\"\n",
            i / 250,
            i % 250 + 1,
            i / 256,
            i % 256
        );
    }
    let t = Instant::now();
    let spec = ClusterSpec::parse(&text)?;
    let parse_validate_ms = t.elapsed().as_secs_f64() * 1e3;

    let topo = build(PathKind::NetpathLocal)?;
    let lab = topo.lab();
    let node = &lab.nodes[0];
    let mut pinned = node.pinned()?;
    // Every peer behind one on-link router, so the kernel accepts all the routes.
    let gw = Ipv4Addr::new(192, 168, 56, 250);
    let (program_maps_ms, program_kernel_routes_ms) = lab::in_runtime(node.ns.path(), || async {
        let nl = Netlink::new()?;
        let eth0 = nl.index("eth0").await?;
        let underlay = Underlay {
            ifindex: eth0,
            mtu: 1500,
        };
        let table = [RouteSummary {
            nh_id: None,
            dst: Ipv4Net::new(Ipv4Addr::UNSPECIFIED, 0),
            gateway: Some(gw),
            oif: Some(eth0),
            protocol: 4,
            mtu: None,
        }];
        let t = Instant::now();
        let mut want = plan::plan(
            &spec,
            &spec.nodes[0],
            &underlay,
            &Probed::default(),
            &table,
            None,
        );
        for r in want.kernel_routes.values_mut() {
            r.gateway = Some(gw);
        }
        // The node's agent keeps its own settings: only the entries are measured.
        want.settings = pinned.settings()?;
        reconcile::apply_maps(&mut pinned, &want)?;
        let maps_ms = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let now = nl.routes().await?;
        reconcile::apply_routes(&nl, &now, &want).await?;
        Ok((maps_ms, t.elapsed().as_secs_f64() * 1e3))
    })?;
    Ok(ControlPlane {
        nodes,
        parse_validate_ms,
        program_maps_ms,
        program_kernel_routes_ms,
    })
}
