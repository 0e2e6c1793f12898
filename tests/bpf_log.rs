//! The programs' diagnostic lines (aya-log) reach the agent's log: a NAT table made
//! full for real is said there once a second, under `netpath::bpf` at WARN with the
//! program's name, while ordinary traffic writes no such line; and the level is the
//! agent's to choose at start (`RUST_LOG`), down to none at all.
//!
//! One test in this binary: it sets `RUST_LOG` for the agents it starts, which no
//! other test may see half-way.
use std::{
    net::{SocketAddr, SocketAddrV4, TcpStream},
    path::Path,
    time::{Duration, Instant},
};

use netpath::datapath::{bpf_log::TARGET, monotonic_ns};
use netpath_common::{names, Flow, FlowKey, Program, Reason, IPPROTO_TCP, NAT_CAPACITY};
use netpath_lab::{
    assert_model,
    check::Proto,
    counter_of,
    lab::{Lab, LabConfig, OUTSIDE_IP},
    lab_of, netns, wait_counter_of,
};

/// The lines the programs wrote into node 0's agent log.
fn bpf_lines(lab: &Lab) -> Vec<String> {
    lab.agent_log(0)
        .lines()
        .filter(|l| l.contains(TARGET))
        .map(str::to_owned)
        .collect()
}

/// Fills NAT_OUT to its capacity with established flows of an address no pod has,
/// so the collector keeps them and the next new flow finds no room.
fn fill_nat_out(pin_dir: &Path) {
    let map = aya::maps::MapData::from_pin(pin_dir.join(names::NAT_OUT)).unwrap();
    let mut flows: aya::maps::HashMap<_, FlowKey, Flow> = aya::maps::Map::from_map_data(map)
        .unwrap()
        .try_into()
        .unwrap();
    let now = monotonic_ns();
    for i in 0..NAT_CAPACITY {
        let key = FlowKey {
            pod: [10, 255, (i >> 8) as u8, i as u8],
            remote: [198, 51, 100, 1],
            pod_port: 40000u16.to_be_bytes(),
            remote_port: 443u16.to_be_bytes(),
            proto: IPPROTO_TCP,
            _pad: [0; 3],
        };
        let flow = Flow {
            last_seen: now,
            nat_port: 40000u16.to_be_bytes(),
            seen_reply: 1,
            fin_out: 0,
            fin_in: 0,
            rst: 0,
            closed: 0,
            _pad: 0,
            last_tsval: [0; 4],
            fin_seq: [0; 4],
        };
        if let Err(e) = flows.insert(key, flow, 0) {
            // Flows of the lab's own checks hold a few slots already.
            assert!(i > 0, "planting the first flow: {e}");
            break;
        }
    }
}

/// New connections from node 0's pod to the outside, each given `timeout`.
fn try_connect(lab: &Lab, n: usize, timeout: Duration) -> usize {
    let dst = SocketAddr::V4(SocketAddrV4::new(OUTSIDE_IP, 9700));
    netns::run_in(lab.nodes[0].pods[0].ns.path(), || {
        Ok((0..n)
            .filter(|_| TcpStream::connect_timeout(&dst, timeout).is_ok())
            .count())
    })
    .unwrap()
}

fn wait_for_bpf_line(lab: &Lab) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let lines = bpf_lines(lab);
        if !lines.is_empty() || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_full_nat_table_is_said_in_the_agent_log_at_the_level_the_agent_chose() {
    // The default level, whatever the caller's shell has.
    std::env::remove_var("RUST_LOG");
    let cfg = LabConfig::new(1, 1).unwrap();
    let mut lab = lab_of(&cfg);
    // Ordinary traffic, translated and not: no line from the programs.
    let checks = lab.check_egress(&[Proto::Tcp, Proto::Udp, Proto::Icmp]);
    assert!(checks.iter().all(|c| c.ok()), "{checks:#?}");
    assert_model(&lab, &[Proto::Tcp, Proto::Udp]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        bpf_lines(&lab),
        Vec::<String>::new(),
        "lines from success paths"
    );

    fill_nat_out(&lab.nodes[0].pin_dir);
    let before = counter_of(&lab, 0, Program::FromPod, Reason::DropNatTableFull);
    let started = Instant::now();
    assert_eq!(try_connect(&lab, 5, Duration::from_millis(300)), 0);
    wait_counter_of(
        &lab,
        0,
        Program::FromPod,
        Reason::DropNatTableFull,
        before,
        5,
    );
    let lines = wait_for_bpf_line(&lab);
    let elapsed = started.elapsed().as_secs() + 1;
    assert!(
        !lines.is_empty(),
        "no line from the programs:\n{}",
        lab.agent_log(0)
    );
    for l in &lines {
        assert!(
            l.contains("WARN")
                && l.contains("program=\"from_pod\"")
                && l.contains("drop-nat-table-full"),
            "want the level, the program and the reason: {l}"
        );
    }
    // Several SYNs (and their retries) each dropped, but a line a second at most.
    assert!(
        lines.len() as u64 <= elapsed + 1,
        "{} lines in {elapsed} s: {lines:#?}",
        lines.len()
    );

    // The same full table under an agent that wants no lines from the programs:
    // the drops go on being counted, the programs write nothing.
    lab.kill_agent(0);
    std::env::set_var("RUST_LOG", format!("info,{TARGET}=off"));
    let restarted = lab.start_agent(0, &cfg);
    std::env::remove_var("RUST_LOG");
    restarted.unwrap();
    let before = counter_of(&lab, 0, Program::FromPod, Reason::DropNatTableFull);
    assert_eq!(try_connect(&lab, 3, Duration::from_millis(300)), 0);
    wait_counter_of(
        &lab,
        0,
        Program::FromPod,
        Reason::DropNatTableFull,
        before,
        3,
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        bpf_lines(&lab),
        Vec::<String>::new(),
        "lines the agent turned off"
    );
}
