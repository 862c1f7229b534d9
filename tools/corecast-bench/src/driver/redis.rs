//! Redis pub/sub over RESP2, by hand: `SUBSCRIBE` and `PSUBSCRIBE`
//! (confirmed by their replies), pipelined `PUBLISH`, `PING`. A `message`
//! or `pmessage` push counts only once all of its bulk strings have
//! arrived. Redis has neither queue groups nor reply-tos.
//!
//! A pattern is turned into a Redis glob: `*` and `>` tokens both become
//! `*`, which in a glob also matches dots. `bench.*.x` therefore matches
//! `bench.a.b.x` in Redis and not in NATS or corecast; the workloads only
//! publish to topics where both readings agree.

use anyhow::bail;

use super::{
    parse_decimal, put_decimal, Codec, Delivery, Event, Subscription, Wire, MAX_READ_BUFFER,
};

/// The Redis codec. Redis has no greeting and no broker pings.
#[derive(Debug, Default)]
pub struct Redis;

/// One non-array RESP value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scalar<'a> {
    Simple(&'a [u8]),
    Int,
    Bulk(&'a [u8]),
    Null,
}

/// The line starting at `pos` (type byte included, CRLF excluded) and the
/// position after its CRLF.
fn line_at(buf: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    let nl = pos + memchr::memchr(b'\n', buf.get(pos..)?)?;
    let line = &buf[pos..nl];
    Some((line.strip_suffix(b"\r").unwrap_or(line), nl + 1))
}

/// Parses the scalar at `pos`: `None` until whole, else value and end.
fn scalar(buf: &[u8], pos: usize) -> anyhow::Result<Option<(Scalar<'_>, usize)>> {
    let Some((line, after)) = line_at(buf, pos) else {
        return Ok(None);
    };
    let (kind, rest) = match line.split_first() {
        Some((k, rest)) => (*k, rest),
        None => bail!("empty RESP line"),
    };
    let value = match kind {
        b'+' => Scalar::Simple(rest),
        b'-' => bail!("Redis error: {}", String::from_utf8_lossy(rest)),
        b':' => Scalar::Int,
        b'$' if rest == b"-1" => Scalar::Null,
        b'$' => {
            let Some(len) = parse_decimal(rest).filter(|&n| n < MAX_READ_BUFFER) else {
                bail!("bad RESP bulk length {:?}", String::from_utf8_lossy(rest));
            };
            let end = after + len + 2;
            if buf.len() < end {
                return Ok(None);
            }
            if &buf[after + len..end] != b"\r\n" {
                bail!("RESP bulk string not followed by CRLF");
            }
            return Ok(Some((Scalar::Bulk(&buf[after..after + len]), end)));
        }
        other => bail!("unexpected RESP type byte {:?}", other as char),
    };
    Ok(Some((value, after)))
}

/// Parses a push array of up to 4 scalars at the front of `buf`.
fn push(buf: &[u8]) -> anyhow::Result<Option<(Event<'_>, usize)>> {
    let Some((line, mut pos)) = line_at(buf, 0) else {
        return Ok(None);
    };
    let Some(n) = parse_decimal(&line[1..]) else {
        bail!("bad RESP array length {:?}", String::from_utf8_lossy(line));
    };
    if n > 4 {
        bail!("unexpected RESP array of {n} elements");
    }
    let mut items = [Scalar::Null; 4];
    for item in items.iter_mut().take(n) {
        match scalar(buf, pos)? {
            Some((value, end)) => (*item, pos) = (value, end),
            None => return Ok(None),
        }
    }
    let event = match (n, items) {
        (3, [Scalar::Bulk(b"message"), Scalar::Bulk(topic), Scalar::Bulk(payload), _]) => {
            delivery(topic, payload)?
        }
        (4, [Scalar::Bulk(b"pmessage"), _, Scalar::Bulk(topic), Scalar::Bulk(payload)]) => {
            delivery(topic, payload)?
        }
        (_, [Scalar::Bulk(b"subscribe" | b"psubscribe"), ..]) => Event::Subscribed,
        (_, [Scalar::Bulk(b"pong"), ..]) => Event::Pong,
        _ => Event::Other,
    };
    Ok(Some((event, pos)))
}

/// A message pushed to a subscriber.
fn delivery<'a>(topic: &'a [u8], payload: &'a [u8]) -> anyhow::Result<Event<'a>> {
    Ok(Event::Msg(Delivery { topic: std::str::from_utf8(topic)?, reply_to: "", payload }))
}

/// The Redis glob for a pattern in NATS syntax: wildcard tokens become
/// `*`, and the glob's special characters in literal tokens are escaped.
fn glob(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + 4);
    for (i, token) in pattern.split('.').enumerate() {
        if i > 0 {
            out.push('.');
        }
        if token == "*" || token == ">" {
            out.push('*');
            continue;
        }
        for c in token.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                out.push('\\');
            }
            out.push(c);
        }
    }
    out
}

/// Appends a RESP command of bulk strings.
fn command(parts: &[&[u8]], out: &mut Vec<u8>) {
    out.push(b'*');
    put_decimal(out, parts.len());
    out.extend_from_slice(b"\r\n");
    for part in parts {
        out.push(b'$');
        put_decimal(out, part.len());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(part);
        out.extend_from_slice(b"\r\n");
    }
}

impl Codec for Redis {
    fn handshake(&mut self, _wire: &mut Wire, _name: &str) -> anyhow::Result<()> {
        Ok(())
    }

    /// `SUBSCRIBE`, or `PSUBSCRIBE` with the pattern's glob.
    fn encode_sub(&mut self, sub: Subscription<'_>, out: &mut Vec<u8>) -> anyhow::Result<()> {
        if sub.group.is_some() {
            bail!("Redis pub/sub has no queue groups");
        }
        if sub.is_pattern() {
            command(&[b"PSUBSCRIBE", glob(sub.topic).as_bytes()], out);
        } else {
            command(&[b"SUBSCRIBE", sub.topic.as_bytes()], out);
        }
        Ok(())
    }

    fn encode_pub(&self, topic: &str, payload: &[u8], out: &mut Vec<u8>) {
        command(&[b"PUBLISH", topic.as_bytes(), payload], out);
    }

    fn encode_ping(&self, out: &mut Vec<u8>) {
        command(&[b"PING"], out);
    }

    fn encode_pong(&self, _nonce: u64, _out: &mut Vec<u8>) {}

    fn acks_subscriptions(&self) -> bool {
        true
    }

    fn parse<'a>(&self, buf: &'a [u8]) -> anyhow::Result<Option<(Event<'a>, usize)>> {
        match buf.first() {
            None => Ok(None),
            Some(b'*') => push(buf),
            Some(_) => Ok(scalar(buf, 0)?.map(|(value, end)| {
                let event = match value {
                    Scalar::Simple(b"PONG") => Event::Pong,
                    _ => Event::Other,
                };
                (event, end)
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_split_anywhere() {
        let stream: &[u8] = b"*3\r\n$9\r\nsubscribe\r\n$3\r\na.b\r\n:1\r\n\
            *3\r\n$7\r\nmessage\r\n$3\r\na.b\r\n$4\r\n\r\nxy\r\n\
            :12\r\n+PONG\r\n*2\r\n$4\r\npong\r\n$0\r\n\r\n\
            *3\r\n$7\r\nmessage\r\n$3\r\na.b\r\n$0\r\n\r\n\
            *3\r\n$10\r\npsubscribe\r\n$3\r\nb.*\r\n:2\r\n\
            *4\r\n$8\r\npmessage\r\n$3\r\nb.*\r\n$5\r\nb.1.x\r\n$2\r\nhi\r\n";
        crate::driver::assert_parses_in_pieces(
            &Redis,
            stream,
            &[
                "Subscribed",
                r#"Msg(Delivery { topic: "a.b", reply_to: "", payload: [13, 10, 120, 121] })"#,
                "Other",
                "Pong",
                "Pong",
                r#"Msg(Delivery { topic: "a.b", reply_to: "", payload: [] })"#,
                "Subscribed",
                r#"Msg(Delivery { topic: "b.1.x", reply_to: "", payload: [104, 105] })"#,
            ],
        );
    }

    #[test]
    fn commands_and_errors() {
        let mut out = Vec::new();
        Redis.encode_pub("t", b"hi", &mut out);
        assert_eq!(out, b"*3\r\n$7\r\nPUBLISH\r\n$1\r\nt\r\n$2\r\nhi\r\n");
        assert!(Redis.parse(b"-ERR wrong\r\n").is_err());
        assert_eq!(Redis.parse(b"*3\r\n$7\r\nmessage\r\n$1\r\nt\r\n$2\r\nh").expect("valid"), None);
        assert!(Redis.parse(b"$99999999999\r\n").is_err(), "a garbage length is an error");
    }

    #[test]
    fn patterns_become_globs_and_groups_are_refused() {
        assert_eq!(glob("bench.*.x"), "bench.*.x");
        assert_eq!(glob("bench.>"), "bench.*");
        assert_eq!(glob("a?.[b].*"), "a\\?.\\[b\\].*");
        let mut out = Vec::new();
        Redis.encode_sub(Subscription::plain("bench.>"), &mut out).expect("psubscribe");
        assert_eq!(out, b"*2\r\n$10\r\nPSUBSCRIBE\r\n$7\r\nbench.*\r\n");
        let group = Subscription { topic: "svc", group: Some("workers") };
        assert!(Redis.encode_sub(group, &mut out).is_err());
        assert!(Redis.encode_request("svc", "inbox", b"q", &mut out).is_err());
    }
}
