//! The broker over real TCP sockets with the third-party `rumqttc` crate's MQTT 5 client
//! (`rumqttc::v5`), at 1 and 2 shards, with the publisher and the subscriber homed on different
//! shards where there are two: message properties, subscription identifiers, No Local, message
//! expiry, session expiry and resume, takeover's reason code and shared subscriptions all cross the
//! shard boundary.

mod common;

use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::{
    ConnectReturnCode, DisconnectReasonCode, Filter, Packet, Publish, PublishProperties,
    SubscribeProperties,
};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, StateError};
use tokio::sync::mpsc;
use tokio::time::timeout;

use common::rumqttc_client::with_shards;
use common::{id_on_shard, start_broker};

with_shards!(
    properties_are_forwarded_unchanged,
    no_local_skips_the_clients_own_messages,
    session_expiry_keeps_the_queue_until_resumed,
    takeover_says_session_taken_over,
    shared_subscription_gives_each_message_to_one_member,
    expired_retained_message_is_not_delivered,
    subscription_identifier_reaches_the_subscriber,
);

const WAIT: Duration = Duration::from_secs(5);

/// A connected v5 client; what its event loop receives arrives on channels.
struct V5 {
    client: AsyncClient,
    publishes: mpsc::UnboundedReceiver<Publish>,
    disconnects: mpsc::UnboundedReceiver<DisconnectReasonCode>,
    session_present: bool,
    task: tokio::task::JoinHandle<()>,
}

async fn connect(addr: std::net::SocketAddr, id: &str, clean: bool, expiry: Option<u32>) -> V5 {
    let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    options.set_clean_start(clean);
    options.set_keep_alive(Duration::from_secs(30));
    if let Some(expiry) = expiry {
        let mut props = rumqttc::v5::mqttbytes::v5::ConnectProperties::new();
        props.session_expiry_interval = Some(expiry);
        options.set_connect_properties(props);
    }
    let (client, mut eventloop) = AsyncClient::new(options, 1000);
    let session_present = wait_connack(&mut eventloop).await;
    let (tx, publishes) = mpsc::unbounded_channel();
    let (dtx, disconnects) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            // Stops once nobody reads the publishes any more, or the connection ends. rumqttc
            // reports a DISCONNECT from the server as an error carrying its reason code.
            let read = match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => tx.send(p).is_ok(),
                Ok(_) => true,
                Err(ConnectionError::MqttState(StateError::ServerDisconnect {
                    reason_code,
                    ..
                })) => {
                    let _ = dtx.send(reason_code);
                    false
                }
                Err(_) => false,
            };
            if !read {
                break;
            }
        }
    });
    V5 {
        client,
        publishes,
        disconnects,
        session_present,
        task,
    }
}

async fn wait_connack(eventloop: &mut EventLoop) -> bool {
    loop {
        match timeout(WAIT, eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) => {
                assert_eq!(ack.code, ConnectReturnCode::Success);
                return ack.session_present;
            }
            Ok(Ok(_)) => {}
            other => panic!("no CONNACK: {other:?}"),
        }
    }
}

impl V5 {
    async fn subscribe(&self, filter: Filter, id: Option<usize>) {
        let props = id.map(|id| SubscribeProperties {
            id: Some(id),
            user_properties: Vec::new(),
        });
        match props {
            Some(p) => self
                .client
                .subscribe_many_with_properties([filter], p)
                .await
                .expect("subscribe"),
            None => self
                .client
                .subscribe_many([filter])
                .await
                .expect("subscribe"),
        }
        settle().await;
    }

    async fn publish(&self, topic: &str, qos: QoS, retain: bool, payload: &str) {
        self.client
            .publish(topic, qos, retain, payload.as_bytes().to_vec())
            .await
            .expect("publish");
    }

    async fn publish_with(&self, topic: &str, retain: bool, props: PublishProperties) {
        self.client
            .publish_with_properties(topic, QoS::AtLeastOnce, retain, b"p".to_vec(), props)
            .await
            .expect("publish");
    }

    async fn next(&mut self) -> Publish {
        timeout(WAIT, self.publishes.recv())
            .await
            .expect("a publish within 5 s")
            .expect("event loop alive")
    }

    async fn nothing_within(&mut self, wait: Duration) {
        if let Ok(Some(p)) = timeout(wait, self.publishes.recv()).await {
            panic!("unexpected publish {p:?}");
        }
    }
}

async fn settle() {
    tokio::time::sleep(Duration::from_millis(200)).await;
}

fn filter(path: &str, qos: QoS) -> Filter {
    Filter::new(path, qos)
}

async fn properties_are_forwarded_unchanged(shards: usize) {
    let (_broker, addr) = start_broker(shards);
    let mut sub = connect(addr, &id_on_shard("sub", 0, shards), true, None).await;
    let publisher = connect(addr, &id_on_shard("pub", shards - 1, shards), true, None).await;
    sub.subscribe(filter("v5/props", QoS::ExactlyOnce), None)
        .await;
    let sent = PublishProperties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(300),
        topic_alias: None,
        response_topic: Some("v5/reply".into()),
        correlation_data: Some(Bytes::from_static(b"\x00corr")),
        user_properties: vec![
            ("k".into(), "1".into()),
            ("j".into(), "2".into()),
            ("k".into(), "3".into()),
        ],
        subscription_identifiers: Vec::new(),
        content_type: Some("text/plain".into()),
    };
    publisher
        .publish_with("v5/props", false, sent.clone())
        .await;
    let got = sub.next().await;
    let props = got.properties.expect("properties forwarded");
    assert_eq!(props.payload_format_indicator, Some(1));
    assert!(matches!(props.message_expiry_interval, Some(298..=300)));
    assert_eq!(props.response_topic, sent.response_topic);
    assert_eq!(props.correlation_data, sent.correlation_data);
    assert_eq!(props.user_properties, sent.user_properties);
    assert_eq!(props.content_type, sent.content_type);
}

async fn subscription_identifier_reaches_the_subscriber(shards: usize) {
    let (_broker, addr) = start_broker(shards);
    let mut sub = connect(addr, &id_on_shard("sub", 0, shards), true, None).await;
    let publisher = connect(addr, &id_on_shard("pub", shards - 1, shards), true, None).await;
    sub.subscribe(filter("v5/ids/+", QoS::AtLeastOnce), Some(7))
        .await;
    publisher
        .publish("v5/ids/a", QoS::AtLeastOnce, false, "x")
        .await;
    let got = sub.next().await;
    let ids = got.properties.map(|p| p.subscription_identifiers);
    assert_eq!(ids, Some(vec![7]));
}

async fn no_local_skips_the_clients_own_messages(shards: usize) {
    let (_broker, addr) = start_broker(shards);
    let mut me = connect(addr, &id_on_shard("me", 0, shards), true, None).await;
    let other = connect(addr, &id_on_shard("other", shards - 1, shards), true, None).await;
    let mut f = filter("v5/nolocal", QoS::AtLeastOnce);
    f.nolocal = true;
    me.subscribe(f, None).await;
    me.publish("v5/nolocal", QoS::AtLeastOnce, false, "mine")
        .await;
    other
        .publish("v5/nolocal", QoS::AtLeastOnce, false, "theirs")
        .await;
    assert_eq!(&me.next().await.payload[..], b"theirs");
    me.nothing_within(Duration::from_millis(300)).await;
}

async fn expired_retained_message_is_not_delivered(shards: usize) {
    let (_broker, addr) = start_broker(shards);
    let publisher = connect(addr, &id_on_shard("pub", 0, shards), true, None).await;
    let props = PublishProperties {
        message_expiry_interval: Some(1),
        ..Default::default()
    };
    publisher.publish_with("v5/exp", true, props).await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let mut sub = connect(addr, &id_on_shard("sub", shards - 1, shards), true, None).await;
    sub.subscribe(filter("v5/exp", QoS::AtLeastOnce), None)
        .await;
    sub.nothing_within(Duration::from_millis(500)).await;
}

async fn session_expiry_keeps_the_queue_until_resumed(shards: usize) {
    let (_broker, addr) = start_broker(shards);
    let id = id_on_shard("persist", shards - 1, shards);
    let sub = connect(addr, &id, true, Some(60)).await;
    sub.subscribe(filter("v5/queue", QoS::AtLeastOnce), None)
        .await;
    sub.client.disconnect().await.expect("disconnect");
    settle().await;
    let publisher = connect(addr, &id_on_shard("pub", 0, shards), true, None).await;
    for i in 0..5 {
        publisher
            .publish("v5/queue", QoS::AtLeastOnce, false, &i.to_string())
            .await;
    }
    settle().await;
    let mut back = connect(addr, &id, false, Some(60)).await;
    assert!(back.session_present);
    for i in 0..5 {
        assert_eq!(back.next().await.payload, i.to_string().as_bytes());
    }
}

async fn takeover_says_session_taken_over(shards: usize) {
    let (_broker, addr) = start_broker(shards);
    let id = id_on_shard("twin", shards - 1, shards);
    let mut first = connect(addr, &id, true, None).await;
    let _second = connect(addr, &id, true, None).await;
    let reason = timeout(WAIT, first.disconnects.recv())
        .await
        .expect("a DISCONNECT within 5 s");
    assert_eq!(reason, Some(DisconnectReasonCode::SessionTakenOver));
    first.task.abort();
}

async fn shared_subscription_gives_each_message_to_one_member(shards: usize) {
    let (_broker, addr) = start_broker(shards);
    let mut members = Vec::new();
    for i in 0..4 {
        let m = connect(
            addr,
            &id_on_shard(&format!("m{i}"), i % shards, shards),
            true,
            None,
        )
        .await;
        m.subscribe(filter("$share/g/v5/shared", QoS::AtLeastOnce), None)
            .await;
        members.push(m);
    }
    let publisher = connect(addr, &id_on_shard("pub", 0, shards), true, None).await;
    for i in 0..40 {
        publisher
            .publish("v5/shared", QoS::AtLeastOnce, false, &i.to_string())
            .await;
    }
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while seen.len() < 40 && tokio::time::Instant::now() < deadline {
        for m in &mut members {
            if let Ok(Some(p)) = timeout(Duration::from_millis(20), m.publishes.recv()).await {
                let n: u32 = std::str::from_utf8(&p.payload)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .expect("a number");
                seen.push(n);
            }
        }
    }
    seen.sort_unstable();
    assert_eq!(
        seen,
        (0..40).collect::<Vec<_>>(),
        "each message to exactly one member"
    );
    for m in &mut members {
        m.nothing_within(Duration::from_millis(100)).await;
    }
}
