//! End-to-end accounting against a deliberately faulty "broker": a tiny relay that forwards one
//! publisher's QoS 0 messages to one subscriber while dropping, duplicating and reordering some
//! of them by sequence number. The harness must count exactly what the relay did.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

use amqtt::protocol::{
    decode, ConnAck, ConnectReturnCode, Packet, Publish, QoS, SubAck, SubscribeReturnCode,
    PROTOCOL_MAX_PACKET_SIZE,
};
use amqtt_bench::payload::Header;
use amqtt_bench::scenario::{Opts, Scenario};
use bytes::BytesMut;

/// The relay's faults, by sequence number: drop, duplicate, or hold until the next message.
#[derive(Default)]
struct Faults {
    held: Option<u64>,
    dropped: u64,
    duplicated: u64,
    released_late: u64,
}

impl Faults {
    /// Sequence numbers to forward, in order, when `seq` arrives.
    fn on(&mut self, seq: u64) -> Vec<u64> {
        if seq % 10 == 3 {
            self.dropped += 1;
            return Vec::new();
        }
        if seq % 13 == 1 && self.held.is_none() {
            self.held = Some(seq);
            return Vec::new();
        }
        let mut out = vec![seq];
        if seq % 7 == 5 {
            out.push(seq);
            self.duplicated += 1;
        }
        if let Some(h) = self.held.take() {
            out.push(h);
            self.released_late += 1;
        }
        out
    }
}

fn read_packet(s: &mut TcpStream, buf: &mut BytesMut) -> Option<Packet> {
    let mut tmp = [0u8; 65536];
    loop {
        match decode(buf, PROTOCOL_MAX_PACKET_SIZE) {
            Ok(Some(p)) => return Some(p),
            Ok(None) => {}
            Err(_) => return None,
        }
        let n = s.read(&mut tmp).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

fn write_packet(s: &mut TcpStream, p: &Packet) {
    let mut out = BytesMut::new();
    p.encode(&mut out).unwrap();
    let _ = s.write_all(&out);
}

fn relay(listener: TcpListener, faults: Arc<Mutex<Faults>>) {
    let subscriber: Arc<Mutex<Option<TcpStream>>> = Arc::new(Mutex::new(None));
    for conn in listener.incoming() {
        let Ok(mut s) = conn else { return };
        let subscriber = subscriber.clone();
        let faults = faults.clone();
        thread::spawn(move || {
            let _ = s.set_nodelay(true);
            let mut buf = BytesMut::new();
            let Some(Packet::Connect(c)) = read_packet(&mut s, &mut buf) else {
                return;
            };
            write_packet(
                &mut s,
                &Packet::ConnAck(ConnAck {
                    session_present: false,
                    code: ConnectReturnCode::Accepted,
                }),
            );
            // Client ids are "ab<8 hex digits><role><index>": role 's' or 'p'.
            let is_subscriber = c.client_id.get(10..11) == Some("s");
            while let Some(p) = read_packet(&mut s, &mut buf) {
                match p {
                    Packet::Subscribe(sub) if is_subscriber => {
                        write_packet(
                            &mut s,
                            &Packet::SubAck(SubAck {
                                packet_id: sub.packet_id,
                                return_codes: vec![SubscribeReturnCode::Success(QoS::AtMostOnce)],
                            }),
                        );
                        *subscriber.lock().unwrap() = s.try_clone().ok();
                    }
                    Packet::Publish(p) => {
                        let h = Header::read(&p.payload).unwrap();
                        let seqs = faults.lock().unwrap().on(h.seq);
                        let mut out = BytesMut::new();
                        for seq in seqs {
                            let payload = Header { seq, ..h }.to_payload(p.payload.len());
                            Packet::Publish(Publish {
                                dup: false,
                                qos: QoS::AtMostOnce,
                                retain: false,
                                topic: p.topic.clone(),
                                packet_id: None,
                                payload,
                            })
                            .encode(&mut out)
                            .unwrap();
                        }
                        if let Some(sub) = subscriber.lock().unwrap().as_mut() {
                            let _ = sub.write_all(&out);
                        }
                    }
                    Packet::PingReq => write_packet(&mut s, &Packet::PingResp),
                    Packet::Disconnect => return,
                    _ => {}
                }
            }
        });
    }
}

#[test]
fn loss_duplicates_and_reordering_are_counted_exactly() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let faults = Arc::new(Mutex::new(Faults::default()));
    let f2 = faults.clone();
    thread::spawn(move || relay(listener, f2));

    let r = Scenario::Pairs(Opts {
        url: format!("mqtt://{addr}"),
        n: Some(1),
        qos: 0,
        duration: 0.5,
        warmup: 0.1,
        drain: 3.0,
        threads: Some(1),
        quiet: true,
        ..Opts::default()
    })
    .run()
    .expect("run against the relay");

    let f = faults.lock().unwrap();
    let still_held = u64::from(f.held.is_some());
    assert!(r.expected > 100, "too few messages to mean anything: {r:?}");
    assert_eq!(r.lost, f.dropped + still_held, "{r:?}");
    assert_eq!(r.duplicated, f.duplicated, "{r:?}");
    assert_eq!(r.out_of_order, f.released_late, "{r:?}");
    assert!(f.dropped > 5 && f.duplicated > 5 && f.released_late > 5);
    assert_eq!(r.errors.foreign, 0);
}
