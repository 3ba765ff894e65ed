"""MQTT 5 enhanced authentication (AUTH) with SCRAM-SHA-256, over real sockets, against amqtt at
1 and 2 shards (a CONNECT read on one shard is answered on its client id's home shard).

The users are written by `amqtt_passwd --scram`; the client side of SCRAM (RFC 5802/7677) is
written here from the RFC with Python's `hashlib`/`hmac`, and checks the broker's server signature.
Mosquitto is no reference here: it offers no SCRAM without a plugin.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import subprocess
from pathlib import Path

import pytest

from mqtt5_helpers import (RawV5, V5Broker, _amqtt_ready, connect5, decode_props, encode_props,
                           packet, publish5, subscribe5)
from mqtt_helpers import LOOPBACK, free_port, launch_broker, stop_broker

METHOD = "SCRAM-SHA-256"
AUTH = 15  # packet type
CONNACK = 2


def amqtt_passwd(amqtt_bin: Path, *args: str) -> None:
    tool = amqtt_bin.with_name("amqtt_passwd")
    if not tool.is_file():
        pytest.fail(f"{tool} missing: cargo build --release --bin amqtt_passwd", pytrace=False)
    subprocess.run([str(tool), *args], check=True, capture_output=True, timeout=30)


@pytest.fixture(params=[1, 2], ids=["amqtt-1", "amqtt-2"])
def broker(request, amqtt_bin, tmp_path):
    if request.param == 1 and os.environ.get("AMQTT_RUNTIME") == "epoll":
        pytest.skip("the epoll pass runs these at 2 shards only")
    passwd = tmp_path / "passwd"
    amqtt_passwd(amqtt_bin, "-c", "--scram", "-b", str(passwd), "alice", "wonder land")
    amqtt_passwd(amqtt_bin, "-b", str(passwd), "bob", "builder")  # argon2id: no SCRAM
    port = free_port()
    config = tmp_path / "amqtt.yaml"
    config.write_text(
        f"listeners:\n  default:\n    type: tcp\n    bind: {LOOPBACK}:{port}\n"
        f"shards: {request.param}\npin_shards: false\nsys_interval: 0\nconnect_timeout: 3\n"
        f"auth:\n  allow-anonymous: true\n  password-file: {passwd}\n")
    log_path = tmp_path / "amqtt.log"
    request.node._amqtt_logs = [log_path]
    proc = launch_broker(amqtt_bin, config, log_path, lambda: _amqtt_ready(port))
    yield V5Broker(LOOPBACK, port, "amqtt", request.param, proc)
    if proc.poll() is None:
        stop_broker(proc, log_path)


class Scram:
    """The client side of one SCRAM-SHA-256 exchange (no channel binding)."""

    def __init__(self, user: str, password: str):
        self.user, self.password = user, password
        self.nonce = base64.b64encode(os.urandom(18)).decode()
        self.bare = f"n={user},r={self.nonce}"
        self.server_signature = b""

    def first(self) -> bytes:
        return f"n,,{self.bare}".encode()

    def final(self, server_first: bytes) -> bytes:
        text = server_first.decode()
        fields = dict(f.split("=", 1) for f in text.split(","))
        assert fields["r"].startswith(self.nonce) and len(fields["r"]) > len(self.nonce)
        salted = hashlib.pbkdf2_hmac("sha256", self.password.encode(),
                                     base64.b64decode(fields["s"]), int(fields["i"]))
        client_key = hmac.digest(salted, b"Client Key", "sha256")
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c=biws,r={fields['r']}"
        auth_message = f"{self.bare},{text},{without_proof}".encode()
        signature = hmac.digest(stored_key, auth_message, "sha256")
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        server_key = hmac.digest(salted, b"Server Key", "sha256")
        self.server_signature = hmac.digest(server_key, auth_message, "sha256")
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify(self, server_final: bytes) -> None:
        assert server_final == b"v=" + base64.b64encode(self.server_signature), server_final


def auth5(reason: int, data: bytes, method: str = METHOD) -> bytes:
    return packet(0xF0, bytes([reason]) + encode_props([("auth_method", method),
                                                          ("auth_data", data)]))


def read(raw: RawV5, packet_type: int) -> tuple[int, dict]:
    """The next packet, which must be of `packet_type`: its reason code and properties."""
    got = raw.recv()
    assert got is not None, f"closed while waiting for packet type {packet_type}"
    assert got[0] >> 4 == packet_type, f"expected packet type {packet_type}, got {got!r}"
    at = 1 if packet_type == CONNACK else 0
    properties, _ = decode_props(got[1], at + 1)
    return got[1][at], dict(properties)


def scram_connect(broker, client_id: str, user: str, password: str) -> tuple[RawV5, int, dict]:
    """CONNECT with SCRAM-SHA-256 through the whole exchange: the client, CONNACK's reason code
    and properties (the server signature already checked on success)."""
    raw = RawV5(broker)
    scram = Scram(user, password)
    raw.send(connect5(client_id, properties=[("auth_method", METHOD),
                                             ("auth_data", scram.first())]))
    reason, props = read(raw, AUTH)
    assert reason == 0x18 and props["auth_method"] == METHOD
    raw.send(auth5(0x18, scram.final(props["auth_data"])))
    reason, props = read(raw, CONNACK)
    if reason == 0:
        assert props["auth_method"] == METHOD
        scram.verify(props["auth_data"])
    return raw, reason, props


def reauthenticate(raw: RawV5, user: str, password: str) -> Scram:
    """AUTH 0x19 and the exchange up to the client's final message (sent)."""
    scram = Scram(user, password)
    raw.send(auth5(0x19, scram.first()))
    reason, props = read(raw, AUTH)
    assert reason == 0x18 and props["auth_method"] == METHOD
    raw.send(auth5(0x18, scram.final(props["auth_data"])))
    return scram


def test_scram_login_succeeds_with_the_server_signature_and_the_client_works(broker):
    raw, reason, _ = scram_connect(broker, "scram-ok", "alice", "wonder land")
    assert reason == 0
    raw.send(subscribe5(1, [("auth/t", 0)]))
    raw.expect(9)
    raw.send(publish5("auth/t", b"hello"))
    raw.expect(3)
    raw.close()


@pytest.mark.parametrize("user,password", [("alice", "wonder lane"), ("nobody", "x"),
                                           ("bob", "builder")],
                         ids=["wrong-password", "unknown-user", "no-scram-entry"])
def test_scram_refusals_are_0x86_and_close(broker, user, password):
    raw, reason, _ = scram_connect(broker, "scram-bad", user, password)
    assert reason == 0x86
    assert raw.recv() is None, "closed after the refusal"


def test_a_method_nobody_offers_is_0x8c(broker):
    raw = RawV5(broker)
    reason, _ = raw.connect("scram-1", properties=[("auth_method", "SCRAM-SHA-1"),
                                                   ("auth_data", b"n,,n=alice,r=abc")])
    assert reason == 0x8C
    assert raw.recv() is None


def test_anything_but_auth_during_the_exchange_is_0x82(broker):
    raw = RawV5(broker)
    raw.send(connect5("scram-intruder", properties=[("auth_method", METHOD),
                                                    ("auth_data", Scram("alice", "x").first())]))
    read(raw, AUTH)
    raw.send(publish5("auth/t", b"sneaky"))
    reason, _ = read(raw, CONNACK)
    assert reason == 0x82
    assert raw.recv() is None


@pytest.mark.parametrize("bad", [
    packet(0xF0, bytes([0x18, 9, 0x15])),  # properties longer than the packet: malformed
    packet(0xF1, bytes([0x18, 0])),        # reserved flags set: malformed
    packet(0xF0, bytes([0x18]) + encode_props([("auth_method", METHOD),
                                               ("auth_method", METHOD)])),  # twice: malformed
], ids=["short-properties", "flags", "duplicate-method"])
def test_a_malformed_auth_during_the_exchange_is_refused(broker, bad):
    raw = RawV5(broker)
    raw.send(connect5("scram-malformed", properties=[("auth_method", METHOD),
                                                     ("auth_data", Scram("alice", "x").first())]))
    read(raw, AUTH)
    raw.send(bad)
    reason, _ = read(raw, CONNACK)
    assert reason in (0x81, 0x82)
    assert raw.recv() is None


def test_an_unfinished_exchange_ends_at_connect_timeout(broker):
    raw = RawV5(broker)
    raw.send(connect5("scram-slow", keepalive=0,
                      properties=[("auth_method", METHOD),
                                  ("auth_data", Scram("alice", "x").first())]))
    read(raw, AUTH)
    assert raw.recv(timeout=6.0) is None, "closed within connect_timeout (3 s)"


def test_re_authentication_succeeds_and_fails(broker):
    raw, reason, _ = scram_connect(broker, "scram-again", "alice", "wonder land")
    assert reason == 0
    scram = reauthenticate(raw, "alice", "wonder land")
    reason, props = read(raw, AUTH)
    assert reason == 0x00 and props["auth_method"] == METHOD
    scram.verify(props["auth_data"])
    raw.send(packet(0xC0, b""))  # still served: PINGREQ, PINGRESP
    raw.expect(13)
    reauthenticate(raw, "alice", "wonder lane")
    assert raw.closed_with() == 0x87


def test_auth_without_enhanced_authentication_is_0x82(broker):
    raw = RawV5(broker)
    reason, _ = raw.connect("plain-auth")
    assert reason == 0
    raw.send(auth5(0x19, Scram("alice", "wonder land").first()))
    assert raw.closed_with() == 0x82


def test_a_scram_entry_also_checks_a_plain_connect_password(broker):
    def plain(password: str) -> int:
        raw = RawV5(broker)
        flags_user_password = connect5("scram-plain")
        # CONNECT with user name and password: flags 0xC2 and both strings after the client id.
        body = bytearray(flags_user_password[2:])
        body[7] |= 0xC0
        body += len(b"alice").to_bytes(2, "big") + b"alice"
        body += len(password.encode()).to_bytes(2, "big") + password.encode()
        raw.send(packet(0x10, bytes(body)))
        reason, _ = read(raw, CONNACK)
        raw.close()
        return reason

    assert plain("wonder land") == 0
    assert plain("wonder lane") == 0x86


def test_amqtt_passwd_scram_entries_round_trip(amqtt_bin, tmp_path):
    passwd = tmp_path / "passwd"
    amqtt_passwd(amqtt_bin, "-c", "--scram", "-b", str(passwd), "user", "pencil")
    (entry,) = [line for line in passwd.read_text().splitlines() if line.startswith("user:")]
    scheme, params, keys = entry.split(":", 1)[1].split("$")
    assert scheme == "SCRAM-SHA-256"
    iterations, salt = params.split(":")
    stored, server = keys.split(":")
    assert iterations == "4096"
    salted = hashlib.pbkdf2_hmac("sha256", b"pencil", base64.b64decode(salt), 4096)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    assert base64.b64decode(stored) == hashlib.sha256(client_key).digest()
    assert base64.b64decode(server) == hmac.digest(salted, b"Server Key", "sha256")
    # -U keeps SCRAM entries as they are (they are hashes, not plain-text passwords).
    passwd.write_text(passwd.read_text() + "carol:plain\n")
    amqtt_passwd(amqtt_bin, "-U", str(passwd))
    assert entry in passwd.read_text().splitlines()
