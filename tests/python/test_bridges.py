"""Bridges (`bridges:`) against a real Mosquitto (Debian's /usr/sbin/mosquitto) started by each
test on a free loopback port with a generated config, stopped and restarted by its PID.

What is checked: both directions with prefixes swapped, the state in $SYS and in /metrics,
1,000 QoS 1 messages each way with the remote restarted mid-stream (none lost; a duplicate only
from a redelivery, so at most an in-flight window of them), loop prevention for `both`, TLS to
the remote, and the durability of the bridge's local session across a restart of amqtt with
persistence on while the remote is away. With `protocol_version: 5`: MQTT 5 message properties
cross both ways intact (paho MQTTv5 clients on both far sides), a `both` topic does not loop (No
Local; the echo guard stays idle), the remote keeps the bridge's session while it is away
(Session Expiry Interval), and a refused CONNACK is reported by its reason code's name.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from mqtt5_helpers import V5Broker, V5Client
from mqtt_helpers import PahoClient, accepts, free_port, kill_running, launch_broker, stop_broker
from test_transports import certs  # noqa: F401  (the fixture: a CA and a localhost certificate)

MOSQUITTO = shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").is_file() else None)
pytestmark = pytest.mark.skipif(
    MOSQUITTO is None, reason="mosquitto (apt-get install mosquitto) is needed for the bridge tests")

HOST = "127.0.0.1"


class Mosquitto:
    """One mosquitto broker: persistence in its own directory (so that a restart keeps the
    bridge's session and its queue), a plain listener, optionally a TLS one."""

    def __init__(self, workdir: Path, tls: Path | None = None,
                 users: dict[str, str] | None = None, acl: str | None = None):
        self.workdir = workdir
        workdir.mkdir()
        self.port = free_port()
        self.tls_port = free_port() if tls else None
        auth = ["allow_anonymous true"]
        if users:
            passwords = workdir / "passwords"
            passwords.write_text("")
            for user, password in users.items():
                subprocess.run(["mosquitto_passwd", "-b", str(passwords), user, password],
                               check=True, capture_output=True)
            auth = ["allow_anonymous false", f"password_file {passwords}"]
        if acl is not None:
            (workdir / "acl").write_text(acl)
            auth.append(f"acl_file {workdir / 'acl'}")
        lines = [
            # Run as root (CI), mosquitto would drop to its own user, which cannot read the
            # test's files.
            *(["user root"] if os.geteuid() == 0 else []),
            *auth,
            "persistence true",
            f"persistence_location {workdir}/",
            "max_queued_messages 100000",
            "max_inflight_messages 100",
            f"listener {self.port} {HOST}",
        ]
        if tls:
            lines += [f"listener {self.tls_port} {HOST}", f"cafile {tls}/ca.pem",
                      f"certfile {tls}/server.pem", f"keyfile {tls}/server.key"]
        self.config = workdir / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")
        self.log = workdir / "mosquitto.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.config)],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while not accepts(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("mosquitto did not start:\n" + self.log.read_text(errors="replace"),
                            pytrace=False)
            time.sleep(0.02)

    def stop(self) -> None:
        """SIGTERM: mosquitto writes its persistence file and exits."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=10)
        self.proc = None

    def client(self, client_id: str = "", clean_session: bool = True) -> PahoClient:
        c = PahoClient(HOST, self.port, client_id=client_id, clean_session=clean_session)
        rc, _ = c.connect()
        assert rc == 0
        return c


@pytest.fixture
def mosquitto(tmp_path):
    made: list[Mosquitto] = []

    def make(tls: Path | None = None, users: dict[str, str] | None = None,
             acl: str | None = None) -> Mosquitto:
        m = Mosquitto(tmp_path / f"mosquitto{len(made)}", tls, users, acl)
        m.start()
        made.append(m)
        return m

    yield make
    for m in made:
        m.stop()


class Amqtt:
    """amqtt with one bridge; its metrics endpoint on a port of its own."""

    def __init__(self, amqtt_bin: Path, workdir: Path, bridge: str, persistence: bool = False):
        self.amqtt_bin = amqtt_bin
        self.workdir = workdir
        self.port = free_port()
        self.metrics_port = free_port()
        text = (
            "listeners:\n  default:\n    type: tcp\n"
            f"    bind: {HOST}:{self.port}\n"
            "shards: 2\npin_shards: false\nsys_interval: 0\n"
            f"metrics:\n  bind: {HOST}:{self.metrics_port}\n"
            + (f"persistence:\n  enabled: true\n  dir: {workdir}/data\n  fsync: always\n"
               if persistence else "")
            + "bridges:\n" + bridge
        )
        self.config = workdir / "amqtt.yaml"
        self.config.write_text(text)
        self.log = workdir / "amqtt.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = launch_broker(self.amqtt_bin, self.config, self.log,
                                  lambda: accepts(self.port))

    def stop(self) -> None:
        if self.proc is not None:
            stop_broker(self.proc, self.log)
            self.proc = None

    def client(self, client_id: str = "") -> PahoClient:
        c = PahoClient(HOST, self.port, client_id=client_id)
        rc, _ = c.connect()
        assert rc == 0
        return c

    def metrics(self, *lines: str, timeout: float = 5) -> str:
        """The /metrics text once it has every line of `lines` (copied there once a second)."""
        deadline = time.monotonic() + timeout
        while True:
            url = f"http://{HOST}:{self.metrics_port}/metrics"
            with urllib.request.urlopen(url, timeout=5) as r:
                text = r.read().decode()
            if all(line in text.splitlines() for line in lines) or time.monotonic() > deadline:
                return text
            time.sleep(0.2)

    def sys(self, name: str, level: str) -> str | None:
        """The retained $SYS/broker/bridges/NAME/LEVEL, if there is one."""
        c = self.client()
        try:
            c.subscribe(f"$SYS/broker/bridges/{name}/{level}", 0)
            try:
                return c.get_message(timeout=0.5).payload.decode()
            except AssertionError:
                return None
        finally:
            c.close()

    def wait_state(self, name: str, state: str, timeout: float = 15) -> None:
        """$SYS/broker/bridges/NAME/state says `state` (retained) within `timeout`."""
        deadline = time.monotonic() + timeout
        seen = None
        while time.monotonic() < deadline:
            seen = self.sys(name, "state")
            if seen == state:
                return
            time.sleep(0.2)
        pytest.fail(f"bridge {name} state {seen!r}, not {state!r}:\n"
                    + self.log.read_text(errors="replace")[-5000:], pytrace=False)


@pytest.fixture
def amqtt(amqtt_bin, tmp_path):
    made: list[Amqtt] = []

    def make(bridge: str, persistence: bool = False) -> Amqtt:
        a = Amqtt(amqtt_bin, tmp_path, bridge, persistence)
        a.start()
        made.append(a)
        return a

    yield make
    for a in made:
        if a.proc is not None and a.proc.poll() is None:
            a.stop()
    kill_running([a.proc for a in made if a.proc is not None])


def bridge_yaml(remote_url: str, topics: list[str], extra: str = "") -> str:
    return (f"  cloud:\n    url: {remote_url}\n    client_id: site1-bridge\n    keep_alive: 10\n"
            + extra + "    topics:\n" + "".join(f"      - {t}\n" for t in topics))


def bridged(mosquitto, amqtt, topics: list[str], extra: str = "",
            persistence: bool = False) -> tuple[Mosquitto, Amqtt]:
    """A mosquitto remote and an amqtt with one bridge `cloud` to it, connected."""
    remote = mosquitto()
    local = amqtt(bridge_yaml(f"mqtt://{HOST}:{remote.port}", topics, extra), persistence)
    local.wait_state("cloud", "connected")
    return remote, local


def collect(clients: list[PahoClient]) -> list[bytes]:
    return [m.payload for c in clients for m in c.drain()]


def wait_count(clients: list[PahoClient], want: set[bytes], timeout: float) -> list[bytes]:
    """Everything `clients` received until every payload of `want` is in (or `timeout`)."""
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not want <= set(got):
        got += collect(clients)
        time.sleep(0.05)
    return got


def test_both_directions_with_prefixes_state_and_metrics(mosquitto, amqtt):
    remote, local = bridged(mosquitto, amqtt, [
        "{pattern: 'sensors/#', direction: out, qos: 1, local_prefix: '', remote_prefix: 'site1/'}",
        "{pattern: 'cmd/#', direction: in, qos: 1, local_prefix: 'from-hq/', remote_prefix: 'hq/'}",
    ])
    remote_sub = remote.client()
    remote_sub.subscribe("#", 1)
    local_sub = local.client()
    local_sub.subscribe([("from-hq/#", 1), ("cmd/#", 1), ("hq/#", 1)])
    local_pub = local.client()
    local_pub.publish("sensors/kitchen/t", "21.5", qos=1)
    local_pub.publish("other/x", "not bridged", qos=1)
    m = remote_sub.get_message(timeout=5)
    assert (m.topic, m.payload, m.qos) == ("site1/sensors/kitchen/t", b"21.5", 1)
    remote_pub = remote.client()
    remote_pub.publish("hq/cmd/reboot", "now", qos=1)
    remote_pub.publish("cmd/reboot", "not bridged: no hq/ prefix", qos=1)
    m = local_sub.get_message(timeout=5)
    assert (m.topic, m.payload, m.qos) == ("from-hq/cmd/reboot", b"now", 1)
    time.sleep(0.5)
    extra_remote = [x.topic for x in remote_sub.drain() if x.topic != "hq/cmd/reboot"
                    and x.topic != "cmd/reboot"]
    assert extra_remote == [], "only sensors/# goes out"
    assert local_sub.drain() == [], "only hq/cmd/# comes in"
    for c in (remote_sub, local_sub, local_pub, remote_pub):
        c.close()

    want = ['amqtt_bridge_connected{bridge="cloud"} 1',
            'amqtt_bridge_messages_total{bridge="cloud",direction="out"} 1',
            'amqtt_bridge_messages_total{bridge="cloud",direction="in"} 1']
    metrics = local.metrics(*want)
    for line in want:
        assert line in metrics.splitlines(), metrics

    remote.stop()
    local.wait_state("cloud", "disconnected")
    remote.start()
    local.wait_state("cloud", "connected", timeout=30)


@pytest.mark.parametrize("version", ["3.1.1", "5"])
@pytest.mark.parametrize("qos", [0, 2])
def test_qos_0_and_2_each_way(mosquitto, amqtt, qos, version):
    n = 100
    remote, local = bridged(mosquitto, amqtt, [
        f"{{pattern: 'up/#', direction: out, qos: {qos}, remote_prefix: 'site1/'}}",
        f"{{pattern: 'down/#', direction: in, qos: {qos}, local_prefix: 'hq/'}}",
    ], extra=f"    protocol_version: {version}\n")
    remote_sub = remote.client()
    remote_sub.subscribe("site1/up/#", 2)
    local_sub = local.client()
    local_sub.subscribe("hq/down/#", 2)
    local_pub = local.client()
    remote_pub = remote.client()
    for i in range(n):
        # Published at QoS 2: the bridge forwards at its entry's QoS, never higher.
        local_pub.publish(f"up/{i}", str(i), qos=2)
        remote_pub.publish(f"down/{i}", str(i), qos=2)
    want = [str(i).encode() for i in range(n)]
    for sub in (remote_sub, local_sub):
        got = sub.get_messages(n, timeout=20)
        assert sorted(m.payload for m in got) == sorted(want)
        assert {m.qos for m in got} == {qos}
        time.sleep(0.5)
        assert sub.drain() == [], "nothing twice"
    for c in (remote_sub, local_sub, local_pub, remote_pub):
        c.close()


@pytest.mark.parametrize("version", ["3.1.1", "5"])
def test_a_thousand_qos1_each_way_with_the_remote_restarted_mid_stream(mosquitto, amqtt, version):
    n = 1000
    remote, local = bridged(mosquitto, amqtt, [
        "{pattern: 'up/#', direction: out, qos: 1, remote_prefix: 'site1/'}",
        "{pattern: 'down/#', direction: in, qos: 1}",
    ], extra=f"    protocol_version: {version}\n")
    # Persistent subscribers on both sides, so that a restart of mosquitto loses nothing queued.
    remote_subs = [remote.client("remote-sub", clean_session=False)]
    remote_subs[0].subscribe("site1/up/#", 1)
    local_sub = local.client("local-sub")
    local_sub.subscribe("down/#", 1)

    local_pub = local.client("local-pub")

    def publish_locally():
        for i in range(n):
            local_pub.publish(f"up/{i % 10}", str(i), qos=1)
            time.sleep(0.002)

    sender = threading.Thread(target=publish_locally)
    sender.start()
    remote_pub = remote.client("remote-pub")
    for i in range(n // 2):
        remote_pub.publish(f"down/{i % 10}", str(i), qos=1)
    remote_pub.close()
    # Mid-stream: the local publisher is still going.
    time.sleep(0.5)
    assert sender.is_alive(), "the local publisher finished before the restart: slow it down"
    remote.stop()
    remote_subs[0].close()
    time.sleep(1)
    remote.start()
    remote_subs.append(remote.client("remote-sub", clean_session=False))
    remote_pub = remote.client("remote-pub")
    for i in range(n // 2, n):
        remote_pub.publish(f"down/{i % 10}", str(i), qos=1)
    remote_pub.close()
    sender.join(timeout=60)
    assert not sender.is_alive()

    want = {str(i).encode() for i in range(n)}
    out = wait_count(remote_subs, want, timeout=60)
    into = wait_count([local_sub], want, timeout=30)
    for name, got in (("out", out), ("in", into)):
        missing = want - set(got)
        assert not missing, f"{name}: {len(missing)} lost, e.g. {sorted(missing)[:10]}"
        dups = sum(c - 1 for c in Counter(got).values())
        # A duplicate only from a redelivery after the restart: at most the in-flight windows.
        assert dups <= 200, f"{name}: {dups} duplicates"
    for c in (*remote_subs, local_sub, local_pub):
        c.close()


def test_both_directions_on_one_pattern_never_loop(mosquitto, amqtt):
    remote, local = bridged(mosquitto, amqtt, [
        "{pattern: 'shared/#', direction: both, qos: 1}",
    ])
    remote_sub = remote.client()
    remote_sub.subscribe("shared/#", 1)
    local_sub = local.client()
    local_sub.subscribe("shared/#", 1)
    local.client().publish("shared/from-local", "L", qos=1)
    remote.client().publish("shared/from-remote", "R", qos=1)
    time.sleep(3)
    local_got = sorted(m.topic for m in local_sub.drain())
    remote_got = sorted(m.topic for m in remote_sub.drain())
    assert local_got == ["shared/from-local", "shared/from-remote"], local_got
    assert remote_got == ["shared/from-local", "shared/from-remote"], remote_got
    echoes = 'amqtt_bridge_echoes_dropped_total{bridge="cloud"} 2'
    assert echoes in local.metrics(echoes).splitlines()
    # The same payload published again later is carried again (an echo cancels one copy only).
    local.client().publish("shared/from-local", "L", qos=1)
    assert remote_sub.get_message(timeout=5).topic == "shared/from-local"
    time.sleep(1)
    assert remote_sub.drain() == [] and [m.topic for m in local_sub.drain()] == ["shared/from-local"]
    local_sub.close()
    remote_sub.close()


def test_tls_to_the_remote(mosquitto, amqtt, certs):  # noqa: F811
    remote = mosquitto(tls=certs)
    local = amqtt(bridge_yaml(f"mqtts://localhost:{remote.tls_port}", [
        "{pattern: 'secure/#', direction: both, qos: 1, local_prefix: 'l/', remote_prefix: 'r/'}",
    ], extra=f"    ca_file: {certs}/ca.pem\n"))
    local.wait_state("cloud", "connected")
    remote_sub = remote.client()
    remote_sub.subscribe("r/#", 1)
    local_sub = local.client()
    local_sub.subscribe("l/#", 1)
    local.client().publish("l/secure/a", "over tls", qos=1)
    m = remote_sub.get_message(timeout=5)
    assert (m.topic, m.payload) == ("r/secure/a", b"over tls")
    remote.client().publish("r/secure/b", "back", qos=1)
    got = {(x.topic, x.payload) for x in local_sub.get_messages(2, timeout=5)}
    assert got == {("l/secure/a", b"over tls"), ("l/secure/b", b"back")}
    local_sub.close()
    remote_sub.close()


def test_an_untrusted_remote_is_not_bridged(mosquitto, amqtt, certs):  # noqa: F811
    remote = mosquitto(tls=certs)
    local = amqtt(bridge_yaml(f"mqtts://localhost:{remote.tls_port}", [
        "{pattern: 'secure/#', direction: out, qos: 1}",
    ]))
    time.sleep(2)
    local.wait_state("cloud", "disconnected")
    assert "cannot connect" in local.log.read_text(errors="replace")


def test_out_messages_survive_a_local_restart_while_the_remote_is_away(mosquitto, amqtt):
    n = 200
    remote, local = bridged(mosquitto, amqtt, [
        "{pattern: 'up/#', direction: out, qos: 1}",
    ], persistence=True)
    remote_sub = remote.client("remote-sub", clean_session=False)
    remote_sub.subscribe("up/#", 1)
    remote_sub.close()
    remote.stop()
    local.wait_state("cloud", "disconnected")
    pub = local.client()
    for i in range(n):
        pub.publish(f"up/{i}", str(i), qos=1)
    pub.close()
    # Held by the bridge's local session (or the bridge, unacknowledged) when amqtt stops.
    local.stop()
    local.start()
    remote.start()
    local.wait_state("cloud", "connected", timeout=30)
    remote_sub = remote.client("remote-sub", clean_session=False)
    want = {str(i).encode() for i in range(n)}
    got = wait_count([remote_sub], want, timeout=30)
    missing = want - set(got)
    assert not missing, f"{len(missing)} lost, e.g. {sorted(missing)[:10]}"
    remote_sub.close()


def test_the_local_session_pings_while_it_only_reads(mosquitto, amqtt):
    """QoS 0 out: the bridge reads its local session and writes nothing back; its PINGREQs keep
    the broker from ending the session at 1.5 x keep_alive."""
    remote = mosquitto()
    local = amqtt(bridge_yaml(f"mqtt://{HOST}:{remote.port}", [
        "{pattern: 'up/#', direction: out, qos: 0}",
    ]).replace("keep_alive: 10", "keep_alive: 5"))
    local.wait_state("cloud", "connected")
    remote_sub = remote.client()
    remote_sub.subscribe("up/#", 0)
    pub = local.client()
    deadline = time.monotonic() + 9
    sent = 0
    while time.monotonic() < deadline:
        pub.publish("up/t", str(sent), qos=0)
        sent += 1
        time.sleep(0.05)
    time.sleep(0.5)
    assert len(remote_sub.drain()) == sent
    assert "local session lost" not in local.log.read_text(errors="replace")
    pub.close()
    remote_sub.close()


# --- MQTT 5 remotes (protocol_version: 5) -----------------------------------------------------

V5 = "    protocol_version: 5\n"

# Every message property MQTT 5 forwards, a user property name twice (order and repeats kept).
PROPERTIES = dict(UserProperty=[("site", "kitchen"), ("unit", "C"), ("site", "again")],
                  ContentType="text/plain", ResponseTopic="replies/1", CorrelationData=b"\x01\x02",
                  PayloadFormatIndicator=1, MessageExpiryInterval=300)


def assert_properties_intact(got: dict) -> None:
    got = dict(got)
    # Counted down by each broker for the time it held the message, never up.
    assert 290 <= got.pop("MessageExpiryInterval", -1) <= 300, got
    got["UserProperty"] = [tuple(p) for p in got.get("UserProperty", [])]
    assert got == {"UserProperty": PROPERTIES["UserProperty"], "ContentType": "text/plain",
                   "ResponseTopic": "replies/1", "CorrelationData": "0102",
                   "PayloadFormatIndicator": 1}


def v5_client(port: int, client_id: str = "", login: tuple[str, str] | None = None) -> V5Client:
    c = V5Client(V5Broker(HOST, port, "mosquitto-or-amqtt", 0), client_id)
    if login:
        c.client.username_pw_set(*login)
    c.connected()
    return c


def test_v5_properties_cross_both_ways_intact(mosquitto, amqtt):
    remote, local = bridged(mosquitto, amqtt, [
        "{pattern: 'up/#', direction: out, qos: 1, remote_prefix: 'site1/'}",
        "{pattern: 'down/#', direction: in, qos: 1, local_prefix: 'hq/'}",
    ], extra=V5)
    assert "(MQTT 5)" in local.log.read_text(errors="replace")
    remote_sub, local_sub = v5_client(remote.port), v5_client(local.port)
    assert remote_sub.subscribe("site1/up/#", 1) == [1]
    assert local_sub.subscribe("hq/down/#", 1) == [1]
    local_pub, remote_pub = v5_client(local.port), v5_client(remote.port)
    for qos in (0, 1):
        local_pub.publish("up/t", f"out {qos}", qos=qos, **PROPERTIES)
        m = remote_sub.get()
        assert (m.topic, m.payload, m.qos) == ("site1/up/t", f"out {qos}".encode(), qos)
        assert_properties_intact(m.properties)
        remote_pub.publish("down/cmd", f"in {qos}", qos=qos, **PROPERTIES)
        m = local_sub.get()
        assert (m.topic, m.payload, m.qos) == ("hq/down/cmd", f"in {qos}".encode(), qos)
        assert_properties_intact(m.properties)
    # A message without properties arrives without any.
    local_pub.publish("up/plain", "p", qos=1)
    m = remote_sub.get()
    assert (m.topic, m.properties) == ("site1/up/plain", {})
    for c in (remote_sub, local_sub, local_pub, remote_pub):
        c.close()


def test_v5_both_ways_on_one_pattern_never_loop_by_no_local(mosquitto, amqtt):
    remote, local = bridged(mosquitto, amqtt, [
        "{pattern: 'shared/#', direction: both, qos: 1}",
    ], extra=V5)
    remote_sub, local_sub = v5_client(remote.port), v5_client(local.port)
    remote_sub.subscribe("shared/#", 1)
    local_sub.subscribe("shared/#", 1)
    local_pub, remote_pub = v5_client(local.port), v5_client(remote.port)
    local_pub.publish("shared/from-local", "L", qos=1, UserProperty=[("from", "local")])
    remote_pub.publish("shared/from-remote", "R", qos=1, UserProperty=[("from", "remote")])
    time.sleep(3)
    for sub in (local_sub, remote_sub):
        got = []
        while True:
            try:
                got.append(sub.get(timeout=0.1))
            except AssertionError:
                break
        assert sorted((m.topic, m.properties["UserProperty"][0][1]) for m in got) == [
            ("shared/from-local", "local"), ("shared/from-remote", "remote")], got
    # No Local on both sides: no broker handed a copy back, so the echo guard had nothing to do.
    metrics = local.metrics('amqtt_bridge_messages_total{bridge="cloud",direction="in"} 1')
    assert 'amqtt_bridge_echoes_dropped_total{bridge="cloud"} 0' in metrics.splitlines(), metrics
    assert 'amqtt_bridge_messages_total{bridge="cloud",direction="out"} 1' in metrics.splitlines()
    for c in (remote_sub, local_sub, local_pub, remote_pub):
        c.close()


def test_v5_the_remote_keeps_the_bridge_session_while_it_is_away(mosquitto, amqtt):
    """clean_session false at MQTT 5 is a Session Expiry Interval above 0: with 0 the remote would
    forget the bridge's subscriptions and queue at its DISCONNECT."""
    n = 20
    remote, local = bridged(mosquitto, amqtt, [
        "{pattern: 'down/#', direction: in, qos: 1}",
    ], extra=V5, persistence=True)
    sub = PahoClient(HOST, local.port, client_id="local-sub", clean_session=False)
    assert sub.connect()[0] == 0
    sub.subscribe("down/#", 1)
    sub.close()
    local.stop()
    remote_pub = v5_client(remote.port)
    for i in range(n):
        remote_pub.publish(f"down/{i}", str(i), qos=1, UserProperty=[("i", str(i))])
    remote_pub.close()
    local.start()
    local.wait_state("cloud", "connected")
    sub = PahoClient(HOST, local.port, client_id="local-sub", clean_session=False)
    assert sub.connect()[0] == 0
    want = {str(i).encode() for i in range(n)}
    got = wait_count([sub], want, timeout=15)
    assert want <= set(got), f"{len(want - set(got))} lost"
    sub.close()


def test_v5_a_refused_connack_is_named_in_the_log_and_in_sys(mosquitto, amqtt):
    remote = mosquitto(users={"site1": "right"})
    local = amqtt(bridge_yaml(f"mqtt://site1:wrong@{HOST}:{remote.port}", [
        "{pattern: 'up/#', direction: out, qos: 1}",
    ], extra=V5))

    def wait_error(needle: str = "") -> str | None:
        """$SYS/broker/bridges/cloud/error once it says `needle` (or at the timeout)."""
        deadline = time.monotonic() + 20
        error = None
        while time.monotonic() < deadline and not (error and needle in error):
            error = local.sys("cloud", "error")
            time.sleep(0.2)
        return error

    def set_password(password: str) -> None:
        subprocess.run(["mosquitto_passwd", "-b", str(remote.workdir / "passwords"), "site1",
                        password], check=True, capture_output=True)

    error = wait_error()
    # Mosquitto 2.0 answers a wrong password at MQTT 5 with 0x87 (0x86 is for a malformed
    # user name or password); the bridge repeats what the remote said.
    refused = "not authorized (0x87)"
    assert error == f"remote: connection refused by the broker: {refused}", error
    assert local.sys("cloud", "state") == "disconnected"
    log = local.log.read_text(errors="replace")
    assert refused in log and "site1:wrong" not in log, log[-3000:]
    # The remote takes the bridge's password after all: once connected, the error is gone (an
    # empty retained message removed it).
    set_password("wrong")
    remote.proc.send_signal(signal.SIGHUP)
    local.wait_state("cloud", "connected", timeout=40)
    assert local.sys("cloud", "error") is None
    # Refused on a reconnect of the remote client (after a restart of the remote with another
    # password): first the lost connection, then the refusal, reported the same way.
    set_password("changed")
    remote.stop()
    remote.start()
    assert wait_error("refused") == f"remote: connection refused by the broker: {refused}"
    assert local.sys("cloud", "state") == "disconnected"



def test_v5_a_message_the_remote_refuses_is_dropped_and_the_bridge_goes_on(mosquitto, amqtt):
    """Mosquitto answers a publish its ACL denies with PUBACK 0x87 at MQTT 5: sending it again
    would be refused again, so the bridge drops it (a warning) and carries the next ones."""
    remote = mosquitto(users={"site1": "pw", "reader": "pw"},
                       acl="user site1\ntopic write up/ok\n\nuser reader\ntopic read #\n")
    local = amqtt(bridge_yaml(f"mqtt://site1:pw@{HOST}:{remote.port}", [
        "{pattern: 'up/#', direction: out, qos: 1}",
    ], extra=V5))
    local.wait_state("cloud", "connected")
    remote_sub = v5_client(remote.port, login=("reader", "pw"))
    remote_sub.subscribe("up/#", 1)
    local_pub = v5_client(local.port)
    local_pub.publish("up/denied", "no", qos=1)
    local_pub.publish("up/ok", "yes", qos=1)
    m = remote_sub.get()
    assert (m.topic, m.payload) == ("up/ok", b"yes")
    time.sleep(2)
    remote_sub.nothing()
    log = local.log.read_text(errors="replace")
    assert "dropped: the broker refused the message: not authorized (0x87)" in log, log[-3000:]
    assert "remote client ended" not in log, log[-3000:]
    assert local.sys("cloud", "state") == "connected"
    want = 'amqtt_bridge_messages_total{bridge="cloud",direction="out"} 1'
    assert want in local.metrics(want).splitlines()
    remote_sub.close()
    local_pub.close()
