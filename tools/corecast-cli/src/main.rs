//! `corecast-cli`: publish, subscribe, send requests, answer them and
//! measure round trips, against a corecast broker, from the shell; and
//! watch and steer the broker: its counters, its connections, a live view,
//! lame duck mode.
//!
//! Exit status: 0 when the command did what it was asked, 1 when it failed
//! (the reason is printed on standard error), 2 for a command line that
//! does not parse.

mod auth;
mod cli;
mod commands;
mod explain;
mod monitor;

use std::{io, process::ExitCode};

use clap::Parser;
use corecast_client::ClientError;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match commands::run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", describe(&err, &cli.conn.server));
            ExitCode::FAILURE
        }
    }
}

/// The error's chain of causes, with client errors told for a person.
fn describe(err: &anyhow::Error, server: &str) -> String {
    let mut parts = Vec::new();
    for cause in err.chain() {
        if let Some(client) = cause.downcast_ref::<ClientError>() {
            parts.push(explain::explain(client, server));
            break;
        }
        parts.push(cause.to_string());
    }
    parts.join(": ")
}

/// Whether the output was closed by the reader (`corecast-cli sub t | head`),
/// which is how such a pipeline ends, not a failure.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|cause| cause.downcast_ref::<io::Error>())
        .any(|e| e.kind() == io::ErrorKind::BrokenPipe)
}
