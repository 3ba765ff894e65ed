#!/usr/bin/env bash
# Starts a broker configured as Paho's MQTT 5 interoperability suite expects, runs the suite
# against it with run_paho_interop.sh, and stops what it started (by PID). The suite is
# third-party code, not in this repository: SUITE_DIR holds client_test5.py and its `mqtt`
# package.
#
#   tests/interop/run_paho_local.sh SUITE_DIR OUT_DIR SHARDS [TEST_NAME...]
#
# The broker (AMQTT_BIN, default target/release/amqtt) listens on 127.0.0.1 (a free port) with
# SHARDS unpinned shards and OUT_DIR/broker.yaml: anonymous clients; topic_http asking
# nosubscribe_acl.py (beside this script, on another free port), which refuses SUBSCRIBE to
# `test/nosubscribe` only; hide_denial_reason: true (test_subscribe_failure wants SUBACK 0x80
# for that refusal, and the suite's MQTT 5 codec refuses a SUBACK with 0x87, the default);
# max_keepalive 60 (test_server_keep_alive wants Server Keep Alive 60 for a client asking 120);
# everything else the defaults. Results: tests/interop/RESULTS.md.
# Writes OUT_DIR/broker.log, OUT_DIR/acl.log and run_paho_interop.sh's files; exits with its status.
set -u
if [ $# -lt 3 ]; then
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
suite=$1
out=$2
shards=$3
shift 3
bin=${AMQTT_BIN:-target/release/amqtt}
[ -x "$bin" ] || { echo "no broker binary at $bin (set AMQTT_BIN)" >&2; exit 2; }
mkdir -p "$out"
out=$(cd "$out" && pwd)

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
port=$(free_port)
acl_port=$(free_port)
while [ "$acl_port" = "$port" ]; do acl_port=$(free_port); done

cat > "$out/broker.yaml" <<EOF
listeners:
  default:
    type: tcp
    bind: 127.0.0.1:$port
shards: $shards
pin_shards: false
max_keepalive: 60
hide_denial_reason: true
plugins:
  amqtt.plugins.authentication.AnonymousAuthPlugin:
    allow_anonymous: true
  amqtt.contrib.http.TopicAuthHttpPlugin:
    host: 127.0.0.1
    port: $acl_port
    topic_uri: /acl
    timeout: 5
    cache_ttl: 5
EOF

python3 "$here/nosubscribe_acl.py" "$acl_port" test/nosubscribe > "$out/acl.log" 2>&1 &
acl_pid=$!
"$bin" -c "$out/broker.yaml" > "$out/broker.log" 2>&1 &
broker_pid=$!
stop() {
    kill "$broker_pid" 2>/dev/null && wait "$broker_pid" 2>/dev/null
    kill "$acl_pid" 2>/dev/null && wait "$acl_pid" 2>/dev/null
}
trap stop EXIT

ready=0
for _ in $(seq 1 100); do
    if python3 -c "import socket, sys; socket.create_connection(('127.0.0.1', $port), 1).close(); socket.create_connection(('127.0.0.1', $acl_port), 1).close()" 2>/dev/null; then
        ready=1
        break
    fi
    kill -0 "$broker_pid" 2>/dev/null || break
    sleep 0.1
done
if [ $ready = 0 ]; then
    echo "broker or ACL service did not start; see $out/broker.log and $out/acl.log" >&2
    exit 2
fi
echo "broker pid $broker_pid on 127.0.0.1:$port ($shards shards), ACL service pid $acl_pid on :$acl_port"
"$here/run_paho_interop.sh" "$suite" "$port" "$out" "$@"
rc=$?
trap - EXIT
stop
exit $rc
