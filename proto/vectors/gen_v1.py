#!/usr/bin/env python3
"""Writes vectors/v1.json: the test vectors of corecast wire protocol v1 and
of its extension v1.1 (PROTOCOL.md, section 13).

The byte layouts here are written from PROTOCOL.md with `struct`, on their
own: they share no code with the Rust codec, so `tests/vectors.rs` checks
one implementation against the other. The vectors of version 1.1 carry
`"since": "1.1"` and come after all the others, which keep their bytes and
their order. Run from anywhere:

    python3 proto/vectors/gen_v1.py

The output is deterministic; commit it together with this script.
"""

import json
import os
import struct

DEFAULT_MAX_FRAME = 1048576

# Opcodes.
HELLO, PING, PONG, SUB, UNSUB, PUB = 0x01, 0x02, 0x03, 0x10, 0x11, 0x20
WELCOME, S_PING, S_PONG, MSG, DROPPED, ERR, GOAWAY = 0x81, 0x82, 0x83, 0x90, 0x91, 0xE0, 0xE1
STATS, STATS_REPLY = 0x30, 0xA0  # extension frames
LOSSY = 0x01

# Error codes: number -> (name, fatal). Mirrors the table in PROTOCOL.md.
CODES = {
    1: "malformed frame",
    2: "unknown opcode",
    3: "frame too large",
    4: "handshake required",
    5: "handshake timeout",
    6: "unsupported version",
    7: "auth failed",
    8: "server full",
    9: "slow consumer",
    10: "stale connection",
    11: "shutting down",
    12: "out of memory",
    100: "bad topic",
    101: "too many subscriptions",
    102: "duplicate sid",
    103: "unknown sid",
    104: "permission denied",
    105: "unsupported",
}


# ---------------------------------------------------------------- fields


def u8(v):
    return struct.pack("<B", v)


def u16(v):
    return struct.pack("<H", v)


def u32(v):
    return struct.pack("<I", v)


def u64(v):
    return struct.pack("<Q", v)


def short(b):
    if isinstance(b, str):
        b = b.encode("utf-8")
    assert len(b) <= 255
    return u8(len(b)) + b


def long_(b):
    if isinstance(b, str):
        b = b.encode("utf-8")
    assert len(b) <= 65535
    return u16(len(b)) + b


def frame(opcode, flags, body):
    """A whole frame: u32 len (opcode + flags + body), opcode, flags, body."""
    return u32(2 + len(body)) + u8(opcode) + u8(flags) + body


# ------------------------------------------------------- frame builders


def hello(version, name, token):
    return frame(HELLO, 0, u16(version) + short(name) + long_(token))


def nonce_frame(opcode, nonce):
    return frame(opcode, 0, u64(nonce))


def sub(sid, topic, queue_group, lossy):
    return frame(SUB, LOSSY if lossy else 0, u32(sid) + short(topic) + short(queue_group))


def unsub(sid):
    return frame(UNSUB, 0, u32(sid))


def pub(topic, reply_to, payload):
    return frame(PUB, 0, short(topic) + short(reply_to) + payload)


def welcome(version, max_frame, ping_interval_ms, core_id, connection_id, server_name):
    body = u16(version) + u32(max_frame) + u32(ping_interval_ms) + u16(core_id)
    return frame(WELCOME, 0, body + u64(connection_id) + short(server_name))


def msg(sid, topic, reply_to, payload):
    return frame(MSG, 0, u32(sid) + short(topic) + short(reply_to) + payload)


def dropped(sid, count):
    return frame(DROPPED, 0, u32(sid) + u64(count))


def err(code, fatal, text):
    return frame(ERR, 0, u16(code) + u8(1 if fatal else 0) + long_(text))


def goaway(reason, grace_ms):
    return frame(GOAWAY, 0, u16(reason) + u32(grace_ms))


# ----------------------------------------------------------- vector list

VECTORS = []


# Set to "1.1" while the vectors of section 13 are added.
SINCE = None


def add(name, direction, data, max_frame=None, **rest):
    assert direction in ("client", "server")
    assert not any(v["name"] == name for v in VECTORS), name
    v = {"name": name}
    if SINCE is not None:
        v["since"] = SINCE
    v.update({"direction": direction, "hex": data.hex()})
    if max_frame is not None:
        v["max_frame"] = max_frame
    v.update(rest)
    VECTORS.append(v)


def ok(name, direction, data, fields, max_frame=None):
    add(name, direction, data, max_frame, frame=fields)


def bad(name, direction, data, error, code, max_frame=None, field=None, detail=None):
    extra = {"error": error, "code": code}
    if field is not None:
        extra["field"] = field
    if detail is not None:
        extra["detail"] = detail
    add(name, direction, data, max_frame, **extra)


def partial(name, direction, data, max_frame=None):
    add(name, direction, data, max_frame, incomplete=True)


def f_hello(version, name, token):
    return {"type": "HELLO", "version": version, "name": name, "token": token.hex()}


def f_sub(sid, topic, queue_group, lossy):
    return {"type": "SUB", "sid": sid, "topic": topic, "queue_group": queue_group, "lossy": lossy}


def f_pub(topic, reply_to, payload):
    return {"type": "PUB", "topic": topic, "reply_to": reply_to, "payload": payload.hex()}


def f_welcome(version, max_frame, ping_interval_ms, core_id, connection_id, server_name):
    return {
        "type": "WELCOME",
        "version": version,
        "max_frame": max_frame,
        "ping_interval_ms": ping_interval_ms,
        "core_id": core_id,
        "connection_id": connection_id,
        "server_name": server_name,
    }


def f_msg(sid, topic, reply_to, payload):
    return {"type": "MSG", "sid": sid, "topic": topic, "reply_to": reply_to, "payload": payload.hex()}


def f_err(code, fatal, text):
    return {"type": "ERR", "code": code, "fatal": fatal, "text": text}


def ok_hello(name, version, cname, token, **kw):
    ok(name, "client", hello(version, cname, token), f_hello(version, cname, token), **kw)


def ok_sub(name, sid, topic, qg, lossy, **kw):
    ok(name, "client", sub(sid, topic, qg, lossy), f_sub(sid, topic, qg, lossy), **kw)


def ok_pub(name, topic, reply_to, payload, **kw):
    ok(name, "client", pub(topic, reply_to, payload), f_pub(topic, reply_to, payload), **kw)


def ok_welcome(name, *args, **kw):
    ok(name, "server", welcome(*args), f_welcome(*args), **kw)


def ok_msg(name, sid, topic, reply_to, payload, **kw):
    ok(name, "server", msg(sid, topic, reply_to, payload), f_msg(sid, topic, reply_to, payload), **kw)


def ok_err(name, code, fatal, text):
    ok(name, "server", err(code, fatal, text), f_err(code, fatal, text))


U64_MAX = 2**64 - 1
U32_MAX = 2**32 - 1

# --- The worked example of PROTOCOL.md, frame by frame.
ok_hello("example 1: HELLO", 1, "demo", b"")
ok_welcome("example 2: WELCOME", 1, DEFAULT_MAX_FRAME, 30000, 1, 7, "corecast")
ok_sub("example 3: SUB", 1, "orders.eu", "", False)
ok("example 4: PING", "client", nonce_frame(PING, 1), {"type": "PING", "nonce": 1})
ok("example 5: PONG", "server", nonce_frame(S_PONG, 1), {"type": "PONG", "nonce": 1})
ok_pub("example 6: PUB", "orders.eu", "", b"hi")
ok_msg("example 7: MSG", 1, "orders.eu", "", b"hi")
ok_pub("example 8: PUB to a reserved topic", "$SYS.x", "", b"")
ok_err("example 9: ERR permission denied", 104, False, "permission denied")
ok("example 10: UNSUB", "client", unsub(1), {"type": "UNSUB", "sid": 1})
ok("example 11: GOAWAY", "server", goaway(1, 5000), {"type": "GOAWAY", "reason": 1, "grace_ms": 5000})

# --- Valid client frames.
ok_hello("HELLO empty name, empty token", 1, "", b"")
ok_hello("HELLO name and token", 1, "demo-client", b"s3cr3t")
ok_hello("HELLO binary token", 1, "bin", bytes([0x00, 0xFF, 0x7F, 0x80, 0x0A]))
ok_hello("HELLO name of 64 bytes (the maximum)", 1, "n" * 64, b"")
ok_hello("HELLO UTF-8 name", 1, "café-клиент", b"")
ok_hello("HELLO 64-byte UTF-8 name (32 two-byte characters)", 1, "é" * 32, b"t")
ok_hello("HELLO version 2 decodes (broker answers unsupported version 6)", 2, "x", b"")
ok_hello("HELLO token of 300 bytes", 1, "long-token", bytes(range(256)) + bytes(range(44)))
ok("PING nonce 0", "client", nonce_frame(PING, 0), {"type": "PING", "nonce": 0})
ok("PING nonce 0x0102030405060708", "client", nonce_frame(PING, 0x0102030405060708),
   {"type": "PING", "nonce": 0x0102030405060708})
ok("PING nonce u64 max", "client", nonce_frame(PING, U64_MAX), {"type": "PING", "nonce": U64_MAX})
ok("PONG nonce 42", "client", nonce_frame(PONG, 42), {"type": "PONG", "nonce": 42})
ok("PONG nonce u64 max", "client", nonce_frame(PONG, U64_MAX), {"type": "PONG", "nonce": U64_MAX})
ok_sub("SUB plain", 1, "orders.eu", "", False)
ok_sub("SUB lossy (flag bit 0)", 7, "ticks.fast", "", True)
ok_sub("SUB sid u32 max", U32_MAX, "a", "", False)
ok_sub("SUB sid 0", 0, "a.b.c", "", False)
ok_sub("SUB UTF-8 topic", 2, "préférences.ü", "", False)
ok_sub("SUB topic of 255 bytes", 3, "t" * 255, "", False)
ok_sub("SUB reserved topic decodes (broker allows it)", 4, "$SYS.conn", "", False)
ok_sub("SUB wildcard decodes (broker answers unsupported 105)", 5, "orders.>", "", False)
ok_sub("SUB queue group decodes (broker answers unsupported 105)", 6, "jobs", "workers", True)
ok("UNSUB sid 1", "client", unsub(1), {"type": "UNSUB", "sid": 1})
ok("UNSUB sid u32 max", "client", unsub(U32_MAX), {"type": "UNSUB", "sid": U32_MAX})
ok_pub("PUB empty payload", "a", "", b"")
ok_pub("PUB with reply-to and payload", "svc.time", "_INBOX.q1", b"hello")
ok_pub("PUB binary payload", "bin", "", bytes([0x00, 0x01, 0xFE, 0xFF, 0x00]))
ok_pub("PUB UTF-8 topic", "日本.東京", "", "ü".encode())
ok_pub("PUB topic of 255 bytes and reply-to of 255 bytes", "p" * 255, "r" * 255, b"x")
ok_pub("PUB empty topic decodes (broker answers bad topic 100)", "", "", b"")
ok_pub("PUB topic with a space decodes (broker answers bad topic 100)", "a b", "", b"")
ok_pub("PUB payload that looks like a frame", "a", "", nonce_frame(PING, 9))
# len = 2 + 1 + 5 + 1 + 0 + 7 = 16 = max_frame: exactly at the limit.
ok_pub("PUB exactly max_frame long", "t.max", "", b"1234567", max_frame=16)

# --- Valid server frames.
ok_welcome("WELCOME typical", 1, DEFAULT_MAX_FRAME, 5000, 0, 1, "corecast")
ok_welcome("WELCOME empty server name, large numbers", 1, U32_MAX, U32_MAX, 0xFFFF, U64_MAX, "")
ok_welcome("WELCOME UTF-8 server name", 1, 65536, 250, 3, 0x1122334455667788, "brøker-ø")
ok("server PING nonce 7", "server", nonce_frame(S_PING, 7), {"type": "PING", "nonce": 7})
ok("server PING nonce u64 max", "server", nonce_frame(S_PING, U64_MAX), {"type": "PING", "nonce": U64_MAX})
ok("server PONG nonce 0x0102030405060708", "server", nonce_frame(S_PONG, 0x0102030405060708),
   {"type": "PONG", "nonce": 0x0102030405060708})
ok_msg("MSG empty payload, no reply-to", 1, "a", "", b"")
ok_msg("MSG with reply-to and payload", 9, "svc.time", "_INBOX.q1", b"hello")
ok_msg("MSG UTF-8 topic, sid u32 max", U32_MAX, "日本.東京", "", bytes([0xFF]))
# A PUB exactly max_frame = 16 long becomes a MSG 4 bytes longer: 20.
ok_msg("MSG carrying a maximal PUB is max_frame + 4", 1, "t.max", "", b"1234567", max_frame=20)
ok("DROPPED one message", "server", dropped(7, 1), {"type": "DROPPED", "sid": 7, "count": 1})
ok("DROPPED count u64 max", "server", dropped(U32_MAX, U64_MAX),
   {"type": "DROPPED", "sid": U32_MAX, "count": U64_MAX})
for code, cname in CODES.items():
    ok_err(f"ERR code {code} ({cname})", code, code < 100, cname)
ok_err("ERR empty text", 1, True, "")
ok_err("ERR UTF-8 text", 100, False, "bad topic: «a..b»")
ok_err("ERR code from a newer version decodes", 999, False, "future")
ok_err("ERR code 0 fatal", 0, True, "x")
ok("GOAWAY shutdown, no grace", "server", goaway(1, 0), {"type": "GOAWAY", "reason": 1, "grace_ms": 0})
ok("GOAWAY lame duck, 5 s grace", "server", goaway(2, 5000),
   {"type": "GOAWAY", "reason": 2, "grace_ms": 5000})
ok("GOAWAY unknown reason decodes", "server", goaway(0xFFFF, U32_MAX),
   {"type": "GOAWAY", "reason": 0xFFFF, "grace_ms": U32_MAX})

# --- Malformed client frames.
TRAIL = b"\x00"
bad("HELLO trailing byte", "client", frame(HELLO, 0, u16(1) + short("a") + long_(b"") + TRAIL),
    "TrailingBytes", 1)
bad("PING trailing byte", "client", frame(PING, 0, u64(1) + TRAIL), "TrailingBytes", 1)
bad("PONG trailing bytes", "client", frame(PONG, 0, u64(1) + b"\x00\x00\x00"), "TrailingBytes", 1)
bad("SUB trailing byte", "client", frame(SUB, 0, u32(1) + short("a") + short("") + TRAIL),
    "TrailingBytes", 1)
bad("UNSUB trailing byte", "client", frame(UNSUB, 0, u32(1) + TRAIL), "TrailingBytes", 1)
bad("PING nonce cut short", "client", frame(PING, 0, u64(1)[:7]), "Truncated", 1)
bad("PONG empty body", "client", frame(PONG, 0, b""), "Truncated", 1)
bad("UNSUB empty body", "client", frame(UNSUB, 0, b""), "Truncated", 1)
bad("HELLO empty body", "client", frame(HELLO, 0, b""), "Truncated", 1)
bad("HELLO name length past end", "client", frame(HELLO, 0, u16(1) + u8(5) + b"abc"), "Truncated", 1)
bad("HELLO token length past end", "client",
    frame(HELLO, 0, u16(1) + short("a") + u16(4) + b"xy"), "Truncated", 1)
bad("HELLO token length missing", "client", frame(HELLO, 0, u16(1) + short("a")), "Truncated", 1)
bad("SUB topic length past end", "client", frame(SUB, 0, u32(1) + u8(9) + b"orders"), "Truncated", 1)
bad("SUB queue group length past end", "client",
    frame(SUB, 0, u32(1) + short("a") + u8(3) + b"w"), "Truncated", 1)
bad("SUB queue group missing", "client", frame(SUB, 0, u32(1) + short("a")), "Truncated", 1)
bad("PUB empty body", "client", frame(PUB, 0, b""), "Truncated", 1)
bad("PUB topic length past end", "client", frame(PUB, 0, u8(10) + b"abc"), "Truncated", 1)
bad("PUB reply-to length past end", "client", frame(PUB, 0, short("a") + u8(4) + b"r"), "Truncated", 1)
bad("PUB reply-to length missing", "client", frame(PUB, 0, short("a")), "Truncated", 1)
bad("PUB flag bit 0", "client", frame(PUB, 0x01, short("a") + short("") + b"p"), "ReservedFlags", 1)
bad("PUB flag bit 7", "client", frame(PUB, 0x80, short("a") + short("") + b"p"), "ReservedFlags", 1)
bad("SUB flag bit 1", "client", frame(SUB, 0x02, u32(1) + short("a") + short("")), "ReservedFlags", 1)
bad("SUB lossy plus flag bit 1", "client", frame(SUB, 0x03, u32(1) + short("a") + short("")),
    "ReservedFlags", 1)
bad("HELLO flag bit 0", "client", frame(HELLO, 0x01, u16(1) + short("a") + long_(b"")),
    "ReservedFlags", 1)
bad("PING flag bit 0", "client", frame(PING, 0x01, u64(1)), "ReservedFlags", 1)
bad("PONG flag bit 3", "client", frame(PONG, 0x08, u64(1)), "ReservedFlags", 1)
bad("UNSUB flag bit 0", "client", frame(UNSUB, 0x01, u32(1)), "ReservedFlags", 1)
bad("undefined flag is reported before a bad body", "client", frame(UNSUB, 0x40, b""),
    "ReservedFlags", 1)
bad("length prefix 0", "client", u32(0), "FrameTooShort", 1)
bad("length prefix 1", "client", u32(1) + u8(PING), "FrameTooShort", 1)
bad("length prefix above small max_frame (prefix only)", "client", u32(17), "FrameTooLarge", 3,
    max_frame=16)
bad("PUB one byte above small max_frame", "client", pub("t.max", "", b"12345678"), "FrameTooLarge", 3,
    max_frame=16)
bad("length prefix above default max_frame (prefix only)", "client", u32(DEFAULT_MAX_FRAME + 1),
    "FrameTooLarge", 3)
bad("length prefix u32 max (prefix only)", "client", u32(U32_MAX), "FrameTooLarge", 3)
bad("unknown opcode 0x00", "client", frame(0x00, 0, b""), "UnknownOpcode", 2)
bad("unknown opcode 0x04", "client", frame(0x04, 0, u64(1)), "UnknownOpcode", 2)
bad("unknown opcode 0x21 with flags", "client", frame(0x21, 0xFF, b"xyz"), "UnknownOpcode", 2)
bad("unknown opcode 0xff", "client", frame(0xFF, 0, b""), "UnknownOpcode", 2)
bad("server WELCOME sent as client", "client",
    welcome(1, DEFAULT_MAX_FRAME, 5000, 0, 1, "x"), "UnknownOpcode", 2)
bad("server PING sent as client", "client", nonce_frame(S_PING, 1), "UnknownOpcode", 2)
bad("server MSG sent as client", "client", msg(1, "a", "", b""), "UnknownOpcode", 2)
bad("server PONG sent as client", "client", nonce_frame(S_PONG, 1), "UnknownOpcode", 2)
bad("server DROPPED sent as client", "client", dropped(1, 1), "UnknownOpcode", 2)
bad("server ERR sent as client", "client", err(1, True, "x"), "UnknownOpcode", 2)
bad("server GOAWAY sent as client", "client", goaway(1, 0), "UnknownOpcode", 2)
bad("PUB bad UTF-8 in topic", "client", frame(PUB, 0, short(b"a\xff") + short("") + b"p"),
    "BadUtf8", 100, field="Topic")
bad("PUB cut UTF-8 sequence in topic", "client", frame(PUB, 0, short(b"caf\xc3") + short("")),
    "BadUtf8", 100, field="Topic")
bad("PUB overlong UTF-8 in topic", "client", frame(PUB, 0, short(b"\xc0\xae") + short("")),
    "BadUtf8", 100, field="Topic")
bad("PUB UTF-16 surrogate in topic", "client", frame(PUB, 0, short(b"\xed\xa0\x80") + short("")),
    "BadUtf8", 100, field="Topic")
bad("PUB bad UTF-8 in reply-to", "client", frame(PUB, 0, short("a") + short(b"\x80") + b"p"),
    "BadUtf8", 100, field="ReplyTo")
bad("SUB bad UTF-8 in topic", "client", frame(SUB, 0, u32(1) + short(b"\xfe") + short("")),
    "BadUtf8", 100, field="Topic")
bad("SUB bad UTF-8 in queue group", "client", frame(SUB, 0, u32(1) + short("a") + short(b"\xff")),
    "BadUtf8", 1, field="QueueGroup")
bad("HELLO bad UTF-8 in client name", "client", frame(HELLO, 0, u16(1) + short(b"\xff") + long_(b"")),
    "BadUtf8", 1, field="ClientName")
bad("HELLO client name of 65 bytes", "client", hello(1, "n" * 65, b""), "TooLong", 1,
    field="ClientName")
bad("HELLO client name of 255 bytes", "client", hello(1, "n" * 255, b"t"), "TooLong", 1,
    field="ClientName")

# --- Malformed server frames. "code" is what DecodeError::code() says; a
# client treats every one of these as a protocol error.
bad("ERR fatal byte 2", "server", frame(ERR, 0, u16(1) + u8(2) + long_("x")), "BadBool", 1)
bad("ERR fatal byte 0xff", "server", frame(ERR, 0, u16(100) + u8(0xFF) + long_("")), "BadBool", 1)
bad("ERR bad UTF-8 in text", "server", frame(ERR, 0, u16(1) + u8(1) + long_(b"\xff\xfe")),
    "BadUtf8", 1, field="ErrorText")
bad("ERR text length past end", "server", frame(ERR, 0, u16(1) + u8(1) + u16(10) + b"short"),
    "Truncated", 1)
bad("ERR trailing byte", "server", frame(ERR, 0, u16(1) + u8(1) + long_("x") + TRAIL),
    "TrailingBytes", 1)
bad("ERR flag bit 0", "server", frame(ERR, 0x01, u16(1) + u8(1) + long_("")), "ReservedFlags", 1)
bad("WELCOME trailing byte", "server",
    frame(WELCOME, 0, welcome(1, 1024, 1000, 0, 1, "s")[6:] + TRAIL), "TrailingBytes", 1)
bad("WELCOME server name length missing", "server",
    frame(WELCOME, 0, welcome(1, 1024, 1000, 0, 1, "")[6:-1]), "Truncated", 1)
bad("WELCOME server name length past end", "server",
    frame(WELCOME, 0, welcome(1, 1024, 1000, 0, 1, "")[6:-1] + u8(8) + b"core"), "Truncated", 1)
bad("WELCOME bad UTF-8 in server name", "server",
    frame(WELCOME, 0, welcome(1, 1024, 1000, 0, 1, "")[6:-1] + short(b"\xc3")),
    "BadUtf8", 1, field="ServerName")
bad("server PING trailing byte", "server", frame(S_PING, 0, u64(1) + TRAIL), "TrailingBytes", 1)
bad("server PONG nonce cut short", "server", frame(S_PONG, 0, u64(1)[:4]), "Truncated", 1)
bad("server PING empty body", "server", frame(S_PING, 0, b""), "Truncated", 1)
bad("server PONG trailing byte", "server", frame(S_PONG, 0, u64(1) + TRAIL), "TrailingBytes", 1)
bad("WELCOME flag bit 0", "server", frame(WELCOME, 0x01, welcome(1, 1024, 1000, 0, 1, "s")[6:]),
    "ReservedFlags", 1)
bad("server PING flag bit 1", "server", frame(S_PING, 0x02, u64(1)), "ReservedFlags", 1)
bad("server PONG flag bit 7", "server", frame(S_PONG, 0x80, u64(1)), "ReservedFlags", 1)
bad("GOAWAY flag bit 0", "server", frame(GOAWAY, 0x01, u16(1) + u32(0)), "ReservedFlags", 1)
bad("DROPPED trailing byte", "server", frame(DROPPED, 0, u32(1) + u64(1) + TRAIL), "TrailingBytes", 1)
bad("DROPPED count cut short", "server", frame(DROPPED, 0, u32(1) + u64(1)[:7]), "Truncated", 1)
bad("GOAWAY trailing byte", "server", frame(GOAWAY, 0, u16(1) + u32(0) + TRAIL), "TrailingBytes", 1)
bad("GOAWAY grace cut short", "server", frame(GOAWAY, 0, u16(1) + u32(0)[:3]), "Truncated", 1)
bad("MSG flag bit 0", "server", frame(MSG, 0x01, u32(1) + short("a") + short("")), "ReservedFlags", 1)
bad("MSG topic length past end", "server", frame(MSG, 0, u32(1) + u8(3) + b"a"), "Truncated", 1)
bad("MSG bad UTF-8 in topic", "server", frame(MSG, 0, u32(1) + short(b"\xff") + short("")),
    "BadUtf8", 100, field="Topic")
bad("MSG bad UTF-8 in reply-to", "server", frame(MSG, 0, u32(1) + short("a") + short(b"\x80") + b"p"),
    "BadUtf8", 100, field="ReplyTo")
bad("DROPPED flag bit 0", "server", frame(DROPPED, 0x01, u32(1) + u64(1)), "ReservedFlags", 1)
bad("unknown server opcode 0x84", "server", frame(0x84, 0, u64(1)), "UnknownOpcode", 2)
bad("unknown server opcode 0xe2", "server", frame(0xE2, 0, b""), "UnknownOpcode", 2)
bad("client HELLO sent as server", "server", hello(1, "x", b""), "UnknownOpcode", 2)
bad("client PING sent as server", "server", nonce_frame(PING, 1), "UnknownOpcode", 2)
bad("client PONG sent as server", "server", nonce_frame(PONG, 1), "UnknownOpcode", 2)
bad("client SUB sent as server", "server", sub(1, "a", "", True), "UnknownOpcode", 2)
bad("client UNSUB sent as server", "server", unsub(1), "UnknownOpcode", 2)
bad("client PUB sent as server", "server", pub("a", "", b"p"), "UnknownOpcode", 2)
bad("server frame above max_frame + 4", "server", msg(1, "t.max", "", b"12345678"), "FrameTooLarge", 3,
    max_frame=20)
bad("server length prefix 1", "server", u32(1), "FrameTooShort", 1)

# --- Extension: STATS / STATS_REPLY.
def stats_reply(nonce, text):
    return frame(STATS_REPLY, 0, u64(nonce) + u32(len(text.encode())) + text.encode())


ok("STATS nonce 9", "client", nonce_frame(STATS, 9), {"type": "STATS", "nonce": 9})
ok("STATS_REPLY with counters", "server", stats_reply(9, '{"total":{"slots_in_use":0}}'),
   {"type": "STATS_REPLY", "nonce": 9, "json": '{"total":{"slots_in_use":0}}'})
ok("STATS_REPLY empty document", "server", stats_reply(1, ""),
   {"type": "STATS_REPLY", "nonce": 1, "json": ""})
bad("STATS trailing byte", "client", frame(STATS, 0, u64(1) + TRAIL), "TrailingBytes", 1)
bad("STATS nonce cut short", "client", frame(STATS, 0, u64(1)[:5]), "Truncated", 1)
bad("STATS flag bit 0", "client", frame(STATS, 0x01, u64(1)), "ReservedFlags", 1)
bad("STATS_REPLY trailing byte", "server", frame(STATS_REPLY, 0, u64(1) + u32(2) + b"{}" + TRAIL),
    "TrailingBytes", 1)
bad("STATS_REPLY length past end", "server", frame(STATS_REPLY, 0, u64(1) + u32(9) + b"{}"),
    "Truncated", 1)
bad("STATS_REPLY flag bit 0", "server", frame(STATS_REPLY, 0x01, u64(1) + u32(0)), "ReservedFlags", 1)
bad("STATS_REPLY bad UTF-8", "server", frame(STATS_REPLY, 0, u64(1) + u32(1) + b"\xff"), "BadUtf8", 1,
    field="StatsJson")
bad("client STATS sent as server", "server", nonce_frame(STATS, 1), "UnknownOpcode", 2)
bad("server STATS_REPLY sent as client", "client", stats_reply(1, "{}"), "UnknownOpcode", 2)

# --- Incomplete input: the decoder needs more bytes and consumes nothing.
ping7 = nonce_frame(PING, 7)
partial("nothing at all", "client", b"")
partial("1 byte of the length prefix", "client", ping7[:1])
partial("3 bytes of the length prefix", "client", ping7[:3])
partial("3 bytes of an oversized length prefix", "client", u32(U32_MAX)[:3], max_frame=16)
partial("length prefix only", "client", ping7[:4])
partial("header without body", "client", ping7[:6])
partial("PING missing its last byte", "client", ping7[:-1])
partial("HELLO header without full body", "client", hello(1, "demo", b"tok")[:10])
partial("PUB missing the last payload byte", "client", pub("a", "", b"xyz")[:-1])
partial("PUB exactly max_frame long, last byte missing", "client", pub("t.max", "", b"1234567")[:-1],
    max_frame=16)
partial("3 bytes of a server length prefix", "server", err(1, True, "x")[:3])
partial("WELCOME missing its last byte", "server", welcome(1, DEFAULT_MAX_FRAME, 5000, 0, 1, "corecast")[:-1])
partial("MSG header without body", "server", msg(1, "a", "", b"payload")[:6])
partial("ERR missing text bytes", "server", err(9, True, "slow consumer")[:12])


# =================================================================== v1.1
# Everything below belongs to version 1.1 (PROTOCOL.md, section 13).
SINCE = "1.1"

HPUB, HMSG, NO_RESPONDERS = 0x22, 0x92, 0x93
HELLO_V11, HELLO_NO_ECHO, WELCOME_V11, REQUEST = 0x02, 0x04, 0x02, 0x02
CODES_11 = {13: "bad header", 106: "bad queue group"}
MAX_HEADERS, MAX_KEY, MAX_VALUE = 64, 64, 4096


def block(pairs):
    """A header block: u8 count, then per header u8-length key, u16-length value."""
    out = u8(len(pairs))
    for k, v in pairs:
        out += short(k) + long_(v)
    return out


def hpub_raw(flags, topic, reply_to, blk, payload):
    """HPUB from a header block given as bytes (for malformed blocks)."""
    return frame(HPUB, flags, short(topic) + short(reply_to) + long_(blk) + payload)


def hpub(topic, reply_to, pairs, payload, request=False):
    return hpub_raw(REQUEST if request else 0, topic, reply_to, block(pairs), payload)


def hmsg_raw(sid, topic, reply_to, blk, payload):
    return frame(HMSG, 0, u32(sid) + short(topic) + short(reply_to) + long_(blk) + payload)


def hmsg(sid, topic, reply_to, pairs, payload):
    return hmsg_raw(sid, topic, reply_to, block(pairs), payload)


def no_responders(topic, reply_to):
    return frame(NO_RESPONDERS, 0, short(topic) + short(reply_to))


def hello11(version, name, token, no_echo):
    flags = HELLO_V11 | (HELLO_NO_ECHO if no_echo else 0)
    return frame(HELLO, flags, u16(version) + short(name) + long_(token))


def pub_request(topic, reply_to, payload):
    return frame(PUB, REQUEST, short(topic) + short(reply_to) + payload)


def welcome11(*args):
    return frame(WELCOME, WELCOME_V11, welcome(*args)[6:])


def f_hello11(version, name, token, no_echo):
    f = f_hello(version, name, token)
    f.update({"v1_1": True, "no_echo": no_echo})
    return f


def f_pub11(topic, reply_to, payload, request):
    f = f_pub(topic, reply_to, payload)
    f["request"] = request
    return f


def f_welcome11(*args):
    f = f_welcome(*args)
    f["v1_1"] = True
    return f


def f_hpub(topic, reply_to, pairs, payload, request=False):
    return {"type": "HPUB", "topic": topic, "reply_to": reply_to,
            "headers": [[k, v] for k, v in pairs], "payload": payload.hex(), "request": request}


def f_hmsg(sid, topic, reply_to, pairs, payload):
    return {"type": "HMSG", "sid": sid, "topic": topic, "reply_to": reply_to,
            "headers": [[k, v] for k, v in pairs], "payload": payload.hex()}


def f_no_responders(topic, reply_to):
    return {"type": "NO_RESPONDERS", "topic": topic, "reply_to": reply_to}


def ok_hpub(name, topic, reply_to, pairs, payload, request=False, **kw):
    ok(name, "client", hpub(topic, reply_to, pairs, payload, request),
       f_hpub(topic, reply_to, pairs, payload, request), **kw)


def ok_hmsg(name, sid, topic, reply_to, pairs, payload, **kw):
    ok(name, "server", hmsg(sid, topic, reply_to, pairs, payload),
       f_hmsg(sid, topic, reply_to, pairs, payload), **kw)


def bad_header(name, direction, data, detail, **kw):
    bad(name, direction, data, "BadHeader", 13, detail=detail, **kw)


TRACE = [("trace-id", "4bf92f3577b34da6")]

# --- The worked example of section 13.9, frame by frame.
ok("example 12: HELLO asking for 1.1", "client", hello11(1, "svc", b"", False),
   f_hello11(1, "svc", b"", False))
ok("example 13: WELCOME granting 1.1", "server",
   welcome11(1, DEFAULT_MAX_FRAME, 30000, 0, 8, "corecast"),
   f_welcome11(1, DEFAULT_MAX_FRAME, 30000, 0, 8, "corecast"))
ok_sub("example 14: SUB to a wildcard pattern", 1, "orders.*", "", False)
ok_sub("example 15: SUB in a queue group", 2, "orders.>", "workers", False)
ok("example 16: PING", "client", nonce_frame(PING, 2), {"type": "PING", "nonce": 2})
ok("example 17: PONG", "server", nonce_frame(S_PONG, 2), {"type": "PONG", "nonce": 2})
ok_hpub("example 18: HPUB", "orders.eu", "", [("trace-id", "7f3a")], b"hi")
ok_hmsg("example 19: HMSG for the pattern", 1, "orders.eu", "", [("trace-id", "7f3a")], b"hi")
ok_hmsg("example 20: HMSG for the queue group", 2, "orders.eu", "", [("trace-id", "7f3a")], b"hi")
ok("example 21: PUB request", "client", pub_request("svc.time", "_INBOX.r1", b""),
   f_pub11("svc.time", "_INBOX.r1", b"", True))
ok("example 22: NO_RESPONDERS", "server", no_responders("svc.time", "_INBOX.r1"),
   f_no_responders("svc.time", "_INBOX.r1"))
ok_sub("example 23: SUB with a bad queue group", 3, "jobs", "a.b", False)
ok_err("example 24: ERR bad queue group", 106, False, "bad queue group")

# --- Valid client frames.
ok("HELLO asking for 1.1 with no echo, name and token", "client",
   hello11(1, "worker-7", b"s3cr3t", True), f_hello11(1, "worker-7", b"s3cr3t", True))
ok("HELLO asking for 1.1, version 2 decodes (broker answers unsupported version 6)", "client",
   hello11(2, "x", b"", False), f_hello11(2, "x", b"", False))
ok("PUB request with payload", "client", pub_request("svc.time", "_INBOX.a.1", b"now?"),
   f_pub11("svc.time", "_INBOX.a.1", b"now?", True))
ok("PUB request with empty reply-to decodes (broker answers bad topic 100)", "client",
   pub_request("svc.time", "", b""), f_pub11("svc.time", "", b"", True))
ok("PUB without flags, read by a 1.1 decoder", "client", pub("a", "", b"x"),
   f_pub11("a", "", b"x", False))
ok_sub("SUB pattern * in a queue group, lossy", 10, "orders.*.paid", "billing", True)
ok_sub("SUB pattern > alone", 11, ">", "", False)
ok_sub("SUB queue group of 255 bytes", 12, "jobs", "q" * 255, False)
ok_sub("SUB queue group with a dot decodes (broker answers bad queue group 106)", 13, "jobs",
       "a.b", False)
ok_hpub("HPUB one header", "orders.eu", "", TRACE, b"payload")
ok_hpub("HPUB no headers, empty payload", "a", "", [], b"")
ok_hpub("HPUB request with reply-to and headers", "svc.time", "_INBOX.q2",
        [("content-type", "application/json"), ("Nats-Msg-Id", "42")], b"{}", request=True)
ok_hpub("HPUB repeated keys keep their order", "a", "",
        [("k", "2"), ("k", "1"), ("K", "3"), ("k", "")], b"x")
ok_hpub("HPUB UTF-8 value with spaces, every key character", "a.b", "",
        [("!#$%&'*+-.^_`|~09AZaz\"(),/;<=>?@[\\]{}", "café au lait « ü »")], bytes([0, 0xFF]))
ok_hpub("HPUB 64 headers (the maximum)", "a", "", [("h%d" % i, str(i)) for i in range(64)], b"")
ok_hpub("HPUB key of 64 bytes and value of 4096 bytes (the maxima)", "a", "",
        [("k" * 64, "v" * 4096)], b"p")
ok_hpub("HPUB payload that looks like a header block", "a", "", [], block(TRACE))
# len = 2 + 1 + 5 + 1 + 0 + 2 + 1 + 4 = 16 = max_frame: exactly at the limit.
ok_hpub("HPUB exactly max_frame long", "t.max", "", [], b"1234", max_frame=16)

# --- Valid server frames.
ok("WELCOME granting 1.1, large numbers", "server",
   welcome11(1, U32_MAX, U32_MAX, 0xFFFF, U64_MAX, ""),
   f_welcome11(1, U32_MAX, U32_MAX, 0xFFFF, U64_MAX, ""))
ok_hmsg("HMSG one header", 1, "orders.eu", "", TRACE, b"payload")
ok_hmsg("HMSG no headers, empty payload, sid u32 max", U32_MAX, "a", "", [], b"")
ok_hmsg("HMSG with reply-to and repeated keys", 9, "svc.time", "_INBOX.q2",
        [("k", "1"), ("k", "2")], b"hello")
# An HPUB exactly max_frame = 16 long becomes an HMSG 4 bytes longer: 20.
ok_hmsg("HMSG carrying a maximal HPUB is max_frame + 4", 1, "t.max", "", [], b"1234", max_frame=20)
ok("NO_RESPONDERS", "server", no_responders("svc.time", "_INBOX.q1"),
   f_no_responders("svc.time", "_INBOX.q1"))
ok("NO_RESPONDERS UTF-8 topic, maximal lengths", "server", no_responders("é" * 127 + "x", "r" * 255),
   f_no_responders("é" * 127 + "x", "r" * 255))
for code, cname in CODES_11.items():
    ok_err(f"ERR code {code} ({cname})", code, code < 100, cname)

# --- Bad flags.
hello_body = u16(1) + short("a") + long_(b"")
bad("HELLO no echo without the 1.1 bit", "client", frame(HELLO, HELLO_NO_ECHO, hello_body),
    "ReservedFlags", 1)
bad("HELLO 1.1 bit with flag bit 0", "client", frame(HELLO, 0x03, hello_body), "ReservedFlags", 1)
# Bit 3 became the credential bit (section 14); this vector, which first set
# 0x0E, now sets bit 4 instead, the lowest undefined bit.
bad("HELLO 1.1 and no echo with flag bit 4", "client", frame(HELLO, 0x16, hello_body),
    "ReservedFlags", 1)
bad("HELLO 1.1 flags are checked before a bad body", "client", frame(HELLO, 0x06 | 0x80, b""),
    "ReservedFlags", 1)
bad("PUB request with flag bit 0", "client", frame(PUB, 0x03, short("a") + short("r")),
    "ReservedFlags", 1)
bad("PUB flag bit 2", "client", frame(PUB, 0x04, short("a") + short("r")), "ReservedFlags", 1)
bad("HPUB flag bit 0", "client", hpub_raw(0x01, "a", "", block([]), b""), "ReservedFlags", 1)
bad("HPUB request with flag bit 7", "client", hpub_raw(0x82, "a", "r", block([]), b""),
    "ReservedFlags", 1)
bad("WELCOME 1.1 bit with flag bit 0", "server", frame(WELCOME, 0x03, welcome(1, 1024, 1000, 0, 1, "s")[6:]),
    "ReservedFlags", 1)
bad("WELCOME flag bit 2", "server", frame(WELCOME, 0x04, welcome(1, 1024, 1000, 0, 1, "s")[6:]),
    "ReservedFlags", 1)
bad("HMSG flag bit 0", "server", frame(HMSG, 0x01, u32(1) + short("a") + short("") + long_(block([]))),
    "ReservedFlags", 1)
bad("HMSG flag bit 1", "server", frame(HMSG, 0x02, u32(1) + short("a") + short("") + long_(block([]))),
    "ReservedFlags", 1)
bad("NO_RESPONDERS flag bit 0", "server", frame(NO_RESPONDERS, 0x01, short("a") + short("r")),
    "ReservedFlags", 1)

# --- HPUB layout: lengths past the frame are malformed frame (1).
bad("HPUB empty body", "client", frame(HPUB, 0, b""), "Truncated", 1)
bad("HPUB topic length past end", "client", frame(HPUB, 0, u8(9) + b"orders"), "Truncated", 1)
bad("HPUB reply-to length past end", "client", frame(HPUB, 0, short("a") + u8(4) + b"r"),
    "Truncated", 1)
bad("HPUB header block length missing", "client", frame(HPUB, 0, short("a") + short("")),
    "Truncated", 1)
bad("HPUB header block length cut short", "client", frame(HPUB, 0, short("a") + short("") + b"\x01"),
    "Truncated", 1)
bad("HPUB header block length past the end of the frame", "client",
    frame(HPUB, 0, short("a") + short("") + u16(40) + block(TRACE)), "Truncated", 1)
bad("HPUB header block length one past the end of the frame", "client",
    frame(HPUB, 0, short("a") + short("") + u16(len(block(TRACE)) + 1) + block(TRACE)), "Truncated", 1)
bad("HPUB bad UTF-8 in topic", "client", hpub_raw(0, b"\xff", "", block([]), b""), "BadUtf8", 100,
    field="Topic")
bad("HPUB bad UTF-8 in reply-to", "client", hpub_raw(0, "a", b"\xc3", block([]), b""), "BadUtf8", 100,
    field="ReplyTo")
bad("HPUB bad UTF-8 in topic is reported before a bad header block", "client",
    hpub_raw(0, b"\xff", "", u8(65), b""), "BadUtf8", 100, field="Topic")
bad("HPUB one byte above small max_frame", "client", hpub("t.max", "", [], b"12345"),
    "FrameTooLarge", 3, max_frame=16)

# --- HPUB header block: anything wrong inside it is bad header (13).
k1 = short("k") + long_("v")  # one well-formed header: 01 6b 0100 76
bad_header("HPUB empty header block (no count byte)", "client", hpub_raw(0, "a", "", b"", b"p"),
           "Truncated")
bad_header("HPUB header count past the end of the block", "client",
           hpub_raw(0, "a", "", u8(2) + k1, b""), "Truncated")
bad_header("HPUB header count 1 with no header", "client", hpub_raw(0, "a", "", u8(1), b"p"),
           "Truncated")
bad_header("HPUB header count reaching into the payload", "client",
           hpub_raw(0, "a", "", u8(2) + k1, k1), "Truncated")
bad_header("HPUB key length past the end of the block", "client",
           hpub_raw(0, "a", "", u8(1) + u8(5) + b"ke", b""), "Truncated")
bad_header("HPUB key running into the payload", "client",
           hpub_raw(0, "a", "", u8(1) + u8(5) + b"ke", b"y" + long_("v")), "Truncated")
bad_header("HPUB value length missing", "client", hpub_raw(0, "a", "", u8(1) + short("k"), b""),
           "Truncated")
bad_header("HPUB value length cut short", "client",
           hpub_raw(0, "a", "", u8(1) + short("k") + b"\x01", b""), "Truncated")
bad_header("HPUB value length past the end of the block", "client",
           hpub_raw(0, "a", "", u8(1) + short("k") + u16(10) + b"abc", b""), "Truncated")
bad_header("HPUB trailing byte in the header block", "client",
           hpub_raw(0, "a", "", u8(1) + k1 + b"\x00", b"p"), "TrailingBytes")
bad_header("HPUB header block with a count of 0 and a header", "client",
           hpub_raw(0, "a", "", u8(0) + k1, b""), "TrailingBytes")
bad_header("HPUB 65 headers", "client", hpub_raw(0, "a", "", u8(65) + k1 * 65, b""), "TooMany")
bad_header("HPUB header count 255 is refused before the headers", "client",
           hpub_raw(0, "a", "", u8(255), b""), "TooMany")
bad_header("HPUB empty key", "client", hpub_raw(0, "a", "", u8(1) + u8(0) + long_("v"), b""),
           "EmptyKey")
bad_header("HPUB key of 65 bytes", "client", hpub_raw(0, "a", "", block([("k" * 65, "v")]), b""),
           "KeyTooLong")
bad_header("HPUB key of 255 bytes", "client", hpub_raw(0, "a", "", block([("k" * 255, "")]), b""),
           "KeyTooLong")
bad_header("HPUB key longer than allowed is refused before its bytes", "client",
           hpub_raw(0, "a", "", u8(1) + u8(200) + b"k", b""), "KeyTooLong")
bad_header("HPUB key with a colon", "client", hpub_raw(0, "a", "", block([("a:b", "v")]), b""),
           "BadKeyByte")
bad_header("HPUB key with a space", "client", hpub_raw(0, "a", "", block([("a b", "v")]), b""),
           "BadKeyByte")
bad_header("HPUB key with a control byte", "client", hpub_raw(0, "a", "", block([("a\x7f", "v")]), b""),
           "BadKeyByte")
bad_header("HPUB key with a non-ASCII byte", "client", hpub_raw(0, "a", "", block([("é", "v")]), b""),
           "BadKeyByte")
bad_header("HPUB second header bad after a good one", "client",
           hpub_raw(0, "a", "", u8(2) + k1 + short(":") + long_("v"), b""), "BadKeyByte")
bad_header("HPUB value of 4097 bytes", "client", hpub_raw(0, "a", "", block([("k", "v" * 4097)]), b""),
           "ValueTooLong")
bad_header("HPUB value longer than allowed is refused before its bytes", "client",
           hpub_raw(0, "a", "", u8(1) + short("k") + u16(0xFFFF), b""), "ValueTooLong")
bad_header("HPUB value not UTF-8", "client",
           hpub_raw(0, "a", "", u8(1) + short("k") + long_(b"\xff"), b""), "BadValueUtf8")
bad_header("HPUB value with an overlong UTF-8 form", "client",
           hpub_raw(0, "a", "", u8(1) + short("k") + long_(b"\xc0\xaf"), b""), "BadValueUtf8")
bad_header("HPUB value with CR LF", "client", hpub_raw(0, "a", "", block([("k", "a\r\nb")]), b""),
           "BadValueChar")
bad_header("HPUB value with NUL", "client", hpub_raw(0, "a", "", block([("k", "\x00")]), b""),
           "BadValueChar")
bad_header("HPUB value with a C1 control (U+0085)", "client",
           hpub_raw(0, "a", "", block([("k", "x\u0085")]), b""), "BadValueChar")

# --- HMSG and NO_RESPONDERS, malformed (a client closes on each).
bad("HMSG sid cut short", "server", frame(HMSG, 0, u32(1)[:3]), "Truncated", 1)
bad("HMSG header block length missing", "server", frame(HMSG, 0, u32(1) + short("a") + short("")),
    "Truncated", 1)
bad("HMSG header block length past the end of the frame", "server",
    frame(HMSG, 0, u32(1) + short("a") + short("") + u16(9) + block([])), "Truncated", 1)
bad("HMSG bad UTF-8 in topic", "server", hmsg_raw(1, b"\xfe", "", block([]), b""), "BadUtf8", 100,
    field="Topic")
bad("HMSG bad UTF-8 in reply-to", "server", hmsg_raw(1, "a", b"\x80", block([]), b""), "BadUtf8", 100,
    field="ReplyTo")
bad_header("HMSG header count past the end of the block", "server",
           hmsg_raw(1, "a", "", u8(3) + k1, b""), "Truncated")
bad_header("HMSG key of 65 bytes", "server", hmsg_raw(1, "a", "", block([("k" * 65, "v")]), b""),
           "KeyTooLong")
bad_header("HMSG value with LF", "server", hmsg_raw(1, "a", "", block([("k", "\n")]), b""),
           "BadValueChar")
bad_header("HMSG trailing byte in the header block", "server",
           hmsg_raw(1, "a", "", block([]) + b"\x00", b""), "TrailingBytes")
bad("HMSG above max_frame + 4", "server", hmsg(1, "t.max", "", [], b"12345"), "FrameTooLarge", 3,
    max_frame=20)
bad("NO_RESPONDERS empty body", "server", frame(NO_RESPONDERS, 0, b""), "Truncated", 1)
bad("NO_RESPONDERS reply-to length past end", "server", frame(NO_RESPONDERS, 0, short("a") + u8(3) + b"r"),
    "Truncated", 1)
bad("NO_RESPONDERS reply-to missing", "server", frame(NO_RESPONDERS, 0, short("a")), "Truncated", 1)
bad("NO_RESPONDERS trailing byte", "server", frame(NO_RESPONDERS, 0, short("a") + short("r") + TRAIL),
    "TrailingBytes", 1)
bad("NO_RESPONDERS bad UTF-8 in topic", "server", frame(NO_RESPONDERS, 0, short(b"\xff") + short("r")),
    "BadUtf8", 100, field="Topic")
bad("NO_RESPONDERS bad UTF-8 in reply-to", "server", frame(NO_RESPONDERS, 0, short("a") + short(b"\xff")),
    "BadUtf8", 100, field="ReplyTo")

# --- Opcodes in the wrong direction, and their undefined neighbours.
bad("client HPUB sent as server", "server", hpub("a", "", TRACE, b"p"), "UnknownOpcode", 2)
bad("server HMSG sent as client", "client", hmsg(1, "a", "", TRACE, b"p"), "UnknownOpcode", 2)
bad("server NO_RESPONDERS sent as client", "client", no_responders("a", "r"), "UnknownOpcode", 2)
bad("unknown opcode 0x23", "client", frame(0x23, 0, block([])), "UnknownOpcode", 2)
bad("unknown server opcode 0x94", "server", frame(0x94, 0, short("a") + short("r")), "UnknownOpcode", 2)

# --- Incomplete input.
partial("HPUB missing the last payload byte", "client", hpub("a", "", TRACE, b"xyz")[:-1])
partial("HPUB header without body", "client", hpub("a", "", TRACE, b"")[:6])
partial("HPUB exactly max_frame long, last byte missing", "client", hpub("t.max", "", [], b"1234")[:-1],
        max_frame=16)
partial("HMSG missing its last byte", "server", hmsg(1, "a", "", TRACE, b"")[:-1])
partial("NO_RESPONDERS missing its last byte", "server", no_responders("a", "r")[:-1])

# --- Credentials in HELLO (PROTOCOL.md, section 14): flag bit 3, with bit 1.
HELLO_CREDENTIAL = 0x08


def hello_cred(name, token, no_echo=False):
    flags = HELLO_V11 | HELLO_CREDENTIAL | (HELLO_NO_ECHO if no_echo else 0)
    return frame(HELLO, flags, u16(1) + short(name) + long_(token))


def ok_cred(vname, cname, token, parsed, no_echo=False):
    """A HELLO with the credential bit; `parsed` is what the token field
    reads as (section 14.1), or None when it is malformed."""
    f = f_hello(1, cname, token)
    f.update({"v1_1": True, "no_echo": no_echo, "credential": True, "credential_value": parsed})
    ok(vname, "client", hello_cred(cname, token, no_echo), f)


def c_password(user, password):
    return {"kind": "password", "user": user, "password": password.hex()}


def c_bearer(token):
    return {"kind": "bearer", "token": token.hex()}


def c_jwt(jwt):
    return {"kind": "jwt", "jwt": jwt}


JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MTkwMDAwMDAwMH0."
       "c2lnbmF0dXJl")
ok_cred("HELLO credential: password", "svc", b"password alice:s3cr3t", c_password("alice", b"s3cr3t"))
ok_cred("HELLO credential: password holding ':' and a space", "svc", b"password bob:a:b c",
        c_password("bob", b"a:b c"))
ok_cred("HELLO credential: empty password, UTF-8 user", "svc", "password josé:".encode(),
        c_password("josé", b""))
ok_cred("HELLO credential: password of binary bytes", "svc", b"password u:" + bytes([0x00, 0xFF]),
        c_password("u", bytes([0x00, 0xFF])))
ok_cred("HELLO credential: bearer", "svc", b"bearer 9f86d081884c7d65", c_bearer(b"9f86d081884c7d65"))
ok_cred("HELLO credential: bearer of binary bytes", "svc", b"bearer " + bytes([0x20, 0x00, 0xFF]),
        c_bearer(bytes([0x20, 0x00, 0xFF])))
ok_cred("HELLO credential: jwt", "svc", b"jwt " + JWT.encode(), c_jwt(JWT))
ok_cred("HELLO credential with no echo", "worker-7", b"bearer t0k", c_bearer(b"t0k"), no_echo=True)
# Malformed credentials: the frame is well-formed (a server decodes it and
# then answers auth failed, 7); the token field reads as no credential.
for vname, token in [
    ("empty token", b""),
    ("kind alone", b"password"),
    ("no space after the kind", b"passwordalice:pw"),
    ("unknown kind", b"basic alice:pw"),
    ("kind in capitals", b"Password alice:pw"),
    ("empty kind", b" alice:pw"),
    ("password without ':'", b"password alice"),
    ("password with an empty user", b"password :pw"),
    ("password with a non-UTF-8 user", b"password \xff:pw"),
    ("empty bearer token", b"bearer "),
    ("empty jwt", b"jwt "),
    ("non-UTF-8 jwt", b"jwt \xff.e30.c2ln"),
]:
    ok_cred(f"HELLO credential, malformed: {vname}", "svc", token, None)
# The credential bit is defined only with the 1.1 bit.
bad("HELLO credential bit without the 1.1 bit", "client",
    frame(HELLO, HELLO_CREDENTIAL, u16(1) + short("a") + long_(b"bearer t")), "ReservedFlags", 1)
bad("HELLO credential and no echo without the 1.1 bit", "client",
    frame(HELLO, HELLO_CREDENTIAL | HELLO_NO_ECHO, u16(1) + short("a") + long_(b"bearer t")),
    "ReservedFlags", 1)
bad("HELLO credential bit with flag bit 0", "client",
    frame(HELLO, HELLO_V11 | HELLO_CREDENTIAL | 0x01, u16(1) + short("a") + long_(b"bearer t")),
    "ReservedFlags", 1)
partial("HELLO credential missing its last byte", "client", hello_cred("a", b"bearer t")[:-1])


def main():
    out = {"version": 1, "vectors": VECTORS}
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "v1.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=2, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {len(VECTORS)} vectors to {path}")


if __name__ == "__main__":
    main()
