"""Password files of every aMQTT version, made by the real tools, against the release broker.

- Files written by argon2-cffi (aMQTT 0.12's documented helper), pwdlib (what aMQTT 0.12's
  `FileAuthPlugin` uses), passlib (argon2id, argon2i, bcrypt `$2b$`/`$2a$`/`$2y$`, and
  `custom_app_context`, aMQTT up to 0.11's SHA-512 crypt with 656,000 rounds), Python's `bcrypt`,
  and `openssl passwd -6`/`-5` (plus `mkpasswd` when installed): every user logs in with their
  password and is refused with another one (paho, and mosquitto_pub for one user of each scheme).
- `amqtt_passwd`'s files are read by aMQTT 0.12.1's own `FileAuthPlugin` and by passlib /
  argon2-cffi: argon2id by default, SHA-512 crypt with `--sha512`.
- A file with a scheme the broker does not read (passlib's `pbkdf2_sha256`) stops the broker at
  start with exit status 2 and a message naming the file, the line and the scheme.
- What an argon2 login costs: N first logins (each verified) against N logins answered from the
  cache of verified passwords, printed with `-s`.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import warnings
from pathlib import Path

import argon2
import bcrypt
import pytest
from passlib.apps import custom_app_context
from passlib.hash import argon2 as passlib_argon2
from passlib.hash import bcrypt as passlib_bcrypt
from passlib.hash import pbkdf2_sha256
from passlib.hash import sha512_crypt as passlib_sha512_crypt
from pwdlib.hashers.argon2 import Argon2Hasher

from mqtt_helpers import PahoClient, free_port
from test_cli import start  # noqa: F401  (the fixture: a broker process with a given config)

HOST = "127.0.0.1"
TIMEOUT = 10.0
MOSQUITTO_PUB = shutil.which("mosquitto_pub")
# paho reports an MQTT 3.1.1 CONNACK 0x05 as MQTT 5's "Not authorized" (0x87).
NOT_AUTHORIZED = (5, 0x87)


def _openssl(flag: str, password: str) -> str:
    return subprocess.run(["openssl", "passwd", flag, password], check=True,
                          capture_output=True, text=True).stdout.strip()


def _users() -> dict[str, tuple[str, str]]:
    """user -> (password, hash), one user per tool and scheme. Passwords differ per user."""
    users = {
        "argon2_cffi": ("ac-pw", argon2.PasswordHasher().hash("ac-pw")),
        "pwdlib": ("pwdlib-pw", Argon2Hasher().hash("pwdlib-pw")),
        "passlib_argon2id": ("pa-pw", passlib_argon2.hash("pa-pw")),
        "passlib_argon2i": ("pai-pw", passlib_argon2.using(type="i").hash("pai-pw")),
        "passlib_bcrypt": ("pb-pw", passlib_bcrypt.hash("pb-pw")),
        "passlib_bcrypt_2a": ("pb2a-pw", passlib_bcrypt.using(ident="2a", rounds=6).hash("pb2a-pw")),
        "passlib_bcrypt_2y": ("pb2y-pw", passlib_bcrypt.using(ident="2y", rounds=6).hash("pb2y-pw")),
        "py_bcrypt": ("b-pw", bcrypt.hashpw(b"b-pw", bcrypt.gensalt()).decode()),
        "amqtt_011": ("app-pw", custom_app_context.hash("app-pw")),
        "openssl6": ("o6-pw", _openssl("-6", "o6-pw")),
        "openssl5": ("o5-pw", _openssl("-5", "o5-pw")),
    }
    if shutil.which("mkpasswd"):
        users["mkpasswd"] = ("mk-pw", subprocess.run(
            ["mkpasswd", "-m", "sha-512", "mk-pw"], check=True, capture_output=True,
            text=True).stdout.strip())
    return users


with warnings.catch_warnings():
    # passlib 1.7.4 warns that it cannot read bcrypt 4's version; hashing works.
    warnings.simplefilter("ignore")
    USERS = _users()


def serve(start, passwd: Path, shards: int = 1):
    """The release broker (test_cli's `start`) with `passwd` and no anonymous access, once it has
    bound its listener; `.port` is its port."""
    port = free_port()
    broker = start(
        f"listeners:\n  default:\n    type: tcp\n    bind: {HOST}:{port}\n"
        f"shards: {shards}\npin_shards: false\nsys_interval: 0\n"
        f"auth:\n  allow-anonymous: false\n  password-file: {passwd}\n"
        "  plugins: [auth_anonymous, auth_file]\n")
    broker.port = port
    return broker


def login(port: int, user: str, password: str, client_id: str = "") -> int:
    """The CONNACK return code paho gets for `user` / `password`."""
    client = PahoClient(HOST, port, client_id=client_id or f"pw-{user}")
    client.client.username_pw_set(user, password)
    try:
        rc, _ = client.connect(timeout=TIMEOUT)
        return rc
    finally:
        client.close()


def write_passwd(path: Path, users: dict[str, tuple[str, str]]) -> Path:
    path.write_text("# made by test_passwords.py\n"
                    + "".join(f"{user}:{hash_}\n" for user, (_, hash_) in users.items()))
    return path


@pytest.mark.parametrize("shards", [1, 2])
def test_files_made_by_every_tool_log_users_in_with_their_password_only(start, tmp_path, shards):
    broker = serve(start, write_passwd(tmp_path / "passwd", USERS), shards)
    broker.wait_log("started with")
    for user, (password, hash_) in USERS.items():
        assert login(broker.port, user, password) == 0, f"{user}: {hash_}"
        assert login(broker.port, user, password + "x") in NOT_AUTHORIZED, user
        assert login(broker.port, user, "") in NOT_AUTHORIZED, user
    # Another user's password is not this user's.
    assert login(broker.port, "argon2_cffi", USERS["py_bcrypt"][0]) in NOT_AUTHORIZED
    assert login(broker.port, "nobody", "ac-pw") in NOT_AUTHORIZED
    assert broker.stop() == 0, broker.log()


@pytest.mark.skipif(MOSQUITTO_PUB is None, reason="mosquitto_pub (mosquitto-clients) missing")
def test_mosquitto_pub_logs_in_with_each_scheme(start, tmp_path):
    chosen = ["argon2_cffi", "passlib_argon2i", "passlib_bcrypt", "openssl6", "openssl5"]
    broker = serve(start, write_passwd(tmp_path / "passwd", {u: USERS[u] for u in chosen}))
    broker.wait_log("started with")

    def pub(user: str, password: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [MOSQUITTO_PUB, "-h", HOST, "-p", str(broker.port), "-u", user, "-P", password,
             "-t", "passwords/test", "-m", "hello", "-q", "1"],
            capture_output=True, text=True, timeout=TIMEOUT)

    for user in chosen:
        good = pub(user, USERS[user][0])
        assert good.returncode == 0, f"{user}: {good.stderr}"
        bad = pub(user, "wrong")
        assert bad.returncode != 0, user
        assert "not authori" in bad.stderr.lower(), bad.stderr
    assert broker.stop() == 0, broker.log()


def amqtt_passwd(amqtt_bin: Path, *args: str) -> None:
    tool = amqtt_bin.with_name("amqtt_passwd")
    if not tool.is_file():
        pytest.fail(f"{tool} missing: cargo build --release --bin amqtt_passwd", pytrace=False)
    subprocess.run([str(tool), *args], check=True, capture_output=True, timeout=TIMEOUT)


def hash_of(path: Path, user: str) -> str:
    for line in path.read_text().splitlines():
        if line.startswith(user + ":"):
            return line.split(":", 1)[1]
    raise AssertionError(f"{user} not in {path}")


def amqtt_file_auth(passwd: Path, user: str, password: str) -> bool:
    """aMQTT 0.12.1's own FileAuthPlugin on `passwd`: does it let `user` in with `password`?"""
    from amqtt.broker import BrokerContext
    from amqtt.plugins.authentication import FileAuthPlugin
    from amqtt.session import Session

    context = BrokerContext(broker=None)
    context.config = FileAuthPlugin.Config(password_file=str(passwd))
    plugin = FileAuthPlugin(context)
    session = Session()
    session.username, session.password = user, password
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # sha512_crypt is deprecated there
        return bool(asyncio.run(plugin.authenticate(session=session)))


def test_amqtt_passwd_files_are_read_by_amqtt_and_passlib(amqtt_bin, start, tmp_path):
    passwd = tmp_path / "passwd"
    amqtt_passwd(amqtt_bin, "-c", "-b", str(passwd), "alice", "wonder land")
    amqtt_passwd(amqtt_bin, "--sha512", "-b", str(passwd), "bob", "builder")
    alice, bob = hash_of(passwd, "alice"), hash_of(passwd, "bob")

    assert alice.startswith("$argon2id$v=19$m=65536,t=3,p=4$"), alice
    assert argon2.PasswordHasher().verify(alice, "wonder land")
    assert not argon2.PasswordHasher().check_needs_rehash(alice), "argon2-cffi's defaults"
    assert passlib_argon2.verify("wonder land", alice)
    assert not passlib_argon2.verify("wonder lane", alice)
    assert passlib_sha512_crypt.verify("builder", bob)
    assert not passlib_sha512_crypt.verify("Builder", bob)

    assert amqtt_file_auth(passwd, "alice", "wonder land")
    assert not amqtt_file_auth(passwd, "alice", "wonder lane")
    try:
        import crypt  # noqa: F401  (aMQTT verifies sha512_crypt with it; gone in Python 3.13)
        assert amqtt_file_auth(passwd, "bob", "builder")
        assert not amqtt_file_auth(passwd, "bob", "Builder")
    except ImportError:
        pass

    broker = serve(start, passwd)
    broker.wait_log("started with")
    assert login(broker.port, "alice", "wonder land") == 0
    assert login(broker.port, "bob", "builder") == 0
    assert broker.stop() == 0, broker.log()


def test_a_scheme_the_broker_does_not_read_stops_it_naming_file_line_and_scheme(start, tmp_path):
    passwd = write_passwd(tmp_path / "passwd", {
        "alice": USERS["argon2_cffi"],
        "carol": ("c-pw", pbkdf2_sha256.hash("c-pw")),
    })
    broker = serve(start, passwd)
    assert broker.proc.wait(timeout=TIMEOUT) == 2, broker.log()
    log = broker.log()
    assert f"{passwd}:3:" in log, log
    assert "unsupported password hash scheme '$pbkdf2-sha256$' (passlib's PBKDF2)" in log, log


def test_what_an_argon2_login_costs(start, tmp_path):
    """N first logins of argon2id users (each verified on the shard's helper thread) against the
    same N logins again (answered from the cache of verified passwords). Printed with -s."""
    n = 8
    users = {f"u{i}": (f"pw-{i}", argon2.PasswordHasher().hash(f"pw-{i}")) for i in range(n)}
    broker = serve(start, write_passwd(tmp_path / "passwd", users))
    broker.wait_log("started with")

    def timed_logins() -> float:
        started = time.monotonic()
        for user, (password, _) in users.items():
            assert login(broker.port, user, password) == 0, user
        return (time.monotonic() - started) / n

    first, cached = timed_logins(), timed_logins()
    print(f"\nargon2id (m=65536, t=3, p=4) login: {first * 1000:.1f} ms first (verified), "
          f"{cached * 1000:.1f} ms cached, over {n} users")
    assert cached < first, (first, cached)
    assert broker.stop() == 0, broker.log()
