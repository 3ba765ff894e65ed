//! The broker over real TCP sockets with the third-party `rumqttc` client, with 1 and 2 shards, so
//! that cross-shard delivery, hand-off, takeover and retained sync are exercised.

mod common;

use std::time::Duration;

use rumqttc::{LastWill, QoS};
use tokio::time::timeout;

use common::rumqttc_client::{connect, settle, with_shards};
use common::{id_on_shard, start_broker};

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
