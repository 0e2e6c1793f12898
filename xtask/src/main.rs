//! Project tasks: `cargo xtask build | run | test`. Plain Rust, no hidden shell scripts.
mod suite;
mod toolchain;
mod vm;

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "netpath project tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install missing toolchain parts, build the eBPF object and the userspace.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Build, then bring up the lab cluster on the embedded default and check it.
    Run {
        #[arg(long)]
        release: bool,
        /// Arguments for `netpath-lab run` (e.g. `-- --once`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Build (release), then measure netpath against the classic paths into target/bench.
    Bench {
        /// A short run: about 10 minutes of measuring (on a fresh clone the release
        /// builds come first: 908 s in all on 2026-12-07).
        #[arg(long)]
        quick: bool,
        /// Arguments for `netpath-lab bench` (e.g. `-- --paths vxlan-routed,kernel-vxlan-routed`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Build, then run unit and integration tests (integration tests need root).
    Test {
        /// Also run the integration suite on these kernels in VMs, e.g. `5.10,6.12`
        /// (6.12 runs only the tests of kernel features the others lack: see suite.rs).
        #[arg(long, value_delimiter = ',')]
        kernels: Vec<String>,
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Boot a Debian kernel (5.10, 6.1 or 6.12) in qemu and run a command inside as root,
    /// with the host's tools and the build output visible (default: the datapath suite).
    Vm {
        #[arg(long)]
        kernel: String,
        #[arg(last = true)]
        cmd: Vec<String>,
    },
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<ExitCode> {
    let cli = Cli::parse();
    let root = workspace_root();
    match cli.cmd {
        Cmd::Build { release } => {
            build_all(&root, release)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Run { release, args } => {
            ensure_runtime_packages()?;
            let bin = build_all(&root, release)?;
            require_root("the lab creates network namespaces")?;
            let mut cmd = Command::new(lab_binary(&bin));
            cmd.arg("run").args(&args).env("NETPATH_BIN", &bin);
            Ok(exit_code(run_forwarding_signals(cmd)?))
        }
        Cmd::Bench { quick, args } => {
            // The bench brings up the lab's BGP router (FRR), etcd and BIRD like a test.
            ensure_runtime_packages()?;
            toolchain::ensure_packages(BENCH_PACKAGES)?;
            let bin = build_all(&root, true)?;
            require_root("the bench creates network namespaces and loads eBPF")?;
            let mut cmd = Command::new(lab_binary(&bin));
            // The monitor's cost is measured against the programs without it; only
            // runs that measure it pay for the second build.
            let focused = args.iter().any(|a| {
                [
                    "--paths",
                    "--cni",
                    "--etcd",
                    "--bgp",
                    "--services",
                    "--policy",
                    "--encryption",
                    "--cold-start",
                    "--memory",
                    "--gossip",
                ]
                .contains(&a.as_str())
            });
            if !focused || args.iter().any(|a| a == "--monitor") {
                cmd.env("NETPATH_BASELINE_BIN", build_baseline(&root)?);
            }
            cmd.current_dir(&root)
                .arg("bench")
                .arg("--out")
                .arg(root.join("target/bench"))
                .env("NETPATH_BIN", &bin);
            if quick {
                cmd.arg("--quick");
            }
            cmd.args(&args);
            Ok(exit_code(run_forwarding_signals(cmd)?))
        }
        Cmd::Test { kernels, args } => {
            ensure_runtime_packages()?;
            let bin = build_all(&root, false)?;
            require_root("integration tests create network namespaces and load eBPF")?;
            let mut cmd = Command::new(cargo());
            cmd.current_dir(&root)
                // Every test binary runs: one failure does not hide the others'.
                .args(["test", "--workspace", "--no-fail-fast"])
                .args(&args)
                .env("NETPATH_BIN", &bin);
            suite::leave_out_what_the_host_kernel_lacks(&mut cmd, &args, &kernels);
            if kernels.is_empty() {
                let status = cmd.status().context("run cargo test")?;
                return Ok(exit_code(status));
            }
            // With a kernel matrix the host's results become the table's first column.
            let (ok, host) = suite::run_streaming(&mut cmd, "")?;
            if !ok {
                return Ok(ExitCode::FAILURE);
            }
            suite::on_kernels(&root, &bin, &kernels, host)
        }
        Cmd::Vm { kernel, cmd } => {
            require_root("the VM runs the datapath as root")?;
            let bin = build_all(&root, false)?;
            let script = if cmd.is_empty() {
                let bins = suite::test_binaries(&root)?;
                suite::script(&root, &bin, &bins.iter().collect::<Vec<_>>())
            } else {
                cmd.join(" ")
            };
            let code = vm::run_command(&root, &kernel, &script)?;
            Ok(ExitCode::from(code.clamp(0, 255) as u8))
        }
    }
}

/// Debian packages the lab and the tests call: bpftool to read pinned maps, nft to
/// prove no firewall rule exists, ethtool to force GSO segmentation on the underlay,
/// the reference CNI plugins (tuning in a chain with ours), and the container runtime
/// of `--containers` (containerd + runc, a busybox-static image built locally) and
/// podman for its CNI backend; etcd (server and etcdctl) for `--store etcd`, openssl
/// for the tests' certificates, Prometheus to scrape an agent; BIRD 2 for
/// `routing = "bgp"` (one per node, run by the agent) and FRR for the lab's BGP router.
const RUNTIME_PACKAGES: &[&str] = &[
    "bpftool",
    "nftables",
    "ethtool",
    "containernetworking-plugins",
    "containerd",
    "runc",
    "busybox-static",
    "podman",
    "etcd-server",
    "etcd-client",
    "openssl",
    // `wg`: the agent configures the kernel's WireGuard device with it.
    "wireguard-tools",
    "prometheus",
    "bird2",
    "frr",
];

/// Debian's podman drops a bridge network into /etc/cni/net.d, which would become the
/// host's default CNI network for every runtime that reads it; the tests give podman
/// a private configuration, so when the install happens here that file goes again.
const PODMAN_CONFLIST: &str = "/etc/cni/net.d/87-podman-bridge.conflist";

fn ensure_runtime_packages() -> Result<()> {
    let had = Path::new(PODMAN_CONFLIST).exists();
    toolchain::ensure_packages(RUNTIME_PACKAGES)?;
    if !had && Path::new(PODMAN_CONFLIST).exists() {
        std::fs::remove_file(PODMAN_CONFLIST)
            .with_context(|| format!("remove {PODMAN_CONFLIST}"))?;
        eprintln!(
            "packages: removed {PODMAN_CONFLIST} (podman's default network; not ours to add)"
        );
    }
    Ok(())
}

/// What the bench measures with, on top of the runtime packages.
const BENCH_PACKAGES: &[&str] = &[
    "bpftool",
    "nftables",
    // kube-proxy's iptables mode, the Services baseline; with ipset, the policy one.
    "iptables",
    "ipset",
    "ethtool",
    "iperf3",
    "sockperf",
    "containernetworking-plugins",
    // `--profile`: where the CPU goes during a stream.
    "linux-perf",
];

fn exit_code(status: std::process::ExitStatus) -> ExitCode {
    match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(c) => ExitCode::from(c.clamp(1, 255) as u8),
        None => ExitCode::FAILURE,
    }
}

fn require_root(why: &str) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("this needs root ({why}); run it as `sudo -E cargo xtask …`");
    }
    Ok(())
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// The lab's binary, built next to the product's.
fn lab_binary(netpath_bin: &Path) -> PathBuf {
    netpath_bin.with_file_name("netpath-lab")
}

/// Runs `cmd` to completion; SIGINT and SIGTERM sent to xtask (by Ctrl-C, `timeout`,
/// systemd or a CI runner) are passed on to it, and xtask waits for its teardown
/// instead of dying first and leaving it orphaned.
fn run_forwarding_signals(mut cmd: Command) -> Result<std::process::ExitStatus> {
    static CHILD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);
    extern "C" fn forward(sig: libc::c_int) {
        let pid = CHILD.load(std::sync::atomic::Ordering::SeqCst);
        if pid > 0 {
            // SAFETY: kill is async-signal-safe; the PID is our own child's.
            unsafe { libc::kill(pid, sig) };
        }
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("run {:?}", cmd.get_program()))?;
    CHILD.store(child.id() as i32, std::sync::atomic::Ordering::SeqCst);
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: installing a handler that only calls an async-signal-safe function.
        unsafe { libc::signal(sig, forward as *const () as libc::sighandler_t) };
    }
    let status = child.wait().context("wait for the lab")?;
    CHILD.store(0, std::sync::atomic::Ordering::SeqCst);
    Ok(status)
}

/// The bench's "before the monitor" baseline: the programs built without their
/// monitor events (`--no-default-features`), in a `netpath` binary of their own
/// (`target/baseline/release/netpath`), so one run compares both objects.
fn build_baseline(root: &Path) -> Result<PathBuf> {
    let obj = build_ebpf_into(root, "target/ebpf-baseline", &["--no-default-features"])?;
    let status = Command::new(cargo())
        .current_dir(root)
        .args([
            "build",
            "--release",
            "--package",
            "netpath",
            "--bin",
            "netpath",
        ])
        .arg("--target-dir")
        .arg(root.join("target/baseline"))
        .env("NETPATH_EBPF_OBJ", &obj)
        .status()
        .context("build the baseline netpath")?;
    if !status.success() {
        bail!("building the baseline netpath failed");
    }
    Ok(root.join("target/baseline/release/netpath"))
}

/// Builds the eBPF object, then the userspace against it (the product's `netpath`
/// and the lab's `netpath-lab`); returns the `netpath` binary.
/// What building the product needs besides Rust: protoc, for the etcd client's
/// generated gRPC code, and the well-known `.proto` files it imports
/// (`google/protobuf/descriptor.proto`), which are only protoc's Recommends.
const BUILD_PACKAGES: &[&str] = &["protobuf-compiler", "libprotobuf-dev"];

fn build_all(root: &Path, release: bool) -> Result<PathBuf> {
    toolchain::ensure_packages(BUILD_PACKAGES)?;
    let obj = build_ebpf(root)?;
    let mut cmd = Command::new(cargo());
    cmd.current_dir(root)
        .args([
            "build",
            "--package",
            "netpath",
            "--package",
            "netpath-lab",
            "--bins",
        ])
        .env("NETPATH_EBPF_OBJ", &obj);
    if release {
        cmd.arg("--release");
    }
    let status = cmd.status().context("run cargo build")?;
    if !status.success() {
        bail!("cargo build failed");
    }
    Ok(root
        .join("target")
        .join(if release { "release" } else { "debug" })
        .join("netpath"))
}

fn build_ebpf(root: &Path) -> Result<PathBuf> {
    build_ebpf_into(root, "target/ebpf", &[])
}

/// The eBPF object built into `target_dir` with extra cargo arguments (features).
fn build_ebpf_into(root: &Path, target_dir: &str, extra: &[&str]) -> Result<PathBuf> {
    netpath_ebpf_build::build(root, &root.join(target_dir), extra)
}
