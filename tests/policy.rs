//! Network policy in the programs, with real connections through real kernels:
//! cases of Kubernetes' own `test/e2e/network/netpol/network_policy.go` on its model
//! (namespaces x, y, z; pods a, b, c; TCP and UDP on 80 and 81), the observed 9 × 9
//! matrix printed beside the expected one on failure; live changes cutting
//! connections; a denied flow counted under its reason.
use std::{
    io::{Read, Write},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use netpath_common::{Program, Reason};
use netpath_lab::{
    counter_of,
    lab::LabConfig,
    lab_of,
    policy::{apply, policy, Model, ModelPod, Proto},
};
use serde_json::json;

fn model_lab() -> (netpath_lab::lab::Lab, Model) {
    let mut lab = lab_of(&LabConfig::new(2, 0).unwrap());
    let model = Model::up(&mut lab).expect("the model's pods");
    (lab, model)
}

/// A case: policies, what is probed, and who should reach whom.
struct Case {
    name: &'static str,
    /// Also run in the emulated VMs (the whole list would eat CI's budget there).
    in_vm: bool,
    policies: Vec<serde_json::Value>,
    probes: Vec<(Proto, u16)>,
    allowed: fn(&ModelPod, &ModelPod, Proto, u16) -> bool,
}

fn run(cases: Vec<Case>) {
    let (lab, model) = model_lab();
    let emulated = std::env::var_os("NETPATH_EMULATED").is_some();
    let mut failed = Vec::new();
    for c in cases.iter().filter(|c| c.in_vm || !emulated) {
        eprintln!("case: {}", c.name);
        // Addresses are known once the pods are: `{ns/pod}` in a policy names one.
        let policies = c
            .policies
            .iter()
            .map(|p| {
                let mut text = p.to_string();
                for m in &model.pods {
                    text = text.replace(&format!("{{{}}}", m.id()), &m.ip.to_string());
                }
                policy(serde_json::from_str(&text).unwrap())
            })
            .collect();
        apply(&lab, &model, policies).unwrap_or_else(|e| panic!("{}: {e:#}", c.name));
        for &(proto, port) in &c.probes {
            let want = model.expect(|f, t| (c.allowed)(f, t, proto, port));
            let got = model.probe(proto, port, &want);
            if got != want {
                failed.push(format!(
                    "{} ({proto:?}/{port})\nexpected:{want:?}observed:{got:?}",
                    c.name
                ));
            }
        }
    }
    assert!(
        failed.is_empty(),
        "{} case(s) failed:\n{}\n{}",
        failed.len(),
        failed.join("\n"),
        lab.agent_log(0)
    );
}

fn np(ns: &str, name: &str, spec: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
           "metadata": {"namespace": ns, "name": name}, "spec": spec})
}

const TCP80: (Proto, u16) = (Proto::Tcp, 80);
const TCP81: (Proto, u16) = (Proto::Tcp, 81);
const UDP80: (Proto, u16) = (Proto::Udp, 80);
const UDP81: (Proto, u16) = (Proto::Udp, 81);

fn is(p: &ModelPod, id: &str) -> bool {
    p.id() == id
}

#[test]
fn kubernetes_netpol_cases_ingress() {
    run(vec![
        Case {
            name: "no policy: everyone reaches everyone",
            in_vm: false,
            policies: vec![],
            probes: vec![TCP80, UDP81],
            allowed: |_, _, _, _| true,
        },
        Case {
            name: "should support a 'default-deny-ingress' policy",
            in_vm: true,
            policies: vec![np("x", "deny-ingress", json!({"podSelector": {}, "ingress": []}))],
            probes: vec![TCP80, UDP80],
            allowed: |_, t, _, _| t.namespace != "x",
        },
        Case {
            name: "should enforce policy to allow traffic from pods within server namespace based on PodSelector",
            in_vm: false,
            policies: vec![np("x", "x-a-allows-x-b", json!({
                "podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]}))],
            probes: vec![TCP80],
            allowed: |f, t, _, _| !is(t, "x/a") || is(f, "x/b"),
        },
        Case {
            name: "should enforce policy to allow ingress traffic from pods in all namespaces",
            in_vm: false,
            policies: vec![np("x", "allow-from-all-ns", json!({
                "podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [{"from": [{"namespaceSelector": {}}]}]}))],
            probes: vec![TCP80],
            allowed: |_, _, _, _| true,
        },
        Case {
            name: "should enforce policy based on NamespaceSelector with MatchExpressions",
            in_vm: false,
            policies: vec![np("x", "allow-ns-y", json!({
                "podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [
                    {"key": "ns", "operator": "In", "values": ["y"]}]}}]}]}))],
            probes: vec![TCP80],
            allowed: |f, t, _, _| !is(t, "x/a") || f.namespace == "y",
        },
        Case {
            name: "should enforce policy based on PodSelector and NamespaceSelector (one peer: AND)",
            in_vm: true,
            policies: vec![np("x", "allow-b-in-y-z", json!({
                "podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [{"from": [{
                    "podSelector": {"matchLabels": {"pod": "b"}},
                    "namespaceSelector": {"matchExpressions": [
                        {"key": "ns", "operator": "NotIn", "values": ["x"]}]}}]}]}))],
            probes: vec![TCP80],
            allowed: |f, t, _, _| !is(t, "x/a") || (f.name == "b" && f.namespace != "x"),
        },
        Case {
            name: "should enforce policy based on PodSelector or NamespaceSelector (two peers: OR)",
            in_vm: false,
            policies: vec![np("x", "allow-b-or-y", json!({
                "podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [{"from": [
                    {"podSelector": {"matchLabels": {"pod": "b"}}},
                    {"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}))],
            probes: vec![TCP80],
            allowed: |f, t, _, _| !is(t, "x/a") || is(f, "x/b") || f.namespace == "y",
        },
        Case {
            name: "should enforce policy based on Ports (81 from y only)",
            in_vm: true,
            policies: vec![np("x", "allow-81-from-y", json!({
                "podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}],
                             "ports": [{"port": 81, "protocol": "TCP"}]}]}))],
            probes: vec![TCP80, TCP81],
            allowed: |f, t, _, port| !is(t, "x/a") || (port == 81 && f.namespace == "y"),
        },
        Case {
            name: "should allow ingress access on one named port",
            in_vm: true,
            policies: vec![np("x", "allow-named-81", json!({
                "podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [{"ports": [{"port": "serve-81-tcp"}]}]}))],
            probes: vec![TCP80, TCP81],
            allowed: |_, t, _, port| !is(t, "x/a") || port == 81,
        },
        Case {
            name: "should enforce ingress policy allowing any port traffic to a server on a specific protocol (UDP)",
            in_vm: false,
            policies: vec![np("x", "allow-udp", json!({
                "podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [{"ports": [{"protocol": "UDP"}]}]}))],
            probes: vec![TCP80, UDP80, UDP81],
            allowed: |_, t, proto, _| !is(t, "x/a") || proto == Proto::Udp,
        },
        Case {
            name: "should support allow-all policy / endPort range 80-81",
            in_vm: false,
            policies: vec![np("x", "range", json!({
                "podSelector": {},
                "ingress": [{"ports": [{"port": 80, "endPort": 81, "protocol": "TCP"}]}]}))],
            probes: vec![TCP80, TCP81, UDP81],
            allowed: |_, t, proto, _| t.namespace != "x" || proto == Proto::Tcp,
        },
        Case {
            name: "should enforce multiple ingress policies with ingress allow-all policy taking precedence",
            in_vm: false,
            policies: vec![
                np("x", "only-81", json!({
                    "podSelector": {"matchLabels": {"pod": "a"}},
                    "ingress": [{"ports": [{"port": 81}]}]})),
                np("x", "allow-all", json!({
                    "podSelector": {"matchLabels": {"pod": "a"}},
                    "ingress": [{}]})),
            ],
            probes: vec![TCP80, TCP81],
            allowed: |_, _, _, _| true,
        },
        Case {
            name: "should stop enforcing policies after they are deleted",
            in_vm: false,
            policies: vec![],
            probes: vec![TCP80],
            allowed: |_, _, _, _| true,
        },
    ]);
}

#[test]
fn kubernetes_netpol_cases_egress_and_ip_blocks() {
    run(vec![
        Case {
            name: "should support a 'default-deny-all' policy",
            in_vm: true,
            policies: vec![np("x", "deny-all", json!({
                "podSelector": {}, "policyTypes": ["Ingress", "Egress"]}))],
            probes: vec![TCP80, UDP80],
            allowed: |f, t, _, _| f.namespace != "x" && t.namespace != "x",
        },
        Case {
            name: "should enforce egress policy allowing traffic to a server in a specific namespace based on PodSelector and NamespaceSelector",
            in_vm: false,
            policies: vec![np("x", "egress-to-y-b", json!({
                "podSelector": {"matchLabels": {"pod": "a"}},
                "policyTypes": ["Egress"],
                "egress": [{"to": [{
                    "podSelector": {"matchLabels": {"pod": "b"}},
                    "namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}))],
            probes: vec![TCP80, UDP81],
            allowed: |f, t, _, _| !is(f, "x/a") || is(t, "y/b"),
        },
        Case {
            name: "should enforce except clause while egress access to server in CIDR block",
            in_vm: true,
            policies: vec![np("x", "egress-except", json!({
                "podSelector": {"matchLabels": {"pod": "a"}},
                "policyTypes": ["Egress"],
                "egress": [{"to": [{"ipBlock": {"cidr": "10.244.0.0/16", "except": ["{y/b}/32"]}}]}]}))],
            probes: vec![TCP80],
            allowed: |f, t, _, _| !is(f, "x/a") || !is(t, "y/b"),
        },
        Case {
            name: "should allow egress access on one named port (resolved per destination pod)",
            in_vm: true,
            policies: vec![np("x", "egress-named", json!({
                "podSelector": {"matchLabels": {"pod": "a"}},
                "policyTypes": ["Egress"],
                "egress": [{"ports": [{"port": "serve-80-udp", "protocol": "UDP"}]}]}))],
            probes: vec![TCP80, UDP80, UDP81],
            allowed: |f, _, proto, port| !is(f, "x/a") || (proto == Proto::Udp && port == 80),
        },
    ]);
}

#[test]
fn a_policy_change_cuts_live_connections_within_a_second_and_denials_are_counted() {
    let (lab, model) = model_lab();
    let (client, server) = (model.pod("y/b"), model.pod("x/b"));
    assert_ne!(
        client.node, server.node,
        "the model spreads them over both nodes"
    );
    let allow = np(
        "x",
        "allow-y",
        json!({
        "podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}),
    );
    apply(&lab, &model, vec![policy(allow)]).unwrap();
    let ticks = Ticks::start(client, server);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        ticks.last().is_some(),
        "the allowed connection carries data"
    );
    let before = counter_of(
        &lab,
        server.node,
        Program::FromUnderlay,
        Reason::DropPolicyIngress,
    );
    // `netpath status` names the policy selecting the server pod.
    let doc = netpath_lab::status_json(&lab, server.node);
    let selecting = &doc["agent"]["policy"][server.ip.to_string()];
    assert_eq!(selecting, &json!(["x/allow-y"]), "{doc:#}");
    let n = &lab.nodes[server.node];
    let (root, state) = (n.pin_dir.parent().unwrap(), n.state_dir());
    let monitor = netpath_lab::observe::Monitor::start(
        &netpath_lab::lab::agent_binary().unwrap(),
        &[
            "--node",
            &n.name,
            "--bpffs-root",
            root.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "--json",
            "--reason",
            "drop-policy-ingress",
        ],
    )
    .unwrap();
    let deny = np(
        "x",
        "allow-y",
        json!({
        "podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "z"}}}]}]}),
    );
    apply(&lab, &model, vec![policy(deny)]).unwrap();
    let changed = Instant::now();
    std::thread::sleep(Duration::from_millis(1500));
    let last = ticks.last().unwrap();
    assert!(
        last < changed + Duration::from_secs(1),
        "data still arrived {:?} after the change",
        last - changed
    );
    let after = counter_of(
        &lab,
        server.node,
        Program::FromUnderlay,
        Reason::DropPolicyIngress,
    );
    assert!(
        after > before,
        "the cut connection's packets are counted as drop-policy-ingress"
    );
    // The monitor shows the denial with its pod, peer and port.
    let line = monitor
        .wait_line(Duration::from_secs(2), |l| {
            l.contains("drop-policy-ingress")
        })
        .unwrap_or_else(|| panic!("no drop-policy-ingress event: {:?}", monitor.lines()));
    let e: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(e["src"], client.ip.to_string(), "{line}");
    assert_eq!(e["dst"], server.ip.to_string(), "{line}");
    assert_eq!(e["dport"], 82, "{line}");
    // Allowed again: the same connection (TCP retransmits) carries on.
    apply(&lab, &model, vec![]).unwrap();
    let reopened = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        ticks.last().unwrap() > reopened,
        "the connection resumed once allowed again"
    );
}

/// One byte every 20 ms over one TCP connection; the server side notes when the
/// last arrived.
struct Ticks {
    last: Arc<Mutex<Option<Instant>>>,
    gap: Arc<Mutex<Duration>>,
    stop: Arc<AtomicBool>,
}

impl Ticks {
    fn start(client: &ModelPod, server: &ModelPod) -> Self {
        let listener = netpath_lab::netns::run_in(&server.netns, || {
            Ok(std::net::TcpListener::bind(("0.0.0.0", 82))?)
        })
        .unwrap();
        let to = std::net::SocketAddr::from((server.ip, 82));
        let mut conn = netpath_lab::netns::run_in(&client.netns, || {
            Ok(std::net::TcpStream::connect_timeout(
                &to,
                Duration::from_secs(2),
            )?)
        })
        .unwrap();
        let (mut accepted, _) = listener.accept().unwrap();
        let (last, stop) = (Arc::new(Mutex::new(None)), Arc::new(AtomicBool::new(false)));
        let gap = Arc::new(Mutex::new(Duration::ZERO));
        let (l, s, g) = (last.clone(), stop.clone(), gap.clone());
        std::thread::spawn(move || {
            accepted
                .set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let mut buf = [0u8; 64];
            while !s.load(Ordering::Relaxed) {
                if let Ok(n) = accepted.read(&mut buf) {
                    if n > 0 {
                        let now = Instant::now();
                        if let Some(was) = l.lock().unwrap().replace(now) {
                            let mut g = g.lock().unwrap();
                            *g = (*g).max(now - was);
                        }
                    }
                }
            }
        });
        let s = stop.clone();
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let _ = conn.write_all(b".");
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Self { last, gap, stop }
    }

    /// The longest time between two arrivals.
    fn max_gap(&self) -> Duration {
        *self.gap.lock().unwrap()
    }

    fn last(&self) -> Option<Instant> {
        *self.last.lock().unwrap()
    }
}

impl Drop for Ticks {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[test]
fn policy_judges_the_backend_after_service_translation_and_lets_service_replies_back() {
    let (lab, model) = model_lab();
    // One ClusterIP per model pod, as the upstream suite probes "by Service".
    let vip = |k: usize| std::net::Ipv4Addr::new(10, 96, 7, 10 + k as u8);
    let services = model
        .pods
        .iter()
        .enumerate()
        .map(|(k, p)| {
            netpath_lab::service::cluster_ip(
                &format!("s-{}-{}", p.namespace, p.name),
                vip(k),
                80,
                80,
                &[p.ip],
            )
        })
        .collect();
    // x hears only y; z hears nobody, yet z's own connections through a service
    // get their replies (from the front end's address) back.
    let policies = vec![
        policy(np(
            "x",
            "only-y",
            json!({"podSelector": {},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}),
        )),
        policy(np(
            "z",
            "deny-ingress",
            json!({"podSelector": {}, "ingress": []}),
        )),
    ];
    netpath_lab::policy::apply_with(&lab, &model, policies, services).unwrap();
    let by_vip = |to: &ModelPod| vip(model.pods.iter().position(|p| p.id() == to.id()).unwrap());
    let mut failed = Vec::new();
    for proto in [Proto::Tcp, Proto::Udp] {
        let want = model.expect(|f, t| match t.namespace {
            "x" => f.namespace == "y",
            "z" => false,
            _ => true,
        });
        let got = model.probe_to(proto, by_vip, 80, &want);
        if got != want {
            failed.push(format!(
                "{proto:?} via ClusterIPs\nexpected:{want:?}observed:{got:?}"
            ));
        }
    }
    assert!(
        failed.is_empty(),
        "{}\n{}",
        failed.join("\n"),
        lab.agent_log(0)
    );
}

#[test]
fn a_pod_is_closed_until_the_agent_judged_it_and_a_killed_agent_keeps_enforcing() {
    let cfg = LabConfig::new(2, 0).unwrap();
    let mut lab = lab_of(&cfg);
    let model = Model::up(&mut lab).expect("the model's pods");
    let only_y = np(
        "x",
        "only-y",
        json!({"podSelector": {},
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}),
    );
    apply(&lab, &model, vec![policy(only_y)]).unwrap();
    let (client, server) = (model.pod("y/b"), model.pod("x/b"));
    let ticks = Ticks::start(client, server);
    // No agent on node 0: a pod wired there cannot be judged, so ADD fails after
    // its wait, and nothing of it is left (its address is free again).
    lab.kill_agent(0);
    let t = Instant::now();
    let err = lab.attach_pod_as(0, "x", "late").unwrap_err();
    assert!(format!("{err:#}").contains("did not judge"), "{err:#}");
    assert!(
        t.elapsed() >= Duration::from_secs(9),
        "ADD waited {:?}",
        t.elapsed()
    );
    let held = netpath::ipam::Store::read(&lab.nodes[0].state_dir()).unwrap();
    assert_eq!(
        held.allocations.len(),
        5,
        "the failed ADD left its address: {held:?}"
    );
    // Enforcement went on without the agent, and the allowed connection flowed.
    let want = model.expect(|f, t| t.namespace != "x" || f.namespace == "y");
    let got = model.probe(Proto::Tcp, 80, &want);
    assert_eq!(got, want, "enforcement while the agent is down");
    lab.start_agent(0, &cfg).unwrap();
    let i = lab.attach_pod_as(0, "x", "late").unwrap();
    let late = &lab.nodes[0].pods[i];
    let _server = netpath_lab::service::Backend::serve(late.ns.path(), late.ip, 80).unwrap();
    // Judged when ADD returned: its namespace's policy is in force at once.
    let from = |id: &str| model.pod(id).netns.clone();
    assert!(netpath_lab::service::ask_tcp(&from("y/a"), late.ip, 80).is_ok());
    assert!(
        netpath_lab::service::ask_tcp(&from("x/a"), late.ip, 80).is_err(),
        "x/a reached the new x pod"
    );
    assert!(
        ticks.max_gap() < Duration::from_secs(1),
        "the allowed connection stalled {:?}",
        ticks.max_gap()
    );
}

#[test]
fn icmp_errors_and_later_fragments_follow_their_connection() {
    let (lab, model) = model_lab();
    let policies = vec![
        policy(np(
            "z",
            "deny-ingress",
            json!({"podSelector": {}, "ingress": []}),
        )),
        policy(np(
            "x",
            "udp-80",
            json!({"podSelector": {"matchLabels": {"pod": "a"}},
            "ingress": [{"ports": [{"protocol": "UDP", "port": 80}]}]}),
        )),
    ];
    apply(&lab, &model, policies).unwrap();
    // z/a hears nobody, yet the port unreachable about its own datagram reaches it.
    let (z, y) = (model.pod("z/a"), model.pod("y/a"));
    netpath_lab::service::udp_refused(&z.netns, y.ip, 99)
        .unwrap_or_else(|e| panic!("z/a got no port unreachable: {e:#}\n{}", lab.agent_log(0)));
    // A datagram in fragments to x/a's allowed port: the later fragments carry no
    // ports, and pass as their first did.
    let (client, server) = (model.pod("y/a"), model.pod("x/a"));
    assert_ne!(client.node, server.node);
    let sock = netpath_lab::netns::run_in(&client.netns, || {
        Ok(std::net::UdpSocket::bind(("0.0.0.0", 0))?)
    })
    .unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    sock.send_to(&[7u8; 4000], (server.ip, 80)).unwrap();
    let mut buf = [0u8; 256];
    let (n, _) = sock
        .recv_from(&mut buf)
        .unwrap_or_else(|e| panic!("no answer to the fragmented datagram: {e}"));
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with(&server.ip.to_string()), "{answer}");
    // On a port the policy does not allow, the same datagram gets nothing.
    sock.send_to(&[7u8; 4000], (server.ip, 81)).unwrap();
    assert!(
        sock.recv_from(&mut buf).is_err(),
        "UDP 81 to x/a was answered"
    );
}

#[test]
fn closed_connections_leave_the_connection_table_within_seconds() {
    let (lab, model) = model_lab();
    let only_y = np(
        "x",
        "only-y",
        json!({"podSelector": {},
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}),
    );
    apply(&lab, &model, vec![policy(only_y)]).unwrap();
    let (client, server) = (model.pod("y/b"), model.pod("x/b"));
    let entries = || {
        lab.nodes[server.node]
            .pinned()
            .unwrap()
            .policy_connections()
            .iter()
            .filter(|(k, _)| k.protocol == 6)
            .count()
    };
    for _ in 0..100 {
        netpath_lab::service::ask_tcp(&client.netns, server.ip, 80).unwrap();
    }
    let open = entries();
    assert!(open >= 100, "{open} entries for 100 connections (one each)");
    // Closed (FIN each way): gone after the closing timeout and a collector pass,
    // not after the 2 h an open connection may idle.
    let took = netpath_lab::wait_for(
        "closed connections collected",
        Duration::from_secs(20),
        || entries() < 10,
    );
    eprintln!("{open} entries collected after {took:?}");
}
