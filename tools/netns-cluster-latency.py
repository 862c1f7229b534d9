#!/usr/bin/env python3
"""Cross-host latency for tools/netns-cluster, over the wire protocol of
proto/PROTOCOL.md (version 1: HELLO, SUB, PUB with a reply-to, MSG, PING).

  echo HOST:PORT TOPIC COUNT [DEADLINE_S]
      Subscribes to TOPIC, prints "ready" once the SUB has taken effect,
      then answers every message by publishing its payload to its reply-to.
      A payload carries the sender's CLOCK_MONOTONIC time; the delay from
      it to the delivery here is the one-way publish-to-delivery latency
      (both ends run on one machine, in different network namespaces, so
      they read the same clock). After COUNT measured messages it prints
      their statistics and exits.

  ping HOST:PORT TOPIC COUNT [DEADLINE_S]
      Sends requests to TOPIC with a reply-to of its own until one is
      answered (the responder's interest has reached this node), then
      COUNT measured round trips, one at a time, and prints their
      statistics.

  publish HOST:PORT TOPIC COUNT PREFIX
      Publishes COUNT messages to TOPIC, payloads PREFIX-1 .. PREFIX-COUNT,
      and returns once the broker has taken them all (PING/PONG).

  state HOST:PORT
      Prints the "cluster" object of the monitoring port's /stats as
      "connected=N peers=N", or "absent" when /stats has none.

  counters HOST:PORT
      Prints the numbers of that object that are not 0, as NAME=VALUE
      lines ("absent" when there is none).

Statistics are one line: NAME n=.. min=.. p50=.. p90=.. p99=.. max=..
(microseconds). Exit status 0 on success, 1 on any failure or deadline.
"""

import json
import os
import select
import socket
import struct
import sys
import time
import urllib.request

HELLO, PING, PONG, SUB, PUB = 0x01, 0x02, 0x03, 0x10, 0x20
S_WELCOME, S_PING, S_PONG, S_MSG, S_ERR, S_GOAWAY = 0x81, 0x82, 0x83, 0x90, 0xE0, 0xE1
WARMUP, MEASURED = 0, 1


def frame(op, body):
    return struct.pack("<IBB", 2 + len(body), op, 0) + body


def short(text):
    raw = text.encode()
    return struct.pack("<B", len(raw)) + raw


class Conn:
    def __init__(self, addr, deadline):
        host, port = addr.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.buf = bytearray()
        self.deadline = deadline
        name = short("netns-cluster-latency")
        self.send(frame(HELLO, struct.pack("<H", 1) + name + struct.pack("<H", 0)))
        op, _ = self.next_frame()
        if op != S_WELCOME:
            fail(f"{addr}: expected WELCOME, got opcode {op:#x}")

    def send(self, data):
        view = memoryview(data)
        while view:
            try:
                n = self.sock.send(view)
                view = view[n:]
            except BlockingIOError:
                select.select([], [self.sock], [], 0.1)

    def next_frame(self, until=None):
        """The next frame that is not a server PING (answered here), or
        None once `until` (a monotonic time) has passed."""
        until = self.deadline if until is None else min(until, self.deadline)
        while True:
            if len(self.buf) >= 4:
                (size,) = struct.unpack_from("<I", self.buf)
                if len(self.buf) >= 4 + size:
                    op = self.buf[4]
                    body = bytes(self.buf[6 : 4 + size])
                    del self.buf[: 4 + size]
                    if op == S_PING:
                        self.send(frame(PONG, body))
                        continue
                    if op == S_ERR:
                        code, fatal, n = struct.unpack_from("<HBH", body)
                        text = body[5 : 5 + n].decode(errors="replace")
                        fail(f"broker error {code} (fatal={fatal}): {text}")
                    if op == S_GOAWAY:
                        fail("broker sent GOAWAY")
                    return op, body
            left = until - time.monotonic()
            if left <= 0:
                if time.monotonic() >= self.deadline:
                    fail("deadline passed")
                return None
            ready, _, _ = select.select([self.sock], [], [], left)
            if ready:
                chunk = self.sock.recv(1 << 16)
                if not chunk:
                    fail("the broker closed the connection")
                self.buf += chunk

    def flush(self):
        self.send(frame(PING, struct.pack("<Q", 7)))
        while True:
            op, _ = self.next_frame()
            if op == S_PONG:
                return

    def subscribe(self, sid, topic):
        self.send(frame(SUB, struct.pack("<I", sid) + short(topic) + b"\x00"))
        self.flush()

    def publish(self, topic, reply_to, payload):
        self.send(frame(PUB, short(topic) + short(reply_to) + payload))

    def next_msg(self, until=None):
        """(topic, reply_to, payload) of the next MSG, or None at `until`."""
        while True:
            got = self.next_frame(until)
            if got is None:
                return None
            op, body = got
            if op != S_MSG:
                continue
            t = body[4]
            topic = body[5 : 5 + t].decode()
            r = body[5 + t]
            reply_to = body[6 + t : 6 + t + r].decode()
            return topic, reply_to, body[6 + t + r :]


def fail(why):
    print(f"latency: {why}", file=sys.stderr)
    sys.exit(1)


def summary(name, samples_ns):
    s = sorted(samples_ns)
    n = len(s)

    def pct(p):
        return s[min(n - 1, max(0, -(-p * n // 100) - 1))] / 1000

    return (
        f"{name} n={n} min={s[0] / 1000:.0f} p50={pct(50):.0f} "
        f"p90={pct(90):.0f} p99={pct(99):.0f} max={s[-1] / 1000:.0f}"
    )


def echo(addr, topic, count, deadline):
    conn = Conn(addr, deadline)
    conn.subscribe(1, topic)
    print("ready", flush=True)
    one_way = []
    while len(one_way) < count:
        _, reply_to, payload = conn.next_msg()
        now = time.monotonic_ns()
        if len(payload) < 9:
            continue
        sent, kind = struct.unpack_from("<QB", payload)
        if kind == MEASURED:
            one_way.append(now - sent)
        if reply_to:
            conn.publish(reply_to, "", payload)
    print(summary("one-way", one_way), flush=True)


def ping(addr, topic, count, deadline):
    conn = Conn(addr, deadline)
    inbox = f"lat.inbox.{os.getpid()}"
    conn.subscribe(1, inbox)
    # Warm up: the responder's interest may not have reached this node yet,
    # and nothing comes back for a request nobody receives (version 1).
    warm = 0
    while True:
        conn.publish(topic, inbox, struct.pack("<QB", time.monotonic_ns(), WARMUP))
        if conn.next_msg(time.monotonic() + 0.2) is not None:
            warm += 1
            if warm == 20:
                break
    # Late answers to warm-up requests that timed out are dropped.
    while conn.next_msg(time.monotonic() + 0.2) is not None:
        pass
    rtt = []
    for _ in range(count):
        sent = time.monotonic_ns()
        conn.publish(topic, inbox, struct.pack("<QB", sent, MEASURED))
        until = time.monotonic() + 2
        while True:
            got = conn.next_msg(until)
            if got is None:
                fail(f"no answer within 2s after {len(rtt)} round trips")
            if got[2][:8] == struct.pack("<Q", sent):
                break
        rtt.append(time.monotonic_ns() - sent)
    print(summary("round-trip", rtt), flush=True)


def publish(addr, topic, count, prefix, deadline):
    conn = Conn(addr, deadline)
    for i in range(1, count + 1):
        conn.publish(topic, "", f"{prefix}-{i}".encode())
    conn.flush()


def cluster_of(addr):
    with urllib.request.urlopen(f"http://{addr}/stats", timeout=2) as answer:
        cluster = json.load(answer).get("cluster")
    return cluster if isinstance(cluster, dict) else None


def state(addr):
    cluster = cluster_of(addr)
    if cluster is None:
        print("absent")
        return
    connected = cluster.get("connected")
    print(f"connected={int(bool(connected))} peers={cluster.get('peers')}")


def counters(addr):
    cluster = cluster_of(addr)
    if cluster is None:
        print("absent")
        return
    for name, value in sorted(cluster.items()):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value:
            print(f"{name}={value}")


def main(argv):
    if len(argv) == 3 and argv[1] in ("state", "counters"):
        (state if argv[1] == "state" else counters)(argv[2])
        return
    if len(argv) == 6 and argv[1] == "publish":
        publish(argv[2], argv[3], int(argv[4]), argv[5], time.monotonic() + 30)
        return
    if len(argv) not in (5, 6) or argv[1] not in ("echo", "ping"):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    mode, addr, topic, count = argv[1], argv[2], argv[3], int(argv[4])
    deadline = time.monotonic() + (float(argv[5]) if len(argv) == 6 else 30)
    (echo if mode == "echo" else ping)(addr, topic, count, deadline)


if __name__ == "__main__":
    main(sys.argv)
