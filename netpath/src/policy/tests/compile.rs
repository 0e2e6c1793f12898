//! Who is selected, what rule sets they share, named ports per pod, the revision
//! and the size guard.
use std::collections::BTreeSet;

use netpath_common::{FAMILY_IPV6, POLICY_EGRESS, POLICY_INGRESS};
use serde_json::json;

use super::*;

fn web(name: &str, ip: &str, http: u16) -> PodRecord {
    pod(
        "x",
        name,
        json!({"app": "web"}),
        ip,
        json!([{"name": "http", "containerPort": http}]),
    )
}

#[test]
fn no_policy_or_a_policy_selecting_nothing_compiles_to_nothing() {
    let pods = [web("w1", "10.244.0.1", 80)];
    let locals = [local("x", "w1", "10.244.0.1")];
    let c = compiled(&[], &pods, &[], &locals);
    assert_eq!(c, Compiled::default());
    let none = policy(
        "x",
        "db",
        json!({"podSelector": {"matchLabels": {"app": "db"}}}),
    );
    let other_ns = policy("y", "all", json!({"podSelector": {}}));
    let c = compiled(&[], &pods, &[none, other_ns], &locals);
    assert_eq!((c.rev, c.endpoints.len(), c.peers.len()), (0, 0, 0));
    assert!(judge(
        &c,
        ip("10.244.0.1"),
        POLICY_INGRESS,
        ip("1.2.3.4"),
        TCP,
        80
    ));
}

#[test]
fn policy_types_default_to_ingress_plus_egress_when_egress_rules_exist() {
    let locals = [local("x", "w1", "10.244.0.1")];
    let pods = [web("w1", "10.244.0.1", 80)];
    let only_egress_rules = policy(
        "x",
        "e",
        json!({"podSelector": {}, "egress": [{"ports": [{"port": 53, "protocol": "UDP"}]}]}),
    );
    let c = compiled(&[], &pods, &[only_egress_rules], &locals);
    let e = c.endpoints.values().next().unwrap();
    assert_eq!(e.enforce, POLICY_INGRESS | POLICY_EGRESS);
    let me = ip("10.244.0.1");
    assert!(
        !judge(&c, me, POLICY_INGRESS, ip("10.0.0.1"), TCP, 80),
        "isolated, no ingress rule"
    );
    assert!(judge(&c, me, POLICY_EGRESS, ip("10.0.0.1"), UDP, 53));
    assert!(!judge(&c, me, POLICY_EGRESS, ip("10.0.0.1"), TCP, 53));
    let ingress_only = policy("x", "i", json!({"podSelector": {}, "ingress": [{}]}));
    let c = compiled(&[], &pods, &[ingress_only], &locals);
    assert_eq!(c.endpoints.values().next().unwrap().enforce, POLICY_INGRESS);
    assert!(
        judge(&c, me, POLICY_EGRESS, ip("10.0.0.1"), TCP, 1),
        "egress left open"
    );
}

#[test]
fn pods_with_the_same_labels_share_one_rule_set() {
    let pods = [
        web("w1", "10.244.0.1", 80),
        web("w2", "10.244.0.2", 80),
        pod("x", "db", json!({"app": "db"}), "10.244.0.3", json!([])),
    ];
    let locals = [
        local("x", "w1", "10.244.0.1"),
        local("x", "w2", "10.244.0.2"),
        local("x", "db", "10.244.0.3"),
    ];
    let p = policy(
        "x",
        "web-from-db",
        json!({
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "db"}}}], "ports": [{"port": "http"}]}],
        }),
    );
    let c = compiled(&[], &pods, &[p], &locals);
    let sets: Vec<u32> = c.endpoints.values().map(|e| e.rule_set).collect();
    assert_eq!(sets.len(), 2, "db is selected by nothing");
    assert_eq!(sets[0], sets[1]);
    assert!(sets[0] != 0);
    assert_eq!(
        c.selected_by[&IpNet::host(ip("10.244.0.1")).net_addr()],
        vec!["x/web-from-db".to_string()]
    );
    assert_eq!(c.peers.len(), 1, "one rule set, one peer: {:?}", c.peers);
}

#[test]
fn ingress_named_ports_resolve_at_each_local_pod() {
    let pods = [
        web("w1", "10.244.0.1", 80),
        web("w2", "10.244.0.2", 8080),
        pod(
            "x",
            "w3",
            json!({"app": "web"}),
            "10.244.0.3",
            json!([{"name": "http", "containerPort": 80, "protocol": "UDP"}]),
        ),
    ];
    let locals = [
        local("x", "w1", "10.244.0.1"),
        local("x", "w2", "10.244.0.2"),
        local("x", "w3", "10.244.0.3"),
    ];
    let p = policy(
        "x",
        "http",
        json!({"podSelector": {}, "ingress": [{"ports": [{"port": "http"}]}]}),
    );
    let c = compiled(&[], &pods, &[p], &locals);
    let client = ip("192.0.2.9");
    let at = |who: &str, port| judge(&c, ip(who), POLICY_INGRESS, client, TCP, port);
    assert!(at("10.244.0.1", 80) && !at("10.244.0.1", 8080));
    assert!(at("10.244.0.2", 8080) && !at("10.244.0.2", 80));
    assert!(
        !at("10.244.0.3", 80),
        "w3's http is UDP: a TCP named port matches nothing"
    );
    let sets: BTreeSet<u32> = c.endpoints.values().map(|e| e.rule_set).collect();
    assert_eq!(sets.len(), 3, "different ports, different rule sets");
}

#[test]
fn egress_named_ports_resolve_at_each_peer_and_never_at_an_ip_block() {
    let pods = [
        pod(
            "x",
            "client",
            json!({"app": "client"}),
            "10.244.0.9",
            json!([]),
        ),
        web("w1", "10.244.1.1", 80),
        web("w2", "10.244.1.2", 8080),
        pod("x", "bare", json!({"app": "web"}), "10.244.1.3", json!([])),
    ];
    let p = policy(
        "x",
        "out",
        json!({
            "podSelector": {"matchLabels": {"app": "client"}},
            "policyTypes": ["Egress"],
            "egress": [
                {"to": [{"podSelector": {"matchLabels": {"app": "web"}}}], "ports": [{"port": "http"}]},
                {"to": [{"ipBlock": {"cidr": "192.0.2.0/24"}}], "ports": [{"port": "http"}, {"port": 443}]},
            ],
        }),
    );
    let c = compiled(&[], &pods, &[p], &[local("x", "client", "10.244.0.9")]);
    let to = |peer: &str, port| judge(&c, ip("10.244.0.9"), POLICY_EGRESS, ip(peer), TCP, port);
    assert!(to("10.244.1.1", 80) && !to("10.244.1.1", 8080));
    assert!(to("10.244.1.2", 8080) && !to("10.244.1.2", 80));
    assert!(
        !to("10.244.1.3", 80) && !to("10.244.1.3", 8080),
        "declares no http"
    );
    assert!(
        to("192.0.2.1", 443) && !to("192.0.2.1", 80),
        "an ipBlock has no named ports"
    );
}

#[test]
fn labels_come_from_records_and_namespaces_always_have_their_name() {
    // A local pod without a record has no labels; a namespace without a record is
    // still selectable by its name.
    let pods = [pod(
        "y",
        "client",
        json!({"app": "client"}),
        "10.244.2.1",
        json!([]),
    )];
    let locals = [
        local("x", "norecord", "10.244.0.1"),
        local("x", "other", "10.244.0.2"),
    ];
    let p = policy(
        "x",
        "p",
        json!({
            "podSelector": {"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "y"}}}]}],
        }),
    );
    let c = compiled(&[], &pods, &[p], &locals);
    assert_eq!(c.endpoints.len(), 2);
    let me = ip("10.244.0.1");
    assert!(judge(&c, me, POLICY_INGRESS, ip("10.244.2.1"), TCP, 80));
    assert!(!judge(&c, me, POLICY_INGRESS, ip("10.244.0.2"), TCP, 80));
    // The namespace record's own labels select too.
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": "y", "labels": {"team": "blue"}}}))
            .unwrap();
    let p = policy(
        "x",
        "p",
        json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "blue"}}}]}]}),
    );
    let c = compiled(&[ns], &pods, &[p], &locals);
    assert!(judge(&c, me, POLICY_INGRESS, ip("10.244.2.1"), TCP, 80));
}

#[test]
fn a_local_binding_wins_over_a_stale_record_address() {
    // old/gone's record still holds 10.244.0.5; the agent bound it to x/new.
    let pods = [pod(
        "x",
        "gone",
        json!({"app": "db"}),
        "10.244.0.5",
        json!([]),
    )];
    let locals = [
        local("x", "srv", "10.244.0.1"),
        local("x", "new", "10.244.0.5"),
    ];
    let p = policy(
        "x",
        "p",
        json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "db"}}}]}]}),
    );
    let c = compiled(&[], &pods, &[p], &locals);
    assert!(!judge(
        &c,
        ip("10.244.0.1"),
        POLICY_INGRESS,
        ip("10.244.0.5"),
        TCP,
        80
    ));
}

#[test]
fn ipv6_pods_are_carried_through() {
    let mut server = web("w1", "10.244.0.1", 80);
    server.status.pod_ips = vec![
        PodIp {
            ip: "10.244.0.1".into(),
        },
        PodIp {
            ip: "fd00::1".into(),
        },
    ];
    let client: PodRecord = serde_json::from_value(json!({
        "metadata": {"namespace": "x", "name": "c", "labels": {"app": "client"}},
        "status": {"podIPs": [{"ip": "fd00::9"}]},
    }))
    .unwrap();
    let p = policy(
        "x",
        "p",
        json!({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}]}),
    );
    let locals = [local("x", "w1", "fd00::1"), local("x", "w1", "10.244.0.1")];
    let c = compiled(&[], &[server, client], &[p], &locals);
    assert!(c.endpoints.keys().any(|k| k.family == FAMILY_IPV6));
    assert!(judge(
        &c,
        ip("fd00::1"),
        POLICY_INGRESS,
        ip("fd00::9"),
        TCP,
        80
    ));
    assert!(!judge(
        &c,
        ip("fd00::1"),
        POLICY_INGRESS,
        ip("fd00::8"),
        TCP,
        80
    ));
    assert!(!judge(
        &c,
        ip("10.244.0.1"),
        POLICY_INGRESS,
        ip("10.244.0.9"),
        TCP,
        80
    ));
}

#[test]
fn the_revision_is_a_stable_content_hash() {
    let pods = [web("w1", "10.244.0.1", 80)];
    let locals = [local("x", "w1", "10.244.0.1")];
    let p = |port: u16| {
        policy(
            "x",
            "p",
            json!({"podSelector": {}, "ingress": [{"ports": [{"port": port}]}]}),
        )
    };
    let a = compiled(&[], &pods, &[p(80)], &locals);
    assert_eq!(a, compiled(&[], &pods, &[p(80)], &locals));
    assert_ne!(a.rev, 0);
    // Pinned: the same in every process and every build (no RandomState).
    assert_eq!(a.rev, 0x0b3a_6cd1, "{:#x}", a.rev);
    let b = compiled(&[], &pods, &[p(81)], &locals);
    assert_ne!(a.rev, b.rev);
    let renamed = policy(
        "x",
        "q",
        json!({"podSelector": {}, "ingress": [{"ports": [{"port": 80}]}]}),
    );
    assert_eq!(
        compiled(&[], &pods, &[renamed], &locals).rev,
        a.rev,
        "the maps, not the names"
    );
}

#[test]
fn maps_that_would_not_fit_are_refused() {
    let locals: Vec<LocalPod> = (0..=ENDPOINT_LIMIT)
        .map(|i| {
            local(
                "x",
                &format!("p{i}"),
                &format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255),
            )
        })
        .collect();
    let p = policy("x", "deny", json!({"podSelector": {}}));
    let e = compile(&PolicyInput {
        namespaces: &[],
        pods: &[],
        policies: &[p],
        local: &locals,
    })
    .unwrap_err();
    assert_eq!(
        e,
        CompileError::TooLarge {
            what: "POLICY_ENDPOINTS",
            entries: ENDPOINT_LIMIT + 1,
            capacity: ENDPOINT_LIMIT
        }
    );
}

const ENDPOINT_LIMIT: usize = netpath_common::maps::ENDPOINT_CAPACITY as usize;

#[test]
fn an_invalid_record_is_an_error_not_an_open_door() {
    let bad = policy(
        "x",
        "p",
        json!({"podSelector": {}, "ingress": [{"ports": [{"port": 0}]}]}),
    );
    let e = compile(&PolicyInput {
        namespaces: &[],
        pods: &[],
        policies: &[bad],
        local: &[],
    })
    .unwrap_err();
    assert!(matches!(e, CompileError::Invalid(_)), "{e}");
}
