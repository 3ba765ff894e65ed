//! Persistence in the core: the journal records this shard owes the disk, and the replies that
//! wait until the records they depend on are durable.
//!
//! With `persistence` on, handlers call [`BrokerCore::journal`] for every durable state change of a
//! persistent session or the retained store (`persist::Record`); each record is framed into the
//! journal bytes at once (`persist::codec`: no record is kept, and a live message is not cloned).
//! The runtime takes the bytes once per loop turn ([`BrokerCore::take_journal`], numbered
//! batches), writes them (and syncs them, per its fsync policy), then calls
//! [`BrokerCore::handle_durable`] with the batch number. A reply that
//! promises durability (PUBACK, PUBREC, PUBCOMP, SUBACK, UNSUBACK) goes through the connection's
//! ordered reply queue (`interest.rs`) with a [`DurableWait`]: the local batch holding the records
//! it depends on, and, for a publish also delivered on other shards, the number of each of those
//! deliveries. A shard confirms the deliveries it received to their sender
//! ([`BusMessage::Durable`], "durable up to delivery n": the bus is FIFO per pair) once its own
//! records for them are durable, or at once when they made none.
//!
//! With persistence off (`journal` is `None`) none of this runs: replies are written at once.
//! Nothing here does I/O or reads a clock: the runtime gives the wall-clock anchor
//! ([`BrokerCore::set_wall_clock`]) used for offline stamps and deadlines (`wall_clock.rs`).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use crate::persist::{codec, EncodeError, MsgId, Record};

use super::connection::PendingReply;
use super::{BrokerCore, BusMessage, ConnId, Message, SessionKey};

/// Numbers a delivery message (a batch of QoS 1/2 publishes, or a retained publish) from one shard
/// to another, so that the receiver can confirm it durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryStamp {
    pub from: usize,
    pub n: u64,
}

/// What a reply waits for before it may be written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DurableWait {
    /// The local journal batch that must be durable (0: none).
    pub local: u64,
    /// (shard, delivery number) that shard must have confirmed.
    pub remote: Vec<(usize, u64)>,
}

/// The journal state of one shard (see the module docs).
#[derive(Debug)]
pub(super) struct Journal {
    /// The framed records of the batch being made, in blocks (`persist::codec`).
    bytes: BytesMut,
    /// Where the open block of `bytes` starts (`None`: no block is open).
    block: Option<usize>,
    /// How many records `bytes` holds.
    records: usize,
    /// Number of the batch `records` will be taken as (the first is 1).
    next_batch: u64,
    /// Highest batch the runtime reported durable.
    durable: u64,
    next_msg_id: MsgId,
    /// The id of the message being delivered, once one persistent session stored it.
    pub(super) current_msg: Option<MsgId>,
    /// An `Instant` and the wall-clock milliseconds since the Unix epoch at that instant.
    wall: Option<(Instant, u64)>,
    /// Per shard: deliveries numbered and sent to it, and how far it confirmed them durable.
    sent: Vec<u64>,
    confirmed: Vec<u64>,
    /// Deliveries received: (local batch that must be durable, from, n), in arrival order.
    to_confirm: VecDeque<(u64, usize, u64)>,
    /// Per shard: the highest delivery that can be confirmed at the next `poll_actions`.
    confirm_now: Vec<u64>,
    /// Per shard: the local batch the last delivery received from it waits for (a later one never
    /// waits for less: confirmations are a watermark).
    last_wait: Vec<u64>,
    /// Remote deliveries the publish being routed went out in.
    pub(super) route_waits: Vec<(usize, u64)>,
    /// Connections with a reply waiting for durability.
    waiting: Vec<ConnId>,
    /// Connections whose outbox is held until a batch is durable (see `hold_outbox`).
    held: Vec<ConnId>,
    /// Per incoming QoS 2 id (session, packet id): what its first PUBREC waits for, until that is
    /// durable; a PUBLISH sent again under the id is acknowledged no earlier.
    qos2_waits: HashMap<(SessionKey, u16), DurableWait>,
    /// Client ids whose `SessionDrop` is in a batch not yet durable, with that batch.
    drops: HashMap<Arc<str>, u64>,
}

impl Journal {
    pub(super) fn new(shards: usize) -> Self {
        Journal {
            bytes: BytesMut::new(),
            block: None,
            records: 0,
            next_batch: 1,
            durable: 0,
            next_msg_id: 1,
            current_msg: None,
            wall: None,
            sent: vec![0; shards],
            confirmed: vec![0; shards],
            to_confirm: VecDeque::new(),
            confirm_now: vec![0; shards],
            last_wait: vec![0; shards],
            route_waits: Vec::new(),
            waiting: Vec::new(),
            held: Vec::new(),
            qos2_waits: HashMap::new(),
            drops: HashMap::new(),
        }
    }

    /// Records appended so far in this batch (to tell whether an event made any).
    pub(super) fn mark(&self) -> usize {
        self.records
    }

    /// The local batch an event that started at `mark` must wait for (0 when it made no record).
    pub(super) fn wait_since(&self, mark: usize) -> u64 {
        if self.records > mark {
            self.next_batch
        } else {
            0
        }
    }

    /// Recovery: new messages are numbered after the restored ones.
    pub(super) fn restore_next_msg_id(&mut self, next: MsgId) {
        self.next_msg_id = self.next_msg_id.max(next);
    }

    pub(super) fn new_msg_id(&mut self) -> MsgId {
        let id = self.next_msg_id;
        self.next_msg_id += 1;
        id
    }

    /// The next delivery number to shard `to` (the caller sends it).
    pub(super) fn stamp_for(&mut self, to: usize, me: usize) -> Option<DeliveryStamp> {
        let sent = self.sent.get_mut(to)?;
        *sent += 1;
        Some(DeliveryStamp { from: me, n: *sent })
    }

    /// The number the delivery now being filled for `to` will carry.
    pub(super) fn pending_stamp(&self, to: usize) -> u64 {
        self.sent.get(to).map_or(0, |sent| sent + 1)
    }

    fn forget_satisfied_qos2_waits(&mut self) {
        let mut waits = std::mem::take(&mut self.qos2_waits);
        waits.retain(|_, wait| !self.satisfied(wait));
        self.qos2_waits = waits;
    }

    fn satisfied(&self, wait: &DurableWait) -> bool {
        wait.local <= self.durable
            && wait
                .remote
                .iter()
                .all(|&(shard, n)| self.confirmed.get(shard).is_some_and(|&c| c >= n))
    }

    /// Frames one record into the batch. A record the format cannot hold (over its limits: the
    /// core never makes one, the broker's packet limits are smaller) is left out and logged.
    pub(super) fn append(&mut self, encode: impl FnOnce(&mut BytesMut) -> Result<(), EncodeError>) {
        let block = match self.block {
            Some(start) => start,
            None => {
                let start = codec::begin_block(&mut self.bytes);
                self.block = Some(start);
                start
            }
        };
        match encode(&mut self.bytes) {
            Ok(()) => self.records += 1,
            Err(error) => log::error!("journal record not written: {error}"),
        }
        if self.bytes.len() - block >= codec::BLOCK_TARGET {
            self.close_block();
        }
    }

    /// Closes the open block, if any (its length and CRC are written).
    fn close_block(&mut self) {
        if let Some(start) = self.block.take() {
            codec::end_block(&mut self.bytes, start);
        }
    }

    pub(super) fn unix_ms(&self, now: Option<Instant>) -> u64 {
        match (self.wall, now) {
            (Some((at, ms)), Some(now)) => {
                ms + u64::try_from(now.saturating_duration_since(at).as_millis()).unwrap_or(0)
            }
            (Some((_, ms)), None) => ms,
            _ => 0,
        }
    }
}

impl BrokerCore {
    /// Whether persistence is on for this shard.
    pub fn persistence(&self) -> bool {
        self.journal.is_some()
    }

    /// Tells the core which wall-clock time (milliseconds since the Unix epoch) `now` is: offline
    /// stamps in the journal are wall-clock times, so that session expiry counts across restarts.
    pub fn set_wall_clock(&mut self, now: Instant, unix_ms: u64) {
        if let Some(journal) = self.journal.as_deref_mut() {
            journal.wall = Some((now, unix_ms));
        }
    }

    /// Whether records wait to be taken.
    pub fn journal_pending(&self) -> bool {
        self.journal
            .as_deref()
            .is_some_and(|journal| journal.records > 0)
    }

    /// The records made since the last call, framed (`persist::codec`: append them to a journal
    /// file as they are), as batch `n` (numbered from 1, one more per call that returns records).
    /// `None` when there are none.
    pub fn take_journal(&mut self) -> Option<(u64, Bytes)> {
        let journal = self.journal.as_deref_mut()?;
        if journal.records == 0 {
            return None;
        }
        let batch = journal.next_batch;
        journal.next_batch += 1;
        journal.records = 0;
        journal.close_block();
        let bytes = journal.bytes.split().freeze();
        // The next batch is likely as big: one allocation now instead of a doubling copy per
        // growth step while it fills.
        journal.bytes.reserve(bytes.len());
        Some((batch, bytes))
    }

    /// Journal batches up to `batch` are durable (written, and synced as the policy asks): the
    /// replies that waited for them go out, and the deliveries of other shards whose records they
    /// held are confirmed to their senders.
    pub fn handle_durable(&mut self, batch: u64) {
        let Some(journal) = self.journal.as_deref_mut() else {
            return;
        };
        if batch <= journal.durable {
            return;
        }
        journal.durable = batch;
        journal.forget_satisfied_qos2_waits();
        journal.drops.retain(|_, drop| *drop > batch);
        let mut confirm: Vec<(usize, u64)> = Vec::new();
        while let Some(&(wait, from, n)) = journal.to_confirm.front() {
            if wait > journal.durable {
                break;
            }
            journal.to_confirm.pop_front();
            match confirm.iter_mut().find(|(shard, _)| *shard == from) {
                Some(entry) => entry.1 = entry.1.max(n),
                None => confirm.push((from, n)),
            }
        }
        for (to, upto) in confirm {
            let from = self.shard;
            self.send_bus(to, BusMessage::Durable { from, upto });
        }
        self.flush_durable_waits();
        // Outboxes held for this batch or an earlier one go now; those held for a later batch
        // (records made while this one was being written) stay held.
        let Some(journal) = self.journal.as_deref_mut() else {
            return;
        };
        let held = std::mem::take(&mut journal.held);
        let (due, later): (Vec<ConnId>, Vec<ConnId>) = held.into_iter().partition(|conn| {
            self.connections
                .get(conn)
                .is_none_or(|c| c.hold_until <= batch)
        });
        if let Some(journal) = self.journal.as_deref_mut() {
            journal.held = later;
        }
        for conn in due {
            self.request_flush(conn);
        }
    }

    /// Holds `conn`'s outbox until this turn's records are durable: it now holds a QoS 2 PUBLISH
    /// whose packet id is journaled in them. Sent before that, and the broker restarted, the
    /// message would go out again under another id: a second delivery.
    pub(super) fn hold_outbox(&mut self, conn: ConnId) {
        let Some(journal) = self.journal.as_deref_mut() else {
            return;
        };
        let batch = journal.next_batch;
        if let Some(connection) = self.connections.get_mut(&conn) {
            connection.hold_until = batch;
        }
        if !journal.held.contains(&conn) {
            journal.held.push(conn);
        }
    }

    /// Holds `conn`'s outbox until every record made so far is durable: this turn's, or the last
    /// batch taken when this turn has none (a batch with no records is never taken).
    pub(super) fn hold_outbox_until_durable(&mut self, conn: ConnId) {
        let Some(journal) = self.journal.as_deref_mut() else {
            return;
        };
        let batch = if journal.records == 0 {
            journal.next_batch - 1
        } else {
            journal.next_batch
        };
        if batch <= journal.durable {
            return;
        }
        if let Some(connection) = self.connections.get_mut(&conn) {
            connection.hold_until = connection.hold_until.max(batch);
        }
        if !journal.held.contains(&conn) {
            journal.held.push(conn);
        }
    }

    /// `client_id`'s session was just dropped (its `SessionDrop` journaled).
    pub(super) fn session_dropped(&mut self, client_id: Arc<str>) {
        if let Some(journal) = self.journal.as_deref_mut() {
            journal.drops.insert(client_id, journal.next_batch);
        }
    }

    /// Whether a session of `client_id` was dropped in a batch not yet durable: until it is, a
    /// crash would bring that session back, so no CONNACK may promise the client otherwise.
    pub(super) fn session_drop_pending(&self, client_id: &str) -> bool {
        self.journal
            .as_deref()
            .is_some_and(|journal| journal.drops.contains_key(client_id))
    }

    /// Whether a held outbox may go now (its batch is durable: the hold ends).
    pub(super) fn held_outbox_released(&mut self, conn: ConnId, batch: u64) -> bool {
        let durable = self.journal.as_deref().map_or(u64::MAX, |j| j.durable);
        if batch > durable {
            return false;
        }
        if let Some(connection) = self.connections.get_mut(&conn) {
            connection.hold_until = 0;
        }
        true
    }

    /// Shard `from` confirmed its records for our deliveries up to `upto` durable.
    pub(super) fn durable_confirmed(&mut self, from: usize, upto: u64) {
        let Some(journal) = self.journal.as_deref_mut() else {
            return;
        };
        if let Some(confirmed) = journal.confirmed.get_mut(from) {
            *confirmed = (*confirmed).max(upto);
        }
        journal.forget_satisfied_qos2_waits();
        self.flush_durable_waits();
    }

    /// A numbered delivery from another shard was handled; `mark` is the journal length before it.
    pub(super) fn delivery_received(&mut self, stamp: DeliveryStamp, mark: usize) {
        let Some(journal) = self.journal.as_deref_mut() else {
            return;
        };
        let own = journal.wait_since(mark);
        let Some(last) = journal.last_wait.get_mut(stamp.from) else {
            return;
        };
        let wait = own.max(*last);
        *last = wait;
        if wait <= journal.durable {
            if let Some(now) = journal.confirm_now.get_mut(stamp.from) {
                *now = (*now).max(stamp.n);
            }
        } else {
            journal.to_confirm.push_back((wait, stamp.from, stamp.n));
        }
    }

    /// Confirms the deliveries that needed no durable record (called by `poll_actions`).
    pub(super) fn send_durable_confirmations(&mut self) {
        let Some(journal) = self.journal.as_deref_mut() else {
            return;
        };
        let ready: Vec<(usize, u64)> = journal
            .confirm_now
            .iter_mut()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(to, n)| (to, std::mem::take(n)))
            .collect();
        for (to, upto) in ready {
            let from = self.shard;
            self.send_bus(to, BusMessage::Durable { from, upto });
        }
    }

    /// Appends a record to this turn's batch (nothing when persistence is off).
    pub(super) fn journal(&mut self, record: impl FnOnce() -> Record) {
        if let Some(journal) = self.journal.as_deref_mut() {
            let record = record();
            journal.append(|out| codec::encode_frame(&record, out));
        }
    }

    /// Journals that the persistent session `key` is done with message `id` (acknowledged).
    pub(super) fn journal_done(&mut self, key: SessionKey, id: MsgId) {
        let (Some(journal), Some(session)) = (self.journal.as_deref_mut(), self.sessions.get(key))
        else {
            return;
        };
        if !session.clean {
            journal.append(|out| codec::encode_done(&session.client_id, id, out));
        }
    }

    /// The record position now (0 when persistence is off), for [`Self::durable_wait`].
    pub(super) fn journal_mark(&mut self) -> usize {
        match self.journal.as_deref_mut() {
            Some(journal) => {
                journal.route_waits.clear();
                journal.mark()
            }
            None => 0,
        }
    }

    /// What a reply to the event that started at `mark` waits for: the records it made, and the
    /// other shards' deliveries of the publish it routed. `None` when persistence is off.
    pub(super) fn durable_wait(&mut self, mark: usize) -> Option<DurableWait> {
        let journal = self.journal.as_deref_mut()?;
        Some(DurableWait {
            local: journal.wait_since(mark),
            remote: std::mem::take(&mut journal.route_waits),
        })
    }

    /// What the PUBREC of an incoming QoS 2 PUBLISH (that started at `mark`) waits for: what its
    /// routing journaled, here and on the shards it went to; for a PUBLISH sent again under an id
    /// still held (not routed again), also what the first one's PUBREC waited for, as it promises
    /// the same. `None` when persistence is off.
    pub(super) fn qos2_ack_wait(
        &mut self,
        key: SessionKey,
        packet_id: u16,
        mark: usize,
        first_time: bool,
    ) -> Option<DurableWait> {
        let mut wait = self.durable_wait(mark)?;
        let journal = self.journal.as_deref_mut()?;
        if first_time {
            if !journal.satisfied(&wait) {
                journal.qos2_waits.insert((key, packet_id), wait.clone());
            }
        } else if let Some(first) = journal.qos2_waits.get(&(key, packet_id)) {
            wait.local = wait.local.max(first.local);
            wait.remote.extend(first.remote.iter().copied());
        }
        Some(wait)
    }

    /// Writes `reply` once the records of the event that started at `mark` are durable (at once
    /// when persistence is off), in order with the connection's other replies.
    pub(super) fn reply_when_durable(&mut self, conn: ConnId, mark: usize, reply: PendingReply) {
        let wait = self.durable_wait(mark);
        // Nothing to wait for and nothing queued before it (a publish no persistent session
        // took): written now, without the reply queue (most acknowledgements of a broker whose
        // subscribers are clean sessions).
        let free = reply.token.is_none() && reply.retained_for.is_empty();
        if free && self.durable_done(wait.as_ref()) {
            let queued = self
                .connections
                .get(&conn)
                .is_some_and(|c| c.has_pending_replies());
            if !queued {
                self.write_reply(conn, &reply.reply);
                return;
            }
        }
        self.reply_in_order(conn, PendingReply { wait, ..reply });
    }

    /// Whether a reply's durability wait is over.
    pub(super) fn durable_done(&self, wait: Option<&DurableWait>) -> bool {
        match (wait, self.journal.as_deref()) {
            (Some(wait), Some(journal)) => journal.satisfied(wait),
            _ => true,
        }
    }

    /// Notes a connection whose reply queue waits for durability.
    pub(super) fn waits_durable(&mut self, conn: ConnId) {
        let (Some(journal), Some(connection)) =
            (self.journal.as_deref_mut(), self.connections.get_mut(&conn))
        else {
            return;
        };
        if !connection.waits_durable {
            connection.waits_durable = true;
            journal.waiting.push(conn);
        }
    }

    fn flush_durable_waits(&mut self) {
        let Some(journal) = self.journal.as_deref_mut() else {
            return;
        };
        let waiting = std::mem::take(&mut journal.waiting);
        for conn in waiting {
            if let Some(connection) = self.connections.get_mut(&conn) {
                connection.waits_durable = false;
            }
            self.flush_replies(conn);
        }
    }

    /// The journal id of the message being delivered, stored (one `Message` record per shard) the
    /// first time a persistent session keeps it at QoS 1/2. 0 when it is not journaled. A
    /// retained copy sent after a SUBACK (`retained_copy`) is stored for its one session, with
    /// its retain flag.
    pub(super) fn stored_message_id(&mut self, message: &Message, retained_copy: bool) -> MsgId {
        let Some(journal) = self.journal.as_deref_mut() else {
            return 0;
        };
        if retained_copy {
            let id = journal.new_msg_id();
            let record = Record::Message {
                id,
                message: Message {
                    retain: true,
                    ..message.clone()
                },
            };
            journal.append(|out| codec::encode_frame(&record, out));
            self.journal_message_expiry(id, message);
            return id;
        }
        if let Some(id) = journal.current_msg {
            return id;
        }
        let id = journal.new_msg_id();
        journal.current_msg = Some(id);
        journal.append(|out| codec::encode_stored_message(id, message, out));
        self.journal_message_expiry(id, message);
        id
    }

    /// After the `Message` record of `message` (stored as `id`): when it expires, if it has a
    /// Message Expiry Interval (MQTT 5; an MQTT 3 message has no properties and costs nothing).
    fn journal_message_expiry(&mut self, id: MsgId, message: &Message) {
        if let Some(at_unix_ms) = self.unix_deadline(message) {
            self.journal(|| Record::MessageExpiry { id, at_unix_ms });
        }
    }

    /// The client id of a persistent session, when persistence is on (a cheap `Arc` clone):
    /// whose changes are journaled.
    pub(super) fn persistent_client(&self, key: super::SessionKey) -> Option<Arc<str>> {
        self.journal.as_ref()?;
        self.sessions
            .get(key)
            .filter(|s| !s.clean)
            .map(|s| s.client_id.clone())
    }
}

#[cfg(test)]
mod tests;
