//! The node agent: loads and pins the datapath, attaches it to the underlay, turns the
//! cluster spec into map contents and kernel routes, then holds it until told to stop.
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use aya::programs::TcAttachType;
use netpath_common::{RedirectMode, RouteMode, Settings, VXLAN_OVERHEAD};

use crate::{
    config::{ClusterSpec, NodeSpec},
    datapath,
    netlink::{self, Netlink},
    reconcile,
};

pub struct AgentArgs {
    pub spec: ClusterSpec,
    pub node: String,
    /// Pin directory; `<bpffs_root>/<node>` when absent.
    pub pin_dir: Option<PathBuf>,
    pub keep_pins: bool,
}

/// What the agent set up and must undo on a clean stop.
struct Installed {
    dir: PathBuf,
    underlay: String,
    kernel_routes: Vec<(std::net::Ipv4Addr, u8)>,
}

pub fn run(args: AgentArgs) -> Result<()> {
    let local = args.spec.node(&args.node)?.clone();
    let dir = args
        .pin_dir
        .clone()
        .unwrap_or_else(|| datapath::node_dir(&args.spec.bpffs_root, &local.name));
    let (installed, mut loaded) = start(&args.spec, &local, &dir)?;
    let logger = match loaded.logger() {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!("kernel-side logs unavailable: {e:#}");
            None
        }
    };
    wait_until_signal(logger)?;
    drop(loaded);
    if args.keep_pins {
        tracing::info!("stopping; pins kept, pods keep their datapath");
        return Ok(());
    }
    cleanup(&installed)
}

fn start(
    spec: &ClusterSpec,
    local: &NodeSpec,
    dir: &Path,
) -> Result<(Installed, datapath::Loaded)> {
    let nl = Netlink::new()?;
    let (ifindex, _) = nl.address_owner(local.ip())?.ok_or_else(|| {
        anyhow!(
            "no interface here holds {}, node {}'s underlay address in the spec",
            local.ip(),
            local.name
        )
    })?;
    let link = nl
        .links()?
        .into_iter()
        .find(|l| l.index == ifindex)
        .ok_or_else(|| anyhow!("underlay link {ifindex} vanished"))?;
    let underlay_mtu = link.mtu.unwrap_or(1500);
    let mode: RedirectMode = spec.redirect.into();
    let settings = Settings {
        redirect_mode: mode as u32,
        underlay_ifindex: ifindex,
        node_ip: local.ip().octets(),
        cluster_ip: spec.cluster_cidr.addr.octets(),
        cluster_prefix: spec.cluster_cidr.prefix as u32,
        vni: spec.vni,
        vxlan_port: spec.port,
        vtep_mac: local.vtep_mac,
        encap_flags: encap_flags(),
        tc_attach: datapath::preferred_tc_attach() as u32,
    };
    let mut loaded = datapath::load_and_pin(dir, settings)
        .with_context(|| format!("load datapath for node {}", local.name))?;
    let tc_attach = loaded.attach_underlay(&link.name, spec.decap == crate::config::Decap::Xdp)?;

    // The node's own traffic to remote pods follows kernel routes: straight to the
    // owning node (direct), or to the same next hop as its underlay address, where the
    // egress program wraps it in VXLAN (with room for the headers in the route MTU).
    // The programs get the same next hops, sparing them a FIB lookup per packet.
    let table = nl.routes()?;
    let mut hops = std::collections::BTreeMap::new();
    for peer in spec.nodes.iter().filter(|n| n.name != local.name) {
        let gw = if local.underlay.contains(peer.ip()) {
            peer.ip()
        } else {
            match netlink::next_hop(&table, peer.ip()) {
                Some(Some(gw)) => gw,
                Some(None) => peer.ip(),
                None => bail!(
                    "no route to node {}'s underlay address {}: the underlay must connect the nodes",
                    peer.name,
                    peer.ip()
                ),
            }
        };
        hops.insert(peer.name.clone(), gw);
    }
    let want = reconcile::desired(spec, local, |p| hops.get(&p.name).copied());
    let mut pinned = datapath::Pinned::open(dir)?;
    let changed = reconcile::apply(&mut pinned, &want)?;

    let mut kernel_routes = Vec::new();
    for peer in spec.nodes.iter().filter(|n| n.name != local.name) {
        let route_mode = spec.route_mode(local, peer);
        let gw = hops[&peer.name];
        let mtu = (route_mode == RouteMode::Vxlan).then_some(underlay_mtu - VXLAN_OVERHEAD);
        nl.replace_route_mtu(
            peer.pod_cidr.addr,
            peer.pod_cidr.prefix,
            ifindex,
            Some(gw),
            mtu,
        )?;
        kernel_routes.push((peer.pod_cidr.addr, peer.pod_cidr.prefix));
        tracing::info!(
            peer = %peer.name,
            pod_cidr = %peer.pod_cidr,
            via = %gw,
            mode = route_mode.name(),
            "route"
        );
    }
    tracing::info!(
        node = %local.name,
        pins = %dir.display(),
        underlay = %link.name,
        redirect = mode.name(),
        backend = spec.backend.name(),
        decap = spec.decap.name(),
        tc_attach = tc_attach.name(),
        kernel = %kernel_release(),
        map_changes = changed,
        pod_mtu = spec.pod_mtu(underlay_mtu),
        "agent ready"
    );
    Ok((
        Installed {
            dir: dir.to_path_buf(),
            underlay: link.name,
            kernel_routes,
        },
        loaded,
    ))
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// `BPF_F_ADJ_ROOM_ENCAP_L2_ETH` tells GSO the inner L2 is Ethernet; 5.15 knows it,
/// older kernels reject unknown flags, so only ask for it where it exists.
fn encap_flags() -> u32 {
    const BPF_F_ADJ_ROOM_ENCAP_L2_ETH: u32 = 1 << 6;
    match aya::util::KernelVersion::current() {
        Ok(v) if v >= aya::util::KernelVersion::new(5, 15, 0) => BPF_F_ADJ_ROOM_ENCAP_L2_ETH,
        _ => 0,
    }
}

/// Blocks until SIGINT or SIGTERM.
pub fn wait_for_stop() -> Result<()> {
    wait_until_signal(None)
}

type Logger = aya_log::EbpfLogger<&'static dyn log::Log>;

/// Blocks until SIGINT or SIGTERM, meanwhile forwarding the programs' log records
/// (drops worth a look) to this process's log.
fn wait_until_signal(logger: Option<Logger>) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        if let Some(logger) = logger {
            // SAFETY: the logger owns its ring buffer's fd for as long as the AsyncFd
            // holds the logger, and always reports that same fd.
            let mut fd = unsafe {
                tokio::io::unix::AsyncFd::register_with_interest(
                    logger,
                    tokio::io::Interest::READABLE,
                )
            }
            .map_err(|e| anyhow::anyhow!("watch the eBPF log ring: {}", e.into_parts().1))?;
            tokio::spawn(async move {
                while let Ok(mut ready) = fd.readable_mut().await {
                    ready.get_inner_mut().flush();
                    ready.clear_ready();
                }
            });
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r?,
            _ = term.recv() => {}
        }
        Ok(())
    })
}

/// Detaches from every endpoint's veth and the underlay, removes the kernel routes
/// and the pins.
fn cleanup(i: &Installed) -> Result<()> {
    if let Ok(pinned) = datapath::Pinned::open(&i.dir) {
        for (ip, ep) in pinned.endpoints()? {
            match ifname(ep.ifindex) {
                Some(name) => {
                    if let Err(e) = datapath::detach(&i.dir, &name, TcAttachType::Ingress) {
                        tracing::warn!(%ip, "{e:#}");
                    }
                }
                None => tracing::debug!(%ip, "veth already gone"),
            }
        }
    }
    for hook in [TcAttachType::Ingress, TcAttachType::Egress] {
        if let Err(e) = datapath::detach(&i.dir, &i.underlay, hook) {
            tracing::warn!("{e:#}");
        }
    }
    let nl = Netlink::new()?;
    for (net, prefix) in &i.kernel_routes {
        if let Err(e) = nl.delete_route(*net, *prefix) {
            tracing::warn!("{e:#}");
        }
    }
    datapath::remove_pins(&i.dir)?;
    tracing::info!(pins = %i.dir.display(), "stopped; programs detached, routes and pins removed");
    Ok(())
}

fn ifname(index: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf has IF_NAMESIZE bytes as the call requires.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: on success the buffer holds a NUL-terminated name.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}
