//! Lab clusters on one host: nodes and pods are network namespaces joined by veth
//! pairs, each node runs a real `netpath agent` process. Shared by `netpath lab`
//! (`cargo xtask run`), the integration tests and the benchmarks. Everything it
//! creates carries a per-run prefix and is torn down on drop, also on panic.
use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};

use crate::{
    check::{self, CheckResult, Host, Proto},
    config::Redirect,
    datapath::{self, EndpointSpec},
    netlink::Netlink,
    netns::NetNs,
};

/// Underlay subnet of the lab's nodes (inside namespaces only).
pub const UNDERLAY_GW: Ipv4Addr = Ipv4Addr::new(192, 168, 56, 1);
pub const POD_GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

#[derive(Debug, Clone)]
pub struct LabConfig {
    pub nodes: usize,
    pub pods_per_node: usize,
    pub redirect: Redirect,
    pub bpffs_root: PathBuf,
    /// The `netpath` binary the agents run.
    pub agent_bin: PathBuf,
    /// Start agents with `--keep-pins` (pods keep working while an agent is down).
    pub keep_pins: bool,
}

impl LabConfig {
    pub fn new(nodes: usize, pods_per_node: usize) -> Result<Self> {
        Ok(Self {
            nodes,
            pods_per_node,
            redirect: Redirect::Peer,
            bpffs_root: PathBuf::from(datapath::DEFAULT_BPFFS_ROOT),
            agent_bin: agent_binary()?,
            keep_pins: false,
        })
    }
}

/// Finds the `netpath` binary: `$NETPATH_BIN`, this process if it is netpath, or the
/// one cargo built next to the running test binary.
pub fn agent_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("NETPATH_BIN") {
        return Ok(PathBuf::from(p));
    }
    let me = std::env::current_exe().context("locate current executable")?;
    if me.file_name().is_some_and(|n| n == "netpath") {
        return Ok(me);
    }
    // target/<profile>/deps/<test> -> target/<profile>/netpath
    let candidate = me
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("netpath"))
        .filter(|p| p.exists());
    candidate.ok_or_else(|| {
        anyhow!("netpath binary not found: set NETPATH_BIN or run through `cargo xtask test`")
    })
}

pub struct Pod {
    pub name: String,
    pub ns: NetNs,
    pub ip: Ipv4Addr,
    pub mac: [u8; 6],
    /// Host-side veth in the node's namespace.
    pub host_ifname: String,
}

pub struct Node {
    pub name: String,
    pub ip: Ipv4Addr,
    pub pod_cidr: (Ipv4Addr, u8),
    pub pin_dir: PathBuf,
    pub pods: Vec<Pod>,
    pub ns: NetNs,
}

impl Node {
    pub fn host(&self) -> Host<'_> {
        Host {
            name: &self.name,
            netns: self.ns.path(),
            ip: self.ip,
        }
    }

    pub fn pinned(&self) -> Result<datapath::Pinned> {
        datapath::Pinned::open(&self.pin_dir)
    }
}

impl Pod {
    pub fn host(&self) -> Host<'_> {
        Host {
            name: &self.name,
            netns: self.ns.path(),
            ip: self.ip,
        }
    }
}

/// A running agent process, stopped (SIGTERM, then SIGKILL) on drop.
struct AgentProcess {
    child: Child,
    node: String,
    log: PathBuf,
}

impl AgentProcess {
    fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SAFETY: signalling our own child by its PID.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        tracing::warn!(node = %self.node, "agent ignored SIGTERM; killing it");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

pub struct Lab {
    pub prefix: String,
    pub nodes: Vec<Node>,
    /// One slot per node; empty while that node's agent is stopped.
    agents: Vec<Option<AgentProcess>>,
    fabric: Option<NetNs>,
    workdir: PathBuf,
}

fn run_prefix() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mix = (std::process::id() as u64) << 20 ^ t as u64 ^ next_seq() << 12;
    format!("np{:05x}", mix & 0xfffff)
}

fn next_seq() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    SEQ.fetch_add(1, Ordering::Relaxed)
}

fn write_sysctl(path: &str, value: &str) -> Result<()> {
    std::fs::write(path, value).with_context(|| format!("write {value} to {path}"))
}

impl Lab {
    /// Builds the topology, starts one agent per node and wires every pod in.
    pub fn up(cfg: &LabConfig) -> Result<Self> {
        if cfg.nodes == 0 || cfg.nodes > 200 {
            bail!("nodes must be 1-200, got {}", cfg.nodes);
        }
        if cfg.pods_per_node > 250 {
            bail!(
                "pods per node must be at most 250, got {}",
                cfg.pods_per_node
            );
        }
        let prefix = run_prefix();
        let workdir = std::env::temp_dir().join(format!("netpath-{prefix}"));
        std::fs::create_dir_all(&workdir)?;
        let mut lab = Lab {
            prefix: prefix.clone(),
            nodes: Vec::new(),
            agents: Vec::new(),
            fabric: None,
            workdir,
        };
        let fabric = NetNs::create(&format!("{prefix}-fabric"))?;
        fabric.run(|| {
            let nl = Netlink::new()?;
            let br = nl.add_bridge("underlay")?;
            nl.add_address(br, UNDERLAY_GW, 24)?;
            nl.set_up(br)
        })?;
        lab.fabric = Some(fabric);
        for n in 1..=cfg.nodes {
            let node = lab.add_node(n, cfg)?;
            lab.nodes.push(node);
        }
        for i in 0..lab.nodes.len() {
            lab.start_agent(i, cfg)?;
        }
        for node in &lab.nodes {
            node.ns.run(|| {
                for pod in &node.pods {
                    datapath::add_endpoint(
                        &node.pin_dir,
                        &EndpointSpec {
                            ip: pod.ip,
                            host_ifname: pod.host_ifname.clone(),
                            pod_mac: pod.mac,
                        },
                    )?;
                }
                Ok(())
            })?;
        }
        Ok(lab)
    }

    fn add_node(&self, n: usize, cfg: &LabConfig) -> Result<Node> {
        let name = format!("{}-node{n}", self.prefix);
        let ns = NetNs::create(&name)?;
        let ip = Ipv4Addr::new(192, 168, 56, 10 + n as u8);
        let fabric = self.fabric.as_ref().expect("fabric exists");
        let fabric_fd = fabric.file()?;
        let fabric_port = format!("n{n}");
        ns.run(|| {
            let nl = Netlink::new()?;
            nl.add_veth("eth0", &fabric_port)?;
            let peer = nl.index(&fabric_port)?;
            nl.move_to_netns(peer, std::os::fd::AsRawFd::as_raw_fd(&fabric_fd))?;
            let eth0 = nl.index("eth0")?;
            nl.add_address(eth0, ip, 24)?;
            nl.set_up(eth0)?;
            write_sysctl("/proc/sys/net/ipv4/ip_forward", "1")
        })?;
        fabric.run(|| {
            let nl = Netlink::new()?;
            let port = nl.index(&fabric_port)?;
            nl.set_master(port, nl.index("underlay")?)?;
            nl.set_up(port)
        })?;
        let pod_cidr = (Ipv4Addr::new(10, 244, n as u8, 0), 24);
        let mut node = Node {
            pin_dir: datapath::node_dir(&cfg.bpffs_root, &name),
            name,
            ip,
            pod_cidr,
            pods: Vec::new(),
            ns,
        };
        for p in 1..=cfg.pods_per_node {
            let pod = add_pod(&node, p, Ipv4Addr::new(10, 244, n as u8, 1 + p as u8))?;
            node.pods.push(pod);
        }
        Ok(node)
    }

    /// Stops node `i`'s agent (SIGTERM; it cleans up unless started with keep_pins).
    pub fn stop_agent(&mut self, i: usize) {
        if let Some(mut a) = self.agents.get_mut(i).and_then(Option::take) {
            a.stop();
        }
    }

    /// Starts node `i`'s agent and waits until its pins are usable.
    pub fn start_agent(&mut self, i: usize, cfg: &LabConfig) -> Result<()> {
        self.stop_agent(i);
        if self.agents.len() <= i {
            self.agents.resize_with(i + 1, || None);
        }
        let node = &self.nodes[i];
        let conf = self.workdir.join(format!("{}.toml", node.name));
        let redirect = match cfg.redirect {
            Redirect::Peer => "peer",
            Redirect::Plain => "plain",
        };
        std::fs::write(
            &conf,
            format!(
                "node = \"{}\"\nbpffs_root = \"{}\"\nredirect = \"{redirect}\"\n",
                node.name,
                cfg.bpffs_root.display()
            ),
        )?;
        let log = self.workdir.join(format!("{}.log", node.name));
        let out = std::fs::File::create(&log)?;
        let mut cmd = Command::new(&cfg.agent_bin);
        cmd.arg("agent");
        if cfg.keep_pins {
            cmd.arg("--keep-pins");
        }
        let child = cmd
            .arg("--config")
            .arg(&conf)
            .arg("--netns")
            .arg(node.ns.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("start agent {}", cfg.agent_bin.display()))?;
        let agent = self.agents[i].insert(AgentProcess {
            child,
            node: node.name.clone(),
            log: log.clone(),
        });
        let ready = node.pin_dir.join(netpath_common::names::FROM_POD);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if ready.exists() && node.pinned().is_ok() {
                return Ok(());
            }
            if let Some(status) = agent.child.try_wait()? {
                bail!(
                    "agent for {} exited with {status}:\n{}",
                    node.name,
                    std::fs::read_to_string(&agent.log).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "agent for {} not ready after 20 s (log: {})",
                    node.name,
                    log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The agent's log so far, for failure reports.
    pub fn agent_log(&self, node: usize) -> String {
        self.agents
            .get(node)
            .and_then(Option::as_ref)
            .and_then(|a| std::fs::read_to_string(&a.log).ok())
            .unwrap_or_default()
    }

    /// Steps 1 and 2 of the model: node <-> pod and pod <-> pod on each node.
    pub fn check_single_node(&self, redirect: &Redirect) -> Vec<CheckResult> {
        let mut out = Vec::new();
        let redirect_path = match redirect {
            Redirect::Peer => "eBPF redirect_peer",
            Redirect::Plain => "eBPF redirect",
        };
        for node in &self.nodes {
            for pod in &node.pods {
                for proto in [Proto::Tcp, Proto::Udp, Proto::Icmp] {
                    out.push(check::probe(
                        "1 node->pod",
                        "host /32 route -> veth",
                        proto,
                        &node.host(),
                        &pod.host(),
                    ));
                    out.push(check::probe(
                        "1 pod->node",
                        "eBPF -> host stack",
                        proto,
                        &pod.host(),
                        &node.host(),
                    ));
                }
            }
            for a in &node.pods {
                for b in &node.pods {
                    if a.ip == b.ip {
                        continue;
                    }
                    for proto in [Proto::Tcp, Proto::Udp] {
                        out.push(check::probe(
                            "2 pod->pod",
                            redirect_path,
                            proto,
                            &a.host(),
                            &b.host(),
                        ));
                    }
                }
            }
        }
        out
    }

    /// Node-level invariants: no bridge device, no iptables or nftables rules.
    pub fn check_invariants(&self) -> Vec<Invariant> {
        let mut out = Vec::new();
        for node in &self.nodes {
            out.push(Invariant::from_result(
                &node.name,
                "no bridge device",
                node.ns.run(no_bridge),
            ));
            out.push(Invariant::from_result(
                &node.name,
                "no iptables/nftables rules",
                node.ns.run(no_firewall_rules),
            ));
        }
        out
    }
}

/// A yes/no fact about a node.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Invariant {
    pub node: String,
    pub what: String,
    pub ok: bool,
    pub detail: String,
}

impl Invariant {
    fn from_result(node: &str, what: &str, r: Result<String>) -> Self {
        let (ok, detail) = match r {
            Ok(d) => (true, d),
            Err(e) => (false, format!("{e:#}")),
        };
        Self {
            node: node.into(),
            what: what.into(),
            ok,
            detail,
        }
    }
}

fn no_bridge() -> Result<String> {
    let links = Netlink::new()?.links()?;
    let bridges: Vec<_> = links
        .iter()
        .filter(|l| l.kind.as_deref() == Some("bridge"))
        .map(|l| l.name.clone())
        .collect();
    if !bridges.is_empty() {
        bail!("bridge devices present: {}", bridges.join(", "));
    }
    let kinds: Vec<String> = links
        .iter()
        .map(|l| format!("{}({})", l.name, l.kind.as_deref().unwrap_or("-")))
        .collect();
    Ok(kinds.join(" "))
}

fn no_firewall_rules() -> Result<String> {
    // Per-namespace list of loaded legacy iptables tables.
    let legacy =
        std::fs::read_to_string("/proc/thread-self/net/ip_tables_names").unwrap_or_default();
    if !legacy.trim().is_empty() {
        bail!(
            "iptables tables loaded: {}",
            legacy.split_whitespace().collect::<Vec<_>>().join(", ")
        );
    }
    // A child forked from this thread inherits its network namespace.
    let out = Command::new("nft")
        .args(["list", "ruleset"])
        .output()
        .context("run `nft list ruleset` (install the nftables package)")?;
    if !out.status.success() {
        bail!(
            "nft list ruleset failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let rules = String::from_utf8_lossy(&out.stdout);
    if !rules.trim().is_empty() {
        bail!("nftables ruleset not empty:\n{rules}");
    }
    Ok("no iptables tables, empty nft ruleset".into())
}

fn add_pod(node: &Node, p: usize, ip: Ipv4Addr) -> Result<Pod> {
    let name = format!("{}-pod{p}", node.name);
    let ns = NetNs::create(&name)?;
    let host_ifname = format!("lxc{p}");
    let tmp_peer = format!("tmp{p}");
    let pod_fd = ns.file()?;
    node.ns.run(|| {
        let nl = Netlink::new()?;
        nl.add_veth(&host_ifname, &tmp_peer)?;
        let peer = nl.index(&tmp_peer)?;
        nl.move_to_netns(peer, std::os::fd::AsRawFd::as_raw_fd(&pod_fd))?;
        nl.set_up_by_name(&host_ifname)
    })?;
    let mac = ns.run(|| {
        let nl = Netlink::new()?;
        let eth0 = nl.index(&tmp_peer)?;
        nl.rename(eth0, "eth0")?;
        nl.add_address(eth0, ip, 32)?;
        nl.set_up(eth0)?;
        nl.replace_route(POD_GATEWAY, 32, eth0, None)?;
        nl.replace_route(Ipv4Addr::UNSPECIFIED, 0, eth0, Some(POD_GATEWAY))?;
        nl.mac("eth0")
    })?;
    Ok(Pod {
        name,
        ns,
        ip,
        mac,
        host_ifname,
    })
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Agents first: they detach and unpin while the namespaces still exist.
        for a in self.agents.iter_mut().flatten() {
            a.stop();
        }
        for node in &self.nodes {
            if let Err(e) = datapath::remove_pins(&node.pin_dir) {
                tracing::warn!("{e:#}");
            }
        }
        // Pods, then nodes, then the fabric: namespaces go with their guards.
        self.nodes.clear();
        self.fabric = None;
        let _ = std::fs::remove_dir_all(&self.workdir);
    }
}

/// Prints checks and invariants as a table; returns whether all passed.
pub fn print_report(checks: &[CheckResult], invariants: &[Invariant]) -> bool {
    println!(
        "{:<12} {:<26} {:<26} {:<5} {:<24} {:<15} {:<15} result",
        "step", "from", "to", "proto", "path", "dst", "seen src"
    );
    let mut all = true;
    for c in checks {
        all &= c.ok();
        println!(
            "{:<12} {:<26} {:<26} {:<5} {:<24} {:<15} {:<15} {}",
            c.step,
            c.from,
            c.to,
            format!("{:?}", c.proto).to_lowercase(),
            c.path,
            c.dst.to_string(),
            c.seen_src
                .map(|s| s.to_string())
                .unwrap_or_else(|| "-".into()),
            match (&c.error, c.ok()) {
                (_, true) => "PASS".to_string(),
                (Some(e), _) => format!("FAIL: {e}"),
                (None, false) => format!("FAIL: expected source {}", c.expected_src),
            }
        );
    }
    println!();
    for i in invariants {
        all &= i.ok;
        println!(
            "{:<26} {:<28} {}",
            i.node,
            i.what,
            if i.ok {
                "PASS".to_string()
            } else {
                format!("FAIL: {}", i.detail)
            }
        );
    }
    all
}
