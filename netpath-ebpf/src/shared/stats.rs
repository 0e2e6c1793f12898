//! Per-CPU fate counters.
use netpath_common::{stats_index, Program, Reason};

use super::maps::STATS;

#[inline(always)]
pub fn count(program: Program, reason: Reason) {
    if let Some(slot) = STATS.get_ptr_mut(stats_index(program, reason)) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU while we run.
        unsafe { *slot += 1 };
    }
}
