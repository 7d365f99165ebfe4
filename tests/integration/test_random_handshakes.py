"""Seeded random upgrade requests against a model of RFC 6455 4.2.1 as
gohub applies it (README, "WebSocket: GET /ws"): the method, the version,
one Host, no body, Upgrade and Connection token lists in any case and
order, exactly one Sec-WebSocket-Version 13, exactly one key that is base64
of 16 bytes, header names in any case, harmless extra headers. The first
rule a request breaks gives its status (405, 400, 426); a request that
breaks none gets 101 with the right Sec-WebSocket-Accept and a working
connection. A failure names its seed."""

import base64
import os
import random

import pytest

from gohub_helpers import (
    OP_PING, OP_PONG, Conn, RawWS, frame, module_daemon, read_response, ws_accept,
)

daemon = module_daemon()

SEEDS = range(300)


def case(rng, name):
    return rng.choice([name, name.lower(), name.upper()])


def tokens_have(value, token):
    return value is not None and token in [t.strip().lower() for t in value.split(",")]


def make(rng, port):
    """(request bytes, expected status, key)."""
    method = rng.choices(["GET", "POST", "PUT", "HEAD", "DELETE"], [8, 1, 1, 1, 1])[0]
    version = rng.choices(["HTTP/1.1", "HTTP/1.0"], [9, 1])[0]
    key16 = base64.b64encode(os.urandom(16)).decode()
    hosts = rng.choices([1, 0, 2], [10, 1, 1])[0]
    upgrade = rng.choices(["websocket", "WebSocket", "websocket, h2c", "h2c, websocket",
                           "websockets", "h2c", None], [10, 2, 1, 1, 1, 1, 1])[0]
    connection = rng.choices(["Upgrade", "upgrade", "keep-alive, Upgrade", "Upgrade, close",
                              "close", "Upgraded", None], [10, 2, 2, 1, 1, 1, 1])[0]
    versions = rng.choices([["13"], ["8"], ["13", "13"], ["13, 8"], [], ["14"]],
                           [12, 1, 1, 1, 1, 1])[0]
    keys = rng.choices([[key16], [key16, key16], [], [key16[:22]],
                        [base64.b64encode(os.urandom(17)).decode()],
                        [base64.b64encode(os.urandom(18)).decode()], ["!" * 24]],
                       [14, 1, 1, 1, 1, 1, 1])[0]
    body = rng.random() < 0.08
    hdrs = [(case(rng, "Host"), f"127.0.0.1:{port}")] * hosts
    if upgrade is not None:
        hdrs.append((case(rng, "Upgrade"), upgrade))
    if connection is not None:
        hdrs.append((case(rng, "Connection"), connection))
    hdrs += [(case(rng, "Sec-WebSocket-Version"), v) for v in versions]
    hdrs += [(case(rng, "Sec-WebSocket-Key"), k) for k in keys]
    if body:
        hdrs.append(("Content-Length", "0"))
    for extra in rng.sample([("User-Agent", "fuzz/1"), ("Origin", "http://x.test"),
                             ("Sec-WebSocket-Protocol", "chat"), ("Accept", "*/*"),
                             ("Sec-WebSocket-Extensions", "permessage-deflate")],
                            rng.randint(0, 3)):
        hdrs.append(extra)
    rng.shuffle(hdrs)
    raw = f"{method} /ws {version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs) + "\r\n"
    # the model: the first rule broken decides
    if method != "GET":
        want = 405
    elif version != "HTTP/1.1" or hosts != 1 or body:
        want = 400
    elif not tokens_have(upgrade, "websocket") or not tokens_have(connection, "upgrade"):
        want = 400
    elif versions != ["13"]:
        want = 426
    elif keys != [key16]:
        want = 400
    else:
        want = 101
    return raw.encode(), want, key16


@pytest.mark.parametrize("seed", SEEDS)
def test_random_upgrade_request(daemon, seed):
    rng = random.Random(seed)
    raw, want, key = make(rng, daemon.port)
    with Conn(daemon.port, timeout=5) as c:
        c.send(raw)
        r = read_response(c, 5, head_only=want == 101 or raw.startswith(b"HEAD"))
        where = f"seed {seed}: {raw!r}"
        assert r is not None and r.status == want, f"{where}: got {r}, want {want}"
        if want != 101:
            return
        assert r.header("sec-websocket-accept") == ws_accept(key), f"{where}: {r}"
        ws = RawWS(c, r, key)
        ws.send_frame(OP_PING, b"up")
        f = ws.recv_frame(3)
        assert f.opcode == OP_PONG and f.payload == b"up", f"{where}: {f}"
        c.send(frame(0x8, b"\x03\xe8"))
