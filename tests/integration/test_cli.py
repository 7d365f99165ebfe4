"""Command line: --version, --help, -t (config test), -config, env
override errors."""

import re
import subprocess

from gohub_helpers import CONFIG, REPO, clean_env


def run(gohub_bin, *args, env=None, timeout=10):
    e = clean_env()
    e.update(env or {})
    return subprocess.run([gohub_bin, *args], cwd=str(REPO), env=e, capture_output=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def out(p):
    return p.stdout.decode(errors="replace") + p.stderr.decode(errors="replace")


def test_version(gohub_bin):
    p = run(gohub_bin, "--version")
    assert p.returncode == 0, out(p)
    assert re.search(r"\d+\.\d+", out(p)), f"no version number in {out(p)!r}"


def test_help(gohub_bin):
    p = run(gohub_bin, "--help")
    assert p.returncode == 0, out(p)
    assert out(p).strip(), "--help printed nothing"


def test_config_test_default_ok(gohub_bin):
    p = run(gohub_bin, "-t", "-c", str(CONFIG))
    assert p.returncode == 0, out(p)


def test_config_test_relative_path_ok(gohub_bin):
    p = run(gohub_bin, "-t", "-c", "configs/gohub.yaml")
    assert p.returncode == 0, out(p)


def test_config_unknown_key(gohub_bin, tmp_path):
    f = tmp_path / "unknown.yaml"
    f.write_text("server:\n  workers: 2\n  bogus_key: 1\n")
    p = run(gohub_bin, "-t", "-c", str(f))
    err = p.stderr.decode(errors="replace")
    assert p.returncode == 1, out(p)
    assert str(f) in err, f"file not named: {err!r}"
    assert f"{f}:3" in err, f"line 3 not named: {err!r}"
    assert "bogus_key" in err, f"key not named: {err!r}"


def test_config_bad_workers(gohub_bin, tmp_path):
    f = tmp_path / "badworkers.yaml"
    f.write_text("log:\n  level: info\nserver:\n  workers: abc\n")
    p = run(gohub_bin, "-t", "-c", str(f))
    err = p.stderr.decode(errors="replace")
    assert p.returncode == 1, out(p)
    assert f"{f}:4" in err, f"file:line not named: {err!r}"
    assert "workers" in err, f"key not named: {err!r}"


def test_env_override_bad_value(gohub_bin):
    p = run(gohub_bin, "-t", "-c", str(CONFIG), env={"GOHUB_LIMITS_MAX_MESSAGE_BYTES": "abc"})
    err = p.stderr.decode(errors="replace")
    assert p.returncode == 1, out(p)
    assert "GOHUB_LIMITS_MAX_MESSAGE_BYTES" in err, f"variable not named: {err!r}"


def test_env_override_good_value_ok(gohub_bin):
    p = run(gohub_bin, "-t", "-c", str(CONFIG), env={"GOHUB_LIMITS_MAX_MESSAGE_BYTES": "128KiB",
                                                      "GOHUB_SERVER_PING_INTERVAL": "1.5s"})
    assert p.returncode == 0, out(p)


def test_single_dash_config_flag_starts(start_daemon, gohub_bin):
    d = start_daemon(args=["-config", str(CONFIG)])
    j = d.health()
    assert j["status"] == "ok"
    # the version /health reports is the one --version prints
    v = run(gohub_bin, "--version")
    assert j["version"] in out(v), f"/health version {j['version']!r} vs --version {out(v)!r}"


def test_missing_lua_path_stops_start_with_a_clear_reason(gohub_bin, tmp_path):
    missing = tmp_path / "no-such-lua"
    p = run(gohub_bin, "-c", str(CONFIG),
            env={"GOHUB_LUA_PATH": str(missing), "GOHUB_SERVER_ADDR": "127.0.0.1:0"})
    err = p.stderr.decode(errors="replace")
    assert p.returncode == 1, out(p)
    assert f"lua.path '{missing}' is not a directory" in err, err[-600:]


def test_broken_handler_at_start_stops_start_naming_file_and_line(gohub_bin, tmp_path):
    import shutil
    lua = tmp_path / "lua"
    shutil.copytree(REPO / "lua", lua)
    (lua / "handlers" / "broken.lua").write_text("local M = {}\nfunction M.handle(\nreturn M\n")
    p = run(gohub_bin, "-c", str(CONFIG),
            env={"GOHUB_LUA_PATH": str(lua), "GOHUB_SERVER_ADDR": "127.0.0.1:0"})
    err = p.stderr.decode(errors="replace")
    assert p.returncode == 1, out(p)
    assert "handlers/broken.lua:3:" in err, err[-600:]


def test_config_test_checks_the_lua_code(gohub_bin, tmp_path):
    """-t loads the Lua code as a worker would: a syntax error is reported
    with file and line (exit 1); module code that calls gohub.* at load time
    is fine (exit 0)."""
    import shutil
    lua = tmp_path / "lua"
    shutil.copytree(REPO / "lua", lua)
    (lua / "handlers" / "toplevel.lua").write_text(
        'local gohub = require "gohub"\n'
        'gohub.rooms.create("made-at-load")\n'
        'gohub.count("loaded")\n'
        'local M = {}\nfunction M.handle() return "ok", {} end\nreturn M\n')
    p = run(gohub_bin, "-t", "-c", str(CONFIG), env={"GOHUB_LUA_PATH": str(lua)})
    assert p.returncode == 0, out(p)
    assert "Lua code" in out(p)
    (lua / "handlers" / "broken.lua").write_text("local M = {}\nfunction M.handle(\nreturn M\n")
    p = run(gohub_bin, "-t", "-c", str(CONFIG), env={"GOHUB_LUA_PATH": str(lua)})
    assert p.returncode == 1, out(p)
    assert "handlers/broken.lua:3:" in p.stderr.decode(errors="replace"), out(p)
