//! Monitor events as people and programs read them: decoded from the ring buffer's
//! bytes, filtered, and printed as one line or one JSON object each.
use std::net::Ipv4Addr;

use netpath_common::{Event, Program, Reason, EVENT_DROP, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};
use serde::Serialize;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("event record of {0} bytes, want {1}")]
    Size(usize, usize),
    #[error("event names unknown program {0}")]
    Program(u8),
    #[error("event names unknown reason {0}")]
    Reason(u8),
}

/// An event with names instead of numbers and a wall-clock time.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Decoded {
    /// RFC 3339, microseconds, UTC.
    pub time: String,
    pub node: String,
    pub kind: &'static str,
    pub program: &'static str,
    pub reason: &'static str,
    pub ifindex: u32,
    pub len: u32,
    pub cpu: u32,
    /// `tcp`, `udp`, `icmp`, `ip-N` or, for a frame that is not IPv4, `ether-0xNNNN`.
    pub proto: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src: Option<Ipv4Addr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst: Option<Ipv4Addr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sport: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dport: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_code: Option<u8>,
}

/// The raw record from the ring buffer.
pub fn parse(bytes: &[u8]) -> Result<Event, DecodeError> {
    let want = std::mem::size_of::<Event>();
    if bytes.len() < want {
        return Err(DecodeError::Size(bytes.len(), want));
    }
    // SAFETY: `Event` is plain `#[repr(C)]` data valid for any bytes, and the slice
    // holds at least its size; the read copes with any alignment.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Event>()) })
}

/// `wall_offset_ns`: CLOCK_REALTIME minus CLOCK_MONOTONIC, to place the kernel's
/// monotonic timestamps on the calendar.
pub fn decode(ev: &Event, node: &str, wall_offset_ns: i128) -> Result<Decoded, DecodeError> {
    let program = Program::from_u8(ev.program).ok_or(DecodeError::Program(ev.program))?;
    let reason = Reason::from_u8(ev.reason).ok_or(DecodeError::Reason(ev.reason))?;
    let ipv4 = u16::from_be_bytes(ev.ether_type) == 0x0800;
    let (proto, ports, icmp) = match (ipv4, ev.proto) {
        (false, _) => (
            format!("ether-0x{:04x}", u16::from_be_bytes(ev.ether_type)),
            false,
            false,
        ),
        (true, IPPROTO_TCP) => ("tcp".to_string(), true, false),
        (true, IPPROTO_UDP) => ("udp".to_string(), true, false),
        (true, IPPROTO_ICMP) => ("icmp".to_string(), false, true),
        (true, p) => (format!("ip-{p}"), false, false),
    };
    Ok(Decoded {
        time: rfc3339_micros(ev.time_ns as i128 + wall_offset_ns),
        node: node.to_string(),
        kind: if ev.kind == EVENT_DROP {
            "drop"
        } else {
            "trace"
        },
        program: program.name(),
        reason: reason.name(),
        ifindex: ev.ifindex,
        len: ev.len,
        cpu: ev.cpu,
        proto,
        src: ipv4.then(|| Ipv4Addr::from(ev.src)),
        dst: ipv4.then(|| Ipv4Addr::from(ev.dst)),
        sport: ports.then(|| u16::from_be_bytes(ev.sport)),
        dport: ports.then(|| u16::from_be_bytes(ev.dport)),
        icmp_type: icmp.then_some(ev.sport[0]),
        icmp_code: icmp.then_some(ev.sport[1]),
    })
}

/// What the user asked to see.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub reason: Option<Reason>,
    /// Source or destination.
    pub ip: Option<Ipv4Addr>,
}

impl Filter {
    pub fn matches(&self, ev: &Event) -> bool {
        if self.reason.is_some_and(|r| r as u8 != ev.reason) {
            return false;
        }
        match self.ip {
            Some(ip) => ev.src == ip.octets() || ev.dst == ip.octets(),
            None => true,
        }
    }
}

/// A reason by the name `netpath status` prints, or an error listing them all.
pub fn reason_named(name: &str) -> Result<Reason, String> {
    Reason::ALL
        .into_iter()
        .find(|r| r.name() == name)
        .ok_or_else(|| {
            let names: Vec<&str> = Reason::ALL.iter().map(|r| r.name()).collect();
            format!("unknown reason {name:?}; one of: {}", names.join(", "))
        })
}

/// One line: time, node, program, reason, then the packet.
pub fn line(d: &Decoded) -> String {
    let clock = d.time.get(11..26).unwrap_or(&d.time);
    let what = match (d.src, d.dst) {
        (Some(s), Some(t)) => match (d.sport, d.dport, d.icmp_type) {
            (Some(sp), Some(dp), _) => format!("{} {s}:{sp} -> {t}:{dp}", d.proto),
            (_, _, Some(ty)) => format!(
                "icmp {s} -> {t} type {ty} code {}",
                d.icmp_code.unwrap_or(0)
            ),
            _ => format!("{} {s} -> {t}", d.proto),
        },
        _ => d.proto.clone(),
    };
    format!(
        "{clock} {} {:<5} {:<13} {:<22} if {:<4} {what} len {}",
        d.node, d.kind, d.program, d.reason, d.ifindex, d.len
    )
}

/// Nanoseconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
fn rfc3339_micros(ns: i128) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let micros = ns.rem_euclid(1_000_000_000) / 1000;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spoofed() -> Event {
        Event {
            time_ns: 5_000_000_123,
            program: Program::FromPod as u8,
            reason: Reason::DropSpoofed as u8,
            kind: EVENT_DROP,
            proto: IPPROTO_TCP,
            ifindex: 7,
            src: [10, 244, 9, 9],
            dst: [10, 244, 2, 2],
            sport: 40000u16.to_be_bytes(),
            dport: 80u16.to_be_bytes(),
            len: 74,
            ether_type: [0x08, 0x00],
            _pad: [0; 2],
            cpu: 1,
        }
    }

    #[test]
    fn a_drop_decodes_with_names_tuple_and_calendar_time() {
        // 2026-12-02T03:00:00Z is 1_796_180_400 s after the epoch.
        let offset = 1_796_180_400i128 * 1_000_000_000 - 5_000_000_000;
        let d = decode(&spoofed(), "node1", offset).unwrap();
        assert_eq!(d.time, "2026-12-02T03:00:00.000000Z");
        assert_eq!(
            (d.kind, d.program, d.reason),
            ("drop", "from-pod", "drop-spoofed")
        );
        assert_eq!(d.src, Some(Ipv4Addr::new(10, 244, 9, 9)));
        assert_eq!((d.sport, d.dport), (Some(40000), Some(80)));
        let l = line(&d);
        assert!(l.starts_with("03:00:00.000000 node1 drop"), "{l}");
        assert!(
            l.contains("tcp 10.244.9.9:40000 -> 10.244.2.2:80 len 74"),
            "{l}"
        );
        let j = serde_json::to_value(&d).unwrap();
        assert_eq!(j["reason"], "drop-spoofed");
        assert!(j.get("icmp_type").is_none());
    }

    #[test]
    fn icmp_and_non_ip_frames_say_what_they_are() {
        let mut ev = spoofed();
        ev.proto = IPPROTO_ICMP;
        ev.sport = [8, 0];
        let d = decode(&ev, "n", 0).unwrap();
        assert_eq!((d.icmp_type, d.sport), (Some(8), None));
        assert!(line(&d).contains("icmp 10.244.9.9 -> 10.244.2.2 type 8 code 0"));
        ev.ether_type = [0x86, 0xdd];
        let d = decode(&ev, "n", 0).unwrap();
        assert_eq!((d.proto.as_str(), d.src), ("ether-0x86dd", None));
    }

    #[test]
    fn bad_records_are_errors_not_panics() {
        assert_eq!(parse(&[0; 8]).unwrap_err(), DecodeError::Size(8, 40));
        let mut ev = spoofed();
        ev.reason = 250;
        assert_eq!(decode(&ev, "n", 0).unwrap_err(), DecodeError::Reason(250));
        ev.reason = 0;
        ev.program = 99;
        assert_eq!(decode(&ev, "n", 0).unwrap_err(), DecodeError::Program(99));
    }

    #[test]
    fn filters_by_reason_and_either_address() {
        let ev = spoofed();
        let by_reason = |r| Filter {
            reason: Some(r),
            ip: None,
        };
        assert!(by_reason(Reason::DropSpoofed).matches(&ev));
        assert!(!by_reason(Reason::DropNoRoute).matches(&ev));
        let by_ip = |ip| Filter {
            reason: None,
            ip: Some(ip),
        };
        assert!(by_ip(Ipv4Addr::new(10, 244, 2, 2)).matches(&ev));
        assert!(!by_ip(Ipv4Addr::new(10, 244, 2, 3)).matches(&ev));
        assert_eq!(reason_named("drop-no-route"), Ok(Reason::DropNoRoute));
        assert!(reason_named("nope").unwrap_err().contains("drop-spoofed"));
    }
}
