"""aMQTT's own client against our broker, as an aMQTT user runs it: the `amqtt_pub` / `amqtt_sub`
scripts and the `amqtt.client.MQTTClient` API from `pip install amqtt` (the version pinned in
requirements.txt), at 1 and 2 shards (the `broker` fixture).

- The scripts: `amqtt_sub -n` prints the retained message then what `amqtt_pub` sends at QoS 0,
  1 and 2, in order, and exits 0; `amqtt_pub` exits 0 for each.
- The API: QoS 1 and 2 round trips through the broker (`deliver_message`), a retained message seen
  by a later subscriber, UNSUBSCRIBE ending delivery, and a persistent session (clean session off)
  that gets what was published while it was away.
"""

from __future__ import annotations

import asyncio
import queue
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import amqtt.client as amqtt_client  # pip install amqtt: tests/python/requirements.txt
from amqtt.mqtt.constants import QOS_1, QOS_2

TIMEOUT = 20.0  # the scripts start a Python interpreter and import aMQTT: seconds each


def script(name: str) -> str:
    """The aMQTT script next to the interpreter running the tests (the CI's virtual environment),
    or on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    assert found, f"{name} is not installed (pip install amqtt)"
    return found


def url(broker) -> str:
    return f"mqtt://{broker.host}:{broker.port}"


def lines_of(proc: subprocess.Popen) -> queue.Queue:
    """The process's stdout lines, as they come, in a queue (read by a thread)."""
    lines: queue.Queue = queue.Queue()

    def read():
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))

    threading.Thread(target=read, daemon=True).start()
    return lines


def pub(broker, topic: str, message: str, qos: int, retain: bool = False) -> None:
    args = [script("amqtt_pub"), "--url", url(broker), "-t", topic, "-m", message, "-q", str(qos)]
    if retain:
        args.append("-r")
    done = subprocess.run(args, capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, f"amqtt_pub: {done.returncode}\n{done.stdout}\n{done.stderr}"


def test_amqtt_pub_and_amqtt_sub(broker):
    pub(broker, "amqtt/retained", "kept", qos=1, retain=True)
    sub = subprocess.Popen([script("amqtt_sub"), "--url", url(broker), "-t", "amqtt/#", "-q", "2",
                            "-n", "4", "--clean-session"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = lines_of(sub)
        # The retained message arrives once the subscription is in place: then publish.
        first = lines.get(timeout=TIMEOUT)
        assert first == "kept", first
        for qos in (0, 1, 2):
            pub(broker, f"amqtt/q{qos}", f"message at qos {qos}", qos=qos)
        got = [lines.get(timeout=TIMEOUT) for _ in range(3)]
        assert got == [f"message at qos {qos}" for qos in (0, 1, 2)]
        assert sub.wait(timeout=TIMEOUT) == 0, sub.stderr.read()
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait()


async def connected(broker, client_id: str, clean: bool = True):
    client = amqtt_client.MQTTClient(client_id=client_id, config={"auto_reconnect": False})
    await client.connect(url(broker), cleansession=clean)
    return client


async def received(client, timeout: float = 5.0):
    message = await client.deliver_message(timeout_duration=timeout)
    assert message is not None, "nothing delivered"
    return message.publish_packet.variable_header.topic_name, bytes(message.data)


def test_the_mqttclient_api(broker):
    async def run():
        sub = await connected(broker, "api-sub")
        await sub.subscribe([("api/#", QOS_2)])
        pub = await connected(broker, "api-pub")
        await pub.publish("api/one", b"at least once", qos=QOS_1)
        await pub.publish("api/two", b"exactly once", qos=QOS_2)
        assert await received(sub) == ("api/one", b"at least once")
        assert await received(sub) == ("api/two", b"exactly once")
        # Retained: a later subscriber gets it.
        await pub.publish("api/state", b"on", qos=QOS_1, retain=True)
        assert await received(sub) == ("api/state", b"on")
        late = await connected(broker, "api-late")
        await late.subscribe([("api/state", QOS_1)])
        assert await received(late) == ("api/state", b"on")
        # After UNSUBSCRIBE nothing more arrives.
        await sub.unsubscribe(["api/#"])
        await pub.publish("api/one", b"after unsubscribe", qos=QOS_1)
        with pytest.raises(asyncio.TimeoutError):
            await sub.deliver_message(timeout_duration=0.5)
        await pub.publish("api/state", b"", qos=QOS_1, retain=True)  # clear it
        for client in (sub, pub, late):
            await client.disconnect()

    asyncio.run(asyncio.wait_for(run(), TIMEOUT))


def test_a_persistent_session_gets_what_was_sent_while_away(broker):
    async def run():
        away = await connected(broker, "api-away", clean=False)
        await away.subscribe([("away/#", QOS_1)])
        await away.disconnect()
        pub = await connected(broker, "api-pub2")
        for n in range(5):
            await pub.publish(f"away/{n}", f"queued {n}".encode(), qos=QOS_1)
        await pub.disconnect()
        back = await connected(broker, "api-away", clean=False)
        got = [await received(back) for _ in range(5)]
        assert got == [(f"away/{n}", f"queued {n}".encode()) for n in range(5)]
        await back.disconnect()
        # Leave no session behind.
        gone = await connected(broker, "api-away", clean=True)
        await gone.disconnect()

    asyncio.run(asyncio.wait_for(run(), TIMEOUT))
