//! Decode errors and the error codes carried by `ERR` frames.

use std::fmt;

use crate::header::HeaderError;

/// The numbered error codes of protocol version 1 and 1.1, as carried by
/// `ERR`.
///
/// Codes below 100 describe a broken session: the server sends them with
/// `fatal = 1` and closes. Codes from 100 up refuse one frame and leave the
/// session open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
#[non_exhaustive]
pub enum ErrorCode {
    /// A frame's body does not match its opcode's layout: too short, trailing
    /// bytes, a string running past the end, undefined flag bits, bad UTF-8
    /// outside a topic, or a frame too short to hold opcode and flags.
    MalformedFrame = 1,
    /// The opcode is not one a client may send.
    UnknownOpcode = 2,
    /// The length prefix exceeds the server's `max_frame`.
    FrameTooLarge = 3,
    /// A frame other than `HELLO` arrived before the handshake, or `HELLO`
    /// arrived twice.
    HandshakeRequired = 4,
    /// No `HELLO` arrived within the handshake timeout.
    HandshakeTimeout = 5,
    /// `HELLO` asked for a protocol version the server does not speak.
    UnsupportedVersion = 6,
    /// The credential was missing, malformed or wrong (the auth token of
    /// version 1, or a typed credential: `PROTOCOL.md` section 14).
    AuthFailed = 7,
    /// The server's per-core connection limit is reached.
    ServerFull = 8,
    /// The subscriber could not take its messages fast enough.
    SlowConsumer = 9,
    /// Nothing arrived from the client for longer than the idle limit.
    StaleConnection = 10,
    /// The server is shutting down and closes the connection.
    ShuttingDown = 11,
    /// The server's memory budget cannot hold a frame this connection is
    /// sending (added after version 1.0; see the specification).
    OutOfMemory = 12,
    /// An `HPUB`'s header block breaks its layout or rules (version 1.1):
    /// see [`HeaderError`].
    BadHeader = 13,
    /// A topic or reply-to breaks the topic rules (including bad UTF-8).
    BadTopic = 100,
    /// The connection already holds its maximum number of subscriptions.
    TooManySubscriptions = 101,
    /// `SUB` used a sid that is already subscribed on this connection.
    DuplicateSid = 102,
    /// `UNSUB` named a sid that is not subscribed on this connection.
    UnknownSid = 103,
    /// The topic is reserved (topics whose first token starts with `$`
    /// belong to the server and cannot be published to), or the session's
    /// user may not publish to it or subscribe to it (`PROTOCOL.md` section
    /// 14); the text names the topic.
    PermissionDenied = 104,
    /// The frame asks for something the session does not offer: in a
    /// version 1 session, wildcard subscriptions or queue groups.
    Unsupported = 105,
    /// In a version 1.1 session, `SUB` named a queue group that is not one
    /// literal token of 1–255 bytes.
    BadQueueGroup = 106,
}

impl ErrorCode {
    /// Every code, in numeric order.
    pub const ALL: [ErrorCode; 20] = [
        Self::MalformedFrame,
        Self::UnknownOpcode,
        Self::FrameTooLarge,
        Self::HandshakeRequired,
        Self::HandshakeTimeout,
        Self::UnsupportedVersion,
        Self::AuthFailed,
        Self::ServerFull,
        Self::SlowConsumer,
        Self::StaleConnection,
        Self::ShuttingDown,
        Self::OutOfMemory,
        Self::BadHeader,
        Self::BadTopic,
        Self::TooManySubscriptions,
        Self::DuplicateSid,
        Self::UnknownSid,
        Self::PermissionDenied,
        Self::Unsupported,
        Self::BadQueueGroup,
    ];

    /// The number on the wire.
    pub fn as_u16(self) -> u16 {
        self as u16
    }

    /// The code for a number from the wire, if this version defines it.
    pub fn from_u16(code: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_u16() == code)
    }

    /// Whether the server closes the connection after sending this code.
    pub fn is_fatal(self) -> bool {
        self.as_u16() < 100
    }

    /// A short stable name, as written in the specification.
    pub fn name(self) -> &'static str {
        match self {
            Self::MalformedFrame => "malformed frame",
            Self::UnknownOpcode => "unknown opcode",
            Self::FrameTooLarge => "frame too large",
            Self::HandshakeRequired => "handshake required",
            Self::HandshakeTimeout => "handshake timeout",
            Self::UnsupportedVersion => "unsupported version",
            Self::AuthFailed => "auth failed",
            Self::ServerFull => "server full",
            Self::SlowConsumer => "slow consumer",
            Self::StaleConnection => "stale connection",
            Self::ShuttingDown => "shutting down",
            Self::OutOfMemory => "out of memory",
            Self::BadHeader => "bad header",
            Self::BadTopic => "bad topic",
            Self::TooManySubscriptions => "too many subscriptions",
            Self::DuplicateSid => "duplicate sid",
            Self::UnknownSid => "unknown sid",
            Self::PermissionDenied => "permission denied",
            Self::Unsupported => "unsupported",
            Self::BadQueueGroup => "bad queue group",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.as_u16())
    }
}

/// Which field of a frame a decode error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The client name in `HELLO`.
    ClientName,
    /// A topic in `SUB`, `PUB` or `MSG`.
    Topic,
    /// The reply-to in `PUB` or `MSG`.
    ReplyTo,
    /// The queue group in `SUB`.
    QueueGroup,
    /// The server name in `WELCOME`.
    ServerName,
    /// The text of `ERR`.
    ErrorText,
    /// The JSON document of `STATS_REPLY`.
    StatsJson,
}

/// Why bytes could not be decoded as a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The length prefix is below 2, so the frame cannot hold opcode and flags.
    #[error("frame length {0} is below the minimum of 2")]
    FrameTooShort(u32),
    /// The length prefix exceeds the limit the decoder was given.
    #[error("frame length {len} exceeds max_frame {max}")]
    FrameTooLarge {
        /// The length announced by the prefix.
        len: u32,
        /// The limit in force.
        max: u32,
    },
    /// The opcode is not defined for this direction.
    #[error("unknown opcode 0x{0:02x}")]
    UnknownOpcode(u8),
    /// Flag bits that this opcode does not define are set.
    #[error("undefined flag bits 0x{flags:02x} for opcode 0x{opcode:02x}")]
    ReservedFlags {
        /// The frame's opcode.
        opcode: u8,
        /// The flags as received.
        flags: u8,
    },
    /// The body ends before its layout does (a field or a string length runs
    /// past the end of the frame).
    #[error("frame body ends before its layout does")]
    Truncated,
    /// The body goes on after its layout ends.
    #[error("{0} trailing bytes after the frame's layout")]
    TrailingBytes(usize),
    /// A string field is not valid UTF-8.
    #[error("{0:?} is not valid UTF-8")]
    BadUtf8(Field),
    /// A boolean byte holds something other than 0 or 1.
    #[error("boolean byte is {0}, not 0 or 1")]
    BadBool(u8),
    /// A string field is longer than its limit.
    #[error("{field:?} is {len} bytes, more than the {max} allowed")]
    TooLong {
        /// The field.
        field: Field,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The header block of an `HPUB` or `HMSG` breaks its layout or rules
    /// (version 1.1). Its length running past the end of the frame is
    /// [`DecodeError::Truncated`] instead, like any other length.
    #[error("bad header block: {0}")]
    BadHeader(HeaderError),
}

impl DecodeError {
    /// The `ERR` code a server answers this error with.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
            Self::UnknownOpcode(_) => ErrorCode::UnknownOpcode,
            Self::BadUtf8(Field::Topic | Field::ReplyTo) => ErrorCode::BadTopic,
            Self::BadHeader(_) => ErrorCode::BadHeader,
            _ => ErrorCode::MalformedFrame,
        }
    }
}
