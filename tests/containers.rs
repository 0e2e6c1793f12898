//! Real container runtimes attaching containers through the netpath CNI plugin:
//! containerd 1.6 (`ctr run --cni`, which runs the plugin from the host's CNI paths)
//! and podman 4.3 (its CNI backend). Containers on different nodes — directly
//! routed and across the router — reach each other with their own addresses, and
//! removing a container takes its veth, address and map entry with it.
use std::{collections::BTreeSet, net::Ipv4Addr};

use netpath_lab::{
    check, endpoint_ips,
    lab::{Lab, LabConfig},
    node_veths, require_root,
};

fn held(lab: &Lab, node: usize) -> BTreeSet<Ipv4Addr> {
    netpath::ipam::Store::open(&lab.nodes[node].state_dir())
        .expect("address book")
        .book
        .allocations
        .into_keys()
        .collect()
}

#[test]
fn containerd_containers_talk_across_nodes_and_leave_nothing_behind() {
    require_root();
    // node1 and node2 share a subnet (direct); node3 is behind the router (VXLAN).
    let cfg = LabConfig::new(3, 0).unwrap();
    let mut lab = Lab::up(&cfg).expect("bring up lab");
    for n in 0..3 {
        lab.run_container(n, "c", &cfg).expect("ctr run --cni");
    }
    let c = &lab.containers;
    for (a, b) in [(0, 1), (1, 0), (0, 2), (2, 1)] {
        let seen = check::tcp(&c[a].netns, &c[b].netns, c[b].ip).unwrap();
        assert_eq!(seen, c[a].ip, "{} -> {}: source kept", c[a].id, c[b].id);
        assert!(lab.nodes[c[b].node].spec.pod_cidr.contains(c[b].ip));
    }
    // A container's own tools: one that pings node3's container and ends.
    let out = lab
        .containerd(0)
        .unwrap()
        .run_to_end(
            "pinger",
            &["/bin/ping", "-c", "1", "-W", "5", &c[2].ip.to_string()],
        )
        .expect("ping from a container");
    assert!(out.contains("1 packets received"), "{out}");
    let c = &lab.containers;
    let ip = c[1].ip;
    assert!(endpoint_ips(&lab, 1).contains(&ip) && held(&lab, 1).contains(&ip));
    assert_eq!(node_veths(&lab, 1).len(), 1);

    // `ctr task kill`; `ctr run --rm` deletes the container and calls DEL.
    lab.containers[1].stop().expect("stop the container");
    assert!(node_veths(&lab, 1).is_empty(), "veth left behind");
    assert!(
        !endpoint_ips(&lab, 1).contains(&ip),
        "map entry left behind"
    );
    assert!(!held(&lab, 1).contains(&ip), "address still allocated");
    // The others are untouched.
    let c = &lab.containers;
    assert_eq!(
        check::tcp(&c[2].netns, &c[0].netns, c[0].ip).unwrap(),
        c[2].ip
    );
}

#[test]
fn podman_attaches_a_container_through_its_cni_backend() {
    require_root();
    let cfg = LabConfig::new(2, 1).unwrap();
    let mut lab = Lab::up(&cfg).expect("bring up lab");
    let mut podman = lab.podman(0, &cfg).expect("private podman");
    let (pid, ip) = podman.run("web").expect("podman run");
    assert!(lab.nodes[0].spec.pod_cidr.contains(ip));
    assert!(held(&lab, 0).contains(&ip) && endpoint_ips(&lab, 0).contains(&ip));
    let netns = std::path::PathBuf::from(format!("/proc/{pid}/ns/net"));
    // To a lab pod on the other node and back, own addresses on both sides.
    let pod = &lab.nodes[1].pods[0];
    assert_eq!(check::tcp(&netns, pod.ns.path(), pod.ip).unwrap(), ip);
    assert_eq!(check::tcp(pod.ns.path(), &netns, ip).unwrap(), pod.ip);
    podman.remove("web").expect("podman rm");
    assert!(!held(&lab, 0).contains(&ip), "address still allocated");
    assert!(
        !endpoint_ips(&lab, 0).contains(&ip),
        "map entry left behind"
    );
    assert_eq!(
        node_veths(&lab, 0).len(),
        1,
        "only the lab pod's veth remains"
    );
}
