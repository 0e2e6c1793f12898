//! A private containerd per lab node and the containers `ctr run --cni` starts in it.
use std::{
    fs::File,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use super::{eth0_address, image::IMAGE, run, BusyboxImage};
use crate::{check::Host, process::Spawned};

/// A private containerd for one node.
pub struct Containerd {
    /// The lab node's index.
    pub node: usize,
    pub node_ns: String,
    pub socket: PathBuf,
    dir: PathBuf,
    /// SIGTERM, SIGKILL after 10 s.
    _daemon: Spawned,
}

impl Containerd {
    pub fn start(dir: &Path, node: usize, node_ns: &str, image: &BusyboxImage) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let socket = dir.join("containerd.sock");
        let config = dir.join("config.toml");
        std::fs::write(
            &config,
            format!(
                r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{sock}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
"#,
                root = dir.join("root").display(),
                state = dir.join("state").display(),
                sock = socket.display(),
                opt = dir.join("opt").display(),
            ),
        )?;
        let log = File::create(dir.join("containerd.log"))?;
        let daemon = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start containerd (Debian package containerd)")?;
        let me = Self {
            node,
            node_ns: node_ns.to_string(),
            socket,
            dir: dir.to_path_buf(),
            _daemon: Spawned::signalled(daemon, libc::SIGTERM, Duration::from_secs(10)),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while me.ctr(&["version"]).is_err() {
            if Instant::now() > deadline {
                bail!(
                    "containerd for {node_ns} not serving after 30 s:\n{}",
                    std::fs::read_to_string(dir.join("containerd.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        me.ctr(&[
            "image",
            "import",
            "--base-name",
            "local/busybox",
            &image.oci.display().to_string(),
        ])?;
        Ok(me)
    }

    /// `ctr -a SOCK args…` (outside the node: for what needs no network).
    pub fn ctr(&self, args: &[&str]) -> Result<String> {
        run(Command::new("ctr").arg("-a").arg(&self.socket).args(args))
    }

    /// A container that runs `cmd` to its end (`ctr run --rm --cni`, attached and
    /// detached through the plugin like any other); returns its output.
    pub fn run_to_end(&self, id: &str, cmd: &[&str]) -> Result<String> {
        run(Command::new("ip")
            .args(["netns", "exec", &self.node_ns, "ctr", "-a"])
            .arg(&self.socket)
            .args(["run", "--rm", "--cni", IMAGE, id])
            .args(cmd))
    }

    /// `ctr run --rm --cni` inside the node's namespace, as a user would run it;
    /// returns once the task runs (its network is set up before it starts).
    pub fn run_container(&self, id: &str, cmd: &[&str]) -> Result<Container> {
        let err_path = self.dir.join(format!("{id}.err"));
        let run = Command::new("ip")
            .args(["netns", "exec", &self.node_ns, "ctr", "-a"])
            .arg(&self.socket)
            .args(["run", "--rm", "--cni", IMAGE, id])
            .args(cmd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&err_path)?)
            .spawn()
            .context("run ctr")?;
        let mut c = Container {
            id: id.to_string(),
            node: self.node,
            pid: 0,
            ip: Ipv4Addr::UNSPECIFIED,
            netns: PathBuf::new(),
            socket: self.socket.clone(),
            run,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let listing = self.ctr(&["task", "ls"])?;
            let running = listing.lines().find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() >= 3 && f[0] == id && f[2] == "RUNNING").then(|| f[1].parse::<u32>().ok())
            });
            if let Some(Some(pid)) = running {
                c.pid = pid;
                break;
            }
            if let Some(status) = c.run.try_wait()? {
                bail!(
                    "ctr run {id} exited with {status}: {}",
                    std::fs::read_to_string(&err_path).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                bail!("container {id} not running after 60 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        c.netns = PathBuf::from(format!("/proc/{}/ns/net", c.pid));
        c.ip = eth0_address(&c.netns).with_context(|| format!("container {id}"))?;
        Ok(c)
    }
}

/// A running container; stopped (task killed, `ctr run --rm` removes it and
/// calls CNI DEL) on [`Container::stop`] or drop.
pub struct Container {
    pub id: String,
    /// The lab node's index.
    pub node: usize,
    pub pid: u32,
    pub ip: Ipv4Addr,
    /// `/proc/PID/ns/net` of its task.
    pub netns: PathBuf,
    socket: PathBuf,
    run: Child,
}

impl Container {
    pub fn host(&self) -> Host<'_> {
        Host {
            name: &self.id,
            netns: &self.netns,
            ip: self.ip,
        }
    }

    /// Kills the task and waits until `ctr run --rm` has removed the container
    /// (and with it, through CNI DEL, its network).
    pub fn stop(&mut self) -> Result<()> {
        if self.run.try_wait()?.is_some() {
            return Ok(());
        }
        let _ = run(Command::new("ctr")
            .arg("-a")
            .arg(&self.socket)
            .args(["task", "kill", "-s", "SIGKILL", &self.id]));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.run.try_wait()? {
                tracing::debug!(id = %self.id, %status, "container removed");
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = self.run.kill();
                let _ = self.run.wait();
                bail!("ctr run {} did not finish within 30 s of the kill", self.id);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::warn!("{e:#}");
        }
    }
}
