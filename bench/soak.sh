#!/usr/bin/env bash
# A bounded soak of the release broker on loopback: steady mixed traffic (QoS 0, 1 and 2 pairs at a
# fixed rate) while clients churn (persistent sessions dropping and reconnecting with `storm`, and
# clean connections opened and closed in a loop with `conns`), for SOAK_SECONDS. It reports the
# broker's RSS after warm-up, its peak and its end (from /proc/PID/status, sampled every second),
# the loss of every run (QoS 1/2 must lose nothing, QoS 2 duplicate nothing), and every ERROR,
# WARN or panic line of the broker's log. Exit status 0 when all of that holds, 1 otherwise.
#
#   bench/soak.sh                         # 5 minutes
#   SOAK_SECONDS=60 RATE=100 bench/soak.sh
#
# Knobs (environment): SOAK_SECONDS (300), WARMUP_SECONDS (20), PAIRS per QoS (4), RATE msg/s per
# publisher (200), SIZE payload bytes (256), STORM_SESSIONS (50), CHURN_RATE connections/s (100),
# SHARDS (auto), OUT directory for logs and JSON (a fresh temporary one). Binaries come from
# ${CARGO_TARGET_DIR:-target}/release and are built when missing. Only 127.0.0.1 is used; the
# broker and the load generators are this script's children and are stopped by their PIDs.
set -euo pipefail

cd "$(dirname "$0")/.."
soak=${SOAK_SECONDS:-300}
warmup=${WARMUP_SECONDS:-20}
pairs=${PAIRS:-4}
rate=${RATE:-200}
size=${SIZE:-256}
storm_n=${STORM_SESSIONS:-50}
churn_rate=${CHURN_RATE:-100}
shards=${SHARDS:-auto}
out=${OUT:-$(mktemp -d /tmp/amqtt-soak.XXXXXX)}
mkdir -p "$out"
bin=${CARGO_TARGET_DIR:-$PWD/target}/release
if [ ! -x "$bin/amqtt" ] || [ ! -x "$bin/amqtt-bench" ]; then
    cargo build --release --bin amqtt && cargo build --release -p bench
fi

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url="mqtt://127.0.0.1:$port"
cat >"$out/broker.yaml" <<EOF
listeners:
  default:
    type: tcp
    bind: 127.0.0.1:$port
sys_interval: 10
shards: $shards
EOF

children=()
stop_children() {
    for pid in "${children[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
}
trap stop_children EXIT

"$bin/amqtt" -c "$out/broker.yaml" 2>"$out/broker.log" &
broker=$!
children+=("$broker")
for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
    sleep 0.1
done

rss() { awk '/^VmRSS:/ {print $2}' "/proc/$broker/status"; }
hwm() { awk '/^VmHWM:/ {print $2}' "/proc/$broker/status"; }
bench() { "$bin/amqtt-bench" "$@" --url "$url" --threads 1 --json -q; }

echo "soak: broker pid $broker on $url, $soak s (warm-up $warmup s), logs in $out" >&2

# Warm-up: the same kinds of traffic, briefly, so that allocator pools and tables reach their
# working size before the first RSS sample.
bench pairs -n "$pairs" --qos 1 --rate "$rate" --size "$size" --warmup 0 --duration "$warmup" \
    >"$out/warmup-pairs.json" &
warm=$!
children+=("$warm")
bench conns -n 100 --rate "$churn_rate" --duration 1 >"$out/warmup-conns.json"
wait "$warm"
rss_start=$(rss)

# The soak: three pair groups (QoS 0, 1, 2), a storm of persistent sessions, a loop of clean
# connections; RSS sampled every second meanwhile.
loads=()
for qos in 0 1 2; do
    bench pairs -n "$pairs" --qos "$qos" --rate "$rate" --size "$size" \
        --warmup 0 --duration "$soak" >"$out/pairs-q$qos.json" &
    loads+=("$!")
done
bench storm -n "$storm_n" --qos 1 --rate "$churn_rate" --duration "$soak" >"$out/storm.json" &
loads+=("$!")
(
    end=$((SECONDS + soak))
    i=0
    while [ "$SECONDS" -lt "$end" ]; do
        i=$((i + 1))
        bench conns -n 100 --rate "$churn_rate" --duration 1 >"$out/conns-$i.json"
    done
) &
loads+=("$!")
children+=("${loads[@]}")

rss_peak=$rss_start
samples="$out/rss.tsv"
echo -e "seconds\trss_kb" >"$samples"
started=$SECONDS
while true; do
    running=0
    for pid in "${loads[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then running=1; fi
    done
    [ "$running" -eq 1 ] || break
    now=$(rss)
    echo -e "$((SECONDS - started))\t$now" >>"$samples"
    [ "$now" -gt "$rss_peak" ] && rss_peak=$now
    sleep 1
done
status=0
for pid in "${loads[@]}"; do
    wait "$pid" || status=1
done
rss_end=$(rss)
hwm_kb=$(hwm)
elapsed=$((SECONDS - started))

kill -TERM "$broker"
wait "$broker" || status=1
trap - EXIT

# The figures, as Markdown.
python3 - "$out" "$soak" "$rss_start" "$rss_peak" "$rss_end" "$hwm_kb" "$elapsed" <<'EOF' || status=1
import glob, json, os, re, sys
out, soak, start, peak, end, hwm, elapsed = sys.argv[1:]
ok = True
print(f"Soak of {elapsed} s (asked {soak} s), logs and JSON in `{out}`.\n")
print("| run | QoS | sent | delivered | expected | lost | duplicated | errors | warnings |")
print("|---|---|---|---|---|---|---|---|---|")
def row(name, r):
    global ok
    lost, dup, err = r.get("lost", 0), r.get("duplicated", 0), r.get("errors_total", 0)
    qos = r.get("qos", 0)
    if (qos > 0 and lost) or (qos == 2 and dup) or err:
        ok = False
    warnings = "; ".join(r.get("warnings", [])) or "–"
    print(f"| {name} | {qos} | {r.get('sent', 0)} | {r.get('delivered', 0)} | {r.get('expected', 0)} "
          f"| {lost} | {dup} | {err} | {warnings} |")
for name in ["pairs-q0", "pairs-q1", "pairs-q2", "storm"]:
    with open(os.path.join(out, name + ".json")) as f:
        r = json.load(f)
    row(name, r)
    if name == "storm" and r.get("storm"):
        s = r["storm"]
        storm = f"{s['rounds']} rounds, {s['reconnects']} reconnects ({s['reconnect_per_s']:.0f}/s)"
conns = [json.load(open(p)) for p in glob.glob(os.path.join(out, "conns-*.json"))]
churn = sum(c["connect"]["connections"] for c in conns)
failed = sum(c["connect"]["failed"] for c in conns) + sum(c["errors_total"] for c in conns)
if failed:
    ok = False
print(f"| conns ×{len(conns)} | – | – | – | – | – | – | {failed} | – |")
print(f"\nChurn: storm {storm}; {churn} clean connections opened and closed by `conns`.\n")
mb = lambda kb: f"{int(kb) / 1024:.1f} MiB"
print(f"Broker RSS: start (after warm-up) {mb(start)}, peak {mb(peak)} (sampled each second; "
      f"VmHWM {mb(hwm)}), end {mb(end)}.\n")
bad = [l.rstrip() for l in open(os.path.join(out, "broker.log"), errors="replace")
       if re.search(r"ERROR|WARN|panic", l)]
lines = sum(1 for _ in open(os.path.join(out, "broker.log"), errors="replace"))
print(f"Broker log: {lines} lines, {len(bad)} ERROR/WARN/panic lines.")
for l in bad[:20]:
    print(f"    {l}")
if bad:
    ok = False
print("\nResult: " + ("PASS" if ok else "FAIL"))
sys.exit(0 if ok else 1)
EOF
exit $status
