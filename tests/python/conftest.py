"""Fixtures for the Python interoperability tests: a real `amqtt` broker process per test.

The `broker` fixture is parametrized over 1 and 2 shards, so every test runs against both. It
starts the release binary (AMQTT_BIN overrides the path; a missing binary is built with cargo) on
a free loopback port with a temporary config (a test marked `@pytest.mark.broker_yaml("key: value\\n")`
gets those lines added), waits until the port accepts and a CONNECT gets its CONNACK, yields
`Broker(host, port)`, and on teardown sends SIGTERM and requires exit status 0 within 5 s: a clean
shutdown is part of every test. The broker's stderr (debug log) goes to a temp file that is shown
with any failure.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import NamedTuple

import pytest

from mqtt_helpers import CONNECT_TIMEOUT, DISCONNECT_PACKET, PahoClient, RawConn, accepts, free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
STARTUP_TIMEOUT = 10.0
SHUTDOWN_TIMEOUT = 5.0


class Broker(NamedTuple):
    host: str
    port: int


@pytest.fixture(scope="session")
def amqtt_bin() -> Path:
    override = os.environ.get("AMQTT_BIN")
    if override:
        path = Path(override)
        if not path.is_file():
            pytest.fail(f"AMQTT_BIN={override} is not a file", pytrace=False)
        return path
    path = REPO_ROOT / "target" / "release" / "amqtt"
    if not path.is_file():
        build = subprocess.run(
            ["cargo", "build", "--release", "--bin", "amqtt"],
            cwd=REPO_ROOT, capture_output=True, text=True)
        if build.returncode != 0 or not path.is_file():
            pytest.fail("cargo build --release --bin amqtt failed:\n" + build.stderr[-5000:],
                        pytrace=False)
    return path


def _answers_connect(port: int, timeout: float) -> bool:
    """True once the broker answers a CONNECT: the kernel accepts TCP connections as soon as the
    listener is bound, before the shards run, so an open port alone does not mean ready."""
    try:
        conn = RawConn(HOST, port, timeout=timeout)
    except OSError:
        return False
    try:
        ack = conn.connect("conftest-ready-probe", timeout=timeout)
        conn.send(DISCONNECT_PACKET)
        return ack == bytes([0, 0])
    except (OSError, AssertionError, TimeoutError):
        return False
    finally:
        conn.close()


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "broker_yaml(text): configuration lines added to the broker fixture's config")
    config.addinivalue_line(
        "markers", "mqtt5_amqtt_yaml(text): lines added to amqtt's config by the v5broker fixture")
    config.addinivalue_line(
        "markers", "mqtt5_mosquitto_conf(text): lines added to Mosquitto's config (v5broker)")
    config.addinivalue_line(
        "markers", "mqtt5_server_choice(reason): a v5broker test not run against Mosquitto")


# Modules whose subject does not touch the shards' runtime (password hashing, deployment files,
# configuration parsing, log files, JWT checks, the source tree's layering): CI's second pass
# (AMQTT_RUNTIME=epoll, the fallback executor) leaves them to the first; what it re-runs is what
# goes through sockets, timers, files and the blocking helper thread (the HTTP plugins' requests,
# password checks in test_acl.py...).
RUNTIME_INDEPENDENT = {
    "test_passwords.py", "test_deploy.py", "test_deploy_cluster.py", "test_architecture.py",
    "test_amqtt_configs.py", "test_logging.py", "test_jwt_auth.py",
}


def pytest_collection_modifyitems(config, items):
    if os.environ.get("AMQTT_RUNTIME") != "epoll":
        return
    skip = pytest.mark.skip(reason="runtime-independent: runs in the first pass (AMQTT_RUNTIME unset)")
    for item in items:
        if item.path.name in RUNTIME_INDEPENDENT:
            item.add_marker(skip)


def _config(port: int, shards: int, extra: str) -> str:
    return (
        "listeners:\n"
        "  default:\n"
        "    type: tcp\n"
        f"    bind: {HOST}:{port}\n"
        f"shards: {shards}\n"
        "pin_shards: false\n"
        "sys_interval: 0\n"
        f"connect_timeout: {CONNECT_TIMEOUT}\n"
        + extra
    )


def _start(amqtt_bin: Path, workdir: Path, shards: int, attempt: int, extra: str):
    port = free_port()
    config = workdir / f"amqtt-{attempt}.yaml"
    config.write_text(_config(port, shards, extra))
    log_path = workdir / f"amqtt-{attempt}.stderr.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen([str(amqtt_bin), "-d", "-c", str(config)],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    log.close()
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return None, port, log_path, proc
        if accepts(port) and _answers_connect(port, max(deadline - time.monotonic(), 0.1)):
            return proc, port, log_path, None
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    pytest.fail(f"broker did not answer CONNECT on {HOST}:{port} within {STARTUP_TIMEOUT}s:\n"
                + log_path.read_text(errors="replace"), pytrace=False)


@pytest.fixture(params=[1, 2], ids=["shards1", "shards2"])
def broker(request, amqtt_bin, tmp_path_factory):
    shards = request.param
    marker = request.node.get_closest_marker("broker_yaml")
    extra = marker.args[0] if marker else ""
    workdir = tmp_path_factory.mktemp(f"amqtt-shards{shards}")
    request.node._amqtt_logs = getattr(request.node, "_amqtt_logs", [])
    proc = None
    for attempt in range(3):
        # A broker that exits at start most likely lost its port to another process in between
        # picking and binding it: try another port.
        proc, port, log_path, dead = _start(amqtt_bin, workdir, shards, attempt, extra)
        request.node._amqtt_logs.append(log_path)
        if proc is not None:
            break
    if proc is None:
        pytest.fail(f"broker exited at start with status {dead.returncode} (3 attempts):\n"
                    + log_path.read_text(errors="replace"), pytrace=False)
    request.node._amqtt_logs = [log_path]

    yield Broker(HOST, port)

    if proc.poll() is not None:
        pytest.fail(f"broker exited during the test with status {proc.returncode}",
                    pytrace=False)
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(timeout=SHUTDOWN_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"broker did not exit within {SHUTDOWN_TIMEOUT}s of SIGTERM", pytrace=False)
    assert rc == 0, f"broker exited with status {rc} after SIGTERM"


@pytest.fixture
def clients():
    """A list to put PahoClient objects in, for tests that start their own broker; whatever is
    in it is closed at teardown."""
    made: list[PahoClient] = []
    yield made
    for c in made:
        c.close()


@pytest.fixture
def client_factory(broker):
    """Creates PahoClient objects for the broker; closes whatever is left at teardown."""
    clients: list[PahoClient] = []

    def make(client_id: str = "", **kwargs) -> PahoClient:
        c = PahoClient(broker.host, broker.port, client_id=client_id, **kwargs)
        clients.append(c)
        return c

    def connected(client_id: str = "", **kwargs) -> PahoClient:
        c = make(client_id, **kwargs)
        rc, _ = c.connect()
        assert rc == 0, f"CONNACK return code {rc} for {client_id!r}"
        return c

    make.connected = connected
    yield make
    for c in clients:
        c.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for log_path in getattr(item, "_amqtt_logs", []):
            try:
                text = log_path.read_text(errors="replace")
            except OSError as e:
                text = f"(cannot read {log_path}: {e})"
            if len(text) > 60_000:
                text = "...(first part cut)...\n" + text[-60_000:]
            report.sections.append((f"amqtt broker stderr ({log_path})", text))
