//! Opcode and flag numbers of protocol version 1, and of the additions of
//! version 1.1 (`PROTOCOL.md`, section 13).

/// Client: opens the session; must be the first frame.
pub const HELLO: u8 = 0x01;
/// Client: asks for a `PONG` once everything sent before has taken effect.
pub const PING: u8 = 0x02;
/// Client: answers a server `PING`.
pub const PONG: u8 = 0x03;
/// Client: subscribes a sid to a topic.
pub const SUB: u8 = 0x10;
/// Client: removes a subscription by sid.
pub const UNSUB: u8 = 0x11;
/// Client: publishes a payload to a topic.
pub const PUB: u8 = 0x20;

/// Client (1.1): publishes a payload with a header block.
pub const HPUB: u8 = 0x22;

/// Client (extension): asks for the server's counters.
pub const STATS: u8 = 0x30;

/// Server: answers `HELLO`.
pub const WELCOME: u8 = 0x81;
/// Server: liveness probe; the client answers with `PONG`.
pub const SERVER_PING: u8 = 0x82;
/// Server: answers a client `PING`.
pub const SERVER_PONG: u8 = 0x83;
/// Server: delivers a message to a subscription.
pub const MSG: u8 = 0x90;
/// Server: reports messages dropped for a lossy subscription.
pub const DROPPED: u8 = 0x91;
/// Server (1.1): delivers a message with a header block to a subscription.
pub const HMSG: u8 = 0x92;
/// Server (1.1): nobody was subscribed to a request's topic.
pub const NO_RESPONDERS: u8 = 0x93;
/// Server (extension): the counters asked for with `STATS`, as JSON.
pub const STATS_REPLY: u8 = 0xA0;
/// Server: reports an error; fatal ones are followed by a close.
pub const ERR: u8 = 0xE0;
/// Server: the server is shutting down.
pub const GOAWAY: u8 = 0xE1;

/// `SUB` flag bit 0: drop and count this subscription's messages when the
/// subscriber cannot keep up, instead of disconnecting it.
pub const SUB_FLAG_LOSSY: u8 = 0x01;

/// `HELLO` flag bit 1 (1.1): asks for a version 1.1 session. A server that
/// grants it sets [`WELCOME_FLAG_V1_1`] in its `WELCOME`.
pub const HELLO_FLAG_V1_1: u8 = 0x02;

/// `HELLO` flag bit 2 (1.1): never deliver this connection's publications to
/// its own subscriptions. Defined only together with [`HELLO_FLAG_V1_1`].
pub const HELLO_FLAG_NO_ECHO: u8 = 0x04;

/// `HELLO` flag bit 3 (1.1, `PROTOCOL.md` section 14): the token field holds a
/// typed credential, `<kind> SP <value>` ([`crate::Credential`]), instead of
/// a plain shared token. Defined only together with [`HELLO_FLAG_V1_1`].
pub const HELLO_FLAG_CREDENTIAL: u8 = 0x08;

/// `WELCOME` flag bit 1 (1.1): the session is a version 1.1 session. Sent
/// only in answer to a `HELLO` with [`HELLO_FLAG_V1_1`].
pub const WELCOME_FLAG_V1_1: u8 = 0x02;

/// `PUB` and `HPUB` flag bit 1 (1.1): the publication is a request; if no
/// subscription would receive it, the server answers `NO_RESPONDERS`.
pub const PUB_FLAG_REQUEST: u8 = 0x02;
