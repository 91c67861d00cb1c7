//! The `surgemq` broker binary: configuration from defaults, a TOML file and flags, then
//! one shard per core until SIGINT or SIGTERM.

use std::process::ExitCode;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use surgemq::config;
use surgemq::server::Server;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let (cfg, print_only) = match config::from_args() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("surgemq: {e}");
            return ExitCode::from(2);
        }
    };
    if print_only {
        print!("{}", cfg.print_documented());
        return ExitCode::SUCCESS;
    }
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(&cfg.log_level))
        .with_target(false)
        .init();
    // Signals are received on this thread before any shard starts, so no shard thread
    // inherits their delivery.
    let mut signals = match Signals::new([SIGINT, SIGTERM]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("surgemq: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let handle = match Server::new(cfg).start() {
        Ok(h) => h,
        Err(e) => {
            eprintln!("surgemq: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(sig) = signals.forever().next() {
        tracing::info!(signal = sig, "shutting down");
    }
    let summary = handle.shutdown();
    tracing::info!(?summary, "bye");
    ExitCode::SUCCESS
}
