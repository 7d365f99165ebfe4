"""Shutdown on SIGTERM (close 1001, bounded by shutdown_timeout, a second
SIGTERM exits at once), F20 via shutdown, and the log format."""

import asyncio
import json
import signal
import time

import websockets

from gohub_helpers import (
    OP_BINARY, OP_TEXT, RawWS, check_pong, frame, http_get, ping_json, ping_roundtrip,
    start_refused, wait_for,
)


def uri(d):
    return f"ws://127.0.0.1:{d.port}/ws"


def test_sigterm_idle_exits_0(start_daemon):
    d = start_daemon()
    t0 = time.monotonic()
    d.signal(signal.SIGTERM)
    rc = d.wait(3.0)
    d.exit_checked = True
    assert rc is not None, "idle daemon still running 3 s after SIGTERM"
    assert rc == 0, f"exit code {rc}"
    assert time.monotonic() - t0 < 3.0


def test_sigterm_closes_20_clients_with_1001(start_daemon):
    d = start_daemon(env={"GOHUB_SERVER_SHUTDOWN_TIMEOUT": "5s"})

    async def go():
        clients = [await websockets.connect(uri(d), ping_interval=None) for _ in range(20)]
        for i, c in enumerate(clients):
            await c.send(ping_json(i + 1, ts=1000 + i).decode())
            check_pong(await asyncio.wait_for(c.recv(), 3), i + 1, 1000 + i)
        assert wait_for(lambda: d.health()["connections"] == 20, 3), d.health()
        t0 = time.monotonic()
        d.signal(signal.SIGTERM)
        await asyncio.wait_for(asyncio.gather(*[c.wait_closed() for c in clients]), 6)
        return [c.close_code for c in clients], t0

    codes, t0 = asyncio.run(asyncio.wait_for(go(), 30))
    assert codes == [1001] * 20, f"close codes on shutdown: {codes}"
    rc = d.wait(max(0.1, t0 + 5.0 - time.monotonic()))
    d.exit_checked = True
    assert rc is not None, "daemon still running after shutdown_timeout (5 s)"
    assert rc == 0, f"exit code {rc}"


def test_sigterm_unresponsive_client_bounded_by_shutdown_timeout(start_daemon):
    # close_timeout (10 s) is longer than shutdown_timeout (2 s): the
    # shutdown deadline must win
    d = start_daemon(env={"GOHUB_SERVER_SHUTDOWN_TIMEOUT": "2s",
                          "GOHUB_SERVER_CLOSE_TIMEOUT": "10s"})
    c = RawWS.connect(d.port)
    try:
        ping_roundtrip(c, 1)
        t0 = time.monotonic()
        d.signal(signal.SIGTERM)
        rc = d.wait(4.0)
        d.exit_checked = True
        assert rc is not None, "daemon still running 4 s after SIGTERM (shutdown_timeout 2 s)"
        assert rc == 0, f"exit code {rc}"
        assert time.monotonic() - t0 <= 4.0
        r = c.expect_close(1.0)
        assert r.frame is not None and r.code == 1001, r
        assert c.wait_eof(1.0)
    finally:
        c.close()


def test_f20_shutdown_close_unanswered_hard_closed(start_daemon):
    d = start_daemon(env={"GOHUB_SERVER_SHUTDOWN_TIMEOUT": "10s",
                          "GOHUB_SERVER_CLOSE_TIMEOUT": "1s"})
    c = RawWS.connect(d.port)
    try:
        ping_roundtrip(c, 1)
        t0 = time.monotonic()
        d.signal(signal.SIGTERM)
        r = c.expect_close(1.0)
        assert r.frame is not None and r.code == 1001, r
        # never answer: TCP must be closed after close_timeout (1 s)
        assert c.wait_eof(max(0.01, t0 + 2.5 - time.monotonic())), \
            "TCP still open 2.5 s after SIGTERM with close_timeout 1 s"
        rc = d.wait(max(0.1, t0 + 4.0 - time.monotonic()))
        d.exit_checked = True
        assert rc == 0, f"exit code {rc} (None = still running)"
    finally:
        c.close()


def test_second_sigterm_exits_at_once(start_daemon):
    d = start_daemon(env={"GOHUB_SERVER_SHUTDOWN_TIMEOUT": "10s",
                          "GOHUB_SERVER_CLOSE_TIMEOUT": "10s"})
    c = RawWS.connect(d.port)  # never answers the close: first shutdown would take ~10 s
    try:
        ping_roundtrip(c, 1)
        d.signal(signal.SIGTERM)
        time.sleep(0.3)
        t1 = time.monotonic()
        d.signal(signal.SIGTERM)
        rc = d.wait(1.0)
        d.exit_checked = True
        assert rc is not None, "still running 1 s after the second SIGTERM"
        assert time.monotonic() - t1 <= 1.0
    finally:
        c.close()


def _traffic(d):
    assert http_get(d.port, "/health").status == 200
    assert http_get(d.port, "/nope").status == 404
    c = RawWS.connect(d.port)
    ping_roundtrip(c, 1, pad="log me")
    c.send_raw(frame(OP_BINARY, b"\x00"))
    c.expect_close(2)
    c.close()
    c = RawWS.connect(d.port)
    c.send_raw(frame(OP_TEXT, b"\xff"))
    c.expect_close(2)
    c.close()


def test_log_lines_are_json(start_daemon):
    d = start_daemon()
    _traffic(d)
    assert d.stop() == 0
    d.exit_checked = True
    lines = [ln for ln in d.log_text().splitlines() if ln.strip()]
    assert len(lines) >= 2, f"log: {lines}"
    for ln in lines:
        try:
            rec = json.loads(ln)
        except ValueError:
            raise AssertionError(f"stderr line is not JSON: {ln!r}")
        assert isinstance(rec, dict), ln
        for k in ("time", "level", "msg"):
            assert k in rec, f"log line without {k!r}: {ln}"
        assert rec["level"] in ("debug", "info", "warn", "error"), ln
        assert isinstance(rec["msg"], str) and rec["msg"], ln


def test_log_text_format(start_daemon):
    d = start_daemon(env={"GOHUB_LOG_FORMAT": "text"})
    _traffic(d)
    assert d.stop() == 0
    d.exit_checked = True
    lines = [ln for ln in d.log_text().splitlines() if ln.strip()]
    assert lines, "no log lines with log.format=text"
    for ln in lines:
        try:
            rec = json.loads(ln)
        except ValueError:
            continue
        assert not isinstance(rec, dict), f"JSON line with log.format=text: {ln!r}"


def test_second_daemon_on_a_port_in_use_refuses_to_start(start_daemon, gohub_bin):
    """SO_REUSEPORT would let a second gohub join the port and silently take
    a share of the new connections; it must exit naming the address."""
    d = start_daemon()
    with RawWS.connect(d.port) as held:
        rc, out = start_refused(gohub_bin, {"GOHUB_SERVER_ADDR": f"127.0.0.1:{d.port}"})
        assert rc == 1, f"second daemon exit code {rc} (None = it is serving the port)\n{out}"
        assert "already in use" in out and f"127.0.0.1:{d.port}" in out, out
        assert "server.addr" in out, out
        ping_roundtrip(held, 1)
    for i in range(5):  # the first keeps serving new connections
        with RawWS.connect(d.port) as ws:
            ping_roundtrip(ws, i + 2)
