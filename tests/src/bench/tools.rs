//! The measuring tools, run inside namespaces: iperf3 (throughput, small-packet rate),
//! sockperf (request/response latency), and /proc/stat for the CPU each packet costs.
use std::{
    net::Ipv4Addr,
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{anyhow, bail, Context, Result};

use crate::netns;

/// A server process started inside a namespace; killed (by PID) on drop.
pub struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_in(ns: &Path, args: &[String]) -> Result<Server> {
    let args = args.to_vec();
    let child = netns::run_in(ns, move || {
        // A child forked from this thread inherits its network namespace.
        Command::new(&args[0])
            .args(&args[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("start {}", args[0]))
    })?;
    // Let it bind before the client connects.
    std::thread::sleep(Duration::from_millis(150));
    Ok(Server(child))
}

fn output_in(ns: &Path, args: &[String]) -> Result<String> {
    let args = args.to_vec();
    netns::run_in(ns, move || {
        let out = Command::new(&args[0])
            .args(&args[1..])
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("run {}", args[0]))?;
        if !out.status.success() {
            bail!(
                "{} failed: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    })
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// Where one side of a measurement runs.
#[derive(Clone)]
pub struct Ends<'a> {
    pub client: &'a Path,
    pub server: &'a Path,
    pub server_ip: Ipv4Addr,
}

/// Runs an iperf3 client against a one-shot server on `port`; returns its JSON.
fn iperf3(e: &Ends, port: u16, secs: u32, extra: &[&str]) -> Result<serde_json::Value> {
    let port = port.to_string();
    let _srv = spawn_in(e.server, &s(&["iperf3", "-s", "-1", "-p", &port]))?;
    let mut args = s(&[
        "iperf3",
        "-c",
        &e.server_ip.to_string(),
        "-p",
        &port,
        "-J",
        "-t",
    ]);
    args.push(secs.to_string());
    args.extend(s(extra));
    let out = output_in(e.client, &args)?;
    serde_json::from_str(&out).context("iperf3 JSON")
}

/// TCP throughput in Gbit/s with `streams` parallel streams.
pub fn tcp_gbps(e: &Ends, secs: u32, streams: u32) -> Result<f64> {
    let v = iperf3(e, 5201, secs, &["-P", &streams.to_string()])?;
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|b| b / 1e9)
        .ok_or_else(|| anyhow!("iperf3 reported no received throughput"))
}

/// 64-byte UDP datagrams as fast as one sender goes: (received packets per second,
/// CPU microseconds per received packet over the whole machine).
pub fn udp_small(e: &Ends, secs: u32) -> Result<(f64, f64)> {
    let before = cpu_busy()?;
    let v = iperf3(e, 5202, secs, &["-u", "-b", "0", "-l", "64"])?;
    let after = cpu_busy()?;
    let sum = &v["end"]["sum"];
    let (packets, lost, seconds) = (
        sum["packets"].as_f64().unwrap_or(0.0),
        sum["lost_packets"].as_f64().unwrap_or(0.0),
        sum["seconds"].as_f64().unwrap_or(0.0),
    );
    let received = packets - lost;
    if received <= 0.0 || seconds <= 0.0 {
        bail!("iperf3 UDP: nothing received");
    }
    let cpu_us = (after - before) * 1e6;
    Ok((received / seconds, cpu_us / received))
}

/// Ping-pong with small messages, both ends pinned to CPU 0 (a wake-up across CPUs
/// costs more than the datapath on these machines): (p50, p99) in microseconds of
/// round trip.
pub fn latency_us(e: &Ends, secs: u32, tcp: bool) -> Result<(f64, f64)> {
    let ip = e.server_ip.to_string();
    let mut srv = s(&[
        "taskset", "-c", "0", "sockperf", "sr", "-i", &ip, "-p", "11111",
    ]);
    let mut cli = s(&[
        "taskset", "-c", "0", "sockperf", "pp", "-i", &ip, "-p", "11111", "-m", "64", "-t",
    ]);
    cli.push(secs.to_string());
    if tcp {
        srv.push("--tcp".into());
        cli.push("--tcp".into());
    }
    let _srv = spawn_in(e.server, &srv)?;
    let out = output_in(e.client, &cli)?;
    let pct = |p: &str| -> Result<f64> {
        out.lines()
            .find(|l| l.contains(&format!("percentile {p} =")))
            .and_then(|l| l.rsplit('=').next())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .ok_or_else(|| anyhow!("sockperf printed no {p} percentile:\n{out}"))
    };
    // sockperf reports half the round trip.
    Ok((pct("50.000")? * 2.0, pct("99.000")? * 2.0))
}

/// Busy CPU seconds of the whole machine so far (user, system, irq, softirq).
fn cpu_busy() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat
        .lines()
        .next()
        .ok_or_else(|| anyhow!("empty /proc/stat"))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    if f.len() < 7 {
        bail!("unexpected /proc/stat: {line}");
    }
    // user nice system idle iowait irq softirq
    let busy = f[0] + f[1] + f[2] + f[5] + f[6];
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(busy as f64 / hz)
}

/// Whether `perf stat` can count cycles here (many VMs have no PMU).
pub fn perf_counts_cycles() -> bool {
    Command::new("perf")
        .args(["stat", "-x,", "-e", "cycles", "true"])
        .output()
        .map(|o| {
            let err = String::from_utf8_lossy(&o.stderr);
            o.status.success() && !err.contains("not supported") && !err.contains("not counted")
        })
        .unwrap_or(false)
}
