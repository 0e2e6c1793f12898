//! Command-line interface of the `netpath` binary: only what a node runs.
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::{
    agent, cni, datapath, monitor,
    net::Ipv4Net,
    netns,
    spec::{ClusterSettings, ClusterSpec, DEFAULT_BPFFS_ROOT},
    state::{self, AgentState, StoreKind},
    status,
    store::{
        etcd::{self, EtcdOptions},
        model::{ClusterConfig, Keys, DEFAULT_PREFIX},
    },
};

/// How to reach etcd.
#[derive(Args, Clone)]
pub struct EtcdArgs {
    /// Client URLs of the etcd members, comma-separated.
    #[arg(long, value_delimiter = ',')]
    etcd_endpoints: Vec<String>,
    /// Key prefix of this cluster.
    #[arg(long, default_value = DEFAULT_PREFIX)]
    etcd_prefix: String,
    /// CA certificate (PEM) that signed the etcd servers' certificates.
    #[arg(long)]
    etcd_ca: Option<PathBuf>,
    /// Client certificate (PEM), for etcd's --client-cert-auth.
    #[arg(long)]
    etcd_cert: Option<PathBuf>,
    /// Client key (PEM).
    #[arg(long)]
    etcd_key: Option<PathBuf>,
    /// Seconds a node stays in the cluster after its agent stops renewing.
    #[arg(long, default_value_t = 20)]
    lease_ttl: i64,
}

impl EtcdArgs {
    fn options(&self) -> Result<EtcdOptions> {
        if self.etcd_endpoints.is_empty() {
            bail!("--etcd-endpoints is required with the etcd store");
        }
        if !(2..=3600).contains(&self.lease_ttl) {
            bail!("--lease-ttl must be 2-3600 seconds, got {}", self.lease_ttl);
        }
        Ok(EtcdOptions {
            endpoints: self.etcd_endpoints.clone(),
            prefix: self.etcd_prefix.clone(),
            ca: self.etcd_ca.clone(),
            cert: self.etcd_cert.clone(),
            key: self.etcd_key.clone(),
            lease_ttl: self.lease_ttl,
        })
    }
}

#[derive(Parser)]
#[command(name = "netpath", version, about = "eBPF container networking")]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Load, attach and pin the datapath for one node and keep its maps and routes
    /// converged on the cluster spec (re-read on SIGHUP and when the file changes)
    /// until SIGINT/SIGTERM.
    Agent {
        /// Cluster spec (TOML), with the file store.
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "file")]
        store: StoreKind,
        #[command(flatten)]
        etcd: EtcdArgs,
        /// This node's underlay address with the etcd store (default: the address of
        /// the interface holding the default route).
        #[arg(long)]
        underlay: Option<Ipv4Net>,
        /// This node's name in the spec (may be left out when the spec has one node).
        #[arg(long)]
        node: Option<String>,
        /// Pin directory (default: <bpffs_root>/<node>).
        #[arg(long)]
        pin_dir: Option<PathBuf>,
        /// Where the agent publishes its state (default: /run/netpath/<node>).
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Enter this network namespace first.
        #[arg(long)]
        netns: Option<PathBuf>,
        /// Leave maps, programs and routes in place on exit so pods keep working.
        #[arg(long)]
        keep_pins: bool,
        /// Serve /metrics, /healthz and /readyz here (inside the agent's network
        /// namespace); `off` serves nothing.
        #[arg(long, default_value = "127.0.0.1:9970")]
        metrics_addr: String,
    },
    /// Install the CNI plugin (this binary, as `netpath`) and a conflist that
    /// selects it, so containerd, CRI-O and podman attach containers through netpath.
    InstallCni {
        #[arg(long, default_value = cni::install::DEFAULT_BIN_DIR)]
        bin_dir: PathBuf,
        #[arg(long, default_value = cni::install::DEFAULT_CONF_DIR)]
        conf_dir: PathBuf,
        /// The network name in the conflist.
        #[arg(long, default_value = "netpath")]
        network: String,
        /// Serve this node's state only (default: the node whose network namespace
        /// the plugin runs in).
        #[arg(long)]
        node: Option<String>,
        /// Where agents publish node state (default /run/netpath).
        #[arg(long)]
        state_root: Option<PathBuf>,
    },
    /// The cluster in etcd.
    Cluster {
        #[command(subcommand)]
        cmd: ClusterCmd,
    },
    /// Nodes in etcd.
    Node {
        #[command(subcommand)]
        cmd: NodeCmd,
    },
    /// Show a node's agent state, health, endpoints, routes, map fill and counters.
    Status {
        #[command(flatten)]
        at: NodeArgs,
        #[arg(long)]
        json: bool,
    },
    /// Stream a node's drop events live, with their tuple and reason (and, with
    /// --trace, a sample of forwarded packets) until Ctrl-C.
    Monitor {
        #[command(flatten)]
        at: NodeArgs,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// Only events of this reason (a name `netpath status` prints, e.g. drop-spoofed).
        #[arg(long)]
        reason: Option<String>,
        /// Only packets from or to this address.
        #[arg(long)]
        ip: Option<std::net::Ipv4Addr>,
        /// Also trace forwarded packets (redirected, encapsulated, decapsulated, …).
        #[arg(long)]
        trace: bool,
        /// With --trace: one forwarded packet in N per CPU.
        #[arg(long, default_value_t = 1)]
        sample: u32,
    },
}

/// Which node's pins and published state a command reads. The pins are where the
/// node's agent says it put them; the flags override that.
#[derive(Args, Clone)]
pub struct NodeArgs {
    #[arg(long)]
    node: String,
    /// The node's pin directory (default: the one its agent published, else
    /// <bpffs-root>/<node>).
    #[arg(long)]
    pin_dir: Option<PathBuf>,
    /// Where agents pin unless told otherwise.
    #[arg(long)]
    bpffs_root: Option<PathBuf>,
    /// Where the node's agent publishes its state (default: /run/netpath/<node>);
    /// the monitor's lock lives beside it.
    #[arg(long)]
    state_dir: Option<PathBuf>,
}

impl NodeArgs {
    fn state_dir(&self) -> PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(|| state::default_dir(&self.node))
    }

    /// The published state (None: none published) and the pin directory in force.
    fn resolve(&self) -> Result<(Option<AgentState>, PathBuf)> {
        let agent = AgentState::read(&self.state_dir())?;
        let published = agent
            .as_ref()
            .map(|a| a.pin_dir.clone())
            .filter(|d| !d.as_os_str().is_empty());
        let dir = match (&self.pin_dir, &self.bpffs_root, published) {
            (Some(d), _, _) => d.clone(),
            (None, Some(root), _) => datapath::node_dir(root, &self.node),
            (None, None, Some(d)) => d,
            (None, None, None) => datapath::node_dir(DEFAULT_BPFFS_ROOT.as_ref(), &self.node),
        };
        Ok((agent, dir))
    }
}

#[derive(Subcommand)]
pub enum ClusterCmd {
    /// Write the cluster config once (the same config again is a no-op).
    Init {
        #[command(flatten)]
        etcd: EtcdArgs,
        #[command(flatten)]
        settings: ClusterSettings,
        /// Prefix length of each node's pod CIDR.
        #[arg(long, default_value_t = 24)]
        subnet_len: u8,
    },
}

#[derive(Subcommand)]
pub enum NodeCmd {
    /// Release a node: its liveness record and its pod CIDR reservation.
    Remove {
        name: String,
        #[command(flatten)]
        etcd: EtcdArgs,
    },
}

fn block_on<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    crate::files::one_shot_runtime()?.block_on(f)
}

/// Runs a command; `Ok(false)` means it ran but found a problem (`status` of a node
/// that is not ready or not healthy).
pub fn run(cli: Cli) -> Result<bool> {
    match cli.cmd {
        Cmd::Agent {
            config,
            store,
            etcd,
            underlay,
            node,
            pin_dir,
            state_dir,
            netns: ns,
            keep_pins,
            metrics_addr,
        } => {
            let metrics_addr = match metrics_addr.as_str() {
                "off" => None,
                a => Some(a.parse::<std::net::SocketAddr>().map_err(|e| {
                    anyhow::anyhow!("--metrics-addr {a:?}: {e} (want IP:PORT or off)")
                })?),
            };
            let source = match (store, config) {
                (StoreKind::File, Some(path)) => agent::Source::File(path),
                (StoreKind::File, None) => bail!("--config is required with the file store"),
                (StoreKind::Etcd, Some(_)) => bail!("--config and --store etcd exclude each other"),
                (StoreKind::Etcd, None) => agent::Source::Etcd {
                    opts: etcd.options()?,
                    underlay,
                },
            };
            let node = match (node, &source) {
                (Some(n), _) => n,
                (None, agent::Source::Etcd { .. }) => {
                    bail!("--node is required with the etcd store")
                }
                (None, agent::Source::File(config)) => {
                    let spec = ClusterSpec::from_file(config)?;
                    match spec.nodes.as_slice() {
                        [only] => only.name.clone(),
                        _ => bail!(
                            "--node is required: the spec has {} nodes",
                            spec.nodes.len()
                        ),
                    }
                }
            };
            // Before any thread exists, so every thread of the agent lives inside it.
            if let Some(ns) = ns {
                netns::enter(&ns)?;
            }
            agent::run(agent::AgentArgs {
                source,
                node,
                pin_dir,
                state_dir,
                keep_pins,
                metrics_addr,
            })?;
            Ok(true)
        }
        Cmd::InstallCni {
            bin_dir,
            conf_dir,
            network,
            node,
            state_root,
        } => {
            let me = std::env::current_exe().context("locate this binary")?;
            let done = cni::install::install(
                &me,
                &cni::install::InstallOptions {
                    bin_dir,
                    conf_dir,
                    network,
                    node,
                    state_root,
                },
            )?;
            println!("installed {}", done.binary.display());
            println!("installed {}", done.conflist.display());
            Ok(true)
        }
        Cmd::Cluster {
            cmd:
                ClusterCmd::Init {
                    etcd,
                    settings,
                    subnet_len,
                },
        } => {
            let config = ClusterConfig {
                settings,
                subnet_len,
            };
            let opts = etcd.options()?;
            let created = block_on(async {
                let mut client = etcd::connect(&opts).await?;
                Ok(etcd::init_cluster(&mut client, &Keys::new(&opts.prefix), &config).await?)
            })?;
            println!(
                "{} {}/config",
                if created {
                    "initialized"
                } else {
                    "already initialized, same config:"
                },
                opts.prefix.trim_end_matches('/')
            );
            Ok(true)
        }
        Cmd::Node {
            cmd: NodeCmd::Remove { name, etcd },
        } => {
            let opts = etcd.options()?;
            let removed = block_on(async {
                let mut client = etcd::connect(&opts).await?;
                Ok(etcd::remove_node(&mut client, &Keys::new(&opts.prefix), &name).await?)
            })?;
            if removed.is_empty() {
                println!("node {name}: nothing stored");
            }
            for k in removed {
                println!("removed {k}");
            }
            Ok(true)
        }
        Cmd::Status { at, json } => {
            let (agent, dir) = at.resolve()?;
            let snapshot = status::gather(&dir, &at.state_dir(), agent)?;
            status::render(&snapshot, json)?;
            Ok(snapshot.ok())
        }
        Cmd::Monitor {
            at,
            json,
            reason,
            ip,
            trace,
            sample,
        } => {
            let reason = reason
                .map(|r| monitor::reason_named(&r))
                .transpose()
                .map_err(|e| anyhow::anyhow!("--reason: {e}"))?;
            if sample == 0 {
                bail!("--sample must be 1 or more");
            }
            let (_, dir) = at.resolve()?;
            monitor::run(monitor::MonitorArgs {
                dir,
                lock_path: PathBuf::from(format!("{}.monitor.lock", at.state_dir().display())),
                node: at.node,
                json,
                filter: monitor::Filter { reason, ip },
                trace_every: trace.then_some(sample),
            })?;
            Ok(true)
        }
    }
}

pub fn bail_if_not_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("netpath needs root (CAP_BPF, CAP_NET_ADMIN)");
    }
    Ok(())
}
