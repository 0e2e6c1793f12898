use super::*;

const TWO: &str = r#"
cluster_cidr = "10.244.0.0/16"
[[nodes]]
name = "a"
underlay = "192.168.56.11/24"
pod_cidr = "10.244.1.0/24"
[[nodes]]
name = "b"
underlay = "192.168.57.12/24"
pod_cidr = "10.244.2.0/24"
"#;

fn err(text: &str) -> String {
    ClusterSpec::parse(text).unwrap_err().to_string()
}

#[test]
fn embedded_default_is_valid_and_mixes_direct_and_vxlan() {
    let s = ClusterSpec::parse(DEFAULT_SPEC).unwrap();
    assert_eq!(s.nodes.len(), 3);
    assert_eq!(s.settings.backend, Backend::Auto);
    assert_eq!((s.settings.vni, s.settings.port), (1, 8472));
    let (n1, n2, n3) = (&s.nodes[0], &s.nodes[1], &s.nodes[2]);
    assert_eq!(s.route_mode(n1, n2), RouteMode::Direct);
    assert_eq!(s.route_mode(n1, n3), RouteMode::Vxlan);
    assert_eq!(s.route_mode(n3, n2), RouteMode::Vxlan);
    assert_eq!(s.pod_mtu(1500), 1450);
}

#[test]
fn defaults_and_derived_values() {
    let s = ClusterSpec::parse(TWO).unwrap();
    assert_eq!(s.settings.redirect, Redirect::Peer);
    assert_eq!(s.bpffs_root, PathBuf::from("/sys/fs/bpf/netpath"));
    assert_eq!(s.nodes[0].vtep_mac.octets(), [0x0e, 0x6e, 192, 168, 56, 11]);
    assert_eq!(s.node("b").unwrap().ip(), Ipv4Addr::new(192, 168, 57, 12));
    let e = s.node("zz").unwrap_err().to_string();
    assert!(e.contains("zz") && e.contains("a, b"), "{e}");
}

#[test]
fn direct_backend_requires_one_subnet() {
    let e = err(&format!("backend = \"direct\"\n{TWO}"));
    assert!(
        e.contains("nodes[1].underlay") && e.contains("one L2 subnet"),
        "{e}"
    );
    let s = ClusterSpec::parse(DEFAULT_SPEC).unwrap();
    assert!(s.with_backend(Backend::Direct).is_err());
    assert_eq!(
        s.with_backend(Backend::Vxlan).unwrap().settings.backend,
        Backend::Vxlan
    );
}

#[test]
fn backends_pick_route_modes_and_mtu() {
    let mut s = ClusterSpec::parse(TWO).unwrap();
    s.settings.backend = Backend::Direct;
    assert_eq!(s.route_mode(&s.nodes[0], &s.nodes[1]), RouteMode::Direct);
    assert_eq!(s.pod_mtu(1500), 1500);
    s.settings.backend = Backend::Vxlan;
    assert_eq!(s.route_mode(&s.nodes[0], &s.nodes[1]), RouteMode::Vxlan);
    assert_eq!(s.pod_mtu(9000), 8950);
    s.settings.mtu = Some(1400);
    assert_eq!(s.pod_mtu(1500), 1400);
}

#[test]
fn ipip_is_an_overlay_of_its_own_and_one_that_auto_can_pick() {
    let s = ClusterSpec::parse(&format!("backend = \"ipip\"\n{TWO}")).unwrap();
    assert_eq!(s.route_mode(&s.nodes[0], &s.nodes[1]), RouteMode::Ipip);
    assert_eq!(s.pod_mtu(1500), 1480);
    // auto across subnets: the overlay named, else VXLAN; within a subnet: direct.
    let s = ClusterSpec::parse(&format!("overlay = \"ipip\"\n{TWO}")).unwrap();
    assert_eq!(s.route_mode(&s.nodes[0], &s.nodes[1]), RouteMode::Ipip);
    assert_eq!(s.pod_mtu(9000), 8980);
    let same = ClusterSpec::parse(DEFAULT_SPEC)
        .unwrap()
        .with_settings(|x| x.overlay = Some(Overlay::Ipip))
        .unwrap();
    let (n1, n2, n3) = (&same.nodes[0], &same.nodes[1], &same.nodes[2]);
    assert_eq!(same.route_mode(n1, n2), RouteMode::Direct);
    assert_eq!(same.route_mode(n1, n3), RouteMode::Ipip);
    assert_eq!(ClusterSpec::parse(&same.to_toml()).unwrap(), same);
    // An overlay only auto would use, and a VXLAN device with no VXLAN, are mistakes.
    let e = err(&format!("backend = \"vxlan\"\noverlay = \"ipip\"\n{TWO}"));
    assert!(e.contains("overlay") && e.contains("auto"), "{e}");
    let e = err(&format!(
        "backend = \"ipip\"\nvxlan_device = \"receive\"\n{TWO}"
    ));
    assert!(e.contains("vxlan_device") && e.contains("IP-in-IP"), "{e}");
    let e = err(&format!("overlay = \"gre\"\n{TWO}"));
    assert!(e.contains("gre"), "{e}");
}

#[test]
fn bgp_routing_settings_are_checked_and_round_trip() {
    let text = format!(
        "routing = \"bgp\"\nbgp_mesh = false\n{TWO}\n[[bgp_peers]]\naddress = \"192.168.56.1\"\nasn = 65000\nnodes = [\"a\"]\n"
    );
    // [[bgp_peers]] after [[nodes]] in TOML order: the table arrays are top-level.
    let s = ClusterSpec::parse(&text).unwrap();
    assert_eq!(s.settings.routing, Routing::Bgp);
    assert_eq!(s.settings.asn, DEFAULT_ASN);
    assert!(!s.settings.bgp_mesh);
    let p = &s.settings.bgp_peers[0];
    assert!(p.serves(&s.nodes[0]) && !p.serves(&s.nodes[1]));
    assert_eq!(ClusterSpec::parse(&s.to_toml()).unwrap(), s);
    let peer: BgpPeer = "10.0.0.1:65001".parse().unwrap();
    assert!(peer.nodes.is_none() && peer.serves(&s.nodes[1]));
    // A subnet selects its nodes, those that join later too.
    let rack: BgpPeer = "10.0.0.1:65001:192.168.57.0/24".parse().unwrap();
    assert!(rack.serves(&s.nodes[1]) && !rack.serves(&s.nodes[0]));
    let by_subnet = text.replace("nodes = [\"a\"]", "nodes = [\"192.168.56.0/24\"]");
    assert_ne!(by_subnet, text);
    let s2 = ClusterSpec::parse(&by_subnet).unwrap();
    assert!(s2.settings.bgp_peers[0].serves(&s2.nodes[0]));
    let bad = text.replace("nodes = [\"a\"]", "nodes = [\"192.168.56.1/24\"]");
    assert!(err(&bad).contains("bgp_peers[0].nodes"), "{}", err(&bad));
    assert!("10.0.0.1".parse::<BgpPeer>().unwrap_err().contains("ASN"));
    assert!("10.0.0.1:x"
        .parse::<BgpPeer>()
        .unwrap_err()
        .contains("\"x\""));
    assert!("nope:1".parse::<BgpPeer>().unwrap_err().contains("IPv4"));
    let with = |lines: &str| format!("{lines}\n{TWO}");
    for (bad, field) in [
        ("routing = \"bgp\"\nasn = 0", "asn"),
        ("routing = \"bgp\"\nasn = 23456", "asn"),
        ("bgp_mesh = false", "routing"),
        ("routing = \"bgp\"\nbgp_mesh = false", "bgp_mesh"),
        ("routing = \"ospf\"", "ospf"),
    ] {
        let e = err(&with(bad));
        assert!(e.contains(field), "{bad}: {e}");
    }
    let twice = format!(
        "routing = \"bgp\"\n{TWO}\n[[bgp_peers]]\naddress = \"10.0.0.1\"\nasn = 1\n[[bgp_peers]]\naddress = \"10.0.0.1\"\nasn = 2\n"
    );
    assert!(
        err(&twice).contains("bgp_peers[1].address"),
        "{}",
        err(&twice)
    );
    // With routers carrying the routes, direct routing may span subnets.
    let direct = format!(
        "backend = \"direct\"\nrouting = \"bgp\"\n{TWO}\n[[bgp_peers]]\naddress = \"192.168.56.1\"\nasn = 65000\n"
    );
    assert!(ClusterSpec::parse(&direct).is_ok());
}

#[test]
fn round_trips_through_toml() {
    let s = ClusterSpec::parse(DEFAULT_SPEC).unwrap();
    assert_eq!(ClusterSpec::parse(&s.to_toml()).unwrap(), s);
}

#[test]
fn overlapping_pod_cidrs_name_field_and_value() {
    let e = err(&TWO.replace("10.244.2.0/24", "10.244.0.0/22"));
    assert!(
        e.contains("nodes[1].pod_cidr") && e.contains("10.244.0.0/22") && e.contains("overlaps"),
        "{e}"
    );
}

#[test]
fn pod_cidr_outside_cluster_is_rejected() {
    let e = err(&TWO.replace("10.244.2.0/24", "10.245.2.0/24"));
    assert!(
        e.contains("nodes[1].pod_cidr") && e.contains("10.245.2.0/24") && e.contains("outside"),
        "{e}"
    );
}

#[test]
fn duplicate_nodes_are_rejected() {
    let e = err(&TWO.replace("name = \"b\"", "name = \"a\""));
    assert!(
        e.contains("nodes[1].name") && e.contains("duplicate"),
        "{e}"
    );
    let e = err(&TWO.replace("192.168.57.12/24", "192.168.56.11/24"));
    assert!(
        e.contains("nodes[1].underlay") && e.contains("same address"),
        "{e}"
    );
}

#[test]
fn bad_addresses_name_field_and_value() {
    for (from, to, field) in [
        ("192.168.56.11/24", "192.168.56.300/24", "nodes[0].underlay"),
        ("192.168.56.11/24", "192.168.56.11", "nodes[0].underlay"),
        ("192.168.56.11/24", "192.168.56.0/24", "nodes[0].underlay"),
        ("10.244.1.0/24", "10.244.1.5/24", "nodes[0].pod_cidr"),
        ("10.244.1.0/24", "10.244.1.0/33", "nodes[0].pod_cidr"),
        ("10.244.0.0/16\"", "10.244.0.1/16\"", "cluster_cidr"),
    ] {
        let e = err(&TWO.replacen(from, to, 1));
        assert!(
            e.contains(field) && e.contains(to.trim_end_matches('"')),
            "{from} -> {to}: {e}"
        );
    }
}

#[test]
fn vni_port_mtu_and_mac_ranges() {
    let with = |line: &str| format!("{line}\n{TWO}");
    assert!(err(&with("vni = 0")).contains("vni"));
    assert!(err(&with("vni = 16777216")).contains("vni"));
    assert!(err(&with("port = 0")).contains("port"));
    assert!(err(&with("mtu = 100")).contains("mtu"));
    assert!(err(&with("backend = \"udp\"")).contains("udp"));
    assert!(err(&with("bpffs_root = \"/sys/fs/bpf\\u0000x\"")).contains("bpffs_root"));
    assert!(err(&with("bpffs_root = \"relative\"")).contains("bpffs_root"));
    let e = err(&TWO.replace(
        "pod_cidr = \"10.244.1.0/24\"",
        "pod_cidr = \"10.244.1.0/24\"\nvtep_mac = \"01:00:5e:00:00:01\"",
    ));
    assert!(e.contains("vtep_mac") && e.contains("unicast"), "{e}");
    let e = err(&TWO.replace(
        "pod_cidr = \"10.244.1.0/24\"",
        "pod_cidr = \"10.244.1.0/24\"\nvtep_mac = \"nope\"",
    ));
    assert!(e.contains("vtep_mac") && e.contains("nope"), "{e}");
}

#[test]
fn unknown_fields_and_empty_clusters_are_rejected() {
    assert!(err(&format!("bogus = 1\n{TWO}")).contains("bogus"));
    assert!(err("cluster_cidr = \"10.244.0.0/16\"").contains("at least one node"));
    assert!(err("not toml at all").contains("parse"));
}

#[test]
fn built_in_code_with_the_same_checks_as_the_file() {
    let net = |s: &str| s.parse::<Ipv4Net>().unwrap();
    let d = SpecDraft::new(net("10.244.0.0/16"))
        .node("a", net("192.168.56.11/24"), net("10.244.1.0/24"))
        .node("b", net("192.168.57.12/24"), net("10.244.2.0/24"));
    assert_eq!(
        d.clone().validate().unwrap(),
        ClusterSpec::parse(TWO).unwrap()
    );
    let bad = d.node("c", net("192.168.56.13/24"), net("10.244.2.0/23"));
    let e = bad.validate().unwrap_err().to_string();
    assert_eq!(
        e,
        "nodes[2].pod_cidr = \"10.244.2.0/23\": overlaps nodes[1].pod_cidr 10.244.2.0/24"
    );
}

#[test]
fn vxlan_device_is_off_unless_asked_and_maps_to_program_bits() {
    use netpath_common::{TUNNEL_RX, TUNNEL_TX_ROUTED};
    assert_eq!(
        ClusterSpec::parse(TWO).unwrap().settings.vxlan_device,
        VxlanDevice::Off
    );
    let s = ClusterSpec::parse(&format!("vxlan_device = \"both\"\n{TWO}")).unwrap();
    assert_eq!(s.settings.vxlan_device, VxlanDevice::Both);
    assert_eq!(
        s.settings.vxlan_device.tunnel_use(),
        TUNNEL_RX | TUNNEL_TX_ROUTED
    );
    assert_eq!(VxlanDevice::Receive.tunnel_use(), TUNNEL_RX);
    assert_eq!(VxlanDevice::Send.tunnel_use(), TUNNEL_TX_ROUTED);
    assert_eq!(VxlanDevice::Off.tunnel_use(), 0);
    assert_eq!(ClusterSpec::parse(&s.to_toml()).unwrap(), s);
    let e = err(&format!("vxlan_device = \"sometimes\"\n{TWO}"));
    assert!(e.contains("vxlan_device") || e.contains("sometimes"), "{e}");
}

/// `n` nodes with /26 pod CIDRs from 10.0.0.0/8 and underlay addresses in 172.16/12.
fn many(n: u32) -> SpecDraft {
    let mut d = SpecDraft::new(Ipv4Net::new(Ipv4Addr::new(10, 0, 0, 0), 8));
    for i in 0..n {
        d = d.node(
            &format!("n{i}"),
            Ipv4Net::new(
                Ipv4Addr::from(u32::from(Ipv4Addr::new(172, 16, 0, 2)) + i),
                12,
            ),
            Ipv4Net::new(
                Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 0)) + i * 64),
                26,
            ),
        );
    }
    d
}

#[test]
fn a_hundred_thousand_nodes_validate_and_a_late_overlap_is_found() {
    assert_eq!(many(100_000).validate().unwrap().nodes.len(), 100_000);
    // The last node's /24 swallows node 4's /26 and its three neighbours: the lowest one
    // it contains is named, the field is the later node's.
    let mut d = many(100_000);
    d.nodes[99_999].pod_cidr = Ipv4Net::new(Ipv4Addr::new(10, 0, 1, 0), 24);
    let e = d.validate().unwrap_err().to_string();
    assert!(
        e.contains("nodes[99999].pod_cidr") && e.contains("overlaps nodes[4].pod_cidr 10.0.1.0/26"),
        "{e}"
    );
    // Adjacent blocks do not overlap; equal ones do.
    let mut d = many(3);
    d.nodes[2].pod_cidr = d.nodes[0].pod_cidr;
    let e = d.validate().unwrap_err().to_string();
    assert!(
        e.contains("nodes[2].pod_cidr") && e.contains("overlaps nodes[0]"),
        "{e}"
    );
}

#[test]
fn masquerade_fields_default_on_parse_and_name_their_mistakes() {
    let s = ClusterSpec::parse(DEFAULT_SPEC).unwrap();
    assert!(s.settings.masquerade);
    assert!(s.settings.no_masquerade.is_empty());
    assert_eq!(
        s.settings.masquerade_ports,
        PortRange {
            min: 61000,
            max: 65535
        }
    );
    let with =
        |fields: &str| DEFAULT_SPEC.replacen("[[nodes]]", &format!("{fields}\n[[nodes]]"), 1);
    let s = ClusterSpec::parse(&with(
        "masquerade = false\nno_masquerade = [\"192.0.2.0/24\"]\nmasquerade_ports = \"40000-40999\"",
    ))
    .unwrap();
    assert!(!s.settings.masquerade);
    assert_eq!(
        s.settings.no_masquerade,
        vec!["192.0.2.0/24".parse().unwrap()]
    );
    assert_eq!(
        s.settings.masquerade_ports,
        PortRange {
            min: 40000,
            max: 40999
        }
    );
    // A round trip through TOML keeps them.
    assert_eq!(ClusterSpec::parse(&s.to_toml()).unwrap(), s);
    for (fields, named) in [
        ("no_masquerade = [\"192.0.2.1/24\"]", "no_masquerade[0]"),
        ("no_masquerade = [\"nonsense\"]", "in `no_masquerade`"),
        ("masquerade_ports = \"65000-61000\"", "masquerade_ports"),
        ("masquerade_ports = \"80-90\"", "masquerade_ports"),
        ("masquerade_ports = \"61000\"", "masquerade_ports"),
        ("masquerade_ports = \"61000-70000\"", "masquerade_ports"),
    ] {
        let e = err(&with(fields));
        assert!(e.contains(named), "{fields}: {e}");
    }
}

const WEB: &str = r#"
[[services]]
namespace = "default"
name = "web"
type = "NodePort"
cluster_ip = "10.96.0.10"
session_affinity = "ClientIP"
[[services.ports]]
name = "http"
port = 80
target_port = "web"
node_port = 30080
[[services.ports]]
name = "dns"
protocol = "UDP"
port = 53
target_port = 5353
node_port = 30053
[[services.endpoints]]
address = "10.244.1.5"
[[services.endpoints]]
address = "10.244.2.5"
node = "b"
ready = false
terminating = true
serving = true
[[services.endpoint_ports]]
name = "http"
port = 8080
"#;

fn with_web(edit: impl Fn(&str) -> String) -> String {
    format!("{TWO}{}", edit(WEB))
}

#[test]
fn services_parse_with_kubernetes_shapes_and_defaults_and_round_trip() {
    let s = ClusterSpec::parse(&with_web(str::to_string)).unwrap();
    assert_eq!(
        s.settings.service_range(),
        Some("10.96.0.0/12".parse().unwrap())
    );
    let web = &s.services[0];
    assert_eq!(
        (web.kind, web.session_affinity),
        (ServiceType::NodePort, SessionAffinity::ClientIP)
    );
    assert_eq!(web.affinity_timeout, 10800, "Kubernetes' default");
    assert_eq!(web.ports[0].protocol, Protocol::TCP);
    assert_eq!(web.ports[0].backend_port(&web.endpoint_ports), Some(8080));
    assert_eq!(web.ports[1].backend_port(&web.endpoint_ports), Some(5353));
    assert!(web.endpoints[0].takes_new() && web.endpoints[0].serving());
    assert!(!web.endpoints[1].takes_new() && web.endpoints[1].serving());
    assert_eq!(ClusterSpec::parse(&s.to_toml()).unwrap(), s);
}

#[test]
fn bad_service_records_name_their_field() {
    let cases: &[(&str, &str, &str)] = &[
        // A VIP inside the pod CIDR.
        ("10.96.0.10", "10.244.1.99", "services[0].cluster_ip"),
        // An unknown protocol.
        ("protocol = \"UDP\"", "protocol = \"SCTP\"", "SCTP"),
        // Port 0.
        ("port = 53", "port = 0", "services[0].ports[1].port"),
        // A backend outside the cluster.
        (
            "address = \"10.244.1.5\"",
            "address = \"192.0.2.7\"",
            "services[0].endpoints[0].address",
        ),
        // A backend on a node that does not own it.
        (
            "node = \"b\"",
            "node = \"a\"",
            "services[0].endpoints[1].node",
        ),
        (
            "node_port = 30080",
            "node_port = 80",
            "services[0].ports[0].node_port",
        ),
        ("name = \"web\"", "name = \"Web_1\"", "services[0].name"),
        (
            "target_port = \"web\"",
            "target_port = 0",
            "services[0].ports[0].target_port",
        ),
        (
            "name = \"dns\"",
            "name = \"http\"",
            "services[0].ports[1].name",
        ),
        (
            "type = \"NodePort\"",
            "type = \"LoadBalancer\"",
            "LoadBalancer",
        ),
    ];
    for (from, to, field) in cases {
        let e = err(&with_web(|w| w.replacen(from, to, 1)));
        assert!(e.contains(field), "{from} -> {to}: {e}");
    }
    // A second service on the same front end, or the same node port.
    let twice = with_web(|w| format!("{w}{}", w.replace("\"web\"\ntype", "\"web2\"\ntype")));
    assert!(
        err(&twice).contains("services[1].cluster_ip"),
        "{}",
        err(&twice)
    );
    let e = err(&format!("service_cidr = \"10.244.0.0/20\"\n{TWO}"));
    assert!(
        e.contains("service_cidr") && e.contains("overlaps cluster_cidr"),
        "{e}"
    );
    let e = err(&format!("node_ports = \"61000-62000\"\n{TWO}"));
    assert!(
        e.contains("node_ports") && e.contains("masquerade_ports"),
        "{e}"
    );
}

#[test]
fn a_cluster_cidr_over_the_default_service_range_has_none_until_one_is_set() {
    let text = TWO
        .replace("10.244.0.0/16", "10.0.0.0/8")
        .replace("10.244.", "10.1.");
    let s = ClusterSpec::parse(&text).unwrap();
    assert_eq!(s.settings.service_range(), None);
    let web = WEB.replace("10.244.", "10.1.");
    let e = err(&format!("{text}{web}"));
    assert!(e.contains("set service_cidr"), "{e}");
    let fixed = format!(
        "{}{web}",
        text.replace(
            "cluster_cidr",
            "service_cidr = \"172.30.0.0/16\"\ncluster_cidr"
        )
    )
    .replace("10.96.0.10", "172.30.0.10");
    assert_eq!(ClusterSpec::parse(&fixed).unwrap().services.len(), 1);
}

#[test]
fn a_bad_service_is_left_out_alone_by_an_agent_and_refused_by_strict_validation() {
    let service = |name: &str, ip: &str, proto: &str| {
        format!(
            "\n[[services]]\nnamespace = \"default\"\nname = \"{name}\"\ncluster_ip = \"{ip}\"\n\
             ports = [{{ port = 80, protocol = \"{proto}\" }}]\n"
        )
    };
    let with_service_range = DEFAULT_SPEC.replace(
        "cluster_cidr = \"10.244.0.0/16\"",
        "cluster_cidr = \"10.244.0.0/16\"\nservice_cidr = \"10.96.0.0/12\"",
    );
    let text = with_service_range
        + &service("good", "10.96.0.10", "TCP")
        + &service("inside", "10.244.1.99", "TCP")
        + &service("sctp", "10.96.0.11", "SCTP")
        + &service("again", "10.96.0.10", "TCP");
    let (spec, left_out) = SpecDraft::parse(&text)
        .unwrap()
        .validate_admitting()
        .unwrap();
    let names: Vec<&str> = spec.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["good"]);
    assert_eq!(left_out.len(), 3, "{left_out:?}");
    assert!(
        left_out
            .iter()
            .any(|n| n.contains("services[1].cluster_ip")),
        "{left_out:?}"
    );
    assert!(
        left_out
            .iter()
            .any(|n| n.contains("services[2]") && n.contains("SCTP")),
        "{left_out:?}"
    );
    assert!(
        left_out
            .iter()
            .any(|n| n.contains("services[3].cluster_ip") && n.contains("services[0]'s")),
        "{left_out:?}"
    );
    // Validated strictly (a user's check, `cluster init`), the first mistake refuses.
    assert!(
        err(&text).contains("SCTP") || err(&text).contains("services[1]"),
        "{}",
        err(&text)
    );
    // Bad settings refuse the whole file either way.
    let bad_settings = text.replace("vni = 1 ", "vni = 0 ");
    assert_ne!(bad_settings, text);
    assert!(SpecDraft::parse(&bad_settings)
        .unwrap()
        .validate_admitting()
        .is_err());
}

/// Records shaped like `kubectl get -o yaml` output, in TOML: a namespace, a pod with
/// labels, a named port and its address, and a policy with every kind of field.
const POLICY_RECORDS: &str = r#"
[[namespaces]]
[namespaces.metadata]
name = "x"
labels = { team = "blue" }

[[pods]]
[pods.metadata]
namespace = "x"
name = "a"
labels = { pod = "a", tier = "web" }
[[pods.spec.containers]]
name = "server"
[[pods.spec.containers.ports]]
name = "serve-80-tcp"
containerPort = 80
[[pods.spec.containers.ports]]
name = "serve-81-udp"
containerPort = 81
protocol = "UDP"
[pods.status]
podIP = "10.244.1.5"

[[policies]]
[policies.metadata]
namespace = "x"
name = "allow-80"
[policies.spec]
policyTypes = ["Ingress", "Egress"]
[policies.spec.podSelector]
matchLabels = { pod = "a" }
matchExpressions = [{ key = "tier", operator = "NotIn", values = ["db"] }]
[[policies.spec.ingress]]
[[policies.spec.ingress.from]]
podSelector = { matchLabels = { pod = "b" } }
namespaceSelector = { matchExpressions = [{ key = "kubernetes.io/metadata.name", operator = "In", values = ["x", "y"] }] }
[[policies.spec.ingress.from]]
ipBlock = { cidr = "10.1.0.0/16", except = ["10.1.2.0/24"] }
[[policies.spec.ingress.ports]]
port = "serve-80-tcp"
[[policies.spec.ingress.ports]]
protocol = "UDP"
port = 8000
endPort = 8080
[[policies.spec.egress]]
[[policies.spec.egress.to]]
namespaceSelector = { matchExpressions = [{ key = "team", operator = "Exists" }] }
[[policies.spec.egress.ports]]
protocol = "SCTP"
port = 5000
"#;

#[test]
fn policy_records_parse_from_toml_with_kubernetes_field_names() {
    use crate::policy::{IntOrString, PolicyProtocol, PolicyType, SelectorOperator};
    let spec = ClusterSpec::parse(&format!("{TWO}{POLICY_RECORDS}")).unwrap();
    let r = &spec.policy;
    assert_eq!(r.namespaces[0].metadata.labels["team"], "blue");
    let pod = &r.pods[0];
    assert_eq!(pod.metadata.labels["tier"], "web");
    let port = &pod.spec.containers[0].ports[1];
    assert_eq!(port.name.as_deref(), Some("serve-81-udp"));
    assert_eq!(
        (port.container_port, &port.protocol),
        (81, &PolicyProtocol::UDP)
    );
    assert_eq!(pod.status.pod_ip.as_deref(), Some("10.244.1.5"));
    let p = &r.policies[0].spec;
    assert_eq!(
        p.policy_types,
        Some(vec![PolicyType::Ingress, PolicyType::Egress])
    );
    assert_eq!(
        p.pod_selector.match_expressions[0].operator,
        SelectorOperator::NotIn
    );
    let from = &p.ingress[0].from;
    assert!(from[0].pod_selector.is_some() && from[0].namespace_selector.is_some());
    assert_eq!(from[1].ip_block.as_ref().unwrap().except, ["10.1.2.0/24"]);
    let ports = &p.ingress[0].ports;
    assert_eq!(ports[0].port, Some(IntOrString::Str("serve-80-tcp".into())));
    assert_eq!(
        (ports[1].port.clone(), ports[1].end_port),
        (Some(IntOrString::Int(8000)), Some(8080))
    );
    assert_eq!(p.egress[0].ports[0].protocol, Some(PolicyProtocol::SCTP));
    // The file the lab writes for its agents carries them unchanged.
    assert_eq!(ClusterSpec::parse(&spec.to_toml()).unwrap(), spec);
}
