"""Helpers shared by the Python interoperability tests.

- `PahoClient`: a paho-mqtt 2.x client driven from a test, with its callbacks turned into queues
  and waits with timeouts (no sleeps).
- `RawConn` and the `*_packet` encoders: a minimal MQTT 3.1.1 client on a plain socket, for the
  packets that real clients refuse to send.
- `free_port` and `accepts`: loopback ports for the brokers the tests start; `launch_broker`
  starts one and waits until it is ready, `spawn_broker` starts one from a config text;
  `stop_broker` stops one and requires a clean exit, `kill_running` ends the ones a failed test
  left; `wait_for_text` waits for a line in a broker's log file.
"""

from __future__ import annotations

import queue
import re
import signal
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

LOOPBACK = "127.0.0.1"
DEFAULT_TIMEOUT = 5.0
CONNECT_TIMEOUT = 2  # seconds; `connect_timeout` in the brokers' test config (conftest.py)


_ISSUED_PORTS: set[int] = set()


def free_port() -> int:
    """A TCP port on the loopback address that nothing listens on right now and that this test
    run has not handed out before. The kernel may give the same free port to two bind-to-0 calls
    in a row (CI once saw a broker's 'tcp' and 'ws' listeners both get 46889), so ports already
    issued are skipped."""
    for _ in range(1000):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((LOOPBACK, 0))
            port = s.getsockname()[1]
        if port not in _ISSUED_PORTS:
            _ISSUED_PORTS.add(port)
            return port
    raise RuntimeError("no loopback port left that this test run has not already used")


def wait_for_text(path: Path, text: str, timeout: float = 10.0) -> str:
    """The content of `path` once it contains `text` (a log file being written); fails the test
    after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    content = ""
    while time.monotonic() < deadline:
        content = path.read_text(errors="replace") if path.exists() else ""
        if text in content:
            return content
        time.sleep(0.05)
    pytest.fail(f"{text!r} never appeared in {path}:\n{content}", pytrace=False)


def accepts(port: int) -> bool:
    """Whether a TCP connection to `port` on the loopback address is accepted."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5):
            return True
    except OSError:
        return False


def spawn_broker(amqtt_bin: Path, workdir: Path, config: str) -> tuple[subprocess.Popen, Path]:
    """Starts `amqtt -d` on `config` (written to workdir/broker.yaml), its output in
    workdir/broker.log; returns the process and the log's path. Waiting until it serves is the
    caller's (what a ready broker answers depends on its authentication)."""
    path = workdir / "broker.yaml"
    path.write_text(config)
    log_path = workdir / "broker.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(amqtt_bin), "-d", "-c", str(path)],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    return proc, log_path
def launch_broker(amqtt_bin: Path, config: Path, log_path: Path, ready,
                  timeout: float = 10.0) -> subprocess.Popen:
    """Starts `amqtt -d -c config` (its output in `log_path`) and returns it once `ready()` is
    true; fails the test, with the end of the log, if it exits or is not ready within `timeout`."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(amqtt_bin), "-d", "-c", str(config)],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"broker exited at start ({proc.returncode}):\n"
                        + log_path.read_text(errors="replace")[-5000:], pytrace=False)
        if ready():
            return proc
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    pytest.fail("broker did not start:\n" + log_path.read_text(errors="replace")[-5000:],
                pytrace=False)


def stop_broker(proc: subprocess.Popen, log_path: Path, timeout: float = 5.0) -> None:
    """SIGTERM, then requires exit status 0 within `timeout` (killed otherwise); the end of the
    broker's log is shown on failure."""
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        rc = "timeout"
    assert rc == 0, f"broker exit {rc}:\n" + Path(log_path).read_text(errors="replace")[-5000:]


def kill_running(procs) -> None:
    """Kills and reaps the processes still running (a test's brokers, after a failure)."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@dataclass(frozen=True)
class Msg:
    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass(frozen=True)
class WirePublish:
    topic: str
    qos: int
    dup: bool
    retain: bool


_RECEIVED_PUBLISH = re.compile(
    r"Received PUBLISH \(d(\d), q(\d), r(\d), m(\d+)\), '(.*)', (?:properties=.*, )?\.\.\.  \(\d+ bytes\)$",
    re.S)


class PahoClient:
    """A paho client with its network loop on a thread, and everything it receives on queues.

    It never reconnects by itself (reconnect_on_failure=False), so a disconnect seen by a test is
    the broker's doing.
    """

    def __init__(
        self,
        host: str,
        port: int,
        client_id: str = "",
        clean_session: bool = True,
        protocol: int = mqtt.MQTTv311,
        keepalive: int = 60,
        will: tuple[str, bytes, int, bool] | None = None,
    ):
        self.host = host
        self.port = port
        self.keepalive = keepalive
        self.client_id = client_id
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=clean_session,
            protocol=protocol,
            reconnect_on_failure=False,
        )
        if will is not None:
            topic, payload, qos, retain = will
            self.client.will_set(topic, payload, qos, retain)
        self.messages: queue.Queue[Msg] = queue.Queue()
        self.connacks: queue.Queue[tuple[int, bool]] = queue.Queue()
        self.disconnects: queue.Queue[object] = queue.Queue()
        self._acks: dict[int, list[int] | None] = {}
        self._acks_cond = threading.Condition()
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_unsubscribe = self._on_unsubscribe
        self.client.on_log = self._on_log
        # PUBLISH packets in the order they came off the wire: paho calls on_message for a QoS 2
        # message only at PUBREL, so `messages` is not the broker's sending order.
        self.wire_publishes: list[WirePublish] = []
        self.connected = False
        self.loop_running = False

    # --- callbacks (network thread) ---------------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.connected = reason_code == 0
        self.connacks.put((reason_code.value if hasattr(reason_code, "value") else int(reason_code),
                           bool(flags.session_present)))

    def _on_message(self, client, userdata, msg):
        self.messages.put(Msg(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain)))

    def _on_log(self, client, userdata, level, buf):
        if buf.startswith("Received PUBLISH"):
            m = _RECEIVED_PUBLISH.match(buf)
            if m:
                self.wire_publishes.append(WirePublish(
                    m.group(5), int(m.group(2)), bool(int(m.group(1))), bool(int(m.group(3)))))

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.connected = False
        self.disconnects.put(reason_code)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        with self._acks_cond:
            self._acks[mid] = [rc.value for rc in reason_codes]
            self._acks_cond.notify_all()

    def _on_unsubscribe(self, client, userdata, mid, reason_codes, properties):
        with self._acks_cond:
            self._acks[mid] = None
            self._acks_cond.notify_all()

    # --- test-side API ------------------------------------------------------------------------
    def connect(self, timeout: float = DEFAULT_TIMEOUT) -> tuple[int, bool]:
        """Connects and waits for CONNACK; returns (return code, session present)."""
        self.client.connect(self.host, self.port, keepalive=self.keepalive)
        self.client.loop_start()
        self.loop_running = True
        try:
            return self.connacks.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no CONNACK for client {self.client_id!r} within {timeout}s")

    def _wait_ack(self, mid: int, what: str, timeout: float):
        deadline = time.monotonic() + timeout
        with self._acks_cond:
            while mid not in self._acks:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {what} for mid {mid} within {timeout}s")
                self._acks_cond.wait(left)
            return self._acks.pop(mid)

    def subscribe(self, topic, qos: int = 0, timeout: float = DEFAULT_TIMEOUT) -> list[int]:
        """Subscribes (topic string, or a list of (filter, qos)) and returns the granted QoS list."""
        if isinstance(topic, list):
            rc, mid = self.client.subscribe(topic)
        else:
            rc, mid = self.client.subscribe(topic, qos)
        assert rc == mqtt.MQTT_ERR_SUCCESS, f"subscribe not sent: {rc}"
        return self._wait_ack(mid, "SUBACK", timeout)

    def unsubscribe(self, topic, timeout: float = DEFAULT_TIMEOUT) -> None:
        rc, mid = self.client.unsubscribe(topic)
        assert rc == mqtt.MQTT_ERR_SUCCESS, f"unsubscribe not sent: {rc}"
        self._wait_ack(mid, "UNSUBACK", timeout)

    def publish(self, topic: str, payload: bytes | str = b"", qos: int = 0, retain: bool = False,
                timeout: float = DEFAULT_TIMEOUT) -> None:
        """Publishes and waits until the flow completes (sent for QoS 0, PUBACK/PUBCOMP else)."""
        info = self.client.publish(topic, payload, qos, retain)
        info.wait_for_publish(timeout)
        assert info.is_published(), f"publish to {topic!r} (QoS {qos}) not completed in {timeout}s"

    def publish_nowait(self, topic: str, payload: bytes | str = b"", qos: int = 0,
                       retain: bool = False):
        return self.client.publish(topic, payload, qos, retain)

    def get_message(self, timeout: float = DEFAULT_TIMEOUT) -> Msg:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"client {self.client_id!r}: no message within {timeout}s")

    def get_messages(self, count: int, timeout: float = DEFAULT_TIMEOUT) -> list[Msg]:
        deadline = time.monotonic() + timeout
        out = []
        while len(out) < count:
            left = deadline - time.monotonic()
            try:
                out.append(self.messages.get(timeout=max(left, 0.001)))
            except queue.Empty:
                raise AssertionError(
                    f"client {self.client_id!r}: got {len(out)} of {count} messages in {timeout}s: "
                    f"{out[:5]}{'...' if len(out) > 5 else ''}")
        return out

    def drain(self) -> list[Msg]:
        out = []
        while True:
            try:
                out.append(self.messages.get_nowait())
            except queue.Empty:
                return out

    def wait_disconnect(self, timeout: float = DEFAULT_TIMEOUT):
        try:
            return self.disconnects.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"client {self.client_id!r} not disconnected within {timeout}s")

    def disconnect(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Clean disconnect: sends DISCONNECT and stops the network thread."""
        self.client.disconnect()
        self.wait_disconnect(timeout)
        self.stop_loop()

    def drop_connection(self) -> None:
        """Closes the TCP connection without sending DISCONNECT, as a network failure would."""
        sock = self.client.socket()
        assert sock is not None, "client has no socket"
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        # The network thread sees the connection end and, never reconnecting, stops.
        self.wait_disconnect()
        self.stop_loop()
        try:
            sock.close()
        except OSError:
            pass

    def stop_loop(self) -> None:
        if self.loop_running:
            self.client.loop_stop()
            self.loop_running = False

    def close(self) -> None:
        """Best-effort cleanup for fixtures."""
        try:
            if self.connected:
                self.client.disconnect()
                try:
                    self.disconnects.get(timeout=2)
                except queue.Empty:
                    pass
        except Exception:
            pass
        try:
            self.stop_loop()
        except Exception:
            pass
        sock = self.client.socket()
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass


# --- raw MQTT ----------------------------------------------------------------------------------

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 10, 11, 12, 13, 14


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n % 128
        n //= 128
        if n:
            byte |= 0x80
        out.append(byte)
        if not n:
            return bytes(out)


def mqtt_str(s: bytes | str) -> bytes:
    if isinstance(s, str):
        s = s.encode()
    return struct.pack("!H", len(s)) + s


def packet(first_byte: int, body: bytes) -> bytes:
    return bytes([first_byte]) + varint(len(body)) + body


def connect_packet(client_id: str = "", clean: bool = True, keepalive: int = 60,
                   will: tuple[str, bytes, int, bool] | None = None, level: int = 4,
                   proto_name: bytes = b"MQTT", mqtt5_properties: bool = False) -> bytes:
    flags = 0x02 if clean else 0
    if will is not None:
        topic, payload, qos, retain = will
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
    body = mqtt_str(proto_name) + bytes([level, flags]) + struct.pack("!H", keepalive)
    if mqtt5_properties:
        body += varint(0)  # CONNECT properties: none
    body += mqtt_str(client_id)
    if will is not None:
        if mqtt5_properties:
            body += varint(0)  # will properties: none
        body += mqtt_str(will[0]) + mqtt_str(will[1])
    return packet(CONNECT << 4, body)


def publish_packet(topic: str, payload: bytes = b"", qos: int = 0, retain: bool = False,
                   packet_id: int = 1) -> bytes:
    body = mqtt_str(topic)
    if qos:
        body += struct.pack("!H", packet_id)
    return packet((PUBLISH << 4) | (qos << 1) | (1 if retain else 0), body + payload)


def subscribe_packet(packet_id: int, filters: list[tuple[str, int]], flags: int = 0x02) -> bytes:
    body = struct.pack("!H", packet_id)
    for f, q in filters:
        body += mqtt_str(f) + bytes([q])
    return packet((SUBSCRIBE << 4) | flags, body)


PINGREQ_PACKET = bytes([PINGREQ << 4, 0])
DISCONNECT_PACKET = bytes([DISCONNECT << 4, 0])


class RawConn:
    """A blocking socket that reads whole MQTT packets."""

    def __init__(self, host: str, port: int, timeout: float = DEFAULT_TIMEOUT):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self, deadline: float) -> bool:
        """Reads more bytes; False at end of stream (FIN or RST). Raises TimeoutError."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError
        except (ConnectionResetError, BrokenPipeError):
            return False
        if not data:
            return False
        self.buf += data
        return True

    def recv_packet(self, timeout: float = DEFAULT_TIMEOUT) -> tuple[int, bytes] | None:
        """Returns (first byte, body) of the next packet, or None if the connection ended."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 2:
                length, mult, i = 0, 1, 1
                complete_header = False
                while i < len(self.buf) and i <= 4:
                    b = self.buf[i]
                    length += (b & 0x7F) * mult
                    mult *= 128
                    i += 1
                    if not b & 0x80:
                        complete_header = True
                        break
                if complete_header and len(self.buf) >= i + length:
                    first, body = self.buf[0], self.buf[i:i + length]
                    self.buf = self.buf[i + length:]
                    return first, body
            if not self._fill(deadline):
                return None

    def connect(self, client_id: str = "", clean: bool = True, keepalive: int = 60,
                will=None, timeout: float = DEFAULT_TIMEOUT) -> bytes:
        """Sends CONNECT, returns the CONNACK body (2 bytes); fails if none."""
        self.send(connect_packet(client_id, clean, keepalive, will))
        pkt = self.recv_packet(timeout)
        assert pkt is not None, "connection closed instead of CONNACK"
        assert pkt[0] == CONNACK << 4, f"expected CONNACK, got first byte {pkt[0]:#04x}"
        return pkt[1]

    def wait_closed(self, timeout: float = DEFAULT_TIMEOUT) -> bytes:
        """Waits until the peer closes the connection; returns any bytes read before the close.

        Fails if it is still open after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        start = len(self.buf)
        try:
            while self._fill(deadline):
                pass
        except TimeoutError:
            raise AssertionError(
                f"connection still open after {timeout}s (received {self.buf[start:]!r})")
        return self.buf

    def is_open(self, wait: float = 0.2) -> bool:
        """True if the connection is still open (nothing to read) after `wait` seconds."""
        try:
            return self._fill(time.monotonic() + wait)
        except TimeoutError:
            return True

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
