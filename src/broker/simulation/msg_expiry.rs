//! Message expiry in the simulation (MQTT 5's Message Expiry Interval, issue #21): some messages
//! of MQTT 5 clients carry a few seconds (`v5_clients.rs`); the broker drops a copy that waited
//! past it and sends the others with what is left. Each shard counts from when the message
//! reached it, so the model notes every arrival: its publisher's shard when it is routed, the
//! others when the bus hands them a message, with the interval the bus message carries (a copy a
//! share group passes on carries what was left). A copy's deadline is one of those arrivals'
//! (`deadlines`). Checked:
//! - no client reads a PUBLISH written after its message's deadline on its shard (the model
//!   knows when each outbox byte could first have been written: `marks`, observed before each
//!   tick moves the clock); a DUP re-send is exempt (its delivery had started, README);
//! - an MQTT 5 client's copy carries the Message Expiry Interval: never more than the original,
//!   at most what was left when it could first have been written (rounded up), at least what is
//!   left when it is read; a message without one carries none (and MQTT 3 clients read no
//!   properties: their codec has none);
//! - a retained message past its deadline is gone from its shard's store after the next tick;
//!   the stores are compared (`checks.rs`) without the messages that may have expired;
//! - at the end, an open obligation (`checks.rs`) is excused by expiry only for a message whose
//!   deadline has passed, and no more of them than the copies the broker counted as expired.
//!
//! Slack: the cores' clocks lag the model's by nanoseconds, persistence stamps deadlines in whole
//! milliseconds ([`SLACK`]); a copy the broker re-stamps with what is left in whole seconds
//! rounded up (a retained copy at SUBACK or after recovery, a share group's hand-off) may live up
//! to a second longer ([`ROUNDING`]). Must not: change the cores or draw from the generator.

use super::*;

/// The cores' clocks and the journal's milliseconds against the model's clock.
const SLACK: Duration = Duration::from_millis(5);
/// A deadline the broker re-stamps in whole seconds (rounded up) moves by less than this.
const ROUNDING: Duration = Duration::from_secs(1);

/// What the model keeps of message expiry.
pub(super) struct ExpiryModel {
    /// Per message with an expiry: every arrival on a shard, with the interval it carried.
    arrivals: HashMap<usize, Vec<(usize, Instant, u32)>>,
    /// Copies counted expired by cores that crashed, per shard.
    pub(super) carried_drops: Vec<u64>,
    /// MQTT 5 copies read with less than their original interval (the countdown was exercised).
    pub(super) counted_down: u64,
}

/// How a PUBLISH reached its client: the Message Expiry Interval it carried, when it could first
/// have been written, and when it was read.
#[derive(Debug, Clone, Copy)]
pub(super) struct Seen {
    pub(super) expiry: Option<u32>,
    pub(super) written_after: Instant,
    pub(super) read_at: Instant,
}

/// A recovered retained message has a Message Expiry Interval.
pub(super) fn expires(retained: &crate::persist::Retained) -> bool {
    retained
        .message
        .as_ref()
        .and_then(|m| m.properties.as_deref())
        .is_some_and(|p| p.message_expiry_interval.is_some())
}

impl ExpiryModel {
    pub(super) fn new(shards: usize) -> ExpiryModel {
        ExpiryModel {
            arrivals: HashMap::new(),
            carried_drops: vec![0; shards],
            counted_down: 0,
        }
    }
}

impl Sim {
    /// Message `m` reached `shard` now, carrying `interval` seconds.
    pub(super) fn note_arrival(&mut self, m: usize, shard: usize, interval: Option<u32>) {
        if let Some(interval) = interval {
            let now = self.now;
            self.expiring
                .arrivals
                .entry(m)
                .or_default()
                .push((shard, now, interval));
        }
    }

    /// The messages `message` hands shard `to`, noted as arrivals.
    pub(super) fn note_bus_arrivals(&mut self, to: usize, message: &BusMessage) {
        let carried = |message: &Message| {
            message
                .properties
                .as_deref()
                .and_then(|p| p.message_expiry_interval)
        };
        let arrived: Vec<(usize, Option<u32>)> = match message {
            BusMessage::Publish(message)
            | BusMessage::Retained { message, .. }
            | BusMessage::SharedPublish { message, .. } => msg_of(&message.payload)
                .map(|m| (m, carried(message)))
                .into_iter()
                .collect(),
            // A client's publishes, with the properties it sent.
            BusMessage::Publishes(batch, _) => batch
                .iter()
                .filter_map(|p| msg_of(p.payload))
                .filter_map(|m| self.msgs.get(m).map(|info| (m, info.expiry)))
                .collect(),
            _ => Vec::new(),
        };
        for (m, interval) in arrived {
            self.note_arrival(m, to, interval);
        }
    }

    /// The earliest and latest deadline of message `m` on `shard` (on any shard for `None`, or
    /// when it never reached `shard`); `None` for a message that does not expire.
    fn deadlines(&self, m: usize, shard: Option<usize>) -> Option<(Instant, Instant)> {
        let arrivals = self.expiring.arrivals.get(&m)?;
        let on = |s: Option<usize>| {
            arrivals
                .iter()
                .filter(move |a| s.is_none_or(|s| a.0 == s))
                .map(|&(_, at, interval)| at + Duration::from_secs(u64::from(interval)))
        };
        let pick = if on(shard).next().is_some() {
            shard
        } else {
            None
        };
        Some((on(pick).min()?, on(pick).max()?))
    }

    /// Message `m` may have expired by now on `shard` (`None`: on some shard).
    pub(super) fn may_have_expired(&self, m: usize, shard: Option<usize>) -> bool {
        self.deadlines(m, shard)
            .is_some_and(|(first, _)| self.now + SLACK >= first)
    }

    /// A retained message in a store whose message may have expired on some shard: the stores
    /// may disagree on it until every shard's deadline has passed and been ticked.
    pub(super) fn retained_volatile(&self, payload: &[u8]) -> bool {
        msg_of(payload).is_some_and(|m| self.may_have_expired(m, None))
    }

    /// Copies counted expired on `shard`, by this run's cores and those that crashed.
    pub(super) fn dropped_expired(&self, shard: usize) -> u64 {
        let carried = self.expiring.carried_drops.get(shard).copied().unwrap_or(0);
        carried + self.cores[shard].stats.publish_dropped_expired
    }

    /// Before the clock moves: how far each outbox is filled, so that bytes found later were
    /// written after now.
    pub(super) fn mark_outboxes(&mut self) {
        let now = self.now;
        for (id, m) in self.conns.iter_mut().filter(|(_, m)| !m.forgotten) {
            let len = self.cores[m.shard]
                .connections
                .get(id)
                .map_or(0, |c| c.outbox.len());
            if m.marks.last().is_none_or(|&(seen, _)| len > seen) {
                m.marks.push((len, now));
            }
        }
    }

    /// When the bytes of `conn`'s outbox up to `end` could first have been written.
    pub(super) fn written_after(&self, conn: ConnId, end: usize) -> Instant {
        self.conns
            .get(&conn)
            .and_then(|m| {
                m.marks
                    .iter()
                    .filter(|&&(len, _)| len < end)
                    .map(|&(_, at)| at)
                    .max()
            })
            .unwrap_or(self.now)
    }

    /// After every tick: no store keeps a retained message past its deadline there.
    pub(super) fn check_retained_purged(&self) {
        let all = TopicFilter::new("#").expect("valid filter");
        for (s, core) in self.cores.iter().enumerate() {
            for message in core.retained.matching(&all, None) {
                let Some(m) = msg_of(&message.payload) else {
                    continue;
                };
                // A recovered store re-stamps in whole seconds, from the publisher's shard.
                let Some((_, last)) = self.deadlines(m, None) else {
                    continue;
                };
                if self.now >= last + ROUNDING + SLACK {
                    let store = core.retained.expires_at(&message.topic);
                    fail!(
                        self,
                        "shard {s} still retains m{m} on {} {:?} after its expiry (the store's \
                         deadline is {:?} from now; arrivals {:?})",
                        message.topic,
                        self.now - last,
                        store.map(|at| at.saturating_duration_since(self.now)),
                        self.expiring.arrivals.get(&m)
                    );
                }
            }
        }
    }

    /// Client `c` read message `m` as `p`, `seen` so: it had not expired when written, and an
    /// MQTT 5 client reads what is left of its interval.
    pub(super) fn check_copy_expiry(&mut self, c: usize, m: usize, p: &Publish, seen: Seen) {
        let who = &self.clients[c].id;
        let Some(interval) = self.msgs[m].expiry else {
            if let Some(left) = seen.expiry {
                fail!(self, "{who}: m{m} has no expiry but arrived with {left} s");
            }
            return;
        };
        // A retained copy's store may be another shard's (recovered); a group member's copy
        // may have been passed on (its interval re-stamped).
        let restamped = p.retain || member_filter(c).is_some();
        let shard = (!p.retain).then_some(self.clients[c].home);
        let Some((first, last)) = self.deadlines(m, shard) else {
            fail!(self, "{who}: m{m} arrived but never reached a shard");
        };
        let last = last + SLACK + if restamped { ROUNDING } else { Duration::ZERO };
        if !p.dup && seen.written_after >= last {
            fail!(
                self,
                "{who}: m{m} ({interval} s) written at least {:?} after its expiry",
                seen.written_after - last
            );
        }
        if !self.clients[c].v5 {
            return;
        }
        let Some(left) = seen.expiry else {
            fail!(
                self,
                "{who}: m{m} ({interval} s) arrived without its Message Expiry Interval"
            );
        };
        let at_most = last.saturating_duration_since(seen.written_after);
        let at_least = first.saturating_duration_since(seen.read_at + SLACK);
        if left == 0
            || left > interval
            || Duration::from_secs(u64::from(left - 1)) > at_most
            || Duration::from_secs(u64::from(left)) < at_least
        {
            fail!(
                self,
                "{who}: m{m} ({interval} s) arrived with {left} s left, written from {:?} \
                 before its first deadline on, read {:?} before it",
                first.saturating_duration_since(seen.written_after),
                first.saturating_duration_since(seen.read_at),
            );
        }
        if left < interval {
            self.expiring.counted_down += 1;
        }
    }

    /// After a crash: each queued copy recovered for client `c` keeps its message's deadline
    /// (the journal's wall-clock milliseconds), and a message that does not expire has none.
    pub(super) fn check_recovered_expiry(&self, c: usize, recovered: &crate::persist::Session) {
        let Some(durability) = self.durability.as_ref() else {
            return;
        };
        let slack_ms = SLACK.as_millis() as u64;
        for entry in recovered.queue.iter() {
            let Some(m) = msg_of(&entry.message.payload) else {
                continue;
            };
            let restamped = entry.message.retain || member_filter(c).is_some();
            let shard = (!entry.message.retain).then_some(self.clients[c].home);
            match (self.deadlines(m, shard), entry.expires_at_unix_ms) {
                (None, None) => {}
                (Some((first, last)), Some(at)) => {
                    let extra = if restamped { ROUNDING } else { Duration::ZERO };
                    let earliest = durability.unix_ms(first).saturating_sub(slack_ms);
                    let latest = durability.unix_ms(last + extra) + slack_ms;
                    if !(earliest..=latest).contains(&at) {
                        fail!(
                            self,
                            "{}: m{m} recovered to expire at {at} ms, its deadlines are {earliest} \
                             to {latest} ms",
                            self.clients[c].id
                        );
                    }
                }
                (want, got) => fail!(
                    self,
                    "{}: m{m} recovered with expiry {got:?}, its deadlines are {want:?}",
                    self.clients[c].id
                ),
            }
        }
    }

    /// The retained messages of a folded state as `replay.rs` compares them: without those that
    /// may have expired (a live store drops one at its shard's deadline, unjournaled: the record
    /// stays and recovery skips it) and without deadlines (each shard's is its own), once each
    /// deadline is checked to be one of its message's.
    pub(super) fn comparable_retained(
        &self,
        retained: &mut crate::persist::FastMap<TopicName, crate::persist::Retained>,
    ) {
        let Some(durability) = self.durability.as_ref() else {
            return;
        };
        let slack_ms = SLACK.as_millis() as u64;
        for r in retained.values() {
            let Some(m) = r
                .message
                .as_ref()
                .and_then(|message| msg_of(&message.payload))
            else {
                continue;
            };
            let window = self.deadlines(m, None).map(|(first, last)| {
                let earliest = durability.unix_ms(first).saturating_sub(slack_ms);
                (earliest, durability.unix_ms(last + ROUNDING) + slack_ms)
            });
            let kept = match (window, r.expires_at_unix_ms) {
                (None, None) => true,
                (Some((earliest, latest)), Some(at)) => (earliest..=latest).contains(&at),
                _ => false,
            };
            if !kept {
                fail!(
                    self,
                    "retained m{m} journaled to expire at {:?} ms, its deadlines are {window:?}",
                    r.expires_at_unix_ms
                );
            }
        }
        retained.retain(|_, r| {
            !r.message
                .as_ref()
                .is_some_and(|message| self.retained_volatile(&message.payload))
        });
        for r in retained.values_mut() {
            r.expires_at_unix_ms = None;
        }
    }
}
