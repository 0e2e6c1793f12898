//! Seeing the datapath run: a real Prometheus scrapes an agent, `/healthz` and
//! `/readyz` tell the truth about attachments and start-up, and `netpath monitor`
//! shows drops (and with `--trace` forwarding) with their tuple and reason, a flood
//! of bad frames included.
use std::{
    net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use aya::programs::TcAttachType;
use netpath_common::{Program, Reason};
use netpath_lab::{
    check, counter_of, eth,
    lab::{agent_binary, Lab, LabConfig},
    netns,
    observe::{http_get, http_raw, http_wait, Monitor, Prometheus},
    process::Spawned,
    state, vxlan_payload, wait_counter_of, Ipv4Packet, RawSocket, ETH_P_IP,
};

/// Where every lab agent serves, inside its node's namespace (the default).
fn agent_http() -> SocketAddr {
    "127.0.0.1:9970".parse().unwrap()
}

fn lab(nodes: usize, pods: usize) -> (Lab, LabConfig) {
    let cfg = LabConfig::new(nodes, pods).expect("lab config");
    (netpath_lab::lab_of(&cfg), cfg)
}

/// `netpath monitor` for lab node `node` with extra arguments.
fn monitor(lab: &Lab, node: usize, extra: &[&str]) -> Monitor {
    let n = &lab.nodes[node];
    let root = n.pin_dir.parent().unwrap().to_str().unwrap().to_string();
    let state = n.state_dir().to_str().unwrap().to_string();
    let mut args = vec![
        "--node",
        n.name.as_str(),
        "--bpffs-root",
        root.as_str(),
        "--state-dir",
        state.as_str(),
    ];
    args.extend_from_slice(extra);
    Monitor::start(&agent_binary().unwrap(), &args).expect("start monitor")
}

fn json(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("monitor line {line:?}: {e}"))
}

/// A UDP/IPv4 frame from a pod's eth0 with the given source and destination.
fn frame(lab: &Lab, node: usize, pod: usize, src: Ipv4Addr, dst: Ipv4Addr, id: u16) -> Vec<u8> {
    let p = &lab.nodes[node].pods[pod];
    let ip = Ipv4Packet::udp(src, dst, id, b"observe").bytes();
    eth([0xff; 6], p.mac, ETH_P_IP, &ip)
}

#[test]
fn prometheus_scrapes_rising_packet_counts_and_the_endpoints_of_the_node() {
    let (lab, _) = lab(2, 2);
    let dir = std::env::temp_dir().join(format!("{}-prometheus", lab.prefix));
    let _cleanup = RemoveDir(dir.clone());
    let prom = Prometheus::start(lab.nodes[0].ns.path(), &dir, agent_http()).unwrap();
    let total = || -> Option<f64> {
        prom.query("sum(netpath_packets_total)")
            .ok()
            .and_then(|r| r.first().map(|(_, v)| *v))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let before = loop {
        if let Some(v) = total() {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "no netpath_packets_total scraped; prometheus log:\n{}",
            prom.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let (a, b) = (&lab.nodes[0].pods[0], &lab.nodes[1].pods[0]);
    for _ in 0..5 {
        check::tcp(a.ns.path(), b.ns.path(), b.ip).expect("pod to pod");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while total().unwrap_or(0.0) < before + 10.0 {
        assert!(
            Instant::now() < deadline,
            "netpath_packets_total stayed at {before}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let by_reason = prom
        .query(r#"netpath_packets_total{program="from-pod",reason="direct-routed"}"#)
        .unwrap();
    assert!(
        by_reason.first().is_some_and(|(_, v)| *v > 0.0),
        "labels program and reason: {by_reason:?}"
    );
    let endpoints = prom
        .query(r#"netpath_map_entries{map="ENDPOINTS"}"#)
        .unwrap();
    assert_eq!(
        endpoints.first().map(|(_, v)| *v),
        Some(lab.nodes[0].pods.len() as f64),
        "{endpoints:?}"
    );
    let capacity = prom
        .query(r#"netpath_map_capacity{map="ENDPOINTS"}"#)
        .unwrap();
    assert_eq!(capacity.first().map(|(_, v)| *v), Some(4096.0));
    let info = prom.query("netpath_build_info").unwrap();
    assert!(
        info.first().is_some_and(|(m, _)| m["kernel"].is_string()),
        "{info:?}"
    );
}

#[test]
fn readyz_waits_for_the_underlay_and_healthz_sees_a_detached_program() {
    let (mut lab, cfg) = lab(2, 1);
    let ns = lab.nodes[0].ns.path().to_path_buf();
    let (status, body) = http_get(&ns, agent_http(), "/readyz").unwrap();
    assert_eq!(status, 200, "{body}");
    let (status, body) = http_get(&ns, agent_http(), "/healthz").unwrap();
    assert_eq!(status, 200, "{body}");
    let h: serde_json::Value = serde_json::from_str(&body).unwrap();
    let names: Vec<&str> = h["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    let underlay = state(&lab, 0).underlay;
    assert!(
        names.contains(&format!("from_underlay on {underlay} ingress").as_str())
            && names.iter().any(|n| n.starts_with("from_pod on ")),
        "{names:?}"
    );

    // Detached behind the agent's back: unhealthy, and it says which.
    let pin_dir = lab.nodes[0].pin_dir.clone();
    let dev = underlay.clone();
    netns::run_in(&ns, move || {
        netpath::datapath::detach(&pin_dir, &dev, TcAttachType::Ingress)
    })
    .unwrap();
    let (status, body) = http_wait(
        &ns,
        agent_http(),
        "/healthz",
        Duration::from_secs(5),
        |s, _| s == 503,
    )
    .unwrap();
    assert_eq!(status, 503);
    assert!(body.contains("from_underlay on"), "{body}");
    assert!(body.contains("is not attached"), "{body}");

    // A node whose network is not up yet: the agent waits, and says why.
    lab.stop_agent(0);
    let addr = format!("{}/24", lab.nodes[0].ip());
    netpath_lab::run_in_ns(&ns, &["ip", "addr", "del", &addr, "dev", &underlay]).unwrap();
    lab.spawn_agent(0, &cfg).unwrap();
    let (status, body) = http_wait(
        &ns,
        agent_http(),
        "/readyz",
        Duration::from_secs(20),
        // Early on it says it reads its spec; then what it waits for.
        |s, b| s == 503 && b.contains("waiting for an interface with"),
    )
    .unwrap();
    assert_eq!(status, 503, "{body}");
    netpath_lab::run_in_ns(&ns, &["ip", "addr", "add", &addr, "dev", &underlay]).unwrap();
    let (status, body) = http_wait(
        &ns,
        agent_http(),
        "/readyz",
        Duration::from_secs(60),
        |s, _| s == 200,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    lab.wait_agent_ready(0).unwrap();
    let (status, body) = http_get(&ns, agent_http(), "/healthz").unwrap();
    assert_eq!(status, 200, "attached again by the new agent: {body}");
}

#[test]
fn the_monitor_shows_spoofed_stranger_and_no_route_drops_with_their_tuples() {
    let (lab, _) = lab(3, 1);
    let mon = monitor(&lab, 0, &["--json"]);
    let pod = &lab.nodes[0].pods[0];
    let raw = RawSocket::open(pod.ns.path(), "eth0").unwrap();

    let spoofed = Ipv4Addr::new(10, 244, 9, 9);
    raw.send(&frame(&lab, 0, 0, spoofed, lab.nodes[1].pods[0].ip, 0x5101))
        .unwrap();
    let nowhere = Ipv4Addr::new(10, 244, 200, 1);
    raw.send(&frame(&lab, 0, 0, pod.ip, nowhere, 0x5102))
        .unwrap();
    let router = Ipv4Addr::new(192, 168, 56, 1);
    let to = (lab.nodes[0].ip(), 8472);
    let payload = vxlan_payload(1, Ipv4Addr::new(10, 244, 3, 9), pod.ip, 0x5103);
    netns::run_in(lab.fabric_ns(), move || {
        UdpSocket::bind((router, 0))?.send_to(&payload, to)?;
        Ok(())
    })
    .unwrap();

    let find = |reason: &str| {
        mon.wait_line(Duration::from_secs(5), |l| {
            l.contains(&format!("\"reason\":\"{reason}\""))
        })
        .map(|l| json(&l))
        .unwrap_or_else(|| panic!("no {reason} event in {:?}", mon.lines()))
    };
    let e = find("drop-spoofed");
    assert_eq!(e["program"], "from-pod");
    assert_eq!(e["kind"], "drop");
    assert_eq!(e["src"], spoofed.to_string());
    assert_eq!(e["dst"], lab.nodes[1].pods[0].ip.to_string());
    assert_eq!(
        (
            e["proto"].as_str(),
            e["sport"].as_u64(),
            e["dport"].as_u64()
        ),
        (Some("udp"), Some(4000), Some(4001))
    );
    assert_eq!(e["node"], lab.nodes[0].name);
    let e = find("drop-no-route");
    assert_eq!(
        (e["src"].as_str(), e["dst"].as_str()),
        (Some(pod.ip.to_string().as_str()), Some("10.244.200.1"))
    );
    let e = find("drop-unknown-peer");
    assert_eq!(e["program"], "from-underlay");
    assert_eq!(e["src"], router.to_string());
    assert_eq!(e["dst"], lab.nodes[0].ip().to_string());
    assert_eq!(e["dport"], 8472);

    // Filters: only what was asked for. A second monitor on the node is refused.
    let second = Monitor::start(
        &agent_binary().unwrap(),
        &[
            "--node",
            &lab.nodes[0].name,
            "--bpffs-root",
            lab.nodes[0].pin_dir.parent().unwrap().to_str().unwrap(),
            "--state-dir",
            lab.nodes[0].state_dir().to_str().unwrap(),
        ],
    );
    let err = second.err().expect("a second monitor on one node");
    assert!(
        format!("{err:#}").contains("another netpath monitor"),
        "{err:#}"
    );
    mon.interrupt().unwrap();
    let only = monitor(
        &lab,
        0,
        &[
            "--json",
            "--reason",
            "drop-no-route",
            "--ip",
            "10.244.200.2",
        ],
    );
    raw.send(&frame(&lab, 0, 0, spoofed, lab.nodes[1].pods[0].ip, 0x5104))
        .unwrap();
    raw.send(&frame(&lab, 0, 0, pod.ip, nowhere, 0x5105))
        .unwrap();
    raw.send(&frame(
        &lab,
        0,
        0,
        pod.ip,
        Ipv4Addr::new(10, 244, 200, 2),
        0x5106,
    ))
    .unwrap();
    // A second matching drop, sent last from the same socket: once it is shown, the
    // frames before it have been judged too — no waiting on the clock.
    raw.send(&frame(
        &lab,
        0,
        0,
        pod.ip,
        Ipv4Addr::new(10, 244, 200, 2),
        0x5107,
    ))
    .unwrap();
    let matching = only
        .wait_lines(Duration::from_secs(5), 2, |l| l.contains("10.244.200.2"))
        .expect("the filtered events");
    assert_eq!(
        only.lines(),
        matching,
        "only the ones that match both filters"
    );
    let bad = Monitor::start(
        &agent_binary().unwrap(),
        &["--node", &lab.nodes[0].name, "--reason", "drop-everything"],
    );
    let err = format!("{:#}", bad.err().expect("bad reason refused"));
    assert!(
        err.contains("unknown reason") && err.contains("drop-spoofed"),
        "{err}"
    );
}

#[test]
fn a_flood_of_bad_frames_is_all_counted_while_the_monitor_stays_responsive() {
    let (lab, _) = lab(2, 2);
    let mon = monitor(&lab, 0, &["--json"]);
    let pod = &lab.nodes[0].pods[0];
    let flood_src = Ipv4Addr::new(10, 244, 9, 77);
    let target = lab.nodes[0].pods[1].ip;
    let f = frame(&lab, 0, 0, flood_src, target, 0x5201);
    let before = counter_of(&lab, 0, Program::FromPod, Reason::DropSpoofed);
    let loss_before = lab.nodes[0].pinned().unwrap().event_loss().unwrap();
    const FLOOD: u64 = 100_000;
    let raw = RawSocket::open(pod.ns.path(), "eth0").unwrap();
    let started = Instant::now();
    for _ in 0..FLOOD {
        raw.send(&f).unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    let after = wait_counter_of(
        &lab,
        0,
        Program::FromPod,
        Reason::DropSpoofed,
        before,
        FLOOD,
    );
    assert_eq!(after - before, FLOOD, "every bad frame counted in STATS");
    // Forwarding never waited for the ring: pods still talk, at once.
    let other = &lab.nodes[0].pods[1];
    check::tcp(pod.ns.path(), other.ns.path(), other.ip).expect("pod to pod after the flood");

    // What was not shown was counted: shown + over budget + ring full = the flood.
    let flood_src_s = format!("\"src\":\"{flood_src}\"");
    let shown = || {
        mon.lines()
            .iter()
            .filter(|l| l.contains(&flood_src_s))
            .count() as u64
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut last, mut stable) = (u64::MAX, 0);
    while stable < 5 && Instant::now() < deadline {
        let n = shown();
        stable = if n == last { stable + 1 } else { 0 };
        last = n;
        std::thread::sleep(Duration::from_millis(100));
    }
    let loss = lab.nodes[0].pinned().unwrap().event_loss().unwrap();
    let (suppressed, lost) = (
        loss.suppressed - loss_before.suppressed,
        loss.lost - loss_before.lost,
    );
    assert_eq!(
        last + suppressed + lost,
        FLOOD,
        "shown {last}, suppressed {suppressed}, lost {lost}"
    );
    eprintln!(
        "flood of {FLOOD} in {secs:.2} s: shown {last}, suppressed {suppressed}, lost {lost}"
    );
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get()) as f64;
    let budget = netpath_common::DEFAULT_DROPS_PER_SEC as f64 * cpus * (secs.ceil() + 1.0);
    assert!(
        last as f64 <= budget,
        "{last} events shown in {secs:.1} s, budget {budget}"
    );
    assert!(suppressed > 0, "a flood goes over the budget");
    assert!(
        mon.wait_line(Duration::from_secs(3), |l| l.contains("\"kind\":\"loss\""))
            .is_some(),
        "the monitor reports what it did not show"
    );
    // Responsive: the next second's first drop shows up at once. (The budget is per
    // second: this pause is the thing under test, not a wait for an event.)
    std::thread::sleep(Duration::from_millis(1100));
    raw.send(&frame(
        &lab,
        0,
        0,
        pod.ip,
        Ipv4Addr::new(10, 244, 200, 9),
        0x5202,
    ))
    .unwrap();
    assert!(
        mon.wait_line(Duration::from_secs(2), |l| l.contains("10.244.200.9"))
            .is_some(),
        "a drop after the flood"
    );
}

#[test]
fn trace_events_show_forwarding_only_while_a_monitor_traces() {
    let (lab, _) = lab(2, 2);
    let (a, b) = (&lab.nodes[0].pods[0], &lab.nodes[0].pods[1]);
    let ip = b.ip.to_string();
    let quiet = monitor(&lab, 0, &["--json", "--ip", &ip]);
    check::tcp(a.ns.path(), b.ns.path(), b.ip).unwrap();
    // A drop toward b after the flow: once the monitor shows it, it has seen
    // everything the flow could have produced.
    let raw = RawSocket::open(a.ns.path(), "eth0").unwrap();
    raw.send(&frame(
        &lab,
        0,
        0,
        Ipv4Addr::new(10, 244, 9, 9),
        b.ip,
        0x5301,
    ))
    .unwrap();
    let marker = quiet
        .wait_line(Duration::from_secs(5), |l| l.contains("drop-spoofed"))
        .expect("the marker drop");
    assert_eq!(
        quiet.lines(),
        vec![marker],
        "no forwarding events without --trace"
    );
    quiet.interrupt().unwrap();

    let tracing = monitor(&lab, 0, &["--json", "--trace", "--ip", &ip]);
    check::tcp(a.ns.path(), b.ns.path(), b.ip).unwrap();
    let line = tracing
        .wait_line(Duration::from_secs(5), |l| {
            l.contains("\"kind\":\"trace\"") && l.contains("\"reason\":\"redirected\"")
        })
        .unwrap_or_else(|| panic!("no redirected trace in {:?}", tracing.lines()));
    let e = json(&line);
    assert_eq!(e["program"], "from-pod");
    assert_eq!(e["proto"], "tcp");
    let pinned = lab.nodes[0].pinned().unwrap();
    assert!(pinned.monitor_config().unwrap().trace_every > 0);
    assert!(tracing.interrupt().unwrap().success());
    assert_eq!(
        pinned.monitor_config().unwrap().trace_every,
        0,
        "a monitor that stops turns tracing off"
    );
}

#[test]
fn the_http_endpoint_answers_bad_requests_with_errors_and_a_taken_port_stops_the_start() {
    let (lab, cfg) = lab(1, 1);
    let ns = lab.nodes[0].ns.path().to_path_buf();
    let garbage = b"\x16\x03\x01\x02\x00garbage\r\n\r\n".to_vec();
    let (status, _) = http_raw(&ns, agent_http(), garbage).unwrap();
    assert_eq!(status, Some(400), "garbage gets 400");
    let (status, _) = http_raw(
        &ns,
        agent_http(),
        b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            .to_vec(),
    )
    .unwrap();
    assert_eq!(status, Some(405));
    let (status, body) = http_get(&ns, agent_http(), "/nothing-here").unwrap();
    assert_eq!(status, 404, "{body}");
    let (status, body) = http_get(&ns, agent_http(), "/metrics").unwrap();
    assert_eq!(status, 200, "still serving after the garbage");
    assert!(body.contains("netpath_packets_total{"), "{body}");
    assert!(body.contains("# TYPE netpath_reconcile_duration_seconds histogram"));

    // Another agent on a taken port stops before it loads anything.
    let taken = netns::run_in(&ns, || Ok(TcpListener::bind("127.0.0.1:19971")?)).unwrap();
    let tmp = std::env::temp_dir().join(format!("{}-second-agent", lab.prefix));
    let _cleanup = RemoveDir(tmp.clone());
    let spec = tmp.join("cluster.toml");
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::write(&spec, cfg.spec.to_toml()).unwrap();
    let run = |addr: &str| {
        let child = Command::new(agent_binary().unwrap())
            .arg("agent")
            .arg("--config")
            .arg(&spec)
            .args(["--node", &lab.nodes[0].spec.name])
            .arg("--pin-dir")
            .arg(tmp.join("pins"))
            .arg("--state-dir")
            .arg(tmp.join("state"))
            .arg("--netns")
            .arg(&ns)
            .args(["--metrics-addr", addr])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut guard = Spawned::killing(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = guard.0.try_wait().unwrap() {
                let mut err = String::new();
                use std::io::Read;
                guard
                    .0
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                return (status, err);
            }
            assert!(
                Instant::now() < deadline,
                "the agent did not stop on {addr}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let (status, err) = run("127.0.0.1:19971");
    assert!(!status.success());
    assert!(err.contains("cannot listen there"), "{err}");
    assert!(!tmp.join("pins").exists(), "nothing loaded");
    let (status, err) = run("port 80 please");
    assert!(!status.success());
    assert!(err.contains("want IP:PORT or off"), "{err}");
    drop(taken);
}

struct RemoveDir(std::path::PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
