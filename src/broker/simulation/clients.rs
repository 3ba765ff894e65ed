//! What clients do: connect (with takeovers, wills and resumed sessions), publish, subscribe,
//! unsubscribe, ack, ping, misbehave and drop their connections; sending a packet to the core and
//! noting the closes the broker decides. What the model then owes is recorded in `obligations.rs`;
//! what clients read back is handled in `reads.rs`. It fails only on what a step itself answers
//! (a CONNECT's outcome, an early timeout); the cluster-wide invariants are `checks.rs`'s.

use super::*;

impl Sim {
    pub(super) fn client_step(&mut self) {
        // Mostly a connected client (up to three tries), so that traffic dominates connects.
        let mut c = self.rng.below(self.clients.len());
        for _ in 0..2 {
            if self.live_conn(c).is_some() {
                break;
            }
            c = self.rng.below(self.clients.len());
        }
        let Some(_) = self.live_conn(c) else {
            if self.rng.chance(75) {
                self.connect(c);
            }
            return;
        };
        match self.rng.weighted(&[34, 12, 6, 22, 2, 4, 4, 5, 2, 1, 1, 1]) {
            0 => self.publish(c, true),
            1 => self.subscribe(c),
            2 => self.unsubscribe(c),
            3 => {
                let count = 1 + self.rng.below(4);
                self.send_pending(c, count);
            }
            4 => self.send(c, Packet::PingReq),
            5 => self.connect(c),
            6 => {
                self.send_pending(c, usize::MAX);
                self.send(c, Packet::Disconnect);
            }
            7 => self.drop_connection(c),
            8 => {
                // A PUBLISH lost in transit: the client thinks it sent it, then the link dies.
                self.publish(c, false);
                self.drop_connection(c);
            }
            9 => {
                let conn = self.clients[c].conn.unwrap_or_default();
                self.note(format!("{}: garbage → protocol error", self.clients[c].id));
                let shard = self.clients[c].home;
                self.cores[shard].handle_protocol_error(conn);
                self.collect_actions();
                self.sync_closes(&[conn]);
            }
            10 => {
                // Server-to-client packets from a client are protocol errors too.
                self.send(c, Packet::PingResp);
            }
            _ => {
                let packet_id = 1 + self.rng.below(5) as u16;
                // Unknown ids must be answered and ignored, never crash or disturb the session.
                let packet = match self.rng.below(3) {
                    0 => Packet::PubRel(PubRel { packet_id }),
                    1 => Packet::PubAck(PubAck {
                        packet_id: 60_000 + packet_id,
                    }),
                    _ => Packet::PubComp(PubComp {
                        packet_id: 60_000 + packet_id,
                    }),
                };
                if let Packet::PubRel(_) = packet {
                    // Only when neither side uses that id: otherwise it would be a real release.
                    let used = self.sessions[c]
                        .as_ref()
                        .is_some_and(|s| s.in_q2.contains(&packet_id))
                        || self.clients[c].out.iter().any(|o| o.packet_id == packet_id)
                        || self.clients[c].stray_pubcomps.contains(&packet_id);
                    if used {
                        return;
                    }
                    self.clients[c].stray_pubcomps.push(packet_id);
                }
                self.send(c, packet);
            }
        }
    }

    fn connect(&mut self, c: usize) {
        let clean = self.rng.chance(35);
        let keep_alive = if self.rng.chance(25) {
            10 + self.rng.below(50) as u16
        } else {
            0
        };
        let will = self.rng.chance(30).then(|| {
            let topic = self.rng.below(TOPICS.len());
            let qos = self.rng.qos();
            let retain = self.rng.chance(15) && self.may_retain(c, topic);
            self.new_msg(c * 2 + 1, topic, qos, retain)
        });
        self.connect_with(c, clean, keep_alive, will);
    }

    /// Whether client `c` may publish retained messages (or a retained will) on `topic`.
    ///
    /// On even seeds a topic's retained publishers share a shard, so the model knows which update
    /// is the last and checks every store's content; on odd seeds anyone may retain anywhere and
    /// the stores are checked to agree (see `concurrent_retained_updates_from_two_shards_converge`).
    fn may_retain(&self, c: usize, topic: usize) -> bool {
        self.retain_anywhere || self.clients[c].home == home_shard(TOPICS[topic], self.cfg.shards)
    }

    /// A new message of stream `stream` (an MQTT 5 client's within its Maximum QoS, and maybe
    /// with an expiry: `v5_message`).
    fn new_msg(&mut self, stream: usize, topic: usize, qos: QoS, retain: bool) -> usize {
        let (qos, expiry) = self.v5_message(stream / 2, qos);
        self.msgs.push(MsgInfo {
            stream,
            seq: 0,
            topic,
            qos,
            retain,
            routings: 0,
            routed_at: 0,
            expiry,
        });
        self.msgs.len() - 1
    }

    pub(super) fn connect_with(
        &mut self,
        c: usize,
        clean: bool,
        keep_alive: u16,
        will: Option<usize>,
    ) {
        let conn = self.next_conn;
        self.next_conn += 1;
        let home = self.clients[c].home;
        self.note(format!(
            "{}: CONNECT{} conn {conn} clean={clean} keep_alive={keep_alive} will={will:?}",
            self.clients[c].id,
            if self.clients[c].v5 { " (MQTT 5)" } else { "" }
        ));
        let old = self.live_conn(c);
        let outcome = self.connect_core(c, conn, clean, keep_alive, will);
        self.collect_actions();
        if outcome.code != ConnectReturnCode::Accepted {
            fail!(self, "CONNECT refused: {outcome:?}");
        }
        // The model, in the broker's order: take the old connection over, drop a clean session,
        // then resume or start one.
        if let Some(old) = old {
            match self.cores[home].close_reason(old) {
                Some(CloseReason::TakenOver) => self.on_closed(old, CloseReason::TakenOver),
                other => fail!(self, "takeover closed {old} with {other:?}"),
            }
        }
        if !clean {
            self.expiry_at_connect(c, outcome.session_present);
        }
        if clean {
            if self.sessions[c].as_ref().is_some_and(|s| !s.clean) {
                self.clients[c].drop_unconfirmed = true;
            }
            self.end_session(c);
        }
        let present = self.sessions[c].is_some();
        if outcome.session_present != present {
            fail!(
                self,
                "CONNECT of {}: session_present {} but the model says {present}",
                self.clients[c].id,
                outcome.session_present
            );
        }
        if !present {
            let epoch = self.next_epoch;
            self.next_epoch += 1;
            self.history.insert(epoch, vec![Vec::new(); FILTERS.len()]);
            self.sessions[c] = Some(SessionModel {
                epoch,
                clean,
                conn: None,
                subs: vec![Sub::None; FILTERS.len()],
                changed_by: vec![0; FILTERS.len()],
                in_q2: HashSet::new(),
                offline_since: None,
            });
            let client = &mut self.clients[c];
            client.out.clear();
            client.in_q2.clear();
            client.held.clear();
        }
        let epoch = {
            let session = self.sessions[c].as_mut().expect("just made");
            session.clean = clean;
            session.conn = Some(conn);
            session.offline_since = None;
            session.epoch
        };
        let client = &mut self.clients[c];
        client.conn = Some(conn);
        client.pending.clear();
        client.requests.clear();
        client.stray_pubcomps.clear();
        self.conns.insert(
            conn,
            ConnModel {
                client: c,
                shard: home,
                epoch,
                will,
                keep_alive,
                last_activity: self.now,
                active: true,
                forgotten: false,
                got_connack: false,
                expect_present: present,
                marks: vec![(0, self.now)],
            },
        );
        self.check_session_placement(c);
        if present {
            // What a real client does on a resumed session: re-send what is unacknowledged.
            let resend: Vec<Packet> = self.clients[c]
                .out
                .iter()
                .map(|o| match o.state {
                    OutState::AwaitPubComp => Packet::PubRel(PubRel {
                        packet_id: o.packet_id,
                    }),
                    _ => Packet::Publish(self.publish_packet(o.msg, Some(o.packet_id), true)),
                })
                .collect();
            for packet in resend {
                self.send(c, packet);
            }
        }
    }

    fn publish_packet(&self, m: usize, packet_id: Option<u16>, dup: bool) -> Publish {
        let msg = &self.msgs[m];
        Publish {
            dup,
            qos: msg.qos,
            retain: msg.retain,
            topic: self.topic_names[msg.topic].clone(),
            packet_id,
            payload: payload_of(m),
        }
    }

    /// A new PUBLISH from client `c`; `deliver` false loses it in transit.
    fn publish(&mut self, c: usize, deliver: bool) {
        let topic = self.rng.below(TOPICS.len());
        let qos = self.rng.qos();
        let retain = self.rng.chance(12) && self.may_retain(c, topic);
        if retain && self.rng.chance(20) {
            // Clearing a retained message: an empty payload, which names no message.
            let packet = Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtMostOnce,
                retain: true,
                topic: self.topic_names[topic].clone(),
                packet_id: None,
                payload: Bytes::new(),
            });
            if deliver {
                self.send(c, packet);
            }
            return;
        }
        let m = self.new_msg(c * 2, topic, qos, retain);
        let qos = self.msgs[m].qos;
        let packet_id = (qos != QoS::AtMostOnce).then(|| self.allocate_packet_id(c));
        if let Some(packet_id) = packet_id {
            let state = if qos == QoS::AtLeastOnce {
                OutState::AwaitPubAck
            } else {
                OutState::AwaitPubRec
            };
            self.clients[c].out.push(OutPub {
                packet_id,
                msg: m,
                state,
            });
        }
        let packet = Packet::Publish(self.publish_packet(m, packet_id, false));
        if deliver {
            self.send(c, packet);
        } else {
            self.note(format!(
                "{}: PUBLISH m{m} lost in transit",
                self.clients[c].id
            ));
        }
    }

    /// A packet id not used by this client's outgoing messages or requests.
    fn allocate_packet_id(&mut self, c: usize) -> u16 {
        let client = &mut self.clients[c];
        loop {
            let id = client.next_packet_id;
            client.next_packet_id = client.next_packet_id.checked_add(1).unwrap_or(1);
            let busy = client.out.iter().any(|o| o.packet_id == id)
                || client.requests.iter().any(|r| match r {
                    Request::Subscribe { packet_id, .. } | Request::Unsubscribe { packet_id } => {
                        *packet_id == id
                    }
                });
            if !busy {
                return id;
            }
        }
    }

    fn subscribe(&mut self, c: usize) {
        let count = 1 + self.rng.below(3);
        let mut chosen: Vec<usize> = Vec::new();
        if let Some(f) = member_filter(c) {
            chosen.push(f);
        }
        while chosen.len() < count && member_filter(c).is_none() {
            let f = self.rng.below(SHARED_FROM);
            if !chosen.contains(&f) {
                chosen.push(f);
            }
        }
        let max_qos = self.cfg.settings.max_qos;
        let mut filters = Vec::new();
        let mut request = Vec::new();
        for f in chosen {
            let qos = self.rng.qos();
            let granted = qos.min(max_qos);
            let number = self.next_request;
            self.next_request += 1;
            self.change_subscription(c, f, Sub::Pending, number);
            self.record_subscription(c, f, Some(granted));
            filters.push(SubscribeFilter {
                filter: TopicFilter::new(FILTERS[f]).expect("valid filter"),
                qos,
            });
            request.push((f, granted, number));
        }
        let packet_id = self.allocate_packet_id(c);
        self.clients[c].requests.push_back(Request::Subscribe {
            packet_id,
            filters: request,
        });
        self.send(c, Packet::Subscribe(Subscribe { packet_id, filters }));
    }

    fn unsubscribe(&mut self, c: usize) {
        // Mostly filters the session has, sometimes one it never had.
        let mut filters: Vec<usize> = self.sessions[c]
            .as_ref()
            .map(|s| {
                (0..FILTERS.len())
                    .filter(|&f| s.subs[f] != Sub::None)
                    .collect()
            })
            .unwrap_or_default();
        if filters.is_empty() || self.rng.chance(20) {
            filters.push(self.rng.below(FILTERS.len()));
        }
        let keep = 1 + self.rng.below(filters.len().min(2));
        let mut chosen = Vec::new();
        while chosen.len() < keep && !filters.is_empty() {
            let f = filters.swap_remove(self.rng.below(filters.len()));
            if !chosen.contains(&f) {
                chosen.push(f);
            }
        }
        for &f in &chosen {
            let number = self.next_request;
            self.next_request += 1;
            self.change_subscription(c, f, Sub::None, number);
            self.record_subscription(c, f, None);
        }
        let packet_id = self.allocate_packet_id(c);
        self.clients[c]
            .requests
            .push_back(Request::Unsubscribe { packet_id });
        self.send(
            c,
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                filters: chosen
                    .iter()
                    .map(|&f| TopicFilter::new(FILTERS[f]).expect("valid filter"))
                    .collect(),
            }),
        );
    }

    /// Sends a packet on the client's live connection and applies what the model knows of it.
    pub(super) fn send(&mut self, c: usize, packet: Packet) {
        let Some(conn) = self.live_conn(c) else {
            return;
        };
        let shard = self.clients[c].home;
        let expiry = match &packet {
            Packet::Publish(p) => msg_of(&p.payload)
                .and_then(|m| self.msgs.get(m))
                .and_then(|info| info.expiry),
            _ => None,
        };
        self.note(format!(
            "{} → {}{}",
            self.clients[c].id,
            describe(&packet),
            expiry.map_or(String::new(), |e| format!(" (expiry {e} s)"))
        ));
        if let Some(m) = self.conns.get_mut(&conn) {
            m.last_activity = self.now;
        }
        match &packet {
            Packet::Publish(p) if p.retain && p.payload.is_empty() => {
                let topic = TOPICS.iter().position(|t| *t == p.topic.as_str());
                if let Some(topic) = topic {
                    self.retained[topic] = None;
                }
            }
            Packet::Publish(p) => {
                if let Some(m) = msg_of(&p.payload) {
                    let first = match p.qos {
                        QoS::ExactlyOnce => self.sessions[c]
                            .as_mut()
                            .is_some_and(|s| s.in_q2.insert(p.packet_id.unwrap_or(0))),
                        _ => true,
                    };
                    if first {
                        self.routed(m);
                    }
                }
            }
            Packet::PubRel(rel) => {
                if let Some(s) = self.sessions[c].as_mut() {
                    s.in_q2.remove(&rel.packet_id);
                }
            }
            Packet::PubAck(PubAck { packet_id }) | Packet::PubComp(PubComp { packet_id }) => {
                self.clients[c].held.remove(packet_id);
            }
            _ => {}
        }
        // As the runtime hands them over: bytes, which the core routes in place when it can.
        let in_place = self.cores[shard].routed_in_place;
        self.hand_over(c, conn, &packet);
        self.published_in_place += self.cores[shard].routed_in_place - in_place;
        self.collect_actions();
        self.sync_closes(&[conn]);
    }

    /// Sends up to `limit` of the client's pending acks, in order.
    pub(super) fn send_pending(&mut self, c: usize, limit: usize) {
        for _ in 0..limit {
            if self.live_conn(c).is_none() {
                return;
            }
            let Some(packet) = self.clients[c].pending.pop_front() else {
                return;
            };
            self.send(c, packet);
        }
    }

    fn drop_connection(&mut self, c: usize) {
        let Some(conn) = self.clients[c].conn else {
            return;
        };
        let shard = self.clients[c].home;
        self.note(format!("{}: connection {conn} dropped", self.clients[c].id));
        let was_active = self.conns.get(&conn).is_some_and(|m| m.active);
        self.cores[shard].handle_closed(conn);
        self.collect_actions();
        self.flush.remove(&conn);
        if was_active {
            self.on_closed(conn, CloseReason::ConnectionLost);
        }
        if let Some(m) = self.conns.get_mut(&conn) {
            m.forgotten = true;
        }
        self.clients[c].conn = None;
    }

    /// Notes the closes the broker decided among `conns`.
    pub(super) fn sync_closes(&mut self, conns: &[ConnId]) {
        for &conn in conns {
            let Some(m) = self.conns.get(&conn) else {
                continue;
            };
            if !m.active || m.forgotten {
                continue;
            }
            if let Some(reason) = self.cores[m.shard].close_reason(conn) {
                self.on_closed(conn, reason);
            }
        }
    }

    /// The broker closed `conn` for `reason`: the session goes offline (or away when clean) and
    /// the will is published when the reason calls for it.
    fn on_closed(&mut self, conn: ConnId, reason: CloseReason) {
        let (c, will, keep_alive, last) = {
            let Some(m) = self.conns.get_mut(&conn) else {
                return;
            };
            m.active = false;
            (m.client, m.will, m.keep_alive, m.last_activity)
        };
        self.note(format!(
            "{}: connection {conn} closed by the broker: {reason:?}",
            self.clients[c].id
        ));
        match reason {
            CloseReason::TakenOver => self.takeovers += 1,
            CloseReason::KeepAliveTimeout => self.timeouts += 1,
            _ => {}
        }
        if reason == CloseReason::KeepAliveTimeout
            && (keep_alive == 0 || self.now - last <= keep_alive_limit(keep_alive))
        {
            fail!(self, "connection {conn} timed out early");
        }
        let current = self.sessions[c]
            .as_ref()
            .is_some_and(|s| s.conn == Some(conn));
        if !current {
            return;
        }
        let now = self.now;
        let clean = {
            let session = self.sessions[c].as_mut().expect("checked");
            session.conn = None;
            session.offline_since = Some(now);
            session.clean
        };
        // The model's own rule, not `CloseReason::publishes_will` [MQTT-3.1.2-8, 3.14.4-3].
        let publishes_will = !matches!(
            reason,
            CloseReason::ClientDisconnect | CloseReason::ServerShutdown
        );
        if publishes_will {
            if let Some(m) = will {
                self.wills += 1;
                self.routed(m);
            }
        }
        if clean {
            self.end_session(c);
        }
    }
}
