//! Pods reach the world outside the cluster through masquerade in the programs: a
//! host behind the fabric router (which has no route to pod CIDRs) sees the node's
//! address; replies and ICMP errors find their way back; state survives an agent
//! restart; ports run out as counted drops; forged replies never reach a pod.
use std::{
    collections::BTreeSet,
    io::{ErrorKind, Read, Write},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd,
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use netpath::spec::{ClusterSpec, PortRange, DEFAULT_SPEC};
use netpath_common::{NatKey, NatTarget, Program, Reason};
use netpath_lab::{
    assert_model,
    check::{self, Proto},
    counter_of, csum, lab,
    lab::{Lab, LabConfig, OUTSIDE_IP},
    netns, transfer, wait_counter_of, RawSocket,
};

fn lab_with(pods: usize, edit: impl FnOnce(&mut LabConfig)) -> (Lab, LabConfig) {
    let mut cfg = LabConfig::with_spec(ClusterSpec::parse(DEFAULT_SPEC).unwrap(), pods).unwrap();
    edit(&mut cfg);
    (netpath_lab::lab_of(&cfg), cfg)
}

fn with_ports(cfg: &mut LabConfig, min: u16, max: u16) {
    let mut d = cfg.spec.to_draft();
    d.settings.masquerade_ports = PortRange { min, max };
    cfg.spec = d.validate().unwrap();
}

fn assert_egress(lab: &Lab) {
    let checks = lab.check_egress(&[Proto::Tcp, Proto::Udp, Proto::Icmp]);
    assert_eq!(checks.len(), 9, "three nodes, three protocols");
    let failed: Vec<_> = checks.iter().filter(|c| !c.ok()).collect();
    let logs: String = (0..lab.nodes.len()).map(|i| lab.agent_log(i)).collect();
    assert!(failed.is_empty(), "{failed:#?}\n{logs}");
}

#[test]
fn pods_on_every_node_reach_the_outside_as_their_node_and_keep_their_address_inside() {
    let lab = lab(3, 1);
    assert_egress(&lab);
    // Inside the cluster nothing is translated: pod->pod and pod->node keep the
    // pod's source (the model checks assert the source each server saw).
    assert_model(&lab, &[Proto::Tcp, Proto::Udp]);
    for i in 0..3 {
        assert!(counter_of(&lab, i, Program::FromPod, Reason::Masqueraded) > 0);
        assert!(counter_of(&lab, i, Program::FromUnderlay, Reason::NatReply) > 0);
    }
    // Masquerade is what makes it work: with it off the outside's replies have no
    // way back to a pod address.
    let mut off = lab.spec.to_draft();
    off.settings.masquerade = false;
    lab.write_spec(&off.validate().unwrap()).unwrap();
    let pod = &lab.nodes[0].pods[0];
    let gone = (0..50).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        check::tcp(pod.ns.path(), lab.outside_ns(), OUTSIDE_IP).is_err()
    });
    assert!(gone, "with masquerade off a pod still reached the outside");
}

#[test]
fn path_mtu_discovery_works_through_masquerade_and_a_bulk_transfer_arrives_intact() {
    let lab = lab(3, 1);
    lab.set_outside_mtu(1280).unwrap();
    for node in [0, 2] {
        let before = counter_of(&lab, node, Program::FromUnderlay, Reason::NatIcmpError);
        let pod = &lab.nodes[node].pods[0];
        transfer::transfer_intact(pod.ns.path(), lab.outside_ns(), OUTSIDE_IP, 9200, 16 << 20)
            .unwrap_or_else(|e| panic!("node {node}: {e:#}\n{}", lab.agent_log(node)));
        assert!(
            counter_of(&lab, node, Program::FromUnderlay, Reason::NatIcmpError) > before,
            "the router's fragmentation-needed came back translated"
        );
    }
}

/// A connected UDP socket in `ns` toward `dst`, with IP_RECVERR so ICMP errors
/// show up as errors on it, and a time-to-live.
fn udp_socket(ns: &Path, dst: SocketAddr, ttl: u32) -> UdpSocket {
    netns::run_in(ns, || {
        let s = UdpSocket::bind(("0.0.0.0", 0))?;
        s.set_ttl(ttl)?;
        let one: libc::c_int = 1;
        // SAFETY: a valid int option on our own socket.
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_RECVERR,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            )
        };
        assert_eq!(rc, 0, "IP_RECVERR");
        s.connect(dst)?;
        s.set_read_timeout(Some(Duration::from_millis(300)))?;
        Ok(s)
    })
    .unwrap()
}

/// Sends until the socket reports an error (ICMP errors are rate-limited and the
/// first datagram may wait for ARP); returns the OS error number.
fn first_error(s: &UdpSocket) -> Option<i32> {
    for _ in 0..10 {
        let _ = s.send(b"probe");
        let mut buf = [0u8; 64];
        match s.recv(&mut buf) {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => return e.raw_os_error(),
            Ok(_) => {}
        }
    }
    None
}

#[test]
fn icmp_errors_about_translated_flows_reach_the_pod() {
    let lab = lab(3, 1);
    let pod = &lab.nodes[0].pods[0];
    let before = counter_of(&lab, 0, Program::FromUnderlay, Reason::NatIcmpError);
    // Port unreachable from the outside host.
    let closed = SocketAddr::V4(SocketAddrV4::new(OUTSIDE_IP, 9));
    let s = udp_socket(pod.ns.path(), closed, 64);
    assert_eq!(
        first_error(&s),
        Some(libc::ECONNREFUSED),
        "port unreachable"
    );
    // Time exceeded from the router: TTL 2 is 1 after the node, 0 at the router.
    let s = udp_socket(pod.ns.path(), closed, 2);
    assert_eq!(first_error(&s), Some(libc::EHOSTUNREACH), "time exceeded");
    assert!(counter_of(&lab, 0, Program::FromUnderlay, Reason::NatIcmpError) >= before + 2);
}

/// Connections from `ns` to `dst`, held open; returns those that connected.
fn connect_many(ns: &Path, dst: SocketAddr, n: usize, timeout: Duration) -> Vec<TcpStream> {
    netns::run_in(ns, || {
        Ok((0..n)
            .filter_map(|_| TcpStream::connect_timeout(&dst, timeout).ok())
            .collect())
    })
    .unwrap()
}

/// A server in `ns` on `port` that accepts until stopped, records each peer and
/// answers every byte it reads with the same byte.
struct EchoServer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<SocketAddr>>>,
}

impl EchoServer {
    fn start(ns: &Path, port: u16) -> Self {
        let listener = netns::run_in(ns, || Ok(TcpListener::bind(("0.0.0.0", port))?)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peers = Vec::new();
            let mut conns: Vec<TcpStream> = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let mut idle = true;
                while let Ok((c, peer)) = listener.accept() {
                    c.set_nonblocking(true).unwrap();
                    peers.push(peer);
                    conns.push(c);
                    idle = false;
                }
                let mut buf = [0u8; 16];
                for c in &mut conns {
                    if let Ok(n) = c.read(&mut buf) {
                        if n > 0 {
                            let _ = c.write_all(&buf[..n]);
                            idle = false;
                        }
                    }
                }
                if idle {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            peers
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    fn peers(mut self) -> Vec<SocketAddr> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn echoes(c: &mut TcpStream) -> bool {
    c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut b = [0u8; 1];
    c.write_all(b"x").is_ok() && c.read_exact(&mut b).is_ok() && &b == b"x"
}

/// At least `n` open files: the hard limit where it is lower cannot be passed (no
/// CAP_SYS_RESOURCE in every sandbox), so that one must suffice.
fn raise_fd_limit(n: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid rlimit pointers for this process.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max.max(n.min(lim.rlim_max));
        if libc::setrlimit(
            libc::RLIMIT_NOFILE,
            &libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            },
        ) != 0
        {
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
    }
    assert!(
        lim.rlim_cur >= 11_000,
        "need 11 000 open files, the limit is {}",
        lim.rlim_cur
    );
}

#[test]
fn five_thousand_concurrent_flows_each_get_a_translated_tuple_of_their_own() {
    const PODS: usize = 5;
    const PER_POD: usize = 334;
    raise_fd_limit(65536);
    let (lab, _) = lab_with(PODS, |_| {});
    let server = EchoServer::start(lab.outside_ns(), 9300);
    let dst = SocketAddr::V4(SocketAddrV4::new(OUTSIDE_IP, 9300));
    let pods: Vec<&Path> = lab
        .nodes
        .iter()
        .flat_map(|n| n.pods.iter().map(|p| p.ns.path()))
        .collect();
    let mut conns: Vec<TcpStream> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .map(|ns| s.spawn(move || connect_many(ns, dst, PER_POD, Duration::from_secs(5))))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let total = PODS * 3 * PER_POD;
    assert_eq!(conns.len(), total, "every flow connected");
    let answered = conns.iter_mut().map(echoes).filter(|ok| *ok).count();
    assert_eq!(answered, total, "every flow carried data both ways");
    let flows: usize = (0..3)
        .map(|i| lab.nodes[i].pinned().unwrap().nat_flows().len())
        .sum();
    assert!(
        flows >= total,
        "{flows} flows in NAT_OUT for {total} connections"
    );
    drop(conns);
    let peers = server.peers();
    let distinct: BTreeSet<SocketAddr> = peers.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        peers.len(),
        "two flows shared a translated tuple"
    );
    let nodes: BTreeSet<Ipv4Addr> = lab.nodes.iter().map(|n| n.ip()).collect();
    assert!(
        peers
            .iter()
            .all(|p| matches!(p, SocketAddr::V4(a) if nodes.contains(a.ip()))),
        "the outside saw an address that is not a node's"
    );
}

#[test]
fn with_the_ports_used_up_new_flows_are_counted_drops_and_the_rest_carry_on() {
    let (lab, _) = lab_with(1, |c| with_ports(c, 61000, 61007));
    let server = EchoServer::start(lab.outside_ns(), 9400);
    let other = EchoServer::start(lab.outside_ns(), 9401);
    let pod = lab.nodes[0].pods[0].ns.path();
    let dst = SocketAddr::V4(SocketAddrV4::new(OUTSIDE_IP, 9400));
    let mut held = connect_many(pod, dst, 8, Duration::from_secs(3));
    assert_eq!(held.len(), 8, "eight ports, eight flows");
    let before = counter_of(&lab, 0, Program::FromPod, Reason::DropNatNoPort);
    let ninth = connect_many(pod, dst, 1, Duration::from_millis(800));
    assert!(
        ninth.is_empty(),
        "a ninth flow got a port that does not exist"
    );
    assert!(counter_of(&lab, 0, Program::FromPod, Reason::DropNatNoPort) > before);
    // The eight carry on; a flow to another remote port can reuse the ports; the
    // node's own connection to the outside is not touched.
    assert!(held.iter_mut().all(echoes), "a held flow broke");
    let to_other = SocketAddr::V4(SocketAddrV4::new(OUTSIDE_IP, 9401));
    assert_eq!(
        connect_many(pod, to_other, 1, Duration::from_secs(3)).len(),
        1
    );
    let seen = check::tcp(lab.nodes[0].ns.path(), lab.outside_ns(), OUTSIDE_IP).unwrap();
    assert_eq!(seen, lab.nodes[0].ip());
    // Every translated port is one of the range.
    for p in server.peers().iter().chain(other.peers().iter()) {
        assert!(
            (61000..=61007).contains(&p.port()),
            "port {} outside the range",
            p.port()
        );
    }
}

#[test]
fn a_port_whose_translation_has_no_flow_yet_is_not_taken_until_the_collector_frees_it() {
    let (lab, _) = lab_with(1, |c| with_ports(c, 61000, 61000));
    let _server = EchoServer::start(lab.outside_ns(), 9600);
    let node = &lab.nodes[0];
    let dst = SocketAddr::V4(SocketAddrV4::new(OUTSIDE_IP, 9600));
    // What another CPU's claim looks like between its two inserts: the one port's
    // translation toward this remote, its flow not written yet. Taking the port
    // then gave one tuple to two flows (seen as 5 009 of 5 010 concurrent flows).
    let pin = node.pin_dir.join(netpath_common::names::NAT_IN);
    let map = aya::maps::Map::from_map_data(aya::maps::MapData::from_pin(&pin).unwrap()).unwrap();
    let mut nat_in: aya::maps::HashMap<_, NatKey, NatTarget> = map.try_into().unwrap();
    let key = NatKey {
        remote: OUTSIDE_IP.octets(),
        remote_port: 9600u16.to_be_bytes(),
        nat_port: 61000u16.to_be_bytes(),
        proto: 6,
        _pad: [0; 3],
    };
    let target = NatTarget {
        pod: node.pods[0].ip.octets(),
        pod_port: 40000u16.to_be_bytes(),
        _pad: [0; 2],
    };
    nat_in.insert(key, target, 0).unwrap();
    let before = counter_of(&lab, 0, Program::FromPod, Reason::DropNatNoPort);
    let pod = node.pods[0].ns.path();
    assert!(
        connect_many(pod, dst, 1, Duration::from_millis(800)).is_empty(),
        "a new flow took the port of a translation whose flow was not written yet"
    );
    assert!(counter_of(&lab, 0, Program::FromPod, Reason::DropNatNoPort) > before);
    let held = node.pinned().unwrap().nat_translations();
    assert!(
        held.contains(&(key, target)),
        "the translation was taken: {held:?}"
    );
    // A true orphan goes at the collector's second sighting (passes 2 s apart), and
    // the port serves again: the pod's retried SYN gets through.
    let later = connect_many(pod, dst, 1, Duration::from_secs(10));
    assert_eq!(later.len(), 1, "the orphan's port never came free");
}

#[test]
fn flows_to_the_outside_survive_an_agent_restart() {
    let (mut lab, cfg) = lab_with(1, |c| c.keep_pins = true);
    let pod = &lab.nodes[1].pods[0];
    let stream = check::stream(pod.ns.path(), lab.outside_ns(), OUTSIDE_IP).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    lab.kill_agent(1);
    std::thread::sleep(Duration::from_millis(300));
    lab.start_agent(1, &cfg).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let stats = stream.finish().expect("the flow outlived the agent");
    assert!(stats.bytes > 0);
    assert!(
        stats.max_gap < Duration::from_millis(500),
        "stall {:?}",
        stats.max_gap
    );
}

#[test]
fn replies_without_a_translation_and_forged_replies_are_dropped_and_counted() {
    let lab = lab(3, 1);
    let node_ip = lab.nodes[0].ip();
    let pod = &lab.nodes[0].pods[0];
    let unknown = |lab: &Lab| counter_of(lab, 0, Program::FromUnderlay, Reason::DropNatUnknown);
    // A datagram to a translated port nobody uses.
    let before = unknown(&lab);
    let outside =
        netns::run_in(lab.outside_ns(), || Ok(UdpSocket::bind(("0.0.0.0", 9500))?)).unwrap();
    outside.send_to(b"stray", (node_ip, 61234)).unwrap();
    wait_counter_of(
        &lab,
        0,
        Program::FromUnderlay,
        Reason::DropNatUnknown,
        before,
        1,
    );
    // A real flow: the pod talks to the outside, which learns the translated port.
    let to_outside = SocketAddr::V4(SocketAddrV4::new(OUTSIDE_IP, 9500));
    let s = udp_socket(pod.ns.path(), to_outside, 64);
    s.send(b"hello").unwrap();
    outside
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut buf = [0u8; 64];
    let (_, translated) = outside.recv_from(&mut buf).unwrap();
    assert_eq!(translated.ip(), std::net::IpAddr::V4(node_ip));
    // The router forges a reply: right port, wrong remote address.
    let before = unknown(&lab);
    let forger =
        netns::run_in(lab.fabric_ns(), || Ok(UdpSocket::bind(("0.0.0.0", 9500))?)).unwrap();
    forger.send_to(b"forged", translated).unwrap();
    wait_counter_of(
        &lab,
        0,
        Program::FromUnderlay,
        Reason::DropNatUnknown,
        before,
        1,
    );
    // The genuine reply arrives, and only it.
    outside.send_to(b"genuine", translated).unwrap();
    let t = Instant::now();
    let mut got = Vec::new();
    while t.elapsed() < Duration::from_secs(1) {
        if let Ok(n) = s.recv(&mut buf) {
            got.push(buf[..n].to_vec());
        }
    }
    assert_eq!(got, vec![b"genuine".to_vec()]);
}

/// Closes `c` with a RST (SO_LINGER 0).
fn reset(c: TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid linger option on our own socket.
    let rc = unsafe {
        libc::setsockopt(
            c.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as u32,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER");
}

#[test]
fn a_reset_tcp_flow_leaves_the_tables_after_its_short_timeout_closed_and_udp_ones_stay() {
    use netpath_common::{nat_timeout, IPPROTO_TCP, IPPROTO_UDP};
    let lab = lab(3, 1);
    let pod = &lab.nodes[0].pods[0];
    let outside = OUTSIDE_IP.octets();
    let flows = |proto: u8, remote_port: u16| {
        lab.nodes[0]
            .pinned()
            .unwrap()
            .nat_flows()
            .into_iter()
            .filter(|(k, _)| {
                k.proto == proto
                    && k.remote == outside
                    && (remote_port == 0 || k.remote_port == remote_port.to_be_bytes())
            })
            .map(|(_, f)| f)
            .collect::<Vec<_>>()
    };
    // A TCP flow closed by a FIN each way, one ended by a RST, one UDP exchange.
    check::tcp(pod.ns.path(), lab.outside_ns(), OUTSIDE_IP).unwrap();
    let _server = EchoServer::start(lab.outside_ns(), 9650);
    let dst = SocketAddr::V4(SocketAddrV4::new(OUTSIDE_IP, 9650));
    let mut c = connect_many(pod.ns.path(), dst, 1, Duration::from_secs(3))
        .pop()
        .unwrap();
    assert!(echoes(&mut c));
    reset(c);
    check::udp(pod.ns.path(), lab.outside_ns(), OUTSIDE_IP).unwrap();
    let ended = Instant::now();
    // The reset reaches the flow as the packet passes: poll for it, do not guess.
    let mut reset_flows = flows(IPPROTO_TCP, 9650);
    while !(reset_flows.len() == 1 && reset_flows[0].rst == 1) {
        assert!(
            ended.elapsed() < Duration::from_secs(2),
            "the reset flow is not marked: {reset_flows:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
        reset_flows = flows(IPPROTO_TCP, 9650);
    }
    let closed: Vec<_> = flows(IPPROTO_TCP, 0)
        .into_iter()
        .filter(|f| f.rst == 0)
        .collect();
    assert_eq!(closed.len(), 1);
    let f = closed[0];
    assert!(
        f.seen_reply == 1 && f.fin_out == 1 && f.fin_in == 1 && f.closed == 1,
        "{f:?}"
    );
    assert_ne!(f.fin_seq, [0; 4], "the FIN's sequence number is recorded");
    let limit = Duration::from_secs(nat_timeout::TCP_RESET + 6);
    while !flows(IPPROTO_TCP, 9650).is_empty() {
        assert!(
            ended.elapsed() < limit,
            "reset TCP flow still there after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        ended.elapsed() >= Duration::from_secs(nat_timeout::TCP_RESET - 1),
        "collected after {:?}, before its timeout",
        ended.elapsed()
    );
    // The closed flow waits out the remote's TIME_WAIT; UDP idles for a minute.
    assert_eq!(flows(IPPROTO_TCP, 0).len(), 1, "the closed flow stays");
    assert_eq!(flows(IPPROTO_UDP, 0).len(), 1, "UDP stays");
    let translations = lab.nodes[0].pinned().unwrap().nat_translations();
    assert_eq!(
        translations.len(),
        2,
        "the reset flow's translation went with it"
    );
}

#[test]
fn short_connections_reuse_ports_the_remotes_time_wait_accepts() {
    const N: usize = 300;
    let (lab, _) = lab_with(1, |c| with_ports(c, 61000, 61015));
    let listener = netns::run_in(lab.outside_ns(), || {
        Ok(TcpListener::bind(("0.0.0.0", 9600))?)
    })
    .unwrap();
    let pod = lab.nodes[0].pods[0].ns.path();
    let dst = SocketAddr::V4(SocketAddrV4::new(OUTSIDE_IP, 9600));
    let node_ip = lab.nodes[0].ip().octets();
    // Resets from the node: a pod answering a TIME_WAIT's challenge ACK.
    let rx = RawSocket::open(lab.outside_ns(), "eth0").unwrap();
    let stop = AtomicBool::new(false);
    let (ports, resets) = std::thread::scope(|s| {
        let sniffer = s.spawn(|| {
            let mut resets = 0;
            while !stop.load(Ordering::Relaxed) {
                if let Some(f) = rx.recv(Duration::from_millis(50)) {
                    let tcp = f.len() >= 54 && f[12..14] == [8, 0] && f[23] == 6;
                    if tcp && f[26..30] == node_ip && f[14 + 20 + 13] & 0x04 != 0 {
                        resets += 1;
                    }
                }
            }
            resets
        });
        let server = s.spawn(|| {
            (0..N)
                .map(|_| {
                    // The server closes first, as a web server does: it keeps the
                    // TIME_WAIT of every translated tuple.
                    let (mut c, peer) = listener.accept().unwrap();
                    let mut b = [0u8; 1];
                    c.read_exact(&mut b).unwrap();
                    c.write_all(&b).unwrap();
                    peer.port()
                })
                .collect::<BTreeSet<u16>>()
        });
        netns::run_in(pod, || {
            for i in 0..N {
                let mut c = TcpStream::connect_timeout(&dst, Duration::from_secs(3))
                    .map_err(|e| anyhow::anyhow!("connection {i}: {e}"))?;
                c.write_all(b"x")?;
                let mut b = Vec::new();
                c.read_to_end(&mut b)?;
            }
            Ok(())
        })
        .unwrap();
        let ports = server.join().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        stop.store(true, Ordering::Relaxed);
        (ports, sniffer.join().unwrap())
    });
    assert!(
        ports.iter().all(|p| (61000..=61015).contains(p)),
        "{ports:?}"
    );
    // Each of 16 ports served ~19 connections, every one inside the server's
    // TIME_WAIT of the last. Picked blind, half would be refused once (a reset and a
    // retry each); picked by timestamp, only when none of 8 candidates qualifies.
    assert!(
        resets <= N / 30,
        "{resets} of {N} connections were refused once"
    );
}

/// An IPv4 packet (no options, DF clear) around `l4`, with a correct header checksum.
fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, id: u16, l4: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 20];
    h[0] = 0x45;
    h[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    h[4..6].copy_from_slice(&id.to_be_bytes());
    h[8] = 64;
    h[9] = proto;
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    let c = csum::fold(csum::sum(&h));
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(l4);
    h
}

fn pseudo_sum(src: &[u8], dst: &[u8], proto: u8, len: usize) -> u32 {
    csum::sum(src) + csum::sum(dst) + proto as u32 + len as u32
}

/// Fills in the TCP or UDP checksum of `l4` (at `at`) for `src` -> `dst`.
fn with_l4_checksum(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    mut l4: Vec<u8>,
    at: usize,
) -> Vec<u8> {
    l4[at..at + 2].copy_from_slice(&[0, 0]);
    let c = csum::fold(pseudo_sum(&src.octets(), &dst.octets(), proto, l4.len()) + csum::sum(&l4));
    l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
    l4
}

/// The checksums of a captured IPv4 frame: header, and L4 (`None`: a UDP zero).
fn verify(frame: &[u8]) -> (bool, Option<bool>) {
    let ip = &frame[14..];
    let ihl = (ip[0] & 0x0f) as usize * 4;
    let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    let (hdr, l4) = (&ip[..ihl], &ip[ihl..total]);
    let header_ok = csum::fold(csum::sum(hdr)) == 0;
    let l4_ok = match ip[9] {
        17 if l4[6..8] == [0, 0] => None,
        p @ (6 | 17) => {
            Some(csum::fold(pseudo_sum(&ip[12..16], &ip[16..20], p, l4.len()) + csum::sum(l4)) == 0)
        }
        _ => Some(csum::fold(csum::sum(l4)) == 0),
    };
    (header_ok, l4_ok)
}

#[test]
fn translated_packets_carry_valid_checksums_and_a_zero_udp_checksum_stays_zero() {
    let lab = lab(3, 1);
    let pod = &lab.nodes[0].pods[0];
    let node_ip = lab.nodes[0].ip();
    let host_mac = lab.nodes[0]
        .pinned()
        .unwrap()
        .endpoints()
        .unwrap()
        .into_iter()
        .find(|(ip, _)| *ip == pod.ip)
        .unwrap()
        .1
        .host_mac;
    let tx = RawSocket::open(pod.ns.path(), "eth0").unwrap();
    let rx = RawSocket::open(lab.outside_ns(), "eth0").unwrap();
    let mut udp = vec![0x0f, 0xa0, 0x23, 0x29, 0, 16, 0, 0];
    udp.extend_from_slice(b"checksum");
    let mut tcp = vec![0u8; 20];
    tcp[0..2].copy_from_slice(&4002u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&9u16.to_be_bytes());
    tcp[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x02;
    tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
    let mut echo = vec![8, 0, 0, 0, 0x4e, 0x50, 0, 1];
    echo.extend_from_slice(b"checksum");
    let c = csum::fold(csum::sum(&echo));
    echo[2..4].copy_from_slice(&c.to_be_bytes());
    let cases: Vec<(&str, u16, Vec<u8>, Option<bool>)> = vec![
        (
            "udp, zero checksum",
            0x7701,
            ipv4(pod.ip, OUTSIDE_IP, 17, 0x7701, &udp),
            None,
        ),
        (
            "udp",
            0x7702,
            ipv4(
                pod.ip,
                OUTSIDE_IP,
                17,
                0x7702,
                &with_l4_checksum(pod.ip, OUTSIDE_IP, 17, udp.clone(), 6),
            ),
            Some(true),
        ),
        (
            "tcp syn",
            0x7703,
            ipv4(
                pod.ip,
                OUTSIDE_IP,
                6,
                0x7703,
                &with_l4_checksum(pod.ip, OUTSIDE_IP, 6, tcp, 16),
            ),
            Some(true),
        ),
        (
            "icmp echo",
            0x7704,
            ipv4(pod.ip, OUTSIDE_IP, 1, 0x7704, &echo),
            Some(true),
        ),
    ];
    for (what, id, packet, want) in cases {
        tx.send(&netpath_lab::eth(
            host_mac,
            pod.mac,
            netpath_lab::ETH_P_IP,
            &packet,
        ))
        .unwrap();
        let got = rx
            .wait_for(Duration::from_secs(2), |f| netpath_lab::is_ip_id(f, id))
            .unwrap_or_else(|| panic!("{what}: never reached the outside"));
        assert_eq!(&got[26..30], &node_ip.octets(), "{what}: source translated");
        assert_eq!(
            verify(&got),
            (true, want),
            "{what}: checksums after translation"
        );
    }
}
