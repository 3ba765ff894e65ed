//! `ConfigDiff`: what a reload applies and what it leaves for a restart, and the `reload:` and
//! `log_level` keys.

use super::*;

const BASE: &str = "
listeners:
  default:
    type: tcp
    bind: 127.0.0.1:1883
  ws:
    type: ws
    bind: 127.0.0.1:8080
    max-connections: 10
max_queued_messages: 100
memory_limit: 1000000
shards: 2
";

fn diff(new: &str) -> ConfigDiff {
    ConfigDiff::between(&ok(BASE), &ok(new))
}

#[test]
fn the_same_file_changes_nothing() {
    let d = diff(BASE);
    assert!(d.is_empty(), "{d:?}");
    assert!(d.listeners.is_empty() && !d.plugins && !d.limits && !d.log_level);
}

#[test]
fn limits_and_the_log_level_are_applied_shards_are_kept() {
    let d = diff(
        &BASE
            .replace("max_queued_messages: 100", "max_queued_messages: 5")
            .replace("shards: 2", "shards: 3\nlog_level: debug"),
    );
    assert!(d.limits && d.log_level && !d.plugins);
    assert_eq!(
        d.applied,
        [
            "max_queued_messages: 100 -> 5",
            "log_level: None -> Some(\"debug\")"
        ]
    );
    assert_eq!(d.kept.len(), 1, "{:?}", d.kept);
    assert!(d.kept[0].starts_with("shards: "), "{:?}", d.kept);
    // What runs after it: the new limit, the old shard count (the next reload warns again).
    let running = ConfigDiff::running_after(
        &ok(BASE),
        &ok(&BASE
            .replace("shards: 2", "shards: 3")
            .replace("max_queued_messages: 100", "max_queued_messages: 5")),
    );
    assert_eq!(running.shards, ShardCount::Fixed(2));
    assert_eq!(running.max_queued_messages, 5);
    let again = ConfigDiff::between(&running, &ok(&BASE.replace("shards: 2", "shards: 3")));
    assert_eq!(again.kept.len(), 1, "{again:?}");
}

#[test]
fn turning_the_memory_budget_off_needs_a_restart_changing_it_does_not() {
    let d = diff(&BASE.replace("memory_limit: 1000000", "memory_limit: 2000000"));
    assert!(d.limits && d.kept.is_empty(), "{d:?}");
    let d = diff(&BASE.replace("memory_limit: 1000000", ""));
    assert!(!d.limits && d.applied.is_empty(), "{d:?}");
    assert!(
        d.kept[0].starts_with("memory_limit: None in the file"),
        "{:?}",
        d.kept
    );
}

#[test]
fn plugin_settings_are_named_not_shown() {
    let d = diff(&format!(
        "{BASE}auth:\n  allow-anonymous: false\ntopic-check:\n  enabled: true\n  plugins: [topic_acl]\n  acl:\n    alice: [a/#]\n"
    ));
    assert!(d.plugins);
    assert_eq!(
        d.applied,
        ["auth.allow-anonymous: changed", "topic-check: changed"]
    );
}

#[test]
fn listeners_added_removed_moved_and_changed() {
    let new = "
listeners:
  default:
    type: tcp
    bind: 127.0.0.1:1884
  ws:
    type: ws
    bind: 127.0.0.1:8080
    max-connections: 20
  extra:
    type: tcp
    bind: 127.0.0.1:1885
max_queued_messages: 100
memory_limit: 1000000
shards: 2
";
    let d = diff(new);
    let names: Vec<String> = d
        .listeners
        .iter()
        .map(|c| match c {
            ListenerChange::Added(l) => format!("added {}", l.name),
            ListenerChange::Removed(n) => format!("removed {n}"),
            ListenerChange::Reopened(l) => format!("reopened {}", l.name),
            ListenerChange::Changed(l) => format!("changed {}", l.name),
        })
        .collect();
    assert_eq!(names, ["reopened default", "changed ws", "added extra"]);
    assert!(d
        .applied
        .contains(&"listeners.ws: max-connections Some(10) -> Some(20)".to_string()));
    let d = diff("listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:1883\nmax_queued_messages: 100\nmemory_limit: 1000000\nshards: 2\n");
    assert!(
        matches!(&d.listeners[..], [ListenerChange::Removed(n)] if n == "ws"),
        "{d:?}"
    );
}

#[test]
fn reload_and_log_level_keys() {
    assert!(!ok("").reload.disconnect_removed);
    assert!(
        ok("reload:\n  disconnect-removed: true\n")
            .reload
            .disconnect_removed
    );
    assert_eq!(
        ok("log_level: warn,amqtt::packets=debug\n")
            .log_level
            .as_deref(),
        Some("warn,amqtt::packets=debug")
    );
    invalid("log_level: loud\n", "log_level", "loud");
    invalid("log_level: ''\n", "log_level", "empty");
    let e = err("reload:\n  disconnect_removed: yes please\n");
    assert!(e.to_string().contains("reload"), "{e}");
}
