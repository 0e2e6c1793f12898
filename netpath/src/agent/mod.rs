//! The node agent: loads and pins the datapath, attaches it to the underlay and swaps
//! the new programs into every pod's veth, then keeps the node converged on its
//! spec — re-planning and applying on SIGHUP, when the spec file changes and every
//! few seconds — until SIGINT/SIGTERM. One tokio runtime drives signals, netlink and
//! the programs' log ring.
mod accept;
mod encryption;
mod policy;
mod start;
mod stop;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{anyhow, Context, Result};
use tokio::{
    signal::unix::{signal, Signal, SignalKind},
    sync::{mpsc, Notify},
};

pub use crate::store::Source;
use crate::{
    bgp,
    datapath::{self, Pinned},
    netlink::Netlink,
    plan::{self, Probed, Underlay},
    reconcile, serve,
    spec::{ClusterSpec, NodeSpec, Routing},
    state::{self, AgentState},
    store::{StoreKind, Update},
};

/// How often the node is re-planned anyway, repairing drift (a route deleted by hand,
/// a changed next hop on the underlay).
const RESYNC_EVERY: Duration = Duration::from_secs(10);
/// How often expired masquerade flows are collected (the shortest timeout is 10 s).
const NAT_COLLECT_EVERY: Duration = Duration::from_secs(2);
/// How often a node that lost its pod CIDR says so in the log.
const NAG_EVERY: Duration = Duration::from_secs(5);
/// How often BIRD is asked what it learned (a new node is routed within ~1 s of its
/// session coming up).
const BGP_POLL_EVERY: Duration = Duration::from_millis(500);
/// How often the WireGuard device's handshakes and bytes are read for status.
const WIREGUARD_POLL_EVERY: Duration = Duration::from_secs(1);
/// How often the address book is looked at: a new pod waits for its policy (CNI ADD
/// returns only then), and other pods' rules name it as a peer.
const BOOK_POLL_EVERY: Duration = Duration::from_millis(100);

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
    /// The cgroup v2 root the socket programs attach to (None: the mounted one).
    pub cgroup: Option<PathBuf>,
    /// Which WireGuard, with encryption on.
    pub wireguard: crate::wireguard::Implementation,
}

pub fn run(args: AgentArgs) -> Result<()> {
    fix_allocator_thresholds();
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
    /// Asks the store to read again (SIGHUP).
    reread: std::sync::Arc<Notify>,
    spec: ClusterSpec,
    local: NodeSpec,
    dir: PathBuf,
    state_dir: PathBuf,
    underlay: Underlay,
    underlay_name: String,
    probed: Probed,
    nl: Netlink,
    state: AgentState,
    shared: std::sync::Arc<serve::Shared>,
    /// The node's BIRD, with `routing = "bgp"`, and what it taught as last judged.
    bgp: Option<bgp::Speaker>,
    learned: bgp::Learned,
    /// The address book as last planned with (see `policy::book_mark`).
    book_mark: Option<(std::time::SystemTime, u64)>,
    /// The node's WireGuard device (read at start: a change of `encryption` takes
    /// an agent restart).
    wireguard: Option<encryption::Running>,
}

/// The signals the agent stops and reloads on.
struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

async fn run_async(args: AgentArgs) -> Result<()> {
    // First of all: a stop requested while starting up must still clean up, not kill.
    let mut signals = Signals {
        term: signal(SignalKind::terminate())?,
        int: signal(SignalKind::interrupt())?,
        hup: signal(SignalKind::hangup())?,
    };
    let nl = Netlink::new()?;
    let shared = serve::Shared::new();
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| state::default_dir(&args.node));
    // A spec file is read and checked before anything binds: a bad one stops the
    // start with its field named and nothing half up. A store is joined after: that
    // may wait a minute for a claim to settle, /readyz says so meanwhile, and a stop
    // is answered.
    let read_first = match &args.source {
        Source::File(_) => Some(opened_for(&args, &state_dir, &nl).await?),
        _ => None,
    };
    let mut early = listen(&args, &shared).await?;
    let joined = match read_first {
        Some(opened) => Some(opened),
        None => tokio::select! {
            opened = opened_for(&args, &state_dir, &nl) => Some(opened?),
            _ = signals.term.recv() => None,
            _ = signals.int.recv() => None,
        },
    };
    let Some(mut opened) = joined else {
        tracing::info!("stopped while joining the cluster; nothing was loaded");
        return Ok(());
    };
    let local = opened.spec.node(&args.node)?.clone();
    let dir = args
        .pin_dir
        .clone()
        .unwrap_or_else(|| datapath::node_dir(&opened.spec.bpffs_root, &local.name));
    early.pin_dir = dir.clone();
    let (term, int) = (&mut signals.term, &mut signals.int);
    let waited = start::wait_for_underlay(&nl, &local, &shared, &mut early, term, int).await?;
    let Some(ifindex) = waited else {
        tracing::info!("stopped while waiting for the underlay address");
        return Ok(());
    };
    early.waiting = Some("loading and attaching the programs".into());
    shared.set_state(&early);
    let started = start::start_datapath(
        &nl,
        &opened.spec,
        &local,
        start::Place {
            dir: &dir,
            state_dir: &state_dir,
            ifindex,
            cgroup: args.cgroup.as_deref(),
            wireguard: args.wireguard,
        },
    )
    .await
    .with_context(|| format!("start the datapath for node {}", local.name))?;
    let updates = std::mem::replace(&mut opened.updates, mpsc::channel(1).1);
    let mut agent = Agent::new(opened, &started, local, dir, state_dir, shared, nl);
    agent.state.metrics_addr = early.metrics_addr;
    // Before the first pass: an adopted BIRD (a restart with --keep-pins) still
    // holds the routes, and the pass must not withdraw them.
    agent.sync_bgp().await?;
    agent.poll_bgp().await;
    agent.reconcile().await?;
    release_freed_memory();
    agent.log_ready(&started);
    agent.run_loop(updates, &mut signals).await;
    drop(started.loaded);
    if args.keep_pins {
        AgentState::remove(&agent.state_dir);
        tracing::info!("stopping; pins, routes and BIRD's sessions kept, pods keep their datapath");
        return Ok(());
    }
    if let Some(speaker) = agent.bgp.take() {
        speaker.stop();
    }
    agent.cleanup().await
}

/// The store opened and its spec checked for this node.
async fn opened_for(args: &AgentArgs, state_dir: &Path, nl: &Netlink) -> Result<start::Opened> {
    let opened = start::open_source(&args.source, &args.node, state_dir, nl).await?;
    opened.spec.node(&args.node)?;
    if opened.store_kind == StoreKind::Gossip
        && opened.spec.settings.encryption == crate::spec::Encryption::Wireguard
    {
        anyhow::bail!(
            "encryption = \"wireguard\" needs the spec file or etcd: the gossip store does \
             not carry the nodes' WireGuard keys yet"
        );
    }
    start::check_nat_ports(&opened.spec)?;
    Ok(opened)
}

/// Listening before loading: a taken port fails the start before anything is loaded, and
/// /readyz answers "not ready" (with the reason) while the agent starts. Returns the
/// state published until the agent is up.
async fn listen(args: &AgentArgs, shared: &std::sync::Arc<serve::Shared>) -> Result<AgentState> {
    let mut early = AgentState {
        node: args.node.clone(),
        pid: std::process::id(),
        waiting: Some(match &args.source {
            Source::File(_) => "starting on the cluster spec".into(),
            Source::Etcd { .. } => "joining the cluster in etcd".into(),
            Source::Gossip { .. } => "joining the cluster by gossip".into(),
        }),
        ..Default::default()
    };
    if let Some(addr) = args.metrics_addr {
        let bound = serve::start(addr, shared.clone()).await?;
        tracing::info!(%bound, "serving /metrics, /healthz and /readyz");
        early.metrics_addr = Some(bound.to_string());
    }
    shared.set_state(&early);
    Ok(early)
}

impl Agent {
    fn new(
        opened: start::Opened,
        started: &start::Started,
        local: NodeSpec,
        dir: PathBuf,
        state_dir: PathBuf,
        shared: std::sync::Arc<serve::Shared>,
        nl: Netlink,
    ) -> Self {
        for n in &opened.left_out {
            tracing::warn!("{}: {n}", opened.store);
        }
        Self {
            state: AgentState {
                node: local.name.clone(),
                pid: std::process::id(),
                pin_dir: dir.clone(),
                spec_file: opened.spec_file.unwrap_or_default(),
                store_kind: opened.store_kind,
                store: opened.store,
                netns: state::NetnsId::current().ok(),
                maps_loaded: true,
                underlay: started.underlay_name.clone(),
                tunnel: started.probed.tunnel_ifindex != 0,
                store_synced_unix_ms: Some(state::unix_ms()),
                membership_error: opened.membership_error,
                left_out: opened.left_out,
                ..Default::default()
            },
            shared,
            reread: opened.reread,
            spec: opened.spec,
            local,
            dir,
            state_dir,
            underlay: started.underlay,
            underlay_name: started.underlay_name.clone(),
            probed: started.probed,
            nl,
            bgp: None,
            learned: bgp::Learned::default(),
            book_mark: None,
            wireguard: started.wireguard.clone(),
        }
    }

    fn log_ready(&self, started: &start::Started) {
        let set = &self.spec.settings;
        tracing::info!(
            node = %self.local.name,
            pins = %self.dir.display(),
            underlay = %self.underlay_name,
            backend = set.backend.name(),
            decap = set.decap.name(),
            vxlan_device = set.vxlan_device.name(),
            tc_attach = started.tc_attach.name(),
            kernel = %state::kernel_release(),
            pod_cidr = %self.local.pod_cidr,
            pod_mtu = self.state.pod_mtu,
            store = %self.state.store,
            reattached = started.reattached,
            "agent ready"
        );
    }
    /// Follows the store until SIGINT/SIGTERM: spec changes, etcd updates, a resync
    /// every few seconds, the NAT collector.
    async fn run_loop(&mut self, mut updates: mpsc::Receiver<Update>, s: &mut Signals) {
        let mut resync = tokio::time::interval(RESYNC_EVERY);
        resync.reset();
        let mut collect = tokio::time::interval(NAT_COLLECT_EVERY);
        let mut nag = tokio::time::interval(NAG_EVERY);
        let mut bgp_poll = tokio::time::interval(BGP_POLL_EVERY);
        let mut book_poll = tokio::time::interval(BOOK_POLL_EVERY);
        let mut wireguard_poll = tokio::time::interval(WIREGUARD_POLL_EVERY);
        let mut nat = datapath::Collector::default();
        let mut services = datapath::ServiceCollector::default();
        loop {
            tokio::select! {
                _ = s.term.recv() => break,
                _ = s.int.recv() => break,
                _ = s.hup.recv() => self.reload().await,
                Some(update) = updates.recv() => self.on_store_update(update).await,
                _ = collect.tick() => self.collect_flows(&mut nat, &mut services),
                _ = bgp_poll.tick(), if self.bgp.is_some() => self.poll_bgp().await,
                _ = nag.tick() => {
                    if let Some(why) = &self.state.membership_error {
                        tracing::error!("node {} hands out no pod addresses: {why}", self.local.name);
                    }
                }
                _ = resync.tick() => self.reconcile_logged().await,
                _ = wireguard_poll.tick(), if self.wireguard.is_some() => self.refresh_wireguard(),
                // Only policy depends on which pods a node holds.
                _ = book_poll.tick(), if !self.spec.policy.policies.is_empty() => {
                    if policy::book_mark(&self.state_dir) != self.book_mark {
                        self.reconcile_logged().await;
                    }
                }
            }
        }
    }

    /// What the store says: a new cluster state to converge on, or that it is gone
    /// for now (the datapath keeps the last state).
    async fn on_store_update(&mut self, update: Update) {
        let store = self.state.store_kind.name();
        match update {
            Update::Refused(why) => self.refuse(store, anyhow!(why)),
            Update::Disconnected(why) => {
                self.state.store_error = Some(format!("{store} unreachable: {why}"));
                self.state.store_watching = false;
                self.publish();
            }
            Update::Dropped(n) => {
                if n != self.state.store_dropped {
                    tracing::warn!("{store}: {n} datagrams dropped unread so far");
                    self.state.store_dropped = n;
                    self.publish();
                }
            }
            Update::Watching => {
                self.state.store_watching = true;
                self.state.store_synced_unix_ms = Some(state::unix_ms());
                self.publish();
            }
            Update::Membership(lost) => {
                if lost == self.state.membership_error {
                    return;
                }
                let (name, cidr) = (&self.local.name, self.local.pod_cidr);
                match &lost {
                    Some(why) => tracing::error!("node {name} lost its pod CIDR {cidr}: {why}"),
                    None => tracing::info!("node {name} holds its pod CIDR {cidr} again"),
                }
                self.state.membership_error = lost;
                // Published by the pass, with the pod CIDR it implies.
                self.reconcile_logged().await;
            }
            Update::Spec(spec, notes) => {
                self.state.store_error = None;
                self.state.store_synced_unix_ms = Some(state::unix_ms());
                self.note_left_out(store, notes);
                match self.check(spec) {
                    Ok(spec) => {
                        if self.state.store_kind == StoreKind::File {
                            tracing::info!("spec reloaded");
                        }
                        self.adopt(spec, store).await
                    }
                    Err(e) => self.refuse(store, e),
                }
            }
        }
    }

    /// Records left out of the spec: logged when new, shown in status and /metrics
    /// while they stay (a warning condition: the node stays ready).
    fn note_left_out(&mut self, store: &str, notes: Vec<String>) {
        for n in notes.iter().filter(|n| !self.state.left_out.contains(n)) {
            tracing::warn!("{store}: {n}");
        }
        self.state.left_out = notes;
    }

    fn refuse(&mut self, why: &str, e: anyhow::Error) {
        let msg = format!("{e:#}");
        tracing::error!(why, "spec refused, forwarding on the last good one: {msg}");
        self.state.spec_error = Some(msg);
        self.publish();
    }

    async fn adopt(&mut self, spec: ClusterSpec, why: &str) {
        tracing::debug!(why, nodes = spec.nodes.len(), "spec adopted");
        let next = spec.node(&self.local.name).expect("checked").clone();
        if next.pod_cidr != self.local.pod_cidr {
            tracing::info!(
                "node {}'s pod CIDR moves from {} to {}: no pod had an address from it",
                next.name,
                self.local.pod_cidr,
                next.pod_cidr
            );
        }
        self.local = next;
        self.spec = spec;
        self.state.spec_error = None;
        if let Err(e) = self.sync_bgp().await {
            tracing::error!("BGP: {e:#}");
            self.state.bgp.get_or_insert_with(Default::default).error = Some(format!("{e:#}"));
        }
        self.reconcile_logged().await;
    }

    /// Runs BIRD on the spec's configuration when routing is BGP (starting or
    /// reconfiguring it), and stops it when routing is no longer BGP.
    async fn sync_bgp(&mut self) -> Result<()> {
        if self.spec.settings.routing != Routing::Bgp {
            if let Some(speaker) = self.bgp.take() {
                speaker.stop();
                self.learned = bgp::Learned::default();
                self.state.bgp = None;
            }
            return Ok(());
        }
        let log = bgp::Paths::under(&self.state_dir).log;
        let config = bgp::render(&self.spec, &self.local, &self.underlay_name, &log);
        match self.bgp.as_mut() {
            Some(speaker) => speaker.configure(config).await?,
            None => self.bgp = Some(bgp::Speaker::start(&self.state_dir, config).await?),
        }
        Ok(())
    }

    /// Asks BIRD what it learned and re-plans when the routes to use changed. While
    /// a restarted BIRD relearns, routes it has not heard again yet are kept.
    async fn poll_bgp(&mut self) {
        let Some(speaker) = self.bgp.as_mut() else {
            return;
        };
        let state = match speaker.poll().await {
            Ok(snapshot) => {
                let mut learned = bgp::judge(&self.spec, &self.local, &snapshot.routes);
                if speaker.settling(&snapshot) {
                    for (net, hop) in &self.learned.accepted {
                        learned.accepted.entry(*net).or_insert(*hop);
                    }
                }
                let state = speaker.state(&snapshot, &learned);
                if learned.accepted != self.learned.accepted {
                    self.learned = learned;
                    self.state.bgp = Some(state);
                    return self.reconcile_logged().await;
                }
                self.learned = learned;
                state
            }
            Err(e) => bgp::BgpState {
                error: Some(e.to_string()),
                ..self.state.bgp.clone().unwrap_or_default()
            },
        };
        if self.state.bgp.as_ref() != Some(&state) {
            self.state.bgp = Some(state);
            self.publish();
        }
    }

    /// SIGHUP: the store reads again (the spec file; etcd and gossip follow live
    /// anyway) and the node is re-planned.
    async fn reload(&mut self) {
        self.reread.notify_one();
        self.reconcile_logged().await;
    }

    /// A new spec, as far as this running agent can follow it.
    fn check(&self, spec: ClusterSpec) -> Result<ClusterSpec> {
        accept::followable(&self.spec, &self.local, &spec, self.pod_cidr_unused())?;
        start::check_nat_ports(&spec)?;
        Ok(spec)
    }

    /// Whether no address of the node's pod CIDR is out: none is handed out while
    /// the store withholds the subnet (`membership_error`, published with no pod
    /// CIDR), and no pod holds one.
    fn pod_cidr_unused(&self) -> bool {
        let cidr = self.local.pod_cidr;
        self.state.membership_error.is_some()
            && start::held_addresses(&self.state_dir)
                .is_ok_and(|held| !held.iter().any(|ip| cidr.contains(*ip)))
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
        let bgp = (self.spec.settings.routing == Routing::Bgp).then_some(&self.learned);
        let mut want = plan::plan(
            &self.spec,
            &self.local,
            &self.underlay,
            &self.probed,
            &table,
            bgp,
        );
        let mut pinned = Pinned::open(&self.dir)?;
        let mut problems = Vec::new();
        self.book_mark = policy::book_mark(&self.state_dir);
        // The address book read once per pass: for policy and for stray addresses.
        let pods = policy::local_pods(&self.state_dir);
        let judged = match &pods {
            Ok(p) => policy::compile(&self.spec, p),
            Err(e) => Err(anyhow::anyhow!("{e:#}")),
        };
        match judged {
            Ok(j) => {
                self.state.policy_error = None;
                want.settings.policy_rev = j.rev;
                want.policy = j.maps;
                self.state.policy = j.selected_by;
            }
            Err(e) => {
                let why = format!("network policy not applied, the programs keep the last: {e:#}");
                tracing::error!("{why}");
                self.state.policy_error = Some(format!("{e:#}"));
                problems.push(why);
                (want.policy, want.settings.policy_rev) = policy::kept(&pinned)?;
            }
        }
        let applied = reconcile::apply(&mut pinned, &self.nl, &table, &want).await?;
        if applied != reconcile::Applied::default() {
            tracing::info!(
                settings = applied.settings,
                map_entries = applied.map_entries,
                kernel_routes = applied.kernel_routes,
                peers = want.routes.len(),
                "applied"
            );
        }
        problems.extend(want.unreachable);
        problems.extend(self.strays(&pods));
        if let Some(w) = &mut self.wireguard {
            problems.extend(encryption::follow(
                &self.state_dir,
                &self.spec,
                &self.local,
                w,
            ));
            self.state.wireguard = Some(encryption::state(&self.state_dir, w));
        } else if self.spec.settings.encryption == crate::spec::Encryption::Wireguard {
            problems.push(
                "encryption = \"wireguard\" was set after this agent started: restart it to \
                 bring the device up"
                    .into(),
            );
        }
        for p in &problems {
            tracing::warn!("{p}");
        }
        // Published from the same pass that applied it: what the CNI plugin hands out
        // is what this node routes (and nothing while its subnet is not its own).
        self.state.pod_cidr =
            (self.state.membership_error.is_none()).then_some(self.local.pod_cidr);
        self.state.problems = problems;
        self.state.pod_mtu = self.spec.pod_mtu(self.underlay.mtu);
        self.state.reconciles += 1;
        self.state.ready = true;
        self.state.reconcile_error = None;
        self.publish();
        Ok(())
    }

    /// Pods whose addresses lie outside the node's pod CIDR (a spec that moved it
    /// across a restart): nobody routes them.
    fn strays(&self, pods: &Result<Vec<crate::policy::LocalPod>>) -> Option<String> {
        let pods = match pods {
            Ok(p) => p,
            Err(e) => return Some(format!("{e:#}")),
        };
        let cidr = self.local.pod_cidr;
        let out: Vec<String> = pods
            .iter()
            .filter(|p| match p.ip {
                std::net::IpAddr::V4(ip) => !cidr.contains(ip),
                std::net::IpAddr::V6(_) => false,
            })
            .map(|p| p.ip.to_string())
            .collect();
        (!out.is_empty()).then(|| {
            format!(
                "pods hold addresses outside this node's pod CIDR {cidr}, which nobody routes: {} \
                 (remove those pods)",
                out.join(", ")
            )
        })
    }

    /// Frees expired masquerade flows (with masquerade off, whatever is left) and
    /// idle service flows.
    fn collect_flows(
        &self,
        nat: &mut datapath::Collector,
        services: &mut datapath::ServiceCollector,
    ) {
        let mut pinned = match Pinned::open(&self.dir) {
            Ok(p) => p,
            Err(e) => return tracing::warn!("collect flows: {e:#}"),
        };
        let now = datapath::monotonic_ns();
        let done = nat.run(&mut pinned, now);
        if done != datapath::Collected::default() {
            tracing::debug!(
                expired = done.expired,
                orphans = done.orphans,
                "NAT flows collected"
            );
        }
        let idle = pinned.collect_policy_connections(now);
        if idle > 0 {
            tracing::debug!(idle, "policy connections collected");
        }
        let done = services.run(&mut pinned, now);
        if done != datapath::ServicesCollected::default() {
            tracing::debug!(
                flows = done.flows,
                orphans = done.orphans,
                affinities = done.affinities,
                "service flows collected"
            );
        }
    }

    /// The device's peers as it reports them now, published when they changed.
    fn refresh_wireguard(&mut self) {
        let Some(w) = &self.wireguard else { return };
        let now = Some(encryption::state(&self.state_dir, w));
        if now != self.state.wireguard {
            self.state.wireguard = now;
            self.publish();
        }
    }

    fn publish(&self) {
        self.shared.set_state(&self.state);
        if let Err(e) = self.state.write(&self.state_dir) {
            tracing::warn!("publish state: {e:#}");
        }
    }
}

/// One allocator arena with fixed thresholds. By default glibc gives each thread an
/// arena and raises its thresholds with the largest block freed; after one pass over
/// 100 000 routes the worker thread's arena (where the netlink tasks allocate) kept
/// 63 MiB resident and free for good, which `malloc_trim` does not hand back from a
/// thread's arena. Measured with 100 000 peers (bench, agent memory): 79 MiB held
/// between resync passes before, 21 MiB after; the agent's two threads do not
/// contend for one arena.
fn fix_allocator_thresholds() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets the allocator's tunables; called before any thread.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1024 * 1024);
    }
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
