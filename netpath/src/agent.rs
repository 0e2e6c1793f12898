//! The node agent: loads and pins the datapath, then holds it until told to stop.
use anyhow::{Context, Result};
use netpath_common::{RedirectMode, Settings};

use crate::{config::AgentConfig, datapath};

pub async fn run(cfg: AgentConfig, keep_pins: bool) -> Result<()> {
    let dir = cfg.pin_dir();
    let mode: RedirectMode = cfg.redirect.clone().into();
    let loaded = datapath::load_and_pin(
        &dir,
        Settings {
            redirect_mode: mode as u32,
        },
    )
    .with_context(|| format!("load datapath for node {}", cfg.node))?;
    tracing::info!(node = %cfg.node, pins = %dir.display(), redirect = mode.name(), "agent ready");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    drop(loaded);
    if keep_pins {
        tracing::info!("stopping; pins kept, pods keep their datapath");
        return Ok(());
    }
    cleanup(&dir)
}

/// Detaches from every known endpoint's veth and removes the pins.
fn cleanup(dir: &std::path::Path) -> Result<()> {
    if let Ok(pinned) = datapath::Pinned::open(dir) {
        for (ip, ep) in pinned.endpoints()? {
            match ifname(ep.ifindex) {
                Some(name) => {
                    if let Err(e) = datapath::detach(&name) {
                        tracing::warn!(%ip, "{e:#}");
                    }
                }
                None => tracing::debug!(%ip, "veth already gone"),
            }
        }
    }
    datapath::remove_pins(dir)?;
    tracing::info!(pins = %dir.display(), "stopped; pins removed");
    Ok(())
}

fn ifname(index: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf has IF_NAMESIZE bytes as the call requires.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: on success the buffer holds a NUL-terminated name.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}
