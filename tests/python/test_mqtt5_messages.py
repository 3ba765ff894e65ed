"""MQTT 5 conformance, messages: the second half of the black-box suite (see
`test_mqtt5_conformance.py` and `mqtt5_helpers`), run against amqtt at 1 and 2 shards and against
Mosquitto as the reference.

Covers: message properties forwarded unchanged and in order, Payload Format Indicator, Message
Expiry (retained and queued), No Local, Retain As Published, Retain Handling 0/1/2, Subscription
Identifiers and overlapping subscriptions, topic aliases both ways, Maximum Packet Size, Receive
Maximum toward a client and from it, PUBACK 0x10, shared subscriptions, and mixed protocol versions.
"""

from __future__ import annotations

import time

import pytest

from mqtt_helpers import PahoClient
from mqtt5_helpers import (RawV5, ack5, decode_props, parse_publish, publish5, subscribe5,
                           v5broker, v5clients)  # noqa: F401 (fixtures)

USER_PROPS = [("a", "1"), ("b", "2"), ("a", "3"), ("ü-key", "välue")]


def user_props(msg) -> list[tuple[str, str]]:
    return [tuple(p) for p in msg.properties.get("UserProperty", [])]


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_message_properties_are_forwarded_unchanged_and_in_order(v5clients, qos):
    sub = v5clients(f"props-sub-{qos}")
    sub.connected()
    sub.subscribe("msg/props", qos=2)
    pub = v5clients(f"props-pub-{qos}")
    pub.connected()
    pub.publish("msg/props", "héllo".encode(), qos=qos, PayloadFormatIndicator=1,
                ContentType="text/plain; charset=utf-8", ResponseTopic="msg/reply",
                CorrelationData=b"\x00\x01corr", UserProperty=USER_PROPS)
    msg = sub.get()
    assert msg.payload == "héllo".encode()
    assert msg.properties.get("PayloadFormatIndicator") == 1
    assert msg.properties.get("ContentType") == "text/plain; charset=utf-8"
    assert msg.properties.get("ResponseTopic") == "msg/reply"
    assert bytes.fromhex(msg.properties.get("CorrelationData")) == b"\x00\x01corr" \
        if isinstance(msg.properties.get("CorrelationData"), str) \
        else msg.properties.get("CorrelationData") == b"\x00\x01corr"
    # [MQTT-3.3.2-17, -18]: user properties unchanged, in order, repeated names kept.
    assert user_props(msg) == USER_PROPS


@pytest.mark.mqtt5_server_choice("validating the payload format is optional [MQTT-3.3.2-4]")
def test_a_payload_that_is_not_utf8_is_refused_when_marked_utf8(v5clients):
    pub = v5clients("pfi-pub")
    pub.connected()
    assert pub.publish("msg/pfi", b"\xff\xfe not utf-8", qos=1, PayloadFormatIndicator=1) == 0x99


def test_puback_without_subscribers_is_success_or_no_matching_subscribers(v5clients):
    pub = v5clients("nomatch-pub")
    pub.connected()
    assert pub.publish("msg/nobody/listens", b"x", qos=1) in (0x00, 0x10)
    assert pub.publish("msg/nobody/listens", b"x", qos=2) in (0x00, 0x10)


def test_an_expired_retained_message_is_not_delivered(v5clients):
    pub = v5clients("exp-ret-pub")
    pub.connected()
    pub.publish("msg/expiry/short", b"short", qos=1, retain=True, MessageExpiryInterval=1)
    pub.publish("msg/expiry/long", b"long", qos=1, retain=True, MessageExpiryInterval=60)
    time.sleep(2.2)
    sub = v5clients("exp-ret-sub")
    sub.connected()
    sub.subscribe("msg/expiry/+", qos=1)
    msg = sub.get()
    assert msg.topic == "msg/expiry/long"
    # [MQTT-3.3.2-6]: forwarded with what is left of the interval.
    assert 1 <= msg.properties.get("MessageExpiryInterval", 0) <= 58
    sub.nothing(0.5)


def test_an_expired_queued_message_is_not_delivered(v5clients):
    sub = v5clients("exp-q-sub")
    sub.connected(SessionExpiryInterval=60)
    sub.subscribe("msg/expq", qos=1)
    sub.disconnect()
    pub = v5clients("exp-q-pub")
    pub.connected()
    pub.publish("msg/expq", b"short", qos=1, MessageExpiryInterval=1)
    pub.publish("msg/expq", b"long", qos=1, MessageExpiryInterval=60)
    time.sleep(2.2)
    back = v5clients("exp-q-sub")
    code, present, _ = back.connect(clean_start=False, SessionExpiryInterval=60)
    assert (code, present) == (0, True)
    msg = back.get()
    assert msg.payload == b"long"
    assert 1 <= msg.properties.get("MessageExpiryInterval", 0) <= 58
    back.nothing(0.5)


def test_no_local_drops_a_clients_own_messages(v5clients):
    c = v5clients("nolocal")
    c.connected()
    c.subscribe("msg/nolocal", qos=1, no_local=True)
    c.publish("msg/nolocal", b"mine", qos=1)
    other = v5clients("nolocal-other")
    other.connected()
    other.publish("msg/nolocal", b"theirs", qos=1)
    assert c.get().payload == b"theirs"
    c.nothing(0.3)


def test_retain_as_published(v5clients):
    keep = v5clients("rap-keep")
    keep.connected()
    keep.subscribe("msg/rap", qos=1, retain_as_published=True)
    clear = v5clients("rap-clear")
    clear.connected()
    clear.subscribe("msg/rap", qos=1)
    pub = v5clients("rap-pub")
    pub.connected()
    pub.publish("msg/rap", b"r", qos=1, retain=True)
    assert keep.get().retain is True
    assert clear.get().retain is False  # [MQTT-3.3.1-13]
    pub.publish("msg/rap", b"", qos=1, retain=True)


def test_retain_handling(v5clients):
    pub = v5clients("rh-pub")
    pub.connected()
    pub.publish("msg/rh", b"kept", qos=1, retain=True)
    c = v5clients("rh-sub")
    c.connected()
    # 0: retained messages at every subscribe.
    c.subscribe("msg/rh", qos=1, retain_handling=0)
    assert c.get().payload == b"kept"
    c.subscribe("msg/rh", qos=1, retain_handling=0)
    assert c.get().payload == b"kept"
    c.unsubscribe("msg/rh")
    # 1: only when the subscription is new [MQTT-3.3.1-10].
    c.subscribe("msg/rh", qos=1, retain_handling=1)
    assert c.get().payload == b"kept"
    c.subscribe("msg/rh", qos=1, retain_handling=1)
    c.nothing(0.5)
    c.unsubscribe("msg/rh")
    # 2: never [MQTT-3.3.1-11].
    c.subscribe("msg/rh", qos=1, retain_handling=2)
    c.nothing(0.5)
    pub.publish("msg/rh", b"", qos=1, retain=True)


def test_subscription_identifiers_name_every_matching_subscription(v5clients):
    c = v5clients("subid")
    c.connected()
    c.subscribe("msg/subid/#", qos=1, sub_id=1)
    c.subscribe("msg/subid/+", qos=1, sub_id=2)
    c.subscribe("msg/subid/x", qos=1)  # no identifier
    pub = v5clients("subid-pub")
    pub.connected()
    pub.publish("msg/subid/x", b"x", qos=1)
    # One message per subscription, or one carrying several ids [MQTT-3.3.4-3, -4, -5].
    ids: list[int] = []
    count = 0
    while True:
        try:
            msg = c.get(timeout=0.7)
        except AssertionError:
            break
        count += 1
        got = msg.properties.get("SubscriptionIdentifier", [])
        ids += got if isinstance(got, list) else [got]
    assert 1 <= count <= 3
    assert sorted(ids) == [1, 2]
    pub.publish("msg/subid/y/z", b"y", qos=1)
    assert c.get().properties.get("SubscriptionIdentifier") in ([1], 1)


def test_overlapping_subscriptions_deliver_at_the_highest_qos(v5clients):
    c = v5clients("overlap")
    c.connected()
    c.subscribe("msg/overlap/#", qos=2)
    c.subscribe("msg/overlap/+", qos=1)
    pub = v5clients("overlap-pub")
    pub.connected()
    pub.publish("msg/overlap/x", b"o", qos=2)
    first = c.get()
    rest = []
    try:
        rest.append(c.get(timeout=0.7))
    except AssertionError:
        pass
    qoses = sorted([first.qos] + [m.qos for m in rest])
    # Either one copy at the highest granted QoS, or one per subscription [MQTT-3.3.4-2].
    assert qoses in ([2], [1, 2]), qoses


def test_client_topic_alias_is_resolved(v5broker, v5clients):
    sub = v5clients("alias-sub")
    sub.connected()
    sub.subscribe("msg/alias", qos=1)
    raw = RawV5(v5broker)
    code, props = raw.connect("alias-pub")
    assert code == 0
    maximum = dict(props).get("topic_alias_maximum", 0)
    if v5broker.kind == "amqtt":
        assert maximum >= 1, "amqtt advertises a Topic Alias Maximum"
    if maximum == 0:
        pytest.skip("the broker accepts no topic alias")
    raw.send(publish5("msg/alias", b"first", properties=[("topic_alias", 1)]))
    raw.send(publish5("", b"second", properties=[("topic_alias", 1)]))
    assert [(m.topic, m.payload) for m in sub.get_n(2)] == [("msg/alias", b"first"),
                                                             ("msg/alias", b"second")]
    # An alias above the maximum is a Topic Alias invalid error [MQTT-3.3.2-9].
    raw.send(publish5("msg/alias", b"third", properties=[("topic_alias", maximum + 1)]))
    assert raw.closed_with() in ((0x94,) if v5broker.kind == "amqtt" else (0x94, None))
    raw.close()


def _raw_subscriber(v5broker, client_id: str, topic: str, qos: int, **connect_props):
    raw = RawV5(v5broker)
    code, _ = raw.connect(client_id, properties=list(connect_props.items()))
    assert code == 0
    raw.send(subscribe5(1, [(topic, qos)]))
    raw.expect(9)
    return raw


def test_server_topic_aliases_stay_within_the_clients_maximum(v5broker, v5clients):
    raw = _raw_subscriber(v5broker, "salias-sub", "msg/salias/+", 0, topic_alias_maximum=2)
    pub = v5clients("salias-pub")
    pub.connected()
    topics = ["msg/salias/a", "msg/salias/b", "msg/salias/c", "msg/salias/a", "msg/salias/b"] * 2
    for t in topics:
        pub.publish(t, t.encode())
    aliases: dict[int, str] = {}
    for want in topics:
        got = parse_publish(*_next_publish(raw))
        alias = got.prop("topic_alias")
        if alias:
            assert 1 <= alias[0] <= 2, f"alias {alias[0]} above the client's maximum 2"
            if got.topic:
                aliases[alias[0]] = got.topic
            resolved = got.topic or aliases.get(alias[0])
        else:
            resolved = got.topic
        assert resolved == want and got.payload == want.encode()
    raw.close()


@pytest.mark.mqtt5_server_choice("amqtt's alias policy: the first topics get aliases 1..N")
def test_server_assigns_aliases_to_the_first_topics(v5broker, v5clients):
    """amqtt's policy (README "MQTT 5"): the first N distinct topics sent on a connection get
    aliases 1..N (N: the client's Topic Alias Maximum); the topic goes with its alias once, then
    the PUBLISH carries the alias and an empty topic; later topics go without an alias."""
    raw = _raw_subscriber(v5broker, "palias-sub", "msg/palias/+", 1, topic_alias_maximum=2)
    pub = v5clients("palias-pub")
    pub.connected()
    topics = ["msg/palias/a", "msg/palias/a", "msg/palias/b", "msg/palias/c", "msg/palias/b"]
    for t in topics:
        pub.publish(t, t.encode(), qos=1)
    seen = []
    for _ in topics:
        got = parse_publish(*_next_publish(raw))
        raw.send(ack5(4, got.packet_id))
        seen.append((got.topic, got.prop("topic_alias"), got.payload))
    assert seen == [("msg/palias/a", [1], b"msg/palias/a"), ("", [1], b"msg/palias/a"),
                    ("msg/palias/b", [2], b"msg/palias/b"), ("msg/palias/c", [], b"msg/palias/c"),
                    ("", [2], b"msg/palias/b")]
    raw.close()
    # paho (2.x) takes the aliases as they come and hands on an empty topic: resolved here, every
    # message to a paho subscriber that allows aliases names its topic once, then its alias.
    sub = v5clients("palias-paho")
    sub.connected(TopicAliasMaximum=5)
    sub.subscribe("msg/palias/+", qos=0)
    for t in topics:
        pub.publish(t, t.encode())
    known: dict[int, str] = {}
    resolved = []
    for m in sub.get_n(len(topics)):
        alias = m.properties.get("TopicAlias")
        if m.topic:
            if alias:
                known[alias] = m.topic
            resolved.append(m.topic)
        else:
            resolved.append(known[alias])
        assert m.payload == resolved[-1].encode()
    assert resolved == topics and sorted(known) == [1, 2, 3]


def _next_publish(raw: RawV5):
    got = raw.recv()
    assert got is not None, "connection closed"
    assert got[0] >> 4 == 3, f"expected PUBLISH, got {got!r}"
    return got


def test_maximum_packet_size_toward_a_client(v5broker, v5clients):
    raw = _raw_subscriber(v5broker, "maxsize-sub", "msg/maxsize", 1, maximum_packet_size=200)
    pub = v5clients("maxsize-pub")
    pub.connected()
    pub.publish("msg/maxsize", b"b" * 1000, qos=1)  # too big for the subscriber: dropped
    pub.publish("msg/maxsize", b"s" * 50, qos=1)
    got = parse_publish(*_next_publish(raw))
    assert got.payload == b"s" * 50
    raw.send(ack5(4, got.packet_id))
    raw.close()


def test_receive_maximum_toward_a_client(v5broker, v5clients):
    raw = _raw_subscriber(v5broker, "recvmax-sub", "msg/recvmax", 1, receive_maximum=2)
    pub = v5clients("recvmax-pub")
    pub.connected()
    for i in range(5):
        pub.publish("msg/recvmax", str(i).encode(), qos=1)
    first = [parse_publish(*_next_publish(raw)) for _ in range(2)]
    # [MQTT-3.3.4-9]: no more unacknowledged QoS 1 PUBLISHes than the client's Receive Maximum.
    try:
        extra = raw.recv(timeout=0.7)
    except AssertionError:
        extra = None
    assert extra is None, f"a third unacknowledged PUBLISH: {extra!r}"
    received = [p.payload for p in first]
    pending = list(first)
    while len(received) < 5:
        raw.send(ack5(4, pending.pop(0).packet_id))
        nxt = parse_publish(*_next_publish(raw))
        received.append(nxt.payload)
        pending.append(nxt)
    assert received == [b"0", b"1", b"2", b"3", b"4"]
    raw.close()


@pytest.mark.mqtt5_server_choice("Mosquitto 2.0.11 queues past its own Receive Maximum")
def test_receive_maximum_from_a_client_is_enforced(v5broker):
    raw = RawV5(v5broker)
    code, props = raw.connect("recvmax-pub-raw")
    assert code == 0
    maximum = dict(props).get("receive_maximum", 65535)
    if maximum > 1000:
        pytest.skip(f"the broker's Receive Maximum is {maximum}")
    # QoS 2 PUBLISHes stay unacknowledged until PUBREL/PUBCOMP: one more than allowed.
    for i in range(1, maximum + 2):
        raw.send(publish5("msg/recvmax-in", b"x", qos=2, packet_id=i))
    assert raw.closed_with() in ((0x93,) if v5broker.kind == "amqtt" else (0x93, None))
    raw.close()


@pytest.mark.parametrize("subscriber_first", [True, False], ids=["sub-first", "pub-first"])
def test_shared_subscription_delivers_each_message_to_one_member(v5clients, subscriber_first):
    members = [v5clients(f"share-m{i}") for i in range(3)]
    plain = v5clients("share-plain")
    for m in members:
        m.connected()
        assert m.subscribe("$share/grp/msg/share", qos=1) == [1]
    plain.connected()
    plain.subscribe("msg/share", qos=1)
    pub = v5clients("share-pub")
    pub.connected()
    for i in range(30):
        pub.publish("msg/share", str(i).encode(), qos=1)
    assert sorted(int(m.payload) for m in plain.get_n(30)) == list(range(30))
    seen: list[int] = []
    deadline = time.monotonic() + 5
    while len(seen) < 30 and time.monotonic() < deadline:
        for m in members:
            try:
                seen.append(int(m.get(timeout=0.05).payload))
            except AssertionError:
                pass
    assert sorted(seen) == list(range(30)), "each message to exactly one member"
    for m in members:
        m.nothing(0.2)


def test_a_publish_only_a_share_group_takes_is_not_no_matching_subscribers(v5clients):
    member = v5clients("share-only-m")
    member.connected()
    member.subscribe("$share/g/msg/share-only", qos=1)
    pub = v5clients("share-only-pub")
    pub.connected()
    # A group member is a matching subscriber: 0x10 would tell the publisher nobody got it.
    assert pub.publish("msg/share-only", b"x", qos=1) == 0x00
    assert member.get().payload == b"x"


@pytest.mark.mqtt5_server_choice("Mosquitto 2.0 sends retained messages on shared subscriptions")
def test_shared_subscription_gets_no_retained_message(v5clients):
    pub = v5clients("share-ret-pub")
    pub.connected()
    pub.publish("msg/share-ret", b"kept", qos=1, retain=True)
    m = v5clients("share-ret-m")
    m.connected()
    m.subscribe("$share/g/msg/share-ret", qos=1)
    m.nothing(0.5)  # MQTT 5.0 section 4.8.2 and the issue: no retained message on a shared one
    pub.publish("msg/share-ret", b"", qos=1, retain=True)


def test_mixed_protocol_versions(v5broker, v5clients):
    v3 = PahoClient(v5broker.host, v5broker.port, client_id="mixed-v3")
    try:
        assert v3.connect()[0] == 0
        v3.subscribe("msg/mixed/+", 1)
        v5 = v5clients("mixed-v5")
        v5.connected()
        v5.subscribe("msg/mixed/+", qos=1)
        v5.publish("msg/mixed/from5", b"five", qos=1, UserProperty=[("k", "v")])
        v3.publish("msg/mixed/from3", b"three", qos=1)
        got3 = sorted((m.topic, m.payload) for m in v3.get_messages(2))
        assert got3 == [("msg/mixed/from3", b"three"), ("msg/mixed/from5", b"five")]
        by_topic = {m.topic: m for m in v5.get_n(2)}
        assert user_props(by_topic["msg/mixed/from5"]) == [("k", "v")]
        assert by_topic["msg/mixed/from3"].payload == b"three"
        assert user_props(by_topic["msg/mixed/from3"]) == []
    finally:
        v3.close()


def test_decode_props_reads_what_the_tests_send():
    """The raw helpers themselves: an encoded property block decodes to the same pairs."""
    from mqtt5_helpers import encode_props
    items = [("payload_format", 1), ("user_property", ("k", "v")), ("topic_alias", 7),
             ("subscription_id", 300), ("correlation_data", b"\x00\xff")]
    decoded, end = decode_props(encode_props(items), 0)
    assert decoded == items and end == len(encode_props(items))
