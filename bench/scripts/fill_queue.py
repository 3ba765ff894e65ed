#!/usr/bin/env python3
"""Fill one offline persistent session's queue, for the recovery measurement of bench/RESULTS.md
("Persistence round"): a subscriber connects with clean session 0, subscribes to TOPIC at QoS 1
and disconnects; then one publisher sends COUNT QoS 1 messages of SIZE bytes to TOPIC, with up to
WINDOW unacknowledged, and waits for every PUBACK. `--drain` instead connects the subscriber again
(clean session 0), receives and acknowledges its queue, and prints how many messages came and how
long they took. Raw MQTT 3.1.1 over one socket each, no library: a Python MQTT client would be the
bottleneck at a million messages. Loopback only; no other effect.
"""
import argparse
import socket
import struct
import sys
import time


def remaining_length(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def utf8(s):
    b = s.encode()
    return struct.pack(">H", len(b)) + b


def packet(first, body):
    return bytes([first]) + remaining_length(len(body)) + body


def connect(addr, client_id, clean):
    s = socket.create_connection(addr)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    flags = 0x02 if clean else 0x00
    body = utf8("MQTT") + bytes([4, flags]) + struct.pack(">H", 600) + utf8(client_id)
    s.sendall(packet(0x10, body))
    reader = Reader(s)
    kind, data = reader.next()
    if kind != 2 or data[1] != 0:
        sys.exit(f"CONNACK refused or missing: {kind} {data!r}")
    return s, reader, data[0] & 1


class Reader:
    """Splits the byte stream into (packet type, body)."""

    def __init__(self, sock):
        self.s = sock
        self.buf = bytearray()
        self.pos = 0

    def fill(self):
        chunk = self.s.recv(1 << 20)
        if not chunk:
            sys.exit("broker closed the connection")
        del self.buf[: self.pos]
        self.pos = 0
        self.buf += chunk

    def next(self):
        while True:
            p = self.pos
            if len(self.buf) - p >= 2:
                n, mult, i = 0, 1, p + 1
                ok = False
                while i < len(self.buf):
                    b = self.buf[i]
                    n += (b & 0x7F) * mult
                    mult *= 128
                    i += 1
                    if not b & 0x80:
                        ok = True
                        break
                if ok and len(self.buf) - i >= n:
                    kind = self.buf[p] >> 4
                    first = self.buf[p]
                    body = bytes(self.buf[i : i + n])
                    self.pos = i + n
                    return (kind, body) if kind != 3 else (kind, (first, body))
            self.fill()


def subscribe(s, reader, topic):
    s.sendall(packet(0x82, struct.pack(">H", 1) + utf8(topic) + b"\x01"))
    kind, data = reader.next()
    if kind != 9 or data[2] == 0x80:
        sys.exit(f"SUBACK refused: {data!r}")


def fill(args, addr):
    s, reader, _ = connect(addr, args.client_id, False)
    subscribe(s, reader, args.topic)
    s.sendall(packet(0xE0, b""))
    s.close()
    p, reader, _ = connect(addr, args.client_id + "-pub", True)
    topic = utf8(args.topic)
    payload = b"x" * args.size
    sent = acked = 0
    outstanding = set()
    start = time.monotonic()
    next_id = 1
    while acked < args.count:
        burst = bytearray()
        while sent < args.count and len(outstanding) < args.window:
            while next_id in outstanding:
                next_id = next_id % 65535 + 1
            outstanding.add(next_id)
            burst += packet(0x32, topic + struct.pack(">H", next_id) + payload)
            next_id = next_id % 65535 + 1
            sent += 1
        if burst:
            p.sendall(burst)
        kind, data = reader.next()
        if kind == 4:
            outstanding.discard(struct.unpack(">H", data[:2])[0])
            acked += 1
    took = time.monotonic() - start
    p.sendall(packet(0xE0, b""))
    p.close()
    print(f"published {acked} QoS 1 messages of {args.size} B in {took:.1f} s "
          f"({acked / took:.0f}/s, window {args.window})")


def drain(args, addr):
    s, reader, present = connect(addr, args.client_id, False)
    if not present:
        sys.exit("no session present: the queue was lost")
    got = 0
    start = time.monotonic()
    last = start
    s.settimeout(args.idle)
    acks = bytearray()
    while True:
        try:
            kind, data = reader.next()
        except socket.timeout:
            break
        if kind == 3:
            first, body = data
            tlen = struct.unpack(">H", body[:2])[0]
            if (first >> 1) & 3:
                acks += packet(0x40, body[2 + tlen : 4 + tlen])
            got += 1
            last = time.monotonic()
            if len(acks) >= 4000:
                s.sendall(acks)
                acks.clear()
        if acks and reader.pos >= len(reader.buf):
            s.sendall(acks)
            acks.clear()
    s.settimeout(None)
    s.sendall(packet(0xE0, b""))
    s.close()
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
    ap.add_argument("--idle", type=float, default=3.0, help="--drain: stop after this many idle seconds")
    args = ap.parse_args()
    addr = (args.host, args.port)
    (drain if args.drain else fill)(args, addr)


if __name__ == "__main__":
    main()
