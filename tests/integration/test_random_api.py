"""Seeded random requests to the HTTP API: every endpoint and method, ids
valid, invalid, percent-encoded (%00, %ff, %zz) and long, odd query strings,
bodies that are strict JSON objects with fields of every type, other JSON,
broken JSON and bad UTF-8. Each must get one well-formed answer with a
documented status (never 5xx) and a JSON body, an error body shaped as the
README says; WebSocket clients in the rooms the requests touch must only
ever receive UTF-8 JSON; and the daemon keeps serving. A failure names its
seed."""

import json
import random
import socket

import pytest

from gohub_helpers import (
    Conn, Hub, ServerClosed, assert_error_body, module_daemon, read_response,
)

daemon = module_daemon({"GOHUB_SERVER_WORKERS": "2"})

STATUSES = {200, 201, 204, 400, 404, 405, 409, 413}
ROOMS = ["ra-a", "ra-b"]
SEEDS = range(20)
PER_SEED = 60


def any_value(rng, depth=0):
    r = rng.random()
    if r < 0.15:
        return rng.choice([None, True, False])
    if r < 0.35:
        return rng.choice([0, -1, 1, 2.5, 2 ** 32, 2 ** 53 + 1, 1e308, -0.0, 10 ** 30])
    if r < 0.7:
        return rng.choice(ROOMS + ["", "x" * 129, "é中", "a\u0000b", "room_message", "broadcast",
                                   "x" * 3000, "\ud7ff", "../..", "%ff"])
    if depth > 2:
        return None
    if r < 0.85:
        return [any_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    keys = ["id", "name", "max_clients", "message", "message_type", "content", "data", "x"]
    return {rng.choice(keys): any_value(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def an_id(rng, clients):
    return rng.choice(ROOMS + clients + ["", "a" * 129, "%00", "%ff", "%zz", "%2F", "a%20b",
                                        "é", "..", "x" * 3000, "%e2%82"])


def make_request(rng, port, clients):
    rid, cid = an_id(rng, clients), an_id(rng, clients)
    path = rng.choice([
        "/api/broadcast", "/api/stats", "/api/rooms", f"/api/rooms/{rid}",
        f"/api/rooms/{rid}/messages", f"/api/rooms/{rid}/x", "/api/clients",
        f"/api/clients/{cid}", f"/api/clients/{cid}/messages", "/api/", "/api/nope",
        "/api/clients?limit=" + rng.choice(["", "-1", "0", "5", "1001", "1e9", "x", "99999999999"])
        + "&offset=" + rng.choice(["", "-1", "0", "1", "18446744073709551616", "y"]),
    ])
    method = rng.choice(["GET", "POST", "POST", "POST", "DELETE", "PUT", "HEAD", "OPTIONS"])
    r = rng.random()
    if r < 0.6:
        body = {}
        for k in rng.sample(["id", "name", "max_clients", "message", "message_type", "content",
                             "data"], rng.randint(0, 4)):
            body[k] = any_value(rng)
        if rng.random() < 0.4:
            body["message_type"] = rng.choice(["broadcast", "note", "é", "", "t" * 129])
        payload = json.dumps(body, ensure_ascii=rng.random() < 0.5).encode()
    elif r < 0.75:
        payload = json.dumps(any_value(rng)).encode()
    elif r < 0.9:
        payload = rng.choice([b"{", b"{\"a\":01}", b"{\"a\":1}x", b"\xff\xfe", b"{\"m\":\"\xc3\"}",
                              b"[" * 600 + b"]" * 600, b"{\"a\":\"\x01\"}", b"null"])
    else:
        payload = b""
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
    if payload or rng.random() < 0.5:
        head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
    head += "Connection: close\r\n\r\n"
    return method, path, head.encode() + payload


def check_answer(resp, method, where):
    assert resp is not None, f"{where}: no answer"
    assert resp.status in STATUSES, f"{where}: status {resp}"
    if method == "HEAD" or resp.status == 204 or (method == "OPTIONS" and not resp.body):
        return
    if resp.status >= 400:
        assert_error_body(resp)  # also JSON in UTF-8
        return
    try:
        json.loads(resp.body.decode("utf-8"))
    except ValueError:
        raise AssertionError(f"{where}: body is not UTF-8 JSON: {resp}")


@pytest.mark.parametrize("seed", SEEDS)
def test_random_api_requests(daemon, seed):
    rng = random.Random(seed)
    watchers = [Hub(daemon.port, name=f"w{i}") for i in range(2)]
    try:
        for w, room in zip(watchers, ROOMS):
            w.whoami()
            w.call_ok("join_room", {"room_id": room}, "room_joined")
        clients = [w.client_id for w in watchers]
        seen = set()
        for _ in range(PER_SEED):
            method, path, raw = make_request(rng, daemon.port, clients)
            where = f"seed {seed}: {raw[:200]!r}"
            with Conn(daemon.port, timeout=5) as c:
                c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                c.send(raw)
                resp = read_response(c, 5, head_only=method == "HEAD")
            check_answer(resp, method, where)
            seen.add(resp.status // 100)
        assert seen == {2, 4}, f"seed {seed}: status classes {seen}"
        for w in watchers:  # every frame a watcher got decodes as UTF-8 JSON
            try:
                w.drain(0.1)
            except ServerClosed:  # kicked by DELETE /api/clients/{id}
                pass
    finally:
        for w in watchers:
            w.close()
    assert daemon.running(), daemon.log_text()[-3000:]
