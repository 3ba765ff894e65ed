#!/usr/bin/env bash
# The issue #7 figures that `amqtt-bench compare` does not produce, measured on the release broker:
#   1. TLS vs plain TCP: one shard pinned to CPU 0 with a TCP and a TLS listener (certificate from a
#      throw-away local CA made here with openssl), generator on CPU 1, `pairs -n 8` QoS 0.
#   2. Cross-shard vs same-shard delivery: `shards: 2` (pinned; `max_inflight: 32`, the QoS 1 runs' window, as compare sets it), `pairs -n 8` at QoS 0 and 1 with
#      `--placement same` and `--placement cross`.
#   3. One shard vs two, unpinned (`pin_shards: false`), `pairs -n 8` QoS 0.
# ROUNDS rounds (3), each alternating the variants; DURATION seconds a run (3). Prints one line a
# run (delivered/s, delivered per broker CPU-second, broker cores, lost) and the ratios' medians.
# Needs 2 CPUs for (1) (taskset -c 0 / -c 1). Only 127.0.0.1; brokers are stopped by their PIDs.
#
#   bench/shards_tls.sh
#   ROUNDS=5 DURATION=5 bench/shards_tls.sh
set -euo pipefail

cd "$(dirname "$0")/.."
rounds=${ROUNDS:-3}
duration=${DURATION:-3}
bin=${CARGO_TARGET_DIR:-$PWD/target}/release
if [ ! -x "$bin/amqtt" ] || [ ! -x "$bin/amqtt-bench" ]; then
    cargo build --release --bin amqtt && cargo build --release -p bench
fi
work=$(mktemp -d /tmp/amqtt-shards-tls.XXXXXX)
broker_pid=
cleanup() { [ -n "$broker_pid" ] && kill "$broker_pid" 2>/dev/null; wait 2>/dev/null || true; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# A local CA and a server certificate for 127.0.0.1 signed by it.
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$work/ca.key" -out "$work/ca.pem" -days 2 \
    -subj "/CN=amqtt-bench CA" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout "$work/server.key" -out "$work/server.csr" \
    -subj "/CN=127.0.0.1" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\n' >"$work/ext.cnf"
openssl x509 -req -in "$work/server.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial \
    -out "$work/server.pem" -days 2 -extfile "$work/ext.cnf" 2>/dev/null

start_broker() { # config file, then optional taskset CPU list
    if [ -n "${2:-}" ]; then
        taskset -c "$2" "$bin/amqtt" -c "$1" >"$work/broker.log" 2>&1 &
    else
        "$bin/amqtt" -c "$1" >"$work/broker.log" 2>&1 &
    fi
    broker_pid=$!
    sleep 0.5
}
stop_broker() { kill "$broker_pid"; wait "$broker_pid" 2>/dev/null || true; broker_pid=; }

# run LABEL [taskset CPU list or -] amqtt-bench ARGS... : one run, one line, and its figures kept.
run() {
    local label=$1 cpus=$2; shift 2
    local json
    if [ "$cpus" = "-" ]; then
        json=$("$bin/amqtt-bench" "$@" --duration "$duration" --broker-pid "$broker_pid" --json -q)
    else
        json=$(taskset -c "$cpus" "$bin/amqtt-bench" "$@" --duration "$duration" --broker-pid "$broker_pid" --json -q)
    fi
    python3 - "$label" "$json" "$work/figures" <<'PY'
import json, sys
label, r, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
b = r["broker"]
print(f"{label}: delivered {r['delivered_per_s']:,.0f}/s, per broker CPU-s "
      f"{b['delivered_per_broker_cpu_s']:,.0f}, cores {b['cpu_cores']:.2f}, lost {r['lost']}")
with open(out, "a") as f:
    f.write(f"{label}\t{b['delivered_per_broker_cpu_s']}\t{r['delivered_per_s']}\n")
PY
}

tcp_port=$(free_port); tls_port=$(free_port); two_port=$(free_port); un_port=$(free_port)
cat >"$work/tls.yaml" <<EOF
listeners:
  default:
    bind: 127.0.0.1:$tcp_port
  secure:
    type: tcp
    bind: 127.0.0.1:$tls_port
    ssl: on
    certfile: $work/server.pem
    keyfile: $work/server.key
sys_interval: 0
shards: 1
connection_messages: false
EOF
cat >"$work/two.yaml" <<EOF
listeners:
  default:
    bind: 127.0.0.1:$two_port
sys_interval: 0
shards: 2
connection_messages: false
# QoS 1 runs keep 32 in flight per publisher: let them through, as \`amqtt-bench compare\` does.
max_inflight: 32
EOF
for n in 1 2; do
cat >"$work/unpinned$n.yaml" <<EOF
listeners:
  default:
    bind: 127.0.0.1:$un_port
sys_interval: 0
shards: $n
pin_shards: false
connection_messages: false
EOF
done

for round in $(seq "$rounds"); do
    start_broker "$work/tls.yaml" 0
    run "tcp" 1 pairs --url "mqtt://127.0.0.1:$tcp_port" -n 8
    run "tls" 1 pairs --url "mqtts://127.0.0.1:$tls_port" --cafile "$work/ca.pem" -n 8
    stop_broker
    start_broker "$work/two.yaml"
    for qos in 0 1; do
        run "same-qos$qos" - pairs --url "mqtt://127.0.0.1:$two_port" -n 8 --qos "$qos" --shards 2 --placement same
        run "cross-qos$qos" - pairs --url "mqtt://127.0.0.1:$two_port" -n 8 --qos "$qos" --shards 2 --placement cross
    done
    stop_broker
    for n in 1 2; do
        start_broker "$work/unpinned$n.yaml"
        run "unpinned-$n-shards" - pairs --url "mqtt://127.0.0.1:$un_port" -n 8
        stop_broker
    done
done

python3 - "$work/figures" <<'PY'
import statistics, sys
rows = [line.split("\t") for line in open(sys.argv[1])]
def values(label, column):
    return [float(r[column]) for r in rows if r[0] == label]
def ratios(a, b):  # per round: a's CPU per message over b's (b per CPU-s over a per CPU-s)
    return [y / x for x, y in zip(values(a, 1), values(b, 1))]
print(f"TLS costs {statistics.median(ratios('tls', 'tcp')):.2f}x plain TCP per message (median, target <= 2)")
for q in (0, 1):
    r = ratios(f"cross-qos{q}", f"same-qos{q}")
    print(f"cross-shard costs {statistics.median(r):.2f}x same-shard at QoS {q} (median, target <= 1.3)")
one, two = values("unpinned-1-shards", 2), values("unpinned-2-shards", 2)
print(f"unpinned delivered/s: 1 shard {statistics.median(one):,.0f}, 2 shards {statistics.median(two):,.0f} (median)")
PY
