"""Frames after the upgrade: JSON round trips, and checklist rows F1-F15,
F18, F20. /ws speaks the JSON protocol: a `ping` request is answered by one
`pong` carrying request_id = its message_id and data.ts = its ts, which
proves that the message arrived whole and was parsed; where the bytes of a
message themselves matter, a room_message's content is checked byte for byte
at another member of the room (RoomEcho)."""

import asyncio
import time

import pytest
import websockets

from gohub_helpers import (
    OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, RSV1, RSV2, RSV3,
    RawWS, RoomEcho, Timeout, assert_fails_with, bulk_send, check_pong, close_payload,
    frame, module_daemon, ping_json, ping_latency, ping_roundtrip, recv_pong, wait_for,
)

CLOSE_TIMEOUT = 1.0
MAX_MSG = 65536

daemon = module_daemon({"GOHUB_SERVER_CLOSE_TIMEOUT": "1s"})


@pytest.fixture(autouse=True)
def _others_still_served(daemon):
    """After each fault the daemon is alive and a fresh client gets a pong
    promptly."""
    yield
    assert daemon.running(), f"daemon died; log tail:\n{daemon.log_text()[-3000:]}"
    dt = ping_latency(daemon.port)
    assert dt < 1.0, f"control ping round trip took {dt:.3f}s"


def ws(daemon, **kw):
    return RawWS.connect(daemon.port, **kw)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def uri(daemon):
    return f"ws://127.0.0.1:{daemon.port}/ws"


# ---------------------------------------------------------------- round trips


def test_roundtrip_python_client(daemon):
    async def go():
        async with websockets.connect(uri(daemon), ping_interval=None) as c:
            for i, pad in enumerate(["hello", "", "héllo wörld €😀", "x" * 1000], 1):
                ts = 7000 + i
                await c.send(ping_json(i, ts=ts, pad=pad).decode())
                got = await asyncio.wait_for(c.recv(), 3)
                assert isinstance(got, str), f"reply is not a text message: {got!r}"
                check_pong(got, i, ts)
            await c.close()
            assert c.close_code == 1000
    run(go())


def test_roundtrip_many_in_order(daemon):
    """1,000 pings sent back to back: 1,000 pongs, one each, in order."""
    async def go():
        async with websockets.connect(uri(daemon), ping_interval=None) as c:
            n = 1000
            for i in range(1, n + 1):
                await c.send(ping_json(i, ts=100000 + i, pad=f"message-{i}-" + "y" * (i % 300)).decode())
            got = [await asyncio.wait_for(c.recv(), 5) for _ in range(n)]
            for i, g in enumerate(got, 1):
                check_pong(g, i, 100000 + i)
            # exactly one reply each: the next message answers the next ping
            await c.send(ping_json(n + 1, ts=1).decode())
            check_pong(await asyncio.wait_for(c.recv(), 5), n + 1, 1)
    run(go())


def test_client_ping_gets_pong(daemon):
    async def go():
        async with websockets.connect(uri(daemon), ping_interval=None) as c:
            waiter = await c.ping(b"abc")
            await asyncio.wait_for(waiter, 3)
    run(go())


def test_raw_ping_pong_payload(daemon):
    with ws(daemon) as c:
        c.send_frame(OP_PING, b"payload-123")
        f = c.recv_frame()
        assert (f.opcode, f.payload, f.fin, f.masked) == (OP_PONG, b"payload-123", True, False), f
        c.close_handshake()


def test_unsolicited_pong_ignored(daemon):
    with ws(daemon) as c:
        c.send_frame(OP_PONG, b"whatever")
        ping_roundtrip(c, 1)


def _three_fragments(c, data, k):
    """data as text fragments data[:k], (empty), data[k:]."""
    c.send_frame(OP_TEXT, data[:k], fin=False)
    c.send_frame(OP_CONT, b"", fin=False)
    c.send_frame(OP_CONT, data[k:], fin=True)


def test_fragmented_text_reassembled(daemon):
    with ws(daemon) as c:
        data = ping_json(1, ts=4242)
        _three_fragments(c, data, 3)
        recv_pong(c, 1, 4242)
    # the bytes themselves: the content arrives intact at another member
    with RoomEcho(daemon.port) as e:
        data, content = e.message(7, "Hello")
        _three_fragments(e.sender.ws, data, len(data) - 9)
        e.check(7, content)


def test_whole_frames_and_split_frames_interleave(daemon):
    """A whole frame in one read is unmasked and checked without wslay; a
    frame split across reads goes through wslay. On one connection, in
    order: several whole frames in one write, a frame dribbled in three
    reads (header alone, then its payload in two), a control ping, whole
    frames again. Every payload length 0..24 past the JSON covers each
    offset of the 8-byte unmasking."""
    with ws(daemon) as c:
        c.send_raw(b"".join(frame(OP_TEXT, ping_json(i, ts=500 + i, pad="é" * i))
                            for i in range(1, 4)))
        for i in range(1, 4):
            recv_pong(c, i, 500 + i)
        f = frame(OP_TEXT, ping_json(4, ts=504, pad="split"))
        for part in (f[:6], f[6:20], f[20:]):  # a masked short header is 6 bytes
            c.send_raw(part)
            time.sleep(0.05)
        recv_pong(c, 4, 504)
        c.send_raw(frame(OP_PING, b"between") + frame(OP_TEXT, ping_json(5, ts=505)))
        pong = c.recv_frame()
        assert (pong.opcode, pong.payload) == (OP_PONG, b"between"), pong
        recv_pong(c, 5, 505)
        c.send_raw(b"".join(frame(OP_TEXT, ping_json(10 + k, ts=k, pad="x" * k))
                            for k in range(25)))
        for k in range(25):
            recv_pong(c, 10 + k, k)
    # the bytes themselves, at every unmasking offset, through a room
    with RoomEcho(daemon.port) as e:
        sent = []
        for k in range(17):
            data, content = e.message(100 + k, "a€😀"[: k % 4] + "z" * k)
            sent.append((100 + k, content))
            e.sender.ws.send_raw(frame(OP_TEXT, data))
        for mid, content in sent:
            e.check(mid, content)


# ---------------------------------------------------------------- F1-F3


def test_f1_unmasked_frame_1002(daemon):
    with ws(daemon) as c:
        c.send_frame(OP_TEXT, b"hello", mask=False)
        assert_fails_with(c, {1002})


@pytest.mark.parametrize("rsv", [RSV1, RSV2, RSV3, RSV1 | RSV2 | RSV3])
def test_f2_rsv_on_text_1002(daemon, rsv):
    with ws(daemon) as c:
        c.send_frame(OP_TEXT, b"hello", rsv=rsv)
        assert_fails_with(c, {1002})


def test_f2_rsv_on_ping_1002(daemon):
    with ws(daemon) as c:
        c.send_frame(OP_PING, b"p", rsv=RSV1)
        assert_fails_with(c, {1002})


def test_f2_rsv_on_continuation_1002(daemon):
    with ws(daemon) as c:
        c.send_frame(OP_TEXT, b"a", fin=False)
        c.send_frame(OP_CONT, b"b", rsv=RSV2)
        assert_fails_with(c, {1002})


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_f3_reserved_opcode_1002(daemon, opcode):
    with ws(daemon) as c:
        c.send_frame(opcode, b"x")
        assert_fails_with(c, {1002})


# ---------------------------------------------------------------- F4, F5


def test_f4_ping_126_bytes(daemon):
    with ws(daemon) as c:
        c.send_frame(OP_PING, b"p" * 126)
        r = assert_fails_with(c, {1002}, allow_tcp_close=True)
        assert not [f for f in r.others if f.opcode == OP_PONG], "answered an oversized ping"


def test_f4_close_with_124_byte_reason(daemon):
    with ws(daemon) as c:
        c.send_frame(OP_CLOSE, close_payload(1000, b"r" * 124))
        assert_fails_with(c, {1002}, allow_tcp_close=True)


def test_f5_fragmented_ping(daemon):
    with ws(daemon) as c:
        c.send_frame(OP_PING, b"a", fin=False)
        c.send_frame(OP_CONT, b"b", fin=True)
        r = assert_fails_with(c, {1002}, allow_tcp_close=True)
        assert not [f for f in r.others if f.opcode == OP_PONG]


# ---------------------------------------------------------------- F6, F7


@pytest.mark.parametrize("fin", [True, False])
def test_f6_continuation_without_start_1002(daemon, fin):
    with ws(daemon) as c:
        c.send_frame(OP_CONT, b"orphan", fin=fin)
        assert_fails_with(c, {1002})


def test_f6_new_text_inside_fragmented_message_1002(daemon):
    with ws(daemon) as c:
        c.send_frame(OP_TEXT, b"part1", fin=False)
        c.send_frame(OP_TEXT, b"part2", fin=True)
        assert_fails_with(c, {1002})


def test_f7_ping_between_fragments(daemon):
    data = ping_json(1, ts=777)
    with ws(daemon) as c:
        c.send_frame(OP_TEXT, data[:10], fin=False)
        c.send_frame(OP_PING, b"mid")
        # the pong must come while the message is still incomplete
        f = c.recv_frame(2.0)
        assert (f.opcode, f.payload) == (OP_PONG, b"mid"), f
        c.send_frame(OP_CONT, data[10:], fin=True)
        f = c.recv_frame(2.0)
        assert (f.opcode, f.fin) == (OP_TEXT, True), f
        check_pong(f.payload, 1, 777)
        c.close_handshake()


# ---------------------------------------------------------------- F8, F9


BAD_UTF8 = {
    "surrogate": b"ok\xed\xa0\x80ok",
    "overlong": b"ok\xc0\xafok",
    "above_max": b"ok\xf4\x90\x80\x80ok",
    "ff": b"ok\xffok",
    "truncated_end": b"ok\xe2\x82",
}


@pytest.mark.parametrize("case", sorted(BAD_UTF8))
def test_f8_invalid_utf8_one_frame_1007(daemon, case):
    with ws(daemon) as c:
        c.send_frame(OP_TEXT, BAD_UTF8[case])
        assert_fails_with(c, {1007})


@pytest.mark.parametrize("case", sorted(BAD_UTF8))
def test_f8_invalid_utf8_one_byte_fragments_1007(daemon, case):
    data = BAD_UTF8[case]
    with ws(daemon) as c:
        frames = b"".join(
            frame(OP_TEXT if i == 0 else OP_CONT, data[i:i + 1], fin=(i == len(data) - 1))
            for i in range(len(data)))
        bulk_send(c.conn, frames, timeout=5)
        assert_fails_with(c, {1007})


@pytest.mark.parametrize("case", ["surrogate", "overlong", "above_max", "ff"])
def test_f8_invalid_utf8_fails_fast(daemon, case):
    """The message is never finished: the server must reject it on the bad
    byte, not wait for FIN."""
    data = BAD_UTF8[case]
    with ws(daemon) as c:
        c.send_raw(b"".join(frame(OP_TEXT if i == 0 else OP_CONT, data[i:i + 1], fin=False)
                            for i in range(len(data))))
        assert_fails_with(c, {1007}, timeout=2.0)


def _one_byte_fragments(data):
    return b"".join(frame(OP_TEXT if i == 0 else OP_CONT, data[i:i + 1],
                          fin=(i == len(data) - 1)) for i in range(len(data)))


def test_f8_valid_utf8_split_inside_code_points(daemon):
    text = "aé€😀z"
    data = ping_json(1, ts=88, pad=text)
    assert text.encode() in data
    with ws(daemon) as c:
        c.send_raw(_one_byte_fragments(data))
        recv_pong(c, 1, 88)  # (a 1007 close would fail here)
    # the bytes themselves: the text arrives intact at another member
    with RoomEcho(daemon.port) as e:
        data, content = e.message(2, text)
        assert text.encode() in data
        e.sender.ws.send_raw(_one_byte_fragments(data))
        e.check(2, content)


def test_f9_invalid_utf8_close_reason(daemon):
    with ws(daemon) as c:
        c.send_frame(OP_CLOSE, close_payload(1000, b"bad\xff\xfe"))
        assert_fails_with(c, {1007, 1002}, reply=False)


# ---------------------------------------------------------------- F10-F13


def test_f10_close_one_byte_payload(daemon):
    with ws(daemon) as c:
        c.send_frame(OP_CLOSE, b"\x03")
        r = c.expect_close(3)
        assert r.frame is not None, "no close frame"
        assert r.code in (1002, None), f"close code {r.code}"
        if r.code is None:
            assert r.frame.payload == b"", r.frame
        assert c.wait_eof(2.5)


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999,
                                  5000, 65535])
def test_f11_invalid_close_code_1002(daemon, code):
    with ws(daemon) as c:
        c.send_frame(OP_CLOSE, close_payload(code))
        assert_fails_with(c, {1002}, reply=False)


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011,
                                  3000, 3999, 4000, 4999])
def test_f12_valid_close_code_echoed(daemon, code):
    with ws(daemon) as c:
        t0 = time.monotonic()
        c.send_frame(OP_CLOSE, close_payload(code, b"bye"))
        r = c.expect_close(1.0)
        assert r.frame is not None, "no close frame in reply"
        assert r.code in (code, 1000), f"replied {r.code} to close {code}"
        assert c.wait_eof(max(0.01, t0 + 1.0 - time.monotonic())), \
            "server did not close TCP within 1 s of the close handshake"


def test_f12_empty_close_answered(daemon):
    with ws(daemon) as c:
        t0 = time.monotonic()
        c.send_frame(OP_CLOSE, b"")
        r = c.expect_close(1.0)
        assert r.frame is not None
        assert r.code in (None, 1000), r
        assert c.wait_eof(max(0.01, t0 + 1.0 - time.monotonic()))


def test_f13_data_and_ping_after_close_ignored(daemon):
    with ws(daemon) as c:
        c.send_raw(frame(OP_CLOSE, close_payload(1000)) + frame(OP_PING, b"late")
                   + frame(OP_TEXT, b"late text"))
        r = c.expect_close(2.0)
        assert r.frame is not None and r.code == 1000, r
        assert not r.others, f"frames before the close reply: {r.others}"
        try:
            while True:
                f = c.recv_frame(2.0)
                raise AssertionError(f"frame after close: {f}")
        except EOFError:
            pass
        except Timeout:
            raise AssertionError("TCP not closed after the close handshake")


# ---------------------------------------------------------------- F14


@pytest.mark.parametrize("case", ["126_for_5", "127_for_200", "127_for_65535", "msb_set"])
def test_f14_bad_length_encoding(daemon, case):
    with ws(daemon) as c:
        if case == "126_for_5":
            data = frame(OP_TEXT, b"hello", form="16")
        elif case == "127_for_200":
            data = frame(OP_TEXT, b"h" * 200, form="64")
        elif case == "127_for_65535":
            data = frame(OP_TEXT, b"h" * 65535, form="64")
        else:
            data = frame(OP_TEXT, b"hello", length=(1 << 63) | 5, form="64")
        bulk_send(c.conn, data, timeout=5)
        assert_fails_with(c, {1002}, allow_tcp_close=True)


# ---------------------------------------------------------------- F15


def test_f15_declared_too_big_closes_without_body(daemon):
    with ws(daemon) as c:
        c.send_raw(frame(OP_TEXT, b"abcdefghij", length=MAX_MSG + 1, form="64"))
        t0 = time.monotonic()
        r = c.expect_close(2.0)
        assert r.frame is not None, f"no close frame (TCP closed: {r.eof})"
        assert r.code == 1009, r
        assert time.monotonic() - t0 < 2.0


def test_f15_declared_huge_closes_without_body(daemon):
    with ws(daemon) as c:
        c.send_raw(frame(OP_TEXT, b"abcdefghij", length=1 << 40, form="64"))
        r = c.expect_close(2.0)
        assert r.frame is not None and r.code == 1009, r


def test_f15_fragmented_total_too_big_1009(daemon):
    with ws(daemon) as c:
        data = frame(OP_TEXT, b"a" * 40000, fin=False) + frame(OP_CONT, b"b" * 40000, fin=True)
        bulk_send(c.conn, data, timeout=5)
        r = c.expect_close(3.0)
        assert r.frame is not None and r.code == 1009, r
        assert not r.data_frames, r


def _max_fragments(payload):
    return (frame(OP_TEXT, payload[:30000], fin=False)
            + frame(OP_CONT, payload[30000:60000], fin=False)
            + frame(OP_CONT, payload[60000:], fin=True))


def test_f15_exactly_max_single_frame_accepted(daemon):
    payload = ping_json(1, ts=65536, pad="0123456789abcdef" * 8, size=MAX_MSG)
    assert len(payload) == MAX_MSG
    with ws(daemon) as c:
        bulk_send(c.conn, frame(OP_TEXT, payload), timeout=5)
        recv_pong(c, 1, 65536, timeout=5)
    # the bytes themselves: a MAX_MSG-byte message arrives intact
    with RoomEcho(daemon.port) as e:
        payload, content = e.message(2, "0123456789abcdef" * 8, size=MAX_MSG)
        bulk_send(e.sender.ws.conn, frame(OP_TEXT, payload), timeout=5)
        e.check(2, content)


def test_f15_exactly_max_fragmented_accepted(daemon):
    payload = ping_json(1, ts=65535, pad="fedcba9876543210" * 8, size=MAX_MSG)
    assert len(payload) == MAX_MSG
    with ws(daemon) as c:
        bulk_send(c.conn, _max_fragments(payload), timeout=5)
        recv_pong(c, 1, 65535, timeout=5)
    with RoomEcho(daemon.port) as e:
        payload, content = e.message(2, "fedcba9876543210" * 8, size=MAX_MSG)
        bulk_send(e.sender.ws.conn, _max_fragments(payload), timeout=5)
        e.check(2, content)


def test_f15_one_over_max_1009(daemon):
    """A ping one byte over the limit, as one frame and as fragments."""
    payload = ping_json(1, ts=65537, size=MAX_MSG + 1)
    for data in (frame(OP_TEXT, payload), _max_fragments(payload)):
        with ws(daemon) as c:
            bulk_send(c.conn, data, timeout=5)
            r = c.expect_close(3.0)
            assert r.frame is not None and r.code == 1009, r
            assert not r.data_frames, r


def test_f15_python_client_70000_gets_1009(daemon):
    async def go():
        async with websockets.connect(uri(daemon), ping_interval=None, max_size=None) as c:
            await c.send("z" * 70000)
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(c.recv(), 5)
            return c.close_code
    assert run(go()) == 1009


# ---------------------------------------------------------------- F18


def test_f18_binary_1003(daemon):
    with ws(daemon) as c:
        c.send_frame(OP_BINARY, b"\x00\x01\x02")
        assert_fails_with(c, {1003})


def test_f18_fragmented_binary_1003(daemon):
    with ws(daemon) as c:
        c.send_frame(OP_BINARY, b"\x00", fin=False)
        c.send_frame(OP_CONT, b"\x01", fin=True)
        assert_fails_with(c, {1003})


# ---------------------------------------------------------------- F20


def test_f20_server_close_unanswered_times_out(daemon):
    baseline = None
    assert wait_for(lambda: daemon.health()["connections"] == 0, 3), daemon.health()
    baseline = daemon.stable_fd_count()
    c = ws(daemon)
    try:
        c.send_frame(OP_BINARY, b"\x00")
        t0 = time.monotonic()
        r = c.expect_close(2.0)
        assert r.frame is not None and r.code == 1003, r
        # never answer the close: TCP must end after close_timeout
        assert c.wait_eof(CLOSE_TIMEOUT + 1.5), \
            f"TCP still open {CLOSE_TIMEOUT + 1.5}s after an unanswered server close"
        dt = time.monotonic() - t0
        assert dt <= CLOSE_TIMEOUT + 1.5, dt
    finally:
        c.close()
    assert wait_for(lambda: daemon.fd_count() <= baseline, 3), \
        f"fd count {daemon.fd_count()} did not return to baseline {baseline}"
    assert wait_for(lambda: daemon.health()["connections"] == 0, 2), daemon.health()
