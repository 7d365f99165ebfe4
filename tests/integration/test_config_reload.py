"""Config reload: SIGHUP and POST /api/reload re-read the config file and
apply the keys marked live; restart-only keys keep their running values
(with a log line); a broken file is refused and the running config stays."""

import signal
import time

from gohub_helpers import Hub, assert_error_body, check_error, reload_lua, wait_for


def write_config(path, body):
    path.write_text(body)
    return path


BASE = """\
lua:
  watch: false
limits:
  messages_per_second: 0
"""


def start(start_daemon, tmp_path, body=BASE, env=None):
    """A daemon on a config file; the test defaults' GOHUB_* rate limit
    override is removed, since the environment wins over the file."""
    cfg = write_config(tmp_path / "gohub.yaml", body)
    e = {"GOHUB_LIMITS_MESSAGES_PER_SECOND": None}
    e.update(env or {})
    return start_daemon(args=["-c", str(cfg)], env=e), cfg


def burst_pongs(hub, n=20):
    from gohub_helpers import hub_frames
    hub.ws.send_raw(hub_frames({"message_type": "ping", "message_id": 1000 + i}
                               for i in range(n)))
    kinds = []
    for _ in range(n):
        kinds.append(hub.recv(5)["message_type"])
    return kinds.count("pong")


def sighup_and_wait(d, what):
    before = d.log_text().count(what)
    d.signal(signal.SIGHUP)
    wait_for(lambda: d.log_text().count(what) > before, 5)


def test_sighup_applies_a_new_rate_limit_to_open_connections(start_daemon, tmp_path):
    d, cfg = start(start_daemon, tmp_path)
    h = Hub(d.port)
    assert burst_pongs(h) == 20
    write_config(cfg, BASE.replace("messages_per_second: 0",
                                   "messages_per_second: 1\n  messages_burst: 3\n"
                                   "  rate_limit_close_after: 0"))
    sighup_and_wait(d, "config reloaded")
    assert burst_pongs(h) <= 4
    h.close()


def test_api_reload_applies_anonymous_permissions_and_predefined_rooms(start_daemon, tmp_path):
    d, cfg = start(start_daemon, tmp_path)
    h = Hub(d.port)
    h.call_ok("join_room", {"room_id": "lobby"}, "room_joined")
    write_config(cfg, BASE + "auth:\n  anonymous_permissions: [leave:room]\n"
                             "rooms:\n  predefined: [news, sport]\n")
    r = reload_lua(d.port)
    assert r.status == 200, r
    assert r.json() == {"status": "ok", "lua": "reloaded"}
    rooms = {x["id"] for x in h.call_ok("list_rooms", {}, "rooms")["data"]["rooms"]}
    assert {"news", "sport"} <= rooms, rooms
    # the client table is rebuilt with the new permissions
    check_error(h.call("join_room", {"room_id": "news"}), 2001, h.next_id - 1)
    fresh = Hub(d.port)
    check_error(fresh.call("join_room", {"room_id": "news"}), 2001, fresh.next_id - 1)
    h.close()
    fresh.close()


def test_broken_file_is_refused_and_the_running_config_stays(start_daemon, tmp_path):
    d, cfg = start(start_daemon, tmp_path)
    write_config(cfg, BASE + "rooms:\n  default_max_clients: lots\n")
    r = reload_lua(d.port)
    assert r.status == 422, r
    msg = assert_error_body(r, "reload_failed")["message"]
    assert "gohub.yaml:6" in msg and "rooms.default_max_clients" in msg, msg
    sighup_and_wait(d, "config reload refused")
    # still serving with the old config: unlimited rate, default permissions
    h = Hub(d.port)
    assert burst_pongs(h) == 20
    h.call_ok("join_room", {"room_id": "still-works"}, "room_joined")
    h.close()
    # fixing the file makes the next reload succeed
    write_config(cfg, BASE)
    assert reload_lua(d.port).status == 200


def test_restart_only_keys_keep_their_values_and_are_logged(start_daemon, tmp_path):
    d, cfg = start(start_daemon, tmp_path)
    write_config(cfg, BASE + "server:\n  workers: 7\n  addr: \"127.0.0.1:1\"\n"
                             "  close_timeout: 1s\n")
    sighup_and_wait(d, "config reloaded")
    line = [ln for ln in d.log_text().splitlines() if "need a restart" in ln]
    assert line and "server.close_timeout" in line[-1], line
    # server.addr and server.workers come from the environment
    # (GOHUB_SERVER_*), which wins over the file: they did not change at all
    assert "server.addr" not in line[-1] and "server.workers" not in line[-1], line
    assert d.health()["status"] == "ok"
    h = Hub(d.port)
    assert h.call("ping")["message_type"] == "pong"
    h.close()


def test_log_level_is_live(start_daemon, tmp_path):
    d, cfg = start(start_daemon, tmp_path, body=BASE + "log:\n  level: info\n",
                   env={"GOHUB_LOG_LEVEL": None})
    Hub(d.port).close()
    time.sleep(0.2)
    assert "websocket open" not in d.log_text()
    write_config(cfg, BASE + "log:\n  level: debug\n")
    sighup_and_wait(d, "config reloaded")
    Hub(d.port).close()
    wait_for(lambda: "websocket open" in d.log_text(), 3)
