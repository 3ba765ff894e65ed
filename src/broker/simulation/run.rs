//! The run: choosing each step (bus delivery, an output flush, a client's step, time), carrying
//! the cores' actions to the bus and the flush set, reading outboxes, ticking the clock, and
//! bringing the cluster to rest at the end. What a client does and what it reads live in
//! `clients.rs` and `reads.rs`. It fails only on what a step itself must hold (decodable output,
//! closes the model noticed, keep-alive expiries); the cluster-wide invariants are `checks.rs`'s.

use super::*;

impl Sim {
    // ---- the run ----------------------------------------------------------------------------------

    pub(super) fn run(&mut self) {
        for _ in 0..self.cfg.steps {
            self.step += 1;
            // A distinct instant per step keeps keep-alive deadlines apart (see `tick`).
            self.now += Duration::from_nanos(1);
            let bus_waiting = !self.bus_empty();
            let crash = self
                .durability
                .as_ref()
                .is_some_and(|d| d.crash_at.contains(&self.step));
            let weights = [
                if bus_waiting { 30 } else { 0 },
                if self.flush.is_empty() { 0 } else { 25 },
                45,
                4,
                if self.durability.is_some() { 10 } else { 0 },
            ];
            if crash {
                self.crash();
            } else {
                match self.rng.weighted(&weights) {
                    0 => self.deliver_bus(),
                    1 => self.flush_one(),
                    2 => self.client_step(),
                    3 => self.tick(),
                    _ => self.journal_step(),
                }
            }
            if self.durability.is_some() && self.step.is_multiple_of(97) {
                self.check_replay();
            }
            self.check_after_step();
        }
        self.drain();
        if self.durability.is_some() {
            self.check_replay();
        }
        self.check_final();
    }

    /// The queue of messages from `from` to `to` on one lane. Each keeps its order, as one sender's
    /// messages do on a crossbeam lane; messages of different senders or lanes may overtake each
    /// other (a full lane delays a sender; the receiver drains control and data as they come).
    fn bus_queue(&self, to: usize, from: usize, lane: Lane) -> usize {
        (to * self.cores.len() + from) * 2 + usize::from(lane == Lane::Data)
    }

    pub(super) fn bus_empty(&self) -> bool {
        self.bus.iter().all(VecDeque::is_empty)
    }

    /// Moves the cores' actions into the bus queues and the flush set.
    pub(super) fn collect_actions(&mut self) {
        for shard in 0..self.cores.len() {
            let mut actions = std::mem::take(&mut self.actions);
            self.cores[shard].poll_actions(&mut actions);
            let mut batch: Vec<(usize, BusMessage)> = Vec::new();
            for action in actions.drain(..) {
                match action {
                    Action::Flush(conn) => {
                        self.flush.insert(conn);
                    }
                    Action::Bus { to, message } => batch.push((to, message)),
                    // No client waits in the model: a held PUBLISH is handed over again at once
                    // (`handle_encoded`), as after a hold that timed out.
                    Action::ResumePublishers => {}
                }
            }
            self.actions = actions;
            canonical_interest_order(&mut batch);
            for (to, message) in batch {
                if self.trace_all && message.lane() == Lane::Control {
                    let what = describe_bus(&message);
                    self.note(format!("shard {shard} → bus → shard {to}: {what}"));
                }
                self.bus_used = true;
                let queue = self.bus_queue(to, shard, message.lane());
                self.bus[queue].push_back(message);
            }
        }
    }

    fn deliver_bus(&mut self) {
        let ready: Vec<usize> = (0..self.bus.len())
            .filter(|&q| !self.bus[q].is_empty())
            .collect();
        if ready.is_empty() {
            return;
        }
        let queue = ready[self.rng.below(ready.len())];
        let to = queue / 2 / self.cores.len();
        let Some(message) = self.bus[queue].pop_front() else {
            return;
        };
        let what = describe_bus(&message);
        self.note(format!("bus → shard {to}: {what}"));
        self.note_bus_arrivals(to, &message);
        self.cores[to].handle_bus(message);
        self.collect_actions();
    }

    fn flush_one(&mut self) {
        let at = self.rng.below(self.flush.len());
        let Some(&conn) = self.flush.iter().nth(at) else {
            return;
        };
        self.flush_conn(conn);
        // Clients usually answer what they read right away.
        let client = self.conns.get(&conn).map(|c| c.client);
        if let Some(c) = client {
            if self.clients[c].conn == Some(conn) && self.rng.chance(60) {
                self.send_pending(c, usize::MAX);
            }
        }
    }

    /// Takes a connection's outbox, lets its client read it, and ends it when the broker closed it.
    fn flush_conn(&mut self, conn: ConnId) {
        self.flush.remove(&conn);
        let Some(model) = self.conns.get(&conn) else {
            fail!(self, "flush for unknown connection {conn}");
        };
        let shard = model.shard;
        let filled = self.cores[shard]
            .connections
            .get(&conn)
            .map_or(0, |c| c.outbox.len());
        let Some((mut bytes, close)) = self.cores[shard].take_outbox(conn) else {
            if !model.forgotten {
                fail!(
                    self,
                    "connection {conn} unknown to shard {shard} but not closed"
                );
            }
            return;
        };
        if model.forgotten {
            fail!(self, "forgotten connection {conn} still has an outbox");
        }
        if close && model.active {
            fail!(self, "connection {conn} closed without the model noticing");
        }
        let c = model.client;
        let taken = !bytes.is_empty();
        let packets = self.decode_outbox(conn, self.clients[c].v5, &mut bytes);
        let seen: Vec<(Packet, Seen)> = packets
            .into_iter()
            .map(|(read, end)| {
                let seen = Seen {
                    expiry: read.expiry,
                    written_after: self.written_after(conn, end),
                    read_at: self.now,
                };
                (read.packet, seen)
            })
            .collect();
        // What is in the outbox now was written from now on (a held outbox kept its bytes).
        if taken || filled == 0 {
            let now = self.now;
            if let Some(m) = self.conns.get_mut(&conn) {
                m.marks = vec![(0, now)];
            }
        }
        self.note(format!(
            "flush {conn} ({}): {} packets{}",
            self.clients[c].id,
            seen.len(),
            if close { ", close" } else { "" }
        ));
        for (packet, seen) in seen {
            self.read_packet(conn, packet, seen);
        }
        if close {
            // The runtime's writer shuts the socket after the last flush; the core forgets it.
            self.cores[shard].handle_closed(conn);
            self.collect_actions();
            if let Some(m) = self.conns.get_mut(&conn) {
                m.forgotten = true;
            }
            if self.clients[c].conn == Some(conn) {
                self.clients[c].conn = None;
            }
        }
    }

    fn tick(&mut self) {
        let advance = Duration::from_millis(200 + self.rng.below(8000) as u64);
        let target = self.now + advance;
        self.mark_outboxes();
        // Clients ping when their keep-alive period is about to pass (most of the time).
        for c in 0..self.clients.len() {
            let Some(conn) = self.live_conn(c) else {
                continue;
            };
            let (ka, last) = {
                let m = &self.conns[&conn];
                (m.keep_alive, m.last_activity)
            };
            if ka > 0 && last + Duration::from_secs(u64::from(ka)) <= target && self.rng.chance(85)
            {
                self.now += Duration::from_nanos(1);
                self.send(c, Packet::PingReq);
            }
        }
        self.note(format!("tick +{advance:?}"));
        // Deadlines one at a time, so that the order of expiries is the deadlines' and not the
        // iteration order of a hash map (replay must be exact).
        loop {
            let next = self
                .conns
                .iter()
                .filter(|(_, m)| m.active && m.keep_alive > 0)
                .map(|(&id, m)| (m.last_activity + keep_alive_limit(m.keep_alive), id))
                .min();
            match next {
                Some((deadline, _)) if deadline < target => {
                    self.now = deadline + Duration::from_nanos(1);
                    self.tick_cores();
                }
                _ => break,
            }
        }
        self.now = target;
        self.tick_cores();
    }

    fn tick_cores(&mut self) {
        for core in &mut self.cores {
            core.handle_tick(self.now);
        }
        self.collect_actions();
        let active: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, m)| m.active)
            .map(|(&id, _)| id)
            .collect();
        self.sync_closes(&active);
        self.check_expiry();
        self.check_retained_purged();
        // None left that should have expired.
        for (&id, m) in &self.conns {
            if m.active
                && m.keep_alive > 0
                && self.now - m.last_activity > keep_alive_limit(m.keep_alive)
            {
                fail!(self, "connection {id} outlived its keep-alive");
            }
        }
    }

    /// The client's connection if the broker still serves it.
    pub(super) fn live_conn(&self, c: usize) -> Option<ConnId> {
        self.clients[c]
            .conn
            .filter(|conn| self.conns.get(conn).is_some_and(|m| m.active))
    }

    /// Brings everything to rest: the bus delivered, outboxes read and answered, every persistent
    /// session reconnected.
    fn drain(&mut self) {
        self.note("drain".into());
        for _ in 0..10_000 {
            let mut progressed = self.settle_journal();
            while !self.bus_empty() {
                self.step += 1;
                self.deliver_bus();
                progressed = true;
            }
            while let Some(&conn) = self.flush.iter().next() {
                self.step += 1;
                self.flush_conn(conn);
                progressed = true;
            }
            for c in 0..self.clients.len() {
                if self.live_conn(c).is_some() {
                    if !self.clients[c].pending.is_empty() {
                        self.step += 1;
                        self.send_pending(c, usize::MAX);
                        progressed = true;
                    }
                } else if self.sessions[c].as_ref().is_some_and(|s| !s.clean) {
                    self.step += 1;
                    self.connect_with(c, false, 0, None);
                    progressed = true;
                }
            }
            self.check_after_step();
            if !progressed {
                return;
            }
        }
        fail!(self, "the cluster never came to rest");
    }
}
