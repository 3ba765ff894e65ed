//! `amqtt-bench compare`: the same scenario matrix against several brokers, side by side.
//!
//! Each broker is given as `NAME[:KIND]=COMMAND`. The harness picks a free loopback port, writes a
//! configuration file for the broker's KIND (`amqtt` YAML, `mosquitto` conf or `rumqttd` TOML;
//! `none` writes nothing; `--append-config` adds a file's text to it), substitutes `{config}`,
//! `{port}` and `{datadir}` in COMMAND (and `{datadir}` in the configuration), and starts the
//! broker itself — fresh for every single run, with a fresh data directory when `{datadir}` is
//! used, so one run's leftovers (a journal, a database) never weigh on the next. KIND is guessed
//! from the program name when omitted.
//!
//! Runs are interleaved to cancel machine drift: for each pinning mode, for each round, for each
//! scenario, every broker in turn (A B A B ...). In the `pinned` mode the broker runs under
//! `taskset -c BROKER_CPUS` and the generator restricts itself to the remaining CPUs; in the
//! `unpinned` mode both may use every CPU (each broker keeps its own default threading).
//!
//! At the end it writes a Markdown report (medians over rounds, ratios against the first broker,
//! machine, versions, the exact command) and an SVG bar chart of each scenario's headline figure.
//!
//! ## Layout
//! * `mod.rs` (here): the options ([`CompareArgs`], [`PinMode`]), parsing `--broker-cpus` and the
//!   `--scenario` strings, and [`run`]: the matrix of runs, one progress line per run, writing the
//!   two files and the optional JSON.
//! * `brokers`: the `--broker` specs ([`BrokerSpec`], [`Kind`]), the configuration text written
//!   for each kind, a broker's command line and version, and starting and stopping one broker
//!   process.
//! * `metrics`: the figures compared for each scenario, the median over rounds, and the collected
//!   results as the writers read them.
//! * `markdown`: the Markdown report (`RESULTS.md`).
//! * `svg`: the SVG bar chart.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, Parser, ValueEnum};

use crate::report::{dur_us, si, Report};
use crate::scenario::{BenchError, Scenario};
use crate::sys;

mod brokers;
mod markdown;
mod metrics;
mod svg;

pub use brokers::{shell_quote, split_words, BrokerSpec, Kind};
pub use metrics::median;

use brokers::{start_broker, stop_broker};
use markdown::{loadavg, markdown};
use metrics::ReportCtx;
use svg::svg_chart;

/// Options of `compare`.
#[derive(Args, Debug, Clone)]
pub struct CompareArgs {
    /// A broker to compare, as `NAME[:KIND]=COMMAND`, e.g.
    /// 'amqtt=target/release/amqtt -c {config}' or 'mosquitto=/usr/sbin/mosquitto -c {config}'.
    /// {config} becomes the path of a config file the harness writes for KIND (amqtt, mosquitto,
    /// rumqttd, or none: then COMMAND must use {port}); {port} becomes the port it listens on. KIND is
    /// guessed from the program name. Repeat for each broker; the first is the baseline of ratios.
    /// {datadir} (in COMMAND or in --append-config text) becomes a fresh, empty directory for
    /// each run, removed after it (its size is printed).
    #[arg(long = "broker", value_name = "NAME[:KIND]=COMMAND", required = true)]
    pub brokers: Vec<String>,
    /// Append the text of FILE to the configuration written for broker NAME, e.g. a
    /// `persistence:` block with `dir: {datadir}` (amqtt) or `persistence true` and
    /// `persistence_location {datadir}/` (mosquitto: later lines win). Repeatable.
    #[arg(long = "append-config", value_name = "NAME=FILE")]
    pub append_config: Vec<String>,
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

/// Applies one `--append-config NAME=FILE`.
fn append_config(brokers: &mut [BrokerSpec], arg: &str) -> Result<(), String> {
    let (name, file) = arg
        .split_once('=')
        .ok_or_else(|| format!("--append-config {arg:?}: expected NAME=FILE"))?;
    let b = brokers
        .iter_mut()
        .find(|b| b.name == name)
        .ok_or_else(|| format!("--append-config {arg:?}: no --broker named {name:?}"))?;
    let text = fs::read_to_string(file).map_err(|e| format!("--append-config {arg:?}: {e}"))?;
    b.append_config(&text)
}

/// Results of the matrix: (mode, scenario index, broker index) → reports of the rounds.
type Results = BTreeMap<(usize, usize, usize), Vec<Report>>;

/// Runs `compare`. `argv` is the whole command line, recorded in the report.
pub fn run(args: &CompareArgs, argv: &[String]) -> Result<(), BenchError> {
    let usage = BenchError::Usage;
    let mut brokers: Vec<BrokerSpec> = args
        .brokers
        .iter()
        .map(|b| BrokerSpec::parse(b))
        .collect::<Result<_, _>>()
        .map_err(usage)?;
    for a in &args.append_config {
        append_config(&mut brokers, a).map_err(BenchError::Usage)?;
    }
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
                        o.broker_pid = vec![broker.pid];
                        o.json = false;
                        o.quiet = !args.verbose;
                        if o.threads.is_none() {
                            o.threads = Some(cpus.len());
                        }
                    }
                    let outcome = sc.run();
                    let stopped = stop_broker(broker);
                    if let Some(e) = stopped.error {
                        failures.push(format!("{label}: {e}"));
                    }
                    let data = stopped
                        .data_bytes
                        .map(|b| format!(", data dir {:.1} MiB", b as f64 / (1024.0 * 1024.0)))
                        .unwrap_or_default();
                    match outcome {
                        Ok(r) => {
                            eprintln!("{label}: {}{data}", one_line(&r));
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let v5 = parse_scenario("pairs -n 8 --qos 1 --protocol 5 --topic-alias", 3.0, 0.5).unwrap();
        assert_eq!(
            (v5.opts().protocol, v5.opts().topic_alias),
            (amqtt::protocol::ProtocolLevel::V5, true)
        );
        assert!(parse_scenario("nosuch", 1.0, 1.0).is_err());
        for d in default_scenarios() {
            assert!(parse_scenario(&d, 1.0, 1.0).is_ok(), "{d}");
        }
    }
}
