#!/usr/bin/python3
"""Checks that a server speaks the protocol subset the benchmarks use, so the
bench compares like with like: join_room/room_joined, room_message fan-out
(excluding the sender, one identical frame per recipient), ping/pong with
request_id, the `lookup` custom handler, and leaving rooms on close.

  hub_smoke.py PORT [--no-lookup]

Exit 0 when every check passes; prints what failed otherwise."""
import argparse, os, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wsclient import WS  # noqa: E402


PRESENCE = ("member_joined", "member_left")


def next_non_presence(c):
    while True:
        m = c.recv_json()
        if m.get("message_type") not in PRESENCE:
            return m


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("--no-lookup", action="store_true")
    a = ap.parse_args()
    room = "smoke-%d" % os.getpid()

    a1, a2, a3 = WS(a.port), WS(a.port), WS(a.port)
    for i, c in enumerate((a1, a2, a3), 1):
        c.send_json({"message_type": "join_room", "message_id": 7, "data": {"room_id": room}})
        r = c.recv_type("room_joined")
        check(r["data"] == {"room_id": room, "status": "joined", "member_count": i}, "room_joined %r" % r)
        check(r.get("request_id") == 7, "room_joined request_id %r" % r)
        for k in ("message_id", "timestamp"):
            check(k in r, "envelope field %s missing: %r" % (k, r))

    content = {"ts": 123, "seq": 1, "pub": 0, "text": "h\u00e9"}
    a1.send_json({"message_type": "room_message", "data": {"room_id": room, "content": content}})
    got = []
    for c in (a2, a3):
        m = c.recv_type("room_message")
        d = m["data"]
        check(d["room_id"] == room and d["content"] == content, "room_message data %r" % m)
        check(isinstance(d.get("sender_id"), str) and isinstance(d.get("timestamp"), int), "fields %r" % m)
        check("request_id" not in m, "request_id on a push %r" % m)
        got.append(m["message_id"])
    check(got[0] == got[1], "one message_id for every recipient: %r" % got)
    # the sender is excluded: its next message is the pong below
    a1.send_json({"message_type": "ping", "message_id": 42, "data": {"ts": 1000}})
    r = next_non_presence(a1)
    check(r["message_type"] == "pong" and r.get("request_id") == 42, "pong %r (sender got an echo?)" % r)
    check(r["data"]["ts"] == 1000 and isinstance(r["data"]["server_ts"], int)
          and r["data"]["rtt"] == r["data"]["server_ts"] - 1000, "pong data %r" % r)
    a1.send_json({"message_type": "ping", "data": {}})
    r = next_non_presence(a1)
    check(r["message_type"] == "pong" and "request_id" not in r, "pong without id %r" % r)

    if not a.no_lookup:
        a2.send_json({"message_type": "lookup", "message_id": 5, "data": {"ts": 1, "key": "k7"}})
        r = a2.recv_type("found")
        check(r["data"] == {"value": 7} and r.get("request_id") == 5, "lookup %r" % r)

    a2.send_json({"message_type": "nosuchtype", "message_id": 9, "data": {}})
    r = a2.recv_type("error")
    check(r["data"]["code"] == 1006 and r.get("request_id") == 9, "unknown type %r" % r)

    # leave on close: a newcomer sees member_count 3 (a1, a2 gone, a3 stays + new)
    a1.close()
    a2.close()
    time.sleep(0.3)
    a4 = WS(a.port)
    a4.send_json({"message_type": "join_room", "message_id": 1, "data": {"room_id": room}})
    r = a4.recv_type("room_joined")
    check(r["data"]["member_count"] == 2, "rooms left on close: %r" % r)
    a3.close()
    a4.close()
    print("hub_smoke: port %d ok" % a.port)


if __name__ == "__main__":
    try:
        main()
    except (AssertionError, OSError, TimeoutError, KeyError) as e:
        print("hub_smoke: FAILED: %s" % e, file=sys.stderr)
        sys.exit(1)
