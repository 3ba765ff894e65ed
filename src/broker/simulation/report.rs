//! How a run is told: the step trace, the failure report with its replay command, the one-line
//! summary of a seed, and the descriptions of packets, bus messages and retained stores they use.
//! Nothing here changes the simulation beyond its trace, draws from the generator or checks
//! anything.

use std::fmt::Write as _;

use super::*;

impl Sim {
    pub(super) fn note(&mut self, what: String) {
        if self.trace_all {
            println!("[{}] {what}", self.step);
        }
        if self.trace.len() == TRACE_LEN {
            self.trace.pop_front();
        }
        self.trace.push_back(format!("[{}] {what}", self.step));
    }

    pub(super) fn fail(&self, what: String) -> ! {
        let mut report = String::new();
        let _ = writeln!(
            report,
            "simulation invariant violated (seed {}, step {}): {what}",
            self.seed, self.step
        );
        let _ = writeln!(
            report,
            "config: {} shards, {} clients, {:?}",
            self.cfg.shards, self.cfg.clients, self.cfg.settings
        );
        let _ = writeln!(report, "last steps:");
        for line in &self.trace {
            let _ = writeln!(report, "  {line}");
        }
        // A persistent run names its length and crash steps too (a test may have chosen them).
        let persistence = self.durability.as_ref().map_or(String::new(), |d| {
            let at: Vec<String> = d.crash_at.iter().map(usize::to_string).collect();
            format!(
                "AMQTT_SIM_PERSIST=1 AMQTT_SIM_STEPS={} AMQTT_SIM_CRASH_AT={} ",
                self.cfg.steps,
                at.join(",")
            )
        });
        let _ = writeln!(
            report,
            "replay: {persistence}AMQTT_SIM_SEED={} cargo test --lib broker::simulation -- \
             --nocapture",
            self.seed
        );
        panic!("{report}");
    }
}

impl Sim {
    /// One line on what a run exercised (printed for a single seed).
    pub(super) fn summary(&self) -> String {
        let count = |o: Obligation| self.obligations.values().filter(|v| v.1 == o).count();
        let stats = self.cores.iter().fold(Stats::default(), |mut sum, core| {
            let s = &core.stats;
            sum.connections_accepted += s.connections_accepted;
            sum.sessions_taken_over += s.sessions_taken_over;
            sum.keep_alive_timeouts += s.keep_alive_timeouts;
            sum.protocol_errors += s.protocol_errors;
            sum.wills_published += s.wills_published;
            sum.publish_received += s.publish_received;
            sum.publish_sent += s.publish_sent;
            sum.publish_dropped_queue_full += s.publish_dropped_queue_full;
            sum.publish_dropped_offline += s.publish_dropped_offline;
            sum.publish_dropped_expired += s.publish_dropped_expired;
            sum.bus_sent += s.bus_sent;
            sum
        });
        format!(
            "seed {}: {} steps, {} shards, {} clients; {} connects, {} takeovers, {} keep-alive \
             timeouts, {} protocol errors, {} wills; {} publishes in ({} routed in place), {} out, \
             {} bus messages; dropped {} (queue full) + {} (offline QoS 0) + {} (expired); QoS ≥ 1 \
             owed {}: met {}, void {}; {}% MQTT 5 clients, {} copies read counted down",
            self.seed,
            self.step,
            self.cfg.shards,
            self.cfg.clients,
            stats.connections_accepted,
            stats.sessions_taken_over,
            stats.keep_alive_timeouts,
            stats.protocol_errors,
            stats.wills_published,
            stats.publish_received,
            self.published_in_place,
            stats.publish_sent,
            stats.bus_sent,
            stats.publish_dropped_queue_full,
            stats.publish_dropped_offline,
            stats.publish_dropped_expired,
            self.obligations.len(),
            count(Obligation::Met),
            count(Obligation::Void),
            self.v5.percent,
            self.expiring.counted_down,
        )
    }
}

pub(super) fn describe(packet: &Packet) -> String {
    match packet {
        Packet::Publish(p) => format!(
            "PUBLISH {} q{} id {:?}{}{} {}",
            p.topic,
            p.qos as u8,
            p.packet_id,
            if p.dup { " dup" } else { "" },
            if p.retain { " retain" } else { "" },
            String::from_utf8_lossy(&p.payload)
        ),
        Packet::Subscribe(s) => format!(
            "SUBSCRIBE {} {:?}",
            s.packet_id,
            s.filters
                .iter()
                .map(|f| format!("{} q{}", f.filter, f.qos as u8))
                .collect::<Vec<_>>()
        ),
        Packet::Unsubscribe(u) => format!(
            "UNSUBSCRIBE {} {:?}",
            u.packet_id,
            u.filters.iter().map(|f| f.as_str()).collect::<Vec<_>>()
        ),
        other => format!("{other:?}"),
    }
}

pub(super) fn describe_bus(message: &BusMessage) -> String {
    match message {
        BusMessage::Publish(m) | BusMessage::Retained { message: m, .. } => format!(
            "publish {} q{}{} {}",
            m.topic,
            m.qos as u8,
            if m.retain { " retain" } else { "" },
            String::from_utf8_lossy(&m.payload)
        ),
        BusMessage::Publishes(batch, _) => batch
            .iter()
            .map(|p| {
                format!(
                    "publish {} q{} {}",
                    String::from_utf8_lossy(p.topic),
                    p.qos as u8,
                    String::from_utf8_lossy(p.payload)
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
        other => format!("{other:?}"),
    }
}

pub(super) fn show_store(store: &[(TopicName, Bytes)]) -> Vec<String> {
    store
        .iter()
        .map(|(t, p)| format!("{t}={}", String::from_utf8_lossy(p)))
        .collect()
}
