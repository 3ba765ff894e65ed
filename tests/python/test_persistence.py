"""Persistence across restarts and `kill -9`: the release broker with `persistence:` on, real
clients (paho-mqtt, raw sockets), a real data directory, and real SIGKILL / SIGTERM.

Every test starts brokers itself (the shared `broker` fixture has no persistence) on a data
directory of its own, and stops them by PID.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from mqtt_helpers import (PUBACK, PUBREC, PUBCOMP, PahoClient, RawConn, accepts, free_port,
                          packet, publish_packet)

HOST = "127.0.0.1"


class PersistentBroker:
    """One broker process on `data_dir`; `start` again after `kill`/`stop` to restart it."""

    def __init__(self, amqtt_bin: Path, workdir: Path, shards: int = 1, fsync: str = "interval",
                 extra: str = ""):
        self.amqtt_bin = amqtt_bin
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.shards = shards
        self.fsync = fsync
        self.extra = extra
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.runs = 0

    def config_text(self) -> str:
        return (
            "listeners:\n"
            "  default:\n"
            "    type: tcp\n"
            f"    bind: {HOST}:{self.port}\n"
            f"shards: {self.shards}\n"
            "pin_shards: false\n"
            "sys_interval: 0\n"
            "persistence:\n"
            "  enabled: true\n"
            f"  dir: {self.data_dir}\n"
            f"  fsync: {self.fsync}\n"
            + self.extra
        )

    @property
    def log_path(self) -> Path:
        return self.workdir / f"broker-{self.runs}.log"

    def start(self) -> None:
        self.runs += 1
        config = self.workdir / f"broker-{self.runs}.yaml"
        config.write_text(self.config_text())
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([str(self.amqtt_bin), "-d", "-c", str(config)],
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"broker exited at start ({self.proc.returncode}):\n" + self.log(),
                            pytrace=False)
            if accepts(self.port):
                return
            time.sleep(0.02)
        pytest.fail("broker did not listen within 20 s:\n" + self.log(), pytrace=False)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: no chance to write anything more."""
        assert self.proc is not None and self.proc.poll() is None, "broker not running"
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM, and a clean exit required."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=10)
        assert rc == 0, f"exit status {rc} after SIGTERM:\n" + self.log()

    def restart(self, how: str) -> None:
        if how == "kill":
            self.kill()
        else:
            self.stop()
        self.start()

    def client(self, client_id: str, clean: bool = True) -> PahoClient:
        c = PahoClient(HOST, self.port, client_id=client_id, clean_session=clean)
        rc, _ = c.connect()
        assert rc == 0
        return c

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def make_broker(amqtt_bin, tmp_path):
    brokers: list[PersistentBroker] = []

    def make(**kwargs) -> PersistentBroker:
        b = PersistentBroker(amqtt_bin, tmp_path, **kwargs)
        brokers.append(b)
        b.start()
        return b

    yield make
    for b in brokers:
        b.close()


def connect_session(broker: PersistentBroker, client_id: str) -> tuple[PahoClient, bool]:
    c = PahoClient(HOST, broker.port, client_id=client_id, clean_session=False)
    rc, present = c.connect()
    assert rc == 0
    return c, present


@pytest.mark.parametrize("shards", [1, 2])
@pytest.mark.parametrize("how", ["kill", "term"])
def test_an_offline_queue_of_500_qos1_messages_survives_a_restart(make_broker, shards, how):
    broker = make_broker(shards=shards)
    sub, present = connect_session(broker, "keeper")
    assert not present
    assert sub.subscribe("q/#", 1) == [1]
    sub.disconnect()
    pub = broker.client("pub-500")
    for i in range(500):
        pub.publish(f"q/{i % 7}", f"m{i}", qos=1)
    pub.disconnect()

    broker.restart(how)

    sub, present = connect_session(broker, "keeper")
    assert present, "the session did not survive"
    got = sub.get_messages(500, timeout=20)
    assert [m.payload.decode() for m in got] == [f"m{i}" for i in range(500)]
    assert all(m.qos == 1 for m in got)
    time.sleep(0.3)
    assert sub.drain() == [], "a message came twice"
    sub.disconnect()


@pytest.mark.parametrize("shards", [1, 2])
def test_retained_set_and_delete_survive_kill_9(make_broker, shards):
    broker = make_broker(shards=shards)
    pub = broker.client("retainer")
    pub.publish("r/a", "A", qos=1, retain=True)
    pub.publish("r/b", "B", qos=1, retain=True)
    pub.publish("r/c", "C0", qos=0, retain=True)
    pub.publish("r/c", "C1", qos=1, retain=True)
    pub.publish("r/b", "", qos=1, retain=True)
    pub.disconnect()

    broker.restart("kill")

    sub = broker.client("reader")
    sub.subscribe("r/#", 1)
    got = sorted((m.topic, m.payload.decode(), m.retain) for m in sub.get_messages(2))
    assert got == [("r/a", "A", True), ("r/c", "C1", True)]
    time.sleep(0.3)
    assert sub.drain() == [], "a deleted retained message came back"
    sub.disconnect()


@pytest.mark.parametrize("shards", [1, 2])
def test_subscriptions_survive_kill_9_without_resubscribing(make_broker, shards):
    broker = make_broker(shards=shards)
    sub, _ = connect_session(broker, "listener")
    sub.subscribe([("a/+", 1), ("b/#", 2)])
    sub.disconnect()

    broker.restart("kill")

    sub, present = connect_session(broker, "listener")
    assert present
    pub = broker.client("talker")
    pub.publish("a/1", "one", qos=1)
    pub.publish("b/x/y", "two", qos=2)
    got = {(m.topic, m.payload.decode(), m.qos) for m in sub.get_messages(2)}
    assert got == {("a/1", "one", 1), ("b/x/y", "two", 2)}
    pub.disconnect()
    sub.disconnect()


def raw_publish_qos2_until_pubrec(broker: PersistentBroker, client_id: str, pid: int,
                                  dup: bool) -> None:
    conn = RawConn(HOST, broker.port)
    conn.connect(client_id, clean=False)
    data = bytearray(publish_packet("x/once", b"exactly", qos=2, packet_id=pid))
    if dup:
        data[0] |= 0x08
    conn.send(bytes(data))
    pkt = conn.recv_packet()
    assert pkt is not None and pkt[0] >> 4 == PUBREC, f"expected PUBREC, got {pkt}"
    return conn


@pytest.mark.parametrize("shards", [1, 2])
def test_a_qos2_message_pubrecd_before_kill_9_is_delivered_exactly_once(make_broker, shards):
    broker = make_broker(shards=shards)
    sub, _ = connect_session(broker, "once-sub")
    sub.subscribe("x/#", 2)
    sub.disconnect()
    conn = raw_publish_qos2_until_pubrec(broker, "once-pub", 42, dup=False)
    conn.close()

    broker.restart("kill")

    # The publisher, which saw PUBREC but not PUBCOMP, sends the PUBLISH again (DUP) and then
    # PUBREL [MQTT-4.3.3]: the broker must not route it a second time.
    conn = raw_publish_qos2_until_pubrec(broker, "once-pub", 42, dup=True)
    conn.send(packet(0x62, (42).to_bytes(2, "big")))
    pkt = conn.recv_packet()
    assert pkt is not None and pkt[0] >> 4 == PUBCOMP
    conn.close()
    sub, present = connect_session(broker, "once-sub")
    assert present
    got = sub.get_messages(1)
    assert got[0].payload == b"exactly" and got[0].qos == 2
    time.sleep(0.5)
    assert sub.drain() == [], "delivered twice"
    sub.disconnect()


@pytest.mark.parametrize("fsync", ["always", "interval"])
def test_kill_9_during_a_saturating_qos1_stream_loses_no_acknowledged_message(make_broker,
                                                                              fsync):
    # The subscriber is offline: its queue must hold the whole stream (the default 1,000 would
    # drop the rest, counted: offline sessions keep their limits).
    broker = make_broker(shards=2, fsync=fsync, extra="max_queued_messages: 200000\n")
    sub, _ = connect_session(broker, "stream-sub")
    sub.subscribe("s/#", 1)
    sub.disconnect()

    # paho calls on_publish on its network thread while holding its own lock: the callback only
    # notes the message id (no lock of ours around `publish`, or the two threads deadlock).
    acked_mids: list[int] = []
    pub = PahoClient(HOST, broker.port, client_id="stream-pub")
    pub.client.max_inflight_messages_set(64)
    pub.client.max_queued_messages_set(0)
    pub.client.on_publish = lambda client, userdata, mid, rc, props: acked_mids.append(mid)
    assert pub.connect()[0] == 0
    sent: dict[int, str] = {}
    stop = time.monotonic() + 1.5
    i = 0
    # Message ids wrap at 65535: stay below, so that an id names one message.
    while time.monotonic() < stop and i < 60000:
        payload = f"p{i}"
        info = pub.client.publish(f"s/{i % 5}", payload, qos=1)
        sent[info.mid] = payload
        i += 1
        if i % 64 == 0:
            time.sleep(0.001)
    broker.kill()
    pub.stop_loop()
    acknowledged = {sent[mid] for mid in list(acked_mids) if mid in sent}
    assert len(acknowledged) > 100, f"only {len(acknowledged)} acknowledged: too slow to test"

    broker.start()
    sub, present = connect_session(broker, "stream-sub")
    assert present
    received: set[str] = set()
    deadline = time.monotonic() + 30
    while not acknowledged <= received and time.monotonic() < deadline:
        try:
            received.add(sub.get_message(timeout=1).payload.decode())
        except AssertionError:
            pass
    missing = acknowledged - received
    assert not missing, f"{len(missing)} of {len(acknowledged)} acknowledged messages lost"
    sub.disconnect()


def test_a_restart_with_another_shard_count_keeps_every_session(make_broker):
    broker = make_broker(shards=1)
    ids = [f"rehome-{i}" for i in range(12)]
    for cid in ids:
        c, _ = connect_session(broker, cid)
        c.subscribe(f"h/{cid}", 1)
        c.disconnect()
    pub = broker.client("rehome-pub")
    for cid in ids:
        pub.publish(f"h/{cid}", f"for {cid}", qos=1)
    pub.disconnect()

    broker.stop()
    broker.shards = 2
    broker.start()

    for cid in ids:
        c, present = connect_session(broker, cid)
        assert present, cid
        assert c.get_message().payload.decode() == f"for {cid}"
        c.disconnect()
    # And the subscriptions route on the new layout too.
    pub = broker.client("rehome-pub2")
    for cid in ids:
        pub.publish(f"h/{cid}", "again", qos=1)
    pub.disconnect()
    for cid in ids:
        c, _ = connect_session(broker, cid)
        assert c.get_message().payload == b"again", cid
        c.disconnect()


def test_an_unusable_data_dir_stops_the_start_with_its_path(amqtt_bin, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    data_dir = blocker / "data"
    port = free_port()
    config = tmp_path / "broker.yaml"
    config.write_text(
        "listeners:\n  default:\n    type: tcp\n"
        f"    bind: {HOST}:{port}\n"
        "shards: 1\npin_shards: false\n"
        f"persistence:\n  enabled: true\n  dir: {data_dir}\n")
    run = subprocess.run([str(amqtt_bin), "-c", str(config)], capture_output=True, text=True,
                         timeout=20)
    assert run.returncode == 1, run.stderr
    assert str(data_dir) in run.stderr
    assert "Listener" not in run.stderr, "a listener was opened before the data dir was checked"


def test_garbage_appended_to_a_journal_is_cut_and_the_rest_recovered(make_broker):
    broker = make_broker(shards=1)
    sub, _ = connect_session(broker, "garbage-sub")
    sub.subscribe("g", 1)
    sub.disconnect()
    pub = broker.client("garbage-pub")
    for i in range(20):
        pub.publish("g", f"g{i}", qos=1)
    pub.disconnect()
    broker.kill()
    journals = sorted(broker.data_dir.glob("gen-*/shard-0/journal-*.log"))
    assert journals, "no journal segment"
    with open(journals[-1], "ab") as f:
        f.write(os.urandom(37))

    broker.start()
    assert "journal cut at byte" in broker.log()
    sub, present = connect_session(broker, "garbage-sub")
    assert present
    got = sub.get_messages(20)
    assert [m.payload.decode() for m in got] == [f"g{i}" for i in range(20)]
    sub.disconnect()


def test_session_expiry_keeps_counting_across_a_restart(make_broker):
    broker = make_broker(shards=2, extra="session_expiry_interval: 6\n")
    old, _ = connect_session(broker, "gone-early")
    old.subscribe("e/old", 1)
    old.disconnect()
    left_at = time.monotonic()
    time.sleep(4.0)
    recent, _ = connect_session(broker, "gone-late")
    recent.subscribe("e/recent", 1)
    recent.disconnect()

    broker.restart("kill")
    time.sleep(max(0.0, 7.0 - (time.monotonic() - left_at)))
    # 7 s after it left, about 3 s after the other did (a slow restart has 3 s of margin): one
    # expired, the other not.
    late, present = connect_session(broker, "gone-late")
    assert present, "a session expired early: the offline time was not kept"
    late.disconnect()
    early, present = connect_session(broker, "gone-early")
    assert not present, "the restart reset the offline time"
    early.disconnect()


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs (a disk that fills up), unmounted at the end; skipped where mounting is not
    allowed (not root, or no CAP_SYS_ADMIN in the container)."""
    mountpoint = tmp_path / "small-disk"
    mountpoint.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mountpoint)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    yield mountpoint
    subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def fill(directory: Path) -> Path:
    filler = directory / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    return filler


def test_a_full_disk_holds_qos1_acks_serves_qos0_and_recovers_when_space_returns(
        amqtt_bin, small_disk):
    broker = PersistentBroker(amqtt_bin, small_disk, shards=1)
    broker.data_dir = small_disk / "data"
    broker.start()
    try:
        sub, _ = connect_session(broker, "disk-sub")
        sub.subscribe("d/#", 1)
        sub.disconnect()
        live = broker.client("live-q0")
        live.subscribe("live", 0)
        pub = broker.client("disk-pub")
        filler = fill(small_disk)

        info = pub.publish_nowait("d/1", b"x" * 8192, qos=1)
        info.wait_for_publish(1.5)
        assert not info.is_published(), "acknowledged although the journal could not be written"
        pub.publish("live", "still here", qos=0)
        assert live.get_message().payload == b"still here", "QoS 0 stopped with the disk"
        assert "journal write failed" in broker.log()

        filler.unlink()
        info.wait_for_publish(5)
        assert info.is_published(), "no PUBACK after space came back"
        pub.disconnect()
        live.disconnect()
        sub, present = connect_session(broker, "disk-sub")
        assert present
        assert sub.get_message().payload == b"x" * 8192
        sub.disconnect()
        broker.stop()
    finally:
        broker.close()


def test_a_corrupt_newest_snapshot_falls_back_to_the_one_before(make_broker):
    broker = make_broker(shards=1)
    sub, _ = connect_session(broker, "snap-sub")
    sub.subscribe("n", 1)
    sub.disconnect()
    pub = broker.client("snap-pub")
    for i in range(30):
        pub.publish("n", f"n{i}", qos=1)
    pub.disconnect()
    broker.stop()
    # A run that snapshots every second: by the end the shard holds two snapshots.
    broker.extra = "  snapshot_interval: 1\n"
    broker.start()
    pub = broker.client("snap-pub")
    for i in range(30, 40):
        pub.publish("n", f"n{i}", qos=1)
        time.sleep(0.3)
    pub.disconnect()
    shard_dir = next(broker.data_dir.glob("gen-*/shard-0"))
    snapshots = sorted(shard_dir.glob("snapshot-*.bin"))
    assert len(snapshots) >= 2, f"expected two snapshots, found {snapshots}"
    broker.kill()
    newest = snapshots[-1]
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0x40
    newest.write_bytes(bytes(data))

    broker.start()
    assert "using the snapshot before it" in broker.log()
    sub, present = connect_session(broker, "snap-sub")
    assert present
    got = sub.get_messages(40)
    assert [m.payload.decode() for m in got] == [f"n{i}" for i in range(40)]
    sub.disconnect()


@pytest.mark.parametrize("shards", [1, 2])
def test_the_will_of_a_client_connected_at_kill_9_is_published_after_the_restart(make_broker,
                                                                                  shards):
    broker = make_broker(shards=shards)
    watcher, _ = connect_session(broker, "will-watcher")
    watcher.subscribe("wills/#", 1)
    watcher.disconnect()
    dying = PahoClient(HOST, broker.port, client_id="will-owner", clean_session=False,
                       will=("wills/owner", b"gone", 1, False))
    assert dying.connect()[0] == 0
    polite = PahoClient(HOST, broker.port, client_id="will-polite", clean_session=False,
                        will=("wills/polite", b"never", 1, False))
    assert polite.connect()[0] == 0
    polite.disconnect()  # DISCONNECT: its will is discarded
    time.sleep(0.2)

    broker.kill()
    dying.stop_loop()
    broker.start()

    watcher, present = connect_session(broker, "will-watcher")
    assert present
    got = watcher.get_message(timeout=10)
    assert (got.topic, got.payload) == ("wills/owner", b"gone")
    time.sleep(0.5)
    assert watcher.drain() == [], "a will discarded by DISCONNECT was published"
    watcher.disconnect()
    # Published once: a second restart does not publish it again.
    broker.restart("kill")
    watcher, _ = connect_session(broker, "will-watcher")
    time.sleep(0.5)
    assert watcher.drain() == []
    watcher.disconnect()
