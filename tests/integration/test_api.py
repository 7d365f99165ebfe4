"""The HTTP admin API (/api/..., PROTOCOL.md "HTTP API"): every endpoint's
answer and its effect on real WebSocket clients, every error status, the
API key, loopback-only access without a key, http.addr, CORS, and bad input
that must leave the daemon serving."""

import json
import os
import socket
import time

import pytest

from gohub_helpers import (
    Conn, Hub, ServerClosed, assert_error_body, check_envelope, free_port, http_get, is_int,
    module_daemon, now_ms, raw_data_field, read_response, wait_for,
)

daemon = module_daemon()


# --------------------------------------------------------------------------
# helpers


def api(port, method, path, body=None, headers=None, host="127.0.0.1", timeout=5.0):
    """One request on a fresh connection. body: None, bytes, str or any
    JSON-encodable value (encoded compactly)."""
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body, separators=(",", ":"))
    if isinstance(body, str):
        body = body.encode("utf-8")
    hdrs = {"Host": f"{host}:{port}"}
    if body is not None:
        hdrs["Content-Type"] = "application/json"
        hdrs["Content-Length"] = str(len(body))
    hdrs.update(headers or {})
    hdrs["Connection"] = "close"
    raw = f"{method} {path} HTTP/1.1\r\n".encode() + "".join(
        f"{k}: {v}\r\n" for k, v in hdrs.items()).encode() + b"\r\n" + (body or b"")
    with Conn(port, timeout=timeout, host=host) as c:
        c.send(raw)  # may stop early when the server refuses a body; the answer is read anyway
        r = read_response(c, timeout, head_only=method == "HEAD")
    assert r is not None, f"{method} {path}: closed without a response"
    return r


def ok(r, status=200):
    assert r.status == status, f"want {status}, got {r}"
    assert (r.header("content-type") or "").startswith("application/json"), r
    return r.json()


def err(r, status, code=None):
    assert r.status == status, f"want {status}, got {r}"
    return assert_error_body(r, code)


def uid(prefix="r"):
    return f"{prefix}-{os.urandom(5).hex()}"


def clients_settled(d, n):
    """Waits until the node counts exactly n clients (closes are async)."""
    got = wait_for(lambda: ok(api(d.port, "GET", "/api/stats"))["client_count"] == n, 5.0)
    assert got, f"client_count never reached {n}: {api(d.port, 'GET', '/api/stats').body}"


def all_clients(port):
    return ok(api(port, "GET", "/api/clients?limit=1000"))["clients"]


def joined(hubs, room):
    """Every hub in hubs joins room; presence pushes are drained."""
    for h in hubs:
        h.call_ok("join_room", {"room_id": room}, "room_joined")
    for h in hubs:
        h.drain(0.1)


def local_ipv4():
    """A non-loopback IPv4 address of this host, or None."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("192.0.2.254", 9))  # no packet is sent for a UDP connect
        ip = s.getsockname()[0]
    except OSError:
        return None
    finally:
        s.close()
    return None if ip.startswith("127.") or ip == "0.0.0.0" else ip


# --------------------------------------------------------------------------
# GET /api/stats


def test_stats_counts_clients_and_rooms(daemon, hubs):
    clients_settled(daemon, 0)
    before = ok(api(daemon.port, "GET", "/api/stats"))
    assert set(before) == {"client_count", "room_count", "node_count", "nodes", "cluster_mode",
                           "timestamp"}, before
    node_id = daemon.health()["node_id"]
    assert before["node_count"] == 1 and before["cluster_mode"] is False
    assert before["nodes"] == [{"node_id": node_id, "client_count": 0}]
    assert is_int(before["timestamp"]) and abs(before["timestamp"] - now_ms()) < 5000
    cs = hubs(daemon.port, 3)
    room = uid()
    joined(cs[:1], room)
    s = ok(api(daemon.port, "GET", "/api/stats"))
    assert s["client_count"] == 3, s
    assert s["nodes"] == [{"node_id": node_id, "client_count": 3}], s
    assert s["room_count"] == before["room_count"] + 1, (before, s)


def test_head_on_a_get_endpoint(daemon):
    r = api(daemon.port, "HEAD", "/api/stats")
    assert r.status == 200 and r.body == b"" and int(r.header("content-length")) > 0, r


def test_head_answers_carry_no_body_even_for_errors(daemon):
    """HEAD answers (errors too) end after the head: on a keep-alive
    connection the next pipelined answer must parse."""
    reqs = ["HEAD /api/rooms", f"HEAD /api/rooms/{uid()}", "HEAD /api/rooms/bad%20id",
            "HEAD /api/stats", "GET /api/stats"]
    raw = "".join(f"{q} HTTP/1.1\r\nHost: x\r\n\r\n" for q in reqs).encode()
    with Conn(daemon.port, timeout=5.0) as c:
        c.send(raw)
        got = []
        for q in reqs:
            r = read_response(c, 5.0, head_only=q.startswith("HEAD"))
            got.append(r.status)
        assert got == [200, 404, 400, 200, 200], got
        assert r.json()["node_count"] == 1, r


# --------------------------------------------------------------------------
# rooms


def test_create_room_201_and_get_it(daemon):
    room = uid()
    r = api(daemon.port, "POST", "/api/rooms", {"id": room, "name": "Team \u00e9", "max_clients": 7})
    assert ok(r, 201) == {"id": room, "name": "Team \u00e9", "member_count": 0, "max_clients": 7}
    assert r.header("location") == f"/api/rooms/{room}", r
    assert ok(api(daemon.port, "GET", f"/api/rooms/{room}")) == {
        "id": room, "name": "Team \u00e9", "member_count": 0, "max_clients": 7, "members": []}
    listed = ok(api(daemon.port, "GET", "/api/rooms"))
    assert isinstance(listed, list)
    assert {"id": room, "name": "Team \u00e9", "member_count": 0, "max_clients": 7} in listed
    ids = [x["id"] for x in listed]
    assert ids == sorted(ids), f"rooms not ordered by id: {ids}"


def test_create_room_defaults(daemon):
    room = uid()
    assert ok(api(daemon.port, "POST", "/api/rooms", {"id": room}), 201) == {
        "id": room, "name": room, "member_count": 0, "max_clients": 0}
    room2 = uid()
    assert ok(api(daemon.port, "POST", "/api/rooms",
                  {"id": room2, "name": None, "max_clients": None}), 201)["name"] == room2


def test_created_room_is_usable_and_survives_its_members(daemon, hubs):
    """An API-created room is joinable, enforces max_clients, and (unlike an
    auto-created one) stays when its last member leaves."""
    room = uid()
    ok(api(daemon.port, "POST", "/api/rooms", {"id": room, "max_clients": 1}), 201)
    a, b = hubs(daemon.port, 2)
    a.call_ok("join_room", {"room_id": room}, "room_joined")
    b.call_err("join_room", {"room_id": room}, 3002)
    a.call_ok("leave_room", {"room_id": room}, "room_left")
    assert ok(api(daemon.port, "GET", f"/api/rooms/{room}"))["member_count"] == 0


def test_create_existing_room_409(daemon, hubs):
    room = uid()
    ok(api(daemon.port, "POST", "/api/rooms", {"id": room}), 201)
    err(api(daemon.port, "POST", "/api/rooms", {"id": room}), 409, "room_exists")
    # a room auto-created by a join exists too
    c = hubs(daemon.port)
    auto = uid()
    c.call_ok("join_room", {"room_id": auto}, "room_joined")
    err(api(daemon.port, "POST", "/api/rooms", {"id": auto, "name": "x"}), 409, "room_exists")


@pytest.mark.parametrize("body", [
    {},
    {"id": ""},
    {"id": "has space"},
    {"id": "slash/inside"},
    {"id": "x" * 129},
    {"id": "caf\u00e9"},
    {"id": 42},
    {"id": None},
    {"id": ["a"]},
    {"id": "nul\u0000cut"},
], ids=lambda b: repr(b)[:40])
def test_create_room_bad_id_400(daemon, body):
    e = err(api(daemon.port, "POST", "/api/rooms", body), 400)
    assert e["code"] in ("invalid_room_id", "bad_request"), e
    if isinstance(body.get("id"), str):
        # nothing was created under the id or a cut-off prefix of it
        assert not [r for r in ok(api(daemon.port, "GET", "/api/rooms"))
                    if r["id"] in ("nul", body["id"])]


@pytest.mark.parametrize("extra", [
    {"max_clients": -1}, {"max_clients": 1.5}, {"max_clients": "5"}, {"max_clients": 10000001},
    {"max_clients": True}, {"max_clients": 1e300}, {"name": 5}, {"name": ["x"]},
    {"name": "a\u0000b"},
], ids=lambda b: repr(b)[:40])
def test_create_room_bad_fields_400(daemon, extra):
    room = uid()
    err(api(daemon.port, "POST", "/api/rooms", dict({"id": room}, **extra)), 400, "bad_request")
    err(api(daemon.port, "GET", f"/api/rooms/{room}"), 404, "room_not_found")


def test_room_ids_with_every_allowed_character_and_percent_encoding(daemon):
    room = "A-z_0.9:x@y"
    if api(daemon.port, "GET", f"/api/rooms/{room}").status == 200:
        api(daemon.port, "DELETE", f"/api/rooms/{room}")
    ok(api(daemon.port, "POST", "/api/rooms", {"id": room}), 201)
    assert ok(api(daemon.port, "GET", "/api/rooms/A-z_0.9%3Ax%40y"))["id"] == room
    assert ok(api(daemon.port, "GET", "/api/r%6foms/A-z_0.9:x@y"))["id"] == room
    ok(api(daemon.port, "DELETE", "/api/rooms/A%2dz_0.9:x@y"))
    err(api(daemon.port, "GET", f"/api/rooms/{room}"), 404, "room_not_found")


def test_get_room_lists_members(daemon, hubs):
    room = uid()
    a, b, c = hubs(daemon.port, 3)
    joined([a, b], room)
    for h in (a, b, c):
        h.whoami()
    got = ok(api(daemon.port, "GET", f"/api/rooms/{room}"))
    assert got["id"] == room and got["member_count"] == 2, got
    assert sorted(got["members"], key=lambda m: m["client_id"]) == sorted(
        [{"client_id": h.client_id, "user_id": h.user_id} for h in (a, b)],
        key=lambda m: m["client_id"]), got


def test_get_unknown_room_404(daemon):
    err(api(daemon.port, "GET", f"/api/rooms/{uid()}"), 404, "room_not_found")


@pytest.mark.parametrize("path", [
    "/api/rooms/bad%20id", "/api/rooms/a%2Fb", "/api/rooms/" + "x" * 129,
    "/api/rooms/" + "x" * 5000, "/api/rooms/%00", "/api/rooms/caf%C3%A9",
])
def test_room_path_with_invalid_id_400(daemon, path):
    err(api(daemon.port, "GET", path), 400, "invalid_room_id")
    err(api(daemon.port, "DELETE", path), 400, "invalid_room_id")
    err(api(daemon.port, "POST", path + "/messages", {"content": 1}), 400, "invalid_room_id")


@pytest.mark.parametrize("path", ["/api/rooms/%", "/api/rooms/a%2", "/api/rooms/a%zz",
                                  "/api/rooms/%G0/messages", "/api/st%ats", "/api/clients/%x"])
def test_bad_percent_encoding_400(daemon, path):
    r = api(daemon.port, "GET", path)
    assert "percent" in err(r, 400, "bad_request")["message"], r


def test_delete_room_tells_members(daemon, hubs):
    room = uid()
    ok(api(daemon.port, "POST", "/api/rooms", {"id": room}), 201)
    a, b, outsider = hubs(daemon.port, 3)
    joined([a, b], room)
    assert ok(api(daemon.port, "DELETE", f"/api/rooms/{room}")) == {"status": "ok"}
    for h in (a, b):
        m = h.expect_type("room_deleted")
        check_envelope(m, push=True)
        assert m["data"] == {"room_id": room}, m.raw
    outsider.quiet(lambda m: m.get("message_type") == "room_deleted")
    err(api(daemon.port, "GET", f"/api/rooms/{room}"), 404, "room_not_found")
    err(api(daemon.port, "DELETE", f"/api/rooms/{room}"), 404, "room_not_found")
    # they are no longer members: a room message is refused, not delivered
    a.call_err("room_message", {"room_id": room, "content": "x"}, 3000)
    for h in (a, b):
        h.whoami()
    for c in all_clients(daemon.port):
        if c["client_id"] in (a.client_id, b.client_id):
            assert room not in c["rooms"], c


# --------------------------------------------------------------------------
# POST /api/rooms/{id}/messages


def test_room_message_reaches_members_byte_for_byte(daemon, hubs):
    room = uid()
    members = hubs(daemon.port, 4, name="m")
    outsider = hubs(daemon.port, name="out")
    joined(members, room)
    content = '{ "b" : [1, 2.50, -0, 1E3, "\\u00e9\u00e9\\n"],"a":null }'
    body = '{"content":' + content + '}'
    assert ok(api(daemon.port, "POST", f"/api/rooms/{room}/messages", body)) == {"status": "ok"}
    ids = set()
    for h in members:
        m = h.expect_type("room_message")
        check_envelope(m, push=True)
        assert raw_data_field(m.raw, "content") == content, m.raw
        assert m["data"]["room_id"] == room and m["data"]["sender_id"] == "server", m.raw
        assert is_int(m["data"]["timestamp"]), m.raw
        ids.add(m["message_id"])
    assert len(ids) == 1, f"one message, one message_id for every member: {ids}"
    outsider.quiet(lambda m: m.get("message_type") == "room_message")


def test_room_message_custom_type_and_scalar_content(daemon, hubs):
    room = uid()
    a = hubs(daemon.port)
    joined([a], room)
    ok(api(daemon.port, "POST", f"/api/rooms/{room}/messages",
           {"content": "hello", "message_type": "announcement"}))
    m = a.expect_type("announcement")
    assert m["data"]["content"] == "hello" and m["data"]["sender_id"] == "server", m.raw
    ok(api(daemon.port, "POST", f"/api/rooms/{room}/messages", {"content": None}))
    m = a.expect_type("room_message")
    assert raw_data_field(m.raw, "content") == "null", m.raw


def test_room_message_errors(daemon, hubs):
    room = uid()
    a = hubs(daemon.port)
    joined([a], room)
    err(api(daemon.port, "POST", f"/api/rooms/{uid()}/messages", {"content": 1}), 404,
        "room_not_found")
    err(api(daemon.port, "POST", f"/api/rooms/{room}/messages", {"message": 1}), 400,
        "bad_request")
    for bad_type in (5, "", "t" * 129, ["x"], "a\u0000b"):
        err(api(daemon.port, "POST", f"/api/rooms/{room}/messages",
                {"content": 1, "message_type": bad_type}), 400, "bad_request")
    a.quiet(lambda m: True, wait=0.3, what="delivery after a refused request")


# --------------------------------------------------------------------------
# POST /api/broadcast


def test_broadcast_reaches_every_client(daemon, hubs):
    clients_settled(daemon, 0)
    cs = hubs(daemon.port, 6, name="b")
    clients_settled(daemon, 6)
    content = '[1,{"k":"v"},"\u263a",  true]'
    r = api(daemon.port, "POST", "/api/broadcast", '{"message":' + content + '}')
    assert ok(r) == {"status": "ok", "delivered": 6}
    ids = set()
    for h in cs:
        m = h.expect_type("broadcast")
        check_envelope(m, push=True)
        assert raw_data_field(m.raw, "content") == content, m.raw
        assert m["data"]["sender_id"] == "server" and is_int(m["data"]["timestamp"]), m.raw
        ids.add(m["message_id"])
    assert len(ids) == 1, ids


def test_broadcast_custom_type(daemon, hubs):
    a, b = hubs(daemon.port, 2)
    ok(api(daemon.port, "POST", "/api/broadcast", {"message": "maintenance at 5",
                                                   "message_type": "system_notice"}))
    for h in (a, b):
        assert h.expect_type("system_notice")["data"]["content"] == "maintenance at 5"


def test_broadcast_errors(daemon, hubs):
    a = hubs(daemon.port)
    err(api(daemon.port, "POST", "/api/broadcast", {"content": 1}), 400, "bad_request")
    err(api(daemon.port, "POST", "/api/broadcast", {"message": 1, "message_type": 1}), 400,
        "bad_request")
    a.quiet(lambda m: True, wait=0.3, what="delivery after a refused broadcast")


def test_message_over_max_message_bytes_413(daemon, hubs):
    """A body under limits.max_body_bytes whose message would be over
    limits.max_message_bytes (64 KiB) is refused: nobody gets it."""
    room = uid()
    a = hubs(daemon.port)
    joined([a], room)
    a.whoami()
    big = "x" * (70 * 1024)
    err(api(daemon.port, "POST", "/api/broadcast", {"message": big}), 413, "message_too_large")
    err(api(daemon.port, "POST", f"/api/rooms/{room}/messages", {"content": big}), 413,
        "message_too_large")
    err(api(daemon.port, "POST", f"/api/clients/{a.client_id}/messages",
            {"message_type": "x", "data": big}), 413, "message_too_large")
    a.quiet(lambda m: True, wait=0.3, what="delivery of a refused message")
    a.ping()
    # just under the limit goes through
    fits = "y" * (60 * 1024)
    ok(api(daemon.port, "POST", f"/api/clients/{a.client_id}/messages",
           {"message_type": "big", "data": fits}))
    assert a.expect_type("big")["data"] == fits


# --------------------------------------------------------------------------
# clients


def test_clients_list(daemon, hubs):
    clients_settled(daemon, 0)
    t0 = now_ms()
    a, b, c = hubs(daemon.port, 3)
    for h in (a, b, c):
        h.whoami()
    r1, r2 = uid(), uid()
    joined([a], r1)
    joined([a, b], r2)
    t1 = now_ms()
    got = ok(api(daemon.port, "GET", "/api/clients"))
    assert set(got) == {"total_clients", "clients"} and got["total_clients"] == 3, got
    node_id = daemon.health()["node_id"]
    by_id = {x["client_id"]: x for x in got["clients"]}
    assert set(by_id) == {a.client_id, b.client_id, c.client_id}, got
    for h, rooms in ((a, {r1, r2}), (b, {r2}), (c, set())):
        x = by_id[h.client_id]
        assert set(x) == {"client_id", "user_id", "node_id", "rooms", "connected_at"}, x
        assert x["user_id"] == h.user_id and x["node_id"] == node_id, x
        assert isinstance(x["rooms"], list) and set(x["rooms"]) == rooms, x
        assert is_int(x["connected_at"]) and t0 - 1000 <= x["connected_at"] <= t1 + 1000, x
    # ordered by connection time
    order = [x["connected_at"] for x in got["clients"]]
    assert order == sorted(order), order


def test_clients_pagination(daemon, hubs):
    clients_settled(daemon, 0)
    cs = hubs(daemon.port, 5)
    clients_settled(daemon, 5)
    full = [x["client_id"] for x in ok(api(daemon.port, "GET", "/api/clients"))["clients"]]
    assert len(full) == 5
    pages = []
    for off in (0, 2, 4):
        p = ok(api(daemon.port, "GET", f"/api/clients?limit=2&offset={off}"))
        assert p["total_clients"] == 5, p
        pages += [x["client_id"] for x in p["clients"]]
    assert pages == full, (pages, full)
    assert ok(api(daemon.port, "GET", "/api/clients?offset=5"))["clients"] == []
    assert ok(api(daemon.port, "GET", "/api/clients?offset=999999999"))["clients"] == []
    p = ok(api(daemon.port, "GET", "/api/clients?limit=0&x=1&offset=1"))
    assert p == {"total_clients": 5, "clients": []}, p
    assert len(ok(api(daemon.port, "GET", "/api/clients?limit=99999"))["clients"]) == 5
    del cs


@pytest.mark.parametrize("query", ["limit=-1", "limit=abc", "limit=", "limit", "offset=1.5",
                                   "offset=1e3", "limit=1234567890", "offset=%31"])
def test_clients_bad_query_400(daemon, query):
    err(api(daemon.port, "GET", f"/api/clients?{query}"), 400, "bad_request")


def test_kick_closes_with_1008(daemon, hubs):
    victim, bystander = hubs(daemon.port, 2)
    victim.whoami()
    assert ok(api(daemon.port, "DELETE", f"/api/clients/{victim.client_id}")) == {"status": "ok"}
    with pytest.raises(ServerClosed):
        victim.recv(3.0)
    assert victim.close_frame not in (None, "EOF"), victim.close_frame
    assert victim.close_frame.close_code == 1008, victim.close_frame
    bystander.ping()
    assert wait_for(lambda: victim.client_id not in
                    [c["client_id"] for c in all_clients(daemon.port)], 3.0)
    err(api(daemon.port, "DELETE", f"/api/clients/{victim.client_id}"), 404, "client_not_found")


@pytest.mark.parametrize("cid", ["nobody", "x" * 300, "%00", "gohub-1"])
def test_kick_unknown_client_404(daemon, cid):
    err(api(daemon.port, "DELETE", f"/api/clients/{cid}"), 404, "client_not_found")


def test_message_to_client(daemon, hubs):
    a, b = hubs(daemon.port, 2)
    a.whoami()
    data = '{"text" : "hi \u00e9", "n":[1.0, 2]}'
    body = '{"message_type":"notice","data":' + data + '}'
    assert ok(api(daemon.port, "POST", f"/api/clients/{a.client_id}/messages", body)) == {
        "status": "ok"}
    m = a.expect_type("notice")
    check_envelope(m, push=True)
    assert raw_data_field(m.raw, "text") == '"hi \u00e9"', m.raw
    top = json.loads(m.raw)
    assert top["data"] == {"text": "hi \u00e9", "n": [1.0, 2]}
    assert m.raw.count(data) == 1, f"data not passed byte for byte: {m.raw}"
    b.quiet(lambda m: m.get("message_type") == "notice")
    # data is optional: {}
    ok(api(daemon.port, "POST", f"/api/clients/{a.client_id}/messages", {"message_type": "poke"}))
    assert a.expect_type("poke")["data"] == {}


def test_message_to_client_errors(daemon, hubs):
    a = hubs(daemon.port)
    a.whoami()
    err(api(daemon.port, "POST", f"/api/clients/{a.client_id}/messages", {"data": {}}), 400,
        "bad_request")
    err(api(daemon.port, "POST", f"/api/clients/{a.client_id}/messages",
            {"message_type": 7}), 400, "bad_request")
    err(api(daemon.port, "POST", "/api/clients/nobody/messages", {"message_type": "x"}), 404,
        "client_not_found")
    gone = a.client_id
    a.close()
    assert wait_for(lambda: api(daemon.port, "POST", f"/api/clients/{gone}/messages",
                                {"message_type": "x"}).status == 404, 3.0)


# --------------------------------------------------------------------------
# routing and methods


@pytest.mark.parametrize("path", ["/api/nope", "/api/rooms/x/y", "/api/rooms/", "/api//rooms",
                                  "/api/rooms/x/messages/more", "/api/clients/x/y",
                                  "/api/stats/", "/api/broadcast/x", "/api/STATS",
                                  "/api/rooms%2Fx", "/api/stats%00"])
def test_unknown_endpoint_404(daemon, path):
    err(api(daemon.port, "GET", path), 404, "not_found")


@pytest.mark.parametrize("method,path,allow", [
    ("GET", "/api/broadcast", "POST, OPTIONS"),
    ("PUT", "/api/broadcast", "POST, OPTIONS"),
    ("POST", "/api/stats", "GET, HEAD, OPTIONS"),
    ("DELETE", "/api/rooms", "GET, HEAD, POST, OPTIONS"),
    ("PATCH", "/api/rooms", "GET, HEAD, POST, OPTIONS"),
    ("POST", "/api/rooms/x", "GET, HEAD, DELETE, OPTIONS"),
    ("PUT", "/api/rooms/x", "GET, HEAD, DELETE, OPTIONS"),
    ("GET", "/api/rooms/x/messages", "POST, OPTIONS"),
    ("POST", "/api/clients", "GET, HEAD, OPTIONS"),
    ("GET", "/api/clients/x", "DELETE, OPTIONS"),
    ("DELETE", "/api/clients/x/messages", "POST, OPTIONS"),
])
def test_wrong_method_405_with_allow(daemon, method, path, allow):
    r = api(daemon.port, method, path, body="{}" if method in ("PUT", "PATCH", "POST") else None)
    err(r, 405, "method_not_allowed")
    assert r.header("allow") == allow, r


def test_options_without_origin_lists_methods(daemon):
    r = api(daemon.port, "OPTIONS", "/api/rooms/x")
    assert r.status == 200 and r.header("allow") == "GET, HEAD, DELETE, OPTIONS", r
    assert r.header("access-control-allow-origin") is None, r


# --------------------------------------------------------------------------
# bad bodies


@pytest.mark.parametrize("body", [
    b"{", b"}", b'{"id":"x"', b'{"id":"x"}x', b'{"id":"x"}{}', b"{'id':'x'}", b'{"id":01}',
    b'{"id":"x","max_clients":1.}', b'{"id":"x",}', b'{"id":"\xff"}', b'{"id":"\xc0\xaf"}',
    b'{"id":"a\x01b"}', b'{"id":"x"}\x00', b'\x0b{"id":"x"}', b"nul", b"[" * 600 + b"]" * 600,
], ids=lambda b: repr(b)[:30])
def test_malformed_json_400(daemon, body):
    err(api(daemon.port, "POST", "/api/rooms", body), 400, "invalid_json")


@pytest.mark.parametrize("body", [b"", b"   ", b"[]", b'"room"', b"42", b"null", b"true"])
def test_body_not_an_object_400(daemon, body):
    err(api(daemon.port, "POST", "/api/rooms", body), 400, "bad_request")
    err(api(daemon.port, "POST", "/api/broadcast", body), 400, "bad_request")


def test_body_over_max_body_bytes_413(daemon):
    big = b'{"message":"' + b"x" * (1024 * 1024) + b'"}'
    r = api(daemon.port, "POST", "/api/broadcast", big)
    err(r, 413, "body_too_large")
    # chunked, no Content-Length: cut off as it arrives
    raw = (b"POST /api/broadcast HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
           + b"".join(b"%x\r\n" % 65536 + b"y" * 65536 + b"\r\n" for _ in range(20)) + b"0\r\n\r\n")
    with Conn(daemon.port, timeout=5.0) as c:
        c.send(raw)
        r = read_response(c, 5.0)
    err(r, 413, "body_too_large")
    ok(api(daemon.port, "GET", "/api/stats"))


def test_daemon_keeps_serving_a_keepalive_connection_after_bad_requests(daemon):
    """Refused API calls keep the connection: many in a row on one socket,
    pipelined, each answered in order, then a good one."""
    reqs = [
        ("POST", "/api/rooms", b"{bad"), ("GET", "/api/rooms/%zz", None),
        ("PUT", "/api/stats", b"{}"), ("GET", "/api/nope", None),
        ("POST", "/api/rooms", b'{"id":"' + b"q" * 500 + b'"}'),
        ("POST", "/api/broadcast", b'{"message":1,"message_type":{}}'),
        ("GET", "/api/stats", None),
    ]
    raw = b"".join(
        f"{m} {p} HTTP/1.1\r\nHost: x\r\n".encode()
        + (f"Content-Length: {len(b)}\r\n".encode() if b is not None else b"")
        + b"\r\n" + (b or b"") for m, p, b in reqs)
    with Conn(daemon.port, timeout=5.0) as c:
        c.send(raw)
        got = [read_response(c, 5.0).status for _ in reqs]
        assert got == [400, 400, 405, 404, 400, 400, 200], got
    assert daemon.health()["status"] == "ok"


# --------------------------------------------------------------------------
# access: API key, loopback only, http.addr


KEY = "s3cr3t-api-key"
keyed = module_daemon({"GOHUB_HTTP_API_KEY": KEY,
                       "GOHUB_HTTP_CORS_ORIGINS": "https://app.example.com,http://localhost:3000"})


@pytest.mark.parametrize("headers", [
    {}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "wrong"},
    {"Authorization": f"Bearer {KEY}x"}, {"Authorization": f"Bearer {KEY[:-1]}"},
    {"Authorization": KEY}, {"Authorization": f"Basic {KEY}"}, {"X-API-Key": ""},
    {"Authorization": "Bearer "}, {"X-API-Key": f"x{KEY}"},
], ids=lambda h: repr(h)[:40])
def test_api_key_required_401(keyed, headers):
    for method, path, body in (("GET", "/api/stats", None), ("POST", "/api/broadcast", {"message": 1}),
                               ("DELETE", "/api/rooms/x", None), ("GET", "/api/nope", None),
                               ("POST", "/api/reload", None)):
        r = api(keyed.port, method, path, body, headers=headers)
        err(r, 401, "unauthorized")
        assert r.header("www-authenticate") == "Bearer", r


def test_api_key_accepted_as_bearer_or_x_api_key(keyed, hubs):
    a = hubs(keyed.port)
    for headers in ({"Authorization": f"Bearer {KEY}"}, {"Authorization": f"bearer {KEY}"},
                    {"X-API-Key": KEY}, {"X-API-Key": KEY, "Authorization": "Bearer wrong"}):
        assert ok(api(keyed.port, "GET", "/api/stats", headers=headers))["node_count"] == 1
        ok(api(keyed.port, "POST", "/api/broadcast", {"message": "k"}, headers=headers))
        assert a.expect_type("broadcast")["data"]["content"] == "k"
    # /health stays open
    assert http_get(keyed.port, "/health").status == 200


def test_loopback_only_without_a_key(gohub_bin, start_daemon):
    """No http.api_key: /api/* answers loopback peers only. The daemon's API
    listener binds every IPv4 address, and the test calls it through this
    host's non-loopback address, so the peer address is not 127.x."""
    ip = local_ipv4()
    if ip is None:
        pytest.skip("this host has no non-loopback IPv4 address to call from "
                    "(the decision is unit-tested in tests/unit/api_test.c)")
    port = free_port()
    d = start_daemon(env={"GOHUB_HTTP_ADDR": f"0.0.0.0:{port}"})
    ok(api(port, "GET", "/api/stats"))
    r = api(port, "GET", "/api/stats", host=ip)
    err(r, 403, "forbidden")
    err(api(port, "POST", "/api/broadcast", {"message": 1}, host=ip), 403, "forbidden")
    err(api(port, "POST", "/api/reload", host=ip), 403, "forbidden")
    assert http_get(d.port, "/health").status == 200


def test_key_lets_other_hosts_in(gohub_bin, start_daemon):
    ip = local_ipv4()
    if ip is None:
        pytest.skip("this host has no non-loopback IPv4 address to call from")
    port = free_port()
    start_daemon(env={"GOHUB_HTTP_ADDR": f"0.0.0.0:{port}", "GOHUB_HTTP_API_KEY": KEY})
    ok(api(port, "GET", "/api/stats", host=ip, headers={"X-API-Key": KEY}))
    err(api(port, "GET", "/api/stats", host=ip), 401, "unauthorized")


@pytest.mark.parametrize("var", ["GOHUB_HTTP_ADDR", "HTTP_PORT"])
def test_http_addr_serves_the_api_apart(gohub_bin, start_daemon, var, hubs):
    port = free_port()
    d = start_daemon(env={var: f"127.0.0.1:{port}" if var == "GOHUB_HTTP_ADDR" else str(port)})
    # the API is on http.addr ...
    room = uid()
    ok(api(port, "POST", "/api/rooms", {"id": room}), 201)
    assert ok(api(port, "GET", f"/api/rooms/{room}"))["id"] == room
    # ... and no longer on server.addr, which keeps /ws
    for m, p in (("GET", "/api/stats"), ("GET", f"/api/rooms/{room}"), ("POST", "/api/reload")):
        err(api(d.port, m, p, body={} if m == "POST" else None), 404, "not_found")
    a = hubs(d.port)
    a.call_ok("join_room", {"room_id": room}, "room_joined")
    ok(api(port, "POST", f"/api/rooms/{room}/messages", {"content": "via http.addr"}))
    assert a.expect_type("room_message")["data"]["content"] == "via http.addr"
    # http.addr does not serve /ws; both serve /health
    r = api(port, "GET", "/ws", headers={"Upgrade": "websocket", "Connection": "Upgrade"})
    assert r.status == 404, r
    assert http_get(port, "/health").status == 200


# --------------------------------------------------------------------------
# CORS


ORIGIN = "https://app.example.com"


def test_cors_preflight_needs_no_key(keyed):
    r = api(keyed.port, "OPTIONS", "/api/rooms", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert r.status == 200, r
    assert r.header("access-control-allow-origin") == ORIGIN, r
    assert "Origin" in (r.header("vary") or ""), r
    methods = {m.strip() for m in r.header("access-control-allow-methods").split(",")}
    assert {"GET", "POST", "OPTIONS"} <= methods, r
    hdrs = {h.strip().lower() for h in r.header("access-control-allow-headers").split(",")}
    assert {"authorization", "x-api-key", "content-type"} <= hdrs, r
    assert int(r.header("access-control-max-age")) > 0, r
    r = api(keyed.port, "OPTIONS", "/api/clients/x/messages",
            headers={"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST"})
    assert r.status == 200 and r.header("access-control-allow-origin") == "http://localhost:3000"
    assert r.header("access-control-allow-methods") == "POST, OPTIONS", r


def test_cors_headers_on_answers_and_errors(keyed):
    h = {"Origin": ORIGIN, "Authorization": f"Bearer {KEY}"}
    r = api(keyed.port, "GET", "/api/stats", headers=h)
    ok(r)
    assert r.header("access-control-allow-origin") == ORIGIN, r
    r = api(keyed.port, "GET", f"/api/rooms/{uid()}", headers=h)
    err(r, 404)
    assert r.header("access-control-allow-origin") == ORIGIN, r
    # a browser can read why its key was refused
    r = api(keyed.port, "GET", "/api/stats", headers={"Origin": ORIGIN})
    err(r, 401)
    assert r.header("access-control-allow-origin") == ORIGIN, r


def test_cors_other_origins_are_refused(keyed, daemon):
    """A request naming an origin that http.cors_origins does not list is
    refused (403, no CORS headers), key or not: only browsers send Origin,
    and a page from elsewhere has no business calling the API."""
    evil = "https://evil.example.com"
    r = api(keyed.port, "OPTIONS", "/api/rooms",
            headers={"Origin": evil, "Access-Control-Request-Method": "POST"})
    err(r, 403, "forbidden")
    assert r.header("access-control-allow-origin") is None, r
    r = api(keyed.port, "GET", "/api/stats", headers={"Origin": evil, "X-API-Key": KEY})
    err(r, 403, "forbidden")
    assert r.header("access-control-allow-origin") is None, r
    # look-alikes do not match
    for o in (ORIGIN + ".evil.com", ORIGIN + "/", "https://app.example.co", "null", ""):
        r = api(keyed.port, "GET", "/api/stats", headers={"Origin": o, "X-API-Key": KEY})
        err(r, 403, "forbidden")
        assert r.header("access-control-allow-origin") is None, (o, r)
    # without http.cors_origins no origin is allowed, and no CORS header is sent
    r = api(daemon.port, "GET", "/api/stats", headers={"Origin": ORIGIN})
    err(r, 403, "forbidden")
    assert r.header("access-control-allow-origin") is None, r
    ok(api(daemon.port, "GET", "/api/stats"))


def test_no_cross_site_request_forgery_on_loopback(daemon, hubs):
    """Without a key the API trusts loopback peers, and a browser on this
    host is one. A page elsewhere can make it send a "simple" POST (no
    preflight: text/plain body); the Origin header it carries gets it
    refused before anything happens."""
    a = hubs(daemon.port)
    room = uid()
    joined([a], room)
    a.whoami()
    page = {"Origin": "https://attacker.example", "Content-Type": "text/plain"}
    for path, body in (("/api/broadcast", {"message": "pwned"}),
                       (f"/api/rooms/{room}/messages", {"content": "pwned"}),
                       (f"/api/clients/{a.client_id}/messages", {"message_type": "pwned"}),
                       ("/api/rooms", {"id": uid()}), ("/api/reload", None)):
        err(api(daemon.port, "POST", path, body, headers=page), 403, "forbidden")
    err(api(daemon.port, "DELETE", f"/api/clients/{a.client_id}", headers=page), 403)
    a.quiet(lambda m: True, wait=0.3, what="delivery of a forged request")
    a.ping()


def test_cors_any_origin(gohub_bin, start_daemon):
    d = start_daemon(env={"GOHUB_HTTP_CORS_ORIGINS": "*"})
    o = "https://anything.example:8443"
    r = api(d.port, "GET", "/api/stats", headers={"Origin": o})
    ok(r)
    assert r.header("access-control-allow-origin") == "*", r
    r = api(d.port, "OPTIONS", "/api/broadcast",
            headers={"Origin": "x" * 4000, "Access-Control-Request-Method": "POST"})
    assert r.status == 200 and r.header("access-control-allow-origin") == "*", r


# --------------------------------------------------------------------------
# the whole flow against the ASan build, when there is one


def test_api_flow_under_asan(gohub_asan_bin, start_daemon, hubs):
    if gohub_asan_bin is None:
        pytest.skip("no GOHUB_ASAN_BIN")
    d = start_daemon(binary=gohub_asan_bin, asan=True)
    room = uid()
    ok(api(d.port, "POST", "/api/rooms", {"id": room, "name": "n"}), 201)
    a, b = hubs(d.port, 2)
    joined([a, b], room)
    a.whoami()
    ok(api(d.port, "POST", f"/api/rooms/{room}/messages", {"content": {"x": [1]}}))
    ok(api(d.port, "POST", "/api/broadcast", {"message": 1}))
    ok(api(d.port, "POST", f"/api/clients/{a.client_id}/messages", {"message_type": "t"}))
    assert len(ok(api(d.port, "GET", "/api/clients?limit=1"))["clients"]) == 1
    ok(api(d.port, "GET", f"/api/rooms/{room}"))
    for body in (b"{", b'{"id":"\xff"}', b"[" * 2000, b'{"id":"a\\u0000b"}'):
        assert api(d.port, "POST", "/api/rooms", body).status == 400
    ok(api(d.port, "DELETE", f"/api/rooms/{room}"))
    ok(api(d.port, "DELETE", f"/api/clients/{a.client_id}"))
    b.expect_type("room_message")
    b.expect_type("broadcast")
    b.expect_type("room_deleted")
