//! The model's bookkeeping of what the broker owes: each session's subscription spans (`history`),
//! its confirmed subscriptions, and the obligations that routing opens and reads settle or void.
//! Pure bookkeeping: nothing here talks to the cores, draws from the generator or fails the run.

use super::*;

impl Sim {
    /// A SUBSCRIBE or UNSUBSCRIBE touched filter `f`: it is no longer confirmed, and what was owed
    /// on topics it matches is owed no more (the delivery QoS may change mid-flight).
    pub(super) fn change_subscription(&mut self, c: usize, f: usize, to: Sub, number: u64) {
        let Some(session) = self.sessions[c].as_mut() else {
            return;
        };
        session.subs[f] = to;
        session.changed_by[f] = number;
        self.confirmed[f].remove(&c);
        let void: Vec<usize> = self.open[c]
            .iter()
            .copied()
            .filter(|&m| self.matches[self.msgs[m].topic][f])
            .collect();
        for m in void {
            self.settle(c, m, Obligation::Void);
        }
    }

    /// From this step on, the session holds filter `f` at `granted` (or not at all).
    pub(super) fn record_subscription(&mut self, c: usize, f: usize, granted: Option<QoS>) {
        let step = self.step;
        let Some(epoch) = self.sessions[c].as_ref().map(|s| s.epoch) else {
            return;
        };
        let Some(spans) = self.history.get_mut(&epoch).map(|h| &mut h[f]) else {
            return;
        };
        if let Some(open) = spans.last_mut().filter(|h| h.until.is_none()) {
            open.until = Some(step);
        }
        if let Some(granted) = granted {
            spans.push(Held {
                from: step,
                until: None,
                granted,
            });
        }
    }

    pub(super) fn settle(&mut self, c: usize, m: usize, to: Obligation) {
        if let Some(entry) = self.obligations.get_mut(&(c, m)) {
            if entry.1 == Obligation::Open {
                entry.1 = to;
            }
        }
        self.open[c].remove(&m);
    }

    /// The session of client `c` is gone: nothing more is owed to it.
    pub(super) fn end_session(&mut self, c: usize) {
        let Some(session) = self.sessions[c].take() else {
            return;
        };
        // What it had not acknowledged (as far as the broker knows) goes to another member.
        if let Some(got) = self.groups.member_got.remove(&c) {
            self.groups.handed_on.extend(got);
        }
        for f in 0..FILTERS.len() {
            if let Sub::Confirmed(_) = session.subs[f] {
                self.confirmed[f].remove(&c);
            }
        }
        let open: Vec<usize> = self.open[c].iter().copied().collect();
        for m in open {
            self.settle(c, m, Obligation::Void);
        }
    }

    /// The broker routed message `m`: every session holding a confirmed subscription that grants
    /// QoS ≥ 1 for it is owed a copy.
    pub(super) fn routed(&mut self, m: usize) {
        // It reached its publisher's shard now (its expiry counts from here, `msg_expiry.rs`).
        let home = self.clients[self.msgs[m].stream / 2].home;
        self.note_arrival(m, home, self.msgs[m].expiry);
        self.msgs[m].routings += 1;
        if self.msgs[m].routings == 1 {
            let stream = self.msgs[m].stream;
            self.stream_seq[stream] += 1;
            self.msgs[m].seq = self.stream_seq[stream];
            self.msgs[m].routed_at = self.step;
        }
        let (topic, qos) = (self.msgs[m].topic, self.msgs[m].qos);
        if self.msgs[m].retain {
            self.retained[topic] = Some(m);
        }
        if qos == QoS::AtMostOnce {
            return;
        }
        let mut owed: BTreeMap<usize, QoS> = BTreeMap::new();
        // A group owes no particular member (`mod.rs`, shared subscriptions).
        for f in 0..SHARED_FROM {
            if !self.matches[topic][f] {
                continue;
            }
            for (&c, &granted) in &self.confirmed[f] {
                let best = owed.entry(c).or_insert(granted);
                *best = (*best).max(granted);
            }
        }
        for (c, granted) in owed {
            if granted.min(qos) == QoS::AtMostOnce || self.obligations.contains_key(&(c, m)) {
                continue;
            }
            let Some(epoch) = self.sessions[c].as_ref().map(|s| s.epoch) else {
                continue;
            };
            self.obligations.insert((c, m), (epoch, Obligation::Open));
            self.open[c].insert(m);
        }
    }
}
