//! Bounds-checked access to headers in direct packet memory, for TC and XDP alike,
//! and the Ethernet + IPv4 prologue every program starts with.
use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    programs::{TcContext, XdpContext},
};
use netpath_common::Reason;
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

/// A program context with direct packet access: the one thing a header check needs,
/// so the same check serves a TC and an XDP hook (as Cilium's `overloadable_skb.h` /
/// `overloadable_xdp.h` do).
pub trait Packet {
    /// Address of the first byte of the linear packet data.
    fn data(&self) -> usize;
    /// Address one past its last byte.
    fn data_end(&self) -> usize;
    /// The interface the packet arrived on.
    fn ifindex(&self) -> u32;
    /// The whole packet's length in bytes.
    fn len(&self) -> u32;
}

impl Packet for TcContext {
    #[inline(always)]
    fn data(&self) -> usize {
        TcContext::data(self)
    }

    #[inline(always)]
    fn data_end(&self) -> usize {
        TcContext::data_end(self)
    }

    #[inline(always)]
    fn ifindex(&self) -> u32 {
        // SAFETY: the context pointer is valid for the program's whole run.
        unsafe { (*self.skb.skb).ifindex }
    }

    #[inline(always)]
    fn len(&self) -> u32 {
        TcContext::len(self)
    }
}

impl Packet for XdpContext {
    #[inline(always)]
    fn data(&self) -> usize {
        XdpContext::data(self)
    }

    #[inline(always)]
    fn data_end(&self) -> usize {
        XdpContext::data_end(self)
    }

    #[inline(always)]
    fn ifindex(&self) -> u32 {
        // SAFETY: the context pointer is valid for the program's whole run.
        unsafe { (*self.ctx).ingress_ifindex }
    }

    #[inline(always)]
    fn len(&self) -> u32 {
        (XdpContext::data_end(self) - XdpContext::data(self)) as u32
    }
}

/// A `&mut T` at `offset` into the linear packet data, if the whole `T` is there.
#[inline(always)]
pub fn header_mut<T>(ctx: &impl Packet, offset: usize) -> Option<&'static mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return None;
    }
    // SAFETY: the range was checked against data_end just above.
    Some(unsafe { &mut *((start + offset) as *mut T) })
}

/// The Ethernet + IPv4 prologue: both headers when the frame says IPv4 and holds a
/// whole IPv4 header, else `NonIpv4` (no Ethernet header, or another ethertype) or
/// `DropTruncated` (IPv4 cut short). Each caller decides what those mean for it.
#[inline(always)]
pub fn eth_ipv4(ctx: &impl Packet) -> Result<(&'static mut EthHdr, &'static mut Ipv4Hdr), Reason> {
    let Some(eth) = header_mut::<EthHdr>(ctx, 0) else {
        return Err(Reason::NonIpv4);
    };
    if u16::from_be(eth.ether_type) != ETH_P_IP {
        return Err(Reason::NonIpv4);
    }
    let Some(ip) = header_mut::<Ipv4Hdr>(ctx, EthHdr::LEN) else {
        return Err(Reason::DropTruncated);
    };
    Ok((eth, ip))
}

/// `eth_ipv4` as a TC ingress from outside the node judges it: a frame that is not
/// IPv4 is the stack's, a cut-short IPv4 header is dropped under its reason.
#[inline(always)]
pub fn eth_ipv4_ingress(
    ctx: &TcContext,
) -> Result<(&'static mut EthHdr, &'static mut Ipv4Hdr), (i32, Reason)> {
    eth_ipv4(ctx).map_err(|reason| match reason {
        Reason::NonIpv4 => (TC_ACT_OK, reason),
        _ => (TC_ACT_SHOT, reason),
    })
}

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
