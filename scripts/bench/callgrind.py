#!/usr/bin/python3
"""CPU cost of gohub in user-space instructions, measured with callgrind on a
fixed scripted workload (repeatable on a noisy machine).

gohub runs under `valgrind --tool=callgrind` with one worker, three times, with
identical connection setup and different traffic:

  setup (every run): P1 and S0 join room "cg-one"; P2 and S1..S101 join "cg-many"
  (a) baseline  no room messages
  (b) one       P1 sends N room_messages to "cg-one"   (1 recipient each)
  (c) many      P2 sends N room_messages to "cg-many"  (101 recipients each)

  instructions per inbound room_message = (Ir(b) - Ir(a)) / N
  instructions per additional recipient = (Ir(c) - Ir(b)) / (N * 100)

The publisher keeps at most --window messages in flight (sent but not yet
received by every subscriber), so valgrind keeps up and no queue limit is hit;
the run waits for every delivery, then closes every connection and stops
gohub with SIGTERM so callgrind writes its totals. Ir is read from the
"totals:" / "summary:" line of the callgrind output file.

  callgrind.py [--messages 5000] [--window 100] [--out bench/results/callgrind-gohub.json]

Prints a human summary and, last, one JSON line."""
import argparse, json, os, re, selectors, shutil, signal, socket, struct, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
from wsclient import WS, mask_frame  # noqa: E402

N_MANY = 101


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, proc, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("gohub exited during start (status %s)" % proc.returncode)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("gohub did not listen on %d within %ds" % (port, timeout))


def count_room_messages(ws):
    """Consume every complete frame in ws's buffer; return how many are room_message pushes."""
    n = 0
    b = ws.buf
    i = 0
    while len(b) - i >= 2:
        ln = b[i + 1] & 0x7F
        h = 2
        if ln == 126:
            if len(b) - i < 4:
                break
            ln = struct.unpack_from("!H", b, i + 2)[0]
            h = 4
        elif ln == 127:
            if len(b) - i < 10:
                break
            ln = struct.unpack_from("!Q", b, i + 2)[0]
            h = 10
        if len(b) - i < h + ln:
            break
        op = b[i] & 0x0F
        if op == 0x1 and b.find(b'"message_type":"room_message"', i + h, i + h + 80) >= 0:
            n += 1
        elif op == 0x9:
            ws.sock.sendall(mask_frame(bytes(b[i + h:i + h + ln]), 0xA))
        i += h + ln
    del b[:i]
    return n


def setup(port):
    def joined(room):
        c = WS(port, timeout=60)
        c.send_json({"message_type": "join_room", "message_id": 1, "data": {"room_id": room}})
        r = c.recv_type("room_joined", timeout=60)
        assert r["data"]["status"] == "joined", r
        return c
    conns = {"P1": joined("cg-one"), "S0": joined("cg-one"), "P2": joined("cg-many")}
    conns["many"] = [joined("cg-many") for _ in range(N_MANY)]
    # let presence events settle and drain them, so every run starts alike
    time.sleep(1.0)
    for c in [conns["P1"], conns["S0"], conns["P2"]] + conns["many"]:
        drain(c)
    return conns


def drain(c):
    c.sock.setblocking(False)
    try:
        while True:
            chunk = c.sock.recv(262144)
            if not chunk:
                break
            c.buf += chunk
    except BlockingIOError:
        pass
    c.sock.setblocking(True)
    count_room_messages(c)


def publish(pub, room, subs, n, window, timeout):
    """Send n room_messages from pub to room, window in flight; wait until every sub has all n."""
    frames = [mask_frame(('{"message_type":"room_message","data":{"room_id":"%s","content":'
                          '{"ts":%019d,"seq":%d,"pub":0}}}' % (room, 1700000000000000000 + k, k)).encode())
              for k in range(n)]
    sel = selectors.DefaultSelector()
    got = {}
    for s in subs:
        s.sock.setblocking(False)
        sel.register(s.sock, selectors.EVENT_READ, s)
        got[s] = 0
    pub.sock.setblocking(False)
    sel.register(pub.sock, selectors.EVENT_READ, pub)
    sent = 0
    deadline = time.monotonic() + timeout
    while True:
        low = min(got.values())
        if low >= n:
            break
        if sent < n and sent - low < window:
            k = min(n, low + window) - sent
            pub.sock.setblocking(True)
            pub.sock.sendall(b"".join(frames[sent:sent + k]))
            pub.sock.setblocking(False)
            sent += k
        if time.monotonic() > deadline:
            raise RuntimeError("deliveries incomplete after %ds: sent %d, slowest subscriber %d" % (timeout, sent, low))
        for key, _ in sel.select(1.0):
            c = key.data
            try:
                chunk = c.sock.recv(262144)
            except BlockingIOError:
                continue
            if not chunk:
                raise RuntimeError("connection closed by the server")
            c.buf += chunk
            m = count_room_messages(c)
            if c is pub and m:
                raise RuntimeError("the publisher received its own message")
            if c in got:
                got[c] += m
    sel.close()
    for s in subs + [pub]:
        s.sock.setblocking(True)
    return sent


def read_ir(path):
    total = None
    with open(path) as f:
        for line in f:
            m = re.match(r"^(totals|summary):\s+(\d+)", line)
            if m:
                total = int(m.group(2))  # totals: wins over summary: when both appear
                if m.group(1) == "totals":
                    break
    if total is None:
        raise RuntimeError("no totals/summary line in %s" % path)
    return total


def run_once(kind, n, window, tmp, binary, config, timeout):
    port = free_port()
    out = os.path.join(tmp, "callgrind.%s.out" % kind)
    env = dict(os.environ)
    env.update({"GOHUB_SERVER_ADDR": "127.0.0.1:%d" % port, "GOHUB_SERVER_WORKERS": "1",
                "GOHUB_LOG_LEVEL": "warn", "GOHUB_LUA_WATCH": "false",
                "GOHUB_SERVER_SHUTDOWN_TIMEOUT": "2s", "GOHUB_LIMITS_MESSAGES_PER_SECOND": "0"})
    log = open(os.path.join(tmp, "gohub.%s.log" % kind), "w")
    cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out, binary, "-c", config]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    t0 = time.monotonic()
    try:
        wait_port(port, proc, 120)
        conns = setup(port)
        sent = 0
        if kind == "one":
            sent = publish(conns["P1"], "cg-one", [conns["S0"]], n, window, timeout)
        elif kind == "many":
            sent = publish(conns["P2"], "cg-many", conns["many"], n, window, timeout)
        for c in [conns["P1"], conns["S0"], conns["P2"]] + conns["many"]:
            c.close()
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    if proc.returncode != 0:
        raise RuntimeError("gohub under callgrind exited %s (see %s)" % (proc.returncode, log.name))
    ir = read_ir(out)
    return {"kind": kind, "messages": sent, "ir": ir, "seconds": round(time.monotonic() - t0, 1)}


def main():
    # SIGTERM (e.g. from `timeout`) unwinds like Ctrl-C, so the finally blocks stop valgrind
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=5000)
    ap.add_argument("--window", type=int, default=100)
    ap.add_argument("--binary", default=os.path.join(ROOT, "build/release/gohub"))
    ap.add_argument("--config", default=os.path.join(ROOT, "configs/gohub.yaml"))
    ap.add_argument("--timeout", type=int, default=240, help="seconds allowed for one run's traffic")
    ap.add_argument("--out", help="also write the JSON line to this file")
    ap.add_argument("--keep", action="store_true", help="keep the callgrind files (printed)")
    a = ap.parse_args()
    if not shutil.which("valgrind"):
        print("callgrind.py: valgrind not installed (apt-get install valgrind)", file=sys.stderr)
        sys.exit(1)
    tmp = tempfile.mkdtemp(prefix="gohub-callgrind-")
    try:
        runs = {}
        for kind in ("baseline", "one", "many"):
            r = run_once(kind, a.messages, a.window, tmp, a.binary, a.config, a.timeout)
            runs[kind] = r
            print("callgrind %-8s Ir=%-13d messages=%d  (%.1fs)" % (kind, r["ir"], r["messages"], r["seconds"]),
                  flush=True)
        n = a.messages
        per_msg = (runs["one"]["ir"] - runs["baseline"]["ir"]) / n
        per_rcpt = (runs["many"]["ir"] - runs["one"]["ir"]) / (n * (N_MANY - 1))
        res = {"mode": "callgrind", "label": "gohub", "workers": 1, "messages": n, "window": a.window,
               "recipients_b": 1, "recipients_c": N_MANY,
               "ir_baseline": runs["baseline"]["ir"], "ir_one": runs["one"]["ir"], "ir_many": runs["many"]["ir"],
               "instr_per_room_message": round(per_msg), "instr_per_extra_recipient": round(per_rcpt)}
        print("instructions per inbound room_message: %.0f" % per_msg)
        print("instructions per additional recipient: %.0f" % per_rcpt)
        line = json.dumps(res)
        print(line)
        if a.out:
            os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
            with open(a.out, "w") as f:
                f.write(line + "\n")
    finally:
        if a.keep:
            print("callgrind files kept in", tmp, file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
