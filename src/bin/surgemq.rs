//! The `surgemq` broker binary: configuration from defaults, a TOML file and flags, then
//! one shard per core until SIGINT or SIGTERM.

use std::process::ExitCode;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use surgemq::config;
use surgemq::server::Server;
use tracing_subscriber::EnvFilter;

/// `surgemq passwd`: creates and updates password files as `mosquitto_passwd` does, in
/// the same format (new entries are `$7$`, PBKDF2-HMAC-SHA512).
///
/// ```text
/// surgemq passwd [-c] FILE USER            password read from standard input
/// surgemq passwd -b [-c] FILE USER PASSWORD
/// surgemq passwd -D FILE USER              delete USER
/// ```
///
/// `-c` creates the file (replacing one that exists). The file is written to a temporary
/// file and renamed over the old one, readable by its owner only.
fn passwd(args: &[String]) -> ExitCode {
    use surgemq::security::password::{hash_password, PasswordFile};
    let usage = "usage: surgemq passwd [-c] [-b] [-D] FILE USER [PASSWORD]";
    let (mut create, mut batch, mut delete) = (false, false, false);
    let mut rest = Vec::new();
    for a in args {
        match a.as_str() {
            "-c" => create = true,
            "-b" => batch = true,
            "-D" => delete = true,
            _ => rest.push(a.as_str()),
        }
    }
    let (file, user, given) = match (rest.as_slice(), batch, delete) {
        ([f, u, p], true, false) => (*f, *u, Some(p.to_string())),
        ([f, u], false, _) => (*f, *u, None),
        _ => {
            eprintln!("{usage}");
            return ExitCode::from(2);
        }
    };
    if user.contains(':') || user.is_empty() {
        eprintln!("surgemq passwd: a user name may not be empty or contain ':'");
        return ExitCode::from(2);
    }
    let mut pw = if create {
        PasswordFile::default()
    } else {
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("surgemq passwd: {file}: {e} (-c creates it)");
                return ExitCode::FAILURE;
            }
        };
        match PasswordFile::parse(&text) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("surgemq passwd: {file}: {e}");
                return ExitCode::FAILURE;
            }
        }
    };
    if delete {
        if !pw.remove(user) {
            eprintln!("surgemq passwd: user {user} not in {file}");
            return ExitCode::FAILURE;
        }
    } else {
        let password = match given {
            Some(p) => p,
            None => {
                let mut line = String::new();
                if std::io::stdin().read_line(&mut line).is_err() {
                    eprintln!("surgemq passwd: cannot read the password from standard input");
                    return ExitCode::FAILURE;
                }
                line.trim_end_matches(['\n', '\r']).to_owned()
            }
        };
        match hash_password(password.as_bytes()) {
            Ok(h) => pw.set(user, h),
            Err(e) => {
                eprintln!("surgemq passwd: no randomness for a salt: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let tmp = format!("{file}.tmp");
    let written = (|| -> std::io::Result<()> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(pw.to_text().as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, file)
    })();
    if let Err(e) = written {
        eprintln!("surgemq passwd: {file}: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("passwd") {
        return passwd(argv.get(2..).unwrap_or_default());
    }
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
    // Colours only on a terminal: a log file or a collector gets plain text.
    let logs = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(&cfg.log_level))
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    match cfg.log_format {
        surgemq::config::LogFormat::Text => logs.init(),
        surgemq::config::LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    // Signals are received on this thread before any shard starts, so no shard thread
    // inherits their delivery.
    let mut signals = match Signals::new([SIGINT, SIGTERM, SIGHUP]) {
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
    // SIGHUP reloads the security files (as mosquitto does); SIGINT or SIGTERM stops.
    for sig in signals.forever() {
        if sig == SIGHUP {
            if let Err(e) = handle.reload_security() {
                tracing::error!(error = %e, "reload refused: the files in force stay");
            }
            continue;
        }
        tracing::info!(signal = sig, "shutting down");
        break;
    }
    let summary = handle.shutdown();
    tracing::info!(?summary, "bye");
    ExitCode::SUCCESS
}
