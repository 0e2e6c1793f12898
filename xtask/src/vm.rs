//! Older kernels in throw-away VMs: fetch a Debian kernel package through a separate
//! apt source list (never the machine's own), build a small busybox initramfs, boot
//! it under qemu with the host's root shared read-only over 9p, chroot into it and
//! run a command there as root. The command's exit code comes back over the serial
//! console.
use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};

use crate::toolchain;

/// Debian packages the VM runner needs on the host.
pub const PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "busybox-static",
    "kmod",
    "xz-utils",
    "zstd",
];

/// Modules loaded in the guest before anything runs (when the kernel has them as
/// modules; built-ins are skipped): the 9p root share, then what the datapath and the
/// tests use.
const MODULES: &[&str] = &[
    "crc32c_generic",
    "virtio_pci",
    "9pnet_virtio",
    "9p",
    "veth",
    "vxlan",
    "sch_ingress",
    "cls_bpf",
    "act_bpf",
    "bridge",
    "dummy",
    "ipip",
    "tun",
    "wireguard",
    "nf_tables",
    "overlay",
];

const EXIT_MARKER: &str = "NETPATH-VM-EXIT=";

/// A supported guest kernel: the Debian suite that ships it and its package name.
struct KernelSource {
    suite: &'static str,
    package_re: &'static str,
}

fn source(version: &str) -> Result<KernelSource> {
    match version {
        "5.10" => Ok(KernelSource {
            suite: "bullseye",
            package_re: r"^linux-image-5\.10\.0-[0-9]+-amd64-unsigned$",
        }),
        "6.1" => Ok(KernelSource {
            suite: "bookworm",
            package_re: r"^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$",
        }),
        // Trixie names its kernels by upstream version (6.12.57+deb13), not ABI number.
        "6.12" => Ok(KernelSource {
            suite: "trixie",
            package_re: r"^linux-image-6\.12\.[0-9]+(\+deb13|-[0-9]+)-amd64-unsigned$",
        }),
        other => bail!("unsupported kernel {other:?}: use 5.10, 6.1 or 6.12"),
    }
}

/// An unpacked guest kernel.
pub struct Kernel {
    pub version: String,
    pub release: String,
    pub image: PathBuf,
    pub modules: PathBuf,
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// apt with its own source list, lists and cache under `dir`.
fn apt(dir: &Path, tool: &str) -> Command {
    let mut c = Command::new(tool);
    c.arg("-o")
        .arg(format!(
            "Dir::Etc::SourceList={}",
            dir.join("sources.list").display()
        ))
        .arg("-o")
        .arg(format!(
            "Dir::Etc::SourceParts={}",
            dir.join("parts").display()
        ))
        .arg("-o")
        .arg(format!("Dir::State::Lists={}", dir.join("lists").display()))
        .arg("-o")
        .arg(format!("Dir::Cache={}", dir.join("cache").display()))
        .args(["-o", "APT::Sandbox::User=root", "-o", "Debug::NoLocking=1"]);
    c
}

/// Fetches and unpacks the kernel once; later runs reuse `target/vm/<version>`.
pub fn kernel(root: &Path, version: &str) -> Result<Kernel> {
    let src = source(version)?;
    let dir = root.join("target/vm").join(version);
    let unpacked = dir.join("root");
    let ready = dir.join("READY");
    if !ready.exists() {
        let aptdir = root.join("target/vm").join(format!("apt-{}", src.suite));
        for d in ["lists/partial", "cache/archives/partial", "parts"] {
            std::fs::create_dir_all(aptdir.join(d))?;
        }
        std::fs::write(
            aptdir.join("sources.list"),
            format!(
                "deb http://deb.debian.org/debian {s} main\ndeb http://deb.debian.org/debian-security {s}-security main\n",
                s = src.suite
            ),
        )?;
        eprintln!(
            "vm: fetching the {version} kernel from Debian {}",
            src.suite
        );
        run(apt(&aptdir, "apt-get").arg("update"))?;
        let found =
            run(apt(&aptdir, "apt-cache").args(["search", "--names-only", src.package_re]))?;
        let mut names: Vec<&str> = found
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        // Newest last, by the numbers in the name: linux-image-5.10.0-32-… after -9-…,
        // 6.12.57+deb13 after 6.12.41+deb13.
        names.sort_by_key(|n| {
            n.split(|c: char| !c.is_ascii_digit())
                .filter_map(|d| d.parse::<u32>().ok())
                .collect::<Vec<u32>>()
        });
        let package = names
            .last()
            .ok_or_else(|| anyhow!("no package matching {} in {}", src.package_re, src.suite))?
            .to_string();
        std::fs::create_dir_all(&dir)?;
        run(apt(&aptdir, "apt-get")
            .current_dir(&dir)
            .args(["download", &package]))?;
        let deb = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|e| e == "deb"))
            .ok_or_else(|| anyhow!("apt-get download left no .deb in {}", dir.display()))?;
        let _ = std::fs::remove_dir_all(&unpacked);
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
        std::fs::remove_file(&deb)?;
        std::fs::write(&ready, &package)?;
    }
    // Trixie's packages are merged-/usr: their modules are under usr/lib.
    if !unpacked.join("lib").exists() && unpacked.join("usr/lib/modules").exists() {
        std::os::unix::fs::symlink("usr/lib", unpacked.join("lib"))?;
    }
    let modules_root = unpacked.join("lib/modules");
    let release = std::fs::read_dir(&modules_root)
        .with_context(|| format!("read {}", modules_root.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .ok_or_else(|| anyhow!("no modules in {}", modules_root.display()))?;
    let modules = modules_root.join(&release);
    if !modules.join("modules.dep").exists() {
        run(Command::new("depmod")
            .arg("-b")
            .arg(&unpacked)
            .arg(&release))?;
    }
    Ok(Kernel {
        version: version.to_string(),
        image: unpacked.join(format!("boot/vmlinuz-{release}")),
        release,
        modules,
    })
}

/// Module files to load, dependencies first, from modules.dep.
fn module_files(k: &Kernel) -> Result<Vec<PathBuf>> {
    let dep = std::fs::read_to_string(k.modules.join("modules.dep"))?;
    let deps: Vec<(String, Vec<String>)> = dep
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(m, d)| {
            (
                m.to_string(),
                d.split_whitespace().map(str::to_string).collect(),
            )
        })
        .collect();
    let find = |name: &str| {
        deps.iter().find(|(m, _)| {
            let base = Path::new(m)
                .file_name()
                .and_then(|f| f.to_str())
                .unwrap_or("");
            let stem = base.split(".ko").next().unwrap_or("");
            stem.replace('-', "_") == name.replace('-', "_")
        })
    };
    let mut order: Vec<String> = Vec::new();
    fn visit(m: &str, deps: &[(String, Vec<String>)], order: &mut Vec<String>) {
        if order.iter().any(|o| o == m) {
            return;
        }
        if let Some((_, ds)) = deps.iter().find(|(x, _)| x == m) {
            // modules.dep lists the deepest dependency last.
            for d in ds.iter().rev() {
                visit(d, deps, order);
            }
        }
        order.push(m.to_string());
    }
    for name in MODULES {
        if let Some((m, _)) = find(name) {
            visit(m, &deps, &mut order);
        }
    }
    Ok(order.into_iter().map(|m| k.modules.join(m)).collect())
}

/// A newc cpio archive, written by hand: only files, directories and symlinks.
struct Cpio(Vec<u8>, u32);

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.1 += 1;
        let hdr = format!(
            "070701{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}",
            self.1,
            mode,
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            0,
            0,
            name.len() + 1,
            0
        );
        self.0.extend_from_slice(hdr.as_bytes());
        self.0.extend_from_slice(name.as_bytes());
        self.0.push(0);
        self.pad();
        self.0.extend_from_slice(data);
        self.pad();
    }
    fn pad(&mut self) {
        while !self.0.len().is_multiple_of(4) {
            self.0.push(0);
        }
    }
    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, &[]);
    }
    fn file(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.entry(name, 0o100000 | mode, data);
    }
    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        while !self.0.len().is_multiple_of(512) {
            self.0.push(0);
        }
        self.0
    }
}

fn read_module(path: &Path) -> Result<Vec<u8>> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        Some("xz")
    } else if name.ends_with(".zst") {
        Some("zstd")
    } else {
        None
    };
    match tool {
        None => std::fs::read(path).with_context(|| format!("read {}", path.display())),
        Some(t) => {
            let out = Command::new(t).arg("-dc").arg(path).output()?;
            if !out.status.success() {
                bail!("{t} -dc {} failed", path.display());
            }
            Ok(out.stdout)
        }
    }
}

/// The initramfs: busybox, the modules, and an init that mounts the host's root,
/// chroots into it and runs `script`.
fn initramfs(k: &Kernel, root: &Path, script: &str) -> Result<Vec<u8>> {
    let mut c = Cpio(Vec::new(), 0);
    for d in ["bin", "dev", "proc", "sys", "mnt", "mnt/root", "modules"] {
        c.dir(d);
    }
    let busybox =
        std::fs::read("/bin/busybox").context("read /bin/busybox (package busybox-static)")?;
    c.file("bin/busybox", 0o755, &busybox);
    let mut loads = String::new();
    for (i, m) in module_files(k)?.iter().enumerate() {
        let name = format!("modules/{i:02}.ko");
        c.file(&name, 0o644, &read_module(m)?);
        loads += &format!(
            "/bin/busybox insmod /{name} 2>/dev/null || echo 'vm: insmod {}' failed\n",
            m.display()
        );
    }
    let work = root.display();
    let init = format!(
        r#"#!/bin/busybox sh
B=/bin/busybox
$B mount -t proc proc /proc
$B mount -t sysfs sysfs /sys
$B mount -t devtmpfs devtmpfs /dev
{loads}
# cache=loose: both shares are read-only and nothing on the host changes them during a
# run, so the guest may keep pages and attributes; without it every exec re-reads its
# binary and libraries over 9p (measured under TCG: `ip -V` 286 ms -> 99 ms, etcd
# --version 1.8 s -> 0.4 s), and the suite ran long enough to meet its deadline.
$B mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,ro,cache=loose hostroot /mnt/root || {{ echo "vm: cannot mount the host root"; echo {EXIT_MARKER}125; $B poweroff -f; }}
R=/mnt/root
$B mount -t proc proc $R/proc
$B mount -t sysfs sysfs $R/sys
$B mount -t devtmpfs devtmpfs $R/dev
$B mount -t tmpfs tmpfs $R/tmp
$B mount -t tmpfs tmpfs $R/run
$B mount -t bpf bpf $R/sys/fs/bpf
$B mount -t cgroup2 cgroup2 $R/sys/fs/cgroup 2>/dev/null
# Writable where the container runtimes and CNI insist on host paths (the root is
# the host's, read-only): /opt/cni/bin, /etc/cni/net.d, libcni's cache, shm locks,
# podman's caches and temporary files.
$B mkdir -p $R/dev/shm
for d in $R/dev/shm $R/opt $R/etc/cni $R/var/lib $R/var/cache $R/var/tmp; do $B mount -t tmpfs tmpfs $d; done
# The workspace again on its own, in case a tmpfs above hid it (a clone under /tmp).
$B mkdir -p $R{work} 2>/dev/null
$B mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,ro,cache=loose work $R{work} || {{ echo "vm: cannot mount the workspace"; echo {EXIT_MARKER}125; $B poweroff -f; }}
$B ip link set lo up 2>/dev/null
$B chroot $R /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root /bin/sh -c '{script}'
echo {EXIT_MARKER}$?
$B poweroff -f
"#
    );
    c.file("init", 0o755, init.as_bytes());
    Ok(c.finish())
}

/// Boots `k` and runs `script` (a shell command line) as root in the host's root;
/// streams the console to `out` line by line and returns the script's exit code.
pub fn boot(
    root: &Path,
    k: &Kernel,
    script: &str,
    timeout: Duration,
    mut out: impl FnMut(&str),
) -> Result<i32> {
    if script.contains('\'') {
        bail!("the VM command must not contain single quotes");
    }
    let initrd = root
        .join("target/vm")
        .join(&k.version)
        .join("initramfs.cpio");
    std::fs::write(&initrd, initramfs(k, root, script)?)?;
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg,thread=multi",
            "-cpu",
            "max",
            "-m",
            "2048",
            "-smp",
            "2",
        ])
        .arg("-kernel")
        .arg(&k.image)
        .arg("-initrd")
        .arg(&initrd)
        // Warnings reach the console: a soft lockup prints its stack trace there.
        .args(["-append", "console=ttyS0 panic=-1 quiet loglevel=5"])
        .args([
            "-display",
            "none",
            "-serial",
            "stdio",
            "-monitor",
            "none",
            "-no-reboot",
            "-nodefaults",
        ])
        .args([
            "-virtfs",
            "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
        ])
        .arg("-virtfs")
        .arg(format!(
            "local,path={},mount_tag=work,security_model=none,readonly=on,multidevs=remap",
            root.display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("start qemu-system-x86_64")?;
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + timeout;
    let mut code = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the VM did not finish within {timeout:?}");
        }
        match rx.recv_timeout(left.min(Duration::from_secs(1))) {
            Ok(line) => {
                let line = line.trim_end_matches('\r');
                if let Some(c) = line.strip_prefix(EXIT_MARKER) {
                    code = c.trim().parse().ok();
                } else {
                    out(line);
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if let Some(status) = child.try_wait()? {
                    // Drain what is left, then decide.
                    while let Ok(line) = rx.try_recv() {
                        if let Some(c) = line.trim().strip_prefix(EXIT_MARKER) {
                            code = c.trim().parse().ok();
                        } else {
                            out(&line);
                        }
                    }
                    return code.ok_or_else(|| {
                        anyhow!("the VM stopped ({status}) without reporting an exit code")
                    });
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait()?;
                return code.ok_or_else(|| {
                    anyhow!("the VM stopped ({status}) without reporting an exit code")
                });
            }
        }
    }
}

/// `cargo xtask vm`: boot the kernel and run a command (default: the datapath suite).
pub fn run_command(root: &Path, version: &str, cmd: &str) -> Result<i32> {
    toolchain::ensure_packages(PACKAGES)?;
    let k = kernel(root, version)?;
    eprintln!("vm: booting {} ({})", k.version, k.release);
    let started = Instant::now();
    let code = boot(root, &k, cmd, Duration::from_secs(45 * 60), |l| {
        let mut o = std::io::stdout();
        let _ = writeln!(o, "{l}");
    })?;
    eprintln!(
        "vm: {} exited {code} after {:.0} s",
        k.version,
        started.elapsed().as_secs_f64()
    );
    Ok(code)
}
