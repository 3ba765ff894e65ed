//! `--persistent` against a real broker seen through a spy: a relay in front of an embedded amqtt
//! that records every CONNECT (client id, clean session) and forwards the bytes unchanged. The
//! subscribers must connect with clean session 0 and have their sessions removed (a clean-session
//! connect under the same id) after the run; the publishers stay clean. Also checks the publish →
//! acknowledgement latency is reported at QoS 1 and 2 and not at QoS 0.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

use amqtt::protocol::{decode, Packet, PROTOCOL_MAX_PACKET_SIZE};
use amqtt_bench::scenario::{Opts, Scenario};
use bytes::BytesMut;

/// Every CONNECT seen, in order: (client id, clean session).
type Connects = Arc<Mutex<Vec<(String, bool)>>>;

/// Copies `from` to `to` until either side closes.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 65536];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// One client connection: read its CONNECT, record it, then relay both ways.
fn spy_one(mut client: TcpStream, broker: SocketAddr, connects: Connects) {
    let _ = client.set_nodelay(true);
    let mut buf = BytesMut::new();
    let mut tmp = [0u8; 4096];
    let connect = loop {
        match decode(&mut buf.clone(), PROTOCOL_MAX_PACKET_SIZE) {
            Ok(Some(Packet::Connect(c))) => break c,
            Ok(None) => {}
            _ => return,
        }
        match client.read(&mut tmp) {
            Ok(n) if n > 0 => buf.extend_from_slice(&tmp[..n]),
            _ => return,
        }
    };
    connects
        .lock()
        .unwrap()
        .push((connect.client_id.clone(), connect.clean_session));
    let Ok(mut upstream) = TcpStream::connect(broker) else {
        return;
    };
    let _ = upstream.set_nodelay(true);
    // Everything read so far (the CONNECT and whatever followed it) goes up unchanged.
    if upstream.write_all(&buf).is_err() {
        return;
    }
    let (Ok(c2), Ok(u2)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    thread::spawn(move || pump(u2, c2));
    pump(client, upstream);
}

fn start_spy(broker: SocketAddr) -> (SocketAddr, Connects) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let connects: Connects = Arc::default();
    let seen = connects.clone();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(s) = conn else { return };
            let seen = seen.clone();
            thread::spawn(move || spy_one(s, broker, seen));
        }
    });
    (addr, connects)
}

fn opts(addr: SocketAddr, qos: u8, persistent: bool) -> Opts {
    Opts {
        url: format!("mqtt://{addr}"),
        n: Some(3),
        qos,
        persistent,
        // A light load: at saturation a busy 2-CPU machine makes the generator warn that it is
        // the bottleneck, which is not what these tests look at.
        rate: Some(500.0),
        duration: 0.5,
        warmup: 0.2,
        drain: 5.0,
        threads: Some(2),
        quiet: true,
        ..Opts::default()
    }
}

#[test]
fn persistent_subscribers_connect_with_clean_session_0_and_are_removed_afterwards() {
    let (_broker, broker_addr) = common::start_broker(common::PLAIN_YAML, 1);
    let (spy, connects) = start_spy(broker_addr);
    let r = Scenario::Pairs(opts(spy, 1, true))
        .run()
        .expect("pairs --persistent");
    assert!(r.persistent);
    assert_eq!(r.lost, 0, "{r:?}");
    assert_eq!(r.errors_total, 0, "{:?}", r.errors);
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    assert!(r.delivered > 0, "{r:?}");

    let seen = connects.lock().unwrap().clone();
    // The harness's ids are ab<run id><role><index>: s = subscriber, p = publisher.
    let role = |id: &str| id.chars().nth(10);
    let subscribers: Vec<&String> = seen
        .iter()
        .filter(|(id, clean)| role(id) == Some('s') && !clean)
        .map(|(id, _)| id)
        .collect();
    assert_eq!(subscribers.len(), 3, "{seen:?}");
    for id in &subscribers {
        let first = seen.iter().position(|(i, _)| i == *id).unwrap();
        assert!(
            seen[first + 1..]
                .iter()
                .any(|(i, clean)| i == *id && *clean),
            "the session of {id} was not removed: {seen:?}"
        );
    }
    assert!(
        seen.iter()
            .filter(|(id, _)| role(id) == Some('p'))
            .all(|(_, clean)| *clean),
        "{seen:?}"
    );
}

#[test]
fn clean_runs_stay_clean_and_acks_are_timed_at_qos_1_and_2_only() {
    let (_broker, broker_addr) = common::start_broker(common::PLAIN_YAML, 1);
    let (spy, connects) = start_spy(broker_addr);
    for qos in 0..=2u8 {
        let r = Scenario::Pairs(opts(spy, qos, false)).run().expect("pairs");
        assert!(!r.persistent);
        match (qos, &r.ack_latency_us) {
            (0, None) => {}
            (1 | 2, Some(a)) => {
                assert!(a.count > 0 && a.p50 > 0.0, "QoS {qos}: {a:?}");
                assert!(a.p50 <= a.p99 && a.p99 <= a.max, "QoS {qos}: {a:?}");
                // At most one per message sent in the window (acks of warm-up messages are
                // not timed).
                assert!(a.count <= r.sent, "QoS {qos}: {a:?} for {} sent", r.sent);
            }
            (q, a) => panic!("QoS {q}: ack latency {a:?}"),
        }
    }
    assert!(connects.lock().unwrap().iter().all(|(_, clean)| *clean));
}

#[test]
fn persistent_is_refused_where_it_means_nothing() {
    let o = Opts {
        url: "mqtt://127.0.0.1:1".into(),
        persistent: true,
        quiet: true,
        ..Opts::default()
    };
    for sc in [Scenario::Conns(o.clone()), Scenario::Retained(o.clone())] {
        match sc.run() {
            Err(e) => assert!(e.to_string().contains("--persistent"), "{e}"),
            Ok(_) => panic!("--persistent accepted by {}", sc.name()),
        }
    }
}
