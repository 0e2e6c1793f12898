//! Starting an agent: the spec from its source, the node's underlay found (waited
//! for), the programs loaded, pinned and attached.
use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};
use netpath_common::{RouteMode, TcAttach};
use tokio::{
    signal::unix::Signal,
    sync::{mpsc, Notify},
};

use super::Source;
use crate::{
    datapath::{self, Loaded, Pinned},
    ipam,
    net::Ipv4Net,
    netlink::Netlink,
    plan::{self, Probed, Underlay},
    reconcile, serve,
    spec::{derived_vtep_mac, Backend, ClusterSpec, Decap, NodeSpec, PortRange, VxlanDevice},
    state::AgentState,
    store::{self, Joining, StoreKind, Update},
    tunnel,
};

/// The spec as the store gives it first, and how the agent follows it from here.
pub struct Opened {
    pub spec: ClusterSpec,
    /// The store's updates: its task runs from here on (an etcd lease must be kept
    /// alive while the programs load).
    pub updates: mpsc::Receiver<Update>,
    /// Asks the store to read again.
    pub reread: Arc<Notify>,
    pub store_kind: StoreKind,
    /// Where, for people: `file PATH` or `etcd ENDPOINTS under PREFIX`.
    pub store: String,
    /// The spec file, with the file store.
    pub spec_file: Option<PathBuf>,
    /// Why the node may not hand out addresses from its pod CIDR (etcd: another
    /// node holds the subnet its pods' addresses are from).
    pub membership_error: Option<String>,
    /// Records the store holds that were left out of the spec, each named with
    /// its field.
    pub left_out: Vec<String>,
}

/// Joins the store (reads the spec file; in etcd or by gossip, holds a pod CIDR)
/// and starts following it.
pub async fn open_source(
    source: &Source,
    node: &str,
    state_dir: &Path,
    nl: &Netlink,
) -> Result<Opened> {
    let joining = match source.kind() {
        StoreKind::File => None,
        _ => Some(joining(source.underlay(), nl, state_dir).await?),
    };
    let store = store::join(source, node, joining).await?;
    let (spec, left_out) = store.spec()?;
    let membership_error = store.lost();
    let store_kind = store.kind();
    let (tx, updates) = mpsc::channel(64);
    let reread = Arc::new(Notify::new());
    tokio::spawn(store.run(tx, reread.clone()));
    Ok(Opened {
        spec,
        updates,
        reread,
        store_kind,
        store: source.describe(),
        spec_file: match source {
            Source::File(path) => Some(path.clone()),
            _ => None,
        },
        membership_error,
        left_out,
    })
}

/// What a node joining a store brings: its underlay address (the default route's
/// interface's unless given), the addresses its pods hold, its VTEP MAC.
async fn joining<'a>(
    underlay: Option<Ipv4Net>,
    nl: &Netlink,
    state_dir: &'a Path,
) -> Result<Joining<'a>> {
    let underlay = match underlay {
        Some(u) => u,
        None => default_route_address(nl).await?,
    };
    // A damaged book is the CNI plugin's to report; here it only means the node has
    // no pods' subnet to ask for.
    let held = held_addresses(state_dir).unwrap_or_else(|e| {
        tracing::warn!("{e:#}");
        Vec::new()
    });
    Ok(Joining {
        underlay,
        held,
        mac: derived_vtep_mac(underlay.addr),
        state_dir,
    })
}

/// The addresses this node's pods hold (its address book, which outlives agents),
/// read without the book's lock: a CNI call holding it never stalls the agent.
pub fn held_addresses(state_dir: &Path) -> Result<Vec<Ipv4Addr>> {
    let book = ipam::Store::read(state_dir)
        .with_context(|| format!("read the address book in {}", state_dir.display()))?;
    Ok(book.allocations.keys().copied().collect())
}

/// The datapath as started: loaded programs (held until the agent stops) and what
/// was found or made on the node.
pub struct Started {
    pub loaded: Loaded,
    pub underlay: Underlay,
    pub underlay_name: String,
    pub probed: Probed,
    pub tc_attach: TcAttach,
    pub reattached: usize,
    /// The node's WireGuard device, with `encryption = "wireguard"`.
    pub wireguard: Option<super::encryption::Running>,
}

/// Where on the host a node's datapath lives, and the agent's choices for it.
pub struct Place<'a> {
    /// The pins.
    pub dir: &'a Path,
    pub state_dir: &'a Path,
    /// The underlay interface.
    pub ifindex: u32,
    pub cgroup: Option<&'a Path>,
    pub wireguard: crate::wireguard::Implementation,
}

/// Loads and pins the programs in `dir`, attaches them to the underlay (and the
/// node's VXLAN or WireGuard device when the spec wants one) and swaps them into
/// every pod's veth.
pub async fn start_datapath(
    nl: &Netlink,
    spec: &ClusterSpec,
    local: &NodeSpec,
    place: Place<'_>,
) -> Result<Started> {
    let Place {
        dir,
        state_dir,
        ifindex,
        cgroup,
        wireguard,
    } = place;
    let link = nl
        .links()
        .await?
        .into_iter()
        .find(|l| l.index == ifindex)
        .ok_or_else(|| anyhow!("underlay link {ifindex} vanished"))?;
    let underlay = Underlay {
        ifindex,
        mtu: link.mtu.unwrap_or(1500),
    };
    let mut loaded = datapath::load_and_pin(dir)?;
    loaded.forward_logs();
    let tc_attach = loaded.attach_underlay(&link.name, spec.settings.decap == Decap::Xdp)?;
    let mut probed = Probed {
        encap_flags: encap_flags(),
        tc_attach: tc_attach as u32,
        ..Default::default()
    };
    match cgroup
        .map(Path::to_path_buf)
        .or_else(datapath::cgroup2_mount)
    {
        Some(root) if datapath::is_cgroup2(&root) => {
            probed.netns_cookie = loaded.attach_sockets(&root).with_context(|| {
                format!(
                    "attach the ClusterIP translation for the node's own sockets to {}",
                    root.display()
                )
            })?;
        }
        Some(root) => bail!("--cgroup {}: not a cgroup v2 mount", root.display()),
        None => tracing::warn!(
            "no cgroup v2 is mounted: the node's own processes reach no ClusterIP (pods do)"
        ),
    }
    let tunnel_wanted = spec.settings.backend != Backend::Direct
        && spec.overlay_mode() == RouteMode::Vxlan
        && spec.settings.vxlan_device != VxlanDevice::Off;
    if tunnel_wanted {
        let mtu = spec.pod_mtu(underlay.mtu);
        let index = tunnel::ensure(nl, spec.settings.port, local.vtep_mac, mtu)
            .await
            .context("set up the node's VXLAN device")?;
        loaded.attach_tunnel(tunnel::NAME, tc_attach)?;
        probed.tunnel_ifindex = index;
        probed.tunnel_use = spec.settings.vxlan_device.tunnel_use();
    }
    let wireguard = super::encryption::ensure(
        nl,
        &mut loaded,
        state_dir,
        spec,
        local,
        underlay.mtu,
        tc_attach,
        wireguard,
    )
    .await
    .context("set up the node's WireGuard device")?;
    probed.wg_ifindex = wireguard.as_ref().map_or(0, |w| w.ifindex);
    // An earlier agent's settings are in force until now; the new ones before a
    // tunnel they named goes, so no packet is sent to a device that is gone.
    let settings = plan::settings(spec, local, &underlay, &probed);
    reconcile::apply_settings(&mut Pinned::open(dir)?, settings)?;
    if !tunnel_wanted {
        // One an earlier agent made with another spec: it would hold the VXLAN port.
        tunnel::remove(nl).await?;
    }
    // An upgrade: the pods' veths get the programs just loaded, in place.
    let reattached = datapath::reattach_from_pod(dir)?;
    Ok(Started {
        loaded,
        underlay,
        underlay_name: link.name,
        probed,
        tc_attach,
        reattached,
        wireguard,
    })
}

/// The interface holding the node's underlay address. A node whose network is not
/// up yet (the agent started first) is waited for, saying so in /readyz and every
/// 10 s in the log; `None`: stopped by a signal meanwhile.
pub async fn wait_for_underlay(
    nl: &Netlink,
    local: &NodeSpec,
    shared: &serve::Shared,
    early: &mut AgentState,
    term: &mut Signal,
    int: &mut Signal,
) -> Result<Option<u32>> {
    let mut said = None::<Instant>;
    loop {
        if let Some((ifindex, _)) = nl.address_owner(local.ip()).await? {
            return Ok(Some(ifindex));
        }
        let why = format!(
            "waiting for an interface with {}, node {}'s underlay address in the spec",
            local.ip(),
            local.name
        );
        if said.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            tracing::warn!("{why}");
            said = Some(Instant::now());
        }
        early.waiting = Some(why);
        shared.set_state(early);
        tokio::select! {
            _ = term.recv() => return Ok(None),
            _ = int.recv() => return Ok(None),
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

/// Translated ports must never be ones the node's own connections pick: the node's
/// ephemeral range (this network namespace's `ip_local_port_range`) must lie outside
/// the masquerade range.
pub fn check_nat_ports(spec: &ClusterSpec) -> Result<()> {
    if !spec.settings.masquerade {
        return Ok(());
    }
    const SYSCTL: &str = "/proc/sys/net/ipv4/ip_local_port_range";
    let text = std::fs::read_to_string(SYSCTL).with_context(|| format!("read {SYSCTL}"))?;
    let local: PortRange = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .join("-")
        .parse()
        .map_err(|e| anyhow!("{SYSCTL}: {e}"))?;
    let nat = spec.settings.masquerade_ports;
    if local.overlaps(&nat) {
        bail!(
            "masquerade_ports {nat} overlap this node's ephemeral ports {local} \
             (net.ipv4.ip_local_port_range): translated flows could collide with the node's \
             own connections; move masquerade_ports or the sysctl apart"
        );
    }
    Ok(())
}

/// The address (with prefix) of the interface holding the default route: the
/// underlay, unless the operator says otherwise.
async fn default_route_address(nl: &Netlink) -> Result<Ipv4Net> {
    let oif = nl
        .routes()
        .await?
        .into_iter()
        .find(|r| r.dst.prefix == 0)
        .and_then(|r| r.oif)
        .ok_or_else(|| anyhow!("no default route here: pass --underlay ADDRESS/PREFIX"))?;
    nl.addresses_of(oif)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| {
            anyhow!("the default route's interface {oif} has no IPv4 address: pass --underlay")
        })
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
