//! Weave's way, with real agents and packets: nodes given one seed address find each
//! other by gossip, claim distinct pod CIDRs without a coordinator, survive a killed
//! agent, lose a node stopped for good within the failure detector's bound, and drop
//! what the cluster key does not vouch for. The claims race is run with many
//! members in one process over loopback; the start orders that make claims clash
//! are in `claims`.
#[path = "gossip/claims.rs"]
mod claims;

use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    process::Command,
    time::Duration,
};

use netpath::{
    net::Ipv4Net,
    spec::derived_vtep_mac,
    store::{
        gossip::{GossipOptions, Member, DEFAULT_JOIN_WAIT},
        model::ClusterConfig,
    },
};
use netpath_lab::{
    agent_logs, assert_model,
    check::{self, Proto},
    lab::{Lab, LabConfig, LabStore, GOSSIP_GONE_WITHIN},
    observe::http_get,
    routes_cidr, state, wait_for,
};

/// One gossip lab at a time: each join waits for its claim to settle, and parallel
/// labs on two CPUs stretch the failure detector's timings.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn gossip_lab(
    nodes: usize,
    tweak: impl FnOnce(&mut LabConfig),
) -> (Lab, LabConfig, std::sync::MutexGuard<'static, ()>) {
    let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut cfg = LabConfig::new(nodes, 1).unwrap();
    cfg.store = LabStore::Gossip { key: true };
    tweak(&mut cfg);
    let lab = netpath_lab::lab_of(&cfg);
    (lab, cfg, serial)
}

#[test]
fn three_nodes_given_one_seed_converge_pass_the_model_and_join_and_leave() {
    let (mut lab, cfg, _serial) = gossip_lab(3, |_| {});
    assert_model(&lab, &[Proto::Tcp, Proto::Udp]);
    let cidrs: BTreeSet<Ipv4Net> = (0..3).map(|i| lab.nodes[i].spec.pod_cidr).collect();
    assert_eq!(cidrs.len(), 3, "{cidrs:?}");
    let s = state(&lab, 1);
    assert!(s.store.starts_with("gossip "), "{}", s.store);
    assert!(s.store_watching);
    assert_eq!(s.store_dropped, 0);
    let lines = lab.check_join_and_leave(&cfg).unwrap();
    for (line, pass) in &lines {
        eprintln!("{line}");
        assert!(pass, "{line}\n{}", agent_logs(&lab));
    }
}

#[test]
fn a_killed_agent_keeps_its_routes_and_its_subnet_while_it_restarts() {
    let (mut lab, cfg, _serial) = gossip_lab(3, |c| c.keep_pins = true);
    let cidr = lab.nodes[1].spec.pod_cidr;
    let (a, b) = (&lab.nodes[0].pods[0], &lab.nodes[1].pods[0]);
    let stream = check::stream(a.ns.path(), b.ns.path(), b.ip).unwrap();
    lab.kill_agent(1);
    std::thread::sleep(Duration::from_millis(500));
    lab.start_agent(1, &cfg).unwrap();
    assert_eq!(
        lab.nodes[1].spec.pod_cidr, cidr,
        "the restarted node claimed anew"
    );
    // Past the detector's bound: the restarted node (a new generation at the same
    // address) replaced the old one, it was never declared down.
    std::thread::sleep(GOSSIP_GONE_WITHIN);
    for i in [0, 2] {
        assert!(routes_cidr(&lab, i, cidr), "{}", agent_logs(&lab));
    }
    let stats = stream.finish().unwrap();
    assert!(stats.bytes > 0);
    assert!(
        stats.max_gap < Duration::from_secs(1),
        "a restart stalled a flow to the node for {:?}",
        stats.max_gap
    );
    assert_model(&lab, &[Proto::Tcp]);
}

#[test]
fn datagrams_without_the_cluster_key_are_dropped_counted_and_install_nothing() {
    let (mut lab, cfg, _serial) = gossip_lab(2, |_| {});
    let before: Vec<usize> = (0..2)
        .map(|i| lab.nodes[i].pinned().unwrap().routes().unwrap().len())
        .collect();
    let target = SocketAddr::new(lab.nodes[1].spec.ip().into(), 7946);
    lab.nodes[0]
        .ns
        .run(|| {
            let s = UdpSocket::bind("0.0.0.0:0")?;
            // Garbage, an empty datagram, and one shaped like gossip (magic, kind,
            // time) with a tag made without the key.
            s.send_to(b"\xde\xad\xbe\xef not gossip at all", target)?;
            s.send_to(b"", target)?;
            let mut forged = vec![0x4e, 0];
            forged.extend_from_slice(&0u64.to_be_bytes());
            forged.extend_from_slice(&[0x55; 64]);
            s.send_to(&forged, target)?;
            Ok(())
        })
        .unwrap();
    wait_for(
        "the three datagrams counted",
        Duration::from_secs(5),
        || {
            netpath::state::AgentState::read(&lab.nodes[1].state_dir())
                .ok()
                .flatten()
                .is_some_and(|s| s.store_dropped >= 3)
        },
    );
    // Where an operator looks: the node's metrics.
    let (status, metrics) = http_get(
        lab.nodes[1].ns.path(),
        "127.0.0.1:9970".parse().unwrap(),
        "/metrics",
    )
    .unwrap();
    assert_eq!(status, 200);
    let dropped: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("netpath_gossip_dropped_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no netpath_gossip_dropped_total in:\n{metrics}"));
    assert!(dropped >= 3, "{dropped} dropped counted");
    let after: Vec<usize> = (0..2)
        .map(|i| lab.nodes[i].pinned().unwrap().routes().unwrap().len())
        .collect();
    assert_eq!(before, after);
    assert_model(&lab, &[Proto::Tcp]);

    // A node whose settings differ is refused, with the field named.
    let mut other = lab.spec.settings.clone();
    other.vni += 1;
    let config = ClusterConfig {
        settings: other,
        subnet_len: lab.nodes[0].spec.pod_cidr.prefix,
    };
    let path =
        std::env::temp_dir().join(format!("netpath-odd-settings-{}.toml", std::process::id()));
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    let args = lab.gossip.clone().unwrap();
    let mut wrong = args.clone();
    let at = wrong.iter().position(|a| a == "--cluster-config").unwrap();
    wrong[at + 1] = path.display().to_string();
    lab.gossip = Some(wrong);
    let first = lab.nodes[0].spec.underlay;
    let underlay = Ipv4Net::new(first.subnet().nth(41), first.prefix);
    let err = lab
        .join_node("node-odd", underlay, 0, &cfg)
        .expect_err("a node with other settings joined");
    lab.gossip = Some(args);
    let _ = std::fs::remove_file(&path);
    let msg = format!("{err:#}");
    assert!(msg.contains("vni"), "{msg}");
}

#[test]
fn a_partition_keeps_each_side_forwarding_and_heals_without_a_restart() {
    let (lab, _cfg, _serial) = gossip_lab(3, |_| {});
    let cidrs: Vec<Ipv4Net> = (0..3).map(|i| lab.nodes[i].spec.pod_cidr).collect();
    // Blackhole routes in the nodes' own namespaces: node2 on one side, node0 and
    // node1 on the other.
    let cut = |verb: &str| {
        blackhole(&lab, verb, 0, 2);
        blackhole(&lab, verb, 1, 2);
    };
    let all_routed = || {
        (0..3).all(|a| {
            (0..3)
                .filter(|&b| b != a)
                .all(|b| routes_cidr(&lab, a, cidrs[b]))
        })
    };
    cut("add");
    let split = wait_for(
        "each side withdrew the other's routes",
        Duration::from_secs(20),
        || {
            !routes_cidr(&lab, 0, cidrs[2])
                && !routes_cidr(&lab, 1, cidrs[2])
                && !routes_cidr(&lab, 2, cidrs[0])
                && !routes_cidr(&lab, 2, cidrs[1])
        },
    );
    eprintln!("partition noticed on both sides after {split:?}");
    // Each side keeps forwarding what it can reach.
    let (a, b) = (&lab.nodes[0].pods[0], &lab.nodes[1].pods[0]);
    assert_eq!(check::tcp(a.ns.path(), b.ns.path(), b.ip).unwrap(), a.ip);
    cut("del");
    let healed = wait_for(
        "the views merged again",
        Duration::from_secs(30),
        all_routed,
    );
    eprintln!("healed: every node routes every other {healed:?} after the cut ended");
    let after: Vec<Ipv4Net> = (0..3)
        .map(|i| state(&lab, i).pod_cidr.expect("a pod CIDR"))
        .collect();
    assert_eq!(after, cidrs, "a subnet changed hands across the partition");
    for i in 0..3 {
        assert_eq!(
            state(&lab, i).membership_error,
            None,
            "{}",
            agent_logs(&lab)
        );
    }
    assert_model(&lab, &[Proto::Tcp]);
}

/// Many members joining at once through one seed, in one process over loopback:
/// each settles on a subnet of its own, none overlapping.
#[test]
fn thirty_members_joining_at_once_claim_thirty_distinct_subnets() {
    const MEMBERS: usize = 30;
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let config: ClusterConfig =
        toml::from_str("cluster_cidr = \"10.244.0.0/16\"\nsubnet_len = 24\nbackend = \"vxlan\"\n")
            .unwrap();
    let dir = tempdir();
    let port0 = free_port_base();
    let opts = |i: usize| GossipOptions {
        listen: SocketAddr::new(Ipv4Addr::new(127, 0, 0, i as u8 + 1).into(), port0),
        seeds: vec![SocketAddr::new(Ipv4Addr::new(127, 0, 0, 1).into(), port0)],
        key: Some(b"thirty members' key".to_vec()),
        config: config.clone(),
        forget_after: Duration::from_secs(3600),
        join_wait: DEFAULT_JOIN_WAIT,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let claims: Vec<(Ipv4Net, Option<String>)> = rt.block_on(async {
        let joins = (0..MEMBERS).map(|i| {
            let o = opts(i);
            let state_dir = dir.join(format!("m{i}"));
            std::fs::create_dir_all(&state_dir).unwrap();
            let underlay = Ipv4Net::new(Ipv4Addr::new(127, 0, 0, i as u8 + 1), 8);
            tokio::spawn(async move {
                let mac = derived_vtep_mac(underlay.addr);
                let m = Member::join(&o, &format!("m{i:02}"), underlay, mac, &[], &state_dir)
                    .await
                    .expect("join");
                let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
                let claim = (m.pod_cidr(), m.lost().map(str::to_string));
                tokio::spawn(m.run(tx));
                tokio::spawn(async move { while rx.recv().await.is_some() {} });
                claim
            })
        });
        let mut out = Vec::new();
        for j in joins.collect::<Vec<_>>() {
            out.push(j.await.unwrap());
        }
        out
    });
    rt.shutdown_background();
    let _ = std::fs::remove_dir_all(&dir);
    let unsettled: Vec<_> = claims.iter().filter(|(_, lost)| lost.is_some()).collect();
    assert!(unsettled.is_empty(), "claims not settled: {unsettled:?}");
    for (i, (a, _)) in claims.iter().enumerate() {
        for (b, _) in &claims[i + 1..] {
            assert!(!a.overlaps(b), "{a} and {b} overlap: {claims:?}");
        }
    }
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("netpath-gossip-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A UDP port free on 127.0.0.1 now (every member binds it on its own address).
fn free_port_base() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Adds (`add`) or removes (`del`) blackhole routes between nodes `a` and `b`'s
/// underlay addresses, in their own namespaces: neither hears the other.
fn blackhole(lab: &Lab, verb: &str, a: usize, b: usize) {
    for (from, to) in [(a, b), (b, a)] {
        let dst = format!("{}/32", lab.nodes[to].spec.ip());
        let st = lab.nodes[from]
            .ns
            .run(|| {
                Ok(Command::new("ip")
                    .args(["route", verb, "blackhole", &dst])
                    .status()?)
            })
            .unwrap();
        assert!(
            st.success(),
            "ip route {verb} blackhole {dst} on node {from}"
        );
    }
}
