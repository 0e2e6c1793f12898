//! The programs' own diagnostic lines (aya-log), for what should be rare: a map too
//! full to take a new flow, a state that should not happen. They go into the agent's
//! log under the target `netpath::bpf`; per-packet facts are the monitor's (`EVENTS`)
//! and the counters', never lines here. The agent sets `AYA_LOG_LEVEL` at load from
//! its own filter, so a level it would not print costs one global read.
//!
//! Kernel 5.10 allows 512 bytes of stack over a whole call chain, counting every
//! called function at 32 bytes at least, and `from_pod` already needs 448 + 64. So a
//! line's text is literal only (a `&str` argument of run-time length is copied by a
//! `memcpy` call, one frame too many), and the line is written where it is expanded:
//! the hook's module, which the agent reads back as the program's name.
use super::clock::now_ns;

/// A full table drops every new flow until it drains: one line a second says so, the
/// counters say how many.
const LINE_EVERY_NS: u64 = 1_000_000_000;

/// When the last line was written, on any CPU. Racy on purpose: two CPUs may both
/// write in the same second, which costs a line, not a lock.
static mut LAST_LINE_NS: u64 = 0;

/// Whether a line is due: none was written in the last second.
#[inline(always)]
pub fn due() -> bool {
    let t = now_ns();
    // SAFETY: a plain u64 in the object's .bss; a torn or lost update only moves the
    // next line by a second.
    unsafe {
        let last = core::ptr::addr_of_mut!(LAST_LINE_NS);
        let prev = core::ptr::read_volatile(last);
        if prev != 0 && t.wrapping_sub(prev) < LINE_EVERY_NS {
            return false;
        }
        core::ptr::write_volatile(last, t);
    }
    true
}

/// Says, at most once a second, that the hook this expands in dropped a new flow
/// because a flow table is full.
macro_rules! table_full {
    ($ctx:expr, $reason:expr) => {
        match $reason {
            ::netpath_common::Reason::DropNatTableFull if $crate::shared::diag::due() => {
                ::aya_log_ebpf::warn!(
                    $ctx,
                    target: "netpath::bpf",
                    "drop-nat-table-full: the NAT table is full, new flows to the outside are dropped until entries expire"
                )
            }
            ::netpath_common::Reason::DropSvcTableFull if $crate::shared::diag::due() => {
                ::aya_log_ebpf::warn!(
                    $ctx,
                    target: "netpath::bpf",
                    "drop-svc-table-full: the service flow table is full, new flows to services are dropped until entries expire"
                )
            }
            _ => {}
        }
    };
}
pub(crate) use table_full;
