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

/// Builds the integration test binaries (not run) and returns their paths.
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

/// The shell line the VM runs: every test binary, one after the other.
pub fn script(root: &Path, netpath_bin: &Path, bins: &[PathBuf]) -> String {
    let mut s = format!(
        "cd {} && export NETPATH_BIN={} RUST_BACKTRACE=0; rc=0",
        root.display(),
        netpath_bin.display()
    );
    for b in bins {
        s += &format!(" ; {} --test-threads=2 || rc=1", b.display());
    }
    s + " ; exit $rc"
}

/// Runs the suite on each kernel and prints the kernel × test table.
pub fn on_kernels(root: &Path, netpath_bin: &Path, kernels: &[String]) -> Result<ExitCode> {
    crate::toolchain::ensure_packages(vm::PACKAGES)?;
    let bins = test_binaries(root)?;
    let script = script(root, netpath_bin, &bins);
    let mut table: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut timing = Vec::new();
    let mut all_ok = true;
    for version in kernels {
        let k = vm::kernel(root, version)?;
        eprintln!("== kernel {version} ({}) ==", k.release);
        let started = Instant::now();
        let mut results: BTreeMap<String, String> = BTreeMap::new();
        let mut first_line = None;
        let code = vm::boot(root, &k, &script, Duration::from_secs(45 * 60), |line| {
            if first_line.is_none() && line.starts_with("running ") {
                first_line = Some(started.elapsed());
            }
            if let Some(rest) = line.strip_prefix("test ") {
                if let Some((name, verdict)) = rest.rsplit_once(" ... ") {
                    results.insert(name.to_string(), verdict.trim().to_string());
                }
            }
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
    println!("\n| test | {} |", kernels.join(" | "));
    println!("| --- |{}", " --- |".repeat(kernels.len()));
    for (test, row) in &table {
        let cells: Vec<&str> = kernels
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
