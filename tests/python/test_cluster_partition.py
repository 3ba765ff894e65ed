"""A cluster node cut off from NATS by the network, not by a stopped server: nats-server runs in a
network namespace this test creates, each of two broker nodes reaches it over its own veth pair,
and the partition takes one node's link down (its TCP connection to NATS is left open and simply
stops answering: no FIN, no RST). Addresses come from 198.18.0.0/15 (RFC 2544's range for test
networks) and exist only on those veth pairs: no traffic leaves the machine.

Needs root and `ip` (iproute2) with network namespaces; skipped cleanly elsewhere.

What is checked: the cut node notices within seconds (`amqtt_cluster_connected 0`), and the other
node sees it away; both go on serving their own clients (QoS 0 and 1, new subscriptions); the QoS 1
messages PUBACKed on the cut node for a subscriber on the other node arrive once the link heals,
in order, none lost; and cross-node delivery works both ways again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from mqtt_helpers import kill_running
from test_cluster import NATS, Nats, Node, first_pass_only, payloads, wait_all_live

IP = shutil.which("ip") or ("/usr/sbin/ip" if Path("/usr/sbin/ip").is_file() else None)

pytestmark = [
    pytest.mark.skipif(NATS is None, reason="nats-server is needed for the cluster tests"),
    pytest.mark.skipif(IP is None or os.geteuid() != 0,
                       reason="network namespaces need root and iproute2"),
]


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([IP, *args], capture_output=True, text=True, check=check)


class Network:
    """A namespace holding nats-server, and one veth pair per node into it."""

    def __init__(self):
        tag = os.getpid() % 100000
        self.ns = f"amqtt-part-{tag}"
        # 198.18.<n>.0/30 per node: host side .1, namespace side .2.
        self.third = (tag % 120) * 2
        self.links: dict[str, tuple[str, str]] = {}

    def create(self, nodes: list[str]) -> None:
        made = ip("netns", "add", self.ns, check=False)
        if made.returncode != 0:
            pytest.skip(f"cannot create a network namespace: {made.stderr.strip()}")
        try:
            self._link(nodes)
        except subprocess.CalledProcessError as e:
            self.destroy()
            pytest.skip(f"cannot set up veth pairs: {' '.join(e.cmd)}: {e.stderr.strip()}")

    def _link(self, nodes: list[str]) -> None:
        ip("-n", self.ns, "link", "set", "lo", "up")
        for i, node in enumerate(nodes):
            host = f"apt{os.getpid() % 100000}{chr(97 + i)}"  # at most 15 characters
            inner = host + "n"
            net = f"198.18.{self.third + i}"
            ip("link", "add", host, "type", "veth", "peer", "name", inner)
            self.links[node] = (host, f"{net}.2")
            ip("link", "set", inner, "netns", self.ns)
            ip("addr", "add", f"{net}.1/30", "dev", host)
            ip("-n", self.ns, "addr", "add", f"{net}.2/30", "dev", inner)
            ip("link", "set", host, "up")
            ip("-n", self.ns, "link", "set", inner, "up")

    def nats_address(self, node: str) -> str:
        """The address `node` reaches nats-server at (inside the namespace, over its own veth)."""
        return self.links[node][1]

    def cut(self, node: str) -> None:
        ip("link", "set", self.links[node][0], "down")

    def heal(self, node: str) -> None:
        ip("link", "set", self.links[node][0], "up")

    def destroy(self) -> None:
        for host, _ in self.links.values():
            ip("link", "del", host, check=False)
        ip("netns", "del", self.ns, check=False)


class NatsInNamespace(Nats):
    """nats-server with JetStream inside the test's namespace, on every address it has there
    (stopped as `Nats` is)."""

    def __init__(self, net: Network, workdir: Path):
        self.net = net
        self.workdir = workdir
        workdir.mkdir(exist_ok=True)
        self.port = 4222  # the namespace is the test's own: nothing else listens in it
        self.log = workdir / "nats.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [IP, "netns", "exec", self.net.ns, NATS, "-js", "-sd", str(self.workdir / "store"),
                 "-a", "0.0.0.0", "-p", str(self.port)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while "Server is ready" not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("nats-server did not start:\n" + self.log.read_text(errors="replace"),
                            pytrace=False)
            time.sleep(0.05)


def metric_value(node: Node, name: str) -> float | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{node.metrics_port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.split()[-1])
    return None


def wait_until(what: str, check, timeout: float, node: Node) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not within {timeout} s:\n{node.tail()}", pytrace=False)
        time.sleep(0.2)


@pytest.fixture
def partitioned(amqtt_bin, tmp_path):
    net = Network()
    nodes: list[Node] = []
    nats = NatsInNamespace(net, tmp_path / "nats")
    try:
        net.create(["node-a", "node-b"])
        nats.start()
        for name in ["node-a", "node-b"]:
            node = Node(amqtt_bin, tmp_path, name, nats.port,
                        nats_url=f"nats://{net.nats_address(name)}:{nats.port}")
            node.start()
            nodes.append(node)
        yield net, nodes[0], nodes[1]
    finally:
        for node in nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.stop()
        kill_running([n.proc for n in nodes if n.proc is not None])
        nats.stop()
        net.destroy()


@first_pass_only
def test_a_node_cut_off_from_nats_serves_locally_and_catches_up_when_healed(partitioned):
    net, a, b = partitioned
    wait_all_live([a, b])
    remote = b.client("remote-sub")
    remote.subscribe("part/#", 1)
    local = a.client("local-sub")
    local.subscribe("part/#", 1)
    pub = a.client("pub-a")
    pub.publish("part/0", b"before", qos=1)
    assert payloads(remote, 1) == [b"before"]
    assert payloads(local, 1) == [b"before"]

    net.cut("node-a")
    # The cut node notices without a FIN or RST (pings unanswered), the other sees it away.
    wait_until("node-a noticing the partition",
               lambda: metric_value(a, "amqtt_cluster_connected") == 0, 20, a)
    wait_until("node-b seeing node-a away",
               lambda: "node node-a is away" in b.log.read_text(errors="replace"), 20, b)

    # Both nodes serve their own clients meanwhile: a new subscription, QoS 0 and QoS 1.
    alone = a.client("alone-a")
    alone.subscribe("alone/#", 1)
    pub.publish("alone/0", b"qos0", qos=0)
    pub.publish("alone/1", b"qos1", qos=1)
    assert payloads(alone, 2) == [b"qos0", b"qos1"]
    b_sub = b.client("alone-b")
    b_sub.subscribe("b-only/#", 1)
    b_pub = b.client("pub-b")
    b_pub.publish("b-only/1", b"on b", qos=1)
    assert payloads(b_sub, 1) == [b"on b"]

    # QoS 1 PUBACKed on the cut node for the subscriber on the other node: kept, not lost.
    during = [f"during {i}".encode() for i in range(50)]
    for i, payload in enumerate(during):
        pub.publish(f"part/{i}", payload, qos=1)
    assert payloads(local, 50) == during

    net.heal("node-a")
    wait_until("node-a reconnecting to NATS",
               lambda: metric_value(a, "amqtt_cluster_connected") == 1, 30, a)
    assert payloads(remote, 50, timeout=30) == during, a.tail()
    assert remote.drain() == []

    # And cross-node delivery both ways, once each node sees the other live again.
    wait_until("node-b seeing node-a live again",
               lambda: b.log.read_text(errors="replace").count("node node-a is live") >= 2, 30, b)
    pub.publish("part/after", b"a to b", qos=1)
    assert payloads(remote, 1) == [b"a to b"]
    b_pub.publish("part/back", b"b to a", qos=1)
    assert payloads(local, 2) == [b"a to b", b"b to a"]
    for c in [remote, local, pub, alone, b_sub, b_pub]:
        c.close()
