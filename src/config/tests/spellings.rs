//! Tests of key spellings: `-` and `_` alike in every key (aMQTT's and ours), names chosen by the
//! user kept as written, errors naming keys as the file spells them, duplicates pointing at the
//! duplicate's own line, and YAML 1.1 booleans (`yes`, `on`) as PyYAML reads them.

use super::*;

#[test]
fn dash_and_underscore_are_one_key_everywhere() {
    let pairs = [
        "timeout-disconnect-delay: 5\n",
        "timeout_disconnect_delay: 5\n",
    ];
    for text in pairs {
        assert_eq!(
            ok(text).timeout_disconnect_delay,
            Duration::from_secs(5),
            "{text}"
        );
    }
    for text in [
        "topic-check:\n  enabled: true\n  plugins: [topic_taboo]\n",
        "topic_check:\n  enabled: true\n  plugins: [topic_taboo]\n",
    ] {
        assert!(ok(text).topic_check.enabled, "{text}");
    }
    for text in [
        "auth:\n  allow_anonymous: false\n  password_file: p\n",
        "auth:\n  allow-anonymous: false\n  password-file: p\n",
    ] {
        let c = ok(text);
        assert!(!c.allow_anonymous, "{text}");
        assert_eq!(c.password_file, Some(PathBuf::from("p")), "{text}");
    }
    for key in ["max_connections", "max-connections"] {
        let c = ok(&format!(
            "listeners:\n  default:\n    bind: :1883\n    {key}: 7\n"
        ));
        assert_eq!(c.listeners[0].max_connections, Some(7), "{key}");
    }
    // Ours too.
    let c = ok("max-inflight: 3\npin-shards: false\nconnect-timeout: 4\nmax-qos: 1\npersistence:\n  fsync-interval: 2\n");
    assert_eq!(c.max_inflight, 3);
    assert!(!c.pin_shards);
    assert_eq!(c.connect_timeout, Duration::from_secs(4));
    assert_eq!(c.max_qos, 1);
    assert_eq!(c.persistence.fsync_interval, Duration::from_secs(2));
    let c =
        ok("topic-check:\n  enabled: true\n  plugins: [topic_acl]\n  publish_acl:\n    u: ['a']\n");
    assert!(c.topic_check.publish_acl.is_some());
}

#[test]
fn names_chosen_by_the_user_keep_their_spelling() {
    let c = ok(
        "listeners:\n  my-tcp:\n    bind: 127.0.0.1:1884\n  my_tcp:\n    bind: 127.0.0.1:1885\n",
    );
    assert_eq!(names(&c), ["my-tcp", "my_tcp"]);
    let c = ok("topic-check:\n  enabled: true\n  plugins: [topic_acl]\n  acl:\n    user-a: ['a']\n    user_a: ['b']\n");
    let acl = c.topic_check.acl.unwrap_or_default();
    assert_eq!(acl.len(), 2);
    assert_eq!(acl["user-a"], ["a"]);
    // Values are never touched.
    let c = ok("auth:\n  password-file: /etc/my-dir/pass-words\n");
    assert_eq!(
        c.password_file,
        Some(PathBuf::from("/etc/my-dir/pass-words"))
    );
}

#[test]
fn errors_name_keys_as_the_file_spells_them() {
    invalid(
        "listeners:\n  default:\n    max_connections: lots\n",
        "listeners.default.max_connections",
        "(line 3, column",
    );
    invalid(
        "listeners:\n  my-l:\n    bind: :1\n    max-connections: lots\n",
        "listeners.my-l.max-connections",
        "(line 4, column",
    );
    // Errors found after parsing too (our messages spell keys as aMQTT's docs do).
    invalid(
        "timeout_disconnect_delay: -1\n",
        "timeout_disconnect_delay",
        "zero or more",
    );
    invalid(
        "timeout-disconnect-delay: -1\n",
        "timeout-disconnect-delay",
        "zero or more",
    );
    invalid(
        "listeners:\n  default:\n    bind: :1\n    max_connections: -5\n",
        "listeners.default.max_connections",
        "for unlimited",
    );
    // An unknown key is quoted as written, with its position.
    let msg = invalid(
        "listeners:\n  default:\n    max-conections: 1\n",
        "listeners.default.max-conections",
        "unknown key `max-conections`",
    );
    assert!(msg.contains("line 3"), "{msg}");
    let e = err("sys-intervall: 1\n");
    assert!(e.to_string().contains("unknown key `sys-intervall`"), "{e}");
    // A multi-byte character before a key does not shift the rewrite.
    let c = ok("# héllo wörld\nlisteners:\n  déf-ault:\n    bind: :1884\n    max-connections: 2\n");
    assert_eq!(c.listeners[0].max_connections, Some(2));
}

#[test]
fn one_key_spelled_both_ways_is_refused_naming_both() {
    let msg = invalid(
        "listeners:\n  default:\n    max_connections: 1\n    max-connections: 2\n",
        "listeners.default.max-connections",
        "'max-connections' (line 4, column 5) and 'max_connections' (line 3) are the same key",
    );
    assert!(msg.contains("keep one"), "{msg}");
    invalid(
        "topic-check: {}\ntopic_check: {}\n",
        "topic_check",
        "'topic_check' (line 2, column 1) and 'topic-check' (line 1)",
    );
}

#[test]
fn a_duplicate_key_points_at_its_own_line() {
    invalid(
        "sys_interval: 20\nauth:\n  allow-anonymous: true\n\nsys_interval: 10\n",
        "sys_interval",
        "duplicate key (line 5, column 1); it is first set at line 1",
    );
    invalid(
        "listeners:\n  default:\n    bind: :1883\n    type: tcp\n\n    bind: :1884\n",
        "listeners.default.bind",
        "duplicate key (line 6, column 5)",
    );
    invalid(
        "listeners:\n  a:\n    bind: :1\n  a:\n    bind: :2\n",
        "listeners.a",
        "duplicate key (line 4",
    );
    invalid(
        "topic-check:\n  acl:\n    alice: ['a']\n    alice: ['b']\n",
        "topic-check.acl.alice",
        "duplicate key (line 4",
    );
}

#[test]
fn yaml_1_1_booleans_as_pyyaml_reads_them() {
    for (word, on) in [
        ("yes", true),
        ("Yes", true),
        ("on", true),
        ("ON", true),
        ("true", true),
        ("no", false),
        ("off", false),
        ("False", false),
    ] {
        let c = ok(&format!(
            "listeners:\n  default:\n    bind: :1883\n    ssl: {word}\n    certfile: c.pem\n    keyfile: k.pem\nauth:\n  allow-anonymous: {word}\n"
        ));
        assert_eq!(c.listeners[0].tls.is_some(), on, "{word}");
        assert_eq!(c.allow_anonymous, on, "{word}");
    }
}

#[test]
fn a_complex_key_is_stepped_over_and_what_follows_is_respelled() {
    // `? [a, b] : x` is valid YAML (and an error for serde later); the walk takes the value as
    // a value and keeps respelling the keys after it.
    let spelled = keys::respell("? [a-b, c]\n: max-connections\nsys-interval: 5\n", F)
        .map(|s| s.text)
        .unwrap_or_default();
    assert_eq!(spelled, "? [a-b, c]\n: max-connections\nsys_interval: 5\n");
}
