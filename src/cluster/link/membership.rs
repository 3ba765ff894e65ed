//! Who wants what, across nodes: this node's interest deltas (filters and share groups' member
//! counts) and the acknowledgements that release the SUBACKs behind them, the other nodes'
//! deltas and snapshots passed on to the local shards, and liveness (live, away, gone). Methods
//! of the link (`mod.rs`).

use super::*;

impl<M: Send + 'static> Link<M> {
    /// Announces changes of the other nodes' union to the local shards, with the share groups
    /// whose other nodes' members changed meanwhile. With `ack`, the shards' confirmations are
    /// counted and the node that sent the delta is answered when all are in.
    pub(super) fn union_changed(&mut self, changes: Vec<Change>, ack: Option<(String, u64)>) {
        let from = self.index();
        let groups = self.interest.groups().take_updates();
        let announced = changes.len() + groups.len();
        let token = match (&ack, announced == 0) {
            (Some((node, seq)), false) => {
                let token = self.next_token;
                self.next_token += 1;
                self.remote_acks.insert(
                    token,
                    RemoteAck {
                        node: node.clone(),
                        seq: *seq,
                        remaining: self.port.shards * announced,
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
        for count in groups {
            self.send_all_shards(
                true,
                &BusMessage::ShareMembers {
                    from,
                    group: Arc::new(count.group),
                    online: count.online,
                    offline: count.offline,
                    token,
                },
            );
        }
        if let (Some((node, seq)), None) = (ack, token) {
            self.send_ack(&node, seq);
        }
    }

    pub(super) fn send_ack(&self, node: &str, seq: u64) {
        if let Some(nats) = &self.nats {
            let (client, subject) = (nats.client.clone(), self.names.interest_ack(node));
            let payload = wire::encode_ack(&self.config.node, seq);
            tokio::spawn(async move {
                let _ = client.publish(subject, payload).await;
            });
        }
    }

    pub(super) fn shard_confirmed(&mut self, token: u64) {
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

    pub(super) async fn remote_delta(&mut self, message: async_nats::Message) {
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
        let delta = match wire::decode_delta(&message.payload) {
            Ok(delta) => delta,
            Err(error) => {
                log::warn!("cluster: interest delta from {node}: {error}");
                return;
            }
        };
        let seq = delta.seq;
        let outcome = self.interest.remote_delta(&node, delta);
        if outcome.needs_snapshot {
            // Confirmed once the snapshot (which holds it) is in effect on the shards.
            let waited = self.after_snapshot.entry(node.clone()).or_insert(seq);
            *waited = (*waited).max(seq);
            self.request_snapshot(node);
            return;
        }
        self.union_changed(outcome.union, Some((node, seq)));
    }

    pub(super) fn request_snapshot(&mut self, node: String) {
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

    pub(super) async fn answer_sync(&mut self, message: async_nats::Message) {
        self.send_delta().await;
        let Some(reply) = message.reply else { return };
        let snapshot = wire::encode_snapshot(&self.interest.snapshot(self.boot));
        if let Some(nats) = &self.nats {
            let _ = nats.client.publish(reply, snapshot).await;
        }
    }

    pub(super) fn delta_acked(&mut self, payload: &[u8]) {
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
    pub(super) fn complete_deltas(&mut self) {
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
                for (shard, reply) in done.replies {
                    self.send_shard(shard, true, reply);
                }
            }
        }
    }

    pub(super) async fn send_delta(&mut self) {
        let delta = if std::mem::take(&mut self.announce) {
            Some(self.interest.take_delta_always(self.boot))
        } else {
            self.interest.take_delta(self.boot)
        };
        let Some(delta) = delta else {
            return;
        };
        let seq = delta.seq;
        let live = self.connected && self.nats.is_some();
        if let (Some(nats), true) = (&self.nats, live) {
            let payload = wire::encode_delta(&delta);
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
            replies: Vec::new(),
            deadline: Instant::now() + self.config.ack_timeout,
        });
    }

    pub(super) async fn end_of_turn(&mut self) {
        self.send_delta().await;
        let (local, remote) = self.interest.filter_counts();
        self.stats.set_filters(local, remote);
        let replies = std::mem::take(&mut self.turn_replies);
        if !replies.is_empty() {
            match self.pending.back_mut() {
                Some(last) => last.replies.extend(replies),
                None => {
                    for (shard, reply) in replies {
                        self.send_shard(shard, true, reply);
                    }
                }
            }
        }
        self.complete_deltas();
    }

    pub(super) async fn renew_liveness(&mut self) {
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

    /// The liveness entries, read: a node whose entry expired (missing from two reads in a row)
    /// is away (QoS 1/2 for it keep going to its mailbox, where it finds them when it comes
    /// back) and forgotten after [`nats::MAILBOX_MAX_AGE`], when its mailbox would drop them
    /// anyway.
    pub(super) fn live_nodes(&mut self, nodes: Vec<(String, String)>) {
        let me = self.config.node.clone();
        let fresh: HashMap<String, String> = nodes.into_iter().filter(|(n, _)| *n != me).collect();
        let missing: Vec<String> = self
            .interest
            .nodes()
            .filter(|n| !fresh.contains_key(*n))
            .map(str::to_string)
            .collect();
        let now = Instant::now();
        // Away only after two reads in a row (2 s apart) missed the node: a node that has just
        // joined (its interest can arrive before its first liveness entry is readable) or whose
        // renewal raced this read is not cut off from QoS 0 for a whole round.
        let missed_before = std::mem::take(&mut self.missing_once);
        for node in missing {
            if !self.interest.is_away(&node) && !missed_before.contains(&node) {
                self.missing_once.insert(node);
                continue;
            }
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
        // Share groups whose members on a node away (or back) count differently now.
        self.union_changed(Vec::new(), None);
        self.stats.set_nodes(fresh.len() + 1);
        self.live = fresh;
    }
}
