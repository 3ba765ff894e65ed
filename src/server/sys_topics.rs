//! The `$SYS/broker/...` topics: their names and payloads, built from the shards' snapshots, and the
//! Mosquitto-style load averages (`load/messages/received/1min` ...).
//!
//! Pure functions and plain state: no I/O, no clock reads (time is passed in), no bus. The control
//! shard (`control.rs`) calls [`sys_messages`] every `sys_interval` and publishes the result,
//! retained, to every data shard.
//!
//! Payloads follow aMQTT's `BrokerSysPlugin` (plain decimal text; `heap/*` in MiB and `cpu/*` in
//! percent of one CPU, three decimals as aMQTT writes floats, from [`ProcessUsage`]), with two
//! deliberate differences:
//! `uptime` is the uptime in seconds and `uptime/formatted` the human form (aMQTT swaps them by
//! mistake), and `clients/disconnected` counts persistent sessions whose client is offline, as in
//! Mosquitto (aMQTT counts disconnection events). `clients/expired` (Mosquitto's) counts the
//! sessions `session_expiry_interval` discarded.

use std::time::Duration;

use super::snapshot::{ShardSnapshot, Totals};

/// Prefix of every topic this module produces.
pub(crate) const SYS_ROOT: &str = "$SYS/broker/";

/// Averaging windows of the `load/...` topics, in seconds, with their topic suffixes.
const WINDOWS: [(f64, &str); 3] = [(60.0, "1min"), (300.0, "5min"), (900.0, "15min")];

/// What the `load/...` averages are computed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LoadSeries {
    MessagesReceived,
    MessagesSent,
    PublishReceived,
    PublishSent,
    BytesReceived,
    BytesSent,
    Connections,
}

impl LoadSeries {
    const ALL: [LoadSeries; 7] = [
        LoadSeries::MessagesReceived,
        LoadSeries::MessagesSent,
        LoadSeries::PublishReceived,
        LoadSeries::PublishSent,
        LoadSeries::BytesReceived,
        LoadSeries::BytesSent,
        LoadSeries::Connections,
    ];

    fn topic(self) -> &'static str {
        match self {
            LoadSeries::MessagesReceived => "load/messages/received",
            LoadSeries::MessagesSent => "load/messages/sent",
            LoadSeries::PublishReceived => "load/publish/received",
            LoadSeries::PublishSent => "load/publish/sent",
            LoadSeries::BytesReceived => "load/bytes/received",
            LoadSeries::BytesSent => "load/bytes/sent",
            LoadSeries::Connections => "load/connections",
        }
    }

    fn total(self, t: &Totals) -> u64 {
        match self {
            LoadSeries::MessagesReceived => t.packets_received,
            LoadSeries::MessagesSent => t.packets_sent,
            LoadSeries::PublishReceived => t.publish_received,
            LoadSeries::PublishSent => t.publish_sent,
            LoadSeries::BytesReceived => t.bytes_received,
            LoadSeries::BytesSent => t.bytes_sent,
            LoadSeries::Connections => t.connections_accepted,
        }
    }
}

/// Exponentially weighted moving averages of per-minute rates (Mosquitto's `load/*/1min|5min|15min`),
/// updated once per control-shard tick.
#[derive(Debug, Clone, Default)]
pub(crate) struct LoadAverages {
    last: Option<[u64; LoadSeries::ALL.len()]>,
    /// `averages[series][window]`, in events per minute.
    averages: [[f64; WINDOWS.len()]; LoadSeries::ALL.len()],
}

impl LoadAverages {
    /// Folds in the totals observed `elapsed` after the previous call. The first call only records.
    pub fn update(&mut self, totals: &Totals, elapsed: Duration) {
        let now: [u64; LoadSeries::ALL.len()] = LoadSeries::ALL.map(|s| s.total(totals));
        let dt = elapsed.as_secs_f64();
        if let (Some(last), true) = (self.last, dt > 0.0) {
            for (i, (current, previous)) in now.iter().zip(last.iter()).enumerate() {
                // A counter never goes back; if it seems to, treat the step as no events.
                let per_minute = current.saturating_sub(*previous) as f64 * 60.0 / dt;
                for (w, (window, _)) in WINDOWS.iter().enumerate() {
                    let alpha = 1.0 - (-dt / window).exp();
                    let average = &mut self.averages[i][w];
                    *average += alpha * (per_minute - *average);
                }
            }
        }
        self.last = Some(now);
    }

    /// `(topic suffix, events per minute)` for every series and window.
    fn entries(&self) -> impl Iterator<Item = (String, f64)> + '_ {
        LoadSeries::ALL
            .iter()
            .enumerate()
            .flat_map(move |(i, series)| {
                WINDOWS.iter().enumerate().map(move |(w, (_, name))| {
                    (format!("{}/{name}", series.topic()), self.averages[i][w])
                })
            })
    }
}

/// The process's memory and CPU use as aMQTT's `heap/size`, `heap/maximum`, `cpu/percent` and
/// `cpu/maximum` report them: resident memory in MiB, CPU time over wall time since the previous
/// sample in percent of one CPU (above 100 when several shards are busy), and the highest of each
/// seen. Fed by the control shard from `/proc/self` when it publishes `$SYS`, never per message.
#[derive(Debug, Clone, Default)]
pub(crate) struct ProcessUsage {
    /// CPU seconds and the instant (as time since the broker started) of the previous sample.
    last_cpu: Option<(f64, Duration)>,
    heap_mib: Option<f64>,
    heap_maximum: f64,
    cpu_percent: Option<f64>,
    cpu_maximum: f64,
}

impl ProcessUsage {
    /// Folds in a reading taken `at` (since the broker started); `None` where `/proc` did not
    /// say, which leaves that topic out. The first CPU reading only sets the baseline.
    pub fn update(&mut self, cpu_seconds: Option<f64>, resident_bytes: Option<u64>, at: Duration) {
        if let Some(bytes) = resident_bytes {
            let mib = bytes as f64 / (1024.0 * 1024.0);
            self.heap_mib = Some(mib);
            self.heap_maximum = self.heap_maximum.max(mib);
        }
        let Some(cpu) = cpu_seconds else { return };
        if let Some((last_cpu, last_at)) = self.last_cpu {
            let wall = at.saturating_sub(last_at).as_secs_f64();
            if wall > 0.0 {
                let percent = (cpu - last_cpu).max(0.0) / wall * 100.0;
                self.cpu_percent = Some(percent);
                self.cpu_maximum = self.cpu_maximum.max(percent);
            }
        }
        self.last_cpu = Some((cpu, at));
    }

    /// `(topic suffix, payload)` for what is known.
    fn entries(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::with_capacity(4);
        if let Some(mib) = self.heap_mib {
            out.push(("heap/size", format!("{mib:.3}")));
            out.push(("heap/maximum", format!("{:.3}", self.heap_maximum)));
        }
        if let Some(percent) = self.cpu_percent {
            out.push(("cpu/percent", format!("{percent:.3}")));
            out.push(("cpu/maximum", format!("{:.3}", self.cpu_maximum)));
        }
        out
    }
}

/// What the `$SYS` tree is built from, besides the snapshots.
pub(crate) struct SysInput<'a> {
    pub version: &'a str,
    pub uptime: Duration,
    /// Seconds since the Unix epoch.
    pub unix_time: u64,
    pub shards: &'a [ShardSnapshot],
    /// Depth of each data shard's bus data lane, in shard order.
    pub bus_depths: &'a [usize],
    pub totals: &'a Totals,
    /// Highest `clients/connected` seen so far (sampled once per second).
    pub clients_maximum: u64,
    pub load: &'a LoadAverages,
    pub process: &'a ProcessUsage,
    /// The cluster link's counters, when this broker is a cluster node.
    pub cluster: Option<&'a crate::cluster::ClusterStats>,
}

/// Every `$SYS` topic (full name) and its payload, in a stable order.
pub(crate) fn sys_messages(input: &SysInput<'_>) -> Vec<(String, String)> {
    let t = input.totals;
    let mut out: Vec<(String, String)> = Vec::with_capacity(64 + input.shards.len() * 8);
    let mut put = |topic: &str, payload: String| out.push((format!("{SYS_ROOT}{topic}"), payload));
    let uptime = input.uptime.as_secs();
    put("version", format!("amqtt-rs version {}", input.version));
    put("uptime", uptime.to_string());
    put("uptime/formatted", format_uptime(uptime));
    put("time", input.unix_time.to_string());
    put("clients/connected", t.sessions_online.to_string());
    put(
        "clients/disconnected",
        t.sessions.saturating_sub(t.sessions_online).to_string(),
    );
    put(
        "clients/maximum",
        input.clients_maximum.max(t.sessions_online).to_string(),
    );
    put("clients/total", t.sessions.to_string());
    put("clients/expired", t.sessions_expired.to_string());
    put("messages/received", t.packets_received.to_string());
    put("messages/sent", t.packets_sent.to_string());
    put("messages/publish/received", t.publish_received.to_string());
    put("messages/publish/sent", t.publish_sent.to_string());
    put("messages/publish/dropped", t.publish_dropped.to_string());
    put("messages/publish/held", t.publishers_held.to_string());
    put("clients/stalled", t.subscribers_stalled.to_string());
    put("messages/retained/count", t.retained.to_string());
    // As aMQTT: in-flight both ways, then each way; stored = queued for sessions plus retained
    // (aMQTT's `messages/inflight/stored`, Mosquitto's `messages/stored`).
    put(
        "messages/inflight",
        (t.inflight + t.inflight_in).to_string(),
    );
    put("messages/inflight/in", t.inflight_in.to_string());
    put("messages/inflight/out", t.inflight.to_string());
    let stored = (t.queued + t.retained).to_string();
    put("messages/inflight/stored", stored.clone());
    put("messages/stored", stored);
    put("messages/queued", t.queued.to_string());
    put("messages/subscriptions/count", t.subscriptions.to_string());
    put("load/bytes/received", t.bytes_received.to_string());
    put("load/bytes/sent", t.bytes_sent.to_string());
    for (topic, value) in input.load.entries() {
        put(&topic, format!("{value:.2}"));
    }
    for (topic, value) in input.process.entries() {
        put(topic, value);
    }
    put("shards/count", input.shards.len().to_string());
    for (n, s) in input.shards.iter().enumerate() {
        let depth = input.bus_depths.get(n).copied().unwrap_or(0);
        put(
            &format!("shards/{n}/connections"),
            s.sessions_online.to_string(),
        );
        put(&format!("shards/{n}/sessions"), s.sessions.to_string());
        put(
            &format!("shards/{n}/subscriptions"),
            s.subscriptions.to_string(),
        );
        put(
            &format!("shards/{n}/messages/received"),
            s.core.publish_received.to_string(),
        );
        put(
            &format!("shards/{n}/messages/sent"),
            s.core.publish_sent.to_string(),
        );
        put(&format!("shards/{n}/bus/sent"), s.core.bus_sent.to_string());
        put(
            &format!("shards/{n}/bus/received"),
            s.core.bus_received.to_string(),
        );
        put(&format!("shards/{n}/bus/queue"), depth.to_string());
    }
    if let Some(cluster) = input.cluster {
        put("cluster/node", cluster.node.clone());
        put(
            "cluster/connected",
            u8::from(cluster.connected()).to_string(),
        );
        put("cluster/nodes", cluster.nodes().to_string());
        put(
            "cluster/messages/sent",
            (cluster.sent_core() + cluster.sent_stored()).to_string(),
        );
        put(
            "cluster/messages/received",
            (cluster.received_core() + cluster.received_stored()).to_string(),
        );
        put("cluster/messages/dropped", cluster.dropped().to_string());
    }
    out
}

/// `1 day, 2:03:04` / `0:00:42`, as Python's `str(timedelta)` prints it.
pub(crate) fn format_uptime(seconds: u64) -> String {
    let days = seconds / 86_400;
    let rest = seconds % 86_400;
    let clock = format!("{}:{:02}:{:02}", rest / 3600, rest % 3600 / 60, rest % 60);
    match days {
        0 => clock,
        1 => format!("1 day, {clock}"),
        n => format!("{n} days, {clock}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup<'a>(messages: &'a [(String, String)], topic: &str) -> &'a str {
        messages
            .iter()
            .find(|(t, _)| t == &format!("{SYS_ROOT}{topic}"))
            .map(|(_, p)| p.as_str())
            .unwrap_or_else(|| panic!("no {topic}"))
    }

    #[test]
    fn uptime_formats_like_python_timedelta() {
        assert_eq!(format_uptime(42), "0:00:42");
        assert_eq!(format_uptime(3 * 3600 + 5 * 60 + 7), "3:05:07");
        assert_eq!(format_uptime(86_400 + 1), "1 day, 0:00:01");
        assert_eq!(format_uptime(3 * 86_400), "3 days, 0:00:00");
    }

    #[test]
    fn load_averages_converge_to_the_rate_per_minute() {
        let mut load = LoadAverages::default();
        let mut totals = Totals::default();
        load.update(&totals, Duration::from_secs(1));
        // 10 PUBLISH per second = 600 per minute, for 30 minutes.
        for _ in 0..1800 {
            totals.publish_received += 10;
            load.update(&totals, Duration::from_secs(1));
        }
        let entries: Vec<(String, f64)> = load.entries().collect();
        let get = |name: &str| {
            entries
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| *v)
                .expect("entry")
        };
        assert!((get("load/publish/received/1min") - 600.0).abs() < 1.0);
        // Six 5-minute time constants: within 0.25 %.
        assert!((get("load/publish/received/5min") - 600.0).abs() < 2.0);
        // 30 minutes is two 15-minute time constants: 1 - e^-2 ≈ 86 %.
        let fifteen = get("load/publish/received/15min");
        assert!(fifteen > 500.0 && fifteen < 540.0, "{fifteen}");
        assert_eq!(get("load/publish/sent/1min"), 0.0);
    }

    #[test]
    fn process_usage_reports_cpu_between_samples_and_keeps_the_maxima() {
        let mut usage = ProcessUsage::default();
        assert!(usage.entries().is_empty(), "nothing read yet: no topic");
        usage.update(Some(1.0), None, Duration::from_secs(10));
        assert!(
            usage.entries().is_empty(),
            "a first CPU reading is the baseline"
        );
        // 3 CPU seconds in 2 s: two shards busy.
        usage.update(Some(4.0), Some(3 << 19), Duration::from_secs(12));
        usage.update(Some(4.2), Some(1 << 20), Duration::from_secs(14));
        let entries = usage.entries();
        let get = |name: &str| {
            entries
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_str())
                .expect("entry")
        };
        assert_eq!(get("cpu/percent"), "10.000");
        assert_eq!(get("cpu/maximum"), "150.000");
        assert_eq!(get("heap/size"), "1.000");
        assert_eq!(get("heap/maximum"), "1.500");
    }

    #[test]
    fn sys_tree_has_the_amqtt_topics_and_per_shard_values() {
        let mut a = ShardSnapshot {
            sessions: 3,
            sessions_online: 2,
            ..Default::default()
        };
        a.core.publish_received = 7;
        a.core.bus_sent = 4;
        a.core.sessions_expired = 2;
        let mut b = ShardSnapshot {
            sessions: 1,
            sessions_online: 1,
            inflight: 4,
            inflight_in: 2,
            queued: 5,
            retained: 3,
            ..Default::default()
        };
        b.core.sessions_expired = 1;
        let shards = [a, b];
        let totals = Totals::of(&shards);
        let load = LoadAverages::default();
        let mut process = ProcessUsage::default();
        process.update(Some(10.0), Some(64 << 20), Duration::from_secs(1));
        process.update(Some(10.5), Some(32 << 20), Duration::from_secs(3));
        let messages = sys_messages(&SysInput {
            version: "1.2.3",
            uptime: Duration::from_secs(61),
            unix_time: 1_700_000_000,
            shards: &shards,
            bus_depths: &[0, 9],
            totals: &totals,
            clients_maximum: 2,
            load: &load,
            process: &process,
            cluster: None,
        });
        assert_eq!(lookup(&messages, "version"), "amqtt-rs version 1.2.3");
        assert_eq!(lookup(&messages, "uptime"), "61");
        assert_eq!(lookup(&messages, "uptime/formatted"), "0:01:01");
        assert_eq!(lookup(&messages, "time"), "1700000000");
        assert_eq!(lookup(&messages, "clients/connected"), "3");
        assert_eq!(lookup(&messages, "clients/disconnected"), "1");
        assert_eq!(lookup(&messages, "clients/maximum"), "3");
        assert_eq!(lookup(&messages, "clients/total"), "4");
        assert_eq!(lookup(&messages, "clients/expired"), "3");
        assert_eq!(lookup(&messages, "messages/publish/received"), "7");
        assert_eq!(lookup(&messages, "load/messages/received/15min"), "0.00");
        assert_eq!(lookup(&messages, "shards/count"), "2");
        assert_eq!(lookup(&messages, "shards/0/connections"), "2");
        assert_eq!(lookup(&messages, "shards/0/bus/sent"), "4");
        assert_eq!(lookup(&messages, "shards/1/bus/queue"), "9");
        assert_eq!(lookup(&messages, "messages/inflight"), "6");
        assert_eq!(lookup(&messages, "messages/inflight/in"), "2");
        assert_eq!(lookup(&messages, "messages/inflight/out"), "4");
        assert_eq!(lookup(&messages, "messages/inflight/stored"), "8");
        assert_eq!(lookup(&messages, "messages/stored"), "8");
        assert_eq!(lookup(&messages, "heap/size"), "32.000");
        assert_eq!(lookup(&messages, "heap/maximum"), "64.000");
        assert_eq!(lookup(&messages, "cpu/percent"), "25.000");
        assert_eq!(lookup(&messages, "cpu/maximum"), "25.000");
        for topic in [
            "messages/received",
            "messages/sent",
            "messages/publish/sent",
            "messages/retained/count",
            "messages/inflight",
            "messages/subscriptions/count",
            "load/bytes/received",
            "load/bytes/sent",
            "load/messages/received/1min",
            "load/messages/received/5min",
            "load/messages/sent/1min",
            "shards/1/messages/received",
            "shards/1/messages/sent",
            "shards/1/bus/received",
        ] {
            lookup(&messages, topic);
        }
        // Every name is a valid MQTT topic name.
        for (topic, _) in &messages {
            crate::protocol::TopicName::new(topic.as_str()).expect("valid topic");
        }
    }
}
