//! Monitor events: every drop, and while a monitor traces a sample of forwarded
//! packets, goes into the `EVENTS` ring buffer with its tuple. A per-CPU budget per
//! second bounds what a flood costs; what is over it, or finds the ring full, is only
//! counted (`MONITOR_LIMIT`), so the ring never holds a packet up.
use aya_ebpf::helpers::generated::bpf_get_smp_processor_id;
use netpath_common::{Event, MonitorConfig, Program, Reason, EVENT_DROP, EVENT_TRACE};
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

use super::{
    clock::now_ns,
    maps::{EVENTS, MONITOR, MONITOR_LIMIT},
    packet::{header_mut, Packet, ETH_P_IP},
    stats::count,
};

const SECOND_NS: u64 = 1_000_000_000;

/// Counts the packet's fate and tells a monitor what it should hear of it. With
/// tracing off a forwarded packet costs one array read here.
#[inline(always)]
pub fn observe<C: Packet>(ctx: &C, program: Program, reason: Reason) {
    count(program, reason);
    if !cfg!(feature = "monitor") {
        return;
    }
    let Some(cfg) = MONITOR.get(0) else {
        return;
    };
    let kind = if reason.is_drop() {
        EVENT_DROP
    } else if cfg.trace_every == 0 {
        return;
    } else {
        EVENT_TRACE
    };
    emit(ctx, program, reason, kind, cfg);
}

#[inline(always)]
fn emit<C: Packet>(ctx: &C, program: Program, reason: Reason, kind: u8, cfg: &MonitorConfig) {
    let Some(limit) = MONITOR_LIMIT.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: a per-CPU slot: nothing else on this CPU runs while we do.
    let l = unsafe { &mut *limit };
    let t = now_ns();
    if kind == EVENT_TRACE {
        if t > cfg.trace_until_ns {
            // The monitor that asked stopped renewing: it is gone.
            return;
        }
        l.since_sample += 1;
        if l.since_sample < cfg.trace_every {
            return;
        }
        l.since_sample = 0;
    }
    if t.wrapping_sub(l.window_ns) >= SECOND_NS {
        l.window_ns = t;
        l.drops = 0;
        l.traces = 0;
    }
    let (used, budget) = if kind == EVENT_DROP {
        (&mut l.drops, cfg.drops_per_sec)
    } else {
        (&mut l.traces, cfg.traces_per_sec)
    };
    if *used >= budget {
        l.suppressed += 1;
        return;
    }
    *used += 1;
    let Some(mut entry) = EVENTS.reserve(0) else {
        l.lost += 1;
        return;
    };
    entry.write(describe(ctx, program, reason, kind, t));
    entry.submit(0);
}

/// The event for the packet as the program leaves it (after a rewrite, the new
/// headers). Ports only behind a 20-byte IPv4 header: fixed offsets the verifier
/// takes on every kernel.
#[inline(always)]
fn describe<C: Packet>(ctx: &C, program: Program, reason: Reason, kind: u8, t: u64) -> Event {
    let mut ev = Event {
        time_ns: t,
        program: program as u8,
        reason: reason as u8,
        kind,
        ifindex: ctx.ifindex(),
        len: ctx.len(),
        // SAFETY: helper without arguments.
        cpu: unsafe { bpf_get_smp_processor_id() },
        ..Event::default()
    };
    // Not `packet::eth_ipv4`: an event names the ethertype of non-IPv4 frames too.
    let Some(eth) = header_mut::<EthHdr>(ctx, 0) else {
        return ev;
    };
    ev.ether_type = eth.ether_type.to_ne_bytes();
    if u16::from_be(eth.ether_type) != ETH_P_IP {
        return ev;
    }
    let Some(ip) = header_mut::<Ipv4Hdr>(ctx, EthHdr::LEN) else {
        return ev;
    };
    ev.src = ip.src_addr;
    ev.dst = ip.dst_addr;
    ev.proto = ip.proto;
    if ip.vihl & 0x0f == 5 {
        if let Some(l4) = header_mut::<[u8; 4]>(ctx, EthHdr::LEN + Ipv4Hdr::LEN) {
            ev.sport = [l4[0], l4[1]];
            ev.dport = [l4[2], l4[3]];
        }
    }
    ev
}
