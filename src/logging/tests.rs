//! Tests of the operator log on real files: lines kept until the destination is known, the
//! filter, reopening after a rename (logrotate), and a file that cannot be opened. The logger is
//! used directly, not installed: a test process has one global logger.

use super::*;

fn log_with(filter: &str) -> OperatorLog {
    OperatorLog::new(env_filter::Builder::new().parse(filter).build())
}

fn emit(log: &OperatorLog, level: Level, target: &str, message: &str) {
    log.log(
        &Record::builder()
            .level(level)
            .target(target)
            .args(format_args!("{message}"))
            .build(),
    );
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).expect("the log file")
}

#[test]
fn lines_before_start_are_written_with_their_own_time() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("amqtt.log");
    let log = log_with("info");
    emit(&log, Level::Info, "amqtt::config", "early");
    std::thread::sleep(std::time::Duration::from_millis(20));
    let before_start = jiff::Timestamp::now();
    log.start(Some(&path), LogFormat::Json, false)
        .expect("the log file opens");
    emit(&log, Level::Warn, "amqtt::server", "late");

    let text = read(&path);
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0]["message"], "early");
    assert_eq!(lines[0]["target"], "amqtt::config");
    assert_eq!(lines[1]["message"], "late");
    assert_eq!(lines[1]["level"], "WARN");
    let early: jiff::Timestamp = lines[0]["timestamp"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .expect("an RFC 3339 timestamp");
    assert!(
        early < before_start,
        "{early} is not the time it was logged"
    );
}

#[test]
fn the_filter_applies_before_and_after_start() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("amqtt.log");
    let log = log_with("info,rustls=error");
    emit(&log, Level::Debug, "amqtt", "hidden early");
    emit(&log, Level::Warn, "rustls::server", "hidden rustls");
    log.start(Some(&path), LogFormat::Text, false)
        .expect("the log file opens");
    emit(&log, Level::Debug, "amqtt", "hidden late");
    emit(&log, Level::Info, "amqtt", "shown");
    let text = read(&path);
    assert!(!text.contains("hidden"), "{text}");
    assert!(text.ends_with(" INFO  amqtt] shown\n"), "{text}");
}

#[test]
fn reopen_after_a_rename_writes_to_a_new_file_at_the_path() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("amqtt.log");
    let rotated = dir.path().join("amqtt.log.1");
    let log = log_with("info");
    log.start(Some(&path), LogFormat::Auto, true)
        .expect("the log file opens");
    emit(&log, Level::Info, "amqtt", "before rotation");
    std::fs::rename(&path, &rotated).expect("rename");
    emit(
        &log,
        Level::Info,
        "amqtt",
        "after the rename, before SIGHUP",
    );
    assert_eq!(log.reopen().expect("reopened"), Some(path.clone()));
    emit(&log, Level::Info, "amqtt", "after SIGHUP");

    let old = read(&rotated);
    assert!(
        old.contains("before rotation") && old.contains("before SIGHUP"),
        "{old}"
    );
    let new = read(&path);
    assert_eq!(new.lines().count(), 1, "{new}");
    // A file is never the journal: `auto` writes timestamps there.
    assert!(
        new.starts_with("[20") && new.ends_with("] after SIGHUP\n"),
        "{new}"
    );
}

#[test]
fn reopen_appends_to_a_file_that_exists() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("amqtt.log");
    std::fs::write(&path, "kept\n").expect("write");
    let log = log_with("info");
    log.start(Some(&path), LogFormat::Text, false)
        .expect("the log file opens");
    emit(&log, Level::Info, "amqtt", "one");
    log.reopen().expect("reopened");
    emit(&log, Level::Info, "amqtt", "two");
    let text = read(&path);
    assert!(text.starts_with("kept\n"), "{text}");
    assert_eq!(text.lines().count(), 3, "{text}");
}

#[test]
fn a_failed_reopen_keeps_the_old_file() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).expect("mkdir");
    let path = logs.join("amqtt.log");
    let log = log_with("info");
    log.start(Some(&path), LogFormat::Text, false)
        .expect("the log file opens");
    let moved = dir.path().join("moved");
    std::fs::rename(&logs, &moved).expect("rename the directory");
    let error = log.reopen().expect_err("the directory is gone");
    assert_eq!(error.path, path);
    emit(&log, Level::Info, "amqtt", "still written");
    assert!(read(&moved.join("amqtt.log")).contains("still written"));
}

#[test]
fn a_file_that_cannot_be_opened_is_an_error_naming_it() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("missing").join("amqtt.log");
    let log = log_with("info");
    let error = log
        .start(Some(&path), LogFormat::Auto, false)
        .expect_err("no such directory");
    assert_eq!(error.path, path);
    assert_eq!(error.source.kind(), io::ErrorKind::NotFound);
    assert!(error.to_string().contains(&path.display().to_string()));
    // Lines go to standard error instead: nothing to reopen.
    assert_eq!(log.reopen().expect("nothing to reopen"), None);
}

#[test]
fn early_lines_beyond_the_limit_are_counted() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("amqtt.log");
    let log = log_with("info");
    for n in 0..EARLY_LINES + 5 {
        emit(&log, Level::Info, "amqtt", &format!("line {n}"));
    }
    log.start(Some(&path), LogFormat::Text, false)
        .expect("the log file opens");
    let text = read(&path);
    assert_eq!(
        text.lines().count(),
        EARLY_LINES + 1,
        "one line per kept line, and the count"
    );
    assert!(text.contains(&format!("line {}", EARLY_LINES - 1)));
    assert!(
        text.ends_with("5 log lines from the start were dropped\n"),
        "{text}"
    );
}
