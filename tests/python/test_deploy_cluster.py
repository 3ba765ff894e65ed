"""Checks of the cluster kits: deploy/cluster (Docker Compose: three nats-servers, three amqtt nodes,
HAProxy) and deploy/kubernetes-cluster (StatefulSets of amqtt nodes and NATS servers). Apart from
tests/python/test_deploy.py (deploy/'s single-broker kit) to keep each file short.

- the files agree with each other: each node's cluster.node is its service or pod name, the NATS URLs
  and routes name the three servers, replicas match, HAProxy's servers are the nodes' PROXY-protocol
  listeners, mounted files and volumes exist;
- `haproxy -c`, `nats-server -t` (for Kubernetes with each pod's POD_NAME), `docker compose config`
  where Compose is installed, the Kubernetes schemas (`kubernetes-validate`) and `kubectl kustomize`;
- the Kubernetes init container's command, run here, writes a configuration the real broker loads;
- the compose kit's own files run on loopback (addresses and directories changed only) with the real
  nats-server, amqtt and HAProxy: clients spread over the nodes reach each other, retained messages too.
Each check skips when its tool is missing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from mqtt_helpers import PahoClient, RawConn, accepts, free_port, wait_for_text
from test_deploy import DEPLOY, need, run

# ---- Cluster: deploy/cluster (compose) ---------------------------------------------------------

CLUSTER = DEPLOY / "cluster"


def _nats_conf(text: str) -> dict:
    """The parts of a nats-server configuration the kit relies on (its own files' layout)."""
    def one(pattern: str) -> str:
        [value] = re.findall(pattern, text, re.M)
        return value
    return {"server_name": one(r"^server_name: (\S+)$"),
            "client": one(r"^listen: (\S+)$"),
            "cluster_name": one(r"^\s+name: (\S+)$"),
            "cluster_listen": one(r"^\s+listen: (\S+)$"),
            "routes": re.findall(r"nats-route://(\S+)", text),
            "store_dir": one(r"^\s+store_dir: (\S+)$")}


def _compose() -> dict:
    return yaml.safe_load((CLUSTER / "compose.yaml").read_text())


def _mounted(service: dict, target: str) -> Path:
    [source] = [v.split(":")[0] for v in service["volumes"] if v.split(":")[1] == target]
    return CLUSTER / source


def _haproxy_servers(text: str) -> list[str]:
    return re.findall(r"^\s+server \S+ (\S+)$", text, re.M)


def test_cluster_compose_files_exist_and_agree():
    """compose.yaml mounts files that exist; each NATS server's name is its service, its routes
    are the three servers; each node's cluster.node is its service, it names the three NATS
    servers and keeps three copies; HAProxy's servers are the nodes' proxied listeners."""
    compose = _compose()
    services = compose["services"]
    nats = sorted(s for s in services if s.startswith("nats-"))
    nodes = sorted(s for s in services if s.startswith("amqtt-"))
    assert len(nats) == 3 and len(nodes) == 3
    for name, service in services.items():
        assert service["image"], name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (CLUSTER / source).is_file(), (name, source)
            else:
                assert source in compose["volumes"], (name, source)
        if "build" in service:
            build = service["build"]
            assert (CLUSTER / build["context"] / build["dockerfile"]).is_file(), name
    confs = {n: _nats_conf(_mounted(services[n], "/etc/nats/nats.conf").read_text()) for n in nats}
    route_port = {c["cluster_listen"].rsplit(":", 1)[1] for c in confs.values()}
    client_port = {c["client"].rsplit(":", 1)[1] for c in confs.values()}
    assert len(route_port) == 1 and len(client_port) == 1
    [route_port], [client_port] = route_port, client_port
    assert len({c["cluster_name"] for c in confs.values()}) == 1
    for name, conf in confs.items():
        assert conf["server_name"] == name
        assert sorted(conf["routes"]) == [f"{n}:{route_port}" for n in nats], name
        store = [v for v in services[name]["volumes"] if v.split(":")[1] == conf["store_dir"]]
        assert store, f"{name}: the JetStream store is not on a volume"
    proxied = set()
    for name in nodes:
        config = yaml.safe_load(_mounted(services[name], "/etc/amqtt/broker.yaml").read_text())
        cluster = config["cluster"]
        assert cluster["node"] == name
        assert sorted(cluster["nats"]) == [f"nats://{n}:{client_port}" for n in nats]
        assert cluster["replicas"] == len(nats)
        assert config["persistence"]["enabled"] is True
        assert any(v.split(":")[1] == config["persistence"]["dir"]
                   for v in services[name]["volumes"]), f"{name}: persistence.dir not a volume"
        [listener] = config["listeners"].values()
        assert listener["proxy-protocol"] is True
        proxied.add(f"{name}:{listener['bind'].rsplit(':', 1)[1]}")
    haproxy = _mounted(services["haproxy"], "/usr/local/etc/haproxy/haproxy.cfg").read_text()
    assert sorted(_haproxy_servers(haproxy)) == sorted(proxied)
    assert "send-proxy-v2" in haproxy
    assert services["haproxy"]["ports"] == ["1883:1883"] and "bind :1883" in haproxy
    assert all("ports" not in services[n] for n in nats + nodes)


def test_cluster_compose_config_and_server_configs_check():
    """`haproxy -c` and `nats-server -t` on the kit's files; `docker compose config` when
    Compose is installed."""
    run(need("haproxy"), "-c", "-f", str(CLUSTER / "haproxy.cfg"))
    nats = shutil.which("nats-server") or "/usr/sbin/nats-server"
    if Path(nats).is_file():
        for conf in sorted((CLUSTER / "nats").glob("*.conf")):
            run(nats, "-t", "-c", str(conf))
    docker = shutil.which("docker")
    compose = docker and subprocess.run([docker, "compose", "version"], capture_output=True)
    if not compose or compose.returncode != 0:
        pytest.skip("docker compose is not installed (haproxy -c and nats-server -t passed)")
    run(docker, "compose", "-f", str(CLUSTER / "compose.yaml"), "config", "--quiet")


def test_the_compose_cluster_runs_on_loopback(amqtt_bin, tmp_path):
    """The kit's own files, only addresses and directories changed for loopback: three
    nats-servers form a JetStream cluster from their routes, three amqtt nodes join it with
    `replicas: 3`, HAProxy spreads clients over the nodes with the PROXY protocol, and every
    client gets what any other publishes, retained messages included."""
    nats_bin = shutil.which("nats-server") or "/usr/sbin/nats-server"
    if not Path(nats_bin).is_file():
        pytest.skip("nats-server is not installed")
    haproxy_bin = need("haproxy")
    services = _compose()["services"]
    nats = sorted(s for s in services if s.startswith("nats-"))
    nodes = sorted(s for s in services if s.startswith("amqtt-"))
    client = {n: free_port() for n in nats}
    route = {n: free_port() for n in nats}
    proxied = {n: free_port() for n in nodes}
    procs: list[subprocess.Popen] = []
    logs: dict[str, Path] = {}

    def start(name: str, args: list[str]) -> None:
        logs[name] = tmp_path / f"{name}.log"
        with open(logs[name], "wb") as log:
            procs.append(subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log))

    def wait(what: str, ready, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            assert all(p.poll() is None for p in procs), "a process exited:\n" + "\n".join(
                f"== {n}\n{p.read_text(errors='replace')[-2000:]}" for n, p in logs.items())
            assert time.monotonic() < deadline, f"{what}:\n" + "\n".join(
                f"== {n}\n{p.read_text(errors='replace')[-2000:]}" for n, p in logs.items())
            time.sleep(0.05)

    try:
        for name in nats:
            text = _mounted(services[name], "/etc/nats/nats.conf").read_text()
            conf = _nats_conf(text)
            text = (text.replace(conf["client"], f"127.0.0.1:{client[name]}")
                    .replace(conf["cluster_listen"], f"127.0.0.1:{route[name]}")
                    .replace(f"store_dir: {conf['store_dir']}", f"store_dir: {tmp_path / name}")
                    .replace("0.0.0.0:8222", f"127.0.0.1:{free_port()}"))
            for other in nats:
                text = text.replace(f"//{other}:", f"//127.0.0.1:{route[other]}#")
            text = re.sub(r"#\d+", "", text)
            (tmp_path / f"{name}.conf").write_text(text)
            start(name, [nats_bin, "-c", str(tmp_path / f"{name}.conf")])
        for name in nats:
            wait(f"{name} listening", lambda: accepts(client[name]))
        for name in nodes:
            config = yaml.safe_load(_mounted(services[name], "/etc/amqtt/broker.yaml").read_text())
            [listener] = config["listeners"].values()
            listener["bind"] = f"127.0.0.1:{proxied[name]}"
            config["persistence"]["dir"] = str(tmp_path / name / "data")
            config["metrics"]["bind"] = f"127.0.0.1:{free_port()}"
            config["cluster"]["nats"] = [
                re.sub(r"//([^:]+):\d+", lambda m: f"//127.0.0.1:{client[m[1]]}", url)
                for url in config["cluster"]["nats"]]
            (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(config))
            start(name, [str(amqtt_bin), "-c", str(tmp_path / f"{name}.yaml")])
        for name in nodes:
            wait(f"{name} joined", lambda: "joined cluster" in logs[name].read_text())
            for other in nodes:
                if other != name:
                    wait(f"{name} sees {other}",
                         lambda: f"node {other} is live" in logs[name].read_text())
        text = (CLUSTER / "haproxy.cfg").read_text()
        front = free_port()
        # maxconn as the file has it needs more descriptors than this machine allows.
        text = text.replace("bind :1883", f"bind 127.0.0.1:{front}") \
            .replace("maxconn 100000", "maxconn 1000")
        for name in nodes:
            text = text.replace(f" {name}:", f" 127.0.0.1:{proxied[name]}#")
        (tmp_path / "haproxy.cfg").write_text(re.sub(r"#\d+", "", text))
        start("haproxy", [haproxy_bin, "-db", "-f", str(tmp_path / "haproxy.cfg")])
        wait("haproxy listening", lambda: accepts(front))

        subs = []
        for i in range(3):
            sub = PahoClient("127.0.0.1", front, client_id=f"deploy-sub-{i}")
            assert sub.connect()[0] == 0
            sub.subscribe("demo/#", 1)
            subs.append(sub)
        # leastconn: one subscriber on each node.
        for i in range(3):
            wait(f"deploy-sub-{i} logged", lambda: any(
                f"client 'deploy-sub-{i}'" in logs[n].read_text() for n in nodes))
        on = {n for n in nodes for i in range(3)
              if f"client 'deploy-sub-{i}'" in logs[n].read_text()}
        assert on == set(nodes), on
        pub = PahoClient("127.0.0.1", front, client_id="deploy-pub")
        assert pub.connect()[0] == 0
        for i in range(20):
            pub.publish(f"demo/{i % 2}", f"m{i}", qos=i % 2)
        pub.publish("demo/state", "retained", qos=1, retain=True)
        for sub in subs:
            got = [m.payload for m in sub.get_messages(21, timeout=10)]
            assert sorted(got) == sorted([f"m{i}".encode() for i in range(20)] + [b"retained"])
            sub.close()
        pub.close()
        # A later client, wherever it lands, gets the retained message.
        for i in range(3):
            late = PahoClient("127.0.0.1", front, client_id=f"deploy-late-{i}")
            assert late.connect()[0] == 0
            late.subscribe("demo/state", 1)
            assert late.get_message(timeout=10).payload == b"retained"
            late.close()
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


# ---- Cluster: deploy/kubernetes-cluster --------------------------------------------------------

KCLUSTER = DEPLOY / "kubernetes-cluster"


def _cluster_manifests() -> dict[str, dict]:
    """kind/name -> manifest, over every file of the kit (some hold two)."""
    found = {}
    for path in sorted(KCLUSTER.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["kind"] != "Kustomization":
                found[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return found


def _nats_server() -> str:
    path = shutil.which("nats-server") or "/usr/sbin/nats-server"
    if not Path(path).is_file():
        pytest.skip("nats-server is not installed")
    return path


def test_kubernetes_cluster_manifests_validate_and_build():
    kustomization = yaml.safe_load((KCLUSTER / "kustomization.yaml").read_text())
    files = sorted(p.name for p in KCLUSTER.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(kustomization["resources"]) == files
    docs = _cluster_manifests()
    assert len(docs) == 7, sorted(docs)
    if shutil.which("kubectl"):
        built = run("kubectl", "kustomize", str(KCLUSTER))
        assert {f"{d['kind']}/{d['metadata']['name']}" for d in yaml.safe_load_all(built)} == set(docs)
    tool = need("kubernetes-validate")
    out = run(tool, "--strict", *[str(KCLUSTER / f) for f in files])
    assert out.count("passed") == len(docs), out


def test_kubernetes_cluster_nodes_are_named_by_their_pods_and_name_the_nats_servers(amqtt_bin,
                                                                                   tmp_path):
    """The init container's own command, run here, writes the configuration with the pod's name
    as cluster.node; it names every NATS pod through the headless Service, keeps a copy per NATS
    server, and loads in the real broker (started with NATS unreachable: it serves locally)."""
    docs = _cluster_manifests()
    nodes, nats = docs["StatefulSet/amqtt"], docs["StatefulSet/nats"]
    nats_service = docs[f"Service/{nats['spec']['serviceName']}"]
    assert nats_service["spec"]["clusterIP"] == "None"
    assert nats_service["spec"]["publishNotReadyAddresses"] is True
    assert docs[f"Service/{nodes['spec']['serviceName']}"]["spec"]["clusterIP"] == "None"
    pod = nodes["spec"]["template"]["spec"]
    [init] = pod["initContainers"]
    [broker] = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    [template] = [m for m in init["volumeMounts"] if "configMap" in volumes[m["name"]]]
    [written] = [m for m in init["volumeMounts"] if "emptyDir" in volumes[m["name"]]]
    assert {"name": written["name"], "mountPath": written["mountPath"], "readOnly": True} in \
        broker["volumeMounts"]
    config_path = broker["args"][broker["args"].index("-c") + 1]
    assert config_path.startswith(written["mountPath"] + "/")
    [pod_name] = [e for e in init["env"] if e["name"] == "POD_NAME"]
    assert pod_name["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    configmap = docs[f"ConfigMap/{volumes[template['name']]['configMap']['name']}"]
    (tmp_path / "template").mkdir()
    (tmp_path / "config").mkdir()
    for key, text in configmap["data"].items():
        (tmp_path / "template" / key).write_text(text)
    script = init["command"][-1].replace(template["mountPath"], str(tmp_path / "template")) \
        .replace(written["mountPath"], str(tmp_path / "config"))
    names = [f"{nodes['metadata']['name']}-{i}" for i in range(nodes["spec"]["replicas"])]
    for name in names:
        done = subprocess.run([*init["command"][:-1], script], env={"POD_NAME": name},
                              capture_output=True, text=True, timeout=10)
        assert done.returncode == 0, done.stderr
        config = yaml.safe_load((tmp_path / "config" / Path(config_path).name).read_text())
        cluster = config["cluster"]
        assert cluster["node"] == name
        assert cluster["nats"] == [
            f"nats://{nats['metadata']['name']}-{i}.{nats_service['metadata']['name']}:4222"
            for i in range(nats["spec"]["replicas"])]
        assert cluster["replicas"] == nats["spec"]["replicas"]
        assert {"name": "data", "mountPath": config["persistence"]["dir"]} in broker["volumeMounts"]
    # The last one, in the real broker.
    port = free_port()
    config["listeners"]["default"]["bind"] = f"127.0.0.1:{port}"
    config["persistence"]["dir"] = str(tmp_path / "data")
    config["metrics"]["bind"] = f"127.0.0.1:{free_port()}"
    config["cluster"]["nats"] = [f"nats://127.0.0.1:{free_port()}"]
    (tmp_path / "node.yaml").write_text(yaml.safe_dump(config))
    log = tmp_path / "node.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(amqtt_bin), "-c", str(tmp_path / "node.yaml")],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        wait_for_text(log, "started with 2 shard(s)")
        conn = RawConn("127.0.0.1", port)
        assert conn.connect(f"on-{names[-1]}") == bytes([0, 0])
        conn.close()
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0, log.read_text()[-3000:]


def test_kubernetes_cluster_nats_config_checks_for_each_pod(tmp_path):
    """nats-server -t on the ConfigMap's file with each pod's POD_NAME (and refuses it without);
    the routes are the three pods through the headless Service."""
    nats_bin = _nats_server()
    docs = _cluster_manifests()
    nats = docs["StatefulSet/nats"]
    pod = nats["spec"]["template"]["spec"]
    [container] = pod["containers"]
    config_path = container["args"][container["args"].index("-c") + 1]
    [mount] = [m for m in container["volumeMounts"] if config_path.startswith(m["mountPath"] + "/")]
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    text = docs[f"ConfigMap/{volume['configMap']['name']}"]["data"][Path(config_path).name]
    conf = _nats_conf(text)
    service = nats["spec"]["serviceName"]
    pods = [f"{nats['metadata']['name']}-{i}" for i in range(nats["spec"]["replicas"])]
    assert conf["server_name"] == "$POD_NAME"
    assert conf["routes"] == [f"{p}.{service}:6222" for p in pods]
    data = [m for m in container["volumeMounts"] if m["mountPath"] == conf["store_dir"]]
    assert data and data[0]["name"] in {c["metadata"]["name"] for c in nats["spec"]["volumeClaimTemplates"]}
    (tmp_path / "nats.conf").write_text(text)
    for name in pods:
        done = subprocess.run([nats_bin, "-t", "-c", str(tmp_path / "nats.conf")],
                              env={"POD_NAME": name}, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
    refused = subprocess.run([nats_bin, "-t", "-c", str(tmp_path / "nats.conf")], env={},
                             capture_output=True, text=True)
    assert refused.returncode != 0 and "POD_NAME" in refused.stdout + refused.stderr


def test_the_cluster_documentation_links_resolve():
    """README, deploy/README.md and the sizing plan point at files that exist."""
    repo = DEPLOY.parent
    for doc in [repo / "README.md", DEPLOY / "README.md", repo / "docs/cluster-sizing.md"]:
        links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text())
        cluster = [l for l in links if "cluster" in l and "://" not in l]
        assert cluster, f"{doc.name} links nothing of the cluster kit"
        for link in cluster:
            assert (doc.parent / link).exists(), f"{doc.name}: {link}"
