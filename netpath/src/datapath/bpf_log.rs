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

/// Hands the programs' log records to `tracing` under one target, with the program
/// that wrote them: a line is written in its hook's module (`netpath::hooks::from_pod`),
/// named as the program is (`from_pod`).
struct ToTracing;

/// The program a record's module names, or the whole module for a helper's line.
fn program_of(module: &str) -> &str {
    match module.split_once("::hooks::") {
        Some((_, hook)) => hook.split("::").next().unwrap_or(hook),
        None => module,
    }
}

impl log::Log for ToTracing {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }

    fn log(&self, r: &log::Record) {
        let program = program_of(r.module_path().unwrap_or(""));
        match r.level() {
            log::Level::Error => tracing::error!(target: TARGET, program, "{}", r.args()),
            log::Level::Warn => tracing::warn!(target: TARGET, program, "{}", r.args()),
            log::Level::Info => tracing::info!(target: TARGET, program, "{}", r.args()),
            log::Level::Debug => tracing::debug!(target: TARGET, program, "{}", r.args()),
            log::Level::Trace => tracing::trace!(target: TARGET, program, "{}", r.args()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::{fmt, EnvFilter};

    fn level_under(filter: &str) -> u8 {
        let subscriber = fmt().with_env_filter(EnvFilter::new(filter)).finish();
        tracing::subscriber::with_default(subscriber, level)
    }

    #[test]
    fn a_line_is_named_by_its_hook() {
        assert_eq!(program_of("netpath::hooks::from_pod"), "from_pod");
        assert_eq!(
            program_of("netpath::hooks::from_underlay::x"),
            "from_underlay"
        );
        assert_eq!(program_of("netpath::shared::nat"), "netpath::shared::nat");
    }

    #[test]
    fn the_programs_level_is_the_agents_filter_for_their_target() {
        assert_eq!(
            level_under("info"),
            3,
            "the default: warnings, not debug lines"
        );
        assert_eq!(level_under("info,netpath::bpf=debug"), 4);
        assert_eq!(level_under("warn"), 2);
        assert_eq!(level_under("info,netpath::bpf=off"), 0);
        assert_eq!(level_under("netpath=trace"), 5, "a parent target counts");
        assert_eq!(level_under("off"), 0);
    }
}
