//! The `corecast` broker binary: flags and config file in, broker running
//! until SIGINT or SIGTERM, then a graceful shutdown and exit 0. SIGHUP
//! reloads the config file; SIGUSR2 starts lame duck mode, which ends in
//! the same exit. Anything that stops it is one line on stderr and exit 1.

use std::{error::Error, io::IsTerminal, process::ExitCode};

use clap::Parser;
use corecast::{config::LogFormat, Args, Broker, Config, ShutdownHandle};
use signal_hook::{
    consts::signal::{SIGHUP, SIGINT, SIGTERM, SIGUSR2},
    iterator::Signals,
};
use tracing_subscriber::{
    layer::SubscriberExt, reload, util::SubscriberInitExt, EnvFilter, Registry,
};

/// Changes the log filter of the running process.
type LogLevel = reload::Handle<EnvFilter, Registry>;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("corecast: error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the broker until a signal has stopped it. Every error's message
/// holds its causes, so it alone is printed.
fn run() -> Result<(), Box<dyn Error>> {
    let args = parse_args()?;
    let config = args.to_config()?;
    let log_level = init_logs(&config);
    raise_fd_limit(&config);
    let signals = Signals::new([SIGINT, SIGTERM, SIGHUP, SIGUSR2])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let broker = Broker::start(config)?;
    let handle = broker.shutdown_handle();
    std::thread::Builder::new()
        .name("corecast-signals".into())
        .spawn(move || watch_signals(signals, &handle, &args, &log_level))
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    broker.wait()?;
    tracing::info!("corecast stopped");
    Ok(())
}

/// Logs to stdout as text or JSON, filtered by `RUST_LOG` when it is set
/// and by `log_level` otherwise; the filter can change on a reload.
fn init_logs(config: &Config) -> LogLevel {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log_level));
    let (filter, handle) = reload::Layer::new(filter);
    let logs = tracing_subscriber::registry().with(filter);
    match config.log_format {
        LogFormat::Text => {
            let ansi = std::io::stdout().is_terminal();
            logs.with(tracing_subscriber::fmt::layer().with_ansi(ansi)).init();
        }
        LogFormat::Json => {
            logs.with(tracing_subscriber::fmt::layer().json().flatten_event(true)).init();
        }
    }
    handle
}

/// The flags. `--help` and `--version` print and exit 0 here; a bad flag is
/// the first line of clap's message, without the usage that follows.
fn parse_args() -> Result<Args, String> {
    match Args::try_parse() {
        Ok(args) => Ok(args),
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            std::process::exit(0)
        }
        Err(e) => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default();
            Err(first.strip_prefix("error: ").unwrap_or(first).to_owned())
        }
    }
}

/// SIGINT or SIGTERM starts the graceful shutdown, and a second one exits
/// at once; SIGUSR2 starts lame duck mode; SIGHUP reloads the config file.
fn watch_signals(mut signals: Signals, handle: &ShutdownHandle, args: &Args, log: &LogLevel) {
    let mut stopping = false;
    for signal in signals.forever() {
        match signal {
            SIGHUP => reload(handle, args, log),
            SIGUSR2 => {
                tracing::info!("SIGUSR2: lame duck");
                handle.lame_duck();
            }
            _ if stopping => {
                tracing::warn!(signal, "second signal: exiting now");
                std::process::exit(1);
            }
            _ => {
                tracing::info!(signal, "shutting down gracefully");
                handle.shutdown();
                stopping = true;
            }
        }
    }
}

/// Reads the config file again (the flags still win) and puts it in force;
/// a file that does not parse, or a config that is not valid, changes
/// nothing.
fn reload(handle: &ShutdownHandle, args: &Args, log: &LogLevel) {
    tracing::info!("SIGHUP: reloading the configuration");
    let config = match args.to_config() {
        Ok(config) => config,
        Err(e) => return tracing::error!(error = %e, "reload refused; nothing changed"),
    };
    let level = config.log_level.clone();
    match handle.reload(config) {
        Ok(done) if done.changed.iter().any(|k| k == "log_level") => {
            if std::env::var_os("RUST_LOG").is_some() {
                tracing::warn!("log_level changed but RUST_LOG is set and wins");
            } else if let Err(e) = log.reload(EnvFilter::new(&level)) {
                tracing::error!(error = %e, "cannot change the log level");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::error!(error = %e, "reload refused; nothing changed"),
    }
    tracing::info!("reload done");
}

/// Lifts the soft open-file limit to the hard one: every connection is a
/// descriptor, and the configured slots should not run into the default 1024.
fn raise_fd_limit(config: &corecast::Config) {
    use rlimit::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::NOFILE) else { return };
    let open_files =
        if soft < hard && setrlimit(Resource::NOFILE, hard, hard).is_ok() { hard } else { soft };
    let slots = (config.cores * config.max_connections) as u64;
    if open_files < slots + 64 {
        tracing::info!(
            open_files,
            slots,
            "connections are capped by the open-file limit before the slots; raise it with \
             `ulimit -n` or LimitNOFILE= in a systemd unit"
        );
    }
}
