//! The Prometheus side of the control shard: metric families (names, HELP, TYPE), turning the data
//! shards' snapshots into `metrics` counters and gauges once per second, and rendering the text
//! exposition format for `/metrics`.
//!
//! The recorder is a *local* `metrics-exporter-prometheus` recorder owned by the control shard (not
//! the process-global one), so several brokers in one process (tests) each export their own numbers.
//! Data shards never call into `metrics`: they keep plain counters (see `snapshot.rs`), and this
//! module copies them with `Counter::absolute` / `Gauge::set`.
//!
//! One family is rendered here directly instead of through the recorder: the publish-to-deliver
//! latency histogram. Shards bucket it themselves (plain counters again), and the exporter's
//! histograms only accept individual samples, so its bucket lines are appended to the exporter's
//! output in the standard histogram form.
//!
//! The standard `process_*` families (memory, CPU, descriptors, start time) come from
//! `process.rs`, read from `/proc/self` at each scrape, after the broker's own.
//!
//! Naming: `amqtt_` prefix, `_total` on counters, base units (`_seconds`, `_bytes`), a `shard`
//! label on everything that is per shard. The output passes `promtool check metrics`.

mod cluster;
pub(crate) mod process;

use std::fmt::Write as _;

use crate::broker::MemoryBudget;
use metrics::{counter, describe_counter, describe_gauge, gauge, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use super::runtime_stats::{LatencyHistogram, LATENCY_BOUNDS_NS};
use super::snapshot::{dropped, ShardSnapshot, Totals};

/// Name of the hand-rendered histogram family.
pub(crate) const LATENCY_FAMILY: &str = "amqtt_publish_delivery_latency_seconds";

const LATENCY_HELP: &str = "Time from reading a PUBLISH off a client socket (or, on the subscriber's \
shard, from its origin shard's read) to writing the delivery to a subscriber's socket. One sample per \
socket write, for the oldest PUBLISH in it.";

/// Reasons of `amqtt_connections_rejected_total` that come from a CONNACK return code, by code.
const REFUSAL_REASONS: [(usize, &str); 5] = [
    (1, "unacceptable_protocol_version"),
    (2, "identifier_rejected"),
    (3, "server_unavailable"),
    (4, "bad_username_or_password"),
    (5, "not_authorized"),
];

/// The control shard's exporter: the local recorder and a handle to render it.
pub(crate) struct Exporter {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

/// Per-shard numbers the control shard reads itself (not from the snapshot).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct BusDepth {
    pub data: usize,
    pub control: usize,
}

/// Values that belong to the whole broker rather than to one shard.
pub struct BrokerWide<'a> {
    pub uptime_seconds: f64,
    pub clients_maximum: u64,
    pub memory: &'a MemoryBudget,
    /// The bridges' counters (`bridge/`), labelled by bridge name.
    pub bridges: &'a [std::sync::Arc<crate::bridge::BridgeStats>],
    /// The cluster link's counters (`cluster/`), when this broker is a cluster node.
    pub cluster: Option<&'a crate::cluster::ClusterStats>,
}

impl Exporter {
    pub fn new() -> Exporter {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let exporter = Exporter { recorder, handle };
        metrics::with_local_recorder(&exporter.recorder, describe_all);
        exporter
    }

    /// Drains the exporter's internal buffers; call every few seconds.
    pub fn run_upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// Copies one round of snapshots (and the broker-wide values) into the recorder.
    pub fn update(
        &self,
        shards: &[ShardSnapshot],
        bus: &[BusDepth],
        totals: &Totals,
        broker: BrokerWide<'_>,
        now: std::time::Instant,
    ) {
        let BrokerWide {
            uptime_seconds,
            clients_maximum,
            memory,
            bridges,
            cluster,
        } = broker;
        metrics::with_local_recorder(&self.recorder, || {
            gauge!("amqtt_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            gauge!("amqtt_uptime_seconds").set(uptime_seconds);
            gauge!("amqtt_shards").set(shards.len() as f64);
            gauge!("amqtt_retained_messages").set(totals.retained as f64);
            gauge!("amqtt_clients_maximum").set(clients_maximum as f64);
            // With a limit the budget's live count; without one the budget counts nothing and
            // the shards' once-a-second sums of the same bytes stand in.
            let used = match memory.limit() {
                Some(_) => memory.used() as u64,
                None => totals.memory_bytes,
            };
            gauge!("amqtt_memory_used_bytes").set(used as f64);
            gauge!("amqtt_memory_limit_bytes").set(memory.limit().unwrap_or(0) as f64);
            counter!("amqtt_publisher_pauses_total").absolute(memory.pauses());
            for bridge in bridges {
                update_bridge(bridge);
            }
            if let Some(cluster) = cluster {
                cluster::update(cluster);
            }
            for (n, s) in shards.iter().enumerate() {
                let depth = bus.get(n).copied().unwrap_or_default();
                update_shard(&n.to_string(), s, depth);
                let age = s.taken.map_or(uptime_seconds, |taken| {
                    now.saturating_duration_since(taken).as_secs_f64()
                });
                gauge!("amqtt_shard_report_age_seconds", "shard" => n.to_string()).set(age);
            }
        });
    }

    /// The whole `/metrics` body: families sorted by name, series sorted within each family.
    pub fn render(&self, shards: &[ShardSnapshot]) -> String {
        let mut out = sorted(&self.handle.render());
        let latencies: Vec<LatencyHistogram> = shards.iter().map(|s| s.runtime.latency).collect();
        render_latency(&mut out, &latencies);
        out.push('\n');
        process::ProcessStats::read().render(&mut out);
        out
    }
}

/// One bridge's series.
fn update_bridge(bridge: &crate::bridge::BridgeStats) {
    let name = bridge.name.clone();
    gauge!("amqtt_bridge_connected", "bridge" => name.clone()).set(if bridge.connected() {
        1.0
    } else {
        0.0
    });
    counter!("amqtt_bridge_messages_total", "bridge" => name.clone(), "direction" => "out")
        .absolute(bridge.messages_out());
    counter!("amqtt_bridge_messages_total", "bridge" => name.clone(), "direction" => "in")
        .absolute(bridge.messages_in());
    counter!("amqtt_bridge_echoes_dropped_total", "bridge" => name)
        .absolute(bridge.echoes_dropped());
}

fn describe_all() {
    cluster::describe();
    describe_gauge!(
        "amqtt_bridge_connected",
        "1 while the bridge is connected to the remote broker and to this one, else 0."
    );
    describe_counter!(
        "amqtt_bridge_messages_total",
        "Messages a bridge carried: out = acknowledged by the remote broker, in = published here."
    );
    describe_counter!(
        "amqtt_bridge_echoes_dropped_total",
        "Copies of a bridge's own messages handed back by a broker and not carried again (loop prevention)."
    );
    describe_gauge!(
        "amqtt_build_info",
        "Always 1; the version label is the broker's version."
    );
    describe_gauge!(
        "amqtt_uptime_seconds",
        Unit::Seconds,
        "Seconds since the broker started."
    );
    describe_gauge!("amqtt_shards", "Number of data shards (broker threads).");
    describe_gauge!(
        "amqtt_shard_report_age_seconds",
        Unit::Seconds,
        "Seconds since the shard last reported its counters: about 1 when healthy, growing while its event loop is blocked."
    );
    describe_gauge!(
        "amqtt_retained_messages",
        "Retained messages held (every shard keeps the full store; the $SYS tree is not counted)."
    );
    describe_gauge!(
        "amqtt_clients_maximum",
        "Highest number of connected clients seen since start (sampled once per second)."
    );
    describe_gauge!(
        "amqtt_connections_open",
        "Client connections open on the shard (CONNECT accepted and not yet closed)."
    );
    describe_counter!(
        "amqtt_connections_accepted_total",
        "Connections whose CONNECT was accepted (CONNACK 0)."
    );
    describe_counter!(
        "amqtt_connections_rejected_total",
        "Connections refused: by a listener's max-connections, or by a CONNACK return code (the reason)."
    );
    describe_counter!(
        "amqtt_handshake_failures_total",
        "Connections that ended before a CONNECT was read: no CONNECT within connect_timeout, a malformed one, a failed TLS handshake / WebSocket upgrade, a missing or malformed PROXY protocol header, or closed by the peer first (port probes)."
    );
    describe_counter!(
        "amqtt_auth_failures_total",
        "CONNECTs refused with 'bad user name or password' or 'not authorized'."
    );
    describe_counter!(
        "amqtt_malformed_packets_total",
        "Connections closed for a malformed or out-of-order packet (before or after CONNECT)."
    );
    describe_counter!(
        "amqtt_keepalive_timeouts_total",
        "Connections closed because no packet arrived within 1.5 x the keep-alive."
    );
    describe_counter!(
        "amqtt_credentials_expired_total",
        "Connections closed because their credentials expired (a JSON Web Token's exp)."
    );
    describe_counter!(
        "amqtt_sessions_taken_over_total",
        "Connections closed because the same client id connected again."
    );
    describe_counter!(
        "amqtt_sessions_expired_total",
        "Persistent sessions discarded (with their queues) because their client stayed away longer than session_expiry_interval."
    );
    describe_counter!(
        "amqtt_connection_panics_total",
        "Connection tasks that panicked (a broker bug; only that connection was closed)."
    );
    describe_gauge!(
        "amqtt_sessions",
        "Sessions on the shard: online (client connected) or offline (persistent, client away)."
    );
    describe_gauge!(
        "amqtt_subscriptions",
        "Subscriptions (filter, session) held on the shard."
    );
    describe_gauge!(
        "amqtt_inflight_messages",
        "Outgoing QoS 1/2 messages sent and not yet acknowledged."
    );
    describe_gauge!(
        "amqtt_queued_messages",
        "Outgoing messages waiting in session queues behind the in-flight window or for an offline client."
    );
    describe_counter!(
        "amqtt_messages_received_total",
        "PUBLISH packets received from clients, by QoS."
    );
    describe_counter!(
        "amqtt_messages_sent_total",
        "PUBLISH packets sent to clients (re-sends included), by QoS."
    );
    describe_counter!(
        "amqtt_messages_dropped_total",
        "Messages not delivered, by reason: a full session queue (messages or bytes), memory_limit, QoS 0 for an offline session, QoS 0 \
         for a subscriber not reading (outbox full), QoS 0 on a full cross-shard lane, or a client \
         publishing into $SYS."
    );
    describe_counter!("amqtt_wills_published_total", "Will messages published.");
    describe_counter!(
        "amqtt_connect_rate_waits_total",
        "Times an accept loop waited because a listener's max_connect_rate was reached."
    );
    describe_gauge!(
        "amqtt_memory_used_bytes",
        "Payload bytes in session queues, the retained store and outboxes (all shards): what memory_limit counts. Without a limit, the shards' sums of once a second."
    );
    describe_gauge!(
        "amqtt_memory_limit_bytes",
        "The memory_limit setting (0: none)."
    );
    describe_counter!(
        "amqtt_publisher_pauses_total",
        "Times a publisher's socket stopped being read because memory_limit was nearly reached."
    );
    describe_counter!(
        "amqtt_publishers_held_total",
        "Times a QoS 1/2 publisher's socket stopped being read because a subscriber was behind (flow control)."
    );
    describe_counter!(
        "amqtt_shared_deliveries_total",
        "Messages given to one member of a share group ($share/...), counted on the member's shard."
    );
    describe_counter!(
        "amqtt_shared_redistributed_total",
        "Messages for a share group sent on to another member: their member's session ended unacknowledged, or the member chosen had left."
    );
    describe_counter!(
        "amqtt_subscribers_stalled_total",
        "Times a subscriber behind acknowledged nothing for a second (or stayed behind for ten) and was marked stalled: it holds no publisher back, its queue drops what does not fit."
    );
    describe_counter!(
        "amqtt_packets_received_total",
        "MQTT packets received (CONNECT included)."
    );
    describe_counter!(
        "amqtt_packets_sent_total",
        "MQTT packets sent (CONNACK included)."
    );
    describe_counter!(
        "amqtt_bytes_received_total",
        Unit::Bytes,
        "Bytes read from client sockets after the CONNECT packet."
    );
    describe_counter!(
        "amqtt_bytes_sent_total",
        Unit::Bytes,
        "Bytes handed to client sockets."
    );
    describe_counter!(
        "amqtt_bus_messages_sent_total",
        "Messages this shard sent to other shards on the cross-shard bus (publishes and interest changes)."
    );
    describe_counter!(
        "amqtt_bus_messages_received_total",
        "Messages this shard received from other shards on the cross-shard bus ($SYS updates included)."
    );
    describe_counter!(
        "amqtt_bus_send_retries_total",
        "Cross-shard QoS 1/2 sends that found the receiving lane full and were retried (back-pressure)."
    );
    describe_gauge!(
        "amqtt_bus_queue_depth",
        "Messages waiting in the shard's cross-shard inbox, by lane."
    );
    describe_counter!(
        "amqtt_connection_handoffs_total",
        "Connections moved to their client id's home shard: sent (out) or received (in)."
    );
    describe_counter!(
        "amqtt_journal_errors_total",
        "Persistence: journal writes or syncs that failed (full disk, I/O error); each is retried, and the acknowledgements that need it wait."
    );
    describe_counter!(
        "amqtt_journal_bytes_total",
        Unit::Bytes,
        "Persistence: bytes appended to the shard's journal."
    );
    describe_counter!(
        "amqtt_journal_syncs_total",
        "Persistence: fdatasync calls on the shard's journal."
    );
    describe_counter!(
        "amqtt_snapshots_total",
        "Persistence: snapshots of the shard's state written (each replaces its journal)."
    );
}

fn update_shard(shard: &str, s: &ShardSnapshot, bus: BusDepth) {
    let sh = || shard.to_string();
    let core = &s.core;
    let rt = &s.runtime;
    gauge!("amqtt_connections_open", "shard" => sh()).set(s.connections as f64);
    counter!("amqtt_connections_accepted_total", "shard" => sh())
        .absolute(core.connections_accepted);
    counter!("amqtt_connections_rejected_total", "shard" => sh(), "reason" => "max_connections")
        .absolute(rt.rejected_max_connections);
    counter!("amqtt_connect_rate_waits_total", "shard" => sh()).absolute(rt.accept_rate_waits);
    for (code, reason) in REFUSAL_REASONS {
        let value = core.refused_by_code.get(code).copied().unwrap_or(0);
        counter!("amqtt_connections_rejected_total", "shard" => sh(), "reason" => reason)
            .absolute(value);
    }
    counter!("amqtt_handshake_failures_total", "shard" => sh(), "reason" => "connect_timeout")
        .absolute(rt.connect_timeouts);
    counter!("amqtt_handshake_failures_total", "shard" => sh(), "reason" => "malformed_connect")
        .absolute(core.malformed_before_connect);
    counter!("amqtt_handshake_failures_total", "shard" => sh(), "reason" => "tls_or_websocket")
        .absolute(rt.handshake_failures);
    counter!("amqtt_handshake_failures_total", "shard" => sh(), "reason" => "proxy_header")
        .absolute(rt.proxy_header_failures);
    counter!("amqtt_handshake_failures_total", "shard" => sh(), "reason" => "closed_before_connect")
        .absolute(rt.closed_before_connect);
    let auth = core.refused_by_code.get(4).copied().unwrap_or(0)
        + core.refused_by_code.get(5).copied().unwrap_or(0);
    counter!("amqtt_auth_failures_total", "shard" => sh()).absolute(auth);
    counter!("amqtt_malformed_packets_total", "shard" => sh())
        .absolute(core.protocol_errors + core.malformed_before_connect);
    counter!("amqtt_keepalive_timeouts_total", "shard" => sh()).absolute(core.keep_alive_timeouts);
    counter!("amqtt_credentials_expired_total", "shard" => sh()).absolute(core.credentials_expired);
    counter!("amqtt_sessions_taken_over_total", "shard" => sh()).absolute(core.sessions_taken_over);
    counter!("amqtt_sessions_expired_total", "shard" => sh()).absolute(core.sessions_expired);
    counter!("amqtt_connection_panics_total", "shard" => sh()).absolute(rt.connection_panics);
    gauge!("amqtt_sessions", "shard" => sh(), "state" => "online").set(s.sessions_online as f64);
    gauge!("amqtt_sessions", "shard" => sh(), "state" => "offline")
        .set(s.sessions.saturating_sub(s.sessions_online) as f64);
    gauge!("amqtt_subscriptions", "shard" => sh()).set(s.subscriptions as f64);
    gauge!("amqtt_inflight_messages", "shard" => sh()).set(s.inflight as f64);
    gauge!("amqtt_queued_messages", "shard" => sh()).set(s.queued as f64);
    for (qos, label) in ["0", "1", "2"].into_iter().enumerate() {
        counter!("amqtt_messages_received_total", "shard" => sh(), "qos" => label)
            .absolute(core.publish_received_by_qos[qos]);
        counter!("amqtt_messages_sent_total", "shard" => sh(), "qos" => label)
            .absolute(core.publish_sent_by_qos[qos]);
    }
    for (reason, value) in dropped(s) {
        counter!("amqtt_messages_dropped_total", "shard" => sh(), "reason" => reason)
            .absolute(value);
    }
    counter!("amqtt_wills_published_total", "shard" => sh()).absolute(core.wills_published);
    counter!("amqtt_publishers_held_total", "shard" => sh()).absolute(core.publishers_held);
    counter!("amqtt_subscribers_stalled_total", "shard" => sh()).absolute(core.subscribers_stalled);
    counter!("amqtt_shared_deliveries_total", "shard" => sh()).absolute(core.shared_deliveries);
    counter!("amqtt_shared_redistributed_total", "shard" => sh())
        .absolute(core.shared_redistributed);
    counter!("amqtt_packets_received_total", "shard" => sh()).absolute(core.packets_received);
    counter!("amqtt_packets_sent_total", "shard" => sh()).absolute(core.packets_sent);
    counter!("amqtt_bytes_received_total", "shard" => sh()).absolute(rt.bytes_received);
    counter!("amqtt_bytes_sent_total", "shard" => sh()).absolute(core.bytes_sent);
    counter!("amqtt_bus_messages_sent_total", "shard" => sh()).absolute(core.bus_sent);
    counter!("amqtt_bus_messages_received_total", "shard" => sh()).absolute(core.bus_received);
    counter!("amqtt_bus_send_retries_total", "shard" => sh()).absolute(rt.bus_blocked);
    gauge!("amqtt_bus_queue_depth", "shard" => sh(), "lane" => "data").set(bus.data as f64);
    gauge!("amqtt_bus_queue_depth", "shard" => sh(), "lane" => "control").set(bus.control as f64);
    counter!("amqtt_connection_handoffs_total", "shard" => sh(), "direction" => "out")
        .absolute(rt.handoffs_sent);
    counter!("amqtt_connection_handoffs_total", "shard" => sh(), "direction" => "in")
        .absolute(rt.handoffs_received);
    counter!("amqtt_journal_errors_total", "shard" => sh()).absolute(rt.journal_errors);
    counter!("amqtt_journal_bytes_total", "shard" => sh()).absolute(rt.journal_bytes);
    counter!("amqtt_journal_syncs_total", "shard" => sh()).absolute(rt.journal_syncs);
    counter!("amqtt_snapshots_total", "shard" => sh()).absolute(rt.snapshots_written);
}

/// The exporter's output (families in hash order, separated by blank lines) in a stable order.
fn sorted(text: &str) -> String {
    let mut families: Vec<(String, Vec<&str>, Vec<&str>)> = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let (comments, mut series): (Vec<&str>, Vec<&str>) =
            block.lines().partition(|line| line.starts_with('#'));
        series.sort_unstable();
        let name = comments
            .iter()
            .find_map(|c| c.strip_prefix("# TYPE "))
            .and_then(|rest| rest.split(' ').next())
            .unwrap_or("")
            .to_string();
        families.push((name, comments, series));
    }
    families.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = String::with_capacity(text.len() + 1);
    for (_, comments, series) in families {
        for line in comments.iter().chain(series.iter()) {
            out.push_str(line);
            out.push('\n');
        }
        out.push('\n');
    }
    out
}

/// Appends the latency histogram family (one series per shard) in the text format.
pub(crate) fn render_latency(out: &mut String, shards: &[LatencyHistogram]) {
    if !out.is_empty() && !out.ends_with("\n\n") {
        out.push('\n');
    }
    let _ = writeln!(out, "# HELP {LATENCY_FAMILY} {LATENCY_HELP}");
    let _ = writeln!(out, "# TYPE {LATENCY_FAMILY} histogram");
    for (shard, histogram) in shards.iter().enumerate() {
        let bounds = LATENCY_BOUNDS_NS
            .iter()
            .map(|ns| format_seconds(*ns))
            .chain(std::iter::once("+Inf".to_string()));
        for (le, count) in bounds.zip(histogram.cumulative()) {
            let _ = writeln!(
                out,
                "{LATENCY_FAMILY}_bucket{{shard=\"{shard}\",le=\"{le}\"}} {count}"
            );
        }
        let _ = writeln!(
            out,
            "{LATENCY_FAMILY}_sum{{shard=\"{shard}\"}} {}",
            histogram.sum_ns as f64 / 1e9
        );
        let _ = writeln!(
            out,
            "{LATENCY_FAMILY}_count{{shard=\"{shard}\"}} {}",
            histogram.count
        );
    }
}

/// Nanoseconds as a decimal number of seconds (`2.5e-5` → `0.000025`).
fn format_seconds(ns: u64) -> String {
    let whole = ns / 1_000_000_000;
    let frac = ns % 1_000_000_000;
    if frac == 0 {
        return whole.to_string();
    }
    let digits = format!("{frac:09}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_printed_exactly() {
        assert_eq!(format_seconds(10_000), "0.00001");
        assert_eq!(format_seconds(2_500_000), "0.0025");
        assert_eq!(format_seconds(1_000_000_000), "1");
        assert_eq!(format_seconds(2_500_000_000), "2.5");
    }

    #[test]
    fn every_family_has_help_and_type_and_values_follow_snapshots() {
        let exporter = Exporter::new();
        let mut s = ShardSnapshot {
            connections: 3,
            ..Default::default()
        };
        s.core.publish_received_by_qos = [5, 6, 7];
        s.core.refused_by_code[5] = 2;
        s.runtime
            .latency
            .record(std::time::Duration::from_micros(30));
        let shards = [s, ShardSnapshot::default()];
        let totals = Totals::of(&shards);
        exporter.update(
            &shards,
            &[BusDepth::default(); 2],
            &totals,
            BrokerWide {
                uptime_seconds: 12.0,
                clients_maximum: 3,
                memory: &MemoryBudget::new(Some(1 << 20)),
                bridges: &[],
                cluster: None,
            },
            std::time::Instant::now(),
        );
        let text = exporter.render(&shards);

        let mut helped = std::collections::HashSet::new();
        let mut typed = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                helped.insert(rest.split(' ').next().unwrap_or("").to_string());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                typed.insert(rest.split(' ').next().unwrap_or("").to_string());
            } else if !line.is_empty() {
                let name = line.split(['{', ' ']).next().unwrap_or("");
                let family = [("_bucket"), ("_sum"), ("_count")]
                    .iter()
                    .find_map(|suffix| {
                        name.strip_suffix(suffix)
                            .filter(|base| *base == LATENCY_FAMILY)
                    })
                    .unwrap_or(name);
                assert!(helped.contains(family), "no HELP before {line}");
                assert!(typed.contains(family), "no TYPE before {line}");
                assert!(
                    name.starts_with("amqtt_") || name.starts_with("process_"),
                    "{line}"
                );
            }
        }
        assert!(text.contains("amqtt_messages_received_total{shard=\"0\",qos=\"2\"} 7"));
        assert!(text.contains("amqtt_auth_failures_total{shard=\"0\"} 2"));
        assert!(text.contains("amqtt_connections_open{shard=\"0\"} 3"));
        assert!(text.contains(
            "amqtt_publish_delivery_latency_seconds_bucket{shard=\"0\",le=\"0.00005\"} 1"
        ));
        assert!(text.contains("amqtt_publish_delivery_latency_seconds_count{shard=\"1\"} 0"));
        assert!(text.contains("\nprocess_resident_memory_bytes "), "{text}");
    }
}
