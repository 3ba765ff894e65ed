//! Persistence in the simulation: the harness plays the runtime's journal (takes a shard's records,
//! reports them durable later and out of step across shards), crashes the whole broker at chosen
//! steps and recovers it as `server/recovery.rs` does (without files), and checks what must hold
//! across a crash (replaying every record taken against the live state is `replay.rs`).
//!
//! Across a crash only the records reported durable survive, plus a prefix of those taken and not
//! yet reported (a torn tail). The invariants: a persistent session with a SUBACKed subscription
//! survives with it; a message acknowledged to its publisher (PUBACK, PUBREC) is still queued for
//! every session that was owed it; a QoS 2 id the publisher got PUBREC for is still held; a
//! retained message acknowledged to its publisher and not replaced is still retained. The model is
//! then rebuilt from what was recovered (sessions, subscriptions, incoming QoS 2 ids, retained).
//! Must not: drive client traffic (`clients.rs`) or check the live invariants (`checks.rs`).

use crate::persist::{DurableState, Record};

use super::*;

/// Wall-clock milliseconds of the simulation's start (any fixed value: stamps only move with it).
const WALL_BASE_MS: u64 = 1_800_000_000_000;

/// The journal as the harness keeps it, per shard.
pub(super) struct Durability {
    /// Batches taken and not yet reported durable, oldest first.
    taken: Vec<VecDeque<(u64, Vec<Record>)>>,
    /// What survives a crash: the snapshot of the last recovery, then every batch reported durable.
    durable: Vec<Vec<Record>>,
    /// Every record since the last recovery's snapshot, taken in order (`replay.rs`).
    pub(super) all: Vec<Vec<Record>>,
    /// Steps at which the broker crashes.
    pub(super) crash_at: Vec<usize>,
    pub(super) crashes: u64,
    /// The instant `WALL_BASE_MS` names.
    start: Instant,
    /// Queue-full drops counted by cores that crashed, per shard.
    pub(super) carried_drops: Vec<u64>,
}

impl Durability {
    pub(super) fn new(shards: usize, start: Instant) -> Durability {
        Durability {
            taken: (0..shards).map(|_| VecDeque::new()).collect(),
            durable: vec![Vec::new(); shards],
            all: vec![Vec::new(); shards],
            crash_at: Vec::new(),
            crashes: 0,
            start,
            carried_drops: vec![0; shards],
        }
    }

    pub(super) fn unix_ms(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.start).as_millis();
        WALL_BASE_MS + u64::try_from(since).unwrap_or(0)
    }
}

impl Sim {
    /// Gives a new core the wall-clock anchor the runtime gives it.
    pub(super) fn anchor_wall_clock(&mut self) {
        let Some(d) = self.durability.as_ref() else {
            return;
        };
        let unix = d.unix_ms(self.now);
        for core in &mut self.cores {
            core.set_wall_clock(self.now, unix);
        }
    }

    /// The runtime's journal task: takes a shard's records, or reports its oldest batches durable.
    pub(super) fn journal_step(&mut self) {
        let shard = self.rng.below(self.cores.len());
        if self.rng.chance(55) {
            self.take_journal(shard);
        } else {
            let count = 1 + self.rng.below(2);
            self.make_durable(shard, count);
        }
    }

    pub(super) fn take_journal(&mut self, shard: usize) -> bool {
        let Some(d) = self.durability.as_mut() else {
            return false;
        };
        let Some((batch, bytes)) = self.cores[shard].take_journal() else {
            return false;
        };
        let records = crate::persist::codec::decode_all(bytes).unwrap_or_else(|error| {
            panic!("shard {shard} made a journal that does not read: {error}")
        });
        d.all[shard].extend(records.iter().cloned());
        d.taken[shard].push_back((batch, records));
        self.note(format!("journal: shard {shard} batch {batch} taken"));
        true
    }

    /// Reports up to `count` of the shard's oldest taken batches durable.
    fn make_durable(&mut self, shard: usize, count: usize) -> bool {
        let Some(d) = self.durability.as_mut() else {
            return false;
        };
        let mut last = None;
        for _ in 0..count {
            let Some((batch, records)) = d.taken[shard].pop_front() else {
                break;
            };
            d.durable[shard].extend(records);
            last = Some(batch);
        }
        let Some(batch) = last else {
            return false;
        };
        self.note(format!(
            "journal: shard {shard} durable up to batch {batch}"
        ));
        self.cores[shard].handle_durable(batch);
        self.collect_actions();
        true
    }

    /// At rest: everything journaled is taken and durable. Whether anything was.
    pub(super) fn settle_journal(&mut self) -> bool {
        let mut progressed = false;
        for shard in 0..self.cores.len() {
            progressed |= self.take_journal(shard);
            progressed |= self.make_durable(shard, usize::MAX);
        }
        progressed
    }

    // ---- the crash ----------------------------------------------------------------------------------

    /// The whole broker stops at once: the cores are dropped, the durable records (and a torn part
    /// of the taken ones) are folded, merged and split, and new cores start from their parts.
    pub(super) fn crash(&mut self) {
        let shards = self.cores.len();
        let mut states = Vec::with_capacity(shards);
        let mut torn = Vec::new();
        for shard in 0..shards {
            let Some(d) = self.durability.as_ref() else {
                return;
            };
            let mut survivors = d.durable[shard].clone();
            let pending: Vec<Record> = d.taken[shard]
                .iter()
                .flat_map(|(_, records)| records.iter().cloned())
                .collect();
            // A torn tail: the write of the taken records stopped anywhere (or finished).
            let keep = if pending.is_empty() || self.rng.chance(40) {
                0
            } else {
                self.rng.below(pending.len() + 1)
            };
            torn.push(format!("{keep}/{}", pending.len()));
            survivors.extend(pending.into_iter().take(keep));
            let mut state = DurableState::default();
            for record in &survivors {
                state.apply(record);
            }
            states.push(state);
        }
        self.note(format!(
            "CRASH: every core stops; taken records kept per shard: {}",
            torn.join(", ")
        ));
        let mut merged = DurableState::merge(states);
        merged.finish();
        let parts = merged.split(shards, |id| home_shard(id, shards));
        self.check_recovered(&parts);
        self.reconcile_model(&parts);
        self.restart(parts);
    }

    /// What the broker promised before the crash is in the recovered state.
    fn check_recovered(&self, parts: &[DurableState]) {
        for (c, client) in self.clients.iter().enumerate() {
            let recovered = parts[client.home].sessions.get(client.id.as_str());
            if let Some(recovered) = recovered {
                self.check_recovered_expiry(c, recovered);
            }
            let Some(model) = self.sessions[c].as_ref().filter(|s| !s.clean) else {
                continue;
            };
            for (f, sub) in model.subs.iter().enumerate() {
                let Sub::Confirmed(granted) = *sub else {
                    continue;
                };
                let filter = TopicFilter::new(FILTERS[f]).expect("valid filter");
                let kept = recovered
                    .and_then(|s| s.subscriptions.get(&filter))
                    .map(|options| options.qos);
                if kept != Some(granted) {
                    fail!(
                        self,
                        "{}: SUBACKed {} at {granted:?} recovered as {kept:?} (session {})",
                        client.id,
                        FILTERS[f],
                        if recovered.is_some() { "kept" } else { "lost" }
                    );
                }
            }
            for out in &client.out {
                let pubrec_read = out.state == OutState::AwaitPubComp;
                if pubrec_read
                    && model.in_q2.contains(&out.packet_id)
                    && !recovered.is_some_and(|s| s.qos2_received.contains(&out.packet_id))
                {
                    fail!(
                        self,
                        "{}: PUBREC {} read, its QoS 2 id is not recovered",
                        client.id,
                        out.packet_id
                    );
                }
            }
            for (&packet_id, &m) in &client.held {
                if !client.in_q2.contains(&packet_id) {
                    continue;
                }
                let kept = recovered
                    .is_some_and(|s| s.queue.iter().any(|e| e.packet_id == Some(packet_id)));
                if !kept {
                    let queue: Vec<String> = recovered.map_or(Vec::new(), |s| {
                        s.queue
                            .iter()
                            .map(|e| format!("{:?} {:?}", e.message.payload, e.packet_id))
                            .collect()
                    });
                    fail!(
                        self,
                        "{}: holds QoS 2 id {packet_id} (m{m}) awaiting PUBREL, the broker \
                         forgot it (recovered queue {queue:?})",
                        client.id
                    );
                }
            }
            for &m in &self.open[c] {
                if !self.acked.contains(&m) {
                    continue;
                }
                let payload = payload_of(m);
                let queued =
                    recovered.is_some_and(|s| s.queue.iter().any(|e| e.message.payload == payload));
                let drops = self.dropped_queue_full(client.home);
                if !queued && drops == 0 && !self.may_have_expired(m, Some(client.home)) {
                    fail!(
                        self,
                        "{}: m{m} acknowledged to its publisher, owed to this session, not \
                         recovered",
                        client.id
                    );
                }
            }
        }
        if !self.retain_anywhere {
            for (t, topic) in self.topic_names.iter().enumerate() {
                let Some(m) = self.retained[t]
                    .filter(|&m| self.acked.contains(&m) && !self.may_have_expired(m, None))
                else {
                    continue;
                };
                let kept = parts[0]
                    .retained
                    .get(topic)
                    .and_then(|r| r.message.as_ref())
                    .map(|msg| msg.payload.clone());
                if kept != Some(payload_of(m)) {
                    fail!(
                        self,
                        "retained m{m} on {topic} acknowledged, recovered {kept:?}"
                    );
                }
            }
        }
    }

    /// Queue-full drops counted on `shard`, by this run's cores and those that crashed.
    pub(super) fn dropped_queue_full(&self, shard: usize) -> u64 {
        let carried = self
            .durability
            .as_ref()
            .map_or(0, |d| d.carried_drops[shard]);
        carried + self.cores[shard].stats.publish_dropped_queue_full
    }

    /// The model after the crash: connections gone, sessions and what they hold as recovered.
    fn reconcile_model(&mut self, parts: &[DurableState]) {
        for conn in self.conns.values_mut() {
            conn.active = false;
            conn.forgotten = true;
        }
        self.flush.clear();
        for queue in &mut self.bus {
            queue.clear();
        }
        // What was owed and not acknowledged to its publisher may be lost: a publisher re-sending
        // it opens new obligations.
        for c in 0..self.clients.len() {
            let unacked: Vec<usize> = self.open[c]
                .iter()
                .copied()
                .filter(|m| !self.acked.contains(m))
                .collect();
            for m in unacked {
                self.open[c].remove(&m);
                self.obligations.remove(&(c, m));
            }
        }
        for c in 0..self.clients.len() {
            self.clients[c].conn = None;
            let recovered = parts[self.clients[c].home]
                .sessions
                .get(self.clients[c].id.as_str());
            let persistent = self.sessions[c].as_ref().is_some_and(|s| !s.clean);
            // A session a clean CONNECT ended may come back when its end was not durable; the
            // client, never told it was gone (its CONNACKs wait for that), started anew.
            let resurrected = self.clients[c].drop_unconfirmed && recovered.is_some();
            self.clients[c].drop_unconfirmed = false;
            if !persistent || recovered.is_none() || resurrected {
                // A clean session ends with its connection, and so does what its client holds.
                self.end_session(c);
                let client = &mut self.clients[c];
                client.out.clear();
                client.in_q2.clear();
                client.held.clear();
            }
            let Some(recovered) = recovered else {
                continue;
            };
            if self.sessions[c].is_none() {
                // A persistent session whose end was not durable: the broker has it again. Its
                // client discarded what it held of it (it asked for a clean session), so the
                // messages it re-sends may reach the application a second time.
                for entry in recovered.queue.iter() {
                    if let Some(m) = msg_of(&entry.message.payload) {
                        self.rerouted.insert(m);
                    }
                }
                let epoch = self.next_epoch;
                self.next_epoch += 1;
                // Its queue was filled under the subscriptions of its earlier life: the spans of
                // this client's earlier sessions (closed now) cover what it may still send.
                let step = self.step;
                let mut spans: Vec<Vec<Held>> = vec![Vec::new(); FILTERS.len()];
                let epochs: BTreeSet<u64> = self
                    .conns
                    .values()
                    .filter(|m| m.client == c)
                    .map(|m| m.epoch)
                    .collect();
                for earlier in epochs.iter().filter_map(|e| self.history.get(e)) {
                    for (f, held) in earlier.iter().enumerate() {
                        spans[f].extend(held.iter().map(|h| Held {
                            until: Some(h.until.unwrap_or(step)),
                            ..*h
                        }));
                    }
                }
                self.history.insert(epoch, spans);
                self.sessions[c] = Some(SessionModel {
                    epoch,
                    clean: false,
                    conn: None,
                    subs: vec![Sub::None; FILTERS.len()],
                    changed_by: vec![0; FILTERS.len()],
                    in_q2: HashSet::new(),
                    offline_since: None,
                });
            }
            self.adopt_subscriptions(c, recovered);
            let now = self.now;
            if let Some(session) = self.sessions[c].as_mut() {
                session.conn = None;
                session.offline_since = Some(now);
                // Ids of PUBLISHes never answered with PUBREC may be lost: re-sent, they are routed
                // again (see `reroutable`).
                for out in &self.clients[c].out {
                    if out.state == OutState::AwaitPubRec
                        && session.in_q2.contains(&out.packet_id)
                        && !recovered.qos2_received.contains(&out.packet_id)
                    {
                        self.rerouted.insert(out.msg);
                    }
                }
                session.in_q2 = recovered.qos2_received.iter().copied().collect();
            }
        }
        // QoS 1 packet ids are not journaled: a QoS 1 message in flight at the crash goes out
        // again fresh, under any id. What a client holds of QoS 1 ids means nothing any more, and
        // "sent fresh at most as often as routed" counts from here.
        // (Retained copies sent after a SUBACK included: their QoS 2 ids are journaled too.)
        for client in &mut self.clients {
            let in_q2 = &client.in_q2;
            client.held.retain(|id, _| in_q2.contains(id));
        }
        for receipt in self.receipts.values_mut() {
            receipt.fresh = 0;
        }
        self.groups.fresh.clear();
        for (t, topic) in self.topic_names.iter().enumerate() {
            // One whose deadline a torn tail cut off is not restored (`recovery.rs`).
            self.retained[t] = parts[0]
                .retained
                .get(topic)
                .filter(|r| r.expires_at_unix_ms.is_some() || !msg_expiry::expires(r))
                .and_then(|r| r.message.as_ref())
                .and_then(|m| msg_of(&m.payload));
        }
        // New cores count from zero.
        self.wills = 0;
        self.takeovers = 0;
        self.timeouts = 0;
        for shard in 0..self.cores.len() {
            let drops = self.cores[shard].stats.publish_dropped_queue_full;
            if let Some(d) = self.durability.as_mut() {
                d.carried_drops[shard] += drops;
            }
            let expired = self.cores[shard].stats.publish_dropped_expired;
            self.expiring.carried_drops[shard] += expired;
        }
    }

    /// The session's filters as recovered: a confirmed one is there (checked), one whose SUBSCRIBE
    /// or UNSUBSCRIBE was not durable is as it was before it, and counts from this step.
    fn adopt_subscriptions(&mut self, c: usize, recovered: &crate::persist::Session) {
        for f in 0..FILTERS.len() {
            let filter = TopicFilter::new(FILTERS[f]).expect("valid filter");
            let kept = recovered.subscriptions.get(&filter).map(|o| o.qos);
            let Some(session) = self.sessions[c].as_ref() else {
                return;
            };
            let epoch = session.epoch;
            let held = self
                .history
                .get(&epoch)
                .and_then(|h| h[f].last().filter(|h| h.until.is_none()).map(|h| h.granted));
            match (session.subs[f], kept) {
                (Sub::Confirmed(_), _) => {}
                (_, None) => {
                    if let Some(session) = self.sessions[c].as_mut() {
                        session.subs[f] = Sub::None;
                    }
                    self.record_subscription(c, f, None);
                }
                (_, Some(granted)) => {
                    if let Some(session) = self.sessions[c].as_mut() {
                        session.subs[f] = Sub::Pending;
                    }
                    if held != Some(granted) {
                        self.record_subscription(c, f, Some(granted));
                    }
                }
            }
        }
    }

    /// New cores from the recovered parts, as the server starts them.
    fn restart(&mut self, parts: Vec<DurableState>) {
        let shards = parts.len();
        let filters: Vec<Vec<TopicFilter>> =
            parts.iter().map(DurableState::subscribed_filters).collect();
        let crashes = self.durability.as_ref().map_or(0, |d| d.crashes) + 1;
        let unix = self
            .durability
            .as_ref()
            .map_or(WALL_BASE_MS, |d| d.unix_ms(self.now));
        // A new process: the counters the shards share start from zero (what was in transit
        // or queued in the crashed one is gone with it).
        self.cfg.settings.flow = crate::broker::FlowGate::new();
        self.cfg.settings.memory =
            crate::broker::MemoryBudget::new(self.cfg.settings.memory.limit());
        self.cores = parts
            .iter()
            .enumerate()
            .map(|(shard, part)| {
                let mut core = BrokerCore::new(
                    self.cfg.settings.clone(),
                    shard,
                    shards,
                    self.seed.wrapping_add(crashes << 32),
                );
                core.set_wall_clock(self.now, unix);
                core.restore(part, self.now, unix);
                for (other, filters) in filters.iter().enumerate() {
                    if other != shard {
                        for filter in filters {
                            core.restore_remote_interest(other, filter);
                        }
                    }
                }
                core
            })
            .collect();
        let snapshots: Vec<Vec<Record>> = self
            .cores
            .iter()
            .map(BrokerCore::snapshot_records)
            .collect();
        if let Some(d) = self.durability.as_mut() {
            d.crashes = crashes;
            for (shard, snapshot) in snapshots.into_iter().enumerate() {
                d.taken[shard].clear();
                d.durable[shard] = snapshot.clone();
                d.all[shard] = snapshot;
            }
        }
        self.collect_actions();
        self.bus_used = true;
    }
}

/// Half the seeds run with persistence on (2, 3, 6, 7, …: both retain modes), or every seed with
/// `AMQTT_SIM_PERSIST=1`; the others keep the runs they had before persistence existed.
pub(super) fn persistent_seed(seed: u64) -> bool {
    seed % 4 >= 2 || std::env::var_os("AMQTT_SIM_PERSIST").is_some()
}

/// A short run crashed at each of its steps in turn (`AMQTT_SIM_CRASH_STEPS` sets its length):
/// whatever the broker was doing, recovery keeps what it promised.
#[test]
fn a_crash_at_every_step_of_a_short_run_keeps_what_was_promised() {
    if env_u64("AMQTT_SIM_SEED").is_some() {
        return; // a replay runs in the sweep above
    }
    let steps = env_u64("AMQTT_SIM_CRASH_STEPS").map_or(100, |s| s as usize);
    let mut crashes = 0;
    for seed in [2, 3] {
        for at in 1..=steps {
            let mut sim = Sim::with_persistence(seed, Some(steps), true);
            if let Some(d) = sim.durability.as_mut() {
                d.crash_at = vec![at];
            }
            sim.run();
            crashes += sim.durability.as_ref().map_or(0, |d| d.crashes);
        }
    }
    assert_eq!(crashes, 2 * steps as u64, "every run crashed once");
}
