//! The brokers under comparison: parsing `--broker NAME[:KIND]=COMMAND` ([`BrokerSpec`], [`Kind`]
//! and the command-line words), the configuration text written for each kind, a broker's command
//! line and version, and one broker process: started on a free loopback port with its config file,
//! log and (when `{datadir}` is used) a fresh data directory, waited for until it answers CONNECT,
//! and stopped again by its PID, its data directory measured and removed.
//!
//! Handles one broker at a time: it runs no scenario, keeps no results and writes no report.

use std::fs;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[cfg(doc)]
use crate::scenario::Scenario;
use crate::simple::SimpleClient;
use crate::sys;

/// Configuration flavour written for a broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Amqtt,
    Mosquitto,
    /// rumqttd 0.20's TOML (`rumqttd -c {config}`), one of the brokers in issue #7's table.
    Rumqttd,
    None,
}

impl Kind {
    /// The extension of the configuration file written for this kind: rumqttd picks the file's
    /// format by it.
    pub fn config_extension(self) -> &'static str {
        match self {
            Kind::Amqtt => "yaml",
            Kind::Rumqttd => "toml",
            Kind::Mosquitto | Kind::None => "conf",
        }
    }
}

/// A parsed `--broker`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerSpec {
    pub name: String,
    pub kind: Kind,
    /// The command split into words, with `{config}` / `{port}` / `{datadir}` still in place.
    pub words: Vec<String>,
    pub command: String,
    /// `--append-config`: text appended to the written configuration, `{datadir}` still in place.
    pub extra_config: String,
}

/// The placeholder for a run's fresh data directory, in a command or in `--append-config` text.
pub const DATADIR: &str = "{datadir}";

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
            Some("rumqttd") => Kind::Rumqttd,
            Some("none") => Kind::None,
            Some(k) => {
                return Err(format!(
                    "--broker {s:?}: unknown kind {k:?} (amqtt, mosquitto, rumqttd or none)"
                ))
            }
            None => {
                let base = Path::new(program)
                    .file_name()
                    .map(|f| f.to_string_lossy().to_lowercase())
                    .unwrap_or_default();
                if base.contains("mosquitto") {
                    Kind::Mosquitto
                } else if base.contains("rumqttd") {
                    Kind::Rumqttd
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
            extra_config: String::new(),
        })
    }

    /// Appends `text` (an `--append-config` file) to the configuration written for this broker.
    pub fn append_config(&mut self, text: &str) -> Result<(), String> {
        if self.kind == Kind::None {
            return Err(format!(
                "--append-config {}: the broker has config kind none, so no configuration is \
                 written to append to",
                self.name
            ));
        }
        self.extra_config.push_str(text);
        if !self.extra_config.ends_with('\n') {
            self.extra_config.push('\n');
        }
        Ok(())
    }

    /// Whether the broker's runs need a fresh data directory (`{datadir}` in the command or in
    /// the appended configuration).
    pub fn uses_datadir(&self) -> bool {
        self.extra_config.contains(DATADIR) || self.words.iter().any(|w| w.contains(DATADIR))
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
            // rumqttd's own example configuration (`rumqttd generate-config`) with only the v4
            // listener, on our port. Its `next_connection_delay_ms = 1` (at most one new
            // connection a millisecond per listener) is kept: it is what rumqttd ships.
            Kind::Rumqttd => {
                return Some(format!(
                    "# Written by amqtt-bench compare.\n\
                     id = 0\n\
                     [router]\n\
                     id = 0\n\
                     max_connections = 10010\n\
                     max_outgoing_packet_count = 200\n\
                     max_segment_size = 104857600\n\
                     max_segment_count = 10\n\
                     [v4.1]\n\
                     name = \"v4-1\"\n\
                     listen = \"127.0.0.1:{port}\"\n\
                     next_connection_delay_ms = 1\n\
                     [v4.1.connections]\n\
                     connection_timeout_ms = 60000\n\
                     max_payload_size = 20480\n\
                     # rumqttd's default window is 100; a scenario that needs more raises it.\n\
                     max_inflight_count = {}\n\
                     dynamic_filters = true\n\
                     {}",
                    window.map_or(100, |w| w.max(100)),
                    self.extra_config
                ))
            }
            Kind::None => return None,
        };
        if let Some(w) = window {
            text.push_str(&match self.kind {
                Kind::Mosquitto => format!("max_inflight_messages {w}\n"),
                _ => format!("max_inflight: {w}\n"),
            });
        }
        text.push_str(&self.extra_config);
        Some(text)
    }

    /// The command words with placeholders filled in.
    pub fn argv(&self, config: &Path, port: u16, datadir: &Path) -> Vec<String> {
        let config = config.to_string_lossy();
        let datadir = datadir.to_string_lossy();
        self.words
            .iter()
            .map(|w| {
                w.replace("{config}", &config)
                    .replace("{port}", &port.to_string())
                    .replace(DATADIR, &datadir)
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
pub(super) fn run_with_timeout(program: &str, args: &[&str], timeout: Duration) -> Option<String> {
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

/// A broker process started by the harness.
pub(super) struct RunningBroker {
    child: Child,
    pub(super) pid: u32,
    pub(super) addr: SocketAddr,
    /// The run's fresh data directory, removed when the broker is stopped.
    data_dir: Option<PathBuf>,
}

/// Bytes in the files under `dir` (0 if it cannot be read).
pub(super) fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(_) => e.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

fn free_port() -> io::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

pub(super) fn start_broker(
    spec: &BrokerSpec,
    dir: &Path,
    seq: usize,
    pin: Option<&str>,
    window: Option<u32>,
) -> Result<RunningBroker, String> {
    let port = free_port().map_err(|e| format!("no free port: {e}"))?;
    let config = dir.join(format!(
        "{}-{seq}.{}",
        spec.name,
        spec.kind.config_extension()
    ));
    let data_dir = dir.join(format!("{}-{seq}.data", spec.name));
    if spec.uses_datadir() {
        // Fresh for every run: a journal left by the previous run would change this one.
        let _ = fs::remove_dir_all(&data_dir);
        fs::create_dir_all(&data_dir).map_err(|e| format!("{}: {e}", data_dir.display()))?;
    }
    if let Some(text) = spec.config_text(port, window) {
        let text = text.replace(DATADIR, &data_dir.to_string_lossy());
        fs::write(&config, text).map_err(|e| format!("writing {}: {e}", config.display()))?;
    }
    let argv = spec.argv(&config, port, &data_dir);
    let data_dir = spec.uses_datadir().then_some(data_dir);
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
            let _ = stop_broker(RunningBroker {
                child,
                pid,
                addr,
                data_dir,
            });
            return Err(format!(
                "{} did not answer on {addr} within 10 s: {}",
                spec.name,
                log_tail(&log_path)
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(RunningBroker {
        child,
        pid,
        addr,
        data_dir,
    })
}

/// What stopping a broker found.
pub(super) struct Stopped {
    /// Bytes its data directory held once it had exited (with `{datadir}`).
    pub(super) data_bytes: Option<u64>,
    /// It ignored SIGTERM and was killed.
    pub(super) error: Option<String>,
}

/// SIGTERM, up to 5 s grace, then SIGKILL — only the process we started, by its PID; then its
/// data directory is measured and removed.
pub(super) fn stop_broker(mut b: RunningBroker) -> Stopped {
    let error = terminate(&mut b);
    let data_bytes = b.data_dir.as_ref().map(|d| {
        let bytes = dir_size(d);
        let _ = fs::remove_dir_all(d);
        bytes
    });
    Stopped { data_bytes, error }
}

fn terminate(b: &mut RunningBroker) -> Option<String> {
    if let Ok(Some(_)) = b.child.try_wait() {
        return None;
    }
    let _ = sys::kill(b.pid, libc::SIGTERM);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if let Ok(Some(_)) = b.child.try_wait() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = b.child.kill();
    let _ = b.child.wait();
    Some(format!(
        "pid {} ignored SIGTERM for 5 s and was killed",
        b.pid
    ))
}

#[cfg(test)]
mod tests;
