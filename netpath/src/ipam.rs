//! Pod address allocation for one node, persisted in `<state dir>/ipam.json` and
//! shared by every plugin process on the node through an exclusive `flock` on
//! `ipam.lock`.
//!
//! Crash safety comes from the order of writes, not from recovery code: a change is
//! written to a temporary file, synced and renamed over the book, so a process
//! killed at any instant leaves the old book or the new one; the lock dies with its
//! holder. An allocation is committed before the pod is wired, so the worst a crash
//! leaves is an address held for an attachment that ADD (same id → same address)
//! or GC (id not valid → freed) settles.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs::File,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::net::Ipv4Net;

/// The address book's file in a node's state directory.
pub const BOOK: &str = "ipam.json";
const LOCK: &str = "ipam.lock";

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("pod CIDR {0} has no free address ({1} in use)")]
    Exhausted(Ipv4Net, usize),
    #[error("pod CIDR {0} is too small for pods (needs at least a /30)")]
    TooSmall(Ipv4Net),
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path} is not a valid address book ({cause}); refusing to overwrite it")]
    Corrupt {
        path: PathBuf,
        cause: serde_json::Error,
    },
}

type Result<T, E = IpamError> = std::result::Result<T, E>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IpamError + '_ {
    move |cause| IpamError::Io {
        path: path.to_path_buf(),
        cause,
    }
}

/// What an address is held for: CNI's (container id, interface name) key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AttachmentId {
    pub container_id: String,
    pub ifname: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    #[serde(flatten)]
    pub id: AttachmentId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    /// The container's netns path at ADD, for operators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
}

/// The node's allocations. Pure data: the file handling is in [`Store`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Book {
    /// The last address handed out; the next search starts after it, so a freed
    /// address is reused only after every other free one (a late packet for a
    /// deleted pod does not reach the next pod).
    #[serde(default)]
    pub last: Option<Ipv4Addr>,
    /// The pin directory of the datapath the pods were wired into (DEL needs it
    /// even when the agent is gone).
    #[serde(default)]
    pub pin_dir: Option<PathBuf>,
    #[serde(default)]
    pub allocations: BTreeMap<Ipv4Addr, Allocation>,
}

/// The addresses pods may get: all but the network address, the first host (the
/// conventional gateway, kept free so a bridge-style gateway never collides) and
/// the broadcast address.
fn pool(cidr: Ipv4Net) -> Result<(u32, u32)> {
    if cidr.prefix > 30 {
        return Err(IpamError::TooSmall(cidr));
    }
    let net = u32::from(cidr.network());
    Ok((net + 2, net + cidr.size() as u32 - 2))
}

impl Book {
    pub fn find(&self, id: &AttachmentId) -> Option<Ipv4Addr> {
        self.allocations
            .iter()
            .find(|(_, a)| &a.id == id)
            .map(|(ip, _)| *ip)
    }

    /// The address for `alloc.id`: the one it already holds, or the next free one
    /// after the last handed out. Returns whether it is new.
    pub fn allocate(&mut self, cidr: Ipv4Net, alloc: Allocation) -> Result<(Ipv4Addr, bool)> {
        if let Some(ip) = self.find(&alloc.id) {
            return Ok((ip, false));
        }
        let (first, last) = pool(cidr)?;
        let start = self
            .last
            .map(u32::from)
            .filter(|l| (first..=last).contains(l))
            .map_or(first, |l| if l == last { first } else { l + 1 });
        let span = last - first + 1;
        for k in 0..span {
            let ip = Ipv4Addr::from(first + (start - first + k) % span);
            if let std::collections::btree_map::Entry::Vacant(free) = self.allocations.entry(ip) {
                free.insert(alloc);
                self.last = Some(ip);
                return Ok((ip, true));
            }
        }
        Err(IpamError::Exhausted(cidr, self.allocations.len()))
    }

    pub fn release(&mut self, id: &AttachmentId) -> Option<(Ipv4Addr, Allocation)> {
        let ip = self.find(id)?;
        self.allocations.remove(&ip).map(|a| (ip, a))
    }

    /// Frees every allocation whose attachment is not in `valid`; returns them.
    pub fn retain_valid(&mut self, valid: &BTreeSet<AttachmentId>) -> Vec<(Ipv4Addr, Allocation)> {
        let gone: Vec<Ipv4Addr> = self
            .allocations
            .iter()
            .filter(|(_, a)| !valid.contains(&a.id))
            .map(|(ip, _)| *ip)
            .collect();
        gone.into_iter()
            .filter_map(|ip| self.allocations.remove(&ip).map(|a| (ip, a)))
            .collect()
    }
}

/// A node's address book on disk, locked for as long as this value lives.
pub struct Store {
    dir: PathBuf,
    _lock: File,
    pub book: Book,
}

impl Store {
    /// Locks the book in `dir` (waiting for other holders) and reads it; a missing
    /// book is empty, a damaged one is an error (never silently reset: that would
    /// hand out addresses that are in use).
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let lock_path = dir.join(LOCK);
        let lock = crate::files::lock_exclusive(&lock_path, true)
            .map_err(io(&lock_path))?
            .expect("a waiting lock is always taken");
        Ok(Self {
            dir: dir.to_path_buf(),
            _lock: lock,
            book: Self::read(dir)?,
        })
    }

    /// The book as last committed, without the lock: for readers only (a commit is
    /// a rename, so a reader sees one whole version), never to allocate from.
    pub fn read(dir: &Path) -> Result<Book> {
        let path = dir.join(BOOK);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|cause| IpamError::Corrupt { path, cause }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Book::default()),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Whether `dir` holds a book at all (without locking or creating anything).
    pub fn exists(dir: &Path) -> bool {
        dir.join(BOOK).exists()
    }

    /// Writes the book: temporary file, fsync, rename, fsync of the directory.
    pub fn commit(&self) -> Result<()> {
        let path = self.dir.join(BOOK);
        let text = serde_json::to_vec_pretty(&self.book).expect("the book serializes");
        crate::files::write_atomic(&path, &text, true).map_err(io(&path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(c: &str) -> AttachmentId {
        AttachmentId {
            container_id: c.into(),
            ifname: "eth0".into(),
        }
    }

    fn alloc(c: &str) -> Allocation {
        Allocation {
            id: id(c),
            pod_namespace: None,
            pod_name: None,
            netns: None,
        }
    }

    fn cidr(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn never_hands_out_network_gateway_or_broadcast_and_exhausts_cleanly() {
        let net = cidr("10.1.0.16/28");
        let mut b = Book::default();
        let mut got = BTreeSet::new();
        for n in 0..13 {
            let (ip, new) = b.allocate(net, alloc(&format!("c{n}"))).unwrap();
            assert!(new);
            assert!(got.insert(ip), "{ip} twice");
        }
        for bad in [16, 17, 31] {
            assert!(!got.contains(&Ipv4Addr::new(10, 1, 0, bad)), "{bad}");
        }
        assert_eq!(got.len(), 13);
        match b.allocate(net, alloc("one-more")) {
            Err(IpamError::Exhausted(n, 13)) => assert_eq!(n, net),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            b.allocate(cidr("10.1.0.0/31"), alloc("x")),
            Err(IpamError::TooSmall(_))
        ));
    }

    #[test]
    fn same_attachment_same_address_and_freed_addresses_come_back_last() {
        let net = cidr("10.1.0.0/29"); // .2 .. .6
        let mut b = Book::default();
        let (a, _) = b.allocate(net, alloc("a")).unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 1, 0, 2));
        assert_eq!(b.allocate(net, alloc("a")).unwrap(), (a, false));
        let (bb, _) = b.allocate(net, alloc("b")).unwrap();
        assert_eq!(b.release(&id("a")).map(|(ip, _)| ip), Some(a));
        assert_eq!(b.release(&id("a")), None);
        // a's address is free again but comes back only after .4 .. .6.
        let order: Vec<_> = ["c", "d", "e", "f"]
            .iter()
            .map(|c| b.allocate(net, alloc(c)).unwrap().0.octets()[3])
            .collect();
        assert_eq!(order, [4, 5, 6, 2]);
        assert_ne!(bb, a);
    }

    #[test]
    fn gc_frees_exactly_what_is_not_valid() {
        let net = cidr("10.1.0.0/24");
        let mut b = Book::default();
        for c in ["a", "b", "c"] {
            b.allocate(net, alloc(c)).unwrap();
        }
        let valid: BTreeSet<_> = [id("b"), id("zzz")].into();
        let mut freed: Vec<_> = b
            .retain_valid(&valid)
            .into_iter()
            .map(|(_, a)| a.id.container_id)
            .collect();
        freed.sort();
        assert_eq!(freed, ["a", "c"]);
        assert!(b.find(&id("b")).is_some());
        assert!(b.retain_valid(&BTreeSet::new()).len() == 1);
        assert!(b.allocations.is_empty());
    }

    #[test]
    fn store_round_trips_and_refuses_a_damaged_book() {
        let dir = std::env::temp_dir().join(format!("netpath-ipam-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let mut s = Store::open(&dir).unwrap();
            s.book.allocate(cidr("10.9.0.0/24"), alloc("a")).unwrap();
            s.commit().unwrap();
        }
        let s = Store::open(&dir).unwrap();
        assert_eq!(s.book.find(&id("a")), Some(Ipv4Addr::new(10, 9, 0, 2)));
        drop(s);
        std::fs::write(dir.join(BOOK), b"{\"allocations\": [").unwrap();
        let err = Store::open(&dir).err().expect("damaged book refused");
        assert!(err.to_string().contains("refusing"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
