//! The CNI plugin driven as a runtime drives it: the `netpath` binary with CNI_*
//! environment and JSON on stdin, run inside lab nodes, with real packets between
//! the containers it wires. Spec conformance (every verb, version negotiation,
//! error codes, prevResult), IPAM under concurrency and crashes.
use std::{
    collections::BTreeSet,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use netpath::{
    ipam,
    net::Ipv4Net,
    spec::{Backend, SpecDraft},
};
use netpath_lab::{
    check,
    cni::{self, Call},
    endpoint_ips,
    lab::{agent_binary, generated_spec, Lab, LabConfig},
    lab_of,
    netns::{self, NetNs},
    nl::Nl,
    node_veths, require_root, run_in_ns,
};
use serde_json::{json, Value};

fn plugin() -> PathBuf {
    agent_binary().expect("netpath binary")
}

fn container(lab: &Lab, name: &str) -> NetNs {
    NetNs::create(&format!("{}-{name}", lab.prefix)).expect("container netns")
}

fn call<'a>(command: &'a str, id: &'a str, ns: Option<&'a NetNs>) -> Call<'a> {
    Call::new(command, id, ns.map(NetNs::path))
}

fn run(lab: &Lab, node: usize, c: &Call, conf: &Value) -> cni::Reply {
    cni::run(&plugin(), lab.nodes[node].ns.path(), c, conf).expect("run the plugin")
}

fn book(lab: &Lab, node: usize) -> ipam::Book {
    ipam::Store::open(&lab.nodes[node].state_dir())
        .expect("open the address book")
        .book
}

fn gc_conf(valid: &[&str]) -> Value {
    let mut c = cni::conf("1.1.0");
    c["cni.dev/valid-attachments"] = valid
        .iter()
        .map(|id| json!({"containerID": id, "ifname": "eth0"}))
        .collect();
    c
}

#[test]
fn version_negotiation_and_every_error_code() {
    let lab = lab_of(&LabConfig::new(1, 0).unwrap());
    let c1 = container(&lab, "c1");
    let conf = cni::conf("1.0.0");

    let v = run(
        &lab,
        0,
        &call("VERSION", "x", None),
        &json!({"cniVersion": "1.1.0"}),
    );
    assert!(v.success, "{}", v.stdout);
    assert_eq!(
        v.json["supportedVersions"],
        json!(["0.4.0", "1.0.0", "1.1.0"])
    );

    let expect = |reply: cni::Reply, code: u64, words: &str| {
        assert_eq!(reply.code(), Some(code), "{}", reply.stdout);
        assert!(
            reply.msg().contains(words),
            "{:?} lacks {words:?}",
            reply.msg()
        );
        assert!(reply.json["cniVersion"].is_string(), "{}", reply.stdout);
    };
    let add = call("ADD", "c1", Some(&c1));
    expect(run(&lab, 0, &add, &cni::conf("0.3.1")), 1, "0.3.1");
    expect(
        cni::invoke(&plugin(), lab.nodes[0].ns.path(), &add, b"{not json").unwrap(),
        6,
        "decode",
    );
    expect(
        run(
            &lab,
            0,
            &add,
            &json!({"cniVersion": "1.0.0", "type": "netpath"}),
        ),
        7,
        "name",
    );
    let mut high_mtu = conf.clone();
    high_mtu["mtu"] = 9000.into();
    expect(run(&lab, 0, &add, &high_mtu), 7, "mtu");
    expect(
        run(&lab, 0, &call("ADD", "c1", None), &conf),
        4,
        "CNI_NETNS",
    );
    expect(
        run(&lab, 0, &call("ADD", "-c1", Some(&c1)), &conf),
        4,
        "CNI_CONTAINERID",
    );
    expect(
        run(&lab, 0, &call("FROB", "c1", Some(&c1)), &conf),
        4,
        "FROB",
    );
    let mut unknown = add.clone();
    unknown.args = Some("FOO=bar");
    expect(run(&lab, 0, &unknown, &conf), 4, "FOO");
    expect(run(&lab, 0, &call("STATUS", "", None), &conf), 1, "1.1.0");
    expect(run(&lab, 0, &call("GC", "", None), &conf), 1, "1.1.0");
    expect(
        run(&lab, 0, &call("GC", "", None), &cni::conf("1.1.0")),
        7,
        "valid-attachments",
    );
    expect(
        run(&lab, 0, &call("CHECK", "c1", Some(&c1)), &conf),
        7,
        "prevResult",
    );
    // No bad call above left an allocation or a veth.
    assert!(book(&lab, 0).allocations.is_empty());
    assert!(node_veths(&lab, 0).is_empty());

    let mut tolerated = add.clone();
    tolerated.args = Some("IgnoreUnknown=1;FOO=bar;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0");
    let ok = run(&lab, 0, &tolerated, &conf).expect_ok("ADD with IgnoreUnknown");
    let held = book(&lab, 0);
    let a = &held.allocations[&ok.ip()];
    assert_eq!(a.pod_namespace.as_deref(), Some("shop"));
    assert_eq!(a.pod_name.as_deref(), Some("web-0"));
    assert!(run(&lab, 0, &call("STATUS", "", None), &cni::conf("1.1.0")).success);
}

#[test]
fn add_wires_containers_that_talk_across_nodes_check_sees_damage_del_is_idempotent() {
    // node1 and node2 share a subnet (direct), node3 is behind the router (VXLAN).
    let lab = lab_of(&LabConfig::new(3, 0).unwrap());
    let cs: Vec<NetNs> = (0..3).map(|i| container(&lab, &format!("c{i}"))).collect();
    let ids = ["c0", "c1", "c2"];
    let conf = cni::conf("1.1.0");
    let mut results = Vec::new();
    for (i, ns) in cs.iter().enumerate() {
        let r = run(&lab, i, &call("ADD", ids[i], Some(ns)), &conf).expect_ok("ADD");
        assert!(lab.nodes[i].spec.pod_cidr.contains(r.ip()), "{}", r.stdout);
        assert_eq!(r.json["ips"][0]["gateway"], "169.254.1.1");
        assert_eq!(r.json["ips"][0]["interface"], 1);
        assert_eq!(
            r.json["interfaces"][1]["sandbox"],
            ns.path().display().to_string()
        );
        assert_eq!(r.json["routes"][0]["dst"], "0.0.0.0/0");
        assert_eq!(r.json["cniVersion"], "1.1.0");
        let mtu = ns.run(|| Nl::new()?.link("eth0")).unwrap().mtu.unwrap();
        assert_eq!(r.json["interfaces"][1]["mtu"], mtu);
        assert_eq!(mtu, lab.spec.pod_mtu(netpath_lab::lab::UNDERLAY_MTU));
        results.push(r);
    }
    // Real packets, source addresses kept: direct and across the router.
    for (a, b) in [(0, 1), (1, 0), (0, 2), (2, 1)] {
        let seen = check::tcp(cs[a].path(), cs[b].path(), results[b].ip()).unwrap();
        assert_eq!(seen, results[a].ip(), "c{a} -> c{b}");
    }
    // ADD again: the same address.
    let again = run(&lab, 0, &call("ADD", "c0", Some(&cs[0])), &conf).expect_ok("re-ADD");
    assert_eq!(again.ip(), results[0].ip());

    let check_with = |i: usize, prev: &Value| {
        run(
            &lab,
            i,
            &call("CHECK", ids[i], Some(&cs[i])),
            &cni::with_prev(&conf, prev),
        )
    };
    for (i, r) in results.iter().enumerate() {
        check_with(i, &r.json).expect_ok("CHECK");
    }
    let mut wrong = results[0].json.clone();
    wrong["ips"][0]["address"] = "10.244.1.99/32".into();
    assert_eq!(check_with(0, &wrong).code(), Some(101));
    // Damage, one kind per container: address, map entry, veth.
    run_in_ns(cs[0].path(), &["ip", "addr", "flush", "dev", "eth0"]).unwrap();
    let r = check_with(0, &results[0].json);
    assert_eq!(r.code(), Some(101));
    assert!(r.msg().contains("/32"), "{}", r.msg());
    lab.nodes[1]
        .pinned()
        .unwrap()
        .remove_endpoint(results[1].ip())
        .unwrap();
    let r = check_with(1, &results[1].json);
    assert_eq!(r.code(), Some(101));
    assert!(r.msg().contains("ENDPOINTS"), "{}", r.msg());
    run_in_ns(cs[2].path(), &["ip", "link", "del", "eth0"]).unwrap();
    let r = check_with(2, &results[2].json);
    assert_eq!(r.code(), Some(101));
    assert!(r.msg().contains("missing"), "{}", r.msg());

    // DEL: everything goes, and again, and without a netns.
    for (i, ns) in cs.iter().enumerate() {
        let del = call("DEL", ids[i], Some(ns));
        let prev = cni::with_prev(&conf, &results[i].json);
        for _ in 0..3 {
            run(&lab, i, &del, &prev).expect_ok("DEL");
        }
        run(&lab, i, &call("DEL", ids[i], None), &conf).expect_ok("DEL without netns");
        assert!(node_veths(&lab, i).is_empty(), "node {i}: veth left");
        assert!(!endpoint_ips(&lab, i).contains(&results[i].ip()));
        assert!(
            book(&lab, i).allocations.is_empty(),
            "node {i}: address held"
        );
    }
    // A freed address is not handed out again right away.
    let next = run(&lab, 0, &call("ADD", "c9", Some(&cs[0])), &conf).expect_ok("ADD");
    assert_ne!(next.ip(), results[0].ip());
    run(&lab, 0, &call("DEL", "c9", Some(&cs[0])), &conf).expect_ok("DEL");
}

#[test]
fn status_follows_the_agent_and_allocations_survive_its_restart() {
    let mut cfg = LabConfig::new(1, 0).unwrap();
    cfg.keep_pins = true;
    let mut lab = lab_of(&cfg);
    let c1 = container(&lab, "c1");
    let c2 = container(&lab, "c2");
    let conf = cni::conf("1.1.0");
    let status = call("STATUS", "", None);
    run(&lab, 0, &status, &conf).expect_ok("STATUS");
    let first = run(&lab, 0, &call("ADD", "c1", Some(&c1)), &conf).expect_ok("ADD");

    lab.stop_agent(0);
    let r = run(&lab, 0, &status, &conf);
    assert_eq!(r.code(), Some(50), "{}", r.stdout);
    let r = run(&lab, 0, &call("ADD", "c2", Some(&c2)), &conf);
    assert_eq!(r.code(), Some(11), "{}", r.stdout);
    assert_eq!(
        book(&lab, 0).allocations.len(),
        1,
        "refused ADD holds nothing"
    );

    lab.start_agent(0, &cfg).unwrap();
    run(&lab, 0, &status, &conf).expect_ok("STATUS after restart");
    let same = run(&lab, 0, &call("ADD", "c1", Some(&c1)), &conf).expect_ok("re-ADD");
    assert_eq!(same.ip(), first.ip(), "the allocation survived the restart");
    let second = run(&lab, 0, &call("ADD", "c2", Some(&c2)), &conf).expect_ok("ADD");
    assert_eq!(
        check::tcp(c1.path(), c2.path(), second.ip()).unwrap(),
        first.ip()
    );
    for (id, ns) in [("c1", &c1), ("c2", &c2)] {
        run(&lab, 0, &call("DEL", id, Some(ns)), &conf).expect_ok("DEL");
    }
}

#[test]
fn gc_frees_exactly_the_attachments_that_are_not_valid() {
    let lab = lab_of(&LabConfig::new(1, 0).unwrap());
    let conf = cni::conf("1.1.0");
    let cs: Vec<NetNs> = (0..3).map(|i| container(&lab, &format!("c{i}"))).collect();
    let ips: Vec<Ipv4Addr> = cs
        .iter()
        .enumerate()
        .map(|(i, ns)| {
            run(&lab, 0, &call("ADD", &format!("c{i}"), Some(ns)), &conf)
                .expect_ok("ADD")
                .ip()
        })
        .collect();
    run(
        &lab,
        0,
        &call("GC", "", None),
        &gc_conf(&["c0", "gone-long-ago"]),
    )
    .expect_ok("GC");
    let held: Vec<_> = book(&lab, 0).allocations.into_keys().collect();
    assert_eq!(held, vec![ips[0]]);
    assert_eq!(endpoint_ips(&lab, 0), BTreeSet::from([ips[0]]));
    assert_eq!(node_veths(&lab, 0).len(), 1);
    // c0 still talks (to the node).
    assert_eq!(
        check::tcp(cs[0].path(), lab.nodes[0].ns.path(), lab.nodes[0].ip()).unwrap(),
        ips[0]
    );
    run(&lab, 0, &call("GC", "", None), &gc_conf(&[])).expect_ok("GC with none valid");
    assert!(book(&lab, 0).allocations.is_empty());
    assert!(endpoint_ips(&lab, 0).is_empty());
    assert!(node_veths(&lab, 0).is_empty());
}

#[test]
fn a_hundred_parallel_adds_on_two_nodes_share_no_address_and_leak_nothing() {
    let lab = lab_of(&LabConfig::new(2, 0).unwrap());
    let conf = cni::conf("1.0.0");
    let cs: Vec<NetNs> = (0..100)
        .map(|i| container(&lab, &format!("p{i}")))
        .collect();
    let ids: Vec<String> = (0..100).map(|i| format!("p{i}")).collect();
    let node_of = |i: usize| i % 2;
    let replies: Vec<cni::Reply> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..100)
            .map(|i| {
                let (lab, conf, cs, ids) = (&lab, &conf, &cs, &ids);
                s.spawn(move || run(lab, node_of(i), &call("ADD", &ids[i], Some(&cs[i])), conf))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut seen = BTreeSet::new();
    for (i, r) in replies.iter().enumerate() {
        assert!(r.success, "ADD p{i}: {}", r.stdout);
        assert!(seen.insert(r.ip()), "{} handed out twice", r.ip());
    }
    for n in 0..2 {
        assert_eq!(book(&lab, n).allocations.len(), 50);
        assert_eq!(endpoint_ips(&lab, n).len(), 50);
    }
    // A sample of the pairs talks (across nodes too).
    for (a, b) in [(0, 1), (98, 99), (10, 57)] {
        assert_eq!(
            check::tcp(cs[a].path(), cs[b].path(), replies[b].ip()).unwrap(),
            replies[a].ip()
        );
    }
    std::thread::scope(|s| {
        for i in 0..100 {
            let (lab, conf, cs, ids) = (&lab, &conf, &cs, &ids);
            s.spawn(move || {
                run(lab, node_of(i), &call("DEL", &ids[i], Some(&cs[i])), conf).expect_ok("DEL")
            });
        }
    });
    for n in 0..2 {
        assert!(
            book(&lab, n).allocations.is_empty(),
            "node {n} leaked addresses"
        );
        assert!(
            endpoint_ips(&lab, n).is_empty(),
            "node {n} leaked map entries"
        );
        assert!(node_veths(&lab, n).is_empty(), "node {n} leaked veths");
    }
}

/// Starts an ADD and SIGKILLs it after `after`.
fn killed_add(lab: &Lab, id: &str, ns: &NetNs, after: Duration) {
    let conf = cni::conf("1.1.0").to_string();
    let mut child = netns::run_in(lab.nodes[0].ns.path(), || {
        let mut c = Command::new(plugin())
            .env("CNI_COMMAND", "ADD")
            .env("CNI_CONTAINERID", id)
            .env("CNI_NETNS", ns.path())
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/opt/cni/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        use std::io::Write;
        let _ = c.stdin.take().unwrap().write_all(conf.as_bytes());
        Ok(c)
    })
    .unwrap();
    std::thread::sleep(after);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn kill_9_in_the_middle_of_add_leaves_nothing_that_gc_cannot_recover() {
    let lab = lab_of(&LabConfig::new(1, 0).unwrap());
    let cs: Vec<NetNs> = (0..12).map(|i| container(&lab, &format!("k{i}"))).collect();
    // Kill points from before the config is read to after the pod is wired.
    for (i, ns) in cs.iter().enumerate() {
        killed_add(
            &lab,
            &format!("k{i}"),
            ns,
            Duration::from_millis(3 * i as u64),
        );
    }
    let left = book(&lab, 0);
    eprintln!(
        "killed ADDs left {} allocations and {} veths",
        left.allocations.len(),
        node_veths(&lab, 0).len()
    );
    // An ADD for a killed attachment completes and keeps whatever address it held.
    let conf = cni::conf("1.1.0");
    let held = book(&lab, 0).find(&ipam::AttachmentId {
        container_id: "k11".into(),
        ifname: "eth0".into(),
    });
    let r = run(&lab, 0, &call("ADD", "k11", Some(&cs[11])), &conf).expect_ok("ADD after kill");
    if let Some(ip) = held {
        assert_eq!(r.ip(), ip);
    }
    assert_eq!(
        check::tcp(cs[11].path(), lab.nodes[0].ns.path(), lab.nodes[0].ip()).unwrap(),
        r.ip()
    );
    run(&lab, 0, &call("GC", "", None), &gc_conf(&["k11"])).expect_ok("GC");
    let b = book(&lab, 0);
    assert_eq!(
        b.allocations.keys().copied().collect::<Vec<_>>(),
        vec![r.ip()]
    );
    assert_eq!(endpoint_ips(&lab, 0), BTreeSet::from([r.ip()]));
    assert_eq!(node_veths(&lab, 0).len(), 1, "{:?}", node_veths(&lab, 0));
    // No temporary file or stuck lock: the next writer goes straight through.
    let dir = lab.nodes[0].state_dir();
    let t = Instant::now();
    run(&lab, 0, &call("DEL", "k11", Some(&cs[11])), &conf).expect_ok("DEL");
    assert!(t.elapsed() < Duration::from_secs(10));
    assert!(book(&lab, 0).allocations.is_empty());
    assert!(!Path::new(&dir).join(".ipam.json.tmp").exists() || ipam::Store::open(&dir).is_ok());
}

#[test]
fn a_full_28_says_so_with_its_own_code_and_recovers_after_a_del() {
    require_root();
    let spec = SpecDraft::new(Ipv4Net::new(Ipv4Addr::new(10, 244, 0, 0), 16))
        .node(
            "node1",
            Ipv4Net::new(Ipv4Addr::new(192, 168, 56, 11), 24),
            Ipv4Net::new(Ipv4Addr::new(10, 244, 1, 0), 28),
        )
        .validate()
        .unwrap();
    let lab = lab_of(&LabConfig::with_spec(spec, 0).unwrap());
    let conf = cni::conf("1.0.0");
    let cs: Vec<NetNs> = (0..14).map(|i| container(&lab, &format!("x{i}"))).collect();
    for (i, ns) in cs.iter().take(13).enumerate() {
        run(&lab, 0, &call("ADD", &format!("x{i}"), Some(ns)), &conf).expect_ok("ADD");
    }
    let t = Instant::now();
    let full = run(&lab, 0, &call("ADD", "x13", Some(&cs[13])), &conf);
    assert_eq!(full.code(), Some(100), "{}", full.stdout);
    assert!(full.msg().contains("no free address"), "{}", full.msg());
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "exhaustion must not hang"
    );
    assert_eq!(
        node_veths(&lab, 0).len(),
        13,
        "the refused ADD wired nothing"
    );
    run(&lab, 0, &call("DEL", "x3", Some(&cs[3])), &conf).expect_ok("DEL");
    let r = run(&lab, 0, &call("ADD", "x13", Some(&cs[13])), &conf).expect_ok("ADD after DEL");
    assert_eq!(
        r.ip(),
        Ipv4Addr::new(10, 244, 1, 5),
        "the only free address"
    );
    run(&lab, 0, &call("GC", "", None), &gc_conf(&[])).expect_ok("GC");
}

#[test]
fn sits_in_a_chain_with_the_reference_tuning_plugin() {
    let tuning = Path::new("/usr/lib/cni/tuning");
    assert!(
        tuning.exists(),
        "{} missing: `cargo xtask test` installs containernetworking-plugins",
        tuning.display()
    );
    let lab = lab_of(&LabConfig::new(1, 0).unwrap());
    let c1 = container(&lab, "c1");
    let conf = cni::conf("1.0.0");
    let tuning_conf = json!({
        "cniVersion": "1.0.0", "name": "netpath-test", "type": "tuning",
        "sysctl": {"net.ipv4.conf.eth0.accept_local": "1"},
    });
    let add = call("ADD", "c1", Some(&c1));
    let ours = run(&lab, 0, &add, &conf).expect_ok("netpath ADD");
    let chained = cni::run(
        tuning,
        lab.nodes[0].ns.path(),
        &add,
        &cni::with_prev(&tuning_conf, &ours.json),
    )
    .unwrap()
    .expect_ok("tuning ADD");
    assert_eq!(chained.ip(), ours.ip(), "tuning passed our result on");
    let set = run_in_ns(
        c1.path(),
        &["cat", "/proc/sys/net/ipv4/conf/eth0/accept_local"],
    )
    .unwrap();
    assert_eq!(set.trim(), "1", "tuning found and tuned our interface");
    // The runtime CHECKs and DELs every plugin with the chain's final result.
    let chk = call("CHECK", "c1", Some(&c1));
    run(&lab, 0, &chk, &cni::with_prev(&conf, &chained.json)).expect_ok("CHECK");
    // Behind another plugin, ours is appended to what came before.
    let c2 = container(&lab, "c2");
    let before = json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "lo", "sandbox": c2.path().display().to_string()}],
        "ips": [{"address": "127.0.0.1/8", "interface": 0}],
    });
    let second = run(
        &lab,
        0,
        &call("ADD", "c2", Some(&c2)),
        &cni::with_prev(&conf, &before),
    )
    .expect_ok("ADD after another plugin");
    assert_eq!(second.json["ips"][0]["address"], "127.0.0.1/8");
    assert_eq!(second.json["ips"][1]["interface"], 2);
    let del = call("DEL", "c1", Some(&c1));
    cni::run(
        tuning,
        lab.nodes[0].ns.path(),
        &del,
        &cni::with_prev(&tuning_conf, &chained.json),
    )
    .unwrap()
    .expect_ok("tuning DEL");
    run(&lab, 0, &del, &cni::with_prev(&conf, &chained.json)).expect_ok("netpath DEL");
    run(&lab, 0, &call("DEL", "c2", Some(&c2)), &conf).expect_ok("DEL");
    assert!(book(&lab, 0).allocations.is_empty());
}

#[test]
fn a_plugin_started_by_ip_netns_exec_still_reaches_the_pins() {
    // `ip netns exec` hides the host's bpffs; the plugin finds the pins through the
    // agent's mount namespace.
    let lab = lab_of(&LabConfig::with_spec(generated_spec(1, Backend::Auto).unwrap(), 0).unwrap());
    let c1 = container(&lab, "c1");
    let out = Command::new("ip")
        .args(["netns", "exec", lab.nodes[0].ns.name(), "sh", "-c"])
        .arg(format!(
            "echo '{}' | CNI_COMMAND=ADD CNI_CONTAINERID=c1 CNI_NETNS={} CNI_IFNAME=eth0 CNI_PATH=/ {}",
            cni::conf("1.0.0"),
            c1.path().display(),
            plugin().display()
        ))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ip: Ipv4Addr = serde_json::from_str::<Value>(&stdout).unwrap()["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(endpoint_ips(&lab, 0).contains(&ip));
    run(&lab, 0, &call("DEL", "c1", Some(&c1)), &cni::conf("1.0.0")).expect_ok("DEL");
}

#[test]
fn install_cni_writes_a_working_plugin_and_a_conflist() {
    require_root();
    let dir = std::env::temp_dir().join(format!("netpath-install-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new(plugin())
        .arg("install-cni")
        .arg("--bin-dir")
        .arg(dir.join("bin"))
        .arg("--conf-dir")
        .arg(dir.join("net.d"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let conf: Value =
        serde_json::from_slice(&std::fs::read(dir.join("net.d/10-netpath.conflist")).unwrap())
            .unwrap();
    assert_eq!(conf["cniVersion"], "1.0.0");
    assert_eq!(conf["cniVersions"], json!(["1.0.0", "1.1.0"]));
    assert_eq!(conf["plugins"][0]["type"], "netpath");
    // The installed copy answers as a plugin.
    let installed = dir.join("bin/netpath");
    let version = cni::invoke(
        &installed,
        Path::new("/proc/self/ns/net"),
        &Call::new("VERSION", "", None),
        br#"{"cniVersion":"1.1.0"}"#,
    )
    .unwrap();
    assert!(version.success, "{}", version.stdout);
    assert_eq!(version.json["supportedVersions"][2], "1.1.0");
    std::fs::remove_dir_all(&dir).unwrap();
}
