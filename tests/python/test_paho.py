"""Interoperability with paho-mqtt 2.x (MQTT 3.1.1 and 3.1) against the amqtt broker process."""

from __future__ import annotations

import paho.mqtt.client as mqtt
import pytest

from mqtt_helpers import PahoClient, RawConn

QUIET = 0.3  # seconds to wait when checking that nothing (more) arrives


def expect_quiet(client: PahoClient, seconds: float = QUIET) -> None:
    try:
        extra = client.messages.get(timeout=seconds)
    except Exception:
        return
    raise AssertionError(f"unexpected message: {extra} (and {client.drain()})")


def sentinel(publisher: PahoClient, subscriber: PahoClient, topic: str) -> None:
    """Publishes a marker at QoS 1 and requires it to be the next message the subscriber gets."""
    publisher.publish(topic, b"sentinel", qos=1)
    m = subscriber.get_message()
    assert (m.topic, m.payload) == (topic, b"sentinel"), f"expected only the sentinel, got {m}"


# --- CONNECT / CONNACK ---------------------------------------------------------------------------

def test_connect_clean_session_connack(client_factory):
    c = client_factory("clean-1", clean_session=True)
    assert c.connect() == (0, False)
    c.disconnect()


def test_session_present_flag(client_factory):
    cid = "persist-sp"
    # A first persistent connection: no session yet.
    c = client_factory(cid, clean_session=False)
    assert c.connect() == (0, False)
    c.disconnect()
    # Reconnect persistent: the session is there.
    c = client_factory(cid, clean_session=False)
    assert c.connect() == (0, True)
    c.disconnect()
    # Reconnect clean: session discarded, flag 0 [MQTT-3.2.2-1].
    c = client_factory(cid, clean_session=True)
    assert c.connect() == (0, False)
    c.disconnect()
    # The clean session was not kept, so a persistent connection starts fresh again.
    c = client_factory(cid, clean_session=False)
    assert c.connect() == (0, False)
    c.disconnect()


def test_zero_length_client_id_clean_session_accepted(client_factory):
    # Two clients with an empty id get distinct generated ids: neither takes over the other.
    a = client_factory("", clean_session=True)
    b = client_factory("", clean_session=True)
    assert a.connect() == (0, False)
    assert b.connect() == (0, False)
    assert a.subscribe("anon/t", 1) == [1]
    b.publish("anon/t", b"to-a", qos=1)
    m = a.get_message()
    assert (m.topic, m.payload, m.qos) == ("anon/t", b"to-a", 1)
    assert a.connected and b.connected
    assert a.disconnects.empty() and b.disconnects.empty()


def test_zero_length_client_id_persistent_refused(broker):
    # paho refuses to send this itself...
    with pytest.raises(ValueError):
        mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="", clean_session=False)
    # ...so send it raw: CONNACK return code 2 (identifier rejected), then close [MQTT-3.1.3-8].
    raw = RawConn(*broker)
    try:
        assert raw.connect(client_id="", clean=False) == bytes([0, 2])
        assert raw.wait_closed() == b""
    finally:
        raw.close()


def test_mqtt31_connect_and_pubsub(client_factory):
    c = client_factory("v31-client", protocol=mqtt.MQTTv31)
    assert c.connect() == (0, False)
    assert c.subscribe("v31/t", 2) == [2]
    c.publish("v31/t", b"old protocol", qos=2)
    m = c.get_message()
    assert (m.topic, m.payload, m.qos, m.retain) == ("v31/t", b"old protocol", 2, False)
    c.disconnect()


def test_mqtt31_and_311_clients_interoperate(client_factory):
    old = client_factory.connected("v31-sub", protocol=mqtt.MQTTv31)
    new = client_factory.connected("v311-pub", protocol=mqtt.MQTTv311)
    assert old.subscribe("mix/#", 1) == [1]
    new.publish("mix/a", b"x", qos=1)
    m = old.get_message()
    assert (m.topic, m.payload, m.qos) == ("mix/a", b"x", 1)


# --- publish / subscribe ---------------------------------------------------------------------------

@pytest.mark.parametrize("pub_qos", [0, 1, 2])
def test_pubsub_qos(client_factory, pub_qos):
    subs = {}
    for sub_qos in (0, 1, 2):
        s = client_factory.connected(f"sub-q{sub_qos}")
        assert s.subscribe("pq/topic", sub_qos) == [sub_qos]
        subs[sub_qos] = s
    pub = client_factory.connected("pub")
    payload = bytes(range(256)) + b"\x00end"
    pub.publish("pq/topic", payload, qos=pub_qos)
    for sub_qos, s in subs.items():
        m = s.get_message()
        # Delivered at the lower of the publish QoS and the granted QoS [MQTT-3.8.4-6].
        assert m == type(m)("pq/topic", payload, min(pub_qos, sub_qos), False), \
            f"subscriber at QoS {sub_qos}"
    for s in subs.values():
        expect_quiet(s, 0.1)


def test_empty_payload_and_unicode_topic(client_factory):
    c = client_factory.connected("uni")
    topic = "ünï/çødé/✓"
    assert c.subscribe(topic, 1) == [1]
    c.publish(topic, b"", qos=1)
    m = c.get_message()
    assert (m.topic, m.payload, m.qos, m.retain) == (topic, b"", 1, False)


def test_subscribe_multiple_filters_granted_qos(client_factory):
    c = client_factory.connected("multi")
    granted = c.subscribe([("m/a", 0), ("m/b", 1), ("m/c", 2), ("m/+/#", 1)])
    assert granted == [0, 1, 2, 1]


def test_wildcards(client_factory):
    sub = client_factory.connected("wild-sub")
    pub = client_factory.connected("wild-pub")
    assert sub.subscribe([("w/+/c", 1), ("x/#", 1)]) == [1, 1]
    for topic in ["w/b/d", "w/b/c/d", "w/c", "y/x"]:  # no match
        pub.publish(topic, b"no", qos=1)
    for topic in ["w/b/c", "w//c", "x", "x/1/2/3"]:  # match ("x/#" matches its parent "x")
        pub.publish(topic, b"yes", qos=1)
    got = sub.get_messages(4)
    assert sorted(m.topic for m in got) == sorted(["w/b/c", "w//c", "x", "x/1/2/3"])
    assert all(m.payload == b"yes" for m in got)
    expect_quiet(sub)


def test_overlapping_subscriptions_one_copy_at_max_qos(client_factory):
    sub = client_factory.connected("overlap-sub")
    pub = client_factory.connected("overlap-pub")
    assert sub.subscribe([("ov/#", 0), ("ov/+/x", 2), ("ov/a/x", 1)]) == [0, 2, 1]
    pub.publish("ov/a/x", b"two", qos=2)
    m = sub.get_message()
    assert (m.topic, m.payload, m.qos) == ("ov/a/x", b"two", 2)
    pub.publish("ov/a/x", b"one", qos=1)
    m = sub.get_message()
    assert (m.topic, m.payload, m.qos) == ("ov/a/x", b"one", 1)
    # Only "ov/#" (QoS 0) matches this one.
    pub.publish("ov/b", b"zero", qos=2)
    m = sub.get_message()
    assert (m.topic, m.payload, m.qos) == ("ov/b", b"zero", 0)
    expect_quiet(sub)


def test_dollar_topics_not_matched_by_leading_wildcards(client_factory):
    everything = client_factory.connected("hash-sub")
    dollar = client_factory.connected("dollar-sub")
    pub = client_factory.connected("dollar-pub")
    assert everything.subscribe([("#", 1), ("+/x", 1), ("+/+/+", 1)]) == [1, 1, 1]
    assert dollar.subscribe("$foo/#", 1) == [1]
    pub.publish("$SYS/broker/fake", b"from a client", qos=1)
    pub.publish("$foo/x", b"dollar", qos=1)
    # An explicit `$foo/#` filter does match [MQTT-4.7.2-1 only excludes leading wildcards].
    m = dollar.get_message()
    assert (m.topic, m.payload) == ("$foo/x", b"dollar")
    # The `#` subscriber sees neither; the next thing it gets is an ordinary topic.
    pub.publish("plain/x", b"plain", qos=1)
    got = everything.get_messages(1)
    assert [(m.topic, m.payload) for m in got] == [("plain/x", b"plain")]
    # "plain/x" matches "#" and "+/x" (and not "+/+/+"): one copy.
    expect_quiet(everything)


def test_unsubscribe_stops_delivery(client_factory):
    sub = client_factory.connected("unsub-sub")
    pub = client_factory.connected("unsub-pub")
    assert sub.subscribe([("u/a", 1), ("u/b", 1)]) == [1, 1]
    pub.publish("u/a", b"before", qos=1)
    m = sub.get_message()
    assert (m.topic, m.payload) == ("u/a", b"before")
    sub.unsubscribe("u/a")
    pub.publish("u/a", b"after", qos=1)
    sentinel(pub, sub, "u/b")
    expect_quiet(sub)


def test_200_qos1_messages_in_order(client_factory):
    sub = client_factory.connected("order-sub")
    pub = client_factory.connected("order-pub")
    assert sub.subscribe("order/t", 1) == [1]
    infos = [pub.publish_nowait("order/t", f"msg-{i}".encode(), qos=1) for i in range(200)]
    for info in infos:
        info.wait_for_publish(10)
        assert info.is_published()
    got = sub.get_messages(200, timeout=15)
    assert [m.payload for m in got] == [f"msg-{i}".encode() for i in range(200)]
    assert all(m.qos == 1 and m.topic == "order/t" for m in got)
    expect_quiet(sub, 0.1)


# --- retained messages -------------------------------------------------------------------------------

def test_retained_delivered_replaced_deleted(client_factory):
    pub = client_factory.connected("ret-pub")
    pub.publish("ret/t", b"v1", qos=1, retain=True)

    # A later subscriber gets it, retain flag set [MQTT-3.3.1-8].
    s1 = client_factory.connected("ret-s1")
    assert s1.subscribe("ret/t", 1) == [1]
    m = s1.get_message()
    assert (m.topic, m.payload, m.qos, m.retain) == ("ret/t", b"v1", 1, True)

    # Replaced: the live subscriber gets the new value with retain 0 [MQTT-3.3.1-9]...
    pub.publish("ret/t", b"v2", qos=1, retain=True)
    m = s1.get_message()
    assert (m.topic, m.payload, m.qos, m.retain) == ("ret/t", b"v2", 1, False)
    # ...and a new subscriber gets only v2, at the lower of its QoS and the message's.
    s2 = client_factory.connected("ret-s2")
    assert s2.subscribe("ret/#", 0) == [0]
    m = s2.get_message()
    assert (m.topic, m.payload, m.qos, m.retain) == ("ret/t", b"v2", 0, True)
    expect_quiet(s2, 0.1)

    # An empty retained payload deletes it [MQTT-3.3.1-10]; live subscribers still get it.
    pub.publish("ret/t", b"", qos=1, retain=True)
    m = s1.get_message()
    assert (m.topic, m.payload, m.retain) == ("ret/t", b"", False)
    s3 = client_factory.connected("ret-s3")
    assert s3.subscribe("ret/#", 1) == [1]
    sentinel(pub, s3, "ret/sentinel")  # non-retained; would come after any retained message
    expect_quiet(s3, 0.1)


def test_retained_on_wildcard_subscription_several_topics(client_factory):
    pub = client_factory.connected("retw-pub")
    expected = {}
    for i in range(5):
        topic = f"retw/{i}/v"
        qos = 1 + i % 2  # QoS 1/2: the publish is complete (acknowledged) before subscribing
        pub.publish(topic, f"value-{i}".encode(), qos=qos, retain=True)
        expected[topic] = (f"value-{i}".encode(), qos)
    pub.publish("retw/other", b"not matched", qos=1, retain=True)
    sub = client_factory.connected("retw-sub")
    assert sub.subscribe("retw/+/v", 2) == [2]
    got = sub.get_messages(5)
    assert {m.topic: (m.payload, m.qos) for m in got} == expected
    assert all(m.retain for m in got)
    expect_quiet(sub)


# --- will messages --------------------------------------------------------------------------------------

@pytest.mark.parametrize("will_qos", [0, 1, 2])
def test_will_published_on_abrupt_close(client_factory, will_qos):
    watcher = client_factory.connected("will-watcher")
    assert watcher.subscribe("will/#", 2) == [2]
    w = client_factory("will-client", will=("will/w1", b"gone away", will_qos, False))
    assert w.connect() == (0, False)
    w.drop_connection()  # no DISCONNECT
    m = watcher.get_message()
    assert (m.topic, m.payload, m.qos, m.retain) == ("will/w1", b"gone away", will_qos, False)
    expect_quiet(watcher)


def test_will_retained_reaches_later_subscriber(client_factory):
    w = client_factory("will-ret", will=("willr/status", b"offline", 1, True))
    assert w.connect() == (0, False)
    w.drop_connection()
    # The will was retained: a subscriber that arrives afterwards gets it with retain=1.
    late = client_factory.connected("willr-late")
    m = None
    for _ in range(20):  # the broker may still be processing the close: re-subscribe until there
        assert late.subscribe("willr/status", 1) == [1]
        try:
            m = late.messages.get(timeout=0.1)
            break
        except Exception:
            late.unsubscribe("willr/status")
    assert m is not None, "retained will never appeared"
    assert (m.topic, m.payload, m.qos, m.retain) == ("willr/status", b"offline", 1, True)


def test_will_not_published_after_clean_disconnect(client_factory):
    watcher = client_factory.connected("nowill-watcher")
    assert watcher.subscribe("nowill/#", 1) == [1]
    w = client_factory("nowill-client", will=("nowill/w", b"should not appear", 1, False))
    assert w.connect() == (0, False)
    w.disconnect()
    # Reconnecting with the same id is processed after the DISCONNECT on its home shard.
    again = client_factory.connected("nowill-client")
    again.disconnect()
    pub = client_factory.connected("nowill-pub")
    sentinel(pub, watcher, "nowill/sentinel")
    expect_quiet(watcher, 0.5)


# --- persistent sessions ---------------------------------------------------------------------------------

def test_persistent_session_queues_qos1_and_qos2_in_order(client_factory):
    cid = "persist-sub"
    sub = client_factory(cid, clean_session=False)
    assert sub.connect() == (0, False)
    assert sub.subscribe("ps/#", 2) == [2]
    sub.disconnect()

    pub = client_factory.connected("persist-pub")
    sent = []
    for i in range(10):
        qos = 1 if i % 2 == 0 else 2
        topic, payload = f"ps/{i}", f"queued-{i}".encode()
        pub.publish(topic, payload, qos=qos)
        sent.append((topic, payload, qos))

    sub = client_factory(cid, clean_session=False)  # on_message is set before CONNECT
    assert sub.connect() == (0, True)
    got = sub.get_messages(10)
    # paho hands a QoS 2 message to on_message only at PUBREL, so check the contents here and
    # the order on the wire (PUBLISH packets as they arrived) below.
    assert sorted((m.topic, m.payload, m.qos) for m in got) == sorted(sent)
    assert all(not m.retain for m in got)
    assert [(w.topic, w.qos) for w in sub.wire_publishes] == [(t, q) for t, _, q in sent]
    # The subscription itself survived: a new message is delivered without re-subscribing.
    pub.publish("ps/live", b"live", qos=1)
    m = sub.get_message()
    assert (m.topic, m.payload, m.qos) == ("ps/live", b"live", 1)
    expect_quiet(sub, 0.1)


def test_clean_session_discards_subscriptions(client_factory):
    cid = "discard-sub"
    sub = client_factory(cid, clean_session=False)
    assert sub.connect() == (0, False)
    assert sub.subscribe("ds/t", 1) == [1]
    sub.disconnect()
    sub = client_factory(cid, clean_session=True)
    assert sub.connect() == (0, False)
    pub = client_factory.connected("discard-pub")
    pub.publish("ds/t", b"nobody", qos=1)
    assert sub.subscribe("ds/s", 1) == [1]
    sentinel(pub, sub, "ds/s")
    expect_quiet(sub, 0.1)


# --- session takeover ------------------------------------------------------------------------------------

@pytest.mark.parametrize("clean", [True, False], ids=["clean", "persistent"])
def test_session_takeover(client_factory, clean):
    cid = "twin"
    first = client_factory(cid, clean_session=clean)
    assert first.connect() == (0, False)
    assert first.subscribe("takeover/t", 1) == [1]

    second = client_factory(cid, clean_session=clean)
    # A persistent session is handed over to the new connection (session present).
    assert second.connect() == (0, not clean)
    first.wait_disconnect()  # the broker closed the first connection [MQTT-3.1.4-2]
    assert not first.connected

    if clean:
        assert second.subscribe("takeover/t", 1) == [1]
    pub = client_factory.connected("takeover-pub")
    pub.publish("takeover/t", b"to the new one", qos=1)
    m = second.get_message()
    assert (m.topic, m.payload) == ("takeover/t", b"to the new one")
    assert first.messages.empty()
    assert second.connected and second.disconnects.empty()
