//! What a run reports: the [`Report`] (serialised as the `--json` object), the human summary
//! table, and the live progress line.

use std::fmt::Write as _;

use serde::Serialize;

use crate::engine::Errors;
use crate::placement::Placement;
use crate::stats::Percentiles;

/// Figures about the connections of a run (`conns`, and every run's initial connects).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConnectFigures {
    /// Clients that completed CONNECT (and SUBSCRIBE, if any).
    pub connections: u64,
    /// Clients that failed to connect.
    pub failed: u64,
    /// Wall time from the first connect to the last client ready, seconds.
    pub time_s: f64,
    /// Connections per second over that time.
    pub connect_per_s: f64,
    /// CONNECT → CONNACK latency.
    pub latency_us: Percentiles,
}

/// `storm` figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StormFigures {
    pub rounds: u64,
    pub reconnects: u64,
    pub reconnect_per_s: f64,
    /// Time for a whole round (all clients dropped and back), median and max, ms.
    pub round_ms_median: f64,
    pub round_ms_max: f64,
    /// CONNECT → CONNACK latency of reconnections.
    pub latency_us: Percentiles,
}

/// `retained` figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RetainedFigures {
    pub messages: u64,
    pub subscribers: u64,
    /// From SUBSCRIBE to the last retained message at the last subscriber, seconds.
    pub time_s: f64,
    /// Time to publish the retained set beforehand, seconds.
    pub preload_s: f64,
}

/// The generator's own CPU use during the measured window.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GeneratorFigures {
    pub threads: usize,
    pub cpus: Vec<usize>,
    pub cpu_s: f64,
    /// `cpu_s / (window × threads)`: near 1.0 means the generator may be the bottleneck.
    pub utilisation: f64,
}

/// The broker's figures (with `--broker-pid`): with several processes (a cluster's nodes and its
/// nats-server) CPU, memory and threads are their sums.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BrokerFigures {
    /// The (first) process.
    pub pid: u32,
    /// With several processes: each one's CPU seconds in the window (empty with one).
    pub processes: Vec<ProcessCpu>,
    /// CPU seconds used during the measured window.
    pub cpu_s: f64,
    /// `cpu_s / window`: 1.0 = one core busy.
    pub cpu_cores: f64,
    pub delivered_per_broker_cpu_s: f64,
    /// Peak resident memory (VmHWM at the end, or the largest sample if higher).
    pub peak_rss_kb: u64,
    pub rss_start_kb: u64,
    pub rss_end_kb: u64,
    /// `conns`: resident memory added per connection.
    pub rss_per_conn_bytes: Option<f64>,
    /// `conns`: connections made per broker CPU-second while connecting (the broker's cost of a
    /// connect, whether or not the generator could go faster).
    pub connects_per_broker_cpu_s: Option<f64>,
    pub threads: u64,
}

/// One broker process's CPU time in the measured window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ProcessCpu {
    pub pid: u32,
    pub cpu_s: f64,
}

/// One run's result. `--json` prints exactly this object.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub scenario: String,
    pub url: String,
    pub qos: u8,
    pub size: usize,
    pub clients: usize,
    pub publishers: usize,
    pub subscribers: usize,
    /// `closed` (as fast as the window allows) or `open` (fixed rate).
    pub mode: String,
    pub rate_per_publisher: Option<f64>,
    pub inflight: Option<u32>,
    pub warmup_s: f64,
    /// `--placement`: publishers on the same broker shard as their subscribers, a different one,
    /// or wherever their ids hash (`any`).
    pub placement: Placement,
    /// `--shards`: the broker's shard count, as given.
    pub shards: Option<usize>,
    /// With `--shards`: the run's clients counted by home shard.
    pub clients_per_shard: Option<Vec<u64>>,
    /// Length of the measured window, seconds.
    pub duration_s: f64,
    pub sent: u64,
    pub delivered: u64,
    pub sent_per_s: f64,
    pub delivered_per_s: f64,
    pub expected: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    /// End-to-end latency (µs) of messages sent in the window.
    pub latency_us: Percentiles,
    /// QoS 1/2: PUBLISH → PUBACK (QoS 1) or PUBCOMP (QoS 2) at the publisher (µs), of messages
    /// sent in the window: how long the broker takes to accept responsibility for a message.
    pub ack_latency_us: Option<Percentiles>,
    /// `--persistent`: subscribers had persistent sessions (clean session 0).
    pub persistent: bool,
    /// `--protocol`: the clients' MQTT version, 4 (3.1.1) or 5.
    pub protocol: u8,
    /// `--topic-alias`: MQTT 5 publishers used topic aliases.
    pub topic_alias: bool,
    pub connect: ConnectFigures,
    pub storm: Option<StormFigures>,
    pub retained: Option<RetainedFigures>,
    pub errors: Errors,
    pub errors_total: u64,
    pub generator: GeneratorFigures,
    pub broker: Option<BrokerFigures>,
    pub warnings: Vec<String>,
}

/// `1234567.0` → `1.23M`, `12345.0` → `12.3k`.
pub fn si(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.2}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// A latency in µs, printed in a readable unit.
pub fn dur_us(us: f64) -> String {
    if us >= 1e6 {
        format!("{:.2} s", us / 1e6)
    } else if us >= 1e3 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{us:.0} µs")
    }
}

/// A live progress line.
pub fn progress_line(
    elapsed_s: f64,
    phase: &str,
    sent_per_s: f64,
    delivered_per_s: f64,
    p99_us: Option<f64>,
    errors: u64,
    extra: &str,
) -> String {
    let p99 = p99_us.map_or_else(|| "-".to_string(), dur_us);
    format!(
        "[{elapsed_s:6.1}s] {phase:<8} sent {:>8}/s  delivered {:>8}/s  p99 {p99:>9}  errors {errors}{extra}",
        si(sent_per_s),
        si(delivered_per_s)
    )
}

impl Report {
    /// The human summary table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let mut row = |k: &str, v: String| {
            let _ = writeln!(s, "  {k:<26} {v}");
        };
        let mode = match (self.mode.as_str(), self.rate_per_publisher, self.inflight) {
            ("open", Some(r), _) => format!("open loop, {} msg/s per publisher", si(r)),
            (_, _, Some(w)) => format!("closed loop, window {w}"),
            (m, _, _) => m.to_string(),
        };
        row(
            "scenario",
            format!(
                "{} — {} clients ({} pub, {} sub), QoS {}, {} B, {}",
                self.scenario,
                self.clients,
                self.publishers,
                self.subscribers,
                self.qos,
                self.size,
                mode
            ) + if self.persistent {
                ", persistent subscribers"
            } else {
                ""
            } + match (self.protocol, self.topic_alias) {
                (5, true) => ", MQTT 5 with topic aliases",
                (5, false) => ", MQTT 5",
                _ => "",
            },
        );
        row("broker", self.url.clone());
        if self.placement != Placement::Any || self.clients_per_shard.is_some() {
            let what = match self.placement {
                Placement::Any => "any (normal client ids)",
                Placement::Same => "same shard (publisher with its subscribers)",
                Placement::Cross => "cross shard (publisher away from its subscribers)",
            };
            let spread = match (&self.clients_per_shard, self.shards) {
                (Some(counts), Some(n)) => format!(
                    ", {n} shards, clients per shard {}",
                    counts
                        .iter()
                        .map(u64::to_string)
                        .collect::<Vec<_>>()
                        .join("/")
                ),
                _ => String::new(),
            };
            row("placement", format!("{what}{spread}"));
        }
        row(
            "window",
            format!(
                "{:.2} s after {:.1} s warm-up",
                self.duration_s, self.warmup_s
            ),
        );
        if self.publishers > 0 || self.retained.is_some() {
            row("sent", format!("{} msg/s", si(self.sent_per_s)));
            row("delivered", format!("{} msg/s", si(self.delivered_per_s)));
            row(
                "accounting",
                format!(
                    "{} expected, {} lost, {} duplicated, {} out of order",
                    self.expected, self.lost, self.duplicated, self.out_of_order
                ),
            );
            let l = &self.latency_us;
            row(
                "latency",
                format!(
                    "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  ({} samples)",
                    dur_us(l.p50),
                    dur_us(l.p90),
                    dur_us(l.p99),
                    dur_us(l.p999),
                    dur_us(l.max),
                    l.count
                ),
            );
            if let Some(a) = &self.ack_latency_us {
                let ack = if self.qos == 2 { "PUBCOMP" } else { "PUBACK" };
                row(
                    &format!("publish → {ack}"),
                    format!(
                        "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  ({} samples)",
                        dur_us(a.p50),
                        dur_us(a.p90),
                        dur_us(a.p99),
                        dur_us(a.p999),
                        dur_us(a.max),
                        a.count
                    ),
                );
            }
        }
        let c = &self.connect;
        row(
            "connect",
            format!(
                "{} connected, {} failed, {} conn/s, CONNACK p50 {} p99 {}",
                c.connections,
                c.failed,
                si(c.connect_per_s),
                dur_us(c.latency_us.p50),
                dur_us(c.latency_us.p99)
            ),
        );
        if let Some(st) = &self.storm {
            row(
                "storm",
                format!(
                    "{} rounds, {} reconnects, {} reconnect/s, round median {:.1} ms max {:.1} ms",
                    st.rounds,
                    st.reconnects,
                    si(st.reconnect_per_s),
                    st.round_ms_median,
                    st.round_ms_max
                ),
            );
            row(
                "reconnect latency",
                format!(
                    "p50 {}  p99 {}  max {}",
                    dur_us(st.latency_us.p50),
                    dur_us(st.latency_us.p99),
                    dur_us(st.latency_us.max)
                ),
            );
        }
        if let Some(r) = &self.retained {
            row(
                "retained",
                format!(
                    "{} messages × {} subscribers in {:.3} s (preload {:.3} s)",
                    r.messages, r.subscribers, r.time_s, r.preload_s
                ),
            );
        }
        row(
            "errors",
            if self.errors_total == 0 {
                "0".to_string()
            } else {
                format!("{} {}", self.errors_total, error_detail(&self.errors))
            },
        );
        let g = &self.generator;
        row(
            "generator",
            format!(
                "{} threads on CPUs {:?}, {:.2} CPU-s ({:.0}% of its threads)",
                g.threads,
                g.cpus,
                g.cpu_s,
                g.utilisation * 100.0
            ),
        );
        if let Some(b) = &self.broker {
            let pids = if b.processes.is_empty() {
                format!("pid {}", b.pid)
            } else {
                let each: Vec<String> = b
                    .processes
                    .iter()
                    .map(|p| format!("{} {:.2}", p.pid, p.cpu_s))
                    .collect();
                format!("pids {} CPU-s, sum", each.join(" + "))
            };
            row(
                "broker process",
                format!(
                    "{pids}, {:.2} CPU-s ({:.2} cores), {} delivered/CPU-s",
                    b.cpu_s,
                    b.cpu_cores,
                    si(b.delivered_per_broker_cpu_s)
                ),
            );
            let mut mem = format!(
                "peak {} MiB, start {} MiB, end {} MiB",
                mib(b.peak_rss_kb),
                mib(b.rss_start_kb),
                mib(b.rss_end_kb)
            );
            if let Some(per) = b.rss_per_conn_bytes {
                let _ = write!(mem, ", {per:.0} B per connection");
            }
            row("broker memory", mem);
            if let Some(per_cpu_s) = b.connects_per_broker_cpu_s {
                row(
                    "broker connects",
                    format!("{} per broker CPU-s", si(per_cpu_s)),
                );
            }
        }
        for w in &self.warnings {
            row("warning", w.clone());
        }
        s
    }
}

fn mib(kb: u64) -> String {
    format!("{:.1}", kb as f64 / 1024.0)
}

/// `(connect_failed 2, disconnected 1)`: the non-zero error kinds.
pub fn error_detail(e: &Errors) -> String {
    let kinds = [
        ("connect_failed", e.connect_failed),
        ("connect_timeout", e.connect_timeout),
        ("connack_refused", e.connack_refused),
        ("suback_failed", e.suback_failed),
        ("disconnected", e.disconnected),
        ("protocol", e.protocol),
        ("window_stalls", e.window_stalls),
        ("session_lost", e.session_lost),
        ("foreign", e.foreign),
        ("tls", e.tls),
    ];
    let parts: Vec<String> = kinds
        .iter()
        .filter(|(_, v)| *v > 0)
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    format!("({})", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn si_formatting() {
        assert_eq!(si(0.0), "0");
        assert_eq!(si(12.5), "12.50");
        assert_eq!(si(950.0), "950");
        assert_eq!(si(12_345.0), "12.3k");
        assert_eq!(si(1_234_567.0), "1.23M");
        assert_eq!(si(2.5e9), "2.50G");
    }

    #[test]
    fn durations() {
        assert_eq!(dur_us(12.3), "12 µs");
        assert_eq!(dur_us(1_500.0), "1.50 ms");
        assert_eq!(dur_us(2_500_000.0), "2.50 s");
    }

    #[test]
    fn json_has_the_promised_fields() {
        let mut r = Report {
            scenario: "pairs".into(),
            ..Report::default()
        };
        r.broker = Some(BrokerFigures::default());
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        for k in [
            "sent_per_s",
            "delivered_per_s",
            "lost",
            "duplicated",
            "out_of_order",
        ] {
            assert!(v.get(k).is_some(), "missing {k}");
        }
        for k in ["p50", "p90", "p99", "p999", "max"] {
            assert!(v["latency_us"].get(k).is_some(), "missing latency_us.{k}");
        }
        for k in ["cpu_s", "delivered_per_broker_cpu_s", "peak_rss_kb"] {
            assert!(v["broker"].get(k).is_some(), "missing broker.{k}");
        }
    }

    #[test]
    fn table_mentions_errors_by_kind() {
        let r = Report {
            scenario: "pairs".into(),
            publishers: 1,
            errors: Errors {
                disconnected: 2,
                ..Errors::default()
            },
            errors_total: 2,
            ..Report::default()
        };
        let t = r.table();
        assert!(t.contains("disconnected 2"), "{t}");
        assert!(!t.contains("placement"), "{t}");
        assert!(t.contains("latency"), "{t}");
    }

    #[test]
    fn table_and_json_show_the_placement() {
        let r = Report {
            scenario: "pairs".into(),
            placement: Placement::Cross,
            shards: Some(2),
            clients_per_shard: Some(vec![4, 4]),
            ..Report::default()
        };
        let t = r.table();
        assert!(t.contains("cross shard"), "{t}");
        assert!(t.contains("2 shards, clients per shard 4/4"), "{t}");
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["placement"], "cross");
        assert_eq!(j["shards"], 2);
        assert_eq!(j["clients_per_shard"], serde_json::json!([4, 4]));
    }
}
