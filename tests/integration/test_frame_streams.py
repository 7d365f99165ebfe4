"""Random frame streams against a reference model (checklist rows F1-F15,
F18 in combination). Each stream is a seeded random mix of what a client
may send (ping requests whole or in fragments split anywhere, also inside a
UTF-8 code point, with WebSocket pings between the fragments; control pings
and unsolicited pongs), usually ending in one violation of RFC 6455 or of
gohub's limits, then junk. The stream goes out in random chunks, so the
server sees frames whole in one read (its fast path) and split across reads
(wslay) in every combination.

The model says what the server must answer, in order: a pong frame per
control ping, the JSON pong (request_id, data.ts) per complete request, and
at the end the close code of the violation (or the echo of the client's
close), and nothing after it. A failure names its seed; rerun one stream
with `-k 'stream and SEED'`."""

import random
import socket
import time

import pytest

from gohub_helpers import (
    OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, RawWS, Timeout, check_pong,
    close_payload, frame, module_daemon, ping_json,
)

MAX_MSG = 65536
SEEDS = range(240)

daemon = module_daemon({
    "GOHUB_SERVER_CLOSE_TIMEOUT": "1s",
    "GOHUB_LIMITS_MESSAGES_PER_SECOND": "0",
    "GOHUB_SERVER_PING_INTERVAL": "1h",  # no server pings among the answers
})

# pad characters: 1-, 2-, 3- and 4-byte UTF-8
ALPHABET = "abcxyz019 -_é€中𝄞"
BAD_UTF8 = [b"\xff", b"\x80", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
            b"\xe2\x82", b"\xf0\x9f\x98"]


class Stream:
    """The bytes of one stream and what the server must answer."""

    def __init__(self, seed):
        self.rng = random.Random(seed)
        self.data = bytearray()
        self.expect = []       # ("pong", payload) | ("reply", mid)
        self.close = None      # (codes, TCP close without a close frame allowed)
        self.mid = 0
        self.kind = "clean"

    def add(self, *frames):
        for f in frames:
            self.data += f

    def request(self):
        self.mid += 1
        pad = "".join(self.rng.choice(ALPHABET) for _ in range(self.rng.choice([0, 3, 40, 300])))
        return ping_json(self.mid, ts=self.mid, pad=pad)

    def cuts(self, n, pieces):
        """Up to pieces - 1 cut points in 0..n (repeats allowed: empty
        fragments are legal)."""
        return sorted(self.rng.randint(0, n) for _ in range(pieces - 1))

    def control_ping(self):
        payload = bytes(self.rng.randrange(256) for _ in range(self.rng.randint(0, 125)))
        self.add(frame(OP_PING, payload))
        self.expect.append(("pong", payload))

    def message(self, body=None, pings=True, last=None):
        """One text message in 1-4 fragments; pings between them. last,
        when given, replaces the final frame (a violation inside it)."""
        body = self.request() if body is None else body
        pieces = self.rng.choice([1, 1, 2, 3, 4])
        at = [0] + self.cuts(len(body), pieces) + [len(body)]
        parts = [body[a:b] for a, b in zip(at, at[1:])]
        for i, part in enumerate(parts):
            op = OP_TEXT if i == 0 else OP_CONT
            fin = i == len(parts) - 1
            if fin and last is not None:
                self.add(last(op, part))
                return
            self.add(frame(op, part, fin=fin))
            if not fin and pings and self.rng.random() < 0.3:
                self.control_ping()
        self.expect.append(("reply", self.mid))

    def open_fragment(self):
        """The first fragment of a message that a violation will cut short."""
        body = self.request()
        self.add(frame(OP_TEXT, body[: self.rng.randint(0, len(body))], fin=False))

    def violation(self):
        rng = self.rng
        kind = rng.choice(["rsv", "opcode", "unmasked", "ctl_long", "ctl_fragment", "orphan",
                           "text_in_message", "bad_utf8", "binary", "length_form",
                           "declared_too_big", "total_too_big", "close", "close_bad_code"])
        self.kind = kind
        if kind == "rsv":
            rsv = rng.randint(1, 7)
            where = rng.choice(["text", "ping", "cont"])
            if where == "cont":
                self.open_fragment()
                self.add(frame(OP_CONT, b"x", rsv=rsv))
            else:
                self.add(frame(OP_TEXT if where == "text" else OP_PING, b"x", rsv=rsv))
            self.close = ({1002}, False)
        elif kind == "opcode":
            self.add(frame(rng.choice([3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF]), b"x"))
            self.close = ({1002}, False)
        elif kind == "unmasked":
            self.add(frame(OP_TEXT, self.request(), mask=False))
            self.close = ({1002}, False)
        elif kind == "ctl_long":
            op = rng.choice([OP_PING, OP_PONG, OP_CLOSE])
            payload = close_payload(1000, b"r" * 124) if op == OP_CLOSE else b"p" * 126
            self.add(frame(op, payload))
            self.close = ({1002}, True)
        elif kind == "ctl_fragment":
            self.add(frame(OP_PING, b"a", fin=False), frame(OP_CONT, b"b"))
            self.close = ({1002}, True)
        elif kind == "orphan":
            self.add(frame(OP_CONT, b"orphan", fin=rng.random() < 0.5))
            self.close = ({1002}, False)
        elif kind == "text_in_message":
            self.open_fragment()
            self.add(frame(OP_TEXT, self.request()))
            self.close = ({1002}, False)
        elif kind == "bad_utf8":
            body = self.request()
            at = rng.randint(body.index(b'"pad":"') + 7, len(body) - 3)
            bad = body[:at] + rng.choice(BAD_UTF8) + body[at:]
            self.message(body=bad, pings=False,
                         last=lambda op, part: frame(op, part, fin=True))
            self.close = ({1007}, False)
        elif kind == "binary":
            self.add(frame(OP_BINARY, b"\x00\x01", fin=rng.random() < 0.5))
            self.close = ({1003}, False)
        elif kind == "length_form":
            n = rng.choice([0, 5, 125])
            self.add(frame(OP_TEXT, b"h" * n, form=rng.choice(["16", "64"])))
            self.close = ({1002}, True)
        elif kind == "declared_too_big":
            self.add(frame(OP_TEXT, b"abc", length=rng.choice([MAX_MSG + 1, 1 << 40]), form="64"))
            self.close = ({1009}, False)
        elif kind == "total_too_big":
            self.add(frame(OP_TEXT, b"a" * 40000, fin=False), frame(OP_CONT, b"b" * 40000))
            self.close = ({1009}, False)
        elif kind == "close":
            if rng.random() < 0.3:
                self.open_fragment()  # a close may come between fragments
            code = rng.choice([1000, 1001, 1003, 3000, 4999])
            self.add(frame(OP_CLOSE, close_payload(code, b"bye")))
            self.close = ({code, 1000}, False)
        else:
            code = rng.choice([0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000])
            self.add(frame(OP_CLOSE, close_payload(code)))
            self.close = ({1002}, False)
        # junk after the violation: the server must not read it as frames
        self.add(frame(OP_PING, b"late"), frame(OP_TEXT, self.request()),
                 bytes(rng.randrange(256) for _ in range(rng.randint(0, 64))))


def make_stream(seed):
    s = Stream(seed)
    rng = s.rng
    for _ in range(rng.randint(0, 10)):
        r = rng.random()
        if r < 0.6:
            s.message()
        elif r < 0.85:
            s.control_ping()
        else:
            s.add(frame(OP_PONG, b"unsolicited"))
    if rng.random() < 0.75:
        s.violation()
    return s


def send_chunked(ws, data, rng):
    """data in random chunks; a pause now and then lets the server read a
    frame in parts."""
    sock = ws.conn.sock
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    i = 0
    while i < len(data):
        n = rng.choice([1, 2, 3, 7, 64, 500, 4096, 1 << 16])
        if not ws.send_raw(bytes(data[i:i + n])):
            return  # the server closed: what it had is what it answers
        i += n
        if rng.random() < 0.15:
            time.sleep(0.002)


def observe(ws, s, seed):
    """Checks the server's answers against s.expect, then its close."""
    where = f"seed {seed} ({s.kind})"
    for i, (what, arg) in enumerate(s.expect):
        try:
            f = ws.recv_frame(5.0)
        except (Timeout, EOFError) as e:
            raise AssertionError(f"{where}: answer {i} ({what} {arg!r:.40}) missing: {e!r}")
        if what == "pong":
            assert f.opcode == OP_PONG and f.payload == arg, \
                f"{where}: answer {i} should be a pong frame with the ping's payload, got {f}"
        else:
            assert f.opcode == OP_TEXT and f.fin, f"{where}: answer {i} should be a reply, got {f}"
            check_pong(f.payload, arg, ts=arg)
    if s.close is None:
        ws.send_close(1000)
        s.close = ({1000}, False)
    codes, tcp_ok = s.close
    r = ws.expect_close(5.0)
    assert not r.others, f"{where}: frames after the expected answers: {r.others}"
    if r.frame is None:
        assert tcp_ok, f"{where}: TCP closed without a close frame (want {codes})"
    else:
        assert r.code in codes, \
            f"{where}: close {r.code} {r.frame.close_reason!r}, want {codes}"
    assert ws.wait_eof(3.0), f"{where}: TCP still open after the close"


@pytest.mark.parametrize("seed", SEEDS)
def test_stream(daemon, seed):
    s = make_stream(seed)
    with RawWS.connect(daemon.port) as ws:
        send_chunked(ws, s.data, random.Random(seed + 1))
        observe(ws, s, seed)


def test_daemon_outlives_the_streams(daemon):
    """After every stream (this runs last in the module) the daemon is up,
    holds no connection and answers a fresh client."""
    assert daemon.running(), daemon.log_text()[-3000:]
    deadline = time.monotonic() + 5
    while daemon.health()["connections"] != 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert daemon.health()["connections"] == 0, daemon.health()
    with RawWS.connect(daemon.port) as ws:
        ws.send_text(ping_json(1, ts=1))
        check_pong(ws.recv_frame(3.0).payload, 1, ts=1)
