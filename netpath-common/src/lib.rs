//! Types shared by the eBPF programs and the userspace agent.
//!
//! Everything here is `#[repr(C)]` plain data: the kernel side reads it out of
//! maps, the user side writes it, and bpftool prints it through BTF. Addresses
//! are stored as byte arrays in network order so dumps read as `[10,244,1,2]`.
#![no_std]

/// IPv4 address in network byte order.
pub type Ipv4 = [u8; 4];

/// Gateway address every pod routes through; the host-side veth answers ARP for it.
pub const POD_GATEWAY: Ipv4 = [169, 254, 1, 1];

/// Name of each map and program, used by both the ELF object and the pins.
pub mod names {
    pub const ENDPOINTS: &str = "ENDPOINTS";
    pub const STATS: &str = "STATS";
    pub const SETTINGS: &str = "SETTINGS";
    pub const FROM_POD: &str = "from_pod";
}

/// A pod on this node, value of the `ENDPOINTS` map keyed by the pod's IPv4.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Host-side veth of the pod.
    pub ifindex: u32,
    /// MAC of the pod's own interface (destination of frames into the pod).
    pub pod_mac: [u8; 6],
    /// MAC of the host-side veth (source of frames into the pod, answer to ARP).
    pub host_mac: [u8; 6],
}

/// Tunables the agent writes once at start-up (index 0 of the `SETTINGS` array).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Settings {
    /// How a frame for a local pod is handed over; one of [`RedirectMode`].
    pub redirect_mode: u32,
}

/// How the from-pod program hands a frame to another local pod.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedirectMode {
    /// `bpf_redirect_peer`: straight into the pod's namespace, skipping the host-side backlog.
    Peer = 0,
    /// `bpf_redirect` to the host-side veth's egress.
    Plain = 1,
}

impl RedirectMode {
    pub const fn from_u32(v: u32) -> Option<Self> {
        match v {
            0 => Some(Self::Peer),
            1 => Some(Self::Plain),
            _ => None,
        }
    }
    pub const fn name(self) -> &'static str {
        match self {
            Self::Peer => "peer",
            Self::Plain => "plain",
        }
    }
}

/// Attach points, the first half of a stats key.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Program {
    FromPod = 0,
}

impl Program {
    pub const ALL: [Program; 1] = [Program::FromPod];
    pub const fn name(self) -> &'static str {
        match self {
            Self::FromPod => "from-pod",
        }
    }
}

/// The fate of a packet: every packet a program sees bumps exactly one of these.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Handed to a pod on this node.
    Redirected = 0,
    /// Not for a local pod: left to the host stack.
    ToStack = 1,
    /// ARP for the pod gateway answered by the program.
    ArpReplied = 2,
    /// Neither IPv4 nor ARP (IPv6, LLDP, …): left to the host stack.
    NonIpv4 = 3,
    /// Frame shorter than its headers claim.
    DropTruncated = 4,
    /// IPv4 header with a bad version or header length.
    DropBadHeader = 5,
    /// Source address is not the sending pod's own.
    DropSpoofed = 6,
    /// ARP that is neither a well-formed IPv4 request nor for the gateway.
    ArpIgnored = 7,
    /// The redirect helper refused the target.
    DropRedirectFailed = 8,
}

impl Reason {
    pub const COUNT: u32 = 9;
    pub const ALL: [Reason; Self::COUNT as usize] = [
        Reason::Redirected,
        Reason::ToStack,
        Reason::ArpReplied,
        Reason::NonIpv4,
        Reason::DropTruncated,
        Reason::DropBadHeader,
        Reason::DropSpoofed,
        Reason::ArpIgnored,
        Reason::DropRedirectFailed,
    ];
    pub const fn name(self) -> &'static str {
        match self {
            Self::Redirected => "redirected",
            Self::ToStack => "to-stack",
            Self::ArpReplied => "arp-replied",
            Self::NonIpv4 => "non-ipv4",
            Self::DropTruncated => "drop-truncated",
            Self::DropBadHeader => "drop-bad-header",
            Self::DropSpoofed => "drop-spoofed",
            Self::ArpIgnored => "arp-ignored",
            Self::DropRedirectFailed => "drop-redirect-failed",
        }
    }
    pub const fn is_drop(self) -> bool {
        matches!(
            self,
            Self::DropTruncated
                | Self::DropBadHeader
                | Self::DropSpoofed
                | Self::DropRedirectFailed
        )
    }
}

/// Slots in the per-CPU `STATS` array: one per (program, reason).
pub const STATS_SLOTS: u32 = Program::ALL.len() as u32 * Reason::COUNT;

/// Index into `STATS` for a (program, reason) pair.
pub const fn stats_index(program: Program, reason: Reason) -> u32 {
    program as u32 * Reason::COUNT + reason as u32
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain `#[repr(C)]` data without padding-sensitive invariants.
    unsafe impl aya::Pod for super::Endpoint {}
    unsafe impl aya::Pod for super::Settings {}
}
