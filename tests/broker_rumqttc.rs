//! The broker over real TCP sockets with the third-party `rumqttc` client, with 1 and 2 shards, so
//! that cross-shard delivery, hand-off, takeover and retained sync are exercised.

mod common;

use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectReturnCode, Event, EventLoop, LastWill, MqttOptions, Packet, QoS,
};
use tokio::sync::mpsc;
use tokio::time::timeout;

use common::{id_on_shard, start_broker};

/// A connected rumqttc client whose incoming PUBLISHes arrive on a channel.
struct Client {
    client: AsyncClient,
    publishes: mpsc::UnboundedReceiver<rumqttc::Publish>,
    task: tokio::task::JoinHandle<()>,
    session_present: bool,
}

async fn connect(
    addr: std::net::SocketAddr,
    id: &str,
    clean: bool,
    will: Option<LastWill>,
) -> Client {
    let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    options.set_clean_session(clean);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_inflight(100);
    if let Some(will) = will {
        options.set_last_will(will);
    }
    let (client, mut eventloop) = AsyncClient::new(options, 1000);
    let session_present = wait_connack(&mut eventloop).await;
    let (publishes, task) = common::rumqttc_publishes::forward_publishes(eventloop);
    Client {
        client,
        publishes,
        task,
        session_present,
    }
}

async fn wait_connack(eventloop: &mut EventLoop) -> bool {
    loop {
        match timeout(Duration::from_secs(5), eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) => {
                assert_eq!(ack.code, ConnectReturnCode::Success);
                return ack.session_present;
            }
            Ok(Ok(_)) => {}
            other => panic!("no CONNACK: {other:?}"),
        }
    }
}

impl Client {
    async fn subscribe(&self, filter: &str, qos: QoS) {
        self.client.subscribe(filter, qos).await.expect("subscribe");
    }

    async fn publish(&self, topic: &str, qos: QoS, retain: bool, payload: &str) {
        self.client
            .publish(topic, qos, retain, payload.as_bytes().to_vec())
            .await
            .expect("publish");
    }

    async fn next(&mut self) -> rumqttc::Publish {
        timeout(Duration::from_secs(5), self.publishes.recv())
            .await
            .expect("a publish within 5 s")
            .expect("event loop alive")
    }

    async fn nothing_within(&mut self, wait: Duration) {
        if let Ok(Some(p)) = timeout(wait, self.publishes.recv()).await {
            panic!("unexpected publish {p:?}");
        }
    }

    /// Drops the connection without DISCONNECT (as if the network failed).
    fn kill(self) {
        self.task.abort();
    }
}

/// Subscriptions are acknowledged before a publish is sent; settle gives the event loop time to
/// send SUBSCRIBE and receive SUBACK.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(200)).await;
}

macro_rules! with_shards {
    ($($name:ident),* $(,)?) => {
        mod one_shard {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(1).await })*
        }
        mod two_shards {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(2).await })*
        }
    };
}

with_shards!(
    publish_and_receive_at_every_qos,
    retained_message_reaches_late_subscriber,
    persistent_session_gets_queued_messages_in_order,
    will_published_when_client_vanishes,
    takeover_closes_the_first_connection,
    order_is_kept_for_a_stream_of_messages,
    wildcards_and_sys_rule,
);

async fn publish_and_receive_at_every_qos(shards: usize) {
    let (_broker, addr) = start_broker(shards);
    let mut sub = connect(addr, &id_on_shard("sub", 0, shards), true, None).await;
    let publisher = connect(addr, &id_on_shard("pub", shards - 1, shards), true, None).await;
    sub.subscribe("q/+", QoS::ExactlyOnce).await;
    settle().await;
    for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        publisher
            .publish(&format!("q/{i}"), qos, false, &format!("m{i}"))
            .await;
        let got = sub.next().await;
        assert_eq!(got.topic, format!("q/{i}"));
        assert_eq!(got.qos, qos);
        assert_eq!(&got.payload[..], format!("m{i}").as_bytes());
        assert!(!got.retain);
    }
}

async fn retained_message_reaches_late_subscriber(shards: usize) {
    let (_broker, addr) = start_broker(shards);
    let publisher = connect(addr, &id_on_shard("pub", 0, shards), true, None).await;
    publisher
        .publish("r/a", QoS::AtLeastOnce, true, "old")
        .await;
    publisher
        .publish("r/a", QoS::AtLeastOnce, true, "new")
        .await;
    publisher.publish("r/b", QoS::AtLeastOnce, true, "b").await;
    publisher.publish("r/b", QoS::AtLeastOnce, true, "").await; // deletes r/b
    settle().await;
    let mut sub = connect(addr, &id_on_shard("sub", shards - 1, shards), true, None).await;
    sub.subscribe("r/#", QoS::AtLeastOnce).await;
    let got = sub.next().await;
    assert_eq!(got.topic, "r/a");
    assert_eq!(&got.payload[..], b"new");
    assert!(got.retain);
    sub.nothing_within(Duration::from_millis(300)).await;
}

async fn persistent_session_gets_queued_messages_in_order(shards: usize) {
    let (_broker, addr) = start_broker(shards);
    let id = id_on_shard("persist", shards - 1, shards);
    let sub = connect(addr, &id, false, None).await;
    sub.subscribe("p/#", QoS::AtLeastOnce).await;
    settle().await;
    sub.client.disconnect().await.expect("disconnect");
    settle().await;
    let publisher = connect(addr, &id_on_shard("pub", 0, shards), true, None).await;
    for i in 0..5 {
        publisher
            .publish("p/x", QoS::AtLeastOnce, false, &i.to_string())
            .await;
    }
    settle().await;
    let mut sub = connect(addr, &id, false, None).await;
    assert!(sub.session_present);
    for i in 0..5 {
        assert_eq!(&sub.next().await.payload[..], i.to_string().as_bytes());
    }
}

async fn will_published_when_client_vanishes(shards: usize) {
    let (_broker, addr) = start_broker(shards);
    let mut watcher = connect(addr, &id_on_shard("watch", 0, shards), true, None).await;
    watcher.subscribe("will/#", QoS::AtLeastOnce).await;
    settle().await;
    let will = LastWill::new("will/x", "gone", QoS::AtLeastOnce, false);
    let doomed = connect(
        addr,
        &id_on_shard("doomed", shards - 1, shards),
        true,
        Some(will.clone()),
    )
    .await;
    doomed.kill();
    let got = watcher.next().await;
    assert_eq!(&got.payload[..], b"gone");

    let polite = connect(
        addr,
        &id_on_shard("polite", shards - 1, shards),
        true,
        Some(will),
    )
    .await;
    polite.client.disconnect().await.expect("disconnect");
    watcher.nothing_within(Duration::from_millis(500)).await;
}

async fn takeover_closes_the_first_connection(shards: usize) {
    let (_broker, addr) = start_broker(shards);
    let id = id_on_shard("twin", shards - 1, shards);
    let mut watcher = connect(addr, &id_on_shard("watch", 0, shards), true, None).await;
    watcher.subscribe("twin/will", QoS::AtMostOnce).await;
    settle().await;
    let will = LastWill::new("twin/will", "first one closed", QoS::AtMostOnce, false);
    let first = connect(addr, &id, false, Some(will)).await;
    let second = connect(addr, &id, false, None).await;
    assert!(second.session_present);
    assert_eq!(&watcher.next().await.payload[..], b"first one closed");
    // The first client's event loop sees the connection end.
    timeout(Duration::from_secs(5), first.task).await.ok();
}

async fn order_is_kept_for_a_stream_of_messages(shards: usize) {
    let (_broker, addr) = start_broker(shards);
    let mut sub = connect(addr, &id_on_shard("sub", 0, shards), true, None).await;
    sub.subscribe("stream", QoS::AtLeastOnce).await;
    settle().await;
    let publisher = connect(addr, &id_on_shard("pub", shards - 1, shards), true, None).await;
    for i in 0..500 {
        publisher
            .publish("stream", QoS::AtLeastOnce, false, &i.to_string())
            .await;
    }
    for i in 0..500 {
        assert_eq!(&sub.next().await.payload[..], i.to_string().as_bytes());
    }
}

async fn wildcards_and_sys_rule(shards: usize) {
    let (_broker, addr) = start_broker(shards);
    let mut sub = connect(addr, &id_on_shard("sub", 0, shards), true, None).await;
    sub.subscribe("#", QoS::AtMostOnce).await;
    sub.subscribe("a/+/c", QoS::AtLeastOnce).await;
    settle().await;
    let publisher = connect(addr, &id_on_shard("pub", shards - 1, shards), true, None).await;
    publisher
        .publish("$SYS/fake", QoS::AtMostOnce, false, "no")
        .await;
    publisher
        .publish("a/b/c", QoS::AtLeastOnce, false, "one copy")
        .await;
    let got = sub.next().await;
    assert_eq!(got.topic, "a/b/c");
    assert_eq!(
        got.qos,
        QoS::AtLeastOnce,
        "max QoS of overlapping subscriptions"
    );
    sub.nothing_within(Duration::from_millis(300)).await;
}
