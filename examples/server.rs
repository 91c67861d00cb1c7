//! Embeds the SurgeMQ broker in a Rust program, as the original SurgeMQ's server example
//! does: build a configuration, start the shards, serve until Ctrl-C (or for a fixed time),
//! then shut down and print what the broker counted.
//!
//! ```text
//! cargo run --release --example server -- 127.0.0.1:1883 [shards] [seconds]
//! ```

use std::time::Duration;

use surgemq::config::Config;
use surgemq::server::Server;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:1883".into());
    let shards: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(2);
    let seconds: Option<u64> = args.next().map(|s| s.parse()).transpose()?;

    let mut config = Config {
        listeners: vec![listen.parse()?],
        shards,
        ..Config::default()
    };
    // Any field of the documented configuration can be set here; `surgemq --print-config`
    // lists them with their defaults.
    config.limits.max_inflight = 64;

    let handle = Server::new(config).start()?;
    println!(
        "surgemq listening on {:?} with {shards} shards",
        handle.local_addrs()
    );

    match seconds {
        Some(s) => std::thread::sleep(Duration::from_secs(s)),
        None => {
            let mut signals = signal_hook::iterator::Signals::new([
                signal_hook::consts::SIGINT,
                signal_hook::consts::SIGTERM,
            ])?;
            signals.forever().next();
        }
    }
    let summary = handle.shutdown();
    println!("stopped: {summary:?}");
    Ok(())
}
