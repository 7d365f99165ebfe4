"""Prometheus metrics on /metrics: exact counter values after scripted
WebSocket traffic, the exposition checked by `promtool check metrics`, a
real Prometheus server scraping gohub (and evaluating the GoHub
compatibility rules and every Grafana dashboard query), metrics.addr and
metrics.enabled, slow consumers, Lua reloads, and configs/ (dashboard,
scrape example, rules) checked against what gohub exposes."""

import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from gohub_helpers import (
    OP_BINARY, OP_TEXT, REPO, Conn, Hub, RawWS, check_envelope, check_error, frame, free_port,
    http_get, module_daemon, read_response, reload_lua, request, Scrape, scrape, scrape_text,
    start_refused, wait_for, write_lua, ws_request,
)

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
DASHBOARD = REPO / "configs" / "grafana-dashboard.json"
SCRAPE_EXAMPLE = REPO / "configs" / "prometheus.yml"
COMPAT_RULES = REPO / "configs" / "gohub-compat-rules.yml"

daemon = module_daemon({"GOHUB_SERVER_NODE_ID": "metrics-node"})


def promtool_check(text):
    p = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(),
                       capture_output=True, timeout=30)
    return p.returncode, (p.stdout + p.stderr).decode(errors="replace")


# ---------------------------------------------------------------- the endpoint


def test_metrics_endpoint_get_head_and_wrong_method(daemon):
    text = scrape_text(daemon.port)
    s = Scrape(text)
    info = s.series("gohub_info")
    assert len(info) == 1, info
    labels, v = info.popitem()
    assert v == 1 and dict(labels)["node_id"] == "metrics-node" and dict(labels)["version"], info
    assert s.types["gohub_connected_clients"] == "gauge"
    assert s.types["gohub_handler_duration_seconds"] == "histogram"
    raw = f"HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    with Conn(daemon.port) as c:
        c.send(raw)
        r = read_response(c, head_only=True)
        assert r.status == 200, r
        assert int(r.header("content-length")) > 1000, r
        assert c.wait_closed(3) and not c.buf, f"HEAD answered with a body: {bytes(c.buf[:80])!r}"
    for method in ("POST", "DELETE", "PUT"):
        raw = (f"{method} /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
               f"Connection: close\r\n\r\n").encode()
        with Conn(daemon.port) as c:
            c.send(raw)
            r = read_response(c)
        assert r.status == 405, f"{method} /metrics: {r}"
        assert r.header("allow") == "GET, HEAD", r


def test_process_metrics_describe_the_daemon(daemon):
    s = scrape(daemon.port)
    rss = s.get("process_resident_memory_bytes")
    kb = daemon.rss_kb()
    assert 0.5 * kb * 1024 < rss < 2 * kb * 1024, f"RSS {rss} bytes vs VmRSS {kb} kB"
    assert s.get("process_virtual_memory_bytes") >= rss
    fds = daemon.stable_fd_count()
    # the scrape's own connection is open while gohub counts
    assert abs(s.get("process_open_fds") - fds) <= 2, f"{s.get('process_open_fds')} vs {fds}"
    assert s.get("process_max_fds") >= s.get("process_open_fds")
    start = s.get("process_start_time_seconds")
    with open("/proc/stat") as f:
        btime = next(int(line.split()[1]) for line in f if line.startswith("btime "))
    with open(f"/proc/{daemon.pid}/stat") as f:
        ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    want = btime + ticks / os.sysconf("SC_CLK_TCK")
    assert abs(start - want) < 0.02, f"process_start_time_seconds {start}, /proc says {want}"
    assert time.time() - 600 < start <= time.time(), start
    assert s.get("process_cpu_seconds_total") >= 0
    a = s.get("process_cpu_seconds_total")
    for _ in range(30):
        scrape_text(daemon.port)
    assert scrape(daemon.port).get("process_cpu_seconds_total") >= a


# ---------------------------------------------------------------- exact values


def _send(h, text):
    h.send_raw(text)
    return len(text.encode())


def test_counters_after_scripted_traffic(start_daemon, hubs):
    """Every counter this traffic touches holds exactly the expected value,
    and every other one stays 0."""
    d = start_daemon()
    s0 = scrape(d.port)
    assert s0.get("gohub_connected_clients") == 0
    assert s0.get("gohub_connections_opened_total") == 0
    a = hubs(d.port, name="a")
    b = hubs(d.port, name="b")
    sizes = []
    room = "m-room"
    sizes.append(_send(a, json.dumps({"message_type": "join_room", "message_id": 1,
                                      "data": {"room_id": room}})))
    check_envelope(a.reply(1), request_id=1)
    sizes.append(_send(b, json.dumps({"message_type": "join_room", "message_id": 1,
                                      "data": {"room_id": room}})))
    assert b.reply(1)["message_type"] == "room_joined"
    a.expect_type("member_joined")
    sizes.append(_send(a, json.dumps({"message_type": "room_message", "message_id": 2,
                                      "data": {"room_id": room, "content": "hello"}})))
    assert a.reply(2)["message_type"] == "ack"
    b.expect_type("room_message")
    sizes.append(_send(a, '{"message_type":"no_such_type","message_id":3}'))
    check_error(a.reply(3), 1006, 3)
    sizes.append(_send(a, "this is not json"))
    check_error(a.expect_type("error"), 1001, 0)
    sizes.append(_send(a, '{"message_type":"ping","message_id":4,"data":{"ts":1}}'))
    assert a.reply(4)["message_type"] == "pong"
    sizes.append(_send(b, json.dumps({"message_type": "leave_room", "message_id": 2,
                                      "data": {"room_id": room}})))
    assert b.reply(2)["message_type"] == "room_left"
    a.expect_type("member_left")
    b.close()  # close 1000
    c = RawWS.connect(d.port)
    c.send_frame(OP_BINARY, b"\x00\x01")  # refused with 1003 at the frame header
    assert c.expect_close(3).code == 1003
    c.close()
    e = RawWS.connect(d.port)
    e.close()  # TCP ends without a close frame: 1006
    assert wait_for(lambda: scrape(d.port).get("gohub_connected_clients") == 1, 5), \
        scrape(d.port).text

    s = scrape(d.port)
    assert s.get("gohub_connections_opened_total") == 4
    closed = {dict(k)["code"]: v for k, v in s.series("gohub_connections_closed_total").items()}
    assert closed == {**{c: 0 for c in closed}, "1000": 1, "1003": 1, "1006": 1}, closed
    received = s.by("gohub_messages_received_total", "type")
    want_in = {"join_room": 2, "room_message": 1, "other": 1, "invalid": 1, "ping": 1,
               "leave_room": 1}
    assert received == {**{t: 0 for t in received}, **want_in}, received
    sent = s.by("gohub_messages_sent_total", "type")
    want_out = {"room_joined": 2, "member_joined": 1, "ack": 1, "room_message": 1, "error": 2,
                "pong": 1, "room_left": 1, "member_left": 1}
    assert sent == {**{t: 0 for t in sent}, **want_out}, sent
    errors = s.by("gohub_errors_total", "code")
    assert errors == {**{k: 0 for k in errors}, "1006": 1, "1001": 1}, errors
    assert s.get("gohub_room_joins_total") == 2
    assert s.get("gohub_room_leaves_total") == 1
    assert s.get("gohub_active_rooms") == 1
    assert s.get("gohub_message_size_bytes_count") == len(sizes) == 7
    assert s.get("gohub_message_size_bytes_sum") == sum(sizes)
    assert s.get("gohub_message_size_bytes_bucket", le="64") == sum(1 for n in sizes if n <= 64)
    assert s.get("gohub_message_size_bytes_bucket", le="+Inf") == 7
    for t, n in want_in.items():
        assert s.get("gohub_handler_duration_seconds_count", type=t) == n, t
        assert s.get("gohub_handler_duration_seconds_bucket", type=t, le="+Inf") == n, t
        assert 0 < s.get("gohub_handler_duration_seconds_sum", type=t) < 5 * n, t
    assert {dict(k)["type"] for k in s.series("gohub_handler_duration_seconds_count")} \
        == set(want_in), "duration series for types never handled"
    assert s.by("gohub_messages_dropped_total", "reason") == {"queue_full": 0, "closed": 0}
    assert s.get("gohub_slow_consumer_closes_total") == 0
    assert wait_for(lambda: scrape(d.port).get("gohub_outbound_queue_bytes") == 0, 3)
    assert s.by("gohub_lua_reloads_total", "result") == {"success": 0, "failure": 0}

    a.close()
    assert wait_for(lambda: scrape(d.port).get("gohub_connected_clients") == 0, 5)
    s = scrape(d.port)
    assert s.get("gohub_connections_closed_total", code="1000", reason="normal") == 2
    assert s.get("gohub_room_leaves_total") == 2  # a left its room by disconnecting
    assert s.get("gohub_active_rooms") == 0       # the auto-created room went with it
    assert s.get("gohub_connections_opened_total") == 4


def test_promtool_accepts_the_exposition(start_daemon, hubs):
    """After traffic that fills the labelled families and histograms,
    `promtool check metrics` (parser and lint) reports nothing."""
    d = start_daemon()
    h = hubs(d.port)
    h.call_ok("join_room", {"room_id": "lint"}, "room_joined")
    h.ping()
    h.call_err("nope", {}, 1006)
    h.send_raw("{")
    h.expect_type("error")
    text = scrape_text(d.port)
    assert "gohub_handler_duration_seconds_bucket{type=\"ping\"" in text
    rc, out = promtool_check(text)
    assert rc == 0 and out.strip() == "", f"promtool check metrics: rc={rc}\n{out}"


def test_slow_consumer_and_dropped_messages(start_daemon, hubs):
    """A member that never reads is cut with 1013: the slow-consumer and
    queue_full counters move, and the queue gauge comes back to 0."""
    d = start_daemon(env={"GOHUB_LIMITS_MAX_OUTBOUND_BYTES": "65536"})
    slow = RawWS.connect(d.port, rcvbuf=4096)
    try:
        slow.send_text(json.dumps({"message_type": "join_room", "message_id": 1,
                                   "data": {"room_id": "slow"}}))
        f = slow.recv_data(3)
        assert f.opcode == OP_TEXT and b"room_joined" in f.payload, f
        pub = hubs(d.port, name="pub")
        pub.call_ok("join_room", {"room_id": "slow"}, "room_joined")
        body = json.dumps({"message_type": "room_message",
                           "data": {"room_id": "slow", "content": "x" * 30000}}).encode()
        n = 200
        assert pub.ws.send_raw(b"".join(frame(OP_TEXT, body) for _ in range(n)), timeout=20)
        assert wait_for(lambda: scrape(d.port).get("gohub_slow_consumer_closes_total") == 1, 10), \
            scrape(d.port).text
        pub.ping()  # everything the publisher sent was handled
        s = scrape(d.port)
        dropped = s.by("gohub_messages_dropped_total", "reason")
        assert dropped["queue_full"] >= 1, dropped
        # each publish reached the slow member as queued, refused, or sent
        # while it was closing, until it left the room
        queued = s.get("gohub_messages_sent_total", type="room_message")
        assert 1 <= queued and queued + 1 + dropped["closed"] <= n, (queued, dropped)
        assert s.get("gohub_messages_received_total", type="room_message") == n
    finally:
        slow.close()
    assert wait_for(lambda: scrape(d.port).get("gohub_connected_clients") == 1, 10)
    s = scrape(d.port)
    assert s.get("gohub_connections_closed_total", code="1013", reason="slow_consumer") == 1
    assert wait_for(lambda: scrape(d.port).get("gohub_outbound_queue_bytes") == 0, 5), \
        scrape(d.port).get("gohub_outbound_queue_bytes")


def test_lua_reloads_counted_by_result(start_daemon, lua_copy):
    d = start_daemon(env={"GOHUB_LUA_PATH": str(lua_copy), "GOHUB_LUA_WATCH": "false"})
    assert reload_lua(d.port).status == 200
    assert scrape(d.port).by("gohub_lua_reloads_total", "result") == {"success": 1, "failure": 0}
    write_lua(lua_copy, "handlers/broken.lua", "local M = {\n")
    assert reload_lua(d.port).status == 422
    assert scrape(d.port).by("gohub_lua_reloads_total", "result") == {"success": 1, "failure": 1}


def hs256(claims, secret):
    def b64u(b):
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
    h = b64u(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    p = b64u(json.dumps(claims).encode())
    sig = hmac.new(secret.encode(), f"{h}.{p}".encode(), hashlib.sha256).digest()
    return f"{h}.{p}.{b64u(sig)}"


def test_auth_counted_by_result_and_reason(start_daemon, hubs):
    """Tokens at the handshake and in authenticate are counted; an
    anonymous connection (no token, allowed) is not an auth attempt."""
    secret = "metrics-test-secret-0123456789abcdef"
    d = start_daemon(env={"GOHUB_AUTH_ENABLED": "true", "GOHUB_AUTH_SECRET_KEY": secret,
                          "GOHUB_AUTH_LEEWAY": "0s"})
    now = int(time.time())
    good = hs256({"sub": "alice", "exp": now + 3600}, secret)
    expired = hs256({"sub": "bob", "exp": now - 60}, secret)
    forged = hs256({"sub": "mallory", "exp": now + 3600}, "another-secret-0123456789abcdef")
    anon = hubs(d.port, name="anon")
    anon.ping()
    s = scrape(d.port)
    assert s.get("gohub_auth_success_total") == 0
    assert sum(s.by("gohub_auth_failure_total", "reason").values()) == 0
    h = Hub(d.port, name="alice", path=f"/ws?token={good}")
    try:
        h.ping()
    finally:
        h.close()
    for tok in (expired, forged):
        r = request(d.port, ws_request(d.port, path=f"/ws?token={tok}"))
        assert r is not None and r.status == 401, r
    r = anon.call("authenticate", {"token": "not-a-jwt"})
    check_error(r, 2003, r["request_id"])
    assert anon.call("authenticate", {"token": good})["message_type"] == "authenticated"
    s = scrape(d.port)
    assert s.get("gohub_auth_success_total") == 2
    failures = s.by("gohub_auth_failure_total", "reason")
    want = {"expired": 1, "bad_signature": 1, "malformed": 1}
    assert failures == {**{k: 0 for k in failures}, **want}, failures
    assert s.get("gohub_connections_opened_total") == 2  # the 401s never opened


# ---------------------------------------------------------------- listeners


def test_metrics_addr_serves_metrics_and_server_addr_does_not(start_daemon):
    mport = free_port()
    d = start_daemon(env={"GOHUB_METRICS_ADDR": f"127.0.0.1:{mport}"})
    s = scrape(mport)
    assert s.get("gohub_connected_clients") == 0
    r = http_get(d.port, "/metrics")
    assert r.status == 404, f"/metrics on server.addr with metrics.addr set: {r}"
    for path in ("/health", "/ws", "/api/stats"):
        r = http_get(mport, path)
        assert r.status == 404, f"{path} on metrics.addr: {r}"
    # connections on server.addr are counted on metrics.addr
    with RawWS.connect(d.port):
        assert wait_for(lambda: scrape(mport).get("gohub_connected_clients") == 1, 3)


def test_metrics_port_variable(start_daemon):
    """METRICS_PORT (the second reference system's variable) moves /metrics."""
    mport = free_port()
    d = start_daemon(env={"METRICS_PORT": str(mport)})
    assert scrape(mport).get("gohub_connected_clients") == 0
    assert http_get(d.port, "/metrics").status == 404


def test_metrics_addr_overlapping_server_addr_refuses_to_start(gohub_bin):
    """metrics.addr :P (every interface) beside server.addr 127.0.0.1:P:
    both would bind under SO_REUSEPORT and /metrics would answer 404."""
    port = free_port()
    rc, out = start_refused(gohub_bin, {"GOHUB_SERVER_ADDR": f"127.0.0.1:{port}",
                                        "METRICS_PORT": str(port)})
    assert rc == 1, f"exit code {rc} (None = it started)\n{out}"
    assert "metrics.addr" in out and "already in use" in out, out


def test_metrics_disabled(start_daemon):
    d = start_daemon(env={"GOHUB_METRICS_ENABLED": "false"})
    r = http_get(d.port, "/metrics")
    assert r.status == 404, r
    mport = free_port()
    d2 = start_daemon(env={"GOHUB_METRICS_ENABLED": "false",
                           "GOHUB_METRICS_ADDR": f"127.0.0.1:{mport}"})
    assert http_get(d2.port, "/metrics").status == 404
    with pytest.raises(OSError):
        Conn(mport, timeout=1.0).close()  # no listener at all


# ---------------------------------------------------------------- configs/


def dashboard_exprs():
    d = json.loads(DASHBOARD.read_text())
    out = []

    def walk(panels):
        for p in panels:
            walk(p.get("panels", []))
            for t in p.get("targets", []):
                out.append((p["title"], t["expr"]))
    walk(d["panels"])
    return d, out


def concrete(expr):
    """A dashboard query with Grafana's variables filled in."""
    return (expr.replace("$__rate_interval", "1m").replace("$__interval", "15s")
            .replace("$instance", ".*"))


PROMQL_WORDS = {"sum", "by", "rate", "increase", "histogram_quantile", "time", "max", "le",
                "without", "instance", "type", "code", "reason", "result"}


def metric_names(expr):
    names = set()
    for m in re.finditer(r"\b([a-z_][a-z0-9_]*)\b(?=\s*[{\[(]?)", re.sub(r'"[^"]*"', '""', expr)):
        w = m.group(1)
        if w.startswith(("gohub_", "process_")):
            names.add(w)
        else:
            assert w in PROMQL_WORDS, f"unexpected word {w!r} in {expr!r}"
    return names


def test_dashboard_queries_use_only_exposed_metrics(daemon):
    d, exprs = dashboard_exprs()
    assert d["uid"] and d["title"] and d["__inputs"][0]["pluginId"] == "prometheus"
    assert d["templating"]["list"][0]["name"] == "instance"
    assert len(exprs) >= 20
    s = scrape(daemon.port)
    used = set()
    for title, expr in exprs:
        assert 'instance=~"$instance"' in expr, (title, expr)
        for name in metric_names(concrete(expr)):
            assert s.family_of(name), f"panel {title!r} queries {name}, which gohub does not expose"
            used.add(s.family_of(name))
    # the list: connections, rates by type, latency quantiles, errors
    # by code, auth failures, queue bytes, RSS and CPU
    for fam in ("gohub_connected_clients", "gohub_messages_received_total",
                "gohub_handler_duration_seconds", "gohub_errors_total", "gohub_auth_failure_total",
                "gohub_outbound_queue_bytes", "process_resident_memory_bytes",
                "process_cpu_seconds_total"):
        assert fam in used, f"the dashboard has no panel on {fam}"
    assert any("histogram_quantile(0.99" in e for _, e in exprs)
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)), "duplicate panel ids"


def test_scrape_example_and_compat_rules_are_valid(daemon):
    p = subprocess.run([PROMTOOL, "check", "config", str(SCRAPE_EXAMPLE)], capture_output=True,
                       timeout=30)
    assert p.returncode == 0, (p.stdout + p.stderr).decode()
    p = subprocess.run([PROMTOOL, "check", "rules", str(COMPAT_RULES)], capture_output=True,
                       timeout=30)
    assert p.returncode == 0, (p.stdout + p.stderr).decode()
    s = scrape(daemon.port)
    text = COMPAT_RULES.read_text()
    for expr in re.findall(r"^\s+expr: (.+)$", text, re.M):
        for name in metric_names(expr):
            assert s.family_of(name), f"compat rule reads {name}, which gohub does not expose"
    # the GoHub names these rules produce are not exposed directly (no clash)
    for rec in re.findall(r"record: (\S+)", text):
        assert s.family_of(rec) is None and rec not in s.types, rec


# ---------------------------------------------------------------- a real Prometheus


class Prometheus:
    def __init__(self, tmp_path, target, rules):
        self.port = free_port()
        self.dir = tmp_path / "prometheus"
        (self.dir / "data").mkdir(parents=True)
        shutil.copy(rules, self.dir / "rules.yml")
        (self.dir / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "rule_files:\n  - rules.yml\n"
            "scrape_configs:\n  - job_name: gohub\n    static_configs:\n"
            f"      - targets: ['{target}']\n")
        self.log = open(self.dir / "prometheus.log", "wb")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={self.dir / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log, cwd=str(self.dir))

    def get(self, path, **params):
        url = f"http://127.0.0.1:{self.port}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()

    def ready(self):
        try:
            return self.get("/-/ready")[0] == 200
        except OSError:
            return False

    def query(self, q):
        status, body = self.get("/api/v1/query", query=q)
        j = json.loads(body)
        assert status == 200 and j["status"] == "success", j
        return j["data"]

    def value(self, q):
        """The single sample's value of an instant query, or None."""
        res = self.query(q)["result"]
        return float(res[0]["value"][1]) if len(res) == 1 else None

    def stop(self):
        """SIGTERM by PID; SIGKILL if it does not exit."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()

    def log_text(self):
        return (self.dir / "prometheus.log").read_text(errors="replace")[-3000:]


def test_prometheus_scrapes_gohub(start_daemon, hubs, tmp_path):
    mport = free_port()
    d = start_daemon(env={"GOHUB_METRICS_ADDR": f"127.0.0.1:{mport}"})
    clients = hubs(d.port, 3)
    for c in clients:
        c.ping()
    prom = Prometheus(tmp_path, f"127.0.0.1:{mport}", COMPAT_RULES)
    try:
        assert wait_for(prom.ready, 20, 0.2), f"prometheus not ready:\n{prom.log_text()}"
        assert wait_for(lambda: prom.value('up{job="gohub"}') == 1, 20, 0.3), \
            f"target not up: {prom.query('up')}\n{prom.log_text()}"
        assert wait_for(lambda: prom.value('gohub_connected_clients{job="gohub"}') == 3, 10, 0.3), \
            prom.query("gohub_connected_clients")
        # a GoHub dashboard's name, from the compatibility rules
        assert wait_for(lambda: prom.value('gohub_connection_rate{job="gohub"}') == 3, 10, 0.3), \
            prom.query("gohub_connection_rate")
        clients[0].close()
        assert wait_for(lambda: prom.value('gohub_connected_clients{job="gohub"}') == 2, 10, 0.3)
        # wait until rates have two points to work with, then run every
        # dashboard query: each must be valid PromQL that Prometheus runs
        time.sleep(2.5)
        _, exprs = dashboard_exprs()
        empty = []
        for title, expr in exprs:
            data = prom.query(concrete(expr))
            if not data["result"]:
                empty.append(title)
        for must in ("Connected clients", "Received by type", "Handler latency (all types)",
                     "Resident memory", "CPU"):
            assert must not in empty, f"dashboard panel {must!r} shows no data"
    finally:
        prom.stop()
