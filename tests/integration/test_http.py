"""Plain HTTP on the daemon's port: /health, 404/405, keep-alive, request
limits (H10, H11), the header deadline (H19 slowloris) and malformed or
smuggling requests (H12-H14)."""

import select
import socket
import time

import pytest

from gohub_helpers import (
    Conn, RawWS, assert_error_body, health_latency, module_daemon, ping_roundtrip,
    read_response, request, wait_for, ws_request,
)

HEADER_TIMEOUT = 1.0
# the server answers 408 and closes within header_timeout + ~1.5 s
DEADLINE_SLACK = 1.5

daemon = module_daemon({
    "GOHUB_SERVER_HEADER_TIMEOUT": "1s",
    "GOHUB_SERVER_NODE_ID": "itest-node-1",
})


def get(port, path="/health", extra="", version="HTTP/1.1", method="GET"):
    return (f"{method} {path} {version}\r\nHost: 127.0.0.1:{port}\r\n{extra}\r\n").encode()


# ---------------------------------------------------------------- /health


def test_health_ok(daemon):
    r = request(daemon.port, get(daemon.port, extra="Connection: close\r\n"))
    assert r is not None and r.status == 200, r
    assert (r.header("content-type") or "").lower().startswith("application/json"), r
    j = r.json()
    assert j["status"] == "ok"
    assert isinstance(j["version"], str) and j["version"]
    assert j["node_id"] == "itest-node-1", "GOHUB_SERVER_NODE_ID override not applied"
    assert isinstance(j["uptime_s"], (int, float)) and not isinstance(j["uptime_s"], bool)
    assert j["uptime_s"] >= 0
    assert isinstance(j["connections"], int) and not isinstance(j["connections"], bool)
    assert j["bus"] == "disabled"


def test_health_uptime_advances(daemon):
    a = daemon.health()["uptime_s"]
    time.sleep(1.2)
    b = daemon.health()["uptime_s"]
    assert b >= a + 1, f"uptime_s {a} -> {b} after 1.2 s"


def test_health_counts_websocket_connections(daemon):
    assert wait_for(lambda: daemon.health()["connections"] == 0, 3), daemon.health()
    a = RawWS.connect(daemon.port)
    b = RawWS.connect(daemon.port)
    try:
        assert wait_for(lambda: daemon.health()["connections"] == 2, 2), daemon.health()
        a.close_handshake()
        assert wait_for(lambda: daemon.health()["connections"] == 1, 2), daemon.health()
    finally:
        a.close()
        b.close()  # abrupt TCP close, no close frame
    assert wait_for(lambda: daemon.health()["connections"] == 0, 2), daemon.health()


def test_head_health(daemon):
    with Conn(daemon.port) as c:
        c.send(get(daemon.port, method="HEAD") + get(daemon.port))
        r = read_response(c, head_only=True)
        assert r is not None and r.status == 200, r
        # no body after a HEAD response: the next bytes are the next response
        r2 = read_response(c)
        assert r2 is not None and r2.status == 200, f"HEAD response carried a body? {r2}"
        assert r2.json()["status"] == "ok"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_health_wrong_method_405(daemon, method):
    r = request(daemon.port, get(daemon.port, method=method, extra="Content-Length: 0\r\n"), close_wait=0)
    assert r is not None and r.status == 405, r
    allow = [t.strip().upper() for t in (r.header("allow") or "").split(",")]
    assert "GET" in allow, f"Allow header {r.header('allow')!r}"
    assert_error_body(r)


def test_unknown_path_404(daemon):
    r = request(daemon.port, get(daemon.port, path="/no/such/thing", extra="Connection: close\r\n"))
    assert r is not None and r.status == 404, r
    assert_error_body(r, "not_found")


# ---------------------------------------------------------------- keep-alive


def test_keepalive_two_requests(daemon):
    with Conn(daemon.port) as c:
        c.send(get(daemon.port))
        r1 = read_response(c)
        assert r1 is not None and r1.status == 200, r1
        c.send(get(daemon.port, path="/nope"))
        r2 = read_response(c)
        assert r2 is not None and r2.status == 404, r2
        assert c.is_open_after(0.3), "server closed a keep-alive HTTP/1.1 connection"


def test_keepalive_pipelined(daemon):
    with Conn(daemon.port) as c:
        c.send(get(daemon.port) + get(daemon.port, path="/nope") + get(daemon.port))
        statuses = []
        for _ in range(3):
            r = read_response(c)
            assert r is not None, f"connection closed after {statuses}"
            statuses.append(r.status)
        assert statuses == [200, 404, 200]


def test_connection_close_closes(daemon):
    r = request(daemon.port, get(daemon.port, extra="Connection: close\r\n"))
    assert r is not None and r.status == 200, r
    assert r.closed, "server kept the connection open after Connection: close"


def test_http10_closes(daemon):
    r = request(daemon.port, get(daemon.port, version="HTTP/1.0"))
    assert r is not None and r.status == 200, r
    assert r.closed, "server kept an HTTP/1.0 connection open without keep-alive"


# ---------------------------------------------------------------- H10, H11


@pytest.mark.parametrize("path", ["/health?x=", "/ws?x="])
def test_request_line_too_long_414(daemon, path):
    raw = get(daemon.port, path=path + "a" * 9000)
    r = request(daemon.port, raw)
    assert r is not None and r.status == 414, r
    assert_error_body(r)
    assert r.closed, "connection not closed after 414"


def test_request_line_under_limit_ok(daemon):
    # ~8000 bytes: under the 8 KiB request-line limit, so a normal 404
    r = request(daemon.port, get(daemon.port, path="/x" + "a" * 7950,
                                 extra="Connection: close\r\n"))
    assert r is not None and r.status == 404, r


def test_one_huge_header_431(daemon):
    raw = get(daemon.port, extra="X-Big: " + "b" * 65536 + "\r\n")
    r = request(daemon.port, raw)
    assert r is not None and r.status == 431, r
    assert_error_body(r)
    assert r.closed, "connection not closed after 431"


def test_many_headers_431(daemon):
    extra = "".join(f"X-H{i}: v\r\n" for i in range(2000))
    r = request(daemon.port, get(daemon.port, extra=extra))
    assert r is not None and r.status == 431, r
    assert_error_body(r)
    assert r.closed, "connection not closed after 431"


def test_huge_header_on_ws_431(daemon):
    raw = ws_request(daemon.port, add=[("X-Big", "b" * 65536)])
    r = request(daemon.port, raw)
    assert r is not None and r.status == 431, r
    assert r.closed


def test_headers_under_limit_ok(daemon):
    extra = "".join(f"X-H{i}: v\r\n" for i in range(60)) + "Connection: close\r\n"
    r = request(daemon.port, get(daemon.port, extra=extra))
    assert r is not None and r.status == 200, r


# ---------------------------------------------------------------- H19


def _expect_408(c, t0):
    r = read_response(c, timeout=HEADER_TIMEOUT + DEADLINE_SLACK + 1)
    elapsed = time.monotonic() - t0
    assert r is not None, f"server closed without a 408 after {elapsed:.2f}s"
    assert r.status == 408, r
    assert_error_body(r)
    assert c.wait_closed(0.5), "connection not closed after 408"
    elapsed = time.monotonic() - t0
    assert 0.5 <= elapsed <= HEADER_TIMEOUT + DEADLINE_SLACK, f"408+close after {elapsed:.2f}s"


def test_header_timeout_nothing_sent(daemon):
    with Conn(daemon.port, timeout=5) as c:
        t0 = time.monotonic()
        _expect_408(c, t0)


def test_header_timeout_head_without_blank_line(daemon):
    with Conn(daemon.port, timeout=5) as c:
        t0 = time.monotonic()
        c.send(f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{daemon.port}\r\nX-A: b\r\n".encode())
        _expect_408(c, t0)


def test_header_timeout_is_total_not_per_byte(daemon):
    """One byte every 0.3 s: a per-byte timer would never fire."""
    head = f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{daemon.port}\r\n" + "X-Slow: 1\r\n" * 20
    data = head.encode()
    with Conn(daemon.port, timeout=5) as c:
        t0 = time.monotonic()
        limit = t0 + HEADER_TIMEOUT + DEADLINE_SLACK
        i = 0
        while time.monotonic() < limit + 0.5:
            if i < len(data) and not c.send(data[i:i + 1]):
                break
            i += 1
            r, _, _ = select.select([c.sock], [], [], 0.3)
            if r:
                break
        _expect_408(c, t0)


def test_slowloris_50_sockets(daemon):
    port = daemon.port
    ctl = RawWS.connect(port)
    try:
        assert wait_for(lambda: daemon.health()["connections"] == 1, 3)
        baseline = daemon.stable_fd_count()
        drip = f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n".encode() + b"X-Slow: 1\r\n" * 50
        socks = []
        for _ in range(50):
            s = socket.create_connection(("127.0.0.1", port), timeout=3)
            s.setblocking(False)
            socks.append(s)
        t0 = time.monotonic()
        pos = {s: 0 for s in socks}
        first = {s: b"" for s in socks}
        closed_at = {}
        worst_health = worst_rt = 0.0
        mid = 0
        last_drip = 0.0
        while len(closed_at) < len(socks) and time.monotonic() < t0 + HEADER_TIMEOUT + DEADLINE_SLACK + 1.0:
            now = time.monotonic()
            if now - last_drip >= 0.3:
                last_drip = now
                for s in socks:
                    if s not in closed_at and pos[s] < len(drip):
                        try:
                            s.send(drip[pos[s]:pos[s] + 1])
                            pos[s] += 1
                        except OSError:
                            pass
                worst_health = max(worst_health, health_latency(port))
                t1 = time.monotonic()
                mid += 1
                ping_roundtrip(ctl, mid)
                worst_rt = max(worst_rt, time.monotonic() - t1)
            rd, _, _ = select.select([s for s in socks if s not in closed_at], [], [], 0.05)
            for s in rd:
                try:
                    d = s.recv(4096)
                except OSError:
                    d = b""
                if d:
                    first[s] += d
                else:
                    closed_at[s] = time.monotonic() - t0
        not_closed = len(socks) - len(closed_at)
        late = [t for t in closed_at.values() if t > HEADER_TIMEOUT + DEADLINE_SLACK]
        statuses = [first[s][:12] for s in socks]
        for s in socks:
            s.close()
        assert not_closed == 0, f"{not_closed} of 50 slowloris sockets still open after " \
                                f"{HEADER_TIMEOUT + DEADLINE_SLACK + 1.0}s"
        assert not late, f"closed late: {sorted(late)}"
        bad = [x for x in statuses if not x.startswith(b"HTTP/1.1 408")]
        assert not bad, f"{len(bad)} slowloris sockets got no 408: {bad[:3]}"
        assert worst_health < 0.5, f"/health took {worst_health:.3f}s during slowloris"
        assert worst_rt < 0.5, f"ping round trip took {worst_rt:.3f}s during slowloris"
        n = wait_for(lambda: daemon.fd_count() <= baseline, 3)
        assert n, f"fd count {daemon.fd_count()} did not return to baseline {baseline}"
    finally:
        ctl.close()


# ---------------------------------------------------------------- H12-H14


def _expect_400(daemon, raw, allow_silent_close=False):
    r = request(daemon.port, raw)
    if r is None:
        assert allow_silent_close, "server closed without a 400 response"
        return
    assert r.status == 400, r
    assert_error_body(r)
    assert r.closed, "connection not closed after 400"


def _req(port, lines, path="/health"):
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n").encode() + lines + b"\r\n"


MALFORMED = {
    "cl_and_te": b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
    "te_and_cl": b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
    "duplicate_cl": b"Content-Length: 1\r\nContent-Length: 2\r\n",
    "nul_in_name": b"X-A\x00b: v\r\n",
    "nul_in_value": b"X-A: v\x00w\r\n",
    "ctl_in_value": b"X-A: v\x01w\r\n",
    "ctl_in_name": b"X-A\x07b: v\r\n",
    "obs_fold": b"X-A: v\r\n  folded\r\n",
    "space_before_colon": b"X-A : v\r\n",
}


WITH_BODY = {"cl_and_te", "te_and_cl", "duplicate_cl"}


@pytest.mark.parametrize("case", sorted(MALFORMED))
@pytest.mark.parametrize("path", ["/health", "/ws"])
def test_malformed_headers_400(daemon, case, path):
    body = b"0\r\n\r\n" if case in WITH_BODY else b""
    if path == "/ws":
        # a complete, valid upgrade request plus the bad header
        raw = ws_request(daemon.port)[:-2] + MALFORMED[case] + b"\r\n" + body
    else:
        raw = _req(daemon.port, MALFORMED[case], path) + body
    _expect_400(daemon, raw)


@pytest.mark.parametrize("path", ["/health", "/ws"])
def test_bare_lf_400(daemon, path):
    if path == "/ws":
        raw = ws_request(daemon.port).replace(b"\r\n", b"\n")
    else:
        raw = f"GET {path} HTTP/1.1\nHost: 127.0.0.1:{daemon.port}\nX-A: b\n\n".encode()
    _expect_400(daemon, raw)


TLS_CLIENT_HELLO = bytes.fromhex(
    "16030100f8010000f40303") + bytes(range(32)) + bytes.fromhex(
    "20") + bytes(32) + bytes.fromhex("0008130213031301c02f0100009300000010000e00000b6578616d706c652e636f6d")


@pytest.mark.parametrize("garbage", [TLS_CLIENT_HELLO, b"\x00\xff\x13\x37" * 64,
                                     b"SSH-2.0-OpenSSH_9.2\r\n"],
                         ids=["tls_client_hello", "binary", "ssh_banner"])
def test_garbage_400_or_close(daemon, garbage):
    _expect_400(daemon, garbage, allow_silent_close=True)


def test_daemon_alive_after_http_faults(daemon):
    assert daemon.running()
    j = daemon.health()
    assert j["status"] == "ok"
    ws = RawWS.connect(daemon.port)
    try:
        ping_roundtrip(ws, 1)
    finally:
        ws.close()
