//! The control plane on etcd, with real etcd processes (a 3-member cluster in the
//! lab's own namespace) and real packets: nodes join, leave, restart and die while
//! pods keep talking; etcd members fail; bad values appear under the prefix; TLS
//! client certificates are required.
use std::{
    collections::BTreeSet,
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use netpath::{
    net::Ipv4Net,
    spec::derived_vtep_mac,
    store::etcd::{EtcdOptions, Member},
};
use netpath_lab::{
    agent_logs, assert_model,
    check::{self, Proto},
    lab::{in_runtime, Lab, LabConfig, LabStore, PROPAGATION_WITHIN},
    routes_cidr,
    service::{ask_tcp, tcp_refused, Backend},
    state, status, wait_for,
};

/// One etcd lab at a time: three members plus agents and traffic per test already
/// load two CPUs; parallel labs made etcd lose its leader for seconds.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct EtcdLab {
    lab: Lab,
    _serial: std::sync::MutexGuard<'static, ()>,
}

impl std::ops::Deref for EtcdLab {
    type Target = Lab;
    fn deref(&self) -> &Lab {
        &self.lab
    }
}

impl std::ops::DerefMut for EtcdLab {
    fn deref_mut(&mut self) -> &mut Lab {
        &mut self.lab
    }
}

fn etcd_lab(nodes: usize, pods: usize, tweak: impl FnOnce(&mut LabConfig)) -> (EtcdLab, LabConfig) {
    let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut cfg = LabConfig::new(nodes, pods).unwrap();
    cfg.store = LabStore::Etcd { tls: false };
    tweak(&mut cfg);
    let lab = netpath_lab::lab_of(&cfg);
    (
        EtcdLab {
            lab,
            _serial: serial,
        },
        cfg,
    )
}

fn kernel_routes_cidr(lab: &Lab, node: usize, cidr: Ipv4Net) -> bool {
    lab.nodes[node]
        .ns
        .run(|| netpath_lab::nl::Nl::new()?.routes())
        .unwrap()
        .iter()
        .any(|r| r.dst == cidr)
}

#[test]
fn nodes_join_through_etcd_pass_the_model_and_join_and_leave_under_traffic() {
    let (mut lab, cfg) = etcd_lab(3, 1, |_| {});
    assert_model(&lab, &[Proto::Tcp, Proto::Udp]);
    // Distinct reservations, and the agents say where their spec comes from.
    let cidrs: BTreeSet<Ipv4Net> = (0..3).map(|i| lab.nodes[i].spec.pod_cidr).collect();
    assert_eq!(cidrs.len(), 3);
    assert!(
        state(&lab, 0).store.starts_with("etcd "),
        "{}",
        state(&lab, 0).store
    );
    let (a, b) = (&lab.nodes[0].pods[0], &lab.nodes[2].pods[0]);
    let stream = check::stream(a.ns.path(), b.ns.path(), b.ip).unwrap();
    let lines = lab.check_join_and_leave(&cfg).unwrap();
    for (line, pass) in &lines {
        eprintln!("{line}");
        assert!(pass, "{line}\n{}", agent_logs(&lab));
    }
    let stats = stream.finish().unwrap();
    assert!(stats.bytes > 0);
    assert!(
        stats.max_gap < Duration::from_millis(500),
        "a join and a leave stalled an unrelated flow for {:?}",
        stats.max_gap
    );
}

#[test]
fn a_killed_agent_restarts_with_the_same_pod_cidr_and_no_peer_notices() {
    let (mut lab, cfg) = etcd_lab(3, 1, |c| c.keep_pins = true);
    let cidr = lab.nodes[1].spec.pod_cidr;
    let (a, b) = (&lab.nodes[0].pods[0], &lab.nodes[1].pods[0]);
    let stream = check::stream(a.ns.path(), b.ns.path(), b.ip).unwrap();
    lab.kill_agent(1);
    // Within the lease nobody drops node2's route.
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(2) {
        assert!(routes_cidr(&lab, 0, cidr) && routes_cidr(&lab, 2, cidr));
        std::thread::sleep(Duration::from_millis(50));
    }
    lab.start_agent(1, &cfg).unwrap();
    assert_eq!(lab.nodes[1].spec.pod_cidr, cidr, "same node, same pod CIDR");
    assert_eq!(state(&lab, 1).pod_cidr, Some(cidr));
    std::thread::sleep(Duration::from_millis(500));
    assert!(routes_cidr(&lab, 0, cidr) && routes_cidr(&lab, 2, cidr));
    let stats = stream.finish().unwrap();
    assert!(stats.bytes > 0);
    assert!(
        stats.max_gap < Duration::from_millis(500),
        "stall {:?}",
        stats.max_gap
    );
}

#[test]
fn a_dead_node_stays_routable_until_its_lease_expires_then_vanishes_everywhere() {
    let ttl = 3;
    let (mut lab, _cfg) = etcd_lab(3, 0, |c| c.lease_ttl = ttl);
    let cidr = lab.nodes[2].spec.pod_cidr;
    lab.kill_agent(2);
    let died = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        routes_cidr(&lab, 0, cidr) && routes_cidr(&lab, 1, cidr),
        "gone before the lease\n{}",
        agent_logs(&lab)
    );
    // Maps and kernel routes: the agent updates the maps first, the kernel next.
    wait_for(
        "routes gone after the lease",
        Duration::from_secs(ttl as u64 + 5),
        || (0..2).all(|n| !routes_cidr(&lab, n, cidr) && !kernel_routes_cidr(&lab, n, cidr)),
    );
    let after = died.elapsed();
    assert!(
        after >= Duration::from_secs(ttl as u64 - 1),
        "gone after {after:?}, lease {ttl} s"
    );
}

#[test]
fn etcd_member_failures_leave_forwarding_alone_and_agents_converge_when_it_returns() {
    let (mut lab, cfg) = etcd_lab(3, 1, |_| {});
    let tcp = |lab: &Lab, x: usize, y: usize| {
        let (a, b) = (&lab.nodes[x].pods[0], &lab.nodes[y].pods[0]);
        check::tcp(a.ns.path(), b.ns.path(), b.ip).unwrap() == a.ip
    };
    // One member of three: nothing changes, a join and a leave still propagate
    // (agents that used the dead member continue on another).
    lab.etcd.as_mut().unwrap().kill_member(0);
    let etcd = lab.etcd.as_ref().unwrap();
    // Member 0 may have been the leader: a write during the election times out
    // (the test's own etcdctl, not an agent), so wait for the new leader.
    etcd.wait_healthy(Duration::from_secs(30)).unwrap();
    let ghost: Ipv4Net = "10.244.77.0/24".parse().unwrap();
    let keys = netpath::store::etcd::Keys::new("/netpath");
    let record = serde_json::json!({
        "underlay": "192.168.56.77/24",
        "pod_cidr": ghost.to_string(),
        "vtep_mac": derived_vtep_mac(Ipv4Addr::new(192, 168, 56, 77)).to_string(),
    });
    let reservation = serde_json::json!({ "node": "ghost" });
    etcd.etcdctl(&["put", &keys.subnet(&ghost), &reservation.to_string()])
        .unwrap();
    etcd.etcdctl(&["put", &keys.node("ghost"), &record.to_string()])
        .unwrap();
    wait_for(
        "a join reaches every agent",
        Duration::from_secs(10),
        || (0..3).all(|n| routes_cidr(&lab, n, ghost)),
    );
    etcd.etcdctl(&["del", &keys.node("ghost")]).unwrap();
    etcd.etcdctl(&["del", &keys.subnet(&ghost)]).unwrap();
    wait_for(
        "a leave reaches every agent",
        Duration::from_secs(10),
        || (0..3).all(|n| !routes_cidr(&lab, n, ghost)),
    );
    for n in 0..3 {
        assert_eq!(
            state(&lab, n).store_error,
            None,
            "node {n} with one member down"
        );
    }
    assert!(tcp(&lab, 0, 1) && tcp(&lab, 2, 0));
    // All of them: forwarding continues on the last state, the agents say so.
    for m in 1..3 {
        lab.etcd.as_mut().unwrap().kill_member(m);
    }
    wait_for(
        "agents report etcd unreachable",
        Duration::from_secs(20),
        || (0..3).all(|n| state(&lab, n).store_error.is_some()),
    );
    assert!(
        tcp(&lab, 0, 1) && tcp(&lab, 1, 2) && tcp(&lab, 2, 0),
        "forwarding without etcd"
    );
    // Back: within 2 s of etcd being healthy the agents are connected again and a
    // change made then reaches them.
    for m in 0..3 {
        lab.etcd.as_mut().unwrap().restart_member(m).unwrap();
    }
    lab.etcd
        .as_ref()
        .unwrap()
        .wait_healthy(Duration::from_secs(30))
        .unwrap();
    let back = wait_for("agents reconnected", Duration::from_secs(2), || {
        (0..3).all(|n| state(&lab, n).store_error.is_none())
    });
    eprintln!(
        "agents reconnected {} ms after etcd was healthy",
        back.as_millis()
    );
    let cidr = lab.nodes[2].spec.pod_cidr;
    lab.kill_agent(2);
    lab.remove_node_from_etcd(&lab.nodes[2].spec.name.clone(), &cfg)
        .unwrap();
    let gone = wait_for("a removal after the outage", PROPAGATION_WITHIN * 2, || {
        !routes_cidr(&lab, 0, cidr) && !routes_cidr(&lab, 1, cidr)
    });
    eprintln!("removal propagated in {} ms", gone.as_millis());
    assert!(tcp(&lab, 0, 1));
}

#[test]
fn bad_values_under_the_prefix_are_ignored_and_an_invalid_config_stops_nobody() {
    let (lab, _cfg) = etcd_lab(2, 1, |_| {});
    let etcd = lab.etcd.as_ref().unwrap();
    let node1_cidr = lab.nodes[0].spec.pod_cidr;
    let thief = serde_json::json!({
        "underlay": "192.168.56.77/24",
        "pod_cidr": node1_cidr.to_string(),
        "vtep_mac": "0e:00:00:00:00:77",
    });
    for (k, v) in [
        ("/netpath/nodes/junk", "{not json".to_string()),
        ("/netpath/nodes/thief", thief.to_string()),
        ("/netpath/subnets/not-a-subnet", "x".to_string()),
        ("/netpath/unrelated", "hello".to_string()),
        (
            "/netpath/config",
            r#"{"cluster_cidr":"10.244.0.0/16","subnet_len":24,"vni":0}"#.to_string(),
        ),
    ] {
        etcd.etcdctl(&["put", k, &v]).unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    for n in 0..2 {
        assert!(lab.agent_pid(n).is_some() && lab.agent_log(n).contains("ignored"));
        let routes = lab.nodes[n].pinned().unwrap().routes().unwrap();
        let to_node1: Vec<_> = routes
            .iter()
            .filter(|(net, p, _)| *net == node1_cidr.network() && *p == node1_cidr.prefix)
            .collect();
        assert!(to_node1.len() <= 1);
        if n == 1 {
            assert_eq!(
                Ipv4Addr::from(to_node1[0].2.node_ip),
                lab.nodes[0].ip(),
                "node1's CIDR still goes to node1, not to the thief"
            );
        }
    }
    assert_model(&lab, &[Proto::Tcp]);
}

#[test]
fn with_client_cert_auth_a_client_without_a_valid_certificate_is_refused() {
    let (lab, _cfg) = etcd_lab(2, 1, |c| c.store = LabStore::Etcd { tls: true });
    assert_model(&lab, &[Proto::Tcp]);
    let etcd = lab.etcd.as_ref().unwrap();
    let tls = etcd.tls().unwrap().clone();
    let endpoints = etcd.endpoints();
    let attempt = |ca: Option<std::path::PathBuf>,
                   cert: Option<std::path::PathBuf>,
                   key: Option<std::path::PathBuf>| {
        let opts = EtcdOptions {
            endpoints: endpoints.clone(),
            prefix: "/netpath".into(),
            ca,
            cert,
            key,
            lease_ttl: 10,
        };
        in_runtime(etcd.ns.path(), || async move {
            let mut c = netpath::store::etcd::connect(&opts).await?;
            c.get("/netpath/config", None).await?;
            Ok(())
        })
    };
    attempt(
        Some(tls.ca.clone()),
        Some(tls.client_cert.clone()),
        Some(tls.client_key.clone()),
    )
    .expect("the right certificate is accepted");
    let no_cert = attempt(Some(tls.ca.clone()), None, None);
    assert!(no_cert.is_err(), "a client without a certificate got in");
    // A certificate from another CA.
    let other = netpath_lab::lab::etcd::make_tls(
        &std::env::temp_dir().join(format!("netpath-other-ca-{}", std::process::id())),
        &[Ipv4Addr::LOCALHOST],
    )
    .unwrap();
    let wrong = attempt(
        Some(tls.ca.clone()),
        Some(other.client_cert.clone()),
        Some(other.client_key.clone()),
    );
    let _ = std::fs::remove_dir_all(other.ca.parent().unwrap());
    let err = format!(
        "{:#}",
        wrong.expect_err("a certificate from another CA got in")
    );
    eprintln!("refused: {err}");
    assert!(!err.is_empty());
}

#[test]
fn fifty_nodes_join_concurrently_with_fifty_distinct_subnets() {
    let (lab, _cfg) = etcd_lab(1, 0, |_| {});
    let etcd = lab.etcd.as_ref().unwrap();
    let opts = EtcdOptions {
        endpoints: etcd.endpoints(),
        prefix: "/netpath".into(),
        ca: None,
        cert: None,
        key: None,
        lease_ttl: 30,
    };
    let cidrs: Vec<Ipv4Net> = in_runtime(etcd.ns.path(), || async move {
        let joins = (0..50u32).map(|i| {
            let opts = opts.clone();
            tokio::spawn(async move {
                let underlay = Ipv4Net::new(
                    Ipv4Addr::new(172, 20, (i / 200) as u8, (i % 200 + 2) as u8),
                    16,
                );
                Member::join(
                    &opts,
                    &format!("j{i}"),
                    underlay,
                    derived_vtep_mac(underlay.addr),
                    &[],
                    // No encryption in this cluster: no key is read from it.
                    &std::env::temp_dir(),
                )
                .await
                .map(|m| m.record.pod_cidr)
            })
        });
        let mut out = Vec::new();
        for j in futures_join(joins.collect()).await {
            out.push(j??);
        }
        Ok(out)
    })
    .unwrap();
    let distinct: BTreeSet<_> = cidrs.iter().copied().collect();
    assert_eq!(distinct.len(), 50, "{cidrs:?}");
    let all: Vec<_> = distinct
        .iter()
        .chain([&lab.nodes[0].spec.pod_cidr])
        .collect();
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            assert!(!a.overlaps(b), "{a} overlaps {b}");
        }
    }
}

async fn futures_join<T>(
    handles: Vec<tokio::task::JoinHandle<T>>,
) -> Vec<Result<T, tokio::task::JoinError>> {
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await);
    }
    out
}

/// Blackholes (`cut`) or restores the routes from node `node` to every etcd member.
fn cut_off_from_etcd(lab: &Lab, node: usize, cut: bool) {
    let verb = if cut { "add" } else { "del" };
    for e in lab.etcd.as_ref().unwrap().endpoints() {
        let ip = e
            .trim_start_matches("http://")
            .split(':')
            .next()
            .unwrap()
            .to_string();
        netpath_lab::run_in_ns(
            lab.nodes[node].ns.path(),
            &["ip", "route", verb, "blackhole", &format!("{ip}/32")],
        )
        .unwrap();
    }
}

#[test]
fn a_node_cut_off_from_etcd_keeps_forwarding_and_catches_up_when_it_returns() {
    let (mut lab, cfg) = etcd_lab(3, 1, |_| {});
    cut_off_from_etcd(&lab, 0, true);
    wait_for(
        "node1 reports etcd unreachable",
        Duration::from_secs(30),
        || state(&lab, 0).store_error.is_some(),
    );
    let tcp = |lab: &Lab, x: usize, y: usize| {
        let (a, b) = (&lab.nodes[x].pods[0], &lab.nodes[y].pods[0]);
        check::tcp(a.ns.path(), b.ns.path(), b.ip).unwrap() == a.ip
    };
    assert!(
        tcp(&lab, 0, 1) && tcp(&lab, 2, 0),
        "forwarding while cut off"
    );
    // node3 leaves while node1 cannot hear it.
    let cidr = lab.nodes[2].spec.pod_cidr;
    lab.kill_agent(2);
    lab.remove_node_from_etcd(&lab.nodes[2].spec.name.clone(), &cfg)
        .unwrap();
    wait_for("node2 drops node3", PROPAGATION_WITHIN, || {
        !routes_cidr(&lab, 1, cidr)
    });
    assert!(routes_cidr(&lab, 0, cidr), "node1 cannot know yet");
    cut_off_from_etcd(&lab, 0, false);
    let back = wait_for("node1 catches up", Duration::from_secs(3), || {
        state(&lab, 0).store_error.is_none() && !routes_cidr(&lab, 0, cidr)
    });
    eprintln!(
        "node1 caught up {} ms after its link to etcd came back",
        back.as_millis()
    );
    assert_eq!(
        state(&lab, 0).pod_cidr,
        Some(lab.nodes[0].spec.pod_cidr),
        "same reservation"
    );
    assert!(tcp(&lab, 0, 1) && tcp(&lab, 1, 0));
}

#[test]
fn an_agent_keeps_its_own_keys_and_says_loudly_when_its_subnet_is_taken() {
    let (lab, _cfg) = etcd_lab(3, 1, |_| {});
    let etcd = lab.etcd.as_ref().unwrap();
    let keys = netpath::store::etcd::Keys::new("/netpath");
    let name = lab.nodes[1].spec.name.clone();
    let cidr = lab.nodes[1].spec.pod_cidr;
    let (record_key, subnet_key) = (keys.node(&name), keys.subnet(&cidr));
    let (code, doc) = status(&lab, 1);
    assert_eq!(code, 0, "a healthy node, judged from the host: {doc:#}");

    // An operator's mistake: node2's record and reservation deleted behind its back.
    etcd.etcdctl(&["del", &record_key]).unwrap();
    etcd.etcdctl(&["del", &subnet_key]).unwrap();
    let took = wait_for("node2 republishes its keys", PROPAGATION_WITHIN * 4, || {
        let rec = etcd.etcdctl(&["get", &record_key]).unwrap_or_default();
        let sub = etcd.etcdctl(&["get", &subnet_key]).unwrap_or_default();
        rec.contains(&cidr.to_string()) && sub.contains(&name)
    });
    eprintln!("keys republished after {took:?}");
    wait_for("peers route to node2 again", PROPAGATION_WITHIN * 4, || {
        routes_cidr(&lab, 0, cidr) && routes_cidr(&lab, 2, cidr)
    });
    assert_eq!(state(&lab, 1).pod_cidr, Some(cidr));
    assert_model(&lab, &[Proto::Tcp]);

    // Now its subnet is reserved by another name: node2 must not go on as if nothing
    // happened.
    let thief = serde_json::json!({ "node": "thief" }).to_string();
    etcd.etcdctl(&["put", &subnet_key, &thief]).unwrap();
    wait_for(
        "node2 reports the lost subnet",
        PROPAGATION_WITHIN * 4,
        || state(&lab, 1).membership_error.is_some(),
    );
    let s = state(&lab, 1);
    assert_eq!(s.pod_cidr, None, "no pod CIDR handed to the CNI plugin");
    wait_for("node2 withdraws its record", PROPAGATION_WITHIN * 4, || {
        etcd.etcdctl(&["get", &record_key])
            .is_ok_and(|out| out.trim().is_empty())
    });
    assert!(
        s.membership_error.as_deref().unwrap().contains("thief"),
        "{:?}",
        s.membership_error
    );
    let (code, doc) = status(&lab, 1);
    assert_eq!(code, 1, "status of a node without its subnet: {doc:#}");
    let failing = doc["ready"]["failing"].to_string();
    assert!(failing.contains("pod CIDR held"), "{failing}");
    // The CNI plugin refuses to wire a pod: try again later.
    let pod = netpath_lab::netns::NetNs::create(&format!("{}-late", lab.prefix)).unwrap();
    let reply = netpath_lab::cni::run(
        &netpath_lab::lab::agent_binary().unwrap(),
        lab.nodes[1].ns.path(),
        &netpath_lab::cni::Call::new("ADD", "late", Some(pod.path())),
        &netpath_lab::cni::conf("1.0.0"),
    )
    .unwrap();
    assert_eq!(reply.code(), Some(11), "{}", reply.stdout);
    assert!(reply.msg().contains("thief"), "{}", reply.stdout);
    // Said in the log, again and again while it lasts.
    wait_for(
        "the loss logged repeatedly",
        Duration::from_secs(15),
        || {
            lab.agent_log(1)
                .matches("hands out no pod addresses")
                .count()
                >= 2
        },
    );

    // The thief's reservation goes: node2 claims its subnet again and recovers.
    etcd.etcdctl(&["del", &subnet_key]).unwrap();
    wait_for(
        "node2 holds its subnet again",
        PROPAGATION_WITHIN * 4,
        || {
            let s = state(&lab, 1);
            s.membership_error.is_none() && s.pod_cidr == Some(cidr)
        },
    );
    let record = etcd.etcdctl(&["get", &record_key]).unwrap();
    assert!(
        record.contains(&cidr.to_string()),
        "its record is back: {record}"
    );
    wait_for("peers route to node2 again", PROPAGATION_WITHIN * 4, || {
        routes_cidr(&lab, 0, cidr) && routes_cidr(&lab, 2, cidr)
    });
    let (code, doc) = status(&lab, 1);
    assert_eq!(code, 0, "{doc:#}");
    assert_model(&lab, &[Proto::Tcp]);
}

#[test]
fn a_node_cut_off_for_longer_than_its_lease_comes_back_with_its_subnet() {
    let ttl = 5;
    let (lab, _cfg) = etcd_lab(3, 1, |c| c.lease_ttl = ttl);
    let cidr = lab.nodes[0].spec.pod_cidr;
    let cut = |verb: &str| cut_off_from_etcd(&lab, 0, verb == "add");
    cut("add");
    // Its lease runs out: everyone else forgets node1.
    wait_for(
        "peers drop node1 after its lease",
        Duration::from_secs(30),
        || !routes_cidr(&lab, 1, cidr) && !routes_cidr(&lab, 2, cidr),
    );
    cut("del");
    // Back: a new lease, the same subnet, its record again, routes everywhere.
    let took = wait_for("peers route node1 again", Duration::from_secs(15), || {
        routes_cidr(&lab, 1, cidr) && routes_cidr(&lab, 2, cidr)
    });
    eprintln!("node1 back in everyone's maps {took:?} after the cut healed");
    wait_for(
        "node1 reports etcd reachable",
        Duration::from_secs(5),
        || state(&lab, 0).store_error.is_none(),
    );
    let s = state(&lab, 0);
    assert_eq!(s.pod_cidr, Some(cidr), "the same subnet");
    assert_eq!(s.membership_error, None);
    assert_model(&lab, &[Proto::Tcp]);
}

#[test]
fn a_restarted_agent_whose_reservation_was_deleted_keeps_its_pods_subnet() {
    let ttl = 5;
    let (mut lab, cfg) = etcd_lab(3, 1, |c| {
        c.keep_pins = true;
        c.lease_ttl = ttl;
    });
    let keys = netpath::store::etcd::Keys::new("/netpath");
    let (n1, n2) = (lab.nodes[0].spec.clone(), lab.nodes[1].spec.clone());
    // Both agents down (pods keep running), both reservations deleted: node1's
    // subnet is the first free one now, so a node that picked "the first free
    // subnet" would take node1's and strand its own pods.
    lab.kill_agent(0);
    lab.kill_agent(1);
    for n in [&n1, &n2] {
        lab.etcd
            .as_ref()
            .unwrap()
            .etcdctl(&["del", &keys.subnet(&n.pod_cidr)])
            .unwrap();
    }
    lab.start_agent(1, &cfg).unwrap();
    assert_eq!(
        lab.nodes[1].spec.pod_cidr, n2.pod_cidr,
        "node2 kept its pods' subnet"
    );
    assert_eq!(state(&lab, 1).pod_cidr, Some(n2.pod_cidr));
    lab.start_agent(0, &cfg).unwrap();
    assert_eq!(
        lab.nodes[0].spec.pod_cidr, n1.pod_cidr,
        "node1 kept its pods' subnet"
    );
    wait_for("everyone routes both again", PROPAGATION_WITHIN * 4, || {
        (0..3).all(|i| {
            (i == 0 || routes_cidr(&lab, i, n1.pod_cidr))
                && (i == 1 || routes_cidr(&lab, i, n2.pod_cidr))
        })
    });
    // The killed agents' leases run out now: their records must be on the new ones.
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(ttl as u64 + 3) {
        for (i, n) in [(1, &n1), (2, &n1), (0, &n2), (2, &n2)] {
            assert!(
                routes_cidr(&lab, i, n.pod_cidr),
                "node{} lost {} after the old lease expired",
                i + 1,
                n.pod_cidr
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_model(&lab, &[Proto::Tcp]);
}

#[test]
fn services_from_etcd_reach_their_backends_and_a_bad_record_is_left_out_alone() {
    let (lab, _cfg) = etcd_lab(2, 1, |_| {});
    let backend = &lab.nodes[1].pods[0];
    let _server = Backend::serve(backend.ns.path(), backend.ip, 8080).unwrap();
    let etcd = lab.etcd.as_ref().unwrap();
    let web = r#"{"namespace":"default","name":"web","cluster_ip":"10.96.0.10","ports":[{"port":80,"target_port":8080}]}"#;
    let slice = format!(r#"{{"endpoints":[{{"address":"{}"}}]}}"#, backend.ip);
    // A VIP inside the pod CIDR: refused with its field, the rest applied.
    let bad =
        r#"{"namespace":"default","name":"bad","cluster_ip":"10.244.1.99","ports":[{"port":80}]}"#;
    etcd.etcdctl(&["put", "/netpath/services/default/web", web])
        .unwrap();
    etcd.etcdctl(&["put", "/netpath/endpoints/default/web", &slice])
        .unwrap();
    etcd.etcdctl(&["put", "/netpath/services/default/bad", bad])
        .unwrap();
    let client = &lab.nodes[0].pods[0];
    let vip = Ipv4Addr::new(10, 96, 0, 10);
    let took = wait_for("the service from etcd", PROPAGATION_WITHIN, || {
        ask_tcp(client.ns.path(), vip, 80).is_ok()
    });
    eprintln!("service reachable {took:?} after the put");
    let a = ask_tcp(client.ns.path(), vip, 80).unwrap();
    assert_eq!((a.backend, a.client), (backend.ip, client.ip));
    let table = lab.nodes[0].pinned().unwrap().service_table();
    assert_eq!(table.services.len(), 1, "only web's front end: {table:?}");
    wait_for("the refusal in the log", PROPAGATION_WITHIN, || {
        lab.agent_log(0).contains("service default/bad")
    });
    assert!(lab.agent_log(0).contains("cluster_ip = \"10.244.1.99\""));
    // Endpoints gone: refused at once; the service gone: nothing left in the maps.
    etcd.etcdctl(&["del", "/netpath/endpoints/default/web"])
        .unwrap();
    wait_for("refusal without endpoints", PROPAGATION_WITHIN, || {
        tcp_refused(client.ns.path(), vip, 80).is_ok()
    });
    etcd.etcdctl(&["del", "/netpath/services/default/web"])
        .unwrap();
    wait_for("the front end removed", PROPAGATION_WITHIN, || {
        lab.nodes[0]
            .pinned()
            .is_ok_and(|p| p.service_table().services.is_empty())
    });
}

/// `netpath cluster init` takes the settings whole (the lab passes its spec file): a
/// BGP cluster on etcd routes by BGP, through the lab's router, and passes the model.
#[test]
fn bgp_routing_with_the_etcd_store_learns_every_node_through_the_router() {
    let (lab, _) = etcd_lab(3, 1, |cfg| {
        cfg.spec = netpath_lab::lab::bgp_spec(&cfg.spec, true).unwrap();
    });
    lab.wait_bgp_converged(Duration::from_secs(30)).unwrap();
    assert_model(&lab, &[Proto::Tcp, Proto::Udp]);
    for i in 0..3 {
        let s = state(&lab, i);
        assert!(s.store.starts_with("etcd "), "{}", s.store);
        let bgp = s.bgp.expect("BGP runs: routing came through etcd");
        let others: BTreeSet<Ipv4Net> = (0..3)
            .filter(|j| *j != i)
            .map(|j| lab.nodes[j].spec.pod_cidr)
            .collect();
        let learned: BTreeSet<Ipv4Net> = bgp.routes.keys().copied().collect();
        assert_eq!(learned, others, "node{} learned every other node", i + 1);
    }
}
