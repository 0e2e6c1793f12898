//! The kernel's VXLAN device in metadata mode as an alternative encapsulation and
//! receive point: the program sets the tunnel metadata and redirects, the kernel
//! writes the outer headers (with a UDP checksum, so forwarding hops keep segments
//! checksum-partial) or, on receive, aggregates frames with its tunnel GRO first.
use aya_ebpf::{
    bindings::{bpf_tunnel_key, TC_ACT_SHOT},
    helpers::generated::{bpf_redirect, bpf_skb_get_tunnel_key, bpf_skb_set_tunnel_key},
    programs::TcContext,
};
use netpath_common::{Reason, Route, Settings, TUNNEL_TX_ROUTED};
use network_types::eth::EthHdr;

/// The key up to and including `tunnel_label`: the size every kernel since 4.x takes.
const KEY_SIZE: u32 = 28;

/// Whether packets for `route` go through the tunnel device.
#[inline(always)]
pub fn carries(route: &Route, s: &Settings) -> bool {
    if s.tunnel_ifindex == 0 {
        return false;
    }
    let routed = route.next_hop != [0; 4] && route.next_hop != route.node_ip;
    s.tunnel_use & TUNNEL_TX_ROUTED != 0 && routed
}

/// Hands the pod's frame to the tunnel device for `route`'s node, addressed VTEP to
/// VTEP as flannel's peers expect.
#[inline(always)]
pub fn send(ctx: &TcContext, eth: &mut EthHdr, route: &Route, s: &Settings) -> (i32, Reason) {
    eth.dst_addr = route.vtep_mac;
    eth.src_addr = s.vtep_mac;
    // SAFETY: a zeroed key is valid; the helper reads KEY_SIZE bytes of it.
    let ret = unsafe {
        let mut key: bpf_tunnel_key = core::mem::zeroed();
        key.tunnel_id = s.vni;
        key.__bindgen_anon_1.remote_ipv4 = u32::from_be_bytes(route.node_ip);
        key.tunnel_ttl = 64;
        bpf_skb_set_tunnel_key(ctx.skb.skb, &mut key, KEY_SIZE, 0)
    };
    if ret != 0 {
        return (TC_ACT_SHOT, Reason::DropTunnelKey);
    }
    // SAFETY: helper call with plain integer arguments.
    let ret = unsafe { bpf_redirect(s.tunnel_ifindex, 0) };
    if ret == TC_ACT_SHOT as i64 {
        return (TC_ACT_SHOT, Reason::DropRedirectFailed);
    }
    (ret as i32, Reason::EncapInTunnel)
}

/// What the tunnel device received a frame with: the sending node's underlay address
/// and the VNI.
pub struct Received {
    pub remote: [u8; 4],
    pub vni: u32,
}

#[inline(always)]
pub fn received(ctx: &TcContext) -> Option<Received> {
    // SAFETY: a zeroed key is valid; the helper writes at most KEY_SIZE bytes.
    unsafe {
        let mut key: bpf_tunnel_key = core::mem::zeroed();
        if bpf_skb_get_tunnel_key(ctx.skb.skb, &mut key, KEY_SIZE, 0) != 0 {
            return None;
        }
        Some(Received {
            remote: key.__bindgen_anon_1.remote_ipv4.to_be_bytes(),
            vni: key.tunnel_id,
        })
    }
}
