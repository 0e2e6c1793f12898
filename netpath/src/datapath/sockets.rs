//! The node's own sockets: the cgroup programs that translate a ClusterIP at
//! connect() and sendmsg(), attached to the cgroup root through pinned links (so a
//! restarted agent's processes keep working), and the probe that tells them which
//! network namespace is the node's.
use std::{
    net::{Ipv4Addr, UdpSocket},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};
use aya::{
    maps::Array,
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
