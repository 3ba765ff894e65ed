//! The directory entries this node owns, kept in step with their sessions: each change of a
//! persistent session's profile (`BusMessage::SessionProfile`: a SUBSCRIBE, an UNSUBSCRIBE, a
//! CONNECT, the session's end) is written into its client id's entry, over the entry this node
//! wrote last (a compare-and-set: a node that lost the id to a newer claim writes nothing).
//!
//! Not waited for: a SUBACK does not wait for the entry (its interest round trip runs at the
//! same time, and a SUBSCRIBE to a filter the cluster knows already waits for nothing), so a
//! node killed within that write's round trip (~1 ms) leaves the entry without the change.
//! One write per client id at a time; changes made meanwhile are coalesced into the next one;
//! an unchanged profile is not written again. Methods of the link (`mod.rs`), and the reading
//! and compare-and-set writing of an entry that claims (`sessions.rs`) and checks of recovered
//! sessions (`late.rs`) use too.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use async_nats::jetstream::stream::{LastRawMessageErrorKind, Stream};
use async_nats::jetstream::Context;
use async_nats::HeaderMap;
use bytes::Bytes;

use super::super::directory::{self, Entry, Profile, EXPECTED_LAST_SEQUENCE};
use super::{Done, Link};

/// Failed writes of one entry in a row before this node stops trying (until the next change).
const PROFILE_TRIES: u32 = 5;

/// A client id this node owns in the directory.
pub(super) struct Owned {
    /// The sequence of the entry this node wrote last: its fencing token.
    pub seq: u64,
    /// A digest of the profile in that entry.
    profile: u64,
    /// A write of the entry is on its way.
    writing: bool,
    /// The profile to write when that write ends, or again after a failed one.
    next: Option<Profile>,
    failures: u32,
}

impl Owned {
    pub(super) fn new(seq: u64, profile: &Profile) -> Self {
        Owned {
            seq,
            profile: digest(profile),
            writing: false,
            next: None,
            failures: 0,
        }
    }

    /// The entry now holds `profile`.
    pub(super) fn written(&mut self, profile: &Profile) {
        self.profile = digest(profile);
    }
}

fn digest(profile: &Profile) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    match profile {
        Profile::None => 0u8.hash(&mut hasher),
        Profile::Records(records) => records.hash(&mut hasher),
        Profile::TooLarge => 2u8.hash(&mut hasher),
    }
    hasher.finish()
}

impl<M: Send + 'static> Link<M> {
    /// A shard says what `client_id`'s session now is (`None`: no persistent session).
    pub(super) fn profile_changed(&mut self, client_id: Arc<str>, records: Option<Bytes>) {
        let profile = Profile::of(records);
        let Some(owned) = self.owned.get_mut(&client_id) else {
            // Not ours (given up, or never registered): another node's entry stays.
            return;
        };
        owned.failures = 0;
        if owned.writing {
            owned.next = Some(profile);
        } else if digest(&profile) != owned.profile {
            self.write_profile(client_id, profile);
        }
    }

    fn write_profile(&mut self, client_id: Arc<str>, profile: Profile) {
        let (Some(nats), Some(owned)) = (&self.nats, self.owned.get_mut(&client_id)) else {
            return;
        };
        if !self.connected {
            // Written when NATS is back (`retry_profiles`).
            owned.next = Some(profile);
            return;
        }
        owned.writing = true;
        let js = nats.js.clone();
        let subject = self.names.session(&client_id);
        let read = owned.seq;
        let entry = Entry {
            node: self.config.node.clone(),
            boot: self.boot,
            profile,
        };
        let done = self.done_tx.clone();
        tokio::spawn(async move {
            let result = publish_entry(&js, subject, read, &entry).await;
            let profile = entry.profile;
            let _ = done.send(Done::ProfileWritten {
                client_id,
                profile,
                result,
            });
        });
    }

    /// A write of `client_id`'s entry ended.
    pub(super) fn profile_written(
        &mut self,
        client_id: Arc<str>,
        profile: Profile,
        result: Result<u64, String>,
    ) {
        let Some(owned) = self.owned.get_mut(&client_id) else {
            return;
        };
        owned.writing = false;
        match result {
            Ok(seq) => {
                owned.seq = owned.seq.max(seq);
                owned.written(&profile);
                owned.failures = 0;
            }
            Err(error) => {
                owned.failures += 1;
                log::debug!("cluster: the directory entry of '{client_id}': {error}");
                if owned.failures >= PROFILE_TRIES {
                    log::warn!(
                        "cluster: cannot write the directory entry of '{client_id}': {error}"
                    );
                    owned.next = None;
                } else if owned.next.is_none() {
                    // Tried again later (`retry_profiles`), unless a newer one waits.
                    owned.next = Some(profile);
                }
                return;
            }
        }
        if let Some(next) = owned.next.take() {
            self.profile_changed_again(client_id, next);
        }
    }

    fn profile_changed_again(&mut self, client_id: Arc<str>, profile: Profile) {
        let unchanged = (self.owned.get(&client_id)).is_some_and(|o| digest(&profile) == o.profile);
        if !unchanged {
            self.write_profile(client_id, profile);
        }
    }

    /// Writes what failed or waited for NATS (at the liveness cadence).
    pub(super) fn retry_profiles(&mut self) {
        let waiting: Vec<(Arc<str>, Profile)> = (self.owned.iter_mut())
            .filter(|(_, o)| !o.writing)
            .filter_map(|(id, o)| Some((id.clone(), o.next.take()?)))
            .collect();
        for (client_id, profile) in waiting {
            self.profile_changed_again(client_id, profile);
        }
    }
}

/// The last entry of `subject` in the directory: its sequence (0: none) and the entry (`None`:
/// none, or one that does not read).
pub(super) async fn read_entry(
    sessions: &Stream,
    subject: &str,
) -> Result<(u64, Option<Entry>), String> {
    match sessions.get_last_raw_message_by_subject(subject).await {
        Ok(message) => Ok((
            message.sequence,
            directory::decode_entry(&message.payload).ok(),
        )),
        Err(error) if matches!(error.kind(), LastRawMessageErrorKind::NoMessageFound) => {
            Ok((0, None))
        }
        Err(error) => Err(format!("reading its entry: {error}")),
    }
}

/// Writes `entry` to `subject` if the entry there is still the one of sequence `read` (a
/// compare-and-set): the new sequence.
pub(super) async fn publish_entry(
    js: &Context,
    subject: String,
    read: u64,
    entry: &Entry,
) -> Result<u64, String> {
    let mut headers = HeaderMap::new();
    headers.insert(EXPECTED_LAST_SEQUENCE, read.to_string().as_str());
    let payload = directory::encode_entry(entry);
    match js.publish_with_headers(subject, headers, payload).await {
        Ok(ack) => ack.await.map(|ack| ack.sequence).map_err(|e| e.to_string()),
        Err(error) => Err(error.to_string()),
    }
}
