//! Subnet reservations: the one a joining node gets (its own, its pods' subnet again,
//! or the first free one, in compare-and-create transactions that race safely).
use std::collections::BTreeSet;

use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp};

use super::{
    keys::Keys,
    view::{Reservation, View},
    Result, StoreError,
};
use crate::{
    net::Ipv4Net,
    store::model::{pick_subnet, pick_subnet_after_conflict},
};

/// The subnet a joining node is to hold, and whether the reservation is its own
/// (not when its pods' subnet is reserved by another node now).
pub(super) struct Reserved {
    pub net: Ipv4Net,
    pub ours: bool,
}

/// This node's subnet: the one reserved for it, or a new one taken in a
/// compare-and-create transaction (another node taking it first means: re-read,
/// pick again).
///
/// `held`: addresses this node's pods hold already (its address book, kept across
/// restarts). With its reservation gone they decide: the node asks for their subnet
/// again, free or not — a node never moves away from its pods' addresses (if another
/// node holds that subnet now, `hold_reservation` says so).
pub(super) async fn reserve(
    client: &mut Client,
    keys: &Keys,
    name: &str,
    held: &[std::net::Ipv4Addr],
) -> Result<Reserved> {
    const ATTEMPTS: usize = 64;
    for attempt in 0..ATTEMPTS {
        // The config and the reservations only: the node records can be many.
        let mut view = View::default();
        for prefix in [keys.config(), keys.subnets()] {
            let resp = client
                .get(prefix, Some(GetOptions::new().with_prefix()))
                .await?;
            for kv in resp.kvs() {
                if let Ok(k) = kv.key_str() {
                    view.apply(keys, k, Some(kv.value()), kv.create_revision());
                }
            }
        }
        let config = view
            .config
            .as_ref()
            .ok_or_else(|| StoreError::NotInitialized(keys.prefix.clone()))?;
        if let Some(mine) = view.reservation_of(name) {
            if config.settings.cluster_cidr.contains_net(&mine) && mine.prefix == config.subnet_len
            {
                if let Some(ip) = held.iter().find(|ip| !mine.contains(**ip)) {
                    tracing::warn!(
                        %mine, %ip,
                        "etcd: a pod of this node holds an address outside its reservation"
                    );
                }
                return Ok(Reserved {
                    net: mine,
                    ours: true,
                });
            }
            return Err(StoreError::Config(format!(
                "node {name}'s reservation {mine} does not fit the cluster config ({} in /{}); \
                 release it with `netpath node remove {name}`",
                config.settings.cluster_cidr, config.subnet_len
            )));
        }
        let len = config.subnet_len;
        let theirs = held
            .iter()
            .map(|ip| Ipv4Net::new(Ipv4Net::new(*ip, len).network(), len))
            .find(|net| config.settings.cluster_cidr.contains_net(net));
        if let Some(net) = theirs {
            // Claimed if still free; either way it is the subnet to hold.
            let ours = !view.subnets.contains_key(&net) && claim(client, keys, name, net).await?;
            return Ok(Reserved { net, ours });
        }
        let taken: BTreeSet<Ipv4Net> = view.subnets.keys().copied().collect();
        let pick = if attempt == 0 {
            pick_subnet(config.settings.cluster_cidr, config.subnet_len, &taken)
        } else {
            pick_subnet_after_conflict(
                config.settings.cluster_cidr,
                config.subnet_len,
                &taken,
                name,
                attempt,
            )
        };
        let net = pick.ok_or_else(|| StoreError::NoSubnet {
            node: name.into(),
            cluster: config.settings.cluster_cidr,
            len: config.subnet_len,
        })?;
        if claim(client, keys, name, net).await? {
            return Ok(Reserved { net, ours: true });
        }
    }
    Err(StoreError::Contended(ATTEMPTS))
}

/// Reserves `net` for `name` if nobody holds it (compare-and-create); whether it did.
pub(super) async fn claim(
    client: &mut Client,
    keys: &Keys,
    name: &str,
    net: Ipv4Net,
) -> Result<bool> {
    let value = serde_json::to_vec(&Reservation { node: name.into() }).expect("serializes");
    let key = keys.subnet(&net);
    let txn = Txn::new()
        .when(vec![Compare::create_revision(
            key.clone(),
            CompareOp::Equal,
            0,
        )])
        .and_then(vec![TxnOp::put(key, value, None)]);
    Ok(client.txn(txn).await?.succeeded())
}
