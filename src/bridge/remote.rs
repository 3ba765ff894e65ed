//! The remote side of one bridge: the `src/client` connection to the remote broker at the
//! bridge's `protocol_version` (with MQTT 5: the session's expiry and No Local), its
//! subscriptions, and the two threads that serve it: the receiver (the remote's messages to the
//! bridge's event channel) and the completer (a local acknowledgement once the remote has
//! acknowledged). What must not live here: routes and the loop guard (`run.rs`, `topics.rs`), the
//! local session (`local.rs`).

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use futures_lite::future::block_on;

use super::event::{Event, BACKOFF_MAX, TICK};
use super::local::LocalLink;
use super::wire::LocalPublish;
use crate::client::{
    ClientConfig, ClientError, ConnectOptions, MqttClient, PendingPublish, V5Options,
};
use crate::config::BridgeConfig;
use crate::protocol::v5::Properties;
use crate::protocol::{ProtocolLevel, QoS, SubscribeReturnCode, TopicFilter};

/// A forwarded message waiting for the remote's acknowledgement, and where to acknowledge it.
pub(super) type Completion = (PendingPublish, Arc<LocalLink>, LocalPublish);

/// The remote side while it exists.
pub(super) struct Remote {
    pub client: Arc<MqttClient>,
    /// Tells this connection's reports from an earlier one's.
    pub generation: u64,
    pub completions: flume::Sender<Completion>,
    pub completer: JoinHandle<()>,
}

impl Remote {
    /// Connects to the remote broker, subscribes to `filters` there, and starts the receiver and
    /// completer threads, which report on `events` as `generation`.
    pub(super) fn connect(
        config: &BridgeConfig,
        filters: &[(TopicFilter, QoS)],
        events: &flume::Sender<Event>,
        generation: u64,
    ) -> Result<Remote, ClientError> {
        let client_config = ClientConfig {
            keep_alive: config.keep_alive,
            auto_reconnect: true,
            reconnect_retries: -1,
            reconnect_max_interval: BACKOFF_MAX,
            connection_timeout: Duration::from_secs(10),
            clean_session: config.clean_session,
            check_hostname: !config.insecure,
            ..ClientConfig::default()
        };
        let client = Arc::new(MqttClient::new(
            Some(config.client_id.clone()),
            client_config,
        ));
        let options = ConnectOptions {
            ca_file: config.ca_file.clone(),
            cert_file: config.certfile.clone(),
            key_file: config.keyfile.clone(),
            protocol_version: Some(config.protocol),
            v5: if config.protocol == ProtocolLevel::V5 {
                v5_options(config)
            } else {
                V5Options::default()
            },
            ..ConnectOptions::default()
        };
        block_on(client.connect_with(&config.url, options))?;
        if !filters.is_empty() {
            let topics: Vec<(&str, QoS)> = filters.iter().map(|(f, q)| (f.as_str(), *q)).collect();
            let codes = block_on(client.subscribe(&topics))?;
            for ((filter, _), code) in filters.iter().zip(codes) {
                if code == SubscribeReturnCode::Failure {
                    log::warn!(
                        "bridge '{}': the remote refused the subscription to '{}'",
                        config.name,
                        filter.as_str()
                    );
                }
            }
        }
        let receiver = Arc::clone(&client);
        let to_bridge = events.clone();
        std::thread::Builder::new()
            .name(format!("amqtt-bridge-{}-in", config.name))
            .spawn(move || receive(&receiver, &to_bridge, generation))
            .map_err(|e| ClientError::Runtime(e.to_string()))?;
        let (completions, pending) = flume::unbounded::<Completion>();
        let to_bridge = events.clone();
        let completer = std::thread::Builder::new()
            .name(format!("amqtt-bridge-{}-out", config.name))
            .spawn(move || complete(&pending, &to_bridge, generation))
            .map_err(|e| ClientError::Runtime(e.to_string()))?;
        log::info!(
            "bridge '{}': connected to {}",
            config.name,
            redact(&config.url)
        );
        Ok(Remote {
            client,
            generation,
            completions,
            completer,
        })
    }
}

/// The remote receiver thread: hands every message to the bridge until the client ends.
fn receive(client: &MqttClient, events: &flume::Sender<Event>, generation: u64) {
    loop {
        match block_on(client.deliver_message(Some(TICK))) {
            Ok(delivery) => {
                if events.send(Event::Remote(delivery)).is_err() {
                    return;
                }
            }
            Err(ClientError::Timeout(_)) => {
                if events.is_disconnected() {
                    return;
                }
            }
            Err(error) => {
                let _ = events.send(Event::RemoteEnded(generation, error.to_string()));
                return;
            }
        }
    }
}

/// The completion thread: waits for the remote's acknowledgements in order and acknowledges
/// each message locally once the remote has.
fn complete(pending: &flume::Receiver<Completion>, events: &flume::Sender<Event>, generation: u64) {
    for (publish, link, original) in pending.iter() {
        match block_on(publish.wait()) {
            Ok(()) => {
                link.ack(&original);
                let _ = events.send(Event::Forwarded);
            }
            Err(ClientError::PublishFailed(failure)) => {
                // MQTT 5: the remote refused this message (PUBACK/PUBREC reason code) or its
                // limits rule it out; sending it again would not change that.
                log::warn!("bridge: a message for the remote is dropped: {failure}");
                link.ack(&original);
            }
            Err(error) => {
                let _ = events.send(Event::RemoteEnded(generation, error.to_string()));
            }
        }
    }
}

/// The remote client's MQTT 5 options: a persistent session (`clean_session: false`) lives on
/// after a disconnect (Session Expiry Interval "never", as MQTT 3.1.1's), a clean one ends with
/// the connection (0); and No Local on every subscription, so that the remote never hands back
/// what the bridge published there (it only publishes `out` messages there, which come back
/// only where a topic is bridged both ways).
fn v5_options(config: &BridgeConfig) -> V5Options {
    let expiry = if config.clean_session { 0 } else { u32::MAX };
    V5Options {
        connect_properties: Properties {
            session_expiry_interval: Some(expiry),
            ..Properties::default()
        },
        no_local: true,
        ..V5Options::default()
    }
}

/// The URL without its password, for logs.
pub(super) fn redact(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, rest)), Some(_)) => {
            let (credentials, host) = rest.rsplit_once('@').unwrap_or(("", rest));
            let user = credentials.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}")
        }
        _ => url.to_string(),
    }
}
