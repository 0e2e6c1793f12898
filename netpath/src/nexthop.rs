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
use std::{io, net::Ipv4Addr, os::fd::AsRawFd, os::fd::FromRawFd, os::fd::OwnedFd};

const RTM_NEWNEXTHOP: u16 = 104;
const RTM_DELNEXTHOP: u16 = 105;
const RTM_GETNEXTHOP: u16 = 106;
const NHA_ID: u16 = 1;
const NHA_OIF: u16 = 5;
const NHA_GATEWAY: u16 = 6;

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_CREATE: u16 = 0x400;

/// Header (16) + nhmsg (8).
const HEADER: usize = 24;

#[derive(Debug, thiserror::Error)]
pub enum NexthopError {
    #[error("open rtnetlink socket for nexthops: {0}")]
    Open(io::Error),
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    #[error("{what}: the kernel answered: {source}")]
    Kernel { what: String, source: io::Error },
    #[error("{what}: malformed answer from the kernel")]
    Malformed { what: String },
}

type Result<T, E = NexthopError> = std::result::Result<T, E>;

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

/// A blocking rtnetlink socket for nexthop requests: the kernel handles each one
/// inside `send`, so a call costs a system call pair, nothing to wait for.
pub struct NexthopSocket {
    fd: OwnedFd,
    seq: u32,
}

impl NexthopSocket {
    /// A socket in the calling thread's network namespace.
    pub fn open() -> Result<Self> {
        // SAFETY: plain socket(2); the descriptor is owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(NexthopError::Open(io::Error::last_os_error()));
        }
        // SAFETY: fd was just returned by socket(2) and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { fd, seq: 0 })
    }

    /// Creates or replaces object `nh` (its protocol marks it as the agent's).
    pub fn replace(&mut self, nh: &Nexthop) -> Result<()> {
        let mut attrs = Vec::new();
        attr(&mut attrs, NHA_ID, &nh.id.to_ne_bytes());
        attr(&mut attrs, NHA_OIF, &nh.oif.to_ne_bytes());
        if let Some(gw) = nh.gateway {
            attr(&mut attrs, NHA_GATEWAY, &gw.octets());
        }
        let what = format!("add nexthop {} via {:?} dev {}", nh.id, nh.gateway, nh.oif);
        self.ack(
            RTM_NEWNEXTHOP,
            NLM_F_CREATE | NLM_F_REPLACE,
            nh.protocol,
            &attrs,
            &what,
        )
    }

    /// Deletes object `id`; gone already is fine. Routes through it go with it.
    pub fn delete(&mut self, id: u32) -> Result<()> {
        let mut attrs = Vec::new();
        attr(&mut attrs, NHA_ID, &id.to_ne_bytes());
        match self.ack(
            RTM_DELNEXTHOP,
            0,
            0,
            &attrs,
            &format!("delete nexthop {id}"),
        ) {
            Err(NexthopError::Kernel { source, .. })
                if source.raw_os_error() == Some(libc::ENOENT) =>
            {
                Ok(())
            }
            r => r,
        }
    }

    /// Every IPv4 single-gateway object (groups and blackholes are not ours).
    pub fn dump(&mut self) -> Result<Vec<Nexthop>> {
        let what = "dump nexthops";
        let seq = self.send(RTM_GETNEXTHOP, NLM_F_DUMP, 0, &[], what)?;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = self.recv(&mut buf, what)?;
            for (kind, mseq, body) in messages(&buf[..n], what)? {
                if mseq != seq {
                    continue;
                }
                match kind {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        check_error(body, what)?;
                        return Ok(out);
                    }
                    RTM_NEWNEXTHOP => out.extend(parse_nexthop(body)),
                    _ => {}
                }
            }
        }
    }

    fn ack(&mut self, kind: u16, flags: u16, protocol: u8, attrs: &[u8], what: &str) -> Result<()> {
        let seq = self.send(kind, flags | NLM_F_ACK, protocol, attrs, what)?;
        let mut buf = vec![0u8; 8192];
        loop {
            let n = self.recv(&mut buf, what)?;
            for (kind, mseq, body) in messages(&buf[..n], what)? {
                if mseq == seq && kind == NLMSG_ERROR {
                    return check_error(body, what);
                }
            }
        }
    }

    fn send(
        &mut self,
        kind: u16,
        flags: u16,
        protocol: u8,
        attrs: &[u8],
        what: &str,
    ) -> Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let len = HEADER + attrs.len();
        let mut m = Vec::with_capacity(len);
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        m.extend_from_slice(&self.seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel fills it in
                                                  // nhmsg: family, scope, protocol, reserved, flags
        let family = if kind == RTM_GETNEXTHOP {
            0
        } else {
            libc::AF_INET as u8
        };
        m.extend_from_slice(&[family, 0, protocol, 0]);
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(attrs);
        // SAFETY: m is a valid buffer of m.len() bytes for the call's duration.
        let sent = unsafe { libc::send(self.fd.as_raw_fd(), m.as_ptr().cast(), m.len(), 0) };
        if sent < 0 {
            return Err(NexthopError::Io {
                what: what.into(),
                source: io::Error::last_os_error(),
            });
        }
        Ok(self.seq)
    }

    fn recv(&self, buf: &mut [u8], what: &str) -> Result<usize> {
        loop {
            // SAFETY: buf is valid for buf.len() writable bytes.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(NexthopError::Io {
                    what: what.into(),
                    source: e,
                });
            }
        }
    }
}

fn align(n: usize) -> usize {
    (n + 3) & !3
}

fn attr(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    out.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(align(out.len()), 0);
}

/// The netlink messages in one datagram: (type, seq, body after the header).
fn messages<'a>(mut buf: &'a [u8], what: &str) -> Result<Vec<(u16, u32, &'a [u8])>> {
    let mut out = Vec::new();
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
        if len < 16 || len > buf.len() {
            return Err(NexthopError::Malformed { what: what.into() });
        }
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        let seq = u32::from_ne_bytes(buf[8..12].try_into().expect("4 bytes"));
        out.push((kind, seq, &buf[16..len]));
        buf = &buf[align(len).min(buf.len())..];
    }
    Ok(out)
}

/// An NLMSG_ERROR body: 0 is the ack, anything else the request's failure.
fn check_error(body: &[u8], what: &str) -> Result<()> {
    let code = body
        .get(0..4)
        .map(|b| i32::from_ne_bytes(b.try_into().expect("4 bytes")))
        .ok_or_else(|| NexthopError::Malformed { what: what.into() })?;
    if code == 0 {
        return Ok(());
    }
    Err(NexthopError::Kernel {
        what: what.into(),
        source: io::Error::from_raw_os_error(-code),
    })
}

/// An IPv4 nexthop with one gateway or device; None for groups, blackholes and
/// other families.
fn parse_nexthop(body: &[u8]) -> Option<Nexthop> {
    let (nhmsg, mut attrs) = (body.get(..8)?, body.get(8..)?);
    if nhmsg[0] != libc::AF_INET as u8 {
        return None;
    }
    let mut nh = Nexthop {
        id: 0,
        gateway: None,
        oif: 0,
        protocol: nhmsg[2],
    };
    while attrs.len() >= 4 {
        let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]) & 0x3fff;
        if len < 4 || len > attrs.len() {
            return None;
        }
        let v = &attrs[4..len];
        match (kind, v.len()) {
            (NHA_ID, 4) => nh.id = u32::from_ne_bytes(v.try_into().ok()?),
            (NHA_OIF, 4) => nh.oif = u32::from_ne_bytes(v.try_into().ok()?),
            (NHA_GATEWAY, 4) => nh.gateway = Some(Ipv4Addr::new(v[0], v[1], v[2], v[3])),
            _ => {}
        }
        attrs = &attrs[align(len).min(attrs.len())..];
    }
    (nh.id != 0 && nh.oif != 0).then_some(nh)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(messages(&[20, 0, 0, 0, 1, 2], "t").unwrap().is_empty());
        assert!(messages(&[200, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], "t").is_err());
    }

    #[test]
    fn the_id_is_the_gateway() {
        assert_eq!(id_of(Ipv4Addr::new(192, 168, 56, 12)), 0xc0a8_380c);
    }
}
