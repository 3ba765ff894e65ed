//! The scenarios: each turns [`Opts`] into an engine [`Plan`](crate::engine::Plan), walks the engine through its
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
//! A comma-separated `--url` list spreads the clients over a cluster's nodes (the same module says
//! which client goes where); `--broker-pid` may name several processes, whose figures are summed.
//!
//! ## Layout
//! * `mod.rs` (here): the command line ([`Scenario`], [`Opts`]), [`BenchError`] and dispatch.
//! * `run`: what every run shares (context, broker sampling, progress, common report fields).
//! * `traffic`: `pairs`, `fanin`, `fanout`. `conns`: `conns` and `storm`. `retained`: `retained`.

use std::io;
use std::path::PathBuf;

use amqtt::protocol::{ProtocolLevel, QoS, TopicName};
use clap::{Args, Subcommand};

use crate::credentials::{self, Credentials};
use crate::engine::Server;
use crate::payload::HEADER_LEN;
use crate::placement::{self, Placement};
use crate::report::Report;
use crate::sys;
use crate::tls::{TlsTarget, Trust};
use crate::url::{self, Scheme};

mod conns;
mod retained;
mod run;
mod traffic;

use conns::{run_conns, run_storm};
use retained::run_retained;
use run::{new_run_id, RunCtx};
use traffic::run_traffic;

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
    /// recognised but not supported by this version). A comma-separated list spreads the clients
    /// over the nodes of a cluster: pairs puts publisher i on URL i mod K and its subscriber on
    /// URL (i+1) mod K (so they are on different nodes); fanin, fanout, conns, storm and
    /// retained place their clients round robin, the single subscriber (fanin) or publisher
    /// (fanout) on the first URL.
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
    /// pairs/fanin/fanout: subscribers keep persistent sessions (clean session 0), so a broker
    /// with persistence journals what it queues for them; the sessions are removed after the run.
    #[arg(long)]
    pub persistent: bool,
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
    /// Broker process(es) to sample (CPU time, RSS) from /proc: repeat it or give a
    /// comma-separated list (a cluster's nodes and its nats-server); figures are their sums.
    #[arg(long, value_name = "PID", value_delimiter = ',')]
    pub broker_pid: Vec<u32>,
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
    /// MQTT version of every client: 311 (also 4 or 3.1.1) or 5.
    #[arg(long, value_name = "VERSION", default_value = "311", value_parser = parse_protocol)]
    pub protocol: ProtocolLevel,
    /// With --protocol 5: publishers send a topic alias instead of the topic after the first
    /// message of each connection (when the broker's Topic Alias Maximum allows one).
    #[arg(long)]
    pub topic_alias: bool,
}

/// `--protocol`: MQTT 3.1.1 or 5.
fn parse_protocol(text: &str) -> Result<ProtocolLevel, String> {
    match text {
        "311" | "4" | "3.1.1" => Ok(ProtocolLevel::V311),
        "5" | "5.0" => Ok(ProtocolLevel::V5),
        _ => Err(format!("'{text}': use 311 or 5")),
    }
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            url: "mqtt://127.0.0.1:1883".into(),
            cafile: None,
            insecure: false,
            shards: None,
            placement: Placement::Any,
            persistent: false,
            n: None,
            qos: 0,
            size: 64,
            duration: 5.0,
            warmup: 1.0,
            rate: None,
            inflight: None,
            threads: None,
            pin_threads: false,
            broker_pid: Vec::new(),
            json: false,
            quiet: false,
            drain: 10.0,
            messages: None,
            prefix: "amqtt-bench".into(),
            keep_alive: 60,
            protocol: ProtocolLevel::V311,
            topic_alias: false,
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
        let (servers, credentials, urls) = servers(o)?;
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
        if o.persistent
            && !matches!(
                self,
                Scenario::Pairs(_) | Scenario::Fanin(_) | Scenario::Fanout(_)
            )
        {
            return Err(BenchError::Usage(format!(
                "--persistent applies to pairs, fanin and fanout (storm is always persistent), \
                 not {}",
                self.name()
            )));
        }
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
        if o.topic_alias && o.protocol != ProtocolLevel::V5 {
            return Err(BenchError::Usage("--topic-alias needs --protocol 5".into()));
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
            url: urls,
            servers,
            credentials,
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

/// The brokers of `--url` (one, or a comma-separated list of cluster nodes), resolved, with the
/// credentials they share and the list as reports print it (without passwords).
fn servers(o: &Opts) -> Result<(Vec<Server>, Option<Credentials>, String), BenchError> {
    let mut servers = Vec::new();
    let mut shown = Vec::new();
    let mut shared: Option<Option<Credentials>> = None;
    for text in o.url.split(',').map(str::trim) {
        if text.is_empty() {
            return Err(BenchError::Usage(format!(
                "--url {:?}: an empty URL in the list",
                o.url
            )));
        }
        let (credentials, text) = credentials::split(text).map_err(BenchError::Usage)?;
        match &shared {
            Some(first) if *first != credentials => {
                return Err(BenchError::Usage(
                    "every URL of --url must carry the same user name and password".into(),
                ))
            }
            Some(_) => {}
            None => shared = Some(credentials),
        }
        let url = url::parse(&text).map_err(BenchError::Usage)?;
        let trust = match (url.scheme, &o.cafile, o.insecure) {
            (Scheme::Mqtts, _, true) => Some(Trust::Insecure),
            (Scheme::Mqtts, Some(path), false) => Some(Trust::CaFile(path.clone())),
            (Scheme::Mqtts, None, false) => Some(Trust::System),
            _ => None,
        };
        let tls = trust
            .map(|trust| TlsTarget::new(&url.host, &trust))
            .transpose()
            .map_err(|e| BenchError::Usage(e.to_string()))?;
        let addr = url::socket_addr(&url).map_err(BenchError::Usage)?;
        servers.push(Server { addr, tls });
        shown.push(url.to_string());
    }
    if (o.cafile.is_some() || o.insecure) && servers.iter().all(|s| s.tls.is_none()) {
        return Err(BenchError::Usage(
            "--cafile and --insecure apply to mqtts:// URLs only".into(),
        ));
    }
    Ok((servers, shared.flatten(), shown.join(",")))
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
