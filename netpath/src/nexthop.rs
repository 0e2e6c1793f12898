//! Kernel nexthop objects (RTM_*NEXTHOP, kernel 5.3+), spoken over a raw rtnetlink
//! socket because the rtnetlink crate has no nexthop messages.
//!
//! Why they exist here: the kernel keys its route-info hash (`fib_info_hashfn`) by
//! device, protocol, scope and metric but not by gateway, so N routes through N
//! different gateways on one underlay device all land in one hash chain, and every
//! insert walks it: measured here, 20 000 such routes took 9 s and 100 000 took
//! minutes. A route that names a nexthop object is hashed by the object's id instead,
//! and the same 20 000 went in in under a second.
//!
//! The id of the object for gateway `gw` is `u32::from(gw)`: one object per
//! gateway, found again after a restart without any state of our own.
use std::net::Ipv4Addr;

use crate::rtsock::{self, RtError, RtSocket};

const RTM_NEWNEXTHOP: u16 = 104;
const RTM_DELNEXTHOP: u16 = 105;
const RTM_GETNEXTHOP: u16 = 106;
const NHA_ID: u16 = 1;
const NHA_OIF: u16 = 5;
const NHA_GATEWAY: u16 = 6;

const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_CREATE: u16 = 0x400;

/// One IPv4 nexthop object: `id via gateway dev oif`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nexthop {
    pub id: u32,
    pub gateway: Option<Ipv4Addr>,
    pub oif: u32,
    pub protocol: u8,
}

/// The id of the nexthop object through `gw`.
pub fn id_of(gw: Ipv4Addr) -> u32 {
    u32::from(gw)
}

/// nhmsg: family, scope, protocol, reserved, flags.
fn nhmsg(family: u8, protocol: u8) -> [u8; 8] {
    [family, 0, protocol, 0, 0, 0, 0, 0]
}

/// Creates or replaces object `nh` (its protocol marks it as the agent's).
pub fn replace(sock: &mut RtSocket, nh: &Nexthop) -> Result<(), RtError> {
    let mut attrs = Vec::new();
    rtsock::attr(&mut attrs, NHA_ID, &nh.id.to_ne_bytes());
    rtsock::attr(&mut attrs, NHA_OIF, &nh.oif.to_ne_bytes());
    if let Some(gw) = nh.gateway {
        rtsock::attr(&mut attrs, NHA_GATEWAY, &gw.octets());
    }
    let what = format!("add nexthop {} via {:?} dev {}", nh.id, nh.gateway, nh.oif);
    let header = nhmsg(libc::AF_INET as u8, nh.protocol);
    sock.ack(
        RTM_NEWNEXTHOP,
        NLM_F_CREATE | NLM_F_REPLACE,
        &header,
        &attrs,
        &what,
    )
}

/// Deletes object `id`; gone already is fine. Routes through it go with it.
pub fn delete(sock: &mut RtSocket, id: u32) -> Result<(), RtError> {
    let mut attrs = Vec::new();
    rtsock::attr(&mut attrs, NHA_ID, &id.to_ne_bytes());
    let header = nhmsg(libc::AF_INET as u8, 0);
    match sock.ack(
        RTM_DELNEXTHOP,
        0,
        &header,
        &attrs,
        &format!("delete nexthop {id}"),
    ) {
        Err(e) if e.kernel_errno() == Some(libc::ENOENT) => Ok(()),
        r => r,
    }
}

/// Every IPv4 single-gateway object (groups and blackholes are not ours).
pub fn dump(sock: &mut RtSocket) -> Result<Vec<Nexthop>, RtError> {
    let mut out = Vec::new();
    sock.dump(
        RTM_GETNEXTHOP,
        &nhmsg(0, 0),
        "dump nexthops",
        |kind, body| {
            if kind == RTM_NEWNEXTHOP {
                out.extend(parse_nexthop(body));
            }
        },
    )?;
    Ok(out)
}

/// An IPv4 nexthop with one gateway or device; None for groups, blackholes and
/// other families.
fn parse_nexthop(body: &[u8]) -> Option<Nexthop> {
    let (nhmsg, attrs) = (body.get(..8)?, body.get(8..)?);
    if nhmsg[0] != libc::AF_INET as u8 {
        return None;
    }
    let mut nh = Nexthop {
        id: 0,
        gateway: None,
        oif: 0,
        protocol: nhmsg[2],
    };
    for (kind, v) in rtsock::attrs(attrs)? {
        match (kind, v.len()) {
            (NHA_ID, 4) => nh.id = u32::from_ne_bytes(v.try_into().ok()?),
            (NHA_OIF, 4) => nh.oif = u32::from_ne_bytes(v.try_into().ok()?),
            (NHA_GATEWAY, 4) => nh.gateway = Some(Ipv4Addr::new(v[0], v[1], v[2], v[3])),
            _ => {}
        }
    }
    (nh.id != 0 && nh.oif != 0).then_some(nh)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtsock::attr;

    #[test]
    fn a_dumped_object_parses_and_groups_or_garbage_do_not() {
        let mut body = vec![libc::AF_INET as u8, 0, 110, 0, 0, 0, 0, 0];
        attr(&mut body, NHA_ID, &7u32.to_ne_bytes());
        attr(&mut body, NHA_GATEWAY, &[172, 16, 0, 2]);
        attr(&mut body, NHA_OIF, &3u32.to_ne_bytes());
        assert_eq!(
            parse_nexthop(&body),
            Some(Nexthop {
                id: 7,
                gateway: Some(Ipv4Addr::new(172, 16, 0, 2)),
                oif: 3,
                protocol: 110
            })
        );
        // a group: no device
        let mut group = vec![libc::AF_INET as u8, 0, 110, 0, 0, 0, 0, 0];
        attr(&mut group, NHA_ID, &8u32.to_ne_bytes());
        assert_eq!(parse_nexthop(&group), None);
        // an attribute longer than the message
        let mut bad = body.clone();
        bad[8] = 200;
        assert_eq!(parse_nexthop(&bad), None);
        assert_eq!(parse_nexthop(&[1, 2]), None);
    }

    #[test]
    fn the_id_is_the_gateway() {
        assert_eq!(id_of(Ipv4Addr::new(192, 168, 56, 12)), 0xc0a8_380c);
    }
}
