//! A `rumqttc` client for socket-level tests of the broker: connect (CONNACK checked), subscribe,
//! publish, and read what it received from a channel (`rumqttc_publishes.rs` drives its loop); and
//! `with_shards!`, which runs each test at 1 and 2 shards.

#![allow(dead_code)]

use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectReturnCode, Event, EventLoop, LastWill, MqttOptions, Packet, QoS,
};
use tokio::sync::mpsc;
use tokio::time::timeout;

/// A connected rumqttc client whose incoming PUBLISHes arrive on a channel.
pub struct Client {
    pub client: AsyncClient,
    pub publishes: mpsc::UnboundedReceiver<rumqttc::Publish>,
    pub task: tokio::task::JoinHandle<()>,
    pub session_present: bool,
}

pub async fn connect(
    addr: std::net::SocketAddr,
    id: &str,
    clean: bool,
    will: Option<LastWill>,
) -> Client {
    let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    options.set_clean_session(clean);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_inflight(100);
    if let Some(will) = will {
        options.set_last_will(will);
    }
    let (client, mut eventloop) = AsyncClient::new(options, 1000);
    let session_present = wait_connack(&mut eventloop).await;
    let (publishes, task) = super::rumqttc_publishes::forward_publishes(eventloop);
    Client {
        client,
        publishes,
        task,
        session_present,
    }
}

async fn wait_connack(eventloop: &mut EventLoop) -> bool {
    loop {
        match timeout(Duration::from_secs(5), eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) => {
                assert_eq!(ack.code, ConnectReturnCode::Success);
                return ack.session_present;
            }
            Ok(Ok(_)) => {}
            other => panic!("no CONNACK: {other:?}"),
        }
    }
}

impl Client {
    pub async fn subscribe(&self, filter: &str, qos: QoS) {
        self.client.subscribe(filter, qos).await.expect("subscribe");
    }

    pub async fn publish(&self, topic: &str, qos: QoS, retain: bool, payload: &str) {
        self.client
            .publish(topic, qos, retain, payload.as_bytes().to_vec())
            .await
            .expect("publish");
    }

    pub async fn next(&mut self) -> rumqttc::Publish {
        timeout(Duration::from_secs(5), self.publishes.recv())
            .await
            .expect("a publish within 5 s")
            .expect("event loop alive")
    }

    pub async fn nothing_within(&mut self, wait: Duration) {
        if let Ok(Some(p)) = timeout(wait, self.publishes.recv()).await {
            panic!("unexpected publish {p:?}");
        }
    }

    /// Drops the connection without DISCONNECT (as if the network failed).
    pub fn kill(self) {
        self.task.abort();
    }
}

/// Subscriptions are acknowledged before a publish is sent; settle gives the event loop time to
/// send SUBSCRIBE and receive SUBACK.
pub async fn settle() {
    tokio::time::sleep(Duration::from_millis(200)).await;
}

/// `with_shards!(test_a, test_b)`: each `async fn test_a(shards: usize)` of the file runs as a
/// test with 1 shard (`one_shard::test_a`) and with 2 (`two_shards::test_a`).
#[allow(unused_macros)]
macro_rules! with_shards {
    ($($name:ident),* $(,)?) => {
        mod one_shard {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(1).await })*
        }
        mod two_shards {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(2).await })*
        }
    };
}
#[allow(unused_imports)]
pub(crate) use with_shards;
