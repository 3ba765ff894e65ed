//! The client's I/O: a mechanical loop that runs [`ClientState`] over a transport, on an
//! executor of its own thread, with auto-reconnect.
//!
//! One driver thread per connected [`MqttClient`](super::MqttClient). The user's side talks to it only
//! through channels that work from any executor (`flume`): commands in, replies and messages out.
//! Inside, one connection is served by two tasks:
//!
//! ```text
//!   reader task: socket ─► protocol::decode ─► local channel ─┐
//!   serve loop:  race(packet, command, deadline) ─► ClientState ─► events ─► replies / messages
//!                                                            └─► poll_transmit ─► encode ─► socket
//! ```
//!
//! Lifetimes: the driver owns the session state for as long as the thread lives; it ends when the
//! user disconnects, drops the client, or reconnecting is given up. On the way out every pending
//! waiter is failed, and the reason is left in [`Shared::ended`] for `deliver_message` and late
//! callers, so nobody waits on a driver that is gone.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_lite::future::{pending, race};
use futures_lite::io::{split, AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};

use crate::protocol::v5::{self, Properties, ReasonCode};
use crate::protocol::{
    decode, Message, Packet, SubscribeFilter, SubscribeReturnCode, TopicFilter,
    PROTOCOL_MAX_PACKET_SIZE,
};
use crate::transport::{connect_client, BrokerUrl, ClientStream, ClientTransportOptions};

use super::error::ClientError;
use super::state::{reconnect_delay, ClientState, Delivery, Event, Refusal, SessionOptions};

/// Where a request's result goes: a one-slot channel the caller awaits.
pub(crate) type Reply<T> = flume::Sender<Result<T, ClientError>>;

/// A request from the user's side.
pub(crate) enum Command {
    Publish {
        message: Message,
        /// MQTT 5 PUBLISH properties.
        properties: Option<Box<Properties>>,
        reply: Reply<()>,
    },
    Subscribe {
        filters: Vec<SubscribeFilter>,
        reply: Reply<Vec<SubscribeReturnCode>>,
    },
    Unsubscribe {
        filters: Vec<TopicFilter>,
        reply: Reply<()>,
    },
    Disconnect {
        /// MQTT 5 reason code and DISCONNECT properties.
        reason: ReasonCode,
        properties: Box<Properties>,
        reply: Reply<()>,
    },
}

/// State visible from the user's side without a round trip.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// CONNACK accepted and the connection not lost since.
    pub connected: AtomicBool,
    /// Why the driver stopped, once it has.
    pub ended: Mutex<Option<ClientError>>,
    /// The properties of the last MQTT 5 CONNACK that accepted a connection.
    pub connack: Mutex<Option<Properties>>,
    /// Why the connection was lost or the last reconnect attempt failed; cleared on a CONNACK
    /// that accepts.
    pub offline_because: Mutex<Option<ClientError>>,
}

impl Shared {
    /// The error for a caller whose reply channel closed: the driver's reason, or `fallback`.
    pub fn ended_or(&self, fallback: ClientError) -> ClientError {
        match self.ended.lock() {
            Ok(ended) => ended.clone().unwrap_or(fallback),
            Err(_) => fallback,
        }
    }

    fn set_ended(&self, error: ClientError) {
        if let Ok(mut ended) = self.ended.lock() {
            ended.get_or_insert(error);
        }
    }
}

/// Everything a driver needs, built by `MqttClient::connect`.
pub(crate) struct DriverSetup {
    pub url: BrokerUrl,
    pub transport: ClientTransportOptions,
    pub session: SessionOptions,
    pub auto_reconnect: bool,
    /// Negative: forever.
    pub reconnect_retries: i64,
    pub reconnect_max_interval: Duration,
    pub commands: flume::Receiver<Command>,
    pub messages: flume::Sender<Delivery>,
    pub shared: Arc<Shared>,
    /// Answered once: `Ok(session_present)` on the first CONNACK, or why the first attempt failed.
    pub connected: Reply<bool>,
}

/// Starts the driver thread.
/// The thread runs the runtime `AMQTT_RUNTIME` names (`auto` if unset: glommio where io_uring is
/// available, else the epoll one), as the broker does.
pub(crate) fn spawn(setup: DriverSetup) -> Result<shards::ExecutorThread<()>, ClientError> {
    let runtime = crate::config::runtime_from_env(shards::RuntimeChoice::Auto)
        .and_then(|choice| choice.resolve().map_err(|e| e.to_string()))
        .map_err(ClientError::Runtime)?;
    shards::rt::spawn_thread("amqtt-client", runtime, move || async move {
        Driver::new(setup).run().await
    })
    .map_err(|e| ClientError::Runtime(e.to_string()))
}

/// A request's waiter, as the state carries it.
enum Waiter {
    Publish(Reply<()>),
    Subscribe(Reply<Vec<SubscribeReturnCode>>),
    Unsubscribe(Reply<()>),
}

impl Waiter {
    fn fail(self, error: ClientError) {
        // A caller that stopped waiting is not an error.
        match self {
            Waiter::Publish(r) | Waiter::Unsubscribe(r) => {
                let _ = r.send(Err(error));
            }
            Waiter::Subscribe(r) => {
                let _ = r.send(Err(error));
            }
        }
    }
}

/// How serving one connection ended.
enum Ended {
    /// `disconnect()`: DISCONNECT written (when connected), socket closed.
    Disconnected,
    /// Every `MqttClient` handle is gone: close without DISCONNECT.
    ClientGone,
    /// Transport or protocol failure: reconnect if configured.
    Lost(ClientError),
}

/// A packet from the broker, at the connection's level.
enum Received {
    V3(Packet),
    /// Boxed: an MQTT 5 packet, with its properties, is several times an MQTT 3 one.
    V5(Box<v5::Packet>),
}

enum Wake {
    Packet(Option<Result<Received, ClientError>>),
    Command(Result<Command, flume::RecvError>),
    Timer,
}

struct Driver {
    url: BrokerUrl,
    transport: ClientTransportOptions,
    auto_reconnect: bool,
    reconnect_retries: i64,
    reconnect_max_interval: Duration,
    commands: flume::Receiver<Command>,
    messages: flume::Sender<Delivery>,
    shared: Arc<Shared>,
    state: ClientState<Waiter>,
    connect_reply: Option<Reply<bool>>,
    disconnect_reply: Option<Reply<()>>,
    /// Set by a Disconnect command: finish writing, then close.
    closing: bool,
    /// Limit for one write of the outbox (a peer that stopped reading must not hang us).
    write_timeout: Duration,
}

impl Driver {
    fn new(setup: DriverSetup) -> Self {
        let write_timeout = setup.session.connection_timeout;
        Driver {
            url: setup.url,
            transport: setup.transport,
            auto_reconnect: setup.auto_reconnect,
            reconnect_retries: setup.reconnect_retries,
            reconnect_max_interval: setup.reconnect_max_interval,
            commands: setup.commands,
            messages: setup.messages,
            shared: setup.shared,
            state: ClientState::new(setup.session),
            connect_reply: Some(setup.connected),
            disconnect_reply: None,
            closing: false,
            write_timeout,
        }
    }

    async fn run(mut self) {
        // Reconnect attempts since the last accepted connection.
        let mut attempts: u32 = 0;
        loop {
            let (ended, accepted) = match connect_client(&self.url, &self.transport).await {
                Ok(stream) => self.serve(stream).await,
                Err(error) => (Ended::Lost(error.into()), false),
            };
            self.state.handle_transport_down();
            self.shared.connected.store(false, Ordering::SeqCst);
            let error = match ended {
                Ended::Disconnected => return self.finish(ClientError::Disconnected),
                Ended::ClientGone => return self.finish(ClientError::Disconnected),
                Ended::Lost(error) => error,
            };
            if let Ok(mut because) = self.shared.offline_because.lock() {
                *because = Some(error.clone());
            }
            if let Some(reply) = self.connect_reply.take() {
                // The first connection never came up: `connect` reports it, nothing is retried.
                let _ = reply.send(Err(error.clone()));
                return self.finish(error);
            }
            if accepted {
                log::warn!("{}: {}", self.client_id(), error.clone().into_lost());
                attempts = 0;
            } else {
                log::warn!(
                    "{}: reconnect attempt {attempts} failed: {error}",
                    self.client_id()
                );
            }
            if !self.auto_reconnect {
                return self.finish(error.into_lost());
            }
            if self.reconnect_retries >= 0 && i64::from(attempts) >= self.reconnect_retries {
                return self.finish(ClientError::ReconnectFailed {
                    attempts,
                    last: error.to_string(),
                });
            }
            attempts = attempts.saturating_add(1);
            let delay = reconnect_delay(attempts, self.reconnect_max_interval);
            log::info!(
                "{}: reconnecting to {}:{} in {delay:?}",
                self.client_id(),
                self.url.host,
                self.url.port
            );
            if let Some(ended) = self.wait_offline(delay).await {
                let reason = match ended {
                    Ended::Lost(error) => error,
                    Ended::Disconnected | Ended::ClientGone => ClientError::Disconnected,
                };
                return self.finish(reason);
            }
        }
    }

    fn client_id(&self) -> &str {
        &self.state.options().client_id
    }

    /// The driver stops: fail whoever still waits, and leave the reason for late callers.
    fn finish(&mut self, reason: ClientError) {
        self.shared.set_ended(reason.clone());
        for waiter in self.state.take_waiters() {
            waiter.fail(reason.clone());
        }
        if let Some(reply) = self.connect_reply.take() {
            let _ = reply.send(Err(reason));
        }
        if let Some(reply) = self.disconnect_reply.take() {
            let _ = reply.send(Ok(()));
        }
        // Requests that raced with the end: their reply channels close, and the callers read
        // `shared.ended`.
        self.commands.drain().for_each(drop);
    }

    /// Serves one connection until it ends. The bool says whether CONNACK accepted it.
    async fn serve(&mut self, stream: ClientStream) -> (Ended, bool) {
        let (reader, mut writer) = split(stream);
        let (packets_tx, packets) = flume::bounded(64);
        // Dropping the task handle at the end of this function cancels the reader.
        let limit = match self
            .state
            .options()
            .v5
            .connect_properties
            .maximum_packet_size
        {
            Some(max) if self.state.is_v5() => (max as usize).min(PROTOCOL_MAX_PACKET_SIZE),
            _ => PROTOCOL_MAX_PACKET_SIZE,
        };
        let _reader =
            shards::rt::spawn(read_packets(reader, packets_tx, self.state.is_v5(), limit));
        self.state.handle_transport_up(Instant::now());
        let mut accepted = false;
        let mut out = BytesMut::new();
        let ended = loop {
            self.dispatch_events(&mut accepted);
            if let Err(error) = self.write_pending(&mut writer, &mut out).await {
                break Ended::Lost(error);
            }
            if self.closing {
                break Ended::Disconnected;
            }
            let deadline = self.state.poll_timeout();
            let wake = race(
                race(
                    async { Wake::Packet(packets.recv_async().await.ok()) },
                    async { Wake::Command(self.commands.recv_async().await) },
                ),
                async {
                    match deadline {
                        Some(at) => {
                            shards::rt::sleep(at.saturating_duration_since(Instant::now())).await
                        }
                        None => pending::<()>().await,
                    }
                    Wake::Timer
                },
            )
            .await;
            let now = Instant::now();
            match wake {
                Wake::Packet(Some(Ok(packet))) => {
                    let handled = match packet {
                        Received::V3(packet) => {
                            log_packet(self.client_id(), "received", packet.name(), &packet);
                            self.state.handle_packet(packet, now)
                        }
                        Received::V5(packet) => {
                            log_packet(self.client_id(), "received", packet.name(), &packet);
                            self.state.handle_packet_v5(*packet, now)
                        }
                    };
                    if let Err(error) = handled {
                        break Ended::Lost(error.into());
                    }
                }
                Wake::Packet(Some(Err(error))) => break Ended::Lost(error),
                Wake::Packet(None) => {
                    break Ended::Lost(ClientError::ConnectionLost("reader stopped".into()))
                }
                Wake::Command(Ok(command)) => self.handle_command(command, now),
                Wake::Command(Err(flume::RecvError::Disconnected)) => break Ended::ClientGone,
                Wake::Timer => {
                    if let Err(error) = self.state.handle_timeout(now) {
                        break Ended::Lost(error.into());
                    }
                }
            }
        };
        // Events produced by the last input (say, a refused CONNACK) still reach their waiters,
        // and a DISCONNECT it queued (MQTT 5: why we close) is still written.
        self.dispatch_events(&mut accepted);
        if let Err(error) = self.write_pending(&mut writer, &mut out).await {
            log::debug!("{}: {error}", self.client_id());
        }
        let close = race(async { writer.close().await.is_ok() }, async {
            shards::rt::sleep(Duration::from_secs(1)).await;
            false
        });
        if !close.await {
            log::debug!("{}: closing the socket did not finish", self.client_id());
        }
        (ended, accepted)
    }

    /// Between attempts: sleep for `delay` while still taking requests (they wait in the state).
    async fn wait_offline(&mut self, delay: Duration) -> Option<Ended> {
        let deadline = Instant::now() + delay;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            let woken = race(async { Some(self.commands.recv_async().await) }, async {
                shards::rt::sleep(deadline - now).await;
                None
            })
            .await;
            match woken {
                None => return None,
                Some(Err(flume::RecvError::Disconnected)) => return Some(Ended::ClientGone),
                Some(Ok(command)) => {
                    self.handle_command(command, Instant::now());
                    if self.closing {
                        return Some(Ended::Disconnected);
                    }
                }
            }
        }
    }

    fn handle_command(&mut self, command: Command, now: Instant) {
        let refused = match command {
            Command::Publish {
                message,
                properties,
                reply,
            } => self
                .state
                .publish_with(message, properties, Waiter::Publish(reply), now)
                .err(),
            Command::Subscribe { filters, reply } => self
                .state
                .subscribe(filters, Waiter::Subscribe(reply), now)
                .err(),
            Command::Unsubscribe { filters, reply } => self
                .state
                .unsubscribe(filters, Waiter::Unsubscribe(reply), now)
                .err(),
            Command::Disconnect {
                reason,
                properties,
                reply,
            } => {
                for waiter in self.state.disconnect_with(reason, *properties, now) {
                    waiter.fail(ClientError::Disconnected);
                }
                self.disconnect_reply = Some(reply);
                self.closing = true;
                None
            }
        };
        if let Some((waiter, refusal)) = refused {
            waiter.fail(match refusal {
                Refusal::Closed => ClientError::Disconnected,
                Refusal::NoPacketId => ClientError::TooManyInflight,
            });
        }
    }

    fn dispatch_events(&mut self, accepted: &mut bool) {
        while let Some(event) = self.state.poll_event() {
            match event {
                Event::Connected { session_present } => {
                    *accepted = true;
                    if self.state.is_v5() {
                        if let Ok(mut connack) = self.shared.connack.lock() {
                            *connack = Some(self.state.connack_properties().clone());
                        }
                    }
                    if let Ok(mut because) = self.shared.offline_because.lock() {
                        *because = None;
                    }
                    self.shared.connected.store(true, Ordering::SeqCst);
                    log::info!(
                        "{}: connected to {}:{} (session present: {session_present})",
                        self.client_id(),
                        self.url.host,
                        self.url.port
                    );
                    if let Some(reply) = self.connect_reply.take() {
                        let _ = reply.send(Ok(session_present));
                    }
                }
                Event::Message(message) => {
                    // The user may have stopped reading; that is not the broker's problem.
                    let _ = self.messages.send(message);
                }
                Event::Published(Waiter::Publish(reply)) => {
                    let _ = reply.send(Ok(()));
                }
                Event::PublishFailed(Waiter::Publish(reply), failure) => {
                    let _ = reply.send(Err(ClientError::PublishFailed(failure)));
                }
                Event::Subscribed(Waiter::Subscribe(reply), codes) => {
                    let _ = reply.send(Ok(codes));
                }
                Event::Unsubscribed(Waiter::Unsubscribe(reply)) => {
                    let _ = reply.send(Ok(()));
                }
                Event::Restored(results) => {
                    for (filter, code) in results {
                        match code {
                            SubscribeReturnCode::Success(qos) => log::info!(
                                "{}: re-subscribed to '{filter}' (QoS {})",
                                self.client_id(),
                                qos as u8
                            ),
                            SubscribeReturnCode::Failure => log::warn!(
                                "{}: the broker refused to restore the subscription to '{filter}'",
                                self.client_id()
                            ),
                        }
                    }
                }
                // The state hands back the waiter it was given, so these cannot happen.
                Event::Published(other)
                | Event::PublishFailed(other, _)
                | Event::Subscribed(other, _)
                | Event::Unsubscribed(other) => {
                    other.fail(ClientError::Protocol("internal: mismatched reply".into()));
                }
            }
        }
    }

    /// Encodes and writes whatever the state has queued.
    async fn write_pending(
        &mut self,
        writer: &mut WriteHalf<ClientStream>,
        out: &mut BytesMut,
    ) -> Result<(), ClientError> {
        // Everything is validated before it reaches the state, so encoding cannot fail.
        let cannot = |e| ClientError::Protocol(format!("cannot encode a packet: {e}"));
        while let Some(packet) = self.state.poll_transmit() {
            log_packet(self.client_id(), "sending", packet.name(), &packet);
            packet.encode(out).map_err(cannot)?;
        }
        while let Some(packet) = self.state.poll_transmit_v5() {
            log_packet(self.client_id(), "sending", packet.name(), &packet);
            packet.encode(out).map_err(cannot)?;
        }
        if out.is_empty() {
            return Ok(());
        }
        let limit = self.write_timeout;
        let write = async {
            writer.write_all(out).await?;
            writer.flush().await
        };
        let result = race(async { Some(write.await) }, async {
            shards::rt::sleep(limit).await;
            None
        })
        .await;
        out.clear();
        match result {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(ClientError::ConnectionLost(format!("write failed: {e}"))),
            None => Err(ClientError::ConnectionLost(format!(
                "the broker did not read for {limit:?}"
            ))),
        }
    }
}

/// One line per packet: its name at debug level (the CLIs' `-d`), the whole packet at trace
/// (CONNECT's `Debug` hides the password).
fn log_packet(client_id: &str, direction: &str, name: &str, packet: &dyn std::fmt::Debug) {
    if log::log_enabled!(log::Level::Trace) {
        log::trace!("{client_id}: {direction} {packet:?}");
    } else {
        log::debug!("{client_id}: {direction} {name}");
    }
}

/// The reader task: bytes in, packets out (MQTT 5 ones when `v5`, up to `limit` bytes each), then
/// one error saying why it stopped.
async fn read_packets(
    mut reader: ReadHalf<ClientStream>,
    packets: flume::Sender<Result<Received, ClientError>>,
    v5: bool,
    limit: usize,
) {
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut chunk = vec![0u8; 16 * 1024];
    let error = loop {
        loop {
            let decoded = if v5 {
                v5::decode(&mut buf, limit).map(|p| p.map(|p| Received::V5(Box::new(p))))
            } else {
                decode(&mut buf, limit).map(|p| p.map(Received::V3))
            };
            match decoded {
                Ok(Some(packet)) => {
                    if packets.send_async(Ok(packet)).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = packets
                        .send_async(Err(ClientError::Protocol(format!(
                            "undecodable data from the broker: {e}"
                        ))))
                        .await;
                    return;
                }
            }
        }
        match reader.read(&mut chunk).await {
            Ok(0) => break ClientError::ConnectionLost("the broker closed the connection".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => break ClientError::ConnectionLost(format!("read failed: {e}")),
        }
    };
    let _ = packets.send_async(Err(error)).await;
}
