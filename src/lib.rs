//! # amqtt-rs
//!
//! A thread-per-core MQTT 3.1.1 broker: a Rust re-implementation of aMQTT (`pip install amqtt`),
//! configured by aMQTT's YAML, built on pinned executors (one shard per CPU): glommio (io_uring) where the
//! kernel allows it, else an epoll-only executor of the `shards` crate (`runtime:` key).
//!
//! ## Embedding
//! The CLI raises the process's limits itself; an embedding program calls `shards::raise_limits()`
//! (the `shards` crate of this workspace) before starting the broker, or runs with enough
//! `ulimit -l`. By default the broker runs one shard per CPU and pins each to its CPU: an
//! embedding program that needs CPUs for itself sets `shards` and `pin_shards: false` (see
//! [`Broker::new`]).
//! ```no_run
//! use amqtt::plugins::{ClientInfo, EventPlugin, Plugin};
//! use amqtt::protocol::{Message, QoS};
//!
//! /// Hears aMQTT's broker events (every method is a no-op by default).
//! struct Audit;
//!
//! impl EventPlugin for Audit {
//!     fn name(&self) -> &str {
//!         "audit"
//!     }
//!     fn client_connected(&self, client: &ClientInfo<'_>) {
//!         println!("{} connected", client.client_id);
//!     }
//!     fn retained_message(&self, message: &Message) {
//!         println!("retained {} ({} bytes)", message.topic, message.payload.len());
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = amqtt::BrokerConfig::from_file("broker.yaml".as_ref())?;
//! let handle = amqtt::Broker::new(config)?
//!     .with_plugin(Plugin::events(Audit))
//!     .start()?;
//! println!("listening on {:?}", handle.address("default"));
//! // aMQTT's broadcast_message and retain_message; each blocks until a shard took it.
//! handle.publish("alerts/door", "open", QoS::AtLeastOnce, false)?;
//! handle.retain_message("status/broker", "up", QoS::AtLeastOnce)?;
//! handle.delete_retained("status/old")?;
//! for session in handle.sessions()? {
//!     println!("{} connected={} queued={}", session.client_id, session.connected, session.queued);
//! }
//! println!("{} subscriptions", handle.subscriptions()?.len());
//! for retained in handle.retained_topics()? {
//!     println!("{} ({} bytes)", retained.topic, retained.size);
//! }
//! handle.stop()?;
//! # Ok(())
//! # }
//! ```
//! What host calls mean and cost (blocking, "accepted", listing pages): [`BrokerHandle::publish`]
//! and the methods after it; the events: [`plugins::EventPlugin`].
//!
//! ## Layout
//! - [`protocol`]: the wire format. One file per packet type; `decode` and `encode`; validated
//!   `TopicName` / `TopicFilter`. No I/O. The only codec: broker, client and bench all use it.
//!   `protocol::v5`: MQTT 5's packets (AUTH included), properties and reason codes on the same
//!   primitives; `v5::decode` reads a level-5 connection, `decode` a 3.1/3.1.1 one.
//! - [`broker`]: the sans-IO broker of one shard. `BrokerCore::handle_*` take bytes, bus messages and
//!   `now`, and leave bytes in connection outboxes and `Action`s for the runtime. `broker/handlers/`
//!   cuts a connection's bytes into packets (`handle_bytes`, one `match`) and has one file per inbound
//!   packet type, CONNECT included: to find how a packet is handled, open its file there;
//!   `broker/routing.rs` is where a publish goes next.
//! - [`config`]: aMQTT's broker YAML, validated at start; errors name the file, key and reason.
//! - [`client`]: the MQTT client (aMQTT's `MQTTClient`): a sans-IO `client::state` plus a driver
//!   thread with auto-reconnect; `amqtt_pub` / `amqtt_sub` are thin CLIs over it.
//! - [`bridge`]: bridges to other MQTT brokers (`bridges:`): a thread per bridge, one client of the
//!   remote broker and one persistent session of this one over loopback, messages moved between
//!   them by topic pattern with prefixes swapped, acknowledged locally once the remote has.
//! - [`cluster`]: this broker as a node of a cluster on NATS (`cluster:`): the cluster link, one
//!   more participant on the bus on a thread of its own (tokio, async-nats: nowhere else), which
//!   carries the other nodes' interest (filters, share groups' members) to the shards and the
//!   publishes and retained messages they want to them through core NATS and JetStream.
//! - [`logging`]: the `amqtt` binary's log: standard error or `log_file` (reopened on SIGHUP),
//!   in text, journald (`<N>` priorities) or JSON lines; `RUST_LOG` filtering.
//! - [`plugins`]: authentication (runs off the event loop, before the core sees a CONNECT), topic
//!   checks and event hooks (called by the core; the broker's start and shutdown events by the
//!   thread that starts and stops it); the built-ins `auth_anonymous`, `auth_file`, `auth_cert`,
//!   `auth_jwt` / `topic_jwt`, `topic_acl`, `topic_taboo`, `auth_http` / `topic_http` (an HTTP
//!   service decides; its ACL answers fetched before the core asks, `plugins::TopicPrefetch`),
//!   MQTT 5 enhanced authentication methods (`plugins::AuthMethod`, run step by step by the core:
//!   `SCRAM-SHA-256` from the password file), and the password file format.
//! - [`server`]: the thin shell that runs `BrokerCore` on the `shards` runtime: accept loops,
//!   one task per connection (its reader and writer), the cross-shard bus loop, timers, and the control shard
//!   (`$SYS` topics, Prometheus metrics, the admin API, off the message path); configuration
//!   reload without a restart ([`BrokerHandle::reload`], SIGHUP). The embeddable [`Broker`].
//! - `shards` (separate crate): pinned executors, the per-shard epoll set that wakes socket reads
//!   and writes (plain non-blocking `recv`/`send`), SO_REUSEPORT listeners, the cross-shard bus,
//!   connection hand-off. Knows no MQTT. It is the only crate that names the executor: this crate
//!   spawns, sleeps, yields and runs blocking work through `shards::rt`, which runs on glommio or
//!   on the epoll fallback (chosen at start: `runtime: auto | glommio | epoll`, `AMQTT_RUNTIME`;
//!   `auto` falls back when `io_uring_setup` is refused, e.g. by Docker's default seccomp profile).
//!
//! ## The path of one PUBLISH
//! ```text
//! socket ─► server/read_loop.rs: bytes read into the connection's buffer
//!        ─► BrokerCore::handle_bytes (broker/handlers/mod.rs, on the client id's home shard):
//!           the frame loop: a QoS 0 PUBLISH is peeked in place, any other packet decoded
//!        ─► broker/handlers/publish.rs: handle_borrowed (in place) or handle (decoded; PUBACK,
//!           PUBREC), counted once by `received`
//!        ─► broker/routing.rs: local subscription trie ─► subscribers' outboxes (`Action::Flush`)
//!           └► remote-interest tables ─► one batch per interested shard (`Action::Bus`)
//!        ─► server/shard.rs applies the actions: wakes the subscribers' connection tasks (one write
//!           each, server/write_side.rs) and sends the batches over the bus ─► their tries ─► …
//! ```
//! When the core asks for a wait (`Next::PausePublisher`: near `memory_limit`, or a QoS 1/2 PUBLISH
//! while a subscriber is behind, `broker/flow_control.rs`) or a bus lane is
//! full, the reader stops reading that publisher until it is over, then hands the core the rest.
//! A connection is accepted on whichever shard the kernel picks (SO_REUSEPORT), reads its CONNECT
//! there, and moves to `home_shard(client_id)` so that a client id's session, takeover and will are
//! always handled in one place. A SUBSCRIBE whose filter is new to a shard is announced to the other
//! shards, and its SUBACK waits for their confirmation. Retained messages are broadcast, so every shard
//! holds the full retained store (payloads shared).

#![warn(missing_docs)]

pub mod bridge;
pub mod broker;
pub mod client;
pub mod cluster;
pub mod config;
pub mod logging;
pub mod persist;
pub mod plugins;
pub mod protocol;
pub mod server;
pub mod transport;

pub use config::BrokerConfig;
pub use server::{
    Broker, BrokerHandle, ConfigOverrides, HostError, ReloadError, ReloadReport, RetainedInfo,
    SessionInfo, StartError, SubscriptionInfo,
};
