//! How fast recovery reads and folds: a million queued messages must be recovered in well under
//! the 10 s, file reading included. `#[ignore]`d (it builds a ~150 MB journal); run with
//! `cargo test --release -p amqtt --lib persist::tests::speed -- --ignored --nocapture`. Times are
//! CPU seconds of the test's thread where Linux tells them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::persist::codec::{encode, encode_header, FileKind, Reader};
use crate::persist::{DurableState, Record};
use crate::protocol::{Message, QoS, TopicName};

const MESSAGES: u64 = 1_000_000;
const SESSIONS: u64 = 100;

/// A journal of [`MESSAGES`] messages of 64 bytes, each stored and enqueued for one of
/// [`SESSIONS`] sessions, then, with `done`, each done.
fn journal(done: bool) -> (Bytes, u64) {
    let clients: Vec<Arc<str>> = (0..SESSIONS)
        .map(|i| Arc::from(format!("client-{i}")))
        .collect();
    let topic = TopicName::new("bench/sensors/temperature").expect("valid topic");
    let payload = Bytes::from(vec![0x5a; 64]);
    let mut out = BytesMut::with_capacity(150 << 20);
    encode_header(FileKind::Journal, &mut out);
    let mut records = 0;
    let mut put = |record: Record, out: &mut BytesMut| {
        encode(&record, out).expect("encodable");
        records += 1;
    };
    for client_id in &clients {
        put(
            Record::SessionOpen {
                client_id: client_id.clone(),
            },
            &mut out,
        );
    }
    for id in 1..=MESSAGES {
        let client_id = clients[(id % SESSIONS) as usize].clone();
        let message = Message {
            topic: topic.clone(),
            payload: payload.clone(),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: None,
        };
        put(Record::Message { id, message }, &mut out);
        put(
            Record::Enqueue {
                client_id: client_id.clone(),
                id,
                qos: QoS::AtLeastOnce,
            },
            &mut out,
        );
        if done {
            put(Record::Done { client_id, id }, &mut out);
        }
    }
    (out.freeze(), records)
}

/// Reads and folds `data`: the state, the time reading and folding took, and the time reading
/// alone took (a pass that only decodes). Times are this thread's CPU time where Linux tells it
/// (the build machine is shared: wall time there measures the neighbours), else wall time.
fn recover(data: Bytes) -> (DurableState, Duration, Duration) {
    let started = Clock::start();
    let (_, reader) = Reader::open(data.clone()).expect("header");
    for item in reader {
        item.expect("an intact journal");
    }
    let reading = started.elapsed();
    let started = Clock::start();
    let (_, reader) = Reader::open(data).expect("header");
    let mut state = DurableState::default();
    for item in reader {
        state.apply(&item.expect("an intact journal"));
    }
    (state, started.elapsed(), reading)
}

/// This thread's CPU time (`/proc/thread-self/schedstat`), or wall time where it is not there.
enum Clock {
    Cpu(Duration),
    Wall(Instant),
}

impl Clock {
    fn cpu() -> Option<Duration> {
        let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
        let ns = stat.split_whitespace().next()?.parse().ok()?;
        Some(Duration::from_nanos(ns))
    }

    fn start() -> Clock {
        Clock::cpu().map_or_else(|| Clock::Wall(Instant::now()), Clock::Cpu)
    }

    fn elapsed(&self) -> Duration {
        match self {
            Clock::Cpu(started) => Clock::cpu().unwrap_or_default().saturating_sub(*started),
            Clock::Wall(started) => started.elapsed(),
        }
    }
}

fn rate(records: u64, took: Duration) -> String {
    format!(
        "{:.2} M records/s",
        records as f64 / took.as_secs_f64() / 1e6
    )
}

#[test]
#[ignore = "builds a ~150 MB journal; run with --ignored --nocapture"]
fn a_million_queued_messages_recover_in_well_under_ten_seconds() {
    let (data, records) = journal(false);
    let bytes = data.len();
    let (mut state, recovery, reading) = recover(data);
    let started = Clock::start();
    let report = state.finish();
    let total = recovery + started.elapsed();
    let queued: usize = state.sessions.values().map(|s| s.queue.len()).sum();
    assert_eq!(queued as u64, MESSAGES);
    assert_eq!(report.records, records);
    println!(
        "journal of {MESSAGES} queued messages ({records} records, {} MB): recovered in {:.2} s \
         (reading alone {:.2} s, {}; reading and folding {})",
        bytes >> 20,
        total.as_secs_f64(),
        reading.as_secs_f64(),
        rate(records, reading),
        rate(records, recovery)
    );

    let started = Clock::start();
    let mut snapshot = BytesMut::new();
    state.encode_snapshot(&mut snapshot).expect("encodable");
    let writing = started.elapsed();
    let snapshot_bytes = snapshot.len();
    let (again, from_snapshot, _) = recover(snapshot.freeze());
    println!(
        "snapshot of it ({} MB): written in {:.2} s, recovered in {:.2} s",
        snapshot_bytes >> 20,
        writing.as_secs_f64(),
        from_snapshot.as_secs_f64()
    );
    assert!(again == state, "the snapshot rebuilds the state");
    assert!(
        total < Duration::from_secs(5),
        "recovery took {total:?}, half the issue's budget"
    );
}

#[test]
#[ignore = "builds a ~150 MB journal; run with --ignored --nocapture"]
fn a_million_messages_stored_enqueued_and_done_fold_fast() {
    let (data, records) = journal(true);
    let (state, recovery, reading) = recover(data);
    assert!(state.sessions.values().all(|s| s.queue.is_empty()));
    println!(
        "{MESSAGES} messages stored, enqueued and done ({records} records): {:.2} s (reading alone \
         {:.2} s, {}; reading and folding {})",
        recovery.as_secs_f64(),
        reading.as_secs_f64(),
        rate(records, reading),
        rate(records, recovery)
    );
    assert!(recovery < Duration::from_secs(5), "took {recovery:?}");
}
