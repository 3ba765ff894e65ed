//! What leaves this node for the others: the publishes of a batch from a shard, split by the
//! nodes that want them (QoS 0 over core NATS, QoS 1/2 into each node's mailbox), and the tasks
//! that store messages in JetStream in order. Methods of the link (`mod.rs`).

use super::*;

impl<M: Send + 'static> Link<M> {
    pub(super) fn publishes_out(&mut self, batch: &PublishBatch, stamp: Option<DeliveryStamp>) {
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
