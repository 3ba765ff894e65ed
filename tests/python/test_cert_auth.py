"""aMQTT's contrib certificate plugin configured as aMQTT configures it (issue #22): the `plugins:`
mapping names `amqtt.contrib.cert.CertificateAuthPlugin` with its `uri_domain`, and a paho client
over mutual TLS is let in only when its certificate's URI SAN is `spiffe://<uri_domain>/device/<id>`
and `<id>` is its client id. Certificates are made here with openssl.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from conftest import HOST
from mqtt_helpers import PahoClient, accepts, free_port, spawn_broker, stop_broker

DOMAIN = "devices.example.org"
# CONNACK 5 (not authorized), as paho 2 reports it for MQTT 3.1.1 (0x87).
REFUSED = (5, 0x87)


def _run(cmd):
    subprocess.run(cmd, check=True, capture_output=True, text=True)


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    """A CA, a server certificate for 127.0.0.1, and device certificates: `dev-7` of DOMAIN,
    `dev-8` of another domain."""
    if not shutil.which("openssl"):
        pytest.fail("openssl is required to make test certificates", pytrace=False)
    d = tmp_path_factory.mktemp("certs")
    _run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
          "-nodes", "-days", "2", "-subj", "/CN=amqtt test CA", "-keyout", str(d / "ca.key"),
          "-out", str(d / "ca.pem"), "-addext", "basicConstraints=critical,CA:TRUE",
          "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    for name, ext in [
        ("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth"),
        ("dev-7", f"subjectAltName=URI:spiffe://{DOMAIN}/device/dev-7,DNS:dev-7.local\n"
                  "extendedKeyUsage=clientAuth"),
        ("dev-8", "subjectAltName=URI:spiffe://elsewhere.example/device/dev-8\n"
                  "extendedKeyUsage=clientAuth"),
    ]:
        _run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
              "-subj", f"/CN={name}", "-keyout", str(d / f"{name}.key"),
              "-out", str(d / f"{name}.csr")])
        (d / f"{name}.ext").write_text(ext + "\n")
        _run(["openssl", "x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.pem"),
              "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-days", "2",
              "-extfile", str(d / f"{name}.ext"), "-out", str(d / f"{name}.pem")])
    return d


@pytest.fixture(scope="module")
def cert_broker(certs, amqtt_bin, tmp_path_factory):
    port = free_port()
    workdir = tmp_path_factory.mktemp("cert-broker")
    proc, log_path = spawn_broker(
        amqtt_bin, workdir,
        "listeners:\n"
        f"  mtls:\n    bind: {HOST}:{port}\n    ssl: on\n"
        f"    certfile: {certs}/server.pem\n    keyfile: {certs}/server.key\n"
        f"    cafile: {certs}/ca.pem\n    require-certificate: true\n"
        "shards: 2\npin_shards: false\n"
        "plugins:\n"
        f"  amqtt.contrib.cert.CertificateAuthPlugin:\n    uri_domain: {DOMAIN}\n")
    deadline = time.monotonic() + 10
    while not accepts(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("broker did not start:\n" + log_path.read_text(errors="replace")[-5000:],
                        pytrace=False)
        time.sleep(0.05)
    yield port
    stop_broker(proc, log_path)


def _connect(certs: Path, port: int, client_id: str, device: str) -> int:
    c = PahoClient(HOST, port, client_id=client_id)
    c.client.tls_set(ca_certs=str(certs / "ca.pem"), certfile=str(certs / f"{device}.pem"),
                     keyfile=str(certs / f"{device}.key"), cert_reqs=ssl.CERT_REQUIRED)
    try:
        return c.connect()[0]
    finally:
        c.close()


def test_the_device_whose_spiffe_id_is_its_client_id_connects(certs, cert_broker):
    assert _connect(certs, cert_broker, "dev-7", "dev-7") == 0
    # Its certificate used with another client id.
    assert _connect(certs, cert_broker, "dev-9", "dev-7") in REFUSED
    # A device of another trust domain, with its own id.
    assert _connect(certs, cert_broker, "dev-8", "dev-8") in REFUSED
