"""aMQTT's contrib HTTP plugins (`amqtt.contrib.http.UserAuthHttpPlugin`, `TopicAuthHttpPlugin`)
against a real HTTP service: a Python `http.server` in the test, on 127.0.0.1, that grants,
denies, answers "no opinion", sleeps past the plugin's timeout, or answers garbage, depending on
the user name or topic it is asked about. Clients are paho-mqtt.

- Fail closed: a slow service, garbage, "no opinion" with no other plugin, or no service at all
  denies (CONNACK 5, SUBACK 0x80, a PUBLISH acknowledged but not delivered).
- Answers are cached: the service's hit counts prove a second CONNECT or PUBLISH costs no request.
- A request in progress holds only its own connection: another client's cached publish goes
  through meanwhile.
- The request methods, parameter encodings and response modes are aMQTT's.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import HOST
from mqtt_helpers import (DISCONNECT_PACKET, PahoClient, RawConn, accepts, free_port,
                          launch_broker, stop_broker)

TIMEOUT = 1.0  # the plugins' `timeout`
SLOW = 2.5  # how long the service sleeps for "slow" questions
QUIET = 0.4  # seconds without a message that count as "nothing more arrives"
NOT_AUTHORIZED = (5, 0x87)  # CONNACK 5, as paho 2.x reports it for MQTT 3.1.1
PROBE = "conftest-ready-probe"  # the client id conftest's readiness probe connects with


class Service:
    """The HTTP service: records every question, answers by the rules of `decide`."""

    def __init__(self):
        self.hits: list[dict] = []
        self.lock = threading.Lock()
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _handle(self):
                url = urllib.parse.urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                ctype = self.headers.get("Content-Type", "")
                if "json" in ctype:
                    params, encoding = json.loads(body), "json"
                elif body:
                    params = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode()).items()}
                    encoding = "form"
                else:
                    params = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
                    encoding = "query"
                kind, mode = url.path.strip("/").split("/")
                hit = {"method": self.command, "kind": kind, "encoding": encoding,
                       "agent": self.headers.get("User-Agent"), **params}
                if params.get("client_id") != PROBE:
                    with service.lock:
                        service.hits.append(hit)
                verdict = decide(kind, params)
                if verdict == "slow":
                    time.sleep(SLOW)
                    verdict = "grant"
                self._answer(mode, verdict)

            def _answer(self, mode: str, verdict: str):
                if verdict == "garbage":
                    status, ctype, body = 200, "text/html", b"<html>not an answer</html>"
                elif mode == "json":
                    answer = {"grant": {"ok": True}, "deny": {"Ok": False, "error": "no"},
                              "noop": {"error": "ask someone else"}}[verdict]
                    status, ctype, body = 200, "application/json", json.dumps(answer).encode()
                elif mode == "status":
                    status = {"grant": 200, "deny": 403, "noop": 503}[verdict]
                    ctype, body = "text/plain", b""
                else:  # text
                    status, ctype = 200, "text/plain"
                    body = b"OK" if verdict == "grant" else b"error"
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = _handle

        self.server = ThreadingHTTPServer((HOST, 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def count(self, **match) -> int:
        with self.lock:
            return sum(all(h.get(k) == v for k, v in match.items()) for h in self.hits)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def decide(kind: str, params: dict) -> str:
    """The service's rules: by user name for CONNECT, by topic for the ACL."""
    if params.get("client_id") == PROBE:
        return "grant"
    if kind == "user":
        user, password = params.get("username"), params.get("password")
        if user in ("slow", "garbage", "noop"):
            return user
        return "grant" if (user, password) in (("alice", "secret"), ("observer", "o")) else "deny"
    topic, user = params.get("topic", ""), params.get("username")
    if user == "observer" or topic.startswith("ok/"):
        return "grant"
    for special in ("slow", "garbage", "noop"):
        if topic.startswith(special + "/"):
            return special
    return "deny"


def plugins_yaml(port: int, user_uri: str = "/user/json", topic_uri: str = "/acl/json",
                 extra: str = "") -> str:
    common = (f"    host: {HOST}\n    port: {port}\n    timeout: {TIMEOUT}\n"
              f"    cache_ttl: 30\n{extra}")
    return ("plugins:\n"
            "  amqtt.contrib.http.UserAuthHttpPlugin:\n"
            f"    user_uri: {user_uri}\n{common}"
            "  amqtt.contrib.http.TopicAuthHttpPlugin:\n"
            f"    topic_uri: {topic_uri}\n{common}")


def answers_connect(port: int) -> bool:
    """Whether the broker answers a CONNECT, with any return code (conftest's probe wants 0,
    which a broker whose HTTP service is down never answers)."""
    try:
        conn = RawConn(HOST, port, timeout=TIMEOUT + 1)
    except OSError:
        return False
    try:
        ack = conn.connect(PROBE, timeout=TIMEOUT + 1)
        conn.send(DISCONNECT_PACKET)
        return ack is not None and len(ack) == 2
    except (OSError, AssertionError, TimeoutError):
        return False
    finally:
        conn.close()


def start_broker(amqtt_bin: Path, workdir: Path, shards: int, yaml: str):
    port = free_port()
    config = workdir / "broker.yaml"
    config.write_text("listeners:\n"
                      f"  default:\n    type: tcp\n    bind: {HOST}:{port}\n"
                      f"shards: {shards}\npin_shards: false\n" + yaml)
    log_path = workdir / "broker.log"
    proc = launch_broker(amqtt_bin, config, log_path,
                         lambda: accepts(port) and answers_connect(port))
    return proc, port, log_path


@pytest.fixture
def service():
    s = Service()
    yield s
    s.close()


@pytest.fixture(params=[1, 2], ids=["shards1", "shards2"])
def broker(request, amqtt_bin, tmp_path_factory, service):
    workdir = tmp_path_factory.mktemp(f"http-shards{request.param}")
    proc, port, log_path = start_broker(amqtt_bin, workdir, request.param,
                                        plugins_yaml(service.port))
    yield port, log_path
    stop_broker(proc, log_path)


def connect(made: list, port: int, client_id: str, user: str | None, password: str | None = None):
    c = PahoClient(HOST, port, client_id=client_id)
    if user is not None:
        c.client.username_pw_set(user, password)
    made.append(c)
    rc, _ = c.connect()
    return c, rc


def test_user_check_grants_denies_and_fails_closed(broker, service, clients):
    port, log_path = broker
    assert connect(clients, port, "a1", "alice", "secret")[1] == 0
    assert connect(clients, port, "a2", "alice", "wrong")[1] in NOT_AUTHORIZED
    assert connect(clients, port, "b1", "bob", "secret")[1] in NOT_AUTHORIZED
    assert connect(clients, port, "g1", "garbage", "x")[1] in NOT_AUTHORIZED
    # "No opinion" with no other authentication plugin: denied, as aMQTT documents.
    assert connect(clients, port, "n1", "noop", "x")[1] in NOT_AUTHORIZED
    started = time.monotonic()
    assert connect(clients, port, "s1", "slow", "x")[1] in NOT_AUTHORIZED
    took = time.monotonic() - started
    assert TIMEOUT * 0.8 < took < SLOW, f"slow service: CONNACK after {took:.2f}s"
    # What the service was asked, with aMQTT's parameter names and the default User-Agent.
    hit = next(h for h in service.hits if h["client_id"] == "a1")
    assert hit == {"method": "GET", "kind": "user", "encoding": "json", "agent": "amqtt",
                   "username": "alice", "password": "secret", "client_id": "a1"}
    log = log_path.read_text(errors="replace")
    assert "auth_http" in log and "/user/json" in log, log[-3000:]


def test_user_answers_are_cached(broker, service, clients):
    port, _ = broker
    for _ in range(3):
        c, rc = connect(clients, port, "a1", "alice", "secret")
        assert rc == 0
        c.disconnect()
    assert service.count(kind="user", client_id="a1") == 1
    # A different password is a different question.
    assert connect(clients, port, "a1", "alice", "wrong")[1] in NOT_AUTHORIZED
    assert service.count(kind="user", client_id="a1") == 2


def test_acl_checks_publish_and_subscribe(broker, service, clients):
    port, _ = broker
    observer, rc = connect(clients, port, "obs", "observer", "o")
    assert rc == 0
    assert observer.subscribe("#", qos=1) == [1]
    alice, rc = connect(clients, port, "a1", "alice", "secret")
    assert rc == 0
    assert alice.subscribe([("ok/#", 1), ("no/#", 1), ("garbage/#", 1), ("noop/#", 1)]) \
        == [1, 128, 128, 128]
    for topic in ("no/1", "garbage/1", "noop/1", "ok/1"):
        alice.publish(topic, b"x", qos=1)
    got = observer.get_message()
    assert got.topic == "ok/1", f"a denied publish was delivered: {got}"
    assert alice.get_message().topic == "ok/1"
    time.sleep(QUIET)
    assert observer.drain() == [] and alice.drain() == []
    # aMQTT's `acc`: 4 subscribe, 2 publish.
    assert service.count(kind="acl", client_id="a1", topic="ok/#", acc=4) == 1
    assert service.count(kind="acl", client_id="a1", topic="ok/1", acc=2) == 1
    # Cached: more publishes to the same topic ask nothing.
    for _ in range(5):
        alice.publish("ok/1", b"again", qos=1)
    assert len(observer.get_messages(5)) == 5
    assert service.count(kind="acl", client_id="a1", topic="ok/1") == 1


def test_a_shared_subscription_is_asked_about_its_filter(broker, service, clients):
    """A shared subscription is checked on the filter after its share name (`$share/g/ok/#` as
    `ok/#`): the service is asked about that filter, and its answer decides the SUBACK. (The
    answer fetched ahead was once asked for the whole `$share/...` string, so the check found no
    answer for `ok/#` and every shared subscription was refused.)"""
    port, _ = broker
    alice, rc = connect(clients, port, "a1", "alice", "secret")
    assert rc == 0
    assert alice.subscribe([("$share/g/ok/#", 1), ("$share/g/no/#", 1)]) == [1, 128]
    alice.publish("ok/shared", b"x", qos=1)
    assert alice.get_message().topic == "ok/shared"
    assert service.count(kind="acl", client_id="a1", topic="ok/#", acc=4) == 1
    assert service.count(kind="acl", client_id="a1", topic="no/#", acc=4) == 1
    assert not any(h.get("topic", "").startswith("$share/") for h in service.hits), service.hits


def test_a_will_is_checked_with_a_fresh_answer(broker, service, clients):
    # Nothing is cached for the will topics: the answer is fetched at CONNECT, before the core
    # checks the will (a granted will is published, a denied one is not).
    port, _ = broker
    observer, _ = connect(clients, port, "obs", "observer", "o")
    assert observer.subscribe("#", qos=1) == [1]
    for client_id, topic in (("w-ok", "ok/will"), ("w-no", "no/will")):
        c = PahoClient(HOST, port, client_id=client_id, will=(topic, b"gone", 1, False))
        c.client.username_pw_set("alice", "secret")
        clients.append(c)
        assert c.connect()[0] == 0
        assert service.count(kind="acl", client_id=client_id, topic=topic, acc=2) == 1
        c.drop_connection()
    got = observer.get_message()
    assert (got.topic, got.payload) == ("ok/will", b"gone")
    time.sleep(QUIET)
    assert observer.drain() == [], "a denied will was published"


def test_a_slow_acl_answer_holds_only_its_own_connection(broker, service, clients):
    port, _ = broker
    observer, _ = connect(clients, port, "obs", "observer", "o")
    observer.subscribe("#", qos=1)
    alice, _ = connect(clients, port, "a1", "alice", "secret")
    other, _ = connect(clients, port, "a2", "alice", "secret")
    other.publish("ok/other", b"warm", qos=1)
    assert observer.get_message().topic == "ok/other"
    # alice's publish to slow/ waits for the service; the other connection's cached topic does not.
    started = time.monotonic()
    alice.publish_nowait("slow/1", b"x", qos=1)
    alice.publish_nowait("ok/after", b"x", qos=1)
    time.sleep(0.1)
    other.publish("ok/other", b"meanwhile", qos=1)
    got = observer.get_message()
    took = time.monotonic() - started
    assert (got.topic, got.payload) == ("ok/other", b"meanwhile"), got
    assert took < TIMEOUT, f"another connection's publish waited {took:.2f}s"
    # Then the timeout denies slow/1, and alice's next publish goes through, in order.
    got = observer.get_message(timeout=SLOW + 2)
    assert got.topic == "ok/after", f"the timed-out publish was delivered: {got}"
    assert time.monotonic() - started >= TIMEOUT * 0.8


@pytest.mark.parametrize("method,params,response,encoding", [
    ("post", "json", "json", "json"),
    ("get", "form", "status", "query"),
    ("post", "form", "text", "form"),
    ("put", "form", "status", "form"),
])
def test_request_and_response_modes(amqtt_bin, tmp_path, service, clients,
                                     method, params, response, encoding):
    extra = (f"    request_method: {method}\n    params_mode: {params}\n"
             f"    response_mode: {response}\n    user_agent: test-agent\n")
    proc, port, log_path = start_broker(
        amqtt_bin, tmp_path, 1,
        plugins_yaml(service.port, f"/user/{response}", f"/acl/{response}", extra))
    try:
        assert connect(clients, port, "b1", "bob", "secret")[1] in NOT_AUTHORIZED
        alice, rc = connect(clients, port, "a1", "alice", "secret")
        assert rc == 0
        assert alice.subscribe([("ok/#", 0), ("no/#", 0)]) == [0, 128]
        hit = next(h for h in service.hits if h["client_id"] == "a1" and h["kind"] == "acl")
        assert (hit["method"], hit["encoding"], hit["agent"]) == (method.upper(), encoding,
                                                                 "test-agent")
        assert str(hit["acc"]) == "4" and hit["username"] == "alice", hit
        if response == "status":
            # 5xx is "no opinion": alone, the plugin denies.
            assert alice.subscribe("noop/#") == [128]
    finally:
        for c in clients:
            c.close()
        stop_broker(proc, log_path)


def test_no_service_denies(amqtt_bin, tmp_path, clients):
    proc, port, log_path = start_broker(amqtt_bin, tmp_path, 1, plugins_yaml(free_port()))
    try:
        started = time.monotonic()
        assert connect(clients, port, "a1", "alice", "secret")[1] in NOT_AUTHORIZED
        assert time.monotonic() - started < TIMEOUT + 1
    finally:
        stop_broker(proc, log_path)
    log = log_path.read_text(errors="replace")
    assert "denying client 'a1'" in log, log[-3000:]
