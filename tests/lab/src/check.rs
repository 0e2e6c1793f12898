//! Traffic checks that run inside namespaces: the server answers with the source
//! address it saw, which is what proves "no NAT, same IP".
use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    path::Path,
    sync::atomic::{AtomicU16, Ordering},
    time::Duration,
};

use anyhow::{anyhow, bail, Context, Result};

use crate::netns;

const TIMEOUT: Duration = Duration::from_secs(3);
static NEXT_PORT: AtomicU16 = AtomicU16::new(7100);

fn next_port() -> u16 {
    NEXT_PORT.fetch_add(1, Ordering::Relaxed)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
    Icmp,
}

/// One end of a check: a name for the report and the namespace it lives in.
#[derive(Debug, Clone)]
pub struct Host<'a> {
    pub name: &'a str,
    pub netns: &'a Path,
    pub ip: Ipv4Addr,
}

/// What a check saw.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckResult {
    pub step: String,
    pub from: String,
    pub to: String,
    pub proto: Proto,
    pub path: String,
    pub dst: Ipv4Addr,
    pub expected_src: Ipv4Addr,
    /// Whose address `expected_src` is, for reports.
    pub expected_is: &'static str,
    pub seen_src: Option<Ipv4Addr>,
    pub error: Option<String>,
}

impl CheckResult {
    pub fn ok(&self) -> bool {
        // An echo reply alone proves reachability; where the source was recorded
        // (egress), it must be the expected one.
        self.error.is_none()
            && self
                .seen_src
                .map_or(self.proto == Proto::Icmp, |s| s == self.expected_src)
    }
}

/// Sends from `from` to `to` over `proto` and records the source address `to` saw.
pub fn probe(step: &str, path: &str, proto: Proto, from: &Host, to: &Host) -> CheckResult {
    let seen = match proto {
        Proto::Tcp => tcp(from.netns, to.netns, to.ip).map(Some),
        Proto::Udp => udp(from.netns, to.netns, to.ip).map(Some),
        // An echo reply proves reachability only; the source is proven by TCP and UDP.
        Proto::Icmp => icmp(from.netns, to.ip).map(|()| None),
    };
    result(
        step,
        path,
        proto,
        from,
        to,
        (from.ip, "sender's own IP"),
        seen,
    )
}

/// A probe that leaves the cluster: `to` must see `expected_src` (the node's
/// address, masquerade), over ICMP too.
pub fn probe_egress(
    step: &str,
    path: &str,
    proto: Proto,
    from: &Host,
    to: &Host,
    expected_src: Ipv4Addr,
) -> CheckResult {
    let seen = match proto {
        Proto::Tcp => tcp(from.netns, to.netns, to.ip),
        Proto::Udp => udp(from.netns, to.netns, to.ip),
        Proto::Icmp => icmp_seen(from.netns, to.netns, to.ip),
    };
    result(
        step,
        path,
        proto,
        from,
        to,
        (expected_src, "its node's IP"),
        seen.map(Some),
    )
}

fn result(
    step: &str,
    path: &str,
    proto: Proto,
    from: &Host,
    to: &Host,
    (expected_src, expected_is): (Ipv4Addr, &'static str),
    seen: Result<Option<Ipv4Addr>>,
) -> CheckResult {
    let (seen_src, error) = match seen {
        Ok(ip) => (ip, None),
        Err(e) => (None, Some(format!("{e:#}"))),
    };
    CheckResult {
        step: step.into(),
        from: from.name.into(),
        to: to.name.into(),
        proto,
        path: path.into(),
        dst: to.ip,
        expected_src,
        expected_is,
        seen_src,
        error,
    }
}

fn parse_seen(reply: &[u8]) -> Result<Ipv4Addr> {
    let text = std::str::from_utf8(reply).context("reply is not UTF-8")?;
    text.trim()
        .strip_prefix("seen ")
        .and_then(|ip| ip.parse().ok())
        .ok_or_else(|| anyhow!("unexpected reply {text:?}"))
}

fn v4(addr: SocketAddr) -> Result<Ipv4Addr> {
    match addr {
        SocketAddr::V4(a) => Ok(*a.ip()),
        SocketAddr::V6(a) => bail!("peer is IPv6: {a}"),
    }
}

/// TCP echo: returns the client address the server saw.
pub fn tcp(client_ns: &Path, server_ns: &Path, dst: Ipv4Addr) -> Result<Ipv4Addr> {
    let port = next_port();
    let listener = netns::run_in(server_ns, || {
        TcpListener::bind(("0.0.0.0", port)).with_context(|| format!("bind tcp/{port}"))
    })?;
    std::thread::scope(|s| {
        let server = s.spawn(|| -> Result<()> {
            listener.set_nonblocking(false)?;
            let (mut conn, peer) = accept_timeout(&listener)?;
            conn.set_read_timeout(Some(TIMEOUT))?;
            let mut buf = [0u8; 64];
            let _ = conn.read(&mut buf)?;
            conn.write_all(format!("seen {}\n", v4(peer)?).as_bytes())?;
            Ok(())
        });
        let client = netns::run_in(client_ns, || {
            let addr = SocketAddr::V4(SocketAddrV4::new(dst, port));
            let mut c = TcpStream::connect_timeout(&addr, TIMEOUT)
                .with_context(|| format!("tcp connect to {addr}"))?;
            c.set_read_timeout(Some(TIMEOUT))?;
            c.write_all(b"hello\n")?;
            let mut buf = Vec::new();
            c.read_to_end(&mut buf).context("read tcp reply")?;
            parse_seen(&buf)
        });
        if client.is_err() {
            // Unblock the server's accept by connecting locally; its result no longer matters.
            let _ = netns::run_in(server_ns, || {
                Ok(TcpStream::connect_timeout(
                    &SocketAddr::from(([127, 0, 0, 1], port)),
                    TIMEOUT,
                ))
            });
        }
        let served = server
            .join()
            .unwrap_or_else(|_| Err(anyhow!("server panicked")));
        let seen = client?;
        served?;
        Ok(seen)
    })
}

fn accept_timeout(l: &TcpListener) -> Result<(TcpStream, SocketAddr)> {
    l.set_nonblocking(true)?;
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        match l.accept() {
            Ok((c, a)) => {
                c.set_nonblocking(false)?;
                return Ok((c, a));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if std::time::Instant::now() > deadline {
                    bail!("no tcp connection arrived within {TIMEOUT:?}");
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e).context("accept"),
        }
    }
}

/// UDP echo: returns the client address the server saw.
pub fn udp(client_ns: &Path, server_ns: &Path, dst: Ipv4Addr) -> Result<Ipv4Addr> {
    let port = next_port();
    let server = netns::run_in(server_ns, || {
        UdpSocket::bind(("0.0.0.0", port)).with_context(|| format!("bind udp/{port}"))
    })?;
    server.set_read_timeout(Some(TIMEOUT))?;
    let client = netns::run_in(client_ns, || {
        UdpSocket::bind(("0.0.0.0", 0)).context("bind udp client")
    })?;
    client.set_read_timeout(Some(Duration::from_millis(500)))?;
    std::thread::scope(|s| {
        let srv = s.spawn(|| -> Result<()> {
            let mut buf = [0u8; 64];
            let (_, peer) = server.recv_from(&mut buf).context("udp server receive")?;
            server.send_to(format!("seen {}\n", v4(peer)?).as_bytes(), peer)?;
            Ok(())
        });
        // UDP may lose the first datagram while ARP resolves: retry a few times.
        let mut last = anyhow!("no udp reply");
        for _ in 0..5 {
            client.send_to(b"hello\n", (dst, port))?;
            let mut buf = [0u8; 64];
            match client.recv_from(&mut buf) {
                Ok((n, _)) => {
                    let _ = srv.join();
                    return parse_seen(&buf[..n]);
                }
                Err(e) => last = anyhow!(e).context(format!("udp reply from {dst}:{port}")),
            }
        }
        let _ = srv.join();
        Err(last)
    })
}

/// ICMP echo from `client_ns` to `dst`, whose namespace `server_ns` watches with a
/// raw socket: returns the source address the echo request arrived with.
pub fn icmp_seen(client_ns: &Path, server_ns: &Path, dst: Ipv4Addr) -> Result<Ipv4Addr> {
    let watch = netns::run_in(server_ns, raw_icmp)?;
    icmp(client_ns, dst)?;
    let deadline = std::time::Instant::now() + TIMEOUT;
    while std::time::Instant::now() < deadline {
        let mut buf = [0u8; 1500];
        let Some(n) = watch.recv(&mut buf, Duration::from_millis(100))? else {
            continue;
        };
        let ihl = ((buf[0] & 0xf) as usize) * 4;
        // Our echo request (type 8, our payload): the identifier may be translated.
        if n >= ihl + 16 && buf[ihl] == 8 && &buf[ihl + 8..ihl + 16] == PING_PAYLOAD {
            return Ok(Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]));
        }
    }
    bail!("{dst} answered but its raw socket saw no echo request")
}

const PING_PAYLOAD: &[u8; 8] = b"netpath!";

pub(crate) fn raw_icmp() -> Result<UdpSocketLike> {
    // SAFETY: plain socket syscall.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("raw ICMP socket");
    }
    // SAFETY: we own the fd from here on.
    Ok(UdpSocketLike(unsafe {
        <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd)
    }))
}

/// ICMP echo from inside `client_ns` to `dst`; Ok when a matching reply arrives.
pub fn icmp(client_ns: &Path, dst: Ipv4Addr) -> Result<()> {
    netns::run_in(client_ns, || ping(dst))
}

fn ping(dst: Ipv4Addr) -> Result<()> {
    let sock = raw_icmp()?;
    let ident: u16 = (std::process::id() as u16) ^ 0x6e70;
    for seq in 1..=5u16 {
        let mut pkt = [0u8; 16];
        pkt[0] = 8;
        pkt[4..6].copy_from_slice(&ident.to_be_bytes());
        pkt[6..8].copy_from_slice(&seq.to_be_bytes());
        pkt[8..16].copy_from_slice(PING_PAYLOAD);
        let c = crate::csum::fold(crate::csum::sum(&pkt));
        pkt[2..4].copy_from_slice(&c.to_be_bytes());
        sock.send_to(&pkt, dst)?;
        let deadline = std::time::Instant::now() + Duration::from_millis(600);
        while std::time::Instant::now() < deadline {
            let mut buf = [0u8; 1500];
            let Some(n) = sock.recv(&mut buf, Duration::from_millis(100))? else {
                continue;
            };
            let ihl = ((buf[0] & 0xf) as usize) * 4;
            if n < ihl + 8 {
                continue;
            }
            let icmp = &buf[ihl..n];
            let src = Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]);
            if icmp[0] == 0 && icmp[4..6] == ident.to_be_bytes() && src == dst {
                return Ok(());
            }
        }
    }
    bail!("no ICMP echo reply from {dst}")
}

pub(crate) struct UdpSocketLike(std::os::fd::OwnedFd);

impl UdpSocketLike {
    pub(crate) fn send_to(&self, buf: &[u8], dst: Ipv4Addr) -> Result<()> {
        use std::os::fd::AsRawFd;
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(dst.octets()),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: valid buffer and sockaddr of the stated length.
        let n = unsafe {
            libc::sendto(
                self.0.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                0,
                (&sa as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error()).with_context(|| format!("send to {dst}"));
        }
        Ok(())
    }

    pub(crate) fn recv(&self, buf: &mut [u8], timeout: Duration) -> Result<Option<usize>> {
        use std::os::fd::AsRawFd;
        let mut pfd = libc::pollfd {
            fd: self.0.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) };
        if r <= 0 {
            return Ok(None);
        }
        // SAFETY: valid buffer.
        let n = unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(std::io::Error::last_os_error()).context("recv");
        }
        Ok(Some(n as usize))
    }
}

/// A TCP stream kept busy between two namespaces, to see what an event (an agent
/// restart, a spec change) does to a live connection.
pub struct Stream {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    client: std::thread::JoinHandle<Result<u64>>,
    server: std::thread::JoinHandle<Result<StreamStats>>,
}

/// What the receiving end saw.
#[derive(Debug, Clone, Copy)]
pub struct StreamStats {
    pub bytes: u64,
    /// The longest time without any data arriving.
    pub max_gap: Duration,
}

/// Starts sending from `client_ns` to `dst` in `server_ns` until `finish`.
pub fn stream(client_ns: &Path, server_ns: &Path, dst: Ipv4Addr) -> Result<Stream> {
    let port = next_port();
    stream_via(client_ns, server_ns, SocketAddrV4::new(dst, port), port)
}

/// A stream to `dst` that arrives at `server_ns` on `port` (`dst` a service's
/// front end whose backend listens there).
pub fn stream_via(
    client_ns: &Path,
    server_ns: &Path,
    dst: SocketAddrV4,
    port: u16,
) -> Result<Stream> {
    let listener = netns::run_in(server_ns, || {
        TcpListener::bind(("0.0.0.0", port)).with_context(|| format!("bind tcp/{port}"))
    })?;
    let conn = netns::run_in(client_ns, || {
        let addr = SocketAddr::V4(dst);
        TcpStream::connect_timeout(&addr, TIMEOUT).with_context(|| format!("tcp connect to {addr}"))
    })?;
    let (mut accepted, _) = accept_timeout(&listener)?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let server = std::thread::spawn(move || -> Result<StreamStats> {
        // A stall longer than this is a broken connection, not a hiccup.
        accepted.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut buf = vec![0u8; 1 << 16];
        let (mut bytes, mut max_gap) = (0u64, Duration::ZERO);
        let mut last = std::time::Instant::now();
        loop {
            let n = accepted.read(&mut buf).context("stream receive")?;
            if n == 0 {
                return Ok(StreamStats { bytes, max_gap });
            }
            max_gap = max_gap.max(last.elapsed());
            last = std::time::Instant::now();
            bytes += n as u64;
        }
    });
    let flag = stop.clone();
    let client = std::thread::spawn(move || -> Result<u64> {
        let mut conn = conn;
        conn.set_write_timeout(Some(Duration::from_secs(10)))?;
        let chunk = vec![0x5au8; 1 << 16];
        let mut sent = 0u64;
        while !flag.load(Ordering::Relaxed) {
            conn.write_all(&chunk).context("stream send")?;
            sent += chunk.len() as u64;
        }
        conn.shutdown(std::net::Shutdown::Write)?;
        Ok(sent)
    });
    Ok(Stream {
        stop,
        client,
        server,
    })
}

impl Stream {
    /// Stops sending; fails if either end saw an error (a reset, a timeout) or bytes
    /// went missing.
    pub fn finish(self) -> Result<StreamStats> {
        self.stop.store(true, Ordering::Relaxed);
        let sent = self
            .client
            .join()
            .map_err(|_| anyhow!("stream client panicked"))??;
        let stats = self
            .server
            .join()
            .map_err(|_| anyhow!("stream server panicked"))??;
        if stats.bytes != sent {
            bail!("sent {sent} bytes, {} arrived", stats.bytes);
        }
        Ok(stats)
    }
}
