"""The admin HTTP API (`admin:`) and `amqtt_ctl` against a real 2-shard broker: every endpoint
with plain urllib requests (as curl would send them), the bearer token (missing, wrong), pagination
over more sessions than a page, bad input (JSON, topic, QoS, limit) and unknown paths, and the
`amqtt_ctl` subcommands run as subprocesses."""

from __future__ import annotations

import base64
import json
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import NamedTuple

import pytest

from mqtt_helpers import DISCONNECT_PACKET, PahoClient, RawConn, accepts, free_port, launch_broker, stop_broker

HOST = "127.0.0.1"
TOKEN = "t0ken-for-tests"


class Admin(NamedTuple):
    port: int
    admin_port: int
    token_file: Path
    url: str


@pytest.fixture(scope="module")
def admin(amqtt_bin, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("admin")
    token_file = workdir / "token"
    token_file.write_text(TOKEN + "\n")
    port, admin_port = free_port(), free_port()
    config = workdir / "broker.yaml"
    config.write_text(
        "listeners:\n  default:\n    type: tcp\n"
        f"    bind: {HOST}:{port}\n"
        "shards: 2\npin_shards: false\nsys_interval: 0\n"
        f"admin:\n  bind: {HOST}:{admin_port}\n  token-file: {token_file}\n")
    log = workdir / "broker.log"
    proc = launch_broker(amqtt_bin, config, log, lambda: accepts(port) and accepts(admin_port))
    yield Admin(port, admin_port, token_file, f"http://{HOST}:{admin_port}")
    stop_broker(proc, log)


def call(admin: Admin, method: str, path: str, body: bytes | None = None,
         token: str | None = TOKEN) -> tuple[int, dict]:
    """One request; the status and the JSON body (errors included)."""
    request = urllib.request.Request(admin.url + path, data=body, method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    if body is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        assert error.headers["Content-Type"] == "application/json"
        return error.code, json.loads(error.read())


def publish(admin: Admin, **spec) -> tuple[int, dict]:
    return call(admin, "POST", "/api/v1/publish", json.dumps(spec).encode())


def test_token_required(admin):
    status, body = call(admin, "GET", "/api/v1/info", token=None)
    assert status == 401 and "token" in body["error"]
    status, body = call(admin, "GET", "/api/v1/info", token=TOKEN + "x")
    assert (status, body["error"]) == (401, "wrong token")
    status, _ = call(admin, "GET", "/api/v1/sessions", token="")
    assert status == 401
    # Without the token nothing else is told, not even whether the path exists.
    status, _ = call(admin, "GET", "/nowhere", token=None)
    assert status == 401


def test_info(admin):
    status, body = call(admin, "GET", "/api/v1/info")
    assert status == 200
    assert body["shards"] == 2 and body["version"] and body["uptime_seconds"] >= 0
    assert body["listeners"] == [{"name": "default", "address": f"{HOST}:{admin.port}"}]


def test_sessions_paginated_and_looked_up(admin):
    ids = [f"adm-page-{i:02d}" for i in range(7)]
    for client_id in ids:
        conn = RawConn(HOST, admin.port)
        assert conn.connect(client_id, clean=False) == bytes([0, 0])
        conn.send(DISCONNECT_PACKET)
        conn.close()
    sub = PahoClient(HOST, admin.port, client_id="adm-page-sub", clean_session=False)
    sub.connect()
    sub.subscribe("adm/page/#", qos=1)
    try:
        seen, cursor, pages = [], None, 0
        while True:
            query = "?limit=3" + (f"&cursor={cursor}" if cursor else "")
            status, body = call(admin, "GET", "/api/v1/sessions" + query)
            assert status == 200 and len(body["sessions"]) <= 3
            seen += [s["client_id"] for s in body["sessions"]]
            pages += 1
            cursor = body["next_cursor"]
            if cursor is None:
                break
        mine = [c for c in seen if c.startswith("adm-page-")]
        assert mine == sorted(ids + ["adm-page-sub"]) and pages >= 3
        assert seen == sorted(seen) and len(seen) == len(set(seen))
        status, one = call(admin, "GET", "/api/v1/sessions/adm-page-sub")
        assert status == 200
        assert one["connected"] is True and one["clean_session"] is False
        assert one["subscriptions"] == [{"filter": "adm/page/#", "qos": 1}]
        assert one["shard"] in (0, 1) and one["queued"] == 0
        # Where the connection came from: the paho client's own socket address.
        local = sub.client.socket().getsockname()
        assert one["address"] == f"{local[0]}:{local[1]}"
        assert one["listener"] == "default" and one["protocol"] == "3.1.1"
        status, one = call(admin, "GET", "/api/v1/sessions/adm-page-03")
        assert status == 200 and one["connected"] is False
        assert one["address"] is None and one["listener"] is None and one["protocol"] is None
        status, body = call(admin, "GET", "/api/v1/sessions/no-such-client")
        assert status == 404 and "no-such-client" in body["error"]
    finally:
        sub.close()


def test_publish_utf8_and_base64(admin):
    sub = PahoClient(HOST, admin.port, client_id="adm-pub-sub")
    sub.connect()
    sub.subscribe("adm/pub/#", qos=1)
    try:
        assert publish(admin, topic="adm/pub/a", payload="héllo", qos=1) == (
            200, {"published": "adm/pub/a"})
        message = sub.get_message()
        assert (message.topic, message.payload, message.qos) == ("adm/pub/a", "héllo".encode(), 1)
        raw = bytes(range(256))
        status, _ = publish(admin, topic="adm/pub/b", payload=base64.b64encode(raw).decode(),
                            payload_encoding="base64")
        assert status == 200
        message = sub.get_message()
        assert (message.topic, message.payload) == ("adm/pub/b", raw)
    finally:
        sub.close()


def test_retained_list_get_delete(admin):
    for i in range(5):
        assert publish(admin, topic=f"adm/ret/{i}", payload="x" * (i + 1), retain=True)[0] == 200
    status, page = call(admin, "GET", "/api/v1/retained?limit=2")
    assert status == 200 and len(page["retained"]) == 2 and page["next_cursor"]
    topics, cursor = [], None
    while True:
        status, page = call(admin, "GET", "/api/v1/retained?limit=2"
                            + (f"&cursor={urllib.request.quote(cursor, safe='')}" if cursor else ""))
        assert status == 200
        topics += [r["topic"] for r in page["retained"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [t for t in topics if t.startswith("adm/ret/")] == [f"adm/ret/{i}" for i in range(5)]
    status, one = call(admin, "GET", "/api/v1/retained/adm%2Fret%2F3")
    assert (status, one) == (200, {"topic": "adm/ret/3", "qos": 0, "size": 4})
    # A topic's `/` may also stay unencoded in the path.
    status, body = call(admin, "DELETE", "/api/v1/retained/adm/ret/3")
    assert (status, body) == (200, {"deleted": "adm/ret/3"})
    deadline = time.monotonic() + 5
    while call(admin, "GET", "/api/v1/retained/adm/ret/3")[0] != 404:
        assert time.monotonic() < deadline, "deleted retained message still listed"
        time.sleep(0.05)
    status, body = call(admin, "DELETE", "/api/v1/retained/adm/ret/3")
    assert status == 404 and "adm/ret/3" in body["error"]


def test_kick_and_delete_session(admin):
    watcher = PahoClient(HOST, admin.port, client_id="adm-kick-watcher")
    watcher.connect()
    watcher.subscribe("adm/will/#")
    victim = PahoClient(HOST, admin.port, client_id="adm kick/victim", clean_session=False,
                        will=("adm/will/victim", b"bye", 0, False))
    victim.connect()
    victim.subscribe("adm/kick/#", qos=1)
    try:
        # A client id with a space and a slash, percent-encoded in the path.
        status, body = call(admin, "POST", "/api/v1/clients/adm%20kick%2Fvictim/kick", b"")
        assert (status, body) == (200, {"kicked": "adm kick/victim"})
        victim.wait_disconnect()
        message = watcher.get_message()
        assert (message.topic, message.payload) == ("adm/will/victim", b"bye")
        status, one = call(admin, "GET", "/api/v1/sessions/adm%20kick%2Fvictim")
        assert status == 200 and one["connected"] is False, "persistent: kept offline"
        status, body = call(admin, "POST", "/api/v1/clients/adm%20kick%2Fvictim/kick", b"")
        assert status == 404 and "no connected client" in body["error"]
        status, body = call(admin, "DELETE", "/api/v1/sessions/adm%20kick%2Fvictim")
        assert (status, body) == (200, {"deleted": "adm kick/victim"})
        assert call(admin, "GET", "/api/v1/sessions/adm%20kick%2Fvictim")[0] == 404
        assert call(admin, "DELETE", "/api/v1/sessions/adm%20kick%2Fvictim")[0] == 404
        # Deleted with its subscription: back with clean_session=0, it finds no session.
        back = RawConn(HOST, admin.port)
        assert back.connect("adm kick/victim", clean=False) == bytes([0, 0]), "session present = 0"
        back.close()
        assert call(admin, "GET", "/api/v1/clients/x/kick")[0] == 405
        assert call(admin, "POST", "/api/v1/clients/x", b"")[0] == 404
    finally:
        victim.close()
        watcher.close()


@pytest.mark.parametrize("spec, words", [
    (b"{not json", "bad JSON"),
    (b'{"payload": "x"}', "topic"),
    (b'{"topic": "a/#", "payload": "x"}', "invalid topic"),
    (b'{"topic": "", "payload": "x"}', "invalid topic"),
    (b'{"topic": "a", "qos": 3}', "qos"),
    (b'{"topic": "a", "payload": "***", "payload_encoding": "base64"}', "base64"),
    (b'{"topic": "a", "payload_encoding": "latin-1"}', "payload_encoding"),
    (b'{"topic": "a", "colour": "red"}', "colour"),
])
def test_bad_publish_is_400(admin, spec, words):
    status, body = call(admin, "POST", "/api/v1/publish", spec)
    assert status == 400 and words in body["error"], body


def test_bad_requests(admin):
    for query in ("limit=0", "limit=1001", "limit=ten", "page=2"):
        status, body = call(admin, "GET", "/api/v1/sessions?" + query)
        assert status == 400 and body["error"], query
    assert call(admin, "GET", "/api/v1/retained?limit=-1")[0] == 400
    assert call(admin, "GET", "/api/v1/retained/%zz")[0] == 400
    for path in ("/", "/api/v1/", "/api/v1/nothing", "/api/v2/info", "/api/v1/clients/x/y"):
        status, body = call(admin, "GET", path)
        assert status == 404 and body["error"], path
    status, body = call(admin, "POST", "/api/v1/info", b"{}")
    assert status == 405 and "GET" in body["error"]
    assert call(admin, "GET", "/api/v1/publish")[0] == 405
    assert call(admin, "PUT", "/api/v1/retained/a", b"{}")[0] == 405
    assert call(admin, "PUT", "/api/v1/sessions/x", b"")[0] == 405


def test_ctl(admin, amqtt_bin):
    ctl = Path(amqtt_bin).parent / "amqtt_ctl"
    if not ctl.is_file():
        build = subprocess.run(["cargo", "build", "--release", "--bin", "amqtt_ctl"],
                               cwd=Path(__file__).resolve().parents[2], capture_output=True,
                               text=True)
        assert build.returncode == 0, build.stderr[-3000:]

    def run(*args, token_file=admin.token_file):
        return subprocess.run([str(ctl), "--url", admin.url, "--token-file", str(token_file),
                               *args], capture_output=True, text=True, timeout=20)

    out = run("info")
    assert out.returncode == 0 and "shards   2" in out.stdout, out.stderr
    out = run("--json", "info")
    assert json.loads(out.stdout)["shards"] == 2
    assert run("publish", "adm/ctl/t", "v", "--retain", "--qos", "1").returncode == 0
    out = run("retained", "list", "--all")
    assert out.returncode == 0 and "adm/ctl/t" in out.stdout
    out = run("--json", "retained", "get", "adm/ctl/t")
    assert json.loads(out.stdout)["retained"] == [{"topic": "adm/ctl/t", "qos": 1, "size": 1}]
    assert run("retained", "delete", "adm/ctl/t").returncode == 0
    out = run("retained", "delete", "adm/ctl/t")
    assert out.returncode == 1 and "no retained message" in out.stderr and "404" in out.stderr
    conn = RawConn(HOST, admin.port)
    conn.connect("adm-ctl-client", clean=False)
    try:
        out = run("clients", "--limit", "1", "--all")
        assert out.returncode == 0 and "adm-ctl-client" in out.stdout, out.stderr
        out = run("--json", "sessions", "--limit", "1")
        assert len(json.loads(out.stdout)["sessions"]) == 1
        out = run("session", "adm-ctl-client")
        assert "adm-ctl-client" in out.stdout and "true" in out.stdout
        out = run("kick", "adm-ctl-client")
        assert out.returncode == 0 and "disconnected adm-ctl-client" in out.stdout, out.stderr
        conn.wait_closed()
        out = run("kick", "adm-ctl-client")
        assert out.returncode == 1 and "no connected client" in out.stderr
        assert run("session", "adm-ctl-client", "--delete").returncode == 0
        out = run("session", "adm-ctl-client")
        assert out.returncode == 1 and "no session" in out.stderr
    finally:
        conn.close()
    wrong = admin.token_file.parent / "wrong-token"
    wrong.write_text("nope\n")
    out = run("info", token_file=wrong)
    assert out.returncode == 1 and "wrong token (401" in out.stderr
    out = run("info", token_file=admin.token_file.parent / "missing")
    assert out.returncode == 1 and "cannot read" in out.stderr
    out = subprocess.run([str(ctl), "--url", f"http://{HOST}:{free_port()}", "--token-file",
                          str(admin.token_file), "info"], capture_output=True, text=True,
                         timeout=20)
    assert out.returncode == 1 and "amqtt_ctl:" in out.stderr


@pytest.mark.parametrize("content, words", [(None, "cannot read"), ("\n", "holds no token")])
def test_start_fails_without_a_token(amqtt_bin, tmp_path, content, words):
    token_file = tmp_path / "token"
    if content is not None:
        token_file.write_text(content)
    config = tmp_path / "broker.yaml"
    config.write_text(
        f"listeners:\n  default:\n    type: tcp\n    bind: {HOST}:{free_port()}\n"
        f"shards: 1\npin_shards: false\nadmin:\n  token_file: {token_file}\n")
    out = subprocess.run([str(amqtt_bin), "-c", str(config)], capture_output=True, text=True,
                         timeout=20)
    assert out.returncode != 0
    assert "admin.token_file" in out.stderr and words in out.stderr, out.stderr
