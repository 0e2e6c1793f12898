//! Which spec changes a running agent follows: pure, so every rule is unit-tested.
//! What would move the node (its underlay, its pod CIDR while pods may hold
//! addresses from it) or needs the programs attached anew (decap, the VXLAN device)
//! waits for a restart.
use anyhow::{bail, Result};

use crate::spec::{ClusterSpec, NodeSpec};

/// Whether an agent running `current` for `local` can follow `new`. `may_move`: the
/// node hands out no address from its pod CIDR and no pod holds one (a gossip
/// claim that lost before it settled), so the pod CIDR may change.
pub fn followable(
    current: &ClusterSpec,
    local: &NodeSpec,
    new: &ClusterSpec,
    may_move: bool,
) -> Result<()> {
    let next = new.node(&local.name)?;
    if next.underlay != local.underlay {
        bail!(
            "node {}'s underlay changed from {} to {}: restart the agent to move it",
            local.name,
            local.underlay,
            next.underlay
        );
    }
    if next.pod_cidr != local.pod_cidr && !may_move {
        bail!(
            "node {}'s pod_cidr changed from {} to {}: its pods hold addresses from {}; \
             remove them and restart the agent to move it",
            local.name,
            local.pod_cidr,
            next.pod_cidr,
            local.pod_cidr
        );
    }
    if new.settings.decap != current.settings.decap {
        bail!(
            "decap changed to {}: restart the agent to re-attach",
            new.settings.decap.name()
        );
    }
    if new.settings.vxlan_device != current.settings.vxlan_device {
        bail!(
            "vxlan_device changed to {}: restart the agent to set the device up",
            new.settings.vxlan_device.name()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Backend, Decap, VxlanDevice, DEFAULT_SPEC};

    fn changed(edit: impl FnOnce(&mut crate::spec::SpecDraft)) -> Result<()> {
        let spec = ClusterSpec::parse(DEFAULT_SPEC).unwrap();
        let mut d = spec.to_draft();
        edit(&mut d);
        followable(&spec, &spec.nodes[0], &d.validate().unwrap(), false)
    }

    #[test]
    fn what_moves_the_node_or_its_attachments_waits_for_a_restart() {
        let e = changed(|d| d.nodes[0].underlay = "192.168.56.99/24".parse().unwrap());
        assert!(e.unwrap_err().to_string().contains("underlay changed"));
        let e = changed(|d| d.nodes[0].pod_cidr = "10.244.99.0/24".parse().unwrap());
        assert!(e.unwrap_err().to_string().contains("pod_cidr changed"));
        let e = changed(|d| d.settings.decap = Decap::Xdp);
        assert!(e.unwrap_err().to_string().contains("decap"));
        let e = changed(|d| d.settings.vxlan_device = VxlanDevice::Both);
        assert!(e.unwrap_err().to_string().contains("vxlan_device"));
        let e = changed(|d| {
            d.nodes.remove(0);
        });
        assert!(e.unwrap_err().to_string().contains("not in the spec"));
    }

    #[test]
    fn a_pod_cidr_nobody_holds_an_address_from_may_move() {
        let spec = ClusterSpec::parse(DEFAULT_SPEC).unwrap();
        let mut d = spec.to_draft();
        d.nodes[0].pod_cidr = "10.244.99.0/24".parse().unwrap();
        let moved = d.validate().unwrap();
        followable(&spec, &spec.nodes[0], &moved, true).unwrap();
        assert!(followable(&spec, &spec.nodes[0], &moved, false).is_err());
        // The rest still waits for a restart.
        let mut d = moved.to_draft();
        d.nodes[0].underlay = "192.168.56.99/24".parse().unwrap();
        let e = followable(&spec, &spec.nodes[0], &d.validate().unwrap(), true);
        assert!(e.unwrap_err().to_string().contains("underlay changed"));
    }

    #[test]
    fn everything_else_is_followed() {
        changed(|d| d.settings.backend = Backend::Vxlan).unwrap();
        changed(|d| d.settings.vni = 42).unwrap();
        changed(|d| d.nodes[1].pod_cidr = "10.244.77.0/24".parse().unwrap()).unwrap();
        changed(|d| {
            d.nodes.pop();
        })
        .unwrap();
    }
}
