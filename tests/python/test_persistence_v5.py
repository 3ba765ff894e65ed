"""MQTT 5 state across `kill -9` with `persistence:` on: the release broker, paho MQTTv5 clients,
a real data directory and a real SIGKILL.

A persistent v5 session keeps its queued messages' properties (user properties in order), its
Subscription Identifier and its messages' expiry (still counting while the broker is down: one
that expired meanwhile is not delivered); its Session Expiry Interval (gone after it, not before);
retained messages keep their properties and expiry; a will waiting for its delay is published
after the restart.
"""

from __future__ import annotations

import time

from mqtt5_helpers import V5Broker, V5Client
from test_persistence import HOST, make_broker  # noqa: F401 (the fixture)


def v5(broker, client_id: str, clients: list) -> V5Client:
    c = V5Client(V5Broker(HOST, broker.port, "amqtt", broker.shards), client_id)
    clients.append(c)
    return c


def user_props(msg) -> list[tuple[str, str]]:
    return [tuple(p) for p in msg.properties.get("UserProperty", [])]


def test_a_v5_session_keeps_properties_sub_ids_and_expiry_across_kill_9(make_broker, clients):
    broker = make_broker(shards=2)
    sub = v5(broker, "v5-keeper", clients)
    sub.connected(clean_start=False, SessionExpiryInterval=3600)
    assert sub.subscribe("v5/#", qos=1, sub_id=7) == [1]
    sub.disconnect()

    pub = v5(broker, "v5-pub", clients)
    pub.connected()
    users = [("z", "1"), ("a", "2"), ("z", "3")]
    assert pub.publish("v5/kept", b"one", qos=1, UserProperty=users, MessageExpiryInterval=60,
                       ContentType="text/plain", CorrelationData=b"\x00c") == 0
    assert pub.publish("v5/short", b"two", qos=1, MessageExpiryInterval=2) == 0
    assert pub.publish("v5/plain", b"three", qos=1) == 0
    pub.disconnect()
    published = time.monotonic()

    broker.kill()
    # The short one expires while the broker is down.
    time.sleep(max(0.0, published + 3 - time.monotonic()))
    broker.start()

    sub = v5(broker, "v5-keeper", clients)
    code, present, _ = sub.connect(clean_start=False, SessionExpiryInterval=3600)
    assert (code, present) == (0, True)
    got = sub.get_n(2)
    sub.nothing(1.0)
    assert [m.payload for m in got] == [b"one", b"three"]
    kept, plain = got
    assert user_props(kept) == users, "user properties in their order"
    assert kept.properties.get("ContentType") == "text/plain"
    assert kept.properties.get("SubscriptionIdentifier") == [7]
    left = kept.properties.get("MessageExpiryInterval")
    assert left is not None and 50 <= left <= 58, f"expiry kept counting: {left}"
    assert plain.properties.get("SubscriptionIdentifier") == [7]
    assert "MessageExpiryInterval" not in plain.properties


def test_the_session_expiry_interval_survives_kill_9(make_broker, clients):
    broker = make_broker()
    short = v5(broker, "v5-short", clients)
    short.connected(clean_start=False, SessionExpiryInterval=4)
    assert short.subscribe("s/#", qos=1) == [1]
    short.disconnect()
    long = v5(broker, "v5-long", clients)
    long.connected(clean_start=False, SessionExpiryInterval=600)
    long.disconnect()
    left_at = time.monotonic()

    broker.kill()
    broker.start()
    # Not before its expiry: still there 1-2 s after the client left, across the restart.
    again = v5(broker, "v5-short", clients)
    code, present, _ = again.connect(clean_start=False, SessionExpiryInterval=4)
    assert (code, present) == (0, True)
    again.disconnect()
    left_at = time.monotonic()
    # A DISCONNECT is not acknowledged: give its offline stamp a loop turn to reach the journal.
    time.sleep(0.5)

    broker.kill()
    time.sleep(max(0.0, left_at + 5.5 - time.monotonic()))
    broker.start()
    # Gone after it (the broker's own `session_expiry_interval` is unset: never expire).
    gone = v5(broker, "v5-short", clients)
    code, present, _ = gone.connect(clean_start=False, SessionExpiryInterval=4)
    assert (code, present) == (0, False)
    kept = v5(broker, "v5-long", clients)
    code, present, _ = kept.connect(clean_start=False, SessionExpiryInterval=600)
    assert (code, present) == (0, True)


def test_retained_v5_messages_keep_properties_and_expiry_across_kill_9(make_broker, clients):
    broker = make_broker(shards=2)
    pub = v5(broker, "v5-retainer", clients)
    pub.connected()
    users = [("b", "2"), ("a", "1")]
    # 0x10 No Matching Subscribers: retained all the same.
    assert pub.publish("r/kept", b"kept", qos=1, retain=True, UserProperty=users,
                       ResponseTopic="r/reply", MessageExpiryInterval=3600) in (0, 0x10)
    assert pub.publish("r/short", b"short", qos=1, retain=True,
                       MessageExpiryInterval=2) in (0, 0x10)
    pub.disconnect()
    published = time.monotonic()

    broker.kill()
    time.sleep(max(0.0, published + 3 - time.monotonic()))
    broker.start()

    sub = v5(broker, "v5-reader", clients)
    sub.connected()
    assert sub.subscribe("r/#", qos=1) == [1]
    got = sub.get()
    sub.nothing(1.0)
    assert (got.payload, got.retain) == (b"kept", True)
    assert user_props(got) == users
    assert got.properties.get("ResponseTopic") == "r/reply"
    left = got.properties.get("MessageExpiryInterval")
    assert left is not None and 3590 <= left <= 3600, left


def test_a_will_waiting_for_its_delay_is_published_after_kill_9(make_broker, clients):
    broker = make_broker()
    watcher = v5(broker, "v5-watcher", clients)
    watcher.connected(clean_start=False, SessionExpiryInterval=600)
    assert watcher.subscribe("will/#", qos=1) == [1]

    dying = v5(broker, "v5-dying", clients)
    dying.will_set("will/dying", b"gone", qos=1, WillDelayInterval=3, UserProperty=[("k", "v")])
    dying.connected(clean_start=False, SessionExpiryInterval=600)
    dying.drop()
    dropped = time.monotonic()
    watcher.nothing(0.5)

    broker.kill()
    watcher.stop()
    broker.start()
    watcher = v5(broker, "v5-watcher", clients)
    code, present, _ = watcher.connect(clean_start=False, SessionExpiryInterval=600)
    assert (code, present) == (0, True)
    got = watcher.get(timeout=8)
    assert time.monotonic() - dropped >= 2.5, "not before its delay"
    assert (got.topic, got.payload) == ("will/dying", b"gone")
    assert user_props(got) == [("k", "v")]
    watcher.nothing(1.0)
