"""aMQTT's contrib JWT plugins (issue #22), configured as aMQTT configures them (the `plugins:`
mapping with `amqtt.contrib.jwt.UserAuthJwtPlugin` and `TopicAuthJwtPlugin`), with tokens signed
by PyJWT (keys from `cryptography`) and paho clients sending them as the password:

- HS256, RS256 and ES256 tokens naming the user connect; a token signed with another key, an
  expired one, or one naming another user are refused (CONNACK 5).
- A token that expires while its client is connected ends the connection (logged, counted).
- The topic claims restrict publishing (dropped), subscribing (SUBACK 0x80) and receiving.

Every test also requires what is allowed to happen, so a broker that refuses everything fails.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import NamedTuple

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from conftest import HOST
from mqtt_helpers import PahoClient, accepts, free_port, spawn_broker, stop_broker

QUIET = 0.5  # seconds after which nothing more arrives on loopback
HS_SECRET = "the-broker-and-the-issuer-share-this-secret"
# CONNACK 5 (not authorized), as paho 2 reports it for MQTT 3.1.1 (0x87).
REFUSED = (5, 0x87)


class Keys(NamedTuple):
    algorithm: str
    signing: object  # what PyJWT signs with
    verifying: str  # what the broker verifies with (secret or PEM public key)
    other: object  # another key of the same kind


def _pem_public(private) -> str:
    return private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def _keys(algorithm: str) -> Keys:
    if algorithm == "HS256":
        return Keys(algorithm, HS_SECRET, HS_SECRET, "another-secret-entirely-of-some-length")
    if algorithm == "RS256":
        make = lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)  # noqa: E731
    else:
        make = lambda: ec.generate_private_key(ec.SECP256R1())  # noqa: E731
    private = make()
    return Keys(algorithm, private, _pem_public(private), make())


class JwtBroker(NamedTuple):
    port: int
    log: Path
    keys: Keys

    def token(self, claims: dict, key=None) -> str:
        return jwt.encode(claims, key or self.keys.signing, algorithm=self.keys.algorithm)


def _indent(text: str, spaces: int) -> str:
    return "".join(" " * spaces + line + "\n" for line in text.splitlines())


def _start(amqtt_bin: Path, workdir: Path, shards: int, keys: Keys):
    port = free_port()
    multiline = "\n" in keys.verifying
    key = "|\n" + _indent(keys.verifying, 6) if multiline else keys.verifying + "\n"
    proc, log_path = spawn_broker(
        amqtt_bin, workdir,
        "listeners:\n"
        f"  default:\n    type: tcp\n    bind: {HOST}:{port}\n"
        f"shards: {shards}\npin_shards: false\n"
        "plugins:\n"
        "  amqtt.contrib.jwt.UserAuthJwtPlugin:\n"
        f"    secret_key: {key}"
        f"    user_claim: username\n    algorithm: {keys.algorithm}\n"
        "  amqtt.contrib.jwt.TopicAuthJwtPlugin:\n"
        f"    secret_key: {key}"
        "    publish_claim: publish_acl\n    subscribe_claim: subscribe_acl\n"
        f"    receive_claim: receive_acl\n    algorithm: {keys.algorithm}\n")
    broker = JwtBroker(port, log_path, keys)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"broker exited at start ({proc.returncode}):\n"
                        + log_path.read_text(errors="replace")[-5000:], pytrace=False)
        if accepts(port):
            probe = PahoClient(HOST, port, client_id="probe")
            probe.client.username_pw_set("probe", broker.token({"username": "probe"}))
            try:
                if probe.connect(timeout=1.0)[0] == 0:
                    return proc, broker
            except (AssertionError, OSError):
                pass
            finally:
                probe.close()
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    pytest.fail("broker did not start:\n" + log_path.read_text(errors="replace")[-5000:],
                pytrace=False)


@pytest.fixture(scope="module", params=[("HS256", 2), ("RS256", 1), ("ES256", 1)],
                ids=["hs256-shards2", "rs256-shards1", "es256-shards1"])
def jwt_broker(request, amqtt_bin, tmp_path_factory):
    algorithm, shards = request.param
    workdir = tmp_path_factory.mktemp(f"jwt-{algorithm}")
    proc, broker = _start(amqtt_bin, workdir, shards, _keys(algorithm))
    yield broker
    stop_broker(proc, broker.log)


def _client(made: list, broker: JwtBroker, client_id: str, user: str | None, token: str | None,
            expect: tuple[int, ...] = (0,)) -> PahoClient:
    c = PahoClient(HOST, broker.port, client_id=client_id)
    if user is not None:
        c.client.username_pw_set(user, token)
    made.append(c)
    rc, _ = c.connect()
    assert rc in expect, f"CONNACK {rc} for {client_id}, expected {expect}"
    return c


def _received(c: PahoClient) -> list[tuple[str, bytes]]:
    """What `c` received, once nothing has come for a while."""
    time.sleep(QUIET)
    return [(m.topic, m.payload) for m in c.drain()]


def test_a_token_naming_the_user_connects_and_others_are_refused(jwt_broker, clients):
    now = int(time.time())
    good = jwt_broker.token({"username": "alice", "exp": now + 3600})
    _client(clients, jwt_broker, "alice-1", "alice", good)
    # Signed with another key of the same kind.
    forged = jwt_broker.token({"username": "alice"}, key=jwt_broker.keys.other)
    _client(clients, jwt_broker, "alice-2", "alice", forged, expect=REFUSED)
    expired = jwt_broker.token({"username": "alice", "exp": now - 10})
    _client(clients, jwt_broker, "alice-3", "alice", expired, expect=REFUSED)
    _client(clients, jwt_broker, "alice-4", "bob", good, expect=REFUSED)
    _client(clients, jwt_broker, "alice-5", "alice", "not-a-token", expect=REFUSED)
    _client(clients, jwt_broker, "anon-1", None, None, expect=REFUSED)


def test_the_connection_ends_when_its_token_expires(jwt_broker, clients):
    short = jwt_broker.token({"username": "carol", "exp": int(time.time()) + 2})
    carol = _client(clients, jwt_broker, "carol-1", "carol", short)
    lasting = jwt_broker.token({"username": "dave", "exp": int(time.time()) + 3600})
    dave = _client(clients, jwt_broker, "dave-1", "dave", lasting)
    started = time.monotonic()
    carol.wait_disconnect(timeout=5)
    assert time.monotonic() - started >= 0.5, "closed long before its exp"
    assert dave.client.is_connected(), "a token that has not expired keeps its connection"
    log = jwt_broker.log.read_text(errors="replace")
    assert "'carol-1' (user Some(\"carol\")): credentials expired" in log, log[-3000:]


def test_topic_claims_restrict_publish_subscribe_and_receive(jwt_broker, clients):
    def token(user, publish, subscribe, receive):
        return jwt_broker.token({"username": user, "publish_acl": publish,
                                 "subscribe_acl": subscribe, "receive_acl": receive})
    observer = _client(clients, jwt_broker, "obs-1", "observer",
                       token("observer", ["#"], ["#"], ["#"]))
    assert observer.subscribe("#", qos=1) == [1]
    reader = _client(clients, jwt_broker, "reader-1", "reader",
                     token("reader", [], ["#"], ["news/#"]))
    assert reader.subscribe("#", qos=1) == [1]
    alice = _client(clients, jwt_broker, "alice-t", "alice",
                    token("alice", ["alice/#", "news/+"], ["alice/#"], ["alice/#"]))
    # Subscribing: within her claim granted, outside (or wider) refused with 0x80.
    assert alice.subscribe("alice/inbox", qos=1) == [1]
    assert alice.subscribe("bob/#", qos=1) == [128]
    assert alice.subscribe("#", qos=1) == [128]
    # Publishing outside her claim is acknowledged but not delivered.
    alice.publish("bob/x", "forged", qos=1)
    alice.publish("alice/inbox", "mine", qos=1)
    alice.publish("news/today", "headline", qos=1)
    seen = _received(observer)
    assert ("alice/inbox", b"mine") in seen and ("news/today", b"headline") in seen, seen
    assert not [t for t, _ in seen if t.startswith("bob/")], seen
    # Receiving: the reader's `#` only brings what its receive claim lists.
    assert _received(reader) == [("news/today", b"headline")]
    assert _received(alice) == [("alice/inbox", b"mine")]
    # A client without a topic claim may do nothing.
    bare = _client(clients, jwt_broker, "bare-1", "bare",
                   jwt_broker.token({"username": "bare"}))
    assert bare.subscribe("alice/#", qos=1) == [128]
