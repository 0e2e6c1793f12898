//! The entry points, one module per attach point. Each classifies a packet into an
//! action and a reason, counted once at its entry (`shared::monitor::observe`); what
//! they share lives in `crate::shared`.
mod from_pod;
mod from_tunnel;
mod from_underlay;
mod from_wireguard;
mod host_socket;
mod to_underlay;
mod xdp_underlay;
