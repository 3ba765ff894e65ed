//! Tests of aMQTT's `plugins:` section: every plugin class and entry-point name with each of its
//! settings (table-driven), the 0.10 list and the 0.11+ mapping and list forms, and the refusals
//! (unknown class or setting, contrib plugins we do not provide, a thing configured both ways),
//! each with its file, key and reason.

use super::*;

const ANON: &str = "amqtt.plugins.authentication.AnonymousAuthPlugin";
const FILE: &str = "amqtt.plugins.authentication.FileAuthPlugin";
const TABOO: &str = "amqtt.plugins.topic_checking.TopicTabooPlugin";
const ACL: &str = "amqtt.plugins.topic_checking.TopicAccessControlListPlugin";
const SYS: &str = "amqtt.plugins.sys.broker.BrokerSysPlugin";
const EVENTS: &str = "amqtt.plugins.logging_amqtt.EventLoggerPlugin";
const PACKETS: &str = "amqtt.plugins.logging_amqtt.PacketLoggerPlugin";
const SESSION_DB: &str = "amqtt.contrib.persistence.SessionDBPlugin";
const JWT_USER: &str = "amqtt.contrib.jwt.UserAuthJwtPlugin";
const JWT_TOPIC: &str = "amqtt.contrib.jwt.TopicAuthJwtPlugin";
const CERT: &str = "amqtt.contrib.cert.CertificateAuthPlugin";
/// Its name in aMQTT 0.12.1.
const CERT_0_12: &str = "amqtt.contrib.cert.UserAuthCertPlugin";

fn table(rows: &[(&str, &[&str])]) -> Option<BTreeMap<String, Vec<String>>> {
    Some(
        rows.iter()
            .map(|(user, topics)| {
                (
                    user.to_string(),
                    topics.iter().map(|t| t.to_string()).collect(),
                )
            })
            .collect(),
    )
}

/// Each class, and each of its settings, against the settings the older keys give.
#[test]
fn every_class_and_setting_maps_to_the_older_keys() {
    type Check = fn(&BrokerConfig);
    let rows: Vec<(String, Check)> = vec![
        (format!("{ANON}:\n"), |c| {
            assert_eq!(c.auth_plugins, ["auth_anonymous"]);
            assert!(c.allow_anonymous);
        }),
        (format!("{ANON}:\n    allow_anonymous: false\n"), |c| {
            assert_eq!(c.auth_plugins, ["auth_anonymous"]);
            assert!(!c.allow_anonymous);
        }),
        // aMQTT's docs write it with a dash: both spellings are one key.
        (format!("{ANON}:\n    allow-anonymous: false\n"), |c| {
            assert!(!c.allow_anonymous)
        }),
        (format!("{FILE}:\n    password_file: /etc/amqtt/passwd\n"), |c| {
            assert_eq!(c.auth_plugins, ["auth_file"]);
            assert_eq!(c.password_file, Some(PathBuf::from("/etc/amqtt/passwd")));
        }),
        // Authentication plugins run in the order the file lists them.
        (
            format!("{FILE}:\n    password-file: p\n  {ANON}:\n    allow_anonymous: false\n"),
            |c| {
                assert_eq!(c.auth_plugins, ["auth_file", "auth_anonymous"]);
                assert!(!c.allow_anonymous);
            },
        ),
        (format!("{TABOO}:\n"), |c| {
            assert!(c.topic_check.enabled);
            assert_eq!(c.topic_check.plugins, ["topic_taboo"]);
        }),
        (format!("{TABOO}: {{}}\n"), |c| {
            assert_eq!(c.topic_check.plugins, ["topic_taboo"])
        }),
        (
            format!(
                "{ACL}:\n    acl:\n      alice: ['a/#']\n      anonymous: ~\n    publish-acl:\n      bob: ['b/+']\n"
            ),
            |c| {
                let t = &c.topic_check;
                assert!(t.enabled);
                assert_eq!(t.plugins, ["topic_acl"]);
                assert_eq!(t.acl, table(&[("alice", &["a/#"]), ("anonymous", &[])]));
                assert_eq!(t.publish_acl, table(&[("bob", &["b/+"])]));
            },
        ),
        (format!("{ACL}:\n    publish_acl:\n      bob: ['b/#']\n"), |c| {
            assert_eq!(c.topic_check.publish_acl, table(&[("bob", &["b/#"])]));
            assert_eq!(c.topic_check.acl, None);
        }),
        (format!("{TABOO}:\n  {ACL}:\n    acl: {{u: ['#']}}\n"), |c| {
            assert_eq!(c.topic_check.plugins, ["topic_taboo", "topic_acl"])
        }),
        (format!("{SYS}:\n    sys_interval: 5\n"), |c| {
            assert_eq!(c.sys_interval, Duration::from_secs(5))
        }),
        (format!("{SYS}:\n"), |c| {
            assert_eq!(c.sys_interval, Duration::from_secs(20))
        }),
        // 0.11+ publishes $SYS only with BrokerSysPlugin listed.
        (format!("{ANON}:\n"), |c| assert_eq!(c.sys_interval, Duration::ZERO)),
        (format!("{EVENTS}:\n"), |c| assert!(c.connection_messages)),
        (format!("{PACKETS}:\n"), |c| {
            assert!(c.packet_logger);
            assert!(!c.log_packets, "packets are logged at DEBUG only");
        }),
        (format!("{EVENTS}:\n"), |c| assert!(!c.packet_logger)),
        (format!("{SESSION_DB}:\n    file: /var/lib/amqtt/amqtt.db\n"), |c| {
            assert!(c.persistence.enabled);
            assert_eq!(c.persistence.dir, PathBuf::from("/var/lib/amqtt"));
        }),
        (format!("{SESSION_DB}:\n"), |c| {
            assert!(c.persistence.enabled);
            assert_eq!(c.persistence.dir, PathBuf::from("."));
        }),
        (
            format!("{SESSION_DB}:\n    file: db/x.db\n    clear_on_shutdown: false\n    retain_interval: 5\n"),
            |c| assert_eq!(c.persistence.dir, PathBuf::from("db")),
        ),
        (
            format!("{JWT_USER}:\n    secret_key: s\n    user_claim: username\n"),
            |c| {
                assert_eq!(c.auth_plugins, ["auth_jwt"]);
                let jwt = c.contrib.jwt_user.as_ref().expect("auth.jwt");
                assert_eq!((jwt.secret_key.as_str(), jwt.user_claim.as_str()), ("s", "username"));
                assert_eq!(jwt.algorithm, "HS256");
            },
        ),
        (
            format!("{JWT_USER}: {{secret_key: k, user_claim: sub, algorithm: RS256}}\n"),
            |c| assert_eq!(c.contrib.jwt_user.as_ref().expect("jwt").algorithm, "RS256"),
        ),
        (
            format!("{JWT_TOPIC}:\n    secret_key: s\n    publish_claim: p\n    subscribe_claim: s\n    receive_claim: r\n    algorithm: ES256\n"),
            |c| {
                assert!(c.topic_check.enabled);
                assert_eq!(c.topic_check.plugins, ["topic_jwt"]);
                let jwt = c.contrib.jwt_topic.as_ref().expect("topic-check.jwt");
                assert_eq!(jwt.publish_claim, "p");
                assert_eq!((jwt.subscribe_claim.as_str(), jwt.receive_claim.as_str()), ("s", "r"));
                assert_eq!(jwt.algorithm, "ES256");
            },
        ),
        (format!("{CERT}:\n    uri_domain: example.org\n"), |c| {
            assert_eq!(c.auth_plugins, ["auth_cert"]);
            let cert = c.contrib.cert.as_ref().expect("auth.cert");
            assert_eq!(cert.uri_domain, "example.org");
        }),
        (format!("{CERT_0_12}:\n    uri_domain: example.org\n"), |c| {
            assert_eq!(c.auth_plugins, ["auth_cert"])
        }),
    ];
    for (section, check) in rows {
        let text = format!("plugins:\n  {section}");
        check(&ok(&text));
    }
}

#[test]
fn the_list_form_of_amqtt_0_12_names_classes_with_or_without_settings() {
    let c = ok(&format!(
        "plugins:\n  - {EVENTS}\n  - {ANON}:\n      allow_anonymous: false\n  - {SYS}: {{sys_interval: 7}}\n"
    ));
    assert!(c.connection_messages);
    assert_eq!(c.auth_plugins, ["auth_anonymous"]);
    assert!(!c.allow_anonymous);
    assert_eq!(c.sys_interval, Duration::from_secs(7));
}

#[test]
fn the_list_of_entry_points_of_amqtt_0_10_keeps_the_older_keys_settings() {
    // Which plugins are loaded; their settings stay under auth: / topic-check: / sys_interval.
    let c = ok("sys_interval: 9\nauth:\n  allow-anonymous: false\n  password-file: p\nplugins:\n  - auth_file\n  - auth_anonymous\n  - broker_sys\n");
    assert_eq!(c.auth_plugins, ["auth_file", "auth_anonymous"]);
    assert!(!c.allow_anonymous);
    assert_eq!(c.sys_interval, Duration::from_secs(9));
    // auth_file without a password file has nothing to check (aMQTT 0.10's default file).
    let c = ok("auth:\n  allow-anonymous: true\nplugins:\n  - auth_file\n  - auth_anonymous\n");
    assert_eq!(c.auth_plugins, ["auth_anonymous"]);
    assert_eq!(
        c.sys_interval,
        Duration::from_secs(20),
        "$SYS is on as in 0.10"
    );
    // Topic plugins fill topic-check.plugins; topic-check.enabled still decides.
    let c =
        ok("topic-check:\n  enabled: true\n  acl: {u: ['#']}\nplugins: [topic_acl, topic_taboo]\n");
    assert!(c.topic_check.enabled);
    assert_eq!(c.topic_check.plugins, ["topic_acl", "topic_taboo"]);
    let c = ok("topic-check:\n  enabled: false\nplugins: [topic_acl]\n");
    assert!(!c.topic_check.enabled);
    let c = ok("plugins: [event_logger_plugin, packet_logger_plugin]\n");
    assert!(c.connection_messages);
    assert!(c.packet_logger);
}

#[test]
fn unknown_classes_and_settings_name_the_key_and_the_known_names() {
    let msg = invalid(
        "plugins:\n  amqtt.plugins.Nope:\n",
        "plugins.amqtt.plugins.Nope",
        "unknown plugin 'amqtt.plugins.Nope'; known plugins: 'auth_anonymous'",
    );
    for name in [ANON, FILE, TABOO, ACL, SYS, EVENTS, PACKETS, SESSION_DB] {
        assert!(msg.contains(name), "{name} not in: {msg}");
    }
    assert!(msg.contains("amqtt.contrib.jwt.UserAuthJwtPlugin"), "{msg}");
    invalid(
        "plugins:\n  - auth_nope\n",
        "plugins[0]",
        "unknown plugin 'auth_nope'",
    );
    let msg = invalid(
        &format!("plugins:\n  {FILE}:\n    password: x\n"),
        &format!("plugins.{FILE}.password"),
        "unknown key `password`, expected `password_file`",
    );
    assert!(msg.contains("line 3"), "{msg}");
    invalid(
        &format!("plugins:\n  {EVENTS}:\n    level: debug\n"),
        &format!("plugins.{EVENTS}.level"),
        "unknown key `level`",
    );
    invalid(
        &format!("plugins:\n  {SYS}:\n    sys_interval: often\n"),
        &format!("plugins.{SYS}.sys_interval"),
        "not a duration",
    );
    invalid(
        &format!("plugins:\n  {FILE}:\n"),
        &format!("plugins.{FILE}.password_file"),
        "required",
    );
    invalid(
        &format!("plugins:\n  - {ANON}\n  - {ANON}\n"),
        "plugins[1]",
        "listed twice",
    );
    invalid("plugins: 3\n", "plugins", "a mapping of plugin class names");
}

#[test]
fn contrib_plugins_we_do_not_provide_are_refused_by_name() {
    // One class of each contrib module, as aMQTT's docs name them.
    for class in [
        "amqtt.contrib.auth_db.TopicAuthDBPlugin",
        "amqtt.contrib.ldap.UserAuthLdapPlugin",
        "amqtt.contrib.shadows.ShadowPlugin",
        "amqtt.contrib.django.plugins.DjangoAuthPlugin",
    ] {
        let msg = refused(
            &format!("plugins:\n  {class}:\n    uri: http://x\n"),
            &format!("plugins.{class}"),
            "not provided by amqtt-rs yet",
        );
        assert!(msg.contains(class), "{msg}");
    }
}

#[test]
fn one_thing_configured_both_ways_is_refused_naming_both_keys() {
    let cases = [
        (
            format!("auth:\n  plugins: [auth_anonymous]\nplugins:\n  {ANON}:\n"),
            format!("plugins.{ANON}"),
            "auth.plugins",
        ),
        (
            format!("auth:\n  allow-anonymous: true\nplugins:\n  {ANON}:\n    allow_anonymous: false\n"),
            format!("plugins.{ANON}.allow_anonymous"),
            "auth.allow-anonymous",
        ),
        (
            format!("auth:\n  password-file: a\nplugins:\n  {FILE}:\n    password_file: b\n"),
            format!("plugins.{FILE}"),
            "auth.password-file",
        ),
        (
            format!("topic-check:\n  enabled: false\nplugins:\n  {TABOO}:\n"),
            format!("plugins.{TABOO}"),
            "topic-check",
        ),
        (
            format!("topic-check:\n  enabled: true\n  plugins: [topic_acl]\nplugins:\n  {ACL}:\n    acl: {{u: ['#']}}\n"),
            format!("plugins.{ACL}"),
            "topic-check",
        ),
        (
            format!("sys_interval: 20\nplugins:\n  {SYS}:\n    sys_interval: 10\n"),
            format!("plugins.{SYS}"),
            "sys_interval",
        ),
        (
            format!("persistence:\n  enabled: true\nplugins:\n  {SESSION_DB}:\n"),
            format!("plugins.{SESSION_DB}"),
            "persistence",
        ),
        (
            format!("connection_messages: false\nplugins:\n  {EVENTS}:\n"),
            format!("plugins.{EVENTS}"),
            "connection_messages",
        ),
        (
            "auth:\n  plugins: [auth_anonymous]\nplugins: [auth_anonymous]\n".to_string(),
            "plugins[0]".to_string(),
            "auth.plugins",
        ),
        (
            "topic-check:\n  plugins: [topic_acl]\nplugins: [topic_taboo]\n".to_string(),
            "plugins[0]".to_string(),
            "topic-check.plugins",
        ),
    ];
    for (text, key, old) in cases {
        let msg = invalid(&text, &key, &format!("and so does '{old}'"));
        assert!(msg.contains("keep one"), "{msg}");
    }
}

#[test]
fn receive_and_subscribe_tables_are_read_in_both_forms() {
    let table = |user: &str, filter: &str| {
        Some(BTreeMap::from([(
            user.to_string(),
            vec![filter.to_string()],
        )]))
    };
    let c = ok(&format!(
        "plugins:\n  {ACL}:\n    receive-acl:\n      u: ['a/#']\n    subscribe-acl:\n      v: ['b/#']\n"
    ));
    assert_eq!(c.topic_check.receive_acl, table("u", "a/#"));
    assert_eq!(c.topic_check.subscribe_acl, table("v", "b/#"));
    let c = ok(
        "topic-check:\n  enabled: true\n  plugins: [topic_acl]\n  subscribe_acl:\n    u: ['a/#']\n  receive-acl:\n    v: ['b/#']\n",
    );
    assert_eq!(c.topic_check.subscribe_acl, table("u", "a/#"));
    assert_eq!(c.topic_check.receive_acl, table("v", "b/#"));
}

/// Every default broker file aMQTT has shipped (tests/data/amqtt/, copied unchanged) loads, and
/// gives the broker aMQTT documents for it: one TCP listener on 0.0.0.0:1883, anonymous clients
/// accepted, $SYS every 20 s, no topic checks.
#[test]
fn amqtt_shipped_default_files_load_unchanged() {
    let files = [
        (
            "0.10",
            include_str!("../../../tests/data/amqtt/0.10-default_broker.yaml"),
        ),
        (
            "0.11 legacy",
            include_str!("../../../tests/data/amqtt/0.11-legacy-default_broker.yaml"),
        ),
        (
            "current",
            include_str!("../../../tests/data/amqtt/current-default_broker.yaml"),
        ),
    ];
    for (version, text) in files {
        let c = ok(text);
        assert_eq!(names(&c), ["default"], "{version}");
        assert_eq!(c.listeners[0].bind, addr("0.0.0.0:1883"), "{version}");
        assert_eq!(c.listeners[0].kind, ListenerKind::Tcp, "{version}");
        assert_eq!(c.listeners[0].max_connections, None, "{version}");
        assert_eq!(c.auth_plugins, ["auth_anonymous"], "{version}");
        assert!(c.allow_anonymous, "{version}");
        assert_eq!(c.password_file, None, "{version}");
        assert_eq!(c.sys_interval, Duration::from_secs(20), "{version}");
        assert!(!c.topic_check.enabled, "{version}");
        assert!(!c.persistence.enabled, "{version}");
    }
    let current = ok(files[2].1);
    assert_eq!(current.timeout_disconnect_delay, Duration::ZERO);
    assert!(current.connection_messages);
    assert!(current.packet_logger);
}

#[test]
fn contrib_plugins_need_their_settings_and_take_no_others() {
    let e = err(&format!("plugins:\n  {JWT_USER}:\n")).to_string();
    assert!(
        e.contains(&format!("plugin '{JWT_USER}' needs its settings")),
        "{e}"
    );
    let e = err(&format!("plugins:\n  {JWT_USER}:\n    secret_key: s\n")).to_string();
    assert!(e.contains("missing field `user_claim`"), "{e}");
    let e = err(&format!(
        "plugins:\n  {CERT}:\n    uri_domain: x\n    uri: y\n"
    ))
    .to_string();
    assert!(e.contains("unknown key `uri`"), "{e}");
    // The older keys say the same; configured both ways it is refused.
    let c = ok("auth:\n  plugins: [auth_cert, auth_jwt]\n  cert: {uri_domain: d}\n  jwt: {secret_key: s, user_claim: u}\n");
    assert_eq!(c.auth_plugins, ["auth_cert", "auth_jwt"]);
    assert_eq!(
        c.contrib.cert.as_ref().map(|c| c.uri_domain.as_str()),
        Some("d")
    );
    invalid(
        &format!("auth:\n  cert: {{uri_domain: d}}\nplugins:\n  {CERT}:\n    uri_domain: e\n"),
        &format!("plugins.{CERT}"),
        "auth.cert",
    );
    // The secret never reaches a log line.
    let c = ok(&format!(
        "plugins:\n  {JWT_USER}: {{secret_key: hunter2, user_claim: u}}\n"
    ));
    assert!(!format!("{c:?}").contains("hunter2"));
}
