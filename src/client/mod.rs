//! The MQTT client (3.1, 3.1.1 and 5): aMQTT's `MQTTClient`, in Rust.
//!
//! - [`state`]: the sans-IO session (packet ids, QoS 1/2 flows both ways, in-flight window,
//!   pending SUBSCRIBE/UNSUBSCRIBE, keep-alive deadlines, re-sending after a reconnect). No I/O,
//!   no clock; unit-tested packet by packet.
//! - `driver`: runs the state over a transport from [`crate::transport::connect_client`] (so
//!   every scheme the transport knows, `mqtt`, `mqtts`, `ws`, `wss`, works here) on a shard-style
//!   executor of its own thread, and reconnects with capped exponential back-off.
//! - [`MqttClient`] (this file): the public API. Its methods are `async` over plain channels, so
//!   they work from any executor, or from none with `futures_lite::future::block_on`.
//! - [`config`]: aMQTT's client YAML. [`cli`]: what `amqtt_pub` and `amqtt_sub` share.
//!
//! ```no_run
//! # use amqtt::client::{ClientConfig, MqttClient};
//! # use amqtt::protocol::QoS;
//! # futures_lite::future::block_on(async {
//! let client = MqttClient::new(None, ClientConfig::default());
//! client.connect("mqtt://127.0.0.1:1883").await?;
//! client.subscribe(&[("sensors/#", QoS::AtLeastOnce)]).await?;
//! client.publish("sensors/t", "21.5", Some(QoS::AtLeastOnce), None).await?;
//! let delivery = client.deliver_message(Some(std::time::Duration::from_secs(5))).await?;
//! println!("{}: {:?}", delivery.message.topic, delivery.message.payload);
//! client.disconnect().await?;
//! # Ok::<(), amqtt::client::ClientError>(())
//! # });
//! ```
//!
//! Semantics worth knowing:
//! - `connect` makes one attempt and reports its failure (unreachable, refused with the CONNACK
//!   reason, no CONNACK in time). `auto_reconnect` applies once a connection has been accepted:
//!   when it is lost, the client retries with waits of 1 s, 2 s, 4 s, … capped at
//!   `reconnect_max_interval`, up to `reconnect_retries` times (negative: forever).
//! - While reconnecting, `publish`, `subscribe` and `unsubscribe` are accepted and wait. After the
//!   reconnect, unacknowledged QoS 1/2 messages are re-sent (DUP set) and, when the broker has no
//!   session for us (clean session, or a broker that lost it), the subscriptions are made again.
//! - Every waiting call ends: with success, or with a [`ClientError`] once the client gives up,
//!   `disconnect` is called, or the client is dropped.
//! - Received messages queue without limit until `deliver_message` takes them, as in aMQTT.
//! - Dropping a connected client closes the connection without DISCONNECT (the broker then
//!   publishes the will); call [`MqttClient::disconnect`] for a clean end.
//! - MQTT 5 ([`ConnectOptions::protocol_version`]): CONNECT, will and PUBLISH properties go out as
//!   given ([`V5Options`], [`MqttClient::publish_with`]), received properties come with each
//!   [`Delivery`], the broker's CONNACK limits (Receive Maximum, Maximum Packet Size, Topic Alias
//!   Maximum, Server Keep Alive, Maximum QoS, Retain Available) are obeyed, a refusal reports its
//!   reason code and Reason String, and a PUBACK/PUBREC failure code fails that publish only.

#![warn(missing_docs)]

pub mod cli;
pub mod cli_v5;
pub mod config;
mod connect_options;
mod driver;
mod error;
// The sans-IO layer names its fields as the specification does; documenting each is left for
// when its types settle (another branch is changing them).
#[allow(missing_docs)]
pub mod state;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_lite::future::race;

use crate::protocol::v5::{Kind, Properties, ReasonCode};
use crate::protocol::{Message, QoS, SubscribeFilter, SubscribeReturnCode, TopicFilter, TopicName};
use crate::transport::{BrokerUrl, ClientTransportOptions};

pub use config::{ClientConfig, ClientConfigError, ConnectionConfig, TopicDefaults};
pub use connect_options::ConnectOptions;
use connect_options::{check_properties, invalid, MAX_REMAINING_LENGTH};
pub use error::ClientError;
pub use state::{reason_name, Delivery, PublishFailure, V5Options};

use driver::{Command, DriverSetup, Shared};

/// An MQTT client. `Send + Sync`: share it (e.g. in an `Arc`) to publish from many tasks at once.
pub struct MqttClient {
    client_id: String,
    config: ClientConfig,
    /// The running driver, if any. A std mutex: it is held only to clone handles out, never across
    /// an `.await`.
    link: Mutex<Option<Link>>,
}

/// Handles on one driver thread.
struct Link {
    commands: flume::Sender<Command>,
    messages: flume::Receiver<Delivery>,
    shared: Arc<Shared>,
}

/// A publish on its way; [`wait`](Self::wait) for its QoS flow to complete.
#[must_use = "a publish is only known to be done when `wait` returns"]
pub struct PendingPublish {
    reply: flume::Receiver<Result<(), ClientError>>,
    shared: Arc<Shared>,
}

impl PendingPublish {
    /// Completes when the QoS flow does (QoS 0: written; 1: PUBACK; 2: PUBCOMP), or with the
    /// reason it never will.
    pub async fn wait(self) -> Result<(), ClientError> {
        match self.reply.recv_async().await {
            Ok(result) => result,
            Err(flume::RecvError::Disconnected) => {
                Err(self.shared.ended_or(ClientError::Disconnected))
            }
        }
    }
}

/// A fresh client id as aMQTT makes them: `amqtt/` and 16 random letters and digits.
pub fn random_client_id() -> String {
    let suffix: String = std::iter::repeat_with(fastrand::alphanumeric)
        .take(16)
        .collect();
    format!("amqtt/{suffix}")
}

impl MqttClient {
    /// A client that is not connected yet. Without `client_id`, one is generated
    /// ([`random_client_id`]).
    pub fn new(client_id: Option<String>, config: ClientConfig) -> Self {
        MqttClient {
            client_id: client_id.unwrap_or_else(random_client_id),
            config,
            link: Mutex::new(None),
        }
    }

    /// The client id sent in CONNECT (given to [`new`](Self::new), or generated).
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The configuration the client was made with.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The properties of the last MQTT 5 CONNACK that accepted a connection: the broker's limits,
    /// its Assigned Client Identifier, ...; `None` before one (and at MQTT 3).
    pub fn server_properties(&self) -> Option<Properties> {
        self.with_link(|link| link.shared.connack.lock().ok().and_then(|c| c.clone()))
            .flatten()
    }

    /// The client id the broker assigned (MQTT 5, when CONNECT's was empty).
    pub fn assigned_client_id(&self) -> Option<String> {
        self.server_properties()
            .and_then(|p| p.assigned_client_identifier)
    }

    /// While auto-reconnect is at work: why the connection was lost, or why the last attempt
    /// failed (a refusal with its reason code, for one); `None` while connected.
    pub fn offline_because(&self) -> Option<ClientError> {
        self.with_link(|link| {
            link.shared
                .offline_because
                .lock()
                .ok()
                .and_then(|e| e.clone())
        })
        .flatten()
    }

    /// Connected right now (CONNACK accepted, connection not lost since).
    pub fn is_connected(&self) -> bool {
        self.with_link(|link| link.shared.connected.load(Ordering::SeqCst))
            .unwrap_or(false)
    }

    /// Connects to `url` (`{mqtt|tcp|mqtts|ssl|tls|ws|wss}://[user[:password]@]host[:port][/path]`, e.g.
    /// `mqtt://localhost:1883`) with the config's settings. Returns CONNACK's session-present flag.
    pub async fn connect(&self, url: &str) -> Result<bool, ClientError> {
        self.connect_with(url, ConnectOptions::default()).await
    }

    /// [`connect_with`](Self::connect_with) to the config's `connection.uri`, or to
    /// [`config::DEFAULT_BROKER_URL`] (`mqtt://127.0.0.1:1883`) when it has none, as aMQTT's
    /// `connect()` without a URI.
    pub async fn connect_to_configured(
        &self,
        options: ConnectOptions,
    ) -> Result<bool, ClientError> {
        let url = self.config.connection.uri_or_default().to_string();
        self.connect_with(&url, options).await
    }

    /// [`connect`](Self::connect) with per-connection options.
    pub async fn connect_with(
        &self,
        url: &str,
        options: ConnectOptions,
    ) -> Result<bool, ClientError> {
        let url: BrokerUrl = url.parse()?;
        let session = self.session_options(&url, &options)?;
        let connection = &self.config.connection;
        // The certificate and its key come as a pair, from the options or from the config.
        let (cert_file, key_file) = if options.cert_file.is_some() || options.key_file.is_some() {
            (options.cert_file, options.key_file)
        } else {
            (connection.certfile.clone(), connection.keyfile.clone())
        };
        let transport = ClientTransportOptions {
            ca_file: options.ca_file.or_else(|| connection.cafile.clone()),
            ca_path: options.ca_path.or_else(|| connection.capath.clone()),
            ca_data: options.ca_data.or_else(|| connection.cadata.clone()),
            cert_file,
            key_file,
            skip_hostname_check: !options.check_hostname.unwrap_or(self.config.check_hostname),
            skip_cert_verification: !self.config.verify_cert,
            extra_headers: options.extra_headers,
            connect_timeout: Some(self.config.connection_timeout),
        };
        let (commands_tx, commands) = flume::unbounded();
        let (messages, messages_rx) = flume::unbounded();
        let (connected, connected_rx) = flume::bounded(1);
        let shared = Arc::new(Shared::default());
        {
            let mut link = self.lock_link();
            if link.as_ref().is_some_and(|l| !l.commands.is_disconnected()) {
                return Err(ClientError::AlreadyConnected);
            }
            driver::spawn(DriverSetup {
                url,
                transport,
                session,
                auto_reconnect: self.config.auto_reconnect,
                reconnect_retries: self.config.reconnect_retries,
                reconnect_max_interval: self.config.reconnect_max_interval,
                commands,
                messages,
                shared: Arc::clone(&shared),
                connected,
            })?;
            *link = Some(Link {
                commands: commands_tx,
                messages: messages_rx,
                shared: Arc::clone(&shared),
            });
        }
        let result = match connected_rx.recv_async().await {
            Ok(result) => result,
            Err(flume::RecvError::Disconnected) => {
                Err(shared.ended_or(ClientError::Runtime("the I/O thread stopped".into())))
            }
        };
        if result.is_err() {
            // Forget the failed driver, unless someone else has replaced it meanwhile.
            let mut link = self.lock_link();
            if link
                .as_ref()
                .is_some_and(|l| Arc::ptr_eq(&l.shared, &shared))
            {
                *link = None;
            }
        }
        result
    }

    /// Starts publishing and returns at once; many publishes may be in flight together. `qos` and
    /// `retain` default to the `topics:` entry for `topic`, else `default_qos` / `default_retain`.
    pub fn start_publish(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
        qos: Option<QoS>,
        retain: Option<bool>,
    ) -> Result<PendingPublish, ClientError> {
        self.start_publish_with(topic, payload, qos, retain, Properties::default())
    }

    /// [`start_publish`](Self::start_publish) with MQTT 5 PUBLISH properties (user properties,
    /// message expiry, content type, response topic, correlation data, payload format). Topic
    /// Alias and Subscription Identifier are not the caller's to set; on an MQTT 3 connection the
    /// properties are not sent.
    pub fn start_publish_with(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
        qos: Option<QoS>,
        retain: Option<bool>,
        properties: Properties,
    ) -> Result<PendingPublish, ClientError> {
        if properties.topic_alias.is_some() || !properties.subscription_identifiers.is_empty() {
            return Err(invalid(
                "PUBLISH properties",
                "",
                "topic alias and subscription identifier are not set by the publisher",
            ));
        }
        check_properties(&properties, Kind::Publish, "PUBLISH properties")?;
        let name = TopicName::new(topic)
            .map_err(|e| ClientError::invalid_topic("topic name", topic, e))?;
        let payload = payload.into();
        if 2 + topic.len() + 2 + payload.len() > MAX_REMAINING_LENGTH {
            return Err(invalid(
                "payload",
                &format!("{} bytes", payload.len()),
                "too large for one MQTT packet",
            ));
        }
        let defaults = self.config.publish_defaults(topic);
        let message = Message {
            topic: name,
            payload,
            qos: qos.unwrap_or(defaults.qos),
            retain: retain.unwrap_or(defaults.retain),
            properties: None,
        };
        let (reply, reply_rx) = flume::bounded(1);
        let properties = (!properties.is_empty()).then(|| Box::new(properties));
        let shared = self.send(Command::Publish {
            message,
            properties,
            reply,
        })?;
        Ok(PendingPublish {
            reply: reply_rx,
            shared,
        })
    }

    /// Publishes and waits until the QoS flow completes.
    pub async fn publish(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
        qos: Option<QoS>,
        retain: Option<bool>,
    ) -> Result<(), ClientError> {
        self.start_publish(topic, payload, qos, retain)?
            .wait()
            .await
    }

    /// [`publish`](Self::publish) with MQTT 5 PUBLISH properties (see
    /// [`start_publish_with`](Self::start_publish_with)).
    pub async fn publish_with(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
        qos: Option<QoS>,
        retain: Option<bool>,
        properties: Properties,
    ) -> Result<(), ClientError> {
        self.start_publish_with(topic, payload, qos, retain, properties)?
            .wait()
            .await
    }

    /// Subscribes; returns the broker's return code for each filter, in order.
    pub async fn subscribe<S: AsRef<str>>(
        &self,
        topics: &[(S, QoS)],
    ) -> Result<Vec<SubscribeReturnCode>, ClientError> {
        if topics.is_empty() {
            return Err(invalid(
                "subscription",
                "",
                "at least one topic filter is needed",
            ));
        }
        let filters = topics
            .iter()
            .map(|(f, qos)| {
                let f = f.as_ref();
                TopicFilter::new(f)
                    .map(|filter| SubscribeFilter { filter, qos: *qos })
                    .map_err(|e| ClientError::invalid_topic("topic filter", f, e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (reply, reply_rx) = flume::bounded(1);
        let shared = self.send(Command::Subscribe { filters, reply })?;
        wait_reply(reply_rx, &shared).await
    }

    /// Unsubscribes; completes on UNSUBACK.
    pub async fn unsubscribe<S: AsRef<str>>(&self, filters: &[S]) -> Result<(), ClientError> {
        if filters.is_empty() {
            return Err(invalid(
                "unsubscription",
                "",
                "at least one topic filter is needed",
            ));
        }
        let filters = filters
            .iter()
            .map(|f| {
                TopicFilter::new(f.as_ref())
                    .map_err(|e| ClientError::invalid_topic("topic filter", f.as_ref(), e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (reply, reply_rx) = flume::bounded(1);
        let shared = self.send(Command::Unsubscribe { filters, reply })?;
        wait_reply(reply_rx, &shared).await
    }

    /// The next received message, waiting at most `timeout` (`None`: as long as the client lives).
    /// Messages received before a failure are still delivered; then the failure is returned.
    pub async fn deliver_message(
        &self,
        timeout: Option<Duration>,
    ) -> Result<Delivery, ClientError> {
        let (messages, shared) = self
            .with_link(|link| (link.messages.clone(), Arc::clone(&link.shared)))
            .ok_or(ClientError::NotConnected)?;
        let receive = async {
            messages
                .recv_async()
                .await
                .map_err(|_| shared.ended_or(ClientError::NotConnected))
        };
        match timeout {
            None => receive.await,
            Some(limit) => {
                race(receive, async {
                    futures_timer::Delay::new(limit).await;
                    Err(ClientError::Timeout(limit))
                })
                .await
            }
        }
    }

    /// Sends DISCONNECT after everything already queued and closes the connection; the broker
    /// then discards the will. Calls still waiting fail with [`ClientError::Disconnected`].
    /// Disconnecting a client that is not connected does nothing.
    pub async fn disconnect(&self) -> Result<(), ClientError> {
        self.disconnect_with(ReasonCode::SUCCESS, Properties::default())
            .await
    }

    /// [`disconnect`](Self::disconnect) with an MQTT 5 reason code (0x04: the broker publishes
    /// the will all the same) and DISCONNECT properties (Session Expiry Interval, Reason String,
    /// User Properties). An MQTT 3 connection sends a plain DISCONNECT.
    pub async fn disconnect_with(
        &self,
        reason: ReasonCode,
        properties: Properties,
    ) -> Result<(), ClientError> {
        check_properties(&properties, Kind::Disconnect, "DISCONNECT properties")?;
        let Some(link) = self.lock_link().take() else {
            return Ok(());
        };
        let (reply, reply_rx) = flume::bounded(1);
        let command = Command::Disconnect {
            reason,
            properties: Box::new(properties),
            reply,
        };
        if link.commands.send(command).is_err() {
            // The driver had already stopped.
            return Ok(());
        }
        match reply_rx.recv_async().await {
            Ok(result) => result,
            Err(flume::RecvError::Disconnected) => Ok(()),
        }
    }

    // -- internals --------------------------------------------------------------------------------

    fn lock_link(&self) -> std::sync::MutexGuard<'_, Option<Link>> {
        // A panic while holding this lock cannot leave `Link` half-updated: recover the guard.
        self.link
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn with_link<T>(&self, f: impl FnOnce(&Link) -> T) -> Option<T> {
        self.lock_link().as_ref().map(f)
    }

    /// Hands a command to the driver; returns the driver's shared state for error reporting.
    fn send(&self, command: Command) -> Result<Arc<Shared>, ClientError> {
        let (commands, shared) = self
            .with_link(|link| (link.commands.clone(), Arc::clone(&link.shared)))
            .ok_or(ClientError::NotConnected)?;
        commands
            .send(command)
            .map_err(|_| shared.ended_or(ClientError::NotConnected))?;
        Ok(shared)
    }
}

async fn wait_reply<T>(
    reply: flume::Receiver<Result<T, ClientError>>,
    shared: &Shared,
) -> Result<T, ClientError> {
    match reply.recv_async().await {
        Ok(result) => result,
        Err(flume::RecvError::Disconnected) => Err(shared.ended_or(ClientError::Disconnected)),
    }
}
