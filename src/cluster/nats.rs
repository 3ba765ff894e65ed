//! The cluster's side of NATS: connecting with the `cluster:` block's options, and creating (or
//! finding) what the nodes share: the mailbox stream (QoS 1/2 publishes, one subject and one
//! durable consumer per node), the retained stream (one message per topic), the live nodes'
//! bucket (entries expire unless renewed), the session directory (one message per client id,
//! `directory.rs`), and this node's subscriptions (hand-off and late hand-over requests among
//! them).
//!
//! Async functions run on the link's tokio thread; nothing here touches the broker's shards.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use async_nats::{Client, ConnectOptions, Event, ServerAddr, Subscriber};
use futures_util::StreamExt;

use crate::config::ClusterConfig;

use super::wire::Names;

/// How long a node's liveness entry lasts without renewal.
pub const NODE_TTL: Duration = Duration::from_secs(10);
/// How long a QoS 1/2 publish waits in a node's mailbox for a node that is away.
pub const MAILBOX_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// How often the client pings its NATS server (as often as the liveness entry is renewed).
const PING_INTERVAL: Duration = Duration::from_secs(2);

/// Everything the link reads from NATS once set up.
pub struct Nats {
    pub client: Client,
    pub js: jetstream::Context,
    pub nodes: stream::Stream,
    pub sessions: stream::Stream,
    pub interest: Subscriber,
    pub acks: Subscriber,
    pub sync: Subscriber,
    pub qos0: Subscriber,
    pub handoff: Subscriber,
    pub late: Subscriber,
    pub mailbox: consumer::pull::Stream,
    pub retained: consumer::pull::Ordered,
    /// The retained stream held nothing at set-up (nothing to load before going live).
    pub retained_empty: bool,
    /// Messages that waited in this node's mailbox at set-up (read before the sessions
    /// recovered here are checked against the directory: `link/late.rs`).
    pub mailbox_backlog: u64,
}

/// Connects (in the background: the returned client reconnects for ever); connection events go
/// to `events`.
pub async fn connect(
    config: &ClusterConfig,
    events: tokio::sync::mpsc::UnboundedSender<Event>,
) -> Result<Client, String> {
    let mut options = ConnectOptions::new()
        .name(format!("amqtt node {}", config.node))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(2))
        .request_timeout(Some(Duration::from_secs(2)))
        // A connection that silently stops answering (a partition: no FIN, no RST) counts as lost
        // after three unanswered pings: ~6 s, not async-nats' default of 3 minutes. Local
        // service does not wait for it; the QoS 1/2 for other nodes is kept until NATS is back.
        .ping_interval(PING_INTERVAL)
        .event_callback(move |event| {
            let events = events.clone();
            async move {
                let _ = events.send(event);
            }
        });
    if let (Some(user), Some(password)) = (&config.user, &config.password) {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(token) = &config.token {
        options = options.token(token.clone());
    }
    if let Some(path) = &config.credentials {
        options = options
            .credentials_file(path)
            .await
            .map_err(|e| format!("cluster.credentials {}: {e}", path.display()))?;
    }
    if let Some(ca) = &config.ca_file {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (&config.certfile, &config.keyfile) {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    let servers = config
        .nats
        .iter()
        .map(|url| {
            url.parse::<ServerAddr>()
                .map_err(|e| format!("cluster.nats '{url}': {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    options
        .connect(servers)
        .await
        .map_err(|e| format!("cannot connect to NATS: {e}"))
}

/// Creates (or finds) the streams, the bucket, the consumers and the subscriptions. Fails while
/// NATS (or its JetStream) is not reachable; the link tries again.
pub async fn set_up(
    client: &Client,
    config: &ClusterConfig,
    names: &Names,
) -> Result<Nats, String> {
    let js = jetstream::new(client.clone());
    let node = &config.node;
    let err = |what: &str| {
        let what = what.to_string();
        move |e: &dyn std::fmt::Display| format!("{what}: {e}")
    };
    let mailbox_stream = js
        .get_or_create_stream(stream::Config {
            name: names.mailbox_stream(),
            subjects: vec![names.mailbox("*")],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            num_replicas: config.replicas,
            max_age: MAILBOX_MAX_AGE,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .map_err(|e| err("the mailbox stream")(&e))?;
    // A stream that keeps the last message of each subject, on disk.
    let last_per_subject = |name: String, subject: String| stream::Config {
        name,
        subjects: vec![subject],
        max_messages_per_subject: 1,
        storage: stream::StorageType::File,
        num_replicas: config.replicas,
        ..Default::default()
    };
    let retained_stream = js
        .get_or_create_stream(last_per_subject(
            names.retained_stream(),
            names.retained_all(),
        ))
        .await
        .map_err(|e| err("the retained stream")(&e))?;
    let mut retained_stream = retained_stream;
    let retained_empty = retained_stream
        .info()
        .await
        .map_err(|e| err("the retained stream's state")(&e))?
        .state
        .messages
        == 0;
    // A stream, not a KV bucket: async-nats 0.52's bucket calls do not read nats-server 2.9's
    // answers. One message per node, expiring unless renewed.
    let nodes = js
        .get_or_create_stream(stream::Config {
            name: names.nodes_stream(),
            subjects: vec![names.node("*")],
            max_messages_per_subject: 1,
            max_age: NODE_TTL,
            storage: stream::StorageType::Memory,
            num_replicas: config.replicas,
            ..Default::default()
        })
        .await
        .map_err(|e| err("the nodes stream")(&e))?;
    // The session directory: a stream for the same reason; its sequences fence takeovers.
    let sessions = js
        .get_or_create_stream(last_per_subject(
            names.sessions_stream(),
            names.sessions_all(),
        ))
        .await
        .map_err(|e| err("the sessions stream")(&e))?;
    let durable = format!("mailbox-{node}");
    let mailbox = mailbox_stream
        .get_or_create_consumer(
            &durable,
            consumer::pull::Config {
                durable_name: Some(durable.clone()),
                filter_subject: names.mailbox(node),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                max_ack_pending: 20_000,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| err("the mailbox consumer")(&e))?;
    let info = mailbox.cached_info();
    let mailbox_backlog = info.num_pending + info.num_ack_pending as u64;
    let mailbox = mailbox
        .messages()
        .await
        .map_err(|e| err("the mailbox consumer's messages")(&e))?;
    let retained = retained_stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: names.retained_all(),
            deliver_policy: consumer::DeliverPolicy::LastPerSubject,
            ..Default::default()
        })
        .await
        .map_err(|e| err("the retained consumer")(&e))?
        .messages()
        .await
        .map_err(|e| err("the retained consumer's messages")(&e))?;
    let subscribe = |subject: String| {
        let client = client.clone();
        async move {
            client
                .subscribe(subject.clone())
                .await
                .map_err(|e| format!("subscribing to {subject}: {e}"))
        }
    };
    Ok(Nats {
        client: client.clone(),
        nodes,
        sessions,
        handoff: subscribe(names.handoff(node)).await?,
        late: subscribe(names.late(node)).await?,
        interest: subscribe(names.interest_all()).await?,
        acks: subscribe(names.interest_ack(node)).await?,
        sync: subscribe(names.sync(node)).await?,
        qos0: subscribe(names.qos0(node)).await?,
        mailbox,
        retained,
        retained_empty,
        mailbox_backlog,
        js,
    })
}

/// What the link's own state holds of NATS.
pub struct Handles {
    pub client: Client,
    pub js: jetstream::Context,
    pub nodes: stream::Stream,
    pub sessions: stream::Stream,
    pub retained_empty: bool,
    pub mailbox_backlog: u64,
}

/// What the link's loop reads from NATS.
pub struct Feeds {
    pub interest: Subscriber,
    pub acks: Subscriber,
    pub sync: Subscriber,
    pub qos0: Subscriber,
    pub handoff: Subscriber,
    pub late: Subscriber,
    pub mailbox: consumer::pull::Stream,
    pub retained: consumer::pull::Ordered,
}

impl Nats {
    /// Its handles and its feeds, apart.
    pub fn split(self) -> (Handles, Feeds) {
        (
            Handles {
                client: self.client,
                js: self.js,
                nodes: self.nodes,
                sessions: self.sessions,
                retained_empty: self.retained_empty,
                mailbox_backlog: self.mailbox_backlog,
            },
            Feeds {
                interest: self.interest,
                acks: self.acks,
                sync: self.sync,
                qos0: self.qos0,
                handoff: self.handoff,
                late: self.late,
                mailbox: self.mailbox,
                retained: self.retained,
            },
        )
    }
}

/// The nodes whose liveness entries are current, with their start ids.
pub async fn live_nodes(
    nodes: &stream::Stream,
    names: &Names,
) -> Result<Vec<(String, String)>, String> {
    let mut subjects = nodes
        .info_with_subjects(names.node("*"))
        .await
        .map_err(|e| e.to_string())?;
    let mut found = Vec::new();
    while let Some(subject) = subjects.next().await {
        found.push(subject.map_err(|e| e.to_string())?.0);
    }
    let mut out = Vec::new();
    for subject in found {
        let Some(node) = subject.rsplit('.').next().map(str::to_string) else {
            continue;
        };
        // A failed read fails the whole answer: a live node must not look away because one
        // request timed out (its entry may also have expired since the listing: the next read
        // then lists it no more).
        let message = nodes
            .get_last_raw_message_by_subject(&subject)
            .await
            .map_err(|e| format!("{subject}: {e}"))?;
        out.push((node, String::from_utf8_lossy(&message.payload).into_owned()));
    }
    Ok(out)
}
