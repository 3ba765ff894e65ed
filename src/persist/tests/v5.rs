//! MQTT 5 state in the journal: message properties (in order), subscription options and
//! identifiers, session expiry intervals, will delays and expiry deadlines round trip, fold and
//! survive a snapshot; an MQTT 3 record is written byte for byte as before them; and a file
//! written by the format before them (built here with that encoder's layout) reads as it did.

use std::num::NonZeroU32;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use super::gen::{file, read};
use crate::persist::codec::{encode_frame, encode_header, FileKind};
use crate::persist::{DurableState, Record};
use crate::protocol::v5::{Properties, RetainHandling};
use crate::protocol::{Message, QoS, SubOptions, TopicFilter, TopicName};

fn fold(records: &[Record]) -> DurableState {
    let mut state = DurableState::default();
    for record in records {
        state.apply(record);
    }
    state
}

fn v5_message(topic: &str, expiry: Option<u32>) -> Message {
    Message {
        topic: TopicName::new(topic).expect("valid topic"),
        payload: Bytes::from_static(b"v5"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Some(Arc::new(Properties {
            payload_format_utf8: Some(true),
            message_expiry_interval: expiry,
            content_type: Some("text/plain".into()),
            response_topic: Some("reply/here".into()),
            correlation_data: Some(Bytes::from_static(b"\x00corr")),
            // Not sorted, and a name twice: forwarded as published [MQTT-3.3.2-18].
            user_properties: vec![
                ("z".into(), "last".into()),
                ("a".into(), "first".into()),
                ("z".into(), "again".into()),
            ],
            ..Properties::default()
        })),
    }
}

fn v5_options() -> SubOptions {
    SubOptions {
        qos: QoS::ExactlyOnce,
        no_local: true,
        retain_as_published: true,
        retain_handling: RetainHandling::DoNotSend,
        id: NonZeroU32::new(268_435_455),
    }
}

/// One session with every MQTT 5 field, a retained message with an expiry.
fn v5_records() -> Vec<Record> {
    let c: Arc<str> = Arc::from("c5");
    let topic = TopicName::new("r/1").expect("valid topic");
    vec![
        Record::SessionOpen {
            client_id: c.clone(),
        },
        Record::SessionExpiry {
            client_id: c.clone(),
            interval_secs: Some(3600),
        },
        Record::Subscribe {
            client_id: c.clone(),
            filter: TopicFilter::new("t/#").expect("valid filter"),
            options: v5_options(),
        },
        Record::Subscribe {
            client_id: c.clone(),
            filter: TopicFilter::new("plain").expect("valid filter"),
            options: SubOptions::qos(QoS::AtLeastOnce),
        },
        Record::Will {
            client_id: c.clone(),
            will: Some(v5_message("will/c5", Some(30))),
        },
        Record::WillDelay {
            client_id: c.clone(),
            delay_secs: 90,
        },
        Record::SessionOffline {
            client_id: c.clone(),
            at_unix_ms: 1_700_000_000_000,
        },
        Record::Message {
            id: 1,
            message: v5_message("t/a", Some(60)),
        },
        Record::MessageExpiry {
            id: 1,
            at_unix_ms: 1_700_000_060_000,
        },
        Record::Enqueue {
            client_id: c.clone(),
            id: 1,
            qos: QoS::AtLeastOnce,
        },
        Record::Message {
            id: 2,
            message: v5_message("t/b", None),
        },
        Record::Enqueue {
            client_id: c,
            id: 2,
            qos: QoS::AtLeastOnce,
        },
        Record::Retain {
            topic: topic.clone(),
            message: Some(Message {
                retain: true,
                ..v5_message("r/1", Some(10))
            }),
            clock: 4,
            shard: 1,
        },
        Record::RetainExpiry {
            topic,
            clock: 4,
            shard: 1,
            at_unix_ms: 1_700_000_010_000,
        },
    ]
}

#[test]
fn every_v5_field_round_trips_through_bytes() {
    let records = v5_records();
    let (read_back, error) = read(file(FileKind::Journal, &records));
    assert_eq!(error, None);
    assert_eq!(read_back, records);
    let Record::Message { message, .. } = &read_back[7] else {
        panic!("a message record: {:?}", read_back[7]);
    };
    let props = message.properties.as_deref().expect("properties kept");
    let names: Vec<&str> = props.user_properties.iter().map(|(n, _)| &**n).collect();
    assert_eq!(names, ["z", "a", "z"], "user properties in their order");
}

#[test]
fn the_fold_keeps_v5_state_and_a_snapshot_rebuilds_it() {
    let state = fold(&v5_records());
    let session = state.session("c5").expect("the session");
    assert_eq!(session.expiry_interval_secs, Some(Some(3600)));
    assert_eq!(session.will_delay_secs, 90);
    let filter = TopicFilter::new("t/#").expect("valid filter");
    assert_eq!(session.subscriptions.get(&filter), Some(&v5_options()));
    let queue: Vec<_> = session.queue.iter().collect();
    assert_eq!(queue[0].expires_at_unix_ms, Some(1_700_000_060_000));
    assert_eq!(queue[1].expires_at_unix_ms, None);
    assert_eq!(queue[0].message, v5_message("t/a", Some(60)));
    let (_, _, expires) = state
        .retained_messages()
        .next()
        .expect("a retained message");
    assert_eq!(expires, Some(1_700_000_010_000));

    let mut out = BytesMut::new();
    state.encode_snapshot(&mut out).expect("encodable state");
    let (records, error) = read(out.freeze());
    assert_eq!(error, None);
    let rebuilt = fold(&records);
    assert_eq!(rebuilt, state);
    let again = rebuilt.session("c5").expect("the session");
    assert_eq!(again.will_delay_secs, 90);
    assert_eq!(again.expiry_interval_secs, Some(Some(3600)));
}

#[test]
fn a_new_will_ends_the_delay_and_a_newer_retained_update_its_expiry() {
    let mut records = v5_records();
    records.push(Record::Will {
        client_id: Arc::from("c5"),
        will: None,
    });
    records.push(Record::Retain {
        topic: TopicName::new("r/1").expect("valid topic"),
        message: Some(v5_message("r/1", None)),
        clock: 5,
        shard: 0,
    });
    // Written for the update it replaced: no effect.
    records.push(Record::RetainExpiry {
        topic: TopicName::new("r/1").expect("valid topic"),
        clock: 4,
        shard: 1,
        at_unix_ms: 1,
    });
    let state = fold(&records);
    let session = state.session("c5").expect("the session");
    assert_eq!((session.will.as_ref(), session.will_delay_secs), (None, 0));
    let (_, _, expires) = state
        .retained_messages()
        .next()
        .expect("a retained message");
    assert_eq!(expires, None);
}

// ---- The format before MQTT 5 state was journaled (format version 2, record types 1-15) ----

/// `str` as that encoder wrote it.
fn old_str(out: &mut BytesMut, s: &str) {
    out.put_u16_le(s.len() as u16);
    out.put_slice(s.as_bytes());
}

/// `message` as that encoder wrote it: topic, flags (QoS | retain << 2), u32 payload length,
/// payload; it had no properties.
fn old_message(out: &mut BytesMut, topic: &str, qos: u8, retain: bool, payload: &[u8]) {
    old_str(out, topic);
    out.put_u8(qos | (u8::from(retain) << 2));
    out.put_u32_le(payload.len() as u32);
    out.put_slice(payload);
}

/// A frame (`len | type | body`) as that encoder wrote it.
fn old_frame(out: &mut BytesMut, record_type: u8, body: impl FnOnce(&mut BytesMut)) {
    let mut b = BytesMut::new();
    b.put_u8(record_type);
    body(&mut b);
    out.put_u32_le(b.len() as u32);
    out.put_slice(&b);
}

/// A journal file of the old format: header (version 2), one block of the old records of a
/// persistent session with a subscription, a will, a queued message, and a retained message.
fn old_journal() -> Bytes {
    let mut frames = BytesMut::new();
    old_frame(&mut frames, 1, |b| old_str(b, "old")); // SessionOpen
    old_frame(&mut frames, 15, |b| {
        old_str(b, "old");
        b.put_u8(1);
        old_str(b, "user");
    }); // SessionUser
    old_frame(&mut frames, 4, |b| {
        old_str(b, "old");
        old_str(b, "a/+");
        b.put_u8(2);
    }); // Subscribe
    old_frame(&mut frames, 6, |b| {
        old_str(b, "old");
        b.put_u8(1);
        old_message(b, "will/old", 1, true, b"bye");
    }); // Will
    old_frame(&mut frames, 3, |b| {
        old_str(b, "old");
        b.put_u64_le(1_600_000_000_000);
    }); // SessionOffline
    old_frame(&mut frames, 7, |b| {
        b.put_u64_le(9);
        old_message(b, "a/b", 2, false, b"queued");
    }); // Message
    old_frame(&mut frames, 8, |b| {
        old_str(b, "old");
        b.put_u64_le(9);
        b.put_u8(2);
    }); // Enqueue
    old_frame(&mut frames, 14, |b| {
        old_str(b, "keep");
        b.put_u8(1);
        old_message(b, "keep", 0, true, b"retained");
        b.put_u64_le(3);
        b.put_u32_le(0);
    }); // Retain
    let mut out = BytesMut::new();
    out.put_slice(b"AMQTTJNL");
    out.put_u16_le(2);
    out.put_u8(1);
    out.put_u8(0);
    out.put_u32_le(frames.len() as u32);
    out.put_u32_le(crc32c::crc32c(&frames));
    out.put_slice(&frames);
    out.freeze()
}

fn plain(topic: &str, qos: QoS, retain: bool, payload: &'static [u8]) -> Message {
    Message {
        topic: TopicName::new(topic).expect("valid topic"),
        payload: Bytes::from_static(payload),
        qos,
        retain,
        properties: None,
    }
}

#[test]
fn a_journal_of_the_format_before_v5_state_recovers_unchanged() {
    let (records, error) = read(old_journal());
    assert_eq!(error, None);
    let state = fold(&records);
    let session = state.session("old").expect("the old session");
    let filter = TopicFilter::new("a/+").expect("valid filter");
    assert_eq!(
        session.subscriptions.get(&filter),
        Some(&SubOptions::qos(QoS::ExactlyOnce))
    );
    assert_eq!(
        session.will,
        Some(plain("will/old", QoS::AtLeastOnce, true, b"bye"))
    );
    assert_eq!(session.will_delay_secs, 0);
    assert_eq!(
        session.expiry_interval_secs, None,
        "the broker's setting applies"
    );
    assert_eq!(session.offline_since_unix_ms, Some(1_600_000_000_000));
    assert_eq!(session.username, Some(Some(Arc::from("user"))));
    let queue: Vec<_> = session.queue.iter().collect();
    assert_eq!(queue.len(), 1);
    assert_eq!(
        queue[0].message,
        plain("a/b", QoS::ExactlyOnce, false, b"queued")
    );
    assert_eq!(queue[0].expires_at_unix_ms, None);
    let retained: Vec<_> = state.retained_messages().collect();
    assert_eq!(retained.len(), 1);
    assert_eq!(
        retained[0].0,
        &plain("keep", QoS::AtMostOnce, true, b"retained")
    );
    assert_eq!(retained[0].2, None);
}

#[test]
fn mqtt3_records_are_written_byte_for_byte_as_before() {
    // The old file's frames, re-encoded by this build: the same bytes (an MQTT 3 session's
    // records cost exactly what they did).
    let old = old_journal();
    let (records, error) = read(old.clone());
    assert_eq!(error, None);
    let mut out = BytesMut::new();
    encode_header(FileKind::Journal, &mut out);
    let block = crate::persist::codec::begin_block(&mut out);
    for record in &records {
        encode_frame(record, &mut out).expect("encodable record");
    }
    crate::persist::codec::end_block(&mut out, block);
    assert_eq!(out.freeze(), old);
}

/// A v5 subscription record (type 16) whose options are an MQTT 3 subscription's is refused:
/// the writer puts those in type 4, and a reader that took both would read two encodings of one
/// record (the journal fuzz target's canonical-form check found it).
#[test]
fn a_v5_subscription_record_with_plain_options_is_refused() {
    use crate::persist::body_read::{decode_body, Body};
    let mut body = BytesMut::new();
    old_str(&mut body, "c");
    old_str(&mut body, "+");
    body.put_u8(0); // QoS 0, every option off
    body.put_u32_le(0); // no Subscription Identifier
    let data = body.freeze();
    assert!(decode_body(16, Body::new(&data, 0, data.len())).is_err());
    let mut body = BytesMut::new();
    old_str(&mut body, "c");
    old_str(&mut body, "+");
    body.put_u8(0b0000_0100); // No Local
    body.put_u32_le(0);
    let data = body.freeze();
    assert!(matches!(
        decode_body(16, Body::new(&data, 0, data.len())),
        Ok(Some(Record::Subscribe { .. }))
    ));
}
