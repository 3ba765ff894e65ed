"""Topic ACLs seen by paho-mqtt clients over TCP and WebSocket, at 1 and 2 shards (issue #22).

- `acl` alone governs publishing too: a publish outside the user's list (QoS 0/1/2, retained, or
  a will) is acknowledged but neither delivered nor retained to an observer on `#`; `%u`/`%c`
  entries apply to publishing.
- `receive-acl` limits what a subscriber on `#` receives, retained messages after SUBACK included.
- The start log says which table governs what.

Every test also requires the allowed messages to arrive, so a broker that drops everything fails.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import NamedTuple

import pytest

from conftest import HOST, _answers_connect
from mqtt_helpers import PahoClient, accepts, free_port, launch_broker, stop_broker

QUIET = 0.5  # seconds without a message that count as "nothing more arrives"

ACL_ONLY = """topic-check:
  enabled: true
  plugins: [topic_acl]
  acl:
    alice: ['alice/#']
    observer: ['#']
    carol: ['users/%u/#', 'clients/%c/#']
"""

RECEIVE_ACL = """topic-check:
  enabled: true
  plugins: [topic_acl]
  receive-acl:
    dave: ['news/#', 'users/%u/#']
    observer: ['#']
"""


class AclBroker(NamedTuple):
    ports: dict[str, int]
    log: Path


def _start(amqtt_bin: Path, workdir: Path, shards: int, acl: str):
    ports = {"tcp": free_port(), "ws": free_port()}
    config = workdir / "broker.yaml"
    config.write_text(
        "listeners:\n"
        f"  default:\n    type: tcp\n    bind: {HOST}:{ports['tcp']}\n"
        f"  ws:\n    type: ws\n    bind: {HOST}:{ports['ws']}\n"
        f"shards: {shards}\npin_shards: false\nsys_interval: 0\n" + acl)
    log_path = workdir / "broker.log"
    proc = launch_broker(
        amqtt_bin, config, log_path,
        lambda: accepts(ports["ws"]) and _answers_connect(ports["tcp"], 1.0))
    return proc, AclBroker(ports, log_path)


def _broker_fixture(acl: str):
    @pytest.fixture(params=[1, 2], ids=["shards1", "shards2"])
    def fixture(request, amqtt_bin, tmp_path_factory):
        workdir = tmp_path_factory.mktemp(f"acl-shards{request.param}")
        proc, broker = _start(amqtt_bin, workdir, request.param, acl)
        yield broker
        stop_broker(proc, broker.log)
    return fixture


acl_only_broker = _broker_fixture(ACL_ONLY)
receive_acl_broker = _broker_fixture(RECEIVE_ACL)


def _client(made: list, broker: AclBroker, transport: str, client_id: str, user: str,
            will: tuple[str, bytes, int, bool] | None = None) -> PahoClient:
    c = PahoClient(HOST, broker.ports[transport], client_id=client_id, will=will)
    c.client.username_pw_set(user)
    if transport == "ws":
        c.client.transport = "websockets"
        c.client.ws_set_options(path="/mqtt")
    made.append(c)
    rc, _ = c.connect()
    assert rc == 0, f"CONNACK {rc} for {client_id}"
    return c


def _drop(c: PahoClient) -> None:
    """Ends the connection without DISCONNECT (the will is due), over TCP or WebSocket."""
    sock = c.client.socket()
    raw = getattr(sock, "_socket", sock)  # paho's WebSocket wrapper keeps the TCP socket here
    raw.shutdown(socket.SHUT_RDWR)
    c.wait_disconnect()
    c.stop_loop()


def _until_quiet(c: PahoClient) -> list[tuple[str, bytes]]:
    out = []
    while True:
        try:
            m = c.messages.get(timeout=QUIET)
        except Exception:
            return out
        out.append((m.topic, m.payload))


TRANSPORTS = pytest.mark.parametrize("transport", ["tcp", "ws"])


@TRANSPORTS
def test_publish_outside_acl_is_neither_delivered_nor_retained(acl_only_broker, clients, transport):
    observer = _client(clients, acl_only_broker, transport, "observer-1", "observer")
    assert observer.subscribe("#", qos=2) == [2]
    alice = _client(clients, acl_only_broker, transport, "alice-1", "alice")
    for qos in (0, 1, 2):
        # Outside her list: completes like any publish (PUBACK / PUBCOMP), then is dropped.
        alice.publish("bob/x", f"forged{qos}", qos=qos)
        alice.publish("bob/r", f"forged-retained{qos}", qos=qos, retain=True)
        alice.publish(f"alice/{qos}", b"ok", qos=qos)
    alice.publish("alice/r", b"kept", qos=1, retain=True)
    got = _until_quiet(observer)
    assert sorted(got) == [("alice/0", b"ok"), ("alice/1", b"ok"), ("alice/2", b"ok"),
                           ("alice/r", b"kept")]
    late = _client(clients, acl_only_broker, transport, "observer-2", "observer")
    assert late.subscribe("#", qos=1) == [1]
    assert _until_quiet(late) == [("alice/r", b"kept")]
    # Subscribing follows the same list.
    assert alice.subscribe([("alice/#", 0), ("bob/#", 0)]) == [0, 128]


@TRANSPORTS
def test_will_outside_acl_is_not_published(acl_only_broker, clients, transport):
    observer = _client(clients, acl_only_broker, transport, "observer-1", "observer")
    assert observer.subscribe("#", qos=1) == [1]
    for client_id, topic in [("alice-w1", "bob/will"), ("alice-w2", "alice/will")]:
        c = _client(clients, acl_only_broker, transport, client_id, "alice",
                    will=(topic, client_id.encode(), 1, True))
        _drop(c)
    assert _until_quiet(observer) == [("alice/will", b"alice-w2")]
    late = _client(clients, acl_only_broker, transport, "observer-2", "observer")
    late.subscribe("#", qos=1)
    assert _until_quiet(late) == [("alice/will", b"alice-w2")]


@TRANSPORTS
def test_user_and_client_id_placeholders(acl_only_broker, clients, transport):
    observer = _client(clients, acl_only_broker, transport, "observer-1", "observer")
    observer.subscribe("#", qos=1)
    carol = _client(clients, acl_only_broker, transport, "carol-1", "carol")
    for topic in ["users/carol/a", "users/dave/a", "clients/carol-1/b", "clients/carol-2/b"]:
        carol.publish(topic, b"c", qos=1)
    assert sorted(_until_quiet(observer)) == [("clients/carol-1/b", b"c"),
                                              ("users/carol/a", b"c")]
    assert carol.subscribe([("users/carol/#", 0), ("users/dave/#", 0),
                            ("clients/carol-1/#", 0)]) == [0, 128, 0]


@TRANSPORTS
def test_receive_acl_limits_a_subscriber_on_hash(receive_acl_broker, clients, transport):
    publisher = _client(clients, receive_acl_broker, transport, "observer-p", "observer")
    publisher.publish("news/old", b"r1", qos=1, retain=True)
    publisher.publish("sports/old", b"r2", qos=1, retain=True)
    dave = _client(clients, receive_acl_broker, transport, "dave-1", "dave")
    assert dave.subscribe("#", qos=1) == [1]
    assert _until_quiet(dave) == [("news/old", b"r1")]
    observer = _client(clients, receive_acl_broker, transport, "observer-1", "observer")
    observer.subscribe("#", qos=1)
    assert sorted(_until_quiet(observer)) == [("news/old", b"r1"), ("sports/old", b"r2")]
    eve = _client(clients, receive_acl_broker, transport, "eve-1", "eve")
    eve.subscribe("#", qos=1)
    for qos in (0, 1, 2):
        for topic in ["news/a", "sports/b", "users/dave/c", "users/bob/d"]:
            publisher.publish(topic, f"{qos}", qos=qos)
    assert sorted(_until_quiet(dave)) == sorted(
        (t, f"{q}".encode()) for q in (0, 1, 2) for t in ["news/a", "users/dave/c"])
    assert len(_until_quiet(observer)) == 12
    assert _until_quiet(eve) == [], "a user the receive-acl does not list receives nothing"


def test_start_log_says_which_table_governs_what(acl_only_broker, receive_acl_broker):
    assert ("topic ACL active: publish governed by 'acl' (no publish-acl), subscribe by 'acl', "
            "receive unrestricted") in acl_only_broker.log.read_text(errors="replace")
    assert ("topic ACL active: publish unrestricted (neither publish-acl nor acl), subscribe "
            "unrestricted, receive by 'receive-acl'") in receive_acl_broker.log.read_text(
                errors="replace")
