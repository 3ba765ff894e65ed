//! The embedding API over real sockets, with 1 and 2 shards: what the host publishes and retains
//! reaches `rumqttc` subscribers on every shard (and offline persistent sessions), the listings
//! show connected and offline sessions, their subscriptions and the retained topics, and an event
//! plugin hears every aMQTT event in order.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use amqtt::plugins::{ClientInfo, EventPlugin, Plugin};
use amqtt::protocol::{Message, QoS as AmqttQoS, TopicFilter};
use amqtt::HostError;
use rumqttc::QoS;

use common::rumqttc_client::{connect, settle, with_shards};
use common::{id_on_shard, start_broker, start_broker_plugins, start_broker_with};

with_shards!(
    host_publish_reaches_subscribers_on_every_shard_and_offline_sessions,
    retain_message_is_seen_by_later_subscribers_until_deleted,
    listings_show_sessions_subscriptions_and_retained_topics,
    event_plugin_hears_every_event_in_order,
    host_messages_are_journaled_like_a_clients,
);

/// The retained topics listed, without the broker's own `$SYS` ones (published once a second):
/// topic, QoS, size.
fn retained_outside_sys(broker: &amqtt::BrokerHandle) -> Vec<(String, AmqttQoS, usize)> {
    broker
        .retained_topics()
        .expect("retained topics")
        .into_iter()
        .filter(|r| !r.topic.as_str().starts_with('$'))
        .map(|r| (r.topic.to_string(), r.qos, r.size))
        .collect()
}

/// Connects `id` with a persistent session, subscribes to `filters` and disconnects: a session
/// that queues what it is sent until its client is back.
async fn leave_offline_session(addr: std::net::SocketAddr, id: &str, filters: &[(&str, QoS)]) {
    let client = connect(addr, id, false, None).await;
    for (filter, qos) in filters {
        client.subscribe(filter, *qos).await;
    }
    settle().await;
    client.client.disconnect().await.expect("disconnect");
    settle().await;
}

async fn host_publish_reaches_subscribers_on_every_shard_and_offline_sessions(shards: usize) {
    let (broker, addr) = start_broker(shards);
    let offline_id = id_on_shard("offline", shards - 1, shards);
    leave_offline_session(addr, &offline_id, &[("host/#", QoS::ExactlyOnce)]).await;
    let mut near = connect(addr, &id_on_shard("near", 0, shards), true, None).await;
    let mut far = connect(addr, &id_on_shard("far", shards - 1, shards), true, None).await;
    near.subscribe("host/+", QoS::AtLeastOnce).await;
    far.subscribe("host/#", QoS::AtMostOnce).await;
    settle().await;

    for i in 0..3 {
        broker
            .publish("host/a", format!("m{i}"), AmqttQoS::AtLeastOnce, false)
            .expect("host publish");
    }
    for i in 0..3 {
        let got = near.next().await;
        assert_eq!((got.topic.as_str(), got.qos), ("host/a", QoS::AtLeastOnce));
        assert_eq!(&got.payload[..], format!("m{i}").as_bytes(), "in order");
        assert!(!got.retain);
        let got = far.next().await;
        assert_eq!(got.qos, QoS::AtMostOnce, "the subscriber's QoS caps it");
        assert_eq!(&got.payload[..], format!("m{i}").as_bytes());
    }
    // Queued for the offline persistent session, delivered when it comes back.
    let mut back = connect(addr, &offline_id, false, None).await;
    assert!(back.session_present);
    for i in 0..3 {
        let got = back.next().await;
        assert_eq!(got.qos, QoS::AtLeastOnce);
        assert_eq!(&got.payload[..], format!("m{i}").as_bytes());
    }

    let refused = broker.publish("host/+", "x", AmqttQoS::AtMostOnce, false);
    assert!(
        matches!(refused, Err(HostError::Topic { .. })),
        "{refused:?}"
    );
}

async fn retain_message_is_seen_by_later_subscribers_until_deleted(shards: usize) {
    let (broker, addr) = start_broker(shards);
    broker
        .retain_message("r/t", "value", AmqttQoS::AtLeastOnce)
        .expect("retain");
    for shard in 0..shards {
        let mut sub = connect(addr, &id_on_shard("late", shard, shards), true, None).await;
        sub.subscribe("r/#", QoS::AtLeastOnce).await;
        let got = sub.next().await;
        assert_eq!(
            (got.topic.as_str(), &got.payload[..]),
            ("r/t", &b"value"[..])
        );
        assert!(got.retain, "a retained copy after SUBACK");
        assert_eq!(got.qos, QoS::AtLeastOnce);
    }
    assert_eq!(
        retained_outside_sys(&broker),
        [("r/t".to_string(), AmqttQoS::AtLeastOnce, 5)]
    );

    broker.delete_retained("r/t").expect("delete");
    assert_eq!(retained_outside_sys(&broker), []);
    settle().await;
    for shard in 0..shards {
        let mut sub = connect(addr, &id_on_shard("after", shard, shards), true, None).await;
        sub.subscribe("r/#", QoS::AtLeastOnce).await;
        sub.nothing_within(Duration::from_millis(300)).await;
    }
}

async fn listings_show_sessions_subscriptions_and_retained_topics(shards: usize) {
    let (broker, addr) = start_broker(shards);
    let online_id = id_on_shard("online", 0, shards);
    let offline_id = id_on_shard("offline", shards - 1, shards);
    let online = connect(addr, &online_id, true, None).await;
    online.subscribe("a/+", QoS::AtLeastOnce).await;
    leave_offline_session(
        addr,
        &offline_id,
        &[("b/#", QoS::ExactlyOnce), ("c", QoS::AtMostOnce)],
    )
    .await;
    broker
        .publish("b/1", "queued", AmqttQoS::AtLeastOnce, false)
        .expect("publish");
    broker
        .retain_message("a/1", "xy", AmqttQoS::ExactlyOnce)
        .expect("retain");

    // Accepted is routed on the host's shard: another shard's session may queue it a moment later.
    let deadline = Instant::now() + Duration::from_secs(5);
    let sessions = loop {
        let sessions = broker.sessions().expect("sessions");
        if sessions
            .iter()
            .any(|s| s.client_id == offline_id && s.queued > 0)
        {
            break sessions;
        }
        assert!(Instant::now() < deadline, "b/1 never queued: {sessions:?}");
        std::thread::sleep(Duration::from_millis(10));
    };
    let ids: Vec<&str> = sessions.iter().map(|s| s.client_id.as_str()).collect();
    let mut expected = vec![online_id.as_str(), offline_id.as_str()];
    expected.sort();
    assert_eq!(ids, expected);
    let on = sessions
        .iter()
        .find(|s| s.client_id == online_id)
        .expect("online session");
    assert!(on.connected && on.clean_session);
    assert_eq!(
        on.subscriptions,
        [("a/+".to_string(), AmqttQoS::AtLeastOnce)]
    );
    assert_eq!(on.shard, 0);
    let off = sessions
        .iter()
        .find(|s| s.client_id == offline_id)
        .expect("offline session");
    assert!(!off.connected && !off.clean_session);
    assert_eq!(
        off.subscriptions,
        [
            ("b/#".to_string(), AmqttQoS::ExactlyOnce),
            ("c".to_string(), AmqttQoS::AtMostOnce)
        ]
    );
    assert_eq!((off.queued, off.inflight), (1, 0), "the host's b/1 waits");
    assert_eq!(off.shard, shards - 1);

    let subscriptions = broker.subscriptions().expect("subscriptions");
    let listed: Vec<(&str, &str, AmqttQoS)> = subscriptions
        .iter()
        .map(|s| (s.filter.as_str(), s.client_id.as_str(), s.qos))
        .collect();
    assert_eq!(
        listed,
        [
            ("a/+", online_id.as_str(), AmqttQoS::AtLeastOnce),
            ("b/#", offline_id.as_str(), AmqttQoS::ExactlyOnce),
            ("c", offline_id.as_str(), AmqttQoS::AtMostOnce),
        ]
    );
    assert_eq!(
        retained_outside_sys(&broker),
        [("a/1".to_string(), AmqttQoS::ExactlyOnce, 2)]
    );
}

/// Writes down every event it hears, one line each.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<String>>>);

impl Recorder {
    fn push(&self, line: String) {
        self.0.lock().expect("lock").push(line);
    }
    fn lines(&self) -> Vec<String> {
        self.0.lock().expect("lock").clone()
    }
    fn wait_for(&self, line: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.lines().iter().any(|l| l == line) {
            assert!(
                Instant::now() < deadline,
                "no '{line}' in {:?}",
                self.lines()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl EventPlugin for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }
    fn broker_pre_start(&self) {
        self.push("pre_start".into());
    }
    fn broker_post_start(&self) {
        self.push("post_start".into());
    }
    fn broker_pre_shutdown(&self) {
        self.push("pre_shutdown".into());
    }
    fn broker_post_shutdown(&self) {
        self.push("post_shutdown".into());
    }
    fn client_connected(&self, client: &ClientInfo<'_>) {
        self.push(format!("connected {}", client.client_id));
    }
    fn client_disconnected(&self, client: &ClientInfo<'_>) {
        self.push(format!("disconnected {}", client.client_id));
    }
    fn subscribed(&self, client: &ClientInfo<'_>, filter: &TopicFilter, granted: AmqttQoS) {
        self.push(format!(
            "subscribed {} {filter} {}",
            client.client_id, granted as u8
        ));
    }
    fn unsubscribed(&self, client: &ClientInfo<'_>, filter: &TopicFilter) {
        self.push(format!("unsubscribed {} {filter}", client.client_id));
    }
    fn message_received(&self, client: &ClientInfo<'_>, message: &Message) {
        self.push(format!("message {} {}", client.client_id, message.topic));
    }
    fn retained_message(&self, message: &Message) {
        self.push(format!(
            "retained {} {}",
            message.topic,
            String::from_utf8_lossy(&message.payload)
        ));
    }
}

async fn event_plugin_hears_every_event_in_order(shards: usize) {
    let recorder = Recorder::default();
    let (broker, addr) = start_broker_plugins(shards, vec![Plugin::events(recorder.clone())]);
    let id = id_on_shard("events", shards - 1, shards);
    let client = connect(addr, &id, true, None).await;
    client.subscribe("e/#", QoS::AtLeastOnce).await;
    client.publish("e/1", QoS::AtLeastOnce, true, "v").await;
    client.client.unsubscribe("e/#").await.expect("unsubscribe");
    // A filter the session does not hold: no event.
    client
        .client
        .unsubscribe("none")
        .await
        .expect("unsubscribe");
    settle().await;
    broker.delete_retained("e/1").expect("host delete");
    client.client.disconnect().await.expect("disconnect");
    recorder.wait_for(&format!("disconnected {id}"));
    broker.stop().expect("stop");
    assert_eq!(
        recorder.lines(),
        [
            "pre_start".to_string(),
            "post_start".to_string(),
            format!("connected {id}"),
            format!("subscribed {id} e/# 1"),
            format!("message {id} e/1"),
            "retained e/1 v".to_string(),
            format!("unsubscribed {id} e/#"),
            "retained e/1 ".to_string(),
            format!("disconnected {id}"),
            "pre_shutdown".to_string(),
            "post_shutdown".to_string(),
        ]
    );
}

async fn host_messages_are_journaled_like_a_clients(shards: usize) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let persistent = |config: &mut amqtt::BrokerConfig| {
        config.persistence.enabled = true;
        config.persistence.dir = dir.path().to_path_buf();
    };
    let id = id_on_shard("durable", shards - 1, shards);
    let (broker, addr) = start_broker_with(shards, persistent);
    leave_offline_session(addr, &id, &[("d/#", QoS::AtLeastOnce)]).await;
    broker
        .publish("d/queued", "q", AmqttQoS::AtLeastOnce, false)
        .expect("publish");
    broker
        .retain_message("d/kept", "k", AmqttQoS::AtLeastOnce)
        .expect("retain");
    // The other shard queues it a moment after it was accepted.
    settle().await;
    broker.stop().expect("stop");

    let (broker, addr) = start_broker_with(shards, persistent);
    let mut back = connect(addr, &id, false, None).await;
    assert!(back.session_present, "the session was recovered");
    let mut got: Vec<(String, Vec<u8>)> = Vec::new();
    for _ in 0..2 {
        let p = back.next().await;
        got.push((p.topic.clone(), p.payload.to_vec()));
    }
    got.sort();
    assert_eq!(
        got,
        [
            ("d/kept".to_string(), b"k".to_vec()),
            ("d/queued".to_string(), b"q".to_vec())
        ],
        "both host messages were queued for the offline session and survived the restart"
    );
    assert_eq!(
        retained_outside_sys(&broker),
        [("d/kept".to_string(), AmqttQoS::AtLeastOnce, 1)]
    );
}

/// An embedding program reloads a configuration it built ([`amqtt::BrokerHandle::reload_with`]):
/// a listener added is opened (its real port reported) and a limit applied; one whose TLS files
/// are missing refuses the whole reload, which then changes nothing; without a file,
/// `reload()` says there is nothing to read again.
#[test]
fn reload_with_opens_a_listener_and_refuses_a_bad_configuration_whole() {
    let (broker, addr) = start_broker(2);
    let config = |extra: &str| {
        let yaml = format!(
            "listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:0\n  extra:\n    type: tcp\n    \
             bind: 127.0.0.1:0\n{extra}shards: 2\npin_shards: false\nmax_queued_messages: 5\n"
        );
        amqtt::BrokerConfig::from_yaml_str(&yaml, "test").expect("test config")
    };
    let report = broker.reload_with(config("")).expect("reload");
    assert!(report.kept.is_empty(), "{report:?}");
    assert!(report.disconnected.is_empty());
    assert!(
        report
            .applied
            .contains(&"max_queued_messages: 1000 -> 5".to_string()),
        "{report:?}"
    );
    let extra = broker.address("extra").expect("extra listener opened");
    assert_ne!(extra.port(), 0);
    std::net::TcpStream::connect(extra).expect("the new listener accepts");
    assert_eq!(
        broker.address("default"),
        Some(addr),
        "the default listener stays"
    );

    let bad = "  tls:\n    type: tcp\n    bind: 127.0.0.1:0\n    ssl: on\n    certfile: \
               /nonexistent/server.pem\n    keyfile: /nonexistent/server.key\n";
    let refused = broker
        .reload_with(config(bad))
        .expect_err("missing certificate");
    assert!(refused.changed_nothing(), "{refused}");
    assert!(
        refused.to_string().contains("/nonexistent/server.pem"),
        "{refused}"
    );
    assert_eq!(broker.address("tls"), None, "nothing opened");
    assert_eq!(broker.address("extra"), Some(extra), "nothing closed");

    assert!(matches!(broker.reload(), Err(amqtt::ReloadError::NoFile)));
    broker.stop().expect("stop");
}
