//! Sockets translated at the socket: the cgroup programs that translate a ClusterIP
//! at connect() and sendmsg(), attached to the cgroup root through pinned links (so
//! a restarted agent's processes keep working); the probe that tells them which
//! network namespace is the node's; and the pods' namespaces they also translate.
use std::{
    net::{Ipv4Addr, UdpSocket},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};
use aya::{
    maps::{Array, HashMap, MapData},
    programs::{
        links::{CgroupAttachMode, FdLink},
        CgroupSockAddr,
    },
};
use netpath_common::{names, SockProbe};

use super::Loaded;

/// The socket programs and the pin of each one's cgroup link.
const PROGRAMS: [(&str, &str); 4] = [
    (names::SOCK_CONNECT, "sock_connect_link"),
    (names::SOCK_SENDMSG, "sock_sendmsg_link"),
    (names::SOCK_RECVMSG, "sock_recvmsg_link"),
    (names::SOCK_GETPEERNAME, "sock_getpeername_link"),
];

/// `SO_NETNS_COOKIE` (Linux 5.14): the cookie of a socket's network namespace.
const SO_NETNS_COOKIE: libc::c_int = 71;

/// The cookie of the network namespace at `netns`; None where the kernel does not
/// name it (before 5.14).
fn netns_cookie(netns: &Path) -> Result<Option<u64>> {
    crate::netns::run_in(netns, || {
        // SAFETY: a plain socket call; the fd is owned at once.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("open a socket in the pod");
        }
        // SAFETY: fd was just opened and is owned by nothing else.
        let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let mut cookie = 0u64;
        let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
        // SAFETY: the option writes at most `len` bytes into `cookie`.
        let rc = unsafe {
            libc::getsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&sock),
                libc::SOL_SOCKET,
                SO_NETNS_COOKIE,
                (&mut cookie as *mut u64).cast(),
                &mut len,
            )
        };
        if rc == 0 {
            return Ok(Some(cookie));
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOPROTOOPT) {
            return Ok(None);
        }
        Err(e).context("read the pod namespace's cookie")
    })
}

fn pod_netns_map(pin_dir: &Path) -> Result<Option<HashMap<MapData, u64, [u8; 4]>>> {
    let pin = pin_dir.join(names::POD_NETNS);
    // Pins of an agent from before pods were translated at the socket.
    if !pin.exists() {
        return Ok(None);
    }
    let data =
        MapData::from_pin(&pin).with_context(|| format!("open pinned map {}", pin.display()))?;
    Ok(Some(
        aya::maps::Map::HashMap(data)
            .try_into()
            .with_context(|| format!("map {}", pin.display()))?,
    ))
}

/// Lets the socket programs translate the pod's connect() to a ClusterIP: its
/// packets then carry no per-packet NAT at all. Returns whether it was registered
/// (not on kernels that do not name a namespace's cookie, nor with an older agent's
/// pins: such pods are translated per packet).
pub fn register_pod(pin_dir: &Path, netns: &Path, ip: Ipv4Addr) -> Result<bool> {
    let Some(mut map) = pod_netns_map(pin_dir)? else {
        return Ok(false);
    };
    let Some(cookie) = netns_cookie(netns)? else {
        return Ok(false);
    };
    // A namespace of an earlier pod with this address (its DEL never came) goes.
    remove_pod(&mut map, ip);
    map.insert(cookie, ip.octets(), 0)
        .with_context(|| format!("register pod {ip}'s namespace"))?;
    Ok(true)
}

/// Forgets the namespace of the pod with address `ip`.
pub fn unregister_pod(pin_dir: &Path, ip: Ipv4Addr) -> Result<()> {
    if let Some(mut map) = pod_netns_map(pin_dir)? {
        remove_pod(&mut map, ip);
    }
    Ok(())
}

fn remove_pod(map: &mut HashMap<MapData, u64, [u8; 4]>, ip: Ipv4Addr) {
    let stale: Vec<u64> = map
        .iter()
        .filter_map(|kv| kv.ok())
        .filter(|(_, v)| *v == ip.octets())
        .map(|(k, _)| k)
        .collect();
    for k in stale {
        // Gone since it was read (a concurrent DEL): gone is gone.
        let _ = map.remove(&k);
    }
}

/// The pods whose connect() is translated at the socket.
pub fn pods_at_the_socket(pin_dir: &Path) -> Result<Vec<Ipv4Addr>> {
    let Some(map) = pod_netns_map(pin_dir)? else {
        return Ok(Vec::new());
    };
    let mut out: Vec<Ipv4Addr> = map
        .iter()
        .filter_map(|kv| kv.ok())
        .map(|(_, v)| Ipv4Addr::from(v))
        .collect();
    out.sort();
    Ok(out)
}

/// cgroup2's `statfs` magic.
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// Whether `path` is the mount of a cgroup v2 hierarchy.
pub fn is_cgroup2(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: a valid C string and a statfs to fill.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0) && st.f_type as i64 == CGROUP2_SUPER_MAGIC
}

/// The first cgroup v2 mount of this mount namespace.
pub fn cgroup2_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    // "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS ... - FSTYPE SOURCE SUPER_OPTS"
    info.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        let mountpoint = left.split(' ').nth(4)?;
        (right.split(' ').next() == Some("cgroup2")).then(|| PathBuf::from(mountpoint))
    })
}

impl Loaded {
    /// Loads the socket programs, attaches them to `cgroup` (the new links first,
    /// then an earlier agent's are released, so no connect goes untranslated) and
    /// returns the node namespace's cookie, which the caller puts in the settings.
    pub fn attach_sockets(&mut self, cgroup: &Path) -> Result<u64> {
        let dir = std::fs::File::open(cgroup)
            .with_context(|| format!("open cgroup {}", cgroup.display()))?;
        for (name, pin) in PROGRAMS {
            let prog: &mut CgroupSockAddr = self
                .ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("program {name} missing from object"))?
                .try_into()?;
            prog.load().map_err(|e| super::verifier_error(name, e))?;
            // A link never excludes others (systemd's, another lab node's); the kernel
            // takes no attach flags with one.
            let id = prog
                .attach(&dir, CgroupAttachMode::Single)
                .with_context(|| format!("attach {name} to {}", cgroup.display()))?;
            let link: FdLink = prog
                .take_link(id)?
                .try_into()
                .context("cgroup link is not an fd link (kernel before 5.7)")?;
            let pin = self.dir.join(pin);
            if pin.exists() {
                std::fs::remove_file(&pin).with_context(|| format!("release {}", pin.display()))?;
            }
            link.pin(&pin)
                .with_context(|| format!("pin {}", pin.display()))?;
        }
        self.probe_netns_cookie()
    }

    /// Connects a UDP socket (which sends nothing) to 127.0.0.1 on a random port
    /// the connect program watches for, and reads back the cookie it saw.
    fn probe_netns_cookie(&mut self) -> Result<u64> {
        let mut probe: Array<_, SockProbe> = self
            .ebpf
            .map_mut(names::SOCK_PROBE)
            .ok_or_else(|| anyhow!("map {} missing", names::SOCK_PROBE))?
            .try_into()?;
        let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).context("bind the probe socket")?;
        // Its own port: no other socket connects there by chance at this moment.
        let port = sock.local_addr()?.port();
        probe.set(
            0,
            SockProbe {
                port: port.to_be() as u32,
                ..Default::default()
            },
            0,
        )?;
        let result = (|| {
            sock.connect((Ipv4Addr::LOCALHOST, port))
                .context("connect the probe socket")?;
            let deadline = Instant::now() + Duration::from_secs(1);
            loop {
                let p = probe.get(&0, 0)?;
                if p.cookie != 0 {
                    return Ok(p.cookie);
                }
                if Instant::now() > deadline {
                    bail!("the connect program never saw the probe: is it attached?");
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })();
        probe.set(0, SockProbe::default(), 0)?;
        result
    }
}
