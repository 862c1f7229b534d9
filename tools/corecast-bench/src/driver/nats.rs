//! NATS core protocol, by hand: `INFO`, `CONNECT`, `SUB` (with a queue
//! group when asked), `PUB` (with a reply-to for requests), `MSG`,
//! `PING`/`PONG`, `+OK`, `-ERR`. A `MSG` counts only once its payload and
//! trailing CRLF have arrived.

use anyhow::bail;

use super::{
    parse_decimal, put_decimal, Codec, Delivery, Event, Subscription, Wire, MAX_READ_BUFFER,
};

/// The NATS codec.
#[derive(Debug, Default)]
pub struct Nats {
    next_sid: usize,
}

/// Splits the control line at the front of `buf`: (line without CRLF,
/// bytes including CRLF), or `None` if it is not complete.
fn control_line(buf: &[u8]) -> Option<(&[u8], usize)> {
    let nl = memchr::memchr(b'\n', buf)?;
    let line = &buf[..nl];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    Some((line, nl + 1))
}

/// The fields of a `MSG` line that the bench uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MsgArgs<'a> {
    subject: &'a str,
    reply_to: &'a str,
    size: usize,
}

/// Parses the arguments of `MSG <subject> <sid> [reply-to] <#bytes>`.
fn msg_args(args: &[u8]) -> anyhow::Result<MsgArgs<'_>> {
    let mut parts: [&[u8]; 4] = [&[]; 4];
    let mut n = 0;
    for part in args.split(|&b| b == b' ' || b == b'\t').filter(|p| !p.is_empty()) {
        if n == parts.len() {
            bail!("NATS MSG line has too many fields: {:?}", String::from_utf8_lossy(args));
        }
        parts[n] = part;
        n += 1;
    }
    let size = match n {
        3 | 4 => parse_decimal(parts[n - 1]),
        _ => None,
    };
    let Some(size) = size.filter(|&s| s < MAX_READ_BUFFER) else {
        bail!("NATS MSG line malformed: {:?}", String::from_utf8_lossy(args));
    };
    let reply_to = if n == 4 { std::str::from_utf8(parts[2])? } else { "" };
    Ok(MsgArgs { subject: std::str::from_utf8(parts[0])?, reply_to, size })
}

fn parse_msg<'a>(
    buf: &'a [u8],
    line: &'a [u8],
    header: usize,
) -> anyhow::Result<Option<(Event<'a>, usize)>> {
    let MsgArgs { subject, reply_to, size } = msg_args(&line[4..])?;
    let total = header + size + 2;
    if buf.len() < total {
        return Ok(None);
    }
    if &buf[header + size..total] != b"\r\n" {
        bail!("NATS MSG payload not followed by CRLF");
    }
    let payload = &buf[header..header + size];
    Ok(Some((Event::Msg(Delivery { topic: subject, reply_to, payload }), total)))
}

/// Appends `PUB <subject> [reply-to] <#bytes>`, the payload and CRLFs.
fn put_pub(subject: &str, reply_to: &str, payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b"PUB ");
    out.extend_from_slice(subject.as_bytes());
    out.push(b' ');
    if !reply_to.is_empty() {
        out.extend_from_slice(reply_to.as_bytes());
        out.push(b' ');
    }
    put_decimal(out, payload.len());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

impl Codec for Nats {
    fn handshake(&mut self, wire: &mut Wire, name: &str) -> anyhow::Result<()> {
        let deadline = wire.deadline();
        loop {
            if let Some((line, used)) = control_line(wire.data()) {
                if !line.starts_with(b"INFO") {
                    bail!("expected INFO, got {:?}", String::from_utf8_lossy(line));
                }
                wire.consume(used);
                break;
            }
            wire.read_more("INFO", deadline)?;
        }
        // With TLS on, nats-server waits for the handshake after `INFO`.
        wire.start_tls()?;
        let connect = format!(
            "CONNECT {{\"verbose\":false,\"pedantic\":false,\"name\":{},\"lang\":\"rust\",\"version\":\"0\",\"protocol\":1}}\r\nPING\r\n",
            serde_json::Value::from(name)
        );
        wire.send(connect.as_bytes())?;
        wire.wait_for(self, "PONG after CONNECT", |e| matches!(e, Event::Pong))
    }

    /// `SUB <subject> [queue group] <sid>`; NATS subjects take `*` and `>`
    /// as they are.
    fn encode_sub(&mut self, sub: Subscription<'_>, out: &mut Vec<u8>) -> anyhow::Result<()> {
        self.next_sid += 1;
        out.extend_from_slice(b"SUB ");
        out.extend_from_slice(sub.topic.as_bytes());
        out.push(b' ');
        if let Some(group) = sub.group {
            out.extend_from_slice(group.as_bytes());
            out.push(b' ');
        }
        put_decimal(out, self.next_sid);
        out.extend_from_slice(b"\r\n");
        Ok(())
    }

    fn encode_pub(&self, topic: &str, payload: &[u8], out: &mut Vec<u8>) {
        put_pub(topic, "", payload, out);
    }

    fn encode_request(
        &self,
        topic: &str,
        reply_to: &str,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> anyhow::Result<()> {
        put_pub(topic, reply_to, payload, out);
        Ok(())
    }

    fn encode_ping(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"PING\r\n");
    }

    fn encode_pong(&self, _nonce: u64, out: &mut Vec<u8>) {
        out.extend_from_slice(b"PONG\r\n");
    }

    fn parse<'a>(&self, buf: &'a [u8]) -> anyhow::Result<Option<(Event<'a>, usize)>> {
        let Some((line, header)) = control_line(buf) else {
            return Ok(None);
        };
        let event = match line {
            _ if line.starts_with(b"MSG ") => return parse_msg(buf, line, header),
            b"PING" => Event::Ping(0),
            b"PONG" => Event::Pong,
            _ if line.starts_with(b"+OK") || line.starts_with(b"INFO") => Event::Other,
            _ if line.starts_with(b"-ERR") => bail!("NATS {}", String::from_utf8_lossy(line)),
            _ => bail!("unexpected NATS line {:?}", String::from_utf8_lossy(line)),
        };
        Ok(Some((event, header)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msg_frames_split_anywhere() {
        let stream = b"INFO {\"x\":1}\r\nMSG a.b 1 5\r\nhello\r\nPING\r\nMSG c 2 r.x 3\r\n\r\n\r\r\n+OK\r\nMSG d 3 0\r\n\r\n";
        crate::driver::assert_parses_in_pieces(
            &Nats::default(),
            stream,
            &[
                "Other",
                r#"Msg(Delivery { topic: "a.b", reply_to: "", payload: [104, 101, 108, 108, 111] })"#,
                "Ping(0)",
                r#"Msg(Delivery { topic: "c", reply_to: "r.x", payload: [13, 10, 13] })"#,
                "Other",
                r#"Msg(Delivery { topic: "d", reply_to: "", payload: [] })"#,
            ],
        );
    }

    #[test]
    fn incomplete_payload_is_not_a_message() {
        let codec = Nats::default();
        assert_eq!(codec.parse(b"MSG a 1 5\r\nhel").expect("valid"), None);
        assert_eq!(codec.parse(b"MSG a 1 5\r\nhello\r").expect("valid"), None);
        assert!(codec.parse(b"-ERR 'Slow Consumer'\r\n").is_err());
        assert!(codec.parse(b"MSG a 1 99999999999\r\n").is_err(), "a garbage length is an error");
    }

    #[test]
    fn pub_encoding() {
        let mut out = Vec::new();
        Nats::default().encode_pub("t.x", b"abc", &mut out);
        assert_eq!(out, b"PUB t.x 3\r\nabc\r\n");
        out.clear();
        Nats::default().encode_request("svc", "bench.inbox.2", b"q", &mut out).expect("request");
        assert_eq!(out, b"PUB svc bench.inbox.2 1\r\nq\r\n");
    }

    #[test]
    fn sub_encoding() {
        let (mut codec, mut out) = (Nats::default(), Vec::new());
        codec.encode_sub(Subscription::plain("bench.>"), &mut out).expect("sub");
        let group = Subscription { topic: "svc", group: Some("workers") };
        codec.encode_sub(group, &mut out).expect("queue sub");
        assert_eq!(out, b"SUB bench.> 1\r\nSUB svc workers 2\r\n");
    }
}
