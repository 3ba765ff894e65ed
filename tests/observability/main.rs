//! Observability over real sockets: `$SYS` topics reach `rumqttc` subscribers on every shard and their
//! values follow the traffic; the Prometheus endpoint serves a valid text exposition (parsed here,
//! and checked with `promtool check metrics` when Debian's `prometheus` package is installed) whose
//! counters move with the traffic; the `metrics` configuration key and its example file load.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use amqtt::config::{BrokerConfig, MetricsConfig};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;
use tokio::time::timeout;

use common::{id_on_shard, start_broker_with};

// ---- a subscriber that remembers the latest payload of every topic -----------------------------

struct Watcher {
    client: AsyncClient,
    publishes: mpsc::UnboundedReceiver<rumqttc::Publish>,
    latest: HashMap<String, String>,
    _task: tokio::task::JoinHandle<()>,
}

async fn connect(addr: SocketAddr, id: &str) -> Watcher {
    let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    options.set_inflight(100);
    let (client, mut eventloop) = AsyncClient::new(options, 1000);
    loop {
        match timeout(Duration::from_secs(5), eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => break,
            Ok(Ok(_)) => {}
            other => panic!("no CONNACK: {other:?}"),
        }
    }
    let (tx, publishes) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        while let Ok(event) = eventloop.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = event {
                if tx.send(p).is_err() {
                    break;
                }
            }
        }
    });
    Watcher {
        client,
        publishes,
        latest: HashMap::new(),
        _task: task,
    }
}

impl Watcher {
    /// Waits until `topic`'s latest payload satisfies `ok`; returns it.
    async fn wait_for(&mut self, topic: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(value) = self.latest.get(topic) {
                if ok(value) {
                    return value.clone();
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match timeout(left, self.publishes.recv()).await {
                Ok(Some(p)) => {
                    let payload = String::from_utf8_lossy(&p.payload).into_owned();
                    self.latest.insert(p.topic.clone(), payload);
                }
                _ => panic!(
                    "{topic} never satisfied the condition; last value {:?}",
                    self.latest.get(topic)
                ),
            }
        }
    }

    async fn number(&mut self, topic: &str, ok: impl Fn(f64) -> bool) -> f64 {
        let text = self
            .wait_for(topic, |v| v.parse::<f64>().is_ok_and(&ok))
            .await;
        text.parse().unwrap_or(f64::NAN)
    }
}

// ---- HTTP and the text exposition format --------------------------------------------------------

/// One HTTP/1.1 request; returns (status code, body).
fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to metrics");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/plain\r\n\r\n"
    )
    .expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a header block");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|l| l.trim().parse().ok())
        .expect("Content-Length");
    if method != "HEAD" {
        assert_eq!(length, body.len(), "Content-Length matches the body");
    }
    (status, body.to_string())
}

/// A sample of the text format: family-independent name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A strict reader of the Prometheus text format (0.0.4) as far as this broker uses it: every
/// sample line must parse, and every sample must belong to a family announced by `# TYPE` with a
/// `# HELP` before it.
fn parse_exposition(text: &str) -> (Vec<Sample>, HashMap<String, String>) {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helps: HashMap<String, String> = HashMap::new();
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP name text");
            assert!(!help.trim().is_empty(), "empty HELP for {name}");
            helps.insert(name.to_string(), help.to_string());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            assert!(helps.contains_key(name), "TYPE before HELP for {name}");
            assert!(
                types.insert(name.to_string(), kind.to_string()).is_none(),
                "family {name} announced twice"
            );
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment {line}");
        let (series, value) = line.rsplit_once(' ').expect("sample value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), BTreeMap::new()),
            Some((name, rest)) => {
                let inner = rest.strip_suffix('}').expect("closing brace");
                let mut labels = BTreeMap::new();
                for pair in inner.split(',').filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once('=').expect("label=value");
                    let v = v
                        .strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .expect("quoted label value");
                    labels.insert(k.to_string(), v.to_string());
                }
                (name.to_string(), labels)
            }
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name {name}"
        );
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|base| types.get(*base).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(&name)
            .to_string();
        assert!(
            types.contains_key(&family),
            "sample {name} has no TYPE line"
        );
        samples.push(Sample {
            name,
            labels,
            value,
        });
    }
    (samples, types)
}

/// Sum of a metric's samples whose labels include all of `with`.
fn sum(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            with.iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

fn scrape(addr: SocketAddr) -> Vec<Sample> {
    let (status, body) = http(addr, "GET", "/metrics");
    assert_eq!(status, 200);
    parse_exposition(&body).0
}

/// Runs `promtool check metrics` on the text when promtool is installed (Debian: `prometheus`).
fn promtool_check(text: &str) {
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(_) => {
            eprintln!("promtool not installed: skipping `promtool check metrics`");
            return;
        }
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let output = child.wait_with_output().expect("promtool runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && said.trim().is_empty(),
        "promtool check metrics: {said}"
    );
}

fn observed_broker(shards: usize) -> (amqtt::BrokerHandle, SocketAddr, SocketAddr) {
    let (handle, addr) = start_broker_with(shards, |config| {
        config.sys_interval = Duration::from_secs(1);
        config.metrics = Some(MetricsConfig {
            bind: "127.0.0.1:0".parse().expect("addr"),
        });
    });
    let metrics = handle.metrics_address().expect("metrics address");
    assert_ne!(metrics.port(), 0);
    (handle, addr, metrics)
}

// ---- tests ----------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sys_topics_reach_both_shards_and_follow_traffic() {
    let (_broker, addr, _) = observed_broker(2);
    let mut a = connect(addr, &id_on_shard("obs-a", 0, 2)).await;
    let mut b = connect(addr, &id_on_shard("obs-b", 1, 2)).await;
    for w in [&a, &b] {
        w.client
            .subscribe("$SYS/broker/#", QoS::AtMostOnce)
            .await
            .expect("subscribe");
    }
    b.client
        .subscribe("obs/#", QoS::AtLeastOnce)
        .await
        .expect("subscribe");

    for w in [&mut a, &mut b] {
        w.number("$SYS/broker/clients/connected", |n| n == 2.0)
            .await;
        w.number("$SYS/broker/shards/count", |n| n == 2.0).await;
        w.number("$SYS/broker/shards/0/connections", |n| n == 1.0)
            .await;
        w.number("$SYS/broker/shards/1/connections", |n| n == 1.0)
            .await;
        let version = w.wait_for("$SYS/broker/version", |_| true).await;
        assert_eq!(
            version,
            format!("amqtt-rs version {}", env!("CARGO_PKG_VERSION"))
        );
        w.number("$SYS/broker/uptime", |n| n >= 1.0).await;
        w.wait_for("$SYS/broker/uptime/formatted", |v| v.starts_with("0:00:"))
            .await;
        w.number("$SYS/broker/time", |n| n > 1.6e9).await;
        for topic in [
            "clients/disconnected",
            "clients/maximum",
            "clients/total",
            "messages/received",
            "messages/sent",
            "messages/publish/sent",
            "messages/inflight",
            "messages/subscriptions/count",
            "load/bytes/received",
            "load/bytes/sent",
            "load/messages/received/1min",
            "load/messages/received/5min",
            "load/messages/received/15min",
            "load/messages/sent/1min",
            "shards/0/messages/sent",
            "shards/1/bus/received",
            "shards/1/bus/sent",
            "shards/1/bus/queue",
        ] {
            w.number(&format!("$SYS/broker/{topic}"), |n| n >= 0.0)
                .await;
        }
    }
    let base = a
        .number("$SYS/broker/messages/publish/received", |_| true)
        .await;
    let bytes_base = a.number("$SYS/broker/load/bytes/received", |_| true).await;

    const N: usize = 30;
    for i in 0..N {
        a.client
            .publish("obs/data", QoS::AtLeastOnce, false, format!("m{i}"))
            .await
            .expect("publish");
    }
    a.client
        .publish("obs/retained", QoS::AtLeastOnce, true, "kept")
        .await
        .expect("publish");
    let want = base + N as f64 + 1.0;
    for w in [&mut a, &mut b] {
        w.number("$SYS/broker/messages/publish/received", |n| n >= want)
            .await;
        // Shard 0 read them (the publisher's home), shard 1 delivered them (the subscriber's).
        w.number("$SYS/broker/shards/0/messages/received", |n| {
            n >= N as f64 + 1.0
        })
        .await;
        w.number("$SYS/broker/shards/1/messages/sent", |n| n >= N as f64)
            .await;
        w.number("$SYS/broker/shards/0/bus/sent", |n| n >= N as f64)
            .await;
        // The broker's own $SYS tree is not counted.
        w.number("$SYS/broker/messages/retained/count", |n| n == 1.0)
            .await;
        w.number("$SYS/broker/load/bytes/received", |n| n > bytes_base)
            .await;
        w.number("$SYS/broker/messages/subscriptions/count", |n| n == 3.0)
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_serves_valid_families_that_move_with_traffic() {
    let (_broker, addr, metrics) = observed_broker(2);
    let a = connect(addr, &id_on_shard("met-a", 0, 2)).await;
    let mut b = connect(addr, &id_on_shard("met-b", 1, 2)).await;
    b.client
        .subscribe("met/#", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    b.client
        .subscribe("$SYS/broker/clients/connected", QoS::AtMostOnce)
        .await
        .expect("subscribe");
    // Once $SYS shows both clients, the snapshots the exporter reads do too.
    b.number("$SYS/broker/clients/connected", |n| n == 2.0)
        .await;

    let (status, text) = http(metrics, "GET", "/metrics");
    assert_eq!(status, 200);
    promtool_check(&text);
    let (samples, types) = parse_exposition(&text);
    for (family, kind) in &types {
        assert!(family.starts_with("amqtt_"), "{family}");
        assert_eq!(
            family.ends_with("_total"),
            kind == "counter",
            "{family} is a {kind}: only counters end in _total"
        );
    }
    for family in [
        "amqtt_connections_open",
        "amqtt_connections_accepted_total",
        "amqtt_connections_rejected_total",
        "amqtt_messages_received_total",
        "amqtt_messages_sent_total",
        "amqtt_bytes_received_total",
        "amqtt_bytes_sent_total",
        "amqtt_messages_dropped_total",
        "amqtt_retained_messages",
        "amqtt_subscriptions",
        "amqtt_sessions",
        "amqtt_bus_messages_sent_total",
        "amqtt_bus_messages_received_total",
        "amqtt_bus_queue_depth",
        "amqtt_handshake_failures_total",
        "amqtt_malformed_packets_total",
        "amqtt_auth_failures_total",
        "amqtt_publish_delivery_latency_seconds",
    ] {
        assert!(types.contains_key(family), "no family {family}");
    }
    assert_eq!(
        types.get("amqtt_publish_delivery_latency_seconds"),
        Some(&"histogram".to_string())
    );
    assert_eq!(sum(&samples, "amqtt_shards", &[]), 2.0);
    assert_eq!(sum(&samples, "amqtt_connections_open", &[]), 2.0);
    assert_eq!(sum(&samples, "amqtt_sessions", &[("state", "online")]), 2.0);
    for shard in ["0", "1"] {
        assert_eq!(
            sum(&samples, "amqtt_connections_open", &[("shard", shard)]),
            1.0
        );
    }
    let received_before = sum(&samples, "amqtt_messages_received_total", &[("qos", "1")]);
    let bytes_before = sum(&samples, "amqtt_bytes_received_total", &[]);
    let latency_before = sum(
        &samples,
        "amqtt_publish_delivery_latency_seconds_count",
        &[],
    );

    const N: usize = 25;
    for i in 0..N {
        a.client
            .publish("met/x", QoS::AtLeastOnce, false, format!("m{i}"))
            .await
            .expect("publish");
    }
    let mut got = 0;
    while got < N {
        let p = timeout(Duration::from_secs(5), b.publishes.recv())
            .await
            .expect("a delivery within 5 s")
            .expect("event loop alive");
        if p.topic == "met/x" {
            got += 1;
        }
    }

    // The shards report once a second and the control shard reads once a second.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let samples = scrape(metrics);
        let received = sum(&samples, "amqtt_messages_received_total", &[("qos", "1")]);
        let sent = sum(
            &samples,
            "amqtt_messages_sent_total",
            &[("qos", "1"), ("shard", "1")],
        );
        let latency = sum(
            &samples,
            "amqtt_publish_delivery_latency_seconds_count",
            &[("shard", "1")],
        );
        let inf = sum(
            &samples,
            "amqtt_publish_delivery_latency_seconds_bucket",
            &[("shard", "1"), ("le", "+Inf")],
        );
        if received >= received_before + N as f64 && sent >= N as f64 && latency > latency_before {
            assert!(sum(&samples, "amqtt_bytes_received_total", &[]) > bytes_before);
            assert!(sum(&samples, "amqtt_bytes_sent_total", &[]) > 0.0);
            assert!(sum(&samples, "amqtt_bus_messages_sent_total", &[("shard", "0")]) >= N as f64);
            assert_eq!(inf, latency, "+Inf bucket equals _count");
            let latency_sum = sum(
                &samples,
                "amqtt_publish_delivery_latency_seconds_sum",
                &[("shard", "1")],
            );
            assert!(latency_sum > 0.0 && latency_sum < 5.0, "{latency_sum}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "counters did not move: received {received} (before {received_before}), sent {sent}, latency samples {latency}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[test]
fn metrics_endpoint_routes_and_serves_concurrent_scrapes() {
    let (_broker, _addr, metrics) = observed_broker(1);
    assert_eq!(http(metrics, "GET", "/").0, 404);
    assert_eq!(http(metrics, "GET", "/metrics/extra").0, 404);
    assert_eq!(http(metrics, "POST", "/metrics").0, 405);
    let (status, body) = http(metrics, "HEAD", "/metrics");
    assert_eq!((status, body.as_str()), (200, ""));
    // A client that connects and says nothing does not block the others.
    let _silent = TcpStream::connect(metrics).expect("connect");
    let scrapers: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                let (status, body) = http(metrics, "GET", "/metrics?x=1");
                (status, body.contains("amqtt_build_info"))
            })
        })
        .collect();
    for scraper in scrapers {
        assert_eq!(scraper.join().expect("scraper thread"), (200, true));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sys_interval_zero_publishes_nothing_and_metrics_stay_off() {
    let (handle, addr) = start_broker_with(2, |config| config.sys_interval = Duration::ZERO);
    assert_eq!(handle.metrics_address(), None);
    let mut w = connect(addr, "quiet").await;
    w.client
        .subscribe("$SYS/#", QoS::AtMostOnce)
        .await
        .expect("subscribe");
    if let Ok(Some(p)) = timeout(Duration::from_millis(2500), w.publishes.recv()).await {
        panic!("unexpected $SYS publish with sys_interval 0: {p:?}");
    }
}

#[test]
fn metrics_port_in_use_is_a_start_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let yaml = format!(
        "listeners:\n  default:\n    bind: 127.0.0.1:0\nshards: 1\npin_shards: false\nmetrics:\n  bind: 127.0.0.1:{port}\n"
    );
    let config = BrokerConfig::from_yaml_str(&yaml, "test").expect("config");
    match amqtt::Broker::new(config).and_then(amqtt::Broker::start) {
        Err(amqtt::StartError::Bind { name, .. }) => assert_eq!(name, "metrics"),
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("started on a port in use"),
    }
}

#[test]
fn metrics_configuration_loads_and_is_checked() {
    let example = BrokerConfig::from_file(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("config/metrics.yaml")
            .as_path(),
    )
    .expect("config/metrics.yaml loads");
    let metrics = example.metrics.expect("metrics on");
    assert_eq!(metrics.bind, "127.0.0.1:9883".parse().expect("addr"));
    assert_eq!(example.sys_interval, Duration::from_secs(10));

    let load = |yaml: &str| BrokerConfig::from_yaml_str(yaml, "m.yaml");
    assert_eq!(load("").expect("empty").metrics, None);
    assert_eq!(load("metrics:\n").expect("null").metrics, None);
    assert_eq!(
        load("metrics: {}\n").expect("empty section").metrics,
        Some(MetricsConfig {
            bind: "127.0.0.1:9883".parse().expect("addr")
        })
    );
    assert_eq!(
        load("metrics:\n  bind: ':9100'\n")
            .expect("port only")
            .metrics
            .map(|m| m.bind),
        Some("0.0.0.0:9100".parse().expect("addr"))
    );
    let error = load("metrics:\n  bind: 127.0.0.1:abc\n")
        .expect_err("bad port")
        .to_string();
    assert!(error.starts_with("m.yaml: key 'metrics.bind': "), "{error}");
    let error = load("metrics:\n  path: /m\n")
        .expect_err("unknown key")
        .to_string();
    assert!(
        error.contains("metrics") && error.contains("unknown key"),
        "{error}"
    );
    let error =
        load("listeners:\n  default:\n    bind: 0.0.0.0:9883\nmetrics:\n  bind: 127.0.0.1:9883\n")
            .expect_err("clash")
            .to_string();
    assert!(
        error.contains("metrics.bind") && error.contains("listener 'default'"),
        "{error}"
    );
}

#[test]
fn deploy_configurations_load() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let server =
        BrokerConfig::from_file(&root.join("deploy/broker.yaml")).expect("deploy/broker.yaml");
    assert_eq!(
        server.metrics.map(|m| m.bind),
        Some("0.0.0.0:9883".parse().expect("addr"))
    );
    assert_eq!(server.sys_interval, Duration::from_secs(10));

    let manifest = std::fs::read_to_string(root.join("deploy/kubernetes/configmap.yaml"))
        .expect("configmap.yaml");
    let doc: serde_yaml::Value = serde_yaml::from_str(&manifest).expect("YAML");
    let embedded = doc["data"]["broker.yaml"]
        .as_str()
        .expect("data.broker.yaml");
    let k8s = BrokerConfig::from_yaml_str(embedded, "configmap.yaml").expect("embedded config");
    let ports: Vec<u16> = k8s.listeners.iter().map(|l| l.bind.port()).collect();
    assert_eq!(ports, vec![1883, 8883, 8080]);
    assert_eq!(
        k8s.metrics.map(|m| m.bind.port()),
        Some(9883),
        "the Deployment's probes and annotations use 9883"
    );
}

#[test]
fn port_probes_are_counted_apart_from_malformed_packets() {
    let (_broker, addr, metrics) = observed_broker(1);
    for _ in 0..3 {
        drop(TcpStream::connect(addr).expect("probe"));
    }
    let mut garbage = TcpStream::connect(addr).expect("connect");
    garbage
        .write_all(&[0x10, 0x02, 0xff, 0xff])
        .expect("send a broken CONNECT");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let samples = scrape(metrics);
        let probes = sum(
            &samples,
            "amqtt_handshake_failures_total",
            &[("reason", "closed_before_connect")],
        );
        let malformed = sum(&samples, "amqtt_malformed_packets_total", &[]);
        if probes >= 3.0 && malformed >= 1.0 {
            assert_eq!(probes, 3.0);
            assert_eq!(malformed, 1.0);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "probes {probes}, malformed {malformed}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
