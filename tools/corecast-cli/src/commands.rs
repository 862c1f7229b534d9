//! What each subcommand does, with the blocking client.

use std::{
    io::{self, IsTerminal, Read, Write},
    process::{Command as Process, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use corecast_client::{
    self as client,
    blocking::{Client, Subscription},
    ClientError, DropSite, Event, HeaderBlock, Message, Options, SubscribeOptions,
};

use crate::{
    auth,
    cli::{Cli, Command, Connection, DEFAULT_HTTP, HTTP_ENV},
    monitor::{self, Port},
};

/// How long a receiving loop waits before it looks at the events again.
const POLL: Duration = Duration::from_millis(250);

/// Runs the command line's subcommand.
pub fn run(cli: &Cli) -> anyhow::Result<()> {
    let conn = &cli.conn;
    if connects(&cli.command) {
        // Settle the credential (and read a password from standard input)
        // before anything else reads it, such as the message of `pub`.
        auth::credentials(conn)?;
    }
    match &cli.command {
        Command::Publish { topic, message, count, reply_to, headers } => {
            let target =
                Target { topic, reply_to: reply_to.as_deref(), headers: header_block(headers)? };
            publish(conn, &target, message.as_deref(), *count)
        }
        Command::Subscribe { topic, count, raw, null, lossy, queue } => {
            let options = SubscribeOptions { lossy: *lossy, capacity: None };
            let output = match (*raw, *null) {
                (false, _) => Output::Text,
                (true, false) => Output::Raw,
                (true, true) => Output::RawNul,
            };
            subscribe(conn, (topic, queue.as_deref()), options, *count, output)
        }
        Command::Request { topic, message, timeout } => {
            request(conn, topic, message.as_deref(), *timeout)
        }
        Command::Reply { topic, exec, count } => reply(conn, topic, exec.as_deref(), *count),
        Command::Ping { count, interval } => ping(conn, *count, *interval),
        Command::Stats { http } => {
            let port = http.as_ref().map(|addr| Port::new(&http_or_default(addr.as_deref())));
            if port.is_none() && auth::needs_the_client(conn) {
                bail!(
                    "stats over the client port speaks plain TCP with --auth-token only; with \
                     TLS or a user's credential, read the monitoring port with --http"
                );
            }
            monitor::stats(conn, port.as_ref())
        }
        Command::Conns { http, sort, closed, limit } => {
            monitor::conns(&Port::new(&http.addr), *sort, *closed, *limit)
        }
        Command::Top { http, interval, count } => {
            monitor::top(&Port::new(&http.addr), *interval, *count)
        }
        Command::LameDuck { http, pid } => monitor::lame_duck(&Port::new(&http.addr), *pid),
        Command::HashPassword => auth::hash_password(),
        Command::HashToken => auth::hash_token(),
    }
}

/// Whether `command` connects with the client (and so authenticates).
fn connects(command: &Command) -> bool {
    matches!(
        command,
        Command::Publish { .. }
            | Command::Subscribe { .. }
            | Command::Request { .. }
            | Command::Reply { .. }
            | Command::Ping { .. }
    )
}

/// The monitoring port `stats --http` names, else `CORECAST_HTTP`, else
/// the default.
fn http_or_default(given: Option<&str>) -> String {
    let from_env = || std::env::var(HTTP_ENV).ok().filter(|addr| !addr.trim().is_empty());
    given.map(str::to_owned).or_else(from_env).unwrap_or_else(|| DEFAULT_HTTP.to_owned())
}

/// Connects as the flags say: address, name, timeout, credential, TLS.
fn connect(conn: &Connection) -> anyhow::Result<Client> {
    let mut options = Options::new()
        .name(&conn.name)
        .connect_timeout(conn.connect_timeout)
        .credentials(auth::credentials(conn)?);
    if let Some(tls) = auth::tls(conn)? {
        options = options.tls(tls);
    }
    Ok(Client::connect_with(&conn.server, options)?)
}

/// The message given on the command line, or standard input.
fn message_or_stdin(message: Option<&str>) -> anyhow::Result<Vec<u8>> {
    if let Some(message) = message {
        return Ok(message.as_bytes().to_vec());
    }
    let mut stdin = io::stdin().lock();
    if stdin.is_terminal() {
        eprintln!("reading the message from standard input; end it with Ctrl-D");
    }
    let mut payload = Vec::new();
    stdin.read_to_end(&mut payload).context("cannot read standard input")?;
    Ok(payload)
}

/// Whether a loop limited to `count` (if any) wants more after `done`.
pub(crate) fn wants_more(count: Option<u64>, done: u64) -> bool {
    match count {
        Some(count) => done < count,
        None => true,
    }
}

pub(crate) fn plural(n: u64, word: &str) -> String {
    match n {
        1 => format!("1 {word}"),
        n => format!("{n} {word}s"),
    }
}

/// Where `pub` sends, and with what.
struct Target<'a> {
    topic: &'a str,
    reply_to: Option<&'a str>,
    headers: Option<HeaderBlock>,
}

/// The headers of `--header`, checked; `None` when there are none, so that
/// a plain `pub` works with any broker.
fn header_block(headers: &[(String, String)]) -> anyhow::Result<Option<HeaderBlock>> {
    if headers.is_empty() {
        return Ok(None);
    }
    let mut block = HeaderBlock::new();
    for (key, value) in headers {
        block.push(key, value).with_context(|| format!("invalid header {key}={value}"))?;
    }
    Ok(Some(block))
}

fn publish(
    conn: &Connection,
    target: &Target<'_>,
    message: Option<&str>,
    count: u64,
) -> anyhow::Result<()> {
    let topic = target.topic;
    client::validate_publish_topic(topic)?;
    if let Some(reply_to) = target.reply_to {
        client::validate_reply_to(reply_to)?;
    }
    let payload = message_or_stdin(message)?;
    let client = connect(conn)?;
    for _ in 0..count {
        match (target.reply_to, &target.headers) {
            (_, Some(headers)) => client.publish_with_headers(topic, headers, &payload)?,
            (Some(reply_to), None) => client.publish_with_reply(topic, reply_to, &payload)?,
            (None, None) => client.publish(topic, &payload)?,
        }
    }
    // Returns once the broker has answered every message: a refusal
    // (permission denied, say) is queued as an event by then.
    client.flush()?;
    let refused = refusal(&client);
    client.close()?;
    if let Some(e) = refused {
        anyhow::bail!("the broker refused the publish: {} ({})", e.text, e.code);
    }
    let each = if count > 1 { " each" } else { "" };
    let size = plural(payload.len() as u64, "byte");
    eprintln!("published {} to {topic} ({size}{each})", plural(count, "message"));
    Ok(())
}

/// Prints what is published to `topic` (a pattern, possibly), as a member
/// of queue group `queue` if given.
fn subscribe(
    conn: &Connection,
    (topic, queue): (&str, Option<&str>),
    options: SubscribeOptions,
    count: Option<u64>,
    output: Output,
) -> anyhow::Result<()> {
    client::validate_subscribe_topic(topic)?;
    let client = connect(conn)?;
    let sub = match queue {
        None => client.subscribe_with(topic, options),
        Some(group) => client.queue_subscribe_with(topic, group, options),
    };
    let sub = sub.with_context(|| format!("cannot subscribe to {topic}"))?;
    let member = queue.map_or(String::new(), |group| format!(" in queue group {group}"));
    eprintln!(
        "subscribed to {topic}{member} on {}; waiting for messages (Ctrl-C to stop)",
        conn.server
    );
    let mut out = io::stdout().lock();
    let mut received = 0;
    while wants_more(count, received) {
        let Some(msg) = next_message(&client, &sub)? else {
            continue;
        };
        print_message(&mut out, &msg, output)?;
        received += 1;
    }
    Ok(())
}

/// Reports what happened meanwhile, then waits a moment for a message. When
/// the subscription ended, the events that say why are printed first.
fn next_message(client: &Client, sub: &Subscription) -> anyhow::Result<Option<Message>> {
    report_events(client);
    let next = sub.recv_timeout(POLL);
    if next.is_err() {
        report_events(client);
    }
    next.context("the subscription ended")
}

/// How `sub` prints each message.
#[derive(Debug, Clone, Copy)]
enum Output {
    /// `[TOPIC] PAYLOAD`, a payload that is not UTF-8 in hex.
    Text,
    /// The payload as received, then a newline unless it ends with one.
    Raw,
    /// The payload as received, then a NUL byte.
    RawNul,
}

/// Writes one message as `output` says.
fn print_message(out: &mut impl Write, msg: &Message, output: Output) -> io::Result<()> {
    match output {
        Output::Raw => write_payload(out, &msg.payload)?,
        Output::RawNul => {
            out.write_all(&msg.payload)?;
            out.write_all(b"\0")?;
        }
        Output::Text => {
            let text = printable(&msg.payload);
            let text = text.strip_suffix('\n').unwrap_or(&text);
            writeln!(out, "[{}] {text}", describe(msg))?;
        }
    }
    out.flush()
}

/// A payload as text: itself when it is UTF-8, else `hex:` and its bytes in
/// hex, so that nothing is replaced by U+FFFD unseen.
fn printable(payload: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(payload) {
        Ok(text) => text.into(),
        Err(_) => {
            let hex: String = payload.iter().map(|b| format!("{b:02x}")).collect();
            format!("hex:{hex}").into()
        }
    }
}

/// What goes in the brackets before a message: its topic, then its
/// reply-to and headers when it has any.
fn describe(msg: &Message) -> String {
    let mut about = msg.topic.clone();
    if let Some(reply_to) = &msg.reply_to {
        about.push_str(&format!(" reply-to {reply_to}"));
    }
    for (key, value) in msg.headers.headers() {
        about.push_str(&format!(" {key}={value}"));
    }
    about
}

/// Writes a payload as received, then a newline unless it ends with one.
fn write_payload(out: &mut impl Write, payload: &[u8]) -> io::Result<()> {
    out.write_all(payload)?;
    if !payload.ends_with(b"\n") {
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// Tells on standard error what happened to the connection meanwhile.
fn report_events(client: &Client) {
    while let Some(event) = client.try_next_event() {
        match event {
            Event::Dropped { topic, count, site, .. } => {
                let by = match site {
                    DropSite::Broker => "the broker (lossy subscription)",
                    DropSite::Client => "this client (it fell behind)",
                };
                eprintln!("warning: {} on {topic} dropped by {by}", plural(count, "message"));
            }
            Event::ServerError(e) => eprintln!("warning: the broker refused a frame: {e}"),
            Event::GoAway { .. } => eprintln!("the broker is shutting down"),
            Event::Disconnected(reason) => eprintln!("connection lost: {reason}; reconnecting"),
            Event::Reconnected { attempts, .. } => {
                eprintln!("reconnected after {}", plural(u64::from(attempts), "attempt"));
            }
            Event::Closed { reason } => eprintln!("giving up: {reason}"),
            _ => {}
        }
    }
}

/// The first `ERR` the broker answered with, among the events queued.
fn refusal(client: &Client) -> Option<client::ServerError> {
    std::iter::from_fn(|| client.try_next_event()).find_map(|event| match event {
        Event::ServerError(e) => Some(e),
        _ => None,
    })
}

fn request(
    conn: &Connection,
    topic: &str,
    message: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<()> {
    client::validate_publish_topic(topic)?;
    let payload = message_or_stdin(message)?;
    let client = connect(conn)?;
    let reply = match client.request(topic, &payload, timeout) {
        Ok(reply) => reply,
        Err(ClientError::NoResponders { .. }) => bail!(
            "no responders for {topic}: nobody is subscribed to it \
             (`corecast-cli reply {topic}` answers requests)"
        ),
        Err(ClientError::Timeout { waiting_for: "a reply", .. }) => {
            if let Some(e) = refusal(&client) {
                bail!("the broker refused the request: {} ({})", e.text, e.code);
            }
            bail!(
                "no reply on {topic} within {timeout:?} — is a responder running? \
                 (`corecast-cli reply {topic}` answers requests)"
            )
        }
        Err(e) => return Err(e.into()),
    };
    let mut out = io::stdout().lock();
    write_payload(&mut out, &reply.payload)?;
    out.flush()?;
    Ok(())
}

fn reply(
    conn: &Connection,
    topic: &str,
    exec: Option<&str>,
    count: Option<u64>,
) -> anyhow::Result<()> {
    client::validate_subscribe_topic(topic)?;
    let client = connect(conn)?;
    let sub = client.subscribe(topic).with_context(|| format!("cannot subscribe to {topic}"))?;
    let how = match exec {
        Some(cmd) => format!("with the output of `{cmd}`"),
        None => "by echoing them".to_owned(),
    };
    eprintln!("answering requests on {topic} {how} (Ctrl-C to stop)");
    let mut answered = 0;
    while wants_more(count, answered) {
        let Some(request) = next_message(&client, &sub)? else {
            continue;
        };
        if request.reply_to.is_none() {
            eprintln!("warning: a message on {topic} has no reply-to; not answered");
            continue;
        }
        let answer = match exec {
            Some(cmd) => run_command(cmd, &request.payload)?,
            None => request.payload.to_vec(),
        };
        match client.respond(&request, &answer) {
            Err(e @ ClientError::PayloadTooLarge { .. }) => {
                eprintln!("warning: reply not sent: {e}");
            }
            other => other?,
        }
        answered += 1;
    }
    client.close()?;
    Ok(())
}

/// Runs `cmd` with `sh -c`, `input` on its standard input; returns what it
/// wrote on its standard output.
fn run_command(cmd: &str, input: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut child = Process::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot run `{cmd}`"))?;
    let mut stdin = child.stdin.take().context("the command's standard input is missing")?;
    let input = input.to_vec();
    // Fed from a thread, so that a command that writes before it has read
    // everything cannot block both sides. A command that does not read its
    // input at all makes this write fail, which is fine.
    let feeder = thread::spawn(move || stdin.write_all(&input));
    let output = child.wait_with_output().with_context(|| format!("cannot run `{cmd}`"))?;
    let _ = feeder.join();
    if !output.status.success() {
        eprintln!("warning: `{cmd}` ended with {}; replying with its output anyway", output.status);
    }
    Ok(output.stdout)
}

fn ping(conn: &Connection, count: u64, interval: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    let client = connect(conn)?;
    let connected = started.elapsed();
    let info = client.server_info();
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "connected to {} at {} (core {}, connection {}) in {}",
        info.server_name,
        conn.server,
        info.core_id,
        info.connection_id,
        millis(connected)
    )?;
    let mut round_trips = Vec::new();
    for seq in 1..=count {
        if seq > 1 {
            thread::sleep(interval);
        }
        let sent = Instant::now();
        client.flush()?;
        let rtt = sent.elapsed();
        writeln!(out, "pong from {}: seq={seq} time={}", conn.server, millis(rtt))?;
        round_trips.push(rtt);
    }
    if let (Some(min), Some(max)) = (round_trips.iter().min(), round_trips.iter().max()) {
        let total: Duration = round_trips.iter().sum();
        let avg = total / u32::try_from(round_trips.len()).unwrap_or(u32::MAX);
        writeln!(
            out,
            "{}: min {} / avg {} / max {}",
            plural(count, "round trip"),
            millis(*min),
            millis(avg),
            millis(*max)
        )?;
    }
    Ok(())
}

fn millis(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}
