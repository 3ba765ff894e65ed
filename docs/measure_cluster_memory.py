#!/usr/bin/env python3
"""What another node's filters and the cluster's retained messages cost a node in memory, for
docs/cluster-sizing.md: one nats-server with JetStream and two amqtt nodes (A and B) on loopback.
A client on node A subscribes to N distinct filters (`devices/<i>/cmd`, 1,000 per SUBSCRIBE),
then publishes N retained messages (`state/<i>`, 64-byte payloads); the growth of node B's
resident memory (`VmRSS`) over each step, divided by N, is what one remote filter and one
retained topic cost a node that holds none of them itself.

    python3 docs/measure_cluster_memory.py --amqtt target/release/amqtt -n 100000 --shards 2

Stops what it started, by PID. Needs nats-server (Debian's) and tests/python/mqtt_helpers.py.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "python"))
from mqtt_helpers import RawConn, accepts, free_port, publish_packet, subscribe_packet  # noqa: E402


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def settled_rss(pid: int) -> int:
    """VmRSS once it has stopped moving (two readings 1 s apart within 64 KiB)."""
    last = rss(pid)
    for _ in range(30):
        time.sleep(1)
        now = rss(pid)
        if abs(now - last) < 65536:
            return now
        last = now
    return last


def wait(what: str, ready, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out: {what}")
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--amqtt", required=True)
    parser.add_argument("--nats", default="nats-server")
    parser.add_argument("-n", type=int, default=100_000)
    parser.add_argument("--shards", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cluster-mem-"))
    procs: list[subprocess.Popen] = []
    nats_port = free_port()
    try:
        procs.append(subprocess.Popen(
            [args.nats, "-js", "-sd", str(work / "js"), "-a", "127.0.0.1", "-p", str(nats_port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait("nats-server", lambda: accepts(nats_port))
        nodes = {}
        for name in ("node-a", "node-b"):
            port = free_port()
            config = work / f"{name}.yaml"
            config.write_text(
                f"listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:{port}\n"
                f"shards: {args.shards}\npin_shards: false\nsys_interval: 0\n"
                f"cluster:\n  node: {name}\n  nats: ['nats://127.0.0.1:{nats_port}']\n")
            log = work / f"{name}.log"
            with open(log, "wb") as out:
                procs.append(subprocess.Popen([args.amqtt, "-c", str(config)],
                                              stdout=out, stderr=out))
            nodes[name] = (procs[-1].pid, port, log)
        for name, (_, _, log) in nodes.items():
            other = "node-b" if name == "node-a" else "node-a"
            wait(f"{name} sees {other}", lambda: f"node {other} is live" in log.read_text())
        b_pid = nodes["node-b"][0]
        conn = RawConn("127.0.0.1", nodes["node-a"][1], timeout=60)
        assert conn.connect("measure") == bytes([0, 0])
        before = settled_rss(b_pid)
        for start in range(0, args.n, 1000):
            filters = [(f"devices/{i}/cmd", 1) for i in range(start, min(start + 1000, args.n))]
            conn.send(subscribe_packet(start // 1000 + 1, filters))
            assert conn.recv_packet(timeout=60)[0] == 0x90
        after_filters = settled_rss(b_pid)
        payload = b"x" * 64
        for i in range(args.n):
            conn.send(publish_packet(f"state/{i}", payload, qos=0, retain=True))
        # Node B has them all once it has the last one (a node's updates arrive in order).
        b = RawConn("127.0.0.1", nodes["node-b"][1], timeout=60)
        assert b.connect("check") == bytes([0, 0])
        deadline = time.monotonic() + 120
        while True:
            b.send(subscribe_packet(1, [(f"state/{args.n - 1}", 0)]))
            got = [b.recv_packet(timeout=60)[0] & 0xF0, None]
            try:
                got[1] = b.recv_packet(timeout=1)
            except TimeoutError:
                pass
            if got[1] is not None and got[1][0] & 0xF0 == 0x30:
                break
            assert time.monotonic() < deadline, "node B never got the last retained message"
        b.close()
        after_retained = settled_rss(b_pid)
        conn.close()
        n = args.n
        print(f"node B ({args.shards} shards), N = {n:,}:")
        print(f"  remote filters: {(after_filters - before) / n:.0f} B per filter "
              f"(RSS {before / 2**20:.1f} -> {after_filters / 2**20:.1f} MiB)")
        print(f"  retained topics: {(after_retained - after_filters) / n:.0f} B per topic "
              f"(RSS -> {after_retained / 2**20:.1f} MiB)")
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    main()
