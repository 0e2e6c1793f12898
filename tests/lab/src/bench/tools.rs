//! The measuring tools, run inside namespaces: iperf3 (throughput, small-packet rate),
//! sockperf (request/response latency), and /proc/stat for the CPU each packet costs.
use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream},
    os::fd::AsRawFd,
    path::Path,
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};

use crate::{netns, process::Spawned};

/// A server process started inside a namespace; killed (by PID) on drop.
pub struct Server {
    _process: Spawned,
}

/// The whole machine's CPU sampled (perf, cpu-clock: this VM has no PMU) with call
/// stacks while it lives; on drop perf is told to stop (SIGINT, by PID) and writes
/// its file.
pub struct Profile {
    _perf: Spawned,
}

impl Profile {
    pub fn start(out: &Path) -> Result<Self> {
        if let Some(dir) = out.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        }
        let mut child = Command::new("perf")
            .args(["record", "-q", "-e", "cpu-clock", "-a", "-g", "-o"])
            .arg(out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .context("start perf record (package linux-perf)")?;
        // perf opens its per-CPU events before it samples: give it that long.
        std::thread::sleep(Duration::from_millis(500));
        if let Some(status) = child.try_wait()? {
            bail!("perf record ended at once ({status})");
        }
        // perf writes its file on SIGINT; a large profile takes a while.
        Ok(Self {
            _perf: Spawned::signalled(child, libc::SIGINT, Duration::from_secs(60)),
        })
    }
}

/// Starts a server inside `ns` and returns once it listens on `port` (TCP, or UDP
/// with `udp`), read from the namespace's own socket table.
fn spawn_in(ns: &Path, args: &[String], port: u16, udp: bool) -> Result<Server> {
    let name = args.join(" ");
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
    let server = Server {
        _process: Spawned::killing(child),
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !listening(ns, port, udp)? {
        if std::time::Instant::now() > deadline {
            anyhow::bail!("{name} does not listen on port {port} after 5 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(server)
}

/// Whether a socket in `ns` is bound to local `port` (TCP: listening), IPv4 or
/// dual-stack IPv6 (iperf3 binds `::`). `thread-self`: `/proc/net` is the main
/// thread's namespace, not the one this thread entered.
fn listening(ns: &Path, port: u16, udp: bool) -> Result<bool> {
    let tables: [&str; 2] = if udp {
        ["/proc/thread-self/net/udp", "/proc/thread-self/net/udp6"]
    } else {
        ["/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"]
    };
    let text = netns::run_in(ns, || {
        Ok(tables
            .iter()
            .filter_map(|t| std::fs::read_to_string(t).ok())
            .collect::<Vec<_>>()
            .join("\n"))
    })?;
    let want = format!(":{port:04X}");
    // Columns: sl local_address rem_address st …; 0A is LISTEN, 07 an unconnected UDP socket.
    Ok(text.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 3 && f[1].ends_with(&want) && (f[3] == "0A" || (udp && f[3] == "07"))
    }))
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
    let port_n = port;
    let port = port.to_string();
    let _srv = spawn_in(
        e.server,
        &s(&["iperf3", "-s", "-1", "-p", &port]),
        port_n,
        false,
    )?;
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

/// TCP throughput in Gbit/s with `streams` parallel streams, and the sender's
/// retransmissions per second (reordering shows up here as spurious retransmits).
pub fn tcp_gbps(e: &Ends, secs: u32, streams: u32) -> Result<(f64, f64)> {
    let v = iperf3(e, 5201, secs, &["-P", &streams.to_string()])?;
    let gbps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|b| b / 1e9)
        .ok_or_else(|| anyhow!("iperf3 reported no received throughput"))?;
    let retrans = v["end"]["sum_sent"]["retransmits"]
        .as_f64()
        .unwrap_or(f64::NAN);
    Ok((gbps, retrans / f64::from(secs)))
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
    latency_us_to(e, e.server_ip, secs, tcp)
}

/// The ping-pong toward `dst` (a service's front end whose backend is the server).
pub fn latency_us_to(e: &Ends, dst: Ipv4Addr, secs: u32, tcp: bool) -> Result<(f64, f64)> {
    let (ip, dst) = (e.server_ip.to_string(), dst.to_string());
    let mut srv = s(&[
        "taskset", "-c", "0", "sockperf", "sr", "-i", &ip, "-p", "11111",
    ]);
    let mut cli = s(&[
        "taskset", "-c", "0", "sockperf", "pp", "-i", &dst, "-p", "11111", "-m", "64", "-t",
    ]);
    cli.push(secs.to_string());
    if tcp {
        srv.push("--tcp".into());
        cli.push("--tcp".into());
    }
    let _srv = spawn_in(e.server, &srv, 11111, !tcp)?;
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

/// Connection rate, TCP_CRR-style: connect, one 64-byte request and response, close,
/// as fast as one client goes, both ends pinned to CPU 0 like the ping-pong. The server
/// closes first, so the client's ports never wait in TIME_WAIT. Connections per second.
pub fn crr_per_s(e: &Ends, secs: u32) -> Result<f64> {
    crr_per_s_to(e, SocketAddrV4::new(e.server_ip, CRR_PORT), CRR_PORT, secs)
}

/// The server's port of the connection-rate test.
pub const CRR_PORT: u16 = 5203;

/// The connection rate toward `dst` (a service's front end whose backend is the
/// server, listening on `CRR_PORT`).
pub fn crr_per_s_to(e: &Ends, dst: SocketAddrV4, listen_port: u16, secs: u32) -> Result<f64> {
    let bind = SocketAddr::V4(SocketAddrV4::new(e.server_ip, listen_port));
    let addr = SocketAddr::V4(dst);
    let stop = AtomicBool::new(false);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        let server = s.spawn(|| {
            netns::run_in(e.server, || {
                pin_to_cpu0()?;
                let listener = TcpListener::bind(bind).with_context(|| format!("bind {bind}"))?;
                let _ = ready_tx.send(listener.as_raw_fd());
                for conn in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let mut c = conn.context("accept")?;
                    let mut buf = [0u8; 64];
                    c.read_exact(&mut buf).context("read request")?;
                    c.write_all(&buf).context("write response")?;
                }
                Ok(())
            })
        });
        let connect = || -> Result<TcpStream> {
            let c = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                .with_context(|| format!("connect {addr}"))?;
            c.set_read_timeout(Some(Duration::from_secs(2)))?;
            Ok(c)
        };
        let listening = ready_rx
            .recv_timeout(Duration::from_secs(5))
            .map_err(|_| anyhow!("CRR server did not start"));
        let rate = listening
            .as_ref()
            .map_err(|e| anyhow!("{e}"))
            .and_then(|_| {
                netns::run_in(e.client, || {
                    pin_to_cpu0()?;
                    let start = Instant::now();
                    let end = start + Duration::from_secs(secs.into());
                    let mut done = 0u64;
                    let mut buf = [0u8; 64];
                    while Instant::now() < end {
                        let mut c = connect()?;
                        c.write_all(&[0x5a; 64]).context("write request")?;
                        c.read_exact(&mut buf).context("read response")?;
                        // The server's FIN ends the exchange.
                        let _ = c.read(&mut buf);
                        done += 1;
                    }
                    Ok(done as f64 / start.elapsed().as_secs_f64())
                })
            });
        stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop so it sees `stop`, even where no connection gets
        // through any more (shutdown of a listening socket ends a blocked accept).
        if let Ok(fd) = listening {
            // SAFETY: the listener lives until the server thread returns, joined below.
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        }
        let served = server
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        let rate = rate?;
        served.context("CRR server")?;
        Ok(rate)
    })
}

fn pin_to_cpu0() -> Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the calls only read it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error()).context("pin to CPU 0");
        }
    }
    Ok(())
}

/// Kernel memory of every map pinned in `dir`, in KiB (bpftool's bytes_memlock: what
/// the kernel charges for the map, its actual use on kernels that report it).
pub fn map_memory_kib(dir: &Path) -> Result<f64> {
    let mut bytes = 0.0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("list {}", dir.display()))? {
        let path = entry?.path();
        if !path.is_file() {
            continue;
        }
        let out = Command::new("bpftool")
            .args(["-j", "map", "show", "pinned"])
            .arg(&path)
            .output()
            .context("run bpftool")?;
        // Program pins are not maps; bpftool refuses them.
        if !out.status.success() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("bpftool JSON")?;
        bytes += v["bytes_memlock"].as_f64().unwrap_or(0.0);
    }
    Ok(bytes / 1024.0)
}

/// Resident set size of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> Result<f64> {
    status_kib(pid, "VmRSS:")
}

/// A kiB figure of `/proc/PID/status` (`VmRSS:`, `VmHWM:` …).
pub fn status_kib(pid: u32, field: &str) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| anyhow!("no {field} for pid {pid}"))
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

/// Median time of `n` TCP handshakes toward `dst` (the first packet's path: a SYN
/// through whatever translates it, and its SYN-ACK back), in microseconds, against
/// a server in `e.server` on `CRR_PORT`.
pub fn connect_p50_us(e: &Ends, dst: SocketAddrV4, n: usize) -> Result<f64> {
    let bind = SocketAddr::V4(SocketAddrV4::new(e.server_ip, CRR_PORT));
    let listener = netns::run_in(e.server, || {
        TcpListener::bind(bind).with_context(|| format!("bind {bind}"))
    })?;
    listener.set_nonblocking(true)?;
    let mut times = Vec::with_capacity(n);
    netns::run_in(e.client, || {
        pin_to_cpu0()?;
        for _ in 0..n {
            let t = Instant::now();
            let c = TcpStream::connect_timeout(&SocketAddr::V4(dst), Duration::from_secs(2))
                .with_context(|| format!("connect {dst}"))?;
            times.push(t.elapsed().as_secs_f64() * 1e6);
            drop(c);
            while listener.accept().is_ok() {}
        }
        Ok(())
    })?;
    Ok(crate::bench::stats(times).0)
}
