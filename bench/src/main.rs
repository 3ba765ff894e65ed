//! `amqtt-bench`: load-test an MQTT broker, or compare several brokers side by side.
//!
//! A thin command line over the `amqtt_bench` library: parse, run one scenario or `compare`,
//! print the summary table (stdout) or one JSON object (`--json`, stdout; the table then goes to
//! stderr). Exit codes: 0 done, 1 the run failed, 2 bad usage.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use amqtt_bench::compare::CompareArgs;
use amqtt_bench::scenario::{BenchError, Scenario};

/// MQTT load generator and broker comparison harness of amqtt-rs.
///
/// Every message carries its publisher id, sequence number and send time, so loss, duplicates,
/// reordering and end-to-end latency are measured while the load runs. Durations are seconds.
///
/// Example: amqtt-bench pairs --url mqtt://127.0.0.1:1883 -n 8 --qos 1 --size 64 --duration 3 --json
#[derive(Parser, Debug)]
#[command(name = "amqtt-bench", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    #[command(flatten)]
    Scenario(Scenario),
    /// Start several brokers from command lines and run a scenario matrix against each in turn,
    /// interleaved; write RESULTS.md and an SVG chart.
    Compare(CompareArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // While this is the only thread: a threaded process that grows its descriptor table later
    // waits for an RCU grace period at each doubling (10-25 ms on a 2-CPU VM), and those waits were
    // the 17-30 ms CONNACK p99 that `conns -n 5000` showed for every broker, in a fresh process.
    if let Err(e) = shards::raise_nofile() {
        eprintln!("amqtt-bench: warning: cannot raise the descriptor limit: {e}");
    }
    if let Err(e) = shards::reserve_descriptors(shards::MAX_RESERVED_DESCRIPTORS) {
        eprintln!("amqtt-bench: warning: cannot reserve the descriptor table: {e}");
    }
    let result = match cli.command {
        Command::Scenario(s) => run_one(&s),
        Command::Compare(args) => {
            amqtt_bench::compare::run(&args, &std::env::args().collect::<Vec<_>>())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(BenchError::Usage(m)) => {
            eprintln!("amqtt-bench: {m}");
            ExitCode::from(2)
        }
        Err(BenchError::Run(m)) => {
            eprintln!("amqtt-bench: {m}");
            ExitCode::FAILURE
        }
    }
}

fn run_one(s: &Scenario) -> Result<(), BenchError> {
    let report = s.run()?;
    if s.opts().json {
        if !s.opts().quiet {
            eprint!("{}", report.table());
        }
        let json = serde_json::to_string(&report).map_err(|e| BenchError::Run(e.to_string()))?;
        println!("{json}");
    } else {
        print!("{}", report.table());
    }
    Ok(())
}
