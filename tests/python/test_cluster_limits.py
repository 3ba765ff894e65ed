"""The cluster's documented limits, as a user meets them (README "Cluster"): with persistence off,
the QoS 1/2 messages a node keeps for other nodes while NATS is away are bounded (64 MiB; beyond it
new ones are dropped and counted, the ones kept arrive in order once NATS is back), QoS 0 for
other nodes is dropped and counted while NATS is away, and a retained message whose topic is
longer than 1,500 bytes stays on its node (a shorter one reaches the others).

Same set-up as test_cluster.py: Debian's nats-server with JetStream on a free loopback port, two
broker nodes, paho-mqtt clients.
"""

from __future__ import annotations

import time

import pytest

from test_cluster import NATS, cluster, first_pass_only, nats, payloads, wait_all_live  # noqa: F401

pytestmark = pytest.mark.skipif(NATS is None, reason="nats-server is needed for the cluster tests")

MIB = 1 << 20


def counter(node, name: str) -> float:
    """The current value of a /metrics counter (0 when absent)."""
    return max(node.metric(name, float("inf"), timeout=0.01), 0.0)


@first_pass_only
def test_qos1_for_other_nodes_is_bounded_while_nats_is_away(cluster, nats):
    a, b = cluster("node-a"), cluster("node-b")
    wait_all_live([a, b])
    remote = b.client("remote-sub")
    remote.subscribe("big/#", 1)
    pub = a.client("pub-a")
    pub.publish("big/0", b"warm-up", qos=1)
    assert payloads(remote, 1) == [b"warm-up"]

    nats.stop()
    deadline = time.monotonic() + 10
    while "NATS connection lost" not in a.log.read_text(errors="replace"):
        assert time.monotonic() < deadline, a.tail()
        time.sleep(0.05)
    dropped_before = counter(a, "amqtt_cluster_messages_dropped_total")
    # 80 MiB of QoS 1 for the other node, PUBACKed here (persistence off): more than is kept.
    size = 256 * 1024
    sent = [i.to_bytes(4, "big") + bytes(size - 4) for i in range(320)]
    for i, payload in enumerate(sent):
        pub.publish(f"big/{i}", payload, qos=1)
    # QoS 0 for the other node is not kept at all while NATS is away.
    for i in range(10):
        pub.publish(f"big/q0/{i}", b"qos0", qos=0)
    a.metric("amqtt_cluster_messages_dropped_total", dropped_before + 10)
    dropped = settled(a, "amqtt_cluster_messages_dropped_total") - dropped_before
    kept = len(sent) + 10 - dropped
    # The bound is 64 MiB of batches: some 256 KiB messages fewer than 256 fit.
    assert 200 <= kept <= 64 * MIB // size, (dropped, a.tail())

    nats.start()
    got = payloads(remote, int(kept), timeout=60)
    # The oldest ones are kept, in order, nothing else arrives.
    assert [p[:4] for p in got] == [p[:4] for p in sent[:int(kept)]]
    time.sleep(1)
    assert remote.drain() == []
    # Cross-node delivery goes on after that.
    pub.publish("big/after", b"after", qos=1)
    assert payloads(remote, 1) == [b"after"]
    pub.close()
    remote.close()


@first_pass_only
def test_a_retained_topic_over_1500_bytes_stays_on_its_node(cluster):
    a, b = cluster("node-a"), cluster("node-b")
    wait_all_live([a, b])
    long_topic = "long/" + "x" * 1500
    pub = a.client("pub-a")
    pub.publish(long_topic, b"too long to share", qos=1, retain=True)
    pub.publish("long/short", b"shared", qos=1, retain=True)
    # The short one reaches the other node's store (a new subscriber there gets it) ...
    deadline = time.monotonic() + 10
    while True:
        there = b.client()
        there.subscribe("long/#", 1)
        got = collect(there, 0.5)
        there.close()
        if any(m.payload == b"shared" for m in got):
            break
        assert time.monotonic() < deadline, "the short retained topic never reached node-b"
    # ... and the long one only the node it was published on.
    assert all(m.payload != b"too long to share" for m in got)
    here = a.client()
    here.subscribe("long/#", 1)
    assert sorted(m.payload for m in here.get_messages(2)) == [b"shared", b"too long to share"]
    here.close()
    pub.close()


def settled(node, name: str) -> float:
    """A counter's value once two reads 1.2 s apart agree (the control shard copies the shards'
    and the link's counters once a second)."""
    last = counter(node, name)
    while True:
        time.sleep(1.2)
        now = counter(node, name)
        if now == last:
            return now
        last = now


def collect(client, quiet: float) -> list:
    """The messages `client` gets until none comes for `quiet` seconds."""
    got = []
    while True:
        try:
            got.append(client.get_message(timeout=quiet))
        except AssertionError:
            return got
