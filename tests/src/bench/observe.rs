//! What watching costs: forwarding with a tracing monitor and without, in one lab
//! and interleaved, and a `/metrics` scrape of a node whose maps hold 100 000 routes.
use std::{
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    time::Instant,
};

use anyhow::{Context, Result};
use netpath_common::{Route, RouteMode};
use serde::Serialize;

use super::{build, stats, tools, warm_up, PathKind};
use crate::observe::{http_get, Monitor};

#[derive(Debug, Clone, Serialize)]
pub struct TraceSample {
    pub round: usize,
    pub trace: bool,
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

/// netpath direct, pod -> pod across two nodes; each round measures once without a
/// monitor and once with `netpath monitor --trace` on both nodes.
pub fn measure(rounds: usize, secs: u32, bin: &Path) -> Result<Observe> {
    let topo = build(PathKind::NetpathDirect)?;
    let lab = topo.lab();
    let e = topo.ends();
    warm_up(&e)?;
    let mut trace = Vec::new();
    for round in 0..rounds {
        for on in [false, true] {
            let monitors = if on {
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
                m
            } else {
                Vec::new()
            };
            let (pps, cpu_us) = tools::udp_small(&e, secs)?;
            let (p50, _) = tools::latency_us(&e, secs, true)?;
            for m in monitors {
                m.interrupt()?;
            }
            trace.push(TraceSample {
                round,
                trace: on,
                udp64_kpps: pps / 1e3,
                cpu_ns_per_pkt: cpu_us * 1e3,
                tcp_p50_us: p50,
            });
        }
    }
    let mut scrape = Vec::new();
    let mut pinned = lab.nodes[0].pinned()?;
    let base = u32::from(Ipv4Addr::new(100, 64, 0, 0));
    let mut filled = 0;
    for routes in [10usize, 100_000] {
        for i in filled..routes as u32 {
            pinned.set_route(
                Ipv4Addr::from(base + i),
                32,
                Route {
                    node_ip: [192, 168, 56, 250],
                    mode: RouteMode::Direct as u32,
                    vtep_mac: [0x0e, 0, 0, 0, 0, 1],
                    _pad: [0; 2],
                    next_hop: [192, 168, 56, 250],
                },
            )?;
        }
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

/// `observe.md`: the ratios of the same rounds, and the scrape costs.
pub fn markdown(o: &Observe) -> String {
    let mut md = String::from("# netpath bench — what watching costs\n\n");
    md += "netpath direct, pod -> pod across two nodes; every round measures without a monitor and with `netpath monitor --trace` (every forwarded packet sampled, the per-CPU budget of 1000 events/s) on both nodes. Ratios are trace-on / trace-off of the same round, median (min–max).\n\n";
    md += "| metric | trace off | trace on | ratio |\n| --- | --- | --- | --- |\n";
    let rows: [Row; 3] = [
        ("UDP 64 B kpps", |s| s.udp64_kpps),
        ("CPU ns/packet", |s| s.cpu_ns_per_pkt),
        ("TCP RR p50 µs", |s| s.tcp_p50_us),
    ];
    for (name, f) in rows {
        let of =
            |on: bool| -> Vec<f64> { o.trace.iter().filter(|s| s.trace == on).map(f).collect() };
        let ratios: Vec<f64> = of(true).iter().zip(of(false)).map(|(a, b)| a / b).collect();
        let (off, on, r) = (stats(of(false)), stats(of(true)), stats(ratios));
        md += &format!(
            "| {name} | {:.1} | {:.1} | {:.3} ({:.3}–{:.3}) |\n",
            off.0, on.0, r.0, r.1, r.2
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
