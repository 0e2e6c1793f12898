//! The claims rule from outside, with real agents, in the orders users start nodes:
//! a node that has heard nobody never takes the subnet of a settled node whose pods
//! hold addresses from it; a node that hears nobody keeps knocking on its seeds; a
//! loser that has handed out no address claims again at once; and a stop during
//! the join wait is answered at once. The nodes' names are chosen so that both
//! first pick the same subnet: the clash the rule must decide.
use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use netpath::{net::Ipv4Net, spec::ClusterSpec, state::AgentState, store::model};
use netpath_lab::{
    agent_logs, check,
    lab::{Lab, LabConfig},
    routes_cidr, state, wait_for,
};

use super::{blackhole, gossip_lab};

/// A claim settles after 3 s unchallenged and a lonely node knocks every 2 s; the
/// rest is slack for a loaded machine.
const SETTLED_WITHIN: Duration = Duration::from_secs(15);

/// Two node names whose first claims in `spec`'s cluster pick the same subnet, and
/// that subnet.
fn clashing_names(spec: &ClusterSpec) -> (String, String, Ipv4Net) {
    let cluster = spec.settings.cluster_cidr;
    let len = spec.nodes[0].pod_cidr.prefix;
    let first =
        |name: &str| model::pick_subnet_after_conflict(cluster, len, &BTreeSet::new(), name, 0);
    let seed = "seed".to_string();
    let want = first(&seed).expect("a free subnet");
    let other = (0..100_000)
        .map(|k| format!("x{k}"))
        .find(|n| first(n) == Some(want))
        .expect("a name picking the same subnet");
    (seed, other, want)
}

/// A two-node gossip lab whose agents the test starts itself; node 0 is the one
/// the lab names as every node's seed. Returns the subnet both names pick first.
fn clash_lab() -> (Lab, LabConfig, std::sync::MutexGuard<'static, ()>, Ipv4Net) {
    let mut first = None;
    let (lab, cfg, serial) = gossip_lab(2, |c| {
        c.start_agents = false;
        let (a, b, subnet) = clashing_names(&c.spec);
        let mut d = c.spec.to_draft();
        d.nodes[0].name = a;
        d.nodes[1].name = b;
        c.spec = d.validate().expect("renamed spec");
        first = Some(subnet);
    });
    (lab, cfg, serial, first.expect("names chosen"))
}

/// What node `i`'s agent last published, if it has yet.
fn published(lab: &Lab, i: usize) -> Option<AgentState> {
    AgentState::read(&lab.nodes[i].state_dir()).ok().flatten()
}

/// The gossip flag `flag` set to `value` for agents started from now on.
fn set_flag(lab: &mut Lab, flag: &str, value: &str) {
    let args = lab.gossip.as_mut().expect("a gossip lab");
    match args.iter().position(|a| a == flag) {
        Some(at) => args[at + 1] = value.to_string(),
        None => args.extend([flag.to_string(), value.to_string()]),
    }
}

/// Pod 0 of node `a` reaches pod 0 of node `b` over TCP, its address kept.
fn reaches(lab: &Lab, a: usize, b: usize) {
    let (p, q) = (&lab.nodes[a].pods[0], &lab.nodes[b].pods[0]);
    let seen = check::tcp(p.ns.path(), q.ns.path(), q.ip);
    assert_eq!(
        seen.as_ref().ok(),
        Some(&p.ip),
        "{} -> {}: {seen:?}\n{}",
        p.ip,
        q.ip,
        agent_logs(lab)
    );
}

/// The sequence found from outside: X is started with the seed as its peer while
/// the seed is down; the seed starts 5 s later with no peers, settles, and its pod
/// gets an address; only then does X hear it. X's claim is earlier but was made
/// hearing nobody and never settled: the seed keeps its subnet, X claims another
/// (within its join wait: it keeps knocking), and no address is handed out twice.
#[test]
fn a_blind_claim_never_takes_the_subnet_of_a_settled_node_with_pods() {
    let (mut lab, cfg, _serial, subnet) = clash_lab();
    let (seed, x) = (0, 1);
    blackhole(&lab, "add", seed, x);
    lab.spawn_agent(x, &cfg).unwrap();
    std::thread::sleep(Duration::from_secs(5));
    lab.start_agent(seed, &cfg).unwrap();
    assert_eq!(
        lab.nodes[seed].spec.pod_cidr, subnet,
        "the names' first pick"
    );
    lab.attach_pods(seed, 1).unwrap();
    let seed_pod = lab.nodes[seed].pods[0].ip;
    assert!(subnet.contains(seed_pod));
    let lone = published(&lab, x);
    assert!(
        lone.as_ref().is_none_or(|s| s.pod_cidr.is_none()),
        "X settled while it heard nobody: {lone:?}"
    );

    blackhole(&lab, "del", seed, x);
    let took = wait_for(
        "X settled on a subnet after hearing the seed",
        SETTLED_WITHIN,
        || published(&lab, x).is_some_and(|s| s.pod_cidr.is_some()),
    );
    eprintln!("X settled {took:?} after it could hear the seed");
    let theirs = state(&lab, x).pod_cidr.unwrap();
    assert!(
        !theirs.overlaps(&subnet),
        "X took the seed's {subnet}: {theirs}\n{}",
        agent_logs(&lab)
    );
    let s = state(&lab, seed);
    assert_eq!(s.pod_cidr, Some(subnet), "{}", agent_logs(&lab));
    assert_eq!(s.membership_error, None, "{}", agent_logs(&lab));
    assert!(
        !lab.agent_log(seed).contains("lost its pod CIDR"),
        "{}",
        lab.agent_log(seed)
    );
    lab.wait_agent_ready(x).unwrap();
    wait_for("each node routes the other", Duration::from_secs(5), || {
        routes_cidr(&lab, seed, theirs) && routes_cidr(&lab, x, subnet)
    });
    lab.attach_pods(x, 1).unwrap();
    let x_pod = lab.nodes[x].pods[0].ip;
    assert_ne!(x_pod, seed_pod, "one address handed out twice");
    assert!(theirs.contains(x_pod));
    reaches(&lab, seed, x);
    reaches(&lab, x, seed);
}

/// Two nodes, each given the other as its seed, start unable to hear each other,
/// both claim the same subnet and start their agents unsettled (a short join wait).
/// Once they hear each other, one keeps the subnet and the other, having handed
/// out no address, claims another at once: no restart needed.
#[test]
fn two_blind_nodes_that_clash_end_on_distinct_subnets_without_a_restart() {
    let (mut lab, cfg, _serial, subnet) = clash_lab();
    let both = format!("{},{}", lab.nodes[0].spec.ip(), lab.nodes[1].spec.ip());
    set_flag(&mut lab, "--peers", &both);
    set_flag(&mut lab, "--join-wait", "2s");
    blackhole(&lab, "add", 0, 1);
    for i in 0..2 {
        lab.spawn_agent(i, &cfg).unwrap();
    }
    let unsettled = |s: &AgentState| {
        s.pod_cidr.is_none()
            && s.membership_error
                .as_deref()
                .is_some_and(|e| e.contains(&subnet.to_string()))
    };
    wait_for(
        "both agents running, each claiming the same subnet unsettled",
        Duration::from_secs(30),
        || (0..2).all(|i| published(&lab, i).is_some_and(|s| unsettled(&s))),
    );

    blackhole(&lab, "del", 0, 1);
    let took = wait_for(
        "both settled on subnets of their own",
        SETTLED_WITHIN,
        || (0..2).all(|i| published(&lab, i).is_some_and(|s| s.pod_cidr.is_some())),
    );
    eprintln!("both settled {took:?} after they could hear each other");
    let cidrs: Vec<Ipv4Net> = (0..2).map(|i| state(&lab, i).pod_cidr.unwrap()).collect();
    assert!(!cidrs[0].overlaps(&cidrs[1]), "{cidrs:?}");
    assert!(cidrs.contains(&subnet), "neither kept {subnet}: {cidrs:?}");
    for i in 0..2 {
        assert_eq!(state(&lab, i).membership_error, None);
        lab.wait_agent_ready(i).unwrap();
    }
    wait_for("each node routes the other", Duration::from_secs(5), || {
        routes_cidr(&lab, 0, cidrs[1]) && routes_cidr(&lab, 1, cidrs[0])
    });
    for i in 0..2 {
        lab.attach_pods(i, 1).unwrap();
    }
    reaches(&lab, 0, 1);
    reaches(&lab, 1, 0);
}

/// SIGTERM while the node waits for its claim to settle (its seed silent): the
/// agent stops within a second, before it loads anything.
#[test]
fn a_stop_during_the_join_wait_ends_the_agent_within_a_second() {
    let (mut lab, cfg, _serial, _) = clash_lab();
    // Node 1's seed, node 0, never runs: node 1 hears nobody.
    lab.spawn_agent(1, &cfg).unwrap();
    wait_for("the claim made", Duration::from_secs(10), || {
        lab.agent_log(1).contains("claimed a pod CIDR")
    });
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    lab.stop_agent(1);
    let took = t.elapsed();
    eprintln!("the agent ended {took:?} after SIGTERM in its join wait");
    let log = lab.agent_log(1);
    assert!(
        took < Duration::from_secs(1),
        "stopped after {took:?}:\n{log}"
    );
    assert!(!log.contains("agent ready"), "{log}");
    assert!(log.contains("stopped while joining"), "{log}");
}
