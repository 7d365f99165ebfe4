"""gohub nodes on NATS with JetStream (cluster.nats.use_jetstream) against a
real `nats-server -js -sd <tmpdir>` on a free loopback port, stopped by PID:

- room messages cross nodes exactly once with JetStream on;
- the server killed with -9 mid-traffic and restarted on the same port and
  store: a publisher keeps sending during the outage and the members on the
  other nodes get every message after the reconnect, once, in order;
- a JetStream redelivery (acks that did not come back within AckWait) is
  seen once by clients.

The redelivery is made deterministic from outside: a raw NATS client (the
text protocol, no library) lowers the AckWait of node2's durable consumer
through the JetStream API, node2 is frozen with SIGSTOP while messages are
delivered to it, and the server redelivers them (the consumer info counts
them) before node2 runs again and acks."""

import json
import os
import shutil
import signal
import socket
import threading
import time

import pytest

from gohub_helpers import BusServer, Hub, Timeout, ServerClosed, http_get, wait_for

STREAM = "GOHUB"

# the default heartbeat (2 s) and node timeout (7 s): an outage of a few
# seconds must not drop nodes from each other's view; a short reconnect
# backoff so the catch-up time measures JetStream, not the backoff
JS_ENV = {"GOHUB_CLUSTER_NATS_USE_JETSTREAM": "true",
          "GOHUB_CLUSTER_NATS_STREAM_NAME": STREAM,
          "GOHUB_CLUSTER_RECONNECT_MAX_BACKOFF": "500ms"}


class JetStreamServer(BusServer):
    """nats-server -js with a file store in tmp, on a free loopback port."""

    def __init__(self, tmp):
        super().__init__("nats", tmp)
        self.store = tmp / "js-store"
        self.store.mkdir(exist_ok=True)

    def command(self):
        return ["nats-server", "-js", "-sd", str(self.store), "-a", "127.0.0.1",
                "-p", str(self.port)]

    def _ready(self):
        try:
            with NatsRaw(self.port, timeout=0.5) as c:
                return "error" not in c.request("$JS.API.INFO", None)
        except (OSError, AssertionError, ValueError):
            return False

    def env(self):
        return {**super().env(), **JS_ENV}


class NatsRaw:
    """A minimal NATS client (text protocol) for JetStream API requests."""

    def __init__(self, port, timeout=3.0):
        self.timeout = timeout
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        self.n = 0
        line = self._line()
        assert line.startswith(b"INFO "), line
        self.inbox = "_INBOX.gohubtest" + os.urandom(6).hex()
        self.s.sendall(b'CONNECT {"verbose":false,"pedantic":false,"headers":true,'
                       b'"no_responders":true,"protocol":1}\r\n'
                       + f"SUB {self.inbox}.* 1\r\nPING\r\n".encode())
        while self._line() != b"PONG":
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.s.close()

    def _fill(self):
        d = self.s.recv(65536)
        if not d:
            raise OSError("nats-server closed the connection")
        self.buf += d

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n:
            self._fill()
        d, self.buf = self.buf[:n], self.buf[n:]
        return d

    def request(self, subject, obj):
        self.n += 1
        reply = f"{self.inbox}.{self.n}".encode()
        data = b"" if obj is None else json.dumps(obj).encode()
        self.s.sendall(f"PUB {subject} {reply.decode()} {len(data)}\r\n".encode() + data + b"\r\n")
        while True:
            line = self._line()
            if line == b"PING":
                self.s.sendall(b"PONG\r\n")
            elif line.startswith(b"-ERR"):
                raise AssertionError(f"nats-server: {line!r}")
            elif line.startswith(b"MSG "):
                parts = line.split()
                payload = self._exact(int(parts[-1]) + 2)[:-2]
                if parts[1] == reply:
                    return json.loads(payload)
            elif line.startswith(b"HMSG "):
                parts = line.split()
                body = self._exact(int(parts[-1]) + 2)[:-2]
                if parts[1] == reply:  # a status-only answer (503: no responders)
                    raise AssertionError(f"JetStream API {subject}: {body[:200]!r}")


def js_consumer(port, node, subject):
    """(name, info) of node's durable consumer for subject (as the core
    names it, e.g. room.lobby), or (None, None)."""
    with NatsRaw(port) as c:
        names = c.request(f"$JS.API.CONSUMER.NAMES.{STREAM}", {}).get("consumers") or []
        for name in names:
            info = c.request(f"$JS.API.CONSUMER.INFO.{STREAM}.{name}", None)
            cfg = info.get("config", {})
            if cfg.get("description", "").endswith(f"node {node} subject {subject}"):
                return name, info
    return None, None


def js_consumers(port, node):
    """{name: (subject, deliver policy, delivered stream seq)} of node's
    consumers (for failure messages)."""
    out = {}
    with NatsRaw(port) as c:
        for name in c.request(f"$JS.API.CONSUMER.NAMES.{STREAM}", {}).get("consumers") or []:
            info = c.request(f"$JS.API.CONSUMER.INFO.{STREAM}.{name}", None)
            cfg = info.get("config", {})
            if f"node {node} " in cfg.get("description", ""):
                out[name] = (cfg.get("filter_subject"), cfg.get("deliver_policy"),
                             info.get("delivered", {}).get("stream_seq"))
    return out


def js_consumer_info(port, name):
    with NatsRaw(port) as c:
        return c.request(f"$JS.API.CONSUMER.INFO.{STREAM}.{name}", None)


def js_set_ack_wait(port, name, seconds):
    """Updates a durable consumer's AckWait (an editable field)."""
    with NatsRaw(port) as c:
        info = c.request(f"$JS.API.CONSUMER.INFO.{STREAM}.{name}", None)
        cfg = dict(info["config"], ack_wait=int(seconds * 1e9))
        r = c.request(f"$JS.API.CONSUMER.DURABLE.CREATE.{STREAM}.{name}",
                      {"stream_name": STREAM, "config": cfg})
        assert "error" not in r, r
        return r


def js_stream_msgs(port):
    with NatsRaw(port) as c:
        return c.request(f"$JS.API.STREAM.INFO.{STREAM}", None)["state"]["messages"]


@pytest.fixture
def js(tmp_path):
    if shutil.which("nats-server") is None:
        pytest.fail("nats-server is not installed (scripts/setup.sh installs it)")
    s = JetStreamServer(tmp_path).start()
    yield s
    s.kill()


def health(d):
    r = http_get(d.port, "/health", timeout=3.0)
    assert r is not None, "/health: no answer"
    return r.status, r.json()


def node_ids(d):
    r = http_get(d.port, "/api/stats", timeout=3.0)
    assert r is not None and r.status == 200, r
    return sorted(n["node_id"] for n in r.json()["nodes"])


def js_cluster(start_daemon, js, n):
    nodes = []
    for i in range(n):
        env = {"GOHUB_CLUSTER_ENABLED": "true", "GOHUB_CLUSTER_NODE_ID": f"node{i + 1}",
               **js.env()}
        nodes.append(start_daemon(env=env))
    want = [f"node{i + 1}" for i in range(n)]
    for d in nodes:
        assert wait_for(lambda d=d: health(d)[1]["bus"] == "connected", 10), health(d)
        assert wait_for(lambda d=d: node_ids(d) == want, 10), node_ids(d)
    return nodes


def join_everywhere(port, room, hubs, node_names):
    """Joins hubs to room and waits until every member node's durable
    consumer for the room exists (a JetStream subscribe is asynchronous)."""
    for h in hubs:
        h.call_ok("join_room", {"room_id": room}, "room_joined")
    for node in node_names:
        assert wait_for(lambda node=node: js_consumer(port, node, f"room.{room}")[0], 5), \
            f"{node}: no consumer for room.{room}"


class Collector(threading.Thread):
    """Reads one Hub on its own thread and records (monotonic time, content)
    of every room_message of one room."""

    def __init__(self, hub, room):
        super().__init__(daemon=True)
        self.hub, self.room = hub, room
        self.got = []
        self.others = []
        self.error = None
        self._halt = threading.Event()

    def run(self):
        while not self._halt.is_set():
            try:
                m = self.hub._read(0.2)
            except Timeout:
                continue
            except (ServerClosed, OSError, AssertionError) as e:
                self.error = e
                return
            if m.get("message_type") == "room_message" and m["data"]["room_id"] == self.room:
                self.got.append((time.monotonic(), m["data"]["content"]))
            else:
                self.others.append(m)

    def contents(self):
        return [c for _, c in self.got]

    def stop(self):
        self._halt.set()
        self.join(5)
        assert self.error is None, f"{self.hub}: {self.error}"


def check_exactly_once(name, got, want):
    dups = sorted({x for x in got if got.count(x) > 1})
    lost = sorted(set(want) - set(got))
    assert not dups, f"{name}: delivered twice: {dups}"
    assert not lost, f"{name}: lost {len(lost)} of {len(want)}: {lost}"
    assert got == want, f"{name}: out of order: {got}"


def expect_room_messages(port, node, hub, want):
    """hub gets the room messages whose contents are want, each once and in
    order, and no more; a failure lists node's consumers."""
    try:
        got = [hub.expect_type("room_message", timeout=10)["data"]["content"] for _ in want]
    except AssertionError as e:
        raise AssertionError(f"{e}; {node}'s consumers: {js_consumers(port, node)}") from None
    check_exactly_once(hub.name, got, want)
    hub.quiet(lambda m: m.get("message_type") == "room_message", wait=1.0,
              what="duplicate room_message")


def test_room_messages_cross_nodes_exactly_once_with_jetstream(js, start_daemon):
    n1, n2, n3 = js_cluster(start_daemon, js, 3)
    a, b, c = Hub(n1.port, name="a"), Hub(n2.port, name="b"), Hub(n3.port, name="c")
    before = js_stream_msgs(js.port)
    join_everywhere(js.port, "lobby", (a, b, c), ("node1", "node2", "node3"))
    for i in range(200):
        a.send("room_message", {"room_id": "lobby", "content": i}, mid=None)
    for h in (b, c):
        got = [h.expect_type("room_message", timeout=10,
                             pred=lambda m: m["data"]["room_id"] == "lobby")["data"]["content"]
               for _ in range(200)]
        check_exactly_once(h.name, got, list(range(200)))
        h.quiet(lambda m: m.get("message_type") == "room_message", wait=0.5,
                what="duplicate room_message")
    a.quiet(lambda m: m.get("message_type") == "room_message", wait=0.2, what="echo")
    # the messages went through the stream (each stored once: 200 plus
    # presence, heartbeats and the user directory)
    assert js_stream_msgs(js.port) - before >= 200
    # every consumer acked everything it was given; its config is what
    # bus_nats.c sets (AckWait 2 s, not the server's 30 s; MaxAckPending
    # below the core's 1,024-message dedupe window)
    for node in ("node2", "node3"):
        name, info = js_consumer(js.port, node, "room.lobby")
        cfg = info["config"]
        assert cfg["ack_policy"] == "explicit" and cfg["durable_name"] == name, cfg
        assert cfg["ack_wait"] == 2_000_000_000 and cfg["max_ack_pending"] == 1000, cfg
        assert cfg["max_deliver"] == 5 and cfg["deliver_policy"] == "new", cfg
        assert wait_for(lambda: js_consumer_info(js.port, name)["num_ack_pending"] == 0, 5), \
            js_consumer_info(js.port, name)


def test_server_killed_mid_traffic_nothing_lost_nothing_twice(js, start_daemon):
    n1, n2, n3 = js_cluster(start_daemon, js, 3)
    a, b, c = Hub(n1.port, name="a"), Hub(n2.port, name="b"), Hub(n3.port, name="c")
    join_everywhere(js.port, "live", (a, b, c), ("node1", "node2", "node3"))
    readers = [Collector(b, "live"), Collector(c, "live")]
    for r in readers:
        r.start()

    # 50 messages/s for 5 s; the server dies (kill -9) at 1 s and is back on
    # the same port and store at 3 s
    sent, t0 = 0, time.monotonic()
    killed_at = restarted_at = None
    during = []
    while True:
        t = time.monotonic() - t0
        if t >= 5.0:
            break
        if killed_at is None and t >= 1.0:
            js.kill()
            killed_at = time.monotonic()
        if restarted_at is None and t >= 3.0:
            js.start()
            restarted_at = time.monotonic()
        a.send("room_message", {"room_id": "live", "content": sent}, mid=None)
        if killed_at is not None and restarted_at is None:
            during.append(sent)
        sent += 1
        time.sleep(0.02)
    assert len(during) >= 50, f"only {len(during)} messages sent during the outage"

    want = list(range(sent))
    for r in readers:
        wait_for(lambda r=r: len(set(r.contents())) >= sent, 20)
    time.sleep(1.0)  # late duplicates would show up here
    for r in readers:
        r.stop()
    for r in readers:
        got = r.contents()
        last_during = max(t for t, cnt in r.got if cnt in set(during)) if during else None
        print(f"{r.hub.name}: sent {sent}, {len(during)} during the {restarted_at - killed_at:.1f}s "
              f"outage; received {len(got)} ({len(set(got))} distinct); the last of those "
              f"published during the outage arrived {last_during - restarted_at:.2f}s after "
              f"the restart")
        check_exactly_once(r.hub.name, got, want)
    for d in (n1, n2, n3):
        assert d.running()
        assert health(d)[1]["bus"] == "connected"
    a.quiet(lambda m: m.get("message_type") == "room_message", wait=0.2, what="echo")


def test_jetstream_redelivery_is_seen_once_by_clients(js, start_daemon):
    n1, n2 = js_cluster(start_daemon, js, 2)
    a, b = Hub(n1.port, name="a"), Hub(n2.port, name="b")
    join_everywhere(js.port, "rd", (a, b), ("node1", "node2"))
    name, info = js_consumer(js.port, "node2", "room.rd")
    assert info["config"]["ack_policy"] == "explicit", info["config"]
    js_set_ack_wait(js.port, name, 0.5)
    assert js_consumer_info(js.port, name)["config"]["ack_wait"] == 500_000_000

    a.send("room_message", {"room_id": "rd", "content": "warm"}, mid=None)
    assert b.expect_type("room_message", timeout=5)["data"]["content"] == "warm"

    # node2 freezes: the server delivers to it, no ack comes back within
    # AckWait, the server delivers again (up to MaxDeliver times)
    n2.signal(signal.SIGSTOP)
    try:
        for i in range(30):
            a.send("room_message", {"room_id": "rd", "content": i}, mid=None)
        redelivered = wait_for(
            lambda: js_consumer_info(js.port, name)["num_redelivered"] >= 30, 10)
        info = js_consumer_info(js.port, name)
    finally:
        n2.signal(signal.SIGCONT)
    assert redelivered, f"the server did not redeliver: {info}"
    deliveries = info["delivered"]["consumer_seq"] - info["ack_floor"]["consumer_seq"]
    print(f"node2 frozen: {info['num_redelivered']} messages redelivered, "
          f"{deliveries} deliveries pending for 30 messages")
    assert deliveries > 30, info

    got = [b.expect_type("room_message", timeout=10)["data"]["content"] for _ in range(30)]
    check_exactly_once("b", got, list(range(30)))
    # the redeliveries reached node2 and were dropped there: nothing more
    b.quiet(lambda m: m.get("message_type") == "room_message", wait=1.5,
            what="redelivered room_message")
    assert wait_for(lambda: js_consumer_info(js.port, name)["num_ack_pending"] == 0, 5), \
        js_consumer_info(js.port, name)
    assert n2.running()


def test_restart_with_a_shorter_stream_loses_nothing_sent_after_it(js, start_daemon):
    """A server killed with writes unflushed comes back with fewer messages
    than its consumers' saved state says they were given, and reuses those
    sequence numbers; a consumer left as it was would skip new messages
    until the stream caught up (nats-server 2.9.10 does not correct it).
    Made deterministic: a clean stop, the stream's message blocks removed
    (the whole stream "unflushed"), a restart on the same store."""
    n1, n2 = js_cluster(start_daemon, js, 2)
    a, b = Hub(n1.port, name="a"), Hub(n2.port, name="b")
    join_everywhere(js.port, "rb", (a, b), ("node1", "node2"))
    for i in range(30):
        a.send("room_message", {"room_id": "rb", "content": i}, mid=None)
    expect_room_messages(js.port, "node2", b, list(range(30)))
    name, _ = js_consumer(js.port, "node2", "room.rb")
    assert wait_for(lambda: js_consumer_info(js.port, name)["num_ack_pending"] == 0, 5)
    given = js_consumer_info(js.port, name)["delivered"]["stream_seq"]

    js.proc.send_signal(signal.SIGTERM)
    js.proc.wait(10)
    blocks = list((js.store / "jetstream").rglob(f"streams/{STREAM}/msgs/*"))
    assert blocks, "no message blocks in the store"
    for f in blocks:
        f.unlink()
    js.start()
    with NatsRaw(js.port) as c:
        state = c.request(f"$JS.API.STREAM.INFO.{STREAM}", None)["state"]
    # the condition, made: node2's consumer was given stream sequence numbers
    # the stream will hand out again
    assert state["last_seq"] < given, (given, state)

    # sent at once, while the nodes reconnect
    for i in range(30, 60):
        a.send("room_message", {"room_id": "rb", "content": i}, mid=None)
    expect_room_messages(js.port, "node2", b, list(range(30, 60)))
    for d in (n1, n2):
        assert health(d)[1]["bus"] == "connected"


def test_stream_deleted_under_running_nodes_is_made_again_and_loses_nothing(js, start_daemon):
    """A publish the stream refuses because the stream is gone (deleted by
    an operator, or lost) makes the node create it again and resubscribe,
    and the refused message is sent again: nothing waits for a reconnect."""
    n1, n2 = js_cluster(start_daemon, js, 2)
    a, b = Hub(n1.port, name="a"), Hub(n2.port, name="b")
    join_everywhere(js.port, "sd", (a, b), ("node1", "node2"))
    for i in range(10):
        a.send("room_message", {"room_id": "sd", "content": i}, mid=None)
    expect_room_messages(js.port, "node2", b, list(range(10)))

    with NatsRaw(js.port) as c:
        r = c.request(f"$JS.API.STREAM.DELETE.{STREAM}", None)
    assert r.get("success"), r
    for i in range(10, 20):
        a.send("room_message", {"room_id": "sd", "content": i}, mid=None)
        time.sleep(0.05)
    expect_room_messages(js.port, "node2", b, list(range(10, 20)))
    assert js_stream_msgs(js.port) >= 10
