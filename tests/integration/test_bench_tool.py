"""gohub-bench and gohub-floor, the tools behind the published numbers
("Performance" in the README), checked against servers whose behaviour the
test knows: gohub (its HTTP API and /metrics say what the server saw),
gohub-floor, and MiniHub below, a small Python server of the bench's
protocol subset that can drop or delay deliveries, refuse the handshake or
close connections on purpose. The tool must count exactly what happened.

The binaries are taken from next to GOHUB_BIN (build/<variant>/), so the
ASan pass runs the sanitized bench and floor too. Small scale throughout:
a few hundred connections, low fixed rates."""

import asyncio
import base64
import hashlib
import json
import os
import re
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from gohub_helpers import (
    REPO, SANITIZER_MARKERS, WS_GUID, clean_env, copy_lua, free_port, http_get, release_bin,
    running_daemon, wait_for, write_lua,
)

BIN_DIR = Path(os.path.abspath(release_bin())).parent
BENCH = BIN_DIR / "gohub-bench"
FLOOR = BIN_DIR / "gohub-floor"
HUB_SMOKE = REPO / "scripts" / "bench" / "hub_smoke.py"
PYTHON = "/usr/bin/python3"

pytestmark = pytest.mark.skipif(
    not (os.access(BENCH, os.X_OK) and os.access(FLOOR, os.X_OK)),
    reason=f"gohub-bench or gohub-floor not built next to GOHUB_BIN (in {BIN_DIR}): `make all`")

# the bench's custom handler, the file scripts/bench/run.sh installs
LOOKUP_LUA = (REPO / "scripts" / "bench" / "lookup.lua").read_text()


# --------------------------------------------------------------------------
# running the tools


class BenchRun:
    def __init__(self, proc_result):
        self.rc = proc_result.returncode
        self.stdout = proc_result.stdout
        self.stderr = proc_result.stderr
        lines = [l for l in self.stdout.splitlines() if l.startswith("{")]
        self.json = json.loads(lines[-1]) if lines else None

    def __repr__(self):
        return f"<gohub-bench rc={self.rc}\nstdout:\n{self.stdout[-3000:]}\nstderr:\n{self.stderr[-2000:]}>"


def bench_env():
    return clean_env()  # ASAN_OPTIONS/UBSAN_OPTIONS of the ASan pass pass through


def check_no_sanitizer(text, who):
    found = [m for m in SANITIZER_MARKERS if m in text]
    assert not found, f"{who}: sanitizer reports {found}:\n{text[-6000:]}"


def run_bench(mode, port, *args, timeout=40, pid=None):
    """Runs gohub-bench MODE --port PORT ARGS... to completion (killed after
    timeout: the tool must never hang); returns a BenchRun whose .json is
    the last JSON line on stdout (it must be the last line)."""
    cmd = [str(BENCH), mode, "--port", str(port), "--label", "test"] + [str(a) for a in args]
    if pid:
        cmd += ["--pid", str(pid)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=bench_env(),
                           cwd=str(REPO))
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"gohub-bench {mode} did not finish within {timeout} s (hung); "
                             f"stdout so far: {e.stdout!r}")
    r = BenchRun(p)
    check_no_sanitizer(r.stderr, "gohub-bench")
    assert r.json is not None, f"no JSON line: {r}"
    assert p.stdout.rstrip("\n").splitlines()[-1].startswith("{"), f"the JSON line is not last: {r}"
    assert r.json["mode"] == mode and r.json["label"] == "test", r
    return r


def check_latencies(j, what, floor_ms=0.0):
    """p50 <= p99 <= max, all positive (and at least floor_ms)."""
    p50, p99, mx = j["p50_ms"], j["p99_ms"], j["max_ms"]
    assert all(isinstance(v, (int, float)) for v in (p50, p99, mx)), f"{what}: {j}"
    assert 0 < p50 <= p99 <= mx, f"{what}: want 0 < p50 <= p99 <= max: {j}"
    # the histogram reports a bucket's middle: up to 1.6% below a value
    assert p50 >= floor_ms * 0.98, f"{what}: p50 {p50} ms below {floor_ms} ms: {j}"


def check_fanout_json(j, conns, rooms, publishers, rate, duration):
    """The fanout JSON line's fields, consistent with each other and with the
    command line."""
    assert (j["conns"], j["rooms"], j["publishers"]) == (conns, rooms, publishers), j
    assert j["rate"] == rate, j
    # the publishers keep the rate (a stall on a busy machine may cost a few)
    assert abs(j["sent"] - rate * duration) <= 0.1 * rate * duration + 3, f"sent: {j}"
    assert j["delivered_per_s"] == pytest.approx(j["delivered"] / duration, rel=1e-3, abs=0.1), j
    assert len(j["steps"]) == 1, j
    st = j["steps"][0]
    for k in ("rate", "delivered_per_s", "p50_ms", "p99_ms", "max_ms", "lost", "out_of_order"):
        assert st[k] == j[k], f"steps[0].{k} != top-level: {j}"
    # a step passes without loss or duplicates, with p99 <= 20 ms (--p99-limit);
    # the best step's numbers are the top level's
    passed = j["lost"] == 0 and j["out_of_order"] == 0 and 0 < j["p99_ms"] <= 20 and j["delivered"] > 0
    assert (j["best"] is not None) == passed, f"best vs the step's numbers: {j}"
    if passed:
        for k in ("rate", "delivered_per_s", "p99_ms"):
            assert j["best"][k] == j[k], f"best.{k} != top-level: {j}"


def metrics(port):
    r = http_get(port, "/metrics", timeout=5.0)
    assert r is not None and r.status == 200, r
    out = {}
    for line in r.body.decode().splitlines():
        m = re.match(r"^(gohub_\w+(?:\{[^}]*\})?) (\S+)$", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def api_json(port, path):
    r = http_get(port, path, timeout=5.0)
    assert r is not None and r.status == 200, f"GET {path}: {r}"
    return r.json()


def wait_idle(port, timeout=10.0):
    """gohub has no client left: the tool closed every connection it made."""
    ok = wait_for(lambda: api_json(port, "/api/stats")["client_count"] == 0, timeout, 0.1)
    assert ok, f"clients still connected {timeout}s after gohub-bench exited: " \
               f"{api_json(port, '/api/stats')}"


# --------------------------------------------------------------------------
# gohub, as make bench runs it (lookup handler, no presence events)


@pytest.fixture(scope="module")
def hub(gohub_bin, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench-gohub")
    lua = copy_lua(tmp / "lua")
    write_lua(lua, "handlers/lookup.lua", LOOKUP_LUA)
    env = {"GOHUB_LUA_PATH": str(lua), "GOHUB_ROOMS_PRESENCE_EVENTS": "false"}
    with running_daemon(gohub_bin, tmp, env=env) as d:
        yield d


# --------------------------------------------------------------------------
# gohub-floor


class Floor:
    def __init__(self, logdir):
        self.port = None
        self.proc = None
        self.logdir = Path(logdir)

    def start(self):
        for attempt in range(3):  # a picked port can be taken in between
            self.port = free_port()
            self.err = self.logdir / f"floor-{self.port}.stderr"
            with open(self.logdir / f"floor-{self.port}.stdout", "wb") as out, \
                    open(self.err, "wb") as err:
                self.proc = subprocess.Popen([str(FLOOR), "--host", "127.0.0.1", "--port", str(self.port)],
                                             stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                             env=bench_env())

            def up():
                if self.proc.poll() is not None:
                    return "exited"
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    return "up"
                except OSError:
                    return None
            state = wait_for(up, 10.0)
            if state == "up":
                return self
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(5)
                raise AssertionError(f"gohub-floor did not listen within 10 s: {self.log()}")
        raise AssertionError(f"gohub-floor exited at start: {self.log()}")

    def log(self):
        try:
            return self.err.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self):
        """SIGTERM: the floor must exit 0 within 10 s, without a sanitizer report."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError("gohub-floor still running 10 s after SIGTERM")
        check_no_sanitizer(self.log(), "gohub-floor")
        assert rc == 0, f"gohub-floor exited {rc} after SIGTERM: {self.log()[-3000:]}"


@pytest.fixture
def floor(tmp_path):
    f = Floor(tmp_path).start()
    try:
        yield f
    finally:
        f.stop()


# --------------------------------------------------------------------------
# MiniHub: a Python server of the bench subset, with faults on purpose


def _frame(payload, op=0x1):
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | op, n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | op, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | op, 127, n)
    return head + payload


def _dumps(obj):
    return json.dumps(obj, separators=(",", ":")).encode()


def _now_ms():
    return int(time.time() * 1000)


class _Conn(asyncio.Protocol):
    def __init__(self, hub):
        self.hub = hub
        self.no = hub._next_no()
        self.t = None
        self.buf = bytearray()
        self.open = False
        self.rooms = set()
        self.got = 0  # room_message deliveries

    def connection_made(self, transport):
        self.t = transport
        self.hub.conns.add(self)

    def connection_lost(self, exc):
        self.hub.conns.discard(self)
        for r in self.rooms:
            self.hub.rooms.get(r, set()).discard(self)

    def send(self, obj):
        if not self.t.is_closing():
            self.t.write(_frame(_dumps(obj)))

    def data_received(self, data):
        self.buf += data
        if not self.open:
            i = self.buf.find(b"\r\n\r\n")
            if i < 0:
                return
            head = bytes(self.buf[:i]).decode("latin-1")
            del self.buf[:i + 4]
            if not self.handshake(head):
                return
        self.parse()

    def handshake(self, head):
        mode = self.hub.handshake
        if mode == "close":
            self.t.close()
            return False
        if mode == "refuse":
            self.t.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            self.t.close()
            return False
        key = ""
        for line in head.split("\r\n")[1:]:
            k, _, v = line.partition(":")
            if k.strip().lower() == "sec-websocket-key":
                key = v.strip()
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        if mode == "bad_accept":
            accept = base64.b64encode(hashlib.sha1(key.encode()).digest()).decode()
        self.t.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n").encode())
        self.open = True
        return True

    def parse(self):
        b = self.buf
        while len(b) >= 2:
            op, n = b[0] & 0x0F, b[1] & 0x7F
            hl = 2
            if n == 126:
                if len(b) < 4:
                    return
                n, hl = struct.unpack("!H", b[2:4])[0], 4
            elif n == 127:
                if len(b) < 10:
                    return
                n, hl = struct.unpack("!Q", b[2:10])[0], 10
            masked = b[1] & 0x80
            if masked:
                hl += 4
            if len(b) < hl + n:
                return
            payload = bytes(b[hl:hl + n])
            if masked:
                m = b[hl - 4:hl]
                payload = bytes(c ^ m[i & 3] for i, c in enumerate(payload))
            del b[:hl + n]
            if op == 0x8:
                self.t.write(_frame(payload[:2], 0x8))
                self.t.close()
                return
            if op == 0x9:
                self.t.write(_frame(payload, 0xA))
            elif op == 0x1:
                self.on_text(payload)

    def on_text(self, payload):
        hub = self.hub
        msg = json.loads(payload)
        mt, mid, data = msg.get("message_type"), msg.get("message_id", 0), msg.get("data") or {}
        hub.received[mt] = hub.received.get(mt, 0) + 1

        def reply(t, d):
            hub.seq += 1
            m = {"message_type": t, "message_id": hub.seq, "data": d, "timestamp": _now_ms()}
            if mid:
                m["request_id"] = mid
            self.send(m)

        if mt == "join_room":
            room = data["room_id"]
            members = hub.rooms.setdefault(room, set())
            for o in members:  # presence noise the tool must ignore
                o.send({"message_type": "member_joined", "message_id": 0,
                        "data": {"room_id": room, "ts": 1, "seq": 1, "pub": 0}, "timestamp": _now_ms()})
            members.add(self)
            self.rooms.add(room)
            reply("room_joined", {"room_id": room, "status": "joined", "member_count": len(members)})
            if hub.close_after_join is not None:
                asyncio.get_running_loop().call_later(hub.close_after_join, self.t.close)
        elif mt == "room_message":
            room, content = data["room_id"], data.get("content")
            hub.seq += 1
            out = _frame(_dumps({"message_type": "room_message", "message_id": hub.seq,
                                 "data": {"room_id": room, "content": content,
                                          "sender_id": f"c{self.no}", "timestamp": _now_ms()},
                                 "timestamp": _now_ms()}))
            loop = asyncio.get_running_loop()
            for o in sorted(hub.rooms.get(room, ()), key=lambda c: c.no):
                if o is self:
                    continue
                if hub.drop is not None and hub.drop(content, o.no):
                    hub.dropped += 1
                    continue
                hub.delivered += 1
                twice = hub.dup is not None and hub.dup(content, o.no)
                hub.duplicated += twice
                for _ in range(2 if twice else 1):
                    if hub.delay:
                        loop.call_later(hub.delay, o._write, out)
                    else:
                        o._write(out)
                o.got += 1
                if o.got == hub.close_after_deliveries:
                    o.t.close()  # after the queued bytes
            if mid:
                reply("ack", {})
        elif mt == "ping":
            now = _now_ms()
            ts = data.get("ts")
            reply("pong", {"ts": ts, "server_ts": now, "rtt": now - ts if isinstance(ts, int) else None})
        elif mt == "lookup":
            k = data.get("key", "")
            reply("found", {"value": int(k[1:]) if k[:1] == "k" and k[1:].isdigit() else None})
        else:
            reply("error", {"code": 1006, "message": "unknown message type"})

    def _write(self, out):
        if not self.t.is_closing():
            self.t.write(out)


class MiniHub:
    """A WebSocket room server of the bench's subset (join_room,
    room_message, ping, lookup) on an asyncio loop in a thread.

    handshake: "ok", "refuse" (403), "bad_accept" (101 with a wrong
    Sec-WebSocket-Accept) or "close" (TCP close on the request).
    drop(content, member_no) -> True drops that room_message delivery
    (counted in .dropped; the others in .delivered); dup(content,
    member_no) -> True sends that delivery twice (.duplicated). delay: seconds each
    delivery waits. close_after_join: seconds after room_joined at which the
    server closes the TCP connection; close_after_deliveries: the server closes
    a connection after its K-th room_message delivery (only subscribers get
    any: there is one publisher per room)."""

    def __init__(self, handshake="ok", drop=None, dup=None, delay=0.0, close_after_join=None,
                 close_after_deliveries=None):
        self.dup = dup
        self.duplicated = 0
        self.close_after_deliveries = close_after_deliveries
        self.handshake = handshake
        self.drop = drop
        self.delay = delay
        self.close_after_join = close_after_join
        self.conns = set()
        self.rooms = {}
        self.received = {}
        self.delivered = 0
        self.dropped = 0
        self.seq = 0
        self._no = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server = None
        self.port = None

    def _next_no(self):
        self._no += 1
        return self._no

    def __enter__(self):
        self.thread.start()

        async def start():
            return await self.loop.create_server(lambda: _Conn(self), "127.0.0.1", 0, backlog=1024)
        self.server = asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def stats(self):
        """(delivered, dropped, received) read on the loop thread;
        delivered counts a duplicated delivery once."""
        async def get():
            return self.delivered, self.dropped, dict(self.received)
        return asyncio.run_coroutine_threadsafe(get(), self.loop).result(10)

    def __exit__(self, *a):
        async def stop():
            self.server.close()
            for c in list(self.conns):
                c.t.abort()
            await self.server.wait_closed()
        try:
            asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


# --------------------------------------------------------------------------
# 1. hold against gohub: what the tool claims is what the server sees


def test_hold_gohub_server_sees_what_the_tool_claims(hub):
    conns, rooms = 240, 8
    cmd = [str(BENCH), "hold", "--port", str(hub.port), "--label", "test", "--conns", str(conns),
           "--rooms", str(rooms), "--hold", "3", "--pid", str(hub.pid)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=bench_env(), cwd=str(REPO))
    try:
        want = {f"room-{r}": conns // rooms for r in range(rooms)}
        seen = {}

        def joined():
            nonlocal seen
            seen = {x["id"]: x["member_count"] for x in api_json(hub.port, "/api/rooms")}
            return seen == want
        # while the tool holds: every connection open, in its room
        assert wait_for(joined, 15.0, 0.1), f"/api/rooms during the hold: {seen}, want {want}"
        stats = api_json(hub.port, "/api/stats")
        assert stats["client_count"] == conns and stats["room_count"] == rooms, stats
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    check_no_sanitizer(err, "gohub-bench")
    assert p.returncode == 0, f"rc {p.returncode}\n{out}\n{err}"
    assert out.splitlines()[-1].startswith("{"), out
    j = json.loads(out.splitlines()[-1])
    assert j["mode"] == "hold" and (j["conns"], j["rooms"]) == (conns, rooms), j
    assert j["connected"] == conns and j["failed"] == 0 and j["dropped"] == 0, j
    assert 0 < j["connect_s"] < 15, j
    # connections over the span from the first connect() to the last 101,
    # which ends before the last room_joined (connect_s has 3 decimals)
    assert j["handshakes_per_s"] >= conns / (j["connect_s"] + 0.0005) - 1, j
    assert j["rss_before_kb"] > 0 and j["rss_after_kb"] > 0, j
    assert j["bytes_per_conn"] == pytest.approx(
        (j["rss_after_kb"] - j["rss_before_kb"]) * 1024 / conns, abs=0.1), j
    assert j["server_cpu_s"] is not None and j["server_cpu_s"] >= 0, j
    assert re.search(rf"connected +{conns} +failed 0 .*dropped during hold 0", out), out
    wait_idle(hub.port)


# --------------------------------------------------------------------------
# 2. fanout against gohub: every delivery counted, none lost


def test_fanout_gohub_counts_every_delivery(hub):
    conns, rooms, rate, duration = 200, 4, 40, 2
    m0 = metrics(hub.port)
    r = run_bench("fanout", hub.port, "--conns", conns, "--rooms", rooms, "--rate", rate,
                  "--duration", duration, "--warmup", "0.5", pid=hub.pid)
    assert r.rc == 0, r
    j = r.json
    m1 = metrics(hub.port)
    check_fanout_json(j, conns, rooms, rooms, rate, duration)
    assert j["sent"] > 0, j
    assert j["expected"] == j["sent"] * (conns // rooms), f"expected = sent x room size: {j}"
    assert j["delivered"] == j["expected"] and j["lost"] == 0 and j["out_of_order"] == 0, j
    check_latencies(j, "fanout gohub")
    assert j["max_ms"] < 2000, j
    assert j["server_cpu_s"] is not None and j["server_us_per_delivery"] is not None, j
    # the server handled at least what the tool says it sent (warmup
    # messages come on top), and queued room size x that many deliveries
    got = m1['gohub_messages_received_total{type="room_message"}'] - \
        m0['gohub_messages_received_total{type="room_message"}']
    queued = m1['gohub_messages_sent_total{type="room_message"}'] - \
        m0['gohub_messages_sent_total{type="room_message"}']
    assert j["sent"] <= got <= j["sent"] + rate * 1.5, (got, j)
    assert queued == got * (conns // rooms), (queued, got)
    assert j["delivered"] <= queued, (queued, j)
    wait_idle(hub.port)


# --------------------------------------------------------------------------
# 3. the tool sees loss and delay it did not cause


def test_fanout_detects_exact_loss():
    """MiniHub drops every 7th delivery of the messages with seq 8..20: each
    publisher sends 10 msg/s, so those leave 0.8 to ~2.1 s after the start,
    well inside the window [0.5, 3.5) s; every drop is a loss the tool must
    count, exactly."""
    conns, rooms, rate, duration = 60, 3, 30, 3
    n = [0]

    def drop(content, member_no):
        if not 8 <= content["seq"] <= 20:
            return False
        n[0] += 1
        return n[0] % 7 == 0
    with MiniHub(drop=drop) as srv:
        r = run_bench("fanout", srv.port, "--conns", conns, "--rooms", rooms, "--rate", rate,
                      "--duration", duration, "--warmup", "0.5")
        delivered, dropped, received = srv.stats()
    j = r.json
    assert r.rc == 0, r
    check_fanout_json(j, conns, rooms, rooms, rate, duration)
    assert dropped >= 90, f"the server dropped only {dropped}"
    assert j["expected"] == j["sent"] * (conns // rooms), j
    assert j["lost"] == dropped, f"server dropped {dropped}, the tool says lost {j['lost']}: {r}"
    assert j["out_of_order"] == 0, j
    assert j["delivered"] == j["expected"] - dropped, j
    assert j["best"] is None, f"a step with loss passed: {j}"
    assert "FAIL" in r.stdout, r
    # everything the server got, it delivered or dropped (warmup included)
    assert delivered + dropped == received["room_message"] * (conns // rooms)
    assert j["sent"] <= received["room_message"], (received, j)


def test_fanout_does_not_count_duplicates():
    """MiniHub sends every 5th delivery twice: the copies are not
    deliveries (a server repeating messages must not look faster), and they
    fail the step."""
    conns, rooms, rate, duration = 60, 3, 30, 1
    n = [0]

    def dup(content, member_no):
        n[0] += 1
        return n[0] % 5 == 0
    with MiniHub(dup=dup) as srv:
        r = run_bench("fanout", srv.port, "--conns", conns, "--rooms", rooms, "--rate", rate,
                      "--duration", duration, "--warmup", "0")
        delivered, dropped, received = srv.stats()
        twice = srv.duplicated
    j = r.json
    assert r.rc == 0, r
    check_fanout_json(j, conns, rooms, rooms, rate, duration)
    assert twice >= 50 and dropped == 0, (twice, dropped)
    assert j["sent"] <= received["room_message"] <= j["sent"] + 1, (received, j)
    assert j["delivered"] == j["expected"] == j["sent"] * (conns // rooms), f"copies counted: {j}"
    assert j["lost"] == 0, j
    # warmup 0: every message is in the window (bar one sent at its very end)
    assert twice - 3 <= j["out_of_order"] <= twice, (twice, j)
    assert j["best"] is None and "FAIL" in r.stdout, r


def test_fanout_measures_a_known_delay():
    delay = 0.08
    conns, rooms, rate, duration = 60, 3, 30, 2
    with MiniHub(delay=delay) as srv:
        r = run_bench("fanout", srv.port, "--conns", conns, "--rooms", rooms, "--rate", rate,
                      "--duration", duration, "--warmup", "0.3")
        delivered, dropped, _ = srv.stats()
    j = r.json
    assert r.rc == 0, r
    check_fanout_json(j, conns, rooms, rooms, rate, duration)
    assert dropped == 0 and j["lost"] == 0 and j["delivered"] == j["expected"] > 0, j
    check_latencies(j, "fanout with an 80 ms delay", floor_ms=delay * 1000)
    # not far above it either (a shared 2-core machine, maybe ASan)
    assert j["p50_ms"] < delay * 1000 + 150, j
    assert j["best"] is None, f"p99 above the 20 ms limit must fail the step: {j}"


def test_fanout_no_delay_baseline_is_fast():
    """The same MiniHub without delay: the latency above was the server's."""
    conns, rooms, rate, duration = 60, 3, 30, 1
    with MiniHub() as srv:
        r = run_bench("fanout", srv.port, "--conns", conns, "--rooms", rooms, "--rate", rate,
                      "--duration", duration, "--warmup", "0.3")
    j = r.json
    assert r.rc == 0, r
    assert j["lost"] == 0 and j["delivered"] == j["expected"] == j["sent"] * (conns // rooms) > 0, j
    check_latencies(j, "fanout without delay")
    assert j["p50_ms"] < 40, j


# --------------------------------------------------------------------------
# 4. echo against gohub: ping and the lookup handler, and errors as errors


@pytest.mark.parametrize("mtype", ["ping", "lookup"])
def test_echo_gohub(hub, mtype):
    m0 = metrics(hub.port)
    r = run_bench("echo", hub.port, "--conns", 20, "--type", mtype, "--duration", 1, "--warmup", "0.3",
                  pid=hub.pid)
    m1 = metrics(hub.port)
    j = r.json
    assert r.rc == 0, r
    assert (j["type"], j["conns"], j["window"]) == (mtype, 20, 1), j
    assert (j["connected"], j["failed"], j["dropped"]) == (20, 0, 0), j
    assert j["replies"] > 0 and j["errors"] == 0, j
    assert j["replies_per_s"] == pytest.approx(j["replies"] / 1, rel=1e-3), j
    check_latencies(j, f"echo {mtype}")
    label = "ping" if mtype == "ping" else "other"
    handled = m1[f'gohub_messages_received_total{{type="{label}"}}'] - \
        m0[f'gohub_messages_received_total{{type="{label}"}}']
    assert handled >= j["replies"], f"the tool counted {j['replies']} replies, gohub handled {handled}"
    errs = sum(v for k, v in m1.items() if k.startswith("gohub_errors_total")) - \
        sum(v for k, v in m0.items() if k.startswith("gohub_errors_total"))
    assert errs == 0, f"gohub sent {errs} errors"
    wait_idle(hub.port)


def test_echo_gohub_counts_errors_not_replies(hub):
    m0 = metrics(hub.port)
    r = run_bench("echo", hub.port, "--conns", 10, "--type", "nosuchtype", "--duration", 1,
                  "--warmup", "0.3")
    m1 = metrics(hub.port)
    j = r.json
    assert r.rc == 1, f"no reply measured must exit 1: {r}"
    assert j["replies"] == 0 and j["errors"] > 0, j
    errs = m1['gohub_errors_total{code="1006"}'] - m0['gohub_errors_total{code="1006"}']
    assert errs >= j["errors"], f"the tool counted {j['errors']} errors, gohub sent {errs}"
    wait_idle(hub.port)


# --------------------------------------------------------------------------
# 5. gohub-floor: the smoke check make bench runs, and a fan-out without loss


def smoke(port):
    p = subprocess.run([PYTHON, str(HUB_SMOKE), str(port)], capture_output=True, text=True,
                       timeout=30, cwd=str(REPO))
    assert p.returncode == 0, f"hub_smoke.py failed:\n{p.stdout}\n{p.stderr}"


def test_smoke_gohub(hub):
    smoke(hub.port)
    wait_idle(hub.port)


def test_floor_smoke_and_fanout(floor):
    smoke(floor.port)
    conns, rooms, rate, duration = 200, 4, 40, 2
    r = run_bench("fanout", floor.port, "--conns", conns, "--rooms", rooms, "--rate", rate,
                  "--duration", duration, "--warmup", "0.3", pid=floor.proc.pid)
    j = r.json
    assert r.rc == 0, r
    check_fanout_json(j, conns, rooms, rooms, rate, duration)
    assert j["expected"] == j["sent"] * (conns // rooms) > 0, j
    assert j["delivered"] == j["expected"] and j["lost"] == 0, j
    check_latencies(j, "fanout floor")
    r = run_bench("echo", floor.port, "--conns", 10, "--type", "lookup", "--duration", 1, "--warmup", "0.3")
    assert r.rc == 0 and r.json["replies"] > 0 and r.json["errors"] == 0, r
    check_latencies(r.json, "echo lookup floor")


def test_minihub_passes_the_smoke_check():
    """MiniHub speaks the same subset, so its numbers above are comparable."""
    with MiniHub() as srv:
        smoke(srv.port)


# --------------------------------------------------------------------------
# 6. servers that refuse or close: failures reported, no hang


@pytest.mark.parametrize("handshake,error", [
    ("refuse", "handshake refused: HTTP/1.1 403 Forbidden"),
    ("bad_accept", "wrong Sec-WebSocket-Accept"),
    ("close", "server closed the TCP connection"),
])
def test_hold_reports_a_failed_handshake(handshake, error):
    with MiniHub(handshake=handshake) as srv:
        t0 = time.monotonic()
        r = run_bench("hold", srv.port, "--conns", 20, "--rooms", 2, "--hold", "0.5", timeout=25)
        dt = time.monotonic() - t0
    j = r.json
    assert r.rc == 1, r
    assert j["connected"] == 0 and j["failed"] == 20, j
    assert error in r.stdout, r
    assert dt < 10, f"{dt:.1f} s to give up on a server that answers at once"


def test_hold_reports_nothing_listening():
    port = free_port()
    r = run_bench("hold", port, "--conns", 10, "--rooms", 0, "--hold", "0.5", timeout=25)
    assert r.rc == 1 and r.json["connected"] == 0 and r.json["failed"] == 10, r


def test_fanout_and_echo_report_a_refusing_server():
    with MiniHub(handshake="refuse") as srv:
        r = run_bench("fanout", srv.port, "--conns", 20, "--rooms", 2, "--rate", 10, "--duration", 1,
                      "--warmup", "0.2", timeout=25)
        assert r.rc == 1 and r.json["delivered"] == 0 and r.json["best"] is None, r
        assert "connections failed" in r.stdout, r
        r = run_bench("echo", srv.port, "--conns", 5, "--duration", 1, "--warmup", "0.2", timeout=25)
        assert r.rc == 1 and r.json["replies"] == 0, r


def test_hold_reports_connections_the_server_closed():
    """Joined, then closed by the server during the hold: exit 1, the drops
    in the table (and the JSON)."""
    with MiniHub(close_after_join=0.3) as srv:
        r = run_bench("hold", srv.port, "--conns", 20, "--rooms", 2, "--hold", "1.5", timeout=25)
    assert r.rc == 1, r
    assert r.json["connected"] == 20 and r.json["failed"] == 0, r
    assert "dropped during hold 20" in r.stdout, r
    assert r.json["dropped"] == 20, r


def test_fanout_counts_subscribers_the_server_closed_as_lost():
    """Each subscriber is closed after its 5th delivery (of 10 to 15 per
    room in the window): the rest of the window is lost."""
    with MiniHub(close_after_deliveries=5) as srv:
        r = run_bench("fanout", srv.port, "--conns", 20, "--rooms", 2, "--rate", 20, "--duration", 1.5,
                      "--warmup", "0.2", timeout=25)
    j = r.json
    assert j["sent"] >= 0 and j["lost"] == j["expected"] - j["delivered"] > 0, r
    assert j["best"] is None, j
    assert "closed by the server" in r.stdout, r
