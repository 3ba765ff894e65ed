//! Tests of one session's state: the in-flight window, then the queue, then drops; flow state
//! only while messages are unsettled; offline messages queued in order and re-sent with DUP;
//! packet ids.

use super::*;
use crate::protocol::TopicName;
use bytes::Bytes;

fn message(n: u32) -> Message {
    Message {
        topic: TopicName::new("t").expect("topic"),
        payload: Bytes::from(n.to_string()),
        qos: QoS::ExactlyOnce,
        retain: false,
        properties: None,
    }
}

fn online(max_inflight: u16, max_queued: usize) -> Session {
    let mut s = Session::new(
        "c".into(),
        false,
        max_inflight,
        Arc::new(QueueLimits::messages(max_queued)),
    );
    s.conn = Some(1);
    s
}

/// The packet identifier of a message to send now.
fn sent(d: Delivery) -> Option<u16> {
    match d {
        Delivery::Send { packet_id } => packet_id,
        other => panic!("expected Send, got {other:?}"),
    }
}

/// What `fill_window` writes: (payload, packet identifier).
fn fill(s: &mut Session) -> Vec<(Bytes, Option<u16>)> {
    let mut out = Vec::new();
    s.fill_window(usize::MAX, None, |p, _, _| {
        out.push((Bytes::copy_from_slice(p.payload), p.packet_id))
    });
    out
}

#[test]
fn a_queued_copy_that_expired_is_dropped_and_one_that_did_not_keeps_its_props() {
    let t0 = std::time::Instant::now();
    let mut s = online(1, 10);
    let soon = CopyProps {
        expires_at: Some(t0 + std::time::Duration::from_secs(1)),
        subscription_ids: &[],
    };
    let later = CopyProps {
        expires_at: Some(t0 + std::time::Duration::from_secs(60)),
        subscription_ids: &[7],
    };
    assert_eq!(
        sent(s.deliver(message(1), QoS::AtLeastOnce, false)),
        Some(1)
    );
    for (n, props) in [(2, soon), (3, later)] {
        let queued = s.deliver_within(message(n), QoS::AtLeastOnce, false, 0, 1, props);
        assert_eq!(queued, Delivery::Queued);
    }
    s.on_puback(1).expect("in flight");
    let mut out = Vec::new();
    let now = Some(t0 + std::time::Duration::from_secs(2));
    let expired = s.fill_window(usize::MAX, now, |p, props, _| {
        out.push((
            Bytes::copy_from_slice(p.payload),
            props.hop(now).message_expiry_interval,
        ));
        assert_eq!(props.subscription_ids, &[7]);
    });
    assert_eq!(expired.len(), 1);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, message(3).payload);
    assert_eq!(out[0].1, Some(58));
    assert_eq!(s.queued_len(), 0);
    assert_eq!(s.queued_bytes(), 0);
    // Resent after a reconnect with the same props.
    let resent = s.resend_inflight();
    assert!(matches!(&resent[0], Resend::Publish(_, _, Some(kept)) if kept.props() == later));
    // A share group takes back what has not expired.
    assert_eq!(s.unacknowledged(now).len(), 1);
    let past = Some(t0 + std::time::Duration::from_secs(61));
    assert!(s.unacknowledged(past).is_empty());
}

#[test]
fn qos0_is_sent_online_and_dropped_offline() {
    let mut s = online(1, 1);
    let p = sent(s.deliver(message(1), QoS::AtMostOnce, false));
    assert_eq!(p, None);
    s.conn = None;
    assert_eq!(
        s.deliver(message(2), QoS::AtMostOnce, false),
        Delivery::Dropped(DropReason::OfflineQoS0)
    );
}

#[test]
fn window_then_queue_then_drop() {
    let mut s = online(2, 2);
    let a = sent(s.deliver(message(1), QoS::AtLeastOnce, false));
    let b = sent(s.deliver(message(2), QoS::AtLeastOnce, false));
    assert_ne!(a, b);
    assert_eq!(
        s.deliver(message(3), QoS::AtLeastOnce, false),
        Delivery::Queued
    );
    assert_eq!(
        s.deliver(message(4), QoS::AtLeastOnce, false),
        Delivery::Queued
    );
    assert_eq!(
        s.deliver(message(5), QoS::AtLeastOnce, false),
        Delivery::Dropped(DropReason::QueueFull)
    );
    s.on_puback(a.expect("id")).expect("known id");
    let next = fill(&mut s);
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].0, Bytes::from("3"));
    assert_eq!(s.on_puback(a.expect("id")), Err(UnknownPacketId(1)));
}

#[test]
fn qos2_outgoing_flow() {
    let mut s = online(5, 5);
    let p = sent(s.deliver(message(1), QoS::ExactlyOnce, false));
    let id = p.expect("id");
    assert!(
        s.on_pubcomp(id).is_err(),
        "PUBCOMP before PUBREC is not accepted"
    );
    assert_eq!(s.on_pubrec(id), Ok(PubRel { packet_id: id }));
    assert_eq!(
        s.on_pubrec(id),
        Ok(PubRel { packet_id: id }),
        "repeated PUBREC answered again"
    );
    assert!(s.on_puback(id).is_err());
    s.on_pubcomp(id).expect("known");
    assert_eq!(s.inflight_len(), 0);
}

/// An idle session holds no flow state; a busy one keeps it until everything is settled and
/// the tick gives it back.
#[test]
fn flow_state_exists_only_while_messages_are_unsettled() {
    let mut s = online(5, 5);
    assert!(s.flow.is_none());
    let Delivery::Send {
        packet_id: Some(id),
    } = s.deliver(message(1), QoS::AtLeastOnce, false)
    else {
        panic!("expected a QoS 1 send");
    };
    assert!(s.incoming_qos2(3));
    s.release_empty_flow();
    assert!(s.flow.is_some(), "released with a message in flight");
    s.on_puback(id).expect("in flight");
    s.release_empty_flow();
    assert!(s.flow.is_some(), "released with a QoS 2 id awaiting PUBREL");
    assert!(s.incoming_pubrel(3));
    s.release_empty_flow();
    assert!(s.flow.is_none());
    assert_eq!((s.inflight_len(), s.queued_len()), (0, 0));
}

#[test]
fn offline_messages_queue_in_order_and_resend_with_dup() {
    let mut s = Session::new("c".into(), false, 2, Arc::new(QueueLimits::messages(10)));
    for n in 0..4 {
        assert_eq!(
            s.deliver(message(n), QoS::AtLeastOnce, false),
            Delivery::Queued
        );
    }
    s.conn = Some(7);
    let first = fill(&mut s);
    assert_eq!(
        first.iter().map(|p| p.0.clone()).collect::<Vec<_>>(),
        ["0", "1"]
    );
    let id = first[1].1.expect("id");
    // Connection lost before acks: both are re-sent with DUP on reconnect.
    s.conn = None;
    s.conn = Some(8);
    let again = s.resend_inflight();
    assert_eq!(again.len(), 2);
    match &again[1] {
        Resend::Publish(p, _, _) => {
            assert!(p.dup);
            assert_eq!(p.packet_id, Some(id));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(s.queued_len(), 2);
}

#[test]
fn released_qos2_resends_pubrel() {
    let mut s = online(5, 5);
    let p = sent(s.deliver(message(1), QoS::ExactlyOnce, false));
    let id = p.expect("id");
    s.on_pubrec(id).expect("known");
    assert_eq!(
        s.resend_inflight(),
        vec![Resend::PubRel(PubRel { packet_id: id })]
    );
}

#[test]
fn packet_ids_skip_zero_and_ids_in_flight() {
    let mut s = online(3, 0);
    s.next_packet_id = u16::MAX;
    let a = sent(s.deliver(message(1), QoS::AtLeastOnce, false));
    let b = sent(s.deliver(message(2), QoS::AtLeastOnce, false));
    assert_eq!(a, Some(u16::MAX));
    assert_eq!(b, Some(1));
    s.next_packet_id = 1;
    let c = sent(s.deliver(message(3), QoS::AtLeastOnce, false));
    assert_eq!(c, Some(2));
}

#[test]
fn incoming_qos2_deduplicates_until_pubrel() {
    let mut s = online(1, 1);
    assert!(s.incoming_qos2(9));
    assert!(!s.incoming_qos2(9));
    assert!(s.incoming_pubrel(9));
    assert!(!s.incoming_pubrel(9));
    assert!(s.incoming_qos2(9));
}
