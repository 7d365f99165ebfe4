"""F19: server pings; a client that never answers is closed, clients that
answer stay connected."""

import asyncio
import select
import time

import websockets

from gohub_helpers import (
    OP_CLOSE, OP_PING, OP_PONG, RawWS, Timeout, check_pong, module_daemon, ping_json,
    ping_roundtrip,
)

daemon = module_daemon({
    "GOHUB_SERVER_PING_INTERVAL": "500ms",
    "GOHUB_SERVER_PONG_TIMEOUT": "500ms",
})

CLOSE_WITHIN = 2.5
JITTER = 0.25


def test_f19_silent_client_is_closed(daemon):
    t0 = time.monotonic()
    c = RawWS.connect(daemon.port)
    pings = []
    closes = []
    try:
        deadline = t0 + CLOSE_WITHIN + JITTER
        while True:
            try:
                f = c.recv_frame(max(0.01, deadline - time.monotonic()))
            except EOFError:
                break
            except Timeout:
                raise AssertionError(
                    f"client that never answers pings still connected after "
                    f"{time.monotonic() - t0:.2f}s (pings seen: {len(pings)})")
            if f.opcode == OP_PING:
                assert f.fin and not f.masked and len(f.payload) <= 125, f
                pings.append(time.monotonic() - t0)
            elif f.opcode == OP_CLOSE:
                closes.append(f)
            else:
                raise AssertionError(f"unexpected frame {f}")
        assert pings, "connection closed but no ping was ever sent"
        if closes:
            assert closes[0].close_code not in (1005, 1006, 1015), closes[0]
    finally:
        c.close()


def test_f19_raw_client_answering_pings_stays(daemon):
    c = RawWS.connect(daemon.port)
    try:
        t0 = time.monotonic()
        pings = 0
        while time.monotonic() < t0 + 3.0:
            try:
                f = c.recv_frame(max(0.01, t0 + 3.0 - time.monotonic()))
            except Timeout:
                break
            except EOFError:
                raise AssertionError(f"closed after {time.monotonic() - t0:.2f}s although "
                                     "every ping was answered")
            assert f.opcode == OP_PING, f
            pings += 1
            assert c.send_frame(OP_PONG, f.payload)
        assert pings >= 3, f"only {pings} pings in 3 s with ping_interval 500ms"
        ping_roundtrip(c, 1)
    finally:
        c.close()


def test_f19_python_client_stays_connected(daemon):
    async def go():
        async with websockets.connect(f"ws://127.0.0.1:{daemon.port}/ws",
                                      ping_interval=None) as ws:
            await asyncio.sleep(4.0)
            assert ws.open, f"closed with {ws.close_code}"
            await ws.send(ping_json(1, ts=4000, pad="after 4 s").decode())
            check_pong(await asyncio.wait_for(ws.recv(), 3), 1, 4000)
    asyncio.run(asyncio.wait_for(go(), 20))


def test_first_pings_of_clients_that_connected_together_are_spread(start_daemon):
    """Twenty clients connected at once are not all pinged in the same tick:
    the first ping comes after half to all of ping_interval (spread by the
    connection), give or take one tick (a quarter of the interval here)."""
    d = start_daemon(env={"GOHUB_SERVER_PING_INTERVAL": "2s", "GOHUB_SERVER_PONG_TIMEOUT": "2s"})
    conns = [RawWS.connect(d.port) for _ in range(20)]
    t0 = time.monotonic()
    first = {}
    try:
        while len(first) < len(conns) and time.monotonic() < t0 + 5.0:
            waiting = [c for c in conns if c not in first]
            ready, _, _ = select.select([c.conn.sock for c in waiting], [], [], 0.02)
            for c in waiting:
                if c.conn.buf or c.conn.sock in ready:
                    f = c.recv_frame(1.0)
                    assert f.opcode == OP_PING, f
                    first[c] = time.monotonic() - t0
                    c.send_frame(OP_PONG, f.payload)
    finally:
        for c in conns:
            c.close()
    times = sorted(first.values())
    assert len(times) == len(conns), f"only {len(times)} of {len(conns)} pinged: {times}"
    assert times[0] >= 0.9 and times[-1] <= 2.0 + 0.5 + JITTER, times
    assert times[-1] - times[0] >= 0.4, f"all first pings in one tick: {times}"
