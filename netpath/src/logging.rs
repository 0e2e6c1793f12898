//! How netpath's binaries log: `tracing` to stderr, filtered by `RUST_LOG` (default
//! info), colour only for a person at a terminal — a log file or a journal gets
//! plain text, and NO_COLOR is honoured. One place, so every binary (the agent, the
//! lab and its in-process bench members) writes the same way.
use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the subscriber for this process.
pub fn init() {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("info,netlink_packet_route=error")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .init();
}
