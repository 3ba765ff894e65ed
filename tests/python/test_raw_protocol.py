"""Protocol edge cases on raw sockets: what real clients refuse to send.

Each case says what is sent and what the broker must do; where a connection is closed for a
protocol error, another (paho) client on the same broker must keep working, and the closed
client's will must be published (the close is not a DISCONNECT [MQTT-3.1.2-8]).
"""

from __future__ import annotations

import struct
import time

import pytest

from mqtt_helpers import (
    CONNACK, CONNECT_TIMEOUT, DISCONNECT_PACKET, PINGREQ_PACKET, PINGRESP, RawConn, connect_packet, mqtt_str,
    packet, publish_packet, subscribe_packet, varint,
)


@pytest.fixture
def raw(broker):
    conns: list[RawConn] = []

    def open_conn() -> RawConn:
        c = RawConn(*broker)
        conns.append(c)
        return c

    yield open_conn
    for c in conns:
        c.close()


@pytest.fixture
def watcher(client_factory):
    """A paho client subscribed to everything under raw/ at QoS 1."""
    w = client_factory.connected("raw-watcher")
    assert w.subscribe("raw/#", 1) == [1]
    return w


def assert_still_works(watcher, tag: str) -> None:
    """The paho client can still publish and receive through the broker."""
    watcher.publish("raw/alive", tag.encode(), qos=1)
    m = watcher.get_message()
    assert (m.topic, m.payload) == ("raw/alive", tag.encode()), f"got {m}"


def connect_bytes(flags: int, payload: bytes, name: bytes = b"MQTT", level: int = 4,
                  keepalive: int = 60) -> bytes:
    body = mqtt_str(name) + bytes([level, flags]) + struct.pack("!H", keepalive) + payload
    return packet(0x10, body)


# --- CONNECT -------------------------------------------------------------------------------------

# (MQTT 5, level 5, is answered: tests/python/test_mqtt5.py.)
@pytest.mark.parametrize("connect", [
    pytest.param(connect_packet("v6-client", level=6), id="level6"),
])
def test_unsupported_protocol_level_gets_connack_1_and_close(raw, connect):
    c = raw()
    c.send(connect)
    pkt = c.recv_packet()
    assert pkt is not None, "closed without CONNACK"
    assert pkt == (CONNACK << 4, bytes([0, 1])), f"expected CONNACK 0x01, got {pkt}"
    assert c.wait_closed() == b""


def test_mqtt31_client_id_over_23_chars_refused(raw):
    c = raw()
    c.send(connect_packet("x" * 24, proto_name=b"MQIsdp", level=3))
    pkt = c.recv_packet()
    assert pkt == (CONNACK << 4, bytes([0, 2])), f"expected CONNACK 0x02, got {pkt}"
    assert c.wait_closed() == b""


@pytest.mark.parametrize("data", [
    pytest.param(connect_bytes(0x03, mqtt_str("reserved-bit")), id="reserved-flag-bit-0"),
    pytest.param(connect_bytes(0x02 | 0x18, mqtt_str("will-qos-3") + mqtt_str("t") + mqtt_str("p")),
                 id="will-qos-3"),
    pytest.param(connect_bytes(0x02 | 0x08, mqtt_str("will-qos-without-flag")),
                 id="will-qos-without-will-flag"),
    pytest.param(connect_bytes(0x02 | 0x20, mqtt_str("will-retain-without-flag")),
                 id="will-retain-without-will-flag"),
    pytest.param(connect_bytes(0x02 | 0x40, mqtt_str("pw-no-user") + mqtt_str("secret")),
                 id="password-without-username"),
    pytest.param(connect_bytes(0x02, mqtt_str("bad-name"), name=b"MQTX"), id="bad-protocol-name"),
    pytest.param(connect_bytes(0x02, mqtt_str("short"))[:-2], id="truncated"),
])
def test_malformed_connect_closes(raw, watcher, data, request):
    c = raw()
    c.send(data)
    received = c.wait_closed()
    # No CONNACK accepting it (a refusal CONNACK, 0x01 for a bad protocol name, is allowed).
    assert not received.startswith(bytes([0x20, 2, 0, 0])), f"accepted: {received!r}"
    assert_still_works(watcher, request.node.callspec.id)


@pytest.mark.parametrize("data", [
    pytest.param(PINGREQ_PACKET, id="pingreq"),
    pytest.param(publish_packet("raw/early", b"x"), id="publish"),
    pytest.param(subscribe_packet(1, [("raw/#", 0)]), id="subscribe"),
    pytest.param(DISCONNECT_PACKET, id="disconnect"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", id="http"),
])
def test_packet_before_connect_closes(raw, watcher, data, request):
    c = raw()
    c.send(data)
    assert c.wait_closed() == b"", "the broker answered a connection that never sent CONNECT"
    assert watcher.messages.empty(), "something was published for a client that never connected"
    assert_still_works(watcher, request.node.callspec.id)


def test_second_connect_closes_and_publishes_will(raw, watcher):
    c = raw()
    will = ("raw/will/second-connect", b"second CONNECT", 1, False)
    assert c.connect("double-connect", will=will) == bytes([0, 0])
    c.send(connect_packet("double-connect"))  # a second CONNECT is a protocol violation
    assert c.wait_closed() == b""
    m = watcher.get_message()
    assert (m.topic, m.payload, m.qos, m.retain) == ("raw/will/second-connect", b"second CONNECT",
                                                     1, False)
    assert_still_works(watcher, "after second connect")


# --- malformed packets after CONNECT ---------------------------------------------------------------

BAD_PACKETS = [
    pytest.param(b"\x00\x00", id="reserved-type-0"),
    pytest.param(b"\xf0\x00", id="reserved-type-15"),
    pytest.param(b"\xde\xad\xbe\xef" * 8, id="garbage"),
    pytest.param(subscribe_packet(1, [("raw/x", 0)], flags=0x00), id="subscribe-flags-0"),
    pytest.param(b"\xa0" + varint(5) + struct.pack("!H", 1) + mqtt_str("x")[:3],
                 id="unsubscribe-flags-0"),
    pytest.param(b"\x60\x02\x00\x01", id="pubrel-flags-0"),
    pytest.param(b"\xc1\x00", id="pingreq-flags-1"),
    pytest.param(b"\x36" + varint(5) + mqtt_str("t") + b"\x00\x01", id="publish-qos-3"),
    pytest.param(b"\x30\xff\xff\xff\xff\x01", id="remaining-length-5-bytes"),
    pytest.param(b"\x30\x80\x80\x80\x80\x01" + b"\x00" * 16, id="remaining-length-overlong"),
    pytest.param(subscribe_packet(1, [("raw/x", 3)]), id="subscribe-qos-3"),
    pytest.param(subscribe_packet(1, []), id="subscribe-no-filters"),
    pytest.param(publish_packet("raw/+", b"wild"), id="publish-wildcard-topic"),
    pytest.param(packet(0x30, struct.pack("!H", 2) + b"\xff\xfe" + b"p"), id="publish-invalid-utf8"),
    pytest.param(packet(0x30, struct.pack("!H", 3) + b"a\x00b" + b"p"), id="publish-nul-in-topic"),
    pytest.param(publish_packet("", b"empty topic"), id="publish-empty-topic"),
    pytest.param(publish_packet("raw/x", b"id0", qos=1, packet_id=0), id="publish-packet-id-0"),
    pytest.param(b"\x20\x02\x00\x00", id="connack-from-client"),
    pytest.param(b"\x82\x0a\x00\x01\x00\x06raw/x\x00", id="subscribe-length-mismatch"),
]


@pytest.mark.parametrize("data", BAD_PACKETS)
def test_malformed_packet_closes_only_that_connection(raw, watcher, data, request):
    case = request.node.callspec.id.split("-", 1)[1]
    c = raw()
    will_topic = f"raw/will/{case}"
    assert c.connect(f"bad-{case}"[:23], will=(will_topic, b"protocol error", 1, False)) == \
        bytes([0, 0])
    c.send(data)
    received = c.wait_closed()
    assert received == b"", f"the broker answered {data!r} with {received!r} before closing"
    # The will is published: the connection was not closed by a DISCONNECT.
    m = watcher.get_message()
    assert (m.topic, m.payload) == (will_topic, b"protocol error"), f"got {m}"
    assert_still_works(watcher, case)


# --- timeouts -------------------------------------------------------------------------------------------

def test_keep_alive_expiry_closes_and_publishes_will(raw, watcher):
    c = raw()
    assert c.connect("sleepy", keepalive=1, will=("raw/will/sleepy", b"timed out", 1, False)) == \
        bytes([0, 0])
    start = time.monotonic()
    received = c.wait_closed(timeout=4)
    elapsed = time.monotonic() - start
    assert received == b""
    # Closed after 1.5 keep-alive periods [MQTT-3.1.2-24], allowing 1 s for the broker's timer.
    assert 1.4 <= elapsed <= 2.5, f"closed after {elapsed:.2f}s, expected 1.5 s (+ up to 1 s)"
    m = watcher.get_message()
    assert (m.topic, m.payload, m.qos) == ("raw/will/sleepy", b"timed out", 1)
    assert_still_works(watcher, "after keep-alive")


def test_keep_alive_kept_by_pingreq(raw, watcher):
    c = raw()
    assert c.connect("pinger", keepalive=1, will=("raw/will/pinger", b"x", 1, False)) == \
        bytes([0, 0])
    # 2.5 s (well over 1.5 keep-alive periods) of PINGREQs every 0.5 s: each gets a PINGRESP.
    for _ in range(5):
        c.send(PINGREQ_PACKET)
        pkt = c.recv_packet(timeout=1)
        assert pkt == (PINGRESP << 4, b""), f"expected PINGRESP, got {pkt}"
        time.sleep(0.5)
    c.send(DISCONNECT_PACKET)
    assert c.wait_closed() == b""
    assert watcher.messages.empty(), f"will published: {watcher.drain()}"


def test_connection_without_connect_closed_after_connect_timeout(raw):
    c = raw()
    start = time.monotonic()
    received = c.wait_closed(timeout=CONNECT_TIMEOUT + 3)
    elapsed = time.monotonic() - start
    assert received == b""
    assert CONNECT_TIMEOUT - 0.2 <= elapsed <= CONNECT_TIMEOUT + 1.5, \
        f"closed after {elapsed:.2f}s with connect_timeout {CONNECT_TIMEOUT}s"


def test_partial_connect_closed_after_connect_timeout(raw):
    c = raw()
    c.send(connect_packet("slow-connect")[:5])  # starts a CONNECT and never finishes it
    start = time.monotonic()
    received = c.wait_closed(timeout=CONNECT_TIMEOUT + 3)
    elapsed = time.monotonic() - start
    assert received == b""
    assert elapsed <= CONNECT_TIMEOUT + 1.5, f"closed after {elapsed:.2f}s"


# --- shutdown with clients still connected -----------------------------------------------------------

@pytest.fixture
def lingering():
    """Connections left open through the broker's shutdown. Requested before `broker`, so this
    teardown runs after the broker fixture has stopped it (SIGTERM, exit 0 within 5 s): by then the
    broker must have closed every one of them."""
    conns: list[RawConn] = []
    yield conns
    try:
        for c in conns:
            c.wait_closed(timeout=1)  # fails if still open
    finally:
        for c in conns:
            c.close()


def test_shutdown_with_clients_connected(lingering, broker):
    # An idle subscriber, a persistent session with a message in flight to it, a client that
    # never sent CONNECT, and one in the middle of a packet.
    sub = RawConn(*broker)
    lingering.append(sub)
    assert sub.connect("idle-sub") == bytes([0, 0])
    sub.send(subscribe_packet(1, [("shut/#", 1)]))
    assert sub.recv_packet() == (0x90, bytes([0, 1, 1]))

    pub = RawConn(*broker)
    lingering.append(pub)
    assert pub.connect("shut-pub", clean=False, will=("shut/will", b"bye", 1, False)) == \
        bytes([0, 0])
    pub.send(publish_packet("shut/t", b"unacked", qos=1, packet_id=7))
    assert pub.recv_packet() == (0x40, bytes([0, 7]))
    pkt = sub.recv_packet()
    assert pkt is not None and pkt[0] & 0xF0 == 0x30  # delivered, never acknowledged

    silent = RawConn(*broker)
    lingering.append(silent)
    partial = RawConn(*broker)
    lingering.append(partial)
    assert partial.connect("partial") == bytes([0, 0])
    partial.send(b"\x30\x10\x00")  # a PUBLISH header and 1 of its 16 bytes
