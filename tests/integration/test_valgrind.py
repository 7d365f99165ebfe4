"""The daemon once under valgrind's memcheck (the reliability checklist's
invariant: ASan+UBSan in every pass, valgrind once): mixed traffic, bad
frames, the HTTP API, a code reload and SIGTERM, then no memcheck error
and no definitely lost block. memcheck finds what ASan's build cannot see:
reads of uninitialised memory, and the release build's own code. Release
build only (valgrind cannot run an ASan binary)."""

import os
import signal
import time

import pytest

from gohub_helpers import FAST, OP_BINARY, Hub, RawWS, http_get, is_asan_build, wait_for


@pytest.fixture
def memcheck(tmp_path, gohub_bin):
    if is_asan_build(gohub_bin):
        pytest.skip("valgrind cannot run an ASan build (the release pass runs this)")
    log = tmp_path / "memcheck.log"
    wrapper = tmp_path / "gohub-memcheck"
    wrapper.write_text("#!/bin/sh\nexec valgrind --tool=memcheck --error-exitcode=77 "
                       "--leak-check=full --errors-for-leak-kinds=definite "
                       f"--show-leak-kinds=definite --log-file={log} {gohub_bin} \"$@\"\n")
    wrapper.chmod(0o755)
    return str(wrapper), log


def test_memcheck_finds_nothing(start_daemon, memcheck, tmp_path):
    wrapper, log = memcheck
    d = start_daemon(binary=wrapper)
    hubs = [Hub(d.port, timeout=20) for _ in range(4)]
    for k, h in enumerate(hubs):
        h.call_ok("join_room", {"room_id": "vg"}, "room_joined", timeout=20)
        h.call_ok("create_room", {"room_id": "vg-%d" % k}, "room_created", timeout=20)
    for k in range(20):
        h = hubs[k % 4]
        h.send("room_message", {"room_id": "vg", "content": {"k": k, "s": "é" * k}})
        h.call("ping", {"ts": k}, timeout=20)
    for h in hubs:
        for _ in range(15):  # every other member's messages, in order
            h.expect_type("room_message", timeout=20)
    r = hubs[0].call("list_rooms", {}, timeout=20)
    assert len(r["data"]["rooms"]) == 5, r.raw
    r = hubs[0].call("room_members", {"room_id": "vg"}, timeout=20)
    assert len(r["data"]["members"]) == 4, r.raw
    assert hubs[1].call("nosuch", {}, timeout=20)["data"]["code"] == 1006
    assert hubs[2].call("join_room", {"room_id": "bad id!"}, timeout=20)["data"]["code"] == 1001
    for path in ("/api/rooms", "/api/stats", "/metrics", "/health"):
        assert http_get(d.port, path, timeout=20).status == 200, path
    # bad frames: invalid UTF-8 (1007) and binary (1003)
    with RawWS.connect(d.port, timeout=20) as ws:
        ws.send_text(b'{"message_type":"ping","data":{"s":"\xed\xa0\x80"}}')
        assert ws.expect_close(20).code == 1007
    with RawWS.connect(d.port, timeout=20) as ws:
        ws.send_frame(OP_BINARY, b"\x00\x01")
        assert ws.expect_close(20).code == 1003
    # a code reload while clients stay, then they still work
    d.signal(signal.SIGHUP)
    assert wait_for(lambda: '"lua reloaded"' in d.log_text(), 30), d.log_text()[-2000:]
    hubs[3].call_ok("ping", {"ts": 1}, "pong", timeout=20)
    hubs[0].ws.close()  # one leaves without a close handshake
    d.signal(signal.SIGTERM)
    rc = d.wait(60)
    d.exit_checked = True
    for h in hubs[1:]:
        h.ws.close()
    text = log.read_text() if os.path.exists(log) else ""
    assert rc == 0 and "ERROR SUMMARY: 0 errors" in text, (rc, text[-4000:])


def test_memcheck_finds_nothing_on_a_cluster_node(start_daemon, memcheck, bus):
    """A node under memcheck in a two-node cluster (redis and nats): room
    messages and a direct message both ways, cluster-wide lists, then
    SIGTERM."""
    wrapper, log = memcheck
    env = {"GOHUB_CLUSTER_ENABLED": "true", **FAST, **bus.env()}
    a = start_daemon(binary=wrapper, env={**env, "GOHUB_CLUSTER_NODE_ID": "vg1"})
    b = start_daemon(env={**env, "GOHUB_CLUSTER_NODE_ID": "vg2"})
    for d in (a, b):
        assert wait_for(lambda d=d: http_get(d.port, "/health", timeout=20).json()["bus"]
                        == "connected", 30)
    ha, hb = Hub(a.port, timeout=20), Hub(b.port, timeout=20)
    for h in (ha, hb):
        h.call_ok("join_room", {"room_id": "vgc"}, "room_joined", timeout=20)
    time.sleep(1.0)  # the subscriptions reach the bus
    for k in range(5):
        ha.send("room_message", {"room_id": "vgc", "content": {"from": "a", "k": k}}, mid=None)
        hb.send("room_message", {"room_id": "vgc", "content": {"from": "b", "k": k}}, mid=None)
    for k in range(5):
        assert hb.expect_type("room_message", timeout=20)["data"]["content"] == {"from": "a", "k": k}
        assert ha.expect_type("room_message", timeout=20)["data"]["content"] == {"from": "b", "k": k}
    r = ha.call("room_members", {"room_id": "vgc"}, timeout=20)
    assert len(r["data"]["members"]) == 2, r.raw
    r = ha.call("list_rooms", {}, timeout=20)
    assert [x["member_count"] for x in r["data"]["rooms"] if x["id"] == "vgc"] == [2], r.raw
    hb.send("direct_message", {"target_id": ha.whoami(), "content": "hi"}, mid=None)
    assert ha.expect_type("direct_message", timeout=20)["data"]["content"] == "hi"
    assert http_get(a.port, "/api/stats", timeout=20).status == 200
    a.signal(signal.SIGTERM)
    rc = a.wait(60)
    a.exit_checked = True
    ha.ws.close()
    hb.ws.close()
    text = log.read_text() if os.path.exists(log) else ""
    assert rc == 0 and "ERROR SUMMARY: 0 errors" in text, (rc, text[-4000:])
