//! Encryption's cost: pod -> pod across two nodes (direct routing), netpath without
//! and with WireGuard, both measured in every round (the order alternating): TCP 1
//! stream with the CPU it took per GB, ping-pong latency, connection rate. On a
//! kernel without WireGuard (this host) the encrypted side is netpath's user-space
//! device.
use anyhow::Result;
use serde::Serialize;

use super::{plan::Plan, plan::Progress, tools, tools::Ends};
use crate::lab::{generated_spec, Lab, LabConfig};
use netpath::spec::{Backend, Encryption};

#[derive(Debug, Clone, Serialize)]
pub struct EncryptionRate {
    pub round: usize,
    pub encrypted: bool,
    /// "kernel" or "user-space" (encrypted only).
    pub implementation: Option<String>,
    pub tcp1_gbps: f64,
    /// CPU seconds (all CPUs: both nodes, both pods, the device) per GB moved.
    pub cpu_s_per_gb: f64,
    pub rr_p50_us: f64,
    pub crr: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct EncryptionRun {
    pub rates: Vec<EncryptionRate>,
}

pub fn measure(plan: &Plan, p: &mut Progress) -> Result<EncryptionRun> {
    let mut run = EncryptionRun::default();
    for round in 0..plan.encryption_rounds {
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for encrypted in order {
            let what = if encrypted { "with" } else { "without" };
            p.tick(&format!(
                "round {}/{}: netpath pod -> pod {what} WireGuard",
                round + 1,
                plan.encryption_rounds
            ))?;
            run.rates.push(one(round, encrypted, plan.secs)?);
        }
    }
    Ok(run)
}

fn one(round: usize, encrypted: bool, secs: u32) -> Result<EncryptionRate> {
    let mut spec = generated_spec(2, Backend::Direct)?;
    if encrypted {
        spec = spec.with_settings(|s| s.encryption = Encryption::Wireguard)?;
    }
    let lab = Lab::up(&LabConfig::with_spec(spec, 1)?)?;
    let server = &lab.nodes[1].pods[0];
    let e = Ends {
        client: lab.nodes[0].pods[0].ns.path(),
        server: server.ns.path(),
        server_ip: server.ip,
    };
    let implementation = encrypted
        .then(|| {
            netpath::state::AgentState::read(&lab.nodes[0].state_dir())
                .ok()
                .flatten()
                .and_then(|s| s.wireguard.map(|w| w.implementation))
        })
        .flatten();
    let busy = cpu_busy_s();
    let (tcp1_gbps, _) = tools::tcp_gbps(&e, secs, 1)?;
    let cpu = cpu_busy_s() - busy;
    let (rr_p50_us, _) = tools::latency_us(&e, secs, true)?;
    let crr = tools::crr_per_s(&e, secs)?;
    let gb = tcp1_gbps * f64::from(secs) / 8.0;
    Ok(EncryptionRate {
        round,
        encrypted,
        implementation,
        tcp1_gbps,
        cpu_s_per_gb: cpu / gb,
        rr_p50_us,
        crr,
    })
}

/// Seconds all CPUs spent busy so far (/proc/stat: everything but idle and iowait).
fn cpu_busy_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return f64::NAN;
    };
    let f: Vec<f64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let (idle, iowait) = (
        f.get(3).copied().unwrap_or(0.0),
        f.get(4).copied().unwrap_or(0.0),
    );
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (f.iter().sum::<f64>() - idle - iowait) / hz
}
