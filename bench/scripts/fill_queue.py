#!/usr/bin/env python3
"""Fill one offline persistent session's queue, for the recovery measurement of bench/RESULTS.md
("Persistence round"): a subscriber connects with clean session 0, subscribes to TOPIC at QoS 1
and disconnects; then one publisher sends COUNT QoS 1 messages of SIZE bytes to TOPIC, with up to
WINDOW unacknowledged, and waits for every PUBACK. `--drain` instead connects the subscriber again
(clean session 0), receives and acknowledges its queue, and prints how many messages came and how
long they took. Raw MQTT 3.1.1 (the Python tests' `RawConn`, tests/python/mqtt_helpers.py): a
Python MQTT client library would be the bottleneck at a million messages. Loopback only.
"""
import argparse
import os
import struct
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tests", "python"))
from mqtt_helpers import (  # noqa: E402
    DISCONNECT_PACKET, PUBACK, PUBLISH, SUBACK, RawConn, packet, publish_packet, subscribe_packet,
)


def connect(args, client_id, clean):
    c = RawConn(args.host, args.port, timeout=60)
    ack = c.connect(client_id, clean=clean, keepalive=600)
    if ack[1] != 0:
        sys.exit(f"CONNACK refused: {ack!r}")
    return c, ack[0] & 1


def fill(args):
    c, _ = connect(args, args.client_id, False)
    c.send(subscribe_packet(1, [(args.topic, 1)]))
    first, body = c.recv_packet()
    if first >> 4 != SUBACK or body[2] == 0x80:
        sys.exit(f"SUBACK refused: {body!r}")
    c.send(DISCONNECT_PACKET)
    c.close()
    p, _ = connect(args, args.client_id + "-pub", True)
    payload = b"x" * args.size
    sent = acked = 0
    outstanding = set()
    next_id = 1
    start = time.monotonic()
    while acked < args.count:
        burst = []
        while sent < args.count and len(outstanding) < args.window:
            while next_id in outstanding:
                next_id = next_id % 65535 + 1
            outstanding.add(next_id)
            burst.append(publish_packet(args.topic, payload, qos=1, packet_id=next_id))
            next_id = next_id % 65535 + 1
            sent += 1
        if burst:
            p.send(b"".join(burst))
        first, body = p.recv_packet(timeout=60)
        if first >> 4 == PUBACK:
            outstanding.discard(struct.unpack("!H", body[:2])[0])
            acked += 1
    took = time.monotonic() - start
    p.send(DISCONNECT_PACKET)
    p.close()
    print(f"published {acked} QoS 1 messages of {args.size} B in {took:.1f} s "
          f"({acked / took:.0f}/s, window {args.window})")


def drain(args):
    c, present = connect(args, args.client_id, False)
    if not present:
        sys.exit("no session present: the queue was lost")
    got = 0
    start = last = time.monotonic()
    while True:
        try:
            pkt = c.recv_packet(timeout=args.idle)
        except TimeoutError:
            break
        if pkt is None:
            sys.exit("the broker closed the connection")
        first, body = pkt
        if first >> 4 == PUBLISH:
            tlen = struct.unpack("!H", body[:2])[0]
            if (first >> 1) & 3:
                c.send(packet(PUBACK << 4, body[2 + tlen:4 + tlen]))
            got += 1
            last = time.monotonic()
    c.send(DISCONNECT_PACKET)
    c.close()
    print(f"received {got} queued messages in {last - start:.1f} s")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=1883)
    ap.add_argument("--count", type=int, default=1_000_000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--window", type=int, default=1000)
    ap.add_argument("--topic", default="recovery/q")
    ap.add_argument("--client-id", default="recovery-sub")
    ap.add_argument("--drain", action="store_true")
    ap.add_argument("--idle", type=float, default=3.0,
                    help="--drain: stop after this many idle seconds")
    args = ap.parse_args()
    (drain if args.drain else fill)(args)


if __name__ == "__main__":
    main()
