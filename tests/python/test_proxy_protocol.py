"""PROXY protocol v1 and v2 on listeners with `proxy-protocol: true`: hand-made headers on raw
sockets (IPv4, IPv6, LOCAL, TLVs, a header split over several writes, TLS after the header), then
a real HAProxy (Debian's `haproxy`) in front of the broker with `send-proxy` and `send-proxy-v2`.

What the header says is seen in the broker's log line for the connection ("client 'id' from
ADDRESS ..."), which is also the address the authentication plugins are given. A connection
without a header, or with a malformed one, is closed and counted in
`amqtt_handshake_failures_total{reason="proxy_header"}`; the broker keeps serving. On a listener
without `proxy-protocol`, a header is a malformed first packet, closed at once.

The broker runs with 2 shards, so connections also move to their client id's home shard with the
address they came with.
"""

from __future__ import annotations

import re
import shutil
import socket
import ssl
import struct
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from mqtt_helpers import (PINGREQ_PACKET, PINGRESP, PUBLISH, SUBACK, RawConn, accepts, free_port,
                          publish_packet, stop_broker, subscribe_packet)
from test_transports import certs  # noqa: F401  (the module's CA and server certificate)

HOST = "127.0.0.1"
CONNECT_TIMEOUT = 3
TIMEOUT = 10
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def _wait_ports(ports, proc, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    for port in ports:
        while not accepts(port):
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited with {proc.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what}: port {port} never accepted")
            time.sleep(0.02)


class Proxied:
    def __init__(self, ports: dict[str, int], log: Path, ca: Path):
        self.ports = ports
        self.log = log
        self.ca = ca

    def metric(self, reason: str) -> float:
        """Sum over shards of amqtt_handshake_failures_total{reason=...}."""
        url = f"http://{HOST}:{self.ports['metrics']}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            text = resp.read().decode()
        pattern = re.compile(
            r'^amqtt_handshake_failures_total\{[^}]*reason="' + reason + r'"[^}]*\} (\S+)$', re.M)
        return sum(float(v) for v in pattern.findall(text))

    def settled_metric(self, reason: str) -> float:
        """The counter once it stopped moving: two reads more than a report interval apart
        agree (connections closed just before may not be reported yet)."""
        value = self.metric(reason)
        while True:
            time.sleep(1.1)
            again = self.metric(reason)
            if again == value:
                return value
            value = again

    def wait_metric(self, reason: str, at_least: float) -> None:
        """Waits for the counter to reach `at_least` (shards report once a second)."""
        deadline = time.monotonic() + TIMEOUT
        while self.metric(reason) < at_least:
            assert time.monotonic() < deadline, f"{reason} stayed at {self.metric(reason)}"
            time.sleep(0.1)

    def address_of(self, client_id: str) -> str:
        """The address in the broker's 'connected' line for `client_id` (waits for it)."""
        pattern = re.compile(r"client '" + re.escape(client_id) + r"' from (\S+) on listener")
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            found = pattern.search(self.log.read_text(errors="replace"))
            if found:
                return found.group(1)
            time.sleep(0.02)
        raise AssertionError(f"no connected line for {client_id}:\n"
                             + self.log.read_text(errors="replace")[-3000:])


@pytest.fixture(scope="module")
def proxied(certs, amqtt_bin, tmp_path_factory):  # noqa: F811
    """One broker: a plain listener, a `proxy-protocol` TCP listener and a `proxy-protocol` TLS
    listener, metrics on, 2 shards, debug log to a file."""
    ports = {name: free_port() for name in ["plain", "proxy", "proxy_tls", "metrics"]}
    config = (
        "listeners:\n"
        f"  default:\n    bind: {HOST}:{ports['plain']}\n"
        f"  proxied:\n    bind: {HOST}:{ports['proxy']}\n    proxy-protocol: true\n"
        f"  proxied-tls:\n    bind: {HOST}:{ports['proxy_tls']}\n    proxy_protocol: true\n"
        f"    ssl: on\n    certfile: {certs}/server.pem\n    keyfile: {certs}/server.key\n"
        f"metrics:\n  bind: {HOST}:{ports['metrics']}\n"
        f"shards: 2\npin_shards: false\nsys_interval: 0\nconnect_timeout: {CONNECT_TIMEOUT}\n"
    )
    workdir = tmp_path_factory.mktemp("proxy-protocol")
    (workdir / "broker.yaml").write_text(config)
    log_path = workdir / "broker.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen([str(amqtt_bin), "-d", "-c", str(workdir / "broker.yaml")],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        _wait_ports(ports.values(), proc, "broker")
        yield Proxied(ports, log_path, certs / "ca.pem")
    finally:
        log.close()
        stop_broker(proc, log_path)


def v1(family: str, source: str, source_port: int, destination: str = "10.0.0.1",
       destination_port: int = 1883) -> bytes:
    if family == "TCP6" and destination == "10.0.0.1":
        destination = "2001:db8::1"
    return f"PROXY {family} {source} {destination} {source_port} {destination_port}\r\n".encode()


def v2(command: int, family: int, body: bytes) -> bytes:
    return V2_SIGNATURE + bytes([0x20 | command, family]) + struct.pack("!H", len(body)) + body


def v2_inet(source: str, source_port: int, tlvs: bytes = b"") -> bytes:
    body = socket.inet_aton(source) + socket.inet_aton("10.0.0.1")
    return v2(1, 0x11, body + struct.pack("!HH", source_port, 1883) + tlvs)


def v2_inet6(source: str, source_port: int, tlvs: bytes = b"") -> bytes:
    body = socket.inet_pton(socket.AF_INET6, source) + socket.inet_pton(socket.AF_INET6, "2001:db8::1")
    return v2(1, 0x21, body + struct.pack("!HH", source_port, 1883) + tlvs)


def _connect(conn: RawConn, client_id: str) -> None:
    assert conn.connect(client_id) == bytes([0, 0])
    conn.send(PINGREQ_PACKET)
    pkt = conn.recv_packet()
    assert pkt is not None and pkt[0] == PINGRESP << 4


class TlsConn(RawConn):
    """A RawConn over TLS on a socket that already sent its PROXY header."""

    def __init__(self, raw: socket.socket, ca: Path):
        context = ssl.create_default_context(cafile=str(ca))
        self.sock = context.wrap_socket(raw, server_hostname="localhost")
        self.buf = b""


def _through_header(port: int, header: bytes, client_id: str) -> RawConn:
    conn = RawConn(HOST, port)
    conn.send(header)
    _connect(conn, client_id)
    return conn


def _closed_without_answer(conn: RawConn, timeout: float = TIMEOUT) -> None:
    assert conn.wait_closed(timeout) == b"", "the broker answered instead of closing"


# Client ids of both home shards: each header is tried on a connection that stays on the shard
# that accepted it and on one that moves.
CLIENT_IDS = ["pp-a", "pp-b", "pp-c", "pp-d"]


@pytest.mark.parametrize("name,header,expected", [
    ("v1-ipv4", v1("TCP4", "203.0.113.7", 4242), "203.0.113.7:4242"),
    ("v1-ipv6", v1("TCP6", "2001:db8::7", 4243), "[2001:db8::7]:4243"),
    ("v2-ipv4", v2_inet("198.51.100.9", 5000), "198.51.100.9:5000"),
    ("v2-ipv6-tlvs", v2_inet6("2001:db8::9", 5001, b"\x01\x00\x04mqtt\x05\x00\x02id"),
     "[2001:db8::9]:5001"),
])
def test_the_header_gives_the_client_address(proxied, name, header, expected):
    conns = [_through_header(proxied.ports["proxy"], header, f"{cid}-{name}") for cid in CLIENT_IDS]
    for cid in CLIENT_IDS:
        assert proxied.address_of(f"{cid}-{name}") == expected
    for conn in conns:
        conn.close()


@pytest.mark.parametrize("name,header", [
    ("v2-local", v2(0, 0x00, b"")),
    ("v2-unspec", v2(1, 0x00, b"")),
    ("v1-unknown", b"PROXY UNKNOWN\r\n"),
])
def test_a_header_without_an_address_keeps_the_socket_address(proxied, name, header):
    conn = _through_header(proxied.ports["proxy"], header, f"pp-{name}")
    own = "%s:%d" % conn.sock.getsockname()
    assert proxied.address_of(f"pp-{name}") == own
    conn.close()


def test_the_start_log_says_which_listeners_require_the_header(proxied):
    log = proxied.log.read_text(errors="replace")
    for name in ("proxied", "proxied-tls"):
        line = next(l for l in log.splitlines() if f"Listener '{name}' bind to" in l)
        assert line.endswith(", PROXY protocol header required)"), line
    line = next(l for l in log.splitlines() if "Listener 'default' bind to" in l)
    assert "PROXY" not in line, line


def test_a_header_split_over_several_writes(proxied):
    header = v1("TCP4", "192.0.2.1", 6000)
    conn = RawConn(HOST, proxied.ports["proxy"])
    for piece in [header[:3], header[3:20], header[20:]]:
        conn.send(piece)
        time.sleep(0.05)
    _connect(conn, "pp-split")
    assert proxied.address_of("pp-split") == "192.0.2.1:6000"
    conn.close()


def test_tls_behind_the_header(proxied):
    for n, header in enumerate([v1("TCP4", "203.0.113.50", 7000), v2_inet("203.0.113.51", 7001)]):
        raw = socket.create_connection((HOST, proxied.ports["proxy_tls"]), timeout=TIMEOUT)
        raw.sendall(header)
        conn = TlsConn(raw, proxied.ca)
        _connect(conn, f"pp-tls-{n}")
        assert proxied.address_of(f"pp-tls-{n}") == f"203.0.113.5{n}:700{n}"
        conn.close()


def test_a_connection_without_a_header_is_refused(proxied):
    before = proxied.settled_metric("proxy_header")
    timeouts = proxied.settled_metric("connect_timeout")
    probes = proxied.settled_metric("closed_before_connect")
    # A proxy's TCP health check: connect, close. Not a bad header.
    socket.create_connection((HOST, proxied.ports["proxy"]), timeout=TIMEOUT).close()
    # An MQTT client that does not know it is behind a proxy.
    conn = RawConn(HOST, proxied.ports["proxy"])
    conn.send(bytes([0x10]))
    _closed_without_answer(conn)
    conn.close()
    # A TLS client straight to the TLS listener.
    raw = socket.create_connection((HOST, proxied.ports["proxy_tls"]), timeout=TIMEOUT)
    with pytest.raises(OSError):  # ssl.SSLError is one
        TlsConn(raw, proxied.ca)
    raw.close()
    # A silent client is closed at connect_timeout.
    silent = RawConn(HOST, proxied.ports["proxy"])
    started = time.monotonic()
    _closed_without_answer(silent, timeout=CONNECT_TIMEOUT + 5)
    assert time.monotonic() - started >= CONNECT_TIMEOUT - 0.5
    silent.close()
    proxied.wait_metric("proxy_header", before + 2)
    proxied.wait_metric("connect_timeout", timeouts + 1)
    proxied.wait_metric("closed_before_connect", probes + 1)
    assert proxied.settled_metric("proxy_header") == before + 2


MALFORMED = [
    b"PROXY TCP4 203.0.113.7 10.0.0.1 4242\r\n",
    b"PROXY TCP4 2001:db8::7 10.0.0.1 4242 1883\r\n",
    b"PROXY TCP4 203.0.113.7 10.0.0.1 70000 1883\r\n",
    b"PROXY TCP5 203.0.113.7 10.0.0.1 4242 1883\r\n",
    b"PROXY TCP4 203.0.113.7 10.0.0.1 4242 1883\n",
    b"PROXY UNKNOWN " + b"x" * 120 + b"\r\n",
    v2_inet("203.0.113.7", 4242)[:12] + b"\x30" + v2_inet("203.0.113.7", 4242)[13:],
    v2_inet("203.0.113.7", 4242)[:12] + b"\x2f" + v2_inet("203.0.113.7", 4242)[13:],
    v2(1, 0x11, b"\x00" * 11),
    v2(1, 0x21, b"\x00" * 12),
    v2(1, 0x12, b"\x00" * 12),
    V2_SIGNATURE + b"\x21\x11\xff\xff",
]


def test_malformed_headers_are_closed_and_the_broker_keeps_serving(proxied):
    before = proxied.settled_metric("proxy_header")
    for header in MALFORMED:
        conn = RawConn(HOST, proxied.ports["proxy"])
        conn.send(header)
        # Whatever the client sends next is never taken for MQTT.
        try:
            conn.send(bytes.fromhex("100c00044d5154540402003c0000"))
        except OSError:
            pass
        _closed_without_answer(conn)
        conn.close()
    proxied.wait_metric("proxy_header", before + len(MALFORMED))
    conn = _through_header(proxied.ports["proxy"], v1("TCP4", "203.0.113.99", 9999), "pp-after")
    assert proxied.address_of("pp-after") == "203.0.113.99:9999"
    conn.close()


@pytest.mark.parametrize("header", [v1("TCP4", "203.0.113.7", 4242), v2_inet("203.0.113.7", 4242)])
def test_a_header_on_a_listener_without_proxy_protocol_is_a_malformed_first_packet(proxied, header):
    before = proxied.settled_metric("malformed_connect")
    conn = RawConn(HOST, proxied.ports["plain"])
    conn.send(header + bytes.fromhex("100c00044d5154540402003c0000"))
    started = time.monotonic()
    _closed_without_answer(conn)
    # At once, not at connect_timeout.
    assert time.monotonic() - started < CONNECT_TIMEOUT - 1
    conn.close()
    proxied.wait_metric("malformed_connect", before + 1)


# ---- through a real HAProxy -------------------------------------------------------------------

def _haproxy_binary() -> str:
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(binary).is_file():
        pytest.fail("haproxy missing: apt-get install haproxy (.ci/run does)", pytrace=False)
    return binary


def test_the_deploy_example_is_a_valid_haproxy_config():
    example = Path(__file__).resolve().parents[2] / "deploy" / "haproxy.cfg"
    check = subprocess.run([_haproxy_binary(), "-c", "-f", str(example)],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "send-proxy-v2" in example.read_text()


@pytest.fixture(scope="module")
def haproxy(proxied, tmp_path_factory):
    """HAProxy in TCP mode on loopback: one frontend per way of sending the header, to the
    broker's proxy-protocol listeners (TLS passes through untouched)."""
    binary = _haproxy_binary()
    fronts = {name: free_port() for name in ["v1", "v2", "tls_v2"]}
    routes = [("v1", proxied.ports["proxy"], "send-proxy"),
              ("v2", proxied.ports["proxy"], "send-proxy-v2"),
              ("tls_v2", proxied.ports["proxy_tls"], "send-proxy-v2")]
    config = ("defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n"
              "  timeout server 60s\n")
    for name, backend_port, send in routes:
        config += (f"frontend f_{name}\n  bind {HOST}:{fronts[name]}\n  default_backend b_{name}\n"
                   f"backend b_{name}\n  server broker {HOST}:{backend_port} {send}\n")
    workdir = tmp_path_factory.mktemp("haproxy")
    (workdir / "haproxy.cfg").write_text(config)
    log_path = workdir / "haproxy.log"
    log = open(log_path, "wb")
    check = subprocess.run([binary, "-c", "-f", str(workdir / "haproxy.cfg")],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    proc = subprocess.Popen([binary, "-db", "-f", str(workdir / "haproxy.cfg")],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        _wait_ports(fronts.values(), proc, "haproxy")
        yield fronts
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.mark.parametrize("front", ["v1", "v2"])
def test_through_haproxy_the_broker_sees_the_client_address(proxied, haproxy, front):
    conns = []
    for cid in CLIENT_IDS:
        conn = RawConn(HOST, haproxy[front])
        _connect(conn, f"{cid}-haproxy-{front}")
        conns.append(conn)
        # HAProxy's own connection to the broker comes from another port: only the header can
        # tell the broker this one.
        own = "%s:%d" % conn.sock.getsockname()
        assert proxied.address_of(f"{cid}-haproxy-{front}") == own
    # The connection works both ways through the proxy: a subscriber gets a publish.
    sub, pub = conns[0], conns[1]
    sub.send(subscribe_packet(1, [(f"haproxy/{front}", 0)]))
    suback = sub.recv_packet()
    assert suback is not None and suback[0] == SUBACK << 4
    pub.send(publish_packet(f"haproxy/{front}", b"through haproxy"))
    delivered = sub.recv_packet()
    assert delivered is not None and delivered[0] >> 4 == PUBLISH
    assert delivered[1].endswith(b"through haproxy")
    for conn in conns:
        conn.close()


def test_tls_through_haproxy(proxied, haproxy):
    raw = socket.create_connection((HOST, haproxy["tls_v2"]), timeout=TIMEOUT)
    own = "%s:%d" % raw.getsockname()
    conn = TlsConn(raw, proxied.ca)
    _connect(conn, "pp-haproxy-tls")
    assert proxied.address_of("pp-haproxy-tls") == own
    conn.close()
