//! What clients read: each packet a flush hands a client is checked against the model (CONNACK
//! first, acks answering what was sent, a PUBLISH only on a subscription that granted it, QoS 2
//! once, per-publisher order) and answered as a real client would. Packets are only read here;
//! sending them back is `clients.rs`' job.

use super::*;

impl Sim {
    // ---- what clients read ------------------------------------------------------------------------

    pub(super) fn read_packet(&mut self, conn: ConnId, packet: Packet, seen: Seen) {
        let (c, epoch, got_connack, expect_present) = {
            let m = &self.conns[&conn];
            (m.client, m.epoch, m.got_connack, m.expect_present)
        };
        let current = self.clients[c].conn == Some(conn);
        if !got_connack {
            match &packet {
                Packet::ConnAck(ack)
                    if ack.code == ConnectReturnCode::Accepted
                        && ack.session_present == expect_present => {}
                other => fail!(self, "connection {conn} began with {other:?}"),
            }
            if let Some(m) = self.conns.get_mut(&conn) {
                m.got_connack = true;
            }
            self.clients[c].drop_unconfirmed = false;
            return;
        }
        match packet {
            Packet::Publish(p) => self.read_publish(c, conn, epoch, current, p, seen),
            // A connection taken over is abandoned by its client: the rest is only checked.
            _ if !current => {}
            Packet::PubAck(PubAck { packet_id }) => {
                self.ack_out(c, packet_id, OutState::AwaitPubAck, None)
            }
            Packet::PubRec(PubRec { packet_id }) => self.ack_out(
                c,
                packet_id,
                OutState::AwaitPubRec,
                Some(OutState::AwaitPubComp),
            ),
            Packet::PubComp(PubComp { packet_id }) => {
                self.ack_out(c, packet_id, OutState::AwaitPubComp, None)
            }
            Packet::PubRel(PubRel { packet_id }) => {
                // Release of an incoming QoS 2 message; repeated after a reconnect if the
                // PUBCOMP was lost, so an unknown id is fine.
                let client = &mut self.clients[c];
                client.in_q2.remove(&packet_id);
                client
                    .pending
                    .push_back(Packet::PubComp(PubComp { packet_id }));
            }
            Packet::SubAck(ack) => {
                let Some(Request::Subscribe { packet_id, filters }) =
                    self.clients[c].requests.pop_front()
                else {
                    fail!(
                        self,
                        "{}: SUBACK {} answers nothing",
                        self.clients[c].id,
                        ack.packet_id
                    );
                };
                let expected: Vec<SubscribeReturnCode> = filters
                    .iter()
                    .map(|&(_, granted, _)| SubscribeReturnCode::Success(granted))
                    .collect();
                if ack.packet_id != packet_id || ack.return_codes != expected {
                    fail!(
                        self,
                        "{}: SUBACK {ack:?}, expected id {packet_id} with {expected:?}",
                        self.clients[c].id
                    );
                }
                let Some(session) = self.sessions[c].as_mut().filter(|s| s.epoch == epoch) else {
                    return;
                };
                for (f, granted, number) in filters {
                    if session.changed_by[f] == number {
                        session.subs[f] = Sub::Confirmed(granted);
                        self.confirmed[f].insert(c, granted);
                    }
                }
            }
            Packet::UnsubAck(ack) => match self.clients[c].requests.pop_front() {
                Some(Request::Unsubscribe { packet_id }) if packet_id == ack.packet_id => {}
                _ => fail!(
                    self,
                    "{}: unexpected UNSUBACK {}",
                    self.clients[c].id,
                    ack.packet_id
                ),
            },
            Packet::PingResp => {}
            other => fail!(self, "{}: broker sent {other:?}", self.clients[c].id),
        }
    }

    /// An acknowledgement of one of this client's own QoS 1/2 PUBLISHes.
    fn ack_out(&mut self, c: usize, packet_id: u16, expect: OutState, next: Option<OutState>) {
        let client = &mut self.clients[c];
        if expect == OutState::AwaitPubComp {
            if let Some(at) = client.stray_pubcomps.iter().position(|&id| id == packet_id) {
                client.stray_pubcomps.remove(at);
                return;
            }
        }
        let Some(at) = client
            .out
            .iter()
            .position(|o| o.packet_id == packet_id && o.state == expect)
        else {
            fail!(
                self,
                "{}: unexpected {expect:?}-answer for packet id {packet_id}",
                self.clients[c].id
            );
        };
        if expect != OutState::AwaitPubComp {
            self.acked.insert(client.out[at].msg);
        }
        let client = &mut self.clients[c];
        match next {
            Some(state) => {
                client.out[at].state = state;
                client
                    .pending
                    .push_back(Packet::PubRel(PubRel { packet_id }));
            }
            None => {
                client.out.remove(at);
            }
        }
    }

    fn read_publish(
        &mut self,
        c: usize,
        conn: ConnId,
        epoch: u64,
        current: bool,
        p: Publish,
        seen: Seen,
    ) {
        let who = self.clients[c].id.clone();
        let Some(topic) = TOPICS.iter().position(|t| *t == p.topic.as_str()) else {
            fail!(self, "{who}: PUBLISH on unknown topic {}", p.topic);
        };
        let msg = msg_of(&p.payload);
        // The session held a matching filter granting this QoS at some moment between the
        // message's routing and now (it may have sat in the session's queue meanwhile).
        let routed_at = msg
            .and_then(|m| self.msgs.get(m))
            .map_or(0, |info| info.routed_at);
        let step = self.step;
        let subscribed = self.history.get(&epoch).is_some_and(|spans| {
            (0..FILTERS.len())
                .filter(|&f| self.matches[topic][f])
                .flat_map(|f| spans[f].iter())
                .any(|h| {
                    h.from <= step && h.until.is_none_or(|u| u >= routed_at) && h.granted >= p.qos
                })
        });
        if !subscribed {
            fail!(
                self,
                "{who}: PUBLISH {} at {:?} on conn {conn} without a subscription granting it \
                 since step {routed_at}",
                describe(&Packet::Publish(p.clone())),
                p.qos
            );
        }
        if let Some(m) = msg {
            let info = match self.msgs.get(m) {
                Some(info) => info,
                None => fail!(self, "{who}: PUBLISH of a message never made"),
            };
            if info.topic != topic || p.qos > info.qos || (p.retain && !info.retain) {
                fail!(self, "{who}: m{m} arrived altered: {p:?}");
            }
            if info.routings == 0 {
                fail!(self, "{who}: m{m} arrived but was never published");
            }
            self.check_copy_expiry(c, m, &p, seen);
        } else if !p.payload.is_empty() {
            fail!(self, "{who}: unknown payload {:?}", p.payload);
        } else if p.retain {
            fail!(self, "{who}: an empty retained message was stored");
        }
        if !current {
            return;
        }
        // What a client does with it: dedupe QoS 2 by id, ack, and hand it to the application.
        let mut to_app = true;
        if let Some(packet_id) = p.packet_id {
            let held = self.clients[c].held.get(&packet_id).copied();
            match (p.dup, held) {
                (false, Some(other)) => fail!(
                    self,
                    "{who}: fresh PUBLISH reuses packet id {packet_id} still held (m{other:?})"
                ),
                (true, Some(other)) if other != usize::MAX && Some(other) != msg => fail!(
                    self,
                    "{who}: DUP with packet id {packet_id} carries {msg:?}, first was m{other}"
                ),
                _ => {}
            }
            let client = &mut self.clients[c];
            client.held.insert(packet_id, msg.unwrap_or(usize::MAX));
            if p.qos == QoS::ExactlyOnce {
                to_app = client.in_q2.insert(packet_id);
                client
                    .pending
                    .push_back(Packet::PubRec(PubRec { packet_id }));
            } else {
                client
                    .pending
                    .push_back(Packet::PubAck(PubAck { packet_id }));
            }
        }
        let Some(m) = msg else {
            return;
        };
        if !to_app {
            return;
        }
        if self.obligations.get(&(c, m)).is_some_and(|o| o.0 == epoch) {
            self.settle(c, m, Obligation::Met);
        }
        if p.retain {
            // From the retained store: neither counted as a live copy nor ordered.
            return;
        }
        let (stream, seq, routings) = {
            let info = &self.msgs[m];
            (info.stream, info.seq, info.routings)
        };
        let handed_on = self.groups.handed_on.contains(&m);
        let rerouted = self.rerouted.contains(&m) || handed_on;
        let receipt = self.receipts.entry((c, m)).or_default();
        if receipt.live > 0 && (receipt.qos2 || p.qos == QoS::ExactlyOnce) && !rerouted {
            fail!(
                self,
                "{who}: QoS 2 message m{m} reached the application twice"
            );
        }
        let first = receipt.live == 0;
        receipt.live += 1;
        receipt.qos2 |= p.qos == QoS::ExactlyOnce;
        if !p.dup {
            receipt.fresh += 1;
            let fresh = receipt.fresh;
            if let Some(f) = member_filter(c) {
                self.member_read(c, f, m, epoch, routings);
            }
            // A copy a crash brought back (`rerouted`) is routed again by the broker, which
            // forgot it had been; `handed_on` is part of `rerouted` here.
            if fresh > routings && !rerouted {
                fail!(
                    self,
                    "{who}: m{m} sent fresh {fresh} times but routed {routings}"
                );
            }
        }
        // A group member is not promised one publisher's order: a message passed on (its first
        // member left before it arrived) takes one more hop than the ones after it.
        if first && member_filter(c).is_none() {
            let last = self.order.entry((c, stream, topic, p.qos)).or_insert(0);
            let before = *last;
            *last = before.max(seq);
            if seq < before && routings == 1 {
                fail!(
                    self,
                    "{who}: m{m} (#{seq} of stream {stream} on {}) after #{before} at {:?}",
                    TOPICS[topic],
                    p.qos
                );
            }
        }
    }
}
