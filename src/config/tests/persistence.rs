//! Tests of the `persistence:` block: defaults, every key accepted, the shipped example, and the
//! error (key path, reason) for each kind of bad value.

use super::*;

#[test]
fn persistence_is_off_by_default_with_documented_defaults() {
    let p = ok("sys_interval: 20\n").persistence;
    assert_eq!(p, PersistenceConfig::default());
    assert!(!p.enabled);
    assert_eq!(p.dir, PathBuf::from("data"));
    assert_eq!(p.fsync, FsyncPolicy::Interval);
    assert_eq!(p.fsync_interval, Duration::from_secs(1));
    assert_eq!(p.snapshot_interval, Duration::from_secs(600));
    // An empty block is the defaults too.
    assert_eq!(
        ok("persistence:\n").persistence,
        PersistenceConfig::default()
    );
    assert_eq!(
        ok("persistence: {}\n").persistence,
        PersistenceConfig::default()
    );
}

#[test]
fn persistence_accepts_every_key() {
    let p = ok("
persistence:
  enabled: true
  dir: /var/lib/amqtt
  fsync: always
  fsync_interval: 0.25
  snapshot_interval: 30
")
    .persistence;
    assert_eq!(
        p,
        PersistenceConfig {
            enabled: true,
            dir: PathBuf::from("/var/lib/amqtt"),
            fsync: FsyncPolicy::Always,
            fsync_interval: Duration::from_millis(250),
            snapshot_interval: Duration::from_secs(30),
        }
    );
    for (text, policy) in [
        ("always", FsyncPolicy::Always),
        ("batch", FsyncPolicy::Batch),
        ("interval", FsyncPolicy::Interval),
        ("off", FsyncPolicy::Off),
    ] {
        let c = ok(&format!("persistence:\n  fsync: {text}\n"));
        assert_eq!(c.persistence.fsync, policy);
        assert_eq!(policy.to_string(), text);
    }
    // Durations as the issue writes them: with a unit.
    for (text, expected) in [
        ("1s", Duration::from_secs(1)),
        ("500ms", Duration::from_millis(500)),
        ("10min", Duration::from_secs(600)),
        ("2h", Duration::from_secs(7200)),
        ("1.5", Duration::from_millis(1500)),
    ] {
        let c = ok(&format!("persistence:\n  snapshot_interval: {text}\n"));
        assert_eq!(c.persistence.snapshot_interval, expected, "{text}");
    }
}

#[test]
fn example_persistence_yaml_loads() {
    let c = ok(include_str!("../../../config/persistence.yaml"));
    assert!(c.persistence.enabled);
    assert_eq!(c.persistence.dir, PathBuf::from("data"));
    assert_eq!(c.persistence.fsync, FsyncPolicy::Interval);
    assert_eq!(c.persistence.fsync_interval, Duration::from_secs(1));
    assert_eq!(c.persistence.snapshot_interval, Duration::from_secs(600));
    assert_eq!(names(&c), ["default"]);
}

#[test]
fn persistence_bad_values_name_the_key() {
    invalid(
        "persistence:\n  fsync: sometimes\n",
        "persistence.fsync",
        "unknown value `sometimes`, expected one of `always`, `batch`, `interval`, `off`",
    );
    invalid(
        "persistence:\n  fsync_interval: 0\n",
        "persistence.fsync_interval",
        "must be more than zero seconds, got 0",
    );
    invalid(
        "persistence:\n  snapshot_interval: -5\n",
        "persistence.snapshot_interval",
        "must be more than zero seconds, got -5",
    );
    invalid(
        "persistence:\n  fsync_interval: 1 fortnight\n",
        "persistence.fsync_interval",
        "unknown time unit 'fortnight'",
    );
    invalid(
        "persistence:\n  fsync_interval: true\n",
        "persistence.fsync_interval",
        "expected a number of seconds, or a duration",
    );
    invalid(
        "persistence:\n  dir: ''\n",
        "persistence.dir",
        "must name a directory",
    );
    invalid(
        "persistence:\n  enabled: yes please\n",
        "persistence.enabled",
        "expected a boolean",
    );
    invalid(
        "persistence:\n  directory: /tmp\n",
        "persistence.directory",
        "unknown key `directory`",
    );
    invalid(
        "persistence: true\n",
        "persistence",
        "invalid type: boolean `true`, expected a mapping of persistence keys (enabled, dir, fsync, ...)",
    );
}

/// Every YAML file `amqtt-bench compare --append-config` appends (bench/configs) loads after a
/// listener, as compare writes it (with `{datadir}` filled in), and changes what it says.
#[test]
fn bench_appended_configs_load() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/configs");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("bench/configs") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let appended = std::fs::read_to_string(&path)
            .expect("readable")
            .replace("{datadir}", "/tmp/amqtt-bench-data");
        let text = format!("listeners:\n  default:\n    bind: 127.0.0.1:1883\n{appended}");
        let config = load(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_ne!(
            format!("{config:?}"),
            format!(
                "{:?}",
                ok("listeners:\n  default:\n    bind: 127.0.0.1:1883\n")
            ),
            "{} changes nothing",
            path.display()
        );
        seen += 1;
    }
    assert!(
        seen >= 3,
        "only {seen} appended configs found in {}",
        dir.display()
    );
}
