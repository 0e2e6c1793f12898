//! The maps, one `#[btf_map]` static per entry of `netpath_common::for_each_map!`:
//! name, types, capacity and flags come from that table alone. Userspace fills them,
//! bpftool reads them through BTF.
use aya_ebpf::{
    btf_maps::{lpm_trie::Key, Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
    macros::btf_map,
};
use netpath_common::{Ipv4, NetAddr};

macro_rules! declare {
    ($( $(#[$doc:meta])* $name:ident: $kind:ident<$($ty:ty),+>, $max:expr, $flags:expr; )*) => {
        $( declare!(@map [$(#[$doc])*] $name $kind [$($ty),+] $max, $flags); )*
    };
    (@map [$($attr:tt)*] $name:ident HashMap [$k:ty, $v:ty] $max:expr, $flags:expr) => {
        $($attr)*
        #[btf_map]
        pub static $name: HashMap<$k, $v, { $max as usize }, { $flags as usize }> =
            HashMap::new();
    };
    (@map [$($attr:tt)*] $name:ident LruHashMap [$k:ty, $v:ty] $max:expr, $flags:expr) => {
        $($attr)*
        #[btf_map]
        pub static $name: LruHashMap<$k, $v, { $max as usize }, { $flags as usize }> =
            LruHashMap::new();
    };
    (@map [$($attr:tt)*] $name:ident LpmTrie [$k:ty, $v:ty] $max:expr, $flags:expr) => {
        $($attr)*
        #[btf_map]
        pub static $name: LpmTrie<$k, $v, { $max as usize }, { $flags as usize }> =
            LpmTrie::new();
    };
    (@map [$($attr:tt)*] $name:ident Array [$v:ty] $max:expr, $flags:expr) => {
        $($attr)*
        #[btf_map]
        pub static $name: Array<$v, { $max as usize }, { $flags as usize }> = Array::new();
    };
    (@map [$($attr:tt)*] $name:ident PerCpuArray [$v:ty] $max:expr, $flags:expr) => {
        $($attr)*
        #[btf_map]
        pub static $name: PerCpuArray<$v, { $max as usize }, { $flags as usize }> =
            PerCpuArray::new();
    };
    (@map [$($attr:tt)*] $name:ident RingBuf [$v:ty] $max:expr, $flags:expr) => {
        $($attr)*
        #[btf_map]
        pub static $name: RingBuf<$v, { $max as usize }, { $flags as usize }> = RingBuf::new();
    };
}

netpath_common::for_each_map!(declare);

/// The key that finds the longest prefix holding the IPv4 address `addr`.
#[inline(always)]
pub fn host_key(addr: Ipv4) -> Key<NetAddr> {
    Key::new(NetAddr::trie_bits(32), NetAddr::v4(addr))
}

/// The error a `BPF_NOEXIST` insert returns (negated) when the key is there already:
/// another CPU (or flow) holds it.
pub const EEXIST: i32 = 17;
