//! Helpers shared by the integration tests: root check, raw frames in and out of
//! namespaces, and counter snapshots.
use std::{
    net::Ipv4Addr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
    time::{Duration, Instant},
};

use crate::{csum, lab::Lab, netns};
use anyhow::{bail, Context, Result};
use netpath_common::{Program, Reason};

/// Integration tests need root; without it they fail with the reason, never skip.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert!(
        unsafe { libc::geteuid() } == 0,
        "integration tests need root (network namespaces, eBPF): run `sudo -E cargo xtask test`"
    );
}

pub fn lab(nodes: usize, pods: usize) -> Lab {
    lab_of(&crate::lab::LabConfig::new(nodes, pods).expect("lab config"))
}

/// A lab brought up from `cfg` (as root).
pub fn lab_of(cfg: &crate::lab::LabConfig) -> Lab {
    require_root();
    Lab::up(cfg).expect("bring up lab")
}

/// Polls `cond` every 10 ms until it holds and returns how long that took; fails the
/// test, saying what did not happen, once `within` has passed.
pub fn wait_for(what: &str, within: Duration, cond: impl Fn() -> bool) -> Duration {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    t.elapsed()
}

/// What node `node`'s agent last published.
pub fn state(lab: &Lab, node: usize) -> netpath::state::AgentState {
    netpath::state::AgentState::read(&lab.nodes[node].state_dir())
        .unwrap()
        .expect("the agent published its state")
}

/// `netpath status --json --node N` as a user runs it on the host, outside the node's
/// namespace: its exit code (0 ready and healthy, 1 not — checked against the
/// document) and its document.
pub fn status(lab: &Lab, node: usize) -> (i32, serde_json::Value) {
    let out = std::process::Command::new(crate::lab::agent_binary().unwrap())
        .args(["status", "--json", "--node", &lab.nodes[node].name])
        .output()
        .unwrap();
    let code = out.status.code().unwrap_or(-1);
    assert!(
        code == 0 || code == 1,
        "status failed ({code}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ok = doc["ready"]["ok"] == true && doc["health"]["ok"] == true;
    assert_eq!(
        code == 0,
        ok,
        "the exit code says what the document says: {doc:#}"
    );
    (code, doc)
}

/// The document of `status`.
pub fn status_json(lab: &Lab, node: usize) -> serde_json::Value {
    status(lab, node).1
}

/// A packet socket bound to one interface inside a namespace.
pub struct RawSocket(OwnedFd);

impl RawSocket {
    pub fn open(netns: &Path, ifname: &str) -> Result<Self> {
        let ifname = ifname.to_string();
        netns::run_in(netns, move || {
            let proto = (libc::ETH_P_ALL as u16).to_be() as i32;
            // SAFETY: plain socket syscall.
            let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto) };
            if fd < 0 {
                return Err(std::io::Error::last_os_error()).context("AF_PACKET socket");
            }
            // SAFETY: fd is ours.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let cname = std::ffi::CString::new(ifname.clone())?;
            // SAFETY: valid C string.
            let index = unsafe { libc::if_nametoindex(cname.as_ptr()) } as i32;
            if index == 0 {
                bail!("no interface {ifname}");
            }
            // SAFETY: zeroed sockaddr_ll is valid; we fill what bind needs.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = proto as u16;
            sll.sll_ifindex = index;
            // SAFETY: valid sockaddr of the stated size.
            let rc = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&sll as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            if rc != 0 {
                return Err(std::io::Error::last_os_error()).context("bind AF_PACKET");
            }
            Ok(RawSocket(fd))
        })
    }

    pub fn send(&self, frame: &[u8]) -> Result<()> {
        // SAFETY: valid buffer.
        let n = unsafe { libc::send(self.0.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if n < 0 {
            return Err(std::io::Error::last_os_error()).context("send raw frame");
        }
        Ok(())
    }

    /// Waits for a received frame matching `pred`.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&[u8]) -> bool) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.recv(Duration::from_millis(50)) {
                Some(frame) if pred(&frame) => return Some(frame),
                _ => {}
            }
        }
        None
    }

    /// The next frame coming in (not our own going out) within `timeout`, whole up to
    /// 64 KiB (GSO and GRO packets show up as one large frame).
    pub fn recv(&self, timeout: Duration) -> Option<Vec<u8>> {
        let mut pfd = libc::pollfd {
            fd: self.0.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) } <= 0 {
            return None;
        }
        let mut buf = vec![0u8; 65536];
        // SAFETY: valid buffer; the from-address is plain data.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
        // SAFETY: buffer and address are valid for the sizes given.
        let n = unsafe {
            libc::recvfrom(
                self.0.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                (&mut sll as *mut libc::sockaddr_ll).cast(),
                &mut len,
            )
        };
        if n <= 0 || sll.sll_pkttype == libc::PACKET_OUTGOING {
            return None;
        }
        buf.truncate(n as usize);
        Some(buf)
    }
}

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;

pub fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An IPv4 packet carrying UDP (or, from [`Ipv4Packet::ipip`], another IPv4
/// packet), with optional header options and fragment bits.
pub struct Ipv4Packet {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub id: u16,
    pub proto: u8,
    pub options: Vec<u8>,
    /// (more-fragments flag, fragment offset in 8-byte units)
    pub frag: (bool, u16),
    pub payload: Vec<u8>,
}

impl Ipv4Packet {
    pub fn udp(src: Ipv4Addr, dst: Ipv4Addr, id: u16, data: &[u8]) -> Self {
        let mut udp = Vec::new();
        udp.extend_from_slice(&4000u16.to_be_bytes());
        udp.extend_from_slice(&4001u16.to_be_bytes());
        udp.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
        udp.extend_from_slice(&0u16.to_be_bytes()); // no UDP checksum (legal on IPv4)
        udp.extend_from_slice(data);
        Self {
            src,
            dst,
            id,
            proto: 17,
            options: Vec::new(),
            frag: (false, 0),
            payload: udp,
        }
    }

    /// `inner` wrapped in IP-in-IP (protocol 4) from `src` to `dst`.
    pub fn ipip(src: Ipv4Addr, dst: Ipv4Addr, id: u16, inner: &Ipv4Packet) -> Self {
        Self {
            src,
            dst,
            id,
            proto: 4,
            options: Vec::new(),
            frag: (false, 0),
            payload: inner.bytes(),
        }
    }

    /// Sends the packet as it is, from inside `netns`: the kernel routes it by its
    /// destination and adds only the Ethernet header (a raw IPv4 socket, IP_HDRINCL).
    pub fn send_from(&self, netns: &Path) -> Result<()> {
        let bytes = self.bytes();
        let dst = self.dst;
        netns::run_in(netns, move || {
            // SAFETY: plain socket syscall; IPPROTO_RAW implies IP_HDRINCL.
            let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
            if fd < 0 {
                return Err(std::io::Error::last_os_error()).context("open raw IPv4 socket");
            }
            // SAFETY: fd was just opened and is owned here alone.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let to = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(dst.octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: valid buffer and address for the call.
            let n = unsafe {
                libc::sendto(
                    fd.as_raw_fd(),
                    bytes.as_ptr().cast(),
                    bytes.len(),
                    0,
                    (&to as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            };
            if n < 0 {
                return Err(std::io::Error::last_os_error()).context("send raw IPv4 packet");
            }
            Ok(())
        })
    }

    pub fn bytes(&self) -> Vec<u8> {
        assert!(
            self.options.len().is_multiple_of(4),
            "options pad to 32-bit words"
        );
        let ihl = 5 + self.options.len() / 4;
        let total = ihl * 4 + self.payload.len();
        let mut h = vec![0u8; ihl * 4];
        h[0] = 0x40 | ihl as u8;
        h[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        h[4..6].copy_from_slice(&self.id.to_be_bytes());
        let frag = ((self.frag.0 as u16) << 13) | self.frag.1;
        h[6..8].copy_from_slice(&frag.to_be_bytes());
        h[8] = 64;
        h[9] = self.proto;
        h[12..16].copy_from_slice(&self.src.octets());
        h[16..20].copy_from_slice(&self.dst.octets());
        h[20..].copy_from_slice(&self.options);
        let c = csum::fold(csum::sum(&h));
        h[10..12].copy_from_slice(&c.to_be_bytes());
        h.extend_from_slice(&self.payload);
        h
    }
}

/// A VXLAN datagram carrying a UDP/IPv4 packet from `inner_src` to `inner_dst`.
pub fn vxlan_payload(vni: u32, inner_src: Ipv4Addr, inner_dst: Ipv4Addr, id: u16) -> Vec<u8> {
    let mut p = vec![0x08, 0, 0, 0];
    p.extend_from_slice(&(vni << 8).to_be_bytes());
    p.extend_from_slice(&[0x0e, 0, 0, 0, 0, 1, 0x0e, 0, 0, 0, 0, 2, 0x08, 0x00]);
    p.extend_from_slice(&Ipv4Packet::udp(inner_src, inner_dst, id, b"tunnelled").bytes());
    p
}

/// Is `frame` an IPv4 packet with this IP id?
pub fn is_ip_id(frame: &[u8], id: u16) -> bool {
    frame.len() >= 34
        && frame[12..14] == ETH_P_IP.to_be_bytes()
        && frame[18..20] == id.to_be_bytes()
}

/// One from-pod counter of a lab node.
pub fn counter(lab: &Lab, node: usize, reason: Reason) -> u64 {
    counter_of(lab, node, Program::FromPod, reason)
}

/// One counter of a lab node.
pub fn counter_of(lab: &Lab, node: usize, program: Program, reason: Reason) -> u64 {
    lab.nodes[node]
        .pinned()
        .expect("open pins")
        .counter(program, reason)
        .expect("read counter")
}

/// Runs every model check and fails the test with the failures listed.
pub fn assert_model(lab: &Lab, protos: &[crate::check::Proto]) -> usize {
    let checks = lab.check_model(protos);
    let failed: Vec<_> = checks.iter().filter(|c| !c.ok()).collect();
    let logs: String = (0..lab.nodes.len()).map(|i| lab.agent_log(i)).collect();
    assert!(
        failed.is_empty(),
        "{} of {} checks failed: {failed:#?}\nagent logs:\n{logs}",
        failed.len(),
        checks.len()
    );
    let bad: Vec<_> = lab
        .check_invariants()
        .into_iter()
        .filter(|i| !i.ok)
        .collect();
    assert!(bad.is_empty(), "invariants: {bad:#?}");
    checks.len()
}

/// Runs `cmd` inside a namespace and returns stdout; fails with stderr.
pub fn run_in_ns(ns: &Path, cmd: &[&str]) -> Result<String> {
    let cmd: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
    netns::run_in(ns, move || {
        let out = std::process::Command::new(&cmd[0])
            .args(&cmd[1..])
            .output()
            .with_context(|| format!("run {}", cmd[0]))?;
        if !out.status.success() {
            bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    })
}

/// Waits until the counter moved by at least `by` from `before` (counters are per-CPU
/// sums updated as packets pass, so give the packet a moment) and returns it; fails
/// the test, naming the counter, if it does not within 2 s.
pub fn wait_counter(lab: &Lab, node: usize, reason: Reason, before: u64, by: u64) -> u64 {
    wait_counter_of(lab, node, Program::FromPod, reason, before, by)
}

/// As `wait_counter`, for any program.
pub fn wait_counter_of(
    lab: &Lab,
    node: usize,
    program: Program,
    reason: Reason,
    before: u64,
    by: u64,
) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let now = counter_of(lab, node, program, reason);
        if now >= before + by {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "{}/{} on node {node} moved by {} within 2 s, want at least {by}",
            program.name(),
            reason.name(),
            now - before
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Turns IPv6 off inside a namespace, so a test's counters see only its own packets
/// (no neighbour discovery, router solicitations or MLD reports from the stack).
pub fn disable_ipv6(ns: &Path) -> Result<()> {
    netns::run_in(ns, || {
        for key in ["all", "default"] {
            std::fs::write(format!("/proc/sys/net/ipv6/conf/{key}/disable_ipv6"), "1")?;
        }
        Ok(())
    })
}

/// Waits until `read` gives the same value twice 300 ms apart (traffic started
/// before the test's own has died down); fails the test if it does not within 5 s.
pub fn wait_quiet(what: &str, read: impl Fn() -> u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = read();
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = read();
        if now == last {
            return;
        }
        assert!(Instant::now() < deadline, "{what} still moving after 5 s");
        last = now;
    }
}

/// Network namespaces whose name starts with `prefix`.
pub fn namespaces_with_prefix(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// What is attached to `ifname`'s TC ingress inside a namespace: the names of TCX
/// programs (6.6+) and the `tc filter` listing of clsact filters.
pub fn attached_ingress(ns: &Path, ifname: &str) -> String {
    let ifname = ifname.to_string();
    netns::run_in(ns, move || {
        let mut seen = String::new();
        if let Ok((_, progs)) =
            aya::programs::SchedClassifier::query_tcx(&ifname, aya::programs::TcAttachType::Ingress)
        {
            for p in progs {
                seen += p.name_as_str().unwrap_or("?");
                seen += "\n";
            }
        }
        let out = std::process::Command::new("tc")
            .args(["filter", "show", "dev", &ifname, "ingress"])
            .output()?;
        seen += &String::from_utf8_lossy(&out.stdout);
        Ok(seen)
    })
    .expect("query attached programs")
}

/// The pod veths (`np…`) on node `node`'s side.
pub fn node_veths(lab: &Lab, node: usize) -> std::collections::BTreeSet<String> {
    lab.nodes[node]
        .ns
        .run(|| crate::nl::Nl::new()?.links())
        .expect("links")
        .into_iter()
        .map(|l| l.name)
        .filter(|n| n.starts_with("np"))
        .collect()
}

/// The addresses in node `node`'s ENDPOINTS map.
pub fn endpoint_ips(lab: &Lab, node: usize) -> std::collections::BTreeSet<Ipv4Addr> {
    lab.nodes[node]
        .pinned()
        .and_then(|p| p.endpoints())
        .expect("ENDPOINTS")
        .into_iter()
        .map(|(ip, _)| ip)
        .collect()
}

/// Sends one UDP datagram carrying `marker` from inside `ns` to `dst` (port 9): a
/// packet a capture can pick out by its payload.
pub fn send_udp_marker(ns: &Path, dst: std::net::Ipv4Addr, marker: &'static [u8]) {
    netns::run_in(ns, move || {
        std::net::UdpSocket::bind(("0.0.0.0", 0))?.send_to(marker, (dst, 9))?;
        Ok(())
    })
    .unwrap();
}

/// Does `frame` carry `marker` anywhere?
pub fn frame_contains(frame: &[u8], marker: &[u8]) -> bool {
    frame.windows(marker.len()).any(|w| w == marker)
}

/// The IPv4 address at byte `at` of `frame`.
pub fn frame_addr(frame: &[u8], at: usize) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::new(frame[at], frame[at + 1], frame[at + 2], frame[at + 3])
}

/// Whether node `node`'s maps route `cidr`.
pub fn routes_cidr(lab: &Lab, node: usize, cidr: netpath::net::Ipv4Net) -> bool {
    lab.nodes[node]
        .pinned()
        .unwrap()
        .routes()
        .unwrap()
        .iter()
        .any(|(net, p, _)| *net == cidr.network() && *p == cidr.prefix)
}

/// Every node's agent log, for failure reports.
pub fn agent_logs(lab: &Lab) -> String {
    (0..lab.nodes.len())
        .map(|i| format!("{}'s agent:\n{}", lab.nodes[i].name, lab.agent_log(i)))
        .collect()
}
