//! The handles on one node's pinned maps, one per entry of
//! `netpath_common::for_each_map!`: the table gives each its name and types, and the
//! opening and the fill report follow from it.
use std::path::Path;

use anyhow::{Context, Result};
use aya::maps::{lpm_trie::LpmTrie, Array, HashMap, Map, MapData, PerCpuArray};

/// One map's fill: entries in use (None for the ring buffer, whose capacity is in
/// bytes) against the most it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Fill {
    pub name: &'static str,
    pub entries: Option<usize>,
    pub capacity: u32,
}

/// A handle on a pinned map of one kind.
trait Handle: Sized {
    fn open(dir: &Path, name: &str) -> Result<Self>;
    /// Entries in use: hash maps and tries are walked key by key (a scrape of a
    /// 100 000-route node walks 100 000 keys); arrays are always full.
    fn entries(&self) -> Option<usize>;
}

fn open_data(dir: &Path, name: &str) -> Result<MapData> {
    let path = dir.join(name);
    MapData::from_pin(&path).with_context(|| {
        format!(
            "open pinned map {} (is the agent running for this node?)",
            path.display()
        )
    })
}

fn open_map(dir: &Path, name: &str) -> Result<Map> {
    Map::from_map_data(open_data(dir, name)?)
        .with_context(|| format!("map {}", dir.join(name).display()))
}

impl<K: aya::Pod, V: aya::Pod> Handle for HashMap<MapData, K, V> {
    fn open(dir: &Path, name: &str) -> Result<Self> {
        Ok(open_map(dir, name)?.try_into()?)
    }
    fn entries(&self) -> Option<usize> {
        Some(self.keys().filter(|k| k.is_ok()).count())
    }
}

impl<K: aya::Pod, V: aya::Pod> Handle for LpmTrie<MapData, K, V> {
    fn open(dir: &Path, name: &str) -> Result<Self> {
        Ok(open_map(dir, name)?.try_into()?)
    }
    fn entries(&self) -> Option<usize> {
        Some(self.keys().filter(|k| k.is_ok()).count())
    }
}

impl<V: aya::Pod> Handle for Array<MapData, V> {
    fn open(dir: &Path, name: &str) -> Result<Self> {
        Ok(open_map(dir, name)?.try_into()?)
    }
    fn entries(&self) -> Option<usize> {
        Some(self.len() as usize)
    }
}

impl<V: aya::Pod> Handle for PerCpuArray<MapData, V> {
    fn open(dir: &Path, name: &str) -> Result<Self> {
        Ok(open_map(dir, name)?.try_into()?)
    }
    fn entries(&self) -> Option<usize> {
        Some(self.len() as usize)
    }
}

/// The ring buffer is held as plain map data: `netpath monitor` reads it through its
/// own handle, and mapping it into every process that opens the pins buys nothing.
impl Handle for MapData {
    fn open(dir: &Path, name: &str) -> Result<Self> {
        open_data(dir, name)
    }
    fn entries(&self) -> Option<usize> {
        None
    }
}

macro_rules! pinned {
    ($( $(#[$doc:meta])* $name:ident: $kind:ident<$($ty:ty),+>, $max:expr, $flags:expr; )*) => {
        /// The pinned maps of one node. Each handle carries its map's own name, so one
        /// search finds a map's declaration, the programs' uses and the agent's.
        #[allow(non_snake_case)]
        pub struct Pinned {
            $( $(#[$doc])* pub(super) $name: pinned!(@handle $kind; $($ty),+), )*
        }

        impl Pinned {
            pub fn open(dir: &Path) -> Result<Self> {
                Ok(Self {
                    $( $name: Handle::open(dir, stringify!($name))?, )*
                })
            }

            /// Every map's fill, in the table's order; capacities as the pins have them.
            pub fn fill(&self, dir: &Path) -> Result<Vec<Fill>> {
                Ok(vec![$(
                    Fill {
                        name: stringify!($name),
                        entries: self.$name.entries(),
                        capacity: pinned_capacity(dir, stringify!($name))?,
                    },
                )*])
            }
        }
    };
    (@handle HashMap; $k:ty, $v:ty) => { HashMap<MapData, $k, $v> };
    // An LRU hash reads and writes like a hash.
    (@handle LruHashMap; $k:ty, $v:ty) => { HashMap<MapData, $k, $v> };
    (@handle LpmTrie; $k:ty, $v:ty) => { LpmTrie<MapData, $k, $v> };
    (@handle Array; $v:ty) => { Array<MapData, $v> };
    (@handle PerCpuArray; $v:ty) => { PerCpuArray<MapData, $v> };
    (@handle RingBuf; $v:ty) => { MapData };
}

netpath_common::for_each_map!(pinned);

fn pinned_capacity(dir: &Path, name: &str) -> Result<u32> {
    let path = dir.join(name);
    Ok(aya::maps::MapInfo::from_pin(&path)
        .with_context(|| format!("inspect {}", path.display()))?
        .max_entries())
}
