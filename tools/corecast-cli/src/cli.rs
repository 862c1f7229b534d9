//! The command line: global options and one subcommand per action.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Command-line client for the corecast broker.
///
/// Examples:
///   corecast-cli sub chat.lobby
///   corecast-cli sub 'orders.>'
///   corecast-cli sub --queue workers jobs.new
///   corecast-cli pub chat.lobby "hello"
///   corecast-cli pub chat.lobby "hello" --header trace-id=42
///   corecast-cli reply svc.echo
///   corecast-cli req svc.echo "ping me" --timeout 2s
///   corecast-cli ping --count 3
///   corecast-cli stats
///   corecast-cli conns --sort pending --limit 20
///   corecast-cli conns --closed
///   corecast-cli top --interval 2s
///   corecast-cli lame-duck
///
/// Over TLS, as a user (the password from CORECAST_PASSWORD, a file, or a
/// prompt):
///   corecast-cli --tls-ca ca.pem --user alice sub 'orders.>'
///   corecast-cli --tls-ca ca.pem --tls-cert me.pem --tls-key me.key ping
///   CORECAST_BEARER=... corecast-cli pub chat.lobby "hello"
///   corecast-cli hash-password < password.txt
///   corecast-cli hash-token < token.txt
#[derive(Debug, Parser)]
#[command(name = "corecast-cli", version, verbatim_doc_comment)]
pub struct Cli {
    /// How to reach the broker.
    #[command(flatten)]
    pub conn: Connection,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every subcommand takes.
#[derive(Debug, Args)]
pub struct Connection {
    /// The broker's address, HOST:PORT.
    #[arg(long, short, global = true, env = "CORECAST_SERVER", default_value = "127.0.0.1:7400")]
    pub server: String,
    /// The client name the broker logs.
    #[arg(long, global = true, default_value = "corecast-cli")]
    pub name: String,
    /// The shared token the broker asks for, if it was started with one
    /// (its auth_token setting; not a user's bearer token).
    #[arg(long, global = true, env = "CORECAST_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,
    /// Log in as this user, with the password from --password-file, else
    /// CORECAST_PASSWORD, else a line read from standard input.
    #[arg(long, global = true, value_name = "NAME", conflicts_with_all = ["auth_token", "bearer_file", "jwt_file"])]
    pub user: Option<String>,
    /// The password of --user: the file's first line.
    #[arg(long, global = true, value_name = "FILE", requires = "user")]
    pub password_file: Option<PathBuf>,
    /// Authenticate with the bearer token in this file (its first line);
    /// without it, the token in CORECAST_BEARER if set.
    #[arg(long, global = true, value_name = "FILE", conflicts_with_all = ["auth_token", "jwt_file"])]
    pub bearer_file: Option<PathBuf>,
    /// Authenticate with the JWT in this file (its first line); without it,
    /// the JWT in CORECAST_JWT if set.
    #[arg(long, global = true, value_name = "FILE", conflicts_with = "auth_token")]
    pub jwt_file: Option<PathBuf>,
    /// Connect with TLS. Needs --tls-ca: this tool trusts no system roots.
    #[arg(long, global = true)]
    pub tls: bool,
    /// Connect with TLS, trusting the CA certificates (PEM) in this file.
    #[arg(long, global = true, value_name = "FILE", env = "CORECAST_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Present this client certificate chain (PEM) when the broker asks for
    /// one (mutual TLS); with --tls-key.
    #[arg(long, global = true, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, global = true, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The name the broker's certificate must hold; by default the host of
    /// --server (an IP address is checked as an IP address).
    #[arg(long, global = true, value_name = "NAME")]
    pub tls_server_name: Option<String>,
    /// How long connecting may take (e.g. 500ms, 5s, 1m).
    #[arg(long, global = true, default_value = "5s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Publish a message to a topic.
    #[command(name = "pub")]
    Publish {
        /// The topic, e.g. orders.eu.
        topic: String,
        /// The message; read from standard input when left out.
        message: Option<String>,
        /// Publish the message this many times.
        #[arg(long, default_value_t = 1)]
        count: u64,
        /// Ask for answers on this topic.
        #[arg(long, conflicts_with = "headers")]
        reply_to: Option<String>,
        /// Send a header KEY=VALUE with the message (repeatable; needs a
        /// broker that speaks protocol 1.1).
        #[arg(long = "header", value_name = "KEY=VALUE", value_parser = parse_header)]
        headers: Vec<(String, String)>,
    },
    /// Print the messages published to a topic, one a line: `[TOPIC] PAYLOAD`,
    /// with the reply-to and the headers in the brackets when there are any.
    /// The topic may be a pattern: `*` stands for one token, `>` for the
    /// rest (`orders.>`).
    #[command(name = "sub")]
    Subscribe {
        /// The topic, e.g. orders.eu, or a pattern, e.g. 'orders.*'.
        topic: String,
        /// Stop after this many messages.
        #[arg(long)]
        count: Option<u64>,
        /// Print only the payload, as received, each followed by a newline
        /// unless it ends with one.
        #[arg(long)]
        raw: bool,
        /// With --raw: end each payload with a NUL byte instead, so payloads
        /// that hold newlines stay apart (for `xargs -0`, `read -d ''`).
        #[arg(long, requires = "raw")]
        null: bool,
        /// Let the broker drop messages (and say so) when this client falls
        /// behind, instead of disconnecting it.
        #[arg(long)]
        lossy: bool,
        /// Join this queue group: each message goes to one member of the
        /// group (needs a broker that speaks protocol 1.1).
        #[arg(long, value_name = "NAME")]
        queue: Option<String>,
    },
    /// Send a request and print the first reply.
    #[command(name = "req")]
    Request {
        /// The topic a responder listens on.
        topic: String,
        /// The request; read from standard input when left out.
        message: Option<String>,
        /// How long to wait for the reply (e.g. 500ms, 5s).
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Answer the requests sent to a topic: echo them, or run a command.
    Reply {
        /// The topic to answer on.
        topic: String,
        /// Run this shell command for each request: the request is its
        /// standard input, its standard output is the reply.
        #[arg(long, value_name = "CMD")]
        exec: Option<String>,
        /// Stop after this many requests.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Measure round trips to the broker (PING/PONG).
    Ping {
        /// Round trips to measure.
        #[arg(long, default_value_t = 4)]
        count: u64,
        /// Pause between round trips (e.g. 200ms, 1s).
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        interval: Duration,
    },
    /// Print the broker's counters, summed over its cores: connections,
    /// messages, bytes, drops and closes by cause, cross-core traffic.
    ///
    /// Read with a STATS frame over the client port (--server,
    /// --auth-token), which every corecast broker answers, with or without
    /// its monitoring port. With --http, read from the monitoring port's
    /// /stats instead, which adds the version, the pid, the uptime and
    /// whether the broker is in lame duck mode.
    Stats {
        /// Read /stats from the monitoring port at HOST:PORT instead;
        /// without a value, at CORECAST_HTTP or 127.0.0.1:7422.
        #[arg(long, value_name = "HOST:PORT", num_args = 0..=1)]
        http: Option<Option<String>>,
    },
    /// List the broker's open connections (or, with --closed, the last
    /// closed ones and why they closed), from the monitoring port's /connz.
    Conns {
        /// Where the monitoring port is.
        #[command(flatten)]
        http: Http,
        /// The order of open connections, largest first (id: oldest
        /// first). Closed ones are listed newest first.
        #[arg(long, value_enum, value_name = "KEY", default_value_t = SortKey::Id)]
        sort: SortKey,
        /// List closed connections instead, newest first, with the reason.
        #[arg(long, conflicts_with = "sort")]
        closed: bool,
        /// List at most this many (1-10000).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=10_000))]
        limit: u16,
    },
    /// A live view of the broker, refreshed every --interval: message and
    /// byte rates per core, connections, bytes queued, and the 10
    /// connections with the most bytes queued. From the monitoring port.
    Top {
        /// Where the monitoring port is.
        #[command(flatten)]
        http: Http,
        /// Time between refreshes; rates are measured over it (e.g.
        /// 500ms, 1s, 5s).
        #[arg(long, default_value = "1s", value_parser = parse_interval)]
        interval: Duration,
        /// Stop after this many refreshes (for scripts).
        #[arg(long)]
        count: Option<u64>,
    },
    /// Put the broker in lame duck mode: it stops accepting connections,
    /// sends its clients GOAWAY spread over its lame_duck_duration, then
    /// exits 0.
    ///
    /// Sends SIGUSR2 to the broker's process, whose pid it reads from the
    /// monitoring port's /stats unless --pid is given. This works only on
    /// the broker's own host (the monitoring port must be on a loopback
    /// address), as a user allowed to signal the broker: the same user, or
    /// root.
    LameDuck {
        /// Where the monitoring port is (to find the pid).
        #[command(flatten)]
        http: Http,
        /// Signal this process instead of reading the pid from /stats.
        #[arg(long)]
        pid: Option<i32>,
    },
    /// Print the argon2id hash (a PHC string, default parameters, random
    /// salt) of the password read from standard input (its first line), for
    /// the `password` of a [[users]] entry in the broker's config.
    HashPassword,
    /// Print the SHA-256 (hex) of the bearer token read from standard input
    /// (without a final newline), for the `token_sha256` of a [[users]]
    /// entry in the broker's config.
    HashToken,
}

/// Where the broker's monitoring port is.
#[derive(Debug, Args)]
pub struct Http {
    /// The broker's monitoring port, HOST:PORT (its `http` setting).
    #[arg(
        long = "http",
        value_name = "HOST:PORT",
        env = HTTP_ENV,
        default_value = DEFAULT_HTTP
    )]
    pub addr: String,
}

/// The environment variable that holds the monitoring port's address.
pub const HTTP_ENV: &str = "CORECAST_HTTP";
/// The broker's default monitoring port.
pub const DEFAULT_HTTP: &str = "127.0.0.1:7422";

/// How `conns` orders open connections (the monitoring port's `sort`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SortKey {
    /// By id: oldest first.
    Id,
    /// Most bytes queued first.
    Pending,
    /// Most messages queued to it first.
    #[value(name = "msgs_out", alias = "msgs-out")]
    MsgsOut,
    /// Most messages published first.
    #[value(name = "msgs_in", alias = "msgs-in")]
    MsgsIn,
    /// Most bytes written to it first.
    #[value(name = "bytes_out", alias = "bytes-out")]
    BytesOut,
    /// Most bytes read from it first.
    #[value(name = "bytes_in", alias = "bytes-in")]
    BytesIn,
    /// Longest silent first.
    Idle,
    /// Oldest first.
    Uptime,
}

impl SortKey {
    /// The name `/connz` takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Id => "id",
            Self::Pending => "pending",
            Self::MsgsOut => "msgs_out",
            Self::MsgsIn => "msgs_in",
            Self::BytesOut => "bytes_out",
            Self::BytesIn => "bytes_in",
            Self::Idle => "idle",
            Self::Uptime => "uptime",
        }
    }
}

/// Parses a header given as `KEY=VALUE` (the value may be empty and may
/// hold `=`).
pub fn parse_header(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("{text:?} is not a header like KEY=VALUE")),
    }
}

/// Parses a duration with a unit (`500ms`, `5s`, `2m`, `5h`, `1h 30m`:
/// `humantime`'s forms), or a plain number of seconds (`1.5`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"));
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration like 500ms, 5s, 2m or 5h: {e}"))
}

/// Parses the time between two refreshes of `top`: a duration of at least
/// 10 ms.
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    let interval = parse_duration(text)?;
    if interval < Duration::from_millis(10) {
        return Err(format!("{text:?} is too short: refresh at most every 10ms"));
    }
    Ok(interval)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("5h"), Ok(Duration::from_secs(5 * 3600)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn sort_keys_are_the_monitoring_ports() {
        for key in SortKey::value_variants() {
            let name = key.to_possible_value().map(|v| v.get_name().to_owned());
            assert_eq!(name.as_deref(), Some(key.name()));
        }
        assert_eq!(SortKey::from_str("msgs-out", false), Ok(SortKey::MsgsOut));
        assert!(parse_interval("0s").is_err());
        assert_eq!(parse_interval("200ms"), Ok(Duration::from_millis(200)));
    }

    #[test]
    fn headers_parse() {
        assert_eq!(parse_header("k=v=w"), Ok(("k".into(), "v=w".into())));
        assert_eq!(parse_header("k="), Ok(("k".into(), String::new())));
        assert!(parse_header("=v").is_err());
        assert!(parse_header("kv").is_err());
    }

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
