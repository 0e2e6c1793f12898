use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Runtimes run the plugin as `netpath` with CNI_COMMAND set and no arguments.
    if netpath::cni::invoked() {
        return netpath::cni::main();
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,netlink_packet_route=error")
            }),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal: a log file or a journal
        // gets plain text, and NO_COLOR is honoured.
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        )
        .init();
    let cli = netpath::cli::Cli::parse();
    let result = netpath::cli::bail_if_not_root().and_then(|()| netpath::cli::run(cli));
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("netpath: {e:#}");
            ExitCode::from(2)
        }
    }
}
