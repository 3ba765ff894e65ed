//! Replay = live: every journal record a shard made since its last start, folded in order,
//! describes the same durable state as the shard's snapshot of its live state (`crash.rs` keeps
//! the records). Checks only: it takes the shards' journals (as the runtime would) and nothing else.

use crate::persist::{DurableState, Queue, QueuedMessage, Record, Session};

use super::*;

impl Sim {
    /// Every record taken, folded per shard, describes what each shard's snapshot does. Offline
    /// stamps are wall-clock milliseconds computed two ways (when the client left, and now minus
    /// how long ago): they may differ by the one millisecond the roundings lose.
    pub(super) fn check_replay(&mut self) {
        for shard in 0..self.cores.len() {
            self.take_journal(shard);
        }
        let Some(d) = self.durability.as_ref() else {
            return;
        };
        let fold = |records: &[Record]| {
            let mut state = DurableState::default();
            for record in records {
                state.apply(record);
            }
            state
        };
        let mut replayed = Vec::new();
        let mut live = Vec::new();
        for (shard, core) in self.cores.iter().enumerate() {
            let mut from_journal = fold(&d.all[shard]);
            let mut from_snapshot = fold(&core.snapshot_records());
            let mut client_ids: Vec<&Arc<str>> = from_journal
                .sessions
                .keys()
                .chain(from_snapshot.sessions.keys())
                .collect();
            client_ids.sort();
            client_ids.dedup();
            for id in client_ids {
                let (a, b) = (
                    from_journal.sessions.get(id),
                    from_snapshot.sessions.get(id),
                );
                let stamps = (
                    a.and_then(|s| s.offline_since_unix_ms),
                    b.and_then(|s| s.offline_since_unix_ms),
                );
                let close = match stamps {
                    (Some(x), Some(y)) => x.abs_diff(y) <= 1,
                    (x, y) => x == y,
                };
                if !close || a.is_some() != b.is_some() {
                    fail!(
                        self,
                        "shard {shard}: session {id}: the journal says {stamps:?}/{}, the live \
                         state {}",
                        a.is_some(),
                        b.is_some()
                    );
                }
            }
            for state in [&mut from_journal, &mut from_snapshot] {
                for session in state.sessions.values_mut() {
                    session.offline_since_unix_ms = None;
                }
            }
            let mut ids: Vec<&Arc<str>> = from_journal.sessions.keys().collect();
            ids.sort();
            let differs = ids.into_iter().find(|id| {
                match (
                    from_journal.sessions.get(*id),
                    from_snapshot.sessions.get(*id),
                ) {
                    (Some(a), Some(b)) => !same_session(a, b),
                    (a, b) => a != b,
                }
            });
            if differs.is_some() {
                let show = |s: &DurableState| differs.and_then(|id| s.sessions.get(id)).cloned();
                fail!(
                    self,
                    "shard {shard}: replaying the journal gives another state than the live one \
                     (session {differs:?}): journal {:?}, live {:?}",
                    show(&from_journal),
                    show(&from_snapshot)
                );
            }
            replayed.push(from_journal);
            live.push(from_snapshot);
        }
        // Each shard journals the retained updates it made; each snapshot holds them all.
        let retained = |states: Vec<DurableState>| {
            let mut merged = DurableState::merge(states);
            merged.finish();
            merged.retained
        };
        let (mut a, mut b) = (retained(replayed), retained(live));
        self.comparable_retained(&mut a);
        self.comparable_retained(&mut b);
        if a != b {
            fail!(
                self,
                "retained: replaying the journals gives {a:?}, the live stores {b:?}"
            );
        }
    }
}

/// Two folds of one session say the same: equal but for the expiry deadlines of queued messages
/// (MQTT 5), which may differ by the millisecond the roundings lose (the journal adds the
/// interval to the wall clock's milliseconds; a snapshot converts the core's deadline).
fn same_session(a: &Session, b: &Session) -> bool {
    let bare = |s: &Session| Session {
        queue: Queue::default(),
        ..s.clone()
    };
    let entry = |q: &QueuedMessage| QueuedMessage {
        expires_at_unix_ms: None,
        ..q.clone()
    };
    let (mut x, mut y) = (a.queue.iter(), b.queue.iter());
    bare(a) == bare(b)
        && std::iter::from_fn(|| match (x.next(), y.next()) {
            (None, None) => None,
            (Some(x), Some(y)) => {
                let close = match (x.expires_at_unix_ms, y.expires_at_unix_ms) {
                    (Some(p), Some(q)) => p.abs_diff(q) <= 1,
                    (p, q) => p == q,
                };
                Some(close && entry(x) == entry(y))
            }
            _ => Some(false),
        })
        .all(|same| same)
}
