//! `netpath apply`'s manifests and its spec-file target, without a cluster.
use super::{
    apply::{key_of, value_of},
    apply_file::apply_text,
    manifest::{check_all, documents, Doc, Object},
};
use crate::{
    spec::{ClusterSpec, SpecDraft},
    store::etcd::{Keys, View},
};

fn docs(text: &str) -> anyhow::Result<Vec<Doc>> {
    check_all(documents("m.yaml", text)?, "default")
}

const POLICY: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-b
  namespace: x
  resourceVersion: "7"
spec:
  podSelector:
    matchLabels: {pod: a}
  ingress:
  - from:
    - podSelector:
        matchExpressions: [{key: pod, operator: In, values: [b]}]
    ports:
    - {port: serve-80-tcp}
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Namespace
  metadata: {name: x, labels: {ns: x}}
- apiVersion: v1
  kind: Pod
  metadata: {name: a, namespace: x, labels: {pod: a}, ownerReferences: [{kind: ReplicaSet}]}
  spec:
    nodeName: node1
    containers:
    - name: c
      image: nginx
      ports: [{name: serve-80-tcp, containerPort: 80}]
  status: {phase: Running, podIP: 10.244.1.5, podIPs: [{ip: 10.244.1.5}]}
---
"#;

#[test]
fn yaml_documents_and_lists_become_objects() {
    let d = docs(POLICY).unwrap();
    let got: Vec<String> = d
        .iter()
        .map(|d| format!("{} @ {}", d.object.describe(), d.at))
        .collect();
    assert_eq!(
        got,
        [
            "NetworkPolicy x/allow-b @ m.yaml document 1",
            "Namespace x @ m.yaml document 2 items[0]",
            "Pod x/a @ m.yaml document 2 items[1]",
        ]
    );
    // JSON, several objects one after another; the default namespace filled in.
    let json = r#"{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "deny"}, "spec": {"podSelector": {}}}
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "y"}}"#;
    let d = check_all(documents("m.json", json).unwrap(), "team").unwrap();
    assert_eq!(d[0].object.describe(), "NetworkPolicy team/deny");
    let keys = Keys::new("/netpath");
    assert_eq!(key_of(&keys, &d[0].object), "/netpath/policies/team/deny");
    assert_eq!(key_of(&keys, &d[1].object), "/netpath/namespaces/y");
}

#[test]
fn what_apply_writes_to_etcd_is_what_the_view_reads() {
    let keys = Keys::new("/netpath");
    let mut v = View::default();
    for d in docs(POLICY).unwrap() {
        let key = key_of(&keys, &d.object);
        v.apply(&keys, &key, Some(&value_of(&d.object)), 0);
        assert!(!v.refused.contains_key(&key), "{:?}", v.refused);
    }
    let r = v.policy.records();
    assert_eq!(r.pods[0].status.pod_ip.as_deref(), Some("10.244.1.5"));
    assert_eq!(r.pods[0].spec.containers[0].ports[0].container_port, 80);
    assert_eq!(r.namespaces[0].metadata.labels["ns"], "x");
    let Object::Policy(p) = &docs(POLICY).unwrap()[0].object else {
        panic!()
    };
    assert_eq!(&r.policies[0], p);
}

#[test]
fn a_bad_document_refuses_the_manifest_naming_its_place_kind_and_field() {
    let bad_op = POLICY.replace("operator: In", "operator: Equals");
    let e = format!("{:#}", docs(&bad_op).unwrap_err());
    assert!(
        e.contains(
            "m.yaml document 1: NetworkPolicy x/allow-b: \
             spec.ingress[0].from[0].podSelector.matchExpressions[0].operator = \"Equals\": \
             must be one of In, NotIn, Exists, DoesNotExist"
        ),
        "{e}"
    );
    let unknown =
        format!("{POLICY}\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\n");
    let e = format!("{:#}", docs(&unknown).unwrap_err());
    assert!(
        e.contains("m.yaml document 3: kind \"Deployment\" web: not one netpath applies"),
        "{e}"
    );
    let old_api = POLICY.replace("networking.k8s.io/v1", "extensions/v1beta1");
    let e = format!("{:#}", docs(&old_api).unwrap_err());
    assert!(e.contains("apiVersion \"extensions/v1beta1\""), "{e}");
    // Every mistake at once; the same object twice is a mistake too.
    let both = format!("{bad_op}\n---\n{unknown}");
    let e = format!("{:#}", docs(&both).unwrap_err());
    assert!(e.contains("documents are refused"), "{e}");
    assert!(e.contains("Deployment") && e.contains("Equals"), "{e}");
    assert!(
        e.contains("Namespace x: also in m.yaml document 2 items[0]"),
        "{e}"
    );
    let e = format!(
        "{:#}",
        docs("kind: Pod\napiVersion: v1\nmetadata: {name: A}\n").unwrap_err()
    );
    assert!(e.contains("metadata.name = \"A\""), "{e}");
}

const SPEC: &str = r#"
cluster_cidr = "10.244.0.0/16"
mtu = 1400

[[nodes]]
name = "a"
underlay = "192.168.56.11/24"
pod_cidr = "10.244.1.0/24"

[[services]]
namespace = "x"
name = "web"
cluster_ip = "10.96.0.10"
ports = [{ port = 80, target_port = 8080 }]
endpoints = [{ address = "10.244.1.9" }]

[[policies]]
metadata = { namespace = "x", name = "allow-b" }
spec = { podSelector = {} }
"#;

#[test]
fn a_spec_file_takes_the_objects_by_kind_namespace_and_name_and_keeps_the_rest() {
    let service = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: x}
spec: {clusterIP: 10.96.0.10, ports: [{port: 80, targetPort: 8081}]}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: x}
spec: {clusterIP: 10.96.0.11, ports: [{name: pg, port: 5432}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: db-abcde, namespace: x, labels: {kubernetes.io/service-name: db}}
addressType: IPv4
endpoints: [{addresses: [10.244.1.7], conditions: {ready: true}}]
ports: [{name: pg, port: 5432}]
"#;
    let manifest = docs(&format!("{POLICY}\n---\n{service}")).unwrap();
    let (text, lines) = apply_text(SPEC, &manifest, false).unwrap();
    assert_eq!(
        lines,
        [
            "NetworkPolicy x/allow-b: replaced",
            "Namespace x: added",
            "Pod x/a: added",
            "Service x/web: replaced",
            "Service x/db: added",
            "EndpointSlice x/db: replaced",
        ]
    );
    let spec = ClusterSpec::parse(&text).unwrap();
    assert_eq!(spec.settings.mtu, Some(1400), "settings kept");
    assert_eq!(spec.nodes[0].name, "a");
    assert_eq!(spec.policy.policies.len(), 1, "replaced, not added");
    assert_eq!(spec.policy.policies[0].spec.ingress.len(), 1);
    assert_eq!(spec.policy.pods[0].metadata.labels["pod"], "a");
    let web = &spec.services[0];
    assert_eq!(web.name, "web");
    assert_eq!(
        web.endpoints.len(),
        1,
        "a Service keeps the endpoints it had"
    );
    assert_eq!(
        spec.services[1].endpoints[0].address.to_string(),
        "10.244.1.7"
    );
    // Applied again: nothing changes.
    let (again, lines) = apply_text(&text, &manifest, false).unwrap();
    assert_eq!(again, text);
    assert!(lines.iter().all(|l| l.ends_with("unchanged")), "{lines:?}");
    // Deleted: gone, the rest kept.
    let (text, lines) = apply_text(&text, &docs(POLICY).unwrap(), true).unwrap();
    assert!(lines.iter().all(|l| l.ends_with("removed")), "{lines:?}");
    let d = SpecDraft::parse(&text).unwrap();
    assert!(d.policies.is_empty() && d.pods.is_empty() && d.namespaces.is_empty());
    assert_eq!(d.services.len(), 2);
}

#[test]
fn a_spec_file_refuses_what_the_cluster_would_leave_out_and_keeps_its_text() {
    // A ClusterIP inside the pods' range: refused as an agent would, named.
    let bad = "apiVersion: v1\nkind: Service\nmetadata: {name: bad, namespace: x}\n\
               spec: {clusterIP: 10.244.1.99, ports: [{port: 80}]}\n";
    let e = format!(
        "{:#}",
        apply_text(SPEC, &docs(bad).unwrap(), false).unwrap_err()
    );
    assert!(
        e.contains("service x/bad left out") && e.contains("cluster_ip"),
        "{e}"
    );
    // Endpoints without their service have nowhere to go.
    let slice = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
                 metadata: {name: s, namespace: x, labels: {kubernetes.io/service-name: nope}}\n\
                 addressType: IPv4\nendpoints: []\n";
    let e = format!(
        "{:#}",
        apply_text(SPEC, &docs(slice).unwrap(), false).unwrap_err()
    );
    assert!(e.contains("no Service x/nope"), "{e}");
    // A record the file cannot parse would be lost by a rewrite: refused.
    let broken = SPEC.replace("spec = { podSelector = {} }", "spec = { ingress = 1 }");
    let e = format!(
        "{:#}",
        apply_text(&broken, &docs(POLICY).unwrap(), false).unwrap_err()
    );
    assert!(
        e.contains("policies[0]") && e.contains("fix it first"),
        "{e}"
    );
}
