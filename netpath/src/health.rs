//! Is the node healthy (the agent alive, every program attached where it belongs) and
//! ready (maps loaded, routes applied, store synced)? One answer for `/healthz`,
//! `/readyz` and `netpath status`.
use std::path::Path;

use aya::programs::TcAttachType;
use netpath_common::names;
use serde::Serialize;

use crate::{
    datapath::{attach::ifname, attached, Pinned},
    netlink::Netlink,
    state::AgentState,
    store::StoreKind,
};

/// One thing checked.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    /// Why not, when not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A verdict with what it rests on; `failing` repeats the names that are not ok.
/// `warnings` are conditions that leave the verdict as it is (a record left out of
/// the spec, a spec edit refused while the last good one forwards).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Report {
    pub ok: bool,
    pub checks: Vec<Check>,
    pub failing: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl Report {
    fn of(checks: Vec<Check>) -> Self {
        let failing: Vec<String> = checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| match &c.detail {
                Some(d) => format!("{}: {d}", c.name),
                None => c.name.clone(),
            })
            .collect();
        Self {
            ok: failing.is_empty(),
            checks,
            failing,
            warnings: Vec::new(),
        }
    }
}

impl Report {
    /// A verdict of one failed check.
    pub fn failing(name: &str, why: String) -> Self {
        Self::of(vec![check(name, Err(why))])
    }

    /// This verdict with one more failed check.
    pub fn with_failing(self, name: &str, why: String) -> Self {
        let mut checks = self.checks;
        checks.push(check(name, Err(why)));
        Self {
            warnings: self.warnings,
            ..Self::of(checks)
        }
    }
}

fn check(name: impl Into<String>, result: Result<(), String>) -> Check {
    Check {
        name: name.into(),
        ok: result.is_ok(),
        detail: result.err(),
    }
}

/// Ready to serve pods: the maps are loaded, the desired maps and routes applied at
/// least once and the last pass went through, and the store's view is current.
/// A refused spec edit or a record left out is a warning: the pods' network works on
/// the spec in force. `state` is `None` before the agent has published anything.
pub fn readiness(state: Option<&AgentState>) -> Report {
    let maps = match state {
        None => Err("the agent is starting".to_string()),
        Some(AgentState {
            waiting: Some(w), ..
        }) => Err(w.clone()),
        Some(s) if !s.maps_loaded => Err("the programs are not loaded yet".to_string()),
        Some(s) => Pinned::open(&s.pin_dir)
            .map(|_| ())
            .map_err(|e| format!("{e:#}")),
    };
    let routes = match state {
        Some(s) if s.ready && s.reconcile_error.is_none() => Ok(()),
        Some(AgentState {
            reconcile_error: Some(e),
            ..
        }) => Err(e.clone()),
        _ => Err("not applied yet".to_string()),
    };
    let store = match state {
        None => Err("no agent state".to_string()),
        Some(s) => store_synced(s),
    };
    let membership = match state.and_then(|s| s.membership_error.as_ref()) {
        Some(e) => Err(e.clone()),
        None => Ok(()),
    };
    Report {
        warnings: state.map(warnings).unwrap_or_default(),
        ..Report::of(vec![
            check("maps loaded", maps),
            check("routes applied", routes),
            check("store synced", store),
            check("pod CIDR held", membership),
        ])
    }
}

/// The agent's warning conditions, named.
pub fn warnings(s: &AgentState) -> Vec<String> {
    let refused = s
        .spec_error
        .iter()
        .map(|e| format!("spec refused, forwarding on the last good one: {e}"));
    refused.chain(s.left_out.iter().cloned()).collect()
}

fn store_synced(s: &AgentState) -> Result<(), String> {
    if let Some(e) = &s.store_error {
        return Err(e.clone());
    }
    if s.store_kind == StoreKind::Etcd && !s.store_watching {
        return Err("etcd watch not live yet".to_string());
    }
    if s.store_synced_unix_ms.is_none() {
        return Err("not read yet".to_string());
    }
    Ok(())
}

/// Healthy: the agent process is there (`alive`) and every program is attached to
/// its hook, by the kernel's account: `from_underlay`/`to_underlay` on the underlay,
/// `from_tunnel` on the VXLAN device when there is one, `from_pod` on every pod's
/// veth.
pub async fn health(nl: &Netlink, state: Option<&AgentState>, alive: bool) -> Report {
    let mut checks = vec![check(
        "agent alive",
        if alive {
            Ok(())
        } else {
            Err("no agent process".to_string())
        },
    )];
    let Some(s) = state.filter(|s| s.maps_loaded) else {
        checks.push(check(
            "programs attached",
            Err("the agent has not attached them yet".to_string()),
        ));
        return Report::of(checks);
    };
    let mut hooks = vec![
        (
            names::FROM_UNDERLAY,
            s.underlay.clone(),
            TcAttachType::Ingress,
        ),
        (names::TO_UNDERLAY, s.underlay.clone(), TcAttachType::Egress),
    ];
    if s.tunnel {
        hooks.push((
            names::FROM_TUNNEL,
            crate::tunnel::NAME.to_string(),
            TcAttachType::Ingress,
        ));
    }
    let dir = s.pin_dir.as_path();
    match Pinned::open(dir).and_then(|p| p.endpoints()) {
        Ok(eps) => {
            for (ip, ep) in eps {
                match ifname(ep.ifindex) {
                    Some(name) => hooks.push((names::FROM_POD, name, TcAttachType::Ingress)),
                    None => checks.push(check(
                        format!("{} on pod {ip}", names::FROM_POD),
                        Err(format!("veth ifindex {} is gone", ep.ifindex)),
                    )),
                }
            }
        }
        Err(e) => checks.push(check("endpoints readable", Err(format!("{e:#}")))),
    }
    for (prog, dev, hook) in hooks {
        let hook_name = if hook == TcAttachType::Egress {
            "egress"
        } else {
            "ingress"
        };
        let name = format!("{prog} on {dev} {hook_name}");
        checks.push(check(name, attached_to(nl, dir, prog, &dev, hook).await));
    }
    Report::of(checks)
}

async fn attached_to(
    nl: &Netlink,
    dir: &Path,
    prog: &str,
    dev: &str,
    hook: TcAttachType,
) -> Result<(), String> {
    let id = attached::pinned_id(dir, prog).map_err(|e| format!("{e:#}"))?;
    let index = nl
        .index(dev)
        .await
        .map_err(|e| format!("no device {dev}: {e}"))?;
    match attached::is_attached(nl, dev, index, hook, id).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!("program {id} is not attached")),
        Err(e) => Err(format!("{e:#}")),
    }
}
