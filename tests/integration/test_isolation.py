"""Handler isolation: errors, runaway loops, memory bombs, the sandbox,
hooks that raise, per-connection ctx and handler return shapes. Each test
runs on a copy of lua/ with extra handler files (GOHUB_LUA_PATH)."""

import json
import shutil
import subprocess
import time

import pytest

from gohub_helpers import (
    CONFIG, REPO, RawWS, ServerClosed, check_envelope, check_error, clean_env, write_lua,
)

# `return 42` compiled by LuaJIT 2.1 (luajit -b); regenerated below when a
# luajit binary is on the PATH so that it matches the local LuaJIT.
FALLBACK_BYTECODE = bytes.fromhex("1b4c4a020a0f0200010000000229002a004c00020000")


def bytecode():
    lj = shutil.which("luajit")
    if lj:
        try:
            out = subprocess.run([lj, "-b", "-e", "return 42", "-"], capture_output=True, timeout=10)
            if out.returncode == 0 and out.stdout.startswith(b"\x1bLJ"):
                return out.stdout
        except (OSError, subprocess.TimeoutExpired):
            pass
    return FALLBACK_BYTECODE


def lua_bytes(b):
    return '"' + "".join("\\%d" % x for x in b) + '"'


def handler(body, reply="x"):
    return ("local M = {}\n"
            "function M.handle(client, data, msg)\n"
            f"{body}\n"
            "end\n"
            "return M\n")


RAISER = ("local M = {}\n"
          "local function inner()\n"
          "  error('x-marker-raised')\n"
          "end\n"
          "function M.handle(client, data, msg)\n"
          "  inner()\n"
          "end\n"
          "return M\n")

SPIN = handler("  while true do end")
SPIN_PCALL = handler("  pcall(function() while true do end end)\n  while true do end")
SPIN_PCALL_LOOP = handler("  while true do pcall(function() while true do end end) end")
SPIN_ERROR_CATCH = handler("  while true do\n"
                           "    local ok, e = pcall(function() local x = 0 while true do x = x + 1 end end)\n"
                           "  end")
MEMBOMB = handler('  local t = {} for i = 1, 1e9 do t[i] = string.rep("x", 1024) .. i end\n'
                  '  return "membomb", { n = #t }')
ALLOC8 = handler('  local t = {} for i = 1, 8000 do t[i] = string.rep("y", 1024) .. i end\n'
                 '  return "alloc8", { n = #t }')
COUNTER = handler("  client.ctx.n = (client.ctx.n or 0) + 1\n"
                  "  return 'counter', { n = client.ctx.n, id = client.id }")


def sandbox_handler():
    return """local M = {}
local BC = %s
local function try(list, name, f)
  local ok, res = pcall(f)
  list[#list + 1] = { name = name, ok = (ok and res == true) or false, err = tostring(res) }
end
function M.handle(client, data, msg)
  local r, c = {}, {}
  -- each of these returns true only if the forbidden thing is reachable
  try(r, "os.execute", function() os.execute("true") return true end)
  try(r, "io.open", function() io.open("/etc/hostname", "r") return true end)
  try(r, "io.popen", function() io.popen("true") return true end)
  try(r, "require ffi", function() return require("ffi") ~= nil end)
  try(r, "require io", function() return require("io").open ~= nil end)
  try(r, "require os", function() return require("os").execute ~= nil end)
  try(r, "require debug", function() return require("debug").getinfo ~= nil end)
  try(r, "require C module lfs", function() require("lfs") return true end)
  try(r, "debug.getinfo", function() debug.getinfo(1) return true end)
  try(r, "debug.sethook", function() debug.sethook() return true end)
  try(r, "string.dump", function() string.dump(function() end) return true end)
  try(r, "('').dump", function() local s = ("").dump(function() end) return true end)
  try(r, "load bytecode", function() return load(BC) ~= nil end)
  try(r, "load bytecode mode b", function() return load(BC, "bc", "b") ~= nil end)
  try(r, "load bytecode mode bt", function() return load(BC, "bc", "bt") ~= nil end)
  try(r, "loadstring bytecode", function() return loadstring(BC) ~= nil end)
  try(r, "load reader bytecode", function()
    local done = false
    return load(function() if done then return nil end done = true return BC end) ~= nil
  end)
  try(r, "package.loadlib", function() package.loadlib("libc.so.6", "*") return true end)
  try(r, "package.loaded", function()
    return package.loaded.io ~= nil or package.loaded.debug ~= nil
      or (package.loaded.os ~= nil and package.loaded.os.execute ~= nil)
  end)
  try(r, "dofile", function() return dofile ~= nil end)
  try(r, "loadfile", function() return loadfile ~= nil end)
  try(r, "os.exit", function() return os.exit ~= nil end)
  try(r, "os.getenv", function() return os.getenv ~= nil end)
  try(r, "os.remove", function() return os.remove ~= nil end)
  try(r, "getfenv(0)", function()
    local g = getfenv(0)
    return g.io ~= nil or g.debug ~= nil or (g.os ~= nil and g.os.execute ~= nil)
  end)
  try(r, "global assignment", function() sandbox_global_x = 1 return true end)
  -- controls: these must work
  try(c, "load text", function() return load("return 1")() == 1 end)
  try(c, "os.time", function() return type(os.time()) == "number" end)
  try(c, "os.clock", function() return type(os.clock()) == "number" end)
  try(c, "string", function() return string.format("%%d", 5) == "5" and ("ab"):upper() == "AB" end)
  try(c, "table/math", function() return table.concat({"a", "b"}) == "ab" and math.floor(2.5) == 2 end)
  try(c, "bit", function() return bit.band(7, 3) == 3 end)
  try(c, "require gohub", function() return require("gohub").now() > 0 end)
  try(c, "require lib.validate", function() return type(require("lib.validate").object) == "function" end)
  return "sandbox", { results = r, controls = c }
end
return M
""" % lua_bytes(bytecode())


HOOKS_RAISING = """return {
  on_connect = function(client) error("hook-connect-boom") end,
  on_disconnect = function(client, code) error("hook-disconnect-boom") end,
  on_join = function(client, room_id) error("hook-join-boom") end,
  on_leave = function(client, room_id) error("hook-leave-boom") end,
}
"""

SHAPES = {
    "ret_nothing.lua": handler("  return"),
    "ret_true.lua": handler("  return true"),
    "ret_err.lua": handler("  return nil, 3000, 'custom message', { k = 1 }"),
    "ret_gohub_err.lua": "local gohub = require 'gohub'\n" + handler(
        "  return gohub.error(gohub.errors.CLIENT_OFFLINE, 'nobody home')"),
    "ret_table.lua": handler("  return { a = 1 }"),
    "ret_number.lua": handler("  return 42"),
    "ret_unencodable.lua": handler("  return 'x', { f = function() end }"),
}


@pytest.fixture
def iso(start_daemon, lua_copy):
    """Writes the given handler files into the lua copy, then starts a
    daemon on it."""
    def _start(files, env=None):
        for name, src in files.items():
            top = "/" in name or name in ("hooks.lua", "permissions.lua")
            write_lua(lua_copy, name if top else f"handlers/{name}", src)
        e = {"GOHUB_LUA_PATH": str(lua_copy), "GOHUB_LUA_WATCH": "false"}
        e.update(env or {})
        return start_daemon(env=e)
    return _start


def test_handler_error_1003_and_traceback_logged(iso, hubs):
    d = iso({"raiser.lua": RAISER})
    c, other = hubs(d.port, 2)
    r = c.call("raiser", {})
    check_error(r, 1003, r["request_id"])
    assert "x-marker-raised" not in r.raw, f"handler error details leaked to the client: {r.raw}"
    c.no_more_replies(r["request_id"], 0.3)
    c.ping()
    c.call_ok("join_room", {"room_id": "after-raise"}, "room_joined")
    other.ping()
    c.send("raiser", {}, mid=None)
    check_error(c.expect_type("error"), 1003, 0)
    time.sleep(0.2)
    lines = d.log_text().splitlines()
    hits = [ln for ln in lines if "raiser" in ln and "traceback" in ln.lower()]
    assert hits, "no log line names the handler with a traceback; log tail:\n" + "\n".join(lines[-15:])
    assert any("x-marker-raised" in ln for ln in hits), hits[:3]


@pytest.mark.parametrize("name,src", [
    ("spin", SPIN), ("spin_pcall", SPIN_PCALL), ("spin_pcall_loop", SPIN_PCALL_LOOP),
    ("spin_error_catch", SPIN_ERROR_CATCH),
])
def test_runaway_handler_1004(iso, hubs, name, src):
    d = iso({f"{name}.lua": src}, env={"GOHUB_SERVER_WORKERS": "1"})
    a, b = hubs(d.port, 2)
    a.ping(), b.ping()
    t0 = time.monotonic()
    mid = a.send(name, {})
    time.sleep(0.05)
    b.ping(timeout=3.0)  # queued behind the runaway handler on the one worker
    r = a.reply(mid, timeout=3.0)
    dt = time.monotonic() - t0
    check_error(r, 1004, mid)
    assert dt < 1.5, f"1004 came after {dt:.2f} s (time limit 200 ms)"
    t1 = time.monotonic()
    b.ping()
    assert time.monotonic() - t1 < 0.3, "worker still slow after the runaway handler was stopped"
    a.ping()
    a.no_more_replies(mid, 0.2)
    # and again: the state is still usable
    r = a.call(name, {}, timeout=3.0)
    check_error(r, 1004, r["request_id"])
    a.call_ok("join_room", {"room_id": "after-spin"}, "room_joined")
    assert d.running()


def test_runaway_compiled_loop_with_jit_aborts_loudly(iso, hubs):
    """LuaJIT checks no hooks inside compiled traces, so with lua.jit on an
    endless loop cannot be stopped with 1004 (README, "JIT"). The documented
    behaviour: the watchdog sees the stop was not delivered and aborts the
    process after the hard limit (10 x lua.time_limit_ms, at least 2 s) with
    a log line naming the worker, instead of leaving it hung forever."""
    d = iso({"spin.lua": SPIN}, env={"GOHUB_SERVER_WORKERS": "1", "GOHUB_LUA_JIT": "true"})
    a = hubs(d.port)
    t0 = time.monotonic()
    a.send("spin", {})
    rc = d.wait(8.0)
    dt = time.monotonic() - t0
    assert rc is not None, "the daemon is still hung in a compiled loop 8 s later"
    assert rc != 0, f"exit code {rc} after a stuck handler"
    assert 1.8 <= dt < 6.0, f"aborted after {dt:.2f} s; the hard limit is 2 s"
    assert "stuck in a Lua handler" in d.log_text()
    d.exit_checked = True


def test_time_limit_configurable(iso, hubs):
    d = iso({"spin.lua": SPIN}, env={"GOHUB_SERVER_WORKERS": "1", "GOHUB_LUA_TIME_LIMIT_MS": "1000"})
    a = hubs(d.port)
    t0 = time.monotonic()
    r = a.call("spin", {}, timeout=5.0)
    dt = time.monotonic() - t0
    check_error(r, 1004, r["request_id"])
    assert 0.9 <= dt < 2.5, f"1004 after {dt:.2f} s with lua.time_limit_ms=1000"


def test_memory_bomb_1003(iso, hubs):
    d = iso({"membomb.lua": MEMBOMB, "alloc8.lua": ALLOC8},
            env={"GOHUB_LUA_MAX_MEMORY_MB": "32", "GOHUB_LUA_TIME_LIMIT_MS": "3000"})
    a, b = hubs(d.port, 2)
    r = a.call("membomb", {}, timeout=10.0)
    check_error(r, 1003, r["request_id"])
    assert d.running()
    a.ping()
    b.ping()
    # the memory was given back: a handler using 8 MB works on that state
    r = a.call_ok("alloc8", {}, "alloc8", timeout=5.0)
    assert r["data"]["n"] == 8000
    r = a.call("membomb", {}, timeout=10.0)
    check_error(r, 1003, r["request_id"])
    a.call_ok("join_room", {"room_id": "after-bomb"}, "room_joined")
    assert d.rss_kb() < 512 * 1024, f"RSS {d.rss_kb()} kB after memory bombs with a 32 MB limit"


def test_memory_bomb_default_time_limit(iso, hubs):
    """With the default time limit the bomb is stopped one way or the other."""
    d = iso({"membomb.lua": MEMBOMB}, env={"GOHUB_LUA_MAX_MEMORY_MB": "32"})
    a = hubs(d.port)
    r = a.call("membomb", {}, timeout=10.0)
    check_error(r, (1003, 1004), r["request_id"])
    a.ping()


def test_sandbox(iso, hubs):
    d = iso({"sandbox.lua": sandbox_handler()})
    c = hubs(d.port)
    r = c.call("sandbox", {}, timeout=5.0)
    assert r["message_type"] == "sandbox", f"sandbox handler failed: {r.raw}"
    controls = r["data"]["controls"]
    bad_controls = [x for x in controls if not x["ok"]]
    assert len(controls) == 8 and not bad_controls, f"allowed things fail: {bad_controls}"
    results = r["data"]["results"]
    assert len(results) == 26, results
    escaped = [f"{x['name']} ({x['err']})" for x in results if x["ok"]]
    assert not escaped, f"sandbox escapes: {escaped}"
    assert d.running()
    c.ping()


def test_raising_hooks_are_ignored(iso, hubs):
    d = iso({"hooks.lua": HOOKS_RAISING})
    a, b = hubs(d.port, 2)
    a.ping()
    r = a.call_ok("join_room", {"room_id": "hooked"}, "room_joined")
    assert r["data"]["member_count"] == 1
    b.call_ok("join_room", {"room_id": "hooked"}, "room_joined")
    a.expect_type("member_joined")
    b.call_ok("leave_room", {"room_id": "hooked"}, "room_left")
    a.expect_type("member_left")
    b.close()
    a.ping()
    time.sleep(0.3)
    log = d.log_text()
    for marker in ("hook-connect-boom", "hook-join-boom", "hook-leave-boom", "hook-disconnect-boom"):
        assert marker in log, f"{marker} not logged"


def test_ctx_is_per_connection(iso, hubs):
    d = iso({"counter.lua": COUNTER}, env={"GOHUB_SERVER_WORKERS": "1"})
    a, b = hubs(d.port, 2)
    assert [a.call_ok("counter", {})["data"]["n"] for _ in range(3)] == [1, 2, 3]
    assert b.call_ok("counter", {})["data"]["n"] == 1
    assert a.call_ok("counter", {})["data"]["n"] == 4
    a.close()
    a2 = hubs(d.port)
    assert a2.call_ok("counter", {})["data"]["n"] == 1
    r = b.call_ok("counter", {})
    assert r["data"]["n"] == 2
    assert r["data"]["id"] == b.whoami()


def test_handler_return_shapes(iso, hubs):
    d = iso(SHAPES)
    c = hubs(d.port)
    for t in ("ret_nothing", "ret_true"):
        r = c.call(t, {})
        check_envelope(r, request_id=r["request_id"])
        assert r["message_type"] == "ack" and r["data"] == {"request_id": r["request_id"]}, r.raw
        c.no_more_replies(r["request_id"], 0.1)
        c.send(t, {}, mid=None)
        c.quiet(wait=0.3, what=f"reply to {t} without message_id")
    r = c.call("ret_err", {})
    check_error(r, 3000, r["request_id"])
    assert r["data"]["message"] == "custom message" and r["data"].get("details") == {"k": 1}, r.raw
    c.send("ret_err", {}, mid=None)
    check_error(c.expect_type("error"), 3000, 0)
    r = c.call("ret_gohub_err", {})
    check_error(r, 4001, r["request_id"])
    assert r["data"]["message"] == "nobody home"
    for t in ("ret_table", "ret_number", "ret_unencodable"):
        r = c.call(t, {})
        check_error(r, 1003, r["request_id"])
        c.no_more_replies(r["request_id"], 0.1)
    c.ping()


def test_faults_do_not_leak_between_clients(iso, hubs):
    """Many clients on two workers while others raise, spin and bomb: the
    well-behaved ones keep getting answers."""
    d = iso({"raiser.lua": RAISER, "spin.lua": SPIN, "membomb.lua": MEMBOMB},
            env={"GOHUB_LUA_MAX_MEMORY_MB": "32"})
    bad = hubs(d.port, 3, name="bad")
    good = hubs(d.port, 4, name="good")
    bad[0].send("raiser", {}, mid=1)
    bad[1].send("spin", {}, mid=1)
    bad[2].send("membomb", {}, mid=1)
    for g in good:
        g.ping(timeout=3.0)
    check_error(bad[0].reply(1), 1003, 1)
    check_error(bad[1].reply(1, timeout=3.0), 1004, 1)
    check_error(bad[2].reply(1, timeout=10.0), (1003, 1004), 1)
    for h in bad + good:
        h.ping()
    assert d.running()


CLOSE_SELF = """
local gohub = require "gohub"
local M = {}
function M.handle(client, data)
  assert(gohub.close(client.id, 4000, "bye"))
  -- the connection is closing: sends to it are refused, not crashes
  local ok, err = gohub.send(client.id, "late", {})
  return "after_close", { send_ok = ok or false }
end
return M
"""

CLOSE_OTHER = """
local gohub = require "gohub"
local M = {}
function M.handle(client, data)
  local ok, err = gohub.close(data.target, 4001, "kicked")
  if not ok then
    return gohub.error(4001, err)
  end
  return "closed", { target = data.target }
end
return M
"""


def test_handler_closing_its_own_connection(iso, hubs):
    """A handler may close the connection it is handling (checklist L6): the
    client gets the close frame with the handler's code and reason, the reply
    to a closing connection is dropped, and nobody else is disturbed."""
    d = iso({"close_self.lua": CLOSE_SELF}, env={"GOHUB_SERVER_WORKERS": "1"})
    a, b = hubs(d.port, 2)
    a.send("close_self", {})
    with pytest.raises(ServerClosed):
        while True:
            m = a.recv(timeout=3.0)
            assert m["message_type"] != "after_close", f"reply after close: {m.raw}"
    assert a.close_frame != "EOF", "no close frame, only EOF"
    assert a.close_frame.close_code == 4000 and a.close_frame.close_reason == b"bye", a.close_frame
    b.ping()
    assert d.running()


def test_handler_closing_another_connection_on_any_worker(iso, hubs):
    d = iso({"close_other.lua": CLOSE_OTHER}, env={"GOHUB_SERVER_WORKERS": "2"})
    clients = hubs(d.port, 4)   # spread over both workers
    kicker = clients[0]
    for victim in clients[1:]:
        target = victim.whoami()
        r = kicker.call_ok("close_other", {"target": target}, "closed")
        assert r["data"]["target"] == target
        with pytest.raises(ServerClosed):
            victim.recv(timeout=3.0)
        assert victim.close_frame != "EOF" and victim.close_frame.close_code == 4001, \
            victim.close_frame
    # a client that is gone: 4001 offline
    r = kicker.call_err("close_other", {"target": target}, 4001)
    kicker.ping()


# ---------------------------------------------------------------- M.raw, msg

# rawecho takes `blob` raw: it answers with its type and text (tostring),
# and sends it on inside a table (emitted byte for byte)
RAWECHO = ("local M = {}\n"
           "M.raw = { 'blob' }\n"
           "function M.handle(client, data)\n"
           "  local b = data.blob\n"
           "  return 'rawecho', { kind = type(b), text = tostring(b), same = { v = b },\n"
           "                      other = type(data.other) }\n"
           "end\n"
           "return M\n")
# tableecho takes everything decoded
TABLEECHO = handler("  return 'tableecho', { kind = type(data.blob) }")


def test_raw_member_arrives_undecoded_and_is_sent_on_byte_for_byte(iso, hubs):
    d = iso({"rawecho.lua": RAWECHO})
    (c,) = [hubs(d.port)]
    blob = '{ "b":[1, 2.50,"é\\u00e9"] ,"a":{}}'
    c.send_raw('{"message_type":"rawecho","message_id":1,"data":{"blob":%s,"other":{"x":1}}}'
               % blob)
    r = c.reply(1)
    assert r["message_type"] == "rawecho", r.raw
    assert r["data"]["kind"] == "userdata" and r["data"]["text"] == blob, r.raw
    assert r["data"]["other"] == "table", r.raw  # only the listed member is raw
    assert ('"same":{"v":%s}' % blob) in r.raw, r.raw


def test_raw_member_is_still_checked(iso, hubs):
    d = iso({"rawecho.lua": RAWECHO})
    c = hubs(d.port)
    for bad in ['{"a":01}', '[1,]', '"\\u0000"', '"\\ud800"']:
        c.send_raw('{"message_type":"rawecho","message_id":7,"data":{"blob":%s}}' % bad)
        r = c.expect_type("error")
        assert r["data"]["code"] == 1001, (bad, r.raw)
    c.ping()


def test_raw_members_follow_the_last_message_type(iso, hubs):
    """data before message_type, and a duplicate message_type after data
    (the last one wins): data is decoded for the handler that runs."""
    d = iso({"rawecho.lua": RAWECHO, "tableecho.lua": TABLEECHO})
    c = hubs(d.port)
    c.send_raw('{"data":{"blob":{"k":[1]}},"message_id":1,"message_type":"rawecho"}')
    r = c.reply(1)
    assert r["message_type"] == "rawecho" and r["data"]["text"] == '{"k":[1]}', r.raw
    c.send_raw('{"message_type":"tableecho","data":{"blob":{"k":1}},"message_id":2,'
               '"message_type":"rawecho"}')
    r = c.reply(2)
    assert r["message_type"] == "rawecho" and r["data"]["text"] == '{"k":1}', r.raw
    c.send_raw('{"message_type":"rawecho","data":{"blob":{"k":1}},"message_id":3,'
               '"message_type":"tableecho"}')
    r = c.reply(3)
    assert r["message_type"] == "tableecho" and r["data"]["kind"] == "table", r.raw


@pytest.mark.parametrize("raw", ["'blob'", "{ 1 }", "{ 'a','b','c','d','e','f','g','h','i' }",
                                 "{ '' }", "{ string.rep('k', 64) }"])
def test_bad_raw_list_fails_the_config_test(gohub_bin, lua_copy, raw):
    """-t loads the code as a worker would: a bad M.raw is named (exit 1)."""
    write_lua(lua_copy, "handlers/badraw.lua",
              f"local M = {{}}\nM.raw = {raw}\nfunction M.handle() end\nreturn M\n")
    e = clean_env()
    e["GOHUB_LUA_PATH"] = str(lua_copy)
    p = subprocess.run([gohub_bin, "-t", "-c", str(CONFIG)], cwd=str(REPO), env=e,
                       capture_output=True, timeout=10, stdin=subprocess.DEVNULL)
    err = p.stderr.decode(errors="replace")
    assert p.returncode == 1, err[-600:]
    assert "handlers/badraw.lua: raw must be a list" in err, err[-600:]


def test_msg_reaches_handlers_that_take_it(iso, hubs):
    """msg is built only for a handle with a third parameter (or ...)."""
    three = handler("  return 'three', { type = msg.type, id = msg.id }")
    vararg = ("local M = {}\n"
              "function M.handle(...)\n"
              "  local msg = select(3, ...)\n"
              "  return 'vararg', { type = msg.type, id = msg.id, n = select('#', ...) }\n"
              "end\n"
              "return M\n")
    two = ("local M = {}\n"
           "function M.handle(client, data)\n"
           "  return 'two', { client = client.id ~= nil, k = data.k }\n"
           "end\n"
           "return M\n")
    d = iso({"three.lua": three, "vararg.lua": vararg, "two.lua": two})
    c = hubs(d.port)
    r = c.call("three", {})
    assert r["data"] == {"type": "three", "id": r["request_id"]}, r.raw
    r = c.call("vararg", {})
    assert r["data"] == {"type": "vararg", "id": r["request_id"], "n": 3}, r.raw
    r = c.call("two", {"k": 5})
    assert r["data"] == {"client": True, "k": 5}, r.raw


def test_can_checks_its_arguments_and_returns_a_boolean(iso, hubs):
    """gohub.can asks permissions.can and answers true or false, whatever
    the policy returns; a bad argument raises a clear error."""
    policy = ("local M = {}\n"
              "function M.can(client, permission, target)\n"
              "  if permission == 'maybe' then return 'yes' end\n"
              "  if permission == 'never' then return nil end\n"
              "  return target == 'ok'\n"
              "end\n"
              "return M\n")
    asks = ("local gohub = require 'gohub'\n"
            "local M = {}\n"
            "function M.handle(client, data)\n"
            "  local ok1, e1 = pcall(gohub.can, nil, 'x')\n"
            "  local ok2, e2 = pcall(gohub.can, client, {})\n"
            "  return 'asks', { maybe = gohub.can(client, 'maybe'), never = gohub.can(client, 'never'),\n"
            "                   ok = gohub.can(client, 'p', 'ok'), no = gohub.can(client, 'p', 'x'),\n"
            "                   e1 = tostring(e1), e2 = tostring(e2), ok1 = ok1, ok2 = ok2 }\n"
            "end\n"
            "return M\n")
    d = iso({"permissions.lua": policy, "asks.lua": asks})
    c = hubs(d.port)
    r = c.call("asks", {})["data"]
    assert (r["maybe"], r["never"], r["ok"], r["no"]) == (True, False, True, False), r
    assert (r["ok1"], r["ok2"]) == (False, False), r
    assert "bad argument #1 to 'can' (table expected, got nil)" in r["e1"], r
    assert "bad argument #2 to 'can' (string expected, got table)" in r["e2"], r


ABUSE = r"""-- calls every function of the gohub module (but close) with random
-- arguments, each in a pcall; replies with what it did
local gohub = require 'gohub'
local M = {}

local fns = {}
for name, v in pairs(gohub) do
  if type(v) == 'function' and name ~= 'close' then
    fns[#fns + 1] = { name, v }
  elseif type(v) == 'table' and v ~= gohub.json.null then
    for sub, f in pairs(v) do
      if type(f) == 'function' then fns[#fns + 1] = { name .. '.' .. sub, f } end
    end
  end
end
table.sort(fns, function(a, b) return a[1] < b[1] end)

local cycle = {}
cycle.self = cycle
local deep = {}
local t = deep
for _ = 1, 300 do t.x = {} t = t.x end
local big = string.rep('z', 100000)
local NIL = {}

local function pool(client)
  return { NIL, true, false, 0, -1, 1.5, 2 ^ 53, 2 ^ 63, -0.0, 1 / 0, -1 / 0, 0 / 0, '', 'x',
    'fuzz-room', string.rep('r', 129), big, 'a\0b', '\255\254', '%s%n%d', 'info', 'warn',
    'room_message', {}, { 1, 2, 3 }, { a = { b = {} } }, cycle, deep, gohub.json.null,
    function() end, coroutine.create(function() end), gohub.json.raw('{"a":[1,2]}'),
    client, client.id, client.user_id, gohub.json.array({}), setmetatable({}, { __index = error }) }
end

function M.handle(client, data)
  math.randomseed(data.seed)
  local values = pool(client)
  local calls, failed, by = 0, 0, {}
  for _ = 1, data.calls do
    local f = fns[math.random(#fns)]
    local args, n = {}, math.random(0, 5)
    for i = 1, n do
      local v = values[math.random(#values)]
      if v ~= NIL then args[i] = v end
    end
    local ok = pcall(f[2], unpack(args, 1, n))
    calls = calls + 1
    if not ok then failed = failed + 1 end
    local s = by[f[1]] or { 0, 0 }
    s[ok and 1 or 2] = s[ok and 1 or 2] + 1
    by[f[1]] = s
  end
  return 'abused', { calls = calls, failed = failed, by = by }
end

return M
"""


def test_gohub_functions_survive_random_arguments(iso, hubs):
    """Every gohub function (but close) called 12,000 times with random
    arguments (wrong types, NaN, 2^63, NUL bytes, invalid UTF-8, 100 KB
    strings, cycles, 300-deep tables, functions, coroutines, the client
    itself) raises or returns: the handler always answers, the daemon serves
    everyone else, and under ASan nothing is reported (checked at stop)."""
    d = iso({"abused.lua": ABUSE}, env={"GOHUB_LIMITS_MESSAGES_PER_SECOND": "0"})
    a, b = hubs(d.port, 2)
    total, failed, names = 0, 0, {}
    for seed in range(60):
        c = a if seed % 2 else b
        r = c.call("abused", {"seed": seed + 1, "calls": 200}, timeout=20)
        assert r["message_type"] == "abused", r.raw[:500]
        c.pending.clear()  # pushes the calls sent to ourselves
        total += r["data"]["calls"]
        failed += r["data"]["failed"]
        for name, (ok, err) in r["data"]["by"].items():
            o, e = names.get(name, (0, 0))
            names[name] = (o + ok, e + err)
    assert total == 12000
    api = subprocess.run([d.binary, "--lua-api"], capture_output=True, text=True).stdout.split()
    called = {n for n, (o, e) in names.items() if o + e > 0}
    want = {n for n in api if n not in ("close", "config", "errors", "json.null", "node_id")}
    assert want <= called, f"never called: {want - called}"
    assert 0 < failed < total, (failed, total)
    assert d.running(), d.log_text()[-3000:]
    hubs(d.port).ping()


NOT_UTF8 = r"""local gohub = require 'gohub'
local M = {}
-- a bad byte, a surrogate, a good two-byte character, a cut three-byte one
local BAD = 'ab\255c\237\160\128\195\169\226\130'
function M.handle(client, data)
  if data.close then
    return gohub.close(client.id, 4000, 'r\255' .. string.rep('\195\169', 80))
  end
  gohub.send(client.id, 'pushed\255', { [BAD] = BAD })
  local ok, err = pcall(gohub.count, 'n', 0.5)
  local top = gohub.count('n', 2 ^ 53)
  local over, why = gohub.count('n')
  local raw1, raw_err = gohub.json.raw('{x')
  local raw2, raw_err8 = gohub.json.raw('"\255"')
  local dec, dec_err = gohub.json.decode('"\255"')
  return 'not_utf8', { enc = gohub.json.encode({ BAD }), direct = BAD,
                       ctl = gohub.json.encode({ '\1\31\127' }),
                       del = gohub.json.decode('"a\127"') == 'a\127',
                       refused = raw1 == nil and raw2 == nil and dec == nil,
                       raw_err = raw_err, raw_err8 = raw_err8, dec_err = dec_err,
                       count_ok = ok, count_err = tostring(err), top = top,
                       over = over == nil, why = why, back = gohub.count('n', -1) }
end
return M
"""


def test_strings_that_are_not_utf8_are_sent_as_utf8(iso, hubs):
    """A Lua string is any bytes; what gohub sends is UTF-8 (RFC 6455 text
    frames and close reasons): each byte that starts no well-formed sequence
    becomes U+FFFD, in data values and keys, message types, json.encode, and
    close reasons, which are also never cut inside a character. (The fake's
    spec checks its encoder against the same string.) gohub.json.raw and
    json.decode refuse text that is not strict JSON in UTF-8. gohub.count
    stays within ±2^53."""
    d = iso({"not_utf8.lua": NOT_UTF8})
    c = hubs(d.port)  # the Hub client decodes every frame as UTF-8
    want = "ab\ufffdc\ufffd\ufffd\ufffd\u00e9\ufffd\ufffd"
    r = c.call("not_utf8", {})["data"]
    assert r["direct"] == want, r
    assert r["enc"] == json.dumps([want], ensure_ascii=False, separators=(",", ":")), r
    # JSON escapes U+0000..U+001F only: DEL (0x7f) is sent and read as is
    assert (r["ctl"], r["del"]) == ('["\\u0001\\u001f\x7f"]', True), r
    push = c.expect_type("pushed\ufffd")
    assert push["data"] == {want: want}, push.raw
    assert (r["count_ok"], r["top"], r["over"], r["why"], r["back"]) == \
        (False, 2 ** 53, True, "out_of_range", 2 ** 53 - 1), r
    assert "integer from -2^53 to 2^53 expected" in r["count_err"], r
    # nothing that is not UTF-8 JSON gets in either (the fake's spec: the same)
    assert (r["refused"], r["raw_err"], r["raw_err8"], r["dec_err"]) == \
        (True, "invalid JSON", "invalid JSON", "invalid UTF-8"), r
    with RawWS.connect(d.port) as ws:
        ws.send_text(json.dumps({"message_type": "not_utf8", "data": {"close": True}}))
        r = ws.expect_close(3.0)
    assert r.frame is not None and r.code == 4000, r
    assert r.frame.close_reason.decode("utf-8") == "r\ufffd" + "\u00e9" * 59, r
