//! Pins readable by bpftool with BTF types, the CLI's views, agent restarts and
//! config errors.
use std::process::Command;

use netpath_common::Reason;
use netpath_lab::lab::LabConfig;
use netpath_lab::{counter, require_root};

fn bin() -> std::path::PathBuf {
    netpath_lab::lab::agent_binary().unwrap()
}

/// `bpftool -j map dump pinned PIN`, parsed.
fn bpftool_dump(pin: &std::path::Path) -> serde_json::Value {
    let out = Command::new("bpftool")
        .args(["-j", "map", "dump", "pinned"])
        .arg(pin)
        .output()
        .expect("run bpftool (cargo xtask test installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn bpftool_prints_typed_endpoint_entries() {
    let lab = netpath_lab::lab(1, 2);
    let node = &lab.nodes[0];
    let doc = bpftool_dump(&node.pin_dir.join("ENDPOINTS"));
    let entries = doc.as_array().unwrap();
    assert_eq!(entries.len(), 2);
    let eps = node.pinned().unwrap().endpoints().unwrap();
    for e in entries {
        // With BTF, bpftool names the fields instead of printing hex bytes.
        let f = &e["formatted"];
        let key: Vec<u8> = f["key"]
            .as_array()
            .expect("typed key")
            .iter()
            .map(|b| b.as_u64().unwrap() as u8)
            .collect();
        let ip = std::net::Ipv4Addr::new(key[0], key[1], key[2], key[3]);
        let (_, ep) = eps.iter().find(|(i, _)| *i == ip).expect("key is a pod IP");
        assert_eq!(f["value"]["ifindex"].as_u64(), Some(ep.ifindex as u64));
        assert!(f["value"]["pod_mac"].is_array(), "{f}");
    }
}

/// The tries' key names its family and holds IPv4 in the first four address bytes;
/// its prefix length counts the 32 bits of the family word too.
#[test]
fn bpftool_prints_typed_route_keys() {
    let lab = netpath_lab::lab(2, 0);
    let other = &lab.nodes[1].spec.pod_cidr;
    let doc = bpftool_dump(&lab.nodes[0].pin_dir.join("ROUTES"));
    let keys: Vec<&serde_json::Value> = doc
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["formatted"]["key"])
        .collect();
    let found = keys.iter().any(|k| {
        let addr: Vec<u64> = k["data"]["addr"]
            .as_array()
            .map(|a| a.iter().filter_map(|b| b.as_u64()).collect())
            .unwrap_or_default();
        k["data"]["family"].as_u64() == Some(4)
            && k["prefix_len"].as_u64() == Some(32 + other.prefix as u64)
            && addr.len() == 16
            && addr[..4] == other.addr.octets().map(u64::from)
            && addr[4..].iter().all(|b| *b == 0)
    });
    assert!(found, "node 1's {other} as a typed key in {keys:#?}");
}

#[test]
fn status_json_lists_endpoints_and_counters() {
    let lab = netpath_lab::lab(1, 2);
    let pods = &lab.nodes[0].pods;
    netpath_lab::check::tcp(pods[0].ns.path(), pods[1].ns.path(), pods[1].ip).unwrap();
    // Run from the host, outside the node's namespace: judged inside it all the same.
    let (code, doc) = netpath_lab::status(&lab, 0);
    assert_eq!(code, 0, "a healthy, ready node: {doc:#}");
    let ips: Vec<&str> = doc["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["ip"].as_str().unwrap())
        .collect();
    assert_eq!(ips, ["10.244.1.2", "10.244.1.3"]);
    let redirected = doc["counters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["program"] == "from-pod" && c["reason"] == "redirected")
        .unwrap()["packets"]
        .as_u64()
        .unwrap();
    assert!(redirected > 0);
    assert_eq!(doc["redirect"], "peer");
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let nums: Vec<u32> = kernel
        .split(['.', '-'])
        .take(2)
        .map(|n| n.parse().unwrap())
        .collect();
    let expected = if (nums[0], nums[1]) >= (6, 6) {
        "tcx"
    } else {
        "netlink (clsact)"
    };
    assert_eq!(doc["tc_attach"], expected, "kernel {kernel}");
}

#[test]
fn agent_restart_with_kept_pins_does_not_interrupt_pods() {
    require_root();
    let mut cfg = LabConfig::new(1, 2).unwrap();
    cfg.keep_pins = true;
    let mut lab = netpath_lab::lab::Lab::up(&cfg).unwrap();
    let (a, b) = (&lab.nodes[0].pods[0], &lab.nodes[0].pods[1]);
    let (a_ns, b_ns, b_ip, a_ip) = (a.ns.path().to_owned(), b.ns.path().to_owned(), b.ip, a.ip);
    lab.stop_agent(0);
    assert!(lab.nodes[0].pin_dir.join("ENDPOINTS").exists(), "pins kept");
    let before = counter(&lab, 0, Reason::Redirected);
    assert_eq!(
        netpath_lab::check::tcp(&a_ns, &b_ns, b_ip).unwrap(),
        a_ip,
        "traffic without agent"
    );
    assert!(
        counter(&lab, 0, Reason::Redirected) > before,
        "still through eBPF"
    );
    lab.start_agent(0, &cfg).unwrap();
    let eps = lab.nodes[0].pinned().unwrap().endpoints().unwrap();
    assert_eq!(
        eps.len(),
        2,
        "restarted agent reused the pinned endpoint map"
    );
    assert_eq!(netpath_lab::check::tcp(&a_ns, &b_ns, b_ip).unwrap(), a_ip);
}

#[test]
fn agent_stop_without_keep_pins_detaches_and_unpins() {
    let mut lab = netpath_lab::lab(1, 1);
    let node = &lab.nodes[0];
    let host_if = node.pods[0].host_ifname.clone();
    let ns = node.ns.path().to_owned();
    let filters = |ns: &std::path::Path| netpath_lab::attached_ingress(ns, &host_if);
    assert!(
        filters(&ns).contains("from_pod"),
        "program attached while agent runs"
    );
    lab.stop_agent(0);
    assert!(!lab.nodes[0].pin_dir.exists(), "pins removed");
    assert!(!filters(&ns).contains("from_pod"), "program detached");
}

#[test]
fn agent_rejects_a_bad_spec_with_the_field_named() {
    require_root();
    let dir = std::env::temp_dir().join(format!("netpath-badcfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = netpath::spec::DEFAULT_SPEC;
    let cases = [
        (
            good.replace("10.244.2.0/24", "10.244.1.128/25"),
            "node1",
            "nodes[1].pod_cidr",
        ),
        (
            good.replace("10.244.3.0/24", "10.9.3.0/24"),
            "node1",
            "outside cluster_cidr",
        ),
        (
            good.replace("192.168.56.12/24", "192.168.56.999/24"),
            "node1",
            "192.168.56.999/24",
        ),
        (
            good.replace("name = \"node2\"", "name = \"node1\""),
            "node1",
            "duplicate",
        ),
        (good.to_string(), "node9", "node9"),
        (format!("{good}\nbogus = 1\n"), "node1", "bogus"),
        ("this is not toml".to_string(), "node1", "parse"),
    ];
    for (text, node, needle) in cases {
        let path = dir.join("cluster.toml");
        std::fs::write(&path, &text).unwrap();
        let out = Command::new(bin())
            .args(["agent", "--node", node, "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{needle}: {err}");
        assert!(
            err.contains(needle),
            "error does not mention {needle}: {err}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
