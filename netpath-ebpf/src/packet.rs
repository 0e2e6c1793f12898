//! Bounds-checked access to headers in direct packet memory.
use aya_ebpf::programs::TcContext;

/// A `&mut T` at `offset` into the linear packet data, if the whole `T` is there.
#[inline(always)]
pub fn header_mut<T>(ctx: &TcContext, offset: usize) -> Option<&'static mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return None;
    }
    // SAFETY: the range was checked against data_end just above.
    Some(unsafe { &mut *((start + offset) as *mut T) })
}

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
