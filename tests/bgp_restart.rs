//! A node's BIRD SIGKILLed and started again by its agent (graceful restart
//! recovery): pods keep talking across the fabric router, in both directions, with
//! the router run as a user runs FRR — its own defaults, none of the lab's quick
//! timers — so the peer sends its routes a second after the session is up.
use std::time::{Duration, Instant};

use netpath::{bgp::BgpState, state::AgentState};
use netpath_lab::{
    lab::{bgp_router::FrrTuning, bgp_spec, Lab, LabConfig},
    lab_of,
    ping::PingTrain,
    wait_for,
};

/// `ping -i 0.05`.
const EVERY: Duration = Duration::from_millis(50);
/// Longer than the agent's cap on keeping a restarted BIRD's old routes (15 s): a
/// drop when the wait ends would show too.
const WATCH: Duration = Duration::from_secs(17);

fn published(lab: &Lab, i: usize) -> BgpState {
    AgentState::read(&lab.nodes[i].state_dir())
        .unwrap()
        .and_then(|s| s.bgp)
        .unwrap_or_default()
}

/// SIGKILLs node `i`'s BIRD and waits until its agent has started it again and it
/// has relearned `routes` pod CIDRs; returns when the kill happened.
fn kill_bird(lab: &Lab, i: usize, routes: usize) -> Instant {
    let state = lab.nodes[i].state_dir();
    let old = netpath::bgp::daemon_pid(&state).expect("BIRD runs");
    let killed = Instant::now();
    // SAFETY: the BIRD the agent under test started, by its checked PID.
    unsafe { libc::kill(old as i32, libc::SIGKILL) };
    let back = wait_for("BIRD started again", Duration::from_secs(10), || {
        netpath::bgp::daemon_pid(&state).is_some_and(|p| p != old)
    });
    let relearned = wait_for("every route relearned", Duration::from_secs(20), || {
        let b = published(lab, i);
        b.restarts == 1 && b.sessions.iter().all(|s| s.established()) && b.routes.len() == routes
    });
    eprintln!(
        "node{}'s BIRD killed: started again after {back:?}, sessions and routes back {relearned:?} later",
        i + 1
    );
    killed
}

/// The agent's word on why it stopped keeping the old routes, once it has.
fn settled(lab: &Lab, i: usize) -> String {
    let log = lab.agent_log(i);
    log.lines()
        .find(|l| l.contains("BIRD relearned after its restart"))
        .unwrap_or_else(|| panic!("node{} never stopped settling:\n{log}", i + 1))
        .to_string()
}

#[test]
fn a_killed_bird_loses_no_echo_either_way_through_a_router_at_frr_defaults() {
    let mut cfg = LabConfig::default_spec(1).unwrap();
    cfg.spec = bgp_spec(&cfg.spec, true).unwrap();
    cfg.frr = FrrTuning::Defaults;
    let lab = lab_of(&cfg);
    let frr = lab.bgp_router.as_ref().unwrap();
    let running = frr.vtysh("show running-config").unwrap();
    for tuned in ["datacenter", "advertisement-interval", "timers 3 9"] {
        assert!(!running.contains(tuned), "FRR tuned ({tuned}):\n{running}");
    }
    // node1 and node3 are on different subnets: every packet crosses the router.
    let (here, there) = (&lab.nodes[0].pods[0], &lab.nodes[2].pods[0]);
    let out = PingTrain::start(here.ns.path(), there.ip, EVERY).unwrap();
    let back = PingTrain::start(there.ns.path(), here.ip, EVERY).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let killed = kill_bird(&lab, 0, 2);
    std::thread::sleep(WATCH.saturating_sub(killed.elapsed()));
    let (out, back) = (out.finish().unwrap(), back.finish().unwrap());
    eprintln!("node1's pod -> node3's pod: {out}; node3's pod -> node1's pod: {back}");
    assert!(out.sent > 300 && back.sent > 300, "{out}; {back}");
    assert!(
        out.lost.is_empty(),
        "from the restarted node: {out} (lost {:?})",
        out.lost
    );
    assert!(
        back.lost.is_empty(),
        "towards the restarted node: {back} (lost {:?})",
        back.lost
    );
    let why = settled(&lab, 0);
    eprintln!("{why}");
    // FRR sets the restart bit during its first 120 s, so BIRD did not wait for its
    // End-of-RIB here: the agent waited for the routes to be quiet, not the cap.
    assert!(!why.contains("Cap"), "{why}");
}
