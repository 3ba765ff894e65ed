//! Observability over real sockets: `$SYS` topics reach `rumqttc` subscribers on every shard and their
//! values follow the traffic; the Prometheus endpoint serves a valid text exposition (parsed here,
//! and checked with `promtool check metrics` when Debian's `prometheus` package is installed) whose
//! counters move with the traffic; the `metrics` configuration key and its example file load.
//!
//! The `$SYS` subscriber is in `watcher.rs`, the HTTP and exposition-format helpers in `exposition.rs`.

#[path = "../common/mod.rs"]
mod common;
mod exposition;
mod watcher;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use amqtt::config::{BrokerConfig, MetricsConfig};
use rumqttc::QoS;
use tokio::time::timeout;

use common::{id_on_shard, start_broker_with};
use exposition::{http, parse_exposition, promtool_check, scrape, sum};
use watcher::connect;

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
        assert!(
            family.starts_with("amqtt_") || family.starts_with("process_"),
            "{family}"
        );
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
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_cpu_seconds_total",
        "process_start_time_seconds",
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
    assert!(server.persistence.enabled);
    assert_eq!(
        server.persistence.dir,
        std::path::Path::new("/var/lib/amqtt"),
        "the systemd unit's StateDirectory, the image's volume"
    );

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
    assert!(k8s.persistence.enabled);
    assert_eq!(
        k8s.persistence.dir,
        std::path::Path::new("/var/lib/amqtt"),
        "the Deployment's data volume"
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

/// aMQTT's process and in-flight topics: the broker process's memory (MiB) and CPU, and messages
/// in flight each way. A raw publisher's QoS 2 PUBLISH left without PUBREL is in flight *in*; its
/// QoS 1 delivery to a raw subscriber that never acknowledges is in flight *out*; being retained,
/// it is also stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqtt_process_and_inflight_topics() {
    use amqtt::protocol::{Packet, Publish, QoS as Q, Subscribe, SubscribeFilter, TopicFilter};
    let (_broker, addr, _) = observed_broker(2);
    let mut w = connect(addr, "obs-proc").await;
    w.client
        .subscribe("$SYS/broker/#", QoS::AtMostOnce)
        .await
        .expect("subscribe");
    let heap = w.number("$SYS/broker/heap/size", |n| n > 1.0).await;
    w.number("$SYS/broker/heap/maximum", |n| n >= heap).await;
    let cpu = w.number("$SYS/broker/cpu/percent", |n| n >= 0.0).await;
    w.number("$SYS/broker/cpu/maximum", |n| n >= cpu).await;
    w.number("$SYS/broker/messages/inflight/in", |n| n == 0.0)
        .await;

    let held = tokio::task::spawn_blocking(move || {
        let connect = |id: &str| {
            let (client, ack) = common::RawClient::mqtt_connect(
                addr,
                common::RawClient::connect_packet(id, true, 60),
            );
            assert!(matches!(ack, Packet::ConnAck(_)), "{ack:?}");
            client
        };
        let mut subscriber = connect("obs-never-acks");
        subscriber.send(&Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: vec![SubscribeFilter {
                filter: TopicFilter::new("obs/#").expect("filter"),
                qos: Q::AtLeastOnce,
            }],
        }));
        assert!(matches!(subscriber.recv(), Some(Packet::SubAck(_))));
        let mut publisher = connect("obs-never-releases");
        publisher.send(&Packet::Publish(Publish {
            dup: false,
            qos: Q::ExactlyOnce,
            retain: true,
            topic: "obs/held".try_into().expect("topic"),
            packet_id: Some(7),
            payload: bytes::Bytes::from_static(b"x"),
        }));
        assert!(matches!(publisher.recv(), Some(Packet::PubRec(_))));
        assert!(matches!(subscriber.recv(), Some(Packet::Publish(_))));
        (subscriber, publisher)
    })
    .await
    .expect("raw clients");

    w.number("$SYS/broker/messages/inflight/in", |n| n == 1.0)
        .await;
    w.number("$SYS/broker/messages/inflight/out", |n| n == 1.0)
        .await;
    w.number("$SYS/broker/messages/inflight", |n| n == 2.0)
        .await;
    w.number("$SYS/broker/messages/inflight/stored", |n| n >= 1.0)
        .await;
    w.number("$SYS/broker/messages/stored", |n| n >= 1.0).await;
    drop(held);
}
