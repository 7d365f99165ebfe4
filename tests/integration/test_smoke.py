"""A smoke subset run against the release build and, when GOHUB_ASAN_BIN
is set, the ASan+UBSan build: the daemon must exit 0 on SIGTERM and the log
must hold no sanitizer report (leaks included)."""

import asyncio
import signal
import time

import pytest
import websockets

from gohub_helpers import (
    OP_TEXT, Daemon, RawWS, asan_bin, assert_fails_with, bulk_send, check_pong, frame,
    ping_json, ping_roundtrip, recv_pong, release_bin, running_daemon, wait_for, ws_accept,
    ws_key,
)


@pytest.fixture(scope="module", params=["release", "asan"])
def kind(request):
    if request.param == "asan":
        b = asan_bin()
        if not b:
            pytest.skip("GOHUB_ASAN_BIN unset or not an executable file")
        return b, True
    return release_bin(), False


@pytest.fixture(scope="module")
def smoke(kind, gohub_bin, tmp_path_factory):
    binary, asan = kind
    with running_daemon(binary, tmp_path_factory.mktemp("smoke"), asan=asan) as d:
        yield d


def test_smoke_handshake(smoke):
    key = ws_key()
    ws = RawWS.connect(smoke.port, key=key)
    try:
        assert ws.resp.header("sec-websocket-accept") == ws_accept(key)
    finally:
        ws.close_handshake()


def test_smoke_roundtrip(smoke):
    async def go():
        async with websockets.connect(f"ws://127.0.0.1:{smoke.port}/ws", ping_interval=None) as c:
            for i in range(1, 51):
                await c.send(ping_json(i, ts=500 + i, pad=f"m{i}é").decode())
                check_pong(await asyncio.wait_for(c.recv(), 5), i, 500 + i)
    asyncio.run(asyncio.wait_for(go(), 30))


def test_smoke_oversized(smoke):
    ws = RawWS.connect(smoke.port)
    bulk_send(ws.conn, frame(OP_TEXT, b"o" * 70000), timeout=5)
    assert_fails_with(ws, {1009}, timeout=5)


def test_smoke_bad_utf8(smoke):
    ws = RawWS.connect(smoke.port)
    ws.send_frame(OP_TEXT, b"ok\xed\xa0\x80")
    assert_fails_with(ws, {1007}, timeout=5)


def test_smoke_pipelined(smoke):
    ws = RawWS.connect(smoke.port, extra=frame(OP_TEXT, ping_json(1, ts=99, pad="piped")))
    try:
        recv_pong(ws, 1, 99, timeout=5)
    finally:
        ws.close_handshake()


def test_smoke_sigterm(kind, tmp_path):
    binary, asan = kind
    d = Daemon(binary, tmp_path, asan=asan,
               env={"GOHUB_SERVER_SHUTDOWN_TIMEOUT": "5s"}).start()
    try:
        clients = [RawWS.connect(d.port) for _ in range(5)]
        for c in clients:
            ping_roundtrip(c, 1, pad="before")
        assert wait_for(lambda: d.health()["connections"] == 5, 3)
        t0 = time.monotonic()
        d.signal(signal.SIGTERM)
        for c in clients:
            r = c.expect_close(3)
            assert r.frame is not None and r.code == 1001, r
            c.send_close(1001)
        rc = d.wait(max(0.1, t0 + 5.0 - time.monotonic()))
        assert rc == 0, f"exit code {rc} (None = still running)\n{d.log_text()[-3000:]}"
        found = d.sanitizer_reports()
        assert not found, f"sanitizer reports {found}:\n{d.log_text()[-6000:]}"
    finally:
        for c in locals().get("clients", []):
            c.close()
        d.stop()
