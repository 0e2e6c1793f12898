//! Verdicts: which program saw a packet and what became of it, the two halves of a
//! `STATS` slot and of a monitor event. Every reason is declared once, in the table
//! below (as Cilium's `bpf/lib/drop_reasons.h` lists its drops): number, name, and
//! whether it is a drop; the enum, [`Reason::ALL`], [`Reason::COUNT`], the names and
//! [`Reason::is_drop`] follow from it. Numbers are what the `STATS` slots and events
//! carry: append, never renumber. `docs/observability.md` has one row per reason (a
//! test keeps it so).

/// Attach points, the first half of a stats key.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Program {
    FromPod = 0,
    FromUnderlay = 1,
    ToUnderlay = 2,
    XdpUnderlay = 3,
    FromTunnel = 4,
    FromWireguard = 5,
}

impl Program {
    /// The program an event's number names.
    pub const fn from_u8(v: u8) -> Option<Self> {
        if (v as usize) < Self::ALL.len() {
            Some(Self::ALL[v as usize])
        } else {
            None
        }
    }
    pub const ALL: [Program; 6] = [
        Program::FromPod,
        Program::FromUnderlay,
        Program::ToUnderlay,
        Program::XdpUnderlay,
        Program::FromTunnel,
        Program::FromWireguard,
    ];
    pub const fn name(self) -> &'static str {
        match self {
            Self::FromPod => "from-pod",
            Self::FromUnderlay => "from-underlay",
            Self::ToUnderlay => "to-underlay",
            Self::XdpUnderlay => "xdp-underlay",
            Self::FromTunnel => "from-tunnel",
            Self::FromWireguard => "from-wireguard",
        }
    }
}

macro_rules! reasons {
    ($( $(#[$doc:meta])* $variant:ident = $n:literal, $name:literal, $fate:ident; )*) => {
        /// The fate of a packet: every packet a program sees bumps exactly one of these.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Reason {
            $( $(#[$doc])* $variant = $n, )*
        }

        impl Reason {
            pub const COUNT: u32 = [$($n),*].len() as u32;
            /// Every reason, in number order.
            pub const ALL: [Reason; Self::COUNT as usize] = [$(Reason::$variant),*];

            pub const fn name(self) -> &'static str {
                match self {
                    $( Self::$variant => $name, )*
                }
            }

            pub const fn is_drop(self) -> bool {
                match self {
                    $( Self::$variant => reasons!(@drop $fate), )*
                }
            }
        }
    };
    (@drop drop) => {
        true
    };
    (@drop ok) => {
        false
    };
}

// One row per reason: `doc Variant = number, "name", drop | ok;`
reasons! {
    /// Handed to a pod on this node.
    Redirected = 0, "redirected", ok;
    /// Not for a local pod: left to the host stack.
    ToStack = 1, "to-stack", ok;
    /// ARP for the pod gateway answered by the program.
    ArpReplied = 2, "arp-replied", ok;
    /// Neither IPv4 nor ARP (IPv6, LLDP, …): left to the host stack.
    NonIpv4 = 3, "non-ipv4", ok;
    /// Frame shorter than its headers claim.
    DropTruncated = 4, "drop-truncated", drop;
    /// IPv4 header with a bad version or header length.
    DropBadHeader = 5, "drop-bad-header", drop;
    /// Source address is not the sending pod's own.
    DropSpoofed = 6, "drop-spoofed", drop;
    /// ARP that is neither a well-formed IPv4 request nor for the gateway.
    ArpIgnored = 7, "arp-ignored", ok;
    /// The redirect helper refused the target.
    DropRedirectFailed = 8, "drop-redirect-failed", drop;
    /// Sent as plain IP to the owning node (direct routing).
    DirectRouted = 9, "direct-routed", ok;
    /// Wrapped in VXLAN for the owning node.
    Encapsulated = 10, "encapsulated", ok;
    /// VXLAN from a known node, unwrapped and handed to a local pod.
    Decapsulated = 11, "decapsulated", ok;
    /// VXLAN from a known node, unwrapped and left to the host stack.
    DecapToStack = 12, "decap-to-stack", ok;
    /// VXLAN from an address that is not a known node.
    DropUnknownPeer = 13, "drop-unknown-peer", drop;
    /// VXLAN with another VNI or without the VNI flag.
    DropBadVni = 14, "drop-bad-vni", drop;
    /// Growing the packet for the VXLAN headers failed.
    DropEncapFailed = 15, "drop-encap-failed", drop;
    /// Shrinking the packet after VXLAN failed.
    DropDecapFailed = 16, "drop-decap-failed", drop;
    /// Inside the cluster CIDR but no pod and no node route: dropped, not leaked.
    DropNoRoute = 17, "drop-no-route", drop;
    /// Handed to the kernel's VXLAN device to encapsulate.
    EncapInTunnel = 18, "encap-in-tunnel", ok;
    /// VXLAN for a local pod left to the kernel's VXLAN socket (GRO, decapsulation).
    ToTunnel = 19, "to-tunnel", ok;
    /// Setting the tunnel metadata failed.
    DropTunnelKey = 20, "drop-tunnel-key", drop;
    /// A pod's packet to the outside, source-translated to the node's address.
    Masqueraded = 21, "masqueraded", ok;
    /// A reply to a translated flow, translated back and handed to its pod.
    NatReply = 22, "nat-reply", ok;
    /// An ICMP error about a translated flow, translated back and handed to its pod.
    NatIcmpError = 23, "nat-icmp-error", ok;
    /// Every translated port toward that destination is taken.
    DropNatNoPort = 24, "drop-nat-no-port", drop;
    /// The NAT maps are full.
    DropNatTableFull = 25, "drop-nat-table-full", drop;
    /// No live translation: a reply to a translated port from an unknown, expired or
    /// forged sender, or a pod's TCP segment other than a SYN for an untranslated flow.
    DropNatUnknown = 26, "drop-nat-unknown", drop;
    /// To the outside but not translatable: an IP fragment or a protocol other than
    /// TCP, UDP and ICMP echo.
    DropNatUnsupported = 27, "drop-nat-unsupported", drop;
    /// Wrapped in IP-in-IP for the owning node.
    IpipEncapsulated = 28, "ipip-encapsulated", ok;
    /// IP-in-IP from a known node, unwrapped and handed to a local pod.
    IpipDecapsulated = 29, "ipip-decapsulated", ok;
    /// IP-in-IP from a known node, unwrapped and left to the host stack.
    IpipDecapToStack = 30, "ipip-decap-to-stack", ok;
    /// IP-in-IP for the cluster from an address that is not a known node.
    DropIpipUnknownPeer = 31, "drop-ipip-unknown-peer", drop;
    /// IP-in-IP whose inner source is neither its sender nor one of the sender's pods.
    DropIpipSpoofed = 32, "drop-ipip-spoofed", drop;
    /// IP-in-IP with outer options, a fragmented outer header or no inner IPv4 header.
    DropIpipMalformed = 33, "drop-ipip-malformed", drop;
    /// To a service with no ready backend: refused at once (a TCP reset or an ICMP
    /// port unreachable goes back to the client).
    DropSvcNoBackend = 34, "drop-svc-no-backend", drop;
    /// To an address of the service range, or a node port, that no service has.
    DropSvcUnknown = 35, "drop-svc-unknown", drop;
    /// The service flow maps are full.
    DropSvcTableFull = 36, "drop-svc-table-full", drop;
    /// To a service but not translatable: an IP fragment, or neither TCP nor UDP.
    DropSvcUnsupported = 37, "drop-svc-unsupported", drop;
    /// A backend's reply to a node port's client outside the cluster, translated
    /// back and sent out of the underlay.
    SvcReplyOut = 38, "svc-reply-out", ok;
    /// A new connection into a pod that no policy selecting it for ingress allows.
    DropPolicyIngress = 39, "drop-policy-ingress", drop;
    /// A new connection from a pod that no policy selecting it for egress allows.
    DropPolicyEgress = 40, "drop-policy-egress", drop;
    /// A new connection of a pod a policy selects, while the policy connection
    /// table is full (it fails closed).
    DropPolicyTableFull = 41, "drop-policy-table-full", drop;
    /// A pod's packet to another node handed to the WireGuard device, which
    /// encrypts it.
    ToWireguard = 42, "to-wireguard", ok;
    /// A pod's packet to a node that has published no WireGuard key yet, with
    /// encryption on: dropped, never sent in clear.
    DropNoKey = 43, "drop-no-key", drop;
    /// A packet the WireGuard device decrypted, delivered into its pod.
    FromWireguard = 44, "from-wireguard", ok;
}

impl Reason {
    /// The reason an event's number names.
    pub const fn from_u8(v: u8) -> Option<Self> {
        if (v as u32) < Self::COUNT {
            Some(Self::ALL[v as usize])
        } else {
            None
        }
    }
}

/// Slots in the per-CPU `STATS` array: one per (program, reason).
pub const STATS_SLOTS: u32 = Program::ALL.len() as u32 * Reason::COUNT;

/// Index into `STATS` for a (program, reason) pair.
pub const fn stats_index(program: Program, reason: Reason) -> u32 {
    program as u32 * Reason::COUNT + reason as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_own_stats_slot() {
        let mut seen = [false; STATS_SLOTS as usize];
        for p in Program::ALL {
            for r in Reason::ALL {
                let i = stats_index(p, r) as usize;
                assert!(!seen[i], "slot {i} used twice");
                seen[i] = true;
            }
        }
        assert!(seen.iter().all(|s| *s));
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "Reason::ALL is in discriminant order");
        }
    }

    #[test]
    fn reason_names_are_unique_and_spelled_for_labels() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            let n = r.name();
            assert!(Reason::ALL[..i].iter().all(|o| o.name() != n), "{n} twice");
            assert!(
                n.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "{n}: a metric label and an anchor"
            );
        }
    }

    #[test]
    fn events_name_their_program_and_reason() {
        for p in Program::ALL {
            assert_eq!(Program::from_u8(p as u8), Some(p));
        }
        for r in Reason::ALL {
            assert_eq!(Reason::from_u8(r as u8), Some(r));
        }
        assert_eq!(Reason::from_u8(Reason::COUNT as u8), None);
        assert_eq!(Program::from_u8(200), None);
    }
}
