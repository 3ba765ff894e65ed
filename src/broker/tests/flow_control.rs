//! Flow control toward publishers (`flow_control.rs`): a QoS 1/2 publisher is held (its PUBLISH
//! unread, unacknowledged) while a subscriber is behind, on any shard, and released when that
//! subscriber drains; a subscriber behind for `stall_after` is stalled and no longer holds anyone;
//! QoS 0, a client's own backlog and offline sessions hold nobody; a held publisher does not time
//! out.

use super::*;
use crate::protocol::PubAck;

/// A window of 1 and a queue of 8: behind at 4 queued, caught up at 2.
fn small_queues() -> Settings {
    Settings {
        max_inflight: 1,
        max_queued_messages: 8,
        ..Settings::default()
    }
}

fn publish_packet(qos: QoS, payload: &str, packet_id: u16) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: TopicName::new("t").expect("topic"),
        packet_id: (qos != QoS::AtMostOnce).then_some(packet_id),
        payload: Bytes::from(payload.to_string()),
    })
}

/// Hands `name`'s PUBLISH to its shard once, as the runtime does; what the core answered, and
/// the bytes it left in the buffer.
fn offer(c: &mut Cluster, name: &str, packet: &Packet) -> (Next, BytesMut) {
    let (shard, conn) = (c.client(name).shard, c.client(name).conn);
    let mut buf = BytesMut::new();
    packet.encode(&mut buf).expect("encodes");
    let handled = c.shards[shard].handle_bytes(conn, &mut buf, c.now);
    c.run();
    (handled.next, buf)
}

/// PUBACKs every QoS 1 PUBLISH `name` has received, until nothing more comes; their payloads.
fn ack_all(c: &mut Cluster, name: &str) -> Vec<String> {
    let mut got = Vec::new();
    loop {
        let publishes = c.publishes(name);
        if publishes.is_empty() {
            return got;
        }
        for p in publishes {
            got.push(String::from_utf8_lossy(&p.payload).into_owned());
            if let Some(packet_id) = p.packet_id {
                c.send(name, Packet::PubAck(PubAck { packet_id }));
            }
        }
    }
}

fn pubacks(c: &mut Cluster, name: &str) -> Vec<u16> {
    c.packets(name)
        .into_iter()
        .filter_map(|p| match p {
            Packet::PubAck(a) => Some(a.packet_id),
            _ => None,
        })
        .collect()
}

/// `sub` subscribed to `t` at QoS 1 and 5 messages from `publisher` for it unacknowledged: one in
/// flight, 4 queued, so `sub` is behind.
fn put_behind(c: &mut Cluster, sub: &str, publisher: &str) {
    c.subscribe(sub, &[("t", QoS::AtLeastOnce)]);
    c.packets(sub);
    for id in 1..=5 {
        c.publish(
            publisher,
            "t",
            &format!("m{id}"),
            QoS::AtLeastOnce,
            false,
            id,
        );
    }
    assert_eq!(pubacks(c, publisher), [1, 2, 3, 4, 5]);
}

/// Messages dropped for a full queue, on every shard.
fn queue_full_drops(c: &Cluster) -> u64 {
    c.shards
        .iter()
        .map(|s| s.stats.publish_dropped_queue_full)
        .sum()
}

fn gate(c: &Cluster) -> &FlowGate {
    &c.shards[0].settings().flow
}

fn held_publisher_released_when_the_subscriber_drains(shards: usize, sub: &str, publisher: &str) {
    let mut c = Cluster::with_settings(shards, small_queues());
    c.connect(sub, true);
    c.connect(publisher, true);
    put_behind(&mut c, sub, publisher);
    assert_eq!(gate(&c).behind(), 1);

    // QoS 0 is never held.
    let (next, _) = offer(&mut c, publisher, &publish_packet(QoS::AtMostOnce, "q0", 0));
    assert_eq!(next, Next::ReadMore);
    let held = publish_packet(QoS::AtLeastOnce, "m6", 6);
    let (next, buf) = offer(&mut c, publisher, &held);
    assert_eq!(next, Next::PausePublisher);
    assert_eq!(
        buf.len(),
        held_len(&held),
        "the PUBLISH stays, whole, in the buffer"
    );
    assert!(pubacks(&mut c, publisher).is_empty(), "not acknowledged");
    c.connect("p2", true);
    let exactly_once = publish_packet(QoS::ExactlyOnce, "q2", 1);
    assert_eq!(offer(&mut c, "p2", &exactly_once).0, Next::PausePublisher);

    // The subscriber acknowledges: at 3 queued it is still behind, at 2 it has caught up.
    assert_eq!(
        c.payloads(sub),
        ["m1", "q0"],
        "QoS 0 is not queued behind QoS 1"
    );
    c.send(sub, Packet::PubAck(PubAck { packet_id: 1 }));
    assert_eq!(gate(&c).behind(), 1);
    assert_eq!(c.resumes, 0);
    let second = c.publishes(sub);
    assert_eq!(second.len(), 1);
    c.send(
        sub,
        Packet::PubAck(PubAck {
            packet_id: second[0].packet_id.expect("QoS 1"),
        }),
    );
    assert_eq!(gate(&c).behind(), 0);
    assert_eq!(c.resumes, 1, "the runtime is told at once");

    // The held PUBLISHes are handed over again and go through; nothing holds a new one; every
    // acknowledged message arrives.
    assert_eq!(offer(&mut c, publisher, &held).0, Next::ReadMore);
    assert_eq!(offer(&mut c, "p2", &exactly_once).0, Next::ReadMore);
    let rest = ack_all(&mut c, sub);
    assert_eq!(rest, ["m3", "m4", "m5", "m6", "q2"]);
    let fresh = publish_packet(QoS::AtLeastOnce, "m7", 7);
    assert_eq!(offer(&mut c, publisher, &fresh).0, Next::ReadMore);
    assert_eq!(pubacks(&mut c, publisher), [6, 7]);
    assert_eq!(ack_all(&mut c, sub), ["m7"]);
    let held_count: u64 = c.shards.iter().map(|s| s.stats.publishers_held).sum();
    assert_eq!(held_count, 2);
    assert_eq!(queue_full_drops(&c), 0);
}

fn held_len(packet: &Packet) -> usize {
    let mut buf = BytesMut::new();
    packet.encode(&mut buf).expect("encodes");
    buf.len()
}

#[test]
fn a_qos1_publisher_is_held_while_a_subscriber_is_behind_and_released_when_it_drains() {
    held_publisher_released_when_the_subscriber_drains(1, "s", "p");
}

#[test]
fn a_subscriber_behind_on_another_shard_holds_the_publisher_too() {
    let (sub, publisher) = ids_on_distinct_shards();
    held_publisher_released_when_the_subscriber_drains(2, &sub, &publisher);
}

#[test]
fn a_subscriber_behind_for_stall_after_is_stalled_and_the_others_proceed() {
    let mut c = Cluster::with_settings(1, small_queues());
    c.connect("slow", true);
    c.connect("fast", true);
    c.connect("p", true);
    c.subscribe("fast", &[("t", QoS::AtLeastOnce)]);
    c.packets("fast");
    c.subscribe("slow", &[("t", QoS::AtLeastOnce)]);
    c.packets("slow");
    for id in 1..=5 {
        c.publish("p", "t", &format!("m{id}"), QoS::AtLeastOnce, false, id);
        ack_all(&mut c, "fast");
    }
    assert_eq!(pubacks(&mut c, "p"), [1, 2, 3, 4, 5]);
    assert_eq!(gate(&c).behind(), 1);
    let held = publish_packet(QoS::AtLeastOnce, "m6", 6);
    assert_eq!(offer(&mut c, "p", &held).0, Next::PausePublisher);

    c.advance(Duration::from_millis(750));
    assert_eq!(gate(&c).behind(), 1, "not yet");
    assert_eq!(c.shards[0].stats.subscribers_stalled, 0);
    c.advance(Duration::from_millis(250));
    assert_eq!(gate(&c).behind(), 0);
    assert_eq!(c.resumes, 1);
    assert_eq!(c.shards[0].stats.subscribers_stalled, 1);
    assert_eq!(
        (c.shards[0].behind_count(), c.shards[0].stalled_count()),
        (0, 1)
    );

    // The publisher goes on; the stalled subscriber's queue keeps its limit (drops counted), the
    // other subscriber gets everything.
    assert_eq!(offer(&mut c, "p", &held).0, Next::ReadMore);
    let mut fast = ack_all(&mut c, "fast");
    for id in 7..=20 {
        let packet = publish_packet(QoS::AtLeastOnce, &format!("m{id}"), id);
        assert_eq!(offer(&mut c, "p", &packet).0, Next::ReadMore);
        fast.extend(ack_all(&mut c, "fast"));
    }
    assert_eq!(pubacks(&mut c, "p"), (6..=20).collect::<Vec<u16>>());
    assert_eq!(fast.len(), 15, "{fast:?}");
    assert_eq!(c.shards[0].stats.publish_dropped_queue_full, 11);

    // Once it catches up it is no longer stalled (and counts again if it falls behind again).
    let slow = ack_all(&mut c, "slow");
    assert_eq!(slow.len(), 1 + 8, "{slow:?}");
    assert_eq!(
        (c.shards[0].behind_count(), c.shards[0].stalled_count()),
        (0, 0)
    );
}

#[test]
fn a_client_is_not_held_for_its_own_backlog() {
    let mut c = Cluster::with_settings(1, small_queues());
    c.connect("echo", true);
    put_behind(&mut c, "echo", "echo");
    assert_eq!(gate(&c).behind(), 1);
    // Its acknowledgements may come after its PUBLISHes: holding it would not help.
    let packet = publish_packet(QoS::AtLeastOnce, "m6", 6);
    assert_eq!(offer(&mut c, "echo", &packet).0, Next::ReadMore);
}

#[test]
fn a_subscriber_that_goes_offline_holds_nobody_and_keeps_its_limits() {
    let mut c = Cluster::with_settings(1, small_queues());
    c.connect("s", false);
    c.connect("p", true);
    put_behind(&mut c, "s", "p");
    c.drop_connection("s");
    assert_eq!(gate(&c).behind(), 0);
    assert_eq!(c.resumes, 1);
    for id in 6..=12 {
        let packet = publish_packet(QoS::AtLeastOnce, &format!("m{id}"), id);
        assert_eq!(offer(&mut c, "p", &packet).0, Next::ReadMore);
    }
    // 1 in flight + 8 queued kept, the rest dropped and counted.
    assert_eq!(c.shards[0].stats.publish_dropped_queue_full, 3);
}

#[test]
fn a_held_publisher_does_not_time_out_while_held() {
    let mut c = Cluster::with_settings(
        1,
        Settings {
            stall_after: Duration::from_secs(60),
            ..small_queues()
        },
    );
    c.connect("s", true);
    let mut connect = Cluster::connect_packet("p", true);
    connect.keep_alive = 1;
    c.connect_with("p", connect);
    put_behind(&mut c, "s", "p");
    let held = publish_packet(QoS::AtLeastOnce, "m6", 6);
    assert_eq!(offer(&mut c, "p", &held).0, Next::PausePublisher);
    c.advance(Duration::from_secs(2));
    c.advance(Duration::from_secs(2));
    assert_eq!(c.shards[0].stats.keep_alive_timeouts, 0);
    // Once its PUBLISH is handled, keep-alive runs again.
    assert_eq!(offer(&mut c, "p", &held).0, Next::ReadMore);
    assert_eq!(pubacks(&mut c, "p"), [6]);
    c.advance(Duration::from_secs(2));
    assert_eq!(c.shards[0].stats.keep_alive_timeouts, 1);
}

#[test]
fn a_shard_runs_ahead_of_the_others_by_one_queue_at_most_and_nothing_is_lost() {
    let (sub, publisher) = ids_on_distinct_shards();
    let mut c = Cluster::with_settings(2, small_queues());
    c.connect(&sub, true);
    c.connect(&publisher, true);
    c.subscribe(&sub, &[("t", QoS::AtLeastOnce)]);
    c.packets(&sub);
    // One read of 30 PUBLISHes: routed into one batch before the subscriber's shard sees any,
    // until more are in transit than one queue holds (8).
    let mut buf = BytesMut::new();
    for id in 1..=30 {
        publish_packet(QoS::AtLeastOnce, &format!("m{id}"), id)
            .encode(&mut buf)
            .expect("encodes");
    }
    let (shard, conn) = (c.client(&publisher).shard, c.client(&publisher).conn);
    let handled = c.shards[shard].handle_bytes(conn, &mut buf, c.now);
    assert_eq!(handled.next, Next::PausePublisher);
    assert_eq!(gate(&c).in_transit(), 9);
    c.run();
    assert_eq!(pubacks(&mut c, &publisher).len(), 9);
    assert_eq!(gate(&c).in_transit(), 0);
    assert_eq!(
        c.resumes, 1,
        "the subscriber's shard releases the publisher"
    );
    // 1 in flight and 8 queued: behind, nothing dropped. The publisher is handed its bytes
    // again each time it is released; the subscriber acknowledges at its pace.
    assert_eq!(gate(&c).behind(), 1);
    let mut got = Vec::new();
    for _ in 0..100 {
        if buf.is_empty() {
            break;
        }
        c.shards[shard].handle_bytes(conn, &mut buf, c.now);
        c.run();
        got.extend(ack_all(&mut c, &sub));
    }
    got.extend(ack_all(&mut c, &sub));
    assert_eq!(got.len(), 30);
    assert_eq!(pubacks(&mut c, &publisher).len(), 21);
    assert_eq!(queue_full_drops(&c), 0);
    assert_eq!(gate(&c).behind(), 0);
}

#[test]
fn a_subscriber_that_keeps_acknowledging_is_stalled_only_after_ten_times_stall_after() {
    let mut c = Cluster::with_settings(
        1,
        Settings {
            max_queued_messages: 40,
            ..small_queues()
        },
    );
    c.connect("s", true);
    c.connect("p", true);
    c.subscribe("s", &[("t", QoS::AtLeastOnce)]);
    c.packets("s");
    for id in 1..=35 {
        c.publish("p", "t", &format!("m{id}"), QoS::AtLeastOnce, false, id);
    }
    assert_eq!(gate(&c).behind(), 1);
    // One acknowledgement every half second: draining, slowly; still behind after 9.5 s.
    for _ in 0..19 {
        let got = c.publishes("s");
        assert_eq!(got.len(), 1);
        c.send(
            "s",
            Packet::PubAck(PubAck {
                packet_id: got[0].packet_id.expect("QoS 1"),
            }),
        );
        c.advance(Duration::from_millis(500));
        assert_eq!(c.shards[0].stats.subscribers_stalled, 0);
    }
    assert_eq!(gate(&c).behind(), 1);
    c.advance(Duration::from_millis(500));
    assert_eq!(c.shards[0].stats.subscribers_stalled, 1);
    assert_eq!(gate(&c).behind(), 0);
}
