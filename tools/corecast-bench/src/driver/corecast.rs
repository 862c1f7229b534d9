//! corecast: the binary protocol of `proto/PROTOCOL.md`, through the
//! `corecast-proto` codec. Subscriptions are confirmed with `PING`/`PONG`;
//! the `STATS` extension frame reads the broker's counters. A connection
//! asks for a protocol 1.1 session (`HELLO` bit 1) only when told to, for
//! wildcards, queue groups and requests; it then fails unless `WELCOME`
//! grants it.

use anyhow::{bail, Context};
use corecast_proto::{
    opcode, ClientFrame, ClientFrame11, Hello, Pub, RawFrame, ServerFrame, ServerFrame11, Sub,
    VERSION,
};

use super::{Codec, Delivery, Event, Subscription, Wire};

/// Frames a client accepts before `WELCOME` says otherwise (spec 2.4).
const DEFAULT_MAX_FRAME: u32 = 1 << 20;

/// The corecast codec.
#[derive(Debug)]
pub struct Corecast {
    /// Limit on server frames: `max_frame` from `WELCOME` plus 4.
    max_server_frame: u32,
    next_sid: u32,
    /// Whether the session is (or, before the handshake, is to be) a 1.1
    /// session.
    v1_1: bool,
    /// The token field of `HELLO`.
    token: Option<std::sync::Arc<str>>,
}

impl Default for Corecast {
    fn default() -> Self {
        Self::new(false)
    }
}

impl Corecast {
    /// A codec that asks for a 1.1 session when `v1_1`.
    pub fn new(v1_1: bool) -> Self {
        Self { max_server_frame: DEFAULT_MAX_FRAME + 4, next_sid: 1, v1_1, token: None }
    }

    /// The same codec, sending `token` in `HELLO`'s token field (untyped:
    /// an `auth_token`, or a user's bearer token).
    pub fn with_token(self, token: Option<std::sync::Arc<str>>) -> Self {
        Self { token, ..self }
    }

    /// Decodes one server frame with the decoder of the session's version
    /// (a version 1 session must never see a 1.1 frame).
    fn decode<'a>(
        &self,
        src: &mut &'a [u8],
        max: u32,
    ) -> anyhow::Result<Option<ServerFrame11<'a>>> {
        let raw = RawFrame::split(src, max).context("corecast frame")?;
        raw.map(|raw| self.parse_raw(raw)).transpose()
    }

    /// Interprets a frame already cut out of the stream with the parser of
    /// the session's version.
    fn parse_raw<'a>(&self, raw: RawFrame<'a>) -> anyhow::Result<ServerFrame11<'a>> {
        let frame = if self.v1_1 {
            ServerFrame11::parse(raw)
        } else {
            ServerFrame::parse(raw).map(ServerFrame11::from)
        };
        frame.context("corecast frame")
    }
}

fn encode(frame: &ClientFrame<'_>, out: &mut Vec<u8>) {
    out.reserve(frame.encoded_len());
    frame.encode(out);
}

fn encode11(frame: &ClientFrame11<'_>, out: &mut Vec<u8>) {
    out.reserve(frame.encoded_len());
    frame.encode(out);
}

impl Codec for Corecast {
    fn handshake(&mut self, wire: &mut Wire, name: &str) -> anyhow::Result<()> {
        let name = &name[..name.len().min(64)];
        let mut out = Vec::new();
        let token = self.token.as_deref().unwrap_or("").as_bytes();
        let hello = Hello { version: VERSION, name, token };
        let frame =
            ClientFrame11::Hello { hello, v1_1: self.v1_1, no_echo: false, credential: false };
        encode11(&frame, &mut out);
        wire.send(&out)?;
        let deadline = wire.deadline();
        loop {
            let mut src = wire.data();
            let before = src.len();
            match self.decode(&mut src, DEFAULT_MAX_FRAME + 4)? {
                Some(ServerFrame11::Welcome { welcome, v1_1 }) => {
                    if self.v1_1 && !v1_1 {
                        bail!("corecast declined protocol 1.1 (WELCOME without bit 1)");
                    }
                    self.max_server_frame = welcome.max_frame.saturating_add(4);
                    let used = before - src.len();
                    wire.consume(used);
                    return Ok(());
                }
                Some(ServerFrame11::Err(e)) => {
                    bail!("corecast refused HELLO: ERR {}: {}", e.code, e.text)
                }
                Some(other) => bail!("expected WELCOME, got {other:?}"),
                None => wire.read_more("WELCOME", deadline)?,
            }
        }
    }

    fn encode_sub(&mut self, sub: Subscription<'_>, out: &mut Vec<u8>) -> anyhow::Result<()> {
        if !self.v1_1 && (sub.group.is_some() || sub.is_pattern()) {
            bail!("wildcards and queue groups need a protocol 1.1 session");
        }
        let sid = self.next_sid;
        self.next_sid = self.next_sid.wrapping_add(1);
        let queue_group = sub.group.unwrap_or("");
        encode(&ClientFrame::Sub(Sub { sid, topic: sub.topic, queue_group, lossy: false }), out);
        Ok(())
    }

    fn encode_pub(&self, topic: &str, payload: &[u8], out: &mut Vec<u8>) {
        encode(&ClientFrame::Pub(Pub { topic, reply_to: "", payload }), out);
    }

    /// A `PUB` with a reply-to, flagged as a request in a 1.1 session (as
    /// corecast's own clients send requests), so that the broker answers
    /// `NO_RESPONDERS` when nobody listens.
    fn encode_request(
        &self,
        topic: &str,
        reply_to: &str,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> anyhow::Result<()> {
        let publish = Pub { topic, reply_to, payload };
        encode11(&ClientFrame11::Pub { publish, request: self.v1_1 }, out);
        Ok(())
    }

    fn encode_ping(&self, out: &mut Vec<u8>) {
        encode(&ClientFrame::Ping { nonce: 1 }, out);
    }

    fn encode_pong(&self, nonce: u64, out: &mut Vec<u8>) {
        encode(&ClientFrame::Pong { nonce }, out);
    }

    fn encode_stats(&self, out: &mut Vec<u8>) -> bool {
        encode(&ClientFrame::Stats { nonce: 7 }, out);
        true
    }

    fn parse<'a>(&self, buf: &'a [u8]) -> anyhow::Result<Option<(Event<'a>, usize)>> {
        let mut src = buf;
        let Some(raw) =
            RawFrame::split(&mut src, self.max_server_frame).context("corecast frame")?
        else {
            return Ok(None);
        };
        let used = buf.len() - src.len();
        // A `MSG`, what a run is made of, has one layout in both versions:
        // parsed as it is, not through the 1.1 enum.
        if raw.opcode == opcode::MSG {
            if let ServerFrame::Msg(m) = ServerFrame::parse(raw).context("corecast MSG")? {
                let delivery =
                    Delivery { topic: m.topic, reply_to: m.reply_to, payload: m.payload };
                return Ok(Some((Event::Msg(delivery), used)));
            }
        }
        let event = match self.parse_raw(raw)? {
            ServerFrame11::Msg(m) => {
                Event::Msg(Delivery { topic: m.topic, reply_to: m.reply_to, payload: m.payload })
            }
            ServerFrame11::HMsg(m) => {
                Event::Msg(Delivery { topic: m.topic, reply_to: m.reply_to, payload: m.payload })
            }
            ServerFrame11::NoResponders { .. } => Event::NoResponders,
            ServerFrame11::Pong { .. } => Event::Pong,
            ServerFrame11::Ping { nonce } => Event::Ping(nonce),
            ServerFrame11::Dropped { count, .. } => Event::Dropped(count),
            ServerFrame11::StatsReply { json, .. } => Event::Stats(json),
            ServerFrame11::Welcome { .. } => Event::Other,
            ServerFrame11::Err(e) => {
                bail!("corecast ERR {} (fatal: {}): {}", e.code, e.fatal, e.text)
            }
            ServerFrame11::GoAway { reason, .. } => bail!("corecast GOAWAY (reason {reason})"),
            other => bail!("unexpected corecast frame {other:?}"),
        };
        Ok(Some((event, used)))
    }
}

#[cfg(test)]
mod tests {
    use corecast_proto::Msg;

    use super::*;

    #[test]
    fn frames_split_anywhere() {
        let mut stream = Vec::new();
        let frames = [
            ServerFrame::Msg(Msg { sid: 1, topic: "a.b", reply_to: "", payload: b"hello" }),
            ServerFrame::Pong { nonce: 1 },
            ServerFrame::Ping { nonce: 9 },
            ServerFrame::StatsReply { nonce: 7, json: "{\"total\":{}}" },
            ServerFrame::Msg(Msg { sid: 1, topic: "c", reply_to: "r", payload: b"" }),
        ];
        for f in &frames {
            f.encode(&mut stream);
        }
        crate::driver::assert_parses_in_pieces(
            &Corecast::default(),
            &stream,
            &[
                r#"Msg(Delivery { topic: "a.b", reply_to: "", payload: [104, 101, 108, 108, 111] })"#,
                "Pong",
                "Ping(9)",
                r#"Stats("{\"total\":{}}")"#,
                r#"Msg(Delivery { topic: "c", reply_to: "r", payload: [] })"#,
            ],
        );
    }

    #[test]
    fn broker_errors_are_errors() {
        let mut out = Vec::new();
        ServerFrame::Err(corecast_proto::ErrFrame { code: 9, fatal: true, text: "slow consumer" })
            .encode(&mut out);
        let err = Corecast::default().parse(&out).expect_err("ERR is an error");
        assert!(format!("{err:#}").contains("slow consumer"));
    }

    #[test]
    fn sessions_of_1_1_read_its_frames() {
        let mut stream = Vec::new();
        let frames = [
            ServerFrame11::NoResponders { topic: "svc.echo", reply_to: "bench.inbox.3" },
            ServerFrame11::HMsg(corecast_proto::HMsg {
                sid: 2,
                topic: "a.b",
                reply_to: "r.1",
                headers: corecast_proto::Headers::EMPTY,
                payload: b"x",
            }),
        ];
        for f in &frames {
            f.encode(&mut stream);
        }
        crate::driver::assert_parses_in_pieces(
            &Corecast::new(true),
            &stream,
            &["NoResponders", r#"Msg(Delivery { topic: "a.b", reply_to: "r.1", payload: [120] })"#],
        );
        // A version 1 session refuses them, as its peer must.
        assert!(Corecast::new(false).parse(&stream).is_err());
    }

    #[test]
    fn requests_and_group_subscriptions() {
        let mut out = Vec::new();
        Corecast::new(true).encode_request("svc", "inbox.1", b"q", &mut out).expect("request");
        let mut src = &out[..];
        let frame = ClientFrame11::decode(&mut src, 1 << 20).expect("valid").expect("whole");
        let publish = Pub { topic: "svc", reply_to: "inbox.1", payload: b"q" };
        assert_eq!(frame, ClientFrame11::Pub { publish, request: true });

        let group = Subscription { topic: "svc", group: Some("workers") };
        let pattern = Subscription::plain("a.*");
        let mut v1 = Corecast::new(false);
        assert!(v1.encode_sub(group, &mut out).is_err(), "no queue groups in version 1");
        assert!(v1.encode_sub(pattern, &mut out).is_err(), "no wildcards in version 1");
        let (mut v11, mut out) = (Corecast::new(true), Vec::new());
        v11.encode_sub(group, &mut out).expect("1.1 has queue groups");
        let mut src = &out[..];
        let frame = ClientFrame11::decode(&mut src, 1 << 20).expect("valid").expect("whole");
        let sub = Sub { sid: 1, topic: "svc", queue_group: "workers", lossy: false };
        assert_eq!(frame, ClientFrame11::Sub(sub));
    }
}
