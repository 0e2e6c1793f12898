//! The lab cleans up after itself however it ends: SIGTERM to `netpath-lab run` (what
//! `cargo xtask run` forwards), and with iproute2 touching /run/netns meanwhile.
use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use netpath_lab::{lab::Lab, lab::LabConfig, namespaces_with_prefix, require_root};

fn leftovers(prefix: &str) -> Vec<String> {
    let mut left: Vec<String> = namespaces_with_prefix(prefix);
    for dir in [
        netpath::spec::DEFAULT_BPFFS_ROOT,
        netpath::state::DEFAULT_STATE_ROOT,
    ] {
        if let Ok(d) = std::fs::read_dir(dir) {
            left.extend(
                d.flatten()
                    .map(|e| e.path().display().to_string())
                    .filter(|p| p.contains(prefix)),
            );
        }
    }
    // Agents of this lab: their --pin-dir argument carries the prefix.
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
            let c = String::from_utf8_lossy(&c).replace('\0', " ");
            if c.contains(" agent ") && c.contains(prefix) {
                left.push(format!("process {}: {c}", e.file_name().to_string_lossy()));
            }
        }
    }
    left
}

#[test]
fn sigterm_to_a_running_lab_leaves_nothing_behind() {
    require_root();
    let netpath_bin = netpath_lab::lab::agent_binary().unwrap();
    let lab_bin = netpath_bin.with_file_name("netpath-lab");
    let child = Command::new(&lab_bin)
        .args(["run", "--nodes", "2", "--pods", "1"])
        .env("NETPATH_BIN", &netpath_bin)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", lab_bin.display()));
    let mut child = netpath_lab::process::Spawned::terminating(child);
    let mut prefix = None;
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(i) = line.find("netpath status --node np") {
            prefix = Some(line[i + 22..i + 29].to_string());
        }
        if line.contains("lab is up") {
            break;
        }
    }
    let prefix = prefix.expect("the lab printed its prefix");
    assert!(!leftovers(&prefix).is_empty(), "the lab is up");
    // Keep reading: the lab reports its teardown on stdout.
    let drain = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());
    // SAFETY: signalling our own child by its PID.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "lab did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    let said = drain.join().unwrap();
    assert!(status.success(), "{status}: {said:?}");
    assert!(said.iter().any(|l| l.contains("tearing down")), "{said:?}");
    assert_eq!(leftovers(&prefix), Vec::<String>::new());
}

#[test]
fn labs_tear_down_cleanly_around_ip_netns_add() {
    require_root();
    let before = Lab::up(&LabConfig::new(1, 1).unwrap()).unwrap();
    let other = format!("{}-iproute2", before.prefix);
    let out = Command::new("ip")
        .args(["netns", "add", &other])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = Lab::up(&LabConfig::new(1, 1).unwrap()).unwrap();
    let prefixes = [before.prefix.clone(), after.prefix.clone()];
    drop(after);
    drop(before);
    let out = Command::new("ip")
        .args(["netns", "del", &other])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for p in prefixes {
        assert_eq!(leftovers(&p), Vec::<String>::new(), "lab {p}");
    }
}
