//! A blocking rtnetlink socket spoken raw: for what the rtnetlink crate lacks
//! (nexthop objects) and for dumps too big to buffer (its connection task queues a
//! whole dump's parsed messages before the caller reads the first: ~400 bytes per
//! route, 40 MB for 100 000). The kernel handles a request inside `send`, so a call
//! costs a system call pair; a dump is read 64 KiB at a time and handed on message
//! by message.
use std::{io, os::fd::AsRawFd, os::fd::FromRawFd, os::fd::OwnedFd};

pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;

#[derive(Debug, thiserror::Error)]
pub enum RtError {
    #[error("open rtnetlink socket: {0}")]
    Open(io::Error),
    #[error("{what}: {cause}")]
    Io { what: String, cause: io::Error },
    #[error("{what}: the kernel answered: {cause}")]
    Kernel { what: String, cause: io::Error },
    #[error("{what}: malformed answer from the kernel")]
    Malformed { what: String },
}

impl RtError {
    /// The errno the kernel refused a request with.
    pub fn kernel_errno(&self) -> Option<i32> {
        match self {
            RtError::Kernel { cause, .. } => cause.raw_os_error(),
            _ => None,
        }
    }
}

pub type Result<T, E = RtError> = std::result::Result<T, E>;

pub struct RtSocket {
    fd: OwnedFd,
    seq: u32,
}

impl RtSocket {
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
            return Err(RtError::Open(io::Error::last_os_error()));
        }
        // SAFETY: fd was just returned by socket(2) and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { fd, seq: 0 })
    }

    /// Sends request `kind` (its family header, then attributes) and waits for the
    /// kernel's acknowledgement.
    pub fn ack(
        &mut self,
        kind: u16,
        flags: u16,
        header: &[u8],
        attrs: &[u8],
        what: &str,
    ) -> Result<()> {
        let seq = self.send(kind, flags | NLM_F_ACK, header, attrs, what)?;
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

    /// Dumps `kind`, handing each answer's (type, body) to `each` as it is read.
    pub fn dump(
        &mut self,
        kind: u16,
        header: &[u8],
        what: &str,
        mut each: impl FnMut(u16, &[u8]),
    ) -> Result<()> {
        let seq = self.send(kind, NLM_F_DUMP, header, &[], what)?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = self.recv(&mut buf, what)?;
            for (kind, mseq, body) in messages(&buf[..n], what)? {
                if mseq != seq {
                    continue;
                }
                match kind {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => return check_error(body, what),
                    _ => each(kind, body),
                }
            }
        }
    }

    fn send(
        &mut self,
        kind: u16,
        flags: u16,
        header: &[u8],
        attrs: &[u8],
        what: &str,
    ) -> Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let len = 16 + header.len() + attrs.len();
        let mut m = Vec::with_capacity(len);
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        m.extend_from_slice(&self.seq.to_ne_bytes());
        // pid: the kernel fills it in
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(header);
        m.extend_from_slice(attrs);
        // SAFETY: m is a valid buffer of m.len() bytes for the call's duration.
        let sent = unsafe { libc::send(self.fd.as_raw_fd(), m.as_ptr().cast(), m.len(), 0) };
        if sent < 0 {
            return Err(RtError::Io {
                what: what.into(),
                cause: io::Error::last_os_error(),
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
                return Err(RtError::Io {
                    what: what.into(),
                    cause: e,
                });
            }
        }
    }
}

pub fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// Appends attribute `kind` with `value`, padded.
pub fn attr(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    out.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(align(out.len()), 0);
}

/// The attributes in `buf` as (kind without flags, value); None if one is cut.
pub fn attrs(mut buf: &[u8]) -> Option<Vec<(u16, &[u8])>> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & 0x3fff;
        if len < 4 || len > buf.len() {
            return None;
        }
        out.push((kind, &buf[4..len]));
        buf = &buf[align(len).min(buf.len())..];
    }
    Some(out)
}

/// The netlink messages in one datagram: (type, seq, body after the header).
fn messages<'a>(mut buf: &'a [u8], what: &str) -> Result<Vec<(u16, u32, &'a [u8])>> {
    let mut out = Vec::new();
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
        if len < 16 || len > buf.len() {
            return Err(RtError::Malformed { what: what.into() });
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
        .ok_or_else(|| RtError::Malformed { what: what.into() })?;
    if code == 0 {
        return Ok(());
    }
    Err(RtError::Kernel {
        what: what.into(),
        cause: io::Error::from_raw_os_error(-code),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_messages_and_attributes_are_refused() {
        assert!(messages(&[20, 0, 0, 0, 1, 2], "t").unwrap().is_empty());
        assert!(messages(&[200, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], "t").is_err());
        let mut a = Vec::new();
        attr(&mut a, 7, &[1, 2, 3]);
        attr(&mut a, 8, &[]);
        assert_eq!(attrs(&a), Some(vec![(7, &[1u8, 2, 3][..]), (8, &[][..])]));
        a[0] = 200;
        assert_eq!(attrs(&a), None);
    }
}
