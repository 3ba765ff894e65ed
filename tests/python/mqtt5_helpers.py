"""Helpers of the MQTT 5 conformance tests (`test_mqtt5_conformance*.py`).

- `V5Client`: a paho-mqtt 2.x client speaking MQTT 5, its network loop on a thread and what it
  receives on queues (messages with their properties, CONNACK and DISCONNECT reason codes and
  properties, SUBACK/UNSUBACK reason codes); optionally acknowledging by hand (`manual_ack`).
- `RawV5`: MQTT 5 on a plain socket, for what paho will not do (resolve or send topic aliases
  freely, leave messages unacknowledged on purpose, send malformed packets), with encoders for
  the packets and properties the tests need and a decoder of PUBLISH properties.
- `V5Broker` and `start_mosquitto`: the broker under test. The tests run against amqtt at 1 and 2
  shards and against Mosquitto (Debian's, started per test on a free loopback port and stopped by
  PID), the reference: a test that Mosquitto fails checks the wrong thing, unless it is marked as
  testing behaviour the specification leaves to the server.
"""

from __future__ import annotations

import os
import queue
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from mqtt_helpers import LOOPBACK, accepts, free_port, launch_broker, stop_broker

TIMEOUT = 5.0
MOSQUITTO = "/usr/sbin/mosquitto"


class V5Broker(NamedTuple):
    host: str
    port: int
    kind: str  # "amqtt" or "mosquitto"
    shards: int  # 0 for Mosquitto
    proc: object = None  # the broker's process (a test may stop it)


def start_mosquitto(workdir: Path, extra: str = "") -> tuple[subprocess.Popen, int, Path]:
    """Starts Mosquitto on a free loopback port with anonymous access and no persistence; returns
    the process, the port and its log file."""
    for _ in range(3):
        port = free_port()
        conf = workdir / f"mosquitto-{port}.conf"
        conf.write_text(
            f"listener {port} {LOOPBACK}\nallow_anonymous true\npersistence false\n"
            "log_dest stderr\nlog_type all\n" + extra)
        log_path = workdir / f"mosquitto-{port}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None:
            if accepts(port):
                return proc, port, log_path
            time.sleep(0.02)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    raise RuntimeError("mosquitto did not start:\n" + log_path.read_text(errors="replace"))


def props(packet_type: int, **values) -> Properties:
    """paho Properties of `packet_type` with the given fields (paho's names, e.g.
    `SessionExpiryInterval=60`, `UserProperty=[("k", "v")]`)."""
    p = Properties(packet_type)
    for name, value in values.items():
        setattr(p, name, value)
    return p


@dataclass
class V5Msg:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: dict
    mid: int = 0
    dup: bool = False


def prop_dict(properties) -> dict:
    """paho Properties as a dict of the properties present (paho's attribute names)."""
    if properties is None:
        return {}
    return {k: v for k, v in properties.json().items()}


class V5Client:
    """An MQTT 5 paho client driven from a test (see the module docs). Never reconnects on its
    own, so a disconnect a test sees is the broker's doing."""

    def __init__(self, broker: V5Broker, client_id: str = "", manual_ack: bool = False,
                 keepalive: int = 60):
        self.broker = broker
        self.client_id = client_id
        self.keepalive = keepalive
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv5, reconnect_on_failure=False,
                                  manual_ack=manual_ack)
        self.messages: queue.Queue[V5Msg] = queue.Queue()
        self.connacks: queue.Queue = queue.Queue()
        self.disconnects: queue.Queue = queue.Queue()
        self._acks: dict[int, object] = {}
        self._cond = threading.Condition()
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_ack
        self.client.on_unsubscribe = self._on_ack
        self.client.on_publish = self._on_publish
        self.published: dict[int, int] = {}
        self.running = False

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.connacks.put((reason_code.value, bool(flags.session_present), prop_dict(properties)))

    def _on_message(self, client, userdata, msg):
        self.messages.put(V5Msg(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain),
                                prop_dict(getattr(msg, "properties", None)), msg.mid,
                                bool(msg.dup)))

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.disconnects.put((reason_code.value, prop_dict(properties)))

    def _on_ack(self, client, userdata, mid, reason_codes, properties):
        with self._cond:
            self._acks[mid] = [rc.value for rc in reason_codes]
            self._cond.notify_all()

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        with self._cond:
            self.published[mid] = reason_code.value
            self._cond.notify_all()

    def will_set(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False,
                 **properties) -> None:
        self.client.will_set(topic, payload, qos, retain,
                             props(PacketTypes.WILLMESSAGE, **properties) if properties else None)

    def connect(self, clean_start: bool = True, timeout: float = TIMEOUT,
                **properties) -> tuple[int, bool, dict]:
        """Connects and waits for CONNACK: (reason code, session present, CONNACK properties)."""
        p = props(PacketTypes.CONNECT, **properties) if properties else None
        self.client.connect(self.broker.host, self.broker.port, keepalive=self.keepalive,
                            clean_start=clean_start, properties=p)
        self.client.loop_start()
        self.running = True
        try:
            return self.connacks.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.client_id!r}: no CONNACK within {timeout}s")

    def connected(self, clean_start: bool = True, **properties) -> dict:
        code, _, connack = self.connect(clean_start, **properties)
        assert code == 0, f"{self.client_id!r}: CONNACK reason code {code:#x}"
        return connack

    def _wait(self, table: dict, mid: int, what: str, timeout: float):
        deadline = time.monotonic() + timeout
        with self._cond:
            while mid not in table:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{self.client_id!r}: no {what} for mid {mid}")
                self._cond.wait(left)
            return table.pop(mid)

    def subscribe(self, topic: str, qos: int = 0, no_local: bool = False,
                  retain_as_published: bool = False, retain_handling: int = 0,
                  sub_id: int | None = None, timeout: float = TIMEOUT) -> list[int]:
        """Subscribes one filter; returns the SUBACK reason codes."""
        options = SubscribeOptions(qos=qos, noLocal=no_local,
                                   retainAsPublished=retain_as_published,
                                   retainHandling=retain_handling)
        p = props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=sub_id) if sub_id else None
        rc, mid = self.client.subscribe(topic, options=options, properties=p)
        assert rc == mqtt.MQTT_ERR_SUCCESS, f"subscribe not sent: {rc}"
        return self._wait(self._acks, mid, "SUBACK", timeout)

    def unsubscribe(self, topic: str, timeout: float = TIMEOUT) -> list[int]:
        rc, mid = self.client.unsubscribe(topic)
        assert rc == mqtt.MQTT_ERR_SUCCESS, f"unsubscribe not sent: {rc}"
        return self._wait(self._acks, mid, "UNSUBACK", timeout)

    def publish(self, topic: str, payload: bytes | str = b"", qos: int = 0,
                retain: bool = False, timeout: float = TIMEOUT, **properties) -> int:
        """Publishes and waits for the flow to complete; returns the PUBACK/PUBREC reason code
        (0 for QoS 0)."""
        p = props(PacketTypes.PUBLISH, **properties) if properties else None
        info = self.client.publish(topic, payload, qos, retain, properties=p)
        return self._wait(self.published, info.mid, f"publish completion of {topic!r}", timeout)

    def get(self, timeout: float = TIMEOUT) -> V5Msg:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.client_id!r}: no message within {timeout}s")

    def get_n(self, count: int, timeout: float = TIMEOUT) -> list[V5Msg]:
        return [self.get(timeout) for _ in range(count)]

    def nothing(self, wait: float = 0.5) -> None:
        """Asserts that no message arrives within `wait` seconds."""
        try:
            msg = self.messages.get(timeout=wait)
        except queue.Empty:
            return
        raise AssertionError(f"{self.client_id!r}: unexpected message {msg}")

    def wait_disconnect(self, timeout: float = TIMEOUT) -> tuple[int, dict]:
        try:
            return self.disconnects.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.client_id!r}: not disconnected within {timeout}s")

    def disconnect(self, reason: int = 0, **properties) -> None:
        """Sends DISCONNECT with `reason` (and properties) and stops the network thread."""
        p = props(PacketTypes.DISCONNECT, **properties) if properties else None
        self.client.disconnect(mqtt.ReasonCode(PacketTypes.DISCONNECT, identifier=reason), p)
        self.wait_disconnect()
        self.stop()

    def drop(self) -> None:
        """Closes the TCP connection without DISCONNECT, as a network failure would."""
        sock = self.client.socket()
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.wait_disconnect()
        self.stop()

    def stop(self) -> None:
        if self.running:
            self.client.loop_stop()
            self.running = False

    def close(self) -> None:
        try:
            if self.client.is_connected():
                self.client.disconnect()
                try:
                    self.disconnects.get(timeout=2)
                except queue.Empty:
                    pass
        except Exception:
            pass
        self.stop()


# ---- raw MQTT 5 -----------------------------------------------------------------------------

def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def utf8(s: bytes | str) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack(">H", len(b)) + b


# Property identifiers [MQTT-2.2.2.2] and how their values are written.
PROP = {
    "payload_format": (0x01, "byte"), "message_expiry": (0x02, "u32"),
    "content_type": (0x03, "str"), "response_topic": (0x08, "str"),
    "correlation_data": (0x09, "bin"), "subscription_id": (0x0B, "var"),
    "session_expiry": (0x11, "u32"), "assigned_client_id": (0x12, "str"),
    "server_keep_alive": (0x13, "u16"), "auth_method": (0x15, "str"),
    "auth_data": (0x16, "bin"), "request_problem_info": (0x17, "byte"),
    "will_delay": (0x18, "u32"), "request_response_info": (0x19, "byte"),
    "response_info": (0x1A, "str"), "server_reference": (0x1C, "str"),
    "reason_string": (0x1F, "str"), "receive_maximum": (0x21, "u16"),
    "topic_alias_maximum": (0x22, "u16"), "topic_alias": (0x23, "u16"),
    "maximum_qos": (0x24, "byte"), "retain_available": (0x25, "byte"),
    "user_property": (0x26, "pair"), "maximum_packet_size": (0x27, "u32"),
    "wildcard_available": (0x28, "byte"), "subscription_id_available": (0x29, "byte"),
    "shared_available": (0x2A, "byte"),
}
_BY_ID = {ident: (name, kind) for name, (ident, kind) in PROP.items()}


def encode_props(items: list[tuple[str, object]]) -> bytes:
    """A property block (length included) from (name, value) pairs, in order; repeated names
    (user properties, or a duplicate on purpose) are written as given."""
    body = bytearray()
    for name, value in items:
        ident, kind = PROP[name]
        body += varint(ident)
        if kind == "byte":
            body.append(value)
        elif kind == "u16":
            body += struct.pack(">H", value)
        elif kind == "u32":
            body += struct.pack(">I", value)
        elif kind == "var":
            body += varint(value)
        elif kind in ("str", "bin"):
            body += utf8(value)
        else:
            body += utf8(value[0]) + utf8(value[1])
    return varint(len(body)) + bytes(body)


def decode_props(data: bytes, at: int) -> tuple[list[tuple[str, object]], int]:
    """The properties at `data[at:]` as (name, value) pairs in wire order, and where they end."""
    length, at = read_varint(data, at)
    end = at + length
    out = []
    while at < end:
        ident, at = read_varint(data, at)
        name, kind = _BY_ID[ident]
        if kind == "byte":
            value, at = data[at], at + 1
        elif kind == "u16":
            value, at = struct.unpack_from(">H", data, at)[0], at + 2
        elif kind == "u32":
            value, at = struct.unpack_from(">I", data, at)[0], at + 4
        elif kind == "var":
            value, at = read_varint(data, at)
        elif kind in ("str", "bin"):
            n = struct.unpack_from(">H", data, at)[0]
            raw = data[at + 2:at + 2 + n]
            value, at = (raw.decode() if kind == "str" else raw), at + 2 + n
        else:
            n = struct.unpack_from(">H", data, at)[0]
            k = data[at + 2:at + 2 + n].decode()
            at += 2 + n
            n = struct.unpack_from(">H", data, at)[0]
            v = data[at + 2:at + 2 + n].decode()
            value, at = (k, v), at + 2 + n
        out.append((name, value))
    return out, end


def read_varint(data: bytes, at: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at


def packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + varint(len(body)) + body


def connect5(client_id: str = "", clean_start: bool = True, keepalive: int = 60,
             properties: list | None = None, will: tuple | None = None) -> bytes:
    """CONNECT at protocol level 5; `will` is (topic, payload, qos, retain, properties)."""
    flags = 0x02 if clean_start else 0
    payload = utf8(client_id)
    if will is not None:
        topic, body, qos, retain, will_props = will
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        payload += encode_props(will_props or []) + utf8(topic) + utf8(body)
    variable = utf8("MQTT") + bytes([5, flags]) + struct.pack(">H", keepalive)
    return packet(0x10, variable + encode_props(properties or []) + payload)


def publish5(topic: str, payload: bytes = b"", qos: int = 0, retain: bool = False,
             packet_id: int = 0, properties: list | None = None, dup: bool = False) -> bytes:
    first = 0x30 | (qos << 1) | (0x01 if retain else 0) | (0x08 if dup else 0)
    body = utf8(topic) + (struct.pack(">H", packet_id) if qos else b"")
    return packet(first, body + encode_props(properties or []) + payload)


def subscribe5(packet_id: int, filters: list[tuple[str, int]],
               properties: list | None = None) -> bytes:
    """SUBSCRIBE with (filter, options byte) pairs."""
    body = struct.pack(">H", packet_id) + encode_props(properties or [])
    for f, options in filters:
        body += utf8(f) + bytes([options])
    return packet(0x82, body)


def ack5(kind: int, packet_id: int, reason: int = 0) -> bytes:
    """PUBACK (4), PUBREC (5), PUBREL (6) or PUBCOMP (7)."""
    first = (kind << 4) | (0x02 if kind == 6 else 0)
    return packet(first, struct.pack(">HB", packet_id, reason) + b"\x00")


@dataclass
class RawPublish:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    packet_id: int
    properties: list = field(default_factory=list)

    def prop(self, name: str):
        return [v for n, v in self.properties if n == name]


def parse_publish(first: int, body: bytes) -> RawPublish:
    qos = (first >> 1) & 3
    n = struct.unpack_from(">H", body, 0)[0]
    topic = body[2:2 + n].decode()
    at = 2 + n
    packet_id = 0
    if qos:
        packet_id = struct.unpack_from(">H", body, at)[0]
        at += 2
    properties, at = decode_props(body, at)
    return RawPublish(topic, body[at:], qos, bool(first & 1), bool(first & 8), packet_id,
                      properties)


class RawV5:
    """MQTT 5 over a plain socket: send bytes, read whole packets."""

    def __init__(self, broker: V5Broker, timeout: float = TIMEOUT):
        self.sock = socket.create_connection((broker.host, broker.port), timeout=timeout)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self, timeout: float = TIMEOUT) -> tuple[int, bytes] | None:
        """The next packet as (first byte, body), or None once the broker closed the
        connection. Fails the test after `timeout` seconds without a whole packet."""
        deadline = time.monotonic() + timeout
        while True:
            whole = self._take()
            if whole is not None:
                return whole
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no packet within {timeout}s")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError:
                return None
            if not chunk:
                return None
            self.buf += chunk

    def _take(self):
        if len(self.buf) < 2:
            return None
        length, shift, at = 0, 0, 1
        while True:
            if at >= len(self.buf):
                return None
            byte = self.buf[at]
            length |= (byte & 0x7F) << shift
            shift += 7
            at += 1
            if not byte & 0x80:
                break
        if len(self.buf) < at + length:
            return None
        first, body = self.buf[0], self.buf[at:at + length]
        self.buf = self.buf[at + length:]
        return first, body

    def connect(self, client_id: str = "", **kwargs) -> tuple[int, list]:
        """Sends CONNECT and reads CONNACK: (reason code, properties)."""
        self.send(connect5(client_id, **kwargs))
        got = self.recv()
        assert got is not None and got[0] == 0x20, f"expected CONNACK, got {got!r}"
        properties, _ = decode_props(got[1], 2)
        return got[1][1], properties

    def expect(self, packet_type: int, timeout: float = TIMEOUT) -> bytes:
        """Reads packets until one of `packet_type` (the high nibble); returns its body."""
        got = self.recv(timeout)
        assert got is not None, f"connection closed while waiting for packet type {packet_type}"
        assert got[0] >> 4 == packet_type, f"expected packet type {packet_type}, got {got!r}"
        return got[1]

    def closed_with(self, timeout: float = TIMEOUT) -> int | None:
        """Reads until the broker closes; returns the reason code of the DISCONNECT it sent
        first, or None if it closed without one."""
        reason = None
        while True:
            got = self.recv(timeout)
            if got is None:
                return reason
            if got[0] >> 4 == 14:
                reason = got[1][0] if got[1] else 0

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


# ---- the broker under test -------------------------------------------------------------------

def _amqtt_config(port: int, shards: int, extra: str) -> str:
    return (f"listeners:\n  default:\n    type: tcp\n    bind: {LOOPBACK}:{port}\n"
            f"shards: {shards}\npin_shards: false\nsys_interval: 0\n" + extra)


def _amqtt_ready(port: int) -> bool:
    """True once the broker answers an MQTT 5 CONNECT (the port opens before the shards run)."""
    if not accepts(port):
        return False
    try:
        raw = RawV5(V5Broker(LOOPBACK, port, "amqtt", 0), timeout=1.0)
    except OSError:
        return False
    try:
        raw.send(connect5("mqtt5-ready-probe"))
        got = raw.recv(1.0)
        return got is not None and got[0] == 0x20
    except (OSError, AssertionError):
        return False
    finally:
        raw.close()


@pytest.fixture(params=["amqtt-1", "amqtt-2", "mosquitto"])
def v5broker(request, amqtt_bin, tmp_path):
    """The broker under test: amqtt at 1 and 2 shards, and Mosquitto as the reference. A test
    marked `mqtt5_amqtt_yaml(text)` adds those lines to amqtt's config; one marked
    `mqtt5_mosquitto_conf(text)` to Mosquitto's; one marked `mqtt5_server_choice(reason)` does
    not run against Mosquitto (it checks a choice the specification leaves to the server). Under
    AMQTT_RUNTIME=epoll (CI's second pass) only amqtt at 2 shards runs: the rest ran in the first."""
    if request.param == "mosquitto":
        if os.environ.get("AMQTT_RUNTIME") == "epoll":
            pytest.skip("the Mosquitto reference runs once, in the default runtime's pass")
        choice = request.node.get_closest_marker("mqtt5_server_choice")
        if choice:
            pytest.skip(f"server's choice: {choice.args[0]}")
        marker = request.node.get_closest_marker("mqtt5_mosquitto_conf")
        proc, port, log_path = start_mosquitto(tmp_path, marker.args[0] if marker else "")
        request.node._amqtt_logs = [log_path]
        yield V5Broker(LOOPBACK, port, "mosquitto", 0, proc)
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return
    shards = int(request.param.split("-")[1])
    if shards == 1 and os.environ.get("AMQTT_RUNTIME") == "epoll":
        pytest.skip("the epoll pass runs these at 2 shards only (1 shard runs in the default pass)")
    marker = request.node.get_closest_marker("mqtt5_amqtt_yaml")
    port = free_port()
    config = tmp_path / "amqtt.yaml"
    config.write_text(_amqtt_config(port, shards, marker.args[0] if marker else ""))
    log_path = tmp_path / "amqtt.log"
    request.node._amqtt_logs = [log_path]
    proc = launch_broker(amqtt_bin, config, log_path, lambda: _amqtt_ready(port))
    yield V5Broker(LOOPBACK, port, "amqtt", shards, proc)
    if proc.poll() is None:
        stop_broker(proc, log_path)
    else:  # the test stopped it: it must have exited cleanly
        assert proc.wait() == 0, f"broker exit status {proc.returncode}"


@pytest.fixture
def v5clients(v5broker):
    """`make(client_id, **kwargs)` creates a V5Client for the broker under test; all are closed
    at teardown."""
    made: list[V5Client] = []

    def make(client_id: str = "", **kwargs) -> V5Client:
        c = V5Client(v5broker, client_id, **kwargs)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()
