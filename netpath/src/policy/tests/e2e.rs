//! Cases of Kubernetes' netpol e2e suite (`test/e2e/network/netpol/
//! network_policy.go`) on its model: namespaces x, y, z; pods a, b, c in each,
//! labelled pod=<name>, each serving TCP and UDP on 80 and 81 under the names
//! serve-80-tcp …; every pod local (both ends judged). A pod reaching itself never
//! leaves it, so the diagonal is not judged (the suite allows loopback too).
use std::collections::BTreeSet;

use serde_json::json;

use super::*;

const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const PODS: [&str; 3] = ["a", "b", "c"];

fn all() -> Vec<String> {
    NAMESPACES
        .iter()
        .flat_map(|ns| PODS.iter().map(move |p| format!("{ns}/{p}")))
        .collect()
}

fn addr(who: &str) -> String {
    let (ns, p) = who.split_once('/').unwrap();
    let n = NAMESPACES.iter().position(|x| *x == ns).unwrap();
    let i = PODS.iter().position(|x| *x == p).unwrap();
    format!("10.244.{}.{}", n + 1, i + 10)
}

fn model_pods() -> Vec<PodRecord> {
    let ports = json!([
        {"name": "serve-80-tcp", "containerPort": 80},
        {"name": "serve-80-udp", "containerPort": 80, "protocol": "UDP"},
        {"name": "serve-81-tcp", "containerPort": 81},
        {"name": "serve-81-udp", "containerPort": 81, "protocol": "UDP"},
    ]);
    all()
        .iter()
        .map(|w| {
            let (ns, p) = w.split_once('/').unwrap();
            pod(ns, p, json!({"pod": p}), &addr(w), ports.clone())
        })
        .collect()
}

/// The allowed (from, to) pairs.
type Matrix = BTreeSet<(String, String)>;

fn observed(policies: &[NetworkPolicy], protocol: u8, port: u16) -> Matrix {
    let locals: Vec<LocalPod> = all()
        .iter()
        .map(|w| {
            let (ns, p) = w.split_once('/').unwrap();
            local(ns, p, &addr(w))
        })
        .collect();
    let c = compiled(&[], &model_pods(), policies, &locals);
    pairs(|from, to| reach(&c, ip(&addr(from)), ip(&addr(to)), protocol, port))
}

fn pairs(allowed: impl Fn(&str, &str) -> bool) -> Matrix {
    let mut m = Matrix::new();
    for from in all() {
        for to in all() {
            if from != to && allowed(&from, &to) {
                m.insert((from.clone(), to));
            }
        }
    }
    m
}

fn table(m: &Matrix) -> String {
    let mut out = String::from("from\\to ");
    for to in all() {
        out += &format!("{to:>4}");
    }
    for from in all() {
        out += &format!("\n{from:>7} ");
        for to in all() {
            let c = match (from == to, m.contains(&(from.clone(), to.clone()))) {
                (true, _) => "-",
                (_, true) => ".",
                _ => "X",
            };
            out += &format!("{c:>4}");
        }
    }
    out
}

#[track_caller]
fn expect(policies: &[NetworkPolicy], protocol: u8, port: u16, want: impl Fn(&str, &str) -> bool) {
    let want = pairs(want);
    let got = observed(policies, protocol, port);
    assert!(
        got == want,
        "protocol {protocol} port {port}\nexpected:\n{}\nobserved:\n{}",
        table(&want),
        table(&got)
    );
}

fn ns_of(w: &str) -> &str {
    w.split_once('/').unwrap().0
}

fn ns_sel(op: &str, values: &[&str]) -> Value {
    json!({"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": op, "values": values}]})
}

#[test]
fn default_deny_ingress() {
    let p = policy(
        "x",
        "deny-ingress",
        json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
    );
    expect(&[p], TCP, 80, |_, to| ns_of(to) != "x");
}

#[test]
fn default_deny_all_ingress_and_egress() {
    let p = policy(
        "x",
        "deny-all",
        json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
    );
    expect(&[p], TCP, 80, |from, to| {
        ns_of(from) != "x" && ns_of(to) != "x"
    });
}

#[test]
fn allow_all_policy() {
    let p = policy(
        "x",
        "allow-all",
        json!({"podSelector": {}, "ingress": [{}]}),
    );
    expect(&[p], TCP, 80, |_, _| true);
}

#[test]
fn pod_selector_within_the_servers_namespace() {
    let p = policy(
        "x",
        "x-a-from-x-b",
        json!({
            "podSelector": {"matchLabels": {"pod": "a"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}],
        }),
    );
    expect(&[p], TCP, 80, |from, to| to != "x/a" || from == "x/b");
}

#[test]
fn namespace_selector_with_match_expressions() {
    let p = policy(
        "x",
        "x-a-from-y",
        json!({
            "podSelector": {"matchLabels": {"pod": "a"}},
            "ingress": [{"from": [{"namespaceSelector": ns_sel("In", &["y"])}]}],
        }),
    );
    expect(&[p], TCP, 80, |from, to| to != "x/a" || ns_of(from) == "y");
}

#[test]
fn pod_selector_or_namespace_selector() {
    let p = policy(
        "x",
        "or",
        json!({
            "podSelector": {"matchLabels": {"pod": "a"}},
            "ingress": [{"from": [
                {"namespaceSelector": ns_sel("NotIn", &["x"])},
                {"podSelector": {"matchExpressions": [{"key": "pod", "operator": "In", "values": ["b"]}]}},
            ]}],
        }),
    );
    expect(&[p], TCP, 80, |from, to| {
        to != "x/a" || ns_of(from) != "x" || from == "x/b"
    });
}

#[test]
fn pod_selector_and_namespace_selector() {
    let p = policy(
        "x",
        "and",
        json!({
            "podSelector": {"matchLabels": {"pod": "a"}},
            "ingress": [{"from": [{
                "namespaceSelector": ns_sel("NotIn", &["x"]),
                "podSelector": {"matchExpressions": [{"key": "pod", "operator": "In", "values": ["b", "c"]}]},
            }]}],
        }),
    );
    expect(&[p], TCP, 80, |from, to| {
        to != "x/a" || (ns_of(from) != "x" && !from.ends_with("/a"))
    });
}

#[test]
fn ports_and_named_ports_on_ingress() {
    let by_number = policy(
        "x",
        "x-a-81-from-y",
        json!({
            "podSelector": {"matchLabels": {"pod": "a"}},
            "ingress": [{"from": [{"namespaceSelector": ns_sel("In", &["y"])}], "ports": [{"port": 81}]}],
        }),
    );
    expect(std::slice::from_ref(&by_number), TCP, 80, |_, to| {
        to != "x/a"
    });
    expect(&[by_number], TCP, 81, |from, to| {
        to != "x/a" || ns_of(from) == "y"
    });
    let by_name = policy(
        "x",
        "x-a-serve-81-udp",
        json!({
            "podSelector": {"matchLabels": {"pod": "a"}},
            "ingress": [{"ports": [{"protocol": "UDP", "port": "serve-81-udp"}]}],
        }),
    );
    expect(std::slice::from_ref(&by_name), UDP, 81, |_, _| true);
    expect(std::slice::from_ref(&by_name), UDP, 80, |_, to| to != "x/a");
    expect(&[by_name], TCP, 81, |_, to| to != "x/a");
}

#[test]
fn egress_on_a_named_port_resolves_at_each_destination() {
    let p = policy(
        "x",
        "x-a-egress-serve-80-tcp",
        json!({
            "podSelector": {"matchLabels": {"pod": "a"}},
            "policyTypes": ["Egress"],
            "egress": [{"ports": [{"port": "serve-80-tcp"}]}],
        }),
    );
    expect(std::slice::from_ref(&p), TCP, 80, |_, _| true);
    expect(&[p], TCP, 81, |from, _| from != "x/a");
}

#[test]
fn stacked_policies_add_up() {
    let a = policy(
        "x",
        "81-from-y",
        json!({
            "podSelector": {"matchLabels": {"pod": "a"}},
            "ingress": [{"from": [{"namespaceSelector": ns_sel("In", &["y"])}], "ports": [{"port": 81}]}],
        }),
    );
    let b = policy(
        "x",
        "80-from-z",
        json!({
            "podSelector": {"matchLabels": {"pod": "a"}},
            "ingress": [{"from": [{"namespaceSelector": ns_sel("In", &["z"])}], "ports": [{"port": 80}]}],
        }),
    );
    let both = [a, b];
    expect(&both, TCP, 80, |from, to| to != "x/a" || ns_of(from) == "z");
    expect(&both, TCP, 81, |from, to| to != "x/a" || ns_of(from) == "y");
}

#[test]
fn egress_to_a_cidr_and_its_except() {
    let only_y_b = policy(
        "x",
        "to-y-b",
        json!({
            "podSelector": {"matchLabels": {"pod": "a"}},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": {"cidr": format!("{}/32", addr("y/b"))}}]}],
        }),
    );
    expect(&[only_y_b], TCP, 80, |from, to| {
        from != "x/a" || to == "y/b"
    });
    let all_but_y_b = policy(
        "x",
        "not-y-b",
        json!({
            "podSelector": {"matchLabels": {"pod": "a"}},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": {"cidr": "10.244.0.0/16", "except": [format!("{}/32", addr("y/b"))]}}]}],
        }),
    );
    expect(&[all_but_y_b], TCP, 80, |from, to| {
        from != "x/a" || to != "y/b"
    });
}

#[test]
fn egress_denied_at_the_client_even_if_the_server_allows() {
    let client = policy(
        "x",
        "x-a-to-z-only",
        json!({
            "podSelector": {"matchLabels": {"pod": "a"}},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"namespaceSelector": ns_sel("In", &["z"])}]}],
        }),
    );
    let server = policy(
        "y",
        "allow-all",
        json!({"podSelector": {}, "ingress": [{}]}),
    );
    expect(&[client, server], TCP, 80, |from, to| {
        from != "x/a" || ns_of(to) == "z"
    });
}

#[test]
fn protocol_only_rule_and_udp_only_rule() {
    let tcp_any_port = policy(
        "x",
        "tcp",
        json!({
            "podSelector": {"matchLabels": {"pod": "a"}},
            "ingress": [{"ports": [{"protocol": "TCP"}]}],
        }),
    );
    expect(std::slice::from_ref(&tcp_any_port), TCP, 81, |_, _| true);
    expect(&[tcp_any_port], UDP, 80, |_, to| to != "x/a");
    let udp_only = policy(
        "x",
        "udp-81",
        json!({
            "podSelector": {"matchLabels": {"pod": "a"}},
            "ingress": [{"ports": [{"protocol": "UDP", "port": 81}]}],
        }),
    );
    expect(&[udp_only], TCP, 81, |_, to| to != "x/a");
}

#[test]
fn end_port_range_from_all_namespaces() {
    let p = policy(
        "x",
        "range",
        json!({
            "podSelector": {"matchLabels": {"pod": "a"}},
            "ingress": [{"from": [{"namespaceSelector": {}}], "ports": [{"port": 80, "endPort": 81}]}],
        }),
    );
    expect(std::slice::from_ref(&p), TCP, 80, |_, _| true);
    expect(std::slice::from_ref(&p), TCP, 81, |_, _| true);
    expect(&[p], UDP, 80, |_, to| to != "x/a");
}

#[test]
fn ingress_and_egress_together() {
    let p = policy(
        "x",
        "both",
        json!({
            "podSelector": {"matchLabels": {"pod": "a"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}],
            "egress": [{"ports": [{"port": 80}]}],
        }),
    );
    expect(std::slice::from_ref(&p), TCP, 80, |from, to| {
        to != "x/a" || from == "x/b"
    });
    expect(&[p], TCP, 81, |from, to| {
        from != "x/a" && (to != "x/a" || from == "x/b")
    });
}
