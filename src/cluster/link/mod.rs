//! The cluster link's loop: one more participant on this node's bus, at index `shards`. It
//! reads what the local shards send it (their interest, the publishes and retained updates
//! other nodes want, durability confirmations) and what NATS brings (other nodes' interest and
//! publishes, retained updates), and passes each on. One thread, a current-thread tokio runtime:
//! nothing else in the broker runs tokio, and the shards never wait on this thread except for
//! the SUBACKs and PUBACKs that must (see the README's "Cluster" section).
//!
//! Here: the loop, the link's state, and talking to the local shards; `outgoing.rs` what leaves
//! for other nodes, `incoming.rs` what arrives from them, `membership.rs` interest and liveness,
//! `shared.rs` share groups' messages between nodes.
//! What must not live here: MQTT rules (the shards apply them), bookkeeping that needs no I/O
//! (`../interest.rs`, `../confirm.rs`), the wire format (`../wire.rs`).

mod incoming;
mod late;
mod membership;
mod outgoing;
mod profiles;
mod sessions;
mod shared;

use incoming::Qos0In;
use outgoing::{spawn_sender, Qos0Out};
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use async_nats::jetstream;
use async_nats::{Event, HeaderMap};
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::broker::{BusMessage, DeliveryStamp, PublishBatch};
use crate::protocol::QoS;

use super::confirm::{Confirmations, Incoming};
use super::directory::{Entry, Profile};
use super::interest::ClusterInterest;
use super::nats::{self, Feeds, Handles, Nats};
use super::stats::ClusterStats;
use super::wire::{self, Change, Names, Snapshot};
use super::{LinkPort, VERSION_SHARDS};

/// What a task of the link reports back to its loop.
pub(super) enum Done {
    /// A mailbox batch is stored in JetStream: its stamps are confirmed.
    Stored(Vec<(usize, u64)>),
    /// Another node's whole interest.
    Snapshot(String, Result<Snapshot, String>),
    /// The live nodes' bucket, read.
    Live(Result<Vec<(String, String)>, String>),
    /// NATS set up (or not yet).
    Ready(Result<Box<Nats>, String>),
    /// A client id claimed in the session directory for shard `from`'s CONNECT `token`: the
    /// entry's sequence and the session handed over, or why not (`sessions.rs`).
    Claimed {
        from: usize,
        token: u64,
        client_id: Arc<str>,
        result: Result<sessions::Claimed, String>,
    },
    /// A write of an owned entry's profile ended: its new sequence (`profiles.rs`).
    ProfileWritten {
        client_id: Arc<str>,
        profile: Profile,
        result: Result<u64, String>,
    },
    /// The directory's entry of a session recovered here: its sequence and the entry (`late.rs`).
    RecoveredChecked {
        client_id: Arc<str>,
        result: Result<(u64, Option<Entry>), String>,
    },
    /// A late hand-over to `node` ended: whether it took the messages (`late.rs`).
    LateSent {
        client_id: Arc<str>,
        node: String,
        result: Result<bool, String>,
    },
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

/// This node's delta waiting for the other nodes' acknowledgements, with the SUBACKs behind it:
/// the confirmations to send the shards then (`InterestAck`, `SharedAck`).
struct PendingDelta {
    seq: u64,
    replies: Vec<(usize, BusMessage)>,
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
    /// Confirmations the shards asked for this turn, sent once the delta that carries their
    /// changes is acknowledged.
    turn_replies: Vec<(usize, BusMessage)>,
    remote_acks: HashMap<u64, RemoteAck>,
    next_token: u64,
    /// Other nodes that are live, with their start ids; acknowledgements are awaited from these.
    live: HashMap<String, String>,
    acked: HashMap<String, u64>,
    /// Nodes whose liveness entry expired, since when.
    away_since: HashMap<String, Instant>,
    /// Nodes missing from the last liveness read: one more miss in a row and they are away.
    missing_once: HashSet<String>,
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
    /// QoS 0 for other nodes, sent at the end of the turn.
    qos0_out: Qos0Out,
    /// QoS 0 from other nodes, handed to the shards at the end of the turn.
    qos0_in: Qos0In,
    /// Client ids this node owns in the session directory (`profiles.rs`).
    owned: HashMap<Arc<str>, profiles::Owned>,
    /// The sessions recovered at start, checked against the directory (`late.rs`).
    recovered: late::Recovered,
    /// Hand-offs waiting for a shard to release the session: where to reply.
    releases: HashMap<u64, async_nats::Subject>,
    /// Share groups' messages for other nodes, sent at the end of the turn (`shared.rs`).
    shared_out: shared::SharedOut,
    /// The random state of the link's share-group choices.
    rng: std::cell::Cell<u64>,
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
            turn_replies: Vec::new(),
            remote_acks: HashMap::new(),
            next_token: 1,
            live: HashMap::new(),
            acked: HashMap::new(),
            away_since: HashMap::new(),
            missing_once: HashSet::new(),
            syncing: HashSet::new(),
            blocked: (0..shards).map(|_| VecDeque::new()).collect(),
            retained_loaded: false,
            announce: false,
            mailbox_seq: 0,
            unconfirmed_bytes: unconfirmed,
            qos0_out: Qos0Out::default(),
            qos0_in: Qos0In::new(shards),
            owned: HashMap::new(),
            recovered: late::Recovered::default(),
            releases: HashMap::new(),
            shared_out: shared::SharedOut::default(),
            rng: super::groups::rng(),
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
        let (interest, acks, sync, qos0, mailbox, retained, handoff, late) = match feeds.as_mut() {
            Some(f) => (
                Some(&mut f.interest),
                Some(&mut f.acks),
                Some(&mut f.sync),
                Some(&mut f.qos0),
                Some(&mut f.mailbox),
                Some(&mut f.retained),
                Some(&mut f.handoff),
                Some(&mut f.late),
            ),
            None => (None, None, None, None, None, None, None, None),
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
            Some(message) = next(handoff) => link.handoff_asked(message),
            Some(message) = next(late) => link.late_asked(message),
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
                    link.retry_profiles();
                    link.retry_recovered();
                }
                link.check_recovered();
                link.retry_blocked();
                link.complete_deltas();
            }
        }
        link.qos0_hand_over(feeds.as_mut().map(|f| &mut f.qos0));
        link.flush_shared();
        link.flush_qos0(1);
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
                    self.turn_replies
                        .push((from, BusMessage::InterestAck { token }));
                }
            }
            BusMessage::InterestAck { token } | BusMessage::SharedAck { token } => {
                self.shard_confirmed(token)
            }
            BusMessage::ShareMembers {
                from,
                group,
                online,
                offline,
                token,
            } => {
                let members = super::groups::Members { online, offline };
                self.interest.groups().local_changed(from, &group, members);
                if let Some(token) = token {
                    self.turn_replies
                        .push((from, BusMessage::SharedAck { token }));
                }
            }
            BusMessage::SharedPublish {
                group,
                message,
                hash,
                hops,
                stamp,
                ..
            } => self.shared_from_shard(group, message, hash, hops, stamp),
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
            BusMessage::SessionClaim {
                from,
                token,
                client_id,
                clean,
            } => self.claim(from, token, client_id, clean),
            BusMessage::SessionReleased { token, session } => self.released(token, session),
            BusMessage::SessionProfile { client_id, profile } => {
                self.profile_changed(client_id, profile)
            }
            BusMessage::SessionsHeld { client_ids } => {
                self.recovered.to_check.extend(client_ids);
            }
            BusMessage::SessionLateTaken { token } => self.late_taken(token),
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
                    Ok(snapshot) => {
                        let changes = self.interest.remote_snapshot(&node, snapshot);
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
            Done::Claimed {
                from,
                token,
                client_id,
                result,
            } => self.claimed(from, token, client_id, result),
            Done::ProfileWritten {
                client_id,
                profile,
                result,
            } => self.profile_written(client_id, profile, result),
            Done::RecoveredChecked { client_id, result } => {
                self.recovered_checked(client_id, result)
            }
            Done::LateSent {
                client_id,
                node,
                result,
            } => self.late_sent(client_id, node, result),
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
                self.recovered.backlog = Some(nats.mailbox_backlog);
                self.recovered.since = Some(Instant::now());
                self.js.send_replace(Some(nats.js.clone()));
                self.nats = Some(nats);
                self.connected = true;
                self.stats.set_connected(true);
            }
        }
    }
}
