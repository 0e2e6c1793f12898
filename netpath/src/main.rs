use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Runtimes run the plugin as `netpath` with CNI_COMMAND set and no arguments.
    if netpath::cni::invoked() {
        return netpath::cni::main();
    }
    netpath::logging::init();
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
