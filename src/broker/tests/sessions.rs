//! Sessions: session present on reconnect, QoS 1 queued offline and re-sent with DUP, in-flight
//! window and queue limits, takeover by a second connection, the will on connection loss, and a
//! clean session's subscriptions removed everywhere when it ends.

use bytes::Bytes;

use super::*;
use crate::protocol::{LastWill, PubAck};

#[test]
fn persistent_session_is_present_on_reconnect() {
    let mut c = Cluster::new(2);
    c.connect("p", false);
    c.drop_connection("p");
    assert!(c.connect("p", false).session_present);
    c.drop_connection("p");
    assert!(
        !c.connect("p", true).session_present,
        "clean session discards it"
    );
}

#[test]
fn persistent_session_queues_qos1_offline_and_resends_unacked_with_dup() {
    let mut c = Cluster::new(2);
    c.connect("sub", false);
    c.subscribe("sub", &[("q", QoS::AtLeastOnce)]);
    c.connect("pub", true);
    c.publish("pub", "q", "1", QoS::AtLeastOnce, false, 1);
    c.packets("sub");
    c.drop_connection("sub"); // "1" was sent but never acknowledged
    c.publish("pub", "q", "2", QoS::AtLeastOnce, false, 2);
    c.publish("pub", "q", "3", QoS::AtMostOnce, false, 0); // QoS 0 is not stored offline
    c.publish("pub", "q", "4", QoS::AtLeastOnce, false, 3);
    let outcome = c.connect("sub", false);
    assert!(outcome.session_present);
    let got = c.publishes("sub");
    let payloads: Vec<_> = got
        .iter()
        .map(|p| String::from_utf8_lossy(&p.payload).into_owned())
        .collect();
    assert_eq!(payloads, ["1", "2", "4"]);
    assert!(got[0].dup);
    assert!(!got[1].dup);
}

#[test]
fn inflight_window_and_queue_limit_count_drops() {
    // A subscriber that does not acknowledge is stalled at the first tick once it is behind
    // (`flow_control.rs`): from then on its queue keeps its limit.
    let settings = Settings {
        max_inflight: 2,
        max_queued_messages: 3,
        stall_after: Duration::ZERO,
        ..Settings::default()
    };
    let mut c = Cluster::with_settings(1, settings);
    c.connect("s", true);
    c.subscribe("s", &[("w", QoS::AtLeastOnce)]);
    c.packets("s");
    c.connect("p", true);
    for i in 0..10 {
        c.publish("p", "w", &i.to_string(), QoS::AtLeastOnce, false, i + 1);
        c.advance(Duration::ZERO);
    }
    let first = c.publishes("s");
    assert_eq!(first.len(), 2);
    assert_eq!(c.shards[0].stats.publish_dropped_queue_full, 5);
    for p in first {
        c.send(
            "s",
            Packet::PubAck(PubAck {
                packet_id: p.packet_id.expect("id"),
            }),
        );
    }
    assert_eq!(c.payloads("s"), ["2", "3"]);
}

#[test]
fn will_is_published_on_connection_loss_but_not_after_disconnect() {
    let mut c = Cluster::new(2);
    c.connect("watcher", true);
    c.subscribe("watcher", &[("will/#", QoS::AtLeastOnce)]);
    c.packets("watcher");
    let mut connect = Cluster::connect_packet("dying", true);
    connect.will = Some(LastWill {
        topic: TopicName::new("will/dying").expect("topic"),
        payload: Bytes::from("gone"),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: None,
    });
    c.connect_with("dying", connect.clone());
    c.drop_connection("dying");
    let got = c.publishes("watcher");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].payload, Bytes::from("gone"));
    assert!(!got[0].retain, "live delivery clears RETAIN");
    assert_eq!(
        c.shards.iter().map(|s| s.retained_count()).sum::<usize>(),
        2,
        "the will was retained"
    );

    c.connect_with("dying", connect);
    c.send("dying", Packet::Disconnect);
    assert!(c.publishes("watcher").is_empty());
}

#[test]
fn takeover_closes_old_connection_and_publishes_its_will() {
    let mut c = Cluster::new(2);
    c.connect("watcher", true);
    c.subscribe("watcher", &[("w", QoS::AtMostOnce)]);
    c.packets("watcher");
    let connect = Cluster::with_will(
        Cluster::connect_packet("twin", false),
        "w",
        "taken",
        QoS::AtMostOnce,
    );
    c.connect_with("twin", connect);
    let old_conn = c.client("twin").conn;
    let outcome = c.connect("twin", false);
    assert!(outcome.session_present);
    assert!(c.client(&format!("twin#old{old_conn}")).closed);
    assert!(!c.client("twin").closed);
    assert_eq!(c.payloads("watcher"), ["taken"]);
}

#[test]
fn clean_session_disconnect_removes_subscriptions_everywhere() {
    let (a, b) = ids_on_distinct_shards();
    let mut c = Cluster::new(2);
    c.connect(&b, true);
    c.subscribe(&b, &[("gone/#", QoS::AtMostOnce)]);
    c.drop_connection(&b);
    let a_shard = home_shard(&a, 2);
    assert!(c.shards[a_shard]
        .remote_interest
        .iter()
        .all(|t| t.is_empty()));
    assert_eq!(c.shards.iter().map(|s| s.session_count()).sum::<usize>(), 0);
}
