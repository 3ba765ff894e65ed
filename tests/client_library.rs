//! The client library (`amqtt::client::MqttClient`) over real sockets against our broker, started
//! embedded: QoS 0/1/2 both ways, many publishes in flight, subscribe/unsubscribe, wills, typed
//! errors (refused, unreachable, timeouts), and auto-reconnect across a broker restart.

mod client_support;
mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures_lite::future::block_on;

use amqtt::client::{ClientConfig, ClientError, MqttClient};
use amqtt::protocol::{ConnectReturnCode, LastWill, QoS, SubscribeReturnCode, TopicName};

use client_support::{eventually, free_port, BrokerProcess, Proxy};
use common::{start_broker, start_broker_with};

const WAIT: Option<Duration> = Some(Duration::from_secs(5));

fn url(addr: std::net::SocketAddr) -> String {
    format!("mqtt://{addr}")
}

fn connected(url: &str, id: &str, config: ClientConfig) -> MqttClient {
    let client = MqttClient::new(Some(id.to_string()), config);
    block_on(client.connect(url)).expect("connect");
    client
}

#[test]
fn publish_and_receive_at_every_qos() {
    let (_broker, addr) = start_broker(2);
    let url = url(addr);
    let sub = connected(&url, "lib-sub", ClientConfig::default());
    let pubr = connected(&url, "lib-pub", ClientConfig::default());
    block_on(async {
        let codes = sub
            .subscribe(&[("lib/#", QoS::ExactlyOnce), ("other", QoS::AtMostOnce)])
            .await
            .expect("subscribe");
        assert_eq!(
            codes,
            vec![
                SubscribeReturnCode::Success(QoS::ExactlyOnce),
                SubscribeReturnCode::Success(QoS::AtMostOnce)
            ]
        );
        for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
            .into_iter()
            .enumerate()
        {
            pubr.publish(&format!("lib/{i}"), format!("m{i}"), Some(qos), None)
                .await
                .expect("publish");
        }
        for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
            .into_iter()
            .enumerate()
        {
            let m = sub.deliver_message(WAIT).await.expect("message");
            assert_eq!(m.message.topic.as_str(), format!("lib/{i}"));
            assert_eq!(&m.message.payload[..], format!("m{i}").as_bytes());
            assert_eq!(m.message.qos, qos);
            assert!(!m.message.retain && !m.dup);
        }
        pubr.disconnect().await.expect("disconnect");
        sub.disconnect().await.expect("disconnect");
    });
    assert!(!sub.is_connected());
}

#[test]
fn many_publishes_in_flight_at_once() {
    // The seed's test_coro2: publishes started together, completed in any order.
    let (_broker, addr) = start_broker(1);
    let url = url(addr);
    let config = ClientConfig {
        max_inflight: 16, // fewer slots than messages: the rest wait their turn
        ..ClientConfig::default()
    };
    let sub = connected(&url, "coro-sub", ClientConfig::default());
    let pubr = connected(&url, "coro-pub", config);
    block_on(async {
        sub.subscribe(&[("coro/#", QoS::ExactlyOnce)])
            .await
            .unwrap();
        let pending: Vec<_> = (0..150)
            .map(|i| {
                let qos = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce][i % 3];
                pubr.start_publish(&format!("coro/{i}"), format!("{i}"), Some(qos), None)
                    .expect("start publish")
            })
            .collect();
        for p in pending {
            p.wait().await.expect("publish completes");
        }
        let mut seen = BTreeSet::new();
        for _ in 0..150 {
            let m = sub.deliver_message(WAIT).await.expect("message");
            seen.insert(m.message.topic.as_str().to_string());
        }
        assert_eq!(seen.len(), 150);
        assert!(matches!(
            sub.deliver_message(Some(Duration::from_millis(200))).await,
            Err(ClientError::Timeout(_))
        ));
    });
}

#[test]
fn per_topic_and_default_qos_and_retain_come_from_the_config() {
    let (_broker, addr) = start_broker(1);
    let url = url(addr);
    let yaml = "default_qos: 1\ntopics:\n  cfg/retained: {qos: 2, retain: true}\n";
    let config = ClientConfig::from_yaml_str(yaml, "test").unwrap();
    let pubr = connected(&url, "cfg-pub", config);
    let sub = connected(&url, "cfg-sub", ClientConfig::default());
    block_on(async {
        pubr.publish("cfg/retained", "kept", None, None)
            .await
            .unwrap();
        sub.subscribe(&[("cfg/#", QoS::ExactlyOnce)]).await.unwrap();
        let m = sub.deliver_message(WAIT).await.unwrap();
        assert!(m.message.retain, "topics: retain applies");
        assert_eq!(m.message.qos, QoS::ExactlyOnce);
        pubr.publish("cfg/plain", "x", None, None).await.unwrap();
        let m = sub.deliver_message(WAIT).await.unwrap();
        assert_eq!(
            (m.message.topic.as_str(), m.message.qos, m.message.retain),
            ("cfg/plain", QoS::AtLeastOnce, false)
        );
        // Clean up the retained message for other runs.
        pubr.publish("cfg/retained", "", None, Some(true))
            .await
            .unwrap();
    });
}

#[test]
fn unsubscribe_stops_delivery() {
    let (_broker, addr) = start_broker(1);
    let url = url(addr);
    let client = connected(&url, "unsub", ClientConfig::default());
    block_on(async {
        client
            .subscribe(&[("u/a", QoS::AtLeastOnce), ("u/b", QoS::AtLeastOnce)])
            .await
            .unwrap();
        client.unsubscribe(&["u/a"]).await.unwrap();
        client
            .publish("u/a", "no", Some(QoS::AtLeastOnce), None)
            .await
            .unwrap();
        client
            .publish("u/b", "yes", Some(QoS::AtLeastOnce), None)
            .await
            .unwrap();
        let m = client.deliver_message(WAIT).await.unwrap();
        assert_eq!(m.message.topic.as_str(), "u/b");
        assert!(client
            .deliver_message(Some(Duration::from_millis(300)))
            .await
            .is_err());
    });
}

#[test]
fn generated_client_ids_look_like_amqtt_ones() {
    let a = MqttClient::new(None, ClientConfig::default());
    let b = MqttClient::new(None, ClientConfig::default());
    assert!(a.client_id().starts_with("amqtt/"));
    assert_eq!(a.client_id().len(), "amqtt/".len() + 16);
    assert_ne!(a.client_id(), b.client_id());
}

#[test]
fn calls_before_connect_fail_with_not_connected() {
    let client = MqttClient::new(None, ClientConfig::default());
    block_on(async {
        assert!(matches!(
            client.publish("a", "x", None, None).await,
            Err(ClientError::NotConnected)
        ));
        assert!(matches!(
            client.subscribe(&[("a", QoS::AtMostOnce)]).await,
            Err(ClientError::NotConnected)
        ));
        assert!(matches!(
            client.deliver_message(None).await,
            Err(ClientError::NotConnected)
        ));
        client
            .disconnect()
            .await
            .expect("disconnecting a fresh client is a no-op");
    });
}

#[test]
fn invalid_topics_and_urls_are_refused_before_sending() {
    let (_broker, addr) = start_broker(1);
    let client = connected(&url(addr), "invalid", ClientConfig::default());
    block_on(async {
        let err = client.publish("a/+", "x", None, None).await.unwrap_err();
        assert!(
            err.to_string().starts_with("invalid topic name 'a/+'"),
            "{err}"
        );
        let err = client
            .subscribe(&[("a/#/b", QoS::AtMostOnce)])
            .await
            .unwrap_err();
        assert!(err.to_string().starts_with("invalid topic filter"), "{err}");
        let empty: [(&str, QoS); 0] = [];
        assert!(client.subscribe(&empty).await.is_err());
        // Still connected and working.
        client
            .publish("a/b", "x", Some(QoS::AtLeastOnce), None)
            .await
            .unwrap();
        assert!(matches!(
            client.connect(&url(addr)).await,
            Err(ClientError::AlreadyConnected)
        ));
    });
    let other = MqttClient::new(None, ClientConfig::default());
    let err = block_on(other.connect("http://127.0.0.1")).unwrap_err();
    assert!(matches!(err, ClientError::Url(_)), "{err}");
}

#[test]
fn refused_connection_names_the_connack_reason() {
    let (_broker, addr) = start_broker_with(1, |config| config.allow_anonymous = false);
    let client = MqttClient::new(Some("anon".into()), ClientConfig::default());
    let err = block_on(client.connect(&url(addr))).unwrap_err();
    match &err {
        ClientError::Refused(code) => assert!(matches!(
            code,
            ConnectReturnCode::NotAuthorized | ConnectReturnCode::BadUserNameOrPassword
        )),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(
        err.to_string()
            .starts_with("connection refused by the broker: "),
        "{err}"
    );
    assert!(!client.is_connected());
}

#[test]
fn unreachable_broker_fails_promptly() {
    let port = free_port();
    let client = MqttClient::new(None, ClientConfig::default());
    let started = Instant::now();
    let err = block_on(client.connect(&format!("mqtt://127.0.0.1:{port}"))).unwrap_err();
    assert!(matches!(err, ClientError::Transport(_)), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn a_silent_server_times_out_the_connack() {
    // A TCP listener that never answers CONNECT.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let config = ClientConfig::from_yaml_str("connection_timeout: 0.3", "test").unwrap();
    let client = MqttClient::new(None, config);
    let started = Instant::now();
    let err = block_on(client.connect(&url(addr))).unwrap_err();
    assert!(matches!(err, ClientError::ConnAckTimeout(_)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
    drop(listener);
}

fn will_config(topic: &str) -> ClientConfig {
    ClientConfig {
        will: Some(LastWill {
            topic: TopicName::new(topic).unwrap(),
            payload: "gone".into(),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: None,
        }),
        ..ClientConfig::default()
    }
}

#[test]
fn disconnect_discards_the_will_and_dropping_publishes_it() {
    let (_broker, addr) = start_broker(1);
    let url = url(addr);
    let watcher = connected(&url, "will-watcher", ClientConfig::default());
    block_on(watcher.subscribe(&[("wills/#", QoS::AtLeastOnce)])).unwrap();

    let polite = connected(&url, "polite", will_config("wills/polite"));
    block_on(polite.disconnect()).unwrap();
    let rude = connected(&url, "rude", will_config("wills/rude"));
    drop(rude);

    let m = block_on(watcher.deliver_message(WAIT)).expect("the dropped client's will");
    assert_eq!(m.message.topic.as_str(), "wills/rude");
    assert_eq!(&m.message.payload[..], b"gone");
    assert!(block_on(watcher.deliver_message(Some(Duration::from_millis(500)))).is_err());
}

#[test]
fn waiters_get_an_error_when_the_connection_is_lost_without_auto_reconnect() {
    let mut broker = BrokerProcess::start(free_port());
    let config = ClientConfig::from_yaml_str("auto_reconnect: false", "test").unwrap();
    let client = connected(&broker.url(), "no-reconnect", config);
    block_on(client.subscribe(&[("x", QoS::AtMostOnce)])).unwrap();
    broker.stop();
    let err = block_on(client.deliver_message(Some(Duration::from_secs(10)))).unwrap_err();
    assert!(matches!(err, ClientError::ConnectionLost(_)), "{err}");
    let err = block_on(client.publish("x", "y", Some(QoS::AtLeastOnce), None)).unwrap_err();
    assert!(matches!(err, ClientError::ConnectionLost(_)), "{err}");
    assert!(!client.is_connected());
}

#[test]
fn giving_up_reconnecting_fails_the_waiters() {
    let mut broker = BrokerProcess::start(free_port());
    let yaml = "auto_reconnect: true\nreconnect_retries: 2\nreconnect_max_interval: 0.1\n";
    let config = ClientConfig::from_yaml_str(yaml, "test").unwrap();
    let client = connected(&broker.url(), "gives-up", config);
    broker.stop();
    // Accepted while offline, then failed when the retries run out: never a hang.
    let publish = client
        .start_publish("x", "y", Some(QoS::AtLeastOnce), None)
        .expect("queued while reconnecting");
    let err = block_on(publish.wait()).unwrap_err();
    assert!(
        matches!(err, ClientError::ReconnectFailed { attempts: 2, .. }),
        "{err}"
    );
    let err = block_on(client.deliver_message(None)).unwrap_err();
    assert!(matches!(err, ClientError::ReconnectFailed { .. }), "{err}");
}

/// The broker restarts under a subscriber and a publisher, both with auto-reconnect and clean
/// session off. The new broker has no sessions (no persistence yet), so the subscriber must
/// re-subscribe by itself; the publisher buffers what it publishes while it is offline and re-sends
/// unacknowledged QoS 1 messages after reconnecting, so nothing published during the gap is lost.
///
/// The publisher goes through a proxy that keeps it offline until the subscriber is back: without
/// broker persistence, a message that reaches the new broker before any subscription exists there
/// has nobody to go to. (Messages the old broker had accepted but not delivered when it stopped are
/// lost without persistence; `client_mosquitto.rs` tests the same scenario with a persistent broker.)
#[test]
fn auto_reconnect_restores_subscriptions_and_loses_nothing_published_in_the_gap() {
    let port = free_port();
    let mut broker = BrokerProcess::start(port);
    let yaml = "auto_reconnect: true\nreconnect_retries: -1\nreconnect_max_interval: 0.2\ncleansession: false\n";
    let config = ClientConfig::from_yaml_str(yaml, "test").unwrap();
    let proxy = Proxy::start(port);
    let sub = connected(
        &format!("mqtt://127.0.0.1:{port}"),
        "gap-sub",
        config.clone(),
    );
    let pubr = connected(&proxy.url(), "gap-pub", config);
    block_on(sub.subscribe(&[("gap/#", QoS::AtLeastOnce)])).unwrap();
    block_on(pubr.publish("gap/before", "0", Some(QoS::AtLeastOnce), None)).unwrap();
    assert_eq!(
        block_on(sub.deliver_message(WAIT))
            .unwrap()
            .message
            .topic
            .as_str(),
        "gap/before"
    );

    proxy.set_up(false);
    broker.stop();
    assert!(eventually(Duration::from_secs(5), || !sub.is_connected()
        && !pubr.is_connected()));
    let during: Vec<_> = (0..10)
        .map(|i| {
            pubr.start_publish(
                &format!("gap/{i}"),
                format!("{i}"),
                Some(QoS::AtLeastOnce),
                None,
            )
            .expect("accepted while offline")
        })
        .collect();

    broker.restart();
    assert!(
        eventually(Duration::from_secs(10), || sub.is_connected()),
        "the subscriber reconnects"
    );
    // The subscriber re-subscribes right after CONNACK; a probe shows when that is done.
    let probe = connected(
        &format!("mqtt://127.0.0.1:{port}"),
        "gap-probe",
        ClientConfig::default(),
    );
    let mut probed = false;
    for _ in 0..50 {
        block_on(probe.publish("gap/probe", "p", Some(QoS::AtLeastOnce), None)).unwrap();
        if block_on(sub.deliver_message(Some(Duration::from_millis(100)))).is_ok() {
            probed = true;
            break;
        }
    }
    assert!(probed, "the subscription was restored on the new broker");
    while block_on(sub.deliver_message(Some(Duration::from_millis(200)))).is_ok() {}

    proxy.set_up(true);
    for p in during {
        block_on(p.wait()).expect("published after the reconnect");
    }
    let mut got = BTreeSet::new();
    while got.len() < 10 {
        let m = block_on(sub.deliver_message(WAIT)).expect("every message from the gap");
        got.insert(m.message.topic.as_str().to_string());
    }
    assert_eq!(got, (0..10).map(|i| format!("gap/{i}")).collect());
    block_on(pubr.disconnect()).unwrap();
    block_on(sub.disconnect()).unwrap();
}

#[test]
fn usable_from_many_threads_at_once() {
    let (_broker, addr) = start_broker(2);
    let client = std::sync::Arc::new(connected(&url(addr), "threads", ClientConfig::default()));
    block_on(client.subscribe(&[("th/#", QoS::AtLeastOnce)])).unwrap();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let client = std::sync::Arc::clone(&client);
            std::thread::spawn(move || {
                for i in 0..25 {
                    block_on(client.publish(
                        &format!("th/{t}/{i}"),
                        "x",
                        Some(QoS::AtLeastOnce),
                        None,
                    ))
                    .expect("publish");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for _ in 0..100 {
        block_on(client.deliver_message(WAIT)).expect("message");
    }
}
