#!/usr/bin/python3
"""Builds bench/results/summary.md from the JSON lines that run.sh wrote
(bench/results/<scenario>-<server>.json) and prints it.

  summarize.py [RESULTS_DIR] [--runtime SECONDS]

One row per scenario/metric: scenario | gohub | Node ws | gohub ÷ Node | target | met?
Targets are issue 4's. The floor (gohub-floor, a minimal C room server: fanout-floor.json,
echo-*-floor.json) gets its own table: gohub, floor and Node side by side with gohub ÷ floor
and floor ÷ Node. The cluster scenario (cluster.json, scripts/bench/cluster.sh) gets its
own table: 6 nodes next to the single-node gohub figures of the same run."""
import argparse, datetime, json, os, platform, re, subprocess, sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
SERVERS = ("gohub", "node")
IDLE_POINTS = (2000, 10000, 18000)


def load(d, scenario, server):
    p = os.path.join(d, "%s-%s.json" % (scenario, server))
    try:
        with open(p) as f:
            lines = [l for l in f.read().splitlines() if l.strip()]
        return json.loads(lines[-1]) if lines else None
    except (OSError, ValueError):
        return None


def num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def fmt(v, unit="", digits=0):
    if not num(v):
        return "—"
    if digits == 0:
        s = "{:,.0f}".format(v)
    else:
        s = "{:,.{d}f}".format(v, d=digits)
    return s + unit


def ratio(g, n, digits=2):
    if not (num(g) and num(n)) or n == 0:
        return "—"
    return "{:.{d}f}×".format(g / n, d=digits)


def met(ok):
    if ok is None:
        return "—"
    return "yes" if ok else "**no**"


def slope(points):
    """Least-squares slope of RSS bytes vs connections over (conns, rss_bytes) points."""
    pts = [(c, r) for c, r in points if num(c) and num(r)]
    if len(pts) < 2:
        return None
    n = len(pts)
    mx = sum(c for c, _ in pts) / n
    my = sum(r for _, r in pts) / n
    sxx = sum((c - mx) ** 2 for c, _ in pts)
    if sxx == 0:
        return None
    return sum((c - mx) * (r - my) for c, r in pts) / sxx


def get(d, k):
    return d.get(k) if isinstance(d, dict) else None


def machine():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    def out(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    ws_version = ""
    try:
        with open(os.path.join(ROOT, "build/bench-node/node_modules/ws/package.json")) as f:
            ws_version = json.load(f)["version"]
    except (OSError, ValueError, KeyError):
        pass
    rev = out(["git", "rev-parse", "--short", "HEAD"])
    if rev and out(["git", "status", "--porcelain", "--untracked-files=no"]):
        rev += " (with uncommitted changes)"
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "kernel": platform.release(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "node": out(["node", "--version"]),
        "ws": ws_version,
        "commit": rev,
    }


def steps_line(st):
    parts = []
    for x in st:
        ok = num(get(x, "p99_ms")) and x["p99_ms"] <= 20 and not get(x, "lost")
        parts.append("%s → %s/s p99 %s ms%s%s" % (
            fmt(get(x, "rate")), fmt(get(x, "delivered_per_s")), fmt(get(x, "p99_ms"), "", 1),
            (", lost %s" % fmt(x["lost"])) if get(x, "lost") else "", "" if ok else " ✗"))
    return "; ".join(parts)


def floor_table(d):
    """gohub, the floor and Node side by side for fan-out and echo (empty without floor runs)."""
    fan = {s: load(d, "fanout", s) for s in ("gohub", "floor", "node")}
    echo = {(t, s): load(d, "echo-%s" % t, s) for t in ("ping", "lookup") for s in ("gohub", "floor", "node")}
    if fan["floor"] is None and echo[("ping", "floor")] is None and echo[("lookup", "floor")] is None:
        return []
    rows = []

    def row(name, vals, unit, digits=0):
        g, f, n = vals
        rows.append("| %s | %s | %s | %s | %s | %s |" % (
            name, fmt(g, unit, digits), fmt(f, unit, digits), fmt(n, unit, digits), ratio(g, f), ratio(f, n)))

    best = {s: get(fan[s], "best") for s in fan}
    order = ("gohub", "floor", "node")
    row("fan-out: best delivered msgs/s, p99 ≤ 20 ms, 0 loss (10k clients, 100 rooms)",
        [get(best[s], "delivered_per_s") for s in order], "/s")
    row("fan-out: publish rate of that step", [get(best[s], "rate") for s in order], " msg/s")
    row("fan-out: p99 at that step", [get(best[s], "p99_ms") for s in order], " ms", 2)
    row("fan-out: server CPU per delivery at that step",
        [get(best[s], "server_us_per_delivery") for s in order], " µs", 1)
    # the cost per delivery falls as the rate grows (fewer receiver wake-ups
    # per frame), so compare it at one rate too: the highest step that every
    # server's best run passed
    passed = {}
    for s in order:
        st = get(fan[s], "steps")
        passed[s] = {round(x["rate"], 1): x for x in st if num(get(x, "rate")) and num(get(x, "p99_ms"))
                     and x["p99_ms"] <= 20 and not get(x, "lost")} if isinstance(st, list) else {}
    common = set.intersection(*(set(v) for v in passed.values()))
    if common:
        r = max(common)
        row("fan-out: server CPU per delivery at %s msg/s (highest step all passed)" % fmt(r),
            [get(passed[s][r], "server_us_per_delivery") for s in order], " µs", 1)
    runs = [get(fan[s], "runs") for s in order]
    if all(isinstance(x, list) and len(x) > 1 for x in runs):
        rows.append("| fan-out: best delivered msgs/s of each run | %s | — | — |" % " | ".join(
            " / ".join(fmt(v) for v in x) for x in runs))
    for t, what in (("ping", "`ping`→`pong`"), ("lookup", "`lookup` (table lookup + reply)")):
        row("dispatch: %s, 100 conns closed loop (floor: C, no Lua)" % what,
            [get(echo[(t, s)], "replies_per_s") for s in order], "/s")
        row("dispatch %s: server CPU per reply" % t,
            [get(echo[(t, s)], "server_us_per_reply") for s in order], " µs", 1)
    return ["### Against the floor: a minimal C room server, same run", "",
            "gohub-floor (src/bench/floor/floor.c): one thread, one epoll loop, plain libc; the Node hub's "
            "protocol subset and replies, fields found by string search, each room message framed once and "
            "sent with one send() per recipient. It runs the fan-out and echo scenarios in the same "
            "alternation as gohub and Node, best of the same number of runs. gohub ÷ floor near 1× means "
            "gohub costs what the kernel costs; floor ÷ Node is about the most a server that sends each "
            "delivery with its own send() can gain over Node on this machine.", "",
            "| scenario | gohub | floor (C) | Node ws | gohub ÷ floor | floor ÷ Node |",
            "|---|---:|---:|---:|---:|---:|"] + rows + [""]


def cluster_table(d):
    """Rows for cluster.json (6 nodes on NATS) next to the single-node gohub runs."""
    try:
        with open(os.path.join(d, "cluster.json")) as f:
            c = json.loads(f.read().strip().splitlines()[-1])
    except (OSError, ValueError, IndexError):
        return []
    hold, fan = get(c, "hold") or {}, get(c, "fanout") or {}
    nodes, conns = get(c, "nodes"), get(c, "conns")
    single_fan = get(load(d, "fanout", "gohub"), "best")
    single_idle = load(d, "idle-18000", "gohub")
    rows = []

    def row(name, cv, sv, r=""):
        rows.append("| %s | %s | %s | %s |" % (name, cv, sv, r))

    row("connections held (failed)", "%s (%s)" % (fmt(get(hold, "connected")), fmt(get(hold, "failed"))),
        "%s (%s)" % (fmt(get(single_idle, "connected")), fmt(get(single_idle, "failed"))) if single_idle else "—")
    row("connect + join time", fmt(get(hold, "connect_s"), " s", 1),
        fmt(get(single_idle, "connect_s"), " s", 1))
    tot = get(c, "rss_total_kb")
    row("RSS, all nodes (VmRSS)", fmt(tot / 1024 if num(tot) else None, " MB", 1),
        fmt(get(single_idle, "rss_after_kb") / 1024 if num(get(single_idle, "rss_after_kb")) else None, " MB", 1))
    per = get(c, "rss_by_node_kb") or []
    if per:
        row("RSS per node", " / ".join(fmt(x / 1024 if num(x) else None, "", 1) for x in per) + " MB", "—")
    row("bytes per connection (RSS growth ÷ conns)", fmt(get(c, "bytes_per_conn"), " B"),
        fmt(get(single_idle, "bytes_per_conn"), " B"), ratio(get(c, "bytes_per_conn"), get(single_idle, "bytes_per_conn")))
    nr = get(get(c, "nats_rss_kb"), "hold")
    row("nats-server RSS while holding", fmt(nr / 1024 if num(nr) else None, " MB", 1), "—")
    cb = get(c, "best") or {}
    sb = single_fan or {}
    row("fan-out: best delivered msgs/s, p99 ≤ 20 ms, 0 loss",
        fmt(get(cb, "delivered_per_s"), "/s"), fmt(get(sb, "delivered_per_s"), "/s"),
        ratio(get(cb, "delivered_per_s"), get(sb, "delivered_per_s")))
    row("fan-out: publish rate of that step", fmt(get(cb, "rate"), " msg/s"), fmt(get(sb, "rate"), " msg/s"),
        ratio(get(cb, "rate"), get(sb, "rate")))
    row("fan-out: p99 at that step", fmt(get(cb, "p99_ms"), " ms", 2), fmt(get(sb, "p99_ms"), " ms", 2))
    row("fan-out: server CPU per delivery (all nodes)", fmt(get(cb, "server_us_per_delivery"), " µs", 1),
        fmt(get(sb, "server_us_per_delivery"), " µs", 1),
        ratio(get(cb, "server_us_per_delivery"), get(sb, "server_us_per_delivery")))
    out = ["### Cluster: %s nodes on NATS, %s connections" % (fmt(nodes), fmt(conns)), "",
           "Command: `make bench` (scripts/bench/cluster.sh; alone: `scripts/bench/cluster.sh`, then "
           "`scripts/bench/summarize.py`). One nats-server and %s gohub nodes (%s worker each, "
           "presence events and rate limits off) on this machine, with gohub-bench; %s connections in "
           "%s rooms, each room's members spread round-robin over all nodes; fan-out with one publisher "
           "per room, all on node1, so %s of %s deliveries cross the bus. Single node: the idle-18,000 "
           "and fan-out (10,000 clients in 100 rooms) gohub runs above (100 subscribers per room; "
           "the cluster: %s)."
           % (fmt(nodes), os.environ.get("BENCH_GOHUB_WORKERS", "1"), fmt(conns), fmt(get(c, "rooms")),
              fmt(nodes - 1 if num(nodes) else None), fmt(nodes),
              fmt(conns / get(c, "rooms") if num(conns) and num(get(c, "rooms")) and get(c, "rooms") else None)),
           "",
           "| | %s nodes, %s conns | single node | cluster ÷ single |" % (fmt(nodes), fmt(conns)),
           "|---|---:|---:|---:|"]
    out.extend(rows)
    out.append("")
    st = get(fan, "steps")
    if isinstance(st, list) and st:
        out.append("Cluster fan-out steps (publish rate msg/s → delivered, p99; ✗ = over 20 ms or loss):")
        rr = get(fan, "runs")
        runs = " (best of %d runs: %s)" % (len(rr), ", ".join(fmt(x, "/s") for x in rr)) \
            if isinstance(rr, list) and len(rr) > 1 else ""
        out.append("- %s nodes%s: %s" % (fmt(nodes), runs, steps_line(st)))
        out.append("")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir", nargs="?", default=os.path.join(ROOT, "bench", "results"))
    ap.add_argument("--runtime", type=float)
    a = ap.parse_args()
    d = a.dir
    rows = []

    def row(name, g, n, r, target, ok):
        rows.append((name, g, n, r, target, met(ok)))

    # idle memory
    idle = {s: {c: load(d, "idle-%d" % c, s) for c in IDLE_POINTS} for s in SERVERS}
    for c in IDLE_POINTS:
        g, n = idle["gohub"][c], idle["node"][c]
        gk, nk = get(g, "rss_after_kb"), get(n, "rss_after_kb")
        target, ok = "", None
        if c == 10000:
            target = "≤ 40 MB"
            ok = gk / 1024 <= 40 if num(gk) else None
        row("idle RSS, %s conns in 100 rooms" % fmt(c), fmt(gk / 1024 if num(gk) else None, " MB", 1),
            fmt(nk / 1024 if num(nk) else None, " MB", 1), ratio(gk, nk), target, ok)
    for c in IDLE_POINTS:
        gb, nb = get(idle["gohub"][c], "bytes_per_conn"), get(idle["node"][c], "bytes_per_conn")
        row("idle bytes/conn at %s (RSS growth ÷ conns)" % fmt(c), fmt(gb, " B"), fmt(nb, " B"), ratio(gb, nb),
            "", None)
    sl = {}
    for s in SERVERS:
        pts = []
        for c in IDLE_POINTS:
            r = idle[s][c]
            if r and num(get(r, "rss_after_kb")):
                pts.append((get(r, "connected") or c, r["rss_after_kb"] * 1024))
        sl[s] = slope(pts) if len(pts) == len(IDLE_POINTS) else None
    row("idle marginal bytes/conn (slope, 2k–18k)", fmt(sl["gohub"], " B"), fmt(sl["node"], " B"),
        ratio(sl["gohub"], sl["node"]), "≤ 2,048 B", sl["gohub"] <= 2048 if num(sl["gohub"]) else None)

    # connect rate
    g, n = load(d, "connect", "gohub"), load(d, "connect", "node")
    gv, nv = get(g, "handshakes_per_s"), get(n, "handshakes_per_s")
    row("connect rate, 10,000 handshakes", fmt(gv, "/s"), fmt(nv, "/s"), ratio(gv, nv), "≥ 20,000/s",
        gv >= 20000 if num(gv) else None)
    for s, r in (("gohub", g), ("node", n)):
        if r and get(r, "failed"):
            print("note: connect %s: %s failed handshakes" % (s, r["failed"]), file=sys.stderr)

    # fan-out
    g, n = load(d, "fanout", "gohub"), load(d, "fanout", "node")
    gb, nb = get(g, "best"), get(n, "best")
    gv, nv = get(gb, "delivered_per_s"), get(nb, "delivered_per_s")
    row("fan-out: best delivered msgs/s, p99 ≤ 20 ms, 0 loss (10k clients, 100 rooms)", fmt(gv, "/s"),
        fmt(nv, "/s"), ratio(gv, nv), "≥ 2× Node", (gv >= 2 * nv) if num(gv) and num(nv) else None)
    row("fan-out: publish rate of that step", fmt(get(gb, "rate"), " msg/s"), fmt(get(nb, "rate"), " msg/s"),
        ratio(get(gb, "rate"), get(nb, "rate")), "", None)
    row("fan-out: p99 at that step", fmt(get(gb, "p99_ms"), " ms", 2), fmt(get(nb, "p99_ms"), " ms", 2),
        ratio(get(gb, "p99_ms"), get(nb, "p99_ms")), "≤ 20 ms",
        get(gb, "p99_ms") <= 20 if num(get(gb, "p99_ms")) else None)
    gu, nu = get(gb, "server_us_per_delivery"), get(nb, "server_us_per_delivery")
    row("fan-out: server CPU per delivery at that step", fmt(gu, " µs", 1), fmt(nu, " µs", 1), ratio(gu, nu),
        "≤ 12 µs", gu <= 12 if num(gu) else None)

    # Lua dispatch
    for t in ("ping", "lookup"):
        g, n = load(d, "echo-%s" % t, "gohub"), load(d, "echo-%s" % t, "node")
        gv, nv = get(g, "replies_per_s"), get(n, "replies_per_s")
        what = "`ping`→`pong`" if t == "ping" else "custom `lookup` handler (table lookup + reply)"
        row("Lua dispatch: %s, 100 conns closed loop" % what, fmt(gv, "/s"), fmt(nv, "/s"), ratio(gv, nv),
            "≥ 2.5× Node", (gv >= 2.5 * nv) if num(gv) and num(nv) else None)
        for s, r in (("gohub", g), ("node", n)):
            if r and get(r, "errors"):
                print("note: echo-%s %s: %s error replies" % (t, s, r["errors"]), file=sys.stderr)

    # callgrind
    cg = load(d, "callgrind", "gohub")
    pm, pr = get(cg, "instr_per_room_message"), get(cg, "instr_per_extra_recipient")
    row("instructions per inbound `room_message` (callgrind, 1 worker)", fmt(pm), "—", "—", "≤ 10,000",
        pm <= 10000 if num(pm) else None)
    row("instructions per additional recipient (callgrind)", fmt(pr), "—", "—", "≤ 300",
        pr <= 300 if num(pr) else None)

    m = machine()
    out = []
    out.append("## Benchmark results")
    out.append("")
    out.append("Command: `make bench` (scripts/bench/run.sh). Date: %s. Machine: %s, %d cores, Linux %s."
               % (m["date"], m["cpu"], m["cores"] or 0, m["kernel"]))
    out.append("gohub %s with %s; Node ws hub: ws %s on Node %s, one process (Node's usual deployment). "
               "Server and load generator (gohub-bench) share the machine, over loopback."
               % (m["commit"] or "", "%s worker(s) (server.workers)" % os.environ.get("BENCH_GOHUB_WORKERS", "1"),
                  m["ws"] or "?", m["node"] or "?"))
    note = os.environ.get("BENCH_NOTE")
    if note:
        out.append(note)
    extra = []
    if a.runtime:
        extra.append("Total runtime: %.0f s." % a.runtime)
    if os.environ.get("BENCH_LOADAVG_START"):
        extra.append("Load average before the run: %s." % os.environ["BENCH_LOADAVG_START"])
    if extra:
        out.append(" ".join(extra))
    out.append("")
    out.append("| scenario | gohub | Node ws | gohub ÷ Node | target | met? |")
    out.append("|---|---:|---:|---:|---|---|")
    for r in rows:
        out.append("| %s |" % " | ".join(r))
    out.append("")
    out.extend(floor_table(d))
    steps = []
    for s, label in (("gohub", "gohub"), ("floor", "floor (C)"), ("node", "Node ws")):
        r = load(d, "fanout", s)
        st = get(r, "steps")
        if isinstance(st, list) and st:
            parts = []
            for x in st:
                ok = num(get(x, "p99_ms")) and x["p99_ms"] <= 20 and not get(x, "lost")
                parts.append("%s → %s/s p99 %s ms%s%s" % (
                    fmt(get(x, "rate")), fmt(get(x, "delivered_per_s")), fmt(get(x, "p99_ms"), "", 1),
                    (", lost %s" % fmt(x["lost"])) if get(x, "lost") else "", "" if ok else " ✗"))
            steps.append("- %s: %s" % (label, "; ".join(parts)))
    if steps:
        out.append("Fan-out steps (publish rate msg/s → delivered, p99; ✗ = over 20 ms or loss):")
        out.extend(steps)
        out.append("")
    out.extend(cluster_table(d))
    text = "\n".join(out)
    with open(os.path.join(d, "summary.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
