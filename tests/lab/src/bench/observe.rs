//! What watching costs: forwarding through programs built without their monitor
//! events (the object before the monitor existed), with them and no monitor, and
//! with a tracing monitor — interleaved, round by round — and a `/metrics` scrape of
//! a node whose maps hold 100 000 routes.
use std::{net::SocketAddr, path::Path, time::Instant};

use anyhow::{Context, Result};
use netpath::spec::Backend;
use serde::Serialize;

use super::{build, scale, stats, tools, warm_up, At, PathKind, Topo};
use crate::{
    lab::{generated_spec, Lab, LabConfig, NodeKind},
    observe::{http_get, Monitor},
};

/// What a round measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Variant {
    /// The programs built without monitor events (`NETPATH_BASELINE_BIN`).
    WithoutMonitor,
    /// Today's programs, no monitor running.
    MonitorOff,
    /// Today's programs, `netpath monitor --trace` on both nodes.
    Tracing,
}

#[derive(Debug, Clone, Serialize)]
pub struct TraceSample {
    pub round: usize,
    pub variant: Variant,
    pub udp64_kpps: f64,
    pub cpu_ns_per_pkt: f64,
    pub tcp_p50_us: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScrapeSample {
    pub routes: usize,
    pub ms: f64,
    /// The agent's user + system CPU for the scrape.
    pub agent_cpu_ms: f64,
    pub bytes: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Observe {
    pub trace: Vec<TraceSample>,
    pub scrape: Vec<ScrapeSample>,
}

/// netpath direct, pod -> pod across two nodes, by the baseline binary's agents in a
/// second lab.
fn baseline_topo(bin: std::path::PathBuf) -> Result<Topo> {
    let mut cfg = LabConfig::with_spec(generated_spec(2, Backend::Direct)?, 1)?;
    cfg.kinds = (0..2).map(|i| (i, NodeKind::Netpath)).collect();
    cfg.agent_bin = bin;
    Ok(Topo::Lab {
        lab: Box::new(Lab::up(&cfg)?),
        from: At::Pod(0, 0),
        to: At::Pod(1, 0),
    })
}

fn tracing_monitors(lab: &Lab, bin: &Path) -> Result<Vec<Monitor>> {
    let mut m = Vec::new();
    for n in &lab.nodes {
        let root = n.pin_dir.parent().context("pin root")?;
        let state = n.state_dir();
        let args = [
            "--node",
            n.name.as_str(),
            "--bpffs-root",
            root.to_str().context("pin root")?,
            "--state-dir",
            state.to_str().context("state dir")?,
            "--trace",
        ];
        m.push(Monitor::start(bin, &args)?);
    }
    Ok(m)
}

pub fn measure(rounds: usize, secs: u32, bin: &Path) -> Result<Observe> {
    let topo = build(PathKind::NetpathDirect)?;
    let baseline = match std::env::var_os("NETPATH_BASELINE_BIN") {
        Some(b) => Some(baseline_topo(b.into())?),
        None => {
            eprintln!("  NETPATH_BASELINE_BIN unset (not run by xtask?): no baseline object");
            None
        }
    };
    let lab = topo.lab();
    warm_up(&topo.ends())?;
    if let Some(b) = &baseline {
        warm_up(&b.ends())?;
    }
    let mut trace = Vec::new();
    for round in 0..rounds {
        for variant in [
            Variant::WithoutMonitor,
            Variant::MonitorOff,
            Variant::Tracing,
        ] {
            let t = match (variant, &baseline) {
                (Variant::WithoutMonitor, None) => continue,
                (Variant::WithoutMonitor, Some(b)) => b,
                _ => &topo,
            };
            let monitors = if variant == Variant::Tracing {
                tracing_monitors(lab, bin)?
            } else {
                Vec::new()
            };
            let e = t.ends();
            let (pps, cpu_us) = tools::udp_small(&e, secs)?;
            let (p50, _) = tools::latency_us(&e, secs, true)?;
            for m in monitors {
                m.interrupt()?;
            }
            trace.push(TraceSample {
                round,
                variant,
                udp64_kpps: pps / 1e3,
                cpu_ns_per_pkt: cpu_us * 1e3,
                tcp_p50_us: p50,
            });
        }
    }
    let mut scrape = Vec::new();
    let mut pinned = lab.nodes[0].pinned()?;
    let mut filled = 0;
    for routes in [10usize, 100_000] {
        scale::add_unused_routes(&mut pinned, filled..routes as u32)?;
        filled = routes as u32;
        let pid = lab.agent_pid(0).context("node 0 has no agent")?;
        let addr: SocketAddr = "127.0.0.1:9970".parse()?;
        for _ in 0..3 {
            let cpu = cpu_ms(pid)?;
            let t = Instant::now();
            let (status, body) = http_get(lab.nodes[0].ns.path(), addr, "/metrics")?;
            let ms = t.elapsed().as_secs_f64() * 1e3;
            anyhow::ensure!(status == 200, "/metrics: {status}");
            scrape.push(ScrapeSample {
                routes,
                ms,
                agent_cpu_ms: cpu_ms(pid)? - cpu,
                bytes: body.len(),
            });
        }
    }
    Ok(Observe { trace, scrape })
}

/// User + system CPU time of a process, in ms.
fn cpu_ms(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').context("odd /proc stat")?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks * 1e3 / hz)
}

/// A table row: its name and the figure it reads from a sample.
type Row = (&'static str, fn(&TraceSample) -> f64);

/// Same-round ratios of `num` to `den` for one figure.
fn ratios(o: &Observe, f: fn(&TraceSample) -> f64, num: Variant, den: Variant) -> Vec<f64> {
    let of = |v: Variant| -> std::collections::BTreeMap<usize, f64> {
        o.trace
            .iter()
            .filter(|s| s.variant == v)
            .map(|s| (s.round, f(s)))
            .collect()
    };
    let (n, d) = (of(num), of(den));
    n.iter()
        .filter_map(|(r, a)| d.get(r).map(|b| a / b))
        .collect()
}

/// `observe.md`: the ratios of the same rounds, and the scrape costs.
pub fn markdown(o: &Observe) -> String {
    let mut md = String::from("# netpath bench — what watching costs\n\n");
    md += "netpath direct, pod -> pod across two nodes, interleaved round by round: the programs built without monitor events (the baseline: the object before the monitor existed, run by its own agents in a second lab), today's programs with no monitor, and today's with `netpath monitor --trace` (every forwarded packet sampled, the per-CPU budget of 1000 events/s) on both nodes. Medians over rounds; ratios are of the same round, median (min–max).\n\n";
    md += "| metric | without monitor code | monitor off | --trace | off / without | trace / off |\n| --- | --- | --- | --- | --- | --- |\n";
    let rows: [Row; 3] = [
        ("UDP 64 B kpps", |s| s.udp64_kpps),
        ("CPU ns/packet", |s| s.cpu_ns_per_pkt),
        ("TCP RR p50 µs", |s| s.tcp_p50_us),
    ];
    for (name, f) in rows {
        let med = |v: Variant| stats(o.trace.iter().filter(|s| s.variant == v).map(f).collect()).0;
        let r = |num, den| {
            let (m, lo, hi) = stats(ratios(o, f, num, den));
            format!("{m:.3} ({lo:.3}–{hi:.3})")
        };
        md += &format!(
            "| {name} | {:.1} | {:.1} | {:.1} | {} | {} |\n",
            med(Variant::WithoutMonitor),
            med(Variant::MonitorOff),
            med(Variant::Tracing),
            r(Variant::MonitorOff, Variant::WithoutMonitor),
            r(Variant::Tracing, Variant::MonitorOff),
        );
    }
    md += "\n| routes in the node's maps | /metrics ms (median of 3) | agent CPU ms | bytes |\n| --- | --- | --- | --- |\n";
    for routes in [10usize, 100_000] {
        let s: Vec<&ScrapeSample> = o.scrape.iter().filter(|s| s.routes == routes).collect();
        let ms = stats(s.iter().map(|s| s.ms).collect());
        let cpu = stats(s.iter().map(|s| s.agent_cpu_ms).collect());
        md += &format!(
            "| {routes} | {:.1} | {:.1} | {} |\n",
            ms.0,
            cpu.0,
            s.first().map_or(0, |s| s.bytes)
        );
    }
    md
}

/// Runs the part and writes `observe.md` and `observe.json` into `out`.
pub fn run(rounds: usize, secs: u32, out: &Path) -> Result<Observe> {
    let bin = crate::lab::agent_binary()?;
    let o = measure(rounds, secs, &bin)?;
    std::fs::create_dir_all(out)?;
    std::fs::write(out.join("observe.md"), markdown(&o))?;
    std::fs::write(out.join("observe.json"), serde_json::to_vec_pretty(&o)?)?;
    Ok(o)
}
