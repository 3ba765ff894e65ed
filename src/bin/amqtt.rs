//! `amqtt`: run the broker. Parses the command line, loads the config, starts, waits for a signal.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use amqtt::{Broker, BrokerConfig};

/// amqtt-rs MQTT 3.1.1 broker (aMQTT-compatible YAML configuration).
///
/// Without -c it listens on 0.0.0.0:1883 (TCP) with the built-in defaults; see config/default.yaml
/// for every key. Stops cleanly on SIGINT or SIGTERM.
///
/// Environment: AMQTT_RUNTIME=auto|glommio|epoll overrides the `runtime` key (auto: glommio, or
/// the epoll runtime with one warning where io_uring is refused, e.g. under Docker's default
/// seccomp profile; glommio: fail at start without io_uring; epoll: always the fallback).
/// RUST_LOG sets the log level.
#[derive(Parser, Debug)]
#[command(name = "amqtt", version, about, long_about)]
struct Args {
    /// Broker configuration file (aMQTT YAML format).
    #[arg(short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Enable debug messages.
    #[arg(short = 'd')]
    debug: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let default_level = if args.debug { "debug" } else { "info" };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level))
        .format_timestamp_millis()
        .init();

    let config = match &args.config {
        Some(path) => match BrokerConfig::from_file(path) {
            Ok(config) => config,
            Err(error) => {
                eprintln!("amqtt: {error}");
                return ExitCode::from(2);
            }
        },
        None => BrokerConfig::default(),
    };
    match shards::raise_limits() {
        Ok(limits) => log::info!(
            "file descriptor limit {} (about {} connections), locked-memory limit {} KiB",
            limits.nofile,
            limits.nofile.saturating_sub(64),
            limits.memlock / 1024
        ),
        Err(error) => log::warn!("cannot raise resource limits: {error}"),
    }
    // Before any thread starts: see `reserve_descriptors` (each later doubling of the table would
    // stall the accepting shard for an RCU grace period, ~10-25 ms).
    if let Err(error) = shards::reserve_descriptors(shards::MAX_RESERVED_DESCRIPTORS) {
        log::warn!("cannot reserve the descriptor table: {error}");
    }
    let signals = match block_stop_signals() {
        Ok(set) => set,
        Err(error) => {
            eprintln!("amqtt: cannot set up signal handling: {error}");
            return ExitCode::FAILURE;
        }
    };
    let handle = match Broker::new(config).and_then(Broker::start) {
        Ok(handle) => handle,
        Err(error) => {
            eprintln!("amqtt: {error}");
            return ExitCode::FAILURE;
        }
    };
    let signal = wait_for_signal(&signals);
    log::info!("received {signal}, shutting down");
    match handle.stop() {
        Ok(()) => {
            log::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("amqtt: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Blocks SIGINT and SIGTERM in this thread before any shard starts, so every thread inherits the
/// mask and the signals wait for `sigwait` here.
fn block_stop_signals() -> std::io::Result<libc::sigset_t> {
    // SAFETY: plain libc calls on a zeroed, then initialised, sigset_t owned by this frame.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc));
        }
        Ok(set)
    }
}

fn wait_for_signal(set: &libc::sigset_t) -> &'static str {
    let mut signal: libc::c_int = 0;
    // SAFETY: `set` was initialised by `block_stop_signals`; sigwait writes one int.
    let rc = unsafe { libc::sigwait(set, &mut signal) };
    match (rc, signal) {
        (0, libc::SIGINT) => "SIGINT",
        (0, libc::SIGTERM) => "SIGTERM",
        _ => "a stop signal",
    }
}
