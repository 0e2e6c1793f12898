//! netpath's kernel programs: one module per attach point, shared helpers beside them.
#![no_std]
#![no_main]

mod from_pod;
mod maps;
mod packet;
mod stats;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any path that could reach here; loop to satisfy the type.
    loop {}
}
