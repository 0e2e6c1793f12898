//! Kubernetes' own network-policy model (`test/e2e/network/netpol`): namespaces x, y
//! and z, pods a, b and c in each (label `pod=<name>`, namespaces labelled
//! `ns=<name>`), every pod serving TCP and UDP on 80 and 81 (ports named
//! `serve-80-tcp` …), spread over the lab's nodes; and the reachability matrix
//! probed with real connections, printed beside the expected one on a mismatch.
use std::{
    fmt,
    io::Read,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket},
    path::PathBuf,
    time::Duration,
};

use anyhow::Result;
use netpath::policy::{Namespace, NetworkPolicy, PodRecord};
use serde_json::json;

use crate::{lab::Lab, netns, service::Backend};

pub const NAMESPACES: [&str; 3] = ["x", "y", "z"];
pub const PODS: [&str; 3] = ["a", "b", "c"];
/// A denied TCP connect is a dropped SYN: given up after this (an allowed one on
/// the lab's links takes well under a millisecond).
const PROBE_TIMEOUT: Duration = Duration::from_millis(700);
/// A probe that failed where it should have passed is tried again with this much
/// patience before it counts (an emulated VM is slow, and 72 probes run at once).
const RECHECK_TIMEOUT: Duration = Duration::from_secs(4);

/// One model pod.
pub struct ModelPod {
    pub namespace: &'static str,
    pub name: &'static str,
    pub node: usize,
    pub ip: Ipv4Addr,
    pub netns: PathBuf,
}

impl ModelPod {
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

pub struct Model {
    pub pods: Vec<ModelPod>,
    _servers: Vec<Backend>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Model {
    /// The nine pods, wired round-robin into the lab's nodes through the product's
    /// CNI code path (as the Kubernetes pod `namespace/name`), each serving.
    pub fn up(lab: &mut Lab) -> Result<Self> {
        let mut pods = Vec::new();
        let mut servers = Vec::new();
        let mut k = 0;
        for ns in NAMESPACES {
            for name in PODS {
                let node = k % lab.nodes.len();
                k += 1;
                let i = lab.attach_pod_as(node, ns, name)?;
                let p = &lab.nodes[node].pods[i];
                for port in [80, 81] {
                    servers.push(Backend::serve(p.ns.path(), p.ip, port)?);
                }
                pods.push(ModelPod {
                    namespace: ns,
                    name,
                    node,
                    ip: p.ip,
                    netns: p.ns.path().to_path_buf(),
                });
            }
        }
        Ok(Self {
            pods,
            _servers: servers,
        })
    }

    pub fn pod(&self, id: &str) -> &ModelPod {
        self.pods
            .iter()
            .find(|p| p.id() == id)
            .unwrap_or_else(|| panic!("no model pod {id}"))
    }

    /// The records a watcher of the API server would write: namespaces with their
    /// `ns` label, pods with `pod`, named ports and addresses.
    pub fn records(&self) -> (Vec<Namespace>, Vec<PodRecord>) {
        let namespaces = NAMESPACES
            .iter()
            .map(|ns| {
                serde_json::from_value(json!({"metadata": {"name": ns, "labels": {"ns": ns}}}))
                    .expect("namespace record")
            })
            .collect();
        let pods = self
            .pods
            .iter()
            .map(|p| {
                let ports: Vec<_> = [80, 81]
                    .iter()
                    .flat_map(|port| {
                        [("tcp", "TCP"), ("udp", "UDP")].map(|(n, proto)| {
                            json!({"name": format!("serve-{port}-{n}"), "containerPort": port, "protocol": proto})
                        })
                    })
                    .collect();
                serde_json::from_value(json!({
                    "metadata": {"namespace": p.namespace, "name": p.name, "labels": {"pod": p.name}},
                    "spec": {"containers": [{"name": "cont", "ports": ports}]},
                    "status": {"podIP": p.ip.to_string(), "podIPs": [{"ip": p.ip.to_string()}]},
                }))
                .expect("pod record")
            })
            .collect();
        (namespaces, pods)
    }

    /// Every pod to every pod on `port`, all at once; a pod to itself never leaves
    /// its namespace and is left out (always allowed). Cells that `want` allows but
    /// the fast pass found closed are probed again, slowly.
    pub fn probe(&self, proto: Proto, port: u16, want: &Matrix) -> Matrix {
        self.probe_to(proto, |to| to.ip, port, want)
    }

    /// As `probe`, to the address `dst(server)` gives (a Service's ClusterIP).
    pub fn probe_to(
        &self,
        proto: Proto,
        dst: impl Fn(&ModelPod) -> Ipv4Addr + Sync,
        port: u16,
        want: &Matrix,
    ) -> Matrix {
        let fast = self.probe_pass(proto, &dst, port, PROBE_TIMEOUT, |_| true);
        let again = |k: usize| want.cells[k] && !fast.cells[k];
        let slow = self.probe_pass(proto, &dst, port, RECHECK_TIMEOUT, again);
        let cells = (0..fast.cells.len())
            .map(|k| {
                if again(k) {
                    slow.cells[k]
                } else {
                    fast.cells[k]
                }
            })
            .collect();
        Matrix {
            names: fast.names,
            cells,
        }
    }

    fn probe_pass(
        &self,
        proto: Proto,
        dst: &(impl Fn(&ModelPod) -> Ipv4Addr + Sync),
        port: u16,
        timeout: Duration,
        which: impl Fn(usize) -> bool,
    ) -> Matrix {
        let n = self.pods.len();
        let mut cells = vec![true; n * n];
        std::thread::scope(|s| {
            let mut handles = Vec::new();
            for (i, from) in self.pods.iter().enumerate() {
                for (j, to) in self.pods.iter().enumerate() {
                    if i == j || !which(i * n + j) {
                        continue;
                    }
                    let addr = SocketAddrV4::new(dst(to), port);
                    let ns = from.netns.clone();
                    handles.push((
                        i * n + j,
                        s.spawn(move || reach(&ns, proto, addr, to.ip, timeout)),
                    ));
                }
            }
            for (k, h) in handles {
                cells[k] = h.join().unwrap_or(false);
            }
        });
        Matrix {
            names: self.pods.iter().map(ModelPod::id).collect(),
            cells,
        }
    }

    /// The matrix `allowed(from, to)` describes (a pod to itself always allowed).
    pub fn expect(&self, allowed: impl Fn(&ModelPod, &ModelPod) -> bool) -> Matrix {
        let mut cells = Vec::new();
        for from in &self.pods {
            for to in &self.pods {
                cells.push(from.id() == to.id() || allowed(from, to));
            }
        }
        Matrix {
            names: self.pods.iter().map(ModelPod::id).collect(),
            cells,
        }
    }
}

/// Whether `from_ns` reaches `addr` and the answer comes from server `server`.
fn reach(
    from_ns: &std::path::Path,
    proto: Proto,
    addr: SocketAddrV4,
    server: Ipv4Addr,
    timeout: Duration,
) -> bool {
    let answer = netns::run_in(from_ns, || {
        Ok(match proto {
            Proto::Tcp => {
                let mut c = TcpStream::connect_timeout(&SocketAddr::V4(addr), timeout)?;
                c.set_read_timeout(Some(Duration::from_secs(2)))?;
                let mut buf = String::new();
                c.read_to_string(&mut buf)?;
                buf
            }
            Proto::Udp => {
                let sock = UdpSocket::bind(("0.0.0.0", 0))?;
                sock.set_read_timeout(Some(timeout / 2))?;
                let mut got = String::new();
                for _ in 0..2 {
                    sock.send_to(b"?", addr)?;
                    let mut buf = [0u8; 256];
                    if let Ok((n, _)) = sock.recv_from(&mut buf) {
                        got = String::from_utf8_lossy(&buf[..n]).into_owned();
                        break;
                    }
                }
                got
            }
        })
    });
    answer.is_ok_and(|a| a.split_whitespace().next() == Some(&server.to_string()))
}

/// Who reaches whom: rows are clients, columns servers.
#[derive(Clone, PartialEq, Eq)]
pub struct Matrix {
    names: Vec<String>,
    cells: Vec<bool>,
}

impl Matrix {
    pub fn allowed(&self, from: usize, to: usize) -> bool {
        self.cells[from * self.names.len() + to]
    }
}

impl fmt::Debug for Matrix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\n     ")?;
        for n in &self.names {
            write!(f, " {n:>4}")?;
        }
        for (i, from) in self.names.iter().enumerate() {
            write!(f, "\n{from:>4} ")?;
            for j in 0..self.names.len() {
                write!(f, " {:>4}", if self.allowed(i, j) { "." } else { "X" })?;
            }
        }
        writeln!(f)
    }
}

/// A policy from the JSON `kubectl get networkpolicy -o json` prints.
pub fn policy(v: serde_json::Value) -> NetworkPolicy {
    serde_json::from_value(v).expect("a NetworkPolicy")
}

/// The policies in force: written into the lab's spec with the model's records, and
/// waited for on every node (its agent read the file and applied it; an emulated VM
/// under load takes seconds).
pub fn apply(lab: &Lab, model: &Model, policies: Vec<NetworkPolicy>) -> Result<()> {
    apply_with(lab, model, policies, Vec::new())
}

/// As `apply`, with these services in the spec too.
pub fn apply_with(
    lab: &Lab,
    model: &Model,
    policies: Vec<NetworkPolicy>,
    services: Vec<netpath::spec::ServiceSpec>,
) -> Result<()> {
    let (namespaces, pods) = model.records();
    let mut d = lab.spec.to_draft();
    d.services = services;
    d.namespaces = namespaces;
    d.pods = pods;
    d.policies = policies;
    let spec = d.validate()?;
    let text = spec.to_toml();
    if std::fs::read_to_string(lab.spec_path()).ok().as_deref() == Some(&text) {
        return Ok(());
    }
    let written = netpath::state::unix_ms();
    lab.write_spec_text(&text)?;
    crate::wait_for("the policy on every node", Duration::from_secs(30), || {
        lab.nodes.iter().all(|n| {
            netpath::state::AgentState::read(&n.state_dir())
                .ok()
                .flatten()
                .and_then(|s| s.store_synced_unix_ms)
                .is_some_and(|t| t >= written)
        })
    });
    Ok(())
}
