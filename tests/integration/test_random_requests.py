"""Seeded random requests to every built-in handler: each field the handlers
read, and some they do not, with values of every JSON type (null, booleans,
integers, fractions, huge and negative numbers, empty, long, non-ASCII and
escaped strings, valid and invalid room ids, arrays, objects), data that is
not an object, and message ids of every kind. The reply rule must hold for
each: exactly one reply carrying its request_id, a success or an error with
a documented code, and never 1003 (a built-in handler that raised) or 1004.
Three clients share rooms, so joins, presence, room messages, direct
messages and deletes interleave across workers. A failure names its seed."""

import json
import random

import pytest

from gohub_helpers import Hub, module_daemon

daemon = module_daemon({"GOHUB_SERVER_WORKERS": "2", "GOHUB_LIMITS_MESSAGES_PER_SECOND": "0"})

TYPES = ["ping", "authenticate", "join_room", "leave_room", "room_message", "direct_message",
         "create_room", "delete_room", "list_rooms", "room_members", "broadcast", "set_status"]
FIELDS = ["room_id", "content", "target_id", "name", "max_clients", "token", "status", "ts",
          "message", "room", "id"]
ROOMS = ["fz-a", "fz-b", "fz-c"]
# documented error codes a request can get (README, "The /ws protocol")
ERRORS = {1001, 1002, 1006, 2000, 2001, 2002, 2003, 3000, 3001, 3002, 3003, 3004, 4001}
SEEDS = range(30)
PER_SEED = 100


def value(rng, ids, depth=0):
    r = rng.random()
    if r < 0.25:
        return rng.choice(ROOMS + ids)
    if r < 0.35:
        return rng.choice([None, True, False])
    if r < 0.5:
        return rng.choice([0, 1, -1, 7, 2 ** 31, 2 ** 53, 2 ** 53 + 1, 10 ** 30, -10 ** 30,
                           0.5, -0.0, 1e308, 3.0])
    if r < 0.75:
        return rng.choice(["", "x", "a" * 129, "a" * 128, "é中𝄞", "a b", "../x", "a\u0000b",
                           "\ud7ff\ue000", "x" * 5000, "null", "{}", "fz-a\n", "ＦＺ"])
    if depth > 2:
        return None
    if r < 0.88:
        return [value(rng, ids, depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(FIELDS): value(rng, ids, depth + 1) for _ in range(rng.randint(0, 3))}


def request(rng, mid, ids):
    typ = rng.choice(TYPES)
    r = rng.random()
    if r < 0.8:
        data = {f: value(rng, ids) for f in rng.sample(FIELDS, rng.randint(0, 4))}
        if typ in ("join_room", "leave_room", "room_message", "delete_room", "room_members",
                   "create_room") and rng.random() < 0.6:
            data["room_id"] = rng.choice(ROOMS)
        if typ == "direct_message" and rng.random() < 0.6:
            data["target_id"] = rng.choice(ids)
        if typ in ("room_message", "direct_message", "broadcast") and rng.random() < 0.6:
            data["content"] = value(rng, ids)
    elif r < 0.9:
        data = value(rng, ids)
    else:
        data = None  # no data member at all
    env = {"message_type": typ, "message_id": mid}
    if data is not None or rng.random() < 0.5:
        env["data"] = data
    return env


@pytest.mark.parametrize("seed", SEEDS)
def test_random_requests_keep_the_reply_rule(daemon, seed):
    rng = random.Random(seed)
    clients = [Hub(daemon.port, name=f"s{seed}c{i}") for i in range(3)]
    try:
        for c in clients:
            c.whoami()
        ids = [c.client_id for c in clients] + [c.user_id for c in clients]
        sent = {}
        for k in range(PER_SEED):
            c = clients[k % 3]
            mid = 1000 + k  # whoami took the low ones
            env = request(rng, mid, ids)
            c.send_raw(json.dumps(env, ensure_ascii=rng.random() < 0.5))
            sent[(k % 3, mid)] = env
        for i, c in enumerate(clients):
            for k in range(i, PER_SEED, 3):
                mid = 1000 + k
                env = sent[(i, mid)]
                r = c.reply(mid, timeout=10)
                where = f"seed {seed}: {json.dumps(env)[:300]} -> {r.raw[:300]}"
                if r["message_type"] == "error":
                    code = r["data"]["code"]
                    assert code in ERRORS, where
        for c in clients:  # anything else answering a request is a second reply
            extra = [m.raw[:200] for m in c.drain(0.1) if m.get("request_id")]
            assert not extra, f"seed {seed}: second replies {extra}"
    finally:
        for c in clients:
            c.close()
    assert daemon.running(), daemon.log_text()[-3000:]
