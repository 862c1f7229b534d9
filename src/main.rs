//! The `corecast` broker binary: flags and config file in, broker running
//! until SIGINT or SIGTERM, then a graceful shutdown and exit 0. Anything
//! that stops it is one line on stderr and exit 1.

use std::{error::Error, io::IsTerminal, process::ExitCode};

use clap::Parser;
use corecast::{Args, Broker, ShutdownHandle};
use signal_hook::{
    consts::signal::{SIGINT, SIGTERM},
    iterator::Signals,
};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_ansi(std::io::stdout().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
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
    let config = parse_args()?.into_config()?;
    raise_fd_limit(&config);
    let signals = Signals::new([SIGINT, SIGTERM])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let broker = Broker::start(config)?;
    watch_signals(signals, broker.shutdown_handle())
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    broker.wait()?;
    tracing::info!("corecast stopped");
    Ok(())
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

/// Starts the graceful shutdown on the first SIGINT or SIGTERM; a second
/// one exits at once.
fn watch_signals(mut signals: Signals, handle: ShutdownHandle) -> std::io::Result<()> {
    std::thread::Builder::new().name("corecast-signals".into()).spawn(move || {
        let mut raised = false;
        for signal in signals.forever() {
            if raised {
                tracing::warn!(signal, "second signal: exiting now");
                std::process::exit(1);
            }
            tracing::info!(signal, "shutting down gracefully");
            handle.shutdown();
            raised = true;
        }
    })?;
    Ok(())
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
