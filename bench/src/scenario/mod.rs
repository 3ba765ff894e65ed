//! The scenarios: each turns [`Opts`] into an engine [`Plan`], walks the engine through its
//! phases while sampling the broker and printing progress, and returns a [`Report`].
//!
//! | scenario   | clients                                   | measures |
//! |------------|-------------------------------------------|----------|
//! | `pairs`    | `n` publishers → `n` subscribers, own topic each | throughput, latency, loss |
//! | `fanin`    | `n` publishers → 1 subscriber on `+`      | same |
//! | `fanout`   | 1 publisher → `n` subscribers             | same |
//! | `conns`    | `n` idle connections held for `--duration` | connect rate, CONNACK latency, broker memory per connection |
//! | `retained` | `--messages` retained topics, `n` subscribers to `#` | time for the whole retained set to arrive |
//! | `storm`    | `n` persistent sessions dropped and reconnected at once, round after round | reconnect rate and latency, lost sessions |
//!
//! Topics are `PREFIX/RUNID/...` with a random run id, so runs never see each other's messages.
//! `mqtts://` URLs run every scenario over TLS ([`crate::tls`]); `--shards`/`--placement` choose
//! the traffic scenarios' client ids by home shard ([`crate::placement`]).

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use amqtt::protocol::{QoS, TopicFilter, TopicName};
use clap::{Args, Subcommand};

use crate::clock::{now_ns, ns_to_secs, secs_to_ns};
use crate::engine::{ClientPlan, Engine, LatencyOrigin, Mode, Plan, PublishPlan, Totals};
use crate::payload::{Header, HEADER_LEN};
use crate::placement::{self, Placement, Shape};
use crate::procstat::{self, ProcSample};
use crate::report::{
    progress_line, BrokerFigures, ConnectFigures, GeneratorFigures, Report, RetainedFigures,
    StormFigures,
};
use crate::simple::SimpleClient;
use crate::stats::Latency;
use crate::sys;
use crate::tls::{TlsTarget, Trust};
use crate::url::{BrokerUrl, Scheme};

/// One scenario with its options, as given on the command line (also parsed from `compare
/// --scenario` strings).
#[derive(Subcommand, Debug, Clone)]
pub enum Scenario {
    /// N publisher → subscriber pairs, one topic per pair (default n = 8).
    Pairs(Opts),
    /// N publishers, one subscriber on a wildcard (default n = 8).
    Fanin(Opts),
    /// One publisher, N subscribers on its topic (default n = 8).
    Fanout(Opts),
    /// Open N idle connections and hold them: connect rate, CONNACK latency, broker memory per
    /// connection (default n = 1000; --rate = connections/s, --inflight = handshakes at once).
    Conns(Opts),
    /// Publish --messages retained messages, then N subscribers subscribe to all of them and time
    /// their arrival (default n = 1, --messages 10000; --duration = longest wait).
    Retained(Opts),
    /// N persistent sessions drop their connections and reconnect all at once, round after round
    /// for --duration (default n = 200).
    Storm(Opts),
}

/// Options shared by every scenario. Durations are plain seconds.
#[derive(Args, Debug, Clone)]
pub struct Opts {
    /// Broker URL: mqtt://host:port, or mqtts://host:port for MQTT over TLS (ws://, wss:// are
    /// recognised but not supported by this version).
    #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
    pub url: String,
    /// mqtts://: PEM file of the CA certificate(s) to trust (default: the system's trusted roots).
    #[arg(long, value_name = "PATH")]
    pub cafile: Option<PathBuf>,
    /// mqtts://: accept any server certificate, whoever signed it and whatever name it is for.
    /// INSECURE: only for benchmarking a broker with a self-signed certificate.
    #[arg(long, conflicts_with = "cafile")]
    pub insecure: bool,
    /// pairs/fanin/fanout: the broker's shard count (`shards:` in its YAML), for --placement.
    #[arg(long, value_name = "N")]
    pub shards: Option<usize>,
    /// pairs/fanin/fanout: choose client ids so that each publisher's session lives on the same
    /// broker shard as its subscribers' (same), on a different one (cross, needs --shards ≥ 2),
    /// or wherever the normal ids hash (any). same and cross need --shards.
    #[arg(long, value_enum, default_value_t = Placement::Any)]
    pub placement: Placement,
    /// Number of publishers / subscribers / connections (see each scenario).
    #[arg(short = 'n', value_name = "N")]
    pub n: Option<usize>,
    /// QoS of publishes and subscriptions.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: u8,
    /// Payload size in bytes (at least 24: publisher id, sequence number and send time).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Open loop: messages per second per publisher on a fixed schedule; latency counts from the
    /// scheduled send time. (conns/storm: new connections per second.) Default: closed loop.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Closed loop: unsettled messages per publisher (end to end, and unacknowledged at QoS 1/2).
    /// (conns/storm: CONNECT handshakes in progress at once.) Default 32 (conns/storm 100).
    #[arg(long)]
    pub inflight: Option<u32>,
    /// Generator threads (default: one per CPU this process may run on).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Pin generator thread i to the i-th CPU of the process's affinity mask.
    #[arg(long)]
    pub pin_threads: bool,
    /// Broker process to sample (CPU time, RSS) from /proc.
    #[arg(long, value_name = "PID")]
    pub broker_pid: Option<u32>,
    /// Print one JSON object on stdout (the summary table goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// No progress lines.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Longest wait, after publishing stops, for messages still in flight (seconds).
    #[arg(long, default_value_t = 10.0)]
    pub drain: f64,
    /// retained: number of retained messages.
    #[arg(long)]
    pub messages: Option<usize>,
    /// Topic prefix (a random run id follows it).
    #[arg(long, default_value = "amqtt-bench")]
    pub prefix: String,
    /// MQTT keep-alive of every client (seconds; PINGREQ every half of it).
    #[arg(long, default_value_t = 60)]
    pub keep_alive: u16,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            url: "mqtt://127.0.0.1:1883".into(),
            cafile: None,
            insecure: false,
            shards: None,
            placement: Placement::Any,
            n: None,
            qos: 0,
            size: 64,
            duration: 5.0,
            warmup: 1.0,
            rate: None,
            inflight: None,
            threads: None,
            pin_threads: false,
            broker_pid: None,
            json: false,
            quiet: false,
            drain: 10.0,
            messages: None,
            prefix: "amqtt-bench".into(),
            keep_alive: 60,
        }
    }
}

impl Scenario {
    pub fn name(&self) -> &'static str {
        match self {
            Scenario::Pairs(_) => "pairs",
            Scenario::Fanin(_) => "fanin",
            Scenario::Fanout(_) => "fanout",
            Scenario::Conns(_) => "conns",
            Scenario::Retained(_) => "retained",
            Scenario::Storm(_) => "storm",
        }
    }

    pub fn opts(&self) -> &Opts {
        match self {
            Scenario::Pairs(o)
            | Scenario::Fanin(o)
            | Scenario::Fanout(o)
            | Scenario::Conns(o)
            | Scenario::Retained(o)
            | Scenario::Storm(o) => o,
        }
    }

    pub fn opts_mut(&mut self) -> &mut Opts {
        match self {
            Scenario::Pairs(o)
            | Scenario::Fanin(o)
            | Scenario::Fanout(o)
            | Scenario::Conns(o)
            | Scenario::Retained(o)
            | Scenario::Storm(o) => o,
        }
    }

    /// `-n` with the scenario's default.
    pub fn n(&self) -> usize {
        self.opts().n.unwrap_or(match self {
            Scenario::Pairs(_) | Scenario::Fanin(_) | Scenario::Fanout(_) => 8,
            Scenario::Conns(_) => 1000,
            Scenario::Retained(_) => 1,
            Scenario::Storm(_) => 200,
        })
    }

    /// How many unacknowledged QoS 1/2 messages the broker must allow one subscriber (its
    /// outgoing window: `max_inflight`, Mosquitto's `max_inflight_messages`) so that this
    /// scenario's closed-loop window reaches the subscriber instead of queueing in the broker:
    /// `--inflight` (default 32) times the publishers feeding one subscriber (1 in pairs and
    /// fan-out, N in fan-in), at most 65 535 (the packet-id space). `None` for QoS 0, open-loop
    /// runs (`--rate`) and scenarios that carry no message stream.
    pub fn broker_window(&self) -> Option<u32> {
        let o = self.opts();
        if o.qos == 0 || o.rate.is_some() {
            return None;
        }
        let feeding_one_subscriber = match self {
            Scenario::Pairs(_) | Scenario::Fanout(_) => 1,
            Scenario::Fanin(_) => u32::try_from(self.n()).unwrap_or(u32::MAX),
            Scenario::Conns(_) | Scenario::Retained(_) | Scenario::Storm(_) => return None,
        };
        let window = o
            .inflight
            .unwrap_or(32)
            .saturating_mul(feeding_one_subscriber);
        Some(window.min(65_535))
    }

    /// Runs the scenario.
    pub fn run(&self) -> Result<Report, BenchError> {
        let o = self.opts();
        let url = BrokerUrl::parse(&o.url).map_err(|e| BenchError::Usage(e.to_string()))?;
        url.require_supported()
            .map_err(|e| BenchError::Usage(e.to_string()))?;
        let tls = match (url.scheme, &o.cafile, o.insecure) {
            (Scheme::Mqtts, _, true) => Some(Trust::Insecure),
            (Scheme::Mqtts, Some(path), false) => Some(Trust::CaFile(path.clone())),
            (Scheme::Mqtts, None, false) => Some(Trust::System),
            (_, None, false) => None,
            (_, _, _) => {
                return Err(BenchError::Usage(
                    "--cafile and --insecure apply to mqtts:// URLs only".into(),
                ))
            }
        };
        let tls = tls
            .map(|trust| TlsTarget::new(&url.host, &trust))
            .transpose()
            .map_err(|e| BenchError::Usage(e.to_string()))?;
        let place_on = placement::check(o.placement, o.shards).map_err(BenchError::Usage)?;
        if place_on.is_some()
            && !matches!(
                self,
                Scenario::Pairs(_) | Scenario::Fanin(_) | Scenario::Fanout(_)
            )
        {
            return Err(BenchError::Usage(format!(
                "--placement applies to pairs, fanin and fanout, not {}",
                self.name()
            )));
        }
        let addr = url
            .socket_addr()
            .map_err(|e| BenchError::Usage(e.to_string()))?;
        let n = self.n();
        if n == 0 {
            return Err(BenchError::Usage("-n must be at least 1".into()));
        }
        if o.size < HEADER_LEN {
            return Err(BenchError::Usage(format!(
                "--size {} is smaller than the {HEADER_LEN}-byte header every message carries",
                o.size
            )));
        }
        for (name, v) in [
            ("--duration", o.duration),
            ("--warmup", o.warmup),
            ("--drain", o.drain),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(BenchError::Usage(format!(
                    "{name} must be a number of seconds ≥ 0"
                )));
            }
        }
        if let Some(r) = o.rate {
            if !r.is_finite() || r <= 0.0 {
                return Err(BenchError::Usage("--rate must be positive".into()));
            }
        }
        if o.inflight == Some(0) {
            return Err(BenchError::Usage("--inflight must be at least 1".into()));
        }
        if o.threads == Some(0) {
            return Err(BenchError::Usage("--threads must be at least 1".into()));
        }
        TopicName::new(&format!("{}/x", o.prefix))
            .map_err(|e| BenchError::Usage(format!("--prefix {:?}: {e}", o.prefix)))?;
        let qos = QoS::from_u8(o.qos).unwrap_or(QoS::AtMostOnce);
        let cpus = sys::affinity().unwrap_or_default();
        let threads = o.threads.unwrap_or(cpus.len().max(1));
        let run_id = new_run_id();
        let ctx = RunCtx {
            url: url.to_string(),
            addr,
            tls,
            place_on,
            n,
            qos,
            threads,
            cpus,
            run_id,
            base: format!("{}/{run_id:08x}", o.prefix),
            opts: o.clone(),
        };
        match self {
            Scenario::Pairs(_) | Scenario::Fanin(_) | Scenario::Fanout(_) => {
                run_traffic(self.name(), &ctx)
            }
            Scenario::Conns(_) => run_conns(&ctx),
            Scenario::Retained(_) => run_retained(&ctx),
            Scenario::Storm(_) => run_storm(&ctx),
        }
    }
}

/// Why a run could not produce a report.
#[derive(Debug)]
pub enum BenchError {
    /// Bad options (exit code 2).
    Usage(String),
    /// The broker or the machine failed the run.
    Run(String),
}

impl std::fmt::Display for BenchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BenchError::Usage(m) | BenchError::Run(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for BenchError {}

impl From<io::Error> for BenchError {
    fn from(e: io::Error) -> Self {
        BenchError::Run(e.to_string())
    }
}

struct RunCtx {
    url: String,
    addr: std::net::SocketAddr,
    tls: Option<TlsTarget>,
    /// Shard count to place client ids on (`--placement same|cross`).
    place_on: Option<usize>,
    n: usize,
    qos: QoS,
    threads: usize,
    cpus: Vec<usize>,
    run_id: u32,
    /// `PREFIX/RUNID`.
    base: String,
    opts: Opts,
}

impl RunCtx {
    fn topic(&self, suffix: &str) -> Result<TopicName, BenchError> {
        TopicName::new(&format!("{}/{suffix}", self.base))
            .map_err(|e| BenchError::Usage(format!("topic: {e}")))
    }

    fn filter(&self, suffix: &str) -> Result<TopicFilter, BenchError> {
        TopicFilter::new(&format!("{}/{suffix}", self.base))
            .map_err(|e| BenchError::Usage(format!("topic filter: {e}")))
    }

    fn client_id(&self, role: &str, i: usize) -> String {
        format!("ab{:08x}{role}{i}", self.run_id)
    }

    /// [`RunCtx::client_id`], suffixed to land on home shard `shard` under `--placement`.
    fn placed_id(&self, role: &str, i: usize, shard: Option<&usize>) -> String {
        let id = self.client_id(role, i);
        match (self.place_on, shard) {
            (Some(shards), Some(&shard)) => placement::id_on_shard(&id, shard, shards),
            _ => id,
        }
    }

    fn connect_simple(
        &self,
        client_id: &str,
        clean_session: bool,
        timeout: Duration,
    ) -> io::Result<(SimpleClient, bool)> {
        SimpleClient::connect_to(
            self.addr,
            self.tls.as_ref(),
            client_id,
            clean_session,
            timeout,
        )
    }

    fn plan(&self, clients: Vec<ClientPlan>, publishers: Vec<u32>, mode: Mode) -> Plan {
        let o = &self.opts;
        Plan {
            addr: self.addr,
            tls: self.tls.clone(),
            run_id: self.run_id,
            qos: self.qos,
            size: o.size,
            mode,
            threads: self.threads,
            pin_threads: o.pin_threads,
            keep_alive: o.keep_alive,
            connect_concurrency: o.inflight.map_or(100, |v| v as usize),
            connect_rate: None,
            latency_origin: LatencyOrigin::Payload,
            clients,
            publishers,
            stall_timeout_ns: 2_000_000_000,
        }
    }

    fn say(&self, line: &str) {
        if !self.opts.quiet {
            eprintln!("{line}");
        }
    }

    fn check_fds(&self, connections: usize) -> Result<(), BenchError> {
        let limit = sys::raise_nofile();
        if connections as u64 + 64 > limit {
            return Err(BenchError::Usage(format!(
                "{connections} connections need more file descriptors than the limit of {limit} \
                 (raise `ulimit -n`, or use a smaller -n)"
            )));
        }
        Ok(())
    }
}

fn new_run_id() -> u32 {
    // Mix the clock and the PID: unique enough to tell runs apart on one broker.
    let mut x = now_ns() ^ (u64::from(std::process::id()) << 32);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x as u32
}

/// Samples the broker (if any) and the generator's CPU.
struct Monitor {
    pid: Option<u32>,
    peak_rss_kb: u64,
    start: Option<ProcSample>,
    end: Option<ProcSample>,
    first: Option<ProcSample>,
    gen_start: f64,
    gen_end: f64,
    warnings: Vec<String>,
}

impl Monitor {
    fn new(pid: Option<u32>) -> Result<Monitor, BenchError> {
        let mut m = Monitor {
            pid,
            peak_rss_kb: 0,
            start: None,
            end: None,
            first: None,
            gen_start: 0.0,
            gen_end: 0.0,
            warnings: Vec::new(),
        };
        if let Some(pid) = pid {
            let s = procstat::sample(pid).map_err(|e| {
                BenchError::Usage(format!("--broker-pid {pid}: cannot read /proc/{pid}: {e}"))
            })?;
            m.first = Some(s);
            m.peak_rss_kb = s.hwm_kb.max(s.rss_kb);
        }
        Ok(m)
    }

    fn sample(&mut self) -> Option<ProcSample> {
        let pid = self.pid?;
        match procstat::sample(pid) {
            Ok(s) => {
                self.peak_rss_kb = self.peak_rss_kb.max(s.rss_kb).max(s.hwm_kb);
                Some(s)
            }
            Err(e) => {
                let w = format!("broker pid {pid} could not be sampled: {e}");
                if !self.warnings.contains(&w) {
                    self.warnings.push(w);
                }
                None
            }
        }
    }

    fn mark_start(&mut self) {
        self.start = self.sample();
        self.gen_start = procstat::self_cpu_s();
    }

    fn mark_end(&mut self) {
        self.end = self.sample();
        self.gen_end = procstat::self_cpu_s();
    }

    /// Broker CPU seconds in the window, if both ends were sampled.
    fn broker_cpu_s(&self) -> Option<f64> {
        Some(self.end?.cpu_s - self.start?.cpu_s)
    }

    fn broker_figures(&mut self, window_s: f64, delivered: u64) -> Option<BrokerFigures> {
        let pid = self.pid?;
        let last = self.sample();
        let cpu_s = self.broker_cpu_s().unwrap_or(0.0);
        Some(BrokerFigures {
            pid,
            cpu_s,
            cpu_cores: if window_s > 0.0 {
                cpu_s / window_s
            } else {
                0.0
            },
            delivered_per_broker_cpu_s: if cpu_s > 0.0 {
                delivered as f64 / cpu_s
            } else {
                0.0
            },
            peak_rss_kb: self.peak_rss_kb,
            rss_start_kb: self.first.map_or(0, |s| s.rss_kb),
            rss_end_kb: last.map_or(0, |s| s.rss_kb),
            rss_per_conn_bytes: None,
            connects_per_broker_cpu_s: None,
            threads: last.map_or(0, |s| s.threads),
        })
    }

    fn generator(&self, ctx: &RunCtx, window_s: f64) -> GeneratorFigures {
        let cpu_s = (self.gen_end - self.gen_start).max(0.0);
        GeneratorFigures {
            threads: ctx.threads,
            cpus: ctx.cpus.clone(),
            cpu_s,
            utilisation: if window_s > 0.0 {
                cpu_s / (window_s * ctx.threads as f64)
            } else {
                0.0
            },
        }
    }
}

/// Prints a progress line once a second.
struct Progress {
    start: u64,
    next: u64,
    last: Totals,
    last_t: u64,
}

impl Progress {
    fn new() -> Progress {
        let now = now_ns();
        Progress {
            start: now,
            next: now + 1_000_000_000,
            last: Totals::default(),
            last_t: now,
        }
    }

    fn tick(&mut self, ctx: &RunCtx, engine: &Engine, mon: &mut Monitor, phase: &str, extra: &str) {
        let now = now_ns();
        if now < self.next {
            return;
        }
        self.next += 1_000_000_000;
        let t = engine.totals();
        let dt = ns_to_secs(now - self.last_t).max(1e-9);
        let interval = engine.take_interval();
        let p99 = (interval.count() > 0).then(|| interval.percentiles().p99);
        let mut extra = extra.to_string();
        if let Some(s) = mon.sample() {
            extra.push_str(&format!("  broker rss {:.0} MiB", s.rss_kb as f64 / 1024.0));
        }
        ctx.say(&progress_line(
            ns_to_secs(now - self.start),
            phase,
            (t.sent - self.last.sent) as f64 / dt,
            (t.delivered - self.last.delivered) as f64 / dt,
            p99,
            t.errors,
            &extra,
        ));
        self.last = t;
        self.last_t = now;
    }
}

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// Waits until `target` clients have settled (ready or failed). Returns the time taken.
fn wait_connected(
    ctx: &RunCtx,
    engine: &Engine,
    mon: &mut Monitor,
    progress: &mut Progress,
    target: u64,
    what: &str,
) -> Result<f64, BenchError> {
    let start = now_ns();
    // Generous: 30 s plus 10 ms per client.
    let limit = start + 30_000_000_000 + target * 10_000_000;
    loop {
        let t = engine.totals();
        if t.settled >= target {
            return Ok(ns_to_secs(now_ns() - start));
        }
        if engine.worker_failed() {
            return Err(BenchError::Run("a generator thread failed".into()));
        }
        if now_ns() > limit {
            return Err(BenchError::Run(format!(
                "{what}: only {} of {target} clients settled in time",
                t.settled
            )));
        }
        progress.tick(
            ctx,
            engine,
            mon,
            what,
            &format!("  connected {}/{}", t.connected, engine.clients()),
        );
        sleep_ms(2);
    }
}

fn base_report(
    name: &str,
    ctx: &RunCtx,
    clients: usize,
    publishers: usize,
    subscribers: usize,
) -> Report {
    let o = &ctx.opts;
    Report {
        scenario: name.to_string(),
        url: ctx.url.clone(),
        qos: o.qos,
        size: o.size,
        clients,
        publishers,
        subscribers,
        mode: if o.rate.is_some() { "open" } else { "closed" }.into(),
        rate_per_publisher: o.rate,
        inflight: if o.rate.is_some() {
            None
        } else {
            Some(o.inflight.unwrap_or(32))
        },
        warmup_s: o.warmup,
        placement: o.placement,
        shards: o.shards,
        ..Report::default()
    }
}

fn connect_figures(
    engine_clients: usize,
    t: &Totals,
    time_s: f64,
    lat: &Latency,
) -> ConnectFigures {
    ConnectFigures {
        connections: t.connected,
        failed: (engine_clients as u64).saturating_sub(t.connected),
        time_s,
        connect_per_s: if time_s > 0.0 {
            t.connected as f64 / time_s
        } else {
            0.0
        },
        latency_us: lat.percentiles(),
    }
}

/// pairs / fanin / fanout.
fn run_traffic(name: &str, ctx: &RunCtx) -> Result<Report, BenchError> {
    let n = ctx.n;
    let o = &ctx.opts;
    let mut clients = Vec::new();
    let publishers: Vec<u32>;
    let pub_plan = |i: usize, topic: TopicName| PublishPlan {
        publisher: i as u32,
        topic,
        retain: false,
    };
    let client = |id: String, group: usize| ClientPlan {
        client_id: id,
        clean_session: true,
        group,
        publish: None,
        subscribe: Vec::new(),
        subscribe_at_run: false,
        streams: Vec::new(),
    };
    let shape = match name {
        "pairs" => Shape::Pairs,
        "fanin" => Shape::Fanin,
        _ => Shape::Fanout,
    };
    // Wanted home shards (empty without --placement: the normal ids).
    let targets = match ctx.place_on {
        Some(shards) => placement::targets(shape, o.placement, shards, n),
        None => placement::Targets {
            publishers: Vec::new(),
            subscribers: Vec::new(),
        },
    };
    let pub_id = |i: usize| ctx.placed_id("p", i, targets.publishers.get(i));
    let sub_id = |i: usize| ctx.placed_id("s", i, targets.subscribers.get(i));
    match shape {
        Shape::Pairs => {
            publishers = vec![1; n];
            for i in 0..n {
                let mut s = client(sub_id(i), i);
                s.subscribe = vec![ctx.filter(&i.to_string())?];
                s.streams = vec![(i as u32, 0)];
                clients.push(s);
                let mut p = client(pub_id(i), i);
                p.publish = Some(pub_plan(i, ctx.topic(&i.to_string())?));
                clients.push(p);
            }
        }
        Shape::Fanin => {
            publishers = vec![1; n];
            let mut s = client(sub_id(0), 0);
            s.subscribe = vec![ctx.filter("+")?];
            s.streams = (0..n as u32).map(|i| (i, 0)).collect();
            clients.push(s);
            for i in 0..n {
                let mut p = client(pub_id(i), i);
                p.publish = Some(pub_plan(i, ctx.topic(&i.to_string())?));
                clients.push(p);
            }
        }
        Shape::Fanout => {
            publishers = vec![n as u32];
            for i in 0..n {
                let mut s = client(sub_id(i), i);
                s.subscribe = vec![ctx.filter("all")?];
                s.streams = vec![(0, i as u32)];
                clients.push(s);
            }
            let mut p = client(pub_id(0), 0);
            p.publish = Some(pub_plan(0, ctx.topic("all")?));
            clients.push(p);
        }
    }
    let clients_per_shard = o
        .shards
        .filter(|&s| s > 0)
        .map(|s| placement::per_shard(clients.iter().map(|c| c.client_id.as_str()), s));
    let n_pubs = publishers.len();
    let n_subs = clients.len() - n_pubs;
    let n_clients = clients.len();
    ctx.check_fds(n_clients)?;
    let mode = match o.rate {
        Some(rate) => Mode::Open { rate },
        None => Mode::Closed {
            inflight: o.inflight.unwrap_or(32),
        },
    };
    let mut plan = ctx.plan(clients, publishers, mode);
    plan.connect_concurrency = 100;
    let mut report = base_report(name, ctx, n_clients, n_pubs, n_subs);
    report.clients_per_shard = clients_per_shard;

    let mut mon = Monitor::new(o.broker_pid)?;
    let engine = Engine::start(plan)?;
    let mut progress = Progress::new();
    let connect_s = wait_connected(
        ctx,
        &engine,
        &mut mon,
        &mut progress,
        n_clients as u64,
        "connect",
    )?;
    let after_connect = engine.totals();
    if after_connect.connected < n_clients as u64 {
        let tls = tls_detail(&engine);
        let r = engine.finish()?;
        return Err(BenchError::Run(format!(
            "only {} of {n_clients} clients could connect and subscribe {}{tls}",
            after_connect.connected,
            crate::report::error_detail(&r.errors)
        )));
    }

    let t_run = now_ns() + 1_000_000;
    let t_warm = t_run + secs_to_ns(o.warmup);
    let t_end = t_warm + secs_to_ns(o.duration);
    engine.run(t_run, t_warm, t_end);
    let mut started = false;
    loop {
        let now = now_ns();
        if !started && now >= t_warm {
            mon.mark_start();
            started = true;
        }
        if now >= t_end {
            mon.mark_end();
            break;
        }
        if engine.worker_failed() {
            return Err(BenchError::Run("a generator thread failed".into()));
        }
        let phase = if started { "measure" } else { "warm-up" };
        progress.tick(ctx, &engine, &mut mon, phase, "");
        sleep_ms(
            ((t_end.min(if started { u64::MAX } else { t_warm }) - now) / 1_000_000).clamp(0, 20),
        );
    }
    engine.drain();
    // Wait for the last messages: until all expected arrived, nothing arrived for a second, or
    // the drain limit.
    let drain_start = now_ns();
    let limit = drain_start + secs_to_ns(o.drain);
    let mut last_unique = 0;
    let mut last_change = drain_start;
    loop {
        let now = now_ns();
        let t = engine.totals();
        if engine.publishers_stopped() && t.unique >= engine.expected() {
            break;
        }
        if t.unique != last_unique {
            last_unique = t.unique;
            last_change = now;
        } else if now - last_change > 1_000_000_000 && engine.publishers_stopped() {
            break;
        }
        if now > limit {
            report.warnings.push(format!(
                "drain limit of {} s reached with messages still missing",
                o.drain
            ));
            break;
        }
        progress.tick(ctx, &engine, &mut mon, "drain", "");
        sleep_ms(2);
    }
    if let Some(e) = engine.tls_error() {
        report.warnings.push(e);
    }
    let r = engine.finish()?;

    let window_s = ns_to_secs(t_end - t_warm);
    report.duration_s = window_s;
    report.sent = r.sent_window;
    report.delivered = r.delivered_window;
    report.sent_per_s = r.sent_window as f64 / window_s.max(1e-9);
    report.delivered_per_s = r.delivered_window as f64 / window_s.max(1e-9);
    report.expected = r.expected;
    report.lost = r.lost;
    report.duplicated = r.duplicated;
    report.out_of_order = r.out_of_order;
    report.latency_us = r.latency.percentiles();
    report.connect = connect_figures(n_clients, &after_connect, connect_s, &r.connect_latency);
    report.errors = r.errors;
    report.errors_total = r.errors.total();
    report.generator = mon.generator(ctx, window_s);
    report.broker = mon.broker_figures(window_s, r.delivered_window);
    finish_warnings(&mut report, &mut mon);
    if ctx.qos != QoS::AtMostOnce && r.lost > 0 {
        report.warnings.push(format!(
            "{} QoS {} messages lost: the broker dropped messages it had acknowledged",
            r.lost, ctx.opts.qos
        ));
    }
    if ctx.qos == QoS::ExactlyOnce && r.duplicated > 0 {
        report.warnings.push(format!(
            "{} duplicates at QoS 2 (exactly once was violated)",
            r.duplicated
        ));
    }
    if let Mode::Open { .. } = mode {
        let expected_sent = o.rate.unwrap_or(0.0) * n_pubs as f64 * window_s;
        if (r.sent_window as f64) < expected_sent * 0.95 {
            report.warnings.push(format!(
                "sent only {} of the {:.0} scheduled messages in the window",
                r.sent_window, expected_sent
            ));
        }
    }
    Ok(report)
}

/// `: <the first TLS failure>`, or nothing.
fn tls_detail(engine: &Engine) -> String {
    engine
        .tls_error()
        .map(|e| format!(": {e}"))
        .unwrap_or_default()
}

fn finish_warnings(report: &mut Report, mon: &mut Monitor) {
    report.warnings.append(&mut mon.warnings);
    let g = &report.generator;
    if g.utilisation > 0.85 {
        report.warnings.push(format!(
            "the generator used {:.0}% of its {} thread(s): it may be the bottleneck; \
             give it more CPUs (--threads) or measure a lighter load",
            g.utilisation * 100.0,
            g.threads
        ));
    }
}

/// conns: connect N clients, hold them, measure memory.
fn run_conns(ctx: &RunCtx) -> Result<Report, BenchError> {
    let n = ctx.n;
    let o = &ctx.opts;
    ctx.check_fds(n)?;
    let clients: Vec<ClientPlan> = (0..n)
        .map(|i| ClientPlan {
            client_id: ctx.client_id("c", i),
            clean_session: true,
            group: i,
            publish: None,
            subscribe: Vec::new(),
            subscribe_at_run: false,
            streams: Vec::new(),
        })
        .collect();
    let mut plan = ctx.plan(clients, Vec::new(), Mode::Closed { inflight: 1 });
    plan.connect_rate = o.rate;
    let mut report = base_report("conns", ctx, n, 0, 0);
    report.mode = "connections".into();
    report.inflight = Some(plan.connect_concurrency as u32);
    report.rate_per_publisher = None;
    report.qos = 0;
    report.warmup_s = 0.0;

    let mut mon = Monitor::new(o.broker_pid)?;
    let rss_before = mon.sample();
    mon.mark_start();
    let engine = Engine::start(plan)?;
    let mut progress = Progress::new();
    let connect_s = wait_connected(ctx, &engine, &mut mon, &mut progress, n as u64, "connect")?;
    let connected = engine.totals();
    mon.mark_end();
    let rss_connected = mon.sample();
    let hold_end = now_ns() + secs_to_ns(o.duration);
    while now_ns() < hold_end {
        let t = engine.totals();
        progress.tick(
            ctx,
            &engine,
            &mut mon,
            "hold",
            &format!("  connected {}", t.connected),
        );
        sleep_ms(20);
    }
    let held = engine.totals();
    if let Some(e) = engine.tls_error() {
        report.warnings.push(e);
    }
    let r = engine.finish()?;
    report.duration_s = connect_s;
    report.connect = connect_figures(n, &connected, connect_s, &r.connect_latency);
    report.latency_us = r.connect_latency.percentiles();
    report.errors = r.errors;
    report.errors_total = r.errors.total();
    report.generator = mon.generator(ctx, connect_s);
    report.broker = mon.broker_figures(connect_s, 0);
    if let (Some(b), Some(before), Some(after)) =
        (report.broker.as_mut(), rss_before, rss_connected)
    {
        if b.cpu_s > 0.0 {
            b.connects_per_broker_cpu_s = Some(connected.connected as f64 / b.cpu_s);
        }
        if connected.connected > 0 {
            b.rss_per_conn_bytes = Some(
                (after.rss_kb as f64 - before.rss_kb as f64) * 1024.0 / connected.connected as f64,
            );
        }
        b.rss_start_kb = before.rss_kb;
    }
    if held.connected < connected.connected {
        report.warnings.push(format!(
            "{} connections were closed by the broker while held",
            connected.connected - held.connected
        ));
    }
    finish_warnings(&mut report, &mut mon);
    Ok(report)
}

/// retained: preload a retained set, subscribe, time its arrival.
fn run_retained(ctx: &RunCtx) -> Result<Report, BenchError> {
    let n = ctx.n;
    let o = &ctx.opts;
    let m = o.messages.unwrap_or(10_000);
    if m == 0 {
        return Err(BenchError::Usage("--messages must be at least 1".into()));
    }
    ctx.check_fds(n + 1)?;
    let mut mon = Monitor::new(o.broker_pid)?;
    let mut report = base_report("retained", ctx, n, 0, n);
    report.mode = "retained".into();
    report.inflight = None;
    report.rate_per_publisher = None;
    report.warmup_s = 0.0;

    // Preload.
    let preload_start = now_ns();
    let topics: Vec<TopicName> = (0..m)
        .map(|i| ctx.topic(&format!("r/{i}")))
        .collect::<Result<_, _>>()?;
    let (mut pubc, _) = ctx
        .connect_simple(&ctx.client_id("r", 0), true, Duration::from_secs(10))
        .map_err(|e| BenchError::Run(format!("preload: cannot connect: {e}")))?;
    let messages = topics.iter().enumerate().map(|(i, t)| {
        let payload = Header {
            run_id: ctx.run_id,
            publisher: 0,
            seq: i as u64,
            sent_ns: now_ns(),
        }
        .to_payload(o.size);
        (t.clone(), payload, true)
    });
    pubc.publish_all(messages, 500)
        .map_err(|e| BenchError::Run(format!("preload: {e}")))?;
    let preload_s = ns_to_secs(now_ns() - preload_start);

    let clients: Vec<ClientPlan> = (0..n)
        .map(|i| -> Result<ClientPlan, BenchError> {
            Ok(ClientPlan {
                client_id: ctx.client_id("s", i),
                clean_session: true,
                group: i,
                publish: None,
                subscribe: vec![ctx.filter("r/#")?],
                subscribe_at_run: true,
                streams: vec![(0, i as u32)],
            })
        })
        .collect::<Result<_, _>>()?;
    let mut plan = ctx.plan(clients, vec![n as u32], Mode::Closed { inflight: 1 });
    plan.latency_origin = LatencyOrigin::Subscribe;
    let engine = Engine::start(plan)?;
    engine.set_external_sent(0, m as u64);
    let mut progress = Progress::new();
    let connect_s = wait_connected(ctx, &engine, &mut mon, &mut progress, n as u64, "connect")?;
    let connected = engine.totals();
    let expected = (m * n) as u64;
    mon.mark_start();
    let t_run = now_ns();
    let t_end = t_run + secs_to_ns(o.duration.max(1.0));
    engine.run(t_run, t_run, u64::MAX);
    let mut done_at = None;
    loop {
        let now = now_ns();
        let t = engine.totals();
        if t.unique >= expected {
            done_at = Some(now);
            break;
        }
        if now >= t_end {
            break;
        }
        progress.tick(
            ctx,
            &engine,
            &mut mon,
            "receive",
            &format!("  {}/{expected}", t.unique),
        );
        sleep_ms(1);
    }
    mon.mark_end();
    let t_done = done_at.unwrap_or_else(now_ns);
    // A little longer, to catch duplicates.
    sleep_ms(200);
    if let Some(e) = engine.tls_error() {
        report.warnings.push(e);
    }
    let r = engine.finish()?;

    // Clear the retained set (empty retained payloads delete it).
    let clear = topics
        .iter()
        .map(|t| (t.clone(), bytes::Bytes::new(), true));
    if let Err(e) = pubc.publish_all(clear, 500).and_then(|_| pubc.disconnect()) {
        report
            .warnings
            .push(format!("could not clear the retained messages: {e}"));
    }

    let window_s = ns_to_secs(t_done - t_run);
    report.duration_s = window_s;
    report.sent = m as u64;
    report.delivered = r.unique;
    report.sent_per_s = m as f64 / preload_s.max(1e-9);
    report.delivered_per_s = r.unique as f64 / window_s.max(1e-9);
    report.expected = r.expected;
    report.lost = r.lost;
    report.duplicated = r.duplicated;
    report.out_of_order = r.out_of_order;
    report.latency_us = r.latency.percentiles();
    report.connect = connect_figures(n, &connected, connect_s, &r.connect_latency);
    report.errors = r.errors;
    report.errors_total = r.errors.total();
    report.generator = mon.generator(ctx, window_s);
    report.broker = mon.broker_figures(window_s, r.unique);
    report.retained = Some(RetainedFigures {
        messages: m as u64,
        subscribers: n as u64,
        time_s: window_s,
        preload_s,
    });
    if done_at.is_none() {
        report.warnings.push(format!(
            "only {} of {expected} retained deliveries arrived within {} s",
            r.unique,
            o.duration.max(1.0)
        ));
    }
    finish_warnings(&mut report, &mut mon);
    Ok(report)
}

/// storm: persistent sessions reconnecting at once, round after round.
fn run_storm(ctx: &RunCtx) -> Result<Report, BenchError> {
    let n = ctx.n;
    let o = &ctx.opts;
    ctx.check_fds(n)?;
    let clients: Vec<ClientPlan> = (0..n)
        .map(|i| -> Result<ClientPlan, BenchError> {
            Ok(ClientPlan {
                client_id: ctx.client_id("st", i),
                clean_session: false,
                group: i,
                publish: None,
                subscribe: vec![ctx.filter(&format!("st/{i}"))?],
                subscribe_at_run: false,
                streams: Vec::new(),
            })
        })
        .collect::<Result<_, _>>()?;
    let mut plan = ctx.plan(clients, Vec::new(), Mode::Closed { inflight: 1 });
    plan.connect_rate = o.rate;
    let ids: Vec<String> = plan.clients.iter().map(|c| c.client_id.clone()).collect();
    let mut report = base_report("storm", ctx, n, 0, n);
    report.mode = "storm".into();
    report.inflight = Some(plan.connect_concurrency as u32);
    report.rate_per_publisher = None;
    report.warmup_s = 0.0;

    let mut mon = Monitor::new(o.broker_pid)?;
    let engine = Engine::start(plan)?;
    let mut progress = Progress::new();
    let connect_s = wait_connected(ctx, &engine, &mut mon, &mut progress, n as u64, "connect")?;
    let connected = engine.totals();
    mon.mark_start();
    let t_start = now_ns();
    let t_end = t_start + secs_to_ns(o.duration);
    let mut rounds = 0u64;
    let mut round_ms = Vec::new();
    let mut failure = None;
    loop {
        rounds += 1;
        let r0 = now_ns();
        engine.storm(rounds);
        match wait_connected(
            ctx,
            &engine,
            &mut mon,
            &mut progress,
            n as u64 * (rounds + 1),
            "storm",
        ) {
            Ok(_) => round_ms.push(ns_to_secs(now_ns() - r0) * 1e3),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
        if now_ns() >= t_end {
            break;
        }
    }
    let t_stop = now_ns();
    mon.mark_end();
    if let Some(e) = engine.tls_error() {
        report.warnings.push(e);
    }
    let r = engine.finish()?;
    if let Some(e) = failure {
        return Err(e);
    }
    // Remove the persistent sessions.
    let mut cleanup_failed = 0;
    for id in &ids {
        match ctx.connect_simple(id, true, Duration::from_secs(5)) {
            Ok((c, _)) => {
                let _ = c.disconnect();
            }
            Err(_) => cleanup_failed += 1,
        }
    }
    let window_s = ns_to_secs(t_stop - t_start);
    report.duration_s = window_s;
    report.connect = connect_figures(n, &connected, connect_s, &r.connect_latency);
    report.latency_us = r.reconnect_latency.percentiles();
    round_ms.sort_by(f64::total_cmp);
    let reconnects = r.reconnect_latency.count();
    report.storm = Some(StormFigures {
        rounds,
        reconnects,
        reconnect_per_s: reconnects as f64 / window_s.max(1e-9),
        round_ms_median: round_ms.get(round_ms.len() / 2).copied().unwrap_or(0.0),
        round_ms_max: round_ms.last().copied().unwrap_or(0.0),
        latency_us: r.reconnect_latency.percentiles(),
    });
    report.errors = r.errors;
    report.errors_total = r.errors.total();
    report.generator = mon.generator(ctx, window_s);
    report.broker = mon.broker_figures(window_s, 0);
    if cleanup_failed > 0 {
        report.warnings.push(format!(
            "{cleanup_failed} persistent sessions could not be removed afterwards"
        ));
    }
    finish_warnings(&mut report, &mut mon);
    Ok(report)
}
