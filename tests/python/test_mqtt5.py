"""MQTT 5 against the broker with third-party clients (paho-mqtt's MQTTv5, mosquitto -V 5) and raw
sockets where exact bytes matter, at 1 and 2 shards (the `broker` fixture): CONNACK properties,
assigned client ids, message properties forwarded unchanged and in order (across shards too),
mixed MQTT 3.1.1 / 5 both ways, reason codes on acknowledgements (0x10, 0x99), the server's
DISCONNECT before it closes (takeover 0x8E, protocol errors 0x81/0x82), refusals (0x87, 0x8C),
session expiry from CONNECT and DISCONNECT, DISCONNECT with will, Retain Handling.
"""

from __future__ import annotations

import queue
import subprocess
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from mqtt_helpers import RawConn, mqtt_str, packet, varint

TIMEOUT = 5.0


class V5:
    """A paho MQTT 5 client with its loop on a thread and its callbacks on queues."""

    def __init__(self, broker, client_id: str = "", will=None):
        self.broker = broker
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=mqtt.MQTTv5, reconnect_on_failure=False)
        if will is not None:
            topic, payload, props = will
            self.c.will_set(topic, payload, 1, False, properties=props)
        self.connacks: queue.Queue = queue.Queue()
        self.messages: queue.Queue = queue.Queue()
        self.acks: queue.Queue = queue.Queue()
        self.subacks: queue.Queue = queue.Queue()
        self.disconnects: queue.Queue = queue.Queue()
        self.c.on_connect = lambda c, u, f, rc, p: self.connacks.put((rc, f.session_present, p))
        self.c.on_message = lambda c, u, m: self.messages.put(m)
        self.c.on_publish = lambda c, u, mid, rc, p: self.acks.put((mid, rc))
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.subacks.put(rcs)
        self.c.on_unsubscribe = lambda c, u, mid, rcs, p: self.subacks.put(rcs)
        self.c.on_disconnect = lambda c, u, f, rc, p: self.disconnects.put(rc)

    def connect(self, clean_start: bool = True, properties: Properties | None = None):
        self.c.connect(self.broker.host, self.broker.port, clean_start=clean_start,
                       properties=properties)
        self.c.loop_start()
        return self.connacks.get(timeout=TIMEOUT)

    def subscribe(self, topic: str, qos: int = 1, **options):
        self.c.subscribe(topic, options=mqtt.SubscribeOptions(qos=qos, **options))
        return self.subacks.get(timeout=TIMEOUT)

    def publish(self, topic: str, payload, qos: int = 1, retain: bool = False, props=None):
        self.c.publish(topic, payload, qos, retain, properties=props)
        if qos == 0:
            return None
        return self.acks.get(timeout=TIMEOUT)[1]

    def message(self, timeout: float = TIMEOUT):
        return self.messages.get(timeout=timeout)

    def nothing(self, wait: float = 0.5) -> None:
        with pytest.raises(queue.Empty):
            self.messages.get(timeout=wait)

    def close(self):
        try:
            self.c.disconnect()
        finally:
            self.c.loop_stop()


@pytest.fixture
def v5(broker):
    made: list[V5] = []

    def make(client_id: str = "", **kwargs) -> V5:
        client = V5(broker, client_id, **kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def publish_props(**fields) -> Properties:
    props = Properties(PacketTypes.PUBLISH)
    for key, value in fields.items():
        setattr(props, key, value)
    return props


def v5_connect_packet(client_id: str, props: bytes = b"", flags: int = 0x02) -> bytes:
    body = mqtt_str("MQTT") + bytes([5, flags, 0, 60]) + varint(len(props)) + props
    return packet(0x10, body + mqtt_str(client_id))


def test_connack_announces_the_limits_and_an_assigned_client_id(v5):
    client = v5("")
    rc, present, props = client.connect()
    assert rc == 0 and not present
    assert props.AssignedClientIdentifier.startswith("auto-")
    assert props.RetainAvailable == 1
    assert props.WildcardSubscriptionAvailable == 1
    assert props.SharedSubscriptionAvailable == 1
    assert props.SubscriptionIdentifierAvailable == 1
    assert not hasattr(props, "MaximumQoS"), "QoS 2 is available: no Maximum QoS"


def test_message_properties_are_forwarded_unchanged_and_in_order(v5):
    sub = v5("props-sub")
    sub.connect()
    assert sub.subscribe("p/#", 1)[0].value == 1
    pub = v5("props-pub")
    pub.connect()
    sent = publish_props(PayloadFormatIndicator=1, ContentType="text/plain", ResponseTopic="r/1",
                         CorrelationData=b"\x00\x01corr",
                         UserProperty=[("k", "2"), ("a", "1"), ("k", "1")])
    assert pub.publish("p/x", "héllo", 1, props=sent).value == 0
    got = sub.message()
    assert got.payload == "héllo".encode()
    assert got.properties.PayloadFormatIndicator == 1
    assert got.properties.ContentType == "text/plain"
    assert got.properties.ResponseTopic == "r/1"
    assert got.properties.CorrelationData == b"\x00\x01corr"
    assert got.properties.UserProperty == [("k", "2"), ("a", "1"), ("k", "1")]
    # A message without properties arrives without them.
    pub.publish("p/y", "plain", 0)
    assert not hasattr(sub.message().properties, "ContentType")


def test_mixed_versions_both_ways(v5, client_factory):
    v3 = client_factory.connected("mixed-v3")
    assert v3.subscribe("m/#", 1) == [1]
    sub5 = v5("mixed-v5")
    sub5.connect()
    sub5.subscribe("m/#", 1)
    pub5 = v5("mixed-pub5")
    pub5.connect()
    pub5.publish("m/5", "from five", 1, props=publish_props(UserProperty=[("x", "y")]))
    got = v3.get_message()
    assert (got.topic, got.payload) == ("m/5", b"from five")
    assert sub5.message().properties.UserProperty == [("x", "y")]
    v3.publish("m/3", "from three", qos=1)
    got = sub5.message()
    assert (got.topic, got.payload, got.qos) == ("m/3", b"from three", 1)
    assert v3.get_message().payload == b"from three"


def test_acknowledgements_carry_reason_codes(v5):
    pub = v5("codes-pub")
    pub.connect()
    assert pub.publish("nobody/listens", "x", 1).value == 0x10
    sub = v5("codes-sub")
    sub.connect()
    sub.subscribe("utf/#", 2)
    bad = publish_props(PayloadFormatIndicator=1)
    assert pub.publish("utf/bad", b"\xff\xfe", 1, props=bad).value == 0x99
    # (QoS 2: paho reports the PUBCOMP's code, not the PUBREC's 0x99.)
    pub.publish("utf/bad", b"\xff\xfe", 2, props=bad)
    sub.nothing()
    assert pub.publish("utf/good", "ok", 2, props=bad).value == 0
    assert sub.message().payload == b"ok"


def test_unsubscribe_says_which_filters_existed(v5):
    client = v5("unsub")
    client.connect()
    client.subscribe("u/a", 0)
    client.c.unsubscribe(["u/a", "u/none"])
    codes = client.subacks.get(timeout=TIMEOUT)
    assert [c.value for c in codes] == [0x00, 0x11]


def test_takeover_sends_disconnect_0x8e(v5):
    first = v5("twice")
    first.connect()
    second = v5("twice")
    second.connect()
    assert first.disconnects.get(timeout=TIMEOUT).value == 0x8E


def test_enhanced_authentication_is_refused_with_0x8c(broker):
    conn = RawConn(broker.host, broker.port)
    method = bytes([0x15]) + mqtt_str("SCRAM-SHA-1")
    conn.send(v5_connect_packet("auth-method", method))
    first, body = conn.recv_packet()
    assert first == 0x20 and body[:2] == bytes([0, 0x8C])
    assert conn.recv_packet() is None


def test_auth_packet_and_malformed_properties_close_with_a_reason(broker):
    for bad, code in [(bytes([0xF0, 0]), 0x82),
                      # PUBLISH with property 0x7F, which does not exist: malformed.
                      (packet(0x30, mqtt_str("t") + bytes([2, 0x7F, 0]) + b"x"), 0x81),
                      # PUBLISH with a Topic Alias above the maximum the broker announced.
                      (packet(0x30, mqtt_str("t") + bytes([3, 0x23, 0xFF, 0xFF]) + b"x"), 0x94),
                      # An empty topic with an alias this connection did not set.
                      (packet(0x30, mqtt_str("") + bytes([3, 0x23, 0, 1]) + b"x"), 0x82)]:
        conn = RawConn(broker.host, broker.port)
        conn.send(v5_connect_packet(f"bad-input-{code}"))
        first, body = conn.recv_packet()
        assert first == 0x20 and body[1] == 0
        conn.send(bad)
        first, body = conn.recv_packet()
        assert (first, body[0]) == (0xE0, code), f"{bad.hex()}: {first:#x} {body.hex()}"
        assert conn.recv_packet() is None


def test_session_expiry_from_connect_and_disconnect(v5):
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 60
    client = v5("expiring")
    client.connect(clean_start=True, properties=props)
    client.subscribe("kept/#", 1)
    client.close()
    pub = v5("expiry-pub")
    pub.connect()
    assert pub.publish("kept/1", "while away", 1).value == 0
    back = v5("expiring")
    rc, present, _ = back.connect(clean_start=False, properties=props)
    assert rc == 0 and present
    assert back.message().payload == b"while away"
    # DISCONNECT with Session Expiry Interval 0 ends the session with the connection.
    gone = Properties(PacketTypes.DISCONNECT)
    gone.SessionExpiryInterval = 0
    back.c.disconnect(properties=gone)
    back.disconnects.get(timeout=TIMEOUT)
    back.c.loop_stop()
    again = v5("expiring")
    rc, present, _ = again.connect(clean_start=False, properties=props)
    assert rc == 0 and not present


def test_a_session_without_expiry_ends_with_its_connection(v5):
    client = v5("no-expiry")
    client.connect()
    client.subscribe("x/#", 1)
    client.close()
    again = v5("no-expiry")
    rc, present, _ = again.connect(clean_start=False)
    assert rc == 0 and not present


def test_disconnect_with_will_publishes_the_will(v5):
    watcher = v5("will-watcher")
    watcher.connect()
    watcher.subscribe("wills/#", 1)
    will_props = Properties(PacketTypes.WILLMESSAGE)
    will_props.ContentType = "text/plain"
    leaving = v5("leaving", will=("wills/leaving", "bye", will_props))
    leaving.connect()
    leaving.c.disconnect(reasoncode=mqtt.ReasonCode(PacketTypes.DISCONNECT, identifier=0x04))
    got = watcher.message()
    assert got.payload == b"bye"
    assert got.properties.ContentType == "text/plain"
    # A normal DISCONNECT discards it.
    quiet = v5("quiet", will=("wills/quiet", "never", will_props))
    quiet.connect()
    quiet.close()
    watcher.nothing()


def test_retain_handling(v5):
    pub = v5("retainer")
    pub.connect()
    pub.publish("ret/a", "kept", 1, retain=True)
    fresh = v5("rh")
    fresh.connect()
    fresh.subscribe("ret/#", 1, retainHandling=2)
    fresh.nothing()
    fresh.subscribe("ret/#", 1, retainHandling=1)
    fresh.nothing()
    fresh.c.unsubscribe("ret/#")
    fresh.subacks.get(timeout=TIMEOUT)
    fresh.subscribe("ret/#", 1, retainHandling=1)
    assert fresh.message().payload == b"kept"
    fresh.subscribe("ret/#", 1, retainHandling=0)
    assert fresh.message().payload == b"kept"


def test_mosquitto_clients_speak_v5(broker):
    sub = subprocess.Popen(["mosquitto_sub", "-V", "5", "-h", broker.host, "-p", str(broker.port),
                            "-t", "mos/#", "-C", "1", "-F", "%t %p %P", "-W", "5"],
                           stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)
    subprocess.run(["mosquitto_pub", "-V", "5", "-h", broker.host, "-p", str(broker.port),
                    "-t", "mos/1", "-m", "hi", "-q", "1", "-D", "publish", "user-property",
                    "who", "me"], check=True, timeout=5)
    out, _ = sub.communicate(timeout=6)
    assert out.strip() == "mos/1 hi who:me"
