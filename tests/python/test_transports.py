"""TLS, WebSocket and secure WebSocket with third-party clients: mosquitto_pub/mosquitto_sub with
--cafile (and --cert/--key for mutual TLS), paho-mqtt with transport="websockets" (ws and wss), and
MQTT.js in headless Chromium through the ws listener (tests/browser/run.mjs).

Certificates are made per session with the openssl command. The broker runs with 2 shards so that
connections of every transport move between shards.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import ssl
import subprocess
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from mqtt_helpers import accepts, free_port, stop_broker
from mqtt5_helpers import V5Broker, V5Client

REPO_ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
TIMEOUT = 10


def _run(cmd, **kwargs):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kwargs)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """A CA, a server certificate for localhost/127.0.0.1 and a client certificate (CN device-7)."""
    if not shutil.which("openssl"):
        pytest.fail("openssl is required to make test certificates", pytrace=False)
    d = tmp_path_factory.mktemp("certs")
    _run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
          "-subj", "/CN=amqtt test CA", "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"),
          "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    for name, subject, ext in [
        ("server", "/CN=localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth"),
        ("client", "/CN=device-7", "extendedKeyUsage=clientAuth"),
    ]:
        _run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", subject,
              "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.csr")])
        (d / f"{name}.ext").write_text(ext + "\n")
        _run(["openssl", "x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.pem"),
              "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-days", "2",
              "-extfile", str(d / f"{name}.ext"), "-out", str(d / f"{name}.pem")])
    return d


def _wait_port(port: int, proc) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"broker exited with {proc.returncode}")
        if accepts(port):
            return
        time.sleep(0.02)
    raise RuntimeError(f"port {port} never accepted")


@pytest.fixture(scope="module")
def tls_broker(certs, amqtt_bin, tmp_path_factory):
    """One broker with mqtt, mqtts, ws, wss and a mutual-TLS listener."""
    ports = {name: free_port() for name in ["tcp", "tls", "ws", "wss", "mtls"]}
    tls = f"    ssl: on\n    certfile: {certs}/server.pem\n    keyfile: {certs}/server.key\n"
    config = (
        "listeners:\n"
        f"  default:\n    bind: {HOST}:{ports['tcp']}\n"
        f"  tls:\n    bind: {HOST}:{ports['tls']}\n{tls}"
        f"  ws:\n    bind: {HOST}:{ports['ws']}\n    type: ws\n"
        f"  wss:\n    bind: {HOST}:{ports['wss']}\n    type: ws\n{tls}"
        f"  mtls:\n    bind: {HOST}:{ports['mtls']}\n{tls}"
        f"    cafile: {certs}/ca.pem\n    require-certificate: true\n    use-identity-as-username: true\n"
        "shards: 2\npin_shards: false\nsys_interval: 0\n"
    )
    workdir = tmp_path_factory.mktemp("tls-broker")
    (workdir / "broker.yaml").write_text(config)
    log = open(workdir / "broker.log", "wb")
    proc = subprocess.Popen([str(amqtt_bin), "-d", "-c", str(workdir / "broker.yaml")],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        for port in ports.values():
            _wait_port(port, proc)
        yield ports
    finally:
        log.close()
        stop_broker(proc, workdir / "broker.log")


def _mosquitto(tool: str) -> str:
    path = shutil.which(tool)
    if not path:
        pytest.fail(f"{tool} missing: apt-get install mosquitto-clients (.ci/run does)", pytrace=False)
    return path


def _topic() -> str:
    return f"t/{uuid.uuid4().hex[:8]}"


def test_mosquitto_clients_over_tls(tls_broker, certs):
    topic = _topic()
    tls_args = ["-h", "localhost", "-p", str(tls_broker["tls"]), "--cafile", str(certs / "ca.pem")]
    # A retained message first: when mosquitto_sub prints it, it is subscribed, and the live
    # message that follows must arrive too.
    _run([_mosquitto("mosquitto_pub"), *tls_args, "-t", topic, "-m", "retained over tls", "-q", "1", "-r"],
         timeout=TIMEOUT)
    sub = subprocess.Popen([_mosquitto("mosquitto_sub"), *tls_args, "-t", topic, "-C", "2", "-W", str(TIMEOUT),
                            "-q", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert sub.stdout.readline() == "retained over tls\n"
    _run([_mosquitto("mosquitto_pub"), *tls_args, "-t", topic, "-m", "live over tls", "-q", "1"], timeout=TIMEOUT)
    out, err = sub.communicate(timeout=TIMEOUT + 5)
    assert sub.returncode == 0, err
    assert out.splitlines() == ["live over tls"]


def test_mosquitto_pub_refuses_an_untrusted_broker(tls_broker, tmp_path):
    other = tmp_path / "other-ca.pem"
    _run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=other",
          "-keyout", str(tmp_path / "other.key"), "-out", str(other)])
    result = subprocess.run([_mosquitto("mosquitto_pub"), "-h", "localhost", "-p", str(tls_broker["tls"]),
                             "--cafile", str(other), "-t", "x", "-m", "y"], capture_output=True, text=True,
                            timeout=TIMEOUT)
    assert result.returncode != 0


def test_mutual_tls_needs_a_client_certificate(tls_broker, certs):
    topic = _topic()
    base = [_mosquitto("mosquitto_pub"), "-h", "localhost", "-p", str(tls_broker["mtls"]),
            "--cafile", str(certs / "ca.pem"), "-t", topic, "-m", "x"]
    without = subprocess.run(base, capture_output=True, text=True, timeout=TIMEOUT)
    assert without.returncode != 0, "no client certificate: refused"
    with_cert = subprocess.run(base + ["--cert", str(certs / "client.pem"), "--key", str(certs / "client.key")],
                               capture_output=True, text=True, timeout=TIMEOUT)
    assert with_cert.returncode == 0, with_cert.stderr


def _paho(port: int, transport: str, cafile: Path | None = None):
    received: queue.Queue = queue.Queue()
    subscribed: queue.Queue = queue.Queue()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"paho-{uuid.uuid4().hex[:8]}",
                         transport=transport, protocol=mqtt.MQTTv311)
    if transport == "websockets":
        client.ws_set_options(path="/mqtt")
    if cafile:
        client.tls_set(ca_certs=str(cafile))
    client.on_message = lambda c, u, m: received.put(m)
    client.on_subscribe = lambda c, u, mid, rc, p: subscribed.put(mid)
    connected: queue.Queue = queue.Queue()
    client.on_connect = lambda c, u, f, rc, p: connected.put(rc)
    client.connect("localhost", port)
    client.loop_start()
    assert not connected.get(timeout=TIMEOUT).is_failure
    return client, received, subscribed


@pytest.mark.parametrize("listener", ["ws", "wss"])
def test_paho_over_websockets(tls_broker, certs, listener):
    cafile = certs / "ca.pem" if listener == "wss" else None
    sub, received, subscribed = _paho(tls_broker[listener], "websockets", cafile)
    pub, _, _ = _paho(tls_broker["tcp"], "tcp")
    try:
        topic = _topic()
        sub.subscribe(topic, qos=2)
        subscribed.get(timeout=TIMEOUT)
        payload = os.urandom(70_000)  # spans several WebSocket frames
        pub.publish(topic, payload, qos=1).wait_for_publish(TIMEOUT)
        msg = received.get(timeout=TIMEOUT)
        assert msg.payload == payload
        assert msg.qos == 1
        # And back: publish over WebSocket, receive over TCP.
        back, back_received, back_subscribed = _paho(tls_broker["tcp"], "tcp")
        back.subscribe(topic + "/back", qos=1)
        back_subscribed.get(timeout=TIMEOUT)
        sub.publish(topic + "/back", b"from websocket", qos=2).wait_for_publish(TIMEOUT)
        assert back_received.get(timeout=TIMEOUT).payload == b"from websocket"
        back.disconnect()
        back.loop_stop()
    finally:
        for c in (sub, pub):
            c.disconnect()
            c.loop_stop()


def test_mqtt_js_v5_in_chromium_over_websocket(tls_broker):
    """MQTT.js speaking MQTT 5 over the ws listener: user properties and content type both ways
    between the browser and a paho MQTT 5 client."""
    browser_dir = REPO_ROOT / "tests" / "browser"
    chromium = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    if not Path(chromium).exists() or not (browser_dir / "node_modules" / "mqtt").is_dir():
        pytest.fail("needs Debian chromium and `npm ci` in tests/browser (.ci/run does both)", pytrace=False)
    watcher = V5Client(V5Broker(HOST, tls_broker["tcp"], "amqtt", 2), "browser-v5-watcher")
    try:
        watcher.connected()
        watcher.subscribe("browser/ready", qos=1)
        watcher.subscribe("browser/echo", qos=1)
        page = subprocess.Popen(["node", str(browser_dir / "run.mjs"),
                                 f"ws://127.0.0.1:{tls_broker['ws']}/mqtt", "20000", "5"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ready = watcher.get(timeout=30)
        assert (ready.topic, ready.payload) == ("browser/ready", b"ready")
        watcher.publish("browser/in/v5", b"hello v5", qos=1, UserProperty=[("from", "paho")])
        echo = watcher.get()
        assert (echo.topic, echo.payload) == ("browser/echo", b"echo:hello v5")
        assert [tuple(p) for p in echo.properties.get("UserProperty", [])] == [("via", "browser")]
        assert echo.properties.get("ContentType") == "text/plain"
        out, err = page.communicate(timeout=30)
        assert page.returncode == 0, out + err
        result = json.loads(out.strip().splitlines()[-1])
        assert 'user properties {"from":"paho"}' in result["log"], result["log"]
    finally:
        watcher.close()


def test_mqtt_js_in_chromium_over_websocket(tls_broker):
    browser_dir = REPO_ROOT / "tests" / "browser"
    chromium = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    if not Path(chromium).exists() or not (browser_dir / "node_modules" / "mqtt").is_dir():
        pytest.fail("needs Debian chromium and `npm ci` in tests/browser (.ci/run does both)", pytrace=False)
    watcher, received, subscribed = _paho(tls_broker["tcp"], "tcp")
    try:
        watcher.subscribe([("browser/ready", 1), ("browser/echo", 1)])
        subscribed.get(timeout=TIMEOUT)
        page = subprocess.Popen(["node", str(browser_dir / "run.mjs"), f"ws://127.0.0.1:{tls_broker['ws']}/mqtt", "20000"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ready = received.get(timeout=30)
        assert (ready.topic, ready.payload) == ("browser/ready", b"ready")
        watcher.publish("browser/in/greeting", b"hello from paho", qos=1).wait_for_publish(TIMEOUT)
        echo = received.get(timeout=TIMEOUT)
        assert (echo.topic, echo.payload) == ("browser/echo", b"echo:hello from paho")
        out, err = page.communicate(timeout=30)
        assert page.returncode == 0, out + err
        result = json.loads(out.strip().splitlines()[-1])
        assert "message browser/in/greeting hello from paho" in result["log"]
    finally:
        watcher.disconnect()
        watcher.loop_stop()
