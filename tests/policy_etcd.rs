//! Network policy from the stores, written by `netpath apply -f` (the real binary)
//! from Kubernetes manifests: into a private etcd cluster that the agents watch,
//! and into the spec file they read; enforced on Kubernetes' model (namespaces x,
//! y, z; pods a, b, c) with real connections, and lifted again when the keys go.
//! A bad manifest is refused whole, naming the document and the field, and
//! writes nothing.
use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use netpath_lab::{
    lab::{Lab, LabConfig, LabStore},
    lab_of,
    policy::{Matrix, Model, ModelPod, Proto},
    service::ask_tcp,
    wait_for,
};
use serde_json::json;

/// One etcd lab at a time (three members, agents and 72 probes load two CPUs).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A directory for the test's manifests, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(lab: &Lab) -> Self {
        let dir = std::env::temp_dir().join(format!("{}-manifests", lab.prefix));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `netpath ARGS`, inside the etcd cluster's namespace when the lab has one.
fn netpath(lab: &Lab, cfg: &LabConfig, args: &[&str]) -> Output {
    let run = || Ok(Command::new(&cfg.agent_bin).args(args).output()?);
    match &lab.etcd {
        Some(etcd) => etcd.ns.run(run).unwrap(),
        None => run().unwrap(),
    }
}

fn etcd_flags(lab: &Lab) -> Vec<String> {
    let endpoints = lab.etcd.as_ref().unwrap().endpoints().join(",");
    vec![
        "--etcd".into(),
        endpoints,
        "--prefix".into(),
        "/netpath".into(),
    ]
}

/// `netpath apply|delete -f FILES... TARGET`, which must succeed; returns its output.
fn apply(lab: &Lab, cfg: &LabConfig, verb: &str, files: &[&Path], target: &[String]) -> String {
    let mut args: Vec<String> = vec![verb.into()];
    for f in files {
        args.extend(["-f".into(), f.display().to_string()]);
    }
    args.extend(target.iter().cloned());
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = netpath(lab, cfg, &argv);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "netpath {args:?}: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The model's namespaces and pods as a `kind: List` (JSON), as a watcher of the
/// API server would find them: with the pods' addresses.
fn model_records(model: &Model) -> String {
    let (namespaces, pods) = model.records();
    let mut items = Vec::new();
    for n in namespaces {
        let mut v = serde_json::to_value(n).unwrap();
        v["apiVersion"] = "v1".into();
        v["kind"] = "Namespace".into();
        items.push(v);
    }
    for p in pods {
        let mut v = serde_json::to_value(p).unwrap();
        v["apiVersion"] = "v1".into();
        v["kind"] = "Pod".into();
        items.push(v);
    }
    json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string()
}

/// Deny all ingress into x; x/a hears x/b on its named port; x/c hears namespace y.
const POLICIES: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Ingress]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-hears-b, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{podSelector: {matchLabels: {pod: b}}}]
    ports: [{port: serve-80-tcp, protocol: TCP}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: c-hears-y, namespace: x}
spec:
  podSelector:
    matchExpressions: [{key: pod, operator: In, values: [c]}]
  ingress:
  - from: [{namespaceSelector: {matchLabels: {ns: y}}}]
"#;

/// The ClusterIP of a Service in front of x/a.
const VIP: &str = "10.96.0.50";

fn is(p: &ModelPod, id: &str) -> bool {
    p.id() == id
}

/// Waits until every agent has taken a spec from its store after `since` (unix
/// ms), then probes TCP 80 until the matrix is `want` (or 5 s pass); returns how
/// long after `since` it held.
fn enforced(lab: &Lab, model: &Model, since: u64, what: &str, want: &Matrix) -> Duration {
    wait_for(
        &format!("{what}: a new spec on every node"),
        Duration::from_secs(10),
        || {
            lab.nodes.iter().all(|n| {
                netpath::state::AgentState::read(&n.state_dir())
                    .ok()
                    .flatten()
                    .and_then(|s| s.store_synced_unix_ms)
                    .is_some_and(|t| t >= since)
            })
        },
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = model.probe(Proto::Tcp, 80, want);
        if &got == want {
            let took = netpath::state::unix_ms().saturating_sub(since);
            eprintln!("{what}: the matrix as expected {took} ms after the write (probes included)");
            return Duration::from_millis(took);
        }
        assert!(
            Instant::now() < deadline,
            "{what}\nexpected:{want:?}observed:{got:?}\n{}",
            lab.agent_log(0)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The three policies' matrix, less those named in `gone`.
fn expected(model: &Model, gone: &[&str]) -> Matrix {
    let has = |p: &str| !gone.contains(&p);
    model.expect(|f, t| {
        let selected = t.namespace == "x"
            && (has("deny-all")
                || (has("a-hears-b") && is(t, "x/a"))
                || (has("c-hears-y") && is(t, "x/c")));
        !selected
            || (has("a-hears-b") && is(t, "x/a") && is(f, "x/b"))
            || (has("c-hears-y") && is(t, "x/c") && f.namespace == "y")
    })
}

#[test]
fn policies_applied_into_etcd_are_enforced_and_lifted_when_their_keys_go() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut cfg = LabConfig::new(2, 0).unwrap();
    cfg.store = LabStore::Etcd { tls: false };
    let mut lab = lab_of(&cfg);
    let model = Model::up(&mut lab).expect("the model's pods");
    let scratch = Scratch::new(&lab);
    let records = scratch.file("records.json", &model_records(&model));
    let policies = scratch.file("policies.yaml", POLICIES);
    let target = etcd_flags(&lab);

    // Everyone reaches everyone before.
    let open = model.expect(|_, _| true);
    assert_eq!(model.probe(Proto::Tcp, 80, &open), open);

    // x/a behind a Service too: policy judges the backend, after translation.
    let a_ip = model.pod("x/a").ip;
    let service = scratch.file("service.yaml", &format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: x}}\n\
         spec: {{clusterIP: {VIP}, ports: [{{name: http, port: 8000, targetPort: 80}}]}}\n\
         ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: web-1, namespace: x, labels: {{kubernetes.io/service-name: web}}}}\n\
         addressType: IPv4\nendpoints: [{{addresses: [\"{a_ip}\"]}}]\nports: [{{name: http, port: 80}}]\n"
    ));
    let since = netpath::state::unix_ms();
    let out = apply(
        &lab,
        &cfg,
        "apply",
        &[&records, &policies, &service],
        &target,
    );
    assert!(
        out.contains("NetworkPolicy x/deny-all: created (/netpath/policies/x/deny-all)"),
        "{out}"
    );
    assert!(
        out.contains("Pod x/a: created (/netpath/pods/x/a)"),
        "{out}"
    );
    assert!(
        out.contains("EndpointSlice x/web: created (/netpath/endpoints/x/web)"),
        "{out}"
    );
    enforced(
        &lab,
        &model,
        since,
        "three policies from etcd",
        &expected(&model, &[]),
    );
    let through = |from: &str| ask_tcp(&model.pod(from).netns, VIP.parse().unwrap(), 8000);
    assert_eq!(
        through("x/b").unwrap().backend,
        a_ip,
        "x/b reaches x/a through the Service"
    );
    assert!(
        through("y/a").is_err(),
        "y/a is denied x/a through the Service too"
    );
    // UDP on 80 too: x/a's policy names TCP, so x/a hears no UDP at all.
    let udp = model.expect(|f, t| t.namespace != "x" || (is(t, "x/c") && f.namespace == "y"));
    let got = model.probe(Proto::Udp, 80, &udp);
    assert_eq!(got, udp, "UDP 80\nexpected:{udp:?}observed:{got:?}");

    // Applied again: every key unchanged, nothing moves.
    let out = apply(&lab, &cfg, "apply", &[&policies], &target);
    assert_eq!(out.matches("unchanged").count(), 3, "{out}");

    // The deny-all key deleted behind netpath's back (as a watcher does when the
    // API object goes): x/b is open again, x/a and x/c keep their own policies.
    let etcd = lab.etcd.as_ref().unwrap();
    let since = netpath::state::unix_ms();
    etcd.etcdctl(&["del", "/netpath/policies/x/deny-all"])
        .unwrap();
    enforced(
        &lab,
        &model,
        since,
        "deny-all deleted",
        &expected(&model, &["deny-all"]),
    );

    // `netpath delete -f` takes the rest: everyone reaches everyone again.
    let since = netpath::state::unix_ms();
    let out = apply(&lab, &cfg, "delete", &[&policies], &target);
    assert!(out.contains("NetworkPolicy x/deny-all: not there"), "{out}");
    assert!(out.contains("NetworkPolicy x/a-hears-b: removed"), "{out}");
    enforced(&lab, &model, since, "every policy deleted", &open);
    let left = etcd
        .etcdctl(&["get", "--prefix", "--keys-only", "/netpath/policies/"])
        .unwrap();
    assert!(left.trim().is_empty(), "{left}");
}

#[test]
fn a_bad_manifest_writes_nothing_and_a_bad_key_is_left_out_alone_named() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut cfg = LabConfig::new(1, 0).unwrap();
    cfg.store = LabStore::Etcd { tls: false };
    let mut lab = lab_of(&cfg);
    let pod = lab.attach_pod_as(0, "x", "a").unwrap();
    let pod_ip = lab.nodes[0].pods[pod].ip.to_string();
    let scratch = Scratch::new(&lab);
    let etcd = lab.etcd.as_ref().unwrap();
    let manifest = scratch.file(
        "bad.yaml",
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: good, namespace: x}
spec: {podSelector: {}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bad, namespace: x}
spec:
  podSelector:
    matchExpressions: [{key: pod, operator: Equal, values: [a]}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: x}
"#,
    );
    let mut args = vec![
        "apply".to_string(),
        "-f".into(),
        manifest.display().to_string(),
    ];
    args.extend(etcd_flags(&lab));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = netpath(&lab, &cfg, &argv);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a bad manifest applied: {stderr}");
    let doc = manifest.display();
    for want in [
        format!(
            "{doc} document 2: NetworkPolicy x/bad: spec.podSelector.matchExpressions[0].operator \
             = \"Equal\": must be one of In, NotIn, Exists, DoesNotExist"
        ),
        format!("{doc} document 3: kind \"Deployment\" x/web: not one netpath applies"),
    ] {
        assert!(stderr.contains(&want), "{want}\nnot in:\n{stderr}");
    }
    let keys = etcd
        .etcdctl(&["get", "--prefix", "--keys-only", "/netpath/"])
        .unwrap();
    assert!(
        !keys.contains("/policies/"),
        "something was written:\n{keys}"
    );

    // A bad value put by hand (no apply to stop it) is left out alone, named by
    // its key and field; the good one next to it is in force.
    let since = netpath::state::unix_ms();
    let bad = r#"{"metadata": {"namespace": "x", "name": "bad"},
        "spec": {"podSelector": {"matchExpressions": [{"key": "pod", "operator": "Equal", "values": ["a"]}]}}}"#;
    etcd.etcdctl(&["put", "/netpath/policies/x/bad", bad])
        .unwrap();
    etcd.etcdctl(&[
        "put",
        "/netpath/policies/x/good",
        r#"{"spec": {"podSelector": {}}}"#,
    ])
    .unwrap();
    let note =
        "/netpath/policies/x/bad: policy left out: spec.podSelector.matchExpressions[0].operator";
    wait_for(
        "the bad key named, the good policy selecting x/a",
        Duration::from_secs(10),
        || {
            netpath::state::AgentState::read(&lab.nodes[0].state_dir())
                .ok()
                .flatten()
                .is_some_and(|s| {
                    s.store_synced_unix_ms.is_some_and(|t| t >= since)
                        && s.left_out.iter().any(|l| l.starts_with(note))
                        && s.policy.get(&pod_ip).is_some_and(|p| p == &["x/good"])
                })
        },
    );
    assert!(lab.agent_log(0).contains(note), "{}", lab.agent_log(0));
}

#[test]
fn policies_applied_into_the_spec_file_reach_the_agents_watching_it() {
    let cfg = LabConfig::new(2, 0).unwrap();
    let mut lab = lab_of(&cfg);
    let model = Model::up(&mut lab).expect("the model's pods");
    let scratch = Scratch::new(&lab);
    let records = scratch.file("records.json", &model_records(&model));
    let policies = scratch.file("policies.yaml", POLICIES);
    let target = vec![
        "--spec-file".to_string(),
        lab.spec_path().display().to_string(),
    ];
    let before = netpath::spec::ClusterSpec::from_file(lab.spec_path()).unwrap();

    let since = netpath::state::unix_ms();
    let out = apply(&lab, &cfg, "apply", &[&records, &policies], &target);
    assert!(out.contains("NetworkPolicy x/deny-all: added"), "{out}");
    enforced(
        &lab,
        &model,
        since,
        "three policies from the spec file",
        &expected(&model, &[]),
    );
    let after = netpath::spec::ClusterSpec::from_file(lab.spec_path()).unwrap();
    assert_eq!(
        (&after.settings, &after.nodes),
        (&before.settings, &before.nodes)
    );
    assert_eq!(after.policy.policies.len(), 3);

    let since = netpath::state::unix_ms();
    let out = apply(&lab, &cfg, "delete", &[&policies], &target);
    assert_eq!(out.matches(": removed").count(), 3, "{out}");
    enforced(
        &lab,
        &model,
        since,
        "policies deleted from the spec file",
        &model.expect(|_, _| true),
    );
}
