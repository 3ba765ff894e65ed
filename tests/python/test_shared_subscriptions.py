"""Shared subscriptions ($share/{group}/{filter}) from MQTT 3.1.1 clients (paho-mqtt, a raw
socket) against the broker process, at 1 and 2 shards: each message to one member of a group,
whichever shard the members live on; other groups and ordinary subscribers get their copies; no
retained messages on a shared subscription; invalid share names refused with 0x80; a member that
leaves hands its unacknowledged messages to another member."""

from __future__ import annotations

import pytest

from mqtt_helpers import RawConn, subscribe_packet

QUIET = 0.3


def home_shard(client_id: str, shards: int) -> int:
    """The broker's home shard of a client id (FNV-1a, src/broker/interface.rs)."""
    h = 0xCBF29CE484222325
    for b in client_id.encode():
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h % shards


def member_ids(prefix: str, count: int) -> list[str]:
    """`count` client ids, alternating between the homes of a two-shard broker."""
    out: list[str] = []
    i = 0
    while len(out) < count:
        cid = f"{prefix}{i}"
        if home_shard(cid, 2) == len(out) % 2:
            out.append(cid)
        i += 1
    return out


def payloads_of(client, timeout: float = QUIET) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(client.get_message(timeout=timeout).payload)
        except AssertionError:
            return out


def test_each_message_reaches_one_member_of_each_group(client_factory):
    members = [client_factory.connected(cid) for cid in member_ids("share-g-", 4)]
    for m in members:
        assert m.subscribe("$share/g/work/#", 1) == [1]
    other = client_factory.connected("share-h")
    assert other.subscribe("$share/h/work/+", 1) == [1]
    plain = client_factory.connected("share-plain")
    assert plain.subscribe("work/#", 1) == [1]
    pub = client_factory.connected("share-pub")
    sent = [f"m{i}".encode() for i in range(20)]
    for p in sent:
        pub.publish("work/x", p, qos=1)
    assert sorted(m.payload for m in plain.get_messages(20)) == sorted(sent)
    assert sorted(m.payload for m in other.get_messages(20)) == sorted(sent)
    got = [payloads_of(m) for m in members]
    assert sorted(p for g in got for p in g) == sorted(sent), "each message once in the group"
    assert [len(g) for g in got] == [5, 5, 5, 5], "round robin over the members"


def test_no_retained_message_on_a_shared_subscription(client_factory):
    pub = client_factory.connected("share-rpub")
    pub.publish("kept/t", b"retained", qos=1, retain=True)
    member = client_factory.connected("share-rmember")
    assert member.subscribe("$share/g/kept/#", 1) == [1]
    assert payloads_of(member) == []
    pub.publish("kept/t", b"live", qos=1, retain=True)
    m = member.get_message()
    assert (m.payload, m.retain) == (b"live", False)


def test_invalid_share_names_are_refused_with_0x80(client_factory):
    c = client_factory.connected("share-invalid")
    granted = c.subscribe([("$share/+/t", 1), ("$share//t", 1), ("$share/g", 1),
                           ("$share/g/t", 1)])
    assert granted == [0x80, 0x80, 0x80, 1]
    assert c.connected


@pytest.mark.broker_yaml("shared_subscription_strategy: hash_client_id\n")
def test_hash_client_id_keeps_one_publisher_on_one_member(client_factory):
    members = [client_factory.connected(cid) for cid in member_ids("share-hash-", 4)]
    for m in members:
        assert m.subscribe("$share/g/h/#", 1) == [1]
    pub = client_factory.connected("share-hash-pub")
    for i in range(12):
        pub.publish("h/x", f"m{i}".encode(), qos=1)
    got = [payloads_of(m) for m in members]
    assert sorted(len(g) for g in got) == [0, 0, 0, 12]


def test_a_member_that_leaves_hands_its_unacknowledged_messages_on(broker, client_factory):
    first, second = member_ids("share-leave-", 2)
    raw = RawConn(*broker)
    try:
        assert raw.connect(client_id=first, clean=True) == bytes([0, 0])
        raw.send(subscribe_packet(1, [("$share/g/jobs", 1)]))
        assert raw.recv_packet() is not None  # SUBACK
        pub = client_factory.connected("share-leave-pub")
        for i in range(3):
            pub.publish("jobs", f"j{i}".encode(), qos=1)
        # The only member gets them, and acknowledges none.
        for _ in range(3):
            first_byte, _body = raw.recv_packet()
            assert first_byte >> 4 == 3, f"expected PUBLISH, got {first_byte:#04x}"
        other = client_factory.connected(second)
        assert other.subscribe("$share/g/jobs", 1) == [1]
        assert payloads_of(other) == []
    finally:
        raw.close()
    got = sorted(m.payload for m in other.get_messages(3))
    assert got == [b"j0", b"j1", b"j2"]
