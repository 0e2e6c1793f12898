//! CHECK: the attachment is as ADD left it — its address in the book and in
//! prevResult, the veth pair, the pod's address and default route, and the
//! ENDPOINTS entry pointing at the node-side veth.
use std::{net::Ipv4Addr, path::Path};

use netpath_common::POD_GATEWAY;
use serde_json::Value;

use super::{
    code,
    conf::{Env, NetConf},
    invocation::{netlink_failed, open_netns, ready_node, runtime, wiring},
    node::{self, ipam_error, Node},
    result, CniError, CniResult,
};
use crate::{datapath::Pinned, endpoint, ipam::AttachmentId, ipam::Store, netlink::Netlink};

fn mismatch(what: String) -> CniError {
    CniError::new(code::CHECK_FAILED, what)
}

pub fn check(env: &Env, conf: &NetConf) -> CniResult<()> {
    let prev = conf.prev_result.as_ref().ok_or_else(|| {
        CniError::new(
            code::INVALID_CONFIG,
            "invalid network configuration: prevResult: CHECK needs the result of ADD",
        )
    })?;
    let id = env.attachment()?;
    let (_netns, netns_fd_path) = open_netns(env)?;
    let node = ready_node(conf)?;
    node::see_pins(&node.agent.pin_dir, node.agent.pid)?;
    let ip = allocated(&node, &id, prev)?;
    runtime()?.block_on(wired(&node.agent.pin_dir, &netns_fd_path, &id, ip))
}

/// The address the book holds for `id`, which prevResult must name too.
fn allocated(node: &Node, id: &AttachmentId, prev: &Value) -> CniResult<Ipv4Addr> {
    let ip = Store::open(&node.dir)
        .map_err(ipam_error)?
        .book
        .find(id)
        .ok_or_else(|| {
            mismatch(format!(
                "no address is allocated to {}/{}",
                id.container_id, id.ifname
            ))
        })?;
    match result::address_of(prev, &id.ifname) {
        Some(p) if p == ip => Ok(ip),
        Some(p) => Err(mismatch(format!(
            "prevResult says {p} but {ip} is allocated to {}/{}",
            id.container_id, id.ifname
        ))),
        None => Err(mismatch(format!(
            "prevResult has no address for {}",
            id.ifname
        ))),
    }
}

/// The wiring of `ip`: both veth ends, the pod's address and route, the map entry.
async fn wired(pin_dir: &Path, netns: &Path, id: &AttachmentId, ip: Ipv4Addr) -> CniResult<()> {
    let host = endpoint::host_ifname(&id.container_id, &id.ifname);
    let nl = Netlink::new().map_err(netlink_failed)?;
    let link = nl
        .find_link(&host)
        .await
        .map_err(netlink_failed)?
        .ok_or_else(|| mismatch(format!("the node-side veth {host} is missing")))?;
    let pod = Netlink::new_in(netns).map_err(netlink_failed)?;
    let eth = pod
        .find_link(&id.ifname)
        .await
        .map_err(netlink_failed)?
        .ok_or_else(|| mismatch(format!("{} is missing in the container", id.ifname)))?;
    match pod.address_owner(ip).await.map_err(netlink_failed)? {
        Some((index, 32)) if index == eth.index => {}
        _ => {
            return Err(mismatch(format!(
                "{ip}/32 is not on {} in the container",
                id.ifname
            )))
        }
    }
    let routes = pod.routes().await.map_err(netlink_failed)?;
    let gw = Ipv4Addr::from(POD_GATEWAY);
    if !routes
        .iter()
        .any(|r| r.dst.prefix == 0 && r.gateway == Some(gw) && r.oif == Some(eth.index))
    {
        return Err(mismatch(format!(
            "the container has no default route via {gw}"
        )));
    }
    let endpoints = Pinned::open(pin_dir)
        .and_then(|p| p.endpoints())
        .map_err(wiring("read the ENDPOINTS map"))?;
    match endpoints.iter().find(|(e, _)| *e == ip) {
        Some((_, ep)) if ep.ifindex == link.index => Ok(()),
        Some((_, ep)) => Err(mismatch(format!(
            "ENDPOINTS sends {ip} to ifindex {}, not to {host} ({})",
            ep.ifindex, link.index
        ))),
        None => Err(mismatch(format!("ENDPOINTS has no entry for {ip}"))),
    }
}
