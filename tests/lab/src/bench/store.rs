//! The control plane on etcd at scale: M agent control loops in this process (the
//! product's store, plan and diff code, with an in-memory sink instead of maps)
//! against the lab's 3-member etcd. Measured: from a node's join (and its removal)
//! to every loop having planned the change, p50/p99; etcd's request rate while the
//! cluster idles (lease renewals); memory per loop.
use std::{
    io::{Read, Write},
    net::Ipv4Addr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use netpath::{
    net::Ipv4Net,
    netlink::RouteSummary,
    plan::{self, Probed, Underlay},
    spec::{derived_vtep_mac, NodeSpec},
    store::{
        etcd::{self as store, EtcdOptions, Member},
        Update,
    },
};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::lab::{Lab, LabConfig, LabStore};

#[derive(Debug, Clone, Serialize)]
pub struct StoreScale {
    pub agents: usize,
    /// How long the joining node's own join took (reserve, publish, list).
    pub join_call_ms: f64,
    pub join_p50_ms: f64,
    pub join_p99_ms: f64,
    pub leave_p50_ms: f64,
    pub leave_p99_ms: f64,
    /// gRPC messages the etcd members received per second while the cluster idled.
    pub etcd_requests_per_s: f64,
    /// This process's resident memory per control loop.
    pub kib_per_agent: f64,
    /// Why this size could not be measured, if it could not.
    pub error: Option<String>,
}

impl StoreScale {
    pub fn failed(agents: usize, why: String) -> Self {
        Self {
            agents,
            join_call_ms: f64::NAN,
            join_p50_ms: f64::NAN,
            join_p99_ms: f64::NAN,
            leave_p50_ms: f64::NAN,
            leave_p99_ms: f64::NAN,
            etcd_requests_per_s: f64::NAN,
            kib_per_agent: f64::NAN,
            error: Some(why),
        }
    }
}

/// When each loop first planned a route to the probe node, and first planned none.
#[derive(Default)]
struct Seen {
    /// The most nodes a plan of this loop has held (caught up when it holds all).
    nodes: usize,
    joined: Option<Instant>,
    left: Option<Instant>,
}

const PROBE: &str = "probe";

fn underlay_of(i: usize) -> Ipv4Net {
    let base = u32::from(Ipv4Addr::new(172, 16, 0, 2));
    Ipv4Net::new(Ipv4Addr::from(base + i as u32), 12)
}

fn rss_kib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(f64::NAN)
}

/// gRPC messages all members received (stream messages included: lease renewals
/// travel on one stream per client).
fn grpc_messages(endpoints: &[String]) -> Result<f64> {
    endpoints.iter().map(|e| grpc_received(e)).sum()
}

/// Sum of `grpc_server_msg_received_total` on one member's /metrics.
fn grpc_received(endpoint: &str) -> Result<f64> {
    let hostport = endpoint.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(hostport)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {hostport}\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body
        .lines()
        .filter(|l| l.starts_with("grpc_server_msg_received_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

pub(super) fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[(((v.len() - 1) as f64) * p).round() as usize]
}

/// One loop: every update from the store is planned (as the agent plans it) and
/// diffed against the last plan; the probe's appearance and removal are noted.
async fn control_loop(local: NodeSpec, mut rx: mpsc::Receiver<Update>, seen: Arc<Mutex<Seen>>) {
    let underlay = Underlay {
        ifindex: 2,
        mtu: 1500,
    };
    // Everything is reachable through a default route, as on a real node.
    let table = [RouteSummary {
        nh_id: None,
        dst: Ipv4Net::new(Ipv4Addr::UNSPECIFIED, 0),
        gateway: Some(Ipv4Addr::new(172, 16, 0, 1)),
        oif: Some(2),
        protocol: 0,
        mtu: None,
    }];
    let mut last = plan::Desired::default();
    while let Some(u) = rx.recv().await {
        let Update::Spec(spec, _) = u else { continue };
        let want = plan::plan(&spec, &local, &underlay, &Probed::default(), &table, None);
        if want == last {
            continue;
        }
        let has_probe = spec
            .nodes
            .iter()
            .find(|n| n.name == PROBE)
            .is_some_and(|p| want.routes.contains_key(&p.pod_cidr));
        let mut s = seen.lock().unwrap();
        s.nodes = s.nodes.max(spec.nodes.len());
        if has_probe && s.joined.is_none() {
            s.joined = Some(Instant::now());
        }
        if !has_probe && s.joined.is_some() && s.left.is_none() {
            s.left = Some(Instant::now());
        }
        last = want;
    }
}

/// `agents` loops, then a probe node joins and is removed.
pub fn measure(agents: usize) -> Result<StoreScale> {
    // Room for 1 000 /24s and more.
    let spec = netpath::spec::SpecDraft::new(Ipv4Net::new(Ipv4Addr::new(10, 0, 0, 0), 8))
        .node(
            "node1",
            Ipv4Net::new(Ipv4Addr::new(192, 168, 56, 11), 24),
            Ipv4Net::new(Ipv4Addr::new(10, 0, 1, 0), 24),
        )
        .validate()?;
    let mut cfg = LabConfig::with_spec(spec, 0)?;
    cfg.store = LabStore::Etcd { tls: false };
    let lab = Lab::up(&cfg)?;
    let etcd = lab.etcd.as_ref().expect("etcd lab");
    let opts = EtcdOptions {
        endpoints: etcd.endpoints(),
        prefix: "/netpath".into(),
        ca: None,
        cert: None,
        key: None,
        lease_ttl: 30,
    };
    let endpoints = etcd.endpoints();
    // Threads started from inside the namespace stay in it: two workers, as the
    // machine has two CPUs.
    crate::netns::run_in(etcd.ns.path(), || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?
            .block_on(run_loops(agents, opts, endpoints))
    })
    .context("etcd control-plane scale")
}

async fn run_loops(agents: usize, opts: EtcdOptions, endpoints: Vec<String>) -> Result<StoreScale> {
    {
        let rss_before = rss_kib();
        let members: Vec<Member> = futures::stream::iter(0..agents)
            .map(|i| {
                let opts = opts.clone();
                async move {
                    let u = underlay_of(i);
                    // No encryption here: no key is read from the state dir.
                    let nowhere = std::env::temp_dir();
                    Member::join(
                        &opts,
                        &format!("a{i}"),
                        u,
                        derived_vtep_mac(u.addr),
                        &[],
                        &nowhere,
                    )
                    .await
                }
            })
            .buffer_unordered(8)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        let mut seen = Vec::new();
        for (i, m) in members.into_iter().enumerate() {
            let local = NodeSpec {
                name: format!("a{i}"),
                underlay: m.record.underlay,
                pod_cidr: m.record.pod_cidr,
                vtep_mac: m.record.vtep_mac,
                wireguard_key: None,
            };
            let (tx, rx) = mpsc::channel(16);
            let s = Arc::new(Mutex::new(Seen::default()));
            seen.push(s.clone());
            tokio::spawn(m.run(tx));
            tokio::spawn(control_loop(local, rx, s));
        }
        // Every loop catches up with the joins after its own (and the lab's node).
        let all = agents + 1;
        wait_all(&seen, move |s| s.nodes >= all).await?;
        let before = grpc_messages(&endpoints)?;
        let idle = Duration::from_secs(10);
        tokio::time::sleep(idle).await;
        let requests = (grpc_messages(&endpoints)? - before) / idle.as_secs_f64();
        let kib_per_agent = (rss_kib() - rss_before) / agents as f64;

        let t0 = Instant::now();
        let u = underlay_of(agents + 10);
        let probe = Member::join(
            &opts,
            PROBE,
            u,
            derived_vtep_mac(u.addr),
            &[],
            &std::env::temp_dir(),
        )
        .await?;
        let join_call_ms = t0.elapsed().as_secs_f64() * 1e3;
        drop(probe);
        wait_all(&seen, |s| s.joined.is_some()).await?;
        let t1 = Instant::now();
        let mut client = store::connect(&opts).await?;
        store::remove_node(
            &mut client,
            &netpath::store::etcd::Keys::new(&opts.prefix),
            PROBE,
        )
        .await?;
        wait_all(&seen, |s| s.left.is_some()).await?;
        let ms = |from: Instant, pick: fn(&Seen) -> Option<Instant>| -> Vec<f64> {
            seen.iter()
                .filter_map(|s| pick(&s.lock().unwrap()))
                .map(|t| t.duration_since(from).as_secs_f64() * 1e3)
                .collect()
        };
        let join = ms(t0, |s| s.joined);
        let leave = ms(t1, |s| s.left);
        Ok(StoreScale {
            agents,
            join_call_ms,
            join_p50_ms: percentile(join.clone(), 0.5),
            join_p99_ms: percentile(join, 0.99),
            leave_p50_ms: percentile(leave.clone(), 0.5),
            leave_p99_ms: percentile(leave, 0.99),
            etcd_requests_per_s: requests,
            kib_per_agent,
            error: None,
        })
    }
}

async fn wait_all(seen: &[Arc<Mutex<Seen>>], done: impl Fn(&Seen) -> bool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pending = seen.iter().filter(|s| !done(&s.lock().unwrap())).count();
        if pending == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{pending} of {} control loops never saw the change",
                seen.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
