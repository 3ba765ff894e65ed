"""A cluster of amqtt nodes on NATS (`cluster:`): Debian's nats-server with JetStream, started by
each test on a free loopback port (its store in the test's directory) and stopped by its PID;
three broker nodes on loopback ports; paho-mqtt and mosquitto_pub/sub clients.

What is checked: a publisher on one node reaches subscribers on the others at QoS 0, 1 and 2
with its order kept; a SUBACK on one node means a publish made right after on another node
reaches the subscriber; retained messages from any node, deleted from any node, loaded by a node
that starts later; a node killed with SIGKILL and restarted (persistence on) gets the QoS 1
messages PUBACKed elsewhere while it was away (past its liveness entry) for its persistent
session; NATS stopped: local
delivery goes on, and cross-node delivery resumes when NATS is back; with persistence on, a
PUBACK waits until the other node's mailbox has the message (held while NATS is away).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from mqtt_helpers import PahoClient, accepts, free_port, kill_running, launch_broker, stop_broker

NATS = shutil.which("nats-server") or (
    "/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").is_file() else None)
pytestmark = pytest.mark.skipif(
    NATS is None, reason="nats-server (apt-get install nats-server) is needed for the cluster tests")

HOST = "127.0.0.1"

# What the link does does not depend on the shards' runtime: CI's second pass (AMQTT_RUNTIME=epoll)
# runs only the delivery tests.
first_pass_only = pytest.mark.skipif(
    os.environ.get("AMQTT_RUNTIME") == "epoll", reason="runtime-independent: ran in the first pass")


class Nats:
    """One nats-server with JetStream, its store in `workdir` (kept across a restart)."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        workdir.mkdir(exist_ok=True)
        self.port = free_port()
        self.log = workdir / "nats.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [NATS, "-js", "-sd", str(self.workdir / "store"), "-a", HOST, "-p", str(self.port)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while not accepts(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("nats-server did not start:\n" + self.log.read_text(errors="replace"),
                            pytrace=False)
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


class Node:
    """One amqtt node of the cluster."""

    def __init__(self, amqtt_bin: Path, workdir: Path, name: str, nats_port: int,
                 persistence: bool = False, shards: int = 2, nats_url: str | None = None):
        self.amqtt_bin = amqtt_bin
        self.name = name
        self.workdir = workdir / name
        self.workdir.mkdir(exist_ok=True)
        self.port = free_port()
        self.metrics_port = free_port()
        self.config = self.workdir / "amqtt.yaml"
        self.config.write_text(
            "listeners:\n  default:\n    type: tcp\n"
            f"    bind: {HOST}:{self.port}\n"
            f"shards: {shards}\npin_shards: false\nsys_interval: 0\n"
            f"metrics:\n  bind: {HOST}:{self.metrics_port}\n"
            + (f"persistence:\n  enabled: true\n  dir: {self.workdir}/data\n  fsync: always\n"
               if persistence else "")
            + f"cluster:\n  node: {name}\n"
            + f"  nats: ['{nats_url or f'nats://{HOST}:{nats_port}'}']\n")
        self.log = self.workdir / "amqtt.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = launch_broker(self.amqtt_bin, self.config, self.log,
                                  lambda: accepts(self.port))
        # In the cluster once its link has set up its part of NATS.
        deadline = time.monotonic() + 15
        while "joined cluster" not in self.log.read_text(errors="replace"):
            if time.monotonic() > deadline:
                pytest.fail(f"{self.name} did not join:\n" + self.tail(), pytrace=False)
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            stop_broker(self.proc, self.log)
            self.proc = None

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def client(self, client_id: str = "", clean_session: bool = True) -> PahoClient:
        c = PahoClient(HOST, self.port, client_id=client_id, clean_session=clean_session)
        rc, _ = c.connect()
        assert rc == 0
        return c

    def metric(self, line_start: str, want: float, timeout: float = 5) -> float:
        """The value of the /metrics series starting with `line_start` once it reaches `want`
        (the control shard copies the counters once a second)."""
        deadline = time.monotonic() + timeout
        value = -1.0
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://{HOST}:{self.metrics_port}/metrics", timeout=5) as r:
                for line in r.read().decode().splitlines():
                    if line.startswith(line_start + " "):
                        value = float(line.split()[-1])
            if value >= want:
                return value
            time.sleep(0.2)
        return value

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@pytest.fixture
def nats(tmp_path):
    n = Nats(tmp_path / "nats")
    n.start()
    yield n
    n.stop()


@pytest.fixture
def cluster(amqtt_bin, tmp_path, nats):
    made: list[Node] = []

    def make(name: str, persistence: bool = False, shards: int = 2) -> Node:
        node = Node(amqtt_bin, tmp_path, name, nats.port, persistence, shards)
        node.start()
        made.append(node)
        return node

    yield make
    for node in made:
        if node.proc is not None and node.proc.poll() is None:
            node.stop()
    kill_running([n.proc for n in made if n.proc is not None])


def wait_all_live(nodes: list[Node], timeout: float = 10) -> None:
    """Every node has seen every other one live (they renew every 2 s)."""
    deadline = time.monotonic() + timeout
    for node in nodes:
        for other in nodes:
            if other is node:
                continue
            while f"node {other.name} is live" not in node.log.read_text(errors="replace"):
                if time.monotonic() > deadline:
                    pytest.fail(f"{node.name} never saw {other.name}:\n{node.tail()}",
                                pytrace=False)
                time.sleep(0.05)


def payloads(client: PahoClient, count: int, timeout: float = 10) -> list[bytes]:
    return [m.payload for m in client.get_messages(count, timeout=timeout)]


def test_a_publisher_reaches_subscribers_on_every_node_in_order(cluster):
    a, b, c = cluster("node-a"), cluster("node-b", shards=1), cluster("node-c")
    wait_all_live([a, b, c])
    subs = []
    for node in (b, c):
        s = node.client()
        s.subscribe("orders/#", 2)
        subs.append(s)
    local = a.client()
    local.subscribe("orders/#", 2)
    pub = a.client()
    count = 200
    for qos in (0, 1, 2):
        for i in range(count):
            pub.publish(f"orders/q{qos}", f"{qos}:{i}", qos=qos)
    for s in subs + [local]:
        got = payloads(s, 3 * count)
        for qos in (0, 1, 2):
            of_qos = [p for p in got if p.startswith(f"{qos}:".encode())]
            assert of_qos == [f"{qos}:{i}".encode() for i in range(count)], f"QoS {qos}"
        s.close()
    pub.close()
    # Once per node: 200 QoS 0 over core NATS and 400 QoS 1/2 through the mailboxes, to b and c.
    assert a.metric('amqtt_cluster_messages_total{direction="out",path="core"}', 400) == 400
    assert a.metric('amqtt_cluster_messages_total{direction="out",path="jetstream"}', 800) == 800
    assert b.metric('amqtt_cluster_messages_total{direction="in",path="core"}', 200) == 200
    assert b.metric('amqtt_cluster_messages_total{direction="in",path="jetstream"}', 400) == 400
    assert a.metric("amqtt_cluster_nodes", 3) == 3
    assert a.metric('amqtt_cluster_connected{node="node-a"}', 1) == 1


def test_a_suback_means_the_other_nodes_route_to_the_new_subscriber(cluster):
    a, b = cluster("node-a"), cluster("node-b")
    wait_all_live([a, b])
    pub = a.client()
    for i in range(20):
        s = b.client()
        s.subscribe(f"fresh/{i}", 1)
        # Right after the SUBACK, from the other node: it must arrive.
        pub.publish(f"fresh/{i}", b"x", qos=1)
        assert s.get_message(timeout=5).payload == b"x", f"round {i}"
        s.close()
    pub.close()


@first_pass_only
def test_retained_messages_from_any_node_and_for_a_node_that_starts_later(cluster):
    a, b = cluster("node-a"), cluster("node-b")
    wait_all_live([a, b])
    p = a.client()
    p.publish("state/door", b"open", qos=1, retain=True)
    p.publish("state/window", b"shut", qos=1, retain=True)
    p.close()
    deadline = time.monotonic() + 5
    while True:
        s = b.client()
        s.subscribe("state/#", 1)
        try:
            got = sorted(m.payload for m in s.get_messages(2, timeout=1))
            break
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        finally:
            s.close()
    assert got == [b"open", b"shut"]
    # Deleted from the other node.
    q = b.client()
    q.publish("state/door", b"", qos=1, retain=True)
    q.close()
    c = cluster("node-c")
    s = c.client()
    s.subscribe("state/#", 1)
    assert payloads(s, 1) == [b"shut"]
    time.sleep(0.5)
    assert s.drain() == [], "the deleted one stays deleted"
    s.close()
    s = a.client()
    s.subscribe("state/door", 1)
    time.sleep(1)
    assert s.drain() == [], "deleted on the node that made it too"
    s.close()


@first_pass_only
def test_a_killed_node_gets_what_was_acknowledged_for_it_while_away(cluster):
    a = cluster("node-a")
    b = cluster("node-b", persistence=True)
    wait_all_live([a, b])
    s = b.client("keeper", clean_session=False)
    s.subscribe("jobs/#", 1)
    s.close()
    b.kill()
    # Past its liveness entry: node-a counts node-b away, and still stores what is for it.
    deadline = time.monotonic() + 20
    while "node node-b is away" not in a.log.read_text(errors="replace"):
        assert time.monotonic() < deadline, a.tail()
        time.sleep(0.2)
    pub = a.client()
    count = 100
    for i in range(count):
        # PUBACKed: in node-b's JetStream mailbox.
        pub.publish(f"jobs/{i % 3}", f"{i}", qos=1)
    pub.close()
    b.start()
    s = b.client("keeper", clean_session=False)
    got = payloads(s, count, timeout=15)
    assert sorted(got, key=int) == [f"{i}".encode() for i in range(count)]
    s.close()


@first_pass_only
def test_local_delivery_goes_on_without_nats_and_cross_node_delivery_resumes(cluster, nats):
    a, b = cluster("node-a"), cluster("node-b")
    wait_all_live([a, b])
    remote = b.client()
    remote.subscribe("live/#", 1)
    local = a.client()
    local.subscribe("live/#", 1)
    pub = a.client()
    pub.publish("live/0", b"before", qos=1)
    assert payloads(remote, 1) == [b"before"]
    assert payloads(local, 1) == [b"before"]
    nats.stop()
    time.sleep(0.5)
    # Local service does not depend on NATS: a new subscription and QoS 0 traffic.
    s = a.client()
    s.subscribe("alone/#", 1)
    pub.publish("alone/1", b"still here", qos=0)
    assert payloads(s, 1) == [b"still here"]
    s.close()
    nats.start()
    # Cross-node delivery resumes once the links have reconnected.
    deadline = time.monotonic() + 20
    while True:
        pub.publish("live/1", b"after", qos=0)
        try:
            if remote.get_message(timeout=0.5).payload == b"after":
                break
        except AssertionError:
            pass
        assert time.monotonic() < deadline, "no cross-node delivery after NATS came back:\n" + a.tail()
    pub.close()
    remote.close()
    local.close()


@first_pass_only
def test_with_persistence_a_puback_waits_until_the_other_node_has_the_message(cluster, nats):
    a = cluster("node-a", persistence=True)
    b = cluster("node-b")
    wait_all_live([a, b])
    sub = b.client()
    sub.subscribe("held/#", 1)
    local = a.client()
    local.subscribe("held/#", 1)
    pub = a.client()
    pub.publish("held/0", b"first", qos=1)
    assert payloads(sub, 1) == [b"first"]
    nats.stop()
    time.sleep(0.5)
    info = pub.publish_nowait("held/1", b"second", qos=1)
    # Delivered here at once, but not acknowledged: node-b does not have it yet.
    assert payloads(local, 2) == [b"first", b"second"]
    time.sleep(1.5)
    assert not info.is_published(), "PUBACK before the other node's mailbox stored it"
    nats.start()
    info.wait_for_publish(20)
    assert info.is_published(), "no PUBACK after NATS came back:\n" + a.tail()
    assert payloads(sub, 1, timeout=10) == [b"second"]
    for c in (sub, local, pub):
        c.close()


@first_pass_only
def test_a_bad_cluster_block_fails_at_start_with_the_key(amqtt_bin, tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("cluster:\n  node: 'has space'\n  nats: ['nats://127.0.0.1:4222']\n")
    out = subprocess.run([str(amqtt_bin), "-c", str(config)], capture_output=True, text=True,
                         timeout=10)
    assert out.returncode != 0
    assert "cluster.node" in out.stderr and "letters, digits" in out.stderr
