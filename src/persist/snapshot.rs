//! Snapshots: the records that rebuild a [`DurableState`], so that a snapshot file is a header and
//! frames like a journal, read by the same reader and fold.
//!
//! Must not: renumber message ids (a journal written after a snapshot names the ids the state
//! holds; `reshard.rs` renumbers, at recovery), write files.
//!
//! Order: retained updates by topic (each `Retain`, then its `RetainExpiry`), then each session
//! by client id: `SessionOpen`, `SessionUser`, `SessionOffline`, `SessionExpiry`, `Will` and
//! `WillDelay`, `Subscribe`s, `Qos2Received`s, then its queue in order, each entry as `Message`
//! and `MessageExpiry` (only the first time its id appears: a message queued for several sessions
//! is written once), `Enqueue`, `PacketId`, `Released`. Sorted, so one state always gives the same bytes.
//! Retained deletions are written while the state holds them (before [`DurableState::finish`]),
//! so a snapshot taken mid-recovery still beats older sets from other shards.
//!
//! A message no queue holds is not written (the fold's map of every `Message` record would make
//! each snapshot as long as the history). So a shard snapshots between two of its journal batches,
//! never between a `Message` record and the `Enqueue`s written with it: an `Enqueue` replayed over
//! the snapshot without its `Message` is skipped (counted as an unknown message).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use bytes::BytesMut;

use super::codec::{encode, encode_header, EncodeError, FileKind};
use super::record::{MsgId, Record};
use super::state::{DurableState, QueueIter, QueuedMessage, Retained, Session};
use crate::protocol::TopicName;

impl DurableState {
    /// The records that rebuild this state when applied to an empty one (see the module docs).
    pub fn snapshot_records(&self) -> SnapshotRecords<'_> {
        let mut retained: Vec<_> = self.retained.iter().collect();
        retained.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut sessions: Vec<_> = self.sessions.iter().collect();
        sessions.sort_unstable_by(|a, b| a.0.cmp(b.0));
        SnapshotRecords {
            retained: retained.into_iter(),
            sessions: sessions.into_iter(),
            queue: None,
            written: HashSet::default(),
            pending: VecDeque::new(),
        }
    }

    /// Appends a whole snapshot file: the header, then [`snapshot_records`](Self::snapshot_records)
    /// framed. On error, `out` holds what was appended before the record that failed.
    pub fn encode_snapshot(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        encode_header(FileKind::Snapshot, out);
        self.snapshot_records()
            .try_for_each(|record| encode(&record, out))
    }
}

/// The records of a snapshot, made as they are read (a state of a million queued messages is not
/// turned into millions of records at once).
pub struct SnapshotRecords<'a> {
    retained: std::vec::IntoIter<(&'a TopicName, &'a Retained)>,
    sessions: std::vec::IntoIter<(&'a Arc<str>, &'a Session)>,
    /// The session whose queue is being written.
    queue: Option<(&'a Arc<str>, QueueIter<'a>)>,
    /// Message ids written so far.
    written: HashSet<MsgId, foldhash::fast::RandomState>,
    /// Records made and not yet returned (one session's head, or one queue entry's).
    pending: VecDeque<Record>,
}

impl Iterator for SnapshotRecords<'_> {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        loop {
            if let Some(record) = self.pending.pop_front() {
                return Some(record);
            }
            if let Some((topic, retained)) = self.retained.next() {
                if let Some(at_unix_ms) = retained.expires_at_unix_ms {
                    self.pending.push_back(Record::RetainExpiry {
                        topic: topic.clone(),
                        clock: retained.version.clock,
                        shard: retained.version.shard,
                        at_unix_ms,
                    });
                }
                return Some(Record::Retain {
                    topic: topic.clone(),
                    message: retained.message.clone(),
                    clock: retained.version.clock,
                    shard: retained.version.shard,
                });
            }
            if let Some((client_id, entries)) = &mut self.queue {
                if let Some(entry) = entries.next() {
                    let client_id = client_id.clone();
                    self.push_entry(client_id, entry);
                    continue;
                }
                self.queue = None;
            }
            let (client_id, session) = self.sessions.next()?;
            self.push_session_head(client_id, session);
            self.queue = Some((client_id, session.queue.iter()));
        }
    }
}

impl SnapshotRecords<'_> {
    fn push_session_head(&mut self, client_id: &Arc<str>, session: &Session) {
        let client_id = || client_id.clone();
        self.pending.push_back(Record::SessionOpen {
            client_id: client_id(),
        });
        if let Some(username) = &session.username {
            self.pending.push_back(Record::SessionUser {
                client_id: client_id(),
                username: username.clone(),
            });
        }
        if let Some(at_unix_ms) = session.offline_since_unix_ms {
            self.pending.push_back(Record::SessionOffline {
                client_id: client_id(),
                at_unix_ms,
            });
        }
        if let Some(interval_secs) = session.expiry_interval_secs {
            self.pending.push_back(Record::SessionExpiry {
                client_id: client_id(),
                interval_secs,
            });
        }
        if session.will.is_some() {
            self.pending.push_back(Record::Will {
                client_id: client_id(),
                will: session.will.clone(),
            });
            if session.will_delay_secs > 0 {
                self.pending.push_back(Record::WillDelay {
                    client_id: client_id(),
                    delay_secs: session.will_delay_secs,
                });
            }
        }
        for (filter, &options) in &session.subscriptions {
            self.pending.push_back(Record::Subscribe {
                client_id: client_id(),
                filter: filter.clone(),
                options,
            });
        }
        for &packet_id in &session.qos2_received {
            self.pending.push_back(Record::Qos2Received {
                client_id: client_id(),
                packet_id,
            });
        }
    }

    fn push_entry(&mut self, client_id: Arc<str>, entry: &QueuedMessage) {
        let id = entry.id;
        if self.written.insert(id) {
            self.pending.push_back(Record::Message {
                id,
                message: entry.message.clone(),
            });
            if let Some(at_unix_ms) = entry.expires_at_unix_ms {
                self.pending
                    .push_back(Record::MessageExpiry { id, at_unix_ms });
            }
        }
        self.pending.push_back(Record::Enqueue {
            client_id: client_id.clone(),
            id,
            qos: entry.qos,
        });
        if let Some(packet_id) = entry.packet_id {
            self.pending.push_back(Record::PacketId {
                client_id: client_id.clone(),
                id,
                packet_id,
            });
        }
        if entry.released {
            self.pending.push_back(Record::Released { client_id, id });
        }
    }
}
