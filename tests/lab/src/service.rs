//! Services from the test side: records built like a user writes them, backends that
//! say who they are and whom they saw, and clients that ask through a front end.
use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use anyhow::{anyhow, bail, Context, Result};
use netpath::spec::{
    EndpointRecord, Protocol, ServicePort, ServiceSpec, ServiceType, SessionAffinity, TargetPort,
    TrafficPolicy, DEFAULT_AFFINITY_TIMEOUT,
};

use crate::netns;

const TIMEOUT: Duration = Duration::from_secs(3);

/// A ClusterIP service `default/<name>` on `vip:port` (TCP and UDP) whose backends
/// listen on `target`.
pub fn cluster_ip(
    name: &str,
    vip: Ipv4Addr,
    port: u16,
    target: u16,
    backends: &[Ipv4Addr],
) -> ServiceSpec {
    let p = |name: &str, protocol| ServicePort {
        name: name.into(),
        protocol,
        port,
        target_port: Some(TargetPort::Number(target)),
        node_port: None,
    };
    ServiceSpec {
        namespace: "default".into(),
        name: name.into(),
        kind: ServiceType::ClusterIP,
        cluster_ip: vip,
        ports: vec![p("tcp", Protocol::TCP), p("udp", Protocol::UDP)],
        session_affinity: SessionAffinity::None,
        affinity_timeout: DEFAULT_AFFINITY_TIMEOUT,
        internal_traffic_policy: TrafficPolicy::Cluster,
        external_traffic_policy: TrafficPolicy::Cluster,
        endpoints: backends.iter().map(|ip| endpoint(*ip)).collect(),
        endpoint_ports: Vec::new(),
    }
}

/// A ready endpoint at `address` (its node derived from the pod CIDRs).
pub fn endpoint(address: Ipv4Addr) -> EndpointRecord {
    EndpointRecord {
        address,
        node: None,
        ready: true,
        serving: None,
        terminating: false,
    }
}

/// What a backend answered: its own address and the client address it saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub backend: Ipv4Addr,
    pub client: Ipv4Addr,
}

fn parse(text: &[u8]) -> Result<Answer> {
    let text = std::str::from_utf8(text)?.trim();
    let (b, c) = text
        .split_once(' ')
        .ok_or_else(|| anyhow!("unexpected answer {text:?}"))?;
    Ok(Answer {
        backend: b.parse()?,
        client: c.parse()?,
    })
}

fn v4(a: SocketAddr) -> Result<SocketAddrV4> {
    match a {
        SocketAddr::V4(a) => Ok(a),
        SocketAddr::V6(a) => bail!("IPv6 peer {a}"),
    }
}

/// TCP and UDP servers on `port` in one backend's namespace, answering every client
/// with "<own address> <client address>" until dropped.
pub struct Backend {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Backend {
    /// `own` is the backend's address (what its UDP answers name).
    pub fn serve(ns: &Path, own: Ipv4Addr, port: u16) -> Result<Self> {
        let (tcp, udp) = netns::run_in(ns, || {
            let t =
                TcpListener::bind(("0.0.0.0", port)).with_context(|| format!("bind tcp/{port}"))?;
            let u =
                UdpSocket::bind(("0.0.0.0", port)).with_context(|| format!("bind udp/{port}"))?;
            Ok((t, u))
        })?;
        tcp.set_nonblocking(true)?;
        udp.set_read_timeout(Some(Duration::from_millis(100)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let t = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match tcp.accept() {
                    Ok((mut c, peer)) => {
                        let local = c.local_addr().ok().and_then(|a| v4(a).ok());
                        let (Some(local), Ok(peer)) = (local, v4(peer)) else {
                            continue;
                        };
                        let _ = c.set_nonblocking(false);
                        let _ = c.write_all(format!("{} {}\n", local.ip(), peer.ip()).as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        let s = stop.clone();
        let u = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !s.load(Ordering::Relaxed) {
                if let Ok((_, peer)) = udp.recv_from(&mut buf) {
                    if let Ok(p) = v4(peer) {
                        let _ = udp.send_to(format!("{own} {}\n", p.ip()).as_bytes(), peer);
                    }
                }
            }
        });
        Ok(Self {
            stop,
            threads: vec![t, u],
        })
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// One TCP request through `dst:port` from `client_ns`; also checks the connection's
/// peer is the address dialled (the client sees only the front end).
pub fn ask_tcp(client_ns: &Path, dst: Ipv4Addr, port: u16) -> Result<Answer> {
    netns::run_in(client_ns, || {
        let addr = SocketAddr::V4(SocketAddrV4::new(dst, port));
        let mut c = TcpStream::connect_timeout(&addr, TIMEOUT)
            .with_context(|| format!("tcp connect to {addr}"))?;
        if c.peer_addr()? != addr {
            bail!("connected to {addr} but the peer is {}", c.peer_addr()?);
        }
        c.set_read_timeout(Some(TIMEOUT))?;
        let mut buf = Vec::new();
        c.read_to_end(&mut buf).context("read tcp answer")?;
        parse(&buf)
    })
}

/// One UDP request through `dst:port`; the answer must come from `dst:port`.
pub fn ask_udp(client_ns: &Path, dst: Ipv4Addr, port: u16) -> Result<Answer> {
    let sock = netns::run_in(client_ns, || {
        UdpSocket::bind(("0.0.0.0", 0)).context("bind udp client")
    })?;
    sock.set_read_timeout(Some(Duration::from_millis(500)))?;
    let want = SocketAddr::V4(SocketAddrV4::new(dst, port));
    let mut last = anyhow!("no udp answer from {want}");
    for _ in 0..5 {
        sock.send_to(b"?", want)?;
        let mut buf = [0u8; 256];
        match sock.recv_from(&mut buf) {
            Ok((n, from)) if from == want => return parse(&buf[..n]),
            Ok((_, from)) => bail!("udp answer from {from}, not from {want}"),
            Err(e) => last = anyhow!(e).context(format!("udp answer from {want}")),
        }
    }
    Err(last)
}

/// How long a TCP connect to `dst:port` took to be refused (a reset); an error if it
/// was answered or timed out instead.
pub fn tcp_refused(client_ns: &Path, dst: Ipv4Addr, port: u16) -> Result<Duration> {
    netns::run_in(client_ns, || {
        let addr = SocketAddr::V4(SocketAddrV4::new(dst, port));
        let t = std::time::Instant::now();
        match TcpStream::connect_timeout(&addr, TIMEOUT) {
            Ok(_) => bail!("{addr} accepted the connection"),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(t.elapsed()),
            Err(e) => Err(anyhow!(e).context(format!("connect to {addr}: not refused"))),
        }
    })
}

/// Whether a UDP datagram to `dst:port` is answered by an ICMP port unreachable
/// (a connected socket's next receive fails with "connection refused").
pub fn udp_refused(client_ns: &Path, dst: Ipv4Addr, port: u16) -> Result<()> {
    let sock = netns::run_in(client_ns, || {
        let s = UdpSocket::bind(("0.0.0.0", 0)).context("bind udp client")?;
        s.connect((dst, port)).context("connect udp")?;
        Ok(s)
    })?;
    sock.set_read_timeout(Some(Duration::from_secs(1)))?;
    sock.send(b"?")?;
    let mut buf = [0u8; 64];
    match sock.recv(&mut buf) {
        Ok(_) => bail!("{dst}:{port} answered"),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(()),
        Err(e) => Err(anyhow!(e).context(format!("udp to {dst}:{port}: not refused"))),
    }
}
