"""Sessions that follow their client across the nodes of a cluster (`cluster:`): the session
directory in NATS JetStream (`<name>_sessions`), with nats-server and the nodes started as
`test_cluster.py` starts them (its fixtures and helpers, imported).

What is checked: a client id that connects on node B while connected on node A closes A's
connection (MQTT 5: DISCONNECT 0x8E Session taken over); a persistent session with 100 queued
QoS 1 messages moves to the node its client reconnects to (session present 1, each message once,
its subscription with it); NATS stopped: a new persistent session is refused with 0x03 (MQTT 5:
0x88), a clean session is accepted and a session the node already holds resumes; the old owner
killed with SIGKILL: the client is taken in on another node with its session made from the
directory entry (session present 1, its subscriptions in effect, MQTT 5 options and expiry
kept), and once the dead node is back, the QoS 1 messages PUBACKed and queued there for the
session before the kill reach the client on its new node, each once.
"""

from __future__ import annotations

import time
from collections import Counter

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


def test_when_the_old_owner_is_dead_the_session_is_made_from_the_directory(cluster):
    a, b, c = cluster("node-a"), cluster("node-b"), cluster("node-c")
    wait_all_live([a, b, c])
    s = subscribed(a, "orphan", "orphan/#")
    s.subscribe("other/+", 1)
    s.unsubscribe("other/+")
    # The entry is written right after the SUBACK, not before it (see README "Old owner dead").
    time.sleep(0.5)
    a.kill()
    again, connack = resume(b, "orphan")
    assert connack == (0, True), b.tail()
    assert "made here from the directory" in b.log.read_text(errors="replace")
    # Its interest reaches the other nodes after the CONNACK (not waited for).
    time.sleep(1)
    pub = c.client("orphan-pub")
    pub.publish("orphan/1", b"here", qos=1)
    pub.publish("other/1", b"unsubscribed", qos=1)
    pub.publish("orphan/2", b"again", qos=1)
    assert payloads(again, 2) == [b"here", b"again"], "subscribed without subscribing again"
    time.sleep(0.3)
    assert again.drain() == []
    pub.close()
    again.close()
    s.close()


def test_an_mqtt5_session_from_the_directory_keeps_its_options_and_expiry(cluster):
    a, b = two_nodes(cluster)
    first = v5_client(a, "orphan5")
    code, _, _ = first.connect(clean_start=False, SessionExpiryInterval=300)
    assert code == 0
    first.subscribe("five/#", qos=1, no_local=True, sub_id=7)
    time.sleep(0.5)
    a.kill()
    again = v5_client(b, "orphan5")
    code, present, _ = again.connect(clean_start=False, SessionExpiryInterval=300)
    assert (code, present) == (0, True), b.tail()
    time.sleep(1)
    # No Local: its own publish does not come back; another client's does, with the identifier.
    again.publish("five/own", b"own", qos=1)
    pub = b.client("five-pub")
    pub.publish("five/x", b"theirs", qos=1)
    message = again.get(timeout=5)
    assert (message.topic, message.payload) == ("five/x", b"theirs")
    assert message.properties.get("SubscriptionIdentifier") in (7, [7])
    again.nothing()
    pub.close()
    again.close()
    first.close()


def test_a_dead_node_back_hands_over_what_it_held_for_a_moved_session(cluster):
    a = cluster("node-a", persistence=True)
    b, c = cluster("node-b"), cluster("node-c")
    wait_all_live([a, b, c])
    subscribed(a, "held-on-a", "late/#").disconnect()
    time.sleep(0.5)
    pub = a.client("late-pub")
    count = 50
    for i in range(count):
        # PUBACKed: journaled on node A (fsync always) for the offline session.
        pub.publish(f"late/{i % 3}", f"before-{i}", qos=1)
    pub.close()
    a.kill()
    moved, connack = resume(b, "held-on-a")
    assert connack == (0, True), b.tail()
    time.sleep(1)
    other = c.client("late-pub-c")
    for i in range(5):
        other.publish("late/c", f"after-{i}", qos=1)
    got = payloads(moved, 5)
    assert got == [f"after-{i}".encode() for i in range(5)], "new messages go to the new owner"
    a.start()
    wait_log(a, "the messages held here went to node node-b", timeout=45)
    # The 50, and the 5 published after: node C still sent those to A's mailbox too.
    wait_log(b, "messages held by another node came", timeout=10)
    before = [f"before-{i}".encode() for i in range(count)]
    seen: Counter = Counter()
    deadline = time.monotonic() + 15
    while any(seen[m] == 0 for m in before) and time.monotonic() < deadline:
        for message in moved.drain():
            seen[message.payload] += 1
        time.sleep(0.1)
    time.sleep(0.5)
    for message in moved.drain():
        seen[message.payload] += 1
    assert [seen[m] for m in before] == [1] * count, "each message queued on A, once"
    # Node A gave the session up: a CONNECT there now takes it from node B (session present 1)
    # instead of resuming a copy of its own.
    other.close()
    moved.close()
