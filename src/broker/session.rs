//! One client's MQTT session: what survives a reconnect when clean session is 0 [MQTT-3.1.2-4].
//!
//! Holds the subscriptions, the outgoing QoS 1/2 window (`max_inflight`), the queue behind it
//! (`max_queued_messages`, `max_queued_bytes`, and the broker-wide `memory_limit` through a shared
//! [`MemoryBudget`]), the packet identifiers of incoming QoS 2 messages awaiting PUBREL, the
//! will, and what session expiry counts with (since when the client is away, and for how long the
//! session may outlive it; the core's `expiry.rs` acts on them). It decides what to send and
//! when; it never encodes bytes, touches a socket or another session.
//!
//! Retained messages sent after a SUBACK go through the queue too, at any QoS, but outside its
//! limits: their payloads are shared with the retained store (they cost no new payload memory),
//! and a subscription to `#` over 100,000 retained messages must get all of them. They leave the
//! queue as the window (QoS 1/2) and the room in the connection's outbox (QoS 0) allow, so they are
//! paced by the subscriber, not dropped.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::persist::MsgId;
use crate::protocol::{LastWill, PubRel, PublishRef, QoS, TopicFilter};

use super::copy_props::{props_of, CopyProps, KeptProps};
use super::memory::MemoryBudget;
use super::{ConnId, Message, SubOptions};

/// The limits of one session's queue (see the module docs).
#[derive(Debug, Clone)]
pub struct QueueLimits {
    pub max_messages: usize,
    /// Payload bytes; `None` for no byte limit.
    pub max_bytes: Option<usize>,
    pub budget: Arc<MemoryBudget>,
}

impl QueueLimits {
    /// A message limit only, with a budget that just counts (tests).
    pub fn messages(max_messages: usize) -> QueueLimits {
        QueueLimits {
            max_messages,
            max_bytes: None,
            budget: MemoryBudget::unlimited(),
        }
    }
}

/// Where an outgoing QoS 1/2 message stands [MQTT-4.3.2, 4.3.3].
#[allow(clippy::enum_variant_names)] // named after the packet each state awaits, as the spec does
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InflightState {
    /// QoS 1 PUBLISH sent, PUBACK not yet received.
    AwaitPubAck,
    /// QoS 2 PUBLISH sent, PUBREC not yet received.
    AwaitPubRec,
    /// PUBREL sent, PUBCOMP not yet received.
    AwaitPubComp,
}

#[derive(Debug, Clone)]
struct Outgoing {
    message: Message,
    qos: QoS,
    retain: bool,
    /// Its name in the shard's journal; 0 for a message that is not journaled (clean session,
    /// QoS 0, retained after SUBACK, or persistence off).
    id: MsgId,
    /// When this copy expires and the subscription identifiers it goes with (MQTT 5; `None`:
    /// neither, every MQTT 3 copy).
    props: Option<Box<KeptProps>>,
}

#[derive(Debug)]
struct Inflight {
    packet_id: u16,
    out: Outgoing,
    state: InflightState,
}

/// What happened to a message offered to the session.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Write the offered message now, at the offered QoS, with this packet identifier (QoS 1/2;
    /// the session keeps the message until it is acknowledged). The caller encodes it from the
    /// message it offered: no second copy of the topic and payload handles is made for that.
    Send { packet_id: Option<u16> },
    /// Kept in the session's queue until the window has room or the client is back.
    Queued,
    /// Not kept: the reason is counted by the caller.
    Dropped(DropReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The session's queue already holds `max_queued_messages`.
    QueueFull,
    /// The session's queue would hold more than `max_queued_bytes` of payload.
    QueueBytes,
    /// The broker-wide `memory_limit` is reached.
    MemoryLimit,
    /// A QoS 0 message for a client that is offline is not stored.
    OfflineQoS0,
}

/// An acknowledgement that matched no message in flight.
#[derive(Debug, PartialEq, Eq)]
pub struct UnknownPacketId(pub u16);

#[derive(Debug)]
pub struct Session {
    pub client_id: Arc<str>,
    /// The user name of the CONNECT that last took the session (what topic checks and event
    /// plugins see; `None`: anonymous). Kept while the client is offline: a `receive-acl` check
    /// on a message queued for it needs it.
    pub username: Option<Arc<str>>,
    /// Whether `username` is known: false only for a session recovered from a journal written
    /// before user names were journaled (`SessionUser`), until its client connects. Deliveries
    /// checked by a `receive-acl` are refused meanwhile: a check with a guessed user could leak.
    pub user_known: bool,
    /// Clean session flag of the connection that owns the session now.
    pub clean: bool,
    /// The live connection, if the client is online.
    pub conn: Option<ConnId>,
    /// A B-tree rather than a hash map: 24 bytes inline instead of 48 (every session has one).
    pub subscriptions: BTreeMap<TopicFilter, SubOptions>,
    /// Boxed: most clients have none, and every session would carry its 72 bytes inline.
    pub will: Option<Box<LastWill>>,
    /// How long the session outlives its client once offline; `None`: for ever. Every CONNECT sets
    /// it from the broker's `session_expiry_interval` (MQTT 5's Session Expiry Interval will set
    /// it per session). Change it only while the client is online: the core files an offline
    /// session under the deadline it has when the client leaves (`expiry.rs`).
    pub expiry_interval: Option<Duration>,
    /// Whether an MQTT 5 CONNECT took the session last: its `expiry_interval` is the client's
    /// Session Expiry Interval, journaled and recovered as it is (an MQTT 3 session's is the
    /// broker's setting, taken again at recovery).
    pub v5: bool,
    /// Since when the client is away (persistent sessions only): set by the core when the
    /// connection closes, cleared when a CONNECT resumes the session. Set it on recovery with
    /// `BrokerCore::set_offline_since`, which also files the session for expiry.
    offline_since: Option<Instant>,
    /// Messages in flight and queued, and QoS 2 ids received: `None` for a session that has had
    /// none since the last tick, which is most sessions most of the time (inline, they were 112
    /// bytes of every idle connection).
    flow: Option<Box<Flow>>,
    next_packet_id: u16,
    max_inflight: u16,
    /// The same for every session of a shard: shared, not copied into each.
    limits: Arc<QueueLimits>,
}

/// The part of a session that exists while messages flow; see [`Session::flow`].
#[derive(Debug, Default)]
struct Flow {
    inflight: VecDeque<Inflight>,
    queue: VecDeque<Outgoing>,
    /// Payload bytes of the queued messages that count against the limits (not retained ones).
    queued_bytes: usize,
    /// Queued retained messages (outside the limits).
    queued_retained: usize,
    /// Queued QoS 0 messages (retained or behind retained ones): while there are any, new QoS 0
    /// messages queue behind them instead of overtaking them.
    queued_qos0: usize,
    /// QoS 2 packet ids received and not yet released.
    incoming_qos2: BTreeSet<u16>,
}

impl Flow {
    fn is_empty(&self) -> bool {
        self.inflight.is_empty() && self.queue.is_empty() && self.incoming_qos2.is_empty()
    }
}

/// What a session without a [`Flow`] reads.
static NO_FLOW: Flow = Flow {
    inflight: VecDeque::new(),
    queue: VecDeque::new(),
    queued_bytes: 0,
    queued_retained: 0,
    queued_qos0: 0,
    incoming_qos2: BTreeSet::new(),
};

impl Drop for Session {
    fn drop(&mut self) {
        self.limits.budget.sub(self.flow().queued_bytes);
    }
}

impl Session {
    pub fn new(
        client_id: Arc<str>,
        clean: bool,
        max_inflight: u16,
        limits: Arc<QueueLimits>,
    ) -> Self {
        Session {
            client_id,
            username: None,
            user_known: false,
            clean,
            conn: None,
            subscriptions: BTreeMap::new(),
            will: None,
            expiry_interval: None,
            v5: false,
            offline_since: None,
            flow: None,
            next_packet_id: 1,
            max_inflight: max_inflight.max(1),
            limits,
        }
    }

    /// The window for a connection: `max_inflight`, or less when an MQTT 5 client's Receive
    /// Maximum is lower [MQTT-3.3.4-9]. Set at every CONNECT: a resumed session takes its new
    /// client's value (PUBLISHes already unacknowledged past it are resent; no new one is sent
    /// until the window has room).
    pub fn set_window(&mut self, max_inflight: u16, receive_maximum: Option<u16>) {
        let window = receive_maximum.map_or(max_inflight, |r| r.min(max_inflight));
        self.max_inflight = window.max(1);
    }

    pub fn is_online(&self) -> bool {
        self.conn.is_some()
    }

    /// New queue limits (a configuration reload): what is queued stays; the next message is
    /// checked against them. Both limits count against the same budget.
    pub fn set_limits(&mut self, limits: Arc<QueueLimits>) {
        self.limits = limits;
    }

    /// The expiry interval as the journal holds it ([`crate::persist::Record::SessionExpiry`]):
    /// whole seconds, `None` for never.
    pub fn expiry_secs(&self) -> Option<u64> {
        self.expiry_interval.map(|d| d.as_secs())
    }

    /// Since when the client is away, for a persistent session whose client left.
    pub fn offline_since(&self) -> Option<Instant> {
        self.offline_since
    }

    /// When the session expires: `None` while its client is online, or when it never expires
    /// (no interval, or one too long to add to an `Instant`).
    pub fn expires_at(&self) -> Option<Instant> {
        self.offline_since?.checked_add(self.expiry_interval?)
    }

    /// Records when the client went away (`None`: it is back). The core calls it through
    /// `expiry.rs`, which keeps its index of offline sessions in step.
    pub(super) fn set_offline_since(&mut self, since: Option<Instant>) {
        self.offline_since = since;
    }

    fn flow(&self) -> &Flow {
        self.flow.as_deref().unwrap_or(&NO_FLOW)
    }

    fn flow_mut(&mut self) -> &mut Flow {
        self.flow.get_or_insert_with(Box::default)
    }

    /// Gives the flow's box back if nothing is in flight, queued or awaiting PUBREL. Called by the
    /// core's periodic tick, not on every acknowledgement: a busy session empties its flow between
    /// bursts, and freeing and allocating the box each time cost ~5 % at QoS 2 (A/B).
    pub fn release_empty_flow(&mut self) {
        if self.flow.as_deref().is_some_and(Flow::is_empty) {
            self.flow = None;
        }
    }

    pub fn inflight_len(&self) -> usize {
        self.flow().inflight.len()
    }

    /// QoS 2 messages received from the client and not yet released by its PUBREL.
    pub fn incoming_qos2_len(&self) -> usize {
        self.flow().incoming_qos2.len()
    }

    pub fn queued_len(&self) -> usize {
        self.flow().queue.len()
    }

    /// Whether a live QoS 0 message goes out at once, as [`deliver`](Self::deliver) would send it
    /// (online, and no queued QoS 0 or retained message it must not overtake).
    pub fn sends_qos0_at_once(&self) -> bool {
        let flow = self.flow();
        self.is_online() && flow.queued_retained == 0 && flow.queued_qos0 == 0
    }

    /// Retained messages queued after a SUBACK (outside the limits).
    pub fn queued_retained(&self) -> usize {
        self.flow().queued_retained
    }

    /// Payload bytes queued that count against the limits.
    pub fn queued_bytes(&self) -> usize {
        self.flow().queued_bytes
    }

    /// Offers a message at the delivery QoS already reduced to the subscription's maximum, within
    /// the queue's limits. See [`deliver_within`](Self::deliver_within).
    pub fn deliver<'m>(
        &mut self,
        message: impl Into<Cow<'m, Message>>,
        qos: QoS,
        retain: bool,
    ) -> Delivery {
        self.deliver_within(message, qos, retain, 0, 1, CopyProps::default())
    }

    /// Offers a message at the delivery QoS already reduced to the subscription's maximum; a
    /// message that must wait is queued within `factor` times the queue's limits (more than 1 for
    /// a subscriber that is behind and holds publishers back: `flow_control.rs`). `id` is the
    /// message's name in the shard's journal (0: not journaled). `props` go with the copy (kept
    /// with it when it waits).
    ///
    /// The message is borrowed (`&Message`: the session clones its handles when it keeps it) or
    /// given (`Cow::Owned`: kept without a clone, which for the last or only subscriber of a
    /// message saves two atomic increments and two decrements). A QoS 0 message sent at once is
    /// not kept: whoever offered it encodes it from their own copy.
    pub fn deliver_within<'m>(
        &mut self,
        message: impl Into<Cow<'m, Message>>,
        qos: QoS,
        retain: bool,
        id: MsgId,
        factor: usize,
        props: CopyProps<'_>,
    ) -> Delivery {
        let message = message.into();
        let payload_len = message.payload.len();
        // The session's own handles to the message, made only when it keeps the message.
        let keep = move || Outgoing {
            message: message.into_owned(),
            qos,
            retain,
            id,
            props: props.kept(),
        };
        if retain {
            // Retained after SUBACK: queued outside the limits, sent by `fill_window`.
            let flow = self.flow_mut();
            flow.queued_retained += 1;
            flow.queued_qos0 += usize::from(qos == QoS::AtMostOnce);
            flow.queue.push_back(keep());
            return Delivery::Queued;
        }
        if qos == QoS::AtMostOnce {
            if !self.is_online() {
                return Delivery::Dropped(DropReason::OfflineQoS0);
            }
            if self.sends_qos0_at_once() {
                return Delivery::Send { packet_id: None };
            }
            // Behind retained messages still queued: a newer message must not overtake them.
        } else if self.is_online()
            && self.flow().queue.is_empty()
            && self.flow().inflight.len() < usize::from(self.max_inflight)
        {
            let packet_id = self.start_inflight(keep());
            return Delivery::Send {
                packet_id: Some(packet_id),
            };
        }
        let flow = self.flow();
        if flow.queue.len() - flow.queued_retained >= self.limits.max_messages * factor {
            return Delivery::Dropped(DropReason::QueueFull);
        }
        let bytes = payload_len;
        if self
            .limits
            .max_bytes
            .is_some_and(|max| flow.queued_bytes + bytes > max * factor)
        {
            return Delivery::Dropped(DropReason::QueueBytes);
        }
        if !self.limits.budget.fits(bytes) {
            return Delivery::Dropped(DropReason::MemoryLimit);
        }
        self.limits.budget.add(bytes);
        let flow = self.flow_mut();
        flow.queued_bytes += bytes;
        flow.queued_qos0 += usize::from(qos == QoS::AtMostOnce);
        flow.queue.push_back(keep());
        Delivery::Queued
    }

    /// Takes the queue's head, releasing what it counted.
    fn pop_queued(&mut self) -> Option<Outgoing> {
        let flow = self.flow.as_deref_mut()?;
        let out = flow.queue.pop_front()?;
        flow.queued_qos0 -= usize::from(out.qos == QoS::AtMostOnce);
        if out.retain {
            flow.queued_retained -= 1;
        } else {
            let bytes = out.message.payload.len();
            flow.queued_bytes -= bytes;
            self.limits.budget.sub(bytes);
        }
        Some(out)
    }

    /// Puts `out` in the window under a new packet identifier, which it returns.
    fn start_inflight(&mut self, out: Outgoing) -> u16 {
        let packet_id = self.allocate_packet_id();
        let state = if out.qos == QoS::AtLeastOnce {
            InflightState::AwaitPubAck
        } else {
            InflightState::AwaitPubRec
        };
        self.flow_mut().inflight.push_back(Inflight {
            packet_id,
            out,
            state,
        });
        packet_id
    }

    /// The PUBLISH of the message most recently put in flight, with what its copy carries, for
    /// the caller of [`deliver`](Self::deliver) to encode after a
    /// `Delivery::Send { packet_id: Some(_) }`.
    pub fn newest_inflight(&self) -> Option<(PublishRef<'_>, CopyProps<'_>)> {
        let m = self.flow().inflight.back()?;
        Some((m.out.publish(Some(m.packet_id), false), m.out.props()))
    }

    /// Next free non-zero packet identifier not used by a message in flight.
    fn allocate_packet_id(&mut self) -> u16 {
        loop {
            let id = self.next_packet_id;
            self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
            if !self.flow().inflight.iter().any(|m| m.packet_id == id) {
                return id;
            }
        }
    }

    /// Moves queued messages, in order, into the window while it has room (QoS 1/2) and into the
    /// outbox while `outbox_room` bytes allow (QoS 0); `write` gets each PUBLISH to write, in
    /// order, borrowed from the session, with what its copy carries and the message's journal
    /// id (0: not journaled). A copy that has expired by `now` is dropped instead, never sent
    /// [MQTT-3.3.2-5]; returns their journal ids (for the journal to say the session is done
    /// with them: recovered, they would fill the queue again).
    pub fn fill_window(
        &mut self,
        mut outbox_room: usize,
        now: Option<Instant>,
        mut write: impl FnMut(PublishRef<'_>, CopyProps<'_>, MsgId),
    ) -> Vec<MsgId> {
        let mut expired = Vec::new();
        if !self.is_online() {
            return expired;
        }
        while let Some(next) = self.flow().queue.front() {
            if next.props().expired(now) {
                expired.extend(self.pop_queued().map(|out| out.id));
                continue;
            }
            if next.qos == QoS::AtMostOnce {
                // Topic, payload and at most 7 bytes of header: an upper bound is enough here.
                let size = next.message.topic.as_str().len() + next.message.payload.len() + 7;
                if size > outbox_room {
                    break;
                }
                outbox_room -= size;
            } else if self.flow().inflight.len() >= usize::from(self.max_inflight) {
                break;
            }
            let Some(next) = self.pop_queued() else {
                break;
            };
            if next.qos == QoS::AtMostOnce {
                write(next.publish(None, false), next.props(), next.id);
            } else {
                self.start_inflight(next);
                if let Some(m) = self.flow().inflight.back() {
                    write(
                        m.out.publish(Some(m.packet_id), false),
                        m.out.props(),
                        m.out.id,
                    );
                }
            }
        }
        expired
    }

    fn position(&self, packet_id: u16, state: InflightState) -> Result<usize, UnknownPacketId> {
        self.flow()
            .inflight
            .iter()
            .position(|m| m.packet_id == packet_id && m.state == state)
            .ok_or(UnknownPacketId(packet_id))
    }

    /// The journal id of the message in flight under `packet_id` (0: none, or not journaled).
    pub fn stored_id(&self, packet_id: u16) -> MsgId {
        self.flow()
            .inflight
            .iter()
            .find(|m| m.packet_id == packet_id)
            .map_or(0, |m| m.out.id)
    }

    /// PUBACK from the client: the QoS 1 message is done.
    pub fn on_puback(&mut self, packet_id: u16) -> Result<(), UnknownPacketId> {
        let at = self.position(packet_id, InflightState::AwaitPubAck)?;
        self.flow_mut().inflight.remove(at);
        Ok(())
    }

    /// PUBREC from the client: answer PUBREL and wait for PUBCOMP [MQTT-4.3.3-1].
    /// A PUBREC for a message already released is answered again (the client may resend it).
    pub fn on_pubrec(&mut self, packet_id: u16) -> Result<PubRel, UnknownPacketId> {
        let at = self
            .position(packet_id, InflightState::AwaitPubRec)
            .or_else(|_| self.position(packet_id, InflightState::AwaitPubComp))?;
        if let Some(m) = self.flow_mut().inflight.get_mut(at) {
            m.state = InflightState::AwaitPubComp;
        }
        Ok(PubRel { packet_id })
    }

    /// An MQTT 5 PUBREC with an error reason code: the client refused the QoS 2 message, which
    /// is done (no PUBREL follows) [MQTT-4.3.3].
    pub fn on_pubrec_refused(&mut self, packet_id: u16) -> Result<(), UnknownPacketId> {
        let at = self.position(packet_id, InflightState::AwaitPubRec)?;
        self.flow_mut().inflight.remove(at);
        Ok(())
    }

    /// PUBCOMP from the client: the QoS 2 message is done.
    pub fn on_pubcomp(&mut self, packet_id: u16) -> Result<(), UnknownPacketId> {
        let at = self.position(packet_id, InflightState::AwaitPubComp)?;
        self.flow_mut().inflight.remove(at);
        Ok(())
    }

    /// A QoS 2 PUBLISH arrived: true when it is new and must be routed, false when it is a re-send of
    /// one not yet released by PUBREL (delivered exactly once [MQTT-4.3.3-2]).
    pub fn incoming_qos2(&mut self, packet_id: u16) -> bool {
        self.flow_mut().incoming_qos2.insert(packet_id)
    }

    /// PUBREL from the client: forget the identifier. Returns whether it was known.
    pub fn incoming_pubrel(&mut self, packet_id: u16) -> bool {
        self.flow
            .as_deref_mut()
            .is_some_and(|flow| flow.incoming_qos2.remove(&packet_id))
    }
}

impl Outgoing {
    fn publish(&self, packet_id: Option<u16>, dup: bool) -> PublishRef<'_> {
        PublishRef {
            dup,
            qos: self.qos,
            // A live message's own flag is set only for Retain As Published (`deliver_local`).
            retain: self.retain || self.message.retain,
            topic: self.message.topic.as_bytes(),
            packet_id,
            payload: &self.message.payload,
            properties: self.message.properties.as_deref(),
        }
    }

    fn props(&self) -> CopyProps<'_> {
        props_of(self.props.as_deref())
    }
}

mod stored;
pub use stored::StoredEntry;
#[cfg(test)]
mod tests;
mod unacknowledged;
pub use unacknowledged::Resend;
