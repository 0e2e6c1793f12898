//! The gossip datagrams on the wire: a magic byte, a kind, the sender's clock and
//! the payload; with a cluster key, an HMAC-SHA-256 tag over all of that. A
//! datagram without a valid tag, or sent outside the replay window, is dropped and
//! counted before any of it is parsed.
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Marks netpath's gossip ("N"), so a stray datagram is told apart cheaply.
const MAGIC: u8 = 0x4e;
/// Magic, kind, send time in Unix milliseconds.
pub const HEADER: usize = 1 + 1 + 8;
pub const TAG: usize = 32;
/// How far a keyed datagram's send time may be from the receiver's clock: a
/// captured datagram replayed later is refused (nodes' clocks must agree within it).
pub const REPLAY_WINDOW_MS: u64 = 30_000;

/// What a datagram carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Membership: foca's own messages.
    Membership = 0,
    /// "Send me your cluster settings": a joining node comparing its own.
    SettingsAsk = 1,
    /// The cluster settings (JSON), in answer.
    Settings = 2,
    /// "Send me every member you know": a joining node, or anti-entropy.
    MembersAsk = 3,
    /// A share of the members the sender knows (SWIM spreads only news, so a node
    /// that joins a quiet cluster would otherwise learn it slowly).
    Members = 4,
}

impl Kind {
    fn of(b: u8) -> Option<Self> {
        match b {
            0 => Some(Self::Membership),
            1 => Some(Self::SettingsAsk),
            2 => Some(Self::Settings),
            3 => Some(Self::MembersAsk),
            4 => Some(Self::Members),
            _ => None,
        }
    }
}

/// Why a datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Dropped {
    #[error("shorter than a gossip header")]
    Short,
    #[error("not a netpath gossip datagram")]
    Foreign,
    #[error("unknown kind {0}")]
    Kind(u8),
    #[error("no valid tag for the cluster key")]
    Tag,
    #[error("sent outside the replay window ({0} ms off this node's clock)")]
    Stale(i64),
}

/// Seals and opens datagrams, with or without the cluster key.
#[derive(Clone)]
pub struct Wire {
    key: Option<Hmac<Sha256>>,
}

impl Wire {
    pub fn new(key: Option<&[u8]>) -> Self {
        Self {
            // HMAC takes a key of any length.
            key: key.map(|k| Hmac::<Sha256>::new_from_slice(k).expect("any key length")),
        }
    }

    /// Bytes a datagram adds to its payload.
    pub fn overhead(&self) -> usize {
        HEADER + if self.key.is_some() { TAG } else { 0 }
    }

    pub fn seal(&self, kind: Kind, now_ms: u64, payload: &[u8]) -> Vec<u8> {
        let mut d = Vec::with_capacity(self.overhead() + payload.len());
        d.push(MAGIC);
        d.push(kind as u8);
        d.extend_from_slice(&now_ms.to_be_bytes());
        d.extend_from_slice(payload);
        if let Some(k) = &self.key {
            let mut m = k.clone();
            m.update(&d);
            d.extend_from_slice(&m.finalize().into_bytes());
        }
        d
    }

    /// The kind and payload of an authentic datagram.
    pub fn open<'a>(&self, d: &'a [u8], now_ms: u64) -> Result<(Kind, &'a [u8]), Dropped> {
        let body = match &self.key {
            Some(k) => {
                let at = d.len().checked_sub(TAG).ok_or(Dropped::Short)?;
                let (body, tag) = d.split_at(at);
                let mut m = k.clone();
                m.update(body);
                m.verify_slice(tag).map_err(|_| Dropped::Tag)?;
                body
            }
            None => d,
        };
        if body.len() < HEADER {
            return Err(Dropped::Short);
        }
        if body[0] != MAGIC {
            return Err(Dropped::Foreign);
        }
        let kind = Kind::of(body[1]).ok_or(Dropped::Kind(body[1]))?;
        if self.key.is_some() {
            let sent = u64::from_be_bytes(body[2..HEADER].try_into().expect("8 bytes"));
            let off = sent as i64 - now_ms as i64;
            if off.unsigned_abs() > REPLAY_WINDOW_MS {
                return Err(Dropped::Stale(off));
            }
        }
        Ok((kind, &body[HEADER..]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    #[test]
    fn a_sealed_datagram_opens_with_the_same_key_only() {
        let w = Wire::new(Some(b"cluster secret"));
        let d = w.seal(Kind::Membership, NOW, b"hello");
        assert_eq!(d.len(), w.overhead() + 5);
        assert_eq!(w.open(&d, NOW + 5), Ok((Kind::Membership, &b"hello"[..])));
        let other = Wire::new(Some(b"another secret"));
        assert_eq!(other.open(&d, NOW), Err(Dropped::Tag));
        // A keyless node's datagrams carry no tag: a keyed node refuses them.
        let open = Wire::new(None);
        let plain = open.seal(Kind::Membership, NOW, &[7; 64]);
        assert_eq!(w.open(&plain, NOW), Err(Dropped::Tag));
    }

    #[test]
    fn any_changed_byte_breaks_the_tag() {
        let w = Wire::new(Some(b"k"));
        let d = w.seal(Kind::Settings, NOW, b"{\"vni\":1}");
        for i in 0..d.len() {
            let mut bad = d.clone();
            bad[i] ^= 0x01;
            assert_eq!(w.open(&bad, NOW), Err(Dropped::Tag), "byte {i}");
        }
    }

    #[test]
    fn replays_outside_the_window_are_refused() {
        let w = Wire::new(Some(b"k"));
        let d = w.seal(Kind::Membership, NOW, b"x");
        assert!(w.open(&d, NOW + REPLAY_WINDOW_MS).is_ok());
        assert_eq!(
            w.open(&d, NOW + REPLAY_WINDOW_MS + 1),
            Err(Dropped::Stale(-(REPLAY_WINDOW_MS as i64) - 1))
        );
    }

    #[test]
    fn garbage_is_dropped_with_its_reason() {
        let w = Wire::new(None);
        assert_eq!(w.open(b"", NOW), Err(Dropped::Short));
        assert_eq!(w.open(&[0u8; 40], NOW), Err(Dropped::Foreign));
        let mut d = w.seal(Kind::Membership, NOW, b"");
        d[1] = 9;
        assert_eq!(w.open(&d, NOW), Err(Dropped::Kind(9)));
        let keyed = Wire::new(Some(b"k"));
        assert_eq!(keyed.open(&[MAGIC; 12], NOW), Err(Dropped::Short));
    }
}
