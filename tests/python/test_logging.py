"""The broker's log as an operator uses it (README "Logs"): `log_file` / `--log-file` with reopen
on SIGHUP as logrotate needs it, `--log-format json`, journald-style lines when stderr is the
systemd journal, and a log file that cannot be opened refused at start with the file, the key and
the reason (exit 2).

Each test starts its own broker process (2 shards, so lines come from several threads) on a free
loopback port, and connects real MQTT clients to it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from mqtt_helpers import (DISCONNECT_PACKET, RawConn, free_port, kill_running, stop_broker,
                          wait_for_text)

HOST = "127.0.0.1"
TIMEOUT = 10.0
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")


def _config(port: int, extra: str = "") -> str:
    return (f"listeners:\n  default:\n    type: tcp\n    bind: {HOST}:{port}\n"
            f"shards: 2\npin_shards: false\nsys_interval: 0\n{extra}")


class Broker:
    """`amqtt -c broker.yaml ARGS` with stdout and stderr in `stderr.log`."""

    def __init__(self, amqtt_bin: Path, workdir: Path, config: str, args: list[str] = (),
                 env: dict[str, str] | None = None, stderr=None):
        self.port = int(re.search(r"bind: [\d.]+:(\d+)", config).group(1))
        (workdir / "broker.yaml").write_text(config)
        self.stderr_path = workdir / "stderr.log"
        own = stderr is None
        if own:
            stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen([str(amqtt_bin), "-c", "broker.yaml", *args], cwd=workdir,
                                     stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr,
                                     env={**os.environ, **(env or {})})
        if own:
            stderr.close()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"broker exited with {self.proc.returncode}:\n{self.stderr()}",
                            pytrace=False)
            if self.client("ready-probe"):
                return
            time.sleep(0.05)
        pytest.fail(f"broker never answered CONNECT:\n{self.stderr()}", pytrace=False)

    def client(self, client_id: str) -> bool:
        """Connects `client_id`, disconnects; whether the broker accepted it."""
        try:
            conn = RawConn(HOST, self.port, timeout=1.0)
        except OSError:
            return False
        try:
            accepted = conn.connect(client_id, timeout=2.0) == bytes([0, 0])
            conn.send(DISCONNECT_PACKET)
            return accepted
        except (OSError, AssertionError, TimeoutError):
            return False
        finally:
            conn.close()

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def stop(self) -> None:
        """SIGTERM; exit status 0 required."""
        stop_broker(self.proc, self.stderr_path, TIMEOUT)


@pytest.fixture
def brokers(amqtt_bin, tmp_path):
    started: list[Broker] = []

    def start(config: str, args: list[str] = (), env=None, stderr=None, ready=True) -> Broker:
        broker = Broker(amqtt_bin, tmp_path, config, list(args), env, stderr)
        started.append(broker)
        if ready:
            broker.wait_ready()
        return broker

    yield start
    kill_running(broker.proc for broker in started)


def test_log_file_is_reopened_on_sighup_after_logrotate_renamed_it(brokers, tmp_path):
    port = free_port()
    broker = brokers(_config(port, "log_file: amqtt.log\n"))
    log, rotated = tmp_path / "amqtt.log", tmp_path / "amqtt.log.1"
    assert broker.client("before-rotation")
    wait_for_text(log, "client 'before-rotation'")
    held = RawConn(HOST, port)
    assert held.connect("held-across-rotation") == bytes([0, 0])

    # logrotate's default (`create`): rename, then tell the broker.
    log.rename(rotated)
    assert broker.client("after-rename")
    wait_for_text(rotated, "client 'after-rename'")
    assert not log.exists()
    broker.proc.send_signal(signal.SIGHUP)
    wait_for_text(log, "SIGHUP received: log file amqtt.log reopened")

    # Still serving: the held connection answers, a new client gets in and is logged in the new
    # file, from whichever shard it lands on.
    held.send(bytes([0xC0, 0]))
    assert held.recv_packet() == (0xD0, b"")
    held.close()
    assert broker.client("after-sighup")
    new = wait_for_text(log, "client 'after-sighup'")
    old = rotated.read_text()
    assert "before-rotation" in old and "after-rename" in old
    assert "after-sighup" not in old and "before-rotation" not in new
    assert TIMESTAMP.match(new[1:]), new

    # A second rotation works the same way.
    log.rename(tmp_path / "amqtt.log.2")
    broker.proc.send_signal(signal.SIGHUP)
    wait_for_text(log, "SIGHUP received")
    broker.stop()
    assert "stopped" in log.read_text()
    assert broker.stderr() == "", "lines went to stderr instead of the log file"


def test_log_format_json_writes_one_object_per_line(brokers):
    port = free_port()
    broker = brokers(_config(port), ["--log-format", "json"])
    # Quotes and backslashes in a client id must stay valid JSON.
    assert broker.client('json "quoted" \\ id')
    wait_for_text(broker.stderr_path, "quoted")
    broker.stop()
    lines = broker.stderr().splitlines()
    assert len(lines) >= 5
    for line in lines:
        record = json.loads(line)
        assert set(record) == {"timestamp", "level", "target", "message"}, line
        assert record["level"] in {"ERROR", "WARN", "INFO", "DEBUG", "TRACE"}
        assert record["target"].startswith("amqtt"), line
        assert record["timestamp"].endswith("Z"), line
        at = datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00"))
        assert abs((datetime.now(timezone.utc) - at).total_seconds()) < 60
    messages = [json.loads(line)["message"] for line in lines]
    assert any("client 'json \"quoted\" \\ id'" in m for m in messages), messages
    assert messages[-1] == "stopped"


def _journal_stream(file) -> str:
    stat = os.fstat(file.fileno())
    return f"{stat.st_dev}:{stat.st_ino}"


def test_under_systemd_lines_carry_priorities_and_no_timestamp(brokers, tmp_path):
    """systemd sets JOURNAL_STREAM to stderr's device:inode; only then, and only with the default
    `log_format: auto`, lines are journald's `<N>` lines."""
    port = free_port()
    stderr_path = tmp_path / "stderr.log"
    with open(stderr_path, "wb") as stderr:
        broker = brokers(_config(port), env={"JOURNAL_STREAM": _journal_stream(stderr)},
                         stderr=stderr)
    broker.proc.send_signal(signal.SIGHUP)
    wait_for_text(stderr_path, "SIGHUP received")
    broker.stop()
    lines = stderr_path.read_text().splitlines()
    assert lines and all(line.startswith("<6>[INFO ") for line in lines), lines
    assert not any(TIMESTAMP.search(line) for line in lines), lines


@pytest.mark.parametrize("case", ["inherited", "text"])
def test_timestamps_stay_unless_stderr_is_the_journal_or_text_is_asked(brokers, tmp_path, case):
    """A JOURNAL_STREAM that names another stream (inherited by a shell started from a service)
    changes nothing; `--log-format text` keeps timestamps on the journal too."""
    port = free_port()
    stderr_path = tmp_path / "stderr.log"
    with open(stderr_path, "wb") as stderr:
        stream = _journal_stream(stderr)
        args, env = [], {"JOURNAL_STREAM": stream}
        if case == "inherited":
            env["JOURNAL_STREAM"] = stream.split(":")[0] + ":1"
        else:
            args = ["--log-format", "text"]
        broker = brokers(_config(port), args, env=env, stderr=stderr)
    broker.stop()
    lines = stderr_path.read_text().splitlines()
    assert lines and all(line.startswith("[") and TIMESTAMP.match(line[1:]) for line in lines), lines


def test_a_log_file_that_cannot_be_opened_fails_at_start(brokers, tmp_path):
    port = free_port()
    broker = brokers(_config(port, "log_file: missing/amqtt.log\n"), ready=False)
    assert broker.proc.wait(timeout=TIMEOUT) == 2
    assert broker.stderr().strip() == (
        "amqtt: broker.yaml: key 'log_file': cannot open the log file missing/amqtt.log for "
        "appending: No such file or directory (os error 2)")

    flag = brokers(_config(port), ["--log-file", str(tmp_path / "missing" / "x.log")], ready=False)
    assert flag.proc.wait(timeout=TIMEOUT) == 2
    assert "amqtt: --log-file: cannot open the log file" in flag.stderr()
    assert "No such file or directory" in flag.stderr()


def test_an_error_that_stops_the_broker_is_in_the_log_file_too(brokers, tmp_path):
    port = free_port()
    with socket.create_server((HOST, port)):
        broker = brokers(_config(port, "log_file: amqtt.log\n"), ready=False)
        assert broker.proc.wait(timeout=TIMEOUT) == 1
    [error] = [line for line in (tmp_path / "amqtt.log").read_text().splitlines()
               if " ERROR " in line]
    assert f"127.0.0.1:{port}" in error, error
    assert broker.stderr().startswith("amqtt: ") and f"127.0.0.1:{port}" in broker.stderr()
