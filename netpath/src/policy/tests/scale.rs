//! How long a large cluster takes to compile (ignored: run it by hand).
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

/// `cargo test --release -p netpath --lib policy::tests::scale::scale -- --ignored
/// --nocapture`: 10 000 pods in 100 namespaces, 10 000 policies, 110 local pods.
#[test]
#[ignore]
fn scale() {
    let mut pods = Vec::new();
    let mut policies = Vec::new();
    for n in 0..100 {
        let ns = format!("ns{n}");
        for i in 0..100 {
            let addr = format!(
                "10.{}.{}.{}",
                100 + n / 50,
                (n % 50) * 2 + i / 100,
                i % 100 + 1
            );
            pods.push(web(&format!("p{i}"), &addr, 80));
            let last = pods.last_mut().unwrap();
            last.metadata.namespace = Some(ns.clone());
            last.metadata.labels.insert("pod".into(), format!("p{i}"));
            policies.push(policy(&ns, &format!("pol{i}"), json!({
                "podSelector": {"matchLabels": {"pod": format!("p{i}")}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}},
                                      {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": format!("ns{}", (n + 1) % 100)}}}],
                             "ports": [{"port": "http"}, {"port": 443}]}],
                "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.100.0.0/16"]}}]}],
            })));
        }
    }
    let locals: Vec<LocalPod> = pods
        .iter()
        .step_by(91)
        .map(|p| LocalPod {
            ip: ip(p.status.pod_ip.as_deref().unwrap()),
            namespace: p.metadata.ns().into(),
            name: p.metadata.name.clone(),
        })
        .collect();
    let start = std::time::Instant::now();
    let c = compiled(&[], &pods, &policies, &locals);
    eprintln!(
        "{} local pods, {} policies, {} pods: {:?}; {} endpoints, {} peers, {} ports",
        locals.len(),
        policies.len(),
        pods.len(),
        start.elapsed(),
        c.endpoints.len(),
        c.peers.len(),
        c.ports.len()
    );
    assert_eq!(c.endpoints.len(), locals.len());
}
