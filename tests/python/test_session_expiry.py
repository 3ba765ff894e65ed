"""Session expiry (`session_expiry_interval`) with paho against the real broker, 1 and 2 shards.

A persistent session whose client stays away longer than the interval is discarded with its queued
messages and subscriptions (session present 0 on return, nothing delivered); one whose client comes
back in time is resumed (session present 1, the queued messages delivered) and its clock starts
again at the next disconnect. The broker ticks 4 times a second, so an expiry lands up to a quarter
of a second either side of the interval: the waits below keep half a second or more away from it.
"""

from __future__ import annotations

import time

import pytest

INTERVAL = 2.0

pytestmark = pytest.mark.broker_yaml(f"session_expiry_interval: {INTERVAL}\n")


def leave_with_queue(client_factory, cid: str, topic: str, count: int = 3):
    """`cid` subscribes persistently at QoS 1 and disconnects; a publisher sends `count` messages
    for it. Returns the publisher and the payloads queued."""
    sub = client_factory(cid, clean_session=False)
    assert sub.connect() == (0, False)
    assert sub.subscribe(topic, 1) == [1]
    sub.disconnect()
    pub = client_factory.connected(f"{cid}-pub")
    sent = [f"queued-{i}".encode() for i in range(count)]
    for payload in sent:
        pub.publish(topic, payload, qos=1)
    return pub, sent


def first_is_sentinel(pub, sub, cid: str) -> None:
    """Requires the next message `sub` gets to be a sentinel published now: nothing was queued."""
    topic = f"sentinel/{cid}"
    assert sub.subscribe(topic, 1) == [1]
    pub.publish(topic, b"sentinel", qos=1)
    m = sub.get_message()
    assert (m.topic, m.payload) == (topic, b"sentinel"), f"expected only the sentinel, got {m}"


def test_session_expires_after_the_interval(client_factory, request):
    cid = "expiry-late"
    pub, _ = leave_with_queue(client_factory, cid, "expiry/late")
    time.sleep(INTERVAL + 0.75)

    sub = client_factory(cid, clean_session=False)
    assert sub.connect() == (0, False), "the session expired: session present 0"
    first_is_sentinel(pub, sub, cid)
    # Its subscription went with it.
    pub.publish("expiry/late", b"after", qos=1)
    first_is_sentinel(pub, sub, cid + "-again")

    log = request.node._amqtt_logs[-1].read_text(errors="replace")
    assert f"session of '{cid}' expired" in log, "logged at debug with the client id"


def test_session_resumed_within_the_interval_restarts_its_clock(client_factory):
    cid = "expiry-early"
    pub, sent = leave_with_queue(client_factory, cid, "expiry/early")
    time.sleep(INTERVAL - 0.75)

    sub = client_factory(cid, clean_session=False)
    assert sub.connect() == (0, True), "resumed before the interval"
    got = sub.get_messages(len(sent))
    assert [(m.topic, m.payload, m.qos) for m in got] == [("expiry/early", p, 1) for p in sent]
    sub.disconnect()

    # More than the interval since the first disconnect, less since the second.
    time.sleep(INTERVAL - 0.75)
    sub = client_factory(cid, clean_session=False)
    assert sub.connect() == (0, True), "the clock restarted at the second disconnect"
    pub.publish("expiry/early", b"live", qos=1)
    m = sub.get_message()
    assert (m.topic, m.payload) == ("expiry/early", b"live")
