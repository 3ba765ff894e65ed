"""Interoperability with the mosquitto command-line clients (mosquitto_pub / mosquitto_sub 2.x).

Every mosquitto_sub runs with -d, so the test can wait for its SUBACK before publishing (no
sleeps) and read the QoS and retain flag of each PUBLISH it received from its debug lines.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import subprocess
import threading
import time

import pytest

MOSQUITTO_SUB = shutil.which("mosquitto_sub")
MOSQUITTO_PUB = shutil.which("mosquitto_pub")
# mosquitto_sub's stdout is a pipe here, so stdio would buffer it whole; line buffering lets the
# test see the SUBACK debug line as it happens.
STDBUF = shutil.which("stdbuf")

pytestmark = pytest.mark.skipif(
    MOSQUITTO_SUB is None or MOSQUITTO_PUB is None or STDBUF is None,
    reason="mosquitto_sub/mosquitto_pub (apt-get install mosquitto-clients) or stdbuf (coreutils) "
           "not installed")

PROCESS_TIMEOUT = 15

_DEBUG_PUBLISH = re.compile(
    rb"^Client \S+ received PUBLISH \(d(\d), q(\d), r(\d), m\d+, '(.*)', \.\.\. \((\d+) bytes\)\)$")


class MosquittoSub:
    """A running mosquitto_sub; its stdout is read line by line on a thread."""

    def __init__(self, broker, topics, qos=0, count=1, wait=10, extra=()):
        line_buffered = [STDBUF, "-oL"] if STDBUF else []
        self.args = [*line_buffered, MOSQUITTO_SUB, "-h", broker.host, "-p", str(broker.port), "-q", str(qos),
                     "-C", str(count), "-W", str(wait), "-d", *extra]
        if not any(a in ("-F",) for a in extra):
            self.args.append("-v")
        for t in topics:
            self.args += ["-t", t]
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.lines: queue.Queue[bytes | None] = queue.Queue()
        self.all_lines: list[bytes] = []
        self._subscribed = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            line = line.rstrip(b"\n")
            self.all_lines.append(line)
            if line.startswith(b"Subscribed (mid"):
                self._subscribed.set()
        self._subscribed.set()  # exited: stop waiting

    def wait_subscribed(self, timeout=10):
        assert self._subscribed.wait(timeout), f"mosquitto_sub got no SUBACK in {timeout}s"
        assert self.proc.poll() is None or any(
            l.startswith(b"Subscribed (mid") for l in self.all_lines), \
            f"mosquitto_sub exited before subscribing: {self.output()}"

    def finish(self, timeout=PROCESS_TIMEOUT):
        """Waits for the exit; returns (return code, message lines, received-PUBLISH debug info)."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"mosquitto_sub still running after {timeout}s: {self.output()}")
        self._reader.join(5)
        messages = [l for l in self.all_lines
                    if not l.startswith(b"Client ") and not l.startswith(b"Subscribed (mid")]
        publishes = []
        for l in self.all_lines:
            m = _DEBUG_PUBLISH.match(l)
            if m:
                publishes.append({"dup": int(m.group(1)), "qos": int(m.group(2)),
                                  "retain": int(m.group(3)), "topic": m.group(4).decode(),
                                  "length": int(m.group(5))})
        return rc, messages, publishes

    def output(self):
        err = b""
        if self.proc.poll() is not None and self.proc.stderr:
            err = self.proc.stderr.read()
        return f"args={self.args} stdout={self.all_lines[-20:]} stderr={err[-2000:]!r}"

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def subs():
    started: list[MosquittoSub] = []

    def start(*args, **kwargs) -> MosquittoSub:
        s = MosquittoSub(*args, **kwargs)
        started.append(s)
        return s

    yield start
    for s in started:
        s.kill()


def mosquitto_pub(broker, *args, input=None, check=True):
    cmd = [MOSQUITTO_PUB, "-h", broker.host, "-p", str(broker.port), *args]
    r = subprocess.run(cmd, input=input, capture_output=True, timeout=PROCESS_TIMEOUT)
    if check:
        assert r.returncode == 0, f"{cmd[3:]} exited {r.returncode}: {r.stdout!r} {r.stderr!r}"
    return r


@pytest.mark.parametrize("pub_qos,sub_qos", [(0, 0), (1, 1), (2, 2), (2, 0), (1, 2), (0, 2)])
def test_pub_sub_each_qos(broker, subs, pub_qos, sub_qos):
    topic = f"mq/p{pub_qos}/s{sub_qos}"
    sub = subs(broker, [topic], qos=sub_qos, count=1)
    sub.wait_subscribed()
    mosquitto_pub(broker, "-t", topic, "-q", str(pub_qos), "-m", "hello mosquitto")
    rc, messages, publishes = sub.finish()
    assert rc == 0, sub.output()
    assert messages == [f"{topic} hello mosquitto".encode()]
    assert len(publishes) == 1
    assert publishes[0]["qos"] == min(pub_qos, sub_qos)
    assert publishes[0]["retain"] == 0
    assert publishes[0]["topic"] == topic


def test_retained_then_late_subscriber(broker, subs):
    mosquitto_pub(broker, "-t", "mq/retained", "-q", "1", "-r", "-m", "kept value")
    late = subs(broker, ["mq/retained"], qos=1, count=1, wait=5)
    rc, messages, publishes = late.finish()
    assert rc == 0, late.output()
    assert messages == [b"mq/retained kept value"]
    assert publishes[0]["retain"] == 1 and publishes[0]["qos"] == 1

    # Clear it with a null retained message; a later --retained-only subscriber sees no retained
    # message and stops at the first live (non-retained) one.
    mosquitto_pub(broker, "-t", "mq/retained", "-q", "1", "-r", "-n")
    check = subs(broker, ["mq/retained"], qos=1, count=1, wait=5, extra=["--retained-only"])
    check.wait_subscribed()
    mosquitto_pub(broker, "-t", "mq/retained", "-q", "1", "-m", "live")
    rc, messages, publishes = check.finish()
    assert rc == 0, check.output()
    assert messages == [], f"retained message not deleted: {messages}"
    assert [(p["retain"], p["topic"]) for p in publishes] == [(0, "mq/retained")]


def test_pub_lines_from_stdin_in_order(broker, subs):
    lines = [f"line {i:03d} of the input" for i in range(50)]
    sub = subs(broker, ["mq/lines"], qos=1, count=len(lines))
    sub.wait_subscribed()
    mosquitto_pub(broker, "-t", "mq/lines", "-q", "1", "-l",
                  input=("\n".join(lines) + "\n").encode())
    rc, messages, _ = sub.finish()
    assert rc == 0, sub.output()
    assert messages == [f"mq/lines {l}".encode() for l in lines]


def test_wildcard_plus_subscription(broker, subs):
    sub = subs(broker, ["a/+/c"], qos=1, count=3)
    sub.wait_subscribed()
    # Not matching, published (and acknowledged) first: they must not show up.
    for topic in ["a/b/d", "a/b/c/d", "a/c", "x/b/c"]:
        mosquitto_pub(broker, "-t", topic, "-q", "1", "-m", "no")
    for topic in ["a/b/c", "a/xyz/c", "a//c"]:
        mosquitto_pub(broker, "-t", topic, "-q", "1", "-m", "yes")
    rc, messages, _ = sub.finish()
    assert rc == 0, sub.output()
    assert sorted(messages) == sorted([b"a/b/c yes", b"a/xyz/c yes", b"a//c yes"])


@pytest.mark.parametrize("qos", [0, 2])
def test_large_payload_intact(broker, subs, tmp_path, qos):
    payload = os.urandom(1024 * 1024)
    path = tmp_path / "payload.bin"
    path.write_bytes(payload)
    sub = subs(broker, ["mq/large"], qos=qos, count=1, wait=15,
               extra=["-F", "MSG|%t|%l|%x"])
    sub.wait_subscribed()
    mosquitto_pub(broker, "-t", "mq/large", "-q", str(qos), "-f", str(path))
    rc, messages, publishes = sub.finish()
    assert rc == 0, sub.output()
    assert len(messages) == 1
    marker, topic, length, hexdata = messages[0].split(b"|")
    assert (marker, topic, int(length)) == (b"MSG", b"mq/large", len(payload))
    assert bytes.fromhex(hexdata.decode()) == payload
    assert publishes[0]["qos"] == qos


def test_persistent_session_with_mosquitto_sub(broker, subs):
    # Subscribe with a persistent session (-c) and exit right after the SUBACK (-E).
    first = subs(broker, ["mq/persist/#"], qos=1, count=1,
                 extra=["-c", "-i", "mosq-persistent", "-E"])
    rc, _, _ = first.finish()
    assert rc == 0, first.output()
    for i in range(3):
        mosquitto_pub(broker, "-t", f"mq/persist/{i}", "-q", "1", "-m", f"while away {i}")
    # Back with the same id: the queued messages come, in order, without subscribing anew
    # (mosquitto_sub subscribes again, which must not lose or duplicate them).
    second = subs(broker, ["mq/persist/#"], qos=1, count=3, wait=5,
                  extra=["-c", "-i", "mosq-persistent"])
    rc, messages, _ = second.finish()
    assert rc == 0, second.output()
    assert messages == [f"mq/persist/{i} while away {i}".encode() for i in range(3)]


def test_mqtt31_clients(broker, subs):
    sub = subs(broker, ["mq/v31"], qos=1, count=1, extra=["-V", "mqttv31", "-i", "old-sub"])
    sub.wait_subscribed()
    mosquitto_pub(broker, "-V", "mqttv31", "-i", "old-pub", "-t", "mq/v31", "-q", "1",
                  "-m", "3.1 works")
    rc, messages, _ = sub.finish()
    assert rc == 0, sub.output()
    assert messages == [b"mq/v31 3.1 works"]


def test_mqtt5_client_is_accepted(broker):
    # (What MQTT 5 clients get: tests/python/test_mqtt5.py.)
    started = time.monotonic()
    r = mosquitto_pub(broker, "-V", "mqttv5", "-t", "mq/v5", "-m", "x", "-q", "1", check=False)
    assert r.returncode == 0, f"MQTT 5 publish refused: {r.stdout!r} {r.stderr!r}"
    assert time.monotonic() - started < 5
