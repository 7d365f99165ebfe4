"""The WebSocket opening handshake on GET /ws (RFC 6455 section 4.2),
checklist rows H1-H21."""

import base64
import os
import time

import pytest

from gohub_helpers import (
    OP_PING, OP_PONG, OP_TEXT, RSV1, Conn, RawWS, assert_error_body, assert_fails_with,
    check_pong, frame, module_daemon, ping_json, ping_roundtrip, read_response, wait_for,
    ws_accept, ws_key, ws_request,
)

daemon = module_daemon({
    "GOHUB_SERVER_ALLOWED_ORIGINS": "https://good.example,https://also.example",
})


def upgrade(daemon, **kw):
    """Sends a handshake request and returns the response (resp.closed set
    only for non-101 answers)."""
    raw = ws_request(daemon.port, **kw)
    c = Conn(daemon.port)
    c.send(raw)
    r = read_response(c, head_only=kw.get("method") == "HEAD")
    if r is not None and r.status != 101:
        r.closed = c.wait_closed(3)
    c.close()
    return r


def expect_status(daemon, status, **kw):
    r = upgrade(daemon, **kw)
    assert r is not None, "server closed without an HTTP response"
    assert r.status == status, r
    assert r.header("sec-websocket-accept") is None, f"rejected handshake carries an accept: {r}"
    if kw.get("method") != "HEAD":
        assert_error_body(r)
    assert r.closed, f"connection not closed after {status}"
    return r


# ---------------------------------------------------------------- H1


def test_h1_valid_upgrade_mixed_case(daemon):
    key = ws_key()
    ws = RawWS.connect(daemon.port, key=key, set_headers={
        "Connection": "keep-alive, Upgrade", "Upgrade": "WebSocket"})
    try:
        r = ws.resp
        assert r.header("sec-websocket-accept") == ws_accept(key)
        assert (r.header("upgrade") or "").lower() == "websocket", r
        assert "upgrade" in [t.strip().lower() for t in (r.header("connection") or "").split(",")], r
        ping_roundtrip(ws, 1)
    finally:
        ws.close()


@pytest.mark.parametrize("conn_hdr,upg_hdr", [
    ("Upgrade", "websocket"), ("upgrade", "WEBSOCKET"), ("UPGRADE,keep-alive", "websocket"),
    ("keep-alive ,  Upgrade", "Websocket")])
def test_h1_token_case_and_lists(daemon, conn_hdr, upg_hdr):
    key = ws_key()
    r = upgrade(daemon, key=key, set_headers={"Connection": conn_hdr, "Upgrade": upg_hdr})
    assert r is not None and r.status == 101, r
    assert r.header("sec-websocket-accept") == ws_accept(key)


def test_h1_accept_known_vector(daemon):
    # RFC 6455 section 1.3 example
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    r = upgrade(daemon, key=key)
    assert r is not None and r.status == 101, r
    assert r.header("sec-websocket-accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


# ---------------------------------------------------------------- H2, H3, H15


def test_h2_missing_key_400(daemon):
    expect_status(daemon, 400, drop=["Sec-WebSocket-Key"])


@pytest.mark.parametrize("key", [
    "abc",
    "!!!!!!!!!!!!!!!!!!!!!!!!",                         # 24 chars, not base64
    base64.b64encode(os.urandom(15)).decode(),          # 15 bytes
    base64.b64encode(os.urandom(17)).decode(),          # 17 bytes
    base64.b64encode(os.urandom(16)).decode()[:-2],     # padding removed
    "",
], ids=["abc", "garbage24", "15bytes", "17bytes", "no_padding", "empty"])
def test_h3_bad_key_400(daemon, key):
    expect_status(daemon, 400, set_headers={"Sec-WebSocket-Key": key})


def test_h15_two_keys_400(daemon):
    expect_status(daemon, 400, add=[("Sec-WebSocket-Key", ws_key())])


# ---------------------------------------------------------------- H4


@pytest.mark.parametrize("version", ["8", None, "13, 8", "12", "14"],
                         ids=["v8", "missing", "13_8", "v12", "v14"])
def test_h4_bad_version_426(daemon, version):
    kw = {"drop": ["Sec-WebSocket-Version"]} if version is None else \
         {"set_headers": {"Sec-WebSocket-Version": version}}
    r = upgrade(daemon, **kw)
    assert r is not None and r.status == 426, r
    assert r.header("sec-websocket-version") == "13", r
    assert_error_body(r)
    assert r.closed, "connection not closed after 426"


# ---------------------------------------------------------------- H5


@pytest.mark.parametrize("kw", [
    {"drop": ["Upgrade"]},
    {"drop": ["Connection"]},
    {"set_headers": {"Connection": "keep-alive"}},
    {"drop": ["Upgrade", "Connection"]},
], ids=["no_upgrade", "no_connection", "connection_keepalive_only", "neither"])
def test_h5_missing_upgrade_or_connection_400(daemon, kw):
    expect_status(daemon, 400, **kw)


def test_h5_wrong_upgrade_token_rejected(daemon):
    r = upgrade(daemon, set_headers={"Upgrade": "h2c"})
    assert r is not None and r.status in (400, 426), r
    assert r.closed


# ---------------------------------------------------------------- H6, H7, H8


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "HEAD"])
def test_h6_wrong_method_405(daemon, method):
    r = expect_status(daemon, 405, method=method)
    allow = [t.strip().upper() for t in (r.header("allow") or "").split(",") if t.strip()]
    assert allow == ["GET"], f"Allow: {r.header('allow')!r}"


def test_h7_http10_400(daemon):
    expect_status(daemon, 400, version="HTTP/1.0")


def test_h8_missing_host_400(daemon):
    expect_status(daemon, 400, drop=["Host"])


# ---------------------------------------------------------------- H9


@pytest.mark.parametrize("origin", ["https://evil.example", "https://good.example.evil",
                                    "http://good.example", "null", "https://GOOD.example.com"])
def test_h9_origin_not_allowed_403(daemon, origin):
    expect_status(daemon, 403, add=[("Origin", origin)])


@pytest.mark.parametrize("origin", ["https://good.example", "https://also.example"])
def test_h9_origin_allowed_101(daemon, origin):
    ws = RawWS.connect(daemon.port, add=[("Origin", origin)])
    try:
        ping_roundtrip(ws, 1)
    finally:
        ws.close()


def test_h9_no_origin_101(daemon):
    ws = RawWS.connect(daemon.port)
    ws.close()


# ---------------------------------------------------------------- H12


def test_h12_content_length_on_upgrade_400(daemon):
    expect_status(daemon, 400, add=[("Content-Length", "5")], body=b"hello")


def test_h12_transfer_encoding_on_upgrade_400(daemon):
    expect_status(daemon, 400, add=[("Transfer-Encoding", "chunked")], body=b"0\r\n\r\n")


# ---------------------------------------------------------------- H16, H17


def test_h16_extension_not_negotiated_and_rsv1_1002(daemon):
    ws = RawWS.connect(daemon.port, add=[
        ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits")])
    assert ws.resp.header("sec-websocket-extensions") is None, ws.resp
    ping_roundtrip(ws, 1)
    # a "compressed" frame although nothing was negotiated
    ws.send_frame(OP_TEXT, b"\xf2\x48\xcd\xc9\xc9\x07\x00", rsv=RSV1)
    assert_fails_with(ws, {1002})


def test_h17_subprotocol_not_echoed(daemon):
    ws = RawWS.connect(daemon.port, add=[("Sec-WebSocket-Protocol", "chat")])
    try:
        assert ws.resp.header("sec-websocket-protocol") is None, ws.resp
        ping_roundtrip(ws, 1)
    finally:
        ws.close()


# ---------------------------------------------------------------- H18


def test_h18_pipelined_handshake_and_frame(daemon):
    ws = RawWS.connect(daemon.port, extra=frame(OP_TEXT, ping_json(1, ts=1111))
                       + frame(OP_PING, b"pp") + frame(OP_TEXT, ping_json(2, ts=2222)))
    try:
        f1 = ws.recv_frame()
        assert f1.opcode == OP_TEXT and f1.fin, f1
        check_pong(f1.payload, 1, 1111)
        f2 = ws.recv_frame()
        assert (f2.opcode, f2.payload) == (OP_PONG, b"pp"), f2
        f3 = ws.recv_frame()
        assert f3.opcode == OP_TEXT and f3.fin, f3
        check_pong(f3.payload, 2, 2222)
    finally:
        ws.close()


# ---------------------------------------------------------------- H20


def test_h20_connection_cap_503(start_daemon):
    d = start_daemon(env={"GOHUB_LIMITS_MAX_CONNECTIONS": "3"})
    clients = [RawWS.connect(d.port) for _ in range(3)]
    try:
        assert wait_for(lambda: d.health()["connections"] == 3, 2), d.health()
        r = upgrade(d)
        assert r is not None and r.status == 503, r
        ra = r.header("retry-after")
        assert ra is not None and ra.strip().isdigit(), f"Retry-After: {ra!r}"
        assert_error_body(r)
        assert r.closed, "connection not closed after 503"
        # the three keep working
        for i, c in enumerate(clients):
            ping_roundtrip(c, i + 1)
        clients[0].close_handshake()
        deadline = time.monotonic() + 1.5
        while True:
            r = upgrade(d)
            if r is not None and r.status == 101 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert r is not None and r.status == 101, f"after one client closed: {r}"
    finally:
        for c in clients:
            c.close()


# ---------------------------------------------------------------- H21


# H21 (token missing or invalid at the handshake: 401, no upgrade; a token
# of 8 KiB or more: 431/414/401, no crash) needs auth.enabled, so it lives
# in test_auth.py: test_j12_h21_no_token_refused_without_anonymous,
# test_bad_token_refused_at_handshake, test_j10_h21_overlong_tokens.


def test_daemon_alive_after_handshake_faults(daemon):
    assert daemon.running()
    ws = RawWS.connect(daemon.port)
    try:
        ping_roundtrip(ws, 1)
    finally:
        ws.close()
