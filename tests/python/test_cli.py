"""The broker binary as an operator meets it: signals, start-up log lines, exit codes, options.

- SIGHUP (sent by administrators and logrotate) reopens the log file (here there is none: stderr)
  and does not stop the broker: it keeps serving the clients it has and accepts new ones
  (test_logging.py has the log file side).
- The start-up lines say which configuration was loaded, each listener's transport, and warn when
  a listener on a non-loopback address lets clients in without credentials.
- A TLS client that connects by IP address logs no rustls warning; a failed TLS handshake logs
  one INFO line with the peer's address and the reason.
- Every bad configuration exits 2 (file, TLS material, password file); a port in use exits 1;
  mosquitto's -v and -p get a message saying what to use instead.

Each test starts its own broker process at the default log level (info), as an operator runs it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from mqtt_helpers import DISCONNECT_PACKET, RawConn, free_port, packet

HOST = "127.0.0.1"
TIMEOUT = 10.0
PINGREQ = packet(0xC0, b"")


class Running:
    """A broker process started with `-c config`, its stderr in a file."""

    def __init__(self, amqtt_bin: Path, workdir: Path, config: str, probe_port: int | None):
        self.config = workdir / "broker.yaml"
        self.config.write_text(config)
        self.log_path = workdir / "broker.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([str(amqtt_bin), "-c", str(self.config)],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        if probe_port is not None:
            self._wait_ready(probe_port)

    def _wait_ready(self, port: int) -> None:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"broker exited with {self.proc.returncode}:\n{self.log()}",
                            pytrace=False)
            try:
                conn = RawConn(HOST, port, timeout=1.0)
            except OSError:
                time.sleep(0.05)
                continue
            try:
                if conn.connect("test-cli-probe", timeout=2.0) == bytes([0, 0]):
                    conn.send(DISCONNECT_PACKET)
                    return
            except (OSError, AssertionError, TimeoutError):
                pass
            finally:
                conn.close()
            time.sleep(0.05)
        self.proc.kill()
        pytest.fail(f"broker never answered CONNECT on port {port}:\n{self.log()}", pytrace=False)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.log()
            if text in log:
                return log
            time.sleep(0.05)
        pytest.fail(f"{text!r} never appeared in the broker log:\n{self.log()}", pytrace=False)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail("broker did not stop within 10 s of SIGTERM", pytrace=False)


@pytest.fixture
def start(amqtt_bin, tmp_path):
    started: list[Running] = []

    def run(config: str, probe_port: int | None = None) -> Running:
        workdir = tmp_path / f"broker{len(started)}"
        workdir.mkdir()
        broker = Running(amqtt_bin, workdir, config, probe_port)
        started.append(broker)
        return broker

    yield run
    for broker in started:
        if broker.proc.poll() is None:
            broker.proc.kill()
            broker.proc.wait()


def _tcp_config(port: int, bind_host: str = HOST, extra: str = "") -> str:
    return (f"listeners:\n  default:\n    type: tcp\n    bind: {bind_host}:{port}\n"
            f"shards: 2\npin_shards: false\nsys_interval: 0\n{extra}")


def test_sighup_is_logged_and_the_broker_keeps_serving(start):
    port = free_port()
    broker = start(_tcp_config(port), probe_port=port)
    held = RawConn(HOST, port)
    assert held.connect("held-across-hup") == bytes([0, 0])

    broker.proc.send_signal(signal.SIGHUP)
    broker.wait_log("SIGHUP received")
    # The unchanged file reloaded (test_reload.py has the changes).
    broker.wait_log("configuration reloaded from")
    broker.proc.send_signal(signal.SIGHUP)
    time.sleep(0.3)
    assert broker.proc.poll() is None, f"broker died of SIGHUP:\n{broker.log()}"

    # The connection made before the signals still works, and new clients get in.
    held.send(PINGREQ)
    assert held.recv_packet() == (0xD0, b""), "no PINGRESP on the connection held across SIGHUP"
    fresh = RawConn(HOST, port)
    assert fresh.connect("after-hup") == bytes([0, 0])
    fresh.close()
    held.close()
    assert broker.log().count("SIGHUP received") == 2
    assert broker.stop() == 0


def test_startup_names_the_configuration_and_warns_about_open_anonymous_access(start):
    open_port, local_port = free_port(), free_port()
    config = (f"listeners:\n  default:\n    type: tcp\n    bind: 0.0.0.0:{open_port}\n"
              f"  local:\n    type: tcp\n    bind: {HOST}:{local_port}\n"
              "shards: 1\npin_shards: false\nsys_interval: 0\n")
    broker = start(config, probe_port=local_port)
    log = broker.log()
    assert f"configuration: {broker.config}" in log, log
    assert f"Listener 'default' bind to 0.0.0.0:{open_port} (tcp, max_connections=-1)" in log, log
    warnings = [line for line in log.splitlines() if "without credentials" in line]
    assert len(warnings) == 1, log
    assert " WARN " in warnings[0] and "'default'" in warnings[0], warnings
    assert broker.stop() == 0

    # Loopback only, or credentials required: no warning.
    port = free_port()
    passwd = broker.config.parent / "passwd"
    passwd.write_text("")
    closed = start(_tcp_config(port, "0.0.0.0", "auth:\n  allow-anonymous: false\n"
                               f"  password-file: {passwd}\n"), probe_port=None)
    closed.wait_log("started with")
    assert "without credentials" not in closed.log(), closed.log()
    assert closed.stop() == 0


def test_default_configuration_is_named_in_the_log(amqtt_bin, tmp_path):
    # The built-in defaults bind 0.0.0.0:1883, which this machine may already use: the line about
    # the configuration comes before any bind, so a port clash does not hide it.
    log_path = tmp_path / "log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(amqtt_bin)], stdin=subprocess.DEVNULL, stdout=log,
                                stderr=log)
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and proc.poll() is None:
        text = log_path.read_text(errors="replace")
        if "started with" in text:
            break
        time.sleep(0.05)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=TIMEOUT)
    text = log_path.read_text(errors="replace")
    assert "configuration: built-in defaults" in text, text
    if "started with" in text:
        assert rc == 0
        assert "accepts clients without credentials" in text, text
    else:
        assert rc == 1 and "Address already in use" in text, text


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """A CA and a server certificate for localhost / 127.0.0.1."""
    if not shutil.which("openssl"):
        pytest.fail("openssl is required to make test certificates", pytrace=False)
    d = tmp_path_factory.mktemp("cli-certs")

    def run(*cmd):
        subprocess.run(cmd, check=True, capture_output=True)

    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", "/CN=amqtt cli test CA", "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"),
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
        "-keyout", str(d / "server.key"), "-out", str(d / "server.csr"))
    (d / "server.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                                  "extendedKeyUsage=serverAuth\n")
    run("openssl", "x509", "-req", "-in", str(d / "server.csr"), "-CA", str(d / "ca.pem"),
        "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-days", "2",
        "-extfile", str(d / "server.ext"), "-out", str(d / "server.pem"))
    return d


def test_tls_listeners_log_their_transport_and_failed_handshakes_not_sni(start, certs):
    mosquitto_pub = shutil.which("mosquitto_pub")
    if not mosquitto_pub:
        pytest.fail("mosquitto_pub missing: apt-get install mosquitto-clients (.ci/run does)",
                    pytrace=False)
    ports = {name: free_port() for name in ["default", "tls", "ws", "wss"]}
    tls = f"    ssl: on\n    certfile: {certs}/server.pem\n    keyfile: {certs}/server.key\n"
    config = (
        "listeners:\n"
        f"  default:\n    bind: {HOST}:{ports['default']}\n"
        f"  tls:\n    bind: {HOST}:{ports['tls']}\n{tls}"
        f"  ws:\n    bind: {HOST}:{ports['ws']}\n    type: ws\n"
        f"  wss:\n    bind: {HOST}:{ports['wss']}\n    type: ws\n{tls}"
        "shards: 2\npin_shards: false\nsys_interval: 0\n")
    broker = start(config, probe_port=ports["default"])
    log = broker.log()
    for name, label in [("default", "tcp"), ("tls", "tcp+tls"), ("ws", "ws"), ("wss", "wss")]:
        assert f"Listener '{name}' bind to {HOST}:{ports[name]} ({label}," in log, log

    # mosquitto_pub (OpenSSL) sends the IP address as SNI: rustls's "Illegal SNI" warning is
    # filtered out by default.
    pub = subprocess.run([mosquitto_pub, "-h", HOST, "-p", str(ports["tls"]), "--cafile",
                          str(certs / "ca.pem"), "-t", "t", "-m", "x", "-q", "1"],
                         capture_output=True, text=True, timeout=TIMEOUT)
    assert pub.returncode == 0, pub.stderr
    broker.wait_log("on listener 'tls'")

    # A plain MQTT client on the TLS port: one INFO line with its address and the reason.
    with socket.create_connection((HOST, ports["tls"]), timeout=TIMEOUT) as plain:
        local = plain.getsockname()
        plain.sendall(bytes([0x10, 0x0C, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 60, 0, 0]))
        plain.settimeout(TIMEOUT)
        try:
            while plain.recv(4096):
                pass
        except OSError:
            pass
    line = broker.wait_log(f"TLS handshake with {local[0]}:{local[1]} failed")
    failed = [x for x in line.splitlines() if "TLS handshake with" in x]
    assert len(failed) == 1 and " INFO " in failed[0], failed
    assert "Illegal SNI" not in broker.log(), broker.log()
    assert broker.stop() == 0


def _run_bin(amqtt_bin: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(amqtt_bin), *args], capture_output=True, text=True,
                          timeout=TIMEOUT, stdin=subprocess.DEVNULL)


def test_every_bad_configuration_exits_2_and_a_busy_port_exits_1(amqtt_bin, tmp_path):
    missing = _run_bin(amqtt_bin, "-c", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2, missing.stderr
    assert "nope.yaml" in missing.stderr

    port = free_port()
    listener = f"listeners:\n  default:\n    bind: {HOST}:{port}\n"
    for name, text, named in [
        ("tls.yaml", listener + f"    ssl: on\n    certfile: {tmp_path}/missing.pem\n"
                                f"    keyfile: {tmp_path}/missing.key\n", "missing.pem"),
        ("auth.yaml", listener + f"auth:\n  password-file: {tmp_path}/no-such-passwd\n",
         "no-such-passwd"),
        ("persistence.yaml", listener + "persistence:\n  enabled: true\n  fsync: sometimes\n",
         "persistence.yaml: key 'persistence.fsync': unknown value `sometimes`"),
    ]:
        (tmp_path / name).write_text(text)
        result = _run_bin(amqtt_bin, "-c", str(tmp_path / name))
        assert result.returncode == 2, result.stderr
        assert named in result.stderr, result.stderr
        assert "Listener 'default' bind to" not in result.stderr, "listener logged before it failed"

    (tmp_path / "plain.yaml").write_text(listener)
    result = subprocess.run([str(amqtt_bin), "-c", str(tmp_path / "plain.yaml")],
                            capture_output=True, text=True, timeout=TIMEOUT,
                            stdin=subprocess.DEVNULL, env={**os.environ, "AMQTT_RUNTIME": "bogus"})
    assert result.returncode == 2, result.stderr
    assert "AMQTT_RUNTIME" in result.stderr, result.stderr
    assert "Listener 'default' bind to" not in result.stderr, "listener logged before it failed"

    with socket.socket() as busy:
        busy.bind((HOST, 0))
        busy.listen()
        taken = tmp_path / "taken.yaml"
        taken.write_text(f"listeners:\n  default:\n    bind: {HOST}:{busy.getsockname()[1]}\n"
                         "shards: 1\npin_shards: false\n")
        result = _run_bin(amqtt_bin, "-c", str(taken))
    assert result.returncode == 1, result.stderr
    assert "cannot bind listener 'default'" in result.stderr, result.stderr


def test_mosquitto_habits_get_a_pointer_and_help_documents_exit_codes(amqtt_bin):
    verbose = _run_bin(amqtt_bin, "-v")
    assert verbose.returncode == 2
    assert "use -d" in verbose.stderr, verbose.stderr

    port = _run_bin(amqtt_bin, "-p", "1884")
    assert port.returncode == 2
    assert "bind: 0.0.0.0:1884" in port.stderr and "-c" in port.stderr, port.stderr

    help_text = _run_bin(amqtt_bin, "--help")
    assert help_text.returncode == 0
    assert "not daemonize" in help_text.stdout, help_text.stdout
    assert "Exit status" in help_text.stdout and "2 bad command line" in help_text.stdout
    assert "SIGHUP" in help_text.stdout


def test_a_low_locked_memory_limit_gets_advice_for_the_command_line(amqtt_bin, tmp_path):
    """Below 512 KiB of RLIMIT_MEMLOCK (hard limit too, so the broker cannot raise it) the broker
    warns with what a command-line user does about it; glommio then refuses to start (exit 1), an
    epoll runtime may run instead (then it is stopped here)."""
    port = free_port()
    config = tmp_path / "broker.yaml"
    config.write_text(_tcp_config(port))
    log_path = tmp_path / "log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(["bash", "-c", f'ulimit -l 256 && exec "$0" -c "$1"',
                                 str(amqtt_bin), str(config)],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    deadline = time.monotonic() + TIMEOUT
    while proc.poll() is None and time.monotonic() < deadline:
        if "started with" in log_path.read_text(errors="replace"):
            proc.send_signal(signal.SIGTERM)
        time.sleep(0.05)
    if proc.poll() is None:
        proc.kill()
    rc = proc.wait(timeout=TIMEOUT)
    text = log_path.read_text(errors="replace")
    warning = [line for line in text.splitlines() if "locked-memory limit 256 KiB is below" in line]
    assert len(warning) == 1 and " WARN " in warning[0], text
    assert "ulimit -l" in warning[0] and "LimitMEMLOCK=infinity" in warning[0], warning
    if "started with" not in text:
        assert rc == 1, text
        assert "ulimit -l" in text.split("locked-memory limit 256 KiB")[-1], text
