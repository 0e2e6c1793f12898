//! netpath's kernel programs: one module per attach point, shared helpers beside them.
#![no_std]
#![no_main]

mod deliver;
mod from_pod;
mod from_tunnel;
mod from_underlay;
mod host_socket;
mod ipip;
mod l4;
mod maps;
mod monitor;
mod nat;
mod packet;
mod reject;
mod rewrite;
mod service;
mod stats;
mod to_underlay;
mod tunnel;
mod vxlan;
mod xdp_underlay;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any path that could reach here; loop to satisfy the type.
    loop {}
}
