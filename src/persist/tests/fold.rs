//! The fold: every record idempotent, a snapshot rebuilds its state, a journal replayed over a
//! fuzzy snapshot gives the journal's state, retained versions across shards, split and merge.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::gen::{file, read, Gen};
use crate::persist::codec::FileKind;
use crate::persist::{DurableState, MsgId, Record, RetainVersion};
use crate::protocol::{Message, QoS, SubOptions, TopicFilter, TopicName};

fn fold<'a>(records: impl IntoIterator<Item = &'a Record>) -> DurableState {
    let mut state = DurableState::default();
    for record in records {
        state.apply(record);
    }
    state
}

/// The state a snapshot of `state` rebuilds, through bytes and the reader.
fn through_snapshot(state: &DurableState) -> DurableState {
    let mut out = BytesMut::new();
    state.encode_snapshot(&mut out).expect("encodable state");
    let (records, error) = read(out.freeze());
    assert_eq!(error, None);
    fold(&records)
}

/// How much a state holds: sessions, subscriptions, queued messages, retained topics.
fn size(state: &DurableState) -> (usize, usize, usize, usize) {
    let sessions = state.sessions.values();
    (
        state.sessions.len(),
        sessions.clone().map(|s| s.subscriptions.len()).sum(),
        sessions.map(|s| s.queue.len()).sum(),
        state.retained.len(),
    )
}

/// Asserts `a == b`, naming the first difference (the states' Debug output is too long to read).
#[track_caller]
fn assert_same(a: &DurableState, b: &DurableState, context: &str) {
    if a == b {
        return;
    }
    let mut ids: Vec<_> = a.sessions.keys().chain(b.sessions.keys()).collect();
    ids.sort();
    ids.dedup();
    for id in ids {
        let (x, y) = (a.sessions.get(id), b.sessions.get(id));
        let difference = match (x, y) {
            (Some(x), Some(y)) if x == y => continue,
            (Some(x), Some(y)) if x.queue != y.queue => {
                let q = |s: &crate::persist::Session| -> Vec<_> {
                    s.queue
                        .iter()
                        .map(|e| (e.id, e.qos, e.packet_id, e.released))
                        .collect()
                };
                format!("queues {:?} and {:?}", q(x), q(y))
            }
            (Some(x), Some(y)) => format!(
                "subscriptions {:?} / {:?}, offline {:?} / {:?}, qos2 {:?} / {:?}, wills equal {}",
                x.subscriptions,
                y.subscriptions,
                x.offline_since_unix_ms,
                y.offline_since_unix_ms,
                x.qos2_received,
                y.qos2_received,
                x.will == y.will
            ),
            _ => format!("present {} / {}", x.is_some(), y.is_some()),
        };
        panic!("{context}: session {id:?} differs: {difference}");
    }
    let versions = |s: &DurableState| -> Vec<_> {
        let mut v: Vec<_> = s
            .retained
            .iter()
            .map(|(t, r)| (t.as_str().to_owned(), r.version, r.message.is_some()))
            .collect();
        v.sort();
        v
    };
    panic!(
        "{context}: retained {:?} and {:?}",
        versions(a),
        versions(b)
    );
}

fn message(topic: &str, payload: &'static [u8]) -> Message {
    Message {
        topic: TopicName::new(topic).expect("valid topic"),
        payload: Bytes::from_static(payload),
        qos: QoS::ExactlyOnce,
        retain: false,
        properties: None,
    }
}

fn retain(topic: &str, payload: Option<&'static [u8]>, clock: u64, shard: u32) -> Record {
    Record::Retain {
        topic: TopicName::new(topic).expect("valid topic"),
        message: payload.map(|p| Message {
            retain: true,
            ..message(topic, p)
        }),
        clock,
        shard,
    }
}

#[test]
fn every_record_applied_twice_in_a_row_leaves_the_same_state() {
    for seed in 0..30 {
        let journal = Gen::new(seed).journal(400, 0);
        let once = fold(&journal);
        let twice = fold(journal.iter().flat_map(|r| [r, r]));
        assert_same(&once, &twice, &format!("seed {seed}"));
        let (sessions, _, queued, retained) = size(&once);
        assert!(
            sessions > 0 && queued > 0 && retained > 0,
            "seed {seed}: {:?}",
            size(&once)
        );
    }
    // Records about anything, in any order: no panic, and still idempotent.
    let mut gen = Gen::new(99);
    let noise: Vec<Record> = (0..5000).map(|_| gen.record()).collect();
    assert_same(
        &fold(&noise),
        &fold(noise.iter().flat_map(|r| [r, r])),
        "noise",
    );
}

#[test]
fn a_snapshot_folded_gives_the_same_state() {
    for seed in 0..30 {
        let mut state = fold(&Gen::new(seed).journal(400, 0));
        assert_same(&through_snapshot(&state), &state, &format!("seed {seed}"));
        state.finish();
        assert_same(
            &through_snapshot(&state),
            &state,
            &format!("seed {seed}, finished"),
        );
    }
}

#[test]
fn a_journal_replayed_over_a_fuzzy_snapshot_gives_the_journal_state() {
    for seed in 0..20 {
        let journal = Gen::new(seed).journal(300, 0);
        let expected = fold(&journal);
        // A shard snapshots between two of its batches, never between a `Message` record and
        // the `MessageExpiry` and `Enqueue`s written with it (the snapshot keeps no message that
        // nothing queues).
        let between_batches = |at: &usize| {
            !matches!(
                journal.get(*at),
                Some(Record::Enqueue { .. } | Record::MessageExpiry { .. })
            )
        };
        for taken_at in (0..=journal.len()).step_by(7).filter(between_batches) {
            let snapshot = file(
                FileKind::Snapshot,
                &fold(&journal[..taken_at])
                    .snapshot_records()
                    .collect::<Vec<_>>(),
            );
            // The replay starts at or before the point the snapshot was taken at.
            for replay_from in [0, taken_at / 2, taken_at.saturating_sub(5), taken_at] {
                let (records, _) = read(snapshot.clone());
                let mut state = fold(&records);
                for record in &journal[replay_from..] {
                    state.apply(record);
                }
                assert_eq!(
                    state, expected,
                    "seed {seed}, snapshot at {taken_at}, replay from {replay_from}"
                );
            }
        }
    }
}

#[test]
fn a_qos2_message_keeps_its_packet_id_and_release_through_a_snapshot() {
    let c: Arc<str> = Arc::from("sub");
    let state = fold(&[
        Record::SessionOpen {
            client_id: c.clone(),
        },
        Record::Message {
            id: 4,
            message: message("t", b"first"),
        },
        Record::Message {
            id: 9,
            message: message("t", b"second"),
        },
        Record::Enqueue {
            client_id: c.clone(),
            id: 9,
            qos: QoS::ExactlyOnce,
        },
        Record::Enqueue {
            client_id: c.clone(),
            id: 4,
            qos: QoS::ExactlyOnce,
        },
        Record::PacketId {
            client_id: c.clone(),
            id: 9,
            packet_id: 300,
        },
        Record::Released {
            client_id: c.clone(),
            id: 9,
        },
        Record::PacketId {
            client_id: c.clone(),
            id: 4,
            packet_id: 301,
        },
        Record::Qos2Received {
            client_id: c.clone(),
            packet_id: 12,
        },
        Record::SessionOffline {
            client_id: c.clone(),
            at_unix_ms: 1_700_000_000_000,
        },
    ]);
    let rebuilt = through_snapshot(&state);
    let session = rebuilt.session("sub").expect("the session");
    let queue: Vec<_> = session
        .queue
        .iter()
        .map(|e| (e.id, e.packet_id, e.released))
        .collect();
    assert_eq!(queue, [(9, Some(300), true), (4, Some(301), false)]);
    assert_eq!(
        session.queue.get(9).map(|e| &e.message.payload[..]),
        Some(&b"second"[..])
    );
    assert_eq!(
        session.qos2_received.iter().copied().collect::<Vec<_>>(),
        [12]
    );
    assert_eq!(session.offline_since_unix_ms, Some(1_700_000_000_000));
    assert_eq!(rebuilt, state);
}

#[test]
fn records_about_unknown_sessions_or_messages_are_counted_and_skipped() {
    let c: Arc<str> = Arc::from("c");
    let mut state = fold(&[
        Record::Subscribe {
            client_id: c.clone(),
            filter: TopicFilter::new("t").expect("valid"),
            options: SubOptions::qos(QoS::AtLeastOnce),
        },
        Record::SessionOpen {
            client_id: c.clone(),
        },
        Record::Enqueue {
            client_id: c.clone(),
            id: 5,
            qos: QoS::AtLeastOnce,
        },
        Record::Done {
            client_id: c.clone(),
            id: 5,
        },
        Record::Message {
            id: 5,
            message: message("t", b"x"),
        },
        Record::Message {
            id: 5,
            message: message("t", b"other"),
        },
        Record::Enqueue {
            client_id: c.clone(),
            id: 5,
            qos: QoS::AtLeastOnce,
        },
    ]);
    let session = state.session("c").expect("opened");
    assert!(
        session.subscriptions.is_empty(),
        "the subscription came before the session"
    );
    assert_eq!(
        session.queue.get(5).map(|e| &e.message.payload[..]),
        Some(&b"x"[..])
    );
    let report = state.finish();
    assert_eq!(
        (
            report.records,
            report.unknown_session,
            report.unknown_message,
            report.missing_entry,
            report.conflicting_message
        ),
        (7, 1, 1, 1, 1)
    );
}

#[test]
fn a_session_lives_from_its_open_to_its_drop_empty_or_not() {
    let c: Arc<str> = Arc::from("c");
    let mut state = fold(&[
        Record::SessionOpen {
            client_id: c.clone(),
        },
        Record::SessionOffline {
            client_id: c.clone(),
            at_unix_ms: 5,
        },
        Record::Message {
            id: 1,
            message: message("t", b"x"),
        },
        Record::Enqueue {
            client_id: c.clone(),
            id: 1,
            qos: QoS::AtLeastOnce,
        },
        Record::Done {
            client_id: c.clone(),
            id: 1,
        },
    ]);
    assert_eq!(state.session("c").map(|s| s.queue.len()), Some(0));
    state.apply(&Record::SessionOpen {
        client_id: c.clone(),
    });
    assert_eq!(
        state.session("c").map(|s| s.offline_since_unix_ms),
        Some(None),
        "online again"
    );
    state.apply(&Record::SessionDrop { client_id: c });
    assert!(state.session("c").is_none());
}

#[test]
fn the_highest_retained_version_wins_across_shards_and_deletions_go_at_the_end() {
    let shard0 = [
        retain("a", Some(b"a0"), 5, 0),
        retain("b", None, 2, 0),
        retain("c", Some(b"c0"), 7, 0),
        retain("d", Some(b""), 9, 0),
    ];
    let shard1 = [
        retain("a", None, 7, 1),
        retain("b", Some(b"b1"), 3, 1),
        retain("c", Some(b"c1"), 7, 1),
        retain("c", Some(b"old"), 6, 1),
    ];
    for order in [[&shard0, &shard1], [&shard1, &shard0]] {
        let mut merged = DurableState::merge(order.iter().map(|j| fold(j.iter())).collect());
        assert_eq!(merged.retained.len(), 4, "deletions are kept until finish");
        let report = merged.finish();
        assert_eq!(
            report.tombstones, 2,
            "a deleted at (7, 1), d by an empty payload"
        );
        let mut kept: Vec<_> = merged
            .retained_messages()
            .map(|(m, v, _)| (m.topic.as_str().to_owned(), m.payload.clone(), v))
            .collect();
        kept.sort();
        assert_eq!(
            kept,
            [
                (
                    "b".into(),
                    Bytes::from_static(b"b1"),
                    RetainVersion { clock: 3, shard: 1 }
                ),
                (
                    "c".into(),
                    Bytes::from_static(b"c1"),
                    RetainVersion { clock: 7, shard: 1 }
                ),
            ]
        );
    }
}

#[test]
fn split_then_merge_gives_the_same_sessions() {
    let home = |client_id: &str| client_id.len() % 3;
    let parts = (0..2).map(|shard| fold(&Gen::new(40 + shard).journal(400, shard as u32)));
    let mut state = DurableState::merge(parts.collect());
    state.finish();
    let (sessions, _, queued, _) = size(&state);
    assert!(sessions >= 4 && queued > 20, "{:?}", size(&state));
    let split = state.clone().split(3, home);
    assert_eq!(split.len(), 3);
    for (index, part) in split.iter().enumerate() {
        assert!(
            part.sessions.keys().all(|c| home(c) == index),
            "part {index}"
        );
        assert_eq!(
            part.retained, state.retained,
            "every part holds every retained message"
        );
    }
    let merged = DurableState::merge(split);
    assert_same(&merged, &state, "split then merged");
    assert_eq!(merged.report().duplicate_session, 0);
}

#[test]
fn merging_keeps_the_later_states_session_and_renumbers_shared_messages_once() {
    let a: Arc<str> = Arc::from("a");
    let b: Arc<str> = Arc::from("b");
    // Both shards number their messages from 1.
    let older = fold(&[
        Record::SessionOpen {
            client_id: a.clone(),
        },
        Record::Message {
            id: 1,
            message: message("t", b"old"),
        },
        Record::Enqueue {
            client_id: a.clone(),
            id: 1,
            qos: QoS::AtLeastOnce,
        },
    ]);
    let newer = fold(&[
        Record::SessionOpen {
            client_id: a.clone(),
        },
        Record::SessionOpen {
            client_id: b.clone(),
        },
        Record::Message {
            id: 1,
            message: message("t", b"shared"),
        },
        Record::Message {
            id: 2,
            message: message("t", b"b only"),
        },
        Record::Enqueue {
            client_id: a.clone(),
            id: 1,
            qos: QoS::AtLeastOnce,
        },
        Record::Enqueue {
            client_id: b.clone(),
            id: 2,
            qos: QoS::AtLeastOnce,
        },
        Record::Enqueue {
            client_id: b.clone(),
            id: 1,
            qos: QoS::ExactlyOnce,
        },
    ]);
    let merged = DurableState::merge(vec![older, newer]);
    assert_eq!(merged.report().duplicate_session, 1);
    let ids = |c: &str| -> Vec<(MsgId, &[u8])> {
        merged
            .session(c)
            .expect("session")
            .queue
            .iter()
            .map(|e| (e.id, &e.message.payload[..]))
            .collect()
    };
    assert_eq!(ids("a"), [(1, &b"shared"[..])]);
    assert_eq!(ids("b"), [(2, &b"b only"[..]), (1, &b"shared"[..])]);
    assert_eq!(merged.next_msg_id(), 3);
    let messages = merged
        .snapshot_records()
        .filter(|r| matches!(r, Record::Message { .. }))
        .count();
    assert_eq!(messages, 2, "the shared message is written once");
    assert_eq!(through_snapshot(&merged), merged);
}
