//! One bridge's thread: connects the remote client (`remote.rs`) and the local session
//! (`local.rs`), moves messages between them by its routes (`topics.rs`), reconnects with back-off,
//! and reports its state. Everything arrives on one event channel (the local reader, the remote
//! receiver thread, the completion thread, the stop request), so the bridge's state has one owner.
//!
//! Acknowledgements, `out`: a local QoS 1/2 message goes to the remote client, and its
//! [`PendingPublish`] with the local link to a completion thread that waits for the remote's
//! PUBACK / PUBCOMP, in order, and only then acknowledges it locally. `in`: the remote client
//! acknowledges on receipt (as `src/client` does); the bridge publishes the message here with a
//! packet id of its own and keeps it until this broker acknowledges it, sending it again after a
//! local reconnect.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures_lite::future::block_on;

use super::event::{Event, BACKOFF_MAX, TICK};
use super::local::{LocalEvent, LocalLink, LocalOptions};
use super::remote::{redact, Remote};
use super::topics::{LoopGuard, Routes};
use super::wire::LocalPublish;
use super::{BridgeStats, StateSink, DRAIN_WITHIN};
use crate::client::{ClientError, Delivery};
use crate::config::BridgeConfig;
use crate::protocol::{Message, ProtocolLevel, QoS};

/// First wait after a failed connection attempt; doubled up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_secs(1);

/// Everything a bridge thread starts with.
pub(super) struct Setup {
    pub config: BridgeConfig,
    pub local: SocketAddr,
    pub stats: Arc<BridgeStats>,
    pub state: StateSink,
}

struct Bridge {
    config: BridgeConfig,
    routes: Routes,
    local_options: LocalOptions,
    stats: Arc<BridgeStats>,
    state: StateSink,
    events: flume::Sender<Event>,
    inbox: flume::Receiver<Event>,
    remote: Option<Remote>,
    local: Option<Arc<LocalLink>>,
    generations: u64,
    /// Messages for this broker, by the packet id the bridge gave them, until acknowledged.
    inflight_in: BTreeMap<u16, LocalPublish>,
    next_id: u16,
    /// Messages for this broker while the local session is down.
    waiting_in: VecDeque<Message>,
    /// Copies published here / at the remote (for `both` at MQTT 3.1.1; MQTT 5 has No Local).
    local_echoes: LoopGuard,
    remote_echoes: LoopGuard,
    backoff: Duration,
    next_attempt: Instant,
    /// The state last published: connected, and why not.
    shown: Option<(bool, Option<String>)>,
    /// Why the bridge's last attempt to connect failed, until one succeeds (once the remote
    /// client exists, it reconnects by itself and knows why it is offline).
    failure: Option<String>,
}

/// Starts the bridge's thread; the sender stops it ([`Event::Stop`]).
pub(super) fn spawn(setup: Setup) -> std::io::Result<(flume::Sender<Event>, JoinHandle<()>)> {
    let (events, inbox) = flume::unbounded();
    let sender = events.clone();
    let thread = std::thread::Builder::new()
        .name(format!("amqtt-bridge-{}", setup.config.name))
        .spawn(move || match Routes::new(&setup.config.topics) {
            Ok(routes) => Bridge::new(setup, routes, events, inbox).run(),
            Err(reason) => log::error!("bridge '{}': {reason}", setup.config.name),
        })?;
    Ok((sender, thread))
}

impl Bridge {
    fn new(
        setup: Setup,
        routes: Routes,
        events: flume::Sender<Event>,
        inbox: flume::Receiver<Event>,
    ) -> Bridge {
        let config = setup.config;
        let local_options = LocalOptions {
            addr: setup.local,
            client_id: config.local_client_id.clone(),
            username: config.local_username.clone(),
            password: config.local_password.clone(),
            keep_alive: config.keep_alive,
            filters: routes.local_filters(),
            level: config.protocol,
        };
        Bridge {
            config,
            routes,
            local_options,
            stats: setup.stats,
            state: setup.state,
            events,
            inbox,
            remote: None,
            local: None,
            generations: 0,
            inflight_in: BTreeMap::new(),
            next_id: 1,
            waiting_in: VecDeque::new(),
            local_echoes: LoopGuard::default(),
            remote_echoes: LoopGuard::default(),
            backoff: BACKOFF_MIN,
            next_attempt: Instant::now(),
            shown: None,
            failure: None,
        }
    }

    fn run(mut self) {
        log::info!(
            "bridge '{}': to {} as '{}' (MQTT {}), local session '{}' via {}",
            self.config.name,
            redact(&self.config.url),
            self.config.client_id,
            if self.config.protocol == ProtocolLevel::V5 {
                "5"
            } else {
                "3.1.1"
            },
            self.config.local_client_id,
            self.local_options.addr
        );
        loop {
            if Instant::now() >= self.next_attempt {
                self.connect_missing();
            }
            self.show_state();
            let wait = if self.remote.is_some() && self.local.is_some() {
                TICK
            } else {
                self.next_attempt
                    .saturating_duration_since(Instant::now())
                    .min(TICK)
            };
            match self.inbox.recv_timeout(wait) {
                Ok(Event::Stop) | Err(flume::RecvTimeoutError::Disconnected) => break,
                Ok(event) => self.handle(event),
                Err(flume::RecvTimeoutError::Timeout) => {}
            }
        }
        self.shutdown();
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Local(LocalEvent::Message(link, publish)) => self.outbound(link, publish),
            Event::Local(LocalEvent::Done(id)) => {
                self.inflight_in.remove(&id);
            }
            Event::Local(LocalEvent::Closed(reason)) => {
                if self.local.as_ref().is_some_and(|l| l.is_closed()) {
                    log::warn!(
                        "bridge '{}': local session lost: {reason}",
                        self.config.name
                    );
                    self.local = None;
                    self.failed();
                }
            }
            Event::Remote(delivery) => self.inbound(delivery),
            Event::RemoteEnded(generation, reason) => {
                if self
                    .remote
                    .as_ref()
                    .is_some_and(|r| r.generation == generation)
                {
                    log::warn!(
                        "bridge '{}': remote client ended: {reason}",
                        self.config.name
                    );
                    self.drop_remote();
                    self.failed();
                }
            }
            Event::Forwarded => {
                self.stats.messages_out.fetch_add(1, Ordering::Relaxed);
            }
            Event::Stop => {}
        }
    }

    /// Connects whichever side is missing: the remote first, then the local session (which
    /// starts the flow of `out` messages, so it needs a remote to send them to).
    fn connect_missing(&mut self) {
        if self.remote.is_none() {
            match self.connect_remote() {
                Ok(remote) => self.remote = Some(remote),
                Err(error) => {
                    log::warn!(
                        "bridge '{}': cannot connect to {}: {error} (next attempt in {:?})",
                        self.config.name,
                        redact(&self.config.url),
                        self.backoff
                    );
                    self.failure = Some(format!("remote: {error}"));
                    self.failed();
                    return;
                }
            }
        }
        if self.local.is_none() {
            let events = self.events.clone();
            match LocalLink::connect(&self.local_options, events, Event::Local) {
                Ok(link) => {
                    self.local = Some(link);
                    self.resend_in();
                }
                Err(error) => {
                    log::warn!("bridge '{}': {error}", self.config.name);
                    self.failure = Some(format!("local: {error}"));
                    self.failed();
                    return;
                }
            }
        }
        self.failure = None;
        self.backoff = BACKOFF_MIN;
    }

    fn connect_remote(&mut self) -> Result<Remote, ClientError> {
        self.generations += 1;
        let filters = self.routes.remote_filters();
        Remote::connect(&self.config, &filters, &self.events, self.generations)
    }

    /// A connection attempt failed or a connection was lost: wait longer before the next.
    fn failed(&mut self) {
        let jitter = 0.8 + fastrand::f64() * 0.4;
        self.next_attempt = Instant::now() + self.backoff.mul_f64(jitter);
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    /// Drops the remote client, and with it the local session: the local broker sends the
    /// messages the remote never acknowledged again once the bridge is back.
    fn drop_remote(&mut self) {
        if let Some(local) = self.local.take() {
            local.close();
        }
        if let Some(remote) = self.remote.take() {
            let _ = block_on(remote.client.disconnect());
        }
    }

    /// Copies may come back and must be recognised: `both` (or overlapping) entries at MQTT
    /// 3.1.1. At MQTT 5 both sides subscribe with No Local and never hand a copy back.
    fn guards_loops(&self) -> bool {
        self.routes.two_way() && self.config.protocol != ProtocolLevel::V5
    }

    /// A message from the local session, for the remote broker.
    fn outbound(&mut self, link: Arc<LocalLink>, publish: LocalPublish) {
        let message = &publish.message;
        let now = Instant::now();
        if self.guards_loops() && self.local_echoes.is_echo(message, now) {
            self.stats.echoes_dropped.fetch_add(1, Ordering::Relaxed);
            link.ack(&publish);
            return;
        }
        let Some(out) = self.routes.outbound(message) else {
            link.ack(&publish);
            return;
        };
        let Some(remote) = &self.remote else {
            // Not acknowledged: the broker sends it again on the next local session.
            return;
        };
        if self.guards_loops() {
            self.remote_echoes.published(&out, now);
        }
        let properties = out.properties.map(Arc::unwrap_or_clone);
        let started = remote.client.start_publish_with(
            out.topic.as_str(),
            out.payload,
            Some(out.qos),
            Some(out.retain),
            properties.unwrap_or_default(),
        );
        match started {
            Ok(pending) => {
                let _ = remote.completions.send((pending, link, publish));
            }
            Err(error) => {
                let generation = remote.generation;
                self.handle(Event::RemoteEnded(generation, error.to_string()));
            }
        }
    }

    /// A message from the remote broker, for this one.
    fn inbound(&mut self, delivery: Delivery) {
        let now = Instant::now();
        let mut received = delivery.message;
        received.properties = delivery.properties.map(|p| Arc::new(*p));
        if self.guards_loops() && self.remote_echoes.is_echo(&received, now) {
            self.stats.echoes_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let Some(message) = self.routes.inbound(&received) else {
            return;
        };
        if self.guards_loops() {
            self.local_echoes.published(&message, now);
        }
        self.stats.messages_in.fetch_add(1, Ordering::Relaxed);
        self.waiting_in.push_back(message);
        self.send_waiting();
    }

    /// Publishes the waiting `in` messages on the local session, if there is one.
    fn send_waiting(&mut self) {
        let Some(link) = self.local.clone() else {
            return;
        };
        while let Some(message) = self.waiting_in.pop_front() {
            let packet_id = match message.qos {
                QoS::AtMostOnce => None,
                _ => match self.allocate_id() {
                    Some(id) => Some(id),
                    None => {
                        self.waiting_in.push_front(message);
                        return;
                    }
                },
            };
            let publish = LocalPublish {
                message,
                packet_id,
                dup: false,
            };
            let written = link.publish(&publish);
            if let Some(id) = packet_id {
                self.inflight_in.insert(id, publish);
            }
            if written.is_err() {
                // The reader reports the loss; what is in flight is sent again after it.
                return;
            }
        }
    }

    /// After a local reconnect: what this broker did not acknowledge, again (DUP), then the rest.
    fn resend_in(&mut self) {
        if let Some(link) = self.local.clone() {
            for publish in self.inflight_in.values() {
                let mut again = publish.clone();
                again.dup = true;
                if link.publish(&again).is_err() {
                    return;
                }
            }
        }
        self.send_waiting();
    }

    fn allocate_id(&mut self) -> Option<u16> {
        if self.inflight_in.len() >= usize::from(u16::MAX) {
            return None;
        }
        loop {
            let id = self.next_id;
            self.next_id = self.next_id.checked_add(1).unwrap_or(1);
            if !self.inflight_in.contains_key(&id) {
                return Some(id);
            }
        }
    }

    /// Publishes the state when it changed: connected means both sides are up; when not, the
    /// last failure to connect, if any (a refusal's reason code name, for one).
    fn show_state(&mut self) {
        let connected = self
            .remote
            .as_ref()
            .is_some_and(|r| r.client.is_connected())
            && self.local.as_ref().is_some_and(|l| !l.is_closed());
        let failure = match &self.remote {
            _ if connected => None,
            // The client reconnects by itself: its reason, if it has one.
            Some(remote) => match remote.client.offline_because() {
                Some(error) => Some(format!("remote: {error}")),
                None => self.failure.clone(),
            },
            None => self.failure.clone(),
        };
        let state = Some((connected, failure));
        if self.shown == state {
            return;
        }
        if self.shown.as_ref().map(|s| s.0) != Some(connected) {
            self.stats.connected.store(connected, Ordering::Relaxed);
            log::info!(
                "bridge '{}': {}",
                self.config.name,
                if connected {
                    "connected"
                } else {
                    "disconnected"
                }
            );
        }
        self.shown = state;
        if let Some((connected, failure)) = &self.shown {
            (self.state)(&self.config.name, *connected, failure.as_deref());
        }
    }

    /// Stops taking `out` messages, waits (at most [`DRAIN_WITHIN`] in all) for the remote to
    /// acknowledge what it has and for this broker to acknowledge the `in` messages, then closes
    /// both sides. What is not acknowledged by then stays in the local session (out) or is lost
    /// with the bridge's memory (in, already acknowledged to the remote).
    fn shutdown(mut self) {
        if let Some(remote) = self.remote.take() {
            let Remote {
                client,
                completions,
                completer,
                ..
            } = remote;
            drop(completions);
            // One deadline for both waits; none for the remote while it is away (what it has not
            // acknowledged stays unacknowledged in the local session, which the broker keeps).
            let deadline = Instant::now() + DRAIN_WITHIN;
            while !completer.is_finished() && client.is_connected() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            while !self.inflight_in.is_empty() && self.local.is_some() {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.inbox.recv_timeout(left) {
                    Ok(Event::Local(LocalEvent::Done(id))) => {
                        self.inflight_in.remove(&id);
                    }
                    Ok(Event::Local(LocalEvent::Closed(_))) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            if let Some(local) = self.local.take() {
                local.close();
            }
            let _ = block_on(client.disconnect());
        }
        if let Some(local) = self.local.take() {
            local.close();
        }
        self.stats.connected.store(false, Ordering::Relaxed);
        (self.state)(&self.config.name, false, None);
        log::info!("bridge '{}': stopped", self.config.name);
    }
}
