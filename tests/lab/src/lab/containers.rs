//! Real containers on lab nodes: one private containerd per node (own root, state,
//! socket under the lab's work dir), a busybox image built here from Debian's
//! busybox-static (no registry is reachable), and `ip netns exec NODE ctr run --cni`
//! — ctr runs the CNI plugins itself, from the fixed host paths /opt/cni/bin and
//! /etc/cni/net.d, where [`HostCniInstall`] puts netpath under a lock and from
//! where it removes exactly what it put.
use std::{
    fs::File,
    net::Ipv4Addr,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};
use netpath::cni::install::{self, InstallOptions, CONFLIST};

use crate::{check::Host, process::Spawned};

pub const IMAGE: &str = "local/busybox:latest";
const HOST_LOCK: &str = "/run/lock/netpath-lab-cni.lock";
const LOCK_WAIT: Duration = Duration::from_secs(300);
/// Applets the image links to busybox.
const APPLETS: &[&str] = &["sh", "sleep", "ip", "ping", "nc", "cat", "echo", "wget"];

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("run {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{:?} {:?}: {}",
            cmd.get_program(),
            cmd.get_args().collect::<Vec<_>>(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn sha256(path: &Path) -> Result<String> {
    let out = run(Command::new("sha256sum").arg(path))?;
    out.split_whitespace()
        .next()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("sha256sum printed nothing"))
}

/// Writes `bytes` as a blob of the OCI layout at `oci`; returns (digest, size).
fn blob(oci: &Path, file: &Path) -> Result<(String, u64)> {
    let hex = sha256(file)?;
    let size = std::fs::metadata(file)?.len();
    std::fs::copy(file, oci.join("blobs/sha256").join(&hex))?;
    Ok((format!("sha256:{hex}"), size))
}

/// A busybox-static image, built locally.
#[derive(Debug, Clone)]
pub struct BusyboxImage {
    /// OCI layout tarball, for `ctr image import`.
    pub oci: PathBuf,
    /// The plain rootfs tarball, for `podman import`.
    pub rootfs: PathBuf,
}

/// Builds the image under `dir`.
pub fn busybox_image(dir: &Path) -> Result<BusyboxImage> {
    let busybox = Path::new("/bin/busybox");
    if !busybox.exists() {
        bail!("/bin/busybox missing: `cargo xtask` installs busybox-static");
    }
    let root = dir.join("rootfs");
    let oci = dir.join("oci");
    std::fs::create_dir_all(root.join("bin"))?;
    std::fs::create_dir_all(oci.join("blobs/sha256"))?;
    std::fs::copy(busybox, root.join("bin/busybox"))?;
    for a in APPLETS {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(a))?;
    }
    let layer = dir.join("layer.tar");
    run(Command::new("tar")
        .args(["--owner=0", "--group=0", "--numeric-owner", "-C"])
        .arg(&root)
        .arg("-cf")
        .arg(&layer)
        .arg("."))?;
    let (layer_digest, layer_size) = blob(&oci, &layer)?;
    let config = dir.join("config.json");
    std::fs::write(
        &config,
        serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": { "Cmd": ["/bin/sh"] },
            "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
        })
        .to_string(),
    )?;
    let (config_digest, config_size) = blob(&oci, &config)?;
    let manifest = dir.join("manifest.json");
    std::fs::write(
        &manifest,
        serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": { "mediaType": "application/vnd.oci.image.config.v1+json",
                        "digest": config_digest, "size": config_size },
            "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar",
                         "digest": layer_digest, "size": layer_size }],
        })
        .to_string(),
    )?;
    let (manifest_digest, manifest_size) = blob(&oci, &manifest)?;
    std::fs::write(
        oci.join("index.json"),
        serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{ "mediaType": "application/vnd.oci.image.manifest.v1+json",
                            "digest": manifest_digest, "size": manifest_size,
                            "annotations": { "org.opencontainers.image.ref.name": "latest" } }],
        })
        .to_string(),
    )?;
    std::fs::write(oci.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let tarball = dir.join("busybox-oci.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&oci)
        .arg("-cf")
        .arg(&tarball)
        .arg("."))?;
    Ok(BusyboxImage {
        oci: tarball,
        rootfs: layer,
    })
}

/// The IPv4 address a runtime's CNI call gave `eth0` inside a container's namespace.
fn eth0_address(netns: &Path) -> Result<Ipv4Addr> {
    let addr = crate::run_in_ns(netns, &["ip", "-4", "-o", "addr", "show", "dev", "eth0"])?;
    addr.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next()?.parse().ok())
        .ok_or_else(|| anyhow!("no IPv4 address on eth0: {addr}"))
}

/// netpath installed in the host's CNI paths for as long as this lives, under an
/// exclusive lock (one lab with containers at a time); what was there before is put
/// back, what did not exist is removed.
pub struct HostCniInstall {
    _lock: File,
    created: Vec<PathBuf>,
    replaced: Vec<(PathBuf, Option<Vec<u8>>)>,
}

impl HostCniInstall {
    pub fn new(netpath_bin: &Path) -> Result<Self> {
        let lock = lock_host_paths()?;
        let mut me = Self {
            _lock: lock,
            created: Vec::new(),
            replaced: Vec::new(),
        };
        let opts = InstallOptions {
            bin_dir: install::DEFAULT_BIN_DIR.into(),
            conf_dir: install::DEFAULT_CONF_DIR.into(),
            network: "netpath-lab".into(),
            node: None,
            state_root: None,
        };
        for d in ["/opt/cni", "/opt/cni/bin", "/etc/cni", "/etc/cni/net.d"] {
            if !Path::new(d).exists() {
                std::fs::create_dir(d).with_context(|| format!("create {d}"))?;
                me.created.push(d.into());
            }
        }
        for f in [opts.bin_dir.join("netpath"), opts.conf_dir.join(CONFLIST)] {
            let before = std::fs::read(&f).ok();
            me.replaced.push((f, before));
        }
        install::install(netpath_bin, &opts)?;
        // ctr takes the first configuration by name: it must be ours.
        let mut confs: Vec<String> = std::fs::read_dir(&opts.conf_dir)?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| {
                [".conf", ".conflist", ".json"]
                    .iter()
                    .any(|s| n.ends_with(s))
            })
            .collect();
        confs.sort();
        if confs.first().map(String::as_str) != Some(CONFLIST) {
            bail!(
                "{} holds {:?}, which sorts before {CONFLIST}: ctr would use it instead",
                opts.conf_dir.display(),
                confs.first()
            );
        }
        Ok(me)
    }
}

fn lock_host_paths() -> Result<File> {
    std::fs::create_dir_all("/run/lock")?;
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(HOST_LOCK)
        .with_context(|| format!("open {HOST_LOCK}"))?;
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        // SAFETY: flock on an fd we own; released when it closes.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(f);
        }
        if Instant::now() > deadline {
            bail!(
                "another lab with containers holds {HOST_LOCK} (the host's CNI paths) for over {} s",
                LOCK_WAIT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Drop for HostCniInstall {
    fn drop(&mut self) {
        for (f, before) in self.replaced.drain(..) {
            let _ = match before {
                Some(bytes) => std::fs::write(&f, bytes),
                None => std::fs::remove_file(&f),
            };
        }
        for d in self.created.drain(..).rev() {
            let _ = std::fs::remove_dir(&d);
        }
    }
}

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

/// podman 4.3 with its CNI backend, private storage and configuration, running
/// containers in one lab node (`nsenter --net`: podman needs the host's /sys for
/// cgroups, which `ip netns exec` would hide). The plugin and conflist go into the
/// private directory through the product's installer: podman takes plugin and
/// config directories as options.
pub struct Podman {
    dir: PathBuf,
    node_ns: PathBuf,
    names: Vec<String>,
}

pub const PODMAN_NETWORK: &str = "netpath-lab";

impl Podman {
    pub fn new(
        dir: &Path,
        netpath_bin: &Path,
        node_ns: &Path,
        image: &BusyboxImage,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir.join("tmp"))?;
        install::install(
            netpath_bin,
            &InstallOptions {
                bin_dir: dir.join("bin"),
                conf_dir: dir.join("net.d"),
                network: PODMAN_NETWORK.into(),
                node: None,
                state_root: None,
            },
        )?;
        std::fs::write(
            dir.join("containers.conf"),
            format!(
                r#"[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{d}/events.log"
runtime = "runc"
tmp_dir = "{d}/tmp"
[network]
network_backend = "cni"
cni_plugin_dirs = ["{d}/bin"]
network_config_dir = "{d}/net.d"
"#,
                d = dir.display()
            ),
        )?;
        let me = Self {
            dir: dir.to_path_buf(),
            node_ns: node_ns.to_path_buf(),
            names: Vec::new(),
        };
        me.podman(&[
            "import",
            &image.rootfs.display().to_string(),
            "local/busybox",
        ])?;
        Ok(me)
    }

    pub fn podman(&self, args: &[&str]) -> Result<String> {
        run(Command::new("nsenter")
            .arg(format!("--net={}", self.node_ns.display()))
            .arg("podman")
            .arg("--root")
            .arg(self.dir.join("root"))
            .arg("--runroot")
            .arg(self.dir.join("runroot"))
            .args(["--storage-driver", "vfs", "--network-backend", "cni"])
            .arg("--cni-config-dir")
            .arg(self.dir.join("net.d"))
            .args(args)
            .env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            // containers/storage stages imports under $TMPDIR (default /var/tmp).
            .env("TMPDIR", self.dir.join("tmp")))
    }

    /// Starts a detached container on the netpath network; returns its task's
    /// PID and its address.
    pub fn run(&mut self, name: &str) -> Result<(u32, Ipv4Addr)> {
        self.names.push(name.to_string());
        self.podman(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            PODMAN_NETWORK,
            // Fully qualified: no short-name resolution (and its cache file).
            "localhost/local/busybox:latest",
            "sleep",
            "1000000",
        ])?;
        let pid: u32 = self
            .podman(&["inspect", "-f", "{{.State.Pid}}", name])?
            .trim()
            .parse()
            .context("podman inspect: PID")?;
        let netns = PathBuf::from(format!("/proc/{pid}/ns/net"));
        let ip = eth0_address(&netns).with_context(|| format!("podman container {name}"))?;
        Ok((pid, ip))
    }

    /// `podman rm -f`: stops the container; podman calls CNI DEL.
    pub fn remove(&mut self, name: &str) -> Result<()> {
        self.podman(&["rm", "-f", "-t", "0", name])?;
        self.names.retain(|n| n != name);
        Ok(())
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        for n in std::mem::take(&mut self.names) {
            if let Err(e) = self.podman(&["rm", "-f", "-t", "0", &n]) {
                tracing::warn!("podman rm {n}: {e:#}");
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
