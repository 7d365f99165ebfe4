#!/usr/bin/env bash
# The cluster scenario of `make bench` (issue 6, "Scale on one box"): one
# nats-server and 6 gohub nodes on this machine, 100,000 connections in 1,000
# rooms whose members are spread over all nodes (gohub-bench --ports: member k
# of a room goes to node (room + k) mod 6, so ~16,700 connections per node,
# under the 20,000 open files a process may hold here).
#
#   1. hold: 100,000 connections, each in one of 1,000 rooms; RSS (VmRSS) of
#      every node before and after, total and per node, bytes per connection
#      (RSS growth of the 6 nodes / connections), nats-server's RSS.
#   2. fanout (best of BENCH_REPEAT=2 runs): the same 100,000 subscribers
#      (connected again), one publisher per room, every publisher on node1
#      (--pub-port), so 5/6 of the deliveries cross the bus; rate stepped like the single-node fan-out
#      (same ×1.25 grid, starting 3 steps lower: 77, 96, 120, 150, 188...
#      msg/s): the highest delivered msgs/s with p99 <= 20 ms and no loss.
#
# Writes bench/results/cluster-hold.{json,log}, cluster-fanout.runN.{json,log}
# and the best of them as cluster-fanout.json,
# node logs cluster-nodeN.server.log, and bench/results/cluster.json (both
# JSON lines plus per-node RSS and the nats-server figures), which
# summarize.py puts next to the single-node fan-out (fanout-gohub.json) of
# the same run. Everything it starts is stopped by PID, also on failure.
#
#   scripts/bench/cluster.sh                 (run.sh calls it; standalone works too)
# Knobs: GOHUB_BIN, GOHUB_BENCH, BENCH_CLUSTER_NODES=6, BENCH_CLUSTER_CONNS=100000,
#        BENCH_CLUSTER_ROOMS=1000, BENCH_FANOUT_RATE=150, BENCH_FANOUT_FACTOR=1.25,
#        BENCH_STEP_S=3, BENCH_REPEAT=2, BENCH_GOHUB_WORKERS=1 (per node),
#        BENCH_RESULTS=bench/results
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"

PY=/usr/bin/python3
GOHUB=${GOHUB_BIN:-build/release/gohub}
BENCH=${GOHUB_BENCH:-build/release/gohub-bench}
CONFIG=configs/gohub.yaml
RESULTS=${BENCH_RESULTS:-bench/results}
NODES=${BENCH_CLUSTER_NODES:-6}
CONNS=${BENCH_CLUSTER_CONNS:-100000}
ROOMS=${BENCH_CLUSTER_ROOMS:-1000}
FANOUT_RATE=${BENCH_FANOUT_RATE:-150}
FANOUT_FACTOR=${BENCH_FANOUT_FACTOR:-1.25}
STEP_S=${BENCH_STEP_S:-3}
REPEAT=${BENCH_REPEAT:-2}
# the single-node grid, 3 steps lower: a cluster step costs more CPU per delivery
CLUSTER_RATE=$("$PY" -c "print(round($FANOUT_RATE / $FANOUT_FACTOR ** 3, 3))")

T0=$(date +%s)
NATS_PID=""
NODE_PIDS=()
NODE_PORTS=()
CHILD_PID=""

log() { printf '[cluster %4ds] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }

free_port() {
    "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

listening() { [ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]; }

# stop_pid PID WHAT: SIGTERM, SIGKILL after 15 s, reap
stop_pid() {
    local pid=$1 what=$2 i
    [ -n "$pid" ] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null
        for i in $(seq 1 150); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "$what ($pid) ignored SIGTERM for 15 s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null
        fi
    fi
    wait "$pid" 2>/dev/null
}

stop_all() {
    local pid
    if [ -n "$CHILD_PID" ] && kill -0 "$CHILD_PID" 2>/dev/null; then
        kill -TERM "$CHILD_PID" 2>/dev/null
        wait "$CHILD_PID" 2>/dev/null
    fi
    CHILD_PID=""
    # the nodes in parallel (each may take a few s to close its connections)
    for pid in "${NODE_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null
    done
    for pid in "${NODE_PIDS[@]}"; do
        stop_pid "$pid" "gohub node"
    done
    NODE_PIDS=()
    stop_pid "$NATS_PID" nats-server
    NATS_PID=""
}

cleanup() {
    local rc=$?
    stop_all
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# run CMD... in the background and wait, so a signal runs the traps at once
run_child() {
    "$@" &
    CHILD_PID=$!
    wait "$CHILD_PID"
    local rc=$?
    CHILD_PID=""
    return $rc
}

fail() {
    log "FAILED: $*"
    exit 1
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo null; }

# cluster_clients PORT: the cluster-wide client_count of /api/stats
cluster_clients() {
    curl -s --max-time 2 "http://127.0.0.1:$1/api/stats" |
        "$PY" -c 'import json,sys; print(json.load(sys.stdin).get("client_count", -1))' 2>/dev/null || echo -1
}

node_count() {
    curl -s --max-time 2 "http://127.0.0.1:$1/api/stats" |
        "$PY" -c 'import json,sys; print(json.load(sys.stdin).get("node_count", -1))' 2>/dev/null || echo -1
}

for f in "$GOHUB" "$BENCH"; do
    [ -x "$f" ] || { echo "cluster.sh: $f not found: run \`make all\` first" >&2; exit 1; }
done
command -v nats-server >/dev/null || { echo "cluster.sh: nats-server not found (scripts/setup.sh)" >&2; exit 1; }
mkdir -p "$RESULTS"
rm -f "$RESULTS"/cluster.json "$RESULTS"/cluster-*.json "$RESULTS"/cluster-*.log "$RESULTS"/cluster-*.stderr

# ---- start -----------------------------------------------------------------

NATS_PORT=$(free_port)
nats-server -a 127.0.0.1 -p "$NATS_PORT" >"$RESULTS/cluster-nats.server.log" 2>&1 &
NATS_PID=$!
for i in $(seq 1 100); do
    listening "$NATS_PORT" && break
    kill -0 "$NATS_PID" 2>/dev/null || break
    sleep 0.1
done
listening "$NATS_PORT" || fail "nats-server did not start (see $RESULTS/cluster-nats.server.log)"

for n in $(seq 1 "$NODES"); do
    port=$(free_port)
    env GOHUB_SERVER_ADDR="127.0.0.1:$port" GOHUB_LOG_LEVEL=warn \
        GOHUB_SERVER_WORKERS="${BENCH_GOHUB_WORKERS:-1}" \
        GOHUB_ROOMS_PRESENCE_EVENTS=false GOHUB_LUA_PATH="$ROOT/lua" GOHUB_LUA_WATCH=false \
        GOHUB_SERVER_SHUTDOWN_TIMEOUT=3s GOHUB_LIMITS_MESSAGES_PER_SECOND=0 \
        GOHUB_CLUSTER_ENABLED=true GOHUB_CLUSTER_BUS_TYPE=nats \
        GOHUB_CLUSTER_NATS_URLS="nats://127.0.0.1:$NATS_PORT" GOHUB_CLUSTER_NODE_ID="node$n" \
        "$GOHUB" -c "$CONFIG" >"$RESULTS/cluster-node$n.server.log" 2>&1 &
    NODE_PIDS+=($!)
    NODE_PORTS+=("$port")
done
for n in $(seq 1 "$NODES"); do
    port=${NODE_PORTS[$((n - 1))]}
    for i in $(seq 1 150); do
        listening "$port" && break
        kill -0 "${NODE_PIDS[$((n - 1))]}" 2>/dev/null || break
        sleep 0.1
    done
    listening "$port" || fail "node$n did not start (see $RESULTS/cluster-node$n.server.log)"
done
# every node sees all the others (heartbeats every 2 s)
for i in $(seq 1 100); do
    ok=1
    for port in "${NODE_PORTS[@]}"; do
        [ "$(node_count "$port")" = "$NODES" ] || { ok=0; break; }
    done
    [ $ok = 1 ] && break
    sleep 0.2
done
[ $ok = 1 ] || fail "the $NODES nodes did not see each other within 20 s"
PORTS=$(IFS=,; echo "${NODE_PORTS[*]}")
PIDS=$(IFS=,; echo "${NODE_PIDS[*]}")
NATS_RSS_START=$(rss_kb "$NATS_PID")
log "nats-server on $NATS_PORT and $NODES nodes on $PORTS up, each sees $NODES nodes"

# bench NAME TIMEOUT_S args...: runs gohub-bench, keeps its JSON line
bench() {
    local name=$1 limit=$2 rc t1 line
    shift 2
    t1=$(date +%s)
    run_child timeout -k 5 "$limit" "$BENCH" "$@" --ports "$PORTS" --pid "$PIDS" --label "gohub-${NODES}nodes" \
        >"$RESULTS/$name.log" 2>"$RESULTS/$name.stderr"
    rc=$?
    line=$(grep '^{' "$RESULTS/$name.log" | tail -n1)
    [ -n "$line" ] && printf '%s\n' "$line" >"$RESULTS/$name.json"
    for n in $(seq 1 "$NODES"); do
        kill -0 "${NODE_PIDS[$((n - 1))]}" 2>/dev/null ||
            fail "$name: node$n died (see $RESULTS/cluster-node$n.server.log)"
    done
    [ $rc -eq 0 ] && [ -n "$line" ] ||
        fail "$name: exit $rc after $(( $(date +%s) - t1 )) s (see $RESULTS/$name.log, .stderr)"
    log "$name: done in $(( $(date +%s) - t1 )) s"
}

# the connections of the previous run are gone from every node's view
drained() {
    local i
    for i in $(seq 1 150); do
        [ "$(cluster_clients "${NODE_PORTS[0]}")" = 0 ] && return 0
        sleep 0.2
    done
    fail "connections still counted 30 s after the run"
}

# ---- 1. hold ---------------------------------------------------------------

bench cluster-hold 180 hold --conns "$CONNS" --rooms "$ROOMS" --hold 2
NATS_RSS_HOLD=$(rss_kb "$NATS_PID")
drained

# ---- 2. cross-node fan-out ------------------------------------------------------
# best of REPEAT runs, like the single-node fan-out (a run disturbed by another
# process on this shared machine does not decide the result)

for i in $(seq 1 "$REPEAT"); do
    [ "$i" -gt 1 ] && drained
    bench "cluster-fanout.run$i" 240 fanout --conns "$CONNS" --rooms "$ROOMS" --pub-port "${NODE_PORTS[0]}" \
        --step --rate "$CLUSTER_RATE" --step-factor "$FANOUT_FACTOR" --duration "$STEP_S" --warmup 1
done
NATS_RSS_FANOUT=$(rss_kb "$NATS_PID")
NATS_CPU=$(awk '{print ($14 + $15)}' "/proc/$NATS_PID/stat" 2>/dev/null || echo 0)
NODE_RSS_END=()
for pid in "${NODE_PIDS[@]}"; do NODE_RSS_END+=("$(rss_kb "$pid")"); done

# ---- cluster.json -------------------------------------------------------------------

"$PY" - "$RESULTS" "$NODES" "$CONNS" "$ROOMS" "$NATS_RSS_START" "$NATS_RSS_HOLD" "$NATS_RSS_FANOUT" \
    "$NATS_CPU" "$(getconf CLK_TCK)" "$(( $(date +%s) - T0 ))" "$REPEAT" "${NODE_RSS_END[@]}" <<'PYEOF'
import json, os, sys
d, nodes, conns, rooms = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
repeat = int(sys.argv[11])
def num(s):
    try:
        return int(s)
    except ValueError:
        return None
nats = [num(x) for x in sys.argv[5:8]]
nats_cpu = float(sys.argv[8]) / float(sys.argv[9])
runtime = int(sys.argv[10])
rss_end = [num(x) for x in sys.argv[12:]]
def load(name):
    with open(os.path.join(d, name + ".json")) as f:
        return json.loads(f.read().strip().splitlines()[-1])
def best_rate(r):
    return (r.get("best") or {}).get("delivered_per_s") or 0
hold = load("cluster-hold")
runs = [load("cluster-fanout.run%d" % i) for i in range(1, repeat + 1)]
fan = dict(max(runs, key=best_rate))
fan["runs"] = [best_rate(r) for r in runs]
with open(os.path.join(d, "cluster-fanout.json"), "w") as f:
    f.write(json.dumps(fan) + "\n")
out = {
    "scenario": "cluster", "bus": "nats", "nodes": nodes, "conns": conns, "rooms": rooms,
    "hold": hold, "fanout": fan,
    "rss_total_kb": hold.get("rss_after_kb"),
    "rss_by_node_kb": hold.get("rss_after_by_pid_kb"),
    "rss_empty_by_node_kb": hold.get("rss_before_by_pid_kb"),
    "bytes_per_conn": hold.get("bytes_per_conn"),
    "rss_after_fanout_by_node_kb": rss_end,
    "nats_rss_kb": {"start": nats[0], "hold": nats[1], "after_fanout": nats[2]},
    "nats_cpu_s": round(nats_cpu, 2),
    "best": fan.get("best"),
    "runtime_s": runtime,
}
with open(os.path.join(d, "cluster.json"), "w") as f:
    f.write(json.dumps(out) + "\n")
b = fan.get("best") or {}
single = None
try:
    single = load("fanout-gohub").get("best")
except (OSError, ValueError, IndexError):
    pass
print("cluster: %d nodes, %s connections held (%s failed), RSS %s kB total (%s), %s bytes/conn"
      % (nodes, hold.get("connected"), hold.get("failed"), hold.get("rss_after_kb"),
         " ".join(str(x) for x in hold.get("rss_after_by_pid_kb") or []), hold.get("bytes_per_conn")))
print("cluster fan-out: best %s delivered/s at p99 %s ms (rate %s msg/s); single node: %s"
      % (b.get("delivered_per_s"), b.get("p99_ms"), b.get("rate"),
         "%s delivered/s at p99 %s ms" % (single.get("delivered_per_s"), single.get("p99_ms")) if single else "not run"))
PYEOF
log "done"
