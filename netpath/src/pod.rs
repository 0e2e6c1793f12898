//! A pod's whole attachment, the way CNI ADD makes it (and the lab, through the same
//! code): an address from the node's book, committed before anything is wired, so a
//! crash in between leaves an entry GC can find instead of a lost address; then the
//! wiring. An address this call allocated goes back if the wiring fails.
use std::{net::Ipv4Addr, path::Path};

use crate::{
    endpoint::{self, Attached, Attachment},
    ipam::{Allocation, IpamError, Store},
    net::Ipv4Net,
};

#[derive(Debug, thiserror::Error)]
pub enum AddError {
    /// No address: the book is full, damaged or unreadable.
    #[error(transparent)]
    Ipam(#[from] IpamError),
    /// The address was taken but the wiring failed (and the address released).
    #[error("cannot wire the pod: {0:#}")]
    Wiring(anyhow::Error),
}

/// How long ADD waits for the agent to judge a new pod's policy.
const JUDGED_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// What to attach: the book entry (who) and where its interface goes.
pub struct PodRequest<'a> {
    pub alloc: Allocation,
    /// The pod's network namespace, as the wiring opens it.
    pub netns: &'a Path,
    pub mtu: u32,
}

/// Allocates from `cidr` in the book under `state_dir` (the same attachment id again
/// gets its address back) and wires the pod to the node's pins in `pin_dir`. Runs
/// inside the node's network namespace.
pub async fn add(
    state_dir: &Path,
    pin_dir: &Path,
    cidr: Ipv4Net,
    req: PodRequest<'_>,
) -> Result<(Ipv4Addr, Attached), AddError> {
    let id = req.alloc.id.clone();
    let (ip, new) = {
        let mut store = Store::open(state_dir)?;
        let got = store.book.allocate(cidr, req.alloc)?;
        store.book.pin_dir = Some(pin_dir.to_path_buf());
        store.commit()?;
        got
    };
    let a = Attachment {
        container_id: id.container_id.clone(),
        netns: req.netns.to_path_buf(),
        ifname: id.ifname.clone(),
        ip,
        mtu: req.mtu,
    };
    let wired = match endpoint::attach(pin_dir, &a).await {
        Ok(attached) => match endpoint::wait_judged(pin_dir, ip, JUDGED_WITHIN).await {
            Ok(()) => Ok(attached),
            Err(e) => {
                // Unwired again, so the address can go back with nothing using it.
                if let Err(d) =
                    endpoint::detach(pin_dir, &a.container_id, &a.ifname, Some(ip)).await
                {
                    tracing::warn!(%ip, "unwire a pod the agent did not judge: {d:#}");
                }
                Err(e)
            }
        },
        Err(e) => Err(e),
    };
    match wired {
        Ok(attached) => Ok((ip, attached)),
        Err(e) => {
            if new {
                // The address goes back: nothing of this ADD is left to own it.
                if let Ok(mut store) = Store::open(state_dir) {
                    store.book.release(&id);
                    let _ = store.commit();
                }
            }
            Err(AddError::Wiring(e))
        }
    }
}
