//! Scenario wiring against a real broker: amqtt embedded in the test process (one shard,
//! unpinned). Short runs; they check that the harness's accounting and figures are sane, not the
//! broker's speed.

mod common;

use std::net::SocketAddr;

use amqtt_bench::scenario::{Opts, Scenario};

fn start_broker() -> (amqtt::BrokerHandle, SocketAddr) {
    common::start_broker(common::PLAIN_YAML, 1)
}

fn opts(addr: SocketAddr) -> Opts {
    Opts {
        url: format!("mqtt://{addr}"),
        duration: 1.0,
        warmup: 0.2,
        drain: 5.0,
        threads: Some(2),
        quiet: true,
        // This process is the broker: its CPU and memory figures come from /proc/self.
        broker_pid: vec![std::process::id()],
        ..Opts::default()
    }
}

#[test]
fn pairs_at_every_qos() {
    let (_broker, addr) = start_broker();
    for qos in 0..=2u8 {
        let o = Opts {
            n: Some(4),
            qos,
            ..opts(addr)
        };
        let r = Scenario::Pairs(o).run().expect("pairs run");
        assert_eq!(r.clients, 8);
        assert_eq!((r.publishers, r.subscribers), (4, 4));
        assert!(r.delivered_per_s > 100.0, "QoS {qos}: {r:?}");
        assert!(r.sent_per_s > 100.0, "QoS {qos}: {r:?}");
        assert!(r.expected >= r.sent, "QoS {qos}: {r:?}");
        if qos > 0 {
            assert_eq!(r.lost, 0, "QoS {qos} lost messages: {r:?}");
        }
        if qos == 2 {
            assert_eq!(r.duplicated, 0, "QoS 2 duplicates: {r:?}");
        }
        assert_eq!(r.out_of_order, 0, "QoS {qos}: {r:?}");
        assert_eq!(r.errors_total, 0, "QoS {qos}: {:?}", r.errors);
        let l = r.latency_us;
        assert!(l.count > 0 && l.p50 > 0.0, "{l:?}");
        assert!(l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.p999 && l.p999 <= l.max);
        // In a closed loop with a window of 32, a message cannot wait behind more than
        // 4 × 32 others; a p50 of a second would mean broken pacing.
        assert!(l.p50 < 200_000.0, "{l:?}");
        let b = r.broker.clone().expect("broker figures");
        assert!(b.cpu_s > 0.0 && b.peak_rss_kb > 0, "{b:?}");
        assert!(b.delivered_per_broker_cpu_s > 0.0);
        assert_eq!(r.connect.connections, 8);
        // Closed loop within the window: the rates are close.
        assert!(
            (r.sent_per_s - r.delivered_per_s).abs() < 0.2 * r.sent_per_s,
            "{r:?}"
        );
    }
}

#[test]
fn fanin_and_fanout() {
    let (_broker, addr) = start_broker();
    let r = Scenario::Fanin(Opts {
        n: Some(5),
        qos: 1,
        ..opts(addr)
    })
    .run()
    .expect("fanin");
    assert_eq!((r.publishers, r.subscribers), (5, 1));
    assert_eq!(r.lost, 0, "{r:?}");
    assert!(r.delivered_per_s > 100.0);

    let r = Scenario::Fanout(Opts {
        n: Some(5),
        qos: 1,
        ..opts(addr)
    })
    .run()
    .expect("fanout");
    assert_eq!((r.publishers, r.subscribers), (1, 5));
    assert_eq!(r.lost, 0, "{r:?}");
    // Every message reaches 5 subscribers.
    assert!(r.delivered_per_s > 3.0 * r.sent_per_s, "{r:?}");
}

#[test]
fn open_loop_keeps_its_schedule() {
    let (_broker, addr) = start_broker();
    let r = Scenario::Pairs(Opts {
        n: Some(2),
        rate: Some(500.0),
        ..opts(addr)
    })
    .run()
    .expect("open loop");
    assert_eq!(r.mode, "open");
    // 2 publishers × 500/s.
    assert!((r.sent_per_s - 1000.0).abs() < 50.0, "{r:?}");
    assert!((r.delivered_per_s - 1000.0).abs() < 100.0, "{r:?}");
    assert_eq!(r.lost, 0);
    // 1000 msg/s is nothing for a broker: latency stays far below the 1 ms period... mostly.
    assert!(r.latency_us.p50 < 5_000.0, "{:?}", r.latency_us);
}

#[test]
fn conns_retained_and_storm() {
    let (_broker, addr) = start_broker();
    let r = Scenario::Conns(Opts {
        n: Some(100),
        duration: 0.3,
        ..opts(addr)
    })
    .run()
    .expect("conns");
    assert_eq!(r.connect.connections, 100);
    assert_eq!(r.connect.failed, 0);
    assert!(r.connect.connect_per_s > 10.0);
    assert_eq!(r.connect.latency_us.count, 100);
    assert!(r
        .broker
        .clone()
        .expect("broker")
        .rss_per_conn_bytes
        .is_some());

    let r = Scenario::Retained(Opts {
        n: Some(2),
        messages: Some(300),
        qos: 1,
        ..opts(addr)
    })
    .run()
    .expect("retained");
    let x = r.retained.clone().expect("retained figures");
    assert_eq!((x.messages, x.subscribers), (300, 2));
    assert_eq!(r.expected, 600);
    assert_eq!(r.lost, 0, "{r:?}");
    assert_eq!(r.duplicated, 0);
    assert_eq!(r.latency_us.count, 600);

    let r = Scenario::Storm(Opts {
        n: Some(20),
        duration: 0.3,
        qos: 1,
        ..opts(addr)
    })
    .run()
    .expect("storm");
    let s = r.storm.clone().expect("storm figures");
    assert!(s.rounds >= 1);
    assert_eq!(s.reconnects, 20 * s.rounds, "{s:?}");
    assert_eq!(r.errors.session_lost, 0, "{:?}", r.errors);
}

#[test]
fn usage_errors() {
    let bad = |o: Opts| Scenario::Pairs(o).run().is_err();
    let base = || Opts {
        url: "mqtt://127.0.0.1:1".into(),
        quiet: true,
        ..Opts::default()
    };
    assert!(bad(Opts { size: 10, ..base() }));
    assert!(bad(Opts {
        url: "mqtts://127.0.0.1:8883".into(),
        ..base()
    }));
    assert!(bad(Opts {
        url: "ws://127.0.0.1/mqtt".into(),
        ..base()
    }));
    assert!(bad(Opts {
        n: Some(0),
        ..base()
    }));
    assert!(bad(Opts {
        rate: Some(-1.0),
        ..base()
    }));
    // Nothing listens on port 1: a run error, not a hang.
    assert!(bad(base()));
}

#[test]
fn a_refused_connect_reports_the_operating_systems_reason() {
    // Nothing listens on port 1 of the loopback address.
    let error = Scenario::Pairs(Opts {
        url: "mqtt://127.0.0.1:1".into(),
        n: Some(1),
        quiet: true,
        ..Opts::default()
    })
    .run()
    .expect_err("nothing listens on port 1");
    let text = error.to_string();
    assert!(
        text.contains("connect to 127.0.0.1:1 failed: Connection refused"),
        "{text}"
    );
}

#[test]
fn credentials_in_the_url_are_sent_in_every_connect() {
    let dir = std::env::temp_dir().join(format!("bench-credentials-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let passwd = dir.join("passwd");
    let hash = amqtt::plugins::password_file::hash_password(b"s3cret").expect("hash");
    std::fs::write(&passwd, format!("alice:{hash}\n")).expect("password file");
    let yaml = format!(
        "{}auth:\n  allow-anonymous: false\n  password-file: {}\n",
        common::PLAIN_YAML,
        passwd.display()
    );
    let (_broker, addr) = common::start_broker(&yaml, 1);

    let with = |url: String| {
        Scenario::Pairs(Opts {
            url,
            n: Some(2),
            qos: 1,
            duration: 0.5,
            warmup: 0.1,
            quiet: true,
            ..Opts::default()
        })
        .run()
    };
    let r = with(format!("mqtt://alice:s3cret@{addr}")).expect("alice's run");
    assert_eq!(r.connect.connections, 4);
    assert_eq!((r.lost, r.errors_total), (0, 0), "{r:?}");
    assert!(
        !r.url.contains("s3cret"),
        "the report shows the password: {}",
        r.url
    );

    let refused = with(format!("mqtt://alice:wrong@{addr}")).expect_err("a wrong password");
    assert!(refused.to_string().contains("connack_refused"), "{refused}");
    let anonymous = with(format!("mqtt://{addr}")).expect_err("no user name");
    assert!(
        anonymous.to_string().contains("connack_refused"),
        "{anonymous}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
