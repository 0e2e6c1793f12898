//! The fabric router as a BGP speaker, like a top-of-rack: FRR (another
//! implementation than the nodes' BIRD, so interoperability is tested, not assumed),
//! `bgpd` peering eBGP with every node it serves and `zebra` beside it installing
//! what it learns into the fabric's kernel, so it forwards pod traffic as plain IP.
use std::{
    fmt::Write,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use netpath::net::Ipv4Net;

use crate::netns;

const FRR: &str = "/usr/lib/frr";
/// The fabric's AS: not the nodes' (eBGP, as to a top-of-rack).
pub const ROUTER_ASN: u32 = 65000;

/// How the router's FRR is configured beyond the sessions themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FrrTuning {
    /// Tuned for quick tests: `frr defaults datacenter` and, towards the nodes,
    /// `timers 3 9` and `advertisement-interval 0`.
    #[default]
    Fast,
    /// As a user runs FRR 8 out of the package: its own defaults (coalesce-time
    /// 1 s, keepalive 60 / hold 180 offered), plus the one line without which it
    /// exchanges no routes with eBGP peers at all: `no bgp ebgp-requires-policy`.
    Defaults,
}

impl FrrTuning {
    /// The configuration lines this tuning adds: before `router bgp`, and to the
    /// nodes' peer group.
    fn lines(self) -> (&'static str, &'static [&'static str]) {
        match self {
            Self::Fast => (
                "frr defaults datacenter\n",
                &["timers 3 9", "advertisement-interval 0"],
            ),
            Self::Defaults => ("", &[]),
        }
    }
}

/// FRR's two daemons in the fabric namespace; stopped (by PID) when dropped.
pub struct FrrRouter {
    dir: PathBuf,
    pids: Vec<u32>,
    vty: PathBuf,
}

impl FrrRouter {
    /// Starts zebra, then bgpd accepting eBGP sessions from AS `asn` on the subnets
    /// it serves (dynamic neighbours, as a top-of-rack: a node that joins later just
    /// connects).
    pub fn start(
        fabric: &Path,
        workdir: &Path,
        router_id: Ipv4Addr,
        asn: u32,
        subnets: &[Ipv4Net],
        tuning: FrrTuning,
    ) -> Result<Self> {
        if !Path::new(FRR).join("bgpd").exists() {
            bail!("the BGP router needs FRR (Debian package frr): {FRR}/bgpd not found");
        }
        let dir = workdir.join("frr");
        std::fs::create_dir_all(&dir)?;
        let (defaults, peer_lines) = tuning.lines();
        let mut conf = format!(
            "{defaults}hostname fabric\nrouter bgp {ROUTER_ASN}\n bgp router-id {router_id}\n \
             no bgp ebgp-requires-policy\n"
        );
        let _ = write!(
            conf,
            " bgp listen limit 1000\n neighbor nodes peer-group\n neighbor nodes remote-as {asn}\n"
        );
        for line in peer_lines {
            let _ = writeln!(conf, " neighbor nodes {line}");
        }
        for net in subnets {
            let _ = writeln!(conf, " bgp listen range {} peer-group nodes", net.subnet());
        }
        std::fs::write(dir.join("bgpd.conf"), conf)?;
        std::fs::write(dir.join("zebra.conf"), "hostname fabric\n")?;
        // FRR drops to user frr, which must own its files and its vty socket dir.
        let chown = Command::new("chown")
            .args(["-R", "frr:frr"])
            .arg(&dir)
            .status()
            .context("chown the FRR dir")?;
        if !chown.success() {
            bail!("chown -R frr:frr {}: {chown}", dir.display());
        }
        let mut router = Self {
            vty: dir.clone(),
            pids: Vec::new(),
            dir,
        };
        let zsock = router.dir.join("zserv.api");
        for daemon in ["zebra", "bgpd"] {
            let pid_file = router.dir.join(format!("{daemon}.pid"));
            let mut cmd = Command::new(Path::new(FRR).join(daemon));
            cmd.arg("-d")
                .arg("-f")
                .arg(router.dir.join(format!("{daemon}.conf")))
                .arg("-i")
                .arg(&pid_file)
                .arg("-z")
                .arg(&zsock)
                .arg("--vty_socket")
                .arg(&router.vty);
            let status = netns::run_in(fabric, move || Ok(cmd.status()?))
                .with_context(|| format!("start FRR's {daemon}"))?;
            if !status.success() {
                bail!("FRR's {daemon} did not start: {status}");
            }
            router.pids.push(wait_pid_file(&pid_file)?);
        }
        Ok(router)
    }

    /// `vtysh -c COMMAND` against this router.
    pub fn vtysh(&self, command: &str) -> Result<String> {
        let out = Command::new("vtysh")
            .arg("--vty_socket")
            .arg(&self.vty)
            .args(["-c", command])
            .output()
            .context("run vtysh")?;
        if !out.status.success() {
            bail!(
                "vtysh -c {command:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl FrrRouter {
    /// Applies configuration lines in `configure terminal`, as an operator would.
    pub fn vtysh_config(&self, lines: &[&str]) -> Result<()> {
        let mut cmd = Command::new("vtysh");
        cmd.arg("--vty_socket")
            .arg(&self.vty)
            .args(["-c", "configure terminal"]);
        for l in lines {
            cmd.args(["-c", l]);
        }
        let out = cmd.output().context("run vtysh")?;
        let said = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || said.contains("% ") {
            bail!(
                "vtysh {lines:?}: {said} {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}

fn wait_pid_file(path: &Path) -> Result<u32> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(pid) = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return Ok(pid);
        }
        if Instant::now() > deadline {
            bail!("no pid file {} within 5 s", path.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops an FRR daemon this lab started, if `pid` still is one.
fn stop_frr(pid: u32) {
    let is_frr =
        std::fs::read_to_string(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.starts_with(FRR));
    if !is_frr {
        return;
    }
    // SAFETY: a PID this lab family started, checked to still be FRR's.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(3);
    while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The FRR daemons of a lab whose process died, found by their pid files.
pub(super) fn stop_left_behind(workdir: &Path) {
    for daemon in ["bgpd", "zebra"] {
        let pid = std::fs::read_to_string(workdir.join("frr").join(format!("{daemon}.pid")));
        if let Some(pid) = pid.ok().and_then(|p| p.trim().parse().ok()) {
            stop_frr(pid);
        }
    }
}

impl Drop for FrrRouter {
    fn drop(&mut self) {
        // bgpd first (it tells its peers), then zebra.
        for pid in self.pids.iter().rev() {
            stop_frr(*pid);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
