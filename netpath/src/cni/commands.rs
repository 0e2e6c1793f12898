//! The verbs: ADD, DEL, CHECK, STATUS, GC, VERSION.
use std::{
    collections::BTreeSet,
    fs::File,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use netpath_common::POD_GATEWAY;
use serde_json::{json, Value};

use super::{
    code,
    conf::{self, Env, NetConf},
    invocation::{no_node, open_netns, ready_node, runtime, wiring},
    node::{self, ipam_error, Node},
    result, CniError, CniResult,
};
use crate::{
    endpoint,
    ipam::{Allocation, AttachmentId, Store},
    net::Ipv4Net,
};

/// Runs one invocation; returns the version errors are printed in and what to print.
pub fn run(env: &Env, input: &[u8]) -> (String, CniResult<Option<String>>) {
    let command = env.command.clone().unwrap_or_default();
    let value: Value = match serde_json::from_slice(input) {
        Ok(v) => v,
        // VERSION may come with nothing useful on stdin: it needs no config.
        Err(_) if command == "VERSION" => json!({}),
        Err(e) => {
            return (
                conf::LATEST.into(),
                Err(
                    CniError::new(code::UNDECODABLE, "cannot decode the network configuration")
                        .with_details(e),
                ),
            )
        }
    };
    let version = conf::version_of(&value)
        .filter(|v| conf::SUPPORTED_VERSIONS.contains(v))
        .unwrap_or(conf::LATEST)
        .to_string();
    init_logging(value.get("logFile").and_then(Value::as_str).map(Path::new));
    let out = dispatch(&command, env, &value).map(|o| o.map(|v| v.to_string()));
    (version, out)
}

fn dispatch(command: &str, env: &Env, value: &Value) -> CniResult<Option<Value>> {
    if command == "VERSION" {
        return Ok(Some(json!({
            "cniVersion": conf::LATEST,
            "supportedVersions": conf::SUPPORTED_VERSIONS,
        })));
    }
    let conf = NetConf::parse(value)?;
    let newer_verb = |verb: &str| -> CniResult<()> {
        if conf::has_status_and_gc(&conf.cni_version) {
            return Ok(());
        }
        Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!(
                "{verb} needs cniVersion 1.1.0, the config has {}",
                conf.cni_version
            ),
        ))
    };
    match command {
        "ADD" => add(env, &conf).map(Some),
        "DEL" => del(env, &conf).map(|()| None),
        "CHECK" => super::verify::check(env, &conf).map(|()| None),
        "STATUS" => {
            newer_verb("STATUS")?;
            status(&conf).map(|()| None)
        }
        "GC" => {
            newer_verb("GC")?;
            gc(&conf).map(|()| None)
        }
        other => Err(CniError::new(
            code::BAD_ENVIRONMENT,
            format!("CNI_COMMAND {other:?} is not one of ADD, DEL, CHECK, STATUS, GC, VERSION"),
        )),
    }
}

fn init_logging(file: Option<&Path>) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("NETPATH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,netlink_packet_route=error"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false);
    let opened = file.and_then(|f| File::options().create(true).append(true).open(f).ok());
    let _ = match opened {
        Some(f) => builder.with_writer(std::sync::Mutex::new(f)).try_init(),
        None => builder.with_writer(std::io::stderr).try_init(),
    };
}

fn pod_cidr(node: &Node) -> CniResult<Ipv4Net> {
    node.agent.pod_cidr.ok_or_else(|| {
        CniError::new(
            code::TRY_AGAIN_LATER,
            format!("node {} holds no pod CIDR right now", node.agent.node),
        )
    })
}

fn add(env: &Env, conf: &NetConf) -> CniResult<Value> {
    let id = env.attachment()?;
    let pod = env.pod_args()?;
    let (_netns, netns_fd_path) = open_netns(env)?;
    let node = ready_node(conf)?;
    let mtu = match conf.mtu {
        Some(m) if m > node.agent.pod_mtu => {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                format!(
                    "invalid network configuration: mtu: {m} is above node {}'s pod MTU {}",
                    node.agent.node, node.agent.pod_mtu
                ),
            ))
        }
        Some(m) => m,
        None => node.agent.pod_mtu,
    };
    let cidr = pod_cidr(&node)?;
    let pin_dir = node.agent.pin_dir.clone();
    node::see_pins(&pin_dir, node.agent.pid)?;
    let req = crate::pod::PodRequest {
        alloc: Allocation {
            id: id.clone(),
            pod_namespace: pod.namespace,
            pod_name: pod.name,
            netns: env.netns.clone(),
        },
        netns: &netns_fd_path,
        mtu,
    };
    let added = runtime()?.block_on(crate::pod::add(&node.dir, &pin_dir, cidr, req));
    let (ip, attached) = added.map_err(|e| match e {
        crate::pod::AddError::Ipam(e) => ipam_error(e),
        crate::pod::AddError::Wiring(e) => wiring("cannot wire the pod")(e),
    })?;
    tracing::info!(container = %id.container_id, %ip, veth = %attached.host_ifname, "added");
    Ok(result::add(
        &conf.cni_version,
        conf.prev_result.as_ref(),
        &result::Wired {
            host_ifname: attached.host_ifname,
            host_mac: attached.host_mac,
            ifname: id.ifname,
            pod_mac: attached.pod_mac,
            sandbox: env.netns.clone().unwrap_or_default(),
            ip,
            gateway: Ipv4Addr::from(POD_GATEWAY),
            mtu,
        },
    ))
}

/// Unwires `id` and frees its address; whatever is gone already is skipped.
fn release(
    dir: &Path,
    pin_dir: Option<&Path>,
    agent_pid: Option<u32>,
    id: &AttachmentId,
) -> CniResult<()> {
    let ip = Store::open(dir).map_err(ipam_error)?.book.find(id);
    // Without the pins (agent gone and its mount namespace with it) the veth still
    // goes; the map entry then went with the agent's cleanup.
    let pins = match (pin_dir, agent_pid) {
        (Some(p), Some(pid)) if node::see_pins(p, pid).is_ok() => p.to_path_buf(),
        (Some(p), _) => p.to_path_buf(),
        (None, _) => PathBuf::new(),
    };
    runtime()?
        .block_on(endpoint::detach(&pins, &id.container_id, &id.ifname, ip))
        .map_err(wiring("cannot unwire the pod"))?;
    let mut store = Store::open(dir).map_err(ipam_error)?;
    if store.book.release(id).is_some() {
        store.commit().map_err(ipam_error)?;
    }
    Ok(())
}

fn del(env: &Env, conf: &NetConf) -> CniResult<()> {
    let id = env.attachment()?;
    let node = node::locate(conf)?;
    let holds = |d: &Path| -> CniResult<bool> {
        Ok(Store::exists(d) && Store::open(d).map_err(ipam_error)?.book.find(&id).is_some())
    };
    let dir = match &node {
        Some(n) if holds(&n.dir)? => Some(n.dir.clone()),
        _ => node::book_holding(&conf.state_root, &id)?,
    };
    let Some(dir) = dir else {
        // No allocation anywhere: at most a veth is left (an ADD killed between
        // wiring and the result); it goes, and a second DEL finds nothing at all.
        let pins = node
            .as_ref()
            .map(|n| n.agent.pin_dir.clone())
            .unwrap_or_default();
        runtime()?
            .block_on(endpoint::detach(&pins, &id.container_id, &id.ifname, None))
            .map_err(wiring("cannot unwire the pod"))?;
        return Ok(());
    };
    let book_pins = Store::open(&dir).map_err(ipam_error)?.book.pin_dir;
    let live = node.as_ref().filter(|n| n.dir == dir);
    let pin_dir = live.map(|n| n.agent.pin_dir.clone()).or(book_pins);
    release(&dir, pin_dir.as_deref(), live.map(|n| n.agent.pid), &id)?;
    tracing::info!(container = %id.container_id, "deleted");
    Ok(())
}

fn status(conf: &NetConf) -> CniResult<()> {
    let node =
        node::locate(conf)?.ok_or_else(|| CniError::new(code::NOT_AVAILABLE, no_node(conf).msg))?;
    match node.not_ready() {
        None => Ok(()),
        Some(why) => Err(CniError::new(code::NOT_AVAILABLE, why)),
    }
}

fn gc(conf: &NetConf) -> CniResult<()> {
    let valid: BTreeSet<AttachmentId> = conf.valid_attachments.clone().ok_or_else(|| {
        CniError::new(
            code::INVALID_CONFIG,
            "invalid network configuration: cni.dev/valid-attachments: GC needs the list (it may be empty)",
        )
    })?;
    // Only this node's book: each node's runtime knows only its own attachments.
    let Some(node) = node::locate(conf)? else {
        return Ok(());
    };
    if !Store::exists(&node.dir) {
        return Ok(());
    }
    let stale: Vec<AttachmentId> = Store::open(&node.dir)
        .map_err(ipam_error)?
        .book
        .allocations
        .values()
        .filter(|a| !valid.contains(&a.id))
        .map(|a| a.id.clone())
        .collect();
    let mut first_error = None;
    for id in &stale {
        let pins = node.agent.pin_dir.clone();
        if let Err(e) = release(&node.dir, Some(&pins), Some(node.agent.pid), id) {
            tracing::warn!(container = %id.container_id, "GC: {e}");
            first_error.get_or_insert(e);
        }
    }
    tracing::info!(freed = stale.len(), "GC");
    first_error.map_or(Ok(()), Err)
}
