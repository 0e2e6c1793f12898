//! Handing packets on: into a local pod, or to another node.
use aya_ebpf::{
    bindings::{bpf_redir_neigh, TC_ACT_SHOT},
    helpers::generated::{bpf_redirect, bpf_redirect_neigh, bpf_redirect_peer},
    programs::TcContext,
};
use netpath_common::{Endpoint, Reason, RedirectMode, Route, RouteMode, Settings};
use network_types::eth::EthHdr;

use super::{ipip, packet::header_mut, policy, tunnel, vxlan};

const AF_INET: u32 = 2;

/// Hands a packet to a pod on this node if the pod's ingress policy lets it in.
#[inline(always)]
pub fn to_local_pod(
    ctx: &TcContext,
    dst: &Endpoint,
    settings: Option<&Settings>,
    ok: Reason,
) -> (i32, Reason) {
    if let Some(s) = settings.filter(|s| policy::on(Some(s))) {
        if let Err(r) = policy::ingress(ctx, s) {
            return (TC_ACT_SHOT, r);
        }
    }
    // The policy point may have pulled headers in: no earlier pointer is valid.
    let Some(eth) = header_mut::<EthHdr>(ctx, 0) else {
        return (TC_ACT_SHOT, Reason::DropTruncated);
    };
    into_pod(eth, dst, settings, ok)
}

/// Hands a frame to a pod on this node with the MACs it expects to see (its policy
/// already passed).
#[inline(always)]
pub fn into_pod(
    eth: &mut EthHdr,
    dst: &Endpoint,
    settings: Option<&Settings>,
    ok: Reason,
) -> (i32, Reason) {
    eth.dst_addr = dst.pod_mac;
    eth.src_addr = dst.host_mac;
    let mode = settings
        .and_then(|s| RedirectMode::from_u32(s.redirect_mode))
        .unwrap_or(RedirectMode::Peer);
    // SAFETY: helper calls with plain integer arguments.
    let ret = unsafe {
        match mode {
            RedirectMode::Peer => bpf_redirect_peer(dst.ifindex, 0),
            RedirectMode::Plain => bpf_redirect(dst.ifindex, 0),
        }
    };
    verdict(ret, ok)
}

/// Out of the underlay toward `next_hop` (or wherever the FIB sends the packet's own
/// destination when `None`); the kernel resolves and writes the L2 header.
#[inline(always)]
pub fn to_underlay(ifindex: u32, next_hop: Option<[u8; 4]>, ok: Reason) -> (i32, Reason) {
    // SAFETY: params live on the stack for the call; NULL asks for a FIB lookup.
    let ret = unsafe {
        match next_hop {
            Some(nh) => {
                let mut p: bpf_redir_neigh = core::mem::zeroed();
                p.nh_family = AF_INET;
                p.__bindgen_anon_1.ipv4_nh = u32::from_ne_bytes(nh);
                bpf_redirect_neigh(
                    ifindex,
                    &mut p,
                    core::mem::size_of::<bpf_redir_neigh>() as i32,
                    0,
                )
            }
            None => bpf_redirect_neigh(ifindex, core::ptr::null_mut(), 0, 0),
        }
    };
    verdict(ret, ok)
}

#[inline(always)]
fn verdict(ret: i64, ok: Reason) -> (i32, Reason) {
    if ret == TC_ACT_SHOT as i64 {
        return (TC_ACT_SHOT, Reason::DropRedirectFailed);
    }
    (ret as i32, ok)
}

/// To the node that owns `route`'s pod CIDR: plain IP to the next hop (the owning
/// node, or a router that learned the pod routes), or wrapped for it.
#[inline(always)]
pub fn by_route(ctx: &TcContext, eth: &mut EthHdr, route: &Route, s: &Settings) -> (i32, Reason) {
    match RouteMode::from_u32(route.mode) {
        Some(RouteMode::Direct) => to_underlay(
            s.underlay_ifindex,
            Some(route.next_hop),
            Reason::DirectRouted,
        ),
        Some(RouteMode::Vxlan) => {
            if tunnel::carries(route, s) {
                return tunnel::send(ctx, eth, route, s);
            }
            if vxlan::encapsulate(ctx, route, s).is_err() {
                return (TC_ACT_SHOT, Reason::DropEncapFailed);
            }
            // The agent resolved the next hop (the node itself, or a router for
            // another subnet); without one the helper's FIB lookup finds it.
            let nh = (route.next_hop != [0; 4]).then_some(route.next_hop);
            to_underlay(s.underlay_ifindex, nh, Reason::Encapsulated)
        }
        Some(RouteMode::Ipip) => {
            if ipip::encapsulate(ctx, route, s).is_err() {
                return (TC_ACT_SHOT, Reason::DropEncapFailed);
            }
            let nh = (route.next_hop != [0; 4]).then_some(route.next_hop);
            to_underlay(s.underlay_ifindex, nh, Reason::IpipEncapsulated)
        }
        // The device encrypts it to the owner (an L3 device: the redirect drops the
        // Ethernet header).
        Some(RouteMode::Wireguard) => {
            // SAFETY: a helper call with plain integer arguments.
            verdict(
                unsafe { bpf_redirect(s.wg_ifindex, 0) },
                Reason::ToWireguard,
            )
        }
        Some(RouteMode::NoKey) => (TC_ACT_SHOT, Reason::DropNoKey),
        None => (TC_ACT_SHOT, Reason::DropNoRoute),
    }
}
