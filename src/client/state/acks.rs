//! The acknowledgements from the broker: PUBACK, PUBREC, PUBCOMP, SUBACK, UNSUBACK, each ending
//! or advancing the flow it belongs to (`inputs.rs` and the MQTT 5 layer call these after
//! reading the packet). No I/O, no clock: `now` is an argument.

use super::*;

impl<W> ClientState<W> {
    pub(super) fn inflight_position(&self, packet_id: u16, stage: Awaiting) -> Option<usize> {
        self.inflight
            .iter()
            .position(|m| m.packet_id == packet_id && m.stage == stage)
    }

    fn complete_inflight(&mut self, at: usize, now: Instant) {
        if let Some(done) = self.inflight.remove(at) {
            self.release_packet_id(done.packet_id);
            self.events.push_back(Event::Published(done.waiter));
            self.pump(now);
        }
    }

    /// Ends the flow of in-flight message `at` with `failure` (MQTT 5: PUBACK or PUBREC refused).
    pub(super) fn fail_inflight(&mut self, at: usize, failure: PublishFailure, now: Instant) {
        if let Some(done) = self.inflight.remove(at) {
            self.release_packet_id(done.packet_id);
            self.events
                .push_back(Event::PublishFailed(done.waiter, failure));
            self.pump(now);
        }
    }

    pub(super) fn handle_puback(&mut self, packet_id: u16, now: Instant) {
        match self.inflight_position(packet_id, Awaiting::PubAck) {
            Some(at) => self.complete_inflight(at, now),
            None => log::debug!("ignoring PUBACK for unknown packet id {packet_id}"),
        }
    }

    pub(super) fn handle_pubrec(&mut self, packet_id: u16, now: Instant) {
        let known = match self.inflight_position(packet_id, Awaiting::PubRec) {
            Some(at) => {
                self.inflight[at].stage = Awaiting::PubComp;
                true
            }
            // A repeated PUBREC: answer again.
            None => self
                .inflight_position(packet_id, Awaiting::PubComp)
                .is_some(),
        };
        if known {
            self.send(Packet::PubRel(PubRel { packet_id }), now);
        } else {
            log::debug!("ignoring PUBREC for unknown packet id {packet_id}");
        }
    }

    pub(super) fn handle_pubcomp(&mut self, packet_id: u16, now: Instant) {
        match self.inflight_position(packet_id, Awaiting::PubComp) {
            Some(at) => self.complete_inflight(at, now),
            None => log::debug!("ignoring PUBCOMP for unknown packet id {packet_id}"),
        }
    }

    pub(super) fn handle_suback(&mut self, ack: SubAck) -> Result<(), ConnectionError> {
        let Some(at) = self
            .subscribes
            .iter()
            .position(|s| s.packet_id == ack.packet_id)
        else {
            log::debug!("ignoring SUBACK for unknown packet id {}", ack.packet_id);
            return Ok(());
        };
        if self.subscribes[at].filters.len() != ack.return_codes.len() {
            return Err(violation(format!(
                "SUBACK has {} return codes for {} topic filters",
                ack.return_codes.len(),
                self.subscribes[at].filters.len()
            )));
        }
        let pending = self.subscribes.remove(at);
        self.release_packet_id(pending.packet_id);
        for (requested, code) in pending.filters.iter().zip(&ack.return_codes) {
            let known = self
                .subscriptions
                .iter()
                .position(|(f, _)| *f == requested.filter);
            match (code, known) {
                (SubscribeReturnCode::Success(qos), Some(i)) => self.subscriptions[i].1 = *qos,
                (SubscribeReturnCode::Success(qos), None) => {
                    self.subscriptions.push((requested.filter.clone(), *qos))
                }
                // A refused restore means the subscription is gone; a refused new one changes nothing.
                (SubscribeReturnCode::Failure, Some(i)) if pending.waiter.is_none() => {
                    self.subscriptions.remove(i);
                }
                (SubscribeReturnCode::Failure, _) => {}
            }
        }
        match pending.waiter {
            Some(waiter) => self
                .events
                .push_back(Event::Subscribed(waiter, ack.return_codes)),
            None => self.events.push_back(Event::Restored(
                pending
                    .filters
                    .into_iter()
                    .map(|f| f.filter)
                    .zip(ack.return_codes)
                    .collect(),
            )),
        }
        Ok(())
    }

    pub(super) fn handle_unsuback(&mut self, packet_id: u16) {
        let Some(at) = self
            .unsubscribes
            .iter()
            .position(|u| u.packet_id == packet_id)
        else {
            log::debug!("ignoring UNSUBACK for unknown packet id {packet_id}");
            return;
        };
        let pending = self.unsubscribes.remove(at);
        self.release_packet_id(packet_id);
        self.subscriptions
            .retain(|(filter, _)| !pending.filters.contains(filter));
        self.events.push_back(Event::Unsubscribed(pending.waiter));
    }
}
