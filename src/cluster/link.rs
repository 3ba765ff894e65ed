//! The cluster link's loop: one more participant on this node's bus, at index `shards`. It
//! reads what the local shards send it (their interest, the publishes and retained updates
//! other nodes want, durability confirmations) and what NATS brings (other nodes' interest and
//! publishes, retained updates), and passes each on. One thread, a current-thread tokio runtime:
//! nothing else in the broker runs tokio, and the shards never wait on this thread except for
//! the SUBACKs and PUBACKs that must (see the README's "Cluster" section).
//!
//! What must not live here: MQTT rules (the shards apply them), bookkeeping that needs no I/O
//! (`interest.rs`, `confirm.rs`), the wire format (`wire.rs`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use async_nats::jetstream;
use async_nats::{Event, HeaderMap};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::broker::{BusMessage, DeliveryStamp, PublishBatch};
use crate::protocol::{QoS, TopicFilter};

use super::confirm::{Confirmations, Incoming};
use super::interest::ClusterInterest;
use super::nats::{self, Feeds, Handles, Nats};
use super::stats::ClusterStats;
use super::wire::{self, Change, Names};
use super::{LinkPort, VERSION_SHARDS};

/// What a task of the link reports back to its loop.
pub(super) enum Done {
    /// A mailbox batch is stored in JetStream: its stamps are confirmed.
    Stored(Vec<(usize, u64)>),
    /// Another node's whole interest.
    Snapshot(String, Result<(u64, u64, Vec<TopicFilter>), String>),
    /// The live nodes' bucket, read.
    Live(Result<Vec<(String, String)>, String>),
    /// NATS set up (or not yet).
    Ready(Result<Box<Nats>, String>),
}

/// One message for a JetStream stream: subject, payload, de-duplication id, and the stamps
/// confirmed once it is stored.
struct Stored {
    subject: String,
    payload: Bytes,
    id: Option<String>,
    stamps: Vec<(usize, u64)>,
    /// Publishes in the batch (for the counters; 0 for a retained update).
    messages: usize,
}

/// Most bytes of QoS 1/2 batches for other nodes kept while NATS is away when no publisher waits
/// for them (persistence off); beyond it they are dropped and counted. With persistence on the
/// publishers wait instead (their PUBACKs), so nothing is dropped.
const MAX_UNCONFIRMED_BYTES: usize = 64 << 20;

/// This node's delta waiting for the other nodes' acknowledgements, with the SUBACKs behind it.
struct PendingDelta {
    seq: u64,
    tokens: Vec<(usize, u64)>,
    deadline: Instant,
}

/// Another node's delta, applied here, waiting for the local shards to confirm it.
struct RemoteAck {
    node: String,
    seq: u64,
    remaining: usize,
}

pub(super) struct Link<M> {
    port: LinkPort<M>,
    config: crate::config::ClusterConfig,
    names: Names,
    /// This run's id: in the liveness entry and every delta.
    boot: u64,
    /// Other nodes' deltas that waited for a snapshot: acknowledged once it is applied.
    after_snapshot: HashMap<String, u64>,
    interest: ClusterInterest,
    nats: Option<Handles>,
    connected: bool,
    done_tx: mpsc::UnboundedSender<Done>,
    /// JetStream, once NATS is set up: what the sender tasks wait for.
    js: tokio::sync::watch::Sender<Option<jetstream::Context>>,
    /// A sender task per node's mailbox (keeps each node's batches in order).
    mailboxes: HashMap<String, mpsc::UnboundedSender<Stored>>,
    /// The sender task of the retained updates made here (kept while NATS is away).
    retained_out: mpsc::UnboundedSender<Stored>,
    /// Our stamps, confirmed to each shard in order.
    confirm: Confirmations,
    /// Mailbox messages handed to the shards, acknowledged to JetStream once durable there.
    incoming: Incoming<jetstream::Message>,
    pending: VecDeque<PendingDelta>,
    turn_tokens: Vec<(usize, u64)>,
    remote_acks: HashMap<u64, RemoteAck>,
    next_token: u64,
    /// Other nodes that are live, with their start ids; acknowledgements are awaited from these.
    live: HashMap<String, String>,
    acked: HashMap<String, u64>,
    /// Nodes whose liveness entry expired, since when.
    away_since: HashMap<String, Instant>,
    syncing: HashSet<String>,
    /// Messages a full bus lane refused, per shard, in order.
    blocked: Vec<VecDeque<(bool, BusMessage)>>,
    /// The retained stream has been read up to where it was at start.
    retained_loaded: bool,
    /// Send a delta at the end of this turn even without changes (NATS came back).
    announce: bool,
    mailbox_seq: u64,
    stats: Arc<ClusterStats>,
    /// Bytes waiting in the sender tasks without a publisher waiting on them (persistence off).
    unconfirmed_bytes: Arc<AtomicUsize>,
}

impl<M: Send + 'static> Link<M> {
    pub(super) fn new(
        port: LinkPort<M>,
        config: crate::config::ClusterConfig,
        done_tx: mpsc::UnboundedSender<Done>,
        stats: Arc<ClusterStats>,
    ) -> Self {
        let shards = port.shards;
        let (js, _) = tokio::sync::watch::channel(None);
        let unconfirmed = Arc::new(AtomicUsize::new(0));
        let retained_out = spawn_sender(
            js.subscribe(),
            done_tx.clone(),
            stats.clone(),
            unconfirmed.clone(),
        );
        Link {
            js,
            retained_out,
            names: Names::new(&config.name),
            boot: fastrand::u64(..),
            after_snapshot: HashMap::new(),
            interest: ClusterInterest::new(shards),
            nats: None,
            connected: false,
            done_tx,
            mailboxes: HashMap::new(),
            confirm: Confirmations::new(shards),
            incoming: Incoming::new(shards),
            pending: VecDeque::new(),
            turn_tokens: Vec::new(),
            remote_acks: HashMap::new(),
            next_token: 1,
            live: HashMap::new(),
            acked: HashMap::new(),
            away_since: HashMap::new(),
            syncing: HashSet::new(),
            blocked: (0..shards).map(|_| VecDeque::new()).collect(),
            retained_loaded: false,
            announce: false,
            mailbox_seq: 0,
            unconfirmed_bytes: unconfirmed,
            stats,
            config,
            port,
        }
    }
}

/// Runs the link until `stop` is set.
pub(super) async fn run<M: Send + 'static>(
    port: LinkPort<M>,
    config: crate::config::ClusterConfig,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stats: Arc<ClusterStats>,
) {
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let (events_tx, mut events_rx) = mpsc::unbounded_channel();
    let client = match nats::connect(&config, events_tx).await {
        Ok(client) => client,
        Err(error) => {
            log::error!("cluster: {error}; this node runs alone");
            return;
        }
    };
    let mut link = Link::new(port, config, done_tx, stats);
    link.spawn_set_up(client.clone(), Duration::ZERO);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut last_live = Instant::now() - Duration::from_secs(60);
    // What NATS brings, once set up (apart from the link: `select!` borrows each on its own).
    let mut feeds: Option<Feeds> = None;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let (interest, acks, sync, qos0, mailbox, retained) = match feeds.as_mut() {
            Some(f) => (
                Some(&mut f.interest),
                Some(&mut f.acks),
                Some(&mut f.sync),
                Some(&mut f.qos0),
                Some(&mut f.mailbox),
                Some(&mut f.retained),
            ),
            None => (None, None, None, None, None, None),
        };
        tokio::select! {
            // The shards first: at start, their recovered subscriptions are in before the
            // mailbox is read.
            biased;
            lane = link.port.inbox.recv() => {
                if let Some(message) = (link.port.unwrap)(lane.into_inner()) {
                    link.shard_said(message);
                }
                // Whatever else is there, in the same turn (one delta for all of it).
                for _ in 0..1024 {
                    let Some(lane) = link.port.inbox.try_recv() else { break };
                    if let Some(message) = (link.port.unwrap)(lane.into_inner()) {
                        link.shard_said(message);
                    }
                }
            }
            Some(event) = events_rx.recv() => link.nats_event(event),
            Some(done) = done_rx.recv() => match done {
                Done::Ready(Err(error)) => {
                    log::warn!("cluster: NATS not ready ({error}); trying again");
                    link.spawn_set_up(client.clone(), Duration::from_secs(1));
                }
                Done::Ready(Ok(nats)) => {
                    let (handles, fed) = nats.split();
                    feeds = Some(fed);
                    link.ready(handles);
                }
                done => link.done(done),
            },
            Some(message) = next(interest) => link.remote_delta(message).await,
            Some(message) = next(acks) => link.delta_acked(&message.payload),
            Some(message) = next(sync) => link.answer_sync(message).await,
            Some(message) = next(qos0) => link.qos0_arrived(&message.payload),
            Some(message) = next(mailbox) => match message {
                Ok(message) => link.mailbox_arrived(message).await,
                Err(error) => log::warn!("cluster: mailbox: {error}"),
            },
            Some(message) = next(retained) => match message {
                Ok(message) => link.retained_arrived(message),
                Err(error) => log::warn!("cluster: retained: {error}"),
            },
            _ = tick.tick() => {
                if last_live.elapsed() >= Duration::from_secs(2) {
                    last_live = Instant::now();
                    link.renew_liveness().await;
                }
                link.retry_blocked();
                link.expire_pending();
            }
        }
        link.end_of_turn().await;
    }
}

/// The next item of an optional stream; pending for ever without one.
async fn next<S: futures_util::Stream + Unpin>(stream: Option<&mut S>) -> Option<S::Item> {
    match stream {
        Some(stream) => stream.next().await,
        None => std::future::pending().await,
    }
}

impl<M: Send + 'static> Link<M> {
    fn index(&self) -> usize {
        self.port.shards
    }

    fn spawn_set_up(&self, client: async_nats::Client, after: Duration) {
        let (config, names, done) = (
            self.config.clone(),
            self.names.clone(),
            self.done_tx.clone(),
        );
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let result = nats::set_up(&client, &config, &names).await.map(Box::new);
            let _ = done.send(Done::Ready(result));
        });
    }

    fn nats_event(&mut self, event: Event) {
        match event {
            Event::Connected => {
                log::info!("cluster: connected to NATS");
                self.connected = true;
                self.stats.set_connected(self.nats.is_some());
                self.announce = true;
                // Others may have missed deltas: they resync on the next gap; we ask them.
                let nodes: Vec<String> = self.interest.nodes().map(str::to_string).collect();
                for node in nodes {
                    self.request_snapshot(node);
                }
            }
            Event::Disconnected => {
                log::warn!("cluster: NATS connection lost; local delivery goes on");
                self.connected = false;
                self.stats.set_connected(false);
            }
            other => log::info!("cluster: NATS {other}"),
        }
    }

    /// Sends to a local shard, in order behind what a full lane refused before.
    fn send_shard(&mut self, shard: usize, control: bool, message: BusMessage) {
        if !self.blocked[shard].is_empty() {
            self.blocked[shard].push_back((control, message));
            return;
        }
        if let Err(message) = self.try_send_shard(shard, control, message) {
            self.blocked[shard].push_back((control, message));
        }
    }

    /// The message back when the lane refused it, unboxed as the bus itself hands it back.
    #[allow(clippy::result_large_err)]
    fn try_send_shard(
        &self,
        shard: usize,
        control: bool,
        message: BusMessage,
    ) -> Result<(), BusMessage> {
        let wrapped = (self.port.wrap)(message);
        let sent = if control {
            self.port.bus.try_send_control(shard, wrapped)
        } else {
            self.port.bus.try_send_data(shard, wrapped)
        };
        match sent {
            Ok(()) => Ok(()),
            Err(error) => match (self.port.unwrap)(error.into_inner()) {
                Some(message) => Err(message),
                None => Ok(()),
            },
        }
    }

    fn retry_blocked(&mut self) {
        for shard in 0..self.blocked.len() {
            while let Some((control, message)) = self.blocked[shard].pop_front() {
                if let Err(message) = self.try_send_shard(shard, control, message) {
                    self.blocked[shard].push_front((control, message));
                    break;
                }
            }
        }
    }

    fn send_all_shards(&mut self, control: bool, message: &BusMessage) {
        for shard in 0..self.port.shards {
            self.send_shard(shard, control, message.clone());
        }
    }

    fn shard_said(&mut self, message: BusMessage) {
        match message {
            BusMessage::Interest {
                from,
                filter,
                added,
                token,
            } => {
                self.interest.local_changed(from, &filter, added);
                if let Some(token) = token {
                    self.turn_tokens.push((from, token));
                }
            }
            BusMessage::InterestAck { token } => self.shard_confirmed(token),
            BusMessage::Publishes(batch, stamp) => self.publishes_out(&batch, stamp),
            BusMessage::Retained {
                message,
                version,
                stamp,
            } => {
                // Durable on its own shard already; the cluster's copy follows (kept while
                // NATS is away: `spawn_sender` keeps it until stored).
                let topic = message.topic.as_bytes();
                if !topic.starts_with(b"$") && topic.len() <= wire::MAX_RETAINED_TOPIC {
                    let stored = Stored {
                        subject: self.names.retained(topic),
                        payload: wire::encode_retained(&message, version),
                        id: None,
                        stamps: Vec::new(),
                        messages: 0,
                    };
                    // Gone only when the link stops.
                    let _ = self.retained_out.send(stored);
                }
                if let Some(stamp) = stamp {
                    self.stamp_done(stamp.from, stamp.n);
                }
            }
            BusMessage::Durable { from, upto } => {
                let ready = self.incoming.durable(from, upto);
                self.ack_incoming(ready);
            }
            _ => {}
        }
    }

    /// Our stamp `n` to `shard` needs nothing more: confirm what is now contiguous.
    fn stamp_done(&mut self, shard: usize, n: u64) {
        if let Some(upto) = self.confirm.done(shard, n) {
            let from = self.index();
            self.send_shard(shard, true, BusMessage::Durable { from, upto });
        }
    }

    fn publishes_out(&mut self, batch: &PublishBatch, stamp: Option<DeliveryStamp>) {
        let mut per_node: HashMap<&str, (PublishBatch, PublishBatch)> = HashMap::new();
        for publish in batch.iter() {
            let qos0 = publish.qos == QoS::AtMostOnce;
            for node in self.interest.nodes_for(publish.topic, qos0) {
                let (qos0, qos12) = per_node.entry(node).or_default();
                let into = if publish.qos == QoS::AtMostOnce {
                    qos0
                } else {
                    qos12
                };
                into.push_with(
                    publish.qos,
                    publish.topic,
                    publish.payload,
                    publish.properties,
                );
            }
        }
        let mut stored = false;
        let stamps: Vec<(usize, u64)> = stamp.map(|s| (s.from, s.n)).into_iter().collect();
        let mut sends = Vec::new();
        for (node, (qos0, qos12)) in per_node {
            if !qos0.is_empty() {
                let count = qos0.len();
                sends.push((
                    self.names.qos0(node),
                    None,
                    count,
                    wire::encode_batch(&qos0.into_bytes()),
                ));
            }
            if !qos12.is_empty() {
                let count = qos12.len();
                sends.push((
                    node.to_string(),
                    Some(()),
                    count,
                    wire::encode_batch(&qos12.into_bytes()),
                ));
            }
        }
        for (target, durable, count, payload) in sends {
            match durable {
                None => match &self.nats {
                    Some(nats) if self.connected => {
                        let client = nats.client.clone();
                        self.stats.add_sent_core(count);
                        tokio::spawn(async move {
                            let _ = client.publish(target, payload).await;
                        });
                    }
                    // QoS 0 does not wait for NATS.
                    _ => self.stats.add_dropped(count),
                },
                Some(()) => {
                    if stamps.is_empty() {
                        let queued = self.unconfirmed_bytes.load(Ordering::Relaxed);
                        if queued + payload.len() > MAX_UNCONFIRMED_BYTES {
                            self.stats.add_dropped(count);
                            continue;
                        }
                        self.unconfirmed_bytes
                            .fetch_add(payload.len(), Ordering::Relaxed);
                    }
                    stored = true;
                    self.mailbox_seq += 1;
                    let message = Stored {
                        subject: self.names.mailbox(&target),
                        payload,
                        id: Some(format!(
                            "{}-{:x}-{}",
                            self.config.node, self.boot, self.mailbox_seq
                        )),
                        stamps: stamps.clone(),
                        messages: count,
                    };
                    // Gone only when the link stops.
                    let _ = self.mailbox_for(&target).send(message);
                }
            }
        }
        if !stored {
            for (shard, n) in stamps {
                self.stamp_done(shard, n);
            }
        }
    }

    /// The sender of `node`'s mailbox (one task per node: a node that is slow to store holds
    /// up no other).
    fn mailbox_for(&mut self, node: &str) -> mpsc::UnboundedSender<Stored> {
        if let Some(sender) = self.mailboxes.get(node) {
            return sender.clone();
        }
        let sender = spawn_sender(
            self.js.subscribe(),
            self.done_tx.clone(),
            self.stats.clone(),
            self.unconfirmed_bytes.clone(),
        );
        self.mailboxes.insert(node.to_string(), sender.clone());
        sender
    }

    fn done(&mut self, done: Done) {
        match done {
            Done::Stored(stamps) => {
                for (shard, n) in stamps {
                    self.stamp_done(shard, n);
                }
            }
            Done::Snapshot(node, result) => {
                self.syncing.remove(&node);
                let waited = self.after_snapshot.remove(&node);
                match result {
                    Ok((boot, seq, filters)) => {
                        let changes = self.interest.remote_snapshot(&node, boot, seq, filters);
                        self.union_changed(changes, waited.map(|seq| (node, seq)));
                    }
                    Err(error) => {
                        log::warn!("cluster: interest of node {node}: {error}");
                        if let Some(seq) = waited {
                            self.send_ack(&node, seq);
                        }
                    }
                }
            }
            Done::Live(Ok(nodes)) => self.live_nodes(nodes),
            Done::Live(Err(error)) => log::debug!("cluster: live nodes: {error}"),
            Done::Ready(_) => {}
        }
    }

    fn ready(&mut self, nats: Handles) {
        {
            {
                log::info!(
                    "cluster: node {} joined cluster '{}' on NATS",
                    self.config.node,
                    self.config.name
                );
                if nats.retained_empty {
                    self.retained_loaded = true;
                }
                self.js.send_replace(Some(nats.js.clone()));
                self.nats = Some(nats);
                self.connected = true;
                self.stats.set_connected(true);
            }
        }
    }

    /// Announces changes of the other nodes' union to the local shards. With `ack`, the shards'
    /// confirmations are counted and the node that sent the delta is answered when all are in.
    fn union_changed(&mut self, changes: Vec<Change>, ack: Option<(String, u64)>) {
        let from = self.index();
        let token = match (&ack, changes.is_empty()) {
            (Some((node, seq)), false) => {
                let token = self.next_token;
                self.next_token += 1;
                self.remote_acks.insert(
                    token,
                    RemoteAck {
                        node: node.clone(),
                        seq: *seq,
                        remaining: self.port.shards * changes.len(),
                    },
                );
                Some(token)
            }
            _ => None,
        };
        for (added, filter) in changes {
            self.send_all_shards(
                true,
                &BusMessage::Interest {
                    from,
                    filter,
                    added,
                    token,
                },
            );
        }
        if let (Some((node, seq)), None) = (ack, token) {
            self.send_ack(&node, seq);
        }
    }

    fn send_ack(&self, node: &str, seq: u64) {
        if let Some(nats) = &self.nats {
            let (client, subject) = (nats.client.clone(), self.names.interest_ack(node));
            let payload = wire::encode_ack(&self.config.node, seq);
            tokio::spawn(async move {
                let _ = client.publish(subject, payload).await;
            });
        }
    }

    fn shard_confirmed(&mut self, token: u64) {
        let Some(ack) = self.remote_acks.get_mut(&token) else {
            return;
        };
        ack.remaining = ack.remaining.saturating_sub(1);
        if ack.remaining == 0 {
            if let Some(ack) = self.remote_acks.remove(&token) {
                self.send_ack(&ack.node, ack.seq);
            }
        }
    }

    async fn remote_delta(&mut self, message: async_nats::Message) {
        let Some(node) = message
            .subject
            .as_str()
            .rsplit('.')
            .next()
            .map(str::to_string)
        else {
            return;
        };
        if node == self.config.node {
            return;
        }
        let (boot, seq, changes) = match wire::decode_delta(&message.payload) {
            Ok(delta) => delta,
            Err(error) => {
                log::warn!("cluster: interest delta from {node}: {error}");
                return;
            }
        };
        let outcome = self.interest.remote_delta(&node, boot, seq, changes);
        if outcome.needs_snapshot {
            // Confirmed once the snapshot (which holds it) is in effect on the shards.
            let waited = self.after_snapshot.entry(node.clone()).or_insert(seq);
            *waited = (*waited).max(seq);
            self.request_snapshot(node);
            return;
        }
        self.union_changed(outcome.union, Some((node, seq)));
    }

    fn request_snapshot(&mut self, node: String) {
        let Some(nats) = &self.nats else { return };
        if !self.syncing.insert(node.clone()) {
            return;
        }
        let (client, subject, done) = (
            nats.client.clone(),
            self.names.sync(&node),
            self.done_tx.clone(),
        );
        tokio::spawn(async move {
            let result = match client.request(subject, Bytes::new()).await {
                Ok(reply) => wire::decode_snapshot(&reply.payload).map_err(|e| e.to_string()),
                Err(error) => Err(error.to_string()),
            };
            let _ = done.send(Done::Snapshot(node, result));
        });
    }

    async fn answer_sync(&mut self, message: async_nats::Message) {
        self.send_delta().await;
        let Some(reply) = message.reply else { return };
        let snapshot = wire::encode_snapshot(self.boot, self.interest.seq(), self.interest.mine());
        if let Some(nats) = &self.nats {
            let _ = nats.client.publish(reply, snapshot).await;
        }
    }

    fn delta_acked(&mut self, payload: &[u8]) {
        match wire::decode_ack(payload) {
            Ok((node, seq)) => {
                let acked = self.acked.entry(node).or_insert(0);
                *acked = (*acked).max(seq);
                self.complete_deltas();
            }
            Err(error) => log::warn!("cluster: interest acknowledgement: {error}"),
        }
    }

    /// Releases the SUBACKs behind our deltas that every live node confirmed (or that waited
    /// past `ack_timeout`, or while NATS is away).
    fn complete_deltas(&mut self) {
        let now = Instant::now();
        while let Some(front) = self.pending.front() {
            let all = self
                .live
                .keys()
                .all(|node| self.acked.get(node).is_some_and(|&a| a >= front.seq));
            if !(all || !self.connected || now >= front.deadline) {
                break;
            }
            if !all && self.connected {
                self.stats.add_interest_timeout();
                log::warn!(
                    "cluster: interest delta {} not confirmed by every node within {:?}",
                    front.seq,
                    self.config.ack_timeout
                );
            }
            if let Some(done) = self.pending.pop_front() {
                for (shard, token) in done.tokens {
                    self.send_shard(shard, true, BusMessage::InterestAck { token });
                }
            }
        }
    }

    fn expire_pending(&mut self) {
        self.complete_deltas();
    }

    async fn send_delta(&mut self) {
        let delta = if std::mem::take(&mut self.announce) {
            Some(self.interest.take_delta_always())
        } else {
            self.interest.take_delta()
        };
        let Some((seq, changes)) = delta else {
            return;
        };
        let live = self.connected && self.nats.is_some();
        if let (Some(nats), true) = (&self.nats, live) {
            let payload = wire::encode_delta(self.boot, seq, &changes);
            let _ = nats
                .client
                .publish_with_reply(
                    self.names.interest(&self.config.node),
                    self.names.interest_ack(&self.config.node),
                    payload,
                )
                .await;
        }
        self.pending.push_back(PendingDelta {
            seq,
            tokens: Vec::new(),
            deadline: Instant::now() + self.config.ack_timeout,
        });
    }

    async fn end_of_turn(&mut self) {
        self.send_delta().await;
        let (local, remote) = self.interest.filter_counts();
        self.stats.set_filters(local, remote);
        let tokens = std::mem::take(&mut self.turn_tokens);
        if !tokens.is_empty() {
            match self.pending.back_mut() {
                Some(last) => last.tokens.extend(tokens),
                None => {
                    for (shard, token) in tokens {
                        self.send_shard(shard, true, BusMessage::InterestAck { token });
                    }
                }
            }
        }
        self.complete_deltas();
    }

    async fn renew_liveness(&mut self) {
        let Some(nats) = &self.nats else { return };
        let (js, stream) = (nats.js.clone(), nats.nodes.clone());
        let (subject, names) = (self.names.node(&self.config.node), self.names.clone());
        let (boot, done) = (format!("{:016x}", self.boot), self.done_tx.clone());
        tokio::spawn(async move {
            let stored = match js.publish(subject, Bytes::from(boot)).await {
                Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                Err(error) => Err(error.to_string()),
            };
            if let Err(error) = stored {
                log::debug!("cluster: liveness: {error}");
                return;
            }
            let _ = done.send(Done::Live(nats::live_nodes(&stream, &names).await));
        });
    }

    /// The liveness entries, read: a node whose entry expired is away (QoS 1/2 for it keep going
    /// to its mailbox, where it finds them when it comes back) and forgotten after
    /// [`nats::MAILBOX_MAX_AGE`], when its mailbox would drop them anyway.
    fn live_nodes(&mut self, nodes: Vec<(String, String)>) {
        let me = self.config.node.clone();
        let fresh: HashMap<String, String> = nodes.into_iter().filter(|(n, _)| *n != me).collect();
        let missing: Vec<String> = self
            .interest
            .nodes()
            .filter(|n| !fresh.contains_key(*n))
            .map(str::to_string)
            .collect();
        let now = Instant::now();
        for node in missing {
            if !self.interest.is_away(&node) {
                log::warn!(
                    "cluster: node {node} is away (its QoS 1/2 messages wait in its mailbox)"
                );
                self.interest.set_away(&node, true);
                self.away_since.insert(node.clone(), now);
            }
            if self
                .away_since
                .get(&node)
                .is_some_and(|since| now.duration_since(*since) >= nats::MAILBOX_MAX_AGE)
            {
                log::info!("cluster: node {node} is gone");
                self.away_since.remove(&node);
                let changes = self.interest.node_gone(&node);
                self.union_changed(changes, None);
                self.acked.remove(&node);
            }
        }
        for (node, boot) in &fresh {
            if self.live.get(node) != Some(boot) || self.interest.is_away(node) {
                log::info!("cluster: node {node} is live");
                self.interest.set_away(node, false);
                self.away_since.remove(node);
                self.request_snapshot(node.clone());
            }
        }
        self.stats.set_nodes(fresh.len() + 1);
        self.live = fresh;
    }

    fn qos0_arrived(&mut self, payload: &[u8]) {
        let Ok(batch) = wire::decode_batch(payload) else {
            log::warn!("cluster: unreadable QoS 0 batch");
            return;
        };
        self.stats
            .add_received_core(PublishBatch::read(batch).count());
        for (shard, batch) in self.split_for_shards(batch) {
            let count = batch.len();
            let message = BusMessage::Publishes(batch, None);
            if !self.blocked[shard].is_empty()
                || self.try_send_shard(shard, false, message).is_err()
            {
                self.stats.add_dropped(count);
            }
        }
    }

    fn split_for_shards(&self, batch: &[u8]) -> Vec<(usize, PublishBatch)> {
        let mut per_shard: Vec<PublishBatch> = (0..self.port.shards)
            .map(|_| PublishBatch::default())
            .collect();
        for publish in PublishBatch::read(batch) {
            for shard in self.interest.shards_for(publish.topic) {
                per_shard[shard].push_with(
                    publish.qos,
                    publish.topic,
                    publish.payload,
                    publish.properties,
                );
            }
        }
        per_shard
            .into_iter()
            .enumerate()
            .filter(|(_, b)| !b.is_empty())
            .collect()
    }

    async fn mailbox_arrived(&mut self, message: jetstream::Message) {
        let batches = match wire::decode_batch(&message.payload) {
            Ok(batch) => {
                self.stats
                    .add_received_stored(PublishBatch::read(batch).count());
                self.split_for_shards(batch)
            }
            Err(error) => {
                log::warn!("cluster: unreadable mailbox batch: {error}");
                Vec::new()
            }
        };
        let mut waits = Vec::new();
        let index = self.index();
        for (shard, batch) in batches {
            let stamp = self.port.persistence.then(|| DeliveryStamp {
                from: index,
                n: self.incoming.next_stamp(shard),
            });
            if let Some(stamp) = stamp {
                waits.push((shard, stamp.n));
            }
            self.send_shard(shard, false, BusMessage::Publishes(batch, stamp));
        }
        // Without persistence the shards confirm nothing: handed over is as far as it goes.
        let ready = self.incoming.push(message, waits);
        self.ack_incoming(ready);
    }

    fn ack_incoming(&mut self, ready: Vec<jetstream::Message>) {
        for message in ready {
            tokio::spawn(async move {
                if let Err(error) = message.ack().await {
                    log::warn!("cluster: mailbox acknowledgement: {error}");
                }
            });
        }
    }

    fn retained_arrived(&mut self, message: jetstream::Message) {
        let pending = message.info().map(|i| i.pending).unwrap_or(0);
        let Some(topic) = self.names.topic_of_retained(message.subject.as_str()) else {
            return;
        };
        let decoded = wire::decode_retained(&topic, &message.payload);
        let (retained, version) = match decoded {
            Ok(decoded) => decoded,
            Err(error) => {
                log::warn!("cluster: retained message: {error}");
                return;
            }
        };
        let own = version.shard / VERSION_SHARDS == self.port.version_base / VERSION_SHARDS;
        let live = self.retained_loaded && !own;
        let message = if live {
            BusMessage::Retained {
                message: retained,
                version,
                stamp: None,
            }
        } else {
            BusMessage::RetainedLoad {
                message: retained,
                version,
            }
        };
        self.send_all_shards(false, &message);
        if pending == 0 && !self.retained_loaded {
            self.retained_loaded = true;
            log::info!("cluster: retained messages loaded");
        }
    }
}

/// A task that stores messages in JetStream in the order it gets them, each retried until
/// stored (a mailbox message carries an id: JetStream drops a retry that doubles it), then
/// reports their stamps. It waits for JetStream while NATS is not set up.
fn spawn_sender(
    mut js: tokio::sync::watch::Receiver<Option<jetstream::Context>>,
    done: mpsc::UnboundedSender<Done>,
    stats: Arc<ClusterStats>,
    unconfirmed: Arc<AtomicUsize>,
) -> mpsc::UnboundedSender<Stored> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Stored>();
    tokio::spawn(async move {
        while let Some(message) = rx.recv().await {
            let context = match js.wait_for(Option::is_some).await {
                Ok(context) => context.clone(),
                Err(_) => return,
            };
            let Some(context) = context else {
                return;
            };
            let mut delay = Duration::from_millis(50);
            loop {
                let mut headers = HeaderMap::new();
                if let Some(id) = &message.id {
                    headers.insert("Nats-Msg-Id", id.as_str());
                }
                let subject = message.subject.clone();
                match context
                    .publish_with_headers(subject, headers, message.payload.clone())
                    .await
                {
                    Ok(ack) => match ack.await {
                        Ok(_) => break,
                        Err(error) => {
                            log::warn!("cluster: storing in {}: {error}", message.subject)
                        }
                    },
                    Err(error) => log::warn!("cluster: storing in {}: {error}", message.subject),
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            stats.add_sent_stored(message.messages);
            if message.stamps.is_empty() {
                if message.messages > 0 {
                    unconfirmed.fetch_sub(message.payload.len(), Ordering::Relaxed);
                }
            } else {
                let _ = done.send(Done::Stored(message.stamps));
            }
        }
    });
    tx
}
