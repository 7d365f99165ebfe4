"""Rate limits: limits.messages_per_second with a burst (error 1005 with
the message's request_id, the connection stays), sustained abuse (close
1008), and limits.connections_per_second_per_ip (HTTP 429 before the
upgrade). Other clients keep being served throughout."""

import json
import socket
import time

from gohub_helpers import Hub, check_error, hub_frames, ws_request


def flood(hub, n, first_id):
    """Sends n pings in one write; returns their message ids."""
    ids = list(range(first_id, first_id + n))
    hub.ws.send_raw(hub_frames({"message_type": "ping", "message_id": i} for i in ids))
    return ids


def answers(hub, ids, timeout=5.0):
    """message id -> the answer (pong or error) for every id in ids."""
    got = {}
    while len(got) < len(ids):
        m = hub.recv(timeout)
        got[m["request_id"]] = m
    return got


def test_burst_passes_then_1005_with_request_ids(start_daemon):
    d = start_daemon(env={"GOHUB_LIMITS_MESSAGES_PER_SECOND": "10",
                          "GOHUB_LIMITS_MESSAGES_BURST": "5",
                          "GOHUB_LIMITS_RATE_LIMIT_CLOSE_AFTER": "0"})
    h = Hub(d.port)
    ids = flood(h, 30, 1)
    got = answers(h, ids)
    pongs = [i for i in ids if got[i]["message_type"] == "pong"]
    refused = [i for i in ids if got[i]["message_type"] == "error"]
    # the burst, plus at most what the rate refilled while the frames arrived
    assert 5 <= len(pongs) <= 7, pongs
    assert pongs == ids[:len(pongs)], "the first messages of a burst are the ones served"
    for i in refused:
        check_error(got[i], 1005, i)
    # the connection stays and recovers at the configured rate
    time.sleep(0.5)
    assert h.call("ping")["message_type"] == "pong"
    h.close()


def test_other_clients_keep_their_own_budget(start_daemon):
    d = start_daemon(env={"GOHUB_LIMITS_MESSAGES_PER_SECOND": "10",
                          "GOHUB_LIMITS_MESSAGES_BURST": "5",
                          "GOHUB_LIMITS_RATE_LIMIT_CLOSE_AFTER": "0"})
    noisy, quiet = Hub(d.port), Hub(d.port)
    answers(noisy, flood(noisy, 50, 1))
    for _ in range(5):
        assert quiet.call("ping")["message_type"] == "pong"
    noisy.close()
    quiet.close()


def test_sustained_abuse_closes_1008(start_daemon):
    d = start_daemon(env={"GOHUB_LIMITS_MESSAGES_PER_SECOND": "10",
                          "GOHUB_LIMITS_MESSAGES_BURST": "5",
                          "GOHUB_LIMITS_RATE_LIMIT_CLOSE_AFTER": "20"})
    h = Hub(d.port)
    flood(h, 200, 1)
    res = h.ws.expect_close(timeout=5)
    assert res.frame is not None, res
    assert res.frame.close_code == 1008, res
    assert res.frame.close_reason == b"rate limit exceeded", res
    # at most the burst and the refusals before the close were answered
    assert len(res.data_frames) <= 5 + 2 + 20, len(res.data_frames)
    h.close()
    other = Hub(d.port)
    assert other.call("ping")["message_type"] == "pong"
    other.close()
    assert "rate limit abuse" in d.log_text()


def test_unlimited_when_zero(start_daemon):
    d = start_daemon(env={"GOHUB_LIMITS_MESSAGES_PER_SECOND": "0"})
    h = Hub(d.port)
    got = answers(h, flood(h, 2000, 1), timeout=10)
    assert all(m["message_type"] == "pong" for m in got.values())
    h.close()


class Answer:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def header(self, name):
        return self.headers.get(name.lower())

    def json(self):
        return json.loads(self.body)


def upgrade_from(port, source):
    """A handshake from source address; returns the HTTP answer."""
    s = socket.socket()
    s.settimeout(5)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    try:
        s.sendall(ws_request(port))
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(4096)
            assert chunk, f"connection closed before a response: {buf!r}"
            buf += chunk
        head, _, body = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip()
                   for k, v in (ln.split(":", 1) for ln in lines[1:])}
        want = int(headers.get("content-length", "0"))
        while len(body) < want:
            chunk = s.recv(4096)
            assert chunk, "body cut short"
            body += chunk
        return Answer(status, headers, body)
    finally:
        s.close()


def test_connections_per_ip_429_with_retry_after(start_daemon):
    d = start_daemon(env={"GOHUB_LIMITS_CONNECTIONS_PER_SECOND_PER_IP": "5"})
    statuses = []
    resp = None
    for _ in range(8):
        r = upgrade_from(d.port, "127.0.0.1")
        statuses.append(r.status)
        if r.status == 429:
            resp = r
    assert statuses.count(101) == 5, statuses
    assert statuses[:5] == [101] * 5, statuses
    assert resp is not None and resp.header("retry-after") == "1", resp
    assert resp.json()["error"]["code"] == "too_many_requests", resp
    # another address has its own budget
    assert upgrade_from(d.port, "127.0.0.2").status == 101
    # and the limited one recovers
    time.sleep(0.5)
    assert upgrade_from(d.port, "127.0.0.1").status == 101
    # HTTP endpoints are not upgrades: never limited
    assert d.health()["status"] == "ok"
