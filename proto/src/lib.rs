//! The corecast wire protocol, version 1 and its extension 1.1: a sans-I/O
//! codec.
//!
//! The codec reads no sockets and no clocks. It turns bytes into frames and
//! frames into bytes, and it is the whole contract between a corecast broker
//! and its clients. The normative description is `PROTOCOL.md` beside this
//! crate; `vectors/v1.json` holds frames with their decoded meaning that every
//! implementation can replay.
//!
//! - [`frame`]: the frames of both directions, decoded from a byte slice
//!   (borrowing, no allocation) and encoded into any [`bytes::BufMut`]:
//!   [`ClientFrame`] and [`ServerFrame`] for version 1 exactly,
//!   [`ClientFrame11`] and [`ServerFrame11`] for version 1.1, which adds
//!   headers (`HPUB`, `HMSG`), requests (`NO_RESPONDERS`) and the `HELLO` and
//!   `WELCOME` flags that negotiate a 1.1 session.
//! - [`credential`]: the typed credentials a `HELLO` may carry in its token
//!   field (password, bearer token, JWT).
//! - [`header`]: the header block of `HPUB` and `HMSG`.
//! - [`raw`]: splitting a byte stream into length-prefixed frames.
//! - [`error`]: decode errors and the numbered error codes carried by `ERR`.
//! - [`topic`]: the rules a topic (and a reply-to) and a queue group name
//!   must follow.
//! - [`opcode`]: the opcode and flag numbers.
//!
//! Decoding is incremental: "not enough bytes yet" is `Ok(None)`, never an
//! error, so a caller appends what the socket gave it and tries again.
//!
//! The clients that connect to a broker with this codec, blocking and on
//! tokio, are the `corecast-client` crate; this one does no I/O at all.

pub mod credential;
pub mod error;
pub mod frame;
pub mod header;
pub mod opcode;
pub mod raw;
pub mod topic;
mod wire;

pub use credential::Credential;
pub use error::{DecodeError, ErrorCode, Field};
pub use frame::{
    ClientFrame, ClientFrame11, ErrFrame, HMsg, HPub, Hello, Msg, Pub, ServerFrame, ServerFrame11,
    Sub, Welcome,
};
pub use header::{HeaderBlock, HeaderError, Headers};
pub use raw::RawFrame;
pub use topic::{QueueGroupError, TopicError, TopicKind};

/// The protocol version this crate speaks, sent in `HELLO` and `WELCOME`.
/// Version 1.1 is not a different number: it is negotiated with flag bits
/// of `HELLO` and `WELCOME` ([`opcode::HELLO_FLAG_V1_1`]).
pub const VERSION: u16 = 1;

/// Bytes of the length prefix in front of every frame.
pub const LEN_PREFIX: usize = 4;

/// Bytes every frame carries after its length prefix: opcode and flags.
pub const MIN_FRAME_LEN: u32 = 2;

/// Longest client name a `HELLO` may carry, in bytes.
pub const MAX_CLIENT_NAME: usize = 64;

/// Reason carried by `GOAWAY` when the server is shutting down.
pub const GOAWAY_SHUTDOWN: u16 = 1;
/// Reason carried by `GOAWAY` when the server leaves service in lame duck
/// mode: it takes no new connections and sends each client away in turn.
pub const GOAWAY_LAME_DUCK: u16 = 2;
