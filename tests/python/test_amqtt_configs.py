"""aMQTT's own default broker files (tests/data/amqtt/, copied unchanged) run our broker.

For each file: start the release binary on it and do a publish/subscribe round trip at QoS 0, 1
and 2 with paho, plus one CONNECT with a user name (anonymous and named clients are both
accepted by these defaults). The only change made to a file is the documented substitution of
tests/data/amqtt/README.md: `bind: 0.0.0.0:1883` becomes `bind: 127.0.0.1:<free port>`, so the
test does not need port 1883. A file that does not bind 0.0.0.0:1883 fails the test (the
substitution would silently not apply).
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import HOST, REPO_ROOT, SHUTDOWN_TIMEOUT, STARTUP_TIMEOUT, _answers_connect
from mqtt_helpers import PahoClient, accepts, free_port

DATA = REPO_ROOT / "tests" / "data" / "amqtt"
FILES = sorted(DATA.glob("*.yaml"))
BIND = "bind: 0.0.0.0:1883"


def test_every_amqtt_default_file_is_here():
    assert [f.name for f in FILES] == [
        "0.10-default_broker.yaml",
        "0.11-legacy-default_broker.yaml",
        "current-default_broker.yaml",
    ]


def _start(amqtt_bin: Path, source: Path, workdir: Path):
    text = source.read_text()
    assert text.count(BIND) == 1, f"{source.name}: expected one '{BIND}' to substitute"
    for _attempt in range(3):
        port = free_port()
        config = workdir / source.name
        config.write_text(text.replace(BIND, f"bind: {HOST}:{port}"))
        log_path = workdir / f"{source.stem}.stderr.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([str(amqtt_bin), "-c", str(config)],
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            if accepts(port) and _answers_connect(port, 1.0):
                return proc, port, log_path
            time.sleep(0.02)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            pytest.fail(f"{source.name}: no CONNACK within {STARTUP_TIMEOUT}s:\n"
                        + log_path.read_text(errors="replace"), pytrace=False)
        # Exited: a configuration error fails at once; a lost port race is retried.
        if "Address already in use" not in log_path.read_text(errors="replace"):
            break
    pytest.fail(f"{source.name}: the broker exited with status {proc.returncode}:\n"
                + log_path.read_text(errors="replace"), pytrace=False)


def _stop(proc: subprocess.Popen) -> int | None:
    """SIGTERM; the exit status, or None (and the process killed) after SHUTDOWN_TIMEOUT."""
    proc.send_signal(signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        return proc.wait(timeout=SHUTDOWN_TIMEOUT)
    proc.kill()
    proc.wait()
    return None


@pytest.mark.parametrize("source", FILES, ids=[f.stem for f in FILES])
def test_broker_serves_on_amqtt_default_file(amqtt_bin, tmp_path, source):
    proc, port, log_path = _start(amqtt_bin, source, tmp_path)
    clients = []
    try:
        sub = PahoClient(HOST, port, client_id="cfg-sub")
        clients.append(sub)
        assert sub.connect()[0] == 0
        assert sub.subscribe("cfg/#", 2) == [2]
        named = PahoClient(HOST, port, client_id="cfg-named")
        clients.append(named)
        named.client.username_pw_set("alice", "secret")
        assert named.connect()[0] == 0, "a named client is accepted by aMQTT's defaults"
        for qos in (0, 1, 2):
            named.publish(f"cfg/q{qos}", f"hello {qos}".encode(), qos=qos)
            msg = sub.get_message()
            assert (msg.topic, msg.payload, msg.qos) == (f"cfg/q{qos}", f"hello {qos}".encode(), qos)
    finally:
        for c in clients:
            c.close()
        rc = _stop(proc)
    assert rc == 0, f"{source.name}: exit status {rc} after SIGTERM:\n" + log_path.read_text(
        errors="replace")
