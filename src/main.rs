//! The `corecast` broker binary: flags and config file in, broker running
//! until SIGINT or SIGTERM, then a graceful shutdown and exit 0.

use std::io::IsTerminal;

use anyhow::Context;
use clap::Parser;
use corecast::{Args, Broker};
use signal_hook::{
    consts::signal::{SIGINT, SIGTERM},
    iterator::Signals,
};

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_ansi(std::io::stdout().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let config = Args::parse().into_config()?;
    raise_fd_limit(&config);
    let mut signals = Signals::new([SIGINT, SIGTERM]).context("cannot install signal handlers")?;
    let broker = Broker::start(config)?;
    let handle = broker.shutdown_handle();
    std::thread::Builder::new()
        .name("corecast-signals".into())
        .spawn(move || {
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
        })
        .context("cannot start the signal thread")?;
    broker.wait()?;
    tracing::info!("corecast stopped");
    Ok(())
}

/// Lifts the soft open-file limit to the hard one: every connection is a
/// descriptor, and the configured slots should not run into the default 1024.
fn raise_fd_limit(config: &corecast::Config) {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
    let slots = (config.cores * config.max_connections) as u64;
    if lim.rlim_cur < slots + 64 {
        tracing::warn!(
            open_files = lim.rlim_cur,
            slots,
            "the open-file limit is below the connection slots; accepts will fail first"
        );
    }
}
