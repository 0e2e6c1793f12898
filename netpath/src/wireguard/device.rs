//! The user-space WireGuard device: a TUN interface on one side, a UDP socket on the
//! other, one boringtun `Tunn` per peer between them. Three threads: packets from the
//! TUN (the programs redirect pods' packets into it, the node's routes send its own)
//! are encrypted to the peer whose allowed IPs hold the destination; datagrams from
//! the socket are decrypted and written to the TUN only when the peer is allowed
//! their source; a timer thread drives handshakes and keepalives, follows the
//! config and the key file, and writes the stats.
use std::{
    collections::HashMap,
    fs::File,
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Mutex, RwLock,
    },
    time::{Duration, Instant, SystemTime},
};

use boringtun::noise::{
    handshake::parse_handshake_anon, rate_limiter::RateLimiter, Packet, Tunn, TunnResult,
};

use super::{
    config::{DeviceConfig, DeviceStats, Paths, PeerConfig, PeerStats},
    keys::{KeyPair, PRIVATE_FILE},
    tun, PublicKey, WireguardError,
};
use crate::net::Ipv4Net;

/// Handshake initiations a second before cookies are asked for (boringtun's default).
const HANDSHAKE_RATE_LIMIT: u64 = 100;
/// How often timers run (WireGuard's timers have a resolution of 100s of ms).
const TICK: Duration = Duration::from_millis(100);
/// Large enough for any datagram and any packet plus WireGuard's header.
const BUF: usize = 65_536 + 64;

/// One peer: its tunnel and where it is.
struct Peer {
    tunn: Tunn,
    public: PublicKey,
    endpoint: SocketAddrV4,
    allowed: Vec<Ipv4Net>,
}

impl Peer {
    fn allows(&self, ip: Ipv4Addr) -> bool {
        self.allowed.iter().any(|n| n.contains(ip))
    }
}

#[derive(Default)]
struct Peers {
    by_key: HashMap<PublicKey, Arc<Mutex<Peer>>>,
    /// By the index the peer's tunnel was made with (a data packet's receiver
    /// index, shifted right by 8).
    by_index: HashMap<u32, Arc<Mutex<Peer>>>,
    /// Allowed prefixes, longest first.
    routes: Vec<(Ipv4Net, Arc<Mutex<Peer>>)>,
    next_index: u32,
}

impl Peers {
    fn for_destination(&self, ip: Ipv4Addr) -> Option<&Arc<Mutex<Peer>>> {
        self.routes
            .iter()
            .find(|(net, _)| net.contains(ip))
            .map(|(_, p)| p)
    }
}

struct Keys {
    pair: KeyPair,
    limiter: Arc<RateLimiter>,
}

#[derive(Default)]
struct Counters {
    refused: AtomicU64,
    no_peer: AtomicU64,
    spoofed: AtomicU64,
}

struct Device {
    tun: File,
    udp: UdpSocket,
    keys: RwLock<Keys>,
    peers: RwLock<Peers>,
    counters: Counters,
    listen_port: u16,
}

/// Serves the TUN device `name` until the process is stopped: `state_dir` holds the
/// node's key, `paths.config` what to serve.
pub fn run(name: &str, state_dir: &Path) -> Result<std::convert::Infallible, WireguardError> {
    let paths = Paths::under(state_dir);
    let config = DeviceConfig::read(&paths.config)?;
    let pair = KeyPair::load_or_create(state_dir)?;
    let tun = tun::open(name)?;
    let udp = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, config.listen_port))
        .map_err(|e| WireguardError::Socket {
            port: config.listen_port,
            why: e.to_string(),
        })?;
    // Bursts of a TCP window arrive faster than one thread decrypts them: room for
    // them in the socket, not drops and retransmissions.
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_SNDBUFFORCE] {
        let size: libc::c_int = 8 << 20;
        // SAFETY: setsockopt on our socket with an int option.
        unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&udp),
                libc::SOL_SOCKET,
                opt,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    let limiter = Arc::new(RateLimiter::new(
        &boringtun::x25519::PublicKey::from(pair.public.0),
        HANDSHAKE_RATE_LIMIT,
    ));
    let device = Arc::new(Device {
        tun,
        udp,
        keys: RwLock::new(Keys { pair, limiter }),
        peers: RwLock::new(Peers::default()),
        counters: Counters::default(),
        listen_port: config.listen_port,
    });
    device.apply(&config);
    tracing::info!(
        device = name,
        port = config.listen_port,
        peers = config.peers.len(),
        public_key = %device.keys.read().expect("keys").pair.public,
        "user-space WireGuard serving"
    );
    let d = device.clone();
    std::thread::Builder::new()
        .name("wg-tun".into())
        .spawn(move || d.encrypt_loop())
        .map_err(|e| WireguardError::Start(e.to_string()))?;
    let d = device.clone();
    std::thread::Builder::new()
        .name("wg-udp".into())
        .spawn(move || d.decrypt_loop())
        .map_err(|e| WireguardError::Start(e.to_string()))?;
    device.timers(&paths, state_dir)
}

impl Device {
    /// Packets the node sends to other nodes' pods: encrypted to their peer.
    fn encrypt_loop(&self) {
        let mut src = vec![0u8; BUF];
        let mut dst = vec![0u8; BUF];
        let mut tun = &self.tun;
        loop {
            let n = match tun.read(&mut src) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::error!("read the TUN device: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            let packet = &src[..n];
            let Some(IpAddr::V4(to)) = Tunn::dst_address(packet) else {
                self.counters.no_peer.fetch_add(1, Relaxed);
                continue;
            };
            let peer = self
                .peers
                .read()
                .expect("peers")
                .for_destination(to)
                .cloned();
            let Some(peer) = peer else {
                self.counters.no_peer.fetch_add(1, Relaxed);
                continue;
            };
            let mut p = peer.lock().expect("peer");
            let endpoint = p.endpoint;
            if let TunnResult::WriteToNetwork(out) = p.tunn.encapsulate(packet, &mut dst) {
                let _ = self.udp.send_to(out, endpoint);
            }
        }
    }

    /// Datagrams from other nodes: handshakes answered, data decrypted into the TUN.
    fn decrypt_loop(&self) {
        let mut src = vec![0u8; BUF];
        let mut dst = vec![0u8; BUF];
        loop {
            let (n, from) = match self.udp.recv_from(&mut src) {
                Ok(r) => r,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::error!("read the WireGuard socket: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            let SocketAddr::V4(from) = from else {
                self.counters.refused.fetch_add(1, Relaxed);
                continue;
            };
            let datagram = &src[..n];
            let Some(peer) = self.peer_of(datagram) else {
                self.counters.refused.fetch_add(1, Relaxed);
                continue;
            };
            let mut p = peer.lock().expect("peer");
            match p
                .tunn
                .decapsulate(Some(IpAddr::V4(*from.ip())), datagram, &mut dst)
            {
                TunnResult::Done => {}
                TunnResult::Err(_) => {
                    self.counters.refused.fetch_add(1, Relaxed);
                }
                TunnResult::WriteToNetwork(out) => {
                    let _ = self.udp.send_to(out, from);
                    // Packets queued while the handshake went on.
                    while let TunnResult::WriteToNetwork(out) =
                        p.tunn.decapsulate(None, &[], &mut dst)
                    {
                        let _ = self.udp.send_to(out, from);
                    }
                    p.endpoint = from;
                }
                TunnResult::WriteToTunnelV4(packet, source) => {
                    if p.allows(source) {
                        let _ = (&self.tun).write(packet);
                        p.endpoint = from;
                    } else {
                        self.counters.spoofed.fetch_add(1, Relaxed);
                    }
                }
                TunnResult::WriteToTunnelV6(..) => {
                    self.counters.spoofed.fetch_add(1, Relaxed);
                }
            }
        }
    }

    /// The peer a datagram is for: a handshake initiation by the key it names (only
    /// a known key: a stranger gets nothing), anything else by its receiver index.
    fn peer_of(&self, datagram: &[u8]) -> Option<Arc<Mutex<Peer>>> {
        let packet = Tunn::parse_incoming_packet(datagram).ok()?;
        let peers = self.peers.read().expect("peers");
        match packet {
            Packet::HandshakeInit(init) => {
                let keys = self.keys.read().expect("keys");
                let public = boringtun::x25519::PublicKey::from(keys.pair.public.0);
                let half = parse_handshake_anon(&keys.pair.private, &public, &init).ok()?;
                peers
                    .by_key
                    .get(&PublicKey(half.peer_static_public))
                    .cloned()
            }
            Packet::HandshakeResponse(p) => peers.by_index.get(&(p.receiver_idx >> 8)).cloned(),
            Packet::PacketCookieReply(p) => peers.by_index.get(&(p.receiver_idx >> 8)).cloned(),
            Packet::PacketData(p) => peers.by_index.get(&(p.receiver_idx >> 8)).cloned(),
        }
    }

    /// Handshakes and keepalives when due; the config and key file followed; the
    /// stats written each second.
    fn timers(&self, paths: &Paths, state_dir: &Path) -> ! {
        let mut dst = vec![0u8; BUF];
        let key_file: PathBuf = state_dir.join(PRIVATE_FILE);
        let mut seen = (mtime(&paths.config), mtime(&key_file));
        let mut last_second = Instant::now();
        loop {
            std::thread::sleep(TICK);
            let peers: Vec<Arc<Mutex<Peer>>> = self
                .peers
                .read()
                .expect("peers")
                .by_key
                .values()
                .cloned()
                .collect();
            for peer in peers {
                let mut p = peer.lock().expect("peer");
                let endpoint = p.endpoint;
                if let TunnResult::WriteToNetwork(out) = p.tunn.update_timers(&mut dst) {
                    let _ = self.udp.send_to(out, endpoint);
                }
            }
            if last_second.elapsed() < Duration::from_secs(1) {
                continue;
            }
            last_second = Instant::now();
            self.keys.read().expect("keys").limiter.reset_count();
            let now = (mtime(&paths.config), mtime(&key_file));
            if now != seen {
                seen = now;
                self.reload(paths, state_dir);
            }
            if let Err(e) = self.write_stats(&paths.stats) {
                tracing::warn!("write the device's stats: {e}");
            }
        }
    }

    fn reload(&self, paths: &Paths, state_dir: &Path) {
        match KeyPair::load_or_create(state_dir) {
            Ok(pair) if pair.public != self.keys.read().expect("keys").pair.public => {
                self.rotate(pair)
            }
            Ok(_) => {}
            Err(e) => tracing::error!("{e}"),
        }
        match DeviceConfig::read(&paths.config) {
            Ok(c) => {
                if c.listen_port != self.listen_port {
                    tracing::warn!(
                        "listen_port {} -> {}: restart the device to move it",
                        self.listen_port,
                        c.listen_port
                    );
                }
                self.apply(&c)
            }
            Err(e) => tracing::error!("{e}; serving the last one"),
        }
    }

    /// A new key: every tunnel handshakes again with it.
    fn rotate(&self, pair: KeyPair) {
        let public = boringtun::x25519::PublicKey::from(pair.public.0);
        let limiter = Arc::new(RateLimiter::new(&public, HANDSHAKE_RATE_LIMIT));
        tracing::info!(public_key = %pair.public, "new private key");
        for peer in self.peers.read().expect("peers").by_key.values() {
            let mut p = peer.lock().expect("peer");
            p.tunn
                .set_static_private(pair.private.clone(), public, Some(limiter.clone()));
        }
        *self.keys.write().expect("keys") = Keys { pair, limiter };
    }

    /// Peers as the config says: a known key keeps its tunnel (its session survives
    /// an endpoint or allowed-IPs change), a new one gets a fresh tunnel.
    fn apply(&self, config: &DeviceConfig) {
        let keys = self.keys.read().expect("keys");
        let mut peers = self.peers.write().expect("peers");
        let mut next = Peers {
            next_index: peers.next_index,
            ..Peers::default()
        };
        for pc in &config.peers {
            if pc.public_key == keys.pair.public {
                continue;
            }
            let peer = match peers.by_key.get(&pc.public_key) {
                Some(p) => {
                    let mut g = p.lock().expect("peer");
                    g.endpoint = pc.endpoint;
                    g.allowed = pc.allowed_ips.clone();
                    drop(g);
                    let index = index_of(&peers, p);
                    (p.clone(), index)
                }
                None => {
                    next.next_index = (next.next_index + 1) & 0x00ff_ffff;
                    let index = next.next_index;
                    (Arc::new(Mutex::new(new_peer(&keys, pc, index))), index)
                }
            };
            next.by_key.insert(pc.public_key, peer.0.clone());
            next.by_index.insert(peer.1, peer.0.clone());
            for net in &pc.allowed_ips {
                next.routes.push((*net, peer.0.clone()));
            }
        }
        next.routes.sort_by_key(|r| std::cmp::Reverse(r.0.prefix));
        *peers = next;
    }

    fn write_stats(&self, path: &Path) -> std::io::Result<()> {
        let peers = self.peers.read().expect("peers");
        let mut stats = DeviceStats {
            public_key: Some(self.keys.read().expect("keys").pair.public),
            listen_port: self.listen_port,
            refused: self.counters.refused.load(Relaxed),
            no_peer: self.counters.no_peer.load(Relaxed),
            spoofed: self.counters.spoofed.load(Relaxed),
            ..DeviceStats::default()
        };
        for peer in peers.by_key.values() {
            let p = peer.lock().expect("peer");
            let (age, tx, rx, _, _) = p.tunn.stats();
            stats.peers.push(PeerStats {
                public_key: p.public,
                endpoint: p.endpoint,
                handshake_age_ms: age.map(|d| d.as_millis() as u64),
                tx_bytes: tx as u64,
                rx_bytes: rx as u64,
            });
        }
        stats.peers.sort_by_key(|p| p.public_key);
        let text = serde_json::to_vec(&stats).expect("stats serialize");
        crate::files::write_atomic(path, &text, false)
    }
}

fn index_of(peers: &Peers, p: &Arc<Mutex<Peer>>) -> u32 {
    peers
        .by_index
        .iter()
        .find(|(_, q)| Arc::ptr_eq(q, p))
        .map(|(i, _)| *i)
        .unwrap_or_default()
}

fn new_peer(keys: &Keys, pc: &PeerConfig, index: u32) -> Peer {
    Peer {
        tunn: Tunn::new(
            keys.pair.private.clone(),
            boringtun::x25519::PublicKey::from(pc.public_key.0),
            None,
            None,
            index,
            Some(keys.limiter.clone()),
        ),
        public: pc.public_key,
        endpoint: pc.endpoint,
        allowed: pc.allowed_ips.clone(),
    }
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).ok()?.modified().ok()
}
