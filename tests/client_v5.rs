//! The client library at MQTT 5 against Mosquitto (started by each test on a free loopback port,
//! by `client_support`): properties both ways, the server's CONNACK (assigned client id, its
//! limits) and the client obeying those limits — Receive Maximum, Maximum QoS, Maximum Packet
//! Size — with the broker configured to announce them.

mod client_support;

use std::time::Duration;

use futures_lite::future::block_on;

use amqtt::client::{ClientConfig, ClientError, ConnectOptions, MqttClient, PublishFailure};
use amqtt::protocol::v5::{Properties, ReasonCode};
use amqtt::protocol::{ProtocolLevel, QoS};

use client_support::Mosquitto;

const WAIT: Option<Duration> = Some(Duration::from_secs(5));

fn v5() -> ConnectOptions {
    ConnectOptions {
        protocol_version: Some(ProtocolLevel::V5),
        ..ConnectOptions::default()
    }
}

fn connected(url: &str, id: Option<&str>) -> MqttClient {
    let client = MqttClient::new(id.map(String::from), ClientConfig::default());
    block_on(client.connect_with(url, v5())).expect("connect to mosquitto at MQTT 5");
    client
}

#[test]
fn properties_round_trip_and_the_broker_assigns_an_id() {
    let Some(mosquitto) = Mosquitto::start("properties_round_trip", "") else {
        return;
    };
    let url = mosquitto.url();
    let sub = connected(&url, Some(""));
    let assigned = sub.assigned_client_id().expect("an assigned client id");
    assert!(!assigned.is_empty());
    assert!(sub.server_properties().is_some());
    let publisher = connected(&url, None);
    block_on(async {
        sub.subscribe(&[("p5/#", QoS::AtLeastOnce)]).await.unwrap();
        let properties = Properties {
            user_properties: vec![("k".into(), "v".into())],
            content_type: Some("text/plain".into()),
            message_expiry_interval: Some(60),
            ..Properties::default()
        };
        publisher
            .publish_with("p5/a", "x", Some(QoS::AtLeastOnce), None, properties)
            .await
            .unwrap();
        let d = sub.deliver_message(WAIT).await.unwrap();
        let p = d.properties.expect("properties");
        assert_eq!(p.user_properties, vec![("k".into(), "v".into())]);
        assert_eq!(p.content_type.as_deref(), Some("text/plain"));
        assert!(p.message_expiry_interval.is_some_and(|e| e <= 60));
        // Topic Alias is the publisher's business, refused before anything is sent.
        let aliased = Properties {
            topic_alias: Some(1),
            ..Properties::default()
        };
        assert!(matches!(
            publisher.start_publish_with("p5/a", "x", None, None, aliased),
            Err(ClientError::Invalid { .. })
        ));
        publisher
            .disconnect_with(ReasonCode::SUCCESS, Properties::default())
            .await
            .unwrap();
        sub.disconnect().await.unwrap();
    });
}

#[test]
fn the_brokers_receive_maximum_is_obeyed() {
    // Mosquitto announces Receive Maximum 2 and refuses a QoS 2 PUBLISH past it with 0x97.
    let Some(mosquitto) = Mosquitto::start("receive_maximum", "max_inflight_messages 2") else {
        return;
    };
    let client = connected(&mosquitto.url(), Some("receive-max"));
    let server = client.server_properties().expect("CONNACK properties");
    assert_eq!(server.receive_maximum, Some(2));
    block_on(async {
        // 40 at once: never more than 2 unacknowledged, so none is refused.
        let pending: Vec<_> = (0..40)
            .map(|i| {
                client
                    .start_publish("rm/t", format!("{i}"), Some(QoS::ExactlyOnce), None)
                    .unwrap()
            })
            .collect();
        for p in pending {
            p.wait().await.expect("within the broker's Receive Maximum");
        }
        client.disconnect().await.unwrap();
    });
}

#[test]
fn the_brokers_qos_and_size_limits_fail_the_publish_only() {
    let Some(mosquitto) = Mosquitto::start("qos_and_size", "max_qos 1\nmax_packet_size 200") else {
        return;
    };
    let client = connected(&mosquitto.url(), Some("limits"));
    let server = client.server_properties().expect("CONNACK properties");
    assert_eq!(server.maximum_qos, Some(QoS::AtLeastOnce));
    assert_eq!(server.maximum_packet_size, Some(200));
    block_on(async {
        let too_high = client.publish("lim/t", "x", Some(QoS::ExactlyOnce), None);
        match too_high.await {
            Err(ClientError::PublishFailed(PublishFailure::NotAllowed(why))) => {
                assert!(why.contains("Maximum QoS"), "{why}")
            }
            other => panic!("QoS 2 above the broker's maximum: {other:?}"),
        }
        let too_big = client.publish("lim/t", vec![0u8; 300], Some(QoS::AtMostOnce), None);
        match too_big.await {
            Err(ClientError::PublishFailed(PublishFailure::NotAllowed(why))) => {
                assert!(why.contains("Maximum Packet Size 200"), "{why}")
            }
            other => panic!("a PUBLISH above the broker's maximum size: {other:?}"),
        }
        // The connection survived both refusals.
        client
            .publish("lim/t", "ok", Some(QoS::AtLeastOnce), None)
            .await
            .unwrap();
        assert!(client.is_connected());
        client.disconnect().await.unwrap();
    });
}
