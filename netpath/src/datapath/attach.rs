//! Attaching the TC programs so they outlive the process that attached them: pinned
//! TCX links (6.6+) swapped in place on upgrade, or netlink clsact filters.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use aya::programs::{
    links::Link,
    links::{FdLink, LinkOrder, PinnedLink},
    tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions, TcHandle},
    SchedClassifier, TcAttachType,
};
use netpath_common::{names, TcAttach};

use super::maps::Pinned;

/// TC priority and handle of our filter on every veth, fixed so a re-attach replaces it.
const TC_PRIORITY: u16 = 1;
const TC_HANDLE: TcHandle = TcHandle::new(0, 1);

/// TCX links on 6.6+ (they compose with other programs and need no qdisc), netlink
/// clsact filters before.
pub fn preferred_tc_attach() -> TcAttach {
    match aya::util::KernelVersion::current() {
        Ok(v) if v >= aya::util::KernelVersion::new(6, 6, 0) => TcAttach::Tcx,
        _ => TcAttach::Netlink,
    }
}

/// `from_pod` on a pod's veth: a netlink clsact filter, on every kernel. A TCX
/// attach or detach waits for an RCU grace period (~20 ms here, measured), which
/// would dominate a CNI ADD/DEL; nothing but netpath hooks a pod veth, so TCX's
/// composability buys nothing there, and the filter goes with the device. A veth
/// that an earlier version linked with TCX keeps its link, with the program
/// swapped inside it.
pub(crate) fn attach_from_pod(dir: &Path, ifname: &str) -> Result<()> {
    let mode = if link_pin(dir, ifindex(ifname)?, TcAttachType::Ingress).exists() {
        TcAttach::Tcx
    } else {
        TcAttach::Netlink
    };
    let pin = dir.join(names::FROM_POD);
    let mut prog = SchedClassifier::from_pin(&pin)
        .with_context(|| format!("open pinned program {}", pin.display()))?;
    attach_persistent(
        &mut prog,
        dir,
        ifname,
        TcAttachType::Ingress,
        names::FROM_POD,
        mode,
    )
}

fn add_clsact(ifname: &str) -> Result<()> {
    match tc::qdisc_add_clsact(ifname) {
        Err(e) if !is_exists(&e) => Err(e).with_context(|| format!("add clsact qdisc to {ifname}")),
        _ => Ok(()),
    }
}

fn hook_name(hook: TcAttachType) -> &'static str {
    match hook {
        TcAttachType::Egress => "egress",
        _ => "ingress",
    }
}

fn ifindex(ifname: &str) -> Result<u32> {
    let c = std::ffi::CString::new(ifname)?;
    // SAFETY: valid C string.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => bail!("no interface {ifname}"),
        i => Ok(i),
    }
}

/// Where a TCX link is pinned: by ifindex, as veth names are reused by new pods.
pub(crate) fn link_pin(dir: &Path, ifindex: u32, hook: TcAttachType) -> PathBuf {
    dir.join("links")
        .join(format!("{ifindex}-{}", hook_name(hook)))
}

/// Attaches so that the program outlives this process (the CNI plugin exits right
/// away): a pinned TCX link, or a netlink filter at our fixed priority that the kernel
/// keeps until the device goes. Either replaces an earlier agent's attachment.
pub(super) fn attach_persistent(
    prog: &mut SchedClassifier,
    dir: &Path,
    ifname: &str,
    hook: TcAttachType,
    name: &str,
    mode: TcAttach,
) -> Result<()> {
    match mode {
        TcAttach::Tcx => {
            let pin = link_pin(dir, ifindex(ifname)?, hook);
            if pin.exists() {
                // Swap the program inside the existing link: no gap, no second copy.
                let swapped = PinnedLink::from_pin(&pin)
                    .map_err(anyhow::Error::from)
                    .and_then(|l| Ok(SchedClassifierLink::try_from(FdLink::from(l))?))
                    .and_then(|l| Ok(prog.attach_to_link(l)?));
                match swapped {
                    Ok(id) => {
                        // The pin already holds this link.
                        drop(prog.take_link(id)?);
                        return Ok(());
                    }
                    Err(e) => {
                        tracing::debug!("stale TCX link {}: {e:#}", pin.display());
                        std::fs::remove_file(&pin)?;
                    }
                }
            }
            let id = prog
                .attach_with_options(
                    ifname,
                    hook,
                    TcAttachOptions::TcxOrder(LinkOrder::default()),
                )
                .with_context(|| format!("attach {name} to {ifname} ({} tcx)", hook_name(hook)))?;
            let link: FdLink = prog.take_link(id)?.try_into()?;
            std::fs::create_dir_all(pin.parent().expect("pin has a parent"))?;
            link.pin(&pin)
                .with_context(|| format!("pin {}", pin.display()))?;
            Ok(())
        }
        TcAttach::Netlink => {
            add_clsact(ifname)?;
            let opts = || {
                TcAttachOptions::Netlink(NlOptions {
                    priority: TC_PRIORITY,
                    handle: TC_HANDLE,
                    classid: None,
                })
            };
            let id = match prog.attach_with_options(ifname, hook, opts()) {
                Ok(id) => id,
                Err(_) => {
                    netlink_detach(ifname, hook)?;
                    prog.attach_with_options(ifname, hook, opts())
                        .with_context(|| format!("attach {name} to {ifname}"))?
                }
            };
            std::mem::forget(prog.take_link(id)?);
            Ok(())
        }
    }
}

/// Detaches our program from one hook of `ifname`, however it was attached.
pub fn detach(dir: &Path, ifname: &str, hook: TcAttachType) -> Result<()> {
    let pin = link_pin(dir, ifindex(ifname)?, hook);
    if pin.exists() {
        // The pin is the link's last holder: removing it detaches.
        return std::fs::remove_file(&pin).with_context(|| format!("remove {}", pin.display()));
    }
    netlink_detach(ifname, hook)
}

fn netlink_detach(ifname: &str, hook: TcAttachType) -> Result<()> {
    let link = SchedClassifierLink::attached(ifname, hook, TC_PRIORITY, TC_HANDLE, None)?;
    match link.detach() {
        Ok(()) => Ok(()),
        Err(e) => bail!("detach from {ifname}: {e}"),
    }
}

fn is_exists(e: &tc::TcError) -> bool {
    match e {
        tc::TcError::AlreadyAttached => true,
        tc::TcError::NetlinkError(n) => n.raw_os_error() == Some(libc::EEXIST),
        _ => false,
    }
}

/// Swaps the freshly loaded `from_pod` into every endpoint's veth (an agent upgrade):
/// a TCX link keeps its place and gets the new program atomically; a netlink filter
/// at our priority is replaced. Endpoints whose veth is gone are skipped.
pub fn reattach_from_pod(dir: &Path) -> Result<usize> {
    let pinned = Pinned::open(dir)?;
    let mut n = 0;
    for (ip, ep) in pinned.endpoints()? {
        let Some(name) = ifname(ep.ifindex) else {
            tracing::debug!(%ip, "veth gone; not re-attaching");
            continue;
        };
        attach_from_pod(dir, &name).with_context(|| format!("re-attach from_pod to {name}"))?;
        n += 1;
    }
    Ok(n)
}

/// The name of the interface with this index in the caller's namespace.
pub fn ifname(index: u32) -> Option<String> {
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
