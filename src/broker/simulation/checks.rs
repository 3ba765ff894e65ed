//! The invariants that look at the whole cluster: after each step (session placement, counters,
//! the flow gate's count of sessions behind, retained stores and interest tables once the bus is
//! empty) and at the end of a run (liveness:
//! every obligation met or excused, nothing left in flight, queued or waiting). Checks only read
//! (`check_after_step` resets `bus_used`, nothing else): they must not change the cores or what
//! the model expects.

use super::*;

impl Sim {
    // ---- invariants -------------------------------------------------------------------------------

    pub(super) fn check_after_step(&mut self) {
        if self.step.is_multiple_of(64) {
            self.check_all_sessions();
        }
        self.check_flow_gate();
        // Retained stores and interest tables change only through the bus: check them each time
        // it has just emptied.
        let bus_empty = self.bus_empty();
        if bus_empty && self.bus_used {
            self.bus_used = false;
            self.check_retained_equal();
            self.check_interest_tables();
            self.check_share_counts();
        }
    }

    /// Client `c`'s session is on its home shard only, as the model says.
    pub(super) fn check_session_placement(&self, c: usize) {
        let client = &self.clients[c];
        let model = self.sessions[c].as_ref();
        for (s, core) in self.cores.iter().enumerate() {
            let key = core.session_by_client_id.get(client.id.as_str()).copied();
            match (key, model) {
                (Some(_), _) if s != client.home => {
                    fail!(
                        self,
                        "session of {} on shard {s}, home is {}",
                        client.id,
                        client.home
                    )
                }
                (Some(_), None) => fail!(self, "session of {} should be gone", client.id),
                (None, Some(_)) if s == client.home => {
                    fail!(self, "session of {} is missing", client.id)
                }
                (Some(key), Some(m)) => {
                    let Some(session) = core.sessions.get(key) else {
                        fail!(self, "session table of shard {s} points nowhere");
                    };
                    if session.conn != m.conn || session.clean != m.clean {
                        fail!(
                            self,
                            "session of {}: conn {:?} clean {} but model {:?} {}",
                            client.id,
                            session.conn,
                            session.clean,
                            m.conn,
                            m.clean
                        );
                    }
                    if session.inflight_len() > usize::from(self.cfg.settings.max_inflight) {
                        fail!(self, "session of {} exceeds max_inflight", client.id);
                    }
                    // A session behind may hold more (`flow_control.rs`), never past this; a
                    // recovered session queues what was in flight at the crash too.
                    let crashed = self.durability.as_ref().is_some_and(|d| d.crashes > 0);
                    let extra = if crashed {
                        usize::from(self.cfg.settings.max_inflight)
                    } else {
                        0
                    };
                    if session.queued_len() - session.queued_retained()
                        > self.cfg.settings.max_queued_messages * flow_control::BEHIND_SLACK + extra
                    {
                        fail!(self, "session of {} exceeds max_queued_messages", client.id);
                    }
                }
                _ => {}
            }
        }
    }

    /// The shared count of sessions behind is the sum of the shards' own (`flow_control.rs`): a
    /// session that left without being uncounted would hold every publisher for good.
    fn check_flow_gate(&self) {
        let counted = self.cfg.settings.flow.behind();
        let behind: usize = self.cores.iter().map(BrokerCore::behind_count).sum();
        if counted != behind {
            fail!(
                self,
                "the flow gate counts {counted} sessions behind, the shards {behind}"
            );
        }
    }

    fn check_all_sessions(&self) {
        for c in 0..self.clients.len() {
            self.check_session_placement(c);
        }
        let sum = |f: fn(&Stats) -> u64| self.cores.iter().map(|core| f(&core.stats)).sum::<u64>();
        let counted = [
            sum(|s| s.wills_published),
            sum(|s| s.sessions_taken_over),
            sum(|s| s.keep_alive_timeouts),
        ];
        if counted != [self.wills, self.takeovers, self.timeouts] {
            fail!(
                self,
                "wills, takeovers, keep-alive timeouts counted {counted:?}, expected {:?}",
                [self.wills, self.takeovers, self.timeouts]
            );
        }
        let model = self.sessions.iter().filter(|s| s.is_some()).count();
        let broker: usize = self.cores.iter().map(|core| core.session_count()).sum();
        if model != broker {
            fail!(
                self,
                "{broker} sessions in the broker, {model} in the model"
            );
        }
        for (s, core) in self.cores.iter().enumerate() {
            let open = self
                .conns
                .values()
                .filter(|m| m.shard == s && !m.forgotten)
                .count();
            if core.connection_count() != open {
                fail!(
                    self,
                    "shard {s} holds {} connections, the model {open}",
                    core.connection_count()
                );
            }
        }
    }

    /// With the bus empty, every shard has seen every retained update.
    fn check_retained_equal(&self) {
        let all = TopicFilter::new("#").expect("valid filter");
        let stores: Vec<Vec<(TopicName, Bytes)>> = self
            .cores
            .iter()
            .map(|core| {
                core.retained
                    .matching(&all, None)
                    .into_iter()
                    .map(|m| (m.topic, m.payload))
                    // Each shard's deadline is its own (`msg_expiry.rs`).
                    .filter(|(_, payload)| !self.retained_volatile(payload))
                    .collect()
            })
            .collect();
        for (s, store) in stores.iter().enumerate().skip(1) {
            if *store != stores[0] {
                fail!(
                    self,
                    "retained differs between shard 0 and shard {s}: {:?} vs {:?}",
                    show_store(&stores[0]),
                    show_store(store)
                );
            }
        }
        if !self.retain_anywhere {
            let expected: Vec<(TopicName, Bytes)> = (0..TOPICS.len())
                .filter_map(|t| {
                    self.retained[t].map(|m| (self.topic_names[t].clone(), payload_of(m)))
                })
                .filter(|(t, _)| !t.as_str().starts_with('$'))
                .filter(|(_, payload)| !self.retained_volatile(payload))
                .collect();
            let mut expected = expected;
            expected.sort();
            if stores[0] != expected {
                fail!(
                    self,
                    "retained store {:?}, expected {:?}",
                    show_store(&stores[0]),
                    show_store(&expected)
                );
            }
        }
        for (topic, payload) in &stores[0] {
            let known = msg_of(payload)
                .and_then(|m| self.msgs.get(m))
                .is_some_and(|info| {
                    info.retain && info.routings > 0 && self.topic_names[info.topic] == *topic
                });
            if !known {
                fail!(
                    self,
                    "retained {topic} holds {payload:?}, never published retained there"
                );
            }
        }
    }

    /// With the bus empty, shard `b`'s table of shard `a`'s interest is exactly `a`'s filters.
    fn check_interest_tables(&self) {
        for (a, core_a) in self.cores.iter().enumerate() {
            let mut own: Vec<String> = core_a
                .subscriptions
                .iter()
                .into_iter()
                .map(|(f, _)| f)
                .collect();
            own.sort();
            for (b, core_b) in self.cores.iter().enumerate() {
                if a == b {
                    continue;
                }
                let mut known: Vec<String> = core_b.remote_interest[a]
                    .iter()
                    .into_iter()
                    .map(|(f, _)| f)
                    .collect();
                known.sort();
                if own != known {
                    fail!(
                        self,
                        "shard {b} thinks shard {a} wants {known:?}, it wants {own:?}"
                    );
                }
            }
        }
    }

    pub(super) fn check_final(&mut self) {
        self.check_all_sessions();
        // Missing deliveries per shard: of messages that may have expired there, of the others.
        let mut missing = vec![(0u64, 0u64); self.cfg.shards];
        let mut example = None;
        for (c, open) in self.open.iter().enumerate() {
            let home = self.clients[c].home;
            for &m in open {
                example.get_or_insert((c, m));
                if self.may_have_expired(m, Some(home)) {
                    missing[home].0 += 1;
                } else {
                    missing[home].1 += 1;
                }
            }
        }
        for (s, core) in self.cores.iter().enumerate() {
            let dropped = self.dropped_queue_full(s);
            let expired = self.dropped_expired(s);
            let (may_have_expired, others) = missing[s];
            if others > dropped || may_have_expired + others > dropped + expired {
                let (c, m) = example.unwrap_or_default();
                fail!(
                    self,
                    "shard {s}: {others} QoS ≥ 1 deliveries missing and {may_have_expired} of \
                     messages that may have expired, {dropped} drops counted for a full queue \
                     and {expired} for expiry (e.g. m{m} on {} for {})",
                    TOPICS[self.msgs[m].topic],
                    self.clients[c].id
                );
            }
            if core.inflight_count() != 0 || core.queued_count() != 0 {
                fail!(
                    self,
                    "shard {s} at rest still has {} in flight and {} queued",
                    core.inflight_count(),
                    core.queued_count()
                );
            }
            if !core.pending_tokens.is_empty() {
                fail!(
                    self,
                    "shard {s} at rest still waits for {:?}",
                    core.pending_tokens
                );
            }
            if core.connections.values().any(|c| c.has_pending_replies()) {
                fail!(self, "shard {s} at rest still holds replies back");
            }
            if core.behind_count() + core.stalled_count() != 0 {
                fail!(self, "shard {s} at rest still has sessions behind");
            }
            if self.cfg.settings.flow.in_transit() != 0 {
                fail!(self, "at rest, publishes are still counted in transit");
            }
        }
    }
}
