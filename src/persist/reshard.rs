//! Recovery across shards: [`DurableState::merge`] the states folded from each shard's files into
//! one, [`DurableState::split`] it by home shard for the shards of this run, and
//! [`DurableState::renumber`] message ids so that they are unique again.
//!
//! Must not: know the broker (the home-shard function is a parameter) or apply records (the fold
//! in `state.rs` does).

use std::collections::HashSet;

use super::record::MsgId;
use super::state::{set_retained, DurableState, FastMap};
use crate::protocol::{Message, QoS};

impl DurableState {
    /// One state from the states of several shards' files, in order: a client id found in more
    /// than one keeps the session of the state listed last (list them oldest generation first, then
    /// by shard), counted as a duplicate; a retained topic keeps its highest version (deletions too:
    /// call [`finish`](Self::finish) after merging). Reports are summed. Message ids are
    /// [`renumber`](Self::renumber)ed, as two shards' ids collide: merging ends a fold (an
    /// `Enqueue` applied afterwards finds no message).
    pub fn merge(parts: Vec<DurableState>) -> DurableState {
        let mut merged = DurableState::default();
        for part in parts {
            merged.report.add(&part.report);
            for (client_id, session) in part.sessions {
                if merged.sessions.insert(client_id, session).is_some() {
                    merged.report.duplicate_session += 1;
                }
            }
            for (topic, retained) in part.retained {
                set_retained(&mut merged.retained, &topic, retained);
            }
        }
        merged.renumber();
        merged
    }

    /// This state cut into `shards` parts: each session goes to part `home(client_id)` (pass the
    /// broker's `home_shard` for this run's shard count), and every part holds all the retained
    /// messages (every shard keeps the full retained store; merging them again is harmless, as the
    /// versions are equal). Part 0 carries the report. Message ids stay as they are: unique in
    /// this state, so in each part. Splitting ends a fold, as merging does.
    ///
    /// # Panics
    /// If `home` names a part `>= shards`: the caller's function and count disagree.
    pub fn split(self, shards: usize, home: impl Fn(&str) -> usize) -> Vec<DurableState> {
        let shards = shards.max(1);
        let mut parts: Vec<DurableState> = (0..shards)
            .map(|_| DurableState {
                retained: self.retained.clone(),
                ..DurableState::default()
            })
            .collect();
        parts[0].report = self.report;
        for (client_id, session) in self.sessions {
            let part = home(&client_id);
            assert!(
                part < shards,
                "home shard {part} of {shards} for {client_id:?}"
            );
            parts[part].sessions.insert(client_id, session);
        }
        parts
    }

    /// Numbers the queued messages 1, 2, … (sessions by client id, each queue in order), one id
    /// per message: entries that share a message (the same topic and payload `Bytes`, as the
    /// entries one `Message` record was enqueued into do) share its new id, so a snapshot still
    /// writes it once. Forgets the fold's message map (its ids are the old ones).
    pub fn renumber(&mut self) {
        let mut ids: FastMap<SharedMessage, MsgId> = FastMap::default();
        let mut next: MsgId = 1;
        let mut fresh = || {
            next += 1;
            next - 1
        };
        let mut client_ids: Vec<_> = self.sessions.keys().cloned().collect();
        client_ids.sort_unstable();
        for client_id in client_ids {
            let Some(session) = self.sessions.get_mut(&client_id) else {
                continue;
            };
            let mut in_this_queue: HashSet<MsgId, foldhash::fast::RandomState> = HashSet::default();
            for entry in session.queue.iter_mut() {
                let id = *ids
                    .entry(SharedMessage::of(&entry.message))
                    .or_insert_with(&mut fresh);
                // A queue holds a message once; two of its entries that share bytes (clones made
                // by hand, not by the fold) keep an id each.
                entry.id = if in_this_queue.insert(id) {
                    id
                } else {
                    fresh()
                };
                in_this_queue.insert(entry.id);
            }
            session.queue.reindex();
        }
        self.messages = FastMap::default();
        self.expiries = FastMap::default();
    }
}

/// Names one message by where its bytes are, not by what they say: clones of one `Message` (the
/// entries of one `Message` record) are equal, two equal messages read from different records
/// are not (and keep an id each, as they had).
#[derive(PartialEq, Eq, Hash)]
struct SharedMessage {
    topic: (usize, usize),
    payload: (usize, usize),
    qos: QoS,
    retain: bool,
}

impl SharedMessage {
    fn of(message: &Message) -> SharedMessage {
        let topic = message.topic.as_bytes();
        SharedMessage {
            topic: (topic.as_ptr() as usize, topic.len()),
            payload: (message.payload.as_ptr() as usize, message.payload.len()),
            qos: message.qos,
            retain: message.retain,
        }
    }
}
