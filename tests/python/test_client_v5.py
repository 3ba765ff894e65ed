"""`amqtt_pub` / `amqtt_sub` speaking MQTT 5 (-V 5, -D, -x, -F, --topic-alias) against a real
MQTT 5 broker, checked with paho-mqtt's MQTT 5 client on the other side:

- PUBLISH properties given with -D (user properties, content type, response topic, correlation
  data, payload format, message expiry) arrive at a paho subscriber, and the ones a paho publisher
  sends are printed by `amqtt_sub -F`;
- message expiry: a retained message whose interval has passed is gone;
- session expiry (-x): a subscriber that comes back within the interval gets what was published
  while it was away; with DISCONNECT's session expiry of 0 the session ends with the connection;
- a refused CONNACK is reported with its reason code and name;
- topic aliases (--topic-alias) and a server-assigned client id (-i '').

The broker under test is a parameter (`BROKERS`): Mosquitto now, started here on a free loopback
port and stopped by PID; ours joins the list once it speaks MQTT 5.
"""

from __future__ import annotations

import re
import socket
import subprocess
import time
from pathlib import Path
from typing import NamedTuple

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from mqtt_helpers import free_port

HOST = "127.0.0.1"
TIMEOUT = 10.0
MOSQUITTO = "/usr/sbin/mosquitto"
BROKERS = ["mosquitto"]


class V5Broker(NamedTuple):
    port: int


def _wait_listening(port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the broker exited with {proc.returncode}", pytrace=False)
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"nothing listens on {HOST}:{port}", pytrace=False)


def _start_mosquitto(tmp: Path, extra: str) -> tuple[subprocess.Popen, int]:
    if not Path(MOSQUITTO).is_file():
        pytest.fail("mosquitto missing: apt-get install mosquitto (.ci/run does)", pytrace=False)
    port = free_port()
    conf = tmp / "mosquitto.conf"
    conf.write_text(f"listener {port} {HOST}\n{extra}\n")
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    _wait_listening(port, proc)
    return proc, port


def _broker(kind: str, tmp: Path, extra: str = "allow_anonymous true"):
    if kind == "mosquitto":
        return _start_mosquitto(tmp, extra)
    raise AssertionError(f"unknown broker {kind}")


@pytest.fixture(params=BROKERS)
def v5broker(request, tmp_path):
    proc, port = _broker(request.param, tmp_path)
    yield V5Broker(port)
    proc.terminate()
    try:
        proc.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def cli(amqtt_bin) -> dict[str, Path]:
    tools = {}
    for name in ("amqtt_pub", "amqtt_sub"):
        path = amqtt_bin.parent / name
        if not path.is_file():
            pytest.fail(f"{path} missing: cargo build --release --bin {name}", pytrace=False)
        tools[name] = path
    return tools


def run(tool: Path, port: int, *args: str, input: str | None = None, timeout: float = TIMEOUT):
    return subprocess.run([str(tool), "-h", HOST, "-p", str(port), *args], input=input,
                          capture_output=True, text=True, timeout=timeout)


class Paho:
    """A paho MQTT 5 client collecting messages."""

    def __init__(self, port: int, client_id: str = ""):
        self.messages: list[mqtt.MQTTMessage] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv5)
        self.client.on_message = lambda _c, _u, m: self.messages.append(m)
        self.client.connect(HOST, port)
        self.client.loop_start()

    def subscribe(self, topic: str, qos: int = 1) -> None:
        granted = []
        self.client.on_subscribe = lambda _c, _u, _mid, codes, _p: granted.extend(codes)
        self.client.subscribe(topic, qos)
        wait_for(lambda: granted, "SUBACK")

    def wait(self, count: int) -> list[mqtt.MQTTMessage]:
        wait_for(lambda: len(self.messages) >= count, f"{count} message(s)")
        return self.messages

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait_for(condition, what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}", pytrace=False)
        time.sleep(0.02)


def test_publish_properties_reach_a_paho_subscriber(v5broker, cli):
    sub = Paho(v5broker.port)
    sub.subscribe("v5/props")
    done = run(cli["amqtt_pub"], v5broker.port, "-V", "mqttv5", "-t", "v5/props", "-m", "hello",
               "-q", "1",
               "-D", "publish", "user-property", "colour", "blue",
               "-D", "publish", "user-property", "colour", "red",
               "-D", "publish", "content-type", "text/plain",
               "-D", "publish", "response-topic", "v5/reply",
               "-D", "publish", "correlation-data", "abc123",
               "-D", "publish", "payload-format-indicator", "1",
               "-D", "publish", "message-expiry-interval", "30")
    assert done.returncode == 0, done.stderr
    [message] = sub.wait(1)
    sub.close()
    p = message.properties
    assert message.payload == b"hello"
    assert p.UserProperty == [("colour", "blue"), ("colour", "red")]
    assert p.ContentType == "text/plain"
    assert p.ResponseTopic == "v5/reply"
    assert p.CorrelationData == b"abc123"
    assert p.PayloadFormatIndicator == 1
    assert 0 < p.MessageExpiryInterval <= 30


def test_amqtt_sub_prints_properties_with_format(v5broker, cli):
    sub = subprocess.Popen(
        [str(cli["amqtt_sub"]), "-h", HOST, "-p", str(v5broker.port), "-V", "5", "-t", "v5/fmt",
         "-q", "1", "-n", "2", "-F", "%t|%p|%P|%C|%E|%R|%q"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        pub = Paho(v5broker.port)
        # The subscription is made once a message published after it arrives: retry until then.
        props = Properties(PacketTypes.PUBLISH)
        props.UserProperty = [("k", "v"), ("k2", "v2")]
        props.ContentType = "application/json"
        props.MessageExpiryInterval = 60
        props.ResponseTopic = "r/t"
        deadline = time.monotonic() + TIMEOUT
        out = ""
        while time.monotonic() < deadline:
            pub.client.publish("v5/fmt", b"{}", qos=1, properties=props).wait_for_publish(TIMEOUT)
            try:
                out, err = sub.communicate(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                continue
        pub.close()
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait()
    assert sub.returncode == 0, err
    first = out.splitlines()[0]
    topic, payload, users, ctype, expiry, rtopic, qos = first.split("|")
    assert (topic, payload, users, ctype, rtopic, qos) == (
        "v5/fmt", "{}", "k:v k2:v2", "application/json", "r/t", "1")
    assert 0 < int(expiry) <= 60


def test_an_expired_retained_message_is_gone(v5broker, cli):
    for topic, expiry in [("v5/exp/short", "1"), ("v5/exp/long", "60")]:
        done = run(cli["amqtt_pub"], v5broker.port, "-V", "5", "-t", topic, "-m", "m", "-r",
                   "-q", "1", "-D", "publish", "message-expiry-interval", expiry)
        assert done.returncode == 0, done.stderr
    time.sleep(2.2)
    sub = Paho(v5broker.port)
    sub.subscribe("v5/exp/#")
    [message] = sub.wait(1)
    time.sleep(0.3)
    sub.close()
    assert [m.topic for m in sub.messages] == ["v5/exp/long"]
    assert message.properties.MessageExpiryInterval <= 58


def _sub_once(cli, port: int, client_id: str, *extra: str, timeout: float = TIMEOUT):
    return run(cli["amqtt_sub"], port, "-V", "5", "-i", client_id, "-t", "v5/sess", "-q", "1",
               "-n", "1", *extra, timeout=timeout)


def _subscribe_then_leave(cli, port: int, client_id: str, *extra: str) -> None:
    """amqtt_sub makes its subscription, gets one message and disconnects."""
    sub = subprocess.Popen(
        [str(cli["amqtt_sub"]), "-h", HOST, "-p", str(port), "-V", "5", "-i", client_id,
         "-t", "v5/sess", "-q", "1", "-n", "1", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            run(cli["amqtt_pub"], port, "-V", "5", "-t", "v5/sess", "-m", "first", "-q", "1")
            try:
                out, err = sub.communicate(timeout=0.5)
                assert sub.returncode == 0, err
                assert out.splitlines()[0] == "first"
                return
            except subprocess.TimeoutExpired:
                continue
        pytest.fail("amqtt_sub never received its first message", pytrace=False)
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait()


def test_session_expiry_keeps_the_session_for_a_resume(v5broker, cli):
    _subscribe_then_leave(cli, v5broker.port, "v5-resume", "-x", "60")
    done = run(cli["amqtt_pub"], v5broker.port, "-V", "5", "-t", "v5/sess", "-m", "while away",
               "-q", "1")
    assert done.returncode == 0, done.stderr
    back = _sub_once(cli, v5broker.port, "v5-resume", "-x", "60")
    assert back.returncode == 0, back.stderr
    assert back.stdout.splitlines() == ["while away"]


def test_disconnect_session_expiry_zero_ends_the_session(v5broker, cli):
    _subscribe_then_leave(cli, v5broker.port, "v5-ended", "-x", "60",
                          "-D", "disconnect", "session-expiry-interval", "0")
    done = run(cli["amqtt_pub"], v5broker.port, "-V", "5", "-t", "v5/sess", "-m", "lost",
               "-q", "1")
    assert done.returncode == 0, done.stderr
    with pytest.raises(subprocess.TimeoutExpired):
        _sub_once(cli, v5broker.port, "v5-ended", "-x", "60", timeout=1.5)


def test_a_refused_connack_prints_its_reason(cli, tmp_path):
    for kind in BROKERS:
        proc, port = _broker(kind, tmp_path, "allow_anonymous false")
        try:
            done = run(cli["amqtt_pub"], port, "-V", "5", "-t", "t", "-m", "m")
            v3 = run(cli["amqtt_pub"], port, "-V", "311", "-t", "t", "-m", "m")
        finally:
            proc.terminate()
            proc.wait(timeout=TIMEOUT)
        assert done.returncode == 1
        assert "connection refused by the broker: not authorized (0x87)" in done.stderr, \
            done.stderr
        assert v3.returncode == 1
        assert "not authorized" in v3.stderr and "0x" not in v3.stderr, v3.stderr


def test_topic_aliases_and_an_assigned_client_id(v5broker, cli):
    sub = Paho(v5broker.port)
    sub.subscribe("v5/alias/#")
    lines = "".join(f"line {i}\n" for i in range(5))
    done = run(cli["amqtt_pub"], v5broker.port, "-V", "5", "--topic-alias", "-i", "",
               "--clean-session", "-t", "v5/alias/x", "-l", "-q", "1", "-d", input=lines)
    assert done.returncode == 0, done.stderr
    messages = sub.wait(5)
    sub.close()
    assert [(m.topic, m.payload) for m in messages] == [
        ("v5/alias/x", f"line {i}".encode()) for i in range(5)]
    # The broker chose the id (-i ''): the driver's log line names it.
    assigned = re.search(r"\] (\S+): connected to", done.stderr)
    assert assigned, done.stderr
    assert assigned.group(1) and not assigned.group(1).startswith("amqtt_pub/"), done.stderr


def test_version_spellings_and_property_errors(v5broker, cli):
    for version in ["31", "311", "5", "mqttv31", "mqttv311", "mqttv5"]:
        done = run(cli["amqtt_pub"], v5broker.port, "-V", version, "-t", "t", "-m", "m")
        assert done.returncode == 0, (version, done.stderr)
    bad = run(cli["amqtt_pub"], v5broker.port, "-V", "4", "-t", "t", "-m", "m")
    assert bad.returncode == 2 and "mqttv5" in bad.stderr
    bad = run(cli["amqtt_pub"], v5broker.port, "-t", "t", "-m", "m",
              "-D", "publish", "session-expiry-interval", "5")
    assert bad.returncode == 2 and "not a property of PUBLISH" in bad.stderr, bad.stderr
    bad = run(cli["amqtt_pub"], v5broker.port, "-V", "311", "-t", "t", "-m", "m",
              "-D", "publish", "user-property", "a", "b")
    assert bad.returncode == 2 and "MQTT 5" in bad.stderr, bad.stderr
