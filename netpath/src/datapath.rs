//! Loading, pinning and attaching the kernel programs, and typed access to their maps.
//!
//! The agent loads the object once per node and pins maps and programs under
//! `<root>/<node>/`; everything else (endpoint setup from the lab or the CNI plugin,
//! `netpath status`) opens those pins, so it works from any process.
use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use anyhow::{anyhow, bail, Context, Result};
use aya::{
    maps::{
        lpm_trie::{Key, LpmTrie},
        Array, HashMap, Map, MapData, PerCpuArray,
    },
    programs::links::Link,
    programs::{
        links::{FdLink, LinkOrder, PinnedLink},
        tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions, TcHandle},
        SchedClassifier, TcAttachType, Xdp, XdpMode,
    },
    EbpfLoader,
};
use netpath_common::{
    names, stats_index, Endpoint, Peer, Program, Reason, RedirectMode, Route, Settings, TcAttach,
};

use crate::netlink::Netlink;

/// The compiled kernel programs, built by `cargo xtask build`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("NETPATH_EBPF_OBJ"));

pub const DEFAULT_BPFFS_ROOT: &str = "/sys/fs/bpf/netpath";

/// TC priority and handle of our filter on every veth, fixed so a re-attach replaces it.
const TC_PRIORITY: u16 = 1;
const TC_HANDLE: TcHandle = TcHandle::new(0, 1);

const MAPS: [&str; 5] = [
    names::ENDPOINTS,
    names::ROUTES,
    names::NODES,
    names::STATS,
    names::SETTINGS,
];
const PROGRAMS: [&str; 3] = [names::FROM_POD, names::FROM_UNDERLAY, names::TO_UNDERLAY];

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
/// endpoints, routes and counters), pins maps and programs, and writes the settings.
pub fn load_and_pin(dir: &Path, settings: Settings) -> Result<Loaded> {
    ensure_bpffs(dir)?;
    raise_memlock()?;
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let pins: Vec<PathBuf> = MAPS.iter().map(|m| dir.join(m)).collect();
    let mut loader = EbpfLoader::new();
    for (name, pin) in MAPS.iter().zip(&pins) {
        loader.map_pin_path(name, pin.as_path());
    }
    let mut ebpf = loader.load(OBJECT).context("load eBPF object")?;
    for name in PROGRAMS {
        let prog: &mut SchedClassifier = ebpf
            .program_mut(name)
            .ok_or_else(|| anyhow!("program {name} missing from object"))?
            .try_into()?;
        prog.load().map_err(|e| verifier_error(name, e))?;
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
    let mut pinned = Pinned::open(dir)?;
    pinned.write_settings(settings)?;
    Ok(Loaded {
        ebpf,
        dir: dir.to_path_buf(),
    })
}

/// Pin of the XDP link, so it outlives an agent stopped with `--keep-pins`.
const XDP_LINK_PIN: &str = "xdp_underlay_link";

impl Loaded {
    /// Starts reading the programs' log records (aya-log) into this process's logger.
    pub fn logger(&mut self) -> Result<aya_log::EbpfLogger<&'static dyn log::Log>> {
        aya_log::EbpfLogger::init(&mut self.ebpf).context("init eBPF logger")
    }

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
                if let Err(e) = attach_persistent(prog, &self.dir, ifname, hook, name, mode) {
                    tracing::warn!("TCX attach failed, falling back to netlink: {e:#}");
                    mode = TcAttach::Netlink;
                }
            }
            if mode == TcAttach::Netlink {
                attach_persistent(prog, &self.dir, ifname, hook, name, mode)?;
            }
        }
        let mut pinned = Pinned::open(&self.dir)?;
        let mut s = pinned.settings()?;
        s.tc_attach = mode as u32;
        pinned.write_settings(s)?;
        Ok(mode)
    }
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
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("remove pins {}", dir.display()))?;
    }
    Ok(())
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

/// The pinned maps of one node.
pub struct Pinned {
    endpoints: HashMap<MapData, [u8; 4], Endpoint>,
    routes: LpmTrie<MapData, [u8; 4], Route>,
    nodes: HashMap<MapData, [u8; 4], Peer>,
    stats: PerCpuArray<MapData, u64>,
    settings: Array<MapData, Settings>,
}

/// A counter with its (program, reason) and the sum over CPUs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Counter {
    pub program: &'static str,
    pub reason: &'static str,
    pub drop: bool,
    pub packets: u64,
}

fn open_map(dir: &Path, name: &str) -> Result<Map> {
    let path = dir.join(name);
    let data = MapData::from_pin(&path).with_context(|| {
        format!(
            "open pinned map {} (is the agent running for this node?)",
            path.display()
        )
    })?;
    Map::from_map_data(data).with_context(|| format!("map {}", path.display()))
}

impl Pinned {
    pub fn open(dir: &Path) -> Result<Self> {
        Ok(Self {
            endpoints: open_map(dir, names::ENDPOINTS)?.try_into()?,
            routes: open_map(dir, names::ROUTES)?.try_into()?,
            nodes: open_map(dir, names::NODES)?.try_into()?,
            stats: open_map(dir, names::STATS)?.try_into()?,
            settings: open_map(dir, names::SETTINGS)?.try_into()?,
        })
    }

    pub fn write_settings(&mut self, s: Settings) -> Result<()> {
        self.settings.set(0, s, 0).context("write settings")
    }

    pub fn settings(&self) -> Result<Settings> {
        self.settings.get(&0, 0).context("read settings")
    }

    pub fn endpoints(&self) -> Result<Vec<(Ipv4Addr, Endpoint)>> {
        let mut out = Vec::new();
        for item in self.endpoints.iter() {
            let (k, v) = item.context("read endpoint")?;
            out.push((Ipv4Addr::from(k), v));
        }
        out.sort_by_key(|(ip, _)| *ip);
        Ok(out)
    }

    pub fn insert_endpoint(&mut self, ip: Ipv4Addr, ep: Endpoint) -> Result<()> {
        self.endpoints
            .insert(ip.octets(), ep, 0)
            .with_context(|| format!("insert endpoint {ip}"))
    }

    pub fn remove_endpoint(&mut self, ip: Ipv4Addr) -> Result<Option<Endpoint>> {
        let old = self.endpoints.get(&ip.octets(), 0).ok();
        match self.endpoints.remove(&ip.octets()) {
            Ok(()) => Ok(old),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("remove endpoint {ip}")),
        }
    }

    pub fn routes(&self) -> Result<Vec<(Ipv4Addr, u8, Route)>> {
        let mut out = Vec::new();
        for item in self.routes.iter() {
            let (k, v) = item.context("read route")?;
            out.push((Ipv4Addr::from(k.data()), k.prefix_len() as u8, v));
        }
        out.sort_by_key(|(ip, p, _)| (*ip, *p));
        Ok(out)
    }

    pub fn set_route(&mut self, net: Ipv4Addr, prefix: u8, route: Route) -> Result<()> {
        self.routes
            .insert(&Key::new(prefix as u32, net.octets()), route, 0)
            .with_context(|| format!("insert route {net}/{prefix}"))
    }

    pub fn remove_route(&mut self, net: Ipv4Addr, prefix: u8) -> Result<()> {
        self.routes
            .remove(&Key::new(prefix as u32, net.octets()))
            .with_context(|| format!("remove route {net}/{prefix}"))
    }

    pub fn nodes(&self) -> Result<Vec<(Ipv4Addr, Peer)>> {
        let mut out = Vec::new();
        for item in self.nodes.iter() {
            let (k, v) = item.context("read node")?;
            out.push((Ipv4Addr::from(k), v));
        }
        out.sort_by_key(|(ip, _)| *ip);
        Ok(out)
    }

    pub fn set_node(&mut self, ip: Ipv4Addr, peer: Peer) -> Result<()> {
        self.nodes
            .insert(ip.octets(), peer, 0)
            .with_context(|| format!("insert node {ip}"))
    }

    pub fn remove_node(&mut self, ip: Ipv4Addr) -> Result<()> {
        self.nodes
            .remove(&ip.octets())
            .with_context(|| format!("remove node {ip}"))
    }

    pub fn counter(&self, program: Program, reason: Reason) -> Result<u64> {
        let values = self
            .stats
            .get(&stats_index(program, reason), 0)
            .context("read stats")?;
        Ok(values.iter().sum())
    }

    pub fn counters(&self) -> Result<Vec<Counter>> {
        let mut out = Vec::new();
        for program in Program::ALL {
            for reason in Reason::ALL {
                out.push(Counter {
                    program: program.name(),
                    reason: reason.name(),
                    drop: reason.is_drop(),
                    packets: self.counter(program, reason)?,
                });
            }
        }
        Ok(out)
    }

    pub fn tc_attach(&self) -> Result<TcAttach> {
        let raw = self.settings()?.tc_attach;
        TcAttach::from_u32(raw).ok_or_else(|| anyhow!("bad tc attach mode {raw} in SETTINGS"))
    }

    pub fn redirect_mode(&self) -> Result<RedirectMode> {
        let raw = self.settings()?.redirect_mode;
        RedirectMode::from_u32(raw).ok_or_else(|| anyhow!("bad redirect mode {raw} in SETTINGS"))
    }
}

/// A pod as the CNI plugin (or the lab) hands it over.
#[derive(Debug, Clone)]
pub struct EndpointSpec {
    pub ip: Ipv4Addr,
    /// Host-side veth name in the node's namespace.
    pub host_ifname: String,
    /// MAC of the pod's interface.
    pub pod_mac: [u8; 6],
}

/// Wires a pod into the datapath: attaches the from-pod program to its host-side veth,
/// records it in the endpoint map and routes its /32 to the veth so the node reaches it.
/// Must run in the node's network namespace.
pub fn add_endpoint(dir: &Path, spec: &EndpointSpec) -> Result<()> {
    let nl = Netlink::new()?;
    let host = nl.link(&spec.host_ifname)?;
    let host_mac = host
        .mac
        .ok_or_else(|| anyhow!("{} has no MAC", spec.host_ifname))?;
    attach_from_pod(dir, &spec.host_ifname)?;
    let mut pinned = Pinned::open(dir)?;
    pinned.insert_endpoint(
        spec.ip,
        Endpoint {
            ifindex: host.index,
            pod_mac: spec.pod_mac,
            host_mac,
        },
    )?;
    nl.replace_route(spec.ip, 32, host.index, None)?;
    tracing::debug!(ip = %spec.ip, veth = %spec.host_ifname, "endpoint added");
    Ok(())
}

/// Forgets a pod: its map entry and TCX link pin go; a netlink filter and the route
/// go with its veth.
pub fn remove_endpoint(dir: &Path, ip: Ipv4Addr) -> Result<bool> {
    let mut pinned = Pinned::open(dir)?;
    let Some(old) = pinned.remove_endpoint(ip)? else {
        return Ok(false);
    };
    let pin = link_pin(dir, old.ifindex, TcAttachType::Ingress);
    if pin.exists() {
        std::fs::remove_file(&pin).with_context(|| format!("remove {}", pin.display()))?;
    }
    Ok(true)
}

/// TCX links on 6.6+ (they compose with other programs and need no qdisc), netlink
/// clsact filters before.
pub fn preferred_tc_attach() -> TcAttach {
    match aya::util::KernelVersion::current() {
        Ok(v) if v >= aya::util::KernelVersion::new(6, 6, 0) => TcAttach::Tcx,
        _ => TcAttach::Netlink,
    }
}

fn attach_from_pod(dir: &Path, ifname: &str) -> Result<()> {
    let mode = Pinned::open(dir)?.tc_attach()?;
    let pin = dir.join(names::FROM_POD);
    let mut prog = SchedClassifier::from_pin(&pin)
        .with_context(|| format!("open pinned program {}", pin.display()))?;
    attach_persistent(
        &mut prog,
        dir,
        ifname,
        TcAttachType::Ingress,
        names::FROM_POD,
        mode,
    )
}

fn add_clsact(ifname: &str) -> Result<()> {
    match tc::qdisc_add_clsact(ifname) {
        Err(e) if !is_exists(&e) => Err(e).with_context(|| format!("add clsact qdisc to {ifname}")),
        _ => Ok(()),
    }
}

fn hook_name(hook: TcAttachType) -> &'static str {
    match hook {
        TcAttachType::Egress => "egress",
        _ => "ingress",
    }
}

fn ifindex(ifname: &str) -> Result<u32> {
    let c = std::ffi::CString::new(ifname)?;
    // SAFETY: valid C string.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => bail!("no interface {ifname}"),
        i => Ok(i),
    }
}

/// Where a TCX link is pinned: by ifindex, as veth names are reused by new pods.
fn link_pin(dir: &Path, ifindex: u32, hook: TcAttachType) -> PathBuf {
    dir.join("links")
        .join(format!("{ifindex}-{}", hook_name(hook)))
}

/// Attaches so that the program outlives this process (the CNI plugin exits right
/// away): a pinned TCX link, or a netlink filter at our fixed priority that the kernel
/// keeps until the device goes. Either replaces an earlier agent's attachment.
fn attach_persistent(
    prog: &mut SchedClassifier,
    dir: &Path,
    ifname: &str,
    hook: TcAttachType,
    name: &str,
    mode: TcAttach,
) -> Result<()> {
    match mode {
        TcAttach::Tcx => {
            let pin = link_pin(dir, ifindex(ifname)?, hook);
            if pin.exists() {
                // Swap the program inside the existing link: no gap, no second copy.
                let swapped = PinnedLink::from_pin(&pin)
                    .map_err(anyhow::Error::from)
                    .and_then(|l| Ok(SchedClassifierLink::try_from(FdLink::from(l))?))
                    .and_then(|l| Ok(prog.attach_to_link(l)?));
                match swapped {
                    Ok(id) => {
                        // The pin already holds this link.
                        drop(prog.take_link(id)?);
                        return Ok(());
                    }
                    Err(e) => {
                        tracing::debug!("stale TCX link {}: {e:#}", pin.display());
                        std::fs::remove_file(&pin)?;
                    }
                }
            }
            let id = prog
                .attach_with_options(
                    ifname,
                    hook,
                    TcAttachOptions::TcxOrder(LinkOrder::default()),
                )
                .with_context(|| format!("attach {name} to {ifname} ({} tcx)", hook_name(hook)))?;
            let link: FdLink = prog.take_link(id)?.try_into()?;
            std::fs::create_dir_all(pin.parent().expect("pin has a parent"))?;
            link.pin(&pin)
                .with_context(|| format!("pin {}", pin.display()))?;
            Ok(())
        }
        TcAttach::Netlink => {
            add_clsact(ifname)?;
            let opts = || {
                TcAttachOptions::Netlink(NlOptions {
                    priority: TC_PRIORITY,
                    handle: TC_HANDLE,
                    classid: None,
                })
            };
            let id = match prog.attach_with_options(ifname, hook, opts()) {
                Ok(id) => id,
                Err(_) => {
                    netlink_detach(ifname, hook)?;
                    prog.attach_with_options(ifname, hook, opts())
                        .with_context(|| format!("attach {name} to {ifname}"))?
                }
            };
            std::mem::forget(prog.take_link(id)?);
            Ok(())
        }
    }
}

/// Detaches our program from one hook of `ifname`, however it was attached.
pub fn detach(dir: &Path, ifname: &str, hook: TcAttachType) -> Result<()> {
    let pin = link_pin(dir, ifindex(ifname)?, hook);
    if pin.exists() {
        // The pin is the link's last holder: removing it detaches.
        return std::fs::remove_file(&pin).with_context(|| format!("remove {}", pin.display()));
    }
    netlink_detach(ifname, hook)
}

fn netlink_detach(ifname: &str, hook: TcAttachType) -> Result<()> {
    let link = SchedClassifierLink::attached(ifname, hook, TC_PRIORITY, TC_HANDLE, None)?;
    match link.detach() {
        Ok(()) => Ok(()),
        Err(e) => bail!("detach from {ifname}: {e}"),
    }
}

fn is_exists(e: &tc::TcError) -> bool {
    match e {
        tc::TcError::AlreadyAttached => true,
        tc::TcError::NetlinkError(n) => n.raw_os_error() == Some(libc::EEXIST),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
