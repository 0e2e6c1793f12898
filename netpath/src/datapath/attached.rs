//! Is a pinned program really attached where it belongs? The kernel's own answer:
//! the programs on a TCX hook (`BPF_PROG_QUERY`), or the BPF filters of a clsact
//! hook (a netlink filter dump), compared by program id with the pin.
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use aya::programs::{ProgramInfo, SchedClassifier, TcAttachType};
use futures::StreamExt;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_route::{
    tc::{TcAttribute, TcHandle, TcMessage, TcOption},
    RouteNetlinkMessage,
};

use netlink_packet_utils::nla::Nla;

use crate::netlink::Netlink;

/// `TCA_BPF_ID` inside a `bpf` filter's options.
const TCA_BPF_ID: u16 = 11;

/// The id of the program pinned as `name` in `dir`.
pub fn pinned_id(dir: &Path, name: &str) -> Result<u32> {
    let pin = dir.join(name);
    let info = ProgramInfo::from_pin(&pin).with_context(|| format!("open {}", pin.display()))?;
    Ok(info.id())
}

/// Whether program `id` runs on `hook` of the link `ifname` (index `ifindex`), by
/// either attach mechanism.
pub async fn is_attached(
    nl: &Netlink,
    ifname: &str,
    ifindex: u32,
    hook: TcAttachType,
    id: u32,
) -> Result<bool> {
    // Kernels without TCX answer the query with an error: nothing attached that way.
    if let Ok((_, progs)) = SchedClassifier::query_tcx(ifname, hook) {
        if progs.iter().any(|p| p.id() == id) {
            return Ok(true);
        }
    }
    Ok(clsact_programs(nl, ifindex, hook).await?.contains(&id))
}

/// Ids of the BPF programs in the clsact filters on one hook of a link.
async fn clsact_programs(nl: &Netlink, ifindex: u32, hook: TcAttachType) -> Result<Vec<u32>> {
    let mut msg = TcMessage::default();
    msg.header.index = ifindex as i32;
    msg.header.parent = TcHandle {
        major: u16::MAX,
        minor: match hook {
            TcAttachType::Egress => TcHandle::MIN_EGRESS,
            _ => TcHandle::MIN_INGRESS,
        },
    };
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::GetTrafficFilter(msg));
    req.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut responses = nl
        .handle()
        .clone()
        .request(req)
        .map_err(|e| anyhow!("dump tc filters of link {ifindex}: {e}"))?;
    let mut ids = Vec::new();
    while let Some(m) = responses.next().await {
        match m.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewTrafficFilter(f)) => {
                ids.extend(f.attributes.iter().filter_map(bpf_id));
            }
            // No qdisc on the link: no filters.
            NetlinkPayload::Error(e) if e.raw_code() == -libc::EINVAL => break,
            NetlinkPayload::Error(e) => {
                return Err(anyhow!("dump tc filters of link {ifindex}: {e}"));
            }
            _ => {}
        }
    }
    Ok(ids)
}

/// The program id in a `bpf` filter's options (the crate leaves those unparsed).
fn bpf_id(attr: &TcAttribute) -> Option<u32> {
    let TcAttribute::Options(opts) = attr else {
        return None;
    };
    // An unknown filter kind's options come as one attribute holding the nested run.
    opts.iter().find_map(|o| match o {
        TcOption::Other(nla) => {
            let mut value = vec![0u8; nla.value_len()];
            nla.emit_value(&mut value);
            nested_u32(&value, TCA_BPF_ID)
        }
        _ => None,
    })
}

fn u32_at(b: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(..4)?.try_into().ok()?))
}

/// The u32 attribute of type `kind` in a run of netlink attributes.
fn nested_u32(mut b: &[u8], kind: u16) -> Option<u32> {
    while b.len() >= 4 {
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let ty = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        if len < 4 || len > b.len() {
            return None;
        }
        if ty == kind {
            return u32_at(&b[4..len]);
        }
        b = &b[((len + 3) & !3).min(b.len())..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_program_id_among_filter_attributes() {
        // TCA_BPF_NAME "x\0" (len 6, padded to 8), then TCA_BPF_ID 42.
        let mut b = vec![6, 0, 7, 0, b'x', 0, 0, 0];
        b.extend_from_slice(&[8, 0, 11, 0]);
        b.extend_from_slice(&42u32.to_ne_bytes());
        assert_eq!(nested_u32(&b, TCA_BPF_ID), Some(42));
        assert_eq!(nested_u32(&b, 3), None);
        assert_eq!(
            nested_u32(&[200, 0, 11, 0, 1, 2], TCA_BPF_ID),
            None,
            "bad length"
        );
    }
}
