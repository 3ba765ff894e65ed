"""Configuration reload without a restart (issue #24 part 1), with live clients that must see no
disconnect: a paho-mqtt client and a mosquitto_sub process stay connected through every reload
and keep receiving.

- Password file: a user added can log in after SIGHUP, a user removed cannot; with
  `reload.disconnect_removed: true` the removed user's connection is closed, nobody else's.
- ACL tightened: a publish the new ACL forbids is no longer delivered, on the same connection.
- Certificate rotated: a new TLS client sees the new certificate's serial, the connection opened
  before keeps working.
- A file that does not validate is refused with its file, key and reason, by SIGHUP and by
  `POST /api/v1/reload` (422), and nothing changes.
- `POST /api/v1/reload` and `amqtt_ctl reload` report what changed and what was kept; a listener
  added is opened and one removed is closed.

Brokers run with 2 shards: each shard must get the new plugins and listeners.
"""

from __future__ import annotations

import json
import queue
import shutil
import signal
import ssl
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509

from conftest import HOST
from mqtt_helpers import PahoClient, accepts, free_port, launch_broker, stop_broker

MOSQUITTO_SUB = shutil.which("mosquitto_sub")
MOSQUITTO_PUB = shutil.which("mosquitto_pub")
TOKEN = "reload-test-token"
NOT_AUTHORIZED = (5, 0x87)
QUIET = 0.5


def _run(cmd):
    subprocess.run(cmd, check=True, capture_output=True, text=True)


def _hash(password: str) -> str:
    return subprocess.run(["openssl", "passwd", "-6", password], check=True,
                          capture_output=True, text=True).stdout.strip()


PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw", "watch": "watch-pw"}
HASHES = {user: _hash(pw) for user, pw in PASSWORDS.items()}


def _server_cert(d: Path, serial: int) -> None:
    """A server certificate for 127.0.0.1 with this serial, signed by d/ca.pem, at d/server.*."""
    _run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
          "-subj", "/CN=amqtt reload test", "-keyout", str(d / "server.key.new"),
          "-out", str(d / "server.csr")])
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    _run(["openssl", "x509", "-req", "-in", str(d / "server.csr"), "-CA", str(d / "ca.pem"),
          "-CAkey", str(d / "ca.key"), "-set_serial", str(serial), "-days", "2",
          "-extfile", str(d / "server.ext"), "-out", str(d / "server.pem.new")])
    # Replaced whole, as a certificate manager does.
    (d / "server.key.new").replace(d / "server.key")
    (d / "server.pem.new").replace(d / "server.pem")


class ReloadBroker:
    """A 2-shard broker on a config file the test rewrites, with a TLS listener, the admin API,
    a password file and an ACL."""

    def __init__(self, amqtt_bin: Path, d: Path):
        self.dir = d
        self.port, self.tls_port, self.admin_port = free_port(), free_port(), free_port()
        self.config = d / "broker.yaml"
        self.passwd = d / "passwd"
        self.log = d / "broker.log"
        (d / "token").write_text(TOKEN + "\n")
        _run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
              "-nodes", "-days", "2", "-subj", "/CN=amqtt reload CA", "-keyout", str(d / "ca.key"),
              "-out", str(d / "ca.pem"), "-addext", "basicConstraints=critical,CA:TRUE",
              "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        _server_cert(d, 1001)
        self.write(users=["alice", "bob", "watch"], acl={"alice": ["a/#", "b/#"], "bob": ["a/#"],
                                                         "watch": ["#"]})
        self.proc = launch_broker(amqtt_bin, self.config, self.log,
                                  lambda: accepts(self.tls_port) and accepts(self.admin_port))

    def write(self, users, acl, extra: str = "", listeners: str = "") -> None:
        self.passwd.write_text("".join(f"{u}:{HASHES[u]}\n" for u in users))
        acl_text = "".join(f"    {u}: [{', '.join(repr(t) for t in ts)}]\n" for u, ts in acl.items())
        self.config.write_text(
            "listeners:\n"
            f"  default:\n    type: tcp\n    bind: {HOST}:{self.port}\n"
            f"  tls:\n    type: tcp\n    bind: {HOST}:{self.tls_port}\n    ssl: on\n"
            f"    certfile: {self.dir}/server.pem\n    keyfile: {self.dir}/server.key\n"
            + listeners +
            "shards: 2\npin_shards: false\nsys_interval: 0\n"
            f"admin:\n  bind: {HOST}:{self.admin_port}\n  token_file: {self.dir}/token\n"
            f"auth:\n  allow-anonymous: false\n  password-file: {self.passwd}\n"
            "topic-check:\n  enabled: true\n  plugins: [topic_acl]\n  acl:\n" + acl_text + extra)

    def hup(self) -> str:
        """SIGHUP, then the log once the reload's outcome is in it."""
        before = self._outcomes()
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while self._outcomes() == before:
            assert time.monotonic() < deadline, self.log.read_text(errors="replace")[-3000:]
            time.sleep(0.05)
        return self.log.read_text(errors="replace")

    def _outcomes(self) -> int:
        text = self.log.read_text(errors="replace")
        return text.count("configuration reloaded from") + text.count("configuration reload refused")

    def api_reload(self) -> tuple[int, dict]:
        request = urllib.request.Request(
            f"http://{HOST}:{self.admin_port}/api/v1/reload", method="POST", data=b"",
            headers={"Authorization": f"Bearer {TOKEN}"})
        try:
            with urllib.request.urlopen(request, timeout=15) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())


@pytest.fixture
def broker(amqtt_bin, tmp_path):
    if not (shutil.which("openssl") and MOSQUITTO_SUB and MOSQUITTO_PUB):
        pytest.fail("openssl and mosquitto clients are required", pytrace=False)
    b = ReloadBroker(Path(amqtt_bin), tmp_path)
    yield b
    stop_broker(b.proc, b.log)


@pytest.fixture
def clients():
    made: list = []
    yield made
    for c in made:
        if isinstance(c, subprocess.Popen):
            if c.poll() is None:
                c.terminate()
                c.wait(timeout=5)
        else:
            c.close()


def paho(made, port: int, user: str, client_id: str, tls_dir: Path | None = None) -> PahoClient:
    c = PahoClient(HOST, port, client_id=client_id)
    c.client.username_pw_set(user, PASSWORDS[user])
    if tls_dir is not None:
        c.client.tls_set(ca_certs=str(tls_dir / "ca.pem"), cert_reqs=ssl.CERT_REQUIRED)
    made.append(c)
    return c


def subscribed(made, port: int, user: str, client_id: str, topic: str,
               tls_dir: Path | None = None) -> PahoClient:
    """A connected paho client of `user`, subscribed to `topic` at QoS 1."""
    c = paho(made, port, user, client_id, tls_dir)
    assert c.connect()[0] == 0
    c.subscribe(topic, qos=1)
    return c


def login(port: int, user: str) -> int:
    c = PahoClient(HOST, port, client_id=f"login-{user}")
    c.client.username_pw_set(user, PASSWORDS[user])
    try:
        return c.connect()[0]
    finally:
        c.close()


class Sub:
    """mosquitto_sub as `user` on `topic`, its lines read on a thread."""

    def __init__(self, made, port: int, user: str, topic: str):
        self.proc = subprocess.Popen(
            [MOSQUITTO_SUB, "-h", HOST, "-p", str(port), "-i", f"sub-{user}", "-u", user,
             "-P", PASSWORDS[user], "-t", topic, "-v", "-q", "1"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        made.append(self.proc)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def expect(self, line: str, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            try:
                got = self.lines.get(timeout=0.1)
            except queue.Empty:
                continue
            if got == line:
                return
            seen.append(got)
        pytest.fail(f"mosquitto_sub never printed {line!r} (printed {seen}, "
                    f"exit {self.proc.poll()})")


def ready_sub(sub: Sub, port: int, topic: str) -> None:
    """Waits until `sub` is subscribed: it prints a message published to `topic`."""
    deadline = time.monotonic() + 10
    while True:
        _run([MOSQUITTO_PUB, "-h", HOST, "-p", str(port), "-u", "watch", "-P", "watch-pw",
              "-t", topic, "-m", "ready", "-q", "1"])
        try:
            sub.expect(f"{topic} ready", timeout=0.5)
            return
        except pytest.fail.Exception:
            assert time.monotonic() < deadline, "mosquitto_sub never subscribed"


def alive(c: PahoClient, topic: str, payload: str) -> None:
    """`c` is still connected: it publishes to `topic` (which it subscribes to) and gets it back."""
    assert c.disconnects.empty(), "a reload disconnected a client"
    time.sleep(0.1)
    c.drain()
    c.publish(topic, payload, qos=1)
    msg = c.get_message()
    assert (msg.topic, msg.payload) == (topic, payload.encode())


def test_password_file_user_added_and_removed(broker, clients):
    alice = subscribed(clients, broker.port, "alice", "alice-1", "a/#")
    watch = Sub(clients, broker.port, "watch", "#")
    ready_sub(watch, broker.port, "a/ready")
    bob = paho(clients, broker.port, "bob", "bob-1")
    assert bob.connect()[0] == 0
    assert login(broker.port, "carol") in NOT_AUTHORIZED

    # carol added, bob removed; bob's connection stays (disconnect_removed is off).
    broker.write(users=["alice", "carol", "watch"],
                 acl={"alice": ["a/#", "b/#"], "carol": ["a/#"], "watch": ["#"]})
    log = broker.hup()
    assert "auth.password-file: user 'carol' added" in log
    assert "auth.password-file: user 'bob' removed" in log
    assert login(broker.port, "carol") == 0
    assert login(broker.port, "bob") in NOT_AUTHORIZED
    assert bob.disconnects.empty(), "bob stays connected without reload.disconnect_removed"
    alive(alice, "a/1", "one")
    watch.expect("a/1 one")

    # With disconnect_removed, removing alice closes her connection only.
    broker.write(users=["carol", "watch"], acl={"carol": ["a/#"], "watch": ["#"]},
                 extra="reload:\n  disconnect_removed: true\n")
    log = broker.hup()
    assert "client 'alice-1': its user is no longer in the password file" in log
    alice.wait_disconnect()
    # bob was removed by the reload before, not this one: he stays.
    assert bob.disconnects.empty()
    assert watch.proc.poll() is None, "mosquitto_sub was disconnected"
    _run([MOSQUITTO_PUB, "-h", HOST, "-p", str(broker.port), "-u", "carol", "-P", "carol-pw",
          "-t", "a/2", "-m", "two", "-q", "1"])
    watch.expect("a/2 two")


def test_acl_tightened_on_live_connections(broker, clients):
    alice = subscribed(clients, broker.port, "alice", "alice-acl", "a/#")
    watch = Sub(clients, broker.port, "watch", "b/#")
    ready_sub(watch, broker.port, "b/ready")
    alice.publish("b/1", "before", qos=1)
    watch.expect("b/1 before")

    broker.write(users=["alice", "bob", "watch"], acl={"alice": ["a/#"], "watch": ["#"]})
    log = broker.hup()
    assert "reload: topic-check: changed" in log
    alice.publish("b/2", "forbidden now", qos=1)
    alice.publish("b/3", "", qos=0)
    alive(alice, "a/1", "still allowed")
    with pytest.raises(pytest.fail.Exception):
        watch.expect("b/2 forbidden now", timeout=QUIET)
    assert watch.proc.poll() is None, "mosquitto_sub was disconnected"
    ready_sub(watch, broker.port, "b/after")


def _serial(port: int, ca: Path) -> int:
    context = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection((HOST, port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=HOST) as tls:
            der = tls.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der).serial_number


def test_certificate_rotated_old_connection_stays(broker, clients):
    assert _serial(broker.tls_port, broker.dir / "ca.pem") == 1001
    old = subscribed(clients, broker.tls_port, "alice", "alice-tls", "a/#", tls_dir=broker.dir)

    _server_cert(broker.dir, 2002)
    log = broker.hup()
    assert "listeners.tls: certificate and key read again" in log
    assert _serial(broker.tls_port, broker.dir / "ca.pem") == 2002
    alive(old, "a/tls", "old connection")
    new = paho(clients, broker.tls_port, "alice", "alice-tls-2", tls_dir=broker.dir)
    assert new.connect()[0] == 0


def test_bad_file_is_refused_and_changes_nothing(broker, clients):
    alice = subscribed(clients, broker.port, "alice", "alice-bad", "a/#")
    good = broker.config.read_text()
    broker.config.write_text(good + "max_queued_messages: 0\n")
    broker.passwd.write_text(f"carol:{HASHES['carol']}\n")
    log = broker.hup()
    assert "configuration reload refused, nothing changed" in log
    assert f"{broker.config}: key 'max_queued_messages'" in log
    status, body = broker.api_reload()
    assert status == 422 and body["changed_nothing"] is True, body
    assert "max_queued_messages" in body["error"] and str(broker.config) in body["error"]
    # Nothing changed: the password file on disk was not applied either.
    assert login(broker.port, "alice") == 0
    assert login(broker.port, "carol") in NOT_AUTHORIZED
    alive(alice, "a/x", "still here")

    # A password file that does not parse is refused too, naming it.
    broker.config.write_text(good)
    broker.passwd.write_text("no colon here\n")
    status, body = broker.api_reload()
    assert status == 422 and str(broker.passwd) in body["error"], body
    assert login(broker.port, "alice") == 0


def test_api_and_ctl_reload_listeners_and_limits(broker, clients, amqtt_bin):
    alice = subscribed(clients, broker.port, "alice", "alice-api", "a/#")
    status, body = broker.api_reload()
    assert status == 200 and body["kept"] == [] and body["disconnected"] == [], body
    # Only the TLS certificate is read again when nothing else changed.
    assert body["applied"] == ["listeners.tls: certificate and key read again (new TLS "
                               "handshakes use them)"], body

    extra_port = free_port()
    acl = {"alice": ["a/#", "b/#"], "bob": ["a/#"], "watch": ["#"]}
    broker.write(users=["alice", "bob", "watch"], acl=acl,
                 listeners=f"  extra:\n    type: tcp\n    bind: {HOST}:{extra_port}\n",
                 extra="max_queued_messages: 7\nmemory_limit: 1000000\n")
    broker.config.write_text(broker.config.read_text().replace("shards: 2", "shards: 3"))
    ctl = Path(amqtt_bin).parent / "amqtt_ctl"
    out = subprocess.run([str(ctl), "--url", f"http://{HOST}:{broker.admin_port}",
                          "--token-file", str(broker.dir / "token"), "reload"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "applied: max_queued_messages: 1000 -> 7" in out.stdout, out.stdout
    assert f"applied: listeners.extra: added on {HOST}:{extra_port}" in out.stdout
    assert "kept until a restart: shards: Fixed(3) in the file, Fixed(2) kept" in out.stdout
    assert "kept until a restart: memory_limit: Some(1000000) in the file, None kept" in out.stdout
    assert login(extra_port, "bob") == 0

    # The extra listener removed: closed; the default one and its clients stay.
    broker.write(users=["alice", "bob", "watch"], acl=acl)
    status, body = broker.api_reload()
    assert status == 200 and "listeners.extra: removed (closed)" in body["applied"], body
    deadline = time.monotonic() + 5
    while accepts(extra_port):
        assert time.monotonic() < deadline, "the removed listener still accepts"
        time.sleep(0.05)
    alive(alice, "a/api", "through it all")
