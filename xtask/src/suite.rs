//! The integration suite on other kernels: the test binaries built on the host run
//! inside a VM per kernel; the results come back as a kernel × test table.
use std::{
    collections::BTreeMap,
    io::Write,
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::vm;

/// Builds the integration test binaries (package `netpath-tests`, the files under
/// `tests/`; not run) and returns their paths. The lab crate `netpath-lab` has unit
/// tests only, which need no other kernel.
pub fn test_binaries(root: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(root)
        .args([
            "test",
            "-p",
            "netpath-tests",
            "--no-run",
            "--message-format=json",
        ])
        .stderr(Stdio::inherit())
        .output()
        .context("build the test binaries")?;
    if !out.status.success() {
        bail!("building the test binaries failed");
    }
    let mut bins = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let is_test = v["reason"] == "compiler-artifact" && v["profile"]["test"] == true;
        if let (true, Some(exe)) = (is_test, v["executable"].as_str()) {
            if v["target"]["kind"][0] == "test" {
                bins.push(PathBuf::from(exe));
            }
        }
    }
    bins.sort();
    Ok(bins)
}

/// Kernels that run only some test binaries (by file name before the hash): the
/// features they add over the others, since every VM leg runs emulated and the CI
/// budget is shared. 6.12 (Debian trixie) has WireGuard, IP-in-IP and netkit as
/// modules where this host has none of them.
const ONLY_ON: &[(&str, &[&str])] = &[("6.12", &["encryption", "ipip"])];

/// The binaries `version`'s VM runs.
fn binaries_for<'a>(version: &str, bins: &'a [PathBuf]) -> Vec<&'a PathBuf> {
    let only = ONLY_ON.iter().find(|(k, _)| *k == version).map(|(_, b)| *b);
    bins.iter()
        .filter(|b| {
            let stem = b.file_name().and_then(|f| f.to_str()).unwrap_or("");
            let name = stem.rsplit_once('-').map_or(stem, |(n, _)| n);
            only.is_none_or(|o| o.contains(&name))
        })
        .collect()
}

/// The most one test binary may take in a VM (the slowest takes about 4 minutes).
const BINARY_WITHIN_S: u32 = 900;

/// The shell line the VM runs: every test binary, one after the other.
pub fn script(root: &Path, netpath_bin: &Path, bins: &[&PathBuf]) -> String {
    let mut s = format!(
        "cd {} && export NETPATH_BIN={} NETPATH_EMULATED=1 RUST_BACKTRACE=0; rc=0",
        root.display(),
        netpath_bin.display()
    );
    // A binary that hangs (a kernel livelock, say) fails alone and the rest still run.
    for b in bins {
        s += &format!(
            " ; timeout -s KILL {BINARY_WITHIN_S} {} --test-threads=2 || {{ rc=1; echo \"{} failed or ran over {BINARY_WITHIN_S} s\"; }}",
            b.display(),
            b.display()
        );
    }
    s + " ; exit $rc"
}

/// Tests that need a kernel feature some kernels build without: their name prefix,
/// the module, and the feature's name.
const NEEDS_KERNEL: &[(&str, &str, &str)] = &[
    ("kernel_ipip_", "ipip", "IP-in-IP (CONFIG_NET_IPIP)"),
    (
        "kernel_wireguard_",
        "wireguard",
        "WireGuard (CONFIG_WIREGUARD)",
    ),
];

/// Does the running kernel have `module`, built in or as a module?
fn host_has(module: &str) -> bool {
    if Path::new("/sys/module").join(module).exists() {
        return true;
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let deps = format!("/lib/modules/{}/modules.dep", release.trim());
    let file = format!("/{module}.ko");
    std::fs::read_to_string(deps).is_ok_and(|d| d.lines().any(|l| l.contains(&file)))
}

/// Tests the host kernel cannot run are left out of its run, loudly; they run in the
/// VMs of `--kernels`, whose kernels have the feature (the test itself fails with the
/// reason on a kernel without it).
pub fn leave_out_what_the_host_kernel_lacks(
    cmd: &mut Command,
    args: &[String],
    kernels: &[String],
) {
    let mut separated = args.iter().any(|a| a == "--");
    for (prefix, module, feature) in NEEDS_KERNEL {
        if host_has(module) {
            continue;
        }
        let where_ = if kernels.is_empty() {
            "not run at all: add `--kernels 6.12` to run them in a VM".to_string()
        } else {
            format!("run in the VMs ({}) only", kernels.join(", "))
        };
        eprintln!("xtask: this kernel has no {feature}: tests {prefix}* {where_}");
        if !separated {
            cmd.arg("--");
            separated = true;
        }
        cmd.args(["--skip", prefix]);
    }
}

/// Test name -> verdict ("ok", "FAILED"), from libtest's output.
pub type Results = BTreeMap<String, String>;

fn record(line: &str, results: &mut Results) {
    if let Some(rest) = line.strip_prefix("test ") {
        if let Some((name, verdict)) = rest.rsplit_once(" ... ") {
            results.insert(name.to_string(), verdict.trim().to_string());
        }
    }
}

/// Runs `cmd`, echoing its output (prefixed) while collecting the test verdicts.
pub fn run_streaming(cmd: &mut Command, prefix: &str) -> Result<(bool, Results)> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .context("run cargo test")?;
    let mut results = Results::new();
    let out = child.stdout.take().expect("piped");
    for line in std::io::BufRead::lines(std::io::BufReader::new(out)) {
        let line = line?;
        record(&line, &mut results);
        println!("{prefix}{line}");
    }
    Ok((child.wait()?.success(), results))
}

/// Runs the suite on each kernel and prints the kernel × test table, the host's
/// results first.
pub fn on_kernels(
    root: &Path,
    netpath_bin: &Path,
    kernels: &[String],
    host: Results,
) -> Result<ExitCode> {
    crate::toolchain::ensure_packages(vm::PACKAGES)?;
    let bins = test_binaries(root)?;
    let host_name = format!(
        "host {}",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );
    let mut table: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (test, verdict) in host {
        table
            .entry(test)
            .or_default()
            .insert(host_name.clone(), verdict);
    }
    let mut timing = Vec::new();
    let mut all_ok = true;
    for version in kernels {
        let k = vm::kernel(root, version)?;
        let mine = binaries_for(version, &bins);
        let script = script(root, netpath_bin, &mine);
        eprintln!(
            "== kernel {version} ({}): {} test binaries ==",
            k.release,
            mine.len()
        );
        let started = Instant::now();
        let mut results: BTreeMap<String, String> = BTreeMap::new();
        let mut first_line = None;
        let code = vm::boot(root, &k, &script, Duration::from_secs(45 * 60), |line| {
            if first_line.is_none() && line.starts_with("running ") {
                first_line = Some(started.elapsed());
            }
            record(line, &mut results);
            let mut o = std::io::stdout();
            let _ = writeln!(o, "[{version}] {line}");
        })?;
        all_ok &= code == 0;
        timing.push((
            version.clone(),
            first_line.map_or(f64::NAN, |d| d.as_secs_f64()),
            started.elapsed().as_secs_f64(),
            code,
        ));
        for (test, verdict) in results {
            table
                .entry(test)
                .or_default()
                .insert(version.clone(), verdict);
        }
    }
    let columns: Vec<String> = std::iter::once(host_name)
        .chain(kernels.iter().cloned())
        .collect();
    println!("\n| test | {} |", columns.join(" | "));
    println!("| --- |{}", " --- |".repeat(columns.len()));
    // Only the integration tests ran in the VMs; unit tests stay host-only rows (and
    // a test the host kernel cannot run shows "–" in its column).
    for (test, row) in table
        .iter()
        .filter(|(_, row)| kernels.is_empty() || kernels.iter().any(|k| row.contains_key(k)))
    {
        let cells: Vec<&str> = columns
            .iter()
            .map(|k| row.get(k).map_or("–", String::as_str))
            .collect();
        println!("| {test} | {} |", cells.join(" | "));
    }
    println!();
    for (v, boot, total, code) in timing {
        println!(
            "kernel {v}: boot to first test {boot:.0} s, suite {total:.0} s in all, exit {code}"
        );
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
