//! The node agent: loads and pins the datapath, attaches it to the underlay and swaps
//! the new programs into every pod's veth, then keeps the node converged on its
//! spec — re-planning and applying on SIGHUP, when the spec file changes and every
//! few seconds — until SIGINT/SIGTERM. One tokio runtime drives signals, netlink and
//! the programs' log ring.
use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};
use aya::programs::TcAttachType;
use netpath_common::TcAttach;
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::mpsc,
};

use crate::{
    datapath::{self, Pinned},
    net::Ipv4Net,
    netlink::Netlink,
    plan::{self, Desired, Probed, Underlay},
    reconcile, serve,
    spec::{derived_vtep_mac, Backend, ClusterSpec, Decap, NodeSpec, PortRange, VxlanDevice},
    state::{self, AgentState},
    store::etcd::{EtcdOptions, Member, Update},
    tunnel,
};

/// How often the spec file is looked at (a change reaches the maps well within 1 s).
const WATCH_EVERY: Duration = Duration::from_millis(200);
/// How often the node is re-planned anyway, repairing drift (a route deleted by hand,
/// a changed next hop on the underlay).
const RESYNC_EVERY: Duration = Duration::from_secs(10);
/// How often expired masquerade flows are collected (the shortest timeout is 10 s).
const NAT_COLLECT_EVERY: Duration = Duration::from_secs(2);

/// Where the cluster's desired state comes from.
pub enum Source {
    /// A spec file, re-read when it changes.
    File(PathBuf),
    /// etcd: the node joins (reserving its pod CIDR) and follows the cluster.
    Etcd {
        opts: EtcdOptions,
        /// This node's underlay address; default: the address of the interface
        /// that holds the default route.
        underlay: Option<Ipv4Net>,
    },
}

pub struct AgentArgs {
    pub source: Source,
    pub node: String,
    /// Pin directory; `<bpffs_root>/<node>` when absent.
    pub pin_dir: Option<PathBuf>,
    /// Where the agent publishes its state; `/run/netpath/<node>` when absent.
    pub state_dir: Option<PathBuf>,
    pub keep_pins: bool,
    /// Where to serve /metrics, /healthz and /readyz (None: nowhere).
    pub metrics_addr: Option<std::net::SocketAddr>,
}

pub fn run(args: AgentArgs) -> Result<()> {
    // One worker beside the main loop: the etcd member (lease keep-alive, watch) must
    // keep running while the loop blocks — loading the programs takes seconds on a
    // slow machine, longer than a short lease.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("start the agent's runtime")?;
    rt.block_on(run_async(args))
}

struct Agent {
    /// The spec file, when the spec comes from one (not from etcd).
    spec_file: Option<PathBuf>,
    /// Digest of the spec file's bytes when last read (a 100 000-node spec is MBs).
    spec_digest: u64,
    /// The spec file's identity when last read: unchanged, it is not read again.
    spec_stamp: Option<FileStamp>,
    spec: ClusterSpec,
    local: NodeSpec,
    dir: PathBuf,
    state_dir: PathBuf,
    underlay: Underlay,
    underlay_name: String,
    probed: Probed,
    tc_attach: TcAttach,
    nl: Netlink,
    state: AgentState,
    shared: std::sync::Arc<serve::Shared>,
}

async fn run_async(args: AgentArgs) -> Result<()> {
    // First of all: a stop requested while starting up must still clean up, not kill.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let nl = Netlink::new()?;
    // Listening first: a taken port fails the start before anything is loaded, and
    // /readyz answers "not ready" (with the reason) while the agent starts.
    let shared = serve::Shared::new();
    let mut early = AgentState {
        node: args.node.clone(),
        pid: std::process::id(),
        waiting: Some(match &args.source {
            Source::File(_) => "reading the cluster spec".into(),
            Source::Etcd { .. } => "joining the cluster in etcd".into(),
        }),
        ..Default::default()
    };
    if let Some(addr) = args.metrics_addr {
        let bound = serve::start(addr, shared.clone()).await?;
        tracing::info!(%bound, "serving /metrics, /healthz and /readyz");
        early.metrics_addr = Some(bound.to_string());
    }
    shared.set_state(&early);
    let (spec, spec_file, spec_stamp, spec_digest, mut updates, store) = match &args.source {
        Source::File(path) => {
            // Stamp, then read: a change in between is seen on the next look.
            let stamp = FileStamp::of(path);
            let digest =
                digest(&std::fs::read(path).with_context(|| format!("read {}", path.display()))?);
            let spec = read_spec(path)?;
            let store = format!("file {}", path.display());
            (spec, Some(path.clone()), stamp, digest, None, store)
        }
        Source::Etcd { opts, underlay } => {
            let underlay = match underlay {
                Some(u) => *u,
                None => default_route_address(&nl).await?,
            };
            let member = Member::join(opts, &args.node, underlay, derived_vtep_mac(underlay.addr))
                .await
                .context("join the cluster in etcd")?;
            let (spec, notes) = member.spec()?;
            for n in notes {
                tracing::warn!("etcd: {n}");
            }
            let (tx, rx) = mpsc::channel(64);
            tokio::spawn(member.run(tx));
            let store = format!("etcd {} under {}", opts.endpoints.join(","), opts.prefix);
            (spec, None, None, 0, Some(rx), store)
        }
    };
    let local = spec.node(&args.node)?.clone();
    check_nat_ports(&spec)?;
    let dir = args
        .pin_dir
        .clone()
        .unwrap_or_else(|| datapath::node_dir(&spec.bpffs_root, &local.name));
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| state::default_dir(&local.name));
    early.pin_dir = dir.clone();
    let Some(ifindex) =
        wait_for_underlay(&nl, &local, &shared, &mut early, &mut term, &mut int).await?
    else {
        tracing::info!("stopped while waiting for the underlay address");
        return Ok(());
    };
    early.waiting = Some("loading and attaching the programs".into());
    shared.set_state(&early);
    let link = nl
        .links()
        .await?
        .into_iter()
        .find(|l| l.index == ifindex)
        .ok_or_else(|| anyhow!("underlay link {ifindex} vanished"))?;
    let underlay = Underlay {
        ifindex,
        mtu: link.mtu.unwrap_or(1500),
    };
    let mut probed = Probed {
        encap_flags: encap_flags(),
        tc_attach: datapath::preferred_tc_attach() as u32,
        ..Default::default()
    };
    let settings = plan::settings(&spec, &local, &underlay, &probed);
    let mut loaded = datapath::load_and_pin(&dir, settings)
        .with_context(|| format!("load datapath for node {}", local.name))?;
    let tc_attach = loaded.attach_underlay(&link.name, spec.decap == Decap::Xdp)?;
    probed.tc_attach = tc_attach as u32;
    if spec.backend != Backend::Direct && spec.vxlan_device != VxlanDevice::Off {
        let mtu = spec.pod_mtu(underlay.mtu);
        let index = tunnel::ensure(&nl, spec.port, local.vtep_mac, mtu)
            .await
            .context("set up the node's VXLAN device")?;
        loaded.attach_tunnel(tunnel::NAME, tc_attach)?;
        probed.tunnel_ifindex = index;
        probed.tunnel_use = spec.vxlan_device.tunnel_use();
    } else {
        // One an earlier agent made with another spec: it would hold the VXLAN port.
        tunnel::remove(&nl).await?;
    }
    // An upgrade: the pods' veths get the programs just loaded, in place.
    let reattached = datapath::reattach_from_pod(&dir)?;
    let mut agent = Agent {
        state: AgentState {
            node: local.name.clone(),
            pid: std::process::id(),
            pin_dir: dir.clone(),
            spec_file: spec_file.clone().unwrap_or_default(),
            store,
            pod_cidr: local.pod_cidr.to_string(),
            pod_mtu: spec.pod_mtu(underlay.mtu),
            netns: state::NetnsId::current().ok(),
            maps_loaded: true,
            underlay: link.name.clone(),
            tunnel: probed.tunnel_ifindex != 0,
            metrics_addr: early.metrics_addr.clone(),
            store_synced_unix_ms: Some(state::unix_ms()),
            ..Default::default()
        },
        shared,
        spec_file,
        spec_digest,
        spec_stamp,
        spec,
        local,
        dir,
        state_dir,
        underlay,
        underlay_name: link.name,
        probed,
        tc_attach,
        nl,
    };
    agent.reconcile().await?;
    release_freed_memory();
    tracing::info!(
        node = %agent.local.name,
        pins = %agent.dir.display(),
        underlay = %agent.underlay_name,
        backend = agent.spec.backend.name(),
        decap = agent.spec.decap.name(),
        vxlan_device = agent.spec.vxlan_device.name(),
        tc_attach = agent.tc_attach.name(),
        kernel = %state::kernel_release(),
        pod_cidr = %agent.local.pod_cidr,
        pod_mtu = agent.state.pod_mtu,
        store = %agent.state.store,
        reattached,
        "agent ready"
    );

    let mut watch = tokio::time::interval(WATCH_EVERY);
    let mut collect = tokio::time::interval(NAT_COLLECT_EVERY);
    let mut nat = datapath::Collector::default();
    let mut last_sync = Instant::now();
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => agent.reload("SIGHUP").await,
            Some(update) = next_update(&mut updates) => agent.on_store_update(update).await,
            _ = collect.tick() => agent.collect_nat(&mut nat),
            _ = watch.tick() => {
                if agent.spec_file_changed() {
                    agent.reload("spec file changed").await;
                } else if last_sync.elapsed() >= RESYNC_EVERY {
                    agent.reconcile_logged().await;
                } else {
                    continue;
                }
                last_sync = Instant::now();
            }
        }
    }
    drop(loaded);
    if args.keep_pins {
        AgentState::remove(&agent.state_dir);
        tracing::info!("stopping; pins and routes kept, pods keep their datapath");
        return Ok(());
    }
    agent.cleanup().await
}

impl Agent {
    fn spec_file_changed(&mut self) -> bool {
        let Some(file) = &self.spec_file else {
            return false;
        };
        let stamp = FileStamp::of(file);
        if stamp.is_some() && stamp == self.spec_stamp {
            return false;
        }
        self.spec_stamp = stamp;
        // Missing or unreadable counts as a change: reload reports why.
        std::fs::read(file).map_or(true, |t| digest(&t) != self.spec_digest)
    }

    /// What etcd says: a new cluster state to converge on, or that it is gone for
    /// now (the datapath keeps the last state).
    async fn on_store_update(&mut self, update: Update) {
        match update {
            Update::Disconnected(why) => {
                self.state.store_error = Some(format!("etcd unreachable: {why}"));
                self.state.store_watching = false;
                self.publish();
            }
            Update::Watching => {
                self.state.store_watching = true;
                self.state.store_synced_unix_ms = Some(state::unix_ms());
                self.publish();
            }
            Update::Spec(spec, notes) => {
                self.state.store_error = None;
                self.state.store_synced_unix_ms = Some(state::unix_ms());
                for n in &notes {
                    tracing::warn!("etcd: {n}");
                }
                match self.check(spec) {
                    Ok(spec) => self.adopt(spec, "etcd").await,
                    Err(e) => self.refuse("etcd", e),
                }
            }
        }
    }

    fn refuse(&mut self, why: &str, e: anyhow::Error) {
        let msg = format!("{e:#}");
        tracing::error!(why, "spec refused, forwarding on the last good one: {msg}");
        self.state.spec_error = Some(msg);
        self.publish();
    }

    async fn adopt(&mut self, spec: ClusterSpec, why: &str) {
        tracing::debug!(why, nodes = spec.nodes.len(), "spec adopted");
        self.local = spec.node(&self.local.name).expect("checked").clone();
        self.spec = spec;
        self.state.spec_error = None;
        self.reconcile_logged().await;
    }

    /// Reads the spec file again; a spec that fails validation (or would move this
    /// node) is refused and the last good one stays in force.
    async fn reload(&mut self, why: &str) {
        let Some(file) = self.spec_file.clone() else {
            return self.reconcile_logged().await;
        };
        self.spec_digest = digest(&std::fs::read(&file).unwrap_or_default());
        match read_spec(&file).and_then(|spec| self.check(spec)) {
            Ok(spec) => {
                tracing::info!(why, "spec reloaded");
                self.state.store_synced_unix_ms = Some(state::unix_ms());
                self.adopt(spec, why).await;
            }
            Err(e) => self.refuse(why, e),
        }
    }

    /// A new spec, as far as this running agent can follow it.
    fn check(&self, spec: ClusterSpec) -> Result<ClusterSpec> {
        let local = spec.node(&self.local.name)?;
        if local.underlay != self.local.underlay {
            bail!(
                "node {}'s underlay changed from {} to {}: restart the agent to move it",
                local.name,
                self.local.underlay,
                local.underlay
            );
        }
        if spec.decap != self.spec.decap {
            bail!(
                "decap changed to {}: restart the agent to re-attach",
                spec.decap.name()
            );
        }
        check_nat_ports(&spec)?;
        if spec.vxlan_device != self.spec.vxlan_device {
            bail!(
                "vxlan_device changed to {}: restart the agent to set the device up",
                spec.vxlan_device.name()
            );
        }
        Ok(spec)
    }

    async fn reconcile_logged(&mut self) {
        if let Err(e) = self.reconcile().await {
            tracing::error!("reconcile failed: {e:#}");
            self.state.problems = vec![format!("reconcile failed: {e:#}")];
            self.state.reconcile_error = Some(format!("{e:#}"));
            self.publish();
        }
        release_freed_memory();
    }

    /// Plans from the spec and the current route table, and applies the difference.
    async fn reconcile(&mut self) -> Result<()> {
        let started = Instant::now();
        let m = self.shared.metrics.clone();
        m.reconciles.inc();
        let result = self.plan_and_apply().await;
        m.reconcile_seconds.observe(started.elapsed().as_secs_f64());
        if result.is_err() {
            m.reconcile_errors.inc();
        }
        result
    }

    async fn plan_and_apply(&mut self) -> Result<()> {
        let table = self.nl.routes().await?;
        let want = plan::plan(&self.spec, &self.local, &self.underlay, &table);
        let mut pinned = Pinned::open(&self.dir)?;
        let settings = plan::settings(&self.spec, &self.local, &self.underlay, &self.probed);
        if pinned.settings()? != settings {
            pinned.write_settings(settings)?;
            tracing::info!("settings updated");
        }
        let applied = reconcile::apply(&mut pinned, &self.nl, &want).await?;
        if applied != reconcile::Applied::default() {
            tracing::info!(
                map_entries = applied.map_entries,
                kernel_routes = applied.kernel_routes,
                peers = want.routes.len(),
                "applied"
            );
        }
        for p in &want.unreachable {
            tracing::warn!("{p}");
        }
        self.state.problems = want.unreachable;
        self.state.pod_mtu = self.spec.pod_mtu(self.underlay.mtu);
        self.state.reconciles += 1;
        self.state.ready = true;
        self.state.reconcile_error = None;
        self.publish();
        Ok(())
    }

    /// Frees expired masquerade flows (with masquerade off, whatever is left).
    fn collect_nat(&self, nat: &mut datapath::Collector) {
        let mut pinned = match Pinned::open(&self.dir) {
            Ok(p) => p,
            Err(e) => return tracing::warn!("collect NAT flows: {e:#}"),
        };
        let done = nat.run(&mut pinned, datapath::monotonic_ns());
        if done != datapath::Collected::default() {
            tracing::debug!(
                expired = done.expired,
                orphans = done.orphans,
                "NAT flows collected"
            );
        }
    }

    fn publish(&self) {
        self.shared.set_state(&self.state);
        if let Err(e) = self.state.write(&self.state_dir) {
            tracing::warn!("publish state: {e:#}");
        }
    }

    /// Detaches from every endpoint's veth and the underlay, removes the owned kernel
    /// routes, the pins and the published state.
    async fn cleanup(self) -> Result<()> {
        AgentState::remove(&self.state_dir);
        if let Ok(pinned) = Pinned::open(&self.dir) {
            for (ip, ep) in pinned.endpoints().unwrap_or_default() {
                match datapath::attach::ifname(ep.ifindex) {
                    Some(name) => {
                        if let Err(e) = datapath::detach(&self.dir, &name, TcAttachType::Ingress) {
                            tracing::warn!(%ip, "{e:#}");
                        }
                    }
                    None => tracing::debug!(%ip, "veth already gone"),
                }
            }
        }
        for hook in [TcAttachType::Ingress, TcAttachType::Egress] {
            if let Err(e) = datapath::detach(&self.dir, &self.underlay_name, hook) {
                tracing::warn!("{e:#}");
            }
        }
        if self.probed.tunnel_ifindex != 0 {
            if let Err(e) = datapath::detach(&self.dir, tunnel::NAME, TcAttachType::Ingress) {
                tracing::warn!("{e:#}");
            }
            if let Err(e) = tunnel::remove(&self.nl).await {
                tracing::warn!("remove {}: {e:#}", tunnel::NAME);
            }
        }
        // Best effort from here: the pins go even if a route could not be removed.
        if let Err(e) = reconcile::apply_routes(&self.nl, &Desired::default()).await {
            tracing::warn!("remove owned routes: {e:#}");
        }
        datapath::remove_pins(&self.dir)?;
        tracing::info!(pins = %self.dir.display(), "stopped; programs detached, routes and pins removed");
        Ok(())
    }
}

/// The interface holding the node's underlay address. A node whose network is not
/// up yet (the agent started first) is waited for, saying so in /readyz and every
/// 10 s in the log; `None`: stopped by a signal meanwhile.
async fn wait_for_underlay(
    nl: &Netlink,
    local: &NodeSpec,
    shared: &serve::Shared,
    early: &mut AgentState,
    term: &mut tokio::signal::unix::Signal,
    int: &mut tokio::signal::unix::Signal,
) -> Result<Option<u32>> {
    let mut said = None::<Instant>;
    loop {
        if let Some((ifindex, _)) = nl.address_owner(local.ip()).await? {
            return Ok(Some(ifindex));
        }
        let why = format!(
            "waiting for an interface with {}, node {}'s underlay address in the spec",
            local.ip(),
            local.name
        );
        if said.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            tracing::warn!("{why}");
            said = Some(Instant::now());
        }
        early.waiting = Some(why);
        shared.set_state(early);
        tokio::select! {
            _ = term.recv() => return Ok(None),
            _ = int.recv() => return Ok(None),
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

/// Translated ports must never be ones the node's own connections pick: the node's
/// ephemeral range (this network namespace's `ip_local_port_range`) must lie outside
/// the masquerade range.
fn check_nat_ports(spec: &ClusterSpec) -> Result<()> {
    if !spec.masquerade.enabled {
        return Ok(());
    }
    const SYSCTL: &str = "/proc/sys/net/ipv4/ip_local_port_range";
    let text = std::fs::read_to_string(SYSCTL).with_context(|| format!("read {SYSCTL}"))?;
    let local: PortRange = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .join("-")
        .parse()
        .map_err(|e| anyhow!("{SYSCTL}: {e}"))?;
    let nat = spec.masquerade.ports;
    if local.overlaps(&nat) {
        bail!(
            "masquerade_ports {nat} overlap this node's ephemeral ports {local} \
             (net.ipv4.ip_local_port_range): translated flows could collide with the node's \
             own connections; move masquerade_ports or the sysctl apart"
        );
    }
    Ok(())
}

/// Parses the spec on a thread of its own and keeps a copy made here. Parsing a large
/// spec allocates many times what it yields; the copy lands compactly in this thread's
/// heap and the parser's heap is freed whole, so the agent's memory follows the spec's
/// size (what a 100 000-node cluster costs), not the parser's peak.
fn read_spec(path: &std::path::Path) -> Result<ClusterSpec> {
    let parsed = std::thread::scope(|s| {
        s.spawn(|| ClusterSpec::from_file(path).map(Box::new))
            .join()
            .map_err(|_| anyhow!("the spec parser panicked"))
    })??;
    Ok(ClusterSpec::clone(&parsed))
}

/// The next word from the store; never, when the spec comes from a file.
async fn next_update(updates: &mut Option<mpsc::Receiver<Update>>) -> Option<Update> {
    match updates {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The address (with prefix) of the interface holding the default route: the
/// underlay, unless the operator says otherwise.
async fn default_route_address(nl: &Netlink) -> Result<Ipv4Net> {
    let oif = nl
        .routes()
        .await?
        .into_iter()
        .find(|r| r.dst.prefix == 0)
        .and_then(|r| r.oif)
        .ok_or_else(|| anyhow!("no default route here: pass --underlay ADDRESS/PREFIX"))?;
    nl.addresses_of(oif)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| {
            anyhow!("the default route's interface {oif} has no IPv4 address: pass --underlay")
        })
}

fn digest(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// Hands memory freed after a large reconcile (a spec parse, a route dump) back to
/// the system, so the agent's footprint follows what it holds, not its peak.
fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// What tells a file's versions apart without reading it: a rename-into-place gives a
/// new inode, an edit a new modification time or length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    ino: u64,
    len: u64,
    modified: std::time::SystemTime,
}

impl FileStamp {
    fn of(path: &std::path::Path) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        Some(Self {
            ino: m.ino(),
            len: m.len(),
            modified: m.modified().ok()?,
        })
    }
}

/// `BPF_F_ADJ_ROOM_ENCAP_L2_ETH` tells GSO the inner L2 is Ethernet; 5.15 knows it,
/// older kernels reject unknown flags, so only ask for it where it exists.
fn encap_flags() -> u32 {
    const BPF_F_ADJ_ROOM_ENCAP_L2_ETH: u32 = 1 << 6;
    match aya::util::KernelVersion::current() {
        Ok(v) if v >= aya::util::KernelVersion::new(5, 15, 0) => BPF_F_ADJ_ROOM_ENCAP_L2_ETH,
        _ => 0,
    }
}
