//! The programs' one clock.
use aya_ebpf::helpers::generated::bpf_ktime_get_ns;

/// CLOCK_MONOTONIC in nanoseconds: what every timestamp in the maps and events holds,
/// and what the agent's collectors compare them with.
#[inline(always)]
pub fn now_ns() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { bpf_ktime_get_ns() }
}
