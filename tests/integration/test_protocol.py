"""The JSON protocol on /ws as served by the Lua dispatch layer
(shared/PROTOCOL.md): envelope, reply rule, error codes, identity, rooms,
direct messages and broadcasts across workers."""

import json
import os
import threading
import time

import pytest

from gohub_helpers import (
    Hub, check_envelope, check_error, hub_frames, is_int, module_daemon, now_ms,
    raw_data_field, wait_for,
)

# three workers so that clients spread over them (SO_REUSEPORT)
daemon = module_daemon({"GOHUB_SERVER_WORKERS": "3"})

ANON_DEFAULT = "join:room,leave:room,send:message,create:room"
REPLY_WAIT = 0.3  # how long "no second reply" is checked


def rid(prefix="r"):
    return f"{prefix}-{os.urandom(5).hex()}"


def members_of(m):
    return {(x["client_id"], x["user_id"]) for x in m["data"]["members"]}


def room_in(hub, room_id):
    r = hub.call_ok("list_rooms", {}, "rooms")
    for x in r["data"]["rooms"]:
        if x["id"] == room_id:
            return x
    return None


def join_all(room, clients):
    for c in clients:
        c.call_ok("join_room", {"room_id": room}, "room_joined")
    for c in clients:  # presence events from later joiners
        c.drain(0.05)
    for c in clients:
        c.pending.clear()


# ------------------------------------------------------------------ ping / envelope


def test_ping_with_id_one_pong(daemon, hubs):
    c = hubs(daemon.port)
    t = now_ms()
    c.send("ping", {"ts": t}, mid=7)
    r = c.reply(7)
    check_envelope(r, request_id=7)
    assert r["message_type"] == "pong", r.raw
    d = r["data"]
    assert d["ts"] == t, r.raw
    assert is_int(d["server_ts"]) and abs(d["server_ts"] - now_ms()) < 60000, r.raw
    assert "rtt" in d, r.raw
    c.no_more_replies(7, REPLY_WAIT)
    c.quiet(wait=0.1)


@pytest.mark.parametrize("mid", [None, 0])
def test_ping_without_id_pong_without_request_id(daemon, hubs, mid):
    c = hubs(daemon.port)
    c.send("ping", {"ts": 12345}, mid=mid)
    r = c.expect_type("pong")
    check_envelope(r)
    assert "request_id" not in r, f"pong to a request without message_id has request_id: {r.raw}"
    assert r["data"]["ts"] == 12345
    c.quiet(wait=REPLY_WAIT)


def test_ping_ts_absent_is_null(daemon, hubs):
    c = hubs(daemon.port)
    r = c.call("ping")
    assert r["message_type"] == "pong"
    assert "ts" in r["data"] and r["data"]["ts"] is None, r.raw
    assert is_int(r["data"]["server_ts"]), r.raw


def test_unknown_fields_ignored(daemon, hubs):
    c = hubs(daemon.port)
    c.send_raw('{"message_type":"ping","message_id":3,"extra":{"x":[1,2]},"data":{"ts":1,"zz":true}}')
    r = c.reply(3)
    assert r["message_type"] == "pong" and r["data"]["ts"] == 1, r.raw


def test_max_safe_message_id(daemon, hubs):
    c = hubs(daemon.port)
    big = 2 ** 53
    c.send_raw('{"message_type":"ping","message_id":%d}' % big)
    r = c.reply(big)
    assert r["message_type"] == "pong", r.raw
    assert '"request_id":%d' % big in r.raw.replace(" ", ""), r.raw


def test_authenticate_with_auth_disabled(daemon, hubs):
    """The default daemon has auth.enabled false: every connection is
    anonymous and authenticate is refused with 2000, saying why (the JWT
    cases are in test_auth.py)."""
    c = hubs(daemon.port)
    r = c.call("authenticate", {"token": "not.a.jwt"})
    check_error(r, 2000, r["request_id"])
    assert "auth" in r["data"]["message"] and "disabled" in r["data"]["message"], r.raw
    check_error(c.call("authenticate", {"token": 5}), 1001, c.next_id - 1)


def test_each_request_exactly_one_reply(daemon, hubs):
    """A batch of mixed good and bad requests with ids 1..n: each id gets
    exactly one reply."""
    c = hubs(daemon.port)
    room = rid()
    reqs = [
        ('{"message_type":"ping","message_id":1}', "pong"),
        ('{"message_type":"join_room","message_id":2,"data":{"room_id":"%s"}}' % room, "room_joined"),
        ('{"message_type":"join_room","message_id":3,"data":{"room_id":"%s"}}' % room, 3004),
        ('{"message_type":"room_message","message_id":4,"data":{"room_id":"%s","content":1}}' % room, "ack"),
        ('{"message_type":"nope_nope","message_id":5}', 1006),
        ('{"message_type":"join_room","message_id":6}', 1001),
        ('{"message_type":"list_rooms","message_id":7}', "rooms"),
        ('{"message_type":"room_members","message_id":8,"data":{"room_id":"%s"}}' % room, "room_members"),
        ('{"message_type":"leave_room","message_id":9,"data":{"room_id":"%s"}}' % room, "room_left"),
        ('{"message_type":"leave_room","message_id":10,"data":{"room_id":"%s"}}' % room, None),
        ('{"message_type":"direct_message","message_id":11,"data":{"target_id":"nobody-x","content":1}}', 4001),
        ('{"message_type":"create_room","message_id":12,"data":{"room_id":"%s"}}' % rid(), "room_created"),
    ]
    assert c.ws.send_raw(hub_frames([t for t, _ in reqs]))
    for i, (_, want) in enumerate(reqs, 1):
        r = c.reply(i)
        check_envelope(r, request_id=i)
        if want is None:  # leave a room that is gone: an error (3003 or 3000)
            check_error(r, (3000, 3003), i)
        elif isinstance(want, int):
            check_error(r, want, i)
        else:
            assert r["message_type"] == want, f"request {i}: want {want}, got {r.raw}"
    for i in range(1, len(reqs) + 1):
        c.no_more_replies(i, 0.02 if i > 1 else REPLY_WAIT)


def test_no_id_typed_replies_come_without_request_id_and_no_ack(daemon, hubs):
    a, b = hubs(daemon.port, 2)
    room = rid()
    a.send("create_room", {"room_id": room}, mid=None)
    r = a.expect_type("room_created")
    check_envelope(r)
    assert "request_id" not in r, r.raw
    for t, data, want in [
        ("join_room", {"room_id": room}, "room_joined"),
        ("list_rooms", {}, "rooms"),
        ("room_members", {"room_id": room}, "room_members"),
    ]:
        a.send(t, data, mid=None)
        r = a.expect_type(want)
        check_envelope(r)
        assert "request_id" not in r, r.raw
    b.call_ok("join_room", {"room_id": room}, "room_joined")
    a.expect_type("member_joined")
    a.send("room_message", {"room_id": room, "content": "hi"}, mid=None)
    got = b.expect_type("room_message")
    assert got["data"]["content"] == "hi"
    a.send("room_message", {"room_id": room, "content": "hi0"}, mid=0)
    b.expect_type("room_message", pred=lambda m: m["data"]["content"] == "hi0")
    a.quiet(lambda m: m.get("message_type") == "ack", REPLY_WAIT, what="ack without message_id")
    a.send("leave_room", {"room_id": room}, mid=None)
    r = a.expect_type("room_left")
    assert "request_id" not in r, r.raw


def test_errors_sent_without_message_id(daemon, hubs):
    c = hubs(daemon.port)
    c.send("no_such_type_zz", {}, mid=None)
    check_error(c.expect_type("error"), 1006, 0)
    c.send("join_room", {}, mid=0)
    check_error(c.expect_type("error"), 1001, 0)
    c.send("leave_room", {"room_id": rid()}, mid=None)
    check_error(c.expect_type("error"), (3003, 3000), 0)
    c.quiet(wait=REPLY_WAIT)


# ------------------------------------------------------------------ 1001 / 1002 / 1006


@pytest.mark.parametrize("text", [
    "not json", "", "{", "nul", '{"message_type":"ping",}', "{'message_type':'ping'}",
    '{"message_type":"ping","data":{"ts":NaN}}', '{"message_type":"ping"} x',
    "[1,2]", '"ping"', "42", "null", "true", "{}",
    '{"message_type":5}', '{"message_type":null}', '{"message_type":["ping"]}',
    '{"message_type":{"a":1}}', '{"data":{}}',
])
def test_invalid_format_1001(daemon, hubs, text):
    c = hubs(daemon.port)
    c.send_raw(text)
    r = c.expect_type("error")
    check_error(r, 1001, 0)
    c.quiet(wait=0.1)
    assert c.ping()["message_type"] == "pong"


@pytest.mark.parametrize("text", [
    '{"message_id":9}', '{"message_id":9,"message_type":7}', '{"message_type":false,"message_id":9}',
])
def test_1001_keeps_valid_request_id(daemon, hubs, text):
    """The JSON parsed and the message_id is valid: the error carries it."""
    c = hubs(daemon.port)
    c.send_raw(text)
    check_error(c.expect_type("error"), 1001, 9)
    c.no_more_replies(9, REPLY_WAIT)


@pytest.mark.parametrize("data", [
    None,  # data absent -> {} -> room_id missing
    {}, {"room_id": 5}, {"room_id": None}, {"room_id": ["a"]}, {"room_id": {"x": 1}},
    "lobby", 12, [1], True,
    {"room_id": "a b"}, {"room_id": "x*"}, {"room_id": "r" * 129}, {"room_id": "x" * 200},
    {"room_id": ""}, {"room_id": "caf\u00e9"}, {"room_id": "a/b"}, {"room_id": "a\nb"},
])
def test_join_room_bad_data_1001(daemon, hubs, data):
    c = hubs(daemon.port)
    r = c.call("join_room", data)
    check_error(r, 1001, r["request_id"])
    c.no_more_replies(r["request_id"], 0.1)


def test_room_id_charset_and_max_length(daemon, hubs):
    c = hubs(daemon.port)
    for room in ["A-z_0:9.x@y", "r" * 128, "a", "@", "." + os.urandom(3).hex()]:
        r = c.call_ok("join_room", {"room_id": room}, "room_joined")
        assert r["data"]["room_id"] == room
        c.call_ok("leave_room", {"room_id": room}, "room_left")


@pytest.mark.parametrize("t,data", [
    ("room_message", {"content": 1}),
    ("room_message", {"room_id": 1, "content": 1}),
    ("room_message", {"room_id": "x y", "content": 1}),
    ("room_message", "text"),
    ("leave_room", {}),
    ("leave_room", {"room_id": False}),
    ("direct_message", {"content": 1}),
    ("direct_message", {"target_id": 12, "content": 1}),
    ("create_room", {}),
    ("create_room", {"room_id": 3}),
    ("create_room", {"room_id": "a*b"}),
    ("create_room", {"room_id": "ok-room-1", "max_clients": "x"}),
    ("create_room", {"room_id": "ok-room-2", "name": 5}),
    ("room_members", {}),
    ("room_members", {"room_id": 1}),
    ("delete_room", {"room_id": 2}),
])
def test_bad_data_fields_1001(daemon, hubs, t, data):
    c = hubs(daemon.port)
    r = c.call(t, data)
    # delete_room is forbidden for anonymous clients: 2001 may come first
    want = (1001, 2001) if t == "delete_room" else 1001
    check_error(r, want, r["request_id"])


@pytest.mark.parametrize("mid", ["-1", "1.5", '"5"', "9007199254740993", "1e400",
                                 "true", "[1]", '{"a":1}', "-0.5", "18446744073709551616"])
def test_bad_message_id_1002(daemon, hubs, mid):
    c = hubs(daemon.port)
    c.send_raw('{"message_type":"ping","message_id":%s}' % mid)
    r = c.expect_type("error")
    check_error(r, 1002, 0)
    c.quiet(wait=REPLY_WAIT)
    c.ping()


@pytest.mark.parametrize("t", ["no_such_type", "../x", "a.b", "ping ", " ping", "PING",
                               "x" * 65, "handlers/ping", "ping.lua", "__index", "_G",
                               "gohub", "permissions", "hooks", "ping\u0000", "a-b",
                               "\u00e9t\u00e9", "lib", "validate"])
def test_unknown_type_1006(daemon, hubs, t):
    c = hubs(daemon.port)
    mid = c.send(t, {})
    check_error(c.reply(mid), 1006, mid)
    c.no_more_replies(mid, 0.1)
    c.ping()


def test_empty_message_type(daemon, hubs):
    c = hubs(daemon.port)
    mid = c.send("", {})
    check_error(c.reply(mid), (1001, 1006), mid)


def test_combo_unknown_type_and_bad_id_is_1002(daemon, hubs):
    c = hubs(daemon.port)
    c.send_raw('{"message_type":"no_such_type","message_id":-3}')
    check_error(c.expect_type("error"), 1002, 0)
    c.quiet(wait=REPLY_WAIT)


def test_combo_missing_type_and_bad_id(daemon, hubs):
    c = hubs(daemon.port)
    c.send_raw('{"message_id":"x"}')
    check_error(c.expect_type("error"), (1001, 1002), 0)
    c.quiet(wait=REPLY_WAIT)


def test_combo_bad_id_stops_the_handler(daemon, hubs):
    """A valid join_room with an invalid message_id gets 1002 and is not
    executed."""
    c = hubs(daemon.port)
    room = rid()
    c.send_raw('{"message_type":"join_room","message_id":1.5,"data":{"room_id":"%s"}}' % room)
    check_error(c.expect_type("error"), 1002, 0)
    c.quiet(wait=REPLY_WAIT)
    assert room_in(c, room) is None, "join_room ran although its message_id was invalid"


def test_combo_unknown_type_with_bad_data_is_1006(daemon, hubs):
    c = hubs(daemon.port)
    mid = c.send("no_such_type", "not-an-object")
    check_error(c.reply(mid), 1006, mid)


def test_deeply_nested_input_survives(daemon, hubs):
    c = hubs(daemon.port)
    deep = "[" * 5000 + "]" * 5000
    c.send_raw(deep)
    check_error(c.expect_type("error", timeout=5), 1001, 0)
    # deep data: a pong, an error for that request, or (a parser with a
    # nesting limit) 1001 with request_id 0
    for mid, data in ((77, '{"ts":%s}' % deep),
                      (78, '{"x":%s}' % ('{"a":' * 3000 + "1" + "}" * 3000))):
        c.send_raw('{"message_type":"ping","message_id":%d,"data":%s}' % (mid, data))
        r = c.expect(lambda m: m.get("request_id") in (mid, 0), timeout=5, what=f"reply to {mid}")
        if r["message_type"] != "pong":
            check_error(r, (1001, 1003), r["request_id"])
        c.quiet(wait=0.2)
    c.ping()
    assert daemon.running()


def test_bad_input_never_breaks_other_clients(daemon, hubs):
    bad = hubs(daemon.port, name="bad")
    members = hubs(daemon.port, 4, name="m")
    room = rid()
    join_all(room, members)
    garbage = ["x", "{", "[]", '{"message_type":1}', '{"message_type":"../../etc"}',
               '{"message_type":"ping","message_id":-1}', '{"message_type":"join_room","data":7}',
               "\u00e9\u00e9", '{"message_type":"room_message","data":{"room_id":"%s"}}' % room,
               "[" * 2000, '{"message_type":"direct_message","data":{"target_id":null}}']
    errors_expected = 0
    frames = []
    for i in range(30):
        for g in garbage:
            frames.append(g)
            errors_expected += 1
    done = threading.Event()

    def spam():
        bad.ws.send_raw(hub_frames(frames))
        done.set()

    th = threading.Thread(target=spam)
    th.start()
    sender = members[0]
    for i in range(50):
        sender.send("room_message", {"room_id": room, "content": {"i": i}}, mid=None)
    th.join(10)
    assert done.is_set()
    for m in members[1:]:
        got = []
        while len(got) < 50:
            x = m.expect_type("room_message", timeout=5)
            got.append(x["data"]["content"]["i"])
        assert got == list(range(50))
    errs = 0
    while errs < errors_expected:
        r = bad.expect_type("error", timeout=5)
        assert r["data"]["code"] in (1001, 1002, 1003, 1006, 3003), r.raw
        errs += 1
    bad.quiet(lambda m: m.get("message_type") == "error", 0.2, what="extra error")
    bad.ping()
    for m in members:
        m.ping()


# ------------------------------------------------------------------ identity


def test_identity_unique_and_anon_user_id(daemon, hubs):
    cs = hubs(daemon.port, 8)
    ids = [c.whoami() for c in cs]
    assert len(set(ids)) == 8, ids
    for c in cs:
        assert isinstance(c.client_id, str) and c.client_id
        assert c.user_id == "anon-" + c.client_id, (c.client_id, c.user_id)


def test_query_client_id_not_trusted(daemon, hubs):
    b = hubs(daemon.port)
    bid = b.whoami()
    for q in (bid, "chosen-by-client"):
        h = Hub(daemon.port, path=f"/ws?client_id={q}")
        try:
            assert h.whoami() != q, f"?client_id={q} set the identity"
            assert h.user_id == "anon-" + h.client_id
        finally:
            h.close()
    assert b.ping()["message_type"] == "pong"


# ------------------------------------------------------------------ join / leave


def test_join_presence_and_member_count(daemon, hubs):
    cs = hubs(daemon.port, 5, name="j")
    room = rid()
    for c in cs:
        c.whoami()
    for n, c in enumerate(cs, 1):
        r = c.call_ok("join_room", {"room_id": room}, "room_joined")
        assert r["data"] == {"room_id": room, "status": "joined", "member_count": n}, r.raw
        for prev in cs[:n - 1]:
            mj = prev.expect_type("member_joined", pred=lambda m: m["data"]["client_id"] == c.client_id)
            check_envelope(mj, push=True)
            assert mj["data"] == {"room_id": room, "client_id": c.client_id, "user_id": c.user_id}, mj.raw
        c.quiet(lambda m: m.get("message_type") == "member_joined"
                and m["data"].get("client_id") == c.client_id, 0.1, what="own member_joined")
    r = cs[0].call_ok("room_members", {"room_id": room}, "room_members")
    assert r["data"]["room_id"] == room
    assert members_of(r) == {(c.client_id, c.user_id) for c in cs}, r.raw
    x = room_in(cs[0], room)
    assert x is not None and x["member_count"] == 5, x


def test_member_joined_same_message_id_for_all(daemon, hubs):
    cs = hubs(daemon.port, 6)
    room = rid()
    join_all(room, cs[:5])
    cs[5].call_ok("join_room", {"room_id": room}, "room_joined")
    ids = {c.expect_type("member_joined")["message_id"] for c in cs[:5]}
    assert len(ids) == 1 and 0 not in ids, ids


def test_join_twice_3004(daemon, hubs):
    c = hubs(daemon.port)
    room = rid()
    c.call_ok("join_room", {"room_id": room}, "room_joined")
    r = c.call("join_room", {"room_id": room})
    check_error(r, 3004, r["request_id"])


def test_room_full_3002_across_workers(daemon, hubs):
    a, b, c, d = hubs(daemon.port, 4)
    room = rid()
    r = a.call_ok("create_room", {"room_id": room, "max_clients": 2}, "room_created")
    assert r["data"]["room_id"] == room and r["data"]["max_clients"] == 2, r.raw
    b.call_ok("join_room", {"room_id": room}, "room_joined")
    c.call_ok("join_room", {"room_id": room}, "room_joined")
    r = d.call("join_room", {"room_id": room})
    check_error(r, 3002, r["request_id"])
    r = a.call("join_room", {"room_id": room})
    check_error(r, 3002, r["request_id"])
    c.call_ok("leave_room", {"room_id": room}, "room_left")
    d.call_ok("join_room", {"room_id": room}, "room_joined")


def test_concurrent_joins_respect_max_clients(daemon, hubs):
    cs = hubs(daemon.port, 12)
    room = rid()
    cs[0].call_ok("create_room", {"room_id": room, "max_clients": 5}, "room_created")
    for c in cs:
        c.send("join_room", {"room_id": room}, mid=1000)
    ok = full = 0
    for c in cs:
        r = c.reply(1000)
        if r["message_type"] == "room_joined":
            ok += 1
        else:
            check_error(r, 3002, 1000)
            full += 1
    assert ok == 5 and full == 7, (ok, full)


def test_leave_room_and_member_left(daemon, hubs):
    a, b, c = hubs(daemon.port, 3)
    for x in (a, b, c):
        x.whoami()
    room = rid()
    join_all(room, [a, b, c])
    r = b.call_ok("leave_room", {"room_id": room}, "room_left")
    assert r["data"] == {"room_id": room, "status": "left"}, r.raw
    for x in (a, c):
        ml = x.expect_type("member_left")
        check_envelope(ml, push=True)
        assert ml["data"] == {"room_id": room, "client_id": b.client_id, "user_id": b.user_id}, ml.raw
    b.quiet(lambda m: m.get("message_type") == "member_left", 0.2)
    r = b.call("leave_room", {"room_id": room})
    check_error(r, 3003, r["request_id"])
    r = a.call_ok("room_members", {"room_id": room}, "room_members")
    assert members_of(r) == {(a.client_id, a.user_id), (c.client_id, c.user_id)}


def test_auto_created_room_disappears(daemon, hubs):
    a, b = hubs(daemon.port, 2)
    room = rid("auto")
    a.call_ok("join_room", {"room_id": room}, "room_joined")
    assert room_in(b, room) is not None
    a.call_ok("leave_room", {"room_id": room}, "room_left")
    assert room_in(b, room) is None
    r = b.call("room_members", {"room_id": room})
    check_error(r, 3000, r["request_id"])
    room2 = rid("auto")
    a.call_ok("join_room", {"room_id": room2}, "room_joined")
    a.close()
    assert wait_for(lambda: room_in(b, room2) is None, 2.0), "auto room stayed after its last member disconnected"


def test_created_room_stays(daemon, hubs):
    a, b = hubs(daemon.port, 2)
    room = rid("made")
    r = a.call_ok("create_room", {"room_id": room, "name": "Nice Room", "max_clients": 7}, "room_created")
    assert r["data"] == {"room_id": room, "name": "Nice Room", "max_clients": 7}, r.raw
    x = room_in(b, room)
    assert x == {"id": room, "name": "Nice Room", "member_count": 0, "max_clients": 7}, x
    b.call_ok("join_room", {"room_id": room}, "room_joined")
    assert room_in(a, room)["member_count"] == 1
    b.call_ok("leave_room", {"room_id": room}, "room_left")
    x = room_in(a, room)
    assert x is not None and x["member_count"] == 0, x
    b.call_ok("join_room", {"room_id": room}, "room_joined")
    b.close()
    time.sleep(0.3)
    assert room_in(a, room) is not None


def test_create_room_defaults_and_exists(daemon, hubs):
    a, b = hubs(daemon.port, 2)
    room = rid()
    r = a.call_ok("create_room", {"room_id": room}, "room_created")
    assert r["data"]["room_id"] == room
    assert isinstance(r["data"]["name"], str)
    assert r["data"]["max_clients"] == 0, r.raw
    r = b.call("create_room", {"room_id": room})
    check_error(r, 3001, r["request_id"])
    auto = rid()
    a.call_ok("join_room", {"room_id": auto}, "room_joined")
    r = b.call("create_room", {"room_id": auto})
    check_error(r, 3001, r["request_id"])


def test_room_members_missing_room_3000(daemon, hubs):
    c = hubs(daemon.port)
    r = c.call("room_members", {"room_id": rid("gone")})
    check_error(r, 3000, r["request_id"])


def test_close_leaves_all_rooms(daemon, hubs):
    a, b, c = hubs(daemon.port, 3)
    for x in (a, b, c):
        x.whoami()
    r1, r2 = rid(), rid()
    join_all(r1, [a, b])
    join_all(r2, [c, b])
    b.abort()  # TCP gone without a close frame
    ml = a.expect_type("member_left", timeout=5)
    assert ml["data"] == {"room_id": r1, "client_id": b.client_id, "user_id": b.user_id}, ml.raw
    ml = c.expect_type("member_left", timeout=5)
    assert ml["data"] == {"room_id": r2, "client_id": b.client_id, "user_id": b.user_id}, ml.raw
    assert members_of(a.call_ok("room_members", {"room_id": r1})) == {(a.client_id, a.user_id)}
    assert members_of(c.call_ok("room_members", {"room_id": r2})) == {(c.client_id, c.user_id)}


def test_graceful_close_leaves_rooms(daemon, hubs):
    a, b = hubs(daemon.port, 2)
    b.whoami()
    room = rid()
    join_all(room, [a, b])
    b.close()
    ml = a.expect_type("member_left", timeout=5)
    assert ml["data"]["client_id"] == b.client_id and ml["data"]["room_id"] == room


# ------------------------------------------------------------------ room_message

CONTENTS = [
    '{"b":1.50,"a":[1,2e3,"x\\u00e9"]}',
    '"plain"', '"a\\"b\\\\c\\ud83d\\ude00\\/\\n\\u001f"', '"\u00e9\u4e2d\U0001F600"',
    "0", "-0", "1.0e+2", "12345678901234567890123", "-1.250E-7", "null", "true", "false",
    "[]", "{}", '[[[{"k":[{}]}]]]',
]


@pytest.mark.parametrize("content", CONTENTS)
def test_room_message_content_byte_for_byte(daemon, hubs, content):
    a, b = hubs(daemon.port, 2)
    a.whoami()
    room = rid()
    join_all(room, [a, b])
    a.send_raw('{"message_type":"room_message","message_id":41,"data":{"room_id":"%s","content":%s}}'
               % (room, content))
    ack = a.reply(41)
    check_envelope(ack, request_id=41)
    assert ack["message_type"] == "ack" and ack["data"] == {"request_id": 41}, ack.raw
    m = b.expect_type("room_message")
    check_envelope(m, push=True)
    assert raw_data_field(m.raw, "content") == content, f"content changed: sent {content!r}, got {m.raw!r}"
    assert m["data"]["room_id"] == room
    assert m["data"]["sender_id"] == a.user_id
    assert is_int(m["data"]["timestamp"]) and abs(m["data"]["timestamp"] - now_ms()) < 60000
    a.no_more_replies(41, REPLY_WAIT)
    a.quiet(lambda m: m.get("message_type") == "room_message", 0.05, what="echo to sender")


def test_nul_in_any_string_is_1001_and_nothing_is_delivered(daemon, hubs):
    """cJSON, like every C string, would cut "a\\u0000b" to "a" before a
    handler sees it (reliability checklist A4), so a message with an escaped
    NUL anywhere is refused as a whole: 1001, nothing pushed."""
    a, b = hubs(daemon.port, 2)
    room = rid()
    join_all(room, [a, b])
    a.send_raw('{"message_type":"room_message","message_id":43,"data":{"room_id":"%s",'
               '"content":"a\\u0000b"}}' % room)
    check_error(a.reply(43), 1001, 43)
    b.quiet(lambda m: m.get("message_type") == "room_message", 0.3, what="a NUL message")
    a.send_raw('{"message_type":"join_room","message_id":44,"data":{"room_id":"x\\u0000y"}}')
    check_error(a.reply(44), 1001, 44)


def test_room_message_whitespace_inside_content_kept(daemon, hubs):
    a, b = hubs(daemon.port, 2)
    room = rid()
    join_all(room, [a, b])
    content = '{ "k" : [ 1 ,\t2 ] ,"s":"a  b" }'
    a.send_raw('{"message_type":"room_message","data":{"room_id":"%s","content":%s}}' % (room, content))
    m = b.expect_type("room_message")
    assert raw_data_field(m.raw, "content") == content, m.raw


def test_room_message_fanout_same_message_id(daemon, hubs):
    cs = hubs(daemon.port, 8, name="f")
    cs[0].whoami()
    room = rid()
    join_all(room, cs)
    cs[0].send("room_message", {"room_id": room, "content": {"x": 1}}, mid=None)
    got = [c.expect_type("room_message") for c in cs[1:]]
    ids = {m["message_id"] for m in got}
    assert len(ids) == 1 and 0 not in ids, ids
    for m in got:
        check_envelope(m, push=True)
        assert m["data"]["sender_id"] == cs[0].user_id
        assert m["data"]["content"] == {"x": 1}
    cs[0].quiet(lambda m: m.get("message_type") in ("room_message", "ack"), REPLY_WAIT)
    # a second message has a different id
    cs[1].send("room_message", {"room_id": room, "content": 2}, mid=None)
    m2 = cs[0].expect_type("room_message")
    assert m2["message_id"] not in ids


def test_room_message_not_member_3003(daemon, hubs):
    a, b = hubs(daemon.port, 2)
    room = rid()
    a.call_ok("join_room", {"room_id": room}, "room_joined")
    r = b.call("room_message", {"room_id": room, "content": "x"})
    check_error(r, 3003, r["request_id"])
    a.quiet(lambda m: m.get("message_type") == "room_message", 0.2)


def test_room_message_missing_room_3000(daemon, hubs):
    c = hubs(daemon.port)
    r = c.call("room_message", {"room_id": rid("none"), "content": "x"})
    check_error(r, 3000, r["request_id"])
    c.send("room_message", {"room_id": rid("none"), "content": "x"}, mid=None)
    check_error(c.expect_type("error"), 3000, 0)


def test_room_message_per_sender_order_200x12(daemon, hubs):
    members = hubs(daemon.port, 12, name="o")
    sender = members[0]
    sender.whoami()
    room = rid("order")
    join_all(room, members)
    frames = [{"message_type": "room_message", "message_id": i + 1,
               "data": {"room_id": room, "content": {"seq": i, "pad": "p" * 40}}} for i in range(200)]
    assert sender.ws.send_raw(hub_frames(frames))
    mids_by_seq = {}
    for m in members[1:]:
        seqs = []
        while len(seqs) < 200:
            x = m.expect_type("room_message", timeout=10)
            assert x["data"]["sender_id"] == sender.user_id
            seq = x["data"]["content"]["seq"]
            seqs.append(seq)
            mids_by_seq.setdefault(seq, set()).add(x["message_id"])
        assert seqs == list(range(200)), f"{m}: out of order / lost / duplicated: {seqs[:20]}..."
        m.quiet(lambda x: x.get("message_type") == "room_message", 0.05, what="duplicate room_message")
    assert all(len(v) == 1 for v in mids_by_seq.values()), "a message had different message_ids per recipient"
    assert len({next(iter(v)) for v in mids_by_seq.values()}) == 200
    acks = [sender.reply(i + 1, timeout=10) for i in range(200)]
    assert all(a["message_type"] == "ack" for a in acks)
    sender.quiet(lambda x: x.get("message_type") == "room_message", 0.1, what="echo to sender")


def test_two_senders_each_in_order(daemon, hubs):
    cs = hubs(daemon.port, 6, name="t")
    s1, s2 = cs[0], cs[1]
    s1.whoami(), s2.whoami()
    room = rid()
    join_all(room, cs)

    def blast(s, tag):
        s.ws.send_raw(hub_frames([{"message_type": "room_message",
                                    "data": {"room_id": room, "content": [tag, i]}} for i in range(100)]))

    t1 = threading.Thread(target=blast, args=(s1, "a"))
    t2 = threading.Thread(target=blast, args=(s2, "b"))
    t1.start(), t2.start()
    t1.join(10), t2.join(10)
    for r in cs[2:]:
        seen = {"a": [], "b": []}
        while len(seen["a"]) + len(seen["b"]) < 200:
            x = r.expect_type("room_message", timeout=10)
            tag, i = x["data"]["content"]
            seen[tag].append(i)
        assert seen["a"] == list(range(100)) and seen["b"] == list(range(100)), seen


# ------------------------------------------------------------------ direct_message


def test_direct_message_by_client_id_and_user_id(daemon, hubs):
    cs = hubs(daemon.port, 5, name="d")
    for c in cs:
        c.whoami()
    a = cs[0]
    content = '{"b":1.50,"a":[1,2e3,"x\\u00e9"]}'
    mid = 100
    for t in cs[1:]:
        for target in (t.client_id, t.user_id):
            mid += 1
            a.send_raw('{"message_type":"direct_message","message_id":%d,"data":{"target_id":%s,"content":%s}}'
                       % (mid, json.dumps(target), content))
            ack = a.reply(mid)
            check_envelope(ack, request_id=mid)
            assert ack["message_type"] == "ack" and ack["data"] == {"request_id": mid}, ack.raw
            m = t.expect_type("direct_message")
            check_envelope(m, push=True)
            assert raw_data_field(m.raw, "content") == content, m.raw
            assert m["data"]["sender_id"] == a.user_id
            assert is_int(m["data"]["timestamp"])
            a.no_more_replies(mid, 0.05)
    # nobody got more than the two addressed to it
    for c in cs:
        c.quiet(lambda m: m.get("message_type") == "direct_message", 0.1, what="extra direct_message")


def test_direct_message_without_id_no_ack(daemon, hubs):
    a, b = hubs(daemon.port, 2)
    b.whoami()
    a.send("direct_message", {"target_id": b.client_id, "content": "yo"}, mid=None)
    assert b.expect_type("direct_message")["data"]["content"] == "yo"
    a.quiet(wait=REPLY_WAIT)


def test_direct_message_offline_4001(daemon, hubs):
    a, b = hubs(daemon.port, 2)
    bid = b.whoami()
    r = a.call("direct_message", {"target_id": "no-such-client-zz", "content": 1})
    check_error(r, 4001, r["request_id"])
    b.close()
    time.sleep(0.2)
    for target in (bid, "anon-" + bid):
        r = a.call("direct_message", {"target_id": target, "content": 1})
        check_error(r, 4001, r["request_id"])
    a.send("direct_message", {"target_id": "no-such", "content": 1}, mid=None)
    check_error(a.expect_type("error"), 4001, 0)


# ------------------------------------------------------------------ list_rooms


def test_list_rooms_empty_is_array(start_daemon, hubs):
    d = start_daemon()
    c = hubs(d.port)
    r = c.call_ok("list_rooms", {}, "rooms")
    assert r["data"] == {"rooms": []}, r.raw
    assert raw_data_field(r.raw, "rooms").strip() == "[]", r.raw


def test_list_rooms_entries(daemon, hubs):
    a, b = hubs(daemon.port, 2)
    room = rid()
    a.call_ok("join_room", {"room_id": room}, "room_joined")
    b.call_ok("join_room", {"room_id": room}, "room_joined")
    x = room_in(a, room)
    assert set(x) == {"id", "name", "member_count", "max_clients"}, x
    assert x["member_count"] == 2 and x["max_clients"] == 0 and isinstance(x["name"], str), x


# ------------------------------------------------------------------ permissions / config


def test_delete_room_forbidden_by_default(daemon, hubs):
    a = hubs(daemon.port)
    room = rid()
    a.call_ok("create_room", {"room_id": room}, "room_created")
    r = a.call("delete_room", {"room_id": room})
    check_error(r, 2001, r["request_id"])
    assert room_in(a, room) is not None


def test_delete_room_with_permission(start_daemon, hubs):
    d = start_daemon(env={"GOHUB_AUTH_ANONYMOUS_PERMISSIONS": ANON_DEFAULT + ",delete:room",
                          "GOHUB_SERVER_WORKERS": "3"})
    a, b, c, e = hubs(d.port, 4)
    room = rid()
    a.call_ok("create_room", {"room_id": room}, "room_created")
    join_all(room, [b, c, e])
    r = a.call_ok("delete_room", {"room_id": room}, "room_deleted")
    assert r["data"] == {"room_id": room}, r.raw
    ids = set()
    for x in (b, c, e):
        m = x.expect_type("room_deleted")
        check_envelope(m, push=True)
        assert m["data"] == {"room_id": room}, m.raw
        ids.add(m["message_id"])
    assert len(ids) == 1
    assert room_in(a, room) is None
    r = b.call("room_message", {"room_id": room, "content": 1})
    check_error(r, 3000, r["request_id"])
    r = b.call("leave_room", {"room_id": room})
    check_error(r, (3000, 3003), r["request_id"])
    r = a.call("delete_room", {"room_id": room})
    check_error(r, 3000, r["request_id"])
    r = b.call_ok("join_room", {"room_id": room}, "room_joined")
    assert r["data"]["member_count"] == 1, r.raw


def test_broadcast_forbidden_by_default(daemon, hubs):
    a, b = hubs(daemon.port, 2)
    r = a.call("broadcast", {"content": "x"})
    check_error(r, 2001, r["request_id"])
    b.quiet(lambda m: m.get("message_type") == "broadcast", 0.2)


def test_broadcast_with_permission_all_workers(start_daemon, hubs):
    d = start_daemon(env={"GOHUB_AUTH_ANONYMOUS_PERMISSIONS": ANON_DEFAULT + ",broadcast",
                          "GOHUB_SERVER_WORKERS": "3"})
    cs = hubs(d.port, 9, name="b")
    a = cs[0]
    a.whoami()
    content = '{"b":1.50,"a":[1,2e3,"x\\u00e9"]}'
    a.send_raw('{"message_type":"broadcast","message_id":5,"data":{"content":%s}}' % content)
    ack = a.reply(5)
    assert ack["message_type"] == "ack" and ack["data"] == {"request_id": 5}, ack.raw
    ids = set()
    for c in cs[1:]:
        m = c.expect_type("broadcast")
        check_envelope(m, push=True)
        assert raw_data_field(m.raw, "content") == content, m.raw
        assert m["data"]["sender_id"] == a.user_id
        assert is_int(m["data"]["timestamp"])
        ids.add(m["message_id"])
    assert len(ids) == 1, ids
    a.quiet(lambda m: m.get("message_type") == "broadcast", REPLY_WAIT, what="broadcast to its sender")
    a.no_more_replies(5, 0.01)


def test_anonymous_without_join_permission(start_daemon, hubs):
    d = start_daemon(env={"GOHUB_AUTH_ANONYMOUS_PERMISSIONS": "leave:room"})
    c = hubs(d.port)
    r = c.call("join_room", {"room_id": "lobby"})
    check_error(r, 2001, r["request_id"])
    r = c.call("create_room", {"room_id": "lobby2"})
    check_error(r, 2001, r["request_id"])
    r = c.call("broadcast", {"content": 1})
    check_error(r, 2001, r["request_id"])
    c.ping()
    c.call_ok("list_rooms", {}, "rooms")


def test_auto_create_off_3000(start_daemon, hubs):
    d = start_daemon(env={"GOHUB_ROOMS_AUTO_CREATE": "false"})
    a, b = hubs(d.port, 2)
    r = a.call("join_room", {"room_id": "missing"})
    check_error(r, 3000, r["request_id"])
    a.call_ok("create_room", {"room_id": "made"}, "room_created")
    b.call_ok("join_room", {"room_id": "made"}, "room_joined")


def test_predefined_rooms_stay(start_daemon, hubs):
    d = start_daemon(env={"GOHUB_ROOMS_PREDEFINED": "lobby,support"})
    a = hubs(d.port)
    ids = {x["id"] for x in a.call_ok("list_rooms", {}, "rooms")["data"]["rooms"]}
    assert ids == {"lobby", "support"}, ids
    a.call_ok("join_room", {"room_id": "lobby"}, "room_joined")
    a.call_ok("leave_room", {"room_id": "lobby"}, "room_left")
    a.close()
    b = hubs(d.port)
    assert room_in(b, "lobby") is not None and room_in(b, "support") is not None
    r = b.call("create_room", {"room_id": "lobby"})
    check_error(r, 3001, r["request_id"])


def test_echo_to_sender(start_daemon, hubs):
    d = start_daemon(env={"GOHUB_ROOMS_ECHO_TO_SENDER": "true"})
    a, b = hubs(d.port, 2)
    a.whoami()
    room = rid()
    join_all(room, [a, b])
    mid = a.send("room_message", {"room_id": room, "content": "e"})
    ack = a.reply(mid)
    assert ack["message_type"] == "ack"
    mine = a.expect_type("room_message")
    theirs = b.expect_type("room_message")
    assert mine["data"]["content"] == "e" and mine["data"]["sender_id"] == a.user_id
    assert mine["message_id"] == theirs["message_id"]


def test_members_only_send_off(start_daemon, hubs):
    d = start_daemon(env={"GOHUB_ROOMS_MEMBERS_ONLY_SEND": "false"})
    a, b = hubs(d.port, 2)
    a.whoami()
    room = rid()
    b.call_ok("join_room", {"room_id": room}, "room_joined")
    ack = a.call("room_message", {"room_id": room, "content": "from outside"})
    assert ack["message_type"] == "ack", ack.raw
    m = b.expect_type("room_message")
    assert m["data"]["content"] == "from outside" and m["data"]["sender_id"] == a.user_id


def test_presence_events_off(start_daemon, hubs):
    d = start_daemon(env={"GOHUB_ROOMS_PRESENCE_EVENTS": "false"})
    a, b = hubs(d.port, 2)
    room = rid()
    a.call_ok("join_room", {"room_id": room}, "room_joined")
    b.call_ok("join_room", {"room_id": room}, "room_joined")
    b.call_ok("leave_room", {"room_id": room}, "room_left")
    a.quiet(lambda m: m.get("message_type") in ("member_joined", "member_left"), 0.4)
