//! The gossip store at scale: M members in this process, each on a loopback address
//! of its own, running the product's membership, wire (with a cluster key) and claims
//! code. Measured: from a new member's claim to every member's spec holding it,
//! p50/p99; bytes each member sends per second while the cluster idles; memory per
//! member.
use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use netpath::{
    net::Ipv4Net,
    spec::derived_vtep_mac,
    store::{
        gossip::{Counters, GossipOptions, Member, DEFAULT_JOIN_WAIT},
        model::ClusterConfig,
        Update,
    },
};
use serde::Serialize;
use tokio::sync::mpsc;

use super::{store::percentile, tools};

#[derive(Debug, Clone, Serialize)]
pub struct GossipScale {
    pub members: usize,
    /// Until every member's spec held every member, after all joined at once.
    pub converged_ms: f64,
    pub join_p50_ms: f64,
    pub join_p99_ms: f64,
    pub bytes_per_s_per_member: f64,
    /// Members declared down, summed over every member's view, while all were
    /// alive and idle: false verdicts of the failure detector.
    pub declared_down_at_rest: u64,
    pub kib_per_member: f64,
    pub error: Option<String>,
}

impl GossipScale {
    pub fn failed(members: usize, why: String) -> Self {
        Self {
            members,
            converged_ms: f64::NAN,
            join_p50_ms: f64::NAN,
            join_p99_ms: f64::NAN,
            bytes_per_s_per_member: f64::NAN,
            declared_down_at_rest: 0,
            kib_per_member: f64::NAN,
            error: Some(why),
        }
    }
}

/// What each member's agent side saw: its spec's size, and when the probe arrived.
struct Seen {
    nodes: Vec<AtomicUsize>,
    probe: Mutex<Vec<Option<Instant>>>,
}

const PROBE: &str = "probe";
const WAVE: usize = 50;
const WAVE_GAP: Duration = Duration::from_secs(1);

fn addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 2, 0, 1)) + i as u32)
}

pub fn measure(members: usize) -> Result<GossipScale> {
    raise_file_limit(members as u64 * 4 + 256)?;
    let dir = std::env::temp_dir().join(format!("netpath-gossip-bench-{}", std::process::id()));
    let result = run(members, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run(members: usize, dir: &std::path::Path) -> Result<GossipScale> {
    let rss0 = tools::rss_kib(std::process::id())?;
    let port = UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
    let config: ClusterConfig =
        toml::from_str("cluster_cidr = \"10.0.0.0/8\"\nsubnet_len = 24\nbackend = \"vxlan\"\n")?;
    // Every node is given the first three as its peers (the seeds list users give).
    let opts = |i: usize| GossipOptions {
        listen: SocketAddr::new(addr(i).into(), port),
        seeds: (0..3)
            .map(|s| SocketAddr::new(addr(s).into(), port))
            .collect(),
        key: Some(b"the gossip bench's cluster key".to_vec()),
        config: config.clone(),
        forget_after: Duration::from_secs(3600),
        join_wait: DEFAULT_JOIN_WAIT,
    };
    let seen = Arc::new(Seen {
        nodes: (0..members).map(|_| AtomicUsize::new(0)).collect(),
        probe: Mutex::new(vec![None; members]),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let out = rt.block_on(async {
        let started = Instant::now();
        let mut joins = Vec::new();
        for i in 0..members {
            // Nodes boot over a few seconds, as a rack does, not in one instant:
            // WAVE every WAVE_GAP.
            if i > 0 && i % WAVE == 0 {
                tokio::time::sleep(WAVE_GAP).await;
            }
            let (o, seen, state) = (opts(i), seen.clone(), dir.join(format!("m{i}")));
            joins.push(tokio::spawn(async move {
                let counters = start(o, &format!("m{i}"), i, &state, Some((seen, i))).await?;
                anyhow::Ok(counters)
            }));
        }
        let mut counters = Vec::new();
        for j in joins {
            counters.push(j.await??);
        }
        wait(Duration::from_secs(120), || {
            seen.nodes
                .iter()
                .all(|n| n.load(Ordering::Relaxed) == members)
        })
        .await
        .with_context(|| {
            let least = seen.nodes.iter().map(|n| n.load(Ordering::Relaxed)).min();
            format!("not every member heard all {members} (the least: {least:?})")
        })?;
        let converged_ms = started.elapsed().as_secs_f64() * 1e3;
        // At rest: probes and their acks only.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let sent = |c: &[Arc<Counters>]| -> u64 {
            c.iter().map(|c| c.sent_bytes.load(Ordering::Relaxed)).sum()
        };
        let downs = |c: &[Arc<Counters>]| -> u64 {
            c.iter()
                .map(|c| c.declared_down.load(Ordering::Relaxed))
                .sum()
        };
        let (b0, d0, t0) = (sent(&counters), downs(&counters), Instant::now());
        tokio::time::sleep(Duration::from_secs(10)).await;
        let bytes_per_s_per_member =
            (sent(&counters) - b0) as f64 / t0.elapsed().as_secs_f64() / members as f64;
        let declared_down_at_rest = downs(&counters) - d0;
        let rss = tools::rss_kib(std::process::id())?;
        // A member joins: from its claim to every member's spec holding it.
        let o = opts(members);
        let state = dir.join(PROBE);
        let member = joined(o, PROBE, members, &state).await?;
        let claimed = member.claimed_at().context("the probe made no claim")?;
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(member.run(tx));
        tokio::spawn(drain(rx, None));
        wait(Duration::from_secs(90), || {
            seen.probe.lock().unwrap().iter().all(Option::is_some)
        })
        .await
        .with_context(|| {
            let got = seen
                .probe
                .lock()
                .unwrap()
                .iter()
                .filter(|t| t.is_some())
                .count();
            format!("the new member reached {got} of {members} members' specs within 90 s")
        })?;
        let times: Vec<f64> = seen
            .probe
            .lock()
            .unwrap()
            .iter()
            .map(|t| {
                t.expect("all seen")
                    .saturating_duration_since(claimed.into_std())
                    .as_secs_f64()
                    * 1e3
            })
            .collect();
        anyhow::Ok(GossipScale {
            members,
            converged_ms,
            join_p50_ms: percentile(times.clone(), 0.5),
            join_p99_ms: percentile(times, 0.99),
            bytes_per_s_per_member,
            declared_down_at_rest,
            kib_per_member: (rss - rss0) / members as f64,
            error: None,
        })
    });
    rt.shutdown_background();
    out
}

async fn joined(o: GossipOptions, name: &str, i: usize, state: &std::path::Path) -> Result<Member> {
    std::fs::create_dir_all(state)?;
    let underlay = Ipv4Net::new(addr(i), 8);
    Ok(Member::join(
        &o,
        name,
        underlay,
        derived_vtep_mac(underlay.addr),
        &[],
        state,
    )
    .await?)
}

/// A member joined and followed, its updates noted in `seen` under index `k`.
async fn start(
    o: GossipOptions,
    name: &str,
    i: usize,
    state: &std::path::Path,
    seen: Option<(Arc<Seen>, usize)>,
) -> Result<Arc<Counters>> {
    let member = joined(o, name, i, state).await?;
    let counters = member.counters.clone();
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(member.run(tx));
    tokio::spawn(drain(rx, seen));
    Ok(counters)
}

async fn drain(mut rx: mpsc::Receiver<Update>, seen: Option<(Arc<Seen>, usize)>) {
    while let Some(u) = rx.recv().await {
        let (Update::Spec(spec, _), Some((seen, k))) = (u, seen.as_ref()) else {
            continue;
        };
        seen.nodes[*k].store(spec.nodes.len(), Ordering::Relaxed);
        if spec.nodes.iter().any(|n| n.name == PROBE) {
            let mut p = seen.probe.lock().unwrap();
            p[*k].get_or_insert_with(Instant::now);
        }
    }
}

async fn wait(within: Duration, cond: impl Fn() -> bool) -> Result<()> {
    let end = Instant::now() + within;
    while !cond() {
        if Instant::now() > end {
            bail!("not within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// A member holds a socket and a runtime's share of descriptors.
fn raise_file_limit(want: u64) -> Result<()> {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) != 0 {
            bail!("getrlimit: {}", std::io::Error::last_os_error());
        }
        if l.rlim_cur < want {
            l.rlim_cur = want.min(l.rlim_max);
            if libc::setrlimit(libc::RLIMIT_NOFILE, &l) != 0 {
                bail!("setrlimit: {}", std::io::Error::last_os_error());
            }
        }
    }
    Ok(())
}
