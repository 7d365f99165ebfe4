"""Reloading the Lua code: POST /api/reload (200 / 422 with the old code
still serving), SIGHUP, the file watcher, and reloads under traffic. Every
test works on a copy of lua/ (GOHUB_LUA_PATH), never on the repo's."""

import re
import signal
import threading
import time

import pytest

from gohub_helpers import (
    Hub, assert_error_body, check_error, hub_frames, reload_lua, simple_handler, write_lua,
)

PROBE = "handlers/probe.lua"


def probe_src(v):
    return simple_handler("probe", "{ v = %d }" % v)


def probe_v(c):
    """The probe handler's version as seen by client c (None: 1006)."""
    r = c.call("probe", {})
    if r["message_type"] == "error":
        check_error(r, 1006, r["request_id"])
        return None
    assert r["message_type"] == "probe", r.raw
    return r["data"]["v"]


def assert_reload_ok(d):
    r = reload_lua(d.port)
    assert r.status == 200, f"reload: want 200, got {r}"
    assert (r.header("content-type") or "").lower().startswith("application/json"), r
    assert r.json() == {"status": "ok", "lua": "reloaded"}, r
    return r


def assert_reload_refused(d, file_part, line=None):
    r = reload_lua(d.port)
    assert r.status == 422, f"reload of a broken {file_part}: want 422, got {r}"
    e = assert_error_body(r)
    msg = e["message"]
    assert file_part in msg, f"422 message does not name {file_part}: {msg!r}"
    if line is not None:
        assert re.search(re.escape(file_part) + r"\D{0,20}\b%d\b" % line, msg), \
            f"422 message does not give line {line}: {msg!r}"
    return msg


@pytest.fixture
def lua_daemon(start_daemon, lua_copy):
    """A daemon on a copy of lua/ with handlers/probe.lua (v=1), watcher off."""
    write_lua(lua_copy, PROBE, probe_src(1))

    def _start(extra=None, watch=False):
        env = {"GOHUB_LUA_PATH": str(lua_copy), "GOHUB_LUA_WATCH": "true" if watch else "false"}
        env.update(extra or {})
        return start_daemon(env=env)
    return _start


def test_reload_ok_new_behaviour(lua_daemon, lua_copy, hubs):
    d = lua_daemon()
    c = hubs(d.port)
    assert probe_v(c) == 1
    write_lua(lua_copy, PROBE, probe_src(2))
    assert probe_v(c) == 1, "code changed without a reload (watch is off)"
    assert_reload_ok(d)
    assert probe_v(c) == 2
    c2 = hubs(d.port)
    assert probe_v(c2) == 2
    c.ping()


def test_reload_adds_and_removes_handlers(lua_daemon, lua_copy, hubs):
    d = lua_daemon()
    c = hubs(d.port)
    r = c.call("fresh_type", {})
    check_error(r, 1006, r["request_id"])
    write_lua(lua_copy, "handlers/fresh_type.lua", simple_handler("fresh", "{ ok = true }"))
    assert_reload_ok(d)
    r = c.call("fresh_type", {})
    assert r["message_type"] == "fresh" and r["data"] == {"ok": True}, r.raw
    (lua_copy / "handlers" / "fresh_type.lua").unlink()
    assert_reload_ok(d)
    r = c.call("fresh_type", {})
    check_error(r, 1006, r["request_id"])


def test_reload_ignores_badly_named_handler_files(lua_daemon, lua_copy, hubs):
    d = lua_daemon()
    c = hubs(d.port)
    write_lua(lua_copy, "handlers/my-thing.lua", simple_handler("x", "{}"))
    assert_reload_ok(d)
    r = c.call("my-thing", {})
    check_error(r, 1006, r["request_id"])
    assert probe_v(c) == 1


BROKEN = {
    "syntax": ("local M = {}\n"
               "\n"
               "function M.handle(client, data, msg)\n"
               "  return 'probe', { v = 9 }\n"
               "end\n"
               "\n"
               "local x = = 1\n"
               "return M\n", 7),
    "error_at_top": ("error('boom')\nreturn {}\n", None),
    "returns_number": ("return 42\n", None),
    "no_handle": ("return { handel = function() return 'probe', { v = 9 } end }\n", None),
    "handle_not_function": ("return { handle = 'nope' }\n", None),
}


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_broken_handler_refused_old_code_serves(lua_daemon, lua_copy, hubs, kind):
    d = lua_daemon()
    c = hubs(d.port)
    write_lua(lua_copy, PROBE, probe_src(2))
    assert_reload_ok(d)
    assert probe_v(c) == 2
    src, line = BROKEN[kind]
    write_lua(lua_copy, PROBE, src)
    # a new valid handler added at the same time must not go live either
    write_lua(lua_copy, "handlers/also_new.lua", simple_handler("also", "{}"))
    msg = assert_reload_refused(d, "probe.lua", line)
    if kind == "error_at_top":
        assert "boom" in msg, msg
    assert probe_v(c) == 2, "old code no longer serves after a refused reload"
    r = c.call("also_new", {})
    check_error(r, 1006, r["request_id"])
    c.ping()
    c2 = hubs(d.port)  # new connections get the old code too
    assert probe_v(c2) == 2
    # refused again (nothing changed), then fixed
    assert_reload_refused(d, "probe.lua", line)
    write_lua(lua_copy, PROBE, probe_src(3))
    assert_reload_ok(d)
    assert probe_v(c) == 3
    assert probe_v(c2) == 3
    r = c.call("also_new", {})
    assert r["message_type"] == "also", r.raw


def test_broken_permissions_file_refused(lua_daemon, lua_copy, hubs):
    d = lua_daemon()
    c = hubs(d.port)
    write_lua(lua_copy, "permissions.lua", "return {\n  can = function(client, p)\n    return = true\n  end\n}\n")
    write_lua(lua_copy, PROBE, probe_src(5))
    assert_reload_refused(d, "permissions.lua", 3)
    assert probe_v(c) == 1
    c.call_ok("join_room", {"room_id": "perm-room"}, "room_joined")


def test_reload_keeps_rooms_and_connections(lua_daemon, lua_copy, hubs):
    d = lua_daemon({"GOHUB_SERVER_WORKERS": "3"})
    cs = hubs(d.port, 6, name="k")
    cs[0].whoami()
    for c in cs:
        c.call_ok("join_room", {"room_id": "keep"}, "room_joined")
    for c in cs:
        c.drain(0.05)
    cs[0].call_ok("create_room", {"room_id": "kept-made", "name": "K", "max_clients": 3}, "room_created")
    write_lua(lua_copy, PROBE, probe_src(2))
    assert_reload_ok(d)
    assert probe_v(cs[0]) == 2
    cs[0].send("room_message", {"room_id": "keep", "content": "after"}, mid=None)
    for c in cs[1:]:
        m = c.expect_type("room_message")
        assert m["data"]["content"] == "after" and m["data"]["sender_id"] == cs[0].user_id
    r = cs[1].call_ok("room_members", {"room_id": "keep"}, "room_members")
    assert len(r["data"]["members"]) == 6
    rooms = {x["id"]: x for x in cs[2].call_ok("list_rooms", {}, "rooms")["data"]["rooms"]}
    assert rooms.get("kept-made", {}).get("max_clients") == 3, rooms


def test_reload_resets_ctx(lua_daemon, lua_copy, hubs):
    write_lua(lua_copy, "handlers/counter.lua",
              "local M = {}\n"
              "function M.handle(client, data, msg)\n"
              "  client.ctx.n = (client.ctx.n or 0) + 1\n"
              "  return 'counter', { n = client.ctx.n }\n"
              "end\n"
              "return M\n")
    d = lua_daemon()
    c = hubs(d.port)
    assert [c.call_ok("counter", {})["data"]["n"] for _ in range(3)] == [1, 2, 3]
    assert_reload_ok(d)
    assert c.call_ok("counter", {})["data"]["n"] == 1


def test_sighup_reloads(lua_daemon, lua_copy, hubs):
    d = lua_daemon()
    c = hubs(d.port)
    assert probe_v(c) == 1
    write_lua(lua_copy, PROBE, probe_src(4))
    d.signal(signal.SIGHUP)
    deadline = time.monotonic() + 2.0
    v = None
    while time.monotonic() < deadline:
        v = probe_v(c)
        if v == 4:
            break
        time.sleep(0.1)
    assert v == 4, f"SIGHUP did not reload within 2 s (probe v={v})"
    # a broken file on SIGHUP: the daemon stays up with the old code
    write_lua(lua_copy, PROBE, BROKEN["syntax"][0])
    d.signal(signal.SIGHUP)
    time.sleep(0.8)
    assert d.running()
    assert probe_v(c) == 4


def poll(pred, timeout, interval=0.1):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    return pred()


def test_watch_new_handler_file(lua_daemon, lua_copy, hubs):
    d = lua_daemon(watch=True)
    c = hubs(d.port)
    r = c.call("my_action", {})
    check_error(r, 1006, r["request_id"])
    write_lua(lua_copy, "handlers/my_action.lua", simple_handler("my_action_done", "{ n = 1 }"))
    t0 = time.monotonic()

    def works():
        r = c.call("my_action", {})
        if r["message_type"] == "error":
            check_error(r, 1006, r["request_id"])
            return None
        return r

    r = poll(works, 2.0)
    assert r is not None, "a new handler file was not picked up by the watcher within 2 s"
    assert r["message_type"] == "my_action_done" and r["data"] == {"n": 1}, r.raw
    assert time.monotonic() - t0 < 2.5


def test_watch_default_is_on(start_daemon, lua_copy, hubs):
    """lua.watch defaults to true."""
    d = start_daemon(env={"GOHUB_LUA_PATH": str(lua_copy)})
    c = hubs(d.port)
    write_lua(lua_copy, "handlers/my_action.lua", simple_handler("my_action_done", "{}"))
    ok = poll(lambda: c.call("my_action", {})["message_type"] == "my_action_done", 2.0)
    assert ok, "watcher (default on) did not load handlers/my_action.lua within 2 s"


def test_watch_modified_and_broken_file(lua_daemon, lua_copy, hubs):
    d = lua_daemon(watch=True)
    c = hubs(d.port)
    write_lua(lua_copy, PROBE, probe_src(2))
    assert poll(lambda: probe_v(c) == 2, 2.0), "watcher did not reload a modified handler within 2 s"
    write_lua(lua_copy, PROBE, BROKEN["syntax"][0])
    time.sleep(1.0)
    assert d.running()
    assert probe_v(c) == 2, "a broken file seen by the watcher replaced the old code"
    write_lua(lua_copy, PROBE, probe_src(3))
    assert poll(lambda: probe_v(c) == 3, 2.0), "watcher did not reload after the file was fixed"


def test_watch_off_no_reload(lua_daemon, lua_copy, hubs):
    d = lua_daemon(watch=False)
    c = hubs(d.port)
    write_lua(lua_copy, PROBE, probe_src(2))
    write_lua(lua_copy, "handlers/my_action.lua", simple_handler("x", "{}"))
    time.sleep(1.0)
    assert probe_v(c) == 1
    r = c.call("my_action", {})
    check_error(r, 1006, r["request_id"])


def test_reload_under_traffic(lua_daemon, lua_copy, hubs):
    d = lua_daemon({"GOHUB_SERVER_WORKERS": "2"})
    clients = hubs(d.port, 4, name="t")
    for c in clients:
        c.ping()
    N = 300
    results = {}
    reload_statuses = []
    errors = []
    start = threading.Event()

    def stream(c):
        try:
            start.wait(5)
            for base in range(0, N, 10):
                c.ws.send_raw(hub_frames([{"message_type": "ping", "message_id": i,
                                           "data": {"ts": i}} for i in range(base + 1, base + 11)]))
                time.sleep(0.004)
        except Exception as e:  # noqa
            errors.append(repr(e))

    def reloader():
        start.wait(5)
        for i in range(5):
            time.sleep(0.03)
            write_lua(lua_copy, PROBE, probe_src(10 + i))
            try:
                reload_statuses.append(reload_lua(d.port).status)
            except Exception as e:  # noqa
                errors.append("reload: " + repr(e))

    threads = [threading.Thread(target=stream, args=(c,)) for c in clients]
    threads.append(threading.Thread(target=reloader))
    for t in threads:
        t.start()
    start.set()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert reload_statuses == [200] * 5, reload_statuses
    for c in clients:
        got = []
        deadline = time.monotonic() + 15
        while len(got) < N and time.monotonic() < deadline:
            m = c.expect(lambda m: "request_id" in m, timeout=max(0.05, deadline - time.monotonic()),
                         what=f"reply {len(got) + 1} of {N}")
            assert m["message_type"] == "pong", f"{c}: reply during reloads is not a pong: {m.raw}"
            assert m["data"]["ts"] == m["request_id"], m.raw
            got.append(m["request_id"])
        c.quiet(lambda m: "request_id" in m, 0.3, what="extra reply (duplicate)")
        assert sorted(got) == list(range(1, N + 1)), \
            f"{c}: {len(got)} replies, missing {sorted(set(range(1, N + 1)) - set(got))[:10]}, " \
            f"dups {[x for x in set(got) if got.count(x) > 1][:10]}"
    assert probe_v(clients[0]) == 14


def test_every_concurrent_reload_request_is_answered(lua_daemon, lua_copy):
    """80 callers at once while reloads are slow (a module takes 0.3 s to
    load, so requests arrive during reloads and queue for the next one):
    each gets its own 200, none is lost between reloads."""
    write_lua(lua_copy, "handlers/slow_load.lua",
              "local t0 = os.clock()\n"
              "while os.clock() - t0 < 0.3 do end\n"
              "local M = {}\nfunction M.handle() return 'ok', {} end\nreturn M\n")
    d = lua_daemon()
    results = [None] * 80
    def call(i):
        try:
            results[i] = reload_lua(d.port, timeout=20.0)
        except Exception as e:  # reported below with the others
            results[i] = e
    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(results))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    bad = [(i, r) for i, r in enumerate(results) if getattr(r, "status", None) != 200]
    assert not bad, f"{len(bad)} of {len(results)} reload callers not answered 200: {bad[:3]}"
