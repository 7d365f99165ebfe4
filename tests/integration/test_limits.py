"""Resource limits: slow consumer (outbound cap), F16 fragment flood, F17
ping flood while not reading, and 5,000 concurrent connections. Each
asserts that other clients keep getting prompt pongs to their JSON pings
and that RSS and fds stay bounded."""

import asyncio
import json
import struct
import threading
import time


from gohub_helpers import (
    OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, Hub, RawWS, bulk_send, check_envelope,
    check_pong, frame, module_daemon, parse_frames, ping_json, ping_roundtrip, wait_for,
    ws_accept, ws_key, ws_request,
)

MAX_OUTBOUND = 262144
RSS_SLACK_KB = 64 * 1024
KEY = b"\x11\x22\x33\x44"

# close_timeout 1s: a cut client that never answers the close frame is
# released (and uncounted) 1 s after the close
daemon = module_daemon({"GOHUB_LIMITS_MAX_OUTBOUND_BYTES": str(MAX_OUTBOUND),
                        "GOHUB_SERVER_CLOSE_TIMEOUT": "1s"})


def idle_connections(daemon):
    assert wait_for(lambda: daemon.health()["connections"] == 0, 5), daemon.health()


class Control:
    """A normal client measuring ping round-trip latency (a JSON ping, its
    pong) while a fault runs."""

    def __init__(self, port):
        self.ws = RawWS.connect(port)
        self.worst = 0.0
        self.count = 0

    def probe(self):
        t = time.monotonic()
        ping_roundtrip(self.ws, self.count + 1, timeout=5.0)
        self.worst = max(self.worst, time.monotonic() - t)
        self.count += 1

    def while_alive(self, thread, deadline, every=0.1):
        while thread.is_alive() and time.monotonic() < deadline:
            self.probe()
            time.sleep(every)

    def close(self):
        self.ws.close()


def drain_until_eof(ws, timeout):
    """Reads everything the server sends until EOF/RST. Returns (ended,
    frames)."""
    ended = ws.conn.wait_closed(timeout)
    frames, _ = parse_frames(bytes(ws.conn.buf))
    return ended, frames


# ---------------------------------------------------------------- slow consumer


FLOOD_ROOM = "flood"


def test_slow_consumer_is_closed(daemon):
    """The slow client is in a room and never reads; a publisher in the same
    room sends 400 room messages of 60,000 bytes, each pushed to the slow
    client: its outbound queue must hit the cap and the server must cut it."""
    idle_connections(daemon)
    base_rss = daemon.rss_kb()
    ctl = Control(daemon.port)
    slow = RawWS.connect(daemon.port, rcvbuf=4096)
    publisher = None
    result = {}
    try:
        assert slow.send_text(json.dumps({"message_type": "join_room", "message_id": 1,
                                          "data": {"room_id": FLOOD_ROOM}}))
        f = slow.recv_data(3)
        assert f.opcode == OP_TEXT and f.fin, f
        joined = check_envelope(json.loads(f.payload), request_id=1)
        assert joined["message_type"] == "room_joined", f.payload
        publisher = Hub(daemon.port, name="publisher")
        publisher.call_ok("join_room", {"room_id": FLOOD_ROOM}, "room_joined")
        # no message_id: the publisher gets no ack, so only the slow client
        # is sent anything
        msg = frame(OP_TEXT, b'{"message_type":"room_message","data":{"room_id":"%s","content":"%s"}}'
                    % (FLOOD_ROOM.encode(), b"s" * 60000), mask_key=KEY)
    except BaseException:
        slow.close()
        ctl.close()
        if publisher:
            publisher.close()
        raise

    def sender():
        s = publisher.ws.conn.sock
        s.settimeout(15)
        n = 0
        try:
            for _ in range(400):
                s.sendall(msg)
                n += 1
            result["err"] = None
        except OSError as e:
            result["err"] = repr(e)
        result["sent"] = n

    try:
        t0 = time.monotonic()
        th = threading.Thread(target=sender, daemon=True)
        th.start()
        ctl.while_alive(th, t0 + 12)
        th.join(max(0.1, t0 + 16 - time.monotonic()))
        ended, frames = drain_until_eof(slow, max(1.0, t0 + 18 - time.monotonic()))
        elapsed = time.monotonic() - t0
        assert ended, f"slow consumer still connected after {elapsed:.1f}s (sender: {result}, " \
                      f"{len(frames)} frames read back)"
        closes = [f for f in frames if f.opcode == OP_CLOSE]
        if closes:
            assert closes[-1].close_code == 1013, f"slow consumer close code {closes[-1]}"
        assert ctl.count > 0
        assert ctl.worst < 1.0, f"control ping took {ctl.worst:.3f}s during the slow consumer"
        assert wait_for(lambda: any(r.get("msg") == "slow consumer closed"
                                    and str(r.get("level", "")).lower().startswith("warn")
                                    for r in daemon.log_records()), 2), \
            "no warn log line with msg 'slow consumer closed'"
        assert not th.is_alive(), f"publisher still sending (sender: {result})"
        assert result.get("sent") == 400, f"publisher could not send its messages: {result}"
        # the publisher is still served after the flood
        publisher.ping()
        publisher.close()
        assert wait_for(lambda: daemon.health()["connections"] == 1, 3), daemon.health()
        ctl.probe()
        time.sleep(0.5)
        rss = daemon.rss_kb()
        assert rss < base_rss + RSS_SLACK_KB, f"VmRSS {rss} kB vs baseline {base_rss} kB"
    finally:
        slow.close()
        publisher.close()
        ctl.close()


# ---------------------------------------------------------------- F17


def test_f17_ping_flood_not_reading(daemon):
    """Pings with 125-byte payloads from a client that never reads. 60,000
    pongs are ~7.6 MB: more than the largest kernel send buffer Linux
    autotunes to (tcp_wmem max, 4 MiB here), so the pongs must pile up in
    the daemon and it must cut the client. (With 20,000 pings, 2.5 MB, the
    kernel alone sometimes absorbs every pong.)"""
    idle_connections(daemon)
    base_rss = daemon.rss_kb()
    ctl = Control(daemon.port)
    flood = RawWS.connect(daemon.port, rcvbuf=4096)
    n_pings = 60000
    pings = b"".join(frame(OP_PING, bytes([i % 256]) * 125, mask_key=KEY) for i in range(n_pings))
    result = {}

    def sender():
        s = flood.conn.sock
        s.settimeout(15)
        try:
            s.sendall(pings)
            result["err"] = None
        except OSError as e:
            result["err"] = repr(e)

    try:
        t0 = time.monotonic()
        th = threading.Thread(target=sender, daemon=True)
        th.start()
        ctl.while_alive(th, t0 + 15)
        th.join(max(0.1, t0 + 17 - time.monotonic()))
        ended, frames = drain_until_eof(flood, max(1.0, t0 + 20 - time.monotonic()))
        pongs = sum(1 for f in frames if f.opcode == OP_PONG)
        closes = [f for f in frames if f.opcode == OP_CLOSE]
        assert ended, f"ping-flooding non-reader still connected ({pongs} pongs read back, " \
                      f"sender: {result})"
        assert pongs < n_pings, "the server queued a pong for every ping and never cut the client"
        if closes:
            assert closes[-1].close_code == 1013, closes[-1]
        assert ctl.worst < 1.0, f"control ping took {ctl.worst:.3f}s during the ping flood"
        ctl.probe()
        rss = daemon.rss_kb()
        assert rss < base_rss + RSS_SLACK_KB, f"VmRSS {rss} kB vs baseline {base_rss} kB"
    finally:
        flood.close()
        ctl.close()


# ---------------------------------------------------------------- F16


def _flood_in_thread(ws, data):
    out = {}

    def run():
        out["sent"] = bulk_send(ws.conn, data, timeout=20)
    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th, out


def test_f16_one_byte_fragment_flood_1009(daemon):
    """100,000 one-byte fragments = 100,000 bytes > max_message_bytes
    (65536): the assertion is a close with 1009 (not a reply)."""
    idle_connections(daemon)
    base_rss = daemon.rss_kb()
    ctl = Control(daemon.port)
    c = RawWS.connect(daemon.port)
    n = 100000
    data = (frame(OP_TEXT, b"a", fin=False, mask_key=KEY)
            + frame(OP_CONT, b"a", fin=False, mask_key=KEY) * (n - 2)
            + frame(OP_CONT, b"a", fin=True, mask_key=KEY))
    try:
        t0 = time.monotonic()
        th, out = _flood_in_thread(c, data)
        ctl.while_alive(th, t0 + 20)
        th.join(max(0.1, t0 + 22 - time.monotonic()))
        assert not th.is_alive(), "fragment flood sender stuck"
        r = c.expect_close(5)
        assert r.frame is not None, f"no close frame; {r}"
        assert r.code == 1009, r
        assert not r.data_frames, r.data_frames[:3]
        assert ctl.worst < 1.0, f"control ping took {ctl.worst:.3f}s during the fragment flood"
        ctl.probe()
        rss = daemon.rss_kb()
        assert rss < base_rss + RSS_SLACK_KB, f"VmRSS {rss} kB vs baseline {base_rss} kB"
    finally:
        c.close()
        ctl.close()


def test_f16_zero_length_fragment_flood(daemon):
    """100,000 empty fragments then a JSON ping: the whole message is the
    ping's few dozen bytes, so the assertion is its pong - or, if the server
    caps frames per message, a close with 1008."""
    idle_connections(daemon)
    base_rss = daemon.rss_kb()
    ctl = Control(daemon.port)
    c = RawWS.connect(daemon.port)
    n = 100000
    data = (frame(OP_TEXT, b"", fin=False, mask_key=KEY)
            + frame(OP_CONT, b"", fin=False, mask_key=KEY) * (n - 2)
            + frame(OP_CONT, ping_json(1, ts=100000), fin=True, mask_key=KEY))
    try:
        t0 = time.monotonic()
        th, out = _flood_in_thread(c, data)
        ctl.while_alive(th, t0 + 20)
        th.join(max(0.1, t0 + 22 - time.monotonic()))
        assert not th.is_alive(), "fragment flood sender stuck"
        f = c.recv_data(5)
        if f.opcode == OP_CLOSE:
            assert f.close_code == 1008, f
        else:
            assert (f.opcode, f.fin) == (OP_TEXT, True), f
            check_pong(f.payload, 1, 100000)
        assert ctl.worst < 1.0, f"control ping took {ctl.worst:.3f}s during the fragment flood"
        ctl.probe()
        rss = daemon.rss_kb()
        assert rss < base_rss + RSS_SLACK_KB, f"VmRSS {rss} kB vs baseline {base_rss} kB"
    finally:
        c.close()
        ctl.close()


# ---------------------------------------------------------------- 5,000 connections


N_CONNS = 5000


async def _open_ws(port):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    key = ws_key()
    w.write(ws_request(port, key=key))
    head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 101"), head[:200]
    lines = head.decode("latin-1").split("\r\n")
    hdrs = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
    assert hdrs.get("sec-websocket-accept") == ws_accept(key), head
    return r, w


async def _ping_over(r, w, mid):
    """A JSON ping on a raw connection; its pong must be the next frame."""
    w.write(frame(OP_TEXT, ping_json(mid, ts=mid)))
    hdr = await asyncio.wait_for(r.readexactly(2), 5)
    assert hdr[0] == 0x81 and not hdr[1] & 0x80, hdr
    n = hdr[1]
    if n == 126:
        n = struct.unpack("!H", await asyncio.wait_for(r.readexactly(2), 5))[0]
    elif n == 127:
        n = struct.unpack("!Q", await asyncio.wait_for(r.readexactly(8), 5))[0]
    body = await asyncio.wait_for(r.readexactly(n), 5)
    check_pong(body, mid, mid)


def test_5000_connections(start_daemon):
    d = start_daemon()
    baseline = d.stable_fd_count()
    conns = []

    async def open_all():
        for i in range(0, N_CONNS, 250):
            conns.extend(await asyncio.gather(*[_open_ws(d.port) for _ in range(250)]))
        for k in range(0, N_CONNS, 500):
            await _ping_over(*conns[k], k + 1)

    async def close_all():
        for _, w in conns:
            w.close()
        await asyncio.gather(*[w.wait_closed() for _, w in conns], return_exceptions=True)

    async def main():
        try:
            await asyncio.wait_for(open_all(), 40)
            assert len(conns) == N_CONNS
            ok = wait_for(lambda: d.health()["connections"] == N_CONNS, 3)
            assert ok, f"/health connections {d.health()['connections']} with {N_CONNS} open"
        finally:
            await close_all()

    asyncio.run(main())
    t0 = time.monotonic()
    ok = wait_for(lambda: d.fd_count() <= baseline, 5, interval=0.1)
    assert ok, f"fd count {d.fd_count()} 5 s after closing {N_CONNS}; baseline {baseline}"
    assert wait_for(lambda: d.health()["connections"] == 0, max(0.1, t0 + 5 - time.monotonic())), \
        d.health()
