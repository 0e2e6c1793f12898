//! The programs' diagnostic lines (aya-log) in the agent's log: target
//! [`TARGET`], at the level the program logged them. Which levels the programs write
//! at all is decided at load from the agent's own filter (`RUST_LOG`), so a level the
//! agent would drop costs the programs one global read and no ring space.
use aya::Ebpf;
use aya_log::EbpfLogger;
use tokio::io::unix::AsyncFd;

/// The ring aya-log's macros write into (its name is aya-log's).
pub const RING: &str = "AYA_LOGS";

/// Where the programs' lines appear in the agent's log.
pub const TARGET: &str = "netpath::bpf";

/// The highest aya-log level the agent's subscriber would print for [`TARGET`]
/// (aya-log's numbering: 1 error … 5 trace), 0 when none.
pub fn level() -> u8 {
    use tracing::Level;
    // Each `enabled!` needs its level as a constant, hence one call a level.
    if tracing::enabled!(target: TARGET, Level::TRACE) {
        5
    } else if tracing::enabled!(target: TARGET, Level::DEBUG) {
        4
    } else if tracing::enabled!(target: TARGET, Level::INFO) {
        3
    } else if tracing::enabled!(target: TARGET, Level::WARN) {
        2
    } else if tracing::enabled!(target: TARGET, Level::ERROR) {
        1
    } else {
        0
    }
}

/// Hands the programs' log records to `tracing` under one target; the program side's
/// module goes along as a field.
struct ToTracing;

impl log::Log for ToTracing {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }

    fn log(&self, r: &log::Record) {
        let module = r.module_path().unwrap_or("");
        match r.level() {
            log::Level::Error => tracing::error!(target: TARGET, module, "{}", r.args()),
            log::Level::Warn => tracing::warn!(target: TARGET, module, "{}", r.args()),
            log::Level::Info => tracing::info!(target: TARGET, module, "{}", r.args()),
            log::Level::Debug => tracing::debug!(target: TARGET, module, "{}", r.args()),
            log::Level::Trace => tracing::trace!(target: TARGET, module, "{}", r.args()),
        }
    }

    fn flush(&self) {}
}

/// Starts forwarding the object's log ring into `tracing` on the current tokio
/// runtime. An object without the ring (one built without aya-log) costs the agent its
/// programs' lines, nothing else: said once, here.
pub fn forward(ebpf: &mut Ebpf) {
    let logger = match EbpfLogger::init_with_logger(ebpf, ToTracing) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!("the programs' diagnostic lines are not forwarded: {e}");
            return;
        }
    };
    // SAFETY: the logger owns its ring's fd for its whole life and always returns
    // that one; the AsyncFd owns the logger.
    let registered =
        unsafe { AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) };
    let mut ring = match registered {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("the programs' diagnostic lines are not forwarded: {e}");
            return;
        }
    };
    tokio::spawn(async move {
        loop {
            let Ok(mut ready) = ring.readable_mut().await else {
                tracing::warn!("the programs' log ring failed: no more of their lines");
                return;
            };
            ready.get_inner_mut().flush();
            ready.clear_ready();
        }
    });
}
