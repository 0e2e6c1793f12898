//! Every refused value names its field; a bad record is left out alone.
use serde_json::json;

use super::*;

fn policy_error(spec: Value) -> String {
    let p = policy("x", "allow-80", spec);
    validate_all(std::slice::from_ref(&p))
        .unwrap_err()
        .to_string()
}

#[test]
fn bad_policy_values_name_their_field() {
    let cases = [
        (
            json!({"ingress": [{"from": [{"podSelector": {}}, {"ipBlock": {"cidr": "10.1.0.0/16", "except": ["10.0.0.0/8"]}}]}]}),
            r#"policies[0] (x/allow-80).spec.ingress[0].from[1].ipBlock.except[0] = "10.0.0.0/8": not inside cidr 10.1.0.0/16"#,
        ),
        (
            json!({"ingress": [{"from": [{"ipBlock": {"cidr": "10.1.0.0/16", "except": ["10.1.0.0/16"]}}]}]}),
            r#"policies[0] (x/allow-80).spec.ingress[0].from[0].ipBlock.except[0] = "10.1.0.0/16": must be narrower than cidr 10.1.0.0/16"#,
        ),
        (
            json!({"podSelector": {"matchExpressions": [{"key": "pod", "operator": "Equals", "values": ["a"]}]}}),
            r#"policies[0] (x/allow-80).spec.podSelector.matchExpressions[0].operator = "Equals": must be one of In, NotIn, Exists, DoesNotExist"#,
        ),
        (
            json!({"podSelector": {"matchExpressions": [{"key": "pod", "operator": "In"}]}}),
            r#"policies[0] (x/allow-80).spec.podSelector.matchExpressions[0].values = "[]": In needs values"#,
        ),
        (
            json!({"egress": [{"to": [{"namespaceSelector": {"matchExpressions": [{"key": "pod", "operator": "Exists", "values": ["a"]}]}}]}]}),
            r#"policies[0] (x/allow-80).spec.egress[0].to[0].namespaceSelector.matchExpressions[0].values = "a": Exists takes no values"#,
        ),
        (
            json!({"podSelector": {"matchLabels": {"bad key!": "a"}}}),
            r#"policies[0] (x/allow-80).spec.podSelector.matchLabels = "bad key!": the key's name must be 1-63 of [A-Za-z0-9-_.], starting and ending with a letter or digit"#,
        ),
        (
            json!({"podSelector": {"matchLabels": {"pod": "-a"}}}),
            r#"policies[0] (x/allow-80).spec.podSelector.matchLabels.pod = "-a": a label value is empty or must be 1-63 of [A-Za-z0-9-_.], starting and ending with a letter or digit"#,
        ),
        (
            json!({"ingress": [{"from": [{"ipBlock": {"cidr": "10.1.0.1/16"}}]}]}),
            r#"policies[0] (x/allow-80).spec.ingress[0].from[0].ipBlock.cidr = "10.1.0.1/16": host bits are set (the block is 10.1.0.0/16)"#,
        ),
        (
            json!({"ingress": [{"from": [{"ipBlock": {"cidr": "10.1.0.0/16"}, "podSelector": {}}]}]}),
            r#"policies[0] (x/allow-80).spec.ingress[0].from[0].ipBlock = "10.1.0.0/16": a peer with ipBlock has no podSelector or namespaceSelector"#,
        ),
        (
            json!({"ingress": [{"from": [{}]}]}),
            r#"policies[0] (x/allow-80).spec.ingress[0].from[0] = "{}": a peer needs podSelector, namespaceSelector or ipBlock"#,
        ),
        (
            json!({"ingress": [{"ports": [{"port": 0}]}]}),
            r#"policies[0] (x/allow-80).spec.ingress[0].ports[0].port = "0": must be 1-65535"#,
        ),
        (
            json!({"ingress": [{"ports": [{"port": 65536}]}]}),
            r#"policies[0] (x/allow-80).spec.ingress[0].ports[0].port = "65536": must be 1-65535"#,
        ),
        (
            json!({"ingress": [{"ports": [{"port": 81, "endPort": 80}]}]}),
            r#"policies[0] (x/allow-80).spec.ingress[0].ports[0].endPort = "80": below port 81"#,
        ),
        (
            json!({"ingress": [{"ports": [{"port": "http", "endPort": 80}]}]}),
            r#"policies[0] (x/allow-80).spec.ingress[0].ports[0].endPort = "80": endPort needs a numeric port, not a named one"#,
        ),
        (
            json!({"ingress": [{"ports": [{"endPort": 80}]}]}),
            r#"policies[0] (x/allow-80).spec.ingress[0].ports[0].endPort = "80": endPort needs a port"#,
        ),
        (
            json!({"ingress": [{"ports": [{"port": 80, "endPort": 70000}]}]}),
            r#"policies[0] (x/allow-80).spec.ingress[0].ports[0].endPort = "70000": must be at most 65535"#,
        ),
        (
            json!({"egress": [{"ports": [{"protocol": "ICMP"}]}]}),
            r#"policies[0] (x/allow-80).spec.egress[0].ports[0].protocol = "ICMP": must be one of TCP, UDP, SCTP"#,
        ),
        (
            json!({"policyTypes": ["Ingress", "Both"]}),
            r#"policies[0] (x/allow-80).spec.policyTypes[1] = "Both": must be one of Ingress, Egress"#,
        ),
        (
            json!({"ingress": [{"ports": [{"port": "Serve_80"}]}]}),
            r#"policies[0] (x/allow-80).spec.ingress[0].ports[0].port = "Serve_80": a named port is 1-15 of [a-z0-9-] with a letter, no --"#,
        ),
    ];
    for (spec, want) in cases {
        assert_eq!(policy_error(spec.clone()), want, "{spec}");
    }
}

#[test]
fn names_namespaces_and_duplicates() {
    let mut nameless = policy("x", "", json!({}));
    let e = validate_all(std::slice::from_ref(&nameless))
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        r#"policies[0].metadata.name = "": a policy needs a name"#
    );
    nameless.metadata.name = "p".into();
    nameless.metadata.namespace = None;
    let e = validate_all(&[nameless]).unwrap_err().to_string();
    assert_eq!(
        e,
        r#"policies[0] (p).metadata.namespace = "": a policy needs a namespace"#
    );
    let p = policy("x", "p", json!({}));
    let e = validate_all(&[p.clone(), policy("y", "p", json!({})), p])
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        r#"policies[2] (x/p).metadata.name = "p": duplicate of policies[0]"#
    );
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "X"}})).unwrap();
    let e = validate_all(&[ns]).unwrap_err().to_string();
    assert!(
        e.starts_with(r#"namespaces[0] (X).metadata.name = "X": must be 1-63 of [a-z0-9-]"#),
        "{e}"
    );
    let ns = |n: &str| -> Namespace {
        serde_json::from_value(json!({"metadata": {"name": n}})).unwrap()
    };
    let e = validate_all(&[ns("x"), ns("x")]).unwrap_err().to_string();
    assert_eq!(
        e,
        r#"namespaces[1] (x).metadata.name = "x": duplicate of namespaces[0]"#
    );
}

#[test]
fn bad_pod_records_name_their_field() {
    let p = |ports: Value, ip: &str| pod("x", "a", json!({"pod": "a"}), ip, ports);
    let e = validate_all(&[p(json!([{"containerPort": 0}]), "10.0.0.1")])
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        r#"pods[0] (x/a).spec.containers[0].ports[0].containerPort = "0": must be 1-65535"#
    );
    let e = validate_all(&[p(
        json!([{"containerPort": 80, "protocol": "tcp"}]),
        "10.0.0.1",
    )])
    .unwrap_err()
    .to_string();
    assert_eq!(
        e,
        r#"pods[0] (x/a).spec.containers[0].ports[0].protocol = "tcp": must be one of TCP, UDP, SCTP"#
    );
    let e = validate_all(&[p(json!([]), "10.0.0")])
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        r#"pods[0] (x/a).status.podIP = "10.0.0": not an IPv4 or IPv6 address"#
    );
    let e = validate_all(&[p(json!([]), "10.0.0.1"), p(json!([]), "10.0.0.2")])
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        r#"pods[1] (x/a).metadata.name = "a": duplicate of pods[0]"#
    );
}

#[test]
fn a_bad_policy_is_left_out_alone() {
    let good = policy("x", "good", json!({"podSelector": {}}));
    let bad = policy("x", "bad", json!({"ingress": [{"ports": [{"port": 0}]}]}));
    let (kept, left_out) = admit_each([(0, good.clone()), (1, bad), (2, good.clone())]);
    assert_eq!(kept, vec![good]);
    assert_eq!(
        left_out,
        vec![
            r#"policy left out: policies[1] (x/bad).spec.ingress[0].ports[0].port = "0": must be 1-65535"#.to_string(),
            r#"policy left out: policies[2] (x/good).metadata.name = "good": duplicate of policies[0]"#.to_string(),
        ]
    );
}

#[test]
fn every_valid_shape_passes() {
    let p = policy(
        "x",
        "everything",
        json!({
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "web"},
                            "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db", ""]},
                                                 {"key": "canary", "operator": "DoesNotExist"}]},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"pod": "a"}}},
                                  {"ipBlock": {"cidr": "fd00::/8", "except": ["fd00:1::/32"]}}],
                         "ports": [{"port": "serve-80-tcp"}, {"protocol": "SCTP", "port": 1, "endPort": 65535}]}],
            "egress": [{}],
        }),
    );
    validate_all(&[p]).unwrap();
}
