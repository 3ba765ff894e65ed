//! Release-mode timing of the decode paths (not a pass/fail test: run with `--ignored
//! --nocapture`, it prints ns per packet): 1 M QoS 0 and QoS 1 PUBLISHes through `decode`, QoS 0
//! through `peek_publish` (the broker's in-place route), and the same PUBLISHes in their MQTT 5
//! form through `v5::decode`. Used to show MQTT 5 support did not slow MQTT 3:
//! `cargo test --release --test codec_timing -- --ignored --nocapture`. Each figure includes
//! copying the 1 M-packet stream once per pass.

use std::time::Instant;

use amqtt::protocol::{
    decode, peek_publish, v5, Packet, Publish, QoS, TopicName, PROTOCOL_MAX_PACKET_SIZE,
};
use bytes::{Bytes, BytesMut};

const N: usize = 1_000_000;

fn stream(qos: QoS, mqtt5: bool) -> BytesMut {
    let p = Publish {
        dup: false,
        qos,
        retain: false,
        topic: TopicName::new("sensors/kitchen/temperature").expect("valid"),
        packet_id: (qos != QoS::AtMostOnce).then_some(7),
        payload: Bytes::from_static(&[b'x'; 64]),
    };
    let mut one = BytesMut::new();
    if mqtt5 {
        let p = v5::Publish::new(
            p.into_message(),
            (qos != QoS::AtMostOnce).then_some(7),
            false,
        );
        v5::Packet::Publish(p).encode(&mut one).expect("encodes");
    } else {
        Packet::Publish(p).encode(&mut one).expect("encodes");
    }
    let mut all = BytesMut::with_capacity(one.len() * N);
    for _ in 0..N {
        all.extend_from_slice(&one);
    }
    all
}

fn best_of_5(mut run: impl FnMut() -> usize) -> f64 {
    (0..5)
        .map(|_| {
            let start = Instant::now();
            assert_eq!(run(), N);
            start.elapsed().as_nanos() as f64 / N as f64
        })
        .fold(f64::MAX, f64::min)
}

#[test]
#[ignore = "timing, run with --ignored in release"]
fn decode_ns_per_packet() {
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
        let all = stream(qos, false);
        let ns = best_of_5(|| {
            let mut buf = all.clone();
            let mut n = 0;
            while let Ok(Some(packet)) = decode(&mut buf, PROTOCOL_MAX_PACKET_SIZE) {
                std::hint::black_box(packet);
                n += 1;
            }
            n
        });
        println!("decode {qos:?}: {ns:.1} ns/packet");
        let all = stream(qos, true);
        let ns = best_of_5(|| {
            let mut buf = all.clone();
            let mut n = 0;
            while let Ok(Some(packet)) = v5::decode(&mut buf, PROTOCOL_MAX_PACKET_SIZE) {
                std::hint::black_box(packet);
                n += 1;
            }
            n
        });
        println!("v5::decode {qos:?}: {ns:.1} ns/packet");
    }
    let all = stream(QoS::AtMostOnce, false);
    let ns = best_of_5(|| {
        let mut at = 0;
        let mut n = 0;
        while let Some((p, len)) = peek_publish(&all[at..], PROTOCOL_MAX_PACKET_SIZE) {
            std::hint::black_box(p);
            at += len;
            n += 1;
        }
        n
    });
    println!("peek_publish AtMostOnce: {ns:.1} ns/packet");
}
