//! Monitor events: what the programs tell `netpath monitor` about single packets,
//! through the `EVENTS` ring buffer, and the knobs that bound what that costs.
use crate::Ipv4;

/// A dropped packet (every drop reason).
pub const EVENT_DROP: u8 = 1;
/// A sampled forwarded packet (only while a monitor asks for them).
pub const EVENT_TRACE: u8 = 2;

/// One record in `EVENTS`. Addresses and ports as on the wire; for a packet that is
/// not IPv4 only `ether_type`, `ifindex` and `len` say anything.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Event {
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) when the program decided.
    pub time_ns: u64,
    /// A [`crate::Program`] and a [`crate::Reason`], as numbers.
    pub program: u8,
    pub reason: u8,
    /// [`EVENT_DROP`] or [`EVENT_TRACE`].
    pub kind: u8,
    /// IP protocol (0 when not IPv4).
    pub proto: u8,
    /// The interface the packet arrived on.
    pub ifindex: u32,
    pub src: Ipv4,
    pub dst: Ipv4,
    /// TCP/UDP ports; ICMP: type and code in `sport`, 0 in `dport`.
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    /// Packet length in bytes.
    pub len: u32,
    pub ether_type: [u8; 2],
    pub _pad: [u8; 2],
    /// The CPU that saw it.
    pub cpu: u32,
}

/// Monitor settings (index 0 of the `MONITOR` array): written by the agent at start
/// (the budgets) and by `netpath monitor --trace` (the sampling).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MonitorConfig {
    /// Drop events each CPU may emit per second; the rest are only counted.
    pub drops_per_sec: u32,
    /// Trace events each CPU may emit per second.
    pub traces_per_sec: u32,
    /// 0: no trace events (the forwarding path reads this one word and goes on);
    /// N: one forwarded packet in N per CPU is traced.
    pub trace_every: u32,
    pub _pad: u32,
    /// CLOCK_MONOTONIC nanoseconds until which tracing stays on: a monitor renews it
    /// while it runs, so one killed without cleaning up stops costing within seconds.
    pub trace_until_ns: u64,
}

/// Default budgets: enough to see every drop of a misbehaving pod, small enough that
/// a flood costs a bounded amount (the ring buffer holds several seconds of it).
pub const DEFAULT_DROPS_PER_SEC: u32 = 1000;
pub const DEFAULT_TRACES_PER_SEC: u32 = 1000;

/// Per-CPU emission state (`MONITOR_LIMIT`): a one-second window and the totals of
/// what was not emitted.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MonitorLimit {
    /// Start of the current window (CLOCK_MONOTONIC ns).
    pub window_ns: u64,
    pub drops: u32,
    pub traces: u32,
    /// Forwarded packets seen since the last trace sample.
    pub since_sample: u32,
    pub _pad: u32,
    /// Events over the budget (counted, not emitted).
    pub suppressed: u64,
    /// Events the full ring buffer had no room for.
    pub lost: u64,
}

/// Bytes of the `EVENTS` ring buffer (a power of two, whole pages): about 5 000
/// events, seconds of drops at the default budget.
pub const EVENTS_BYTES: u32 = 256 * 1024;
