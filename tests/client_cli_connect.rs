//! How `amqtt_pub` and `amqtt_sub` connect, as a first-time user meets it: mosquitto's
//! `-h HOST -p PORT -u USER -P PASSWORD` next to aMQTT's `--url`, a clean session whenever the
//! client id is generated, help that names the program, and errors that say each cause once and
//! show the form that works. CONNECT flags are checked on a fake broker that records them; the
//! rest runs against our broker.

mod client_support;
mod common;

use std::time::Duration;

use client_support::{pub_bin, run_cli, sub_bin, RecordingBroker, RunningSub};
use common::start_broker;

const LIMIT: Duration = Duration::from_secs(20);

/// The CONNECT `bin` sends to a fresh recording broker, given `args` (the broker is added as
/// `-h 127.0.0.1 -p PORT`). amqtt_sub is told not to reconnect: the fake broker closes on SUBSCRIBE.
fn connect_of(bin: &str, args: &[&str]) -> amqtt::protocol::Connect {
    let broker = RecordingBroker::start();
    let port = broker.port.to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("client.yaml");
    std::fs::write(&config, "auto_reconnect: false\n").expect("write client.yaml");
    let mut all = vec!["-h", "127.0.0.1", "-p", &port, "-t", "t"];
    if bin == pub_bin() {
        all.extend_from_slice(&["-m", "x"]);
    } else {
        all.extend_from_slice(&["-c", config.to_str().expect("utf-8 path")]);
    }
    all.extend_from_slice(args);
    let run = run_cli(bin, &all, b"", LIMIT);
    broker
        .next_connect(Duration::from_secs(1))
        .unwrap_or_else(|| panic!("{bin} {all:?} sent no CONNECT: {}", run.stderr))
}

#[test]
fn a_generated_client_id_connects_with_a_clean_session() {
    for (bin, program) in [(pub_bin(), "amqtt_pub/"), (sub_bin(), "amqtt_sub/")] {
        // Nobody can resume a session under a generated id: it must not be left behind.
        let connect = connect_of(bin, &[]);
        assert!(connect.client_id.starts_with(program), "{connect:?}");
        assert!(connect.clean_session, "{bin} without -i: {connect:?}");
        // With -i the session is resumed, as aMQTT does, unless --clean-session.
        let connect = connect_of(bin, &["-i", "mine"]);
        assert_eq!(connect.client_id, "mine");
        assert!(!connect.clean_session, "{bin} -i: {connect:?}");
        assert!(connect_of(bin, &["-i", "mine", "--clean-session"]).clean_session);
    }
}

#[test]
fn user_and_password_options_reach_connect_and_override_the_url() {
    for bin in [pub_bin(), sub_bin()] {
        let connect = connect_of(bin, &["-u", "alice", "-P", "s3cret"]);
        assert_eq!(connect.username.as_deref(), Some("alice"));
        assert_eq!(connect.password.as_deref(), Some(&b"s3cret"[..]));
    }
    let broker = RecordingBroker::start();
    let url = format!("mqtt://bob:pw@127.0.0.1:{}", broker.port);
    let run = run_cli(
        pub_bin(),
        &["--url", &url, "-u", "alice", "-t", "t", "-m", "x"],
        b"",
        LIMIT,
    );
    assert!(run.status.success(), "{}", run.stderr);
    let connect = broker.next_connect(LIMIT).expect("CONNECT");
    assert_eq!(connect.username.as_deref(), Some("alice"));
    assert_eq!(connect.password.as_deref(), Some(&b"pw"[..]));
}

#[test]
fn mosquitto_host_and_port_publish_to_the_real_broker() {
    let (_broker, addr) = start_broker(1);
    let port = addr.port().to_string();
    let sub = RunningSub::spawn(&["-h", "127.0.0.1", "-p", &port, "-t", "habit/#", "-n", "1"]);
    assert!(
        sub.wait_stderr("subscribed to", 1, LIMIT),
        "amqtt_sub -h -p did not subscribe: {}",
        sub.stderr()
    );
    let run = run_cli(
        pub_bin(),
        &["-h", "127.0.0.1", "-p", &port, "-t", "habit/a", "-m", "x"],
        b"",
        LIMIT,
    );
    assert!(run.status.success(), "{}", run.stderr);
    assert!(
        run.stdout.is_empty(),
        "help was printed instead of publishing"
    );
    assert_eq!(sub.next_text(LIMIT).as_deref(), Some("x"));

    // Both ways at once is a usage error, not a guess.
    let url = format!("mqtt://127.0.0.1:{port}");
    for extra in [["-h", "127.0.0.1"], ["-p", port.as_str()]] {
        let mut args = vec!["--url", url.as_str(), "-t", "a", "-m", "x"];
        args.extend_from_slice(&extra);
        let run = run_cli(pub_bin(), &args, b"", LIMIT);
        assert_eq!(run.status.code(), Some(2), "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains("cannot be used with"), "{}", run.stderr);
    }
}

#[test]
fn help_names_the_program_and_its_broker_options() {
    for (bin, about) in [
        (pub_bin(), "Publish MQTT messages"),
        (sub_bin(), "Subscribe to MQTT topics"),
    ] {
        for help in ["--help", "-h"] {
            let run = run_cli(bin, &[help], b"", LIMIT);
            assert!(run.status.success(), "{bin} {help}: {}", run.stderr);
            let out = String::from_utf8_lossy(&run.stdout);
            assert!(out.starts_with(about), "{bin} {help}: {out}");
            for option in [
                "-h, --host",
                "-p, --port",
                "-u, --username",
                "-P, --password",
            ] {
                assert!(out.contains(option), "{bin} {help} lacks {option}");
            }
        }
    }
}

/// The only stderr line of a run that exited with `code`.
fn one_error(bin: &str, args: &[&str], code: i32) -> String {
    let run = run_cli(bin, args, b"", LIMIT);
    assert_eq!(run.status.code(), Some(code), "{args:?}: {}", run.stderr);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?}: {}", run.stderr);
    lines[0].to_string()
}

#[test]
fn errors_say_each_cause_once_and_show_what_works() {
    let url = "mqtt://127.0.0.1:1";
    assert_eq!(
        one_error(pub_bin(), &["--url", url, "-t", "a/+", "-m", "x"], 2),
        "amqtt_pub: -t 'a/+': invalid topic name: contains a wildcard character"
    );
    assert_eq!(
        one_error(sub_bin(), &["--url", url, "-t", "a/#/b"], 2),
        "amqtt_sub: -t 'a/#/b': invalid topic filter: '#' must be alone in the last level"
    );
    assert_eq!(
        one_error(pub_bin(), &["--url", "mqtt:host", "-t", "a", "-m", "x"], 2),
        "amqtt_pub: invalid broker URL 'mqtt:host': expected scheme://host[:port], e.g. \
         mqtt://localhost:1883"
    );
    // tcp:// is accepted, so it is listed.
    let line = one_error(pub_bin(), &["--url", "http://h", "-t", "a", "-m", "x"], 2);
    assert!(
        line.ends_with("scheme must be mqtt, tcp, mqtts, ssl, tls, ws or wss"),
        "{line}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("client.yaml");
    std::fs::write(&config, "topics:\n  a/+: {qos: 1}\n").expect("write");
    let line = one_error(
        sub_bin(),
        &[
            "--url",
            url,
            "-t",
            "a",
            "-c",
            config.to_str().expect("utf-8"),
        ],
        2,
    );
    assert!(
        line.ends_with("key 'topics.a/+': invalid topic name: contains a wildcard character"),
        "{line}"
    );

    // A connection lost for good says so once (the fake broker closes on SUBSCRIBE).
    let broker = RecordingBroker::start();
    std::fs::write(&config, "auto_reconnect: false\n").expect("write");
    let port = broker.port.to_string();
    let run = run_cli(
        sub_bin(),
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-t",
            "a",
            "-c",
            config.to_str().expect("utf-8"),
        ],
        b"",
        LIMIT,
    );
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    let last = run.stderr.lines().last().unwrap_or_default();
    assert_eq!(
        last,
        "amqtt_sub: subscribe failed: connection lost: the broker closed the connection"
    );
    assert!(
        !run.stderr.contains("connection lost: connection lost"),
        "{}",
        run.stderr
    );
}

#[test]
fn debug_output_names_each_packet_and_trace_hides_the_password() {
    let (_broker, addr) = start_broker(1);
    let port = addr.port().to_string();
    let args = [
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-u",
        "alice",
        "-P",
        "pa55word",
        "-t",
        "dbg",
        "-m",
        "x",
    ];
    let mut with_d = args.to_vec();
    with_d.push("-d");
    let run = run_cli(pub_bin(), &with_d, b"", LIMIT);
    assert!(run.status.success(), "{}", run.stderr);
    for line in [
        "sending CONNECT",
        "received CONNACK",
        "sending PUBLISH",
        "sending DISCONNECT",
    ] {
        assert!(run.stderr.contains(line), "-d lacks {line}: {}", run.stderr);
    }
    let traced = std::process::Command::new(pub_bin())
        .args(args)
        .env("RUST_LOG", "trace")
        .output()
        .expect("amqtt_pub runs");
    let stderr = String::from_utf8_lossy(&traced.stderr);
    assert!(traced.status.success(), "{stderr}");
    assert!(stderr.contains("username: Some(\"alice\")"), "{stderr}");
    assert!(
        stderr.contains("password: Some(<redacted 8 bytes>)"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("pa55word"),
        "the password was logged: {stderr}"
    );
}
