//! Services in the programs: ClusterIP and node ports translated on the fast path,
//! with real packets through real kernels.
use std::{collections::BTreeMap, net::Ipv4Addr};

use netpath::spec::ClusterSpec;
use netpath_tests::{
    lab,
    lab::Lab,
    service::{ask_tcp, ask_udp, cluster_ip, Backend},
};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const TARGET: u16 = 8080;

fn with_services(lab: &Lab, services: Vec<netpath::spec::ServiceSpec>) -> ClusterSpec {
    let mut d = lab.spec.to_draft();
    d.services = services;
    let spec = d.validate().unwrap();
    lab.write_spec(&spec).unwrap();
    spec
}

#[test]
fn pods_on_every_node_reach_every_backend_through_a_cluster_ip() {
    let lab = lab(3, 2);
    let backends: Vec<_> = lab.nodes.iter().map(|n| &n.pods[0]).collect();
    let _servers: Vec<_> = backends
        .iter()
        .map(|p| Backend::serve(p.ns.path(), p.ip, TARGET).unwrap())
        .collect();
    let ips: Vec<Ipv4Addr> = backends.iter().map(|p| p.ip).collect();
    with_services(&lab, vec![cluster_ip("web", VIP, 80, TARGET, &ips)]);
    std::thread::sleep(std::time::Duration::from_secs(2));
    for node in &lab.nodes {
        let client = &node.pods[1];
        let mut seen = BTreeMap::new();
        for _ in 0..30 {
            let a = ask_tcp(client.ns.path(), VIP, 80)
                .unwrap_or_else(|e| panic!("{}: {e:#}\n{}", client.name, lab.agent_log(0)));
            assert_eq!(
                a.client, client.ip,
                "the backend sees the client pod's own address"
            );
            *seen.entry(a.backend).or_insert(0) += 1;
        }
        let u = ask_udp(client.ns.path(), VIP, 80).unwrap();
        assert_eq!(u.client, client.ip);
        eprintln!("{}: {seen:?}", client.name);
        assert_eq!(seen.len(), 3, "{seen:?}");
    }
}
