//! `amqtt-bench compare`: the same scenario matrix against several brokers, side by side.
//!
//! Each broker is given as `NAME[:KIND]=COMMAND`. The harness picks a free loopback port, writes a
//! configuration file for the broker's KIND (`amqtt` YAML or `mosquitto` conf; `none` writes
//! nothing), substitutes `{config}` and `{port}` in COMMAND, and starts the broker itself — fresh
//! for every single run, so one run's leftovers never weigh on the next. KIND is guessed from the
//! program name when omitted.
//!
//! Runs are interleaved to cancel machine drift: for each pinning mode, for each round, for each
//! scenario, every broker in turn (A B A B ...). In the `pinned` mode the broker runs under
//! `taskset -c BROKER_CPUS` and the generator restricts itself to the remaining CPUs; in the
//! `unpinned` mode both may use every CPU (each broker keeps its own default threading).
//!
//! At the end it writes a Markdown report (medians over rounds, ratios against the first broker,
//! machine, versions, the exact command) and an SVG bar chart of each scenario's headline figure.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::{Args, Parser, ValueEnum};

use crate::report::{dur_us, si, Report};
use crate::scenario::{BenchError, Scenario};
use crate::simple::SimpleClient;
use crate::sys;

/// Options of `compare`.
#[derive(Args, Debug, Clone)]
pub struct CompareArgs {
    /// A broker to compare, as NAME[:KIND]=COMMAND, e.g.
    /// 'amqtt=target/release/amqtt -c {config}' or 'mosquitto=/usr/sbin/mosquitto -c {config}'.
    /// {config} becomes the path of a config file the harness writes for KIND (amqtt, mosquitto,
    /// or none: then COMMAND must use {port}); {port} becomes the port it listens on. KIND is
    /// guessed from the program name. Repeat for each broker; the first is the baseline of ratios.
    #[arg(long = "broker", value_name = "NAME[:KIND]=COMMAND", required = true)]
    pub brokers: Vec<String>,
    /// A scenario, written as on the command line without --url/--broker-pid/--json, e.g.
    /// "pairs -n 8 --qos 1". Repeat. Default: pairs QoS 0/1/2, fanin, fanout, conns, and pairs at
    /// a fixed 1000 and 5000 msg/s per publisher for latency.
    #[arg(long = "scenario", value_name = "SCENARIO")]
    pub scenarios: Vec<String>,
    /// Runs of each (scenario, broker); the table shows medians.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Pinning modes to run.
    #[arg(long, value_enum, default_value = "both")]
    pub pin: PinMode,
    /// CPUs of the broker in the pinned mode (taskset list such as 0 or 0-1); the generator gets
    /// the others.
    #[arg(long, default_value = "0")]
    pub broker_cpus: String,
    /// Measured seconds of scenarios that do not set --duration themselves.
    #[arg(long, default_value_t = 3.0)]
    pub duration: f64,
    /// Warm-up seconds of scenarios that do not set --warmup themselves.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Markdown report to write.
    #[arg(long, default_value = "bench/RESULTS.md")]
    pub results: PathBuf,
    /// SVG chart to write (referenced from the report by file name).
    #[arg(long, default_value = "bench/results.svg")]
    pub svg: PathBuf,
    /// Also print every run's report as one JSON array on stdout.
    #[arg(long)]
    pub json: bool,
    /// Show each run's progress lines (default: one line per run).
    #[arg(long)]
    pub verbose: bool,
}

/// Which pinning modes `compare` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PinMode {
    /// Broker on --broker-cpus, generator on the other CPUs.
    Pinned,
    /// Broker and generator free to use every CPU.
    Unpinned,
    /// Both, pinned first.
    Both,
}

/// Configuration flavour written for a broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Amqtt,
    Mosquitto,
    None,
}

/// A parsed `--broker`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerSpec {
    pub name: String,
    pub kind: Kind,
    /// The command split into words, with `{config}` / `{port}` still in place.
    pub words: Vec<String>,
    pub command: String,
}

/// Splits a command line into words: whitespace separates, '...' and "..." quote, \ escapes
/// outside single quotes. No variables, globs or other shell features.
pub fn split_words(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(ch) = chars.next() {
        match ch {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err(format!("unclosed ' in {s:?}")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c) => cur.push(c),
                            None => return Err(format!("trailing \\ in {s:?}")),
                        },
                        Some(c) => cur.push(c),
                        None => return Err(format!("unclosed \" in {s:?}")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => cur.push(c),
                    None => return Err(format!("trailing \\ in {s:?}")),
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// Quotes a word for a POSIX shell when it needs it.
pub fn shell_quote(w: &str) -> String {
    if !w.is_empty()
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,{}".contains(c))
    {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', r"'\''"))
    }
}

impl BrokerSpec {
    /// Parses `NAME[:KIND]=COMMAND`.
    pub fn parse(s: &str) -> Result<BrokerSpec, String> {
        let (head, command) = s
            .split_once('=')
            .ok_or_else(|| format!("--broker {s:?}: expected NAME[:KIND]=COMMAND"))?;
        let (name, kind) = match head.split_once(':') {
            Some((n, k)) => (n.trim(), Some(k.trim())),
            None => (head.trim(), None),
        };
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(format!(
                "--broker {s:?}: the name must be letters, digits, '-', '_' or '.'"
            ));
        }
        let words = split_words(command).map_err(|e| format!("--broker {s:?}: {e}"))?;
        let program = words
            .first()
            .ok_or_else(|| format!("--broker {s:?}: empty command"))?;
        let kind = match kind {
            Some("amqtt") => Kind::Amqtt,
            Some("mosquitto") => Kind::Mosquitto,
            Some("none") => Kind::None,
            Some(k) => {
                return Err(format!(
                    "--broker {s:?}: unknown kind {k:?} (amqtt, mosquitto or none)"
                ))
            }
            None => {
                let base = Path::new(program)
                    .file_name()
                    .map(|f| f.to_string_lossy().to_lowercase())
                    .unwrap_or_default();
                if base.contains("mosquitto") {
                    Kind::Mosquitto
                } else if base.contains("amqtt") {
                    Kind::Amqtt
                } else {
                    Kind::None
                }
            }
        };
        let uses = |p: &str| words.iter().any(|w| w.contains(p));
        if kind == Kind::None && !uses("{port}") {
            return Err(format!(
                "--broker {s:?}: without a config kind the command must contain {{port}}"
            ));
        }
        if kind != Kind::None && !uses("{config}") && !uses("{port}") {
            return Err(format!(
                "--broker {s:?}: the command uses neither {{config}} nor {{port}}, so the broker \
                 would not listen where the harness expects"
            ));
        }
        Ok(BrokerSpec {
            name: name.to_string(),
            kind,
            words,
            command: command.trim().to_string(),
        })
    }

    /// The configuration file text for this broker listening on 127.0.0.1:`port`. `window` is
    /// the scenario's [`Scenario::broker_window`]: when set, the broker's outgoing QoS 1/2 window
    /// is raised to it (both brokers default to 20), so a closed loop of 32 in flight measures
    /// the broker moving 32 messages, not the broker queueing 12 of them.
    pub fn config_text(&self, port: u16, window: Option<u32>) -> Option<String> {
        let mut text = match self.kind {
            Kind::Amqtt => format!(
                "# Written by amqtt-bench compare.\n\
                 listeners:\n  default:\n    bind: 127.0.0.1:{port}\n\
                 sys_interval: 0\n\
                 connection_messages: false\n"
            ),
            Kind::Mosquitto => format!(
                "# Written by amqtt-bench compare.\n\
                 listener {port} 127.0.0.1\n\
                 allow_anonymous true\n\
                 persistence false\n\
                 sys_interval 0\n\
                 set_tcp_nodelay true\n\
                 max_connections -1\n\
                 log_dest stderr\n\
                 log_type error\n\
                 log_type warning\n\
                 connection_messages false\n"
            ),
            Kind::None => return None,
        };
        if let Some(w) = window {
            text.push_str(&match self.kind {
                Kind::Mosquitto => format!("max_inflight_messages {w}\n"),
                _ => format!("max_inflight: {w}\n"),
            });
        }
        Some(text)
    }

    /// The command words with placeholders filled in.
    pub fn argv(&self, config: &Path, port: u16) -> Vec<String> {
        let config = config.to_string_lossy();
        self.words
            .iter()
            .map(|w| {
                w.replace("{config}", &config)
                    .replace("{port}", &port.to_string())
            })
            .collect()
    }

    /// The broker's version, asked of the program itself.
    pub fn version(&self) -> String {
        let Some(program) = self.words.first() else {
            return "unknown".into();
        };
        let (arg, pick_first_line) = match self.kind {
            Kind::Mosquitto => ("-h", true),
            _ => ("--version", true),
        };
        let out = run_with_timeout(program, &[arg], Duration::from_secs(5));
        match out {
            Some(text) if pick_first_line => text
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("unknown")
                .trim()
                .to_string(),
            Some(text) => text.trim().to_string(),
            None => "unknown".into(),
        }
    }
}

/// Runs a short command, returns stdout+stderr, or `None` if it could not run or timed out
/// (then it is killed by PID).
fn run_with_timeout(program: &str, args: &[&str], timeout: Duration) -> Option<String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if start.elapsed() < timeout => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    let out = child.wait_with_output().ok()?;
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    Some(s)
}

/// Parses a CPU list such as `0`, `0-1`, `0,2-3`.
pub fn parse_cpu_list(s: &str) -> Result<Vec<usize>, String> {
    let mut cpus = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("bad CPU list {s:?}");
        match part.split_once('-') {
            Some((a, b)) => {
                let a: usize = a.trim().parse().map_err(|_| bad())?;
                let b: usize = b.trim().parse().map_err(|_| bad())?;
                if a > b {
                    return Err(bad());
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().map_err(|_| bad())?),
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    if cpus.is_empty() {
        return Err(format!("empty CPU list {s:?}"));
    }
    Ok(cpus)
}

/// The default scenario matrix.
pub fn default_scenarios() -> Vec<String> {
    [
        "pairs -n 8 --qos 0",
        "pairs -n 8 --qos 1",
        "pairs -n 8 --qos 2 --inflight 20",
        "fanin -n 8 --qos 0",
        "fanout -n 8 --qos 0",
        "conns -n 5000 --duration 1",
        "pairs -n 8 --qos 0 --rate 1000",
        "pairs -n 8 --qos 0 --rate 5000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[derive(Parser, Debug)]
#[command(no_binary_name = true)]
struct ScenarioLine {
    #[command(subcommand)]
    scenario: Scenario,
}

/// Parses a `--scenario` string with the scenario command-line parser.
pub fn parse_scenario(s: &str, duration: f64, warmup: f64) -> Result<Scenario, String> {
    let words = split_words(s)?;
    for forbidden in ["--url", "--broker-pid", "--json"] {
        if words
            .iter()
            .any(|w| w == forbidden || w.starts_with(&format!("{forbidden}=")))
        {
            return Err(format!(
                "--scenario {s:?}: {forbidden} is set by compare itself"
            ));
        }
    }
    let mut sc = ScenarioLine::try_parse_from(&words)
        .map_err(|e| format!("--scenario {s:?}: {}", e.to_string().trim()))?
        .scenario;
    let has = |flag: &str| {
        words
            .iter()
            .any(|w| w == flag || w.starts_with(&format!("{flag}=")))
    };
    let o = sc.opts_mut();
    if !has("--duration") {
        o.duration = duration;
    }
    if !has("--warmup") {
        o.warmup = warmup;
    }
    Ok(sc)
}

/// A broker process started by the harness.
struct RunningBroker {
    child: Child,
    pid: u32,
    addr: SocketAddr,
}

fn free_port() -> io::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

fn start_broker(
    spec: &BrokerSpec,
    dir: &Path,
    seq: usize,
    pin: Option<&str>,
    window: Option<u32>,
) -> Result<RunningBroker, String> {
    let port = free_port().map_err(|e| format!("no free port: {e}"))?;
    let config = dir.join(format!("{}-{seq}.conf", spec.name));
    if let Some(text) = spec.config_text(port, window) {
        fs::write(&config, text).map_err(|e| format!("writing {}: {e}", config.display()))?;
    }
    let argv = spec.argv(&config, port);
    let log_path = dir.join(format!("{}-{seq}.log", spec.name));
    let log = fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
    let log2 = log.try_clone().map_err(|e| e.to_string())?;
    let mut cmd = match pin {
        Some(cpus) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpus).args(&argv);
            c
        }
        None => {
            let mut c = Command::new(&argv[0]);
            c.args(&argv[1..]);
            c
        }
    };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2))
        .env("RUST_LOG", "warn");
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", argv.join(" ")))?;
    let pid = child.id();
    let addr: SocketAddr = SocketAddr::from(([127, 0, 0, 1], port));
    let start = Instant::now();
    let log_tail = |p: &Path| {
        fs::read_to_string(p)
            .map(|t| t.lines().rev().take(5).collect::<Vec<_>>().join(" | "))
            .unwrap_or_default()
    };
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "{} exited at start ({status}): {}",
                spec.name,
                log_tail(&log_path)
            ));
        }
        if SimpleClient::connect(addr, "amqtt-bench-probe", true, Duration::from_millis(500))
            .and_then(|(c, _)| c.disconnect())
            .is_ok()
        {
            break;
        }
        if start.elapsed() > Duration::from_secs(10) {
            let _ = stop_broker(RunningBroker { child, pid, addr });
            return Err(format!(
                "{} did not answer on {addr} within 10 s: {}",
                spec.name,
                log_tail(&log_path)
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(RunningBroker { child, pid, addr })
}

/// SIGTERM, up to 5 s grace, then SIGKILL — only the process we started, by its PID.
fn stop_broker(mut b: RunningBroker) -> Result<(), String> {
    if let Ok(Some(_)) = b.child.try_wait() {
        return Ok(());
    }
    let _ = sys::kill(b.pid, libc::SIGTERM);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if let Ok(Some(_)) = b.child.try_wait() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = b.child.kill();
    let _ = b.child.wait();
    Err(format!(
        "pid {} ignored SIGTERM for 5 s and was killed",
        b.pid
    ))
}

/// A headline figure of a report.
#[derive(Debug, Clone, Copy)]
struct Metric {
    name: &'static str,
    higher_is_better: bool,
    get: fn(&Report) -> Option<f64>,
    fmt: fn(f64) -> String,
}

fn fmt_rate(v: f64) -> String {
    format!("{}/s", si(v))
}
fn fmt_us(v: f64) -> String {
    dur_us(v)
}
fn fmt_cores(v: f64) -> String {
    format!("{v:.2}")
}
fn fmt_mib(v: f64) -> String {
    format!("{:.1} MiB", v / 1024.0)
}
fn fmt_bytes(v: f64) -> String {
    format!("{v:.0} B")
}
fn fmt_count(v: f64) -> String {
    format!("{v:.0}")
}

fn metrics_for(sc: &Scenario) -> Vec<Metric> {
    let traffic_closed = vec![
        Metric {
            name: "delivered msg/s",
            higher_is_better: true,
            get: |r| Some(r.delivered_per_s),
            fmt: fmt_rate,
        },
        Metric {
            name: "latency p50",
            higher_is_better: false,
            get: |r| Some(r.latency_us.p50),
            fmt: fmt_us,
        },
        Metric {
            name: "latency p99",
            higher_is_better: false,
            get: |r| Some(r.latency_us.p99),
            fmt: fmt_us,
        },
        Metric {
            name: "broker CPU (cores)",
            higher_is_better: false,
            get: |r| r.broker.as_ref().map(|b| b.cpu_cores),
            fmt: fmt_cores,
        },
        Metric {
            name: "delivered per broker CPU-s",
            higher_is_better: true,
            get: |r| r.broker.as_ref().map(|b| b.delivered_per_broker_cpu_s),
            fmt: |v| si(v),
        },
        Metric {
            name: "broker peak RSS",
            higher_is_better: false,
            get: |r| r.broker.as_ref().map(|b| b.peak_rss_kb as f64),
            fmt: fmt_mib,
        },
        Metric {
            name: "lost (per run)",
            higher_is_better: false,
            get: |r| Some(r.lost as f64),
            fmt: fmt_count,
        },
    ];
    match sc {
        Scenario::Pairs(o) | Scenario::Fanin(o) | Scenario::Fanout(o) if o.rate.is_some() => vec![
            Metric {
                name: "latency p50",
                higher_is_better: false,
                get: |r| Some(r.latency_us.p50),
                fmt: fmt_us,
            },
            Metric {
                name: "latency p99",
                higher_is_better: false,
                get: |r| Some(r.latency_us.p99),
                fmt: fmt_us,
            },
            Metric {
                name: "latency p99.9",
                higher_is_better: false,
                get: |r| Some(r.latency_us.p999),
                fmt: fmt_us,
            },
            Metric {
                name: "latency max",
                higher_is_better: false,
                get: |r| Some(r.latency_us.max),
                fmt: fmt_us,
            },
            Metric {
                name: "delivered msg/s",
                higher_is_better: true,
                get: |r| Some(r.delivered_per_s),
                fmt: fmt_rate,
            },
            Metric {
                name: "broker CPU (cores)",
                higher_is_better: false,
                get: |r| r.broker.as_ref().map(|b| b.cpu_cores),
                fmt: fmt_cores,
            },
            Metric {
                name: "lost (per run)",
                higher_is_better: false,
                get: |r| Some(r.lost as f64),
                fmt: fmt_count,
            },
        ],
        Scenario::Pairs(_) | Scenario::Fanin(_) | Scenario::Fanout(_) => traffic_closed,
        Scenario::Conns(_) => vec![
            Metric {
                name: "connections/s",
                higher_is_better: true,
                get: |r| Some(r.connect.connect_per_s),
                fmt: fmt_rate,
            },
            Metric {
                name: "CONNACK p50",
                higher_is_better: false,
                get: |r| Some(r.connect.latency_us.p50),
                fmt: fmt_us,
            },
            Metric {
                name: "CONNACK p99",
                higher_is_better: false,
                get: |r| Some(r.connect.latency_us.p99),
                fmt: fmt_us,
            },
            Metric {
                name: "connects per broker CPU-s",
                higher_is_better: true,
                get: |r| r.broker.as_ref().and_then(|b| b.connects_per_broker_cpu_s),
                fmt: |v| si(v),
            },
            Metric {
                name: "broker RSS per connection",
                higher_is_better: false,
                get: |r| r.broker.as_ref().and_then(|b| b.rss_per_conn_bytes),
                fmt: fmt_bytes,
            },
            Metric {
                name: "broker peak RSS",
                higher_is_better: false,
                get: |r| r.broker.as_ref().map(|b| b.peak_rss_kb as f64),
                fmt: fmt_mib,
            },
        ],
        Scenario::Storm(_) => vec![
            Metric {
                name: "reconnects/s",
                higher_is_better: true,
                get: |r| r.storm.as_ref().map(|s| s.reconnect_per_s),
                fmt: fmt_rate,
            },
            Metric {
                name: "reconnect p99",
                higher_is_better: false,
                get: |r| r.storm.as_ref().map(|s| s.latency_us.p99),
                fmt: fmt_us,
            },
            Metric {
                name: "sessions lost",
                higher_is_better: false,
                get: |r| Some(r.errors.session_lost as f64),
                fmt: fmt_count,
            },
        ],
        Scenario::Retained(_) => vec![
            Metric {
                name: "retained delivered msg/s",
                higher_is_better: true,
                get: |r| Some(r.delivered_per_s),
                fmt: fmt_rate,
            },
            Metric {
                name: "time for the whole set",
                higher_is_better: false,
                get: |r| r.retained.as_ref().map(|x| x.time_s * 1e6),
                fmt: fmt_us,
            },
            Metric {
                name: "broker peak RSS",
                higher_is_better: false,
                get: |r| r.broker.as_ref().map(|b| b.peak_rss_kb as f64),
                fmt: fmt_mib,
            },
        ],
    }
}

/// Median of the values (mean of the middle two for even counts); `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

/// Results of the matrix: (mode, scenario index, broker index) → reports of the rounds.
type Results = BTreeMap<(usize, usize, usize), Vec<Report>>;

/// Runs `compare`. `argv` is the whole command line, recorded in the report.
pub fn run(args: &CompareArgs, argv: &[String]) -> Result<(), BenchError> {
    let usage = BenchError::Usage;
    let brokers: Vec<BrokerSpec> = args
        .brokers
        .iter()
        .map(|b| BrokerSpec::parse(b))
        .collect::<Result<_, _>>()
        .map_err(usage)?;
    for (i, b) in brokers.iter().enumerate() {
        if brokers[..i].iter().any(|o| o.name == b.name) {
            return Err(BenchError::Usage(format!(
                "broker name {:?} used twice",
                b.name
            )));
        }
    }
    let scenario_texts = if args.scenarios.is_empty() {
        default_scenarios()
    } else {
        args.scenarios.clone()
    };
    let scenarios: Vec<Scenario> = scenario_texts
        .iter()
        .map(|s| parse_scenario(s, args.duration, args.warmup))
        .collect::<Result<_, _>>()
        .map_err(BenchError::Usage)?;
    if args.rounds == 0 {
        return Err(BenchError::Usage("--rounds must be at least 1".into()));
    }
    let all_cpus = sys::affinity().map_err(|e| BenchError::Run(e.to_string()))?;
    let broker_cpus = parse_cpu_list(&args.broker_cpus).map_err(BenchError::Usage)?;
    let gen_cpus: Vec<usize> = all_cpus
        .iter()
        .copied()
        .filter(|c| !broker_cpus.contains(c))
        .collect();
    let modes: Vec<(&str, bool)> = match args.pin {
        PinMode::Pinned => vec![("pinned", true)],
        PinMode::Unpinned => vec![("unpinned", false)],
        PinMode::Both => vec![("pinned", true), ("unpinned", false)],
    };
    if modes.iter().any(|m| m.1) {
        if gen_cpus.is_empty() {
            return Err(BenchError::Usage(format!(
                "pinned mode: no CPU left for the generator (this process may use {all_cpus:?}, \
                 the broker takes {broker_cpus:?})"
            )));
        }
        if let Some(c) = broker_cpus.iter().find(|c| !all_cpus.contains(c)) {
            return Err(BenchError::Usage(format!(
                "--broker-cpus: CPU {c} is not available (available: {all_cpus:?})"
            )));
        }
    }
    let dir = std::env::temp_dir().join(format!("amqtt-bench-{}", std::process::id()));
    fs::create_dir_all(&dir).map_err(|e| BenchError::Run(format!("{}: {e}", dir.display())))?;
    let versions: Vec<String> = brokers.iter().map(|b| b.version()).collect();
    let load_start = loadavg();

    let total_runs = modes.len() * args.rounds * scenarios.len() * brokers.len();
    let started = Instant::now();
    let mut results: Results = BTreeMap::new();
    let mut failures: Vec<String> = Vec::new();
    let mut run_no = 0;
    for (mi, &(mode_name, pinned)) in modes.iter().enumerate() {
        let cpus = if pinned { &gen_cpus } else { &all_cpus };
        sys::set_affinity(cpus).map_err(|e| BenchError::Run(format!("set affinity: {e}")))?;
        for round in 1..=args.rounds {
            for (si_, sc) in scenarios.iter().enumerate() {
                for (bi, spec) in brokers.iter().enumerate() {
                    run_no += 1;
                    let label = format!(
                        "[{run_no}/{total_runs} {mode_name} round {round}] {} | {}",
                        scenario_texts[si_], spec.name
                    );
                    let pin = pinned.then_some(args.broker_cpus.as_str());
                    let broker = match start_broker(spec, &dir, run_no, pin, sc.broker_window()) {
                        Ok(b) => b,
                        Err(e) => {
                            eprintln!("{label}: {e}");
                            failures.push(format!("{label}: {e}"));
                            continue;
                        }
                    };
                    let mut sc = sc.clone();
                    {
                        let o = sc.opts_mut();
                        o.url = format!("mqtt://{}", broker.addr);
                        o.broker_pid = Some(broker.pid);
                        o.json = false;
                        o.quiet = !args.verbose;
                        if o.threads.is_none() {
                            o.threads = Some(cpus.len());
                        }
                    }
                    let outcome = sc.run();
                    if let Err(e) = stop_broker(broker) {
                        failures.push(format!("{label}: {e}"));
                    }
                    match outcome {
                        Ok(r) => {
                            eprintln!("{label}: {}", one_line(&r));
                            results.entry((mi, si_, bi)).or_default().push(r);
                        }
                        Err(e) => {
                            eprintln!("{label}: FAILED: {e}");
                            failures.push(format!("{label}: {e}"));
                        }
                    }
                }
            }
        }
    }
    let _ = sys::set_affinity(&all_cpus);
    let _ = fs::remove_dir_all(&dir);
    let elapsed = started.elapsed();

    let load = (load_start, loadavg());
    let ctx = ReportCtx {
        load,
        args,
        argv,
        brokers: &brokers,
        versions: &versions,
        scenarios: &scenarios,
        scenario_texts: &scenario_texts,
        modes: &modes,
        broker_cpus: &broker_cpus,
        gen_cpus: &gen_cpus,
        all_cpus: &all_cpus,
        results: &results,
        failures: &failures,
        elapsed,
    };
    let svg_name = args
        .svg
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| "results.svg".into());
    let md = markdown(&ctx, &svg_name);
    let svg = svg_chart(&ctx);
    for (path, text) in [(&args.results, &md), (&args.svg, &svg)] {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            let _ = fs::create_dir_all(parent);
        }
        fs::write(path, text).map_err(|e| BenchError::Run(format!("{}: {e}", path.display())))?;
    }
    eprintln!(
        "wrote {} and {} ({} runs in {:.0} s, {} failed)",
        args.results.display(),
        args.svg.display(),
        total_runs,
        elapsed.as_secs_f64(),
        failures.len()
    );
    if args.json {
        let (modes, scenario_texts, brokers) = (&modes, &scenario_texts, &brokers);
        let all: Vec<serde_json::Value> = results
            .iter()
            .flat_map(|(&(mi, si_, bi), reports)| {
                reports.iter().map(move |r| {
                    serde_json::json!({
                        "mode": modes[mi].0,
                        "scenario": scenario_texts[si_],
                        "broker": brokers[bi].name,
                        "report": r,
                    })
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string(&all).map_err(|e| BenchError::Run(e.to_string()))?
        );
    }
    Ok(())
}

fn one_line(r: &Report) -> String {
    let cpu = r
        .broker
        .as_ref()
        .map(|b| {
            format!(
                ", broker {:.2} cores, peak {:.0} MiB",
                b.cpu_cores,
                b.peak_rss_kb as f64 / 1024.0
            )
        })
        .unwrap_or_default();
    let main = match r.scenario.as_str() {
        "conns" => format!(
            "{} conns at {}/s, CONNACK p99 {}{}",
            r.connect.connections,
            si(r.connect.connect_per_s),
            dur_us(r.connect.latency_us.p99),
            r.broker
                .as_ref()
                .and_then(|b| b.rss_per_conn_bytes)
                .map(|b| format!(", {b:.0} B/conn"))
                .unwrap_or_default()
        ),
        "storm" => format!(
            "{} reconnect/s, p99 {}",
            si(r.storm.as_ref().map_or(0.0, |s| s.reconnect_per_s)),
            dur_us(r.latency_us.p99)
        ),
        _ => format!(
            "delivered {}/s, p50 {} p99 {}, lost {}",
            si(r.delivered_per_s),
            dur_us(r.latency_us.p50),
            dur_us(r.latency_us.p99),
            r.lost
        ),
    };
    let errs = if r.errors_total > 0 {
        format!(", errors {}", crate::report::error_detail(&r.errors))
    } else {
        String::new()
    };
    format!("{main}{cpu}{errs}")
}

struct ReportCtx<'a> {
    /// `/proc/loadavg` at the start and the end of the matrix.
    load: (String, String),
    args: &'a CompareArgs,
    argv: &'a [String],
    brokers: &'a [BrokerSpec],
    versions: &'a [String],
    scenarios: &'a [Scenario],
    scenario_texts: &'a [String],
    modes: &'a [(&'a str, bool)],
    broker_cpus: &'a [usize],
    gen_cpus: &'a [usize],
    all_cpus: &'a [usize],
    results: &'a Results,
    failures: &'a [String],
    elapsed: Duration,
}

impl ReportCtx<'_> {
    fn median_of(&self, mi: usize, si_: usize, bi: usize, m: &Metric) -> Option<f64> {
        let reports = self.results.get(&(mi, si_, bi))?;
        let vals: Vec<f64> = reports.iter().filter_map(|r| (m.get)(r)).collect();
        median(&vals)
    }
}

/// `/proc/cpuinfo` model name and count, memory, kernel.
fn machine_info() -> Vec<String> {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let models: Vec<&str> = cpuinfo
        .lines()
        .filter_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).trim())
        .collect();
    let model = models.first().copied().unwrap_or("unknown");
    let mhz = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("cpu MHz"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).trim().to_string());
    let mem_kb = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .unwrap_or(0);
    let mut v = vec![format!(
        "CPU: {} × {model}{}",
        models.len(),
        mhz.map(|m| format!(" ({m} MHz)")).unwrap_or_default()
    )];
    v.push(format!(
        "Memory: {:.1} GiB",
        mem_kb as f64 / 1024.0 / 1024.0
    ));
    v.push(format!("Kernel: {}", sys::uname()));
    if let Some(rustc) = run_with_timeout("rustc", &["--version"], Duration::from_secs(5)) {
        v.push(format!("Compiler: {}", rustc.trim()));
    }
    if let Some(commit) = run_with_timeout(
        "git",
        &["rev-parse", "--short", "HEAD"],
        Duration::from_secs(5),
    ) {
        let commit = commit.trim();
        if !commit.is_empty() && !commit.contains(' ') {
            let dirty = run_with_timeout(
                "git",
                &["status", "--porcelain", "--untracked-files=no"],
                Duration::from_secs(5),
            )
            .is_some_and(|s| !s.trim().is_empty());
            v.push(format!(
                "amqtt-rs commit: {commit}{}",
                if dirty {
                    " (with uncommitted changes)"
                } else {
                    ""
                }
            ));
        }
    }
    v
}

/// The three load averages of `/proc/loadavg`.
fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// True when the 1-minute load average is above the number of CPUs.
fn load_exceeds_cpus(load: &str, cpus: usize) -> bool {
    load.split_whitespace()
        .next()
        .and_then(|l| l.parse::<f64>().ok())
        .is_some_and(|l| l > cpus as f64)
}

/// `YYYY-MM-DD HH:MM UTC` from the system clock.
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60
    )
}

fn ratio_text(base: Option<f64>, other: Option<f64>) -> String {
    match (base, other) {
        (Some(b), Some(o)) if b > 0.0 => format!("{:.2}×", o / b),
        (Some(b), Some(o)) if b == 0.0 && o == 0.0 => "=".into(),
        _ => "–".into(),
    }
}

fn markdown(ctx: &ReportCtx<'_>, svg_name: &str) -> String {
    let mut s = String::new();
    let base = &ctx.brokers[0].name;
    let _ = writeln!(s, "# amqtt-bench results\n");
    let _ = writeln!(
        s,
        "Generated by `amqtt-bench compare` on {} ({} runs in {:.0} s). Medians of {} round(s); \
         ratios are *other ÷ {base}* (for throughput, above 1 means the other broker is faster; \
         for latency, CPU and memory, above 1 means it uses more).\n",
        utc_now(),
        ctx.results.values().map(Vec::len).sum::<usize>(),
        ctx.elapsed.as_secs_f64(),
        ctx.args.rounds
    );
    let _ = writeln!(s, "![headline figures]({svg_name})\n");

    // Headlines: the first metric of every scenario, per mode, for each other broker.
    if ctx.brokers.len() > 1 {
        let _ = writeln!(s, "## Headline\n");
        for (mi, (mode, _)) in ctx.modes.iter().enumerate() {
            for (si_, sc) in ctx.scenarios.iter().enumerate() {
                let m = metrics_for(sc)[0];
                let b = ctx.median_of(mi, si_, 0, &m);
                for (bi, other) in ctx.brokers.iter().enumerate().skip(1) {
                    let o = ctx.median_of(mi, si_, bi, &m);
                    if let (Some(b), Some(o)) = (b, o) {
                        if b > 0.0 && o > 0.0 {
                            let (better, factor) = if m.higher_is_better {
                                (b >= o, if b >= o { b / o } else { o / b })
                            } else {
                                (b <= o, if b <= o { o / b } else { b / o })
                            };
                            let _ = writeln!(
                                s,
                                "- {mode}, `{}`: {} {} {base} vs {} {} — {base} {} by {factor:.2}×",
                                ctx.scenario_texts[si_],
                                m.name,
                                (m.fmt)(b),
                                (m.fmt)(o),
                                other.name,
                                if better { "ahead" } else { "behind" },
                            );
                        }
                    }
                }
            }
        }
        s.push('\n');
    }

    for (mi, (mode, pinned)) in ctx.modes.iter().enumerate() {
        if *pinned {
            let _ = writeln!(
                s,
                "## Broker pinned to CPU(s) {:?}, generator on CPU(s) {:?}\n",
                ctx.broker_cpus, ctx.gen_cpus
            );
        } else {
            let _ = writeln!(
                s,
                "## Unpinned: broker and generator share CPU(s) {:?}\n",
                ctx.all_cpus
            );
        }
        let mut header = "| scenario | metric |".to_string();
        let mut rule = "|---|---|".to_string();
        for b in ctx.brokers {
            let _ = write!(header, " {} |", b.name);
            rule.push_str("---:|");
        }
        for b in ctx.brokers.iter().skip(1) {
            let _ = write!(header, " {} ÷ {base} |", b.name);
            rule.push_str("---:|");
        }
        let _ = writeln!(s, "{header}\n{rule}");
        for (si_, sc) in ctx.scenarios.iter().enumerate() {
            for (k, m) in metrics_for(sc).iter().enumerate() {
                let name = if k == 0 {
                    format!("`{}`", ctx.scenario_texts[si_])
                } else {
                    String::new()
                };
                let vals: Vec<Option<f64>> = (0..ctx.brokers.len())
                    .map(|bi| ctx.median_of(mi, si_, bi, m))
                    .collect();
                if vals.iter().all(Option::is_none) {
                    continue;
                }
                let mut row = format!(
                    "| {name} | {}{} |",
                    m.name,
                    if m.higher_is_better { " ↑" } else { " ↓" }
                );
                for v in &vals {
                    let _ = write!(row, " {} |", v.map_or_else(|| "–".into(), m.fmt));
                }
                for v in vals.iter().skip(1) {
                    let _ = write!(row, " {} |", ratio_text(vals[0], *v));
                }
                let _ = writeln!(s, "{row}");
            }
        }
        let _ = writeln!(s, "\n(↑ higher is better, ↓ lower is better.)\n");
        let _ = mode;
    }

    // Errors, warnings and generator load.
    let mut notes = Vec::new();
    for ((mi, si_, bi), reports) in ctx.results {
        for (k, r) in reports.iter().enumerate() {
            let where_ = format!(
                "{} round {} `{}` on {}",
                ctx.modes[*mi].0,
                k + 1,
                ctx.scenario_texts[*si_],
                ctx.brokers[*bi].name
            );
            if r.errors_total > 0 {
                notes.push(format!(
                    "{where_}: {} errors {}",
                    r.errors_total,
                    crate::report::error_detail(&r.errors)
                ));
            }
            for w in &r.warnings {
                notes.push(format!("{where_}: {w}"));
            }
        }
    }
    notes.extend(ctx.failures.iter().map(|f| format!("failed run: {f}")));
    let _ = writeln!(s, "## Errors and warnings\n");
    if notes.is_empty() {
        let _ = writeln!(
            s,
            "None: no run reported an error, a loss at QoS 1/2 or a warning.\n"
        );
    } else {
        for n in notes {
            let _ = writeln!(s, "- {n}");
        }
        s.push('\n');
    }

    let _ = writeln!(s, "## Machine\n");
    for l in machine_info() {
        let _ = writeln!(s, "- {l}");
    }
    let _ = writeln!(
        s,
        "- Load average (1/5/15 min) at start: {}; at end: {}{}",
        ctx.load.0,
        ctx.load.1,
        if load_exceeds_cpus(&ctx.load.0, ctx.all_cpus.len())
            || load_exceeds_cpus(&ctx.load.1, ctx.all_cpus.len())
        {
            " — **other processes were competing for the CPUs**: absolute figures are depressed \
             and noisier than on an idle machine; the interleaved order keeps the comparison fair \
             on average"
        } else {
            ""
        }
    );
    let _ = writeln!(s, "\n## Brokers\n");
    let _ = writeln!(
        s,
        "| name | command | config kind | version |\n|---|---|---|---|"
    );
    for (b, v) in ctx.brokers.iter().zip(ctx.versions) {
        let _ = writeln!(
            s,
            "| {} | `{}` | {:?} | {} |",
            b.name,
            b.command.replace('|', "\\|"),
            b.kind,
            v.replace('|', "\\|")
        );
    }
    let _ = writeln!(
        s,
        "\nConfiguration written for each kind (port chosen per run):\n"
    );
    for b in ctx.brokers {
        if let Some(text) = b.config_text(0, None) {
            let _ = writeln!(
                s,
                "{} (`{:?}`):\n```\n{}```\n",
                b.name,
                b.kind,
                text.replace(":0\n", ":PORT\n")
                    .replace("listener 0 ", "listener PORT ")
            );
        }
    }
    let windows: Vec<String> = ctx
        .scenarios
        .iter()
        .zip(ctx.scenario_texts)
        .filter_map(|(sc, text)| sc.broker_window().map(|w| format!("`{text}`: {w}")))
        .collect();
    if !windows.is_empty() {
        let _ = writeln!(
            s,
            "For a closed-loop QoS 1/2 scenario one more line raises the broker's outgoing window \
             (`max_inflight: W` / `max_inflight_messages W`; both default to 20) to what the \
             scenario keeps in flight per subscriber, so the scenario's window reaches the \
             subscriber instead of queueing in the broker: {}.\n",
            windows.join("; ")
        );
    }
    let _ = writeln!(s, "## Method\n");
    let _ = writeln!(
        s,
        "- Every run starts its broker afresh (under `taskset -c {}` when pinned), waits until it \
         answers CONNECT, runs one scenario, and stops it with SIGTERM.\n\
         - Order: for each pinning mode, for each round, for each scenario, each broker in turn \
         (A B A B …), so slow drifts of the machine hit every broker alike.\n\
         - Closed-loop scenarios keep at most `--inflight` (default 32) messages per publisher \
         unsettled end to end; the figure is the throughput the broker sustains without building \
         a queue. Open-loop scenarios (`--rate`) send on a fixed schedule and measure latency from \
         the scheduled send time, so stalls are not hidden (no coordinated omission).\n\
         - Latency is end to end (publisher → broker → subscriber) on one `CLOCK_MONOTONIC`, \
         HDR histogram; every message carries publisher id and sequence number, and loss, \
         duplicates and reordering are counted.\n\
         - Broker CPU is from `/proc/PID/stat` (utime + stime) over the measured window; peak RSS \
         is `VmHWM`; RSS per connection is the growth of `VmRSS` while `conns` connects, divided \
         by the connections.",
        ctx.args.broker_cpus
    );
    let _ = writeln!(s, "\n## Exact command\n");
    let cmd: Vec<String> = ctx.argv.iter().map(|w| shell_quote(w)).collect();
    let _ = writeln!(s, "```\n{}\n```", cmd.join(" "));
    s
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A horizontal bar chart: for each mode and scenario, the headline figure of every broker.
fn svg_chart(ctx: &ReportCtx<'_>) -> String {
    const W: f64 = 960.0;
    const LEFT: f64 = 170.0;
    const BAR_H: f64 = 16.0;
    const GAP: f64 = 14.0;
    const COLORS: [&str; 6] = [
        "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
    ];
    let mut rows = String::new();
    let mut y = 58.0;
    for (mi, (mode, _)) in ctx.modes.iter().enumerate() {
        let _ = writeln!(
            rows,
            r#"<text x="10" y="{y}" font-size="15" font-weight="bold">{}</text>"#,
            if ctx.modes[mi].1 {
                "Broker pinned to its own CPU"
            } else {
                "Unpinned"
            }
        );
        let _ = mode;
        y += 14.0;
        for (si_, sc) in ctx.scenarios.iter().enumerate() {
            let m = metrics_for(sc)[0];
            let vals: Vec<Option<f64>> = (0..ctx.brokers.len())
                .map(|bi| ctx.median_of(mi, si_, bi, &m))
                .collect();
            let max = vals.iter().flatten().copied().fold(0.0f64, f64::max);
            y += 8.0;
            let _ = writeln!(
                rows,
                r#"<text x="10" y="{:.0}" font-size="12">{} — {} ({} is better)</text>"#,
                y + 4.0,
                xml_escape(&ctx.scenario_texts[si_]),
                xml_escape(m.name),
                if m.higher_is_better {
                    "higher"
                } else {
                    "lower"
                }
            );
            y += 10.0;
            for (bi, v) in vals.iter().enumerate() {
                let width = match v {
                    Some(v) if max > 0.0 => (v / max) * (W - LEFT - 140.0),
                    _ => 0.0,
                };
                let color = COLORS[bi % COLORS.len()];
                let _ = writeln!(
                    rows,
                    r#"<text x="{:.0}" y="{:.0}" font-size="11" text-anchor="end">{}</text><rect x="{LEFT}" y="{y:.0}" width="{width:.1}" height="{BAR_H}" fill="{color}"/><text x="{:.1}" y="{:.0}" font-size="11">{}</text>"#,
                    LEFT - 6.0,
                    y + 12.0,
                    xml_escape(&ctx.brokers[bi].name),
                    LEFT + width + 6.0,
                    y + 12.0,
                    xml_escape(&v.map_or_else(|| "no result".into(), m.fmt))
                );
                y += BAR_H + 3.0;
            }
            y += GAP - 3.0;
        }
        y += 10.0;
    }
    let h = y + 10.0;
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h:.0}" viewBox="0 0 {W} {h:.0}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
<text x="10" y="26" font-size="18" font-weight="bold">amqtt-bench compare: median of {} round(s)</text>
{rows}</svg>
"#,
        ctx.args.rounds
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words() {
        assert_eq!(
            split_words(r#"a 'b c' "d \" e" f\ g  "#).unwrap(),
            vec!["a", "b c", "d \" e", "f g"]
        );
        assert_eq!(split_words("").unwrap(), Vec::<String>::new());
        assert_eq!(split_words("''").unwrap(), vec![""]);
        assert!(split_words("'open").is_err());
        assert!(split_words("\"open").is_err());
        assert!(split_words("x\\").is_err());
    }

    #[test]
    fn quoting_round_trips() {
        for w in ["plain", "with space", "it's", "", "{config}", "a|b"] {
            assert_eq!(split_words(&shell_quote(w)).unwrap(), vec![w.to_string()]);
        }
    }

    #[test]
    fn broker_specs() {
        let b = BrokerSpec::parse("amqtt=target/release/amqtt -c {config}").unwrap();
        assert_eq!(b.name, "amqtt");
        assert_eq!(b.kind, Kind::Amqtt);
        assert_eq!(
            b.argv(Path::new("/tmp/x.yaml"), 1234),
            vec!["target/release/amqtt", "-c", "/tmp/x.yaml"]
        );
        assert!(b
            .config_text(1234, None)
            .unwrap()
            .contains("bind: 127.0.0.1:1234"));

        let m = BrokerSpec::parse("mosq=/usr/sbin/mosquitto -c {config}").unwrap();
        assert_eq!(m.kind, Kind::Mosquitto);
        assert!(m
            .config_text(99, None)
            .unwrap()
            .contains("listener 99 127.0.0.1"));

        let n = BrokerSpec::parse("other:none=mybroker --port {port}").unwrap();
        assert_eq!(n.kind, Kind::None);
        assert_eq!(n.argv(Path::new("c"), 7), vec!["mybroker", "--port", "7"]);
        assert!(n.config_text(7, Some(32)).is_none());

        let forced = BrokerSpec::parse("x:mosquitto=/opt/mq -c {config}").unwrap();
        assert_eq!(forced.kind, Kind::Mosquitto);

        for bad in [
            "noequals",
            "=cmd {port}",
            "a b=cmd {port}",
            "x=",
            "x=mybroker",
            "x:weird=amqtt -c {config}",
            "x=amqtt",
            "x='open {port}",
        ] {
            assert!(BrokerSpec::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0").unwrap(), vec![0]);
        assert_eq!(parse_cpu_list("0-2,5,1").unwrap(), vec![0, 1, 2, 5]);
        assert!(parse_cpu_list("").is_err());
        assert!(parse_cpu_list("2-1").is_err());
        assert!(parse_cpu_list("x").is_err());
    }

    #[test]
    fn scenario_strings() {
        let s = parse_scenario("pairs -n 4 --qos 2", 3.0, 0.5).unwrap();
        assert_eq!(s.name(), "pairs");
        assert_eq!(s.n(), 4);
        assert_eq!(s.opts().qos, 2);
        assert_eq!(s.opts().duration, 3.0);
        assert_eq!(s.opts().warmup, 0.5);
        let s = parse_scenario("conns -n 10 --duration 1", 3.0, 0.5).unwrap();
        assert_eq!(s.opts().duration, 1.0);
        assert!(parse_scenario("pairs --url mqtt://x", 1.0, 1.0).is_err());
        assert!(parse_scenario("pairs --qos 3", 1.0, 1.0).is_err());
        assert!(parse_scenario("nosuch", 1.0, 1.0).is_err());
        for d in default_scenarios() {
            assert!(parse_scenario(&d, 1.0, 1.0).is_ok(), "{d}");
        }
    }

    #[test]
    fn broker_window_follows_the_scenario() {
        let window = |s: &str| parse_scenario(s, 1.0, 1.0).unwrap().broker_window();
        assert_eq!(window("pairs -n 8 --qos 1"), Some(32));
        assert_eq!(window("pairs -n 8 --qos 2 --inflight 20"), Some(20));
        assert_eq!(window("fanout -n 50 --qos 1 --inflight 10"), Some(10));
        assert_eq!(window("fanin -n 50 --qos 1"), Some(1600));
        assert_eq!(window("fanin -n 5000 --qos 1 --inflight 100"), Some(65_535));
        assert_eq!(window("pairs -n 8 --qos 0"), None);
        assert_eq!(window("pairs -n 8 --qos 1 --rate 100"), None);
        assert_eq!(window("conns -n 10 --inflight 50"), None);

        let amqtt = BrokerSpec::parse("a=amqtt -c {config}").unwrap();
        let mosq = BrokerSpec::parse("m=/usr/sbin/mosquitto -c {config}").unwrap();
        let a = amqtt.config_text(1, Some(32)).unwrap();
        assert!(a.ends_with("\nmax_inflight: 32\n"), "{a}");
        let m = mosq.config_text(1, Some(32)).unwrap();
        assert!(m.ends_with("\nmax_inflight_messages 32\n"), "{m}");
        assert!(!amqtt.config_text(1, None).unwrap().contains("inflight"));
        assert!(!mosq.config_text(1, None).unwrap().contains("inflight"));
        // What compare writes must be a configuration the broker accepts.
        let parsed = amqtt::config::BrokerConfig::from_yaml_str(&a, "compare");
        assert_eq!(parsed.map(|c| c.max_inflight).ok(), Some(32));
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[f64::NAN, 1.0]), Some(1.0));
    }

    #[test]
    fn ratios() {
        assert_eq!(ratio_text(Some(2.0), Some(1.0)), "0.50×");
        assert_eq!(ratio_text(Some(0.0), Some(0.0)), "=");
        assert_eq!(ratio_text(None, Some(1.0)), "–");
    }

    #[test]
    fn load_average() {
        assert!(load_exceeds_cpus("3.5 1 1", 2));
        assert!(!load_exceeds_cpus("1.5 9 9", 2));
        assert!(!load_exceeds_cpus("garbage", 2));
        assert_eq!(loadavg().split_whitespace().count(), 3);
    }

    #[test]
    fn utc_date_shape() {
        let d = utc_now();
        assert_eq!(d.len(), "2026-01-01 00:00 UTC".len(), "{d}");
        assert!(d.starts_with("20"));
    }
}
