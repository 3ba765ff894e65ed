//! What changes the state: the transport and clock inputs (`handle_transport_up`,
//! `handle_packet`, `handle_transport_down`, `handle_timeout`), the user requests (`publish`,
//! `subscribe`, `unsubscribe`, `disconnect`, `take_waiters`), and the private handlers and
//! bookkeeping behind them (CONNACK and PUBLISH, packet ids, `send`, `pump`; the
//! acknowledgements are in `acks.rs`).
//! Inputs only queue packets and events; handing them out is `outputs.rs`'s job. No I/O and no
//! clock here: `now` is an argument.

use super::*;

impl<W> ClientState<W> {
    // -- inputs ----------------------------------------------------------------------------------

    /// The transport is up: queue CONNECT and wait for CONNACK.
    pub fn handle_transport_up(&mut self, now: Instant) {
        if matches!(self.phase, Phase::Closed) {
            return;
        }
        self.clear_transmit();
        self.keep_alive = self.options.keep_alive;
        self.conn5 = v5_layer::Connection5::default();
        if self.is_v5() {
            self.transmit5.push_back(self.connect_v5());
        } else {
            self.transmit.push_back(Packet::Connect(Box::new(Connect {
                protocol: self.options.protocol,
                clean_session: self.options.clean_session,
                keep_alive: self.options.keep_alive,
                client_id: self.options.client_id.clone(),
                will: self.options.will.clone(),
                username: self.options.username.clone(),
                password: self.options.password.clone(),
            })));
        }
        self.phase = Phase::AwaitingConnAck {
            deadline: now + self.options.connection_timeout,
        };
    }

    /// The transport is gone. Unwritten packets are dropped; everything unacknowledged is kept and
    /// re-sent after the next CONNACK.
    pub fn handle_transport_down(&mut self) {
        self.clear_transmit();
        if !matches!(self.phase, Phase::Closed) {
            self.phase = Phase::Offline;
        }
    }

    /// One packet from the broker. `Err` means: close this connection (the session survives).
    pub fn handle_packet(&mut self, packet: Packet, now: Instant) -> Result<(), ConnectionError> {
        match self.phase {
            Phase::AwaitingConnAck { .. } => match packet {
                Packet::ConnAck(ack) => self.handle_connack(ack, now),
                other => Err(violation(format!("{} before CONNACK", other.name()))),
            },
            Phase::Connected {
                ref mut ping_sent, ..
            } => {
                *ping_sent = None;
                match packet {
                    Packet::Publish(publish) => self.handle_publish(publish, now),
                    Packet::PubAck(PubAck { packet_id }) => {
                        self.handle_puback(packet_id, now);
                        Ok(())
                    }
                    Packet::PubRec(PubRec { packet_id }) => {
                        self.handle_pubrec(packet_id, now);
                        Ok(())
                    }
                    Packet::PubRel(PubRel { packet_id }) => {
                        // Answer even an unknown id, so the broker can finish its flow.
                        self.incoming_qos2.remove(&packet_id);
                        self.send(Packet::PubComp(PubComp { packet_id }), now);
                        Ok(())
                    }
                    Packet::PubComp(PubComp { packet_id }) => {
                        self.handle_pubcomp(packet_id, now);
                        Ok(())
                    }
                    Packet::SubAck(ack) => self.handle_suback(ack),
                    Packet::UnsubAck(UnsubAck { packet_id }) => {
                        self.handle_unsuback(packet_id);
                        Ok(())
                    }
                    Packet::PingResp => Ok(()),
                    other => Err(violation(format!(
                        "a server must not send {}",
                        other.name()
                    ))),
                }
            }
            // Late packets after the transport went down or after DISCONNECT: ignore.
            Phase::Offline | Phase::Closed => Ok(()),
        }
    }

    /// Acts on the deadline from [`poll_timeout`](Self::poll_timeout): sends PINGREQ when the
    /// connection has been idle, or reports a missing CONNACK / PINGRESP.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), ConnectionError> {
        match self.phase {
            Phase::AwaitingConnAck { deadline } if now >= deadline => Err(
                ConnectionError::ConnAckTimeout(self.options.connection_timeout),
            ),
            Phase::Connected {
                last_sent,
                ping_sent,
            } if self.keep_alive > 0 => {
                let keep_alive = Duration::from_secs(u64::from(self.keep_alive));
                match ping_sent {
                    Some(sent) if now >= sent + keep_alive => {
                        Err(ConnectionError::PingTimeout(keep_alive))
                    }
                    Some(_) => Ok(()),
                    None if now >= last_sent + self.ping_interval() => {
                        self.send(Packet::PingReq, now);
                        if let Phase::Connected { ping_sent, .. } = &mut self.phase {
                            *ping_sent = Some(now);
                        }
                        Ok(())
                    }
                    None => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }

    /// Publishes `message`. The waiter comes back in [`Event::Published`] when the QoS flow is
    /// complete; until then the message survives reconnects.
    pub fn publish(
        &mut self,
        message: Message,
        waiter: W,
        now: Instant,
    ) -> Result<(), (W, Refusal)> {
        self.publish_with(message, None, waiter, now)
    }

    /// [`publish`](Self::publish) with MQTT 5 PUBLISH properties (not sent at MQTT 3).
    pub fn publish_with(
        &mut self,
        message: Message,
        properties: Option<Box<Properties>>,
        waiter: W,
        now: Instant,
    ) -> Result<(), (W, Refusal)> {
        if matches!(self.phase, Phase::Closed) {
            return Err((waiter, Refusal::Closed));
        }
        self.queued.push_back((
            Outgoing {
                message,
                properties,
            },
            waiter,
        ));
        self.pump(now);
        Ok(())
    }

    /// Subscribes to `filters` (non-empty). The waiter comes back in [`Event::Subscribed`].
    pub fn subscribe(
        &mut self,
        filters: Vec<SubscribeFilter>,
        waiter: W,
        now: Instant,
    ) -> Result<(), (W, Refusal)> {
        if matches!(self.phase, Phase::Closed) {
            return Err((waiter, Refusal::Closed));
        }
        let Some(packet_id) = self.allocate_packet_id() else {
            return Err((waiter, Refusal::NoPacketId));
        };
        if self.is_connected() {
            self.send(
                Packet::Subscribe(Subscribe {
                    packet_id,
                    filters: filters.clone(),
                }),
                now,
            );
        }
        self.subscribes.push(PendingSubscribe {
            packet_id,
            filters,
            waiter: Some(waiter),
        });
        Ok(())
    }

    /// Unsubscribes from `filters` (non-empty). The waiter comes back in [`Event::Unsubscribed`].
    pub fn unsubscribe(
        &mut self,
        filters: Vec<TopicFilter>,
        waiter: W,
        now: Instant,
    ) -> Result<(), (W, Refusal)> {
        if matches!(self.phase, Phase::Closed) {
            return Err((waiter, Refusal::Closed));
        }
        let Some(packet_id) = self.allocate_packet_id() else {
            return Err((waiter, Refusal::NoPacketId));
        };
        if self.is_connected() {
            self.send(
                Packet::Unsubscribe(Unsubscribe {
                    packet_id,
                    filters: filters.clone(),
                }),
                now,
            );
        }
        self.unsubscribes.push(PendingUnsubscribe {
            packet_id,
            filters,
            waiter,
        });
        Ok(())
    }

    /// Ends the session from the client's side: queues DISCONNECT (when connected) after whatever
    /// is already queued, accepts nothing more, and returns every waiter still pending so the
    /// driver can fail them.
    pub fn disconnect(&mut self, now: Instant) -> Vec<W> {
        self.disconnect_with(ReasonCode::SUCCESS, Properties::default(), now)
    }

    /// [`disconnect`](Self::disconnect) with an MQTT 5 reason code and DISCONNECT properties
    /// (Session Expiry Interval, Reason String, User Properties); MQTT 3 sends neither.
    pub fn disconnect_with(
        &mut self,
        reason: ReasonCode,
        properties: Properties,
        now: Instant,
    ) -> Vec<W> {
        if self.is_connected() {
            if self.is_v5() {
                self.send5(
                    v5::Packet::Disconnect(v5::Disconnect { reason, properties }),
                    now,
                );
            } else {
                self.send(Packet::Disconnect, now);
            }
        } else {
            self.clear_transmit();
        }
        self.phase = Phase::Closed;
        self.take_waiters()
    }

    /// Removes and returns every pending waiter (the driver gave up on the session).
    pub fn take_waiters(&mut self) -> Vec<W> {
        let mut waiters = Vec::new();
        waiters.extend(self.inflight.drain(..).map(|m| m.waiter));
        waiters.extend(self.queued.drain(..).map(|(_, w)| w));
        waiters.extend(self.subscribes.drain(..).filter_map(|s| s.waiter));
        waiters.extend(self.unsubscribes.drain(..).map(|u| u.waiter));
        self.ids_in_use.clear();
        waiters
    }

    // -- internals -------------------------------------------------------------------------------

    /// PINGREQ goes out after this much silence from our side: `ping_delay` before the end of the
    /// keep-alive period (the whole period when `ping_delay` does not fit in it).
    pub(super) fn ping_interval(&self) -> Duration {
        let keep_alive = Duration::from_secs(u64::from(self.keep_alive));
        if self.options.ping_delay < keep_alive {
            keep_alive - self.options.ping_delay
        } else {
            keep_alive
        }
    }

    /// Queues `packet`; an MQTT 5 session writes it as its MQTT 5 form.
    pub(super) fn send(&mut self, packet: Packet, now: Instant) {
        if self.is_v5() {
            match self.to_v5(packet) {
                Some(packet) => self.send5(packet, now),
                // The state makes only a client's packets.
                None => log::error!("internal: a server's packet queued for sending"),
            }
            return;
        }
        if let Phase::Connected { last_sent, .. } = &mut self.phase {
            *last_sent = now;
        }
        self.transmit.push_back(packet);
    }

    pub(super) fn send5(&mut self, packet: v5::Packet, now: Instant) {
        if let Phase::Connected { last_sent, .. } = &mut self.phase {
            *last_sent = now;
        }
        self.transmit5.push_back(packet);
    }

    /// Queues the PUBLISH of `message` (MQTT 5: with its properties and a topic alias).
    fn send_publish(
        &mut self,
        message: Message,
        properties: Option<&Properties>,
        packet_id: Option<u16>,
        dup: bool,
        now: Instant,
    ) {
        if self.is_v5() {
            let packet = self.publish_v5(message, properties, packet_id, dup);
            self.send5(v5::Packet::Publish(packet), now);
        } else {
            self.send(Packet::Publish(Publish::new(message, packet_id, dup)), now);
        }
    }

    fn clear_transmit(&mut self) {
        self.transmit.clear();
        self.transmit5.clear();
    }

    /// A free packet identifier: the next one after the last handed out, skipping those in use.
    fn allocate_packet_id(&mut self) -> Option<u16> {
        if self.ids_in_use.len() >= usize::from(u16::MAX) {
            return None;
        }
        loop {
            let id = self.next_packet_id;
            self.next_packet_id = id.checked_add(1).unwrap_or(1);
            if self.ids_in_use.insert(id) {
                return Some(id);
            }
        }
    }

    pub(super) fn release_packet_id(&mut self, id: u16) {
        self.ids_in_use.remove(&id);
    }

    /// Moves queued messages onto the wire while connected: QoS 0 straight out, QoS 1/2 while an
    /// in-flight slot and a packet id are free. Order is kept.
    pub(super) fn pump(&mut self, now: Instant) {
        if !self.is_connected() {
            return;
        }
        while let Some((next, _)) = self.queued.front() {
            if let Some(failure) = self.publish_not_allowed(next) {
                if let Some((_, waiter)) = self.queued.pop_front() {
                    self.events.push_back(Event::PublishFailed(
                        waiter,
                        PublishFailure::NotAllowed(failure),
                    ));
                }
                continue;
            }
            let packet_id = if next.message.qos == QoS::AtMostOnce {
                None
            } else if self.inflight.len() >= self.inflight_limit() {
                break;
            } else {
                match self.allocate_packet_id() {
                    Some(id) => Some(id),
                    None => break,
                }
            };
            let Some((
                Outgoing {
                    message,
                    properties,
                },
                waiter,
            )) = self.queued.pop_front()
            else {
                break;
            };
            let Some(packet_id) = packet_id else {
                self.send_publish(message, properties.as_deref(), None, false, now);
                self.events.push_back(Event::Published(waiter));
                continue;
            };
            self.send_publish(
                message.clone(),
                properties.as_deref(),
                Some(packet_id),
                false,
                now,
            );
            let stage = if message.qos == QoS::AtLeastOnce {
                Awaiting::PubAck
            } else {
                Awaiting::PubRec
            };
            self.inflight.push_back(Inflight {
                packet_id,
                message,
                properties,
                stage,
                sent: true,
                waiter,
            });
        }
    }

    fn handle_connack(&mut self, ack: ConnAck, now: Instant) -> Result<(), ConnectionError> {
        if ack.code != ConnectReturnCode::Accepted {
            return Err(ConnectionError::Refused(ack.code));
        }
        self.accept_connection(ack.session_present, now);
        Ok(())
    }

    /// CONNACK accepted the connection (at any level): restore subscriptions and re-send what
    /// the previous connection left unacknowledged.
    pub(super) fn accept_connection(&mut self, session_present: bool, now: Instant) {
        self.phase = Phase::Connected {
            last_sent: now,
            ping_sent: None,
        };
        self.events.push_back(Event::Connected { session_present });
        if self.options.clean_session {
            // The broker forgot its half of any QoS 2 exchange; so do we.
            self.incoming_qos2.clear();
        }
        // Without a session on the broker, the subscriptions we hold must be made again.
        if !session_present && !self.subscriptions.is_empty() {
            let filters: Vec<SubscribeFilter> = self
                .subscriptions
                .iter()
                .map(|(filter, qos)| SubscribeFilter {
                    filter: filter.clone(),
                    qos: *qos,
                })
                .collect();
            if let Some(packet_id) = self.allocate_packet_id() {
                self.subscribes.push(PendingSubscribe {
                    packet_id,
                    filters,
                    waiter: None,
                });
            }
        }
        // Requests not acknowledged on the previous connection (or made while offline).
        let subscribes: Vec<Packet> = self
            .subscribes
            .iter()
            .map(|s| {
                Packet::Subscribe(Subscribe {
                    packet_id: s.packet_id,
                    filters: s.filters.clone(),
                })
            })
            .collect();
        let unsubscribes: Vec<Packet> = self
            .unsubscribes
            .iter()
            .map(|u| {
                Packet::Unsubscribe(Unsubscribe {
                    packet_id: u.packet_id,
                    filters: u.filters.clone(),
                })
            })
            .collect();
        for packet in subscribes.into_iter().chain(unsubscribes) {
            self.send(packet, now);
        }
        // Unacknowledged messages, oldest first [MQTT-4.4.0-1].
        for at in 0..self.inflight.len() {
            let m = &mut self.inflight[at];
            let packet_id = m.packet_id;
            match m.stage {
                Awaiting::PubAck | Awaiting::PubRec => {
                    let dup = m.sent;
                    m.sent = true;
                    let (message, properties) = (m.message.clone(), m.properties.clone());
                    self.send_publish(message, properties.as_deref(), Some(packet_id), dup, now);
                }
                Awaiting::PubComp => self.send(Packet::PubRel(PubRel { packet_id }), now),
            }
        }
        self.pump(now);
    }

    fn handle_publish(&mut self, publish: Publish, now: Instant) -> Result<(), ConnectionError> {
        let packet_id = publish.packet_id;
        let message = Delivery {
            dup: publish.dup,
            message: publish.into_message(),
            properties: None,
        };
        self.deliver(message, packet_id, now)
    }

    /// A received message: to the user (once, for QoS 2) and acknowledged.
    pub(super) fn deliver(
        &mut self,
        message: Delivery,
        packet_id: Option<u16>,
        now: Instant,
    ) -> Result<(), ConnectionError> {
        let qos = message.message.qos;
        match (qos, packet_id) {
            (QoS::AtMostOnce, _) => self.events.push_back(Event::Message(message)),
            (QoS::AtLeastOnce, Some(packet_id)) => {
                self.events.push_back(Event::Message(message));
                self.send(Packet::PubAck(PubAck { packet_id }), now);
            }
            (QoS::ExactlyOnce, Some(packet_id)) => {
                if self.incoming_qos2.insert(packet_id) {
                    self.events.push_back(Event::Message(message));
                }
                self.send(Packet::PubRec(PubRec { packet_id }), now);
            }
            // The codec guarantees a packet id for QoS > 0.
            (_, None) => return Err(violation("PUBLISH with QoS > 0 and no packet id".into())),
        }
        Ok(())
    }
}
