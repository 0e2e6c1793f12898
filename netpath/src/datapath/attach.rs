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

/// TC priorities of our netlink filter: a re-attach puts the new program at the one
/// not in use and then removes the old (make before break), and the handle.
const TC_PRIORITIES: [u16; 2] = [1, 2];
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
    ifindex_if_present(ifname)?.ok_or_else(|| anyhow::anyhow!("no interface {ifname}"))
}

fn ifindex_if_present(ifname: &str) -> Result<Option<u32>> {
    let c = std::ffi::CString::new(ifname)?;
    // SAFETY: valid C string.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Ok(None),
        i => Ok(Some(i)),
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
                        crate::files::remove_file_if_present(&pin)?;
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
            // Never a moment without a program: packets would meet the host stack,
            // which answers a masqueraded flow's reply with a reset. The new filter
            // goes in beside the old one, then the old one goes.
            let opts = |priority| {
                TcAttachOptions::Netlink(NlOptions {
                    priority,
                    handle: TC_HANDLE,
                    classid: None,
                })
            };
            let [first, second] = TC_PRIORITIES;
            let (id, old) = match prog.attach_with_options(ifname, hook, opts(first)) {
                Ok(id) => (id, second),
                Err(_) => match prog.attach_with_options(ifname, hook, opts(second)) {
                    Ok(id) => (id, first),
                    Err(_) => {
                        // Both taken (a swap cut short): one goes first.
                        netlink_detach_at(ifname, hook, second)?;
                        let id = prog
                            .attach_with_options(ifname, hook, opts(second))
                            .with_context(|| format!("attach {name} to {ifname}"))?;
                        (id, first)
                    }
                },
            };
            std::mem::forget(prog.take_link(id)?);
            // Absent on a first attach.
            let _ = netlink_detach_at(ifname, hook, old);
            Ok(())
        }
    }
}

/// Detaches our program from one hook of `ifname`, however it was attached; a
/// device that is gone has nothing attached.
pub fn detach(dir: &Path, ifname: &str, hook: TcAttachType) -> Result<()> {
    let Some(index) = ifindex_if_present(ifname)? else {
        return Ok(());
    };
    let pin = link_pin(dir, index, hook);
    if pin.exists() {
        // The pin is the link's last holder: removing it detaches.
        return crate::files::remove_file_if_present(&pin)
            .with_context(|| format!("remove {}", pin.display()));
    }
    netlink_detach(ifname, hook)
}

/// Removes our filter at either priority; fails only if there was none to remove.
fn netlink_detach(ifname: &str, hook: TcAttachType) -> Result<()> {
    let results = TC_PRIORITIES.map(|p| netlink_detach_at(ifname, hook, p));
    if results.iter().any(Result::is_ok) {
        return Ok(());
    }
    results.into_iter().next().expect("two priorities")
}

fn netlink_detach_at(ifname: &str, hook: TcAttachType, priority: u16) -> Result<()> {
    let link = SchedClassifierLink::attached(ifname, hook, priority, TC_HANDLE, None)?;
    match link.detach() {
        Ok(()) => Ok(()),
        Err(e) => bail!("detach from {ifname} (priority {priority}): {e}"),
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
