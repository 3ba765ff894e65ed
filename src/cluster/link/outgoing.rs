//! What leaves this node for the others: the publishes of a batch from a shard, split by the
//! nodes that want them (QoS 0 over core NATS, QoS 1/2 into each node's mailbox), and the tasks
//! that store messages in JetStream in order. Methods of the link (`mod.rs`).
//!
//! QoS 0 publishes are gathered per node for a whole turn of the link's loop (every batch the
//! shards sent meanwhile) and leave as one NATS message per node at its end ([`Qos0Out`]): a
//! NATS message costs both nodes and nats-server far more than the publishes it carries.

use super::*;

/// Most bytes of QoS 0 records gathered for one node before they leave, turn or not (NATS
/// refuses payloads over its `max_payload`, 1 MiB by default).
const QOS0_FLUSH_BYTES: usize = 64 << 10;

/// QoS 0 batches queued for the sender task before more are dropped (NATS away or slow).
const QOS0_QUEUE: usize = 1024;

/// QoS 0 publishes for other nodes, gathered during a turn of the link's loop.
#[derive(Default)]
pub(super) struct Qos0Out {
    /// Per node: the records for it, in the order the shards routed them (a few nodes: looked
    /// up by name along the list, cheaper than hashing the name per record).
    nodes: Vec<Qos0Node>,
    /// The nodes (indexes in `nodes`) that want the topic `last_topic` (valid for one batch:
    /// interest changes between batches). Publishers send runs of one topic.
    last_topic: Option<Vec<u8>>,
    last_nodes: Vec<usize>,
    /// Into the task that publishes them on core NATS, in order (started with NATS).
    sender: Option<mpsc::Sender<(String, Bytes)>>,
}

struct Qos0Node {
    node: String,
    subject: String,
    batch: PublishBatch,
}

impl Qos0Out {
    /// `node`'s index in `nodes`, added if new.
    fn slot(&mut self, node: &str, names: &Names) -> usize {
        if let Some(slot) = self.nodes.iter().position(|n| n.node == node) {
            return slot;
        }
        self.nodes.push(Qos0Node {
            node: node.to_string(),
            subject: names.qos0(node),
            batch: PublishBatch::default(),
        });
        self.nodes.len() - 1
    }
}

impl<M: Send + 'static> Link<M> {
    pub(super) fn publishes_out(&mut self, batch: &PublishBatch, stamp: Option<DeliveryStamp>) {
        let mut per_node: HashMap<&str, PublishBatch> = HashMap::new();
        let out = &mut self.qos0_out;
        out.last_topic = None;
        for publish in batch.iter() {
            if publish.qos != QoS::AtMostOnce {
                for node in self.interest.nodes_for(publish.topic, false) {
                    per_node.entry(node).or_default().push_with(
                        publish.qos,
                        publish.topic,
                        publish.payload,
                        publish.properties,
                    );
                }
                continue;
            }
            if out.last_topic.as_deref() != Some(publish.topic) {
                out.last_nodes.clear();
                for node in self.interest.nodes_for(publish.topic, true) {
                    let slot = out.slot(node, &self.names);
                    out.last_nodes.push(slot);
                }
                let mut topic = out.last_topic.take().unwrap_or_default();
                topic.clear();
                topic.extend_from_slice(publish.topic);
                out.last_topic = Some(topic);
            }
            for &slot in &out.last_nodes {
                out.nodes[slot].batch.push_with(
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
        for (node, qos12) in per_node {
            let count = qos12.len();
            sends.push((
                node.to_string(),
                count,
                wire::encode_batch(&qos12.into_bytes()),
            ));
        }
        self.flush_qos0(QOS0_FLUSH_BYTES);
        for (target, count, payload) in sends {
            stored |= self.store_in_mailbox(&target, payload, count, stamps.clone());
        }
        if !stored {
            for (shard, n) in stamps {
                self.stamp_done(shard, n);
            }
        }
    }

    /// Stores `count` QoS 1/2 publishes (`payload`) in `target`'s mailbox, in order behind what
    /// went there before; `stamps` are confirmed once JetStream has them. Without stamps (no
    /// publisher waits), they are dropped and counted beyond [`MAX_UNCONFIRMED_BYTES`] waiting:
    /// false then.
    pub(super) fn store_in_mailbox(
        &mut self,
        target: &str,
        payload: Bytes,
        count: usize,
        stamps: Vec<(usize, u64)>,
    ) -> bool {
        if stamps.is_empty() {
            let queued = self.unconfirmed_bytes.load(Ordering::Relaxed);
            if queued + payload.len() > MAX_UNCONFIRMED_BYTES {
                self.stats.add_dropped(count);
                return false;
            }
            self.unconfirmed_bytes
                .fetch_add(payload.len(), Ordering::Relaxed);
        }
        self.mailbox_seq += 1;
        let message = Stored {
            subject: self.names.mailbox(target),
            payload,
            id: Some(format!(
                "{}-{:x}-{}",
                self.config.node, self.boot, self.mailbox_seq
            )),
            stamps,
            messages: count,
        };
        // Gone only when the link stops.
        let _ = self.mailbox_for(target).send(message);
        true
    }

    /// Sends the QoS 0 publishes gathered for each node that has at least `bytes` of them (1 at
    /// the end of a turn): one NATS message per node.
    pub(super) fn flush_qos0(&mut self, bytes: usize) {
        for slot in 0..self.qos0_out.nodes.len() {
            let gathered = &self.qos0_out.nodes[slot].batch;
            if !gathered.is_empty() && gathered.byte_len() >= bytes {
                self.send_qos0(slot);
            }
        }
    }

    /// Sends what is gathered for the node at `slot` (QoS 0 does not wait for NATS: dropped
    /// while it is away or too far behind).
    fn send_qos0(&mut self, slot: usize) {
        let out = &mut self.qos0_out;
        let batch = std::mem::take(&mut out.nodes[slot].batch);
        let count = batch.len();
        let subject = out.nodes[slot].subject.clone();
        let payload = wire::encode_batch(&batch.into_bytes());
        self.send_core(subject, payload, count);
    }

    /// Publishes `count` QoS 0 publishes (`payload`) on core NATS, in order behind those sent
    /// before; dropped and counted while NATS is away or too far behind.
    pub(super) fn send_core(&mut self, subject: String, payload: Bytes, count: usize) {
        let sender = match &self.nats {
            Some(nats) if self.connected => self
                .qos0_out
                .sender
                .get_or_insert_with(|| spawn_qos0_sender(nats.client.clone())),
            _ => {
                self.stats.add_dropped(count);
                return;
            }
        };
        match sender.try_send((subject, payload)) {
            Ok(()) => self.stats.add_sent_core(count),
            Err(_) => self.stats.add_dropped(count),
        }
    }

    /// The sender of `node`'s mailbox (one task per node: a node that is slow to store holds
    /// up no other).
    pub(super) fn mailbox_for(&mut self, node: &str) -> mpsc::UnboundedSender<Stored> {
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
}

/// The task that publishes QoS 0 batches on core NATS in the order it gets them.
fn spawn_qos0_sender(client: async_nats::Client) -> mpsc::Sender<(String, Bytes)> {
    let (tx, mut rx) = mpsc::channel::<(String, Bytes)>(QOS0_QUEUE);
    tokio::spawn(async move {
        while let Some((subject, payload)) = rx.recv().await {
            let _ = client.publish(subject, payload).await;
        }
    });
    tx
}

/// A task that stores messages in JetStream in the order it gets them, each retried until
/// stored (a mailbox message carries an id: JetStream drops a retry that doubles it), then
/// reports their stamps. It waits for JetStream while NATS is not set up.
pub(super) fn spawn_sender(
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
