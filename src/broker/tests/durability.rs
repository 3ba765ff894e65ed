//! Persistence in the core: which records a shard journals, and which replies wait until they are
//! durable — locally and on the other shards a publish went to (`journal.rs`, `recovery.rs`).

use super::*;
use crate::persist::Record;
use crate::protocol::SubOptions;
use crate::protocol::{ConnAck, PubAck, PubComp, PubRec, PubRel};

fn persistent_cluster(shards: usize) -> Cluster {
    Cluster::with_settings(
        shards,
        Settings {
            persistence: true,
            ..Settings::default()
        },
    )
}

impl Cluster {
    /// Takes shard `shard`'s journal batch and reports it durable; returns its records.
    fn make_durable(&mut self, shard: usize) -> Vec<Record> {
        let mut all = Vec::new();
        while let Some((batch, bytes)) = self.shards[shard].take_journal() {
            all.extend(crate::persist::codec::decode_all(bytes).expect("the journal reads"));
            self.shards[shard].handle_durable(batch);
        }
        self.run();
        all
    }

    fn make_all_durable(&mut self) -> Vec<Record> {
        let mut all = Vec::new();
        for _ in 0..3 {
            for shard in 0..self.shards.len() {
                all.extend(self.make_durable(shard));
            }
        }
        all
    }
}

fn acks(packets: &[Packet]) -> usize {
    packets
        .iter()
        .filter(|p| {
            matches!(
                p,
                Packet::PubAck(_) | Packet::PubRec(_) | Packet::PubComp(_)
            )
        })
        .count()
}

#[test]
fn a_puback_waits_until_the_message_for_a_persistent_subscriber_is_durable() {
    let mut c = persistent_cluster(1);
    c.connect("sub", false);
    c.subscribe("sub", &[("t", QoS::AtLeastOnce)]);
    c.make_all_durable();
    c.drop_connection("sub");
    c.connect("pub", true);
    c.packets("pub");
    c.publish("pub", "t", "m1", QoS::AtLeastOnce, false, 7);
    assert_eq!(acks(&c.packets("pub")), 0, "acknowledged before durable");
    let records = c.make_durable(0);
    assert!(records
        .iter()
        .any(|r| matches!(r, Record::Message { message, .. } if message.payload == "m1")));
    assert!(records
        .iter()
        .any(|r| matches!(r, Record::Enqueue { client_id, .. } if &**client_id == "sub")));
    assert_eq!(
        c.packets("pub"),
        vec![Packet::PubAck(PubAck { packet_id: 7 })]
    );
}

#[test]
fn clean_sessions_and_qos0_journal_nothing_and_wait_for_nothing() {
    let mut c = persistent_cluster(1);
    c.connect("sub", true);
    c.subscribe("sub", &[("t", QoS::AtLeastOnce)]);
    c.connect("pub", true);
    c.packets("pub");
    c.publish("pub", "t", "m", QoS::AtLeastOnce, false, 1);
    c.publish("pub", "t", "m", QoS::AtMostOnce, false, 0);
    assert_eq!(acks(&c.packets("pub")), 1, "PUBACK at once");
    assert_eq!(c.shards[0].take_journal(), None);
}

#[test]
fn a_puback_waits_for_the_other_shard_that_stores_the_message() {
    let (sub, publisher) = ids_on_distinct_shards();
    let mut c = persistent_cluster(2);
    c.connect(&sub, false);
    c.subscribe(&sub, &[("t", QoS::AtLeastOnce)]);
    c.make_all_durable();
    c.drop_connection(&sub);
    c.make_all_durable();
    c.connect(&publisher, true);
    c.packets(&publisher);
    c.publish(&publisher, "t", "m", QoS::AtLeastOnce, false, 3);
    let (sub_shard, pub_shard) = (c.client(&sub).shard, c.client(&publisher).shard);
    assert!(c.make_durable(pub_shard).is_empty(), "nothing stored here");
    assert_eq!(acks(&c.packets(&publisher)), 0, "the other shard's records");
    let records = c.make_durable(sub_shard);
    assert!(records.iter().any(|r| matches!(r, Record::Enqueue { .. })));
    assert_eq!(
        c.packets(&publisher),
        vec![Packet::PubAck(PubAck { packet_id: 3 })]
    );
}

#[test]
fn a_suback_waits_for_the_subscription_record_and_a_qos2_flow_for_its_ids() {
    let mut c = persistent_cluster(1);
    c.connect("s", false);
    c.packets("s");
    c.subscribe("s", &[("t", QoS::ExactlyOnce)]);
    assert!(c.packets("s").is_empty(), "SUBACK before durable");
    let records = c.make_durable(0);
    assert!(records.iter().any(|r| matches!(
        r,
        Record::Subscribe {
            options: SubOptions {
                qos: QoS::ExactlyOnce,
                ..
            },
            ..
        }
    )));
    assert!(matches!(c.packets("s")[..], [Packet::SubAck(_)]));

    c.publish("s", "x", "q2", QoS::ExactlyOnce, false, 9);
    assert!(c.packets("s").is_empty(), "PUBREC before durable");
    let records = c.make_durable(0);
    assert!(records
        .iter()
        .any(|r| matches!(r, Record::Qos2Received { packet_id: 9, .. })));
    assert_eq!(
        c.packets("s"),
        vec![Packet::PubRec(PubRec { packet_id: 9 })]
    );
    c.send("s", Packet::PubRel(PubRel { packet_id: 9 }));
    assert!(c.packets("s").is_empty(), "PUBCOMP before durable");
    let records = c.make_durable(0);
    assert!(records
        .iter()
        .any(|r| matches!(r, Record::Qos2Released { packet_id: 9, .. })));
    assert_eq!(
        c.packets("s"),
        vec![Packet::PubComp(PubComp { packet_id: 9 })]
    );
}

#[test]
fn acknowledgements_keep_their_order_while_some_wait() {
    let mut c = persistent_cluster(1);
    c.connect("sub", false);
    c.subscribe("sub", &[("durable", QoS::AtLeastOnce)]);
    c.make_all_durable();
    c.drop_connection("sub");
    c.connect("pub", true);
    c.packets("pub");
    c.publish("pub", "durable", "a", QoS::AtLeastOnce, false, 1);
    c.publish("pub", "nobody", "b", QoS::AtLeastOnce, false, 2);
    assert!(
        c.packets("pub").is_empty(),
        "the second waits behind the first"
    );
    c.make_durable(0);
    assert_eq!(
        c.packets("pub"),
        vec![
            Packet::PubAck(PubAck { packet_id: 1 }),
            Packet::PubAck(PubAck { packet_id: 2 })
        ]
    );
}

#[test]
fn acknowledged_messages_are_done_and_a_snapshot_holds_what_is_left() {
    let mut c = persistent_cluster(1);
    c.connect("sub", false);
    c.subscribe("sub", &[("t", QoS::AtLeastOnce)]);
    c.connect("pub", true);
    c.publish("pub", "t", "one", QoS::AtLeastOnce, false, 1);
    c.publish("pub", "t", "two", QoS::AtLeastOnce, false, 2);
    c.publish("pub", "r", "kept", QoS::AtMostOnce, true, 0);
    c.make_all_durable();
    let sent = c.publishes("sub");
    assert_eq!(sent.len(), 2);
    let first = sent[0].packet_id.expect("QoS 1");
    c.send("sub", Packet::PubAck(PubAck { packet_id: first }));
    let records = c.make_durable(0);
    assert!(records.iter().any(|r| matches!(r, Record::Done { .. })));

    let snapshot = c.shards[0].snapshot_records();
    let payloads: Vec<_> = snapshot
        .iter()
        .filter_map(|r| match r {
            Record::Message { message, .. } => Some(message.payload.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(payloads, vec![Bytes::from_static(b"two")]);
    assert!(snapshot
        .iter()
        .any(|r| matches!(r, Record::Subscribe { client_id, .. } if &**client_id == "sub")));
    assert!(snapshot
        .iter()
        .any(|r| matches!(r, Record::Retain { message: Some(m), .. } if m.payload == "kept")));
    assert!(
        !snapshot
            .iter()
            .any(|r| matches!(r, Record::SessionOpen { client_id } if &**client_id == "pub")),
        "clean sessions are not durable"
    );
}

#[test]
fn a_qos2_publish_to_a_persistent_subscriber_leaves_once_its_packet_id_is_durable() {
    let mut c = persistent_cluster(1);
    c.connect("sub", false);
    c.subscribe("sub", &[("t", QoS::ExactlyOnce)]);
    c.make_all_durable();
    c.packets("sub");
    c.connect("pub", true);
    c.publish("pub", "t", "x", QoS::ExactlyOnce, false, 4);
    assert!(
        c.publishes("sub").is_empty(),
        "PUBLISH before its packet id is durable"
    );
    let records = c.make_durable(0);
    let journaled = records.iter().find_map(|r| match r {
        Record::PacketId { packet_id, .. } => Some(*packet_id),
        _ => None,
    });
    let sent = c.publishes("sub");
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].packet_id, journaled);
}

#[test]
fn a_session_taken_over_by_a_clean_one_is_dropped_from_the_journal() {
    let mut c = persistent_cluster(1);
    c.connect("x", false);
    let opened = c.make_all_durable();
    assert!(opened
        .iter()
        .any(|r| matches!(r, Record::SessionOpen { client_id } if &**client_id == "x")));
    c.drop_connection("x");
    c.connect("x", true);
    let records = c.make_all_durable();
    assert!(records
        .iter()
        .any(|r| matches!(r, Record::SessionDrop { client_id } if &**client_id == "x")));
    assert!(c.shards[0].snapshot_records().is_empty());
}

#[test]
fn a_queued_qos2_message_goes_out_on_resume_once_its_packet_id_is_durable() {
    let mut c = persistent_cluster(1);
    c.connect("sub", false);
    c.subscribe("sub", &[("t", QoS::ExactlyOnce)]);
    c.drop_connection("sub");
    c.connect("pub", true);
    c.publish("pub", "t", "x", QoS::ExactlyOnce, false, 4);
    c.make_all_durable();
    c.connect("sub", false);
    assert!(c.packets("sub").is_empty(), "held with the PUBLISH");
    c.make_all_durable();
    let packets = c.packets("sub");
    assert!(
        matches!(packets[..], [Packet::ConnAck(_), Packet::Publish(_)]),
        "{packets:?}"
    );
}

#[test]
fn an_outbox_held_for_a_later_batch_is_released_by_that_batch() {
    let mut c = persistent_cluster(1);
    c.connect("sub", false);
    c.subscribe("sub", &[("t", QoS::ExactlyOnce)]);
    c.make_all_durable();
    c.packets("sub");
    c.connect("pub", true);
    // A batch is taken (being written) before the QoS 2 delivery makes the next one.
    c.publish("pub", "other", "y", QoS::AtLeastOnce, true, 3);
    let first = c.shards[0].take_journal().expect("the retained record");
    c.publish("pub", "t", "x", QoS::ExactlyOnce, false, 4);
    c.shards[0].handle_durable(first.0);
    c.run();
    assert!(
        c.publishes("sub").is_empty(),
        "released by the earlier batch"
    );
    c.make_durable(0);
    assert_eq!(c.publishes("sub").len(), 1, "never released");
}

/// Found by the simulation (replay = live): a retained publish queued for a persistent session
/// was journaled without its retain flag and snapshotted with it.
#[test]
fn a_snapshot_stores_a_queued_retained_publish_as_the_journal_does() {
    let mut c = persistent_cluster(1);
    c.connect("sub", false);
    c.subscribe("sub", &[("t", QoS::AtLeastOnce)]);
    c.make_all_durable();
    c.drop_connection("sub");
    c.connect("pub", true);
    c.publish("pub", "t", "m", QoS::AtLeastOnce, true, 1);
    let messages = |records: Vec<Record>| -> Vec<Record> {
        records
            .into_iter()
            .filter(|r| matches!(r, Record::Message { .. }))
            .collect()
    };
    let journaled = messages(c.make_all_durable());
    assert_eq!(journaled.len(), 1);
    assert_eq!(messages(c.shards[0].snapshot_records()), journaled);
}

/// Found by the crash simulation: a PUBREL to a persistent subscriber left before its `Released`
/// record was durable; after a crash the broker sent the PUBLISH again, and the client, which had
/// released the id, delivered it twice.
#[test]
fn a_pubrel_to_a_subscriber_waits_until_its_released_record_is_durable() {
    let mut c = persistent_cluster(1);
    c.connect("sub", false);
    c.subscribe("sub", &[("t", QoS::ExactlyOnce)]);
    c.make_all_durable();
    c.packets("sub");
    c.connect("pub", true);
    c.publish("pub", "t", "m", QoS::ExactlyOnce, false, 1);
    c.make_all_durable();
    let packet_id = match &c.packets("sub")[..] {
        [Packet::Publish(p)] => p.packet_id.expect("QoS 2"),
        other => panic!("expected the PUBLISH, got {other:?}"),
    };
    c.send("sub", Packet::PubRec(PubRec { packet_id }));
    assert!(c.packets("sub").is_empty(), "PUBREL before durable");
    let records = c.make_durable(0);
    assert!(records.iter().any(|r| matches!(r, Record::Released { .. })));
    assert_eq!(c.packets("sub"), vec![Packet::PubRel(PubRel { packet_id })]);
}

/// Found by the crash simulation: a QoS 2 PUBLISH sent again (after a reconnect) under an id the
/// broker still held was answered PUBREC at once, before the first one's records were durable;
/// the broker crashed and lost the message its publisher had been told it kept.
#[test]
fn a_pubrec_for_a_resent_qos2_publish_waits_for_the_first_ones_records() {
    let (sub, publisher) = ids_on_distinct_shards();
    let mut c = persistent_cluster(2);
    c.connect(&sub, false);
    c.subscribe(&sub, &[("t", QoS::ExactlyOnce)]);
    c.make_all_durable();
    c.drop_connection(&sub);
    c.make_all_durable();
    c.connect(&publisher, false);
    c.make_all_durable();
    c.packets(&publisher);
    c.publish(&publisher, "t", "m", QoS::ExactlyOnce, false, 5);
    assert_eq!(acks(&c.packets(&publisher)), 0, "PUBREC before durable");
    // The publisher reconnects and sends it again: the id is held, it is not routed again.
    c.connect(&publisher, false);
    c.packets(&publisher);
    c.publish(&publisher, "t", "m", QoS::ExactlyOnce, false, 5);
    let pub_shard = c.client(&publisher).shard;
    c.make_durable(pub_shard);
    assert_eq!(
        acks(&c.packets(&publisher)),
        0,
        "PUBREC before the subscriber's shard stored the message"
    );
    let sub_shard = c.client(&sub).shard;
    c.make_durable(sub_shard);
    assert_eq!(
        c.packets(&publisher),
        vec![Packet::PubRec(PubRec { packet_id: 5 })]
    );
}

/// Found by the crash simulation: a session resumed while its QoS 2 PUBLISH's packet id was not
/// yet durable sent it again at once; after a crash the broker sent it under another id and the
/// client, still holding the first, had two deliveries to tell apart.
#[test]
fn a_resumed_session_resends_its_qos2_publish_once_its_packet_id_is_durable() {
    let mut c = persistent_cluster(1);
    c.connect("sub", false);
    c.subscribe("sub", &[("t", QoS::ExactlyOnce)]);
    c.make_all_durable();
    c.packets("sub");
    c.connect("pub", true);
    c.publish("pub", "t", "m", QoS::ExactlyOnce, false, 1);
    assert!(
        c.packets("sub").is_empty(),
        "PUBLISH before its id is durable"
    );
    c.connect("sub", false);
    let resumed = c.packets("sub");
    assert!(
        !resumed.iter().any(|p| matches!(p, Packet::Publish(_))),
        "resent before its id is durable: {resumed:?}"
    );
    c.make_all_durable();
    assert!(c
        .packets("sub")
        .iter()
        .any(|p| matches!(p, Packet::Publish(p) if p.dup)));
}

#[test]
fn a_connack_that_ends_a_persistent_session_leaves_once_the_end_is_durable() {
    let mut c = persistent_cluster(1);
    c.connect("c", false);
    c.subscribe("c", &[("t", QoS::AtLeastOnce)]);
    c.make_all_durable();
    c.drop_connection("c");
    c.make_all_durable();
    c.connect("c", true);
    assert!(
        c.packets("c").is_empty(),
        "CONNACK (session present 0) before the SessionDrop was durable"
    );
    let records = c.make_durable(0);
    assert!(records
        .iter()
        .any(|r| matches!(r, Record::SessionDrop { client_id } if &**client_id == "c")));
    assert!(matches!(
        c.packets("c").as_slice(),
        [Packet::ConnAck(ConnAck {
            session_present: false,
            ..
        })]
    ));
    // A clean session that replaced a clean one waits for nothing.
    c.drop_connection("c");
    c.connect("c", true);
    assert_eq!(c.packets("c").len(), 1, "CONNACK at once");
}

/// Found by the crash simulation: the packet id of a QoS 2 retained copy sent after a SUBACK was
/// not journaled; after a crash the broker sent it again under another id while the client still
/// held the first (a second delivery, or a copy the client drops).
#[test]
fn a_qos2_retained_copy_is_stored_and_leaves_once_its_packet_id_is_durable() {
    let mut c = persistent_cluster(1);
    c.connect("pub", true);
    c.publish("pub", "t", "kept", QoS::ExactlyOnce, true, 1);
    c.make_all_durable();
    c.connect("sub", false);
    c.make_all_durable();
    c.packets("sub");
    c.subscribe("sub", &[("t", QoS::ExactlyOnce)]);
    // The subscription's batch only: the SUBACK goes, then the retained copy is stored.
    let (batch, _) = c.shards[0].take_journal().expect("the subscription record");
    c.shards[0].handle_durable(batch);
    c.run();
    let publishes = c.publishes("sub");
    assert!(
        publishes.is_empty(),
        "retained copy before its id was durable"
    );
    let records = c.make_durable(0);
    assert!(records.iter().any(
        |r| matches!(r, Record::Message { message, .. } if message.retain && message.payload == "kept")
    ));
    assert!(records
        .iter()
        .any(|r| matches!(r, Record::PacketId { client_id, .. } if &**client_id == "sub")));
    let publishes = c.publishes("sub");
    assert_eq!(publishes.len(), 1);
    assert!(publishes[0].retain);
}
