//! `--protocol 5` (and `--topic-alias`) in every scenario against a real MQTT 5 broker: Mosquitto,
//! started here on a free loopback port and stopped by PID. The broker is a parameter
//! (`BROKERS`) so ours can join once it speaks MQTT 5. Short runs: they check that the MQTT 5
//! wire is right (no errors, no loss at QoS 1/2, sessions kept), not anyone's speed.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use amqtt::protocol::ProtocolLevel;
use amqtt_bench::scenario::{Opts, Scenario};

const MOSQUITTO: &str = "/usr/sbin/mosquitto";
const BROKERS: &[&str] = &["mosquitto"];

/// A broker process, killed (by its PID) when dropped.
struct Broker {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}

fn start(kind: &str) -> Broker {
    assert_eq!(kind, "mosquitto", "unknown broker {kind}");
    assert!(
        Path::new(MOSQUITTO).is_file(),
        "mosquitto missing: apt-get install mosquitto (.ci/run does)"
    );
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("bench-v5-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let conf = dir.join("mosquitto.conf");
    let text = format!("listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n");
    std::fs::write(&conf, text).expect("mosquitto.conf");
    let child = Command::new(MOSQUITTO)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start mosquitto");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "mosquitto does not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    Broker { child, addr }
}

fn opts(broker: &Broker, topic_alias: bool) -> Opts {
    Opts {
        url: format!("mqtt://{}", broker.addr),
        duration: 0.8,
        warmup: 0.2,
        drain: 5.0,
        threads: Some(2),
        quiet: true,
        broker_pid: vec![broker.child.id()],
        protocol: ProtocolLevel::V5,
        topic_alias,
        ..Opts::default()
    }
}

#[test]
fn traffic_scenarios_with_and_without_topic_aliases() {
    for kind in BROKERS {
        let broker = start(kind);
        for topic_alias in [false, true] {
            for (name, qos) in [("pairs", 1u8), ("fanin", 2), ("fanout", 0), ("pairs", 2)] {
                let o = Opts {
                    n: Some(4),
                    qos,
                    ..opts(&broker, topic_alias)
                };
                let scenario = match name {
                    "pairs" => Scenario::Pairs(o),
                    "fanin" => Scenario::Fanin(o),
                    _ => Scenario::Fanout(o),
                };
                let what = format!("{kind} {name} QoS {qos} alias {topic_alias}");
                let r = scenario.run().unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_eq!((r.protocol, r.topic_alias), (5, topic_alias), "{what}");
                assert!(r.delivered_per_s > 100.0, "{what}: {r:?}");
                assert_eq!(r.errors_total, 0, "{what}: {:?}", r.errors);
                if qos > 0 {
                    assert_eq!(r.lost, 0, "{what}: {r:?}");
                }
                assert!(r.table().contains("MQTT 5"), "{what}");
            }
        }
    }
}

#[test]
fn sessions_retained_and_connections() {
    for kind in BROKERS {
        let broker = start(kind);
        // Persistent subscribers: clean start 0 with a session that does not expire.
        let r = Scenario::Pairs(Opts {
            n: Some(2),
            qos: 1,
            persistent: true,
            ..opts(&broker, false)
        })
        .run()
        .expect("persistent pairs");
        assert_eq!((r.lost, r.errors_total), (0, 0), "{kind}: {r:?}");

        let r = Scenario::Storm(Opts {
            n: Some(20),
            duration: 0.3,
            qos: 1,
            ..opts(&broker, false)
        })
        .run()
        .expect("storm");
        let s = r.storm.clone().expect("storm figures");
        assert!(s.rounds >= 1);
        assert_eq!(s.reconnects, 20 * s.rounds, "{kind}: {s:?}");
        assert_eq!(r.errors.session_lost, 0, "{kind}: {:?}", r.errors);

        let r = Scenario::Retained(Opts {
            n: Some(2),
            messages: Some(200),
            qos: 1,
            ..opts(&broker, false)
        })
        .run()
        .expect("retained");
        assert_eq!(
            (r.expected, r.lost, r.duplicated),
            (400, 0, 0),
            "{kind}: {r:?}"
        );

        let r = Scenario::Conns(Opts {
            n: Some(50),
            duration: 0.3,
            ..opts(&broker, false)
        })
        .run()
        .expect("conns");
        assert_eq!((r.connect.connections, r.connect.failed), (50, 0), "{kind}");
    }
}

#[test]
fn topic_alias_needs_protocol_5() {
    let o = Opts {
        url: "mqtt://127.0.0.1:1".into(),
        quiet: true,
        topic_alias: true,
        ..Opts::default()
    };
    let err = Scenario::Pairs(o).run().expect_err("refused");
    assert!(err.to_string().contains("--protocol 5"), "{err}");
}
