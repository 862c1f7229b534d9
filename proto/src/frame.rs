//! The frames of protocol version 1, both directions.
//!
//! Decoding borrows from the input: strings are `&str` into the received
//! bytes and payloads are `&[u8]`, so a server can route a message without
//! copying it first. Encoding writes into any [`BufMut`].

use bytes::BufMut;

use crate::{
    error::{DecodeError, Field},
    opcode as op,
    raw::{put_header, RawFrame},
    wire::{put_long, put_short, utf8, Reader},
    MAX_CLIENT_NAME,
};

/// `HELLO`: the first frame of every session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello<'a> {
    /// Protocol version the client speaks; 1 here.
    pub version: u16,
    /// Free-form client name for the server's logs, at most 64 bytes.
    pub name: &'a str,
    /// Authentication token; may be empty. Ignored by servers without auth.
    pub token: &'a [u8],
}

/// `SUB`: subscribe a client-chosen sid to a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sub<'a> {
    /// Client-chosen id, unique among the connection's live subscriptions.
    pub sid: u32,
    /// The topic.
    pub topic: &'a str,
    /// Queue group; must be empty in version 1.
    pub queue_group: &'a str,
    /// Flag bit 0: drop and count instead of disconnecting when slow.
    pub lossy: bool,
}

/// `PUB`: publish a payload to a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pub<'a> {
    /// The topic.
    pub topic: &'a str,
    /// Where answers should go; empty for none.
    pub reply_to: &'a str,
    /// The rest of the frame.
    pub payload: &'a [u8],
}

/// A frame a client sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFrame<'a> {
    /// `0x01 HELLO`.
    Hello(Hello<'a>),
    /// `0x02 PING`: answered by `PONG` once earlier frames took effect.
    Ping {
        /// Echoed in the `PONG`.
        nonce: u64,
    },
    /// `0x03 PONG`: answers a server `PING`.
    Pong {
        /// The nonce of the server's `PING`.
        nonce: u64,
    },
    /// `0x10 SUB`.
    Sub(Sub<'a>),
    /// `0x11 UNSUB`.
    Unsub {
        /// The sid to remove.
        sid: u32,
    },
    /// `0x20 PUB`.
    Pub(Pub<'a>),
    /// `0x30 STATS` (extension): asks for the server's counters.
    Stats {
        /// Echoed in the `STATS_REPLY`.
        nonce: u64,
    },
}

/// `WELCOME`: the server's answer to `HELLO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Welcome<'a> {
    /// Protocol version the server speaks with this client.
    pub version: u16,
    /// Largest frame length the client may send.
    pub max_frame: u32,
    /// How often the server pings an otherwise silent client, in ms.
    pub ping_interval_ms: u32,
    /// The core that owns this connection.
    pub core_id: u16,
    /// Unique id of this connection within the server's lifetime.
    pub connection_id: u64,
    /// The server's name.
    pub server_name: &'a str,
}

/// `MSG`: a message delivered to a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Msg<'a> {
    /// The subscription it matched.
    pub sid: u32,
    /// The topic it was published to.
    pub topic: &'a str,
    /// The publisher's reply-to; empty for none.
    pub reply_to: &'a str,
    /// The rest of the frame.
    pub payload: &'a [u8],
}

impl Msg<'_> {
    /// Where the little-endian `sid` sits in an encoded `MSG` frame (after
    /// the length, opcode and flags). A server fanning one message out to
    /// many subscriptions encodes it once and stamps each sid here.
    pub const SID_AT: usize = 6;
}

/// `ERR`: an error report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrFrame<'a> {
    /// One of [`crate::ErrorCode`], or a code from a newer version.
    pub code: u16,
    /// Whether the server closes the connection after this frame.
    pub fatal: bool,
    /// Human-readable detail.
    pub text: &'a str,
}

/// A frame the server sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerFrame<'a> {
    /// `0x81 WELCOME`.
    Welcome(Welcome<'a>),
    /// `0x82 PING`: the client must answer with `PONG`.
    Ping {
        /// To be echoed in the client's `PONG`.
        nonce: u64,
    },
    /// `0x83 PONG`: answers a client `PING`.
    Pong {
        /// The nonce of the client's `PING`.
        nonce: u64,
    },
    /// `0x90 MSG`.
    Msg(Msg<'a>),
    /// `0x91 DROPPED`: messages lost on a lossy subscription.
    Dropped {
        /// The lossy subscription.
        sid: u32,
        /// Messages dropped since the previous notice.
        count: u64,
    },
    /// `0xE0 ERR`.
    Err(ErrFrame<'a>),
    /// `0xA0 STATS_REPLY` (extension): the server's counters.
    StatsReply {
        /// The nonce of the client's `STATS`.
        nonce: u64,
        /// A JSON object; see the specification for its shape.
        json: &'a str,
    },
    /// `0xE1 GOAWAY`.
    GoAway {
        /// Why; 1 = shutdown.
        reason: u16,
        /// How long the server keeps flushing before it closes, in ms.
        grace_ms: u32,
    },
}

fn no_flags(raw: &RawFrame<'_>) -> Result<(), DecodeError> {
    allow_flags(raw, 0)
}

fn allow_flags(raw: &RawFrame<'_>, defined: u8) -> Result<(), DecodeError> {
    match raw.flags & !defined {
        0 => Ok(()),
        _ => Err(DecodeError::ReservedFlags { opcode: raw.opcode, flags: raw.flags }),
    }
}

fn nonce_only(raw: &RawFrame<'_>) -> Result<u64, DecodeError> {
    no_flags(raw)?;
    let mut r = Reader::new(raw.body);
    let nonce = r.u64()?;
    r.finish()?;
    Ok(nonce)
}

impl<'a> ClientFrame<'a> {
    /// Decodes the next frame from the front of `src`, at most `max_frame`
    /// long (the length prefix's value).
    ///
    /// `Ok(None)`: not complete yet, `src` untouched. On a body error `src`
    /// has already moved past the frame, so a caller that treats the error as
    /// non-fatal can go on with the next one.
    pub fn decode(src: &mut &'a [u8], max_frame: u32) -> Result<Option<Self>, DecodeError> {
        RawFrame::split(src, max_frame)?.map(Self::parse).transpose()
    }

    /// Interprets a frame already cut out of the stream.
    pub fn parse(raw: RawFrame<'a>) -> Result<Self, DecodeError> {
        match raw.opcode {
            op::HELLO => parse_hello(raw),
            op::PING => Ok(Self::Ping { nonce: nonce_only(&raw)? }),
            op::PONG => Ok(Self::Pong { nonce: nonce_only(&raw)? }),
            op::SUB => parse_sub(raw),
            op::UNSUB => {
                no_flags(&raw)?;
                let mut r = Reader::new(raw.body);
                let sid = r.u32()?;
                r.finish()?;
                Ok(Self::Unsub { sid })
            }
            op::PUB => {
                no_flags(&raw)?;
                let mut r = Reader::new(raw.body);
                let topic = r.short_str(Field::Topic)?;
                let reply_to = r.short_str(Field::ReplyTo)?;
                Ok(Self::Pub(Pub { topic, reply_to, payload: r.rest() }))
            }
            op::STATS => Ok(Self::Stats { nonce: nonce_only(&raw)? }),
            other => Err(DecodeError::UnknownOpcode(other)),
        }
    }

    /// Bytes this frame takes on the wire, length prefix included.
    pub fn encoded_len(&self) -> usize {
        crate::LEN_PREFIX + 2 + self.body_len()
    }

    fn body_len(&self) -> usize {
        match self {
            Self::Hello(h) => 2 + 1 + h.name.len() + 2 + h.token.len(),
            Self::Ping { .. } | Self::Pong { .. } | Self::Stats { .. } => 8,
            Self::Sub(s) => 4 + 1 + s.topic.len() + 1 + s.queue_group.len(),
            Self::Unsub { .. } => 4,
            Self::Pub(p) => 1 + p.topic.len() + 1 + p.reply_to.len() + p.payload.len(),
        }
    }

    /// Writes the frame, length prefix included.
    ///
    /// # Panics
    /// If a string is longer than its length prefix can say (255 bytes for
    /// topics and names, 65535 for the token): validate before encoding.
    pub fn encode<B: BufMut>(&self, dst: &mut B) {
        let body = self.body_len();
        match self {
            Self::Hello(h) => {
                put_header(dst, op::HELLO, 0, body);
                dst.put_u16_le(h.version);
                put_short(dst, h.name.as_bytes());
                put_long(dst, h.token);
            }
            Self::Ping { nonce } => {
                put_header(dst, op::PING, 0, body);
                dst.put_u64_le(*nonce);
            }
            Self::Pong { nonce } => {
                put_header(dst, op::PONG, 0, body);
                dst.put_u64_le(*nonce);
            }
            Self::Sub(s) => {
                let flags = if s.lossy { op::SUB_FLAG_LOSSY } else { 0 };
                put_header(dst, op::SUB, flags, body);
                dst.put_u32_le(s.sid);
                put_short(dst, s.topic.as_bytes());
                put_short(dst, s.queue_group.as_bytes());
            }
            Self::Unsub { sid } => {
                put_header(dst, op::UNSUB, 0, body);
                dst.put_u32_le(*sid);
            }
            Self::Pub(p) => {
                put_header(dst, op::PUB, 0, body);
                put_short(dst, p.topic.as_bytes());
                put_short(dst, p.reply_to.as_bytes());
                dst.put_slice(p.payload);
            }
            Self::Stats { nonce } => {
                put_header(dst, op::STATS, 0, body);
                dst.put_u64_le(*nonce);
            }
        }
    }
}

fn parse_hello(raw: RawFrame<'_>) -> Result<ClientFrame<'_>, DecodeError> {
    no_flags(&raw)?;
    let mut r = Reader::new(raw.body);
    let version = r.u16()?;
    let name_len = r.u8()? as usize;
    let name = utf8(r.bytes(name_len)?, Field::ClientName)?;
    let token = r.long_bytes()?;
    r.finish()?;
    if name.len() > MAX_CLIENT_NAME {
        return Err(DecodeError::TooLong {
            field: Field::ClientName,
            len: name.len(),
            max: MAX_CLIENT_NAME,
        });
    }
    Ok(ClientFrame::Hello(Hello { version, name, token }))
}

fn parse_sub(raw: RawFrame<'_>) -> Result<ClientFrame<'_>, DecodeError> {
    allow_flags(&raw, op::SUB_FLAG_LOSSY)?;
    let mut r = Reader::new(raw.body);
    let sid = r.u32()?;
    let topic = r.short_str(Field::Topic)?;
    let queue_group = r.short_str(Field::QueueGroup)?;
    r.finish()?;
    let lossy = raw.flags & op::SUB_FLAG_LOSSY != 0;
    Ok(ClientFrame::Sub(Sub { sid, topic, queue_group, lossy }))
}

impl<'a> ServerFrame<'a> {
    /// Decodes the next server frame; see [`ClientFrame::decode`]. A client
    /// passes the `max_frame` from `WELCOME` plus 4, since a `MSG` carrying a
    /// maximal `PUB` is 4 bytes longer.
    pub fn decode(src: &mut &'a [u8], max_frame: u32) -> Result<Option<Self>, DecodeError> {
        RawFrame::split(src, max_frame)?.map(Self::parse).transpose()
    }

    /// Interprets a frame already cut out of the stream.
    pub fn parse(raw: RawFrame<'a>) -> Result<Self, DecodeError> {
        match raw.opcode {
            op::WELCOME => parse_welcome(raw),
            op::SERVER_PING => Ok(Self::Ping { nonce: nonce_only(&raw)? }),
            op::SERVER_PONG => Ok(Self::Pong { nonce: nonce_only(&raw)? }),
            op::MSG => {
                no_flags(&raw)?;
                let mut r = Reader::new(raw.body);
                let sid = r.u32()?;
                let topic = r.short_str(Field::Topic)?;
                let reply_to = r.short_str(Field::ReplyTo)?;
                Ok(Self::Msg(Msg { sid, topic, reply_to, payload: r.rest() }))
            }
            op::DROPPED => {
                no_flags(&raw)?;
                let mut r = Reader::new(raw.body);
                let (sid, count) = (r.u32()?, r.u64()?);
                r.finish()?;
                Ok(Self::Dropped { sid, count })
            }
            op::ERR => parse_err(raw),
            op::STATS_REPLY => parse_stats_reply(raw),
            op::GOAWAY => {
                no_flags(&raw)?;
                let mut r = Reader::new(raw.body);
                let (reason, grace_ms) = (r.u16()?, r.u32()?);
                r.finish()?;
                Ok(Self::GoAway { reason, grace_ms })
            }
            other => Err(DecodeError::UnknownOpcode(other)),
        }
    }

    /// Bytes this frame takes on the wire, length prefix included.
    pub fn encoded_len(&self) -> usize {
        crate::LEN_PREFIX + 2 + self.body_len()
    }

    fn body_len(&self) -> usize {
        match self {
            Self::Welcome(w) => 2 + 4 + 4 + 2 + 8 + 1 + w.server_name.len(),
            Self::Ping { .. } | Self::Pong { .. } => 8,
            Self::Msg(m) => 4 + 1 + m.topic.len() + 1 + m.reply_to.len() + m.payload.len(),
            Self::Dropped { .. } => 4 + 8,
            Self::Err(e) => 2 + 1 + 2 + e.text.len(),
            Self::StatsReply { json, .. } => 8 + 4 + json.len(),
            Self::GoAway { .. } => 2 + 4,
        }
    }

    /// Writes the frame, length prefix included.
    ///
    /// # Panics
    /// If a string is longer than its length prefix can say.
    pub fn encode<B: BufMut>(&self, dst: &mut B) {
        let body = self.body_len();
        match self {
            Self::Welcome(w) => {
                put_header(dst, op::WELCOME, 0, body);
                dst.put_u16_le(w.version);
                dst.put_u32_le(w.max_frame);
                dst.put_u32_le(w.ping_interval_ms);
                dst.put_u16_le(w.core_id);
                dst.put_u64_le(w.connection_id);
                put_short(dst, w.server_name.as_bytes());
            }
            Self::Ping { nonce } => {
                put_header(dst, op::SERVER_PING, 0, body);
                dst.put_u64_le(*nonce);
            }
            Self::Pong { nonce } => {
                put_header(dst, op::SERVER_PONG, 0, body);
                dst.put_u64_le(*nonce);
            }
            Self::Msg(m) => {
                put_header(dst, op::MSG, 0, body);
                dst.put_u32_le(m.sid);
                put_short(dst, m.topic.as_bytes());
                put_short(dst, m.reply_to.as_bytes());
                dst.put_slice(m.payload);
            }
            Self::Dropped { sid, count } => {
                put_header(dst, op::DROPPED, 0, body);
                dst.put_u32_le(*sid);
                dst.put_u64_le(*count);
            }
            Self::Err(e) => {
                put_header(dst, op::ERR, 0, body);
                dst.put_u16_le(e.code);
                dst.put_u8(u8::from(e.fatal));
                put_long(dst, e.text.as_bytes());
            }
            Self::StatsReply { nonce, json } => {
                put_header(dst, op::STATS_REPLY, 0, body);
                dst.put_u64_le(*nonce);
                dst.put_u32_le(u32::try_from(json.len()).expect("stats JSON longer than u32::MAX"));
                dst.put_slice(json.as_bytes());
            }
            Self::GoAway { reason, grace_ms } => {
                put_header(dst, op::GOAWAY, 0, body);
                dst.put_u16_le(*reason);
                dst.put_u32_le(*grace_ms);
            }
        }
    }
}

fn parse_welcome(raw: RawFrame<'_>) -> Result<ServerFrame<'_>, DecodeError> {
    no_flags(&raw)?;
    let mut r = Reader::new(raw.body);
    let welcome = Welcome {
        version: r.u16()?,
        max_frame: r.u32()?,
        ping_interval_ms: r.u32()?,
        core_id: r.u16()?,
        connection_id: r.u64()?,
        server_name: r.short_str(Field::ServerName)?,
    };
    r.finish()?;
    Ok(ServerFrame::Welcome(welcome))
}

fn parse_err(raw: RawFrame<'_>) -> Result<ServerFrame<'_>, DecodeError> {
    no_flags(&raw)?;
    let mut r = Reader::new(raw.body);
    let code = r.u16()?;
    let fatal = match r.u8()? {
        0 => false,
        1 => true,
        b => return Err(DecodeError::BadBool(b)),
    };
    let text = utf8(r.long_bytes()?, Field::ErrorText)?;
    r.finish()?;
    Ok(ServerFrame::Err(ErrFrame { code, fatal, text }))
}

fn parse_stats_reply(raw: RawFrame<'_>) -> Result<ServerFrame<'_>, DecodeError> {
    no_flags(&raw)?;
    let mut r = Reader::new(raw.body);
    let nonce = r.u64()?;
    let len = r.u32()? as usize;
    let json = utf8(r.bytes(len)?, Field::StatsJson)?;
    r.finish()?;
    Ok(ServerFrame::StatsReply { nonce, json })
}
