//! A persistent TUN device (`IFF_TUN | IFF_NO_PI`): it stays when the process that
//! serves it dies, so a restarted device finds the same interface and ifindex and
//! nothing in the programs' maps changes.
use std::{fs::File, os::fd::AsRawFd};

use super::WireguardError;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Opens (creating if need be) the TUN device `name`, made persistent.
pub fn open(name: &str) -> Result<File, WireguardError> {
    let err = |why: String| WireguardError::Tun {
        name: name.to_string(),
        why,
    };
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(err("not a valid interface name".into()));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(|e| err(format!("/dev/net/tun: {e}")))?;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: IFF_TUN | IFF_NO_PI,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads and writes one `ifreq`, which `req` is laid out as.
    if unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut req) } < 0 {
        return Err(err(format!(
            "TUNSETIFF: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: TUNSETPERSIST takes an integer argument.
    if unsafe { libc::ioctl(file.as_raw_fd(), TUNSETPERSIST, 1 as libc::c_ulong) } < 0 {
        return Err(err(format!(
            "TUNSETPERSIST: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(file)
}
