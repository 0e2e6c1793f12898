//! Test-side tools for the agent's HTTP endpoint and its monitor: a plain HTTP/1.1
//! client that runs inside a namespace, a private Prometheus, and a running
//! `netpath monitor` whose output lines are collected.
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};

use crate::{netns, process::Spawned};

/// Starts `cmd` inside the namespace at `ns` (a child forked from a thread there
/// inherits it).
pub fn spawn_in(ns: &Path, mut cmd: Command) -> Result<Spawned> {
    let child = netns::run_in(ns, move || cmd.spawn().context("start process"))?;
    Ok(Spawned::killing(child))
}

/// Sends `request` (raw bytes) to `addr` inside `ns` and returns the status code and
/// body of the answer (or `None` for the status when the server closed without one).
pub fn http_raw(ns: &Path, addr: SocketAddr, request: Vec<u8>) -> Result<(Option<u16>, String)> {
    netns::run_in(ns, move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .with_context(|| format!("connect {addr}"))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(&request)?;
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        let status = text
            .lines()
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|c| c.parse().ok());
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((status, body))
    })
}

/// `GET path` with `Connection: close`.
pub fn http_get(ns: &Path, addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let (status, body) = http_raw(ns, addr, req.into_bytes())?;
    Ok((
        status.ok_or_else(|| anyhow!("no HTTP status from {addr}{path}"))?,
        body,
    ))
}

/// Polls `GET path` until `pred(status, body)` holds; the last answer otherwise.
pub fn http_wait(
    ns: &Path,
    addr: SocketAddr,
    path: &str,
    within: Duration,
    pred: impl Fn(u16, &str) -> bool,
) -> Result<(u16, String)> {
    let deadline = Instant::now() + within;
    loop {
        let got = http_get(ns, addr, path);
        if let Ok((status, body)) = &got {
            if pred(*status, body) {
                return got;
            }
        }
        if Instant::now() > deadline {
            return got.and_then(|(s, b)| bail!("{path}: still {s} after {within:?}:\n{b}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A private Prometheus in a namespace, scraping one target every second.
pub struct Prometheus {
    _proc: Spawned,
    pub ns: PathBuf,
    pub addr: SocketAddr,
    dir: PathBuf,
}

impl Prometheus {
    pub fn start(ns: &Path, dir: &Path, target: SocketAddr) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: netpath\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )?;
        let addr: SocketAddr = "127.0.0.1:19090".parse()?;
        let log = std::fs::File::create(dir.join("prometheus.log"))?;
        let mut cmd = Command::new("prometheus");
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let proc = spawn_in(ns, cmd).context("start prometheus (Debian package prometheus)")?;
        let p = Self {
            _proc: proc,
            ns: ns.to_path_buf(),
            addr,
            dir: dir.to_path_buf(),
        };
        http_wait(ns, addr, "/-/ready", Duration::from_secs(30), |s, _| {
            s == 200
        })
        .with_context(|| format!("prometheus not ready; log:\n{}", p.log()))?;
        Ok(p)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// An instant query; the values of its result vector with their labels.
    pub fn query(&self, q: &str) -> Result<Vec<(serde_json::Value, f64)>> {
        let path = format!("/api/v1/query?query={}", urlencode(q));
        let (status, body) = http_get(&self.ns, self.addr, &path)?;
        if status != 200 {
            bail!("query {q}: HTTP {status}: {body}");
        }
        let v: serde_json::Value = serde_json::from_str(&body).context("query JSON")?;
        let mut out = Vec::new();
        for r in v["data"]["result"].as_array().into_iter().flatten() {
            let value = r["value"][1]
                .as_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| anyhow!("odd sample in {body}"))?;
            out.push((r["metric"].clone(), value));
        }
        Ok(out)
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A running `netpath monitor`; its stdout lines are collected as they come.
pub struct Monitor {
    proc: Spawned,
    lines: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
}

impl Monitor {
    /// Starts it and waits for its "monitoring node" line (the ring is open).
    pub fn start(bin: &Path, args: &[&str]) -> Result<Self> {
        let mut child = Command::new(bin)
            .arg("monitor")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("start netpath monitor")?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let out = child.stdout.take().expect("piped");
        let err = child.stderr.take().expect("piped");
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(|l| l.ok()) {
                l.lock().unwrap().push(line);
            }
        });
        let e = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(|l| l.ok()) {
                let mut e = e.lock().unwrap();
                e.push_str(&line);
                e.push('\n');
            }
        });
        let mut m = Self {
            proc: Spawned::killing(child),
            lines,
            stderr,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !m.stderr().contains("monitoring node") {
            if let Some(status) = m.proc.0.try_wait()? {
                bail!("netpath monitor exited with {status}: {}", m.stderr());
            }
            if Instant::now() > deadline {
                bail!("netpath monitor did not start: {}", m.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(m)
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits for a line that `pred` accepts.
    pub fn wait_line(&self, within: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(l) = self.lines().into_iter().find(|l| pred(l)) {
                return Some(l);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `n` lines are accepted by `pred`; returns them.
    pub fn wait_lines(
        &self,
        within: Duration,
        n: usize,
        pred: impl Fn(&str) -> bool,
    ) -> Option<Vec<String>> {
        let deadline = Instant::now() + within;
        loop {
            let got: Vec<String> = self.lines().into_iter().filter(|l| pred(l)).collect();
            if got.len() >= n {
                return Some(got);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGINT, as Ctrl-C: the monitor cleans up (trace off) and exits.
    pub fn interrupt(mut self) -> Result<std::process::ExitStatus> {
        // SAFETY: signalling our own child by its PID.
        unsafe { libc::kill(self.proc.0.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(s) = self.proc.0.try_wait()? {
                return Ok(s);
            }
            if Instant::now() > deadline {
                bail!("netpath monitor ignored SIGINT");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
