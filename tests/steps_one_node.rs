//! Steps 1 and 2 with real packets: node <-> pod and pod <-> pod on one node, no NAT,
//! no bridge, no firewall rules, and a clean teardown.
use netpath::spec::Redirect;
use netpath_common::Reason;
use netpath_lab::{check::Proto, lab::LabConfig};
use netpath_lab::{counter, namespaces_with_prefix, require_root};

fn assert_all_pass(lab: &netpath_lab::lab::Lab) -> usize {
    let checks = lab.check_model(&[Proto::Tcp, Proto::Udp, Proto::Icmp]);
    let failed: Vec<_> = checks.iter().filter(|c| !c.ok()).collect();
    assert!(
        failed.is_empty(),
        "failed checks: {failed:#?}\nagent log:\n{}",
        lab.agent_log(0)
    );
    let inv = lab.check_invariants();
    let bad: Vec<_> = inv.iter().filter(|i| !i.ok).collect();
    assert!(bad.is_empty(), "invariants: {bad:#?}");
    checks.len()
}

#[test]
fn node_and_pods_reach_each_other_with_redirect_peer() {
    let lab = netpath_lab::lab(1, 3);
    let before = counter(&lab, 0, Reason::Redirected);
    let n = assert_all_pass(&lab);
    // 3 protocols x (2 directions x 3 pods + 6 ordered pod pairs).
    assert_eq!(n, 3 * (6 + 6));
    let after = counter(&lab, 0, Reason::Redirected);
    // Every pod->pod TCP exchange alone is several redirected packets each way.
    assert!(
        after - before >= 12,
        "redirected only {} packets",
        after - before
    );
    assert_eq!(counter(&lab, 0, Reason::DropSpoofed), 0);
    let mode = lab.nodes[0].pinned().unwrap().redirect_mode().unwrap();
    assert_eq!(mode, netpath_common::RedirectMode::Peer);
}

#[test]
fn node_and_pods_reach_each_other_with_plain_redirect() {
    require_root();
    let mut cfg = LabConfig::new(1, 2).unwrap();
    cfg.spec.settings.redirect = Redirect::Plain;
    let lab = netpath_lab::lab::Lab::up(&cfg).unwrap();
    assert_all_pass(&lab);
    let mode = lab.nodes[0].pinned().unwrap().redirect_mode().unwrap();
    assert_eq!(mode, netpath_common::RedirectMode::Plain);
    assert!(counter(&lab, 0, Reason::Redirected) > 0);
}

#[test]
fn pod_gateway_arp_is_answered_by_the_program() {
    let lab = netpath_lab::lab(1, 2);
    let replied = counter(&lab, 0, Reason::ArpReplied);
    // Pods resolved 169.254.1.1 while the lab was checked or will now.
    let r = netpath_lab::check::tcp(
        lab.nodes[0].pods[0].ns.path(),
        lab.nodes[0].pods[1].ns.path(),
        lab.nodes[0].pods[1].ip,
    )
    .unwrap();
    assert_eq!(r, lab.nodes[0].pods[0].ip);
    assert!(counter(&lab, 0, Reason::ArpReplied) >= replied.max(1));
}

#[test]
fn teardown_leaves_nothing_even_after_a_panic() {
    require_root();
    let seen = std::sync::Mutex::new(None);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let lab = netpath_lab::lab(1, 2);
        *seen.lock().unwrap() = Some((lab.prefix.clone(), lab.nodes[0].pin_dir.clone()));
        assert_eq!(
            namespaces_with_prefix(&lab.prefix).len(),
            4,
            "fabric, node, 2 pods"
        );
        panic!("test body fails on purpose");
    }));
    assert!(result.is_err());
    let (prefix, pins) = seen.lock().unwrap().clone().expect("lab came up");
    assert!(
        namespaces_with_prefix(&prefix).is_empty(),
        "namespaces left behind"
    );
    assert!(!pins.exists(), "pins left behind at {}", pins.display());
}
