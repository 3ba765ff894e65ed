"""MQTT 5 limits the broker sets on its clients, over raw sockets (`mqtt5_helpers.RawV5`), against
amqtt at 1 and 2 shards and Mosquitto as the reference where it makes the same choice:

- its own Receive Maximum (`receive_maximum`): announced in CONNACK, QoS 1/2 PUBLISHes not yet
  acknowledged count, one more is DISCONNECT 0x93 [MQTT-3.3.4-7..8];
- Server Keep Alive (`max_keepalive`, Mosquitto's key): an MQTT 5 client is told the maximum and
  held to it [MQTT-3.2.2-21]; an MQTT 3.1.1 client over it is refused with CONNACK 0x02;
- Request Problem Information 0: no Reason String on the acks [MQTT-3.1.2-29];
- malformed MQTT 5 packets (bad property id, duplicate property, property not allowed, bad
  variable byte integer, reason code not allowed, malformed AUTH): DISCONNECT 0x81/0x82, that
  connection only;
- the lingering close: a client that goes on writing after the broker's DISCONNECT (Paho's
  test_flow_control2 sends PUBRELs) still reads it, and the broker does not wait for that
  client to let its client id be taken over.
"""

from __future__ import annotations

import socket
import struct
import threading
import time

import pytest

from mqtt5_helpers import (RawV5, ack5, connect5, decode_props, encode_props, packet, publish5,
                           utf8, v5broker, v5clients)  # noqa: F401 (fixtures)


def _bystander_round_trip(v5clients, name: str) -> None:
    """A client connected before the bad one still publishes and receives."""
    sub = v5clients(f"{name}-sub")
    sub.connected()
    sub.subscribe(f"flow/{name}", qos=1)
    pub = v5clients(f"{name}-pub")
    pub.connected()
    pub.publish(f"flow/{name}", b"still here", qos=1)
    assert sub.get().payload == b"still here"


@pytest.mark.mqtt5_server_choice("Mosquitto 2.0.11 queues past its own Receive Maximum")
@pytest.mark.mqtt5_amqtt_yaml("receive_maximum: 3\n")
def test_receive_maximum_is_announced_and_enforced(v5broker, v5clients):
    raw = RawV5(v5broker)
    code, props = raw.connect("recvmax-flow")
    assert code == 0
    assert dict(props).get("receive_maximum") == 3
    # QoS 1: acknowledged at once, so never more than one of them waits.
    for packet_id in (5, 6, 7, 8):
        raw.send(publish5("flow/recvmax", b"x", qos=1, packet_id=packet_id))
        assert raw.expect(4)[:2] == struct.pack(">H", packet_id)
    for packet_id in (1, 2, 3):
        raw.send(publish5("flow/recvmax", b"x", qos=2, packet_id=packet_id))
        assert raw.expect(5)[:2] == struct.pack(">H", packet_id)  # PUBREC
    # PUBREL 1 -> PUBCOMP 1 frees a place: packet 4 is within the maximum.
    raw.send(ack5(6, 1))
    assert raw.expect(7)[:2] == struct.pack(">H", 1)
    raw.send(publish5("flow/recvmax", b"x", qos=2, packet_id=4))
    assert raw.expect(5)[:2] == struct.pack(">H", 4)
    # 2, 3 and 4 await their PUBREL: a fourth is one above the maximum.
    raw.send(publish5("flow/recvmax", b"x", qos=1, packet_id=9))
    assert raw.closed_with() == 0x93
    raw.close()
    _bystander_round_trip(v5clients, "recvmax")


def _keep_writing(raw: RawV5, data: bytes, seconds: float, failed: list | None = None) -> None:
    """Writes `data` every 5 ms for `seconds` without reading, as a client busy sending does;
    stops at the first write the socket refuses (a reset: Paho then drops the connection
    without reading what came before), noted in `failed`."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        try:
            raw.sock.sendall(data)
        except OSError as e:
            if failed is not None:
                failed.append(e)
            return
        time.sleep(0.005)


@pytest.mark.mqtt5_server_choice("Mosquitto 2.0.11 closes at once; the lingering close is ours")
@pytest.mark.mqtt5_amqtt_yaml("receive_maximum: 3\n")
def test_a_client_still_writing_reads_the_disconnect(v5broker):
    """Without the lingering close the broker's kernel resets the connection (input unread at
    close) and the client's next write fails with EPIPE: Paho then drops the connection without
    reading the DISCONNECT before it."""
    raw = RawV5(v5broker)
    assert raw.connect("linger-recvmax")[0] == 0
    for packet_id in (1, 2, 3):
        raw.send(publish5("flow/linger", b"x", qos=2, packet_id=packet_id))
        assert raw.expect(5)[:2] == struct.pack(">H", packet_id)  # PUBREC
    # One over the maximum, then PUBRELs, written on as Paho's test_flow_control2 does.
    raw.send(publish5("flow/linger", b"x", qos=2, packet_id=4))
    failed: list = []
    _keep_writing(raw, ack5(6, 2) * 20, 0.6, failed)
    assert not failed, f"a write after the DISCONNECT failed: {failed[0]!r}"
    assert raw.closed_with() == 0x93
    raw.close()


@pytest.mark.mqtt5_server_choice("Mosquitto 2.0.11 closes at once; the lingering close is ours")
def test_a_lingering_close_does_not_hold_the_client_id(v5broker):
    """A client taken over goes on writing for a second: the new connection is answered at
    once all the same, and the old one reads its DISCONNECT 0x8E (Session taken over)."""
    old = RawV5(v5broker)
    assert old.connect("linger-takeover")[0] == 0
    failed: list = []
    writer = threading.Thread(target=_keep_writing, args=(old, b"\xc0\x00" * 50, 1.2, failed))
    writer.start()
    try:
        new = RawV5(v5broker)
        asked = time.monotonic()
        new.send(connect5("linger-takeover"))
        got = new.recv()
        answered = time.monotonic() - asked
    finally:
        writer.join()
    assert got is not None and got[0] == 0x20 and got[1][1] == 0, f"CONNACK {got!r}"
    assert answered < 0.8, f"the takeover waited {answered:.2f}s"
    assert not failed, f"a write after the DISCONNECT failed: {failed[0]!r}"
    assert old.closed_with() == 0x8E
    old.close()
    new.close()


@pytest.mark.mqtt5_amqtt_yaml("max_keepalive: 2\n")
@pytest.mark.mqtt5_mosquitto_conf("max_keepalive 10\n")  # its smallest
@pytest.mark.parametrize("asked", [60, 0], ids=["longer", "none"])
def test_server_keep_alive_caps_an_mqtt5_client(v5broker, asked):
    raw = RawV5(v5broker)
    code, props = raw.connect(f"ska-{asked}", keepalive=asked)
    assert code == 0
    # [MQTT-3.2.2-21]: the client must use the Server Keep Alive; the broker holds it to it.
    assert dict(props).get("server_keep_alive") == (2 if v5broker.kind == "amqtt" else 10)
    if v5broker.kind != "amqtt":
        return raw.close()
    started = time.monotonic()
    reason = raw.closed_with(timeout=12)
    elapsed = time.monotonic() - started
    assert 2.5 <= elapsed <= 5.0, elapsed
    assert reason == 0x8D
    raw.close()


@pytest.mark.mqtt5_amqtt_yaml("max_keepalive: 30\n")
@pytest.mark.mqtt5_mosquitto_conf("max_keepalive 30\n")
def test_server_keep_alive_is_not_sent_within_the_maximum(v5broker):
    raw = RawV5(v5broker)
    code, props = raw.connect("ska-within", keepalive=30)
    assert code == 0
    assert "server_keep_alive" not in dict(props)
    raw.close()


def _connect311(client_id: str, keepalive: int) -> bytes:
    variable = utf8("MQTT") + bytes([4, 0x02]) + struct.pack(">H", keepalive)
    return packet(0x10, variable + utf8(client_id))


@pytest.mark.mqtt5_server_choice("Mosquitto refuses so from 2.0.12 on; the reference is 2.0.11")
@pytest.mark.mqtt5_amqtt_yaml("max_keepalive: 30\n")
@pytest.mark.parametrize("keepalive,code", [(30, 0), (31, 2)], ids=["within", "over"])
def test_an_mqtt311_client_over_max_keepalive_is_refused(v5broker, keepalive, code):
    # MQTT 3.1.1 cannot tell a client another keep-alive: Mosquitto refuses it with 0x02.
    with socket.create_connection((v5broker.host, v5broker.port), timeout=5) as sock:
        sock.sendall(_connect311(f"ka311-{keepalive}", keepalive))
        connack = sock.recv(4)
        assert connack[:1] == b"\x20", connack
        assert connack[3] == code


def _puback_reason_string(v5broker, name: str, properties: list) -> tuple[int, str | None]:
    raw = RawV5(v5broker)
    assert raw.connect(name, properties=properties)[0] == 0
    raw.send(publish5("flow/pfi", b"\xff not utf-8", qos=1, packet_id=1,
                      properties=[("payload_format", 1)]))
    body = raw.expect(4)
    raw.close()
    reason = body[2] if len(body) > 2 else 0
    props, _ = decode_props(body, 3) if len(body) > 3 else ([], 3)
    return reason, dict(props).get("reason_string")


@pytest.mark.mqtt5_server_choice("validating the payload format is optional [MQTT-3.3.2-4]")
def test_request_problem_information_0_keeps_reason_strings_off_the_acks(v5broker):
    reason, text = _puback_reason_string(v5broker, "rpi-default", [])
    assert reason == 0x99 and text, "a refusal says why by default"
    reason, text = _puback_reason_string(v5broker, "rpi-0", [("request_problem_info", 0)])
    assert reason == 0x99
    assert text is None, f"[MQTT-3.1.2-29]: a Reason String to a client that asked for none: {text!r}"


def test_request_response_information_gets_a_connack(v5broker):
    # The server may send no Response Information [MQTT-3.1.2-28]: the CONNECT is accepted.
    raw = RawV5(v5broker)
    code, props = raw.connect("rri", properties=[("request_response_info", 1)])
    assert code == 0
    if v5broker.kind == "amqtt":
        assert "response_info" not in dict(props)
    raw.close()


def _publish_with_raw_props(raw_props: bytes) -> bytes:
    """A QoS 1 PUBLISH whose property section is `raw_props` (length included)."""
    return packet(0x32, utf8("flow/bad") + struct.pack(">H", 1) + raw_props + b"x")


MALFORMED = {
    # An identifier no packet has: Malformed [MQTT-2.2.2].
    "bad-property-id": (_publish_with_raw_props(b"\x02\x7f\x00"), 0x81),
    # The same property twice: Protocol Error [MQTT-2.2.2-2].
    "duplicate-property": (_publish_with_raw_props(encode_props(
        [("payload_format", 0), ("payload_format", 1)])), 0x82),
    # Receive Maximum belongs to CONNECT and CONNACK only.
    "property-not-allowed": (_publish_with_raw_props(b"\x03\x21\x00\x05"), 0x81),
    # A property length in five bytes: not a Variable Byte Integer [MQTT-1.5.5].
    "bad-variable-byte-integer": (_publish_with_raw_props(b"\xff\xff\xff\xff\x7f"), 0x81),
    # 0x04 (Disconnect with Will Message) is no PUBACK reason code.
    "reason-code-not-allowed": (packet(0x40, b"\x00\x01\x04\x00"), 0x81),
    # AUTH whose property length runs past the packet.
    "auth-malformed": (packet(0xF0, b"\x18\x09\x15\x00"), 0x81),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_mqtt5_packets_close_only_that_connection(v5broker, v5clients, case):
    data, want = MALFORMED[case]
    if v5broker.kind == "mosquitto" and case == "reason-code-not-allowed":
        pytest.skip("Mosquitto 2.0.11 ignores a PUBACK reason code it does not know")
    sub = v5clients(f"bad-{case}-sub")
    sub.connected()
    sub.subscribe("flow/bystander", qos=1)
    raw = RawV5(v5broker)
    assert raw.connect(f"bad-{case}")[0] == 0
    raw.send(data)
    reason = raw.closed_with()
    raw.close()
    if v5broker.kind == "amqtt":
        assert reason == want, f"DISCONNECT {reason!r}, want {want:#x}"
    else:
        assert reason in (None, 0x81, 0x82)
    # The bystander connected before is still served, and new clients are too.
    pub = v5clients(f"bad-{case}-pub")
    pub.connected()
    pub.publish("flow/bystander", b"after", qos=1)
    assert sub.get().payload == b"after"
