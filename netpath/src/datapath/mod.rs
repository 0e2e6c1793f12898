//! Loading, pinning and attaching the kernel programs, and typed access to their maps.
//!
//! The agent loads the object once per node and pins maps and programs under
//! `<root>/<node>/`; everything else (endpoint setup from the lab or the CNI plugin,
//! `netpath status`) opens those pins, so it works from any process.
pub(crate) mod attach;
pub mod attached;
pub mod bpf_log;
mod maps;
mod nat;
mod pinned;
mod policy;
mod services;
mod sockets;

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use aya::{
    maps::MapInfo,
    programs::{links::FdLink, SchedClassifier, TcAttachType, Xdp, XdpMode},
    EbpfLoader,
};
use netpath_common::{names, TcAttach, DEFAULT_DROPS_PER_SEC, DEFAULT_TRACES_PER_SEC};

pub use crate::spec::DEFAULT_BPFFS_ROOT;
pub use attach::{detach, preferred_tc_attach, reattach_from_pod};
pub use maps::{Counter, EventLoss, Fill, Pinned};
pub use nat::{monotonic_ns, Collected, Collector, NatUsage};
pub use services::{reply_key, ServiceCollector, ServiceUsage, ServicesCollected};
pub use sockets::{cgroup2_mount, is_cgroup2, pods_at_the_socket, register_pod, unregister_pod};

/// The compiled kernel programs, built by `cargo xtask build`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("NETPATH_EBPF_OBJ"));

const PROGRAMS: [&str; 4] = [
    names::FROM_POD,
    names::FROM_UNDERLAY,
    names::TO_UNDERLAY,
    names::FROM_TUNNEL,
];

/// Where one node's pins live.
pub fn node_dir(root: &Path, node: &str) -> PathBuf {
    root.join(node)
}

/// The agent's handle on the loaded object; dropping it leaves the pins in place.
pub struct Loaded {
    ebpf: aya::Ebpf,
    pub dir: PathBuf,
}

/// Loads the object, reusing maps already pinned in `dir` (so an agent restart keeps
/// endpoints, routes, counters and settings), and pins maps and programs.
pub fn load_and_pin(dir: &Path) -> Result<Loaded> {
    ensure_bpffs(dir)?;
    raise_memlock()?;
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    check_layout(dir)?;
    let pins: Vec<PathBuf> = netpath_common::maps::ALL
        .iter()
        .map(|m| dir.join(m.name))
        .collect();
    // Fixed at load: the programs write only the lines the agent would print. Not
    // required: an object without aya-log loads all the same (bpf_log::forward says so).
    let log_level = bpf_log::level();
    let mut loader = EbpfLoader::new();
    loader.override_global(aya_log::LEVEL, &log_level, false);
    for (m, pin) in netpath_common::maps::ALL.iter().zip(&pins) {
        loader.map_pin_path(m.name, pin.as_path());
    }
    let mut ebpf = loader.load(OBJECT).context("load eBPF object")?;
    for name in PROGRAMS {
        let prog: &mut SchedClassifier = ebpf
            .program_mut(name)
            .ok_or_else(|| anyhow!("program {name} missing from object"))?
            .try_into()?;
        let started = std::time::Instant::now();
        prog.load().map_err(|e| verifier_error(name, e))?;
        // Verification is most of an agent's start, and grows with the programs.
        tracing::debug!(
            program = name,
            ms = started.elapsed().as_millis() as u64,
            "verified"
        );
        let pin = dir.join(name);
        if pin.exists() {
            std::fs::remove_file(&pin).with_context(|| format!("replace pin {}", pin.display()))?;
        }
        prog.pin(&pin)
            .with_context(|| format!("pin {}", pin.display()))?;
    }
    let xdp: &mut Xdp = ebpf
        .program_mut(names::XDP_UNDERLAY)
        .ok_or_else(|| anyhow!("program {} missing from object", names::XDP_UNDERLAY))?
        .try_into()?;
    xdp.load()
        .map_err(|e| verifier_error(names::XDP_UNDERLAY, e))?;
    // SETTINGS are reconcile's: an earlier agent's stay in force until its first pass.
    let mut pinned = Pinned::open(dir)?;
    // The budgets are the agent's; a tracing monitor's sampling stays as it is.
    let mut monitor = pinned.monitor_config()?;
    monitor.drops_per_sec = DEFAULT_DROPS_PER_SEC;
    monitor.traces_per_sec = DEFAULT_TRACES_PER_SEC;
    pinned.write_monitor_config(monitor)?;
    Ok(Loaded {
        ebpf,
        dir: dir.to_path_buf(),
    })
}

/// Pin of the XDP link, so it outlives an agent stopped with `--keep-pins`.
const XDP_LINK_PIN: &str = "xdp_underlay_link";

impl Loaded {
    /// Attaches the underlay programs: decap/deliver on ingress, encap on egress, and
    /// with `xdp` the XDP decapsulation in front of them.
    /// Returns how the TC programs ended up attached: TCX is probed first where the
    /// kernel should have it, netlink is the fallback.
    pub fn attach_underlay(&mut self, ifname: &str, xdp: bool) -> Result<TcAttach> {
        let link_pin = self.dir.join(XDP_LINK_PIN);
        if link_pin.exists() {
            // An earlier agent's XDP link: releasing the pin detaches it.
            std::fs::remove_file(&link_pin)
                .with_context(|| format!("remove {}", link_pin.display()))?;
        }
        if xdp {
            let prog: &mut Xdp = self
                .ebpf
                .program_mut(names::XDP_UNDERLAY)
                .ok_or_else(|| anyhow!("program {} missing", names::XDP_UNDERLAY))?
                .try_into()?;
            let id = prog.attach(ifname, XdpMode::Driver).with_context(|| {
                format!("attach {} to {ifname} (native XDP)", names::XDP_UNDERLAY)
            })?;
            let link: FdLink = prog
                .take_link(id)?
                .try_into()
                .context("XDP link is not an fd link (kernel without bpf_link for XDP)")?;
            link.pin(&link_pin)
                .with_context(|| format!("pin {}", link_pin.display()))?;
        }
        let mut mode = preferred_tc_attach();
        for (name, hook) in [
            (names::FROM_UNDERLAY, TcAttachType::Ingress),
            (names::TO_UNDERLAY, TcAttachType::Egress),
        ] {
            let prog: &mut SchedClassifier = self
                .ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("program {name} missing"))?
                .try_into()?;
            if mode == TcAttach::Tcx {
                if let Err(e) = attach::attach_persistent(prog, &self.dir, ifname, hook, name, mode)
                {
                    tracing::warn!("TCX attach failed, falling back to netlink: {e:#}");
                    mode = TcAttach::Netlink;
                }
            }
            if mode == TcAttach::Netlink {
                attach::attach_persistent(prog, &self.dir, ifname, hook, name, mode)?;
            }
        }
        Ok(mode)
    }
}

impl Loaded {
    /// Forwards the programs' diagnostic lines into the agent's log (on the current
    /// tokio runtime) for as long as it runs.
    pub fn forward_logs(&mut self) {
        bpf_log::forward(&mut self.ebpf);
    }

    /// Attaches the receive program to the node's VXLAN device, the same way as on the
    /// underlay.
    pub fn attach_tunnel(&mut self, ifname: &str, mode: TcAttach) -> Result<()> {
        let prog: &mut SchedClassifier = self
            .ebpf
            .program_mut(names::FROM_TUNNEL)
            .ok_or_else(|| anyhow!("program {} missing", names::FROM_TUNNEL))?
            .try_into()?;
        attach::attach_persistent(
            prog,
            &self.dir,
            ifname,
            TcAttachType::Ingress,
            names::FROM_TUNNEL,
            mode,
        )
    }
}

impl Loaded {
    /// Attaches the decrypted-packet program to the node's WireGuard device, loaded
    /// only here: nodes without encryption do not pay its verification at start.
    pub fn attach_wireguard(&mut self, ifname: &str, mode: TcAttach) -> Result<()> {
        let prog: &mut SchedClassifier = self
            .ebpf
            .program_mut(names::FROM_WIREGUARD)
            .ok_or_else(|| anyhow!("program {} missing", names::FROM_WIREGUARD))?
            .try_into()?;
        if prog.fd().is_err() {
            prog.load()
                .map_err(|e| verifier_error(names::FROM_WIREGUARD, e))?;
        }
        attach::attach_persistent(
            prog,
            &self.dir,
            ifname,
            TcAttachType::Ingress,
            names::FROM_WIREGUARD,
            mode,
        )
    }
}

#[derive(Debug, thiserror::Error)]
#[error(
    "pinned map {path} has another layout ({found}) than this agent's programs use ({want}): \
     it was made by a different netpath version. Stop the old agent, then remove {dir} \
     (pods on this node lose their datapath until they are attached again) and start this one"
)]
pub struct LayoutMismatch {
    pub path: PathBuf,
    pub dir: PathBuf,
    pub found: String,
    pub want: String,
}

fn shape(key: u32, value: u32, max_entries: u32) -> String {
    format!("key {key} B, value {value} B, {max_entries} entries")
}

/// Pins are reused by name, so a map of another shape must never be picked up: it
/// would be read with the wrong key or value layout. Compares every pinned map with
/// the definition in the embedded object.
fn check_layout(dir: &Path) -> Result<()> {
    let obj = aya_obj::Object::parse(OBJECT).context("parse the embedded eBPF object")?;
    for name in netpath_common::maps::ALL.iter().map(|m| m.name) {
        let path = dir.join(name);
        if !path.exists() {
            continue;
        }
        let def = obj
            .maps
            .get(name)
            .ok_or_else(|| anyhow!("map {name} missing from object"))?;
        let want = shape(def.key_size(), def.value_size(), def.max_entries());
        let info =
            MapInfo::from_pin(&path).with_context(|| format!("inspect {}", path.display()))?;
        let found = shape(info.key_size(), info.value_size(), info.max_entries());
        if found != want {
            return Err(LayoutMismatch {
                path,
                dir: dir.to_path_buf(),
                found,
                want,
            }
            .into());
        }
    }
    Ok(())
}

/// Turns a load failure into the program name plus the verifier log's last lines.
fn verifier_error(name: &str, err: aya::programs::ProgramError) -> anyhow::Error {
    if let aya::programs::ProgramError::LoadError {
        io_error,
        verifier_log,
    } = &err
    {
        let log = verifier_log.to_string();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return anyhow!(
            "the verifier rejected program {name}: {io_error}\n{}",
            tail.join("\n")
        );
    }
    anyhow::Error::new(err).context(format!("load program {name}"))
}

/// Removes every pin of a node (programs stay attached where the kernel holds them).
pub fn remove_pins(dir: &Path) -> Result<()> {
    crate::files::remove_dir_all_if_present(dir)
        .with_context(|| format!("remove pins {}", dir.display()))
}

fn ensure_bpffs(dir: &Path) -> Result<()> {
    const BPF_FS_MAGIC: i64 = 0xcafe4a11;
    let mount = Path::new("/sys/fs/bpf");
    if !dir.starts_with(mount) {
        return Ok(());
    }
    let is_bpffs = |p: &Path| -> bool {
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: zeroed statfs is a valid out-parameter.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: valid C string and out-pointer.
        unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC }
    };
    if is_bpffs(mount) {
        return Ok(());
    }
    let (src, dst, fs) = (c"bpf", c"/sys/fs/bpf", c"bpf");
    // SAFETY: valid C strings.
    let rc = unsafe { libc::mount(src.as_ptr(), dst.as_ptr(), fs.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("mount bpffs on /sys/fs/bpf");
    }
    Ok(())
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; without this, map creation
/// fails with EPERM on them. Newer kernels charge memory cgroups instead, so a hard
/// limit we may not raise is only worth a warning there.
pub fn raise_memlock() -> Result<()> {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscalls with valid structs.
    unsafe {
        if libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        let mut cur: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut cur) == 0 {
            cur.rlim_cur = cur.rlim_max;
            libc::setrlimit(libc::RLIMIT_MEMLOCK, &cur);
            if cur.rlim_max == libc::RLIM_INFINITY {
                return Ok(());
            }
        }
        if aya::util::KernelVersion::current()
            .map(|v| v < aya::util::KernelVersion::new(5, 11, 0))
            .unwrap_or(true)
        {
            return Err(err).context(
                "raise RLIMIT_MEMLOCK (this kernel charges BPF maps to it; run as root without a hard limit)",
            );
        }
        tracing::debug!("RLIMIT_MEMLOCK stays at {} bytes: {err}", cur.rlim_max);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_object_has_exactly_the_maps_of_the_table() {
        let obj = aya_obj::Object::parse(OBJECT).unwrap();
        // Made per load and never pinned: aya-log's ring and the programs' global
        // data (.bss, .rodata).
        let per_load = |n: &str| n == bpf_log::RING || n.starts_with('.');
        assert!(obj.maps.contains_key(bpf_log::RING), "the programs log");
        let mut in_object: Vec<&str> = obj
            .maps
            .keys()
            .map(String::as_str)
            .filter(|n| !per_load(n))
            .collect();
        let mut declared: Vec<&str> = netpath_common::maps::ALL.iter().map(|m| m.name).collect();
        in_object.sort();
        declared.sort();
        assert_eq!(in_object, declared);
        for m in netpath_common::maps::ALL {
            let def = &obj.maps[m.name];
            let found = (
                def.map_type(),
                def.key_size(),
                def.value_size(),
                def.max_entries(),
                def.map_flags(),
            );
            let want = (
                m.kind.bpf_map_type(),
                m.key_size,
                m.value_size,
                m.max_entries,
                m.flags,
            );
            assert_eq!(
                found, want,
                "{}: (type, key, value, entries, flags)",
                m.name
            );
        }
    }

    #[test]
    fn verifier_rejections_name_the_program_and_keep_the_log_tail() {
        let log: String = (1..=40).map(|i| format!("line {i}\n")).collect();
        let err = aya::programs::ProgramError::LoadError {
            io_error: std::io::Error::from_raw_os_error(libc::EACCES),
            verifier_log: aya_obj::VerifierLog::new(log),
        };
        let msg = format!("{:#}", verifier_error("from_pod", err));
        assert!(msg.contains("program from_pod"), "{msg}");
        assert!(msg.contains("line 40") && msg.contains("line 21"), "{msg}");
        assert!(!msg.contains("line 20\n"), "only the tail: {msg}");
    }
}
