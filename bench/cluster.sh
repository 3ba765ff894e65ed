#!/usr/bin/env bash
# The cluster's speed figures (issue #25): the release broker as one node without `cluster:`
# against two nodes of a cluster on one nats-server (JetStream), every node `shards: 1`,
# `pin_shards: false`, all on 127.0.0.1 on this machine (with the generator).
#   closed: `pairs -n 8` QoS 0, closed loop (throughput).
#   open:   `pairs -n 8` QoS 0, open loop at 1,000 msg/s per publisher (latency).
# On the cluster each pair's publisher is on one node and its subscriber on the other
# (`--url node1,node2`). samenode: the closed-loop run with every client on node 1 of the cluster
# (nothing crosses: what the cluster link costs a node's local traffic). CPU is read from /proc for the PIDs given to amqtt-bench: the single
# node's; the cluster's nodes and nats-server, printed both ways (nodes only, nodes + nats).
# ROUNDS rounds (3), each running both set-ups; DURATION seconds a run (3). Prints one line a run
# and the medians. Processes started here are stopped by their PIDs.
# BASE=/path/to/another/amqtt: each round also runs the cross closed loop on a cluster of that
# build (base-cross-closed), right after this build's, so that a change is compared within one
# machine state.
#
#   bench/cluster.sh
#   ROUNDS=5 DURATION=5 bench/cluster.sh
#   cp target/release/amqtt /tmp/amqtt-before; (change, build); BASE=/tmp/amqtt-before bench/cluster.sh
set -euo pipefail

cd "$(dirname "$0")/.."
rounds=${ROUNDS:-3}
duration=${DURATION:-3}
nats_bin=${NATS_SERVER:-$(command -v nats-server || echo /usr/sbin/nats-server)}
bin=${CARGO_TARGET_DIR:-$PWD/target}/release
if [ ! -x "$bin/amqtt" ] || [ ! -x "$bin/amqtt-bench" ]; then
    cargo build --release --bin amqtt && cargo build --release -p bench
fi
work=$(mktemp -d /tmp/amqtt-cluster-bench.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() { # port
    for _ in $(seq 500); do
        if python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.2)' "$1" 2>/dev/null; then
            return 0
        fi
        sleep 0.02
    done
    echo "nothing listens on port $1" >&2
    return 1
}
wait_log() { # file, text
    for _ in $(seq 750); do grep -q "$2" "$1" && return 0; sleep 0.02; done
    echo "no '$2' in $1:" >&2; tail -20 "$1" >&2
    return 1
}

node_config() { # file, port, then optional node name and nats port
    cat >"$1" <<EOF
listeners:
  default:
    bind: 127.0.0.1:$2
sys_interval: 0
shards: 1
pin_shards: false
connection_messages: false
EOF
    if [ -n "${3:-}" ]; then
        printf 'cluster:\n  node: %s\n  nats: [nats://127.0.0.1:%s]\n' "$3" "$4" >>"$1"
    fi
}

# Started process PIDs, as the last start_* left them.
single_pid= nats_pid= node1_pid= node2_pid=
start_single() {
    "$bin/amqtt" -c "$work/single.yaml" >"$work/single.log" 2>&1 &
    single_pid=$!; pids+=("$single_pid")
    wait_port "$single_port"
}
start_cluster() { # optional: the amqtt binary (this build's by default)
    local amqtt=${1:-$bin/amqtt}
    rm -rf "$work/nats"
    "$nats_bin" -js -sd "$work/nats" -a 127.0.0.1 -p "$nats_port" >"$work/nats.log" 2>&1 &
    nats_pid=$!; pids+=("$nats_pid")
    wait_port "$nats_port"
    : >"$work/node1.log"; : >"$work/node2.log"
    "$amqtt" -c "$work/node1.yaml" >"$work/node1.log" 2>&1 &
    node1_pid=$!; pids+=("$node1_pid")
    "$amqtt" -c "$work/node2.yaml" >"$work/node2.log" 2>&1 &
    node2_pid=$!; pids+=("$node2_pid")
    wait_log "$work/node1.log" "joined cluster"
    wait_log "$work/node2.log" "joined cluster"
}
stop() { # PIDs
    for pid in "$@"; do kill "$pid"; done
    for pid in "$@"; do wait "$pid" 2>/dev/null || true; done
}

# run LABEL amqtt-bench ARGS... : one run, one line, and its figures kept.
run() {
    local label=$1; shift
    local json
    json=$("$bin/amqtt-bench" "$@" --duration "$duration" --json -q)
    python3 - "$label" "$json" "$work/figures" "$nats_pid" <<'PY'
import json, sys
label, r, out, nats_pid = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
b = r["broker"]
cpu_all = b["cpu_s"]
# Nodes only: every process but nats-server (one process: the single node).
cpu_nodes = sum(p["cpu_s"] for p in b["processes"] if str(p["pid"]) != nats_pid) \
    if b["processes"] else cpu_all
n = r["delivered"]
per_nodes = n / cpu_nodes if cpu_nodes > 0 else 0.0
per_all = n / cpu_all if cpu_all > 0 else 0.0
lat = r["latency_us"]
print(f"{label}: delivered {r['delivered_per_s']:,.0f}/s, per CPU-s {per_nodes:,.0f} (nodes) "
      f"{per_all:,.0f} (with nats), CPU-s {cpu_nodes:.2f} nodes {cpu_all:.2f} all, "
      f"p50 {lat['p50']:.0f} us p99 {lat['p99']:.0f} us, lost {r['lost']}")
with open(out, "a") as f:
    f.write("\t".join(map(str, [label, r["delivered_per_s"], per_nodes, per_all, lat["p50"],
                                lat["p99"], r["lost"]])) + "\n")
PY
}

single_port=$(free_port); nats_port=$(free_port); port1=$(free_port); port2=$(free_port)
node_config "$work/single.yaml" "$single_port"
node_config "$work/node1.yaml" "$port1" node-1 "$nats_port"
node_config "$work/node2.yaml" "$port2" node-2 "$nats_port"
open=(--rate 1000 --warmup 1)

for round in $(seq "$rounds"); do
    start_single
    run single-closed pairs --url "mqtt://127.0.0.1:$single_port" -n 8 --broker-pid "$single_pid"
    run single-open pairs --url "mqtt://127.0.0.1:$single_port" -n 8 "${open[@]}" --broker-pid "$single_pid"
    stop "$single_pid"
    start_cluster
    urls="mqtt://127.0.0.1:$port1,mqtt://127.0.0.1:$port2"
    cluster_pids="$node1_pid,$node2_pid,$nats_pid"
    run cross-closed pairs --url "$urls" -n 8 --broker-pid "$cluster_pids"
    run samenode-closed pairs --url "mqtt://127.0.0.1:$port1" -n 8 --broker-pid "$cluster_pids"
    run cross-open pairs --url "$urls" -n 8 "${open[@]}" --broker-pid "$cluster_pids"
    stop "$node1_pid" "$node2_pid" "$nats_pid"
    if [ -n "${BASE:-}" ]; then
        start_cluster "$BASE"
        run base-cross-closed pairs --url "$urls" -n 8 --broker-pid "$node1_pid,$node2_pid,$nats_pid"
        stop "$node1_pid" "$node2_pid" "$nats_pid"
    fi
done

python3 - "$work/figures" <<'PY'
import statistics, sys
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1])]
def med(label, column):
    return statistics.median(float(r[column]) for r in rows if r[0] == label)
print("\nmedians of", len([r for r in rows if r[0] == "single-closed"]), "rounds:")
print("| run | delivered/s | per node CPU-s | per node+nats CPU-s | p50 µs | p99 µs | lost |")
print("|---|---:|---:|---:|---:|---:|---:|")
labels = ["single-closed", "samenode-closed", "cross-closed", "single-open", "cross-open"]
if any(r[0] == "base-cross-closed" for r in rows):
    labels.append("base-cross-closed")
for label in labels:
    print(f"| {label} | {med(label, 1):,.0f} | {med(label, 2):,.0f} | {med(label, 3):,.0f} | "
          f"{med(label, 4):,.0f} | {med(label, 5):,.0f} | {med(label, 6):.0f} |")
for column, what in ((2, "nodes' CPU"), (3, "nodes' + nats-server's CPU")):
    ratio = med("cross-closed", column) / med("single-closed", column)
    print(f"cross-node per CPU-s / single node per CPU-s, counting the {what}: {ratio:.2f} "
          f"(target >= 0.50)")
if "base-cross-closed" in labels:
    for column, what in ((2, "nodes' CPU"), (3, "nodes' + nats-server's CPU")):
        ratio = med("cross-closed", column) / med("base-cross-closed", column)
        print(f"cross-node per CPU-s, this build / BASE, counting the {what}: {ratio:.2f}")
PY
