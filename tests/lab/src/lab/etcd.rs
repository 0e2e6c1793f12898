//! A private 3-member etcd cluster (Debian etcd-server 3.4) in its own namespace on
//! the lab's underlay, one address per member so one can be cut off alone. Members
//! are stopped by PID on drop; their data lives on tmpfs, their logs in the lab's work dir.
use std::{
    net::Ipv4Addr,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{netns::NetNs, nl::Nl, process::Spawned};

pub const MEMBERS: usize = 3;
const CLIENT_PORT: u16 = 2379;
const PEER_PORT: u16 = 2380;

/// TLS material for the members and their clients (PEM files).
#[derive(Debug, Clone)]
pub struct EtcdTls {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

struct Member {
    name: String,
    ip: Ipv4Addr,
    dir: PathBuf,
    data: PathBuf,
    child: Option<Spawned>,
}

pub struct EtcdCluster {
    pub ns: NetNs,
    members: Vec<Member>,
    token: String,
    tls: Option<EtcdTls>,
}

fn scheme(tls: &Option<EtcdTls>) -> &'static str {
    if tls.is_some() {
        "https"
    } else {
        "http"
    }
}

/// Where the members sit on the underlay.
pub struct EtcdPlace<'a> {
    pub fabric: &'a NetNs,
    /// The fabric bridge of the subnet.
    pub bridge: &'a str,
    pub ips: [Ipv4Addr; MEMBERS],
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
}

impl EtcdCluster {
    /// Starts the members in namespace `name`, one address each on the underlay.
    pub fn start(name: &str, place: EtcdPlace, dir: &Path, tls: Option<EtcdTls>) -> Result<Self> {
        // The data on tmpfs: etcd fsyncs every commit, and on a disk busy with a
        // build a follower's fsync can stall for seconds, delaying its watchers.
        let data_root = data_root(name);
        std::fs::create_dir_all(&data_root)
            .with_context(|| format!("create {}", data_root.display()))?;
        let EtcdPlace {
            fabric,
            bridge,
            ips,
            prefix_len,
            gateway,
        } = place;
        let ns = NetNs::create(name)?;
        let fabric_fd = fabric.file()?;
        let port = "p-etcd";
        ns.run(|| {
            let nl = Nl::new()?;
            nl.add_veth("eth0", port)?;
            nl.move_to_netns(nl.index(port)?, fabric_fd.as_raw_fd())?;
            let eth0 = nl.index("eth0")?;
            for ip in ips {
                nl.add_address(eth0, ip, prefix_len)?;
            }
            nl.set_up(eth0)?;
            nl.set_up_by_name("lo")?;
            nl.replace_route(Ipv4Addr::UNSPECIFIED, 0, eth0, Some(gateway))
        })?;
        fabric.run(|| {
            let nl = Nl::new()?;
            let p = nl.index(port)?;
            nl.set_master(p, nl.index(bridge)?)?;
            nl.set_up(p)
        })?;
        let mut me = Self {
            ns,
            members: (0..MEMBERS)
                .map(|i| Member {
                    name: format!("e{}", i + 1),
                    ip: ips[i],
                    dir: dir.join(format!("e{}", i + 1)),
                    data: data_root.join(format!("e{}", i + 1)),
                    child: None,
                })
                .collect(),
            token: name.to_string(),
            tls,
        };
        for i in 0..MEMBERS {
            me.start_member(i, true)?;
        }
        me.wait_healthy(Duration::from_secs(30))?;
        Ok(me)
    }

    /// Client URLs of all members.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("{}://{}:{CLIENT_PORT}", scheme(&self.tls), m.ip))
            .collect()
    }

    pub fn tls(&self) -> Option<&EtcdTls> {
        self.tls.as_ref()
    }

    fn start_member(&mut self, i: usize, new: bool) -> Result<()> {
        let s = scheme(&self.tls);
        let initial: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}=http://{}:{PEER_PORT}", m.name, m.ip))
            .collect();
        let m = &self.members[i];
        std::fs::create_dir_all(&m.dir)?;
        let client_url = format!("{s}://{}:{CLIENT_PORT}", m.ip);
        let mut cmd = Command::new("etcd");
        cmd.args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&m.data)
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args([
                "--listen-peer-urls",
                &format!("http://{}:{PEER_PORT}", m.ip),
            ])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://{}:{PEER_PORT}", m.ip),
            ])
            .args(["--initial-cluster", &initial.join(",")])
            .args(["--initial-cluster-token", &self.token])
            .args([
                "--initial-cluster-state",
                if new { "new" } else { "existing" },
            ])
            // Room for the lab's history; the tests compact on purpose.
            .args(["--auto-compaction-retention", "0"]);
        if let Some(t) = &self.tls {
            cmd.arg("--cert-file")
                .arg(&t.server_cert)
                .arg("--key-file")
                .arg(&t.server_key)
                .arg("--trusted-ca-file")
                .arg(&t.ca)
                .arg("--client-cert-auth");
        }
        let log = std::fs::File::create(m.dir.join("etcd.log"))?;
        let child = self.ns.run(|| {
            cmd.stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .context("start etcd (Debian package etcd-server)")
        })?;
        self.members[i].child = Some(Spawned::killing(child));
        Ok(())
    }

    /// Stops member `i` (SIGKILL: a crash).
    pub fn kill_member(&mut self, i: usize) {
        self.members[i].child.take();
    }

    /// Starts member `i` again with its data.
    pub fn restart_member(&mut self, i: usize) -> Result<()> {
        self.kill_member(i);
        self.start_member(i, false)
    }

    /// `etcdctl` against every running member, inside the etcd namespace.
    pub fn etcdctl(&self, args: &[&str]) -> Result<String> {
        // A killed member's endpoint would make etcdctl wait out its deadline.
        let endpoints = self
            .members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| format!("{}://{}:{CLIENT_PORT}", scheme(&self.tls), m.ip))
            .collect::<Vec<_>>()
            .join(",");
        let out = self.ns.run(|| {
            let mut cmd = Command::new("etcdctl");
            cmd.env("ETCDCTL_API", "3")
                .arg(format!("--endpoints={endpoints}"))
                .args(args);
            if let Some(t) = &self.tls {
                cmd.arg(format!("--cacert={}", t.ca.display()))
                    .arg(format!("--cert={}", t.client_cert.display()))
                    .arg(format!("--key={}", t.client_key.display()));
            }
            cmd.output()
                .context("run etcdctl (Debian package etcd-client)")
        })?;
        if !out.status.success() {
            bail!(
                "etcdctl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn wait_healthy(&self, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        loop {
            match self.etcdctl(&["endpoint", "health"]) {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    let logs: Vec<String> = self
                        .members
                        .iter()
                        .map(|m| {
                            std::fs::read_to_string(m.dir.join("etcd.log")).unwrap_or_default()
                        })
                        .map(|l| l.lines().rev().take(5).collect::<Vec<_>>().join("\n"))
                        .collect();
                    bail!(
                        "etcd not healthy after {within:?}: {e:#}\n{}",
                        logs.join("\n---\n")
                    );
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill_member(i);
        }
        let _ = std::fs::remove_dir_all(data_root(&self.token));
    }
}

/// Where the members of cluster `name` keep their data: tmpfs.
pub fn data_root(name: &str) -> PathBuf {
    Path::new(DATA_TMPFS).join(format!("netpath-{name}"))
}

const DATA_TMPFS: &str = "/dev/shm";

/// A CA, a server certificate for `ips` and a client certificate, made with the
/// openssl CLI into `dir`.
pub fn make_tls(dir: &Path, ips: &[Ipv4Addr]) -> Result<EtcdTls> {
    std::fs::create_dir_all(dir)?;
    let run = |args: &[&str]| -> Result<()> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .context("run openssl")?;
        if !out.status.success() {
            bail!("openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=netpath-lab-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ])?;
    let san: Vec<String> = ips.iter().map(|ip| format!("IP:{ip}")).collect();
    std::fs::write(
        dir.join("server.ext"),
        format!(
            "subjectAltName={}\nextendedKeyUsage=serverAuth,clientAuth\n",
            san.join(",")
        ),
    )?;
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n")?;
    for (who, cn) in [("server", "etcd"), ("client", "netpath-agent")] {
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &format!("/CN={cn}"),
            "-keyout",
            &format!("{who}.key"),
            "-out",
            &format!("{who}.csr"),
        ])?;
        run(&[
            "x509",
            "-req",
            "-in",
            &format!("{who}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &format!("{who}.ext"),
            "-out",
            &format!("{who}.pem"),
        ])?;
    }
    Ok(EtcdTls {
        ca: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
    })
}
