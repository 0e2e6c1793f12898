//! What every verb needs from its invocation: the container's namespace opened, the
//! ready node it runs for, a runtime, and the mapping of wiring errors to codes.
use std::{fs::File, os::fd::AsRawFd, path::PathBuf};

use super::{
    code,
    conf::{Env, NetConf},
    node::{self, Node},
    CniError, CniResult,
};

pub(super) fn runtime() -> CniResult<tokio::runtime::Runtime> {
    crate::files::one_shot_runtime().map_err(|e| {
        CniError::new(code::IO_FAILURE, "cannot start the async runtime").with_details(e)
    })
}

pub(super) fn wiring(what: &str) -> impl FnOnce(anyhow::Error) -> CniError + '_ {
    move |e| CniError::new(code::WIRING_FAILED, what).with_details(format!("{e:#}"))
}

pub(super) fn netlink_failed(e: crate::netlink::NetlinkError) -> CniError {
    wiring("netlink")(e.into())
}

pub(super) fn no_node(conf: &NetConf) -> CniError {
    CniError::new(
        code::TRY_AGAIN_LATER,
        format!(
            "no netpath agent publishes state for this node under {}",
            conf.state_root.display()
        ),
    )
}

pub(super) fn ready_node(conf: &NetConf) -> CniResult<Node> {
    let node = node::locate(conf)?.ok_or_else(|| no_node(conf))?;
    node.ready()?;
    Ok(node)
}

/// The container's namespace, opened before anything can change what its path means.
pub(super) fn open_netns(env: &Env) -> CniResult<(File, PathBuf)> {
    let path = env.netns()?;
    let f = File::open(path).map_err(|e| {
        CniError::new(
            code::BAD_ENVIRONMENT,
            format!("CNI_NETNS {} cannot be opened", path.display()),
        )
        .with_details(e)
    })?;
    let by_fd = PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()));
    Ok((f, by_fd))
}
