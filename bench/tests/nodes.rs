//! `--url a,b`: clients spread over several brokers (the nodes of a cluster), and `--broker-pid`
//! with several PIDs. Two independent amqtt brokers embedded in the test process stand for two
//! nodes that do NOT share messages, so where each client landed shows in what arrives: a pairs run
//! over them delivers nothing (every publisher is on the other broker than its subscriber), the
//! same run over one broker listed twice delivers everything.

mod common;

use std::net::SocketAddr;

use amqtt_bench::scenario::{Opts, Scenario};

fn opts(url: String) -> Opts {
    Opts {
        url,
        n: Some(4),
        duration: 0.5,
        warmup: 0.1,
        drain: 2.0,
        threads: Some(2),
        quiet: true,
        ..Opts::default()
    }
}

fn two_brokers() -> (
    (amqtt::BrokerHandle, SocketAddr),
    (amqtt::BrokerHandle, SocketAddr),
) {
    (
        common::start_broker(common::PLAIN_YAML, 1),
        common::start_broker(common::PLAIN_YAML, 1),
    )
}

#[test]
fn pairs_put_publisher_and_subscriber_on_different_urls() {
    let ((_a, a), (_b, b)) = two_brokers();
    // Open loop: the publishers keep sending whatever arrives.
    let r = Scenario::Pairs(Opts {
        rate: Some(200.0),
        ..opts(format!("mqtt://{a},mqtt://{b}"))
    })
    .run()
    .expect("pairs over two brokers");
    assert_eq!(r.connect.connections, 8, "{r:?}");
    assert!(r.sent > 0, "{r:?}");
    assert_eq!(r.delivered, 0, "a pair shared a broker: {r:?}");
    assert_eq!(r.url, format!("mqtt://{a},mqtt://{b}"));

    // The same broker under both URLs: everything arrives; CPU of the two "processes" (this one
    // twice) adds up and each is reported.
    let me = std::process::id();
    let r = Scenario::Pairs(Opts {
        rate: Some(200.0),
        broker_pid: vec![me, me],
        ..opts(format!("mqtt://{a}, {a}"))
    })
    .run()
    .expect("pairs over one broker listed twice");
    assert!(r.delivered > 0 && r.lost == 0, "{r:?}");
    let broker = r.broker.expect("broker figures");
    assert_eq!(broker.processes.len(), 2, "{broker:?}");
    let sum: f64 = broker.processes.iter().map(|p| p.cpu_s).sum();
    assert!(
        (broker.cpu_s - sum).abs() < 1e-9 && broker.cpu_s > 0.0,
        "{broker:?}"
    );
}

#[test]
fn storm_sessions_are_removed_on_their_own_broker() {
    let ((ha, a), (hb, b)) = two_brokers();
    let r = Scenario::Storm(Opts {
        n: Some(6),
        duration: 0.3,
        ..opts(format!("mqtt://{a},mqtt://{b}"))
    })
    .run()
    .expect("storm over two brokers");
    assert_eq!(r.connect.connections, 6, "{r:?}");
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    // Each persistent session was removed where it lived: none is left on either broker.
    for (name, h) in [("a", &ha), ("b", &hb)] {
        let left: Vec<_> = h
            .sessions()
            .expect("sessions")
            .into_iter()
            .filter(|s| s.client_id.starts_with("ab"))
            .collect();
        assert!(left.is_empty(), "broker {name} kept {}", left.len());
    }
}

#[test]
fn bad_url_lists_are_usage_errors() {
    for (url, says) in [
        ("mqtt://127.0.0.1:1,,mqtt://127.0.0.1:2", "empty URL"),
        (
            "mqtt://u:p@127.0.0.1:1,mqtt://127.0.0.1:2",
            "same user name",
        ),
        ("mqtt://127.0.0.1:1,http://x", "scheme must be"),
    ] {
        let e = Scenario::Pairs(opts(url.into())).run().unwrap_err();
        assert!(e.to_string().contains(says), "{url}: {e}");
    }
}
