//! The programs' own diagnostic lines (aya-log), for what should be rare: a map too
//! full to take a new flow, a state that should not happen. They go into the agent's
//! log under the target `netpath::bpf`; per-packet facts are the monitor's (`EVENTS`)
//! and the counters', never lines here. The agent sets `AYA_LOG_LEVEL` at load from
//! its own filter, so a level it would not print costs one global read.
use aya_ebpf::EbpfContext;
use aya_log_ebpf::warn;
use netpath_common::{Program, Reason};

use super::clock::now_ns;

/// A full table drops every new flow until it drains: one line a second says so, the
/// counters say how many.
const LINE_EVERY_NS: u64 = 1_000_000_000;

/// When the last line was written, on any CPU. Racy on purpose: two CPUs may both
/// write in the same second, which costs a line, not a lock.
static mut LAST_LINE_NS: u64 = 0;

/// Says that `program` dropped a new flow because `reason`'s table is full.
#[inline(always)]
pub fn table_full<C: EbpfContext>(ctx: &C, program: Program, reason: Reason) {
    let t = now_ns();
    // SAFETY: a plain u64 in the object's .bss; a torn or lost update only moves the
    // next line by a second.
    unsafe {
        let last = core::ptr::addr_of_mut!(LAST_LINE_NS);
        if recent(core::ptr::read_volatile(last), t) {
            return;
        }
        core::ptr::write_volatile(last, t);
    }
    warn!(
        ctx,
        target: "netpath::bpf",
        "{}: {}: the table is full, new flows are dropped until entries expire",
        program.name(),
        reason.name()
    );
}

#[inline(always)]
fn recent(last: u64, now: u64) -> bool {
    last != 0 && now.wrapping_sub(last) < LINE_EVERY_NS
}
