//! Opcode and flag numbers of protocol version 1.

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
/// Server (extension): the counters asked for with `STATS`, as JSON.
pub const STATS_REPLY: u8 = 0xA0;
/// Server: reports an error; fatal ones are followed by a close.
pub const ERR: u8 = 0xE0;
/// Server: the server is shutting down.
pub const GOAWAY: u8 = 0xE1;

/// `SUB` flag bit 0: drop and count this subscription's messages when the
/// subscriber cannot keep up, instead of disconnecting it.
pub const SUB_FLAG_LOSSY: u8 = 0x01;
