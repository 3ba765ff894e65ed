//! The `amqtt_pub` and `amqtt_sub` binaries, run as child processes against our broker: options and
//! their message semantics, output format, exit codes and one-line errors, signals and wills, and
//! a broker restart under a running `amqtt_sub`.

mod client_support;
mod common;

use std::time::Duration;

use futures_lite::future::block_on;

use amqtt::client::{ClientConfig, MqttClient};
use amqtt::protocol::QoS;

use client_support::{
    free_port, pub_bin, run_cli, signal, sub_bin, terminate, wait_exit, BrokerProcess, Proxy,
    RunningSub,
};
use common::{start_broker, start_broker_with};

const LIMIT: Duration = Duration::from_secs(20);
const LINE: Duration = Duration::from_secs(5);

fn url(addr: std::net::SocketAddr) -> String {
    format!("mqtt://{addr}")
}

/// `amqtt_sub` subscribed to `filter` (waits for its SUBACK), with `extra` options.
fn subscriber(url: &str, filter: &str, extra: &[&str]) -> RunningSub {
    let mut args = vec!["--url", url, "-t", filter];
    args.extend_from_slice(extra);
    let sub = RunningSub::spawn(&args);
    assert!(
        sub.wait_stderr("subscribed to", 1, LIMIT),
        "amqtt_sub did not subscribe; stderr:\n{}",
        sub.stderr()
    );
    sub
}

fn publish(url: &str, args: &[&str], stdin: &[u8]) {
    let mut all = vec!["--url", url];
    all.extend_from_slice(args);
    let run = run_cli(pub_bin(), &all, stdin, LIMIT);
    assert!(
        run.status.success(),
        "amqtt_pub {args:?} failed: {}",
        run.stderr
    );
}

/// The only stderr line of a failed run.
fn one_line_error(stderr: &str) -> &str {
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one line on stderr, got: {stderr:?}"
    );
    lines[0]
}

#[test]
fn version_and_help_exit_zero() {
    for bin in [pub_bin(), sub_bin()] {
        for flag in ["--version", "-h", "--help"] {
            let run = run_cli(bin, &[flag], b"", LIMIT);
            assert!(run.status.success(), "{bin} {flag}: {}", run.stderr);
            let out = String::from_utf8_lossy(&run.stdout);
            if flag == "--version" {
                assert!(out.starts_with("amqtt_"), "{out}");
            } else {
                for option in [
                    "--url",
                    "-t",
                    "-c",
                    "-i",
                    "-k",
                    "--clean-session",
                    "--ca-file",
                    "--ca-path",
                    "--ca-data",
                    "--will-topic",
                    "--will-message",
                    "--will-qos",
                    "--will-retain",
                    "--extra-headers",
                    "-d",
                    "--qos",
                    "--cert",
                    "--key",
                    "--insecure",
                ] {
                    assert!(out.contains(option), "{bin} -h lacks {option}");
                }
            }
        }
    }
    let help = run_cli(pub_bin(), &["-h"], b"", LIMIT);
    let help = String::from_utf8_lossy(&help.stdout);
    for option in [
        "-m",
        "-f",
        "-l",
        "-s",
        "-n",
        "-r",
        "--lines",
        "--stdin",
        "--no-message",
    ] {
        assert!(help.contains(option), "amqtt_pub -h lacks {option}");
    }
    let help = run_cli(sub_bin(), &["-h"], b"", LIMIT);
    let help = String::from_utf8_lossy(&help.stdout);
    for option in ["-n", "-v"] {
        assert!(help.contains(option), "amqtt_sub -h lacks {option}");
    }
}

#[test]
fn every_message_option_round_trips_through_amqtt_sub() {
    let (_broker, addr) = start_broker(2);
    let url = url(addr);
    let sub = subscriber(&url, "cli/#", &["-q", "1"]);

    publish(&url, &["-t", "cli/m", "-m", "hello world"], b"");
    assert_eq!(sub.next_text(LINE).as_deref(), Some("hello world"));

    publish(&url, &["-t", "cli/n", "-n", "-q", "1"], b"");
    assert_eq!(
        sub.next_text(LINE).as_deref(),
        Some(""),
        "-n: an empty line"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lines.txt");
    std::fs::write(&file, b"one\r\ntwo\n\nfour").unwrap();
    publish(
        &url,
        &["-t", "cli/f", "-f", file.to_str().unwrap(), "-q", "2"],
        b"",
    );
    for expected in ["one", "two", "", "four"] {
        assert_eq!(sub.next_text(LINE).as_deref(), Some(expected), "-f");
    }

    publish(
        &url,
        &["-t", "cli/l", "-l", "-q", "1"],
        b"alpha\r\n\n\nbeta\ngamma",
    );
    for expected in ["alpha", "beta", "gamma"] {
        assert_eq!(sub.next_text(LINE).as_deref(), Some(expected), "-l");
    }

    publish(&url, &["-t", "cli/s", "-s"], b"x\ny\n");
    // One message "x\ny\n", printed with its own newline after it.
    assert_eq!(sub.next_text(LINE).as_deref(), Some("x"));
    assert_eq!(sub.next_text(LINE).as_deref(), Some("y"));
    assert_eq!(sub.next_text(LINE).as_deref(), Some(""));

    assert_eq!(
        sub.next_text(Duration::from_millis(300)),
        None,
        "nothing else"
    );
}

/// aMQTT 0.12's long names for -n, -l and -s are aliases of ours (mosquitto's).
#[test]
fn amqtt_long_option_names_are_aliases() {
    let (_broker, addr) = start_broker(1);
    let url = url(addr);
    let sub = subscriber(&url, "alias/#", &["-q", "1"]);
    publish(&url, &["-t", "alias/n", "--no-message", "-q", "1"], b"");
    assert_eq!(sub.next_text(LINE).as_deref(), Some(""), "--no-message");
    publish(&url, &["-t", "alias/l", "--lines", "-q", "1"], b"a\n\nb\n");
    for expected in ["a", "b"] {
        assert_eq!(sub.next_text(LINE).as_deref(), Some(expected), "--lines");
    }
    publish(&url, &["-t", "alias/s", "--stdin", "-q", "1"], b"whole");
    assert_eq!(sub.next_text(LINE).as_deref(), Some("whole"), "--stdin");
}

/// Without --url, -h or a config file the CLIs go to mqtt://127.0.0.1:1883, as aMQTT's and
/// mosquitto's do. Whether a broker listens there or not, the log names the address used.
#[test]
fn without_a_broker_option_the_default_is_127_0_0_1_port_1883() {
    let run = run_cli(
        pub_bin(),
        &["-t", "default/url", "-m", "x", "-d"],
        b"",
        LIMIT,
    );
    assert!(
        run.stderr.contains("127.0.0.1:1883"),
        "status {:?}: {}",
        run.status,
        run.stderr
    );
}

#[test]
fn verbose_count_and_exit() {
    let (_broker, addr) = start_broker(1);
    let url = url(addr);
    let sub = subscriber(&url, "v/#", &["-t", "w", "-v", "-n", "3"]);
    publish(&url, &["-t", "v/a", "-m", "1"], b"");
    publish(&url, &["-t", "w", "-m", "2 two"], b"");
    publish(&url, &["-t", "v/b/c", "-n"], b"");
    assert_eq!(sub.next_text(LINE).as_deref(), Some("v/a 1"));
    assert_eq!(sub.next_text(LINE).as_deref(), Some("w 2 two"));
    assert_eq!(sub.next_text(LINE).as_deref(), Some("v/b/c "));
    let mut sub = sub;
    let status = wait_exit(&mut sub.child, LIMIT).expect("amqtt_sub exits after -n 3");
    assert!(status.success());
}

#[test]
fn retain_and_qos_flags_reach_the_broker() {
    let (_broker, addr) = start_broker(1);
    let url = url(addr);
    publish(&url, &["-t", "ret/x", "-m", "kept", "-r", "-q", "2"], b"");
    let client = MqttClient::new(None, ClientConfig::default());
    block_on(client.connect(&url)).unwrap();
    block_on(client.subscribe(&[("ret/#", QoS::ExactlyOnce)])).unwrap();
    let m = block_on(client.deliver_message(Some(LINE))).unwrap();
    assert!(m.message.retain);
    assert_eq!(m.message.qos, QoS::ExactlyOnce);
    assert_eq!(&m.message.payload[..], b"kept");
    publish(&url, &["-t", "ret/x", "-n", "-r"], b""); // clear it
}

#[test]
fn usage_errors_are_one_line_and_exit_2() {
    let (_broker, addr) = start_broker(1);
    let url = url(addr);
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        (pub_bin(), vec!["--url", &url, "-t", "a"], "exactly one of"),
        (
            pub_bin(),
            vec!["--url", &url, "-t", "a", "-m", "x", "-n"],
            "exactly one of",
        ),
        (
            pub_bin(),
            vec!["--url", &url, "-t", "a", "-l", "-s"],
            "exactly one of",
        ),
        (
            pub_bin(),
            vec!["--url", "http://h", "-t", "a", "-m", "x"],
            "invalid broker URL",
        ),
        (
            pub_bin(),
            vec!["--url", &url, "-t", "a/#", "-m", "x"],
            "invalid topic",
        ),
        (
            pub_bin(),
            vec![
                "--url",
                &url,
                "-t",
                "a",
                "-m",
                "x",
                "--extra-headers",
                "{nope",
            ],
            "--extra-headers",
        ),
        (
            pub_bin(),
            vec!["--url", &url, "-t", "a", "-m", "x", "--will-topic", "w"],
            "together",
        ),
        (
            pub_bin(),
            vec![
                "--url",
                &url,
                "-t",
                "a",
                "-m",
                "x",
                "-c",
                "/nonexistent.yaml",
            ],
            "/nonexistent.yaml",
        ),
        (
            sub_bin(),
            vec!["--url", "mqtt://", "-t", "a"],
            "missing host",
        ),
        (
            sub_bin(),
            vec!["--url", &url, "-t", "a/#/b"],
            "invalid topic filter",
        ),
        (
            sub_bin(),
            vec!["--url", &url, "-t", "a", "--extra-headers", "[1]"],
            "JSON object",
        ),
    ];
    for (bin, args, expected) in cases {
        let run = run_cli(bin, &args, b"", LIMIT);
        assert_eq!(run.status.code(), Some(2), "{args:?}: {}", run.stderr);
        let line = one_line_error(&run.stderr);
        assert!(line.contains(expected), "{args:?}: {line}");
        assert!(run.stdout.is_empty());
    }
}

#[test]
fn a_bad_config_file_names_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("client.yaml");
    std::fs::write(&path, "keep_alive: 10\ndefault_qos: 7\n").unwrap();
    let run = run_cli(
        sub_bin(),
        &[
            "--url",
            "mqtt://127.0.0.1:1",
            "-t",
            "a",
            "-c",
            path.to_str().unwrap(),
        ],
        b"",
        LIMIT,
    );
    assert_eq!(run.status.code(), Some(2));
    let line = one_line_error(&run.stderr);
    assert!(line.contains("client.yaml: key 'default_qos'"), "{line}");
}

#[test]
fn unreachable_and_refused_brokers_fail_promptly_with_one_line() {
    let closed = format!("mqtt://127.0.0.1:{}", free_port());
    for bin in [pub_bin(), sub_bin()] {
        let args: Vec<&str> = if bin == pub_bin() {
            vec!["--url", &closed, "-t", "a", "-m", "x"]
        } else {
            vec!["--url", &closed, "-t", "a"]
        };
        let run = run_cli(bin, &args, b"", LIMIT);
        assert_eq!(run.status.code(), Some(1), "{bin}: {}", run.stderr);
        let line = one_line_error(&run.stderr);
        assert!(
            line.contains("connection to 127.0.0.1:") && line.contains("failed"),
            "{line}"
        );
        assert!(
            run.took < Duration::from_secs(5),
            "{bin} took {:?}",
            run.took
        );
    }

    let (_broker, addr) = start_broker_with(1, |config| config.allow_anonymous = false);
    let url = url(addr);
    for (bin, args) in [
        (pub_bin(), vec!["--url", url.as_str(), "-t", "a", "-m", "x"]),
        (sub_bin(), vec!["--url", url.as_str(), "-t", "a"]),
    ] {
        let run = run_cli(bin, &args, b"", LIMIT);
        assert_eq!(run.status.code(), Some(1), "{bin}: {}", run.stderr);
        let line = one_line_error(&run.stderr);
        assert!(line.contains("connection refused by the broker"), "{line}");
        assert!(run.took < Duration::from_secs(5));
    }
}

#[test]
fn sigterm_and_sigint_disconnect_so_no_will_is_published() {
    let (_broker, addr) = start_broker(1);
    let url = url(addr);
    let watcher = MqttClient::new(None, ClientConfig::default());
    block_on(watcher.connect(&url)).unwrap();
    block_on(watcher.subscribe(&[("wills/#", QoS::AtLeastOnce)])).unwrap();
    let will = |name: &'static str| {
        vec![
            "--will-topic",
            name,
            "--will-message",
            "gone",
            "--will-qos",
            "1",
        ]
    };

    for (signal_number, topic) in [(libc::SIGTERM, "wills/term"), (libc::SIGINT, "wills/int")] {
        let mut sub = subscriber(&url, "x", &will(topic));
        signal(&sub.child, signal_number);
        let status = wait_exit(&mut sub.child, LIMIT).expect("amqtt_sub exits on the signal");
        assert!(status.success(), "{topic}: {status:?}");
    }
    assert!(
        block_on(watcher.deliver_message(Some(Duration::from_millis(700)))).is_err(),
        "no will after a signal"
    );

    // The control: a subscriber that dies without DISCONNECT does leave its will.
    let mut sub = subscriber(&url, "x", &will("wills/kill"));
    signal(&sub.child, libc::SIGKILL);
    let _ = wait_exit(&mut sub.child, LIMIT);
    let m = block_on(watcher.deliver_message(Some(LINE))).expect("the killed client's will");
    assert_eq!(m.message.topic.as_str(), "wills/kill");
}

#[test]
fn client_id_keep_alive_and_clean_session_options_are_used() {
    let (_broker, addr) = start_broker(1);
    let url = url(addr);
    // A persistent session: messages published while the subscriber is away wait for it.
    let mut sub = subscriber(&url, "sess/#", &["-i", "cli-session", "-q", "1", "-k", "5"]);
    terminate(&sub.child);
    assert!(wait_exit(&mut sub.child, LIMIT).is_some_and(|s| s.success()));
    publish(&url, &["-t", "sess/a", "-m", "while away", "-q", "1"], b"");
    let sub = subscriber(&url, "sess/#", &["-i", "cli-session", "-q", "1"]);
    assert_eq!(sub.next_text(LINE).as_deref(), Some("while away"));
    drop(sub);
    // --clean-session throws it away.
    let mut sub = subscriber(
        &url,
        "sess/#",
        &["-i", "cli-session", "-q", "1", "--clean-session"],
    );
    terminate(&sub.child);
    assert!(wait_exit(&mut sub.child, LIMIT).is_some());
    publish(&url, &["-t", "sess/b", "-m", "lost", "-q", "1"], b"");
    let sub = subscriber(&url, "sess/#", &["-i", "cli-session", "-q", "1"]);
    assert_eq!(sub.next_text(Duration::from_millis(500)), None);
}

/// A broker restart under a running `amqtt_sub` with auto_reconnect on and clean session off. The
/// new broker process has none of the old sessions (no persistence yet), so `amqtt_sub` must
/// re-subscribe by itself. QoS 1 messages published during the gap come from a publisher that
/// buffers them while it is offline (kept offline by a proxy until `amqtt_sub` is back, since the
/// new broker would have nobody to route them to before that) and re-sends after reconnecting:
/// none is lost. `client_mosquitto.rs` runs the same scenario against a persistent broker.
#[test]
fn amqtt_sub_survives_a_broker_restart_without_losing_qos1_messages() {
    let port = free_port();
    let mut broker = BrokerProcess::start(port);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("client.yaml");
    std::fs::write(
        &config,
        "auto_reconnect: true\nreconnect_retries: -1\nreconnect_max_interval: 0.2\n",
    )
    .unwrap();
    let sub = subscriber(
        &broker.url(),
        "gap/#",
        &["-q", "1", "-c", config.to_str().unwrap(), "-i", "gap-cli"],
    );
    let proxy = Proxy::start(port);
    let publisher_config = ClientConfig::from_yaml_str(
        "auto_reconnect: true\nreconnect_retries: -1\nreconnect_max_interval: 0.2\ncleansession: false",
        "test",
    )
    .unwrap();
    let publisher = MqttClient::new(Some("gap-cli-pub".into()), publisher_config);
    block_on(publisher.connect(&proxy.url())).unwrap();
    block_on(publisher.publish("gap/0", "before", Some(QoS::AtLeastOnce), None)).unwrap();
    assert_eq!(sub.next_text(LINE).as_deref(), Some("before"));

    proxy.set_up(false);
    broker.stop();
    let during: Vec<_> = (1..=20)
        .map(|i| {
            publisher
                .start_publish(
                    &format!("gap/{i}"),
                    format!("m{i}"),
                    Some(QoS::AtLeastOnce),
                    None,
                )
                .expect("accepted while offline")
        })
        .collect();
    broker.restart();
    assert!(
        sub.wait_stderr("re-subscribed to 'gap/#'", 1, LIMIT),
        "amqtt_sub did not re-subscribe; stderr:\n{}",
        sub.stderr()
    );
    proxy.set_up(true);
    for p in during {
        block_on(p.wait()).expect("delivered to the new broker");
    }
    let mut got: Vec<String> = (1..=20)
        .map(|_| sub.next_text(LINE).expect("every message from the gap"))
        .collect();
    got.sort();
    let mut expected: Vec<String> = (1..=20).map(|i| format!("m{i}")).collect();
    expected.sort();
    assert_eq!(got, expected);

    // And messages published after the reconnect keep flowing.
    publish(
        &broker.url(),
        &["-t", "gap/after", "-m", "after", "-q", "1"],
        b"",
    );
    assert_eq!(sub.next_text(LINE).as_deref(), Some("after"));
    block_on(publisher.disconnect()).unwrap();
}
