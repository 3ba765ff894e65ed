"""Shared subscriptions across the nodes of a cluster (`$share/{group}/{filter}`, README
"Cluster"): nats-server and the nodes started as `test_cluster.py` starts them (its fixtures and
helpers, imported).

What is checked: two nodes, a group with one member on each, publishers on both nodes, at QoS 0
and QoS 1: every message reaches exactly one member (no duplicates: no failures here), both
members get some of each node's messages, and an ordinary subscriber on each node gets every
message; a member on the other node only gets everything published on this node, and no retained
message on its subscription; a member that leaves its node's group sends that node's messages to
the member on the other node; with persistence on, QoS 1 and 2 publishers' acknowledgements wait
for the other node's mailbox and arrive, and every message reaches the member once.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from mqtt_helpers import PahoClient
from test_cluster import NATS, Node, cluster, nats, wait_all_live  # noqa: F401

pytestmark = pytest.mark.skipif(
    NATS is None, reason="nats-server (apt-get install nats-server) is needed for these tests")

GROUP = "$share/g/jobs/#"


def two_nodes(cluster) -> tuple[Node, Node]:
    a, b = cluster("node-a"), cluster("node-b")
    wait_all_live([a, b])
    return a, b


def subscribed(node: Node, client_id: str, topic: str, qos: int) -> PahoClient:
    c = node.client(client_id)
    assert c.subscribe(topic, qos) == [qos]
    return c


def collect(clients: list[PahoClient], total: int, timeout: float = 15,
            settle: float = 1.0) -> list[list[bytes]]:
    """What each client received until `total` messages came in all (or `timeout`), then for
    `settle` seconds more: a duplicate or a stray copy would show."""
    got: list[list[bytes]] = [[] for _ in clients]
    deadline = time.monotonic() + timeout
    while sum(map(len, got)) < total and time.monotonic() < deadline:
        for i, c in enumerate(clients):
            got[i].extend(m.payload for m in c.drain())
        time.sleep(0.02)
    time.sleep(settle)
    for i, c in enumerate(clients):
        got[i].extend(m.payload for m in c.drain())
    return got


@pytest.mark.parametrize("qos", [0, 1])
def test_each_message_reaches_one_member_whichever_node_it_is_published_on(cluster, qos):
    a, b = two_nodes(cluster)
    members = [subscribed(a, f"member-a{qos}", GROUP, qos),
               subscribed(b, f"member-b{qos}", GROUP, qos)]
    plain = [subscribed(a, f"plain-a{qos}", "jobs/#", qos),
             subscribed(b, f"plain-b{qos}", "jobs/#", qos)]
    count = 100
    for node, tag in ((a, "a"), (b, "b")):
        p = node.client()
        for i in range(count):
            p.publish(f"jobs/{i % 4}", f"{tag}:{i}", qos=qos)
        p.close()
    expected = Counter(f"{tag}:{i}".encode() for tag in "ab" for i in range(count))
    to_members = collect(members, 2 * count)
    got = Counter(p for received in to_members for p in received)
    assert got == expected, (
        f"duplicates: {[p for p, n in got.items() if n > 1][:5]}, "
        f"missing: {list((expected - got).elements())[:5]}")
    for received, node in zip(to_members, ("node-a", "node-b")):
        tags = Counter(p.split(b":")[0] for p in received)
        assert tags[b"a"] > 0 and tags[b"b"] > 0, (
            f"the member on {node} gets some of each node's messages: {tags}")
    for received in collect(plain, 4 * count):
        assert Counter(received) == expected, "an ordinary subscriber gets every message once"
    for c in members + plain:
        c.close()


def test_a_member_on_the_other_node_only_gets_all_and_no_retained_message(cluster):
    a, b = two_nodes(cluster)
    p = a.client()
    p.publish("jobs/r", b"kept", qos=1, retain=True)
    # Node B has the retained message (an ordinary subscription there gets it) ...
    seen = b.client()
    deadline = time.monotonic() + 5
    while True:
        seen.subscribe("jobs/r", 1)
        try:
            assert seen.get_message(timeout=0.5).payload == b"kept"
            break
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            seen.unsubscribe("jobs/r")
    seen.close()
    # ... but never on a shared subscription.
    member = subscribed(b, "only-member", GROUP, 1)
    for qos in (0, 1):
        for i in range(50):
            p.publish(f"jobs/{qos}", f"{qos}:{i}", qos=qos)
    got = collect([member], 100)[0]
    expected = Counter(f"{qos}:{i}".encode() for qos in (0, 1) for i in range(50))
    assert Counter(got) == expected, f"{len(got)} messages; retained: {b'kept' in got}"
    p.close()
    member.close()


def test_a_member_that_leaves_sends_its_nodes_messages_to_the_other_node(cluster):
    a, b = two_nodes(cluster)
    stays = subscribed(a, "stays", GROUP, 1)
    leaves = subscribed(b, "leaves", GROUP, 1)
    leaves.unsubscribe(GROUP)
    # Node A hears of it with B's next interest delta (no SUBACK waits for an UNSUBSCRIBE).
    time.sleep(1)
    p = b.client()
    for i in range(30):
        p.publish("jobs/x", f"m{i}", qos=1)
    got = collect([stays, leaves], 30)
    assert Counter(got[0]) == Counter(f"m{i}".encode() for i in range(30))
    assert got[1] == []
    p.close()
    stays.close()
    leaves.close()


def test_with_persistence_a_publishers_acks_wait_for_the_other_nodes_mailbox_and_come(cluster):
    """The link numbers a group's QoS 1/2 message like the other cross-node publishes: the
    publisher's PUBACK (PUBREC) waits until JetStream stored it, and the receiving node takes
    it off its mailbox once its shard has it durable. A stamp left unconfirmed would hold the
    publisher's acknowledgements for ever."""
    a, b = cluster("node-a", persistence=True), cluster("node-b", persistence=True)
    wait_all_live([a, b])
    member = subscribed(b, "durable-member", GROUP, 2)
    p = a.client()
    for qos in (1, 2):
        for i in range(40):
            p.publish(f"jobs/{qos}", f"{qos}:{i}", qos=qos, timeout=10)
    got = collect([member], 80)[0]
    assert Counter(got) == Counter(f"{qos}:{i}".encode() for qos in (1, 2) for i in range(40))
    p.close()
    member.close()
