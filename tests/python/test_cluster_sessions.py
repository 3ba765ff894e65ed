"""Sessions that follow their client across the nodes of a cluster (`cluster:`): the session
directory in NATS JetStream (`<name>_sessions`), with nats-server and the nodes started as
`test_cluster.py` starts them (its fixtures and helpers, imported).

What is checked: a client id that connects on node B while connected on node A closes A's
connection (MQTT 5: DISCONNECT 0x8E Session taken over); a persistent session with 100 queued
QoS 1 messages moves to the node its client reconnects to (session present 1, each message once,
its subscription with it); NATS stopped: a new persistent session is refused with 0x03 (MQTT 5:
0x88), a clean session is accepted and a session the node already holds resumes; the old owner
killed: the client is taken in on another node with a new session.
"""

from __future__ import annotations

import time

import pytest

from mqtt5_helpers import V5Broker, V5Client
from mqtt_helpers import PahoClient, RawConn
from test_cluster import HOST, NATS, Node, cluster, nats, payloads, wait_all_live  # noqa: F401

pytestmark = pytest.mark.skipif(
    NATS is None, reason="nats-server (apt-get install nats-server) is needed for these tests")


def v5_client(node: Node, client_id: str) -> V5Client:
    return V5Client(V5Broker(HOST, node.port, "amqtt", 2), client_id)


def two_nodes(cluster) -> tuple[Node, Node]:
    a, b = cluster("node-a"), cluster("node-b")
    wait_all_live([a, b])
    return a, b


def resume(node: Node, client_id: str) -> tuple[PahoClient, tuple[int, bool]]:
    """A persistent-session client of `node`, connected: (client, (return code, present))."""
    client = PahoClient(HOST, node.port, client_id=client_id, clean_session=False)
    return client, client.connect(timeout=10)


def subscribed(node: Node, client_id: str, topic_filter: str) -> PahoClient:
    """A persistent session of `node` subscribed to `topic_filter` at QoS 1, still connected."""
    client = node.client(client_id, clean_session=False)
    client.subscribe(topic_filter, 1)
    return client


def wait_log(node: Node, text: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while text not in node.log.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"{node.name} never logged {text!r}:\n{node.tail()}"
        time.sleep(0.05)


def test_a_client_id_connecting_on_another_node_takes_the_connection_over(cluster):
    a, b = two_nodes(cluster)
    first = a.client("roamer")
    second = b.client("roamer")
    first.wait_disconnect(timeout=5)
    assert not first.connected
    assert second.connected
    # And back: the fencing token moved on, node B gives it up in turn.
    third = a.client("roamer")
    second.wait_disconnect(timeout=5)
    assert third.connected
    third.close()


def test_an_mqtt5_client_taken_over_from_another_node_gets_0x8e(cluster):
    a, b = two_nodes(cluster)
    first = v5_client(a, "roamer5")
    first.connected()
    second = v5_client(b, "roamer5")
    second.connected()
    assert first.disconnects.get(timeout=5)[0] == 0x8E
    second.close()


def test_a_persistent_session_moves_with_its_queued_messages(cluster):
    a, b = two_nodes(cluster)
    subscribed(a, "mover", "move/#").disconnect()
    pub = a.client("mover-pub")
    count = 100
    for i in range(count):
        pub.publish(f"move/{i % 4}", f"{i}", qos=1)
    moved, connack = resume(b, "mover")
    assert connack == (0, True), b.tail()
    got = payloads(moved, count, timeout=15)
    assert sorted(got, key=int) == [f"{i}".encode() for i in range(count)]
    time.sleep(0.5)
    assert moved.drain() == [], "each message once"
    # Its subscription came along: a publish on node A reaches it on node B.
    pub.publish("move/x", b"after", qos=1)
    assert payloads(moved, 1) == [b"after"]
    assert "session came from another node" in b.log.read_text(errors="replace")
    pub.close()
    moved.close()


def test_without_nats_a_new_persistent_session_is_refused_and_others_go_on(cluster, nats):
    a = cluster("node-a")
    subscribed(a, "held", "held/#").disconnect()
    nats.stop()
    wait_log(a, "NATS connection lost")
    fresh = RawConn(HOST, a.port)
    assert fresh.connect("fresh", clean=False) == bytes([0, 3]), "CONNACK 0x03 Server unavailable"
    fresh.wait_closed()
    fresh5 = v5_client(a, "fresh5")
    code, _, _ = fresh5.connect(clean_start=False, SessionExpiryInterval=300)
    assert code == 0x88
    fresh5.close()
    clean = PahoClient(HOST, a.port, client_id="clean", clean_session=True)
    assert clean.connect() == (0, False)
    clean.close()
    back, connack = resume(a, "held")
    assert connack == (0, True), "a session this node holds resumes"
    back.close()


def test_when_the_old_owner_is_dead_the_client_gets_a_new_session_elsewhere(cluster):
    a, b = two_nodes(cluster)
    s = subscribed(a, "orphan", "orphan/#")
    a.kill()
    again, connack = resume(b, "orphan")
    assert connack == (0, False), b.tail()
    again.subscribe("orphan/#", 1)
    pub = b.client("orphan-pub")
    pub.publish("orphan/1", b"here", qos=1)
    assert payloads(again, 1) == [b"here"]
    pub.close()
    again.close()
    s.close()
