//! A `rumqttc` subscriber that remembers the latest payload of every topic it hears, and waits
//! for a `$SYS` topic's value to satisfy a condition.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet};
use tokio::sync::mpsc;
use tokio::time::timeout;

// ---- a subscriber that remembers the latest payload of every topic -----------------------------

pub(super) struct Watcher {
    pub(super) client: AsyncClient,
    pub(super) publishes: mpsc::UnboundedReceiver<rumqttc::Publish>,
    latest: HashMap<String, String>,
    _task: tokio::task::JoinHandle<()>,
}

pub(super) async fn connect(addr: SocketAddr, id: &str) -> Watcher {
    let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    options.set_inflight(100);
    let (client, mut eventloop) = AsyncClient::new(options, 1000);
    loop {
        match timeout(Duration::from_secs(5), eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => break,
            Ok(Ok(_)) => {}
            other => panic!("no CONNACK: {other:?}"),
        }
    }
    let (publishes, task) = super::common::rumqttc_publishes::forward_publishes(eventloop);
    Watcher {
        client,
        publishes,
        latest: HashMap::new(),
        _task: task,
    }
}

impl Watcher {
    /// Waits until `topic`'s latest payload satisfies `ok`; returns it.
    pub(super) async fn wait_for(&mut self, topic: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(value) = self.latest.get(topic) {
                if ok(value) {
                    return value.clone();
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match timeout(left, self.publishes.recv()).await {
                Ok(Some(p)) => {
                    let payload = String::from_utf8_lossy(&p.payload).into_owned();
                    self.latest.insert(p.topic.clone(), payload);
                }
                _ => panic!(
                    "{topic} never satisfied the condition; last value {:?}",
                    self.latest.get(topic)
                ),
            }
        }
    }

    pub(super) async fn number(&mut self, topic: &str, ok: impl Fn(f64) -> bool) -> f64 {
        let text = self
            .wait_for(topic, |v| v.parse::<f64>().is_ok_and(&ok))
            .await;
        text.parse().unwrap_or(f64::NAN)
    }
}
