//! Stopping an agent without `--keep-pins`: everything it put on the node goes.
use anyhow::Result;
use aya::programs::TcAttachType;

use super::Agent;
use crate::{
    datapath::{self, Pinned},
    plan::Desired,
    reconcile,
    state::AgentState,
    tunnel,
};

impl Agent {
    /// Detaches from every endpoint's veth and the underlay, removes the owned kernel
    /// routes, the pins and the published state.
    pub(super) async fn cleanup(self) -> Result<()> {
        AgentState::remove(&self.state_dir);
        if let Ok(pinned) = Pinned::open(&self.dir) {
            for (ip, ep) in pinned.endpoints().unwrap_or_default() {
                match datapath::attach::ifname(ep.ifindex) {
                    Some(name) => {
                        if let Err(e) = datapath::detach(&self.dir, &name, TcAttachType::Ingress) {
                            tracing::warn!(%ip, "{e:#}");
                        }
                    }
                    None => tracing::debug!(%ip, "veth already gone"),
                }
            }
        }
        for hook in [TcAttachType::Ingress, TcAttachType::Egress] {
            if let Err(e) = datapath::detach(&self.dir, &self.underlay_name, hook) {
                tracing::warn!("{e:#}");
            }
        }
        if self.probed.tunnel_ifindex != 0 {
            if let Err(e) = datapath::detach(&self.dir, tunnel::NAME, TcAttachType::Ingress) {
                tracing::warn!("{e:#}");
            }
            if let Err(e) = tunnel::remove(&self.nl).await {
                tracing::warn!("remove {}: {e:#}", tunnel::NAME);
            }
        }
        if self.wireguard.is_some() {
            if let Err(e) = super::encryption::remove(&self.nl, &self.state_dir).await {
                tracing::warn!("remove the WireGuard device: {e:#}");
            }
        }
        // Best effort from here: the pins go even if a route could not be removed.
        let removed = match self.nl.routes().await {
            Ok(table) => reconcile::apply_routes(&self.nl, &table, &Desired::default()).await,
            Err(e) => Err(e.into()),
        };
        if let Err(e) = removed {
            tracing::warn!("remove owned routes: {e:#}");
        }
        datapath::remove_pins(&self.dir)?;
        tracing::info!(pins = %self.dir.display(), "stopped; programs detached, routes and pins removed");
        Ok(())
    }
}
