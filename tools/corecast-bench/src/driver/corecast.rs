//! corecast: the binary protocol of `proto/PROTOCOL.md`, through the
//! `corecast-proto` codec. Subscriptions are confirmed with `PING`/`PONG`;
//! the `STATS` extension frame reads the broker's counters.

use anyhow::{bail, Context};
use corecast_proto::{ClientFrame, Hello, Pub, ServerFrame, Sub, VERSION};

use super::{Codec, Event, Wire};

/// Frames a client accepts before `WELCOME` says otherwise (spec 2.4).
const DEFAULT_MAX_FRAME: u32 = 1 << 20;

/// The corecast codec.
#[derive(Debug)]
pub struct Corecast {
    /// Limit on server frames: `max_frame` from `WELCOME` plus 4.
    max_server_frame: u32,
    next_sid: u32,
}

impl Default for Corecast {
    fn default() -> Self {
        Self { max_server_frame: DEFAULT_MAX_FRAME + 4, next_sid: 1 }
    }
}

fn encode(frame: &ClientFrame<'_>, out: &mut Vec<u8>) {
    out.reserve(frame.encoded_len());
    frame.encode(out);
}

impl Codec for Corecast {
    fn handshake(&mut self, wire: &mut Wire, name: &str) -> anyhow::Result<()> {
        let name = &name[..name.len().min(64)];
        let mut out = Vec::new();
        encode(&ClientFrame::Hello(Hello { version: VERSION, name, token: b"" }), &mut out);
        wire.send(&out)?;
        let deadline = wire.deadline();
        loop {
            let mut src = wire.data();
            let before = src.len();
            match ServerFrame::decode(&mut src, DEFAULT_MAX_FRAME + 4).context("corecast frame")? {
                Some(ServerFrame::Welcome(w)) => {
                    self.max_server_frame = w.max_frame.saturating_add(4);
                    let used = before - src.len();
                    wire.consume(used);
                    return Ok(());
                }
                Some(ServerFrame::Err(e)) => {
                    bail!("corecast refused HELLO: ERR {}: {}", e.code, e.text)
                }
                Some(other) => bail!("expected WELCOME, got {other:?}"),
                None => wire.read_more("WELCOME", deadline)?,
            }
        }
    }

    fn encode_sub(&mut self, topic: &str, out: &mut Vec<u8>) {
        let sid = self.next_sid;
        self.next_sid = self.next_sid.wrapping_add(1);
        encode(&ClientFrame::Sub(Sub { sid, topic, queue_group: "", lossy: false }), out);
    }

    fn encode_pub(&self, topic: &str, payload: &[u8], out: &mut Vec<u8>) {
        encode(&ClientFrame::Pub(Pub { topic, reply_to: "", payload }), out);
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
        let Some(frame) =
            ServerFrame::decode(&mut src, self.max_server_frame).context("corecast frame")?
        else {
            return Ok(None);
        };
        let used = buf.len() - src.len();
        let event = match frame {
            ServerFrame::Msg(m) => Event::Msg { topic: m.topic, payload: m.payload },
            ServerFrame::Pong { .. } => Event::Pong,
            ServerFrame::Ping { nonce } => Event::Ping(nonce),
            ServerFrame::Dropped { count, .. } => Event::Dropped(count),
            ServerFrame::StatsReply { json, .. } => Event::Stats(json),
            ServerFrame::Welcome(_) => Event::Other,
            ServerFrame::Err(e) => {
                bail!("corecast ERR {} (fatal: {}): {}", e.code, e.fatal, e.text)
            }
            ServerFrame::GoAway { reason, .. } => bail!("corecast GOAWAY (reason {reason})"),
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
                r#"Msg { topic: "a.b", payload: [104, 101, 108, 108, 111] }"#,
                "Pong",
                "Ping(9)",
                r#"Stats("{\"total\":{}}")"#,
                r#"Msg { topic: "c", payload: [] }"#,
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
}
