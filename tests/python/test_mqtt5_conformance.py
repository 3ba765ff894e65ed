"""MQTT 5 conformance, connection and session: a black-box suite written from the OASIS MQTT 5.0
standard's normative statements, run against amqtt (1 and 2 shards) and against Mosquitto as the
reference (see `mqtt5_helpers`). Clients: paho-mqtt with MQTTv5, and raw sockets where paho will not
send what a test needs.

Covers: CONNACK (assigned client id, advertised limits), the three QoS levels, retained messages,
wills (abnormal close, DISCONNECT 0x00 and 0x04, Will Delay Interval), keep-alive, takeover,
redelivery on resume, session expiry (CONNECT and DISCONNECT), an unsupported authentication method,
AUTH without a method, malformed properties, unsubscribe reason codes, and a broker shutting down.
Message properties, subscription options, aliases and flow control: `test_mqtt5_messages.py`.
"""

from __future__ import annotations

import signal
import time

import pytest

from mqtt5_helpers import (RawV5, V5Client, connect5, decode_props, encode_props, packet,
                           publish5, subscribe5, v5broker, v5clients)  # noqa: F401 (fixtures)


# What paho reports when the connection ends without a DISCONNECT from the server.
CONNECTION_LOST = 0x80


def server_said(v5broker, reason: int, want: int) -> None:
    """amqtt must send the DISCONNECT the issue asks for; Mosquitto (2.0.11) sometimes closes
    without one, which the specification allows."""
    if v5broker.kind == "amqtt":
        assert reason == want, f"DISCONNECT reason {reason:#x}, want {want:#x}"
    else:
        assert reason in (want, CONNECTION_LOST), f"DISCONNECT reason {reason:#x}"


def test_connack_assigns_a_client_id_and_states_its_limits(v5broker, v5clients):
    c = v5clients("")
    code, present, props = c.connect()
    assert (code, present) == (0, False)
    # [MQTT-3.2.2-16]: a zero-length client id gets the one the server chose.
    assigned = props.get("AssignedClientIdentifier")
    assert assigned, f"no Assigned Client Identifier in {props}"
    # Receive Maximum and Topic Alias Maximum, when sent, are in range [MQTT-3.2.2.3.3, .8].
    assert props.get("ReceiveMaximum", 65535) >= 1
    assert props.get("MaximumQoS", 2) in (0, 1, 2)
    # The assigned id is a real session: a second client with it takes it over.
    other = v5clients(assigned)
    other.connected()
    reason, _ = c.wait_disconnect()
    server_said(v5broker, reason, 0x8E)


def test_every_qos_level_round_trips(v5clients):
    sub = v5clients("qos-sub")
    sub.connected()
    assert sub.subscribe("conf/qos", qos=2) == [2]
    pub = v5clients("qos-pub")
    pub.connected()
    for qos in (0, 1, 2):
        assert pub.publish("conf/qos", f"q{qos}", qos=qos) in (0, 0x10)
    got = sorted((m.payload, m.qos) for m in sub.get_n(3))
    assert got == [(b"q0", 0), (b"q1", 1), (b"q2", 2)]


def test_subscribe_grants_at_most_the_requested_qos(v5clients):
    sub = v5clients("grant-sub")
    sub.connected()
    assert sub.subscribe("conf/grant", qos=1) == [1]
    pub = v5clients("grant-pub")
    pub.connected()
    pub.publish("conf/grant", b"x", qos=2)
    assert sub.get().qos == 1


def test_retained_messages_are_kept_and_cleared(v5clients):
    pub = v5clients("ret-pub")
    pub.connected()
    for qos in (0, 1, 2):
        pub.publish(f"conf/ret/{qos}", f"r{qos}", qos=qos, retain=True)
    sub = v5clients("ret-sub")
    sub.connected()
    sub.subscribe("conf/ret/+", qos=2)
    got = sorted((m.topic, m.payload, m.qos, m.retain) for m in sub.get_n(3))
    assert got == [("conf/ret/0", b"r0", 0, True), ("conf/ret/1", b"r1", 1, True),
                   ("conf/ret/2", b"r2", 2, True)]
    for qos in (0, 1, 2):
        pub.publish(f"conf/ret/{qos}", b"", qos=1, retain=True)
    late = v5clients("ret-late")
    late.connected()
    late.subscribe("conf/ret/+", qos=2)
    late.nothing(0.7)


def _will_watcher(v5clients, topic: str) -> V5Client:
    w = v5clients(f"watch-{topic.replace('/', '-')}")
    w.connected()
    w.subscribe(topic, qos=1)
    return w


def test_will_on_abnormal_close_but_not_on_disconnect(v5clients):
    watcher = _will_watcher(v5clients, "conf/will/#")
    dying = v5clients("will-dying")
    dying.will_set("conf/will/a", b"gone", qos=1, UserProperty=[("why", "test")])
    dying.connected()
    dying.drop()
    msg = watcher.get()
    assert (msg.topic, msg.payload, msg.qos) == ("conf/will/a", b"gone", 1)
    assert msg.properties.get("UserProperty") == [["why", "test"]] or \
        msg.properties.get("UserProperty") == [("why", "test")]

    polite = v5clients("will-polite")
    polite.will_set("conf/will/b", b"should not appear", qos=1)
    polite.connected()
    polite.disconnect(0x00)
    watcher.nothing(0.7)

    # DISCONNECT 0x04 "Disconnect with Will Message" asks for the will [MQTT-3.14.2.1].
    asking = v5clients("will-asking")
    asking.will_set("conf/will/c", b"asked for", qos=1)
    asking.connected()
    asking.disconnect(0x04)
    assert watcher.get().payload == b"asked for"


def test_will_delay_is_cancelled_by_a_resume_and_kept_otherwise(v5clients):
    watcher = _will_watcher(v5clients, "conf/wd/#")
    c = v5clients("wd-client")
    c.will_set("conf/wd/x", b"late will", qos=1, WillDelayInterval=2)
    c.connected(SessionExpiryInterval=30)
    c.drop()
    # Resumed within the delay: the will is not published [MQTT-3.1.3-9].
    again = v5clients("wd-client")
    again.will_set("conf/wd/x", b"late will", qos=1, WillDelayInterval=2)
    again.connected(clean_start=False, SessionExpiryInterval=30)
    watcher.nothing(2.5)
    # Not resumed: published once the delay has passed, not before.
    dropped_at = time.monotonic()
    again.drop()
    watcher.nothing(1.2)
    msg = watcher.get(timeout=5)
    assert msg.payload == b"late will"
    assert time.monotonic() - dropped_at >= 1.9


def test_keep_alive_expiry_closes_the_connection(v5broker):
    raw = RawV5(v5broker)
    code, _ = raw.connect("ka-client", keepalive=1)
    assert code == 0
    started = time.monotonic()
    reason = raw.closed_with(timeout=10)
    elapsed = time.monotonic() - started
    # [MQTT-3.1.2-22]: closed after one and a half times the keep-alive without a packet.
    # Mosquitto checks keep-alives on a coarse timer (5.3 s here for 1.5 s).
    assert 1.0 <= elapsed <= (3.5 if v5broker.kind == "amqtt" else 8.0), elapsed
    if v5broker.kind == "amqtt":
        assert reason == 0x8D, f"DISCONNECT reason {reason!r}, want 0x8D keep alive timeout"
    raw.close()


def test_takeover_tells_the_old_connection_why(v5broker, v5clients):
    first = v5clients("takeover")
    first.connected()
    second = v5clients("takeover")
    second.connected()
    reason, _ = first.wait_disconnect()
    server_said(v5broker, reason, 0x8E)  # Session taken over


def test_unacknowledged_messages_are_resent_on_resume(v5clients):
    sub = v5clients("resend-sub", manual_ack=True)
    sub.connected(SessionExpiryInterval=60)
    sub.subscribe("conf/resend", qos=1)
    pub = v5clients("resend-pub")
    pub.connected()
    pub.publish("conf/resend", b"once", qos=1)
    first = sub.get()
    assert (first.payload, first.dup) == (b"once", False)
    sub.drop()  # never acknowledged
    again = v5clients("resend-sub")
    code, present, _ = again.connect(clean_start=False, SessionExpiryInterval=60)
    assert (code, present) == (0, True)
    msg = again.get()
    # [MQTT-4.4.0-1]: resent with its packet identifier, DUP set.
    assert (msg.payload, msg.dup, msg.qos) == (b"once", True, 1)


def test_session_expiry_interval_keeps_then_ends_a_session(v5clients):
    sub = v5clients("exp-sub")
    sub.connected(SessionExpiryInterval=2)
    sub.subscribe("conf/exp", qos=1)
    sub.disconnect()
    pub = v5clients("exp-pub")
    pub.connected()
    pub.publish("conf/exp", b"queued", qos=1)
    back = v5clients("exp-sub")
    code, present, _ = back.connect(clean_start=False, SessionExpiryInterval=2)
    assert (code, present) == (0, True)
    assert back.get().payload == b"queued"
    back.disconnect()
    time.sleep(3.5)
    late = v5clients("exp-sub")
    code, present, _ = late.connect(clean_start=False, SessionExpiryInterval=2)
    assert (code, present) == (0, False), "the session outlived its expiry interval"


def test_zero_session_expiry_ends_the_session_with_the_connection(v5clients):
    c = v5clients("exp-zero")
    c.connected(clean_start=False)
    c.subscribe("conf/zero", qos=1)
    c.disconnect()
    again = v5clients("exp-zero")
    code, present, _ = again.connect(clean_start=False)
    assert (code, present) == (0, False)


def test_disconnect_may_extend_a_non_zero_expiry(v5clients):
    c = v5clients("exp-extend")
    c.connected(SessionExpiryInterval=1)
    c.subscribe("conf/extend", qos=1)
    c.disconnect(0, SessionExpiryInterval=30)
    time.sleep(2)
    again = v5clients("exp-extend")
    code, present, _ = again.connect(clean_start=False, SessionExpiryInterval=30)
    assert (code, present) == (0, True)


def test_disconnect_setting_expiry_after_zero_is_a_protocol_error(v5broker, v5clients):
    raw = RawV5(v5broker)
    assert raw.connect("exp-bad", clean_start=False)[0] == 0
    raw.send(packet(0xE0, bytes([0x00]) + encode_props([("session_expiry", 30)])))
    # [MQTT-3.14.2-2]: a Protocol Error; the session is not kept.
    reason = raw.closed_with()
    assert reason in (None, 0x82)
    raw.close()
    again = v5clients("exp-bad")
    code, present, _ = again.connect(clean_start=False)
    assert (code, present) == (0, False)


def test_unknown_authentication_method_is_refused(v5broker):
    raw = RawV5(v5broker)
    code, _ = raw.connect("auth-unknown", properties=[("auth_method", "NO-SUCH-METHOD")])
    assert code == 0x8C  # Bad authentication method
    assert raw.recv() is None, "the connection stays open after a refusing CONNACK"
    raw.close()


def test_auth_packet_without_a_method_is_a_protocol_error(v5broker):
    raw = RawV5(v5broker)
    assert raw.connect("auth-stray")[0] == 0
    raw.send(packet(0xF0, bytes([0x18]) + encode_props([])))  # AUTH, continue authentication
    reason = raw.closed_with()
    assert reason in (None, 0x82) if v5broker.kind == "mosquitto" else reason == 0x82
    raw.close()


@pytest.mark.parametrize("props", [
    [("payload_format", 0), ("payload_format", 1)],   # a property twice [MQTT-2.2.2-2]
    [("session_expiry", 10)],                         # not allowed on PUBLISH
], ids=["duplicate", "wrong-packet"])
def test_malformed_properties_close_the_connection(v5broker, v5clients, props):
    raw = RawV5(v5broker)
    assert raw.connect("bad-props")[0] == 0
    raw.send(publish5("conf/bad", b"x", qos=1, packet_id=1, properties=props))
    reason = raw.closed_with()
    if v5broker.kind == "amqtt":
        assert reason in (0x81, 0x82), f"DISCONNECT reason {reason!r}"
    raw.close()
    # One connection closed, never the broker.
    v5clients("after-bad").connected()


def test_unsubscribe_reason_codes(v5clients):
    c = v5clients("unsub")
    c.connected()
    c.subscribe("conf/unsub/a", qos=1)
    assert c.unsubscribe("conf/unsub/a") == [0x00]
    assert c.unsubscribe("conf/unsub/never") == [0x11]  # No subscription existed


@pytest.mark.mqtt5_server_choice("stopping Mosquitto is the fixture's job")
def test_shutdown_sends_server_shutting_down(v5broker, v5clients):
    c = v5clients("shutdown")
    c.connected()
    v5broker.proc.send_signal(signal.SIGTERM)
    reason, _ = c.wait_disconnect()
    server_said(v5broker, reason, 0x8B)  # Server shutting down


def test_connect_twice_is_a_protocol_error(v5broker):
    raw = RawV5(v5broker)
    assert raw.connect("twice")[0] == 0
    raw.send(connect5("twice"))
    reason = raw.closed_with()
    assert reason in (None, 0x82) if v5broker.kind == "mosquitto" else reason == 0x82
    raw.close()


def _suback_of_a_refused_filter(broker) -> tuple[list[int], dict]:
    """SUBSCRIBE to `prohibited` (refused by `topic_taboo`) and `#` (allowed) with Request Problem
    Information on (its default): the SUBACK's reason codes and properties."""
    raw = RawV5(broker)
    raw.send(connect5("refused-filter"))
    assert raw.recv()[0] == 0x20
    raw.send(subscribe5(7, [("prohibited", 1), ("#", 1)]))
    first, body = raw.recv()
    raw.close()
    assert first == 0x90 and body[:2] == b"\x00\x07"
    properties, at = decode_props(body, 2)
    return list(body[at:]), dict(properties)


TABOO = "topic-check:\n  enabled: true\n  plugins: [topic_taboo]\n"


@pytest.mark.mqtt5_server_choice("which refusal code and Reason String a topic check gives")
@pytest.mark.mqtt5_amqtt_yaml(TABOO)
def test_a_topic_check_refusal_is_0x87_with_a_reason_string(v5broker):
    codes, properties = _suback_of_a_refused_filter(v5broker)
    assert codes == [0x87, 1]
    assert properties.get("reason_string") == "'prohibited': denied by the topic checks"


@pytest.mark.mqtt5_server_choice("hide_denial_reason is amqtt's setting")
@pytest.mark.mqtt5_amqtt_yaml(TABOO + "hide_denial_reason: true\n")
def test_hide_denial_reason_answers_0x80_without_a_reason_string(v5broker):
    codes, properties = _suback_of_a_refused_filter(v5broker)
    assert codes == [0x80, 1]
    assert "reason_string" not in properties
