"""Observability of the release binary: `$SYS` topics seen by mosquitto_sub and paho, the Prometheus
endpoint parsed by the official Python client's parser (and `promtool check metrics` when Debian's
`prometheus` package is installed), connection lifecycle log lines, and the deploy kit's dashboard
and alert rules checked against the metric names the broker really exports.

The broker here is started by this file's own fixture (conftest's `broker` turns `$SYS` off and
has no metrics endpoint).
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import NamedTuple

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from mqtt_helpers import PahoClient, accepts, free_port

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"


class Observed(NamedTuple):
    host: str
    port: int
    metrics_port: int
    log: Path


@contextlib.contextmanager
def _running(amqtt_bin, tmp_path, config_text: str, ports: list[int], args: tuple[str, ...] = ()):
    """Runs the broker on `config_text` until the block ends (SIGTERM, clean exit asserted); its
    log file. Ready once every port in `ports` accepts."""
    config = tmp_path / "broker.yaml"
    config.write_text(config_text)
    log = tmp_path / "broker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(amqtt_bin), "-c", str(config), *args],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    deadline = time.monotonic() + 10
    while not all(accepts(p) for p in ports):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("broker did not start:\n" + log.read_text(errors="replace"), pytrace=False)
        time.sleep(0.05)
    yield log
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(timeout=5) == 0, log.read_text(errors="replace")
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail("broker did not stop within 5 s of SIGTERM", pytrace=False)


@pytest.fixture
def observed(amqtt_bin, tmp_path):
    """A 2-shard broker with `sys_interval: 1` and metrics on a free port, logging at info."""
    port, metrics_port = free_port(), free_port()
    config = (
        "listeners:\n"
        "  default:\n"
        f"    bind: {HOST}:{port}\n"
        "shards: 2\n"
        "pin_shards: false\n"
        "sys_interval: 1\n"
        "metrics:\n"
        f"  bind: {HOST}:{metrics_port}\n"
    )
    with _running(amqtt_bin, tmp_path, config, [port, metrics_port]) as log:
        yield Observed(HOST, port, metrics_port, log)


def scrape(b: Observed) -> str:
    with urllib.request.urlopen(f"http://{b.host}:{b.metrics_port}/metrics", timeout=5) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return resp.read().decode()


def families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(fams: dict, family: str, sample: str | None = None, **labels) -> float:
    """Sum of the samples of `family` (sample name `sample`, default the family's own) matching
    `labels`."""
    want = sample or family
    return sum(s.value for s in fams[family].samples
               if s.name == want and all(s.labels.get(k) == v for k, v in labels.items()))


def wait_until(check, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}", pytrace=False)
        time.sleep(0.2)


def test_metrics_parse_and_move_with_traffic(observed):
    sub = PahoClient(observed.host, observed.port, client_id="py-sub")
    pub = PahoClient(observed.host, observed.port, client_id="py-pub")
    try:
        assert sub.connect()[0] == 0 and pub.connect()[0] == 0
        sub.subscribe("py/#", qos=1)
        # prometheus_client strips `_total` from counter family names.
        fams = wait_until(
            lambda: (f := families(scrape(observed)))
            and value(f, "amqtt_connections_open") == 2 and f,
            what="2 open connections in /metrics")
        for name, kind in [
            ("amqtt_connections_open", "gauge"),
            ("amqtt_connections_accepted", "counter"),
            ("amqtt_connections_rejected", "counter"),
            ("amqtt_messages_received", "counter"),
            ("amqtt_messages_sent", "counter"),
            ("amqtt_messages_dropped", "counter"),
            ("amqtt_bytes_received", "counter"),
            ("amqtt_bytes_sent", "counter"),
            ("amqtt_retained_messages", "gauge"),
            ("amqtt_subscriptions", "gauge"),
            ("amqtt_sessions", "gauge"),
            ("amqtt_bus_messages_sent", "counter"),
            ("amqtt_bus_queue_depth", "gauge"),
            ("amqtt_handshake_failures", "counter"),
            ("amqtt_malformed_packets", "counter"),
            ("amqtt_auth_failures", "counter"),
            ("amqtt_sessions_expired", "counter"),
            ("amqtt_publish_delivery_latency_seconds", "histogram"),
            ("process_resident_memory_bytes", "gauge"),
            ("process_virtual_memory_bytes", "gauge"),
            ("process_open_fds", "gauge"),
            ("process_max_fds", "gauge"),
            ("process_cpu_seconds", "counter"),
            ("process_start_time_seconds", "gauge"),
        ]:
            assert name in fams, f"missing family {name}"
            assert fams[name].type == kind, f"{name} is a {fams[name].type}"
        for fam in fams.values():
            assert fam.documentation, f"{fam.name} has no HELP"
        assert value(fams, "amqtt_sessions", state="online") == 2
        assert {s.labels["shard"] for s in fams["amqtt_connections_open"].samples} == {"0", "1"}
        before = value(fams, "amqtt_messages_received", "amqtt_messages_received_total", qos="1")

        for i in range(20):
            pub.publish("py/t", f"m{i}", qos=1)
        assert len(sub.get_messages(20)) == 20

        def moved():
            f = families(scrape(observed))
            got = value(f, "amqtt_messages_received", "amqtt_messages_received_total", qos="1")
            lat = value(f, "amqtt_publish_delivery_latency_seconds",
                        "amqtt_publish_delivery_latency_seconds_count")
            return f if got >= before + 20 and lat > 0 else None
        fams = wait_until(moved, what="counters to move")
        assert value(fams, "amqtt_messages_sent", "amqtt_messages_sent_total", qos="1") >= 20
        assert value(fams, "amqtt_bytes_received", "amqtt_bytes_received_total") > 0
        assert value(fams, "amqtt_subscriptions") == 1
        # The broker's own process: some MB resident, its 2 client sockets among its descriptors.
        assert value(fams, "process_resident_memory_bytes") > 1 << 20
        assert value(fams, "process_open_fds") >= 2
        assert abs(value(fams, "process_start_time_seconds") - time.time()) < 600
    finally:
        sub.close()
        pub.close()


def test_memory_gauge_without_a_memory_limit(observed):
    """No `memory_limit` (the budget counts nothing per message): amqtt_memory_used_bytes still
    rises with messages queued for an offline persistent session, and falls once they are
    delivered."""
    def used() -> float:
        return value(families(scrape(observed)), "amqtt_memory_used_bytes")

    sub = PahoClient(observed.host, observed.port, client_id="mem-sub", clean_session=False)
    pub = PahoClient(observed.host, observed.port, client_id="mem-pub")
    try:
        assert sub.connect()[0] == 0 and pub.connect()[0] == 0
        sub.subscribe("mem/#", qos=1)
        sub.disconnect()
        sub.close()
        baseline = used()
        payload = b"x" * 1000
        for _ in range(100):
            pub.publish("mem/t", payload, qos=1)
        wait_until(lambda: used() >= baseline + 100 * 1000,
                   what="the gauge to count 100 queued 1000-byte messages")
        sub = PahoClient(observed.host, observed.port, client_id="mem-sub", clean_session=False)
        assert sub.connect() == (0, True)
        assert len(sub.get_messages(100)) == 100
        wait_until(lambda: used() < baseline + 10_000, what="the gauge to fall back")
    finally:
        sub.close()
        pub.close()

@pytest.mark.skipif(shutil.which("promtool") is None,
                    reason="promtool not installed (Debian package `prometheus`)")
def test_promtool_accepts_the_exposition(observed):
    c = PahoClient(observed.host, observed.port, client_id="py-lint")
    try:
        assert c.connect()[0] == 0
        c.publish("lint/x", "y", qos=1)
        text = wait_until(lambda: (t := scrape(observed)) and 'qos="1"} 1' in t and t,
                          what="a publish counted")
    finally:
        c.close()
    run = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                         text=True, timeout=30)
    assert run.returncode == 0 and not (run.stdout + run.stderr).strip(), run.stdout + run.stderr


def test_other_paths_are_404_and_post_is_405(observed):
    base = f"http://{observed.host}:{observed.metrics_port}"
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(base + "/", timeout=5)
    assert err.value.code == 404
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(urllib.request.Request(base + "/metrics", data=b"x"), timeout=5)
    assert err.value.code == 405


def test_sys_topics_are_retained_and_current(observed):
    clients = [PahoClient(observed.host, observed.port, client_id=f"sys-{i}") for i in range(3)]
    try:
        for c in clients:
            assert c.connect()[0] == 0
        time.sleep(2.5)  # at least one $SYS round after the three connected
        run = subprocess.run(
            ["mosquitto_sub", "-h", observed.host, "-p", str(observed.port), "-t", "$SYS/broker/#",
             "-v", "-W", "3"],
            capture_output=True, text=True, timeout=10)
        seen = {}
        for line in run.stdout.splitlines():
            topic, _, payload = line.partition(" ")
            seen.setdefault(topic, payload)  # the first copy is the retained one
        for topic in ["version", "uptime", "uptime/formatted", "time", "clients/connected",
                      "clients/disconnected", "clients/maximum", "clients/total",
                      "messages/received", "messages/sent", "messages/publish/received",
                      "messages/publish/sent", "messages/retained/count", "messages/inflight",
                      "messages/subscriptions/count", "load/bytes/received", "load/bytes/sent",
                      "load/messages/received/1min", "load/messages/received/5min",
                      "load/messages/received/15min", "load/messages/sent/1min",
                      "shards/count", "shards/0/connections", "shards/1/messages/received",
                      "shards/1/bus/sent", "shards/0/bus/received", "shards/1/bus/queue",
                      "messages/inflight/in", "messages/inflight/out", "messages/inflight/stored",
                      "messages/stored", "heap/size", "heap/maximum", "cpu/percent",
                      "cpu/maximum"]:
            assert f"$SYS/broker/{topic}" in seen, f"no $SYS/broker/{topic} in {sorted(seen)}"
        # aMQTT's process topics: MiB and percent with three decimals; a broker has some memory.
        for topic in ["heap/size", "heap/maximum", "cpu/percent", "cpu/maximum"]:
            assert re.fullmatch(r"\d+\.\d{3}", seen[f"$SYS/broker/{topic}"]), topic
        assert float(seen["$SYS/broker/heap/size"]) > 1.0
        assert float(seen["$SYS/broker/heap/maximum"]) >= float(seen["$SYS/broker/heap/size"])
        assert seen["$SYS/broker/version"].startswith("amqtt-rs version ")
        assert seen["$SYS/broker/clients/connected"] == "3"
        assert seen["$SYS/broker/shards/count"] == "2"
        assert re.fullmatch(r"\d+:\d\d:\d\d", seen["$SYS/broker/uptime/formatted"])
        per_shard = [int(seen[f"$SYS/broker/shards/{n}/connections"]) for n in (0, 1)]
        assert sum(per_shard) == 3
    finally:
        for c in clients:
            c.close()


def test_lifecycle_lines_at_info_and_nothing_per_message(observed):
    c = PahoClient(observed.host, observed.port, client_id="log-probe")
    assert c.connect()[0] == 0
    for i in range(10):
        c.publish("quiet/topic", f"m{i}", qos=1)
    c.disconnect()
    c.close()
    pattern_in = re.compile(r"INFO .*client 'log-probe' from 127\.0\.0\.1:\d+ on listener "
                            r"'default', shard [01]: connected")
    pattern_out = re.compile(r"INFO .*client 'log-probe' from 127\.0\.0\.1:\d+ on listener "
                             r"'default', shard [01]: disconnected: client sent DISCONNECT")
    text = wait_until(lambda: (t := observed.log.read_text(errors="replace"))
                      and pattern_out.search(t) and t, what="the disconnect log line")
    assert pattern_in.search(text), text
    assert "quiet/topic" not in text, "a per-message line was logged at info"


def test_connection_messages_false_moves_the_lines_to_debug(amqtt_bin, tmp_path):
    """`connection_messages: false` (Mosquitto's switch): connect and disconnect lines are logged at
    DEBUG only, so the default INFO log has none; run with `-d` to see them at DEBUG."""
    port = free_port()
    config = (f"listeners:\n  default:\n    bind: {HOST}:{port}\n"
              "sys_interval: 0\nconnection_messages: false\n")
    with _running(amqtt_bin, tmp_path, config, [port], args=("-d",)) as log:
        c = PahoClient(HOST, port, client_id="quiet-probe")
        assert c.connect()[0] == 0
        c.disconnect()
        c.close()
        line_out = re.compile(r"(INFO|DEBUG) .*client 'quiet-probe' from .*: disconnected")
        text = wait_until(lambda: (t := log.read_text(errors="replace")) and line_out.search(t)
                          and t, what="the disconnect log line")
    assert re.search(r"DEBUG .*client 'quiet-probe' from .*: connected", text), text
    assert re.search(r"DEBUG .*client 'quiet-probe' from .*: disconnected", text), text
    assert not re.search(r"INFO .*client 'quiet-probe'", text), text



def _packet_log_session(amqtt_bin, tmp_path, extra_config: str, args: tuple[str, ...]) -> str:
    """A session of user `alice` (password `s3cret-pw`): CONNECT, SUBSCRIBE to two filters (one
    the ACL refuses), a QoS 1 PUBLISH to itself, a QoS 0 one (routed in place, from the read
    buffer), one the ACL refuses, DISCONNECT; the log."""
    port = free_port()
    config = (f"listeners:\n  default:\n    bind: {HOST}:{port}\n"
              "sys_interval: 0\nshards: 2\npin_shards: false\n"
              "topic-check:\n  enabled: true\n  plugins: ['topic_acl']\n"
              "  acl:\n    alice: ['logs/#']\n  publish-acl:\n    alice: ['logs/#']\n"
              + extra_config)
    with _running(amqtt_bin, tmp_path, config, [port], args=args) as log:
        c = PahoClient(HOST, port, client_id="pkt-probe")
        c.client.username_pw_set("alice", "s3cret-pw")
        assert c.connect()[0] == 0
        assert c.subscribe([("logs/a", 1), ("secret/b", 0)]) == [1, 128]
        c.publish("logs/a", b"hello", qos=1)
        assert c.get_message().payload == b"hello"
        c.publish("logs/zero", b"q0-body", qos=0)
        c.publish("secret/b", b"nope", qos=1)
        c.disconnect()
        c.close()
        wait_until(lambda: "disconnected" in log.read_text(errors="replace"),
                   what="the disconnect log line")
        return log.read_text(errors="replace")


@pytest.mark.parametrize("how", ["-d", "log_packets"])
def test_packet_lines_like_mosquitto_v(amqtt_bin, tmp_path, how):
    """`-d` or `log_packets: true`: a line per packet in each direction naming the client, the
    user name on CONNECT and on every refusal, never the password."""
    args, extra = (("-d",), "") if how == "-d" else ((), "log_packets: true\n")
    text = _packet_log_session(amqtt_bin, tmp_path, extra, args)
    expected = [
        r"INFO .*Received CONNECT from pkt-probe \(p4, c1, k60, u'alice'\)",
        r"INFO .*Sending CONNACK to pkt-probe \(0, 0\)",
        r"INFO .*Received SUBSCRIBE from pkt-probe\n.*    logs/a \(QoS 1\)\n.*    secret/b \(QoS 0\)",
        r"Denied SUBSCRIBE from 'pkt-probe' \(u'alice'\) to 'secret/b'",
        r"INFO .*Sending SUBACK to pkt-probe \(m\d+, \[1, 128\]\)",
        r"INFO .*Received PUBLISH from pkt-probe \(d0, q1, r0, m\d+, 'logs/a', \.\.\. \(5 bytes\)\)",
        r"INFO .*Sending PUBACK to pkt-probe \(m\d+\)",
        r"INFO .*Sending PUBLISH to pkt-probe \(d0, q1, r0, m\d+, 'logs/a', \.\.\. \(5 bytes\)\)",
        r"INFO .*Received PUBACK from pkt-probe \(m\d+\)",
        r"INFO .*Received PUBLISH from pkt-probe \(d0, q0, r0, m0, 'logs/zero', \.\.\. \(7 bytes\)\)",
        r"INFO .*Denied PUBLISH from 'pkt-probe' \(u'alice'\) to 'secret/b'",
        r"INFO .*Received DISCONNECT from pkt-probe",
    ]
    for pattern in expected:
        assert re.search(pattern, text), f"no line matching {pattern!r} in:\n{text}"
    assert "s3cret-pw" not in text, "the password was logged"
    assert "hello" not in text and "q0-body" not in text, "a payload was logged"


def test_no_packet_lines_by_default(amqtt_bin, tmp_path):
    """Without `-d` or `log_packets` no per-packet line is logged (at any level)."""
    text = _packet_log_session(amqtt_bin, tmp_path, "", ())
    for word in ("Received", "Sending", "Denied"):
        assert word not in text, f"a packet line without log_packets:\n{text}"
    assert "s3cret-pw" not in text

# ---- the deploy kit against the real metric names ---------------------------------------------

_METRIC = re.compile(r"\bamqtt_[a-z0-9_]+")


def _exported_names(text: str) -> set[str]:
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names.add(name)
            if kind == "histogram":
                names |= {name + "_bucket", name + "_sum", name + "_count"}
    return names


def test_dashboard_and_alerts_use_exported_metrics(observed):
    exported = _exported_names(scrape(observed))
    dashboard = json.loads((REPO / "deploy/grafana/amqtt-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 10
    rules = yaml.safe_load((REPO / "deploy/prometheus/alerts.yml").read_text())
    exprs += [r["expr"] for g in rules["groups"] for r in g["rules"]]
    used = {m for e in exprs for m in _METRIC.findall(e)}
    assert used, "no amqtt_ metric used"
    unknown = used - exported
    assert not unknown, f"dashboard/alerts use metrics the broker does not export: {unknown}"
    # What the issue asks the dashboard to show.
    dashboard_text = json.dumps(dashboard)
    for needed in ["amqtt_connections_open", "amqtt_messages_received_total",
                   "amqtt_messages_sent_total", "amqtt_messages_dropped_total",
                   "amqtt_publish_delivery_latency_seconds_bucket", "amqtt_bus_queue_depth"]:
        assert needed in dashboard_text, needed
