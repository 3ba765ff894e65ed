//! The `amqtt` binary's log: where lines go (standard error or `log_file`), in which style
//! (`format.rs`), reopening the file on SIGHUP for logrotate, and `RUST_LOG` filtering
//! (`env_filter`, the filter env_logger uses, so its syntax is unchanged), or the `log_level`
//! key's when `RUST_LOG` and `-d` are not given (set again by a configuration reload).
//!
//! The logger is installed before the configuration is read, since reading it logs: until
//! [`Logs::start`] says where lines go, they are kept (up to [`EARLY_LINES`]) and then written
//! there with their own time. A line is formatted outside any lock and written with one
//! `write_all` under a mutex, synchronously, as env_logger writes to standard error: a shard that
//! logs waits for that write and nothing else. Reopening opens the new file before taking the
//! lock and swaps the handle under it, so a line goes whole to the old file or to the new one.
//!
//! What must not live here: signal handling and the configuration (`src/bin/amqtt.rs` decides
//! when to reopen and what the settings are), and nothing here knows MQTT. Library users that
//! embed the broker keep their own logger; this one is for the binary.

mod format;

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock, RwLock};

use log::{Level, Log, Metadata, Record};

use crate::config::LogFormat;
pub use format::Style;

/// Lines kept before the destination is known; more are counted and dropped (reading the
/// configuration logs a handful).
pub const EARLY_LINES: usize = 1000;

/// A log file that could not be opened (at start, or when reopened).
#[derive(Debug, thiserror::Error)]
#[error("cannot open the log file {path} for appending: {source}")]
pub struct LogFileError {
    /// The file.
    pub path: PathBuf,
    /// What the system said.
    #[source]
    pub source: io::Error,
}

/// The installed logger, to say where its lines go and to reopen its file.
#[derive(Clone, Copy)]
pub struct Logs {
    log: &'static OperatorLog,
}

impl Logs {
    /// Installs the process's logger, filtered by `RUST_LOG` or, when that is unset or empty,
    /// by `default_filter` (the same syntax, e.g. `info,rustls=error`). Lines are kept until
    /// [`Logs::start`]. Fails when a logger is already installed.
    pub fn install(default_filter: &str) -> Result<Logs, log::SetLoggerError> {
        let spec = std::env::var("RUST_LOG")
            .ok()
            .filter(|spec| !spec.is_empty());
        let filter = env_filter::Builder::new()
            .parse(spec.as_deref().unwrap_or(default_filter))
            .build();
        let max_level = filter.filter();
        let log: &'static OperatorLog = Box::leak(Box::new(OperatorLog::new(filter)));
        if spec.is_some() {
            log.fix("RUST_LOG is set");
        }
        log::set_logger(log)?;
        log::set_max_level(max_level);
        Ok(Logs { log })
    }

    /// Keeps the filter as installed from now on: [`Logs::set_level`] refuses with `why` (the
    /// binary's `-d`).
    pub fn fix(&self, why: &'static str) {
        self.log.fix(why);
    }

    /// Filters lines by `spec` (`RUST_LOG`'s syntax; `None`: `info`) from now on, `rustls` at
    /// `error` unless it names it; refused, with the reason, when `RUST_LOG` or `-d` decided.
    pub fn set_level(&self, spec: Option<&str>) -> Result<(), String> {
        if let Some(why) = self.log.fixed.get() {
            return Err(format!("the log level stays as set at start ({why})"));
        }
        let spec = spec.unwrap_or("info");
        // rustls warns about every client that connects by IP address (see `amqtt.rs`).
        let full = if spec.contains("rustls") {
            spec.to_string()
        } else {
            format!("rustls=error,{spec}")
        };
        let mut builder = env_filter::Builder::new();
        builder.try_parse(&full).map_err(|e| e.to_string())?;
        let filter = builder.build();
        log::set_max_level(filter.filter());
        *self
            .log
            .filter
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = filter;
        Ok(())
    }

    /// From now on, lines go to `file` (appended, created if missing) or, when `None`, to
    /// standard error, in `format`; the lines kept so far are written first. When the file
    /// cannot be opened, lines go to standard error and the error says why. Called once: the
    /// style of the first call stays (a later call only moves the lines).
    pub fn start(&self, file: Option<&Path>, format: LogFormat) -> Result<(), LogFileError> {
        self.log.start(file, format, format::stderr_is_journal())
    }

    /// Reopens the log file by its path (SIGHUP, after logrotate renamed it): the file
    /// the path now names, created when missing. `Ok(None)` when lines go to standard error. On
    /// an error lines keep going to the file open before.
    pub fn reopen(&self) -> Result<Option<PathBuf>, LogFileError> {
        self.log.reopen()
    }
}

/// Opens `path` for appending, creating it when missing (mode 0666 less the umask).
fn open_append(path: &Path) -> Result<File, LogFileError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| LogFileError {
            path: path.to_path_buf(),
            source,
        })
}

/// A line logged before the destination was known.
struct Early {
    at: jiff::Timestamp,
    level: Level,
    target: String,
    message: String,
}

/// Where lines go.
enum Sink {
    /// Not known yet: lines are kept, and counted once there are [`EARLY_LINES`].
    Early {
        lines: Vec<Early>,
        dropped: usize,
    },
    Stderr,
    File {
        path: PathBuf,
        file: File,
    },
}

impl Sink {
    fn write(&mut self, bytes: &[u8]) {
        // As env_logger does, a failed write is not reported: there is nowhere to report it.
        let _ = match self {
            Sink::Early { .. } => Ok(()),
            Sink::Stderr => io::stderr().lock().write_all(bytes),
            Sink::File { file, .. } => file.write_all(bytes),
        };
    }
}

/// The `log::Log` the binary installs.
struct OperatorLog {
    /// Replaced by [`Logs::set_level`]; read for every line that passes `log`'s max level.
    filter: RwLock<env_filter::Filter>,
    /// Why the filter stays as installed (`RUST_LOG`, `-d`), once set.
    fixed: OnceLock<&'static str>,
    /// Set once, by `start`, with `sink` locked: a line that finds it set finds `sink` started.
    style: OnceLock<Style>,
    sink: Mutex<Sink>,
}

thread_local! {
    /// Each thread's line buffer, reused (as env_logger does) so a line costs no allocation.
    static LINE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl OperatorLog {
    fn new(filter: env_filter::Filter) -> Self {
        OperatorLog {
            filter: RwLock::new(filter),
            fixed: OnceLock::new(),
            style: OnceLock::new(),
            sink: Mutex::new(Sink::Early {
                lines: Vec::new(),
                dropped: 0,
            }),
        }
    }

    fn fix(&self, why: &'static str) {
        let _ = self.fixed.set(why);
    }

    fn filter(&self) -> std::sync::RwLockReadGuard<'_, env_filter::Filter> {
        self.filter
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn sink(&self) -> MutexGuard<'_, Sink> {
        // A panic while writing a line leaves the sink as it was: keep using it.
        self.sink
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn start(
        &self,
        path: Option<&Path>,
        format: LogFormat,
        stderr_is_journal: bool,
    ) -> Result<(), LogFileError> {
        let (sink, to_file, result) = match path {
            None => (Sink::Stderr, false, Ok(())),
            Some(path) => match open_append(path) {
                Ok(file) => (
                    Sink::File {
                        path: path.to_path_buf(),
                        file,
                    },
                    true,
                    Ok(()),
                ),
                Err(error) => (Sink::Stderr, false, Err(error)),
            },
        };
        let style = Style::resolve(format, to_file, stderr_is_journal);
        let mut current = self.sink();
        if let Sink::Early { lines, dropped } = std::mem::replace(&mut *current, sink) {
            let mut out = Vec::new();
            for early in &lines {
                format::Line {
                    at: early.at,
                    level: early.level,
                    target: &early.target,
                    message: &early.message,
                }
                .write(style, &mut out);
            }
            if dropped > 0 {
                let message = format!("{dropped} log lines from the start were dropped");
                format::Line {
                    at: jiff::Timestamp::now(),
                    level: Level::Warn,
                    target: module_path!(),
                    message: &message,
                }
                .write(style, &mut out);
            }
            current.write(&out);
        }
        let _ = self.style.set(style);
        result
    }

    fn reopen(&self) -> Result<Option<PathBuf>, LogFileError> {
        let path = match &*self.sink() {
            Sink::File { path, .. } => path.clone(),
            Sink::Early { .. } | Sink::Stderr => return Ok(None),
        };
        let fresh = open_append(&path)?;
        let old = match &mut *self.sink() {
            Sink::File { file, .. } => std::mem::replace(file, fresh),
            Sink::Early { .. } | Sink::Stderr => fresh,
        };
        // Closed outside the lock.
        drop(old);
        Ok(Some(path))
    }

    /// Keeps a line logged before `start`, or writes it if `start` came in between.
    fn keep(&self, record: &Record<'_>, at: jiff::Timestamp) {
        let mut sink = self.sink();
        if let Sink::Early { lines, dropped } = &mut *sink {
            if lines.len() < EARLY_LINES {
                lines.push(Early {
                    at,
                    level: record.level(),
                    target: record.target().to_string(),
                    message: record.args().to_string(),
                });
            } else {
                *dropped += 1;
            }
        } else if let Some(&style) = self.style.get() {
            let mut out = Vec::new();
            line(record, at).write(style, &mut out);
            sink.write(&out);
        }
    }
}

fn line<'a>(record: &'a Record<'a>, at: jiff::Timestamp) -> format::Line<'a> {
    format::Line {
        at,
        level: record.level(),
        target: record.target(),
        message: record.args(),
    }
}

impl Log for OperatorLog {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.filter().enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if !self.filter().matches(record) {
            return;
        }
        let at = jiff::Timestamp::now();
        let Some(&style) = self.style.get() else {
            return self.keep(record, at);
        };
        LINE.with(|buffer| {
            // A Display impl that logs while its own line is being written finds the buffer
            // taken: that line gets a buffer of its own.
            let mut own = Vec::new();
            let mut reused = buffer.try_borrow_mut();
            let out = match &mut reused {
                Ok(out) => {
                    out.clear();
                    &mut **out
                }
                Err(_) => &mut own,
            };
            line(record, at).write(style, out);
            self.sink().write(out);
        });
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests;
