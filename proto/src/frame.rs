//! The frames of protocol version 1 and 1.1, both directions.
//!
//! Decoding borrows from the input: strings are `&str` into the received
//! bytes and payloads are `&[u8]`, so a server can route a message without
//! copying it first. Encoding writes into any [`BufMut`].
//!
//! Each direction has two decoders. [`ClientFrame`] and [`ServerFrame`] are
//! version 1 exactly: they refuse the opcodes and flag bits of 1.1 as a
//! version 1 peer must (*unknown opcode*, *malformed frame*).
//! [`ClientFrame11`] and [`ServerFrame11`] read everything of version 1 and
//! the additions of 1.1 (`PROTOCOL.md`, section 13). A server decodes `HELLO`
//! and every frame of a 1.1 session with the 1.1 decoder, and the frames of a
//! version 1 session with the version 1 decoder.

use bytes::BufMut;

use crate::{
    error::{DecodeError, Field},
    header::Headers,
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
    /// Queue group; must be empty in a version 1 session. In a 1.1 session a
    /// non-empty name joins that queue group.
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

    /// The most bytes [`Self::encode_head`] writes: length, opcode, flags,
    /// sid, and the topic and reply-to at their longest.
    pub const MAX_HEAD: usize = crate::LEN_PREFIX + 2 + 4 + 2 * (1 + 255);

    /// Writes the frame up to its payload (the length prefix counts the
    /// payload too): followed by the payload, it is exactly what
    /// [`ServerFrame::encode`] writes. A server that copies the payload
    /// straight from where the publish lies into a subscriber's queue
    /// copies it once instead of twice.
    ///
    /// # Panics
    /// If the topic or reply-to is longer than 255 bytes.
    #[inline]
    pub fn encode_head<B: BufMut>(&self, dst: &mut B) {
        let body = 4 + 1 + self.topic.len() + 1 + self.reply_to.len() + self.payload.len();
        put_header(dst, op::MSG, 0, body);
        dst.put_u32_le(self.sid);
        put_short(dst, self.topic.as_bytes());
        put_short(dst, self.reply_to.as_bytes());
    }
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

#[inline]
fn no_flags(raw: &RawFrame<'_>) -> Result<(), DecodeError> {
    allow_flags(raw, 0)
}

#[inline]
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
            op::HELLO => {
                no_flags(&raw)?;
                Ok(Self::Hello(hello_body(raw.body)?))
            }
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
                Ok(Self::Pub(pub_body(raw.body)?))
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
            Self::Hello(h) => put_hello(dst, h, 0, body),
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
            Self::Pub(p) => put_pub(dst, p, 0, body),
            Self::Stats { nonce } => {
                put_header(dst, op::STATS, 0, body);
                dst.put_u64_le(*nonce);
            }
        }
    }
}

fn hello_body(body: &[u8]) -> Result<Hello<'_>, DecodeError> {
    let mut r = Reader::new(body);
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
    Ok(Hello { version, name, token })
}

fn put_hello<B: BufMut>(dst: &mut B, h: &Hello<'_>, flags: u8, body: usize) {
    put_header(dst, op::HELLO, flags, body);
    dst.put_u16_le(h.version);
    put_short(dst, h.name.as_bytes());
    put_long(dst, h.token);
}

impl<'a> Pub<'a> {
    /// The flagless `PUB` in `raw` when its topic is `topic`, parsed
    /// without checking the topic's UTF-8 again; `None` when `raw` is
    /// anything else (another opcode, a flag bit, another topic). A server
    /// that batches the `PUB`s following one to the same topic reads each
    /// this way; where this gives `Some`, [`ClientFrame::parse`] and
    /// [`ClientFrame11::parse`] give the same `PUB` or the same error.
    pub fn parse_to(raw: &RawFrame<'a>, topic: &'a str) -> Option<Result<Self, DecodeError>> {
        let t = topic.as_bytes();
        let same = raw.opcode == op::PUB
            && raw.flags == 0
            && u8::try_from(t.len()).is_ok_and(|len| raw.body.first() == Some(&len))
            && raw.body.get(1..1 + t.len()) == Some(t);
        if !same {
            return None;
        }
        let mut r = Reader::new(&raw.body[1 + t.len()..]);
        Some(r.short_str(Field::ReplyTo).map(|reply_to| Pub { topic, reply_to, payload: r.rest() }))
    }
}

fn pub_body(body: &[u8]) -> Result<Pub<'_>, DecodeError> {
    let mut r = Reader::new(body);
    let topic = r.short_str(Field::Topic)?;
    let reply_to = r.short_str(Field::ReplyTo)?;
    Ok(Pub { topic, reply_to, payload: r.rest() })
}

fn put_pub<B: BufMut>(dst: &mut B, p: &Pub<'_>, flags: u8, body: usize) {
    put_header(dst, op::PUB, flags, body);
    put_short(dst, p.topic.as_bytes());
    put_short(dst, p.reply_to.as_bytes());
    dst.put_slice(p.payload);
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

/// The body of a `MSG` frame.
#[inline]
fn msg_body<'a>(raw: &RawFrame<'a>) -> Result<Msg<'a>, DecodeError> {
    no_flags(raw)?;
    let mut r = Reader::new(raw.body);
    let sid = r.u32()?;
    let topic = r.short_str(Field::Topic)?;
    let reply_to = r.short_str(Field::ReplyTo)?;
    Ok(Msg { sid, topic, reply_to, payload: r.rest() })
}

impl<'a> ServerFrame<'a> {
    /// Decodes the next server frame; see [`ClientFrame::decode`]. A client
    /// passes the `max_frame` from `WELCOME` plus 4, since a `MSG` carrying a
    /// maximal `PUB` is 4 bytes longer.
    pub fn decode(src: &mut &'a [u8], max_frame: u32) -> Result<Option<Self>, DecodeError> {
        RawFrame::split(src, max_frame)?.map(Self::parse).transpose()
    }

    /// Interprets a frame already cut out of the stream. `MSG`, the frame
    /// a subscriber's receive loop meets nearly always, is parsed inline.
    #[inline]
    pub fn parse(raw: RawFrame<'a>) -> Result<Self, DecodeError> {
        if raw.opcode == op::MSG {
            return msg_body(&raw).map(Self::Msg);
        }
        Self::parse_other(raw)
    }

    /// [`Self::parse`] for every opcode but `MSG`.
    fn parse_other(raw: RawFrame<'a>) -> Result<Self, DecodeError> {
        match raw.opcode {
            op::WELCOME => {
                no_flags(&raw)?;
                Ok(Self::Welcome(welcome_body(raw.body)?))
            }
            op::SERVER_PING => Ok(Self::Ping { nonce: nonce_only(&raw)? }),
            op::SERVER_PONG => Ok(Self::Pong { nonce: nonce_only(&raw)? }),
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
            Self::Welcome(w) => put_welcome(dst, w, 0, body),
            Self::Ping { nonce } => {
                put_header(dst, op::SERVER_PING, 0, body);
                dst.put_u64_le(*nonce);
            }
            Self::Pong { nonce } => {
                put_header(dst, op::SERVER_PONG, 0, body);
                dst.put_u64_le(*nonce);
            }
            Self::Msg(m) => {
                m.encode_head(dst);
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

fn welcome_body(body: &[u8]) -> Result<Welcome<'_>, DecodeError> {
    let mut r = Reader::new(body);
    let welcome = Welcome {
        version: r.u16()?,
        max_frame: r.u32()?,
        ping_interval_ms: r.u32()?,
        core_id: r.u16()?,
        connection_id: r.u64()?,
        server_name: r.short_str(Field::ServerName)?,
    };
    r.finish()?;
    Ok(welcome)
}

fn put_welcome<B: BufMut>(dst: &mut B, w: &Welcome<'_>, flags: u8, body: usize) {
    put_header(dst, op::WELCOME, flags, body);
    dst.put_u16_le(w.version);
    dst.put_u32_le(w.max_frame);
    dst.put_u32_le(w.ping_interval_ms);
    dst.put_u16_le(w.core_id);
    dst.put_u64_le(w.connection_id);
    put_short(dst, w.server_name.as_bytes());
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

// ------------------------------------------------------------ version 1.1

/// `HPUB` (1.1): publish a payload with a header block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HPub<'a> {
    /// The topic.
    pub topic: &'a str,
    /// Where answers should go; empty for none (required for a request).
    pub reply_to: &'a str,
    /// The header block, checked.
    pub headers: Headers<'a>,
    /// The rest of the frame.
    pub payload: &'a [u8],
    /// Flag bit 1: the publication is a request, answered with
    /// `NO_RESPONDERS` when no subscription would receive it.
    pub request: bool,
}

/// `HMSG` (1.1): a message with a header block, delivered to a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HMsg<'a> {
    /// The subscription it matched.
    pub sid: u32,
    /// The topic it was published to (never a wildcard pattern).
    pub topic: &'a str,
    /// The publisher's reply-to; empty for none.
    pub reply_to: &'a str,
    /// The publisher's header block, unchanged.
    pub headers: Headers<'a>,
    /// The rest of the frame.
    pub payload: &'a [u8],
}

impl HMsg<'_> {
    /// Where the little-endian `sid` sits in an encoded `HMSG` frame, as in
    /// `MSG` ([`Msg::SID_AT`]).
    pub const SID_AT: usize = 6;
}

/// A frame a client sends, as a 1.1 decoder reads it: every frame of
/// version 1 and the additions of 1.1.
///
/// [`ClientFrame11::to_v1`] gives the version 1 frame with the same bytes,
/// when there is one, and every [`ClientFrame`] converts into this type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientFrame11<'a> {
    /// `0x01 HELLO`, with its 1.1 flag bits.
    Hello {
        /// The fields, as in version 1.
        hello: Hello<'a>,
        /// Flag bit 1: asks for a version 1.1 session.
        v1_1: bool,
        /// Flag bit 2: never deliver this connection's publications to its
        /// own subscriptions. Defined only with `v1_1`: without it the frame
        /// encodes to bytes that every decoder refuses.
        no_echo: bool,
        /// Flag bit 3: the token field holds a typed credential, read with
        /// [`crate::Credential::parse`] (`PROTOCOL.md` section 14). Defined
        /// only with `v1_1`, like `no_echo`. Without it the token is a plain
        /// shared token, as in version 1.
        credential: bool,
    },
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
    /// `0x10 SUB`; in a 1.1 session the topic may be a wildcard pattern and
    /// the queue group non-empty.
    Sub(Sub<'a>),
    /// `0x11 UNSUB`.
    Unsub {
        /// The sid to remove.
        sid: u32,
    },
    /// `0x20 PUB`, with its 1.1 flag bit.
    Pub {
        /// The fields, as in version 1.
        publish: Pub<'a>,
        /// Flag bit 1: the publication is a request.
        request: bool,
    },
    /// `0x22 HPUB` (1.1).
    HPub(HPub<'a>),
    /// `0x30 STATS` (extension): asks for the server's counters.
    Stats {
        /// Echoed in the `STATS_REPLY`.
        nonce: u64,
    },
}

impl<'a> From<ClientFrame<'a>> for ClientFrame11<'a> {
    fn from(frame: ClientFrame<'a>) -> Self {
        match frame {
            ClientFrame::Hello(hello) => {
                Self::Hello { hello, v1_1: false, no_echo: false, credential: false }
            }
            ClientFrame::Ping { nonce } => Self::Ping { nonce },
            ClientFrame::Pong { nonce } => Self::Pong { nonce },
            ClientFrame::Sub(s) => Self::Sub(s),
            ClientFrame::Unsub { sid } => Self::Unsub { sid },
            ClientFrame::Pub(publish) => Self::Pub { publish, request: false },
            ClientFrame::Stats { nonce } => Self::Stats { nonce },
        }
    }
}

impl<'a> ClientFrame11<'a> {
    /// Decodes the next frame from the front of `src` as a 1.1 decoder; see
    /// [`ClientFrame::decode`] for what the outcomes mean.
    pub fn decode(src: &mut &'a [u8], max_frame: u32) -> Result<Option<Self>, DecodeError> {
        RawFrame::split(src, max_frame)?.map(Self::parse).transpose()
    }

    /// Interprets a frame already cut out of the stream.
    pub fn parse(raw: RawFrame<'a>) -> Result<Self, DecodeError> {
        match raw.opcode {
            op::HELLO => {
                // Bits 2 (no echo) and 3 (credential) are defined only
                // together with bit 1 (v1.1).
                let v1_1 = raw.flags & op::HELLO_FLAG_V1_1 != 0;
                let defined = if v1_1 {
                    op::HELLO_FLAG_V1_1 | op::HELLO_FLAG_NO_ECHO | op::HELLO_FLAG_CREDENTIAL
                } else {
                    0
                };
                allow_flags(&raw, defined)?;
                let no_echo = raw.flags & op::HELLO_FLAG_NO_ECHO != 0;
                let credential = raw.flags & op::HELLO_FLAG_CREDENTIAL != 0;
                Ok(Self::Hello { hello: hello_body(raw.body)?, v1_1, no_echo, credential })
            }
            op::PUB => {
                allow_flags(&raw, op::PUB_FLAG_REQUEST)?;
                let request = raw.flags & op::PUB_FLAG_REQUEST != 0;
                Ok(Self::Pub { publish: pub_body(raw.body)?, request })
            }
            op::HPUB => {
                allow_flags(&raw, op::PUB_FLAG_REQUEST)?;
                let mut r = Reader::new(raw.body);
                let topic = r.short_str(Field::Topic)?;
                let reply_to = r.short_str(Field::ReplyTo)?;
                let headers = header_block(&mut r)?;
                let request = raw.flags & op::PUB_FLAG_REQUEST != 0;
                Ok(Self::HPub(HPub { topic, reply_to, headers, payload: r.rest(), request }))
            }
            _ => ClientFrame::parse(raw).map(Self::from),
        }
    }

    /// The version 1 frame that has the same bytes, if there is one: `None`
    /// for `HPUB` and for frames with 1.1 flag bits set.
    pub fn to_v1(&self) -> Option<ClientFrame<'a>> {
        Some(match *self {
            Self::Hello { hello, v1_1: false, no_echo: false, credential: false } => {
                ClientFrame::Hello(hello)
            }
            Self::Ping { nonce } => ClientFrame::Ping { nonce },
            Self::Pong { nonce } => ClientFrame::Pong { nonce },
            Self::Sub(s) => ClientFrame::Sub(s),
            Self::Unsub { sid } => ClientFrame::Unsub { sid },
            Self::Pub { publish, request: false } => ClientFrame::Pub(publish),
            Self::Stats { nonce } => ClientFrame::Stats { nonce },
            Self::Hello { .. } | Self::Pub { .. } | Self::HPub(_) => return None,
        })
    }

    /// Bytes this frame takes on the wire, length prefix included.
    pub fn encoded_len(&self) -> usize {
        crate::LEN_PREFIX + 2 + self.body_len()
    }

    fn body_len(&self) -> usize {
        match *self {
            Self::Hello { hello, .. } => ClientFrame::Hello(hello).body_len(),
            Self::Ping { nonce } => ClientFrame::Ping { nonce }.body_len(),
            Self::Pong { nonce } => ClientFrame::Pong { nonce }.body_len(),
            Self::Sub(s) => ClientFrame::Sub(s).body_len(),
            Self::Unsub { sid } => ClientFrame::Unsub { sid }.body_len(),
            Self::Pub { publish, .. } => ClientFrame::Pub(publish).body_len(),
            Self::Stats { nonce } => ClientFrame::Stats { nonce }.body_len(),
            Self::HPub(h) => {
                let strings = h.topic.len() + h.reply_to.len();
                1 + 1 + 2 + strings + h.headers.as_bytes().len() + h.payload.len()
            }
        }
    }

    /// Writes the frame, length prefix included.
    ///
    /// # Panics
    /// If a string is longer than its length prefix can say (255 bytes for
    /// topics and names, 65535 for the token): validate before encoding.
    pub fn encode<B: BufMut>(&self, dst: &mut B) {
        let body = self.body_len();
        match *self {
            Self::Hello { hello, v1_1, no_echo, credential } => {
                let flags = flag(v1_1, op::HELLO_FLAG_V1_1)
                    | flag(no_echo, op::HELLO_FLAG_NO_ECHO)
                    | flag(credential, op::HELLO_FLAG_CREDENTIAL);
                put_hello(dst, &hello, flags, body);
            }
            Self::Pub { publish, request } => {
                put_pub(dst, &publish, flag(request, op::PUB_FLAG_REQUEST), body);
            }
            Self::HPub(h) => {
                put_header(dst, op::HPUB, flag(h.request, op::PUB_FLAG_REQUEST), body);
                put_short(dst, h.topic.as_bytes());
                put_short(dst, h.reply_to.as_bytes());
                put_long(dst, h.headers.as_bytes());
                dst.put_slice(h.payload);
            }
            Self::Ping { nonce } => ClientFrame::Ping { nonce }.encode(dst),
            Self::Pong { nonce } => ClientFrame::Pong { nonce }.encode(dst),
            Self::Sub(s) => ClientFrame::Sub(s).encode(dst),
            Self::Unsub { sid } => ClientFrame::Unsub { sid }.encode(dst),
            Self::Stats { nonce } => ClientFrame::Stats { nonce }.encode(dst),
        }
    }
}

/// A frame the server sends, as a 1.1 decoder reads it: every frame of
/// version 1 and the additions of 1.1.
///
/// [`ServerFrame11::to_v1`] gives the version 1 frame with the same bytes,
/// when there is one, and every [`ServerFrame`] converts into this type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerFrame11<'a> {
    /// `0x81 WELCOME`, with its 1.1 flag bit.
    Welcome {
        /// The fields, as in version 1.
        welcome: Welcome<'a>,
        /// Flag bit 1: the session is a version 1.1 session.
        v1_1: bool,
    },
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
    /// `0x92 HMSG` (1.1).
    HMsg(HMsg<'a>),
    /// `0x93 NO_RESPONDERS` (1.1): no subscription would receive a request.
    NoResponders {
        /// The request's topic.
        topic: &'a str,
        /// The request's reply-to, which names the request to its client.
        reply_to: &'a str,
    },
    /// `0xA0 STATS_REPLY` (extension): the server's counters.
    StatsReply {
        /// The nonce of the client's `STATS`.
        nonce: u64,
        /// A JSON object; see the specification for its shape.
        json: &'a str,
    },
    /// `0xE0 ERR`.
    Err(ErrFrame<'a>),
    /// `0xE1 GOAWAY`.
    GoAway {
        /// Why; 1 = shutdown.
        reason: u16,
        /// How long the server keeps flushing before it closes, in ms.
        grace_ms: u32,
    },
}

impl<'a> From<ServerFrame<'a>> for ServerFrame11<'a> {
    fn from(frame: ServerFrame<'a>) -> Self {
        match frame {
            ServerFrame::Welcome(welcome) => Self::Welcome { welcome, v1_1: false },
            ServerFrame::Ping { nonce } => Self::Ping { nonce },
            ServerFrame::Pong { nonce } => Self::Pong { nonce },
            ServerFrame::Msg(m) => Self::Msg(m),
            ServerFrame::Dropped { sid, count } => Self::Dropped { sid, count },
            ServerFrame::Err(e) => Self::Err(e),
            ServerFrame::StatsReply { nonce, json } => Self::StatsReply { nonce, json },
            ServerFrame::GoAway { reason, grace_ms } => Self::GoAway { reason, grace_ms },
        }
    }
}

impl<'a> ServerFrame11<'a> {
    /// Decodes the next server frame as a 1.1 decoder; see
    /// [`ServerFrame::decode`] (a client passes `max_frame` + 4 here too:
    /// an `HMSG` is 4 bytes longer than the `HPUB` it carries).
    pub fn decode(src: &mut &'a [u8], max_frame: u32) -> Result<Option<Self>, DecodeError> {
        RawFrame::split(src, max_frame)?.map(Self::parse).transpose()
    }

    /// Interprets a frame already cut out of the stream.
    pub fn parse(raw: RawFrame<'a>) -> Result<Self, DecodeError> {
        match raw.opcode {
            op::WELCOME => {
                allow_flags(&raw, op::WELCOME_FLAG_V1_1)?;
                let v1_1 = raw.flags & op::WELCOME_FLAG_V1_1 != 0;
                Ok(Self::Welcome { welcome: welcome_body(raw.body)?, v1_1 })
            }
            op::HMSG => {
                no_flags(&raw)?;
                let mut r = Reader::new(raw.body);
                let sid = r.u32()?;
                let topic = r.short_str(Field::Topic)?;
                let reply_to = r.short_str(Field::ReplyTo)?;
                let headers = header_block(&mut r)?;
                Ok(Self::HMsg(HMsg { sid, topic, reply_to, headers, payload: r.rest() }))
            }
            op::NO_RESPONDERS => {
                no_flags(&raw)?;
                let mut r = Reader::new(raw.body);
                let topic = r.short_str(Field::Topic)?;
                let reply_to = r.short_str(Field::ReplyTo)?;
                r.finish()?;
                Ok(Self::NoResponders { topic, reply_to })
            }
            _ => ServerFrame::parse(raw).map(Self::from),
        }
    }

    /// The version 1 frame that has the same bytes, if there is one: `None`
    /// for `HMSG`, `NO_RESPONDERS` and a `WELCOME` with its 1.1 bit set. A
    /// server never sends a version 1 session a frame without one.
    pub fn to_v1(&self) -> Option<ServerFrame<'a>> {
        Some(match *self {
            Self::Welcome { welcome, v1_1: false } => ServerFrame::Welcome(welcome),
            Self::Ping { nonce } => ServerFrame::Ping { nonce },
            Self::Pong { nonce } => ServerFrame::Pong { nonce },
            Self::Msg(m) => ServerFrame::Msg(m),
            Self::Dropped { sid, count } => ServerFrame::Dropped { sid, count },
            Self::StatsReply { nonce, json } => ServerFrame::StatsReply { nonce, json },
            Self::Err(e) => ServerFrame::Err(e),
            Self::GoAway { reason, grace_ms } => ServerFrame::GoAway { reason, grace_ms },
            Self::Welcome { .. } | Self::HMsg(_) | Self::NoResponders { .. } => return None,
        })
    }

    /// Bytes this frame takes on the wire, length prefix included.
    pub fn encoded_len(&self) -> usize {
        crate::LEN_PREFIX + 2 + self.body_len()
    }

    fn body_len(&self) -> usize {
        match *self {
            Self::Welcome { welcome, .. } => ServerFrame::Welcome(welcome).body_len(),
            Self::HMsg(m) => {
                let strings = m.topic.len() + m.reply_to.len();
                4 + 1 + 1 + 2 + strings + m.headers.as_bytes().len() + m.payload.len()
            }
            Self::NoResponders { topic, reply_to } => 1 + topic.len() + 1 + reply_to.len(),
            Self::Ping { nonce } => ServerFrame::Ping { nonce }.body_len(),
            Self::Pong { nonce } => ServerFrame::Pong { nonce }.body_len(),
            Self::Msg(m) => ServerFrame::Msg(m).body_len(),
            Self::Dropped { sid, count } => ServerFrame::Dropped { sid, count }.body_len(),
            Self::StatsReply { nonce, json } => ServerFrame::StatsReply { nonce, json }.body_len(),
            Self::Err(e) => ServerFrame::Err(e).body_len(),
            Self::GoAway { reason, grace_ms } => {
                ServerFrame::GoAway { reason, grace_ms }.body_len()
            }
        }
    }

    /// Writes the frame, length prefix included.
    ///
    /// # Panics
    /// If a string is longer than its length prefix can say.
    pub fn encode<B: BufMut>(&self, dst: &mut B) {
        let body = self.body_len();
        match *self {
            Self::Welcome { welcome, v1_1 } => {
                put_welcome(dst, &welcome, flag(v1_1, op::WELCOME_FLAG_V1_1), body);
            }
            Self::HMsg(m) => {
                put_header(dst, op::HMSG, 0, body);
                dst.put_u32_le(m.sid);
                put_short(dst, m.topic.as_bytes());
                put_short(dst, m.reply_to.as_bytes());
                put_long(dst, m.headers.as_bytes());
                dst.put_slice(m.payload);
            }
            Self::NoResponders { topic, reply_to } => {
                put_header(dst, op::NO_RESPONDERS, 0, body);
                put_short(dst, topic.as_bytes());
                put_short(dst, reply_to.as_bytes());
            }
            Self::Ping { nonce } => ServerFrame::Ping { nonce }.encode(dst),
            Self::Pong { nonce } => ServerFrame::Pong { nonce }.encode(dst),
            Self::Msg(m) => ServerFrame::Msg(m).encode(dst),
            Self::Dropped { sid, count } => ServerFrame::Dropped { sid, count }.encode(dst),
            Self::StatsReply { nonce, json } => ServerFrame::StatsReply { nonce, json }.encode(dst),
            Self::Err(e) => ServerFrame::Err(e).encode(dst),
            Self::GoAway { reason, grace_ms } => {
                ServerFrame::GoAway { reason, grace_ms }.encode(dst)
            }
        }
    }
}

/// `bit` if `set`, else 0.
fn flag(set: bool, bit: u8) -> u8 {
    if set {
        bit
    } else {
        0
    }
}

/// A `u16`-length header block: its length running past the end of the
/// frame is [`DecodeError::Truncated`], anything wrong inside it
/// [`DecodeError::BadHeader`].
fn header_block<'a>(r: &mut Reader<'a>) -> Result<Headers<'a>, DecodeError> {
    Headers::parse(r.long_bytes()?).map_err(DecodeError::BadHeader)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{error::DecodeError, header::HeaderBlock};

    const MAX: u32 = u32::MAX;

    /// `Pub::parse_to` on `bytes` (one whole frame) with `topic`.
    fn parse_to<'a>(bytes: &'a [u8], topic: &'a str) -> Option<Result<Pub<'a>, DecodeError>> {
        let mut src = bytes;
        let raw = RawFrame::split(&mut src, MAX).expect("valid").expect("whole");
        Pub::parse_to(&raw, topic)
    }

    #[test]
    fn a_pub_to_the_known_topic_parses_as_the_decoders_parse_it() {
        let publish = Pub { topic: "a.b", reply_to: "_INBOX.1", payload: b"p" };
        let plain = bytes_of11(&ClientFrame11::Pub { publish, request: false });
        assert_eq!(parse_to(&plain, "a.b"), Some(Ok(publish)));
        let mut src = &plain[..];
        let decoded = ClientFrame::decode(&mut src, MAX).expect("valid").expect("whole");
        assert_eq!(decoded, ClientFrame::Pub(publish));
        let bare = Pub { reply_to: "", payload: b"", ..publish };
        assert_eq!(
            parse_to(&bytes_of11(&ClientFrame11::Pub { publish: bare, request: false }), "a.b"),
            Some(Ok(bare))
        );
    }

    #[test]
    fn anything_but_a_flagless_pub_to_the_known_topic_is_left_to_the_decoders() {
        let publish = Pub { topic: "a.b", reply_to: "r", payload: b"p" };
        let plain = bytes_of11(&ClientFrame11::Pub { publish, request: false });
        for other in ["a.bc", "a.c", "a", ""] {
            assert_eq!(parse_to(&plain, other), None, "{other}");
        }
        let request = bytes_of11(&ClientFrame11::Pub { publish, request: true });
        assert_eq!(parse_to(&request, "a.b"), None);
        assert_eq!(parse_to(&bytes_of11(&ClientFrame11::Unsub { sid: 3 }), "a.b"), None);
        let long = "x".repeat(300);
        assert_eq!(parse_to(&plain, &long), None);
    }

    #[test]
    fn a_bad_reply_to_after_the_known_topic_gets_the_decoders_error() {
        let publish = Pub { topic: "a.b", reply_to: "rr", payload: b"" };
        let mut bytes = bytes_of11(&ClientFrame11::Pub { publish, request: false });
        // The reply-to follows the length prefix, opcode, flags and topic.
        let at = crate::LEN_PREFIX + 2 + 1 + 3 + 1;
        bytes[at] = 0xff;
        let mut src = &bytes[..];
        let decoded = ClientFrame::decode(&mut src, MAX).expect_err("bad UTF-8");
        assert_eq!(parse_to(&bytes, "a.b"), Some(Err(decoded)));
        // A reply-to length past the end of the frame.
        let mut cut = bytes_of11(&ClientFrame11::Pub {
            publish: Pub { reply_to: "", ..publish },
            request: false,
        });
        let at = crate::LEN_PREFIX + 2 + 1 + 3;
        cut[at] = 9;
        let mut src = &cut[..];
        let decoded = ClientFrame::decode(&mut src, MAX).expect_err("reply-to past the end");
        assert_eq!(parse_to(&cut, "a.b"), Some(Err(decoded)));
    }

    fn bytes_of11(frame: &ClientFrame11<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        frame.encode(&mut out);
        assert_eq!(out.len(), frame.encoded_len(), "{frame:?}");
        out
    }

    fn server_bytes_of11(frame: &ServerFrame11<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        frame.encode(&mut out);
        assert_eq!(out.len(), frame.encoded_len(), "{frame:?}");
        out
    }

    fn headers() -> HeaderBlock {
        let mut block = HeaderBlock::new();
        block.push("trace-id", "4bf92f3577b34da6").expect("valid header");
        block.push("k", "").expect("valid header");
        block.push("k", "é").expect("valid header");
        block
    }

    #[test]
    fn a_msg_head_then_its_payload_is_the_whole_frame() {
        let long = "t".repeat(255);
        let cases = [
            Msg { sid: 7, topic: "a.b", reply_to: "", payload: b"" },
            Msg { sid: u32::MAX, topic: "a", reply_to: "_INBOX.9", payload: &[0xff; 300] },
            Msg { sid: 1, topic: &long, reply_to: &long, payload: b"p" },
        ];
        for m in cases {
            let mut whole = Vec::new();
            ServerFrame::Msg(m).encode(&mut whole);
            let mut parts = Vec::new();
            m.encode_head(&mut parts);
            assert!(parts.len() <= Msg::MAX_HEAD, "{m:?}");
            parts.extend_from_slice(m.payload);
            assert_eq!(parts, whole, "{m:?}");
        }
    }

    #[test]
    fn client_frames_of_1_1_round_trip() {
        let block = headers();
        let hello = Hello { version: 1, name: "svc", token: b"t" };
        let publish = Pub { topic: "a.b", reply_to: "_INBOX.1", payload: b"p" };
        let mut frames = vec![
            ClientFrame11::Sub(Sub { sid: 4, topic: "a.*", queue_group: "workers", lossy: true }),
            ClientFrame11::Ping { nonce: 1 },
            ClientFrame11::Pong { nonce: 2 },
            ClientFrame11::Unsub { sid: 4 },
            ClientFrame11::Stats { nonce: 3 },
        ];
        let bits = [(false, false, false), (true, false, false), (true, true, false)];
        for (v1_1, no_echo, credential) in bits.into_iter().chain([(true, false, true)]) {
            frames.push(ClientFrame11::Hello { hello, v1_1, no_echo, credential });
        }
        frames.push(ClientFrame11::Hello { hello, v1_1: true, no_echo: true, credential: true });
        for request in [false, true] {
            frames.push(ClientFrame11::Pub { publish, request });
            for headers in [block.headers(), Headers::EMPTY] {
                let (topic, reply_to, payload) = ("a.b", "r", &b"xyz"[..]);
                frames.push(ClientFrame11::HPub(HPub {
                    topic,
                    reply_to,
                    headers,
                    payload,
                    request,
                }));
            }
        }
        for frame in frames {
            let bytes = bytes_of11(&frame);
            let mut src = bytes.as_slice();
            assert_eq!(ClientFrame11::decode(&mut src, MAX), Ok(Some(frame)));
            assert!(src.is_empty());
            // The version 1 decoder reads the same frame, or refuses it.
            let mut src = bytes.as_slice();
            match (ClientFrame::decode(&mut src, MAX), frame.to_v1()) {
                (Ok(Some(v1)), Some(want)) => {
                    assert_eq!(v1, want);
                    assert_eq!(ClientFrame11::from(v1), frame);
                    let mut out = Vec::new();
                    v1.encode(&mut out);
                    assert_eq!(out, bytes, "{frame:?}: both encoders agree");
                }
                (Err(DecodeError::UnknownOpcode(op::HPUB)), None) => {}
                (Err(DecodeError::ReservedFlags { .. }), None) => {}
                other => panic!("{frame:?}: version 1 decoder: {other:?}"),
            }
        }
    }

    #[test]
    fn server_frames_of_1_1_round_trip() {
        let block = headers();
        let welcome = Welcome {
            version: 1,
            max_frame: 1 << 20,
            ping_interval_ms: 30_000,
            core_id: 1,
            connection_id: 7,
            server_name: "corecast",
        };
        let msg = Msg { sid: 1, topic: "a.b", reply_to: "", payload: b"p" };
        let frames = [
            ServerFrame11::Welcome { welcome, v1_1: false },
            ServerFrame11::Welcome { welcome, v1_1: true },
            ServerFrame11::Ping { nonce: 1 },
            ServerFrame11::Pong { nonce: 2 },
            ServerFrame11::Msg(msg),
            ServerFrame11::Dropped { sid: 1, count: 9 },
            ServerFrame11::HMsg(HMsg {
                sid: 2,
                topic: "orders.eu",
                reply_to: "_INBOX.1",
                headers: block.headers(),
                payload: b"hi",
            }),
            ServerFrame11::HMsg(HMsg {
                sid: 3,
                topic: "a",
                reply_to: "",
                headers: Headers::EMPTY,
                payload: b"",
            }),
            ServerFrame11::NoResponders { topic: "svc.time", reply_to: "_INBOX.r1" },
            ServerFrame11::StatsReply { nonce: 4, json: "{}" },
            ServerFrame11::Err(ErrFrame { code: 13, fatal: true, text: "bad header" }),
            ServerFrame11::GoAway { reason: 1, grace_ms: 5000 },
        ];
        for frame in frames {
            let bytes = server_bytes_of11(&frame);
            let mut src = bytes.as_slice();
            assert_eq!(ServerFrame11::decode(&mut src, MAX), Ok(Some(frame)));
            assert!(src.is_empty());
            let mut src = bytes.as_slice();
            match (ServerFrame::decode(&mut src, MAX), frame.to_v1()) {
                (Ok(Some(v1)), Some(want)) => {
                    assert_eq!(v1, want);
                    assert_eq!(ServerFrame11::from(v1), frame);
                    let mut out = Vec::new();
                    v1.encode(&mut out);
                    assert_eq!(out, bytes, "{frame:?}: both encoders agree");
                }
                (Err(DecodeError::UnknownOpcode(op::HMSG | op::NO_RESPONDERS)), None) => {}
                (Err(DecodeError::ReservedFlags { opcode: op::WELCOME, .. }), None) => {}
                other => panic!("{frame:?}: version 1 decoder: {other:?}"),
            }
        }
    }

    #[test]
    fn flags_land_on_their_bits() {
        let hello = Hello { version: 1, name: "", token: b"" };
        let flags_of = |frame: ClientFrame11<'_>| bytes_of11(&frame)[5];
        let hello11 =
            |no_echo, credential| ClientFrame11::Hello { hello, v1_1: true, no_echo, credential };
        assert_eq!(flags_of(hello11(false, false)), 0x02);
        assert_eq!(flags_of(hello11(true, false)), 0x06);
        assert_eq!(flags_of(hello11(false, true)), 0x0A);
        assert_eq!(flags_of(hello11(true, true)), 0x0E);
        let publish = Pub { topic: "a", reply_to: "r", payload: b"" };
        assert_eq!(flags_of(ClientFrame11::Pub { publish, request: true }), 0x02);
        let (topic, reply_to, headers, payload) = ("a", "r", Headers::EMPTY, &b""[..]);
        let hpub = HPub { topic, reply_to, headers, payload, request: true };
        assert_eq!(flags_of(ClientFrame11::HPub(hpub)), 0x02);
        let welcome = Welcome {
            version: 1,
            max_frame: 16,
            ping_interval_ms: 1,
            core_id: 0,
            connection_id: 0,
            server_name: "",
        };
        let bytes = server_bytes_of11(&ServerFrame11::Welcome { welcome, v1_1: true });
        assert_eq!(bytes[5], 0x02);
    }

    #[test]
    fn no_echo_needs_the_1_1_bit() {
        let hello = Hello { version: 1, name: "", token: b"" };
        let frame = ClientFrame11::Hello { hello, v1_1: true, no_echo: true, credential: false };
        let mut bytes = bytes_of11(&frame);
        bytes[5] = op::HELLO_FLAG_NO_ECHO;
        let mut src = bytes.as_slice();
        let err = ClientFrame11::decode(&mut src, MAX).expect_err("bit 2 alone");
        assert_eq!(err, DecodeError::ReservedFlags { opcode: op::HELLO, flags: 0x04 });
        assert!(src.is_empty(), "the frame is consumed");
    }

    #[test]
    fn the_credential_bit_needs_the_1_1_bit() {
        let hello = Hello { version: 1, name: "", token: b"bearer t" };
        let frame = ClientFrame11::Hello { hello, v1_1: true, no_echo: false, credential: true };
        let mut bytes = bytes_of11(&frame);
        let decoded = ClientFrame11::decode(&mut bytes.as_slice(), MAX);
        assert_eq!(decoded, Ok(Some(frame)));
        assert_eq!(frame.to_v1(), None, "no version 1 frame has the bit");
        for flags in [op::HELLO_FLAG_CREDENTIAL, op::HELLO_FLAG_CREDENTIAL | op::HELLO_FLAG_NO_ECHO]
        {
            bytes[5] = flags;
            let mut src = bytes.as_slice();
            let err = ClientFrame11::decode(&mut src, MAX).expect_err("bit 3 without bit 1");
            assert_eq!(err, DecodeError::ReservedFlags { opcode: op::HELLO, flags });
            assert!(src.is_empty(), "the frame is consumed");
            let err = ClientFrame::decode(&mut bytes.as_slice(), MAX).expect_err("version 1");
            assert_eq!(err, DecodeError::ReservedFlags { opcode: op::HELLO, flags });
        }
    }

    #[test]
    fn a_bad_header_block_is_bad_header_and_its_length_past_the_frame_is_truncated() {
        let hpub = HPub {
            topic: "a",
            reply_to: "",
            headers: Headers::EMPTY,
            payload: b"",
            request: false,
        };
        let mut bytes = bytes_of11(&ClientFrame11::HPub(hpub));
        // The block is the last byte (count 0); say the count is 1.
        *bytes.last_mut().expect("a block byte") = 1;
        let err = ClientFrame11::decode(&mut bytes.as_slice(), MAX).expect_err("count 1");
        assert_eq!(err, DecodeError::BadHeader(crate::HeaderError::Truncated));
        assert_eq!(err.code(), crate::ErrorCode::BadHeader);
        assert!(err.code().is_fatal());
        // Make the block length one more than the frame holds.
        let at = bytes.len() - 3;
        bytes[at] = 2;
        let err = ClientFrame11::decode(&mut bytes.as_slice(), MAX).expect_err("h past end");
        assert_eq!(err, DecodeError::Truncated);
        assert_eq!(err.code(), crate::ErrorCode::MalformedFrame);
    }

    #[test]
    fn hmsg_is_hpub_plus_four_bytes() {
        let block = headers();
        let (topic, reply_to, payload) = ("orders.eu", "r", &[7u8; 100][..]);
        let hpub = HPub { topic, reply_to, headers: block.headers(), payload, request: true };
        let hmsg = HMsg { sid: 9, topic, reply_to, headers: block.headers(), payload };
        assert_eq!(
            ServerFrame11::HMsg(hmsg).encoded_len(),
            ClientFrame11::HPub(hpub).encoded_len() + 4
        );
    }
}
