//! Which ACL table governs what, over real sockets at 1 and 2 shards: `acl` alone confines
//! publishing too (QoS 0/1/2, retained, wills), `receive-acl` limits what a subscriber on `#`
//! receives (retained messages after SUBACK included), and `%u`/`%c` entries. Each test also
//! checks that the allowed messages do arrive, so a broker that drops everything fails.

use super::*;
use amqtt::protocol::{PubComp, PubRec, PubRel};
use common::id_on_shard;

/// `acl` and nothing else: the configuration of the security report (issue #22).
const ACL_ONLY: &str = "topic-check:
  enabled: true
  plugins: [topic_acl]
  acl:
    alice: ['alice/#']
    observer: ['#']
    carol: ['users/%u/#', 'clients/%c/#']
";

const RECEIVE_ACL: &str = "topic-check:
  enabled: true
  plugins: [topic_acl]
  receive-acl:
    dave: ['news/#', 'users/%u/#']
    observer: ['#']
";

/// A PUBLISH at any QoS, its acknowledgement flow completed (QoS 2: PUBREC, PUBREL, PUBCOMP).
fn publish_acked(client: &mut RawClient, topic: &str, body: &str, qos: QoS, retain: bool, id: u16) {
    publish(client, topic, body, qos, retain, id);
    if qos == QoS::ExactlyOnce {
        assert_eq!(
            client.recv(),
            Some(Packet::PubRec(PubRec { packet_id: id }))
        );
        client.send(&Packet::PubRel(PubRel { packet_id: id }));
        assert_eq!(
            client.recv(),
            Some(Packet::PubComp(PubComp { packet_id: id }))
        );
    }
}

/// Every PUBLISH that arrives until none comes for `quiet`: (topic, payload).
fn received(client: &mut RawClient, quiet: Duration) -> Vec<(String, String)> {
    std::iter::from_fn(|| next_publish(client, quiet))
        .map(|p| (p.topic.as_str().to_string(), payload(&p)))
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(t, p)| (t.to_string(), p.to_string()))
        .collect()
}

/// A client of `user` whose client id lives on shard `shard % shards` (distinct ids for distinct
/// `shard`, also at one shard).
fn user_on(addr: SocketAddr, user: &str, shard: usize, shards: usize) -> RawClient {
    let id = id_on_shard(&format!("{user}{shard}"), shard % shards, shards);
    expect_connack(
        addr,
        login(&id, Some(user), None),
        ConnectReturnCode::Accepted,
    )
}

#[test]
fn acl_alone_confines_publishing_at_every_qos_retained_and_will() {
    let _serial = serial();
    for shards in [1, 2] {
        let (_broker, addr) = start(ACL_ONLY, shards);
        let mut observer = user_on(addr, "observer", 0, shards);
        assert_eq!(
            subscribe(&mut observer, &[("#", QoS::AtLeastOnce)]),
            [SubscribeReturnCode::Success(QoS::AtLeastOnce)]
        );
        let mut alice = user_on(addr, "alice", 1, shards);
        let qos = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];
        for (i, &q) in qos.iter().enumerate() {
            let id = i as u16 + 1;
            // Outside her list: acknowledged all the same, then dropped.
            publish_acked(&mut alice, "bob/x", "forged", q, false, id);
            publish_acked(&mut alice, "bob/r", "forged-retained", q, true, id + 10);
            publish_acked(&mut alice, &format!("alice/{i}"), "ok", q, false, id + 20);
        }
        publish_acked(&mut alice, "alice/r", "kept", QoS::AtLeastOnce, true, 40);
        assert_eq!(
            received(&mut observer, Duration::from_millis(500)),
            pairs(&[
                ("alice/0", "ok"),
                ("alice/1", "ok"),
                ("alice/2", "ok"),
                ("alice/r", "kept")
            ]),
            "{shards} shard(s)"
        );
        // Retained: only the allowed one.
        let mut late = user_on(addr, "observer", 1, shards);
        subscribe(&mut late, &[("#", QoS::AtMostOnce)]);
        assert_eq!(
            received(&mut late, Duration::from_millis(500)),
            pairs(&[("alice/r", "kept")])
        );
        // Wills: the one outside her list is not published, the other one is.
        for (n, topic) in [(0, "bob/will"), (1, "alice/will")] {
            let id = id_on_shard(&format!("w{n}"), n % shards, shards);
            let mut connect = login(&id, Some("alice"), None);
            connect.will = Some(LastWill {
                topic: TopicName::new(topic).expect("topic"),
                payload: Bytes::from_static(b"gone"),
                qos: QoS::AtLeastOnce,
                retain: true,
                properties: None,
            });
            drop(expect_connack(addr, connect, ConnectReturnCode::Accepted));
        }
        assert_eq!(
            received(&mut observer, Duration::from_millis(800)),
            pairs(&[("alice/will", "gone")])
        );
        // Subscribing is governed by the same list.
        assert_eq!(
            subscribe(
                &mut alice,
                &[("alice/#", QoS::AtMostOnce), ("bob/#", QoS::AtMostOnce)]
            ),
            [
                SubscribeReturnCode::Success(QoS::AtMostOnce),
                SubscribeReturnCode::Failure
            ]
        );
    }
}

#[test]
fn user_and_client_id_placeholders_confine_publishing() {
    let _serial = serial();
    for shards in [1, 2] {
        let (_broker, addr) = start(ACL_ONLY, shards);
        let mut observer = user_on(addr, "observer", 0, shards);
        subscribe(&mut observer, &[("#", QoS::AtLeastOnce)]);
        let mut carol = expect_connack(
            addr,
            login("carol-1", Some("carol"), None),
            ConnectReturnCode::Accepted,
        );
        for (i, topic) in [
            "users/carol/a",
            "users/dave/a",
            "clients/carol-1/b",
            "clients/carol-2/b",
        ]
        .into_iter()
        .enumerate()
        {
            publish_acked(
                &mut carol,
                topic,
                "c",
                QoS::AtLeastOnce,
                false,
                i as u16 + 1,
            );
        }
        assert_eq!(
            received(&mut observer, Duration::from_millis(500)),
            pairs(&[("users/carol/a", "c"), ("clients/carol-1/b", "c")])
        );
        assert_eq!(
            subscribe(
                &mut carol,
                &[
                    ("users/carol/#", QoS::AtMostOnce),
                    ("users/+/x", QoS::AtMostOnce),
                    ("clients/carol-1/+", QoS::AtMostOnce)
                ]
            ),
            [
                SubscribeReturnCode::Success(QoS::AtMostOnce),
                SubscribeReturnCode::Failure,
                SubscribeReturnCode::Success(QoS::AtMostOnce)
            ]
        );
    }
}

#[test]
fn receive_acl_limits_what_a_subscriber_on_hash_receives() {
    let _serial = serial();
    for shards in [1, 2] {
        let (_broker, addr) = start(RECEIVE_ACL, shards);
        let mut publisher = user_on(addr, "observer", 0, shards);
        publish_acked(&mut publisher, "news/old", "r1", QoS::AtLeastOnce, true, 1);
        publish_acked(
            &mut publisher,
            "sports/old",
            "r2",
            QoS::AtLeastOnce,
            true,
            2,
        );
        // Subscribing to `#` is allowed (no acl); what arrives is not, retained ones included.
        let mut dave = user_on(addr, "dave", 1, shards);
        assert_eq!(
            subscribe(&mut dave, &[("#", QoS::AtLeastOnce)]),
            [SubscribeReturnCode::Success(QoS::AtLeastOnce)]
        );
        assert_eq!(
            received(&mut dave, Duration::from_millis(500)),
            pairs(&[("news/old", "r1")])
        );
        let mut observer = user_on(addr, "observer", 1, shards);
        subscribe(&mut observer, &[("#", QoS::AtLeastOnce)]);
        assert_eq!(received(&mut observer, Duration::from_millis(500)).len(), 2);
        let mut stranger = user_on(addr, "eve", 0, shards);
        subscribe(&mut stranger, &[("#", QoS::AtLeastOnce)]);
        let qos = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];
        for (i, &q) in qos.iter().enumerate() {
            let id = i as u16 + 10;
            publish_acked(&mut publisher, "news/a", "n", q, false, id);
            publish_acked(&mut publisher, "sports/b", "s", q, false, id + 10);
            publish_acked(&mut publisher, "users/dave/c", "u", q, false, id + 20);
            publish_acked(&mut publisher, "users/bob/d", "b", q, false, id + 30);
        }
        let got = received(&mut dave, Duration::from_millis(500));
        let want: Vec<_> = (0..3)
            .flat_map(|_| [("news/a", "n"), ("users/dave/c", "u")])
            .collect();
        assert_eq!(got, pairs(&want), "{shards} shard(s)");
        // The observer's list allows everything: all twelve arrive.
        assert_eq!(
            received(&mut observer, Duration::from_millis(500)).len(),
            12
        );
        // A user the receive-acl does not list receives nothing.
        assert!(received(&mut stranger, Duration::from_millis(300)).is_empty());
    }
}
