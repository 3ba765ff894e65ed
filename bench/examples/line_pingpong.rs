//! How far apart two CPUs are: one cache line handed back and forth between a thread on each,
//! printed as nanoseconds per one-way transfer. On a VM the answer can change from one second
//! to the next, as the host moves the vCPUs; `bench/RESULTS.md` uses it to explain why the cost
//! of a cross-shard hop moves from run to run.
//!
//! ```text
//! cargo run --release -p bench --example line_pingpong -- [CPU_A CPU_B [ROUND_TRIPS]]
//! ```
//! Defaults: CPUs 0 and 1, 2,000,000 round trips. Both threads spin: it keeps two CPUs busy for
//! about as long as the round trips take (well under a second at ~30 ns, ~1 s at ~160 ns).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use amqtt_bench::sys::set_affinity;

/// The shared counter, alone on its cache line.
#[repr(align(64))]
struct Line(AtomicU64);

fn arg(args: &[String], i: usize, default: u64) -> Result<u64, String> {
    match args.get(i) {
        None => Ok(default),
        Some(text) => text
            .parse()
            .map_err(|_| format!("argument {}: expected a number, got {text:?}", i + 1)),
    }
}

/// `[CPU_A CPU_B [ROUND_TRIPS]]`.
fn parse_args(args: &[String]) -> Result<(u64, u64, u64), String> {
    Ok((arg(args, 0, 0)?, arg(args, 1, 1)?, arg(args, 2, 2_000_000)?))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = parse_args(&args);
    let (cpu_a, cpu_b, round_trips) = match parsed {
        Ok(v) => v,
        Err(e) => {
            eprintln!("line_pingpong: {e}\nusage: line_pingpong [CPU_A CPU_B [ROUND_TRIPS]]");
            std::process::exit(2);
        }
    };
    let line = Arc::new(Line(AtomicU64::new(0)));
    let other = Arc::clone(&line);
    let pin = |cpu: u64| {
        if let Err(e) = set_affinity(&[cpu as usize]) {
            eprintln!("line_pingpong: cannot run on CPU {cpu}: {e}");
            std::process::exit(1);
        }
    };
    pin(cpu_a);
    let responder = std::thread::spawn(move || {
        pin(cpu_b);
        for i in 0..round_trips {
            while other.0.load(Ordering::Acquire) != 2 * i + 1 {
                std::hint::spin_loop();
            }
            other.0.store(2 * i + 2, Ordering::Release);
        }
    });
    let start = Instant::now();
    for i in 0..round_trips {
        line.0.store(2 * i + 1, Ordering::Release);
        while line.0.load(Ordering::Acquire) != 2 * i + 2 {
            std::hint::spin_loop();
        }
    }
    let elapsed = start.elapsed();
    if responder.join().is_err() {
        eprintln!("line_pingpong: the responder thread panicked");
        std::process::exit(1);
    }
    let ns = elapsed.as_nanos() as f64 / (round_trips as f64 * 2.0);
    println!("CPU {cpu_a} <-> CPU {cpu_b}: {ns:.1} ns per one-way cache-line transfer");
}
