//! Encryption between nodes (WireGuard, netpath's user-space device on this host):
//! pods and nodes reach every pod as before, and on the wire between nodes only
//! WireGuard's datagrams carry them — no pod address in clear, whatever the backend.
use std::{
    net::Ipv4Addr,
    sync::atomic::{AtomicBool, Ordering::Relaxed},
    time::Duration,
};

use netpath::spec::{Backend, Encryption};
use netpath_common::{Program, Reason};
use netpath_lab::{
    assert_model,
    check::Proto,
    counter_of,
    lab::{generated_spec, Lab, LabConfig},
    lab_of, transfer, RawSocket,
};

const WG_PORT: u16 = 51820;

fn wg_lab(backend: Backend, pods: usize) -> Lab {
    let spec = generated_spec(2, backend)
        .unwrap()
        .with_settings(|s| s.encryption = Encryption::Wireguard)
        .unwrap();
    lab_of(&LabConfig::with_spec(spec, pods).unwrap())
}

/// A frame on the underlay: its outer IPv4 addresses and, for UDP, its ports.
type Outer = (Ipv4Addr, Ipv4Addr, Option<(u16, u16)>);

fn outer(frame: &[u8]) -> Option<Outer> {
    if frame.get(12..14)? != [0x08, 0x00] {
        return None;
    }
    let ip = frame.get(14..34)?;
    let (src, dst) = (
        Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
        Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
    );
    let ihl = (ip[0] as usize & 0xf) * 4;
    let ports = (ip[9] == 17).then(|| {
        let u = frame.get(14 + ihl..14 + ihl + 4)?;
        Some((
            u16::from_be_bytes([u[0], u[1]]),
            u16::from_be_bytes([u[2], u[3]]),
        ))
    });
    Some((src, dst, ports.flatten()))
}

/// Captures node 2's underlay while `work` runs: (WireGuard datagrams, frames with a
/// pod address in clear as outer source or destination).
fn captured(lab: &Lab, work: impl FnOnce()) -> (usize, Vec<String>) {
    let pods = lab.spec.settings.cluster_cidr;
    let sock = RawSocket::open(lab.nodes[1].ns.path(), "eth0").unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let capture = s.spawn(|| {
            let (mut wg, mut clear) = (0usize, Vec::new());
            while !stop.load(Relaxed) {
                let Some((src, dst, ports)) =
                    sock.recv(Duration::from_millis(50)).and_then(|f| outer(&f))
                else {
                    continue;
                };
                if pods.contains(src) || pods.contains(dst) {
                    clear.push(format!("{src} -> {dst} {ports:?}"));
                } else if ports.is_some_and(|(a, b)| a == WG_PORT || b == WG_PORT) {
                    wg += 1;
                }
            }
            (wg, clear)
        });
        work();
        stop.store(true, Relaxed);
        capture.join().unwrap()
    })
}

fn pods_and_nodes_reach_every_pod_and_nothing_crosses_in_clear(backend: Backend) {
    let lab = wg_lab(backend, 1);
    let (a, b) = (&lab.nodes[0].pods[0], &lab.nodes[1].pods[0]);
    let (wg, clear) = captured(&lab, || {
        assert_model(&lab, &[Proto::Tcp, Proto::Udp, Proto::Icmp]);
        transfer::transfer_intact(a.ns.path(), b.ns.path(), b.ip, 9100, 4 << 20)
            .expect("an intact transfer through WireGuard");
    });
    eprintln!(
        "{backend:?}: {wg} WireGuard datagrams on node2's underlay, {} frames with a pod address in clear",
        clear.len()
    );
    assert!(
        clear.is_empty(),
        "pod addresses in clear on the wire ({}): {:?}",
        clear.len(),
        &clear[..clear.len().min(10)]
    );
    assert!(
        wg > 100,
        "only {wg} WireGuard datagrams carried the traffic"
    );
    for n in 0..2 {
        let count = |p, r| counter_of(&lab, n, p, r);
        eprintln!(
            "node {n}: to-wireguard {}, from-wireguard {}",
            count(Program::FromPod, Reason::ToWireguard),
            count(Program::FromWireguard, Reason::FromWireguard)
        );
        assert!(count(Program::FromPod, Reason::ToWireguard) > 0, "node {n}");
        assert!(
            count(Program::FromWireguard, Reason::FromWireguard) > 0,
            "node {n}"
        );
        for (p, r) in [
            (Program::FromPod, Reason::DirectRouted),
            (Program::FromPod, Reason::Encapsulated),
            (Program::FromPod, Reason::DropNoKey),
        ] {
            assert_eq!(count(p, r), 0, "node {n}: {p:?} {r:?}");
        }
    }
}

#[test]
fn direct_backend_encrypted() {
    pods_and_nodes_reach_every_pod_and_nothing_crosses_in_clear(Backend::Direct);
}

#[test]
fn vxlan_backend_encrypted() {
    pods_and_nodes_reach_every_pod_and_nothing_crosses_in_clear(Backend::Vxlan);
}
