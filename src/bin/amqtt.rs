//! `amqtt`: run the broker. Parses the command line, loads the config, starts, waits for a signal.
//!
//! Exit status: 0 after SIGINT/SIGTERM, 2 for a bad command line or a bad configuration (the file,
//! its TLS material, password file, plugins or log file), 1 when a valid configuration cannot run
//! here (a port already in use, the kernel refusing the runtime). SIGHUP reopens the log file (for
//! logrotate) and reloads the configuration file (`hang_up`); it never stops the broker.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use amqtt::config::{ConfigError, LogFormat};
use amqtt::logging::Logs;
use amqtt::{Broker, BrokerConfig, BrokerHandle, StartError};

/// Exit status for a bad command line or configuration (clap's usage errors exit 2 too).
const EXIT_BAD_CONFIG: u8 = 2;
/// Exit status when a valid configuration cannot run on this machine.
const EXIT_RUNTIME: u8 = 1;
/// The soft `RLIMIT_MEMLOCK` below which glommio refuses to start an executor.
const MIN_MEMLOCK: u64 = 512 << 10;

/// amqtt-rs MQTT 3.1.1 broker (aMQTT-compatible YAML configuration).
///
/// Without -c it listens on 0.0.0.0:1883 (TCP) with the built-in defaults; see config/default.yaml
/// for every key. It runs in the foreground and logs to stderr, or to --log-file / `log_file`.
/// Stops cleanly on SIGINT or SIGTERM. SIGHUP reopens the log file (logrotate) and reloads the
/// configuration file: password file, ACLs and plugin settings, TLS certificates, queue and memory
/// limits, max_qos, log_level and listeners change without a restart (settings that cannot, e.g.
/// shards or persistence, are logged and kept; a file that does not validate changes nothing).
///
/// Environment: AMQTT_RUNTIME=auto|glommio|epoll overrides the `runtime` key (auto: glommio, or
/// the epoll runtime with one warning where io_uring is refused, e.g. under Docker's default
/// seccomp profile; glommio: fail at start without io_uring; epoll: always the fallback).
/// RUST_LOG sets the log level (over -d and the log_level key). Under systemd (JOURNAL_STREAM names stderr) log lines carry
/// `<N>` syslog priorities and no timestamp, for journald (--log-format text keeps timestamps).
#[derive(Parser, Debug)]
#[command(
    name = "amqtt",
    version,
    about,
    long_about,
    after_help = "Exit status: 0 stopped by SIGINT/SIGTERM; 1 the broker could not run (port in use, \
                  runtime refused by the kernel); 2 bad command line or configuration (file, TLS \
                  material, password file, plugins, a log file that cannot be opened, an AMQTT_RUNTIME \
                  that names no runtime)."
)]
struct Args {
    /// Broker configuration file (aMQTT YAML format).
    #[arg(short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Debug logging, with a line per packet received and sent like mosquitto -v (the
    /// `log_packets` key); not daemonize: amqtt always stays in the foreground; run it as a
    /// service with systemd or a container, see deploy/. RUST_LOG overrides, e.g.
    /// RUST_LOG=amqtt=debug.
    #[arg(short = 'd')]
    debug: bool,
    /// Append log lines to FILE (created if missing) instead of stderr; SIGHUP reopens it, for
    /// logrotate. Overrides the `log_file` key.
    #[arg(long, value_name = "FILE")]
    log_file: Option<PathBuf>,
    /// Log line format: auto (journal when stderr is the systemd journal, else text), text
    /// (`[UTC time LEVEL target] message`), journal (`<6>[LEVEL target] message`, no time) or
    /// json (one object per line: timestamp, level, target, message). Overrides `log_format`.
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<LogFormat>,
    /// mosquitto's -v (verbose): refused with a pointer to -d.
    #[arg(short = 'v', hide = true)]
    verbose: bool,
    /// mosquitto's -p PORT: refused with a pointer to the configuration key.
    #[arg(short = 'p', hide = true, value_name = "PORT")]
    port: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(message) = mosquitto_habit(&args) {
        eprintln!("amqtt: {message}");
        return ExitCode::from(EXIT_BAD_CONFIG);
    }
    // rustls warns about every client that connects to a TLS listener by IP address ("Illegal
    // SNI extension"); failed handshakes get a line of ours instead.
    let default_filter = if args.debug {
        "debug,rustls=error"
    } else {
        "info,rustls=error"
    };
    let logs = match Logs::install(default_filter) {
        Ok(logs) => logs,
        Err(error) => {
            eprintln!("amqtt: cannot install the logger: {error}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };

    // Log lines are kept until the configuration says where they go.
    let loaded = match &args.config {
        Some(path) => BrokerConfig::from_file(path),
        None => Ok(BrokerConfig::default()),
    };
    let config = match loaded {
        Ok(config) => config,
        Err(error) => {
            let _ = logs.start(None, args.log_format.unwrap_or_default());
            eprintln!("amqtt: {error}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    if let Err(message) = start_logs(&logs, &args, &config) {
        eprintln!("amqtt: {message}");
        return ExitCode::from(EXIT_BAD_CONFIG);
    }
    // Errors that end the broker from here on go to the log file too, if there is one.
    let to_file = args.log_file.is_some() || config.log_file.is_some();
    match &args.config {
        Some(path) => log::info!("configuration: {}", path.display()),
        None => log::info!("configuration: built-in defaults (no -c FILE)"),
    }
    // -d decides the log level; otherwise `log_level` does (unless RUST_LOG is set).
    if args.debug {
        logs.fix("-d");
    } else {
        let _ = logs.set_level(config.log_level.as_deref());
    }
    match shards::raise_limits() {
        Ok(limits) => {
            log::info!(
                "file descriptor limit {} (about {} connections), locked-memory limit {} KiB",
                limits.nofile,
                limits.nofile.saturating_sub(64),
                limits.memlock / 1024
            );
            if limits.memlock < MIN_MEMLOCK {
                log::warn!("{}", memlock_advice(limits.memlock));
            }
        }
        Err(error) => log::warn!("cannot raise resource limits: {error}"),
    }
    // Before any thread starts: see `reserve_descriptors` (each later doubling of the table would
    // stall the accepting shard for an RCU grace period, ~10-25 ms).
    if let Err(error) = shards::reserve_descriptors(shards::MAX_RESERVED_DESCRIPTORS) {
        log::warn!("cannot reserve the descriptor table: {error}");
    }
    let signals = match block_signals() {
        Ok(set) => set,
        Err(error) => {
            fail(
                to_file,
                &format_args!("cannot set up signal handling: {error}"),
            );
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    // -d is for debugging: it shows every packet, as mosquitto -v does (after a reload too).
    let debug = args.debug;
    let broker = Broker::new(config).map(|broker| {
        broker
            .with_config_overrides(move |config| config.log_packets |= debug)
            .with_logs(logs)
    });
    let handle = match broker.and_then(Broker::start) {
        Ok(handle) => handle,
        Err(error) => {
            fail(to_file, &error);
            return ExitCode::from(start_error_status(&error));
        }
    };
    let signal = wait_for_stop_signal(&signals, &logs, &handle);
    log::info!("received {signal}, shutting down");
    match handle.stop() {
        Ok(()) => {
            log::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(error) => {
            fail(to_file, &error);
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// Reports an error that ends the broker on stderr (what a terminal and systemd show) and, when
/// lines go to a log file, in the file too.
fn fail(to_file: bool, message: &dyn std::fmt::Display) {
    if to_file {
        log::error!("{message}");
    }
    eprintln!("amqtt: {message}");
}

/// Sends log lines where the command line, else the configuration, says; an error names the
/// option or the configuration key, the file and the reason.
fn start_logs(logs: &Logs, args: &Args, config: &BrokerConfig) -> Result<(), String> {
    let format = args.log_format.unwrap_or(config.log_format);
    let file = args.log_file.as_ref().or(config.log_file.as_ref());
    let Err(error) = logs.start(file.map(PathBuf::as_path), format) else {
        return Ok(());
    };
    Err(match (&args.log_file, &config.source) {
        (None, Some(source)) => ConfigError::Invalid {
            file: source.display().to_string(),
            key: "log_file".to_string(),
            reason: error.to_string(),
        }
        .to_string(),
        _ => format!("--log-file: {error}"),
    })
}

/// What to use instead of a mosquitto option this broker does not take.
fn mosquitto_habit(args: &Args) -> Option<String> {
    if args.verbose {
        return Some(
            "-v is not an option of amqtt (mosquitto's verbose flag): use -d for debug logging \
             with a line per packet, or `log_packets: true` in the configuration"
                .to_string(),
        );
    }
    args.port.as_ref().map(|port| {
        format!(
            "-p is not an option of amqtt (mosquitto's port flag): set the port in a configuration \
             file and pass it with -c, e.g.\n  listeners:\n    default:\n      type: tcp\n      \
             bind: 0.0.0.0:{port}\n(config/minimal.yaml)"
        )
    })
}

/// How a command-line user raises the locked-memory limit the runtime needs.
fn memlock_advice(current: u64) -> String {
    format!(
        "locked-memory limit {} KiB is below the {} KiB the broker's runtime needs: raise it with \
         `ulimit -l 1024` (or unlimited) in the shell that starts amqtt, `LimitMEMLOCK=infinity` \
         in its systemd unit, `--ulimit memlock=-1` for docker run (root too: glommio checks the limit, not the capability)",
        current / 1024,
        MIN_MEMLOCK / 1024
    )
}

/// Bad configuration exits 2, whatever part of it was bad; the rest is the machine's doing.
fn start_error_status(error: &StartError) -> u8 {
    match error {
        StartError::Tls { .. } | StartError::Config(_) | StartError::Plugins(_) => EXIT_BAD_CONFIG,
        _ => EXIT_RUNTIME,
    }
}

/// Blocks SIGINT, SIGTERM and SIGHUP in this thread before any shard starts, so every thread
/// inherits the mask and the signals wait for `sigwait` here (SIGHUP's default action would
/// otherwise end the process at once).
fn block_signals() -> std::io::Result<libc::sigset_t> {
    // SAFETY: plain libc calls on a zeroed, then initialised, sigset_t owned by this frame.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc));
        }
        Ok(set)
    }
}

/// Waits for SIGINT or SIGTERM: the one place the process's signals arrive (every other thread
/// has them blocked). A SIGHUP in between is handled by `hang_up` and the wait goes on.
fn wait_for_stop_signal(set: &libc::sigset_t, logs: &Logs, handle: &BrokerHandle) -> &'static str {
    loop {
        let mut signal: libc::c_int = 0;
        // SAFETY: `set` was initialised by `block_signals`; sigwait writes one int.
        let rc = unsafe { libc::sigwait(set, &mut signal) };
        match (rc, signal) {
            (0, libc::SIGHUP) => hang_up(logs, handle),
            (0, libc::SIGINT) => return "SIGINT",
            (0, libc::SIGTERM) => return "SIGTERM",
            _ => return "a stop signal",
        }
    }
}

/// What SIGHUP does (`systemctl reload`, logrotate's postrotate): reopen the log file, then read
/// the configuration file again and apply it (`BrokerHandle::reload`, which logs each change, each
/// setting kept until a restart, or why the file was refused). The broker keeps serving either way.
fn hang_up(logs: &Logs, handle: &BrokerHandle) {
    match logs.reopen() {
        Ok(Some(path)) => log::info!("SIGHUP received: log file {} reopened", path.display()),
        Ok(None) => log::info!("SIGHUP received"),
        Err(error) => {
            log::error!("SIGHUP received: {error}; log lines still go to the file open before")
        }
    }
    // Success and failure are logged by the reload itself.
    let _ = handle.reload();
}
