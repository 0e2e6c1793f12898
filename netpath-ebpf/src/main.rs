//! netpath's kernel programs: one module per attach point under `hooks`, the shared
//! helpers they are built from under `shared` (as Cilium's `bpf_*.c` entry files and
//! `bpf/lib/`).
#![no_std]
#![no_main]

mod hooks;
mod shared;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any path that could reach here; loop to satisfy the type.
    loop {}
}
