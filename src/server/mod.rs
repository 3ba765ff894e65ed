//! The thin shell that runs the sans-IO broker on the sharded runtime: the embeddable [`Broker`].
//!
//! `Broker::new(config)?.start()?` binds every listener (one SO_REUSEPORT socket per shard), starts
//! one shard per CPU and returns a [`BrokerHandle`] that reports the bound addresses and stops it.
//! This is the only module that knows both the broker core (`crate::broker`) and the runtime
//! (`shards`); it holds no protocol rules of its own and decodes nothing: it reads bytes, hands them
//! to the core (`handle_first_bytes`, `handle_bytes`), applies the core's actions, writes the
//! outboxes, and waits where the core or a full bus lane says so. Only the control shard's `$SYS`
//! publisher and the connection log lines name `crate::protocol` types (QoS, CONNACK codes).
//!
//! From the top down (a file imports only from files below it):
//! - `facade.rs`: [`Broker`], [`BrokerHandle`], [`StartError`]: binding, starting, stopping
//!   (what the bridges get from it at start: `bridge_hooks.rs`);
//! - `admin/`: the admin HTTP API (`admin:`): connections on the control shard, the work on a
//!   thread of its own that asks the shards through `host_client.rs`;
//! - `reload.rs`: configuration reload (SIGHUP, `POST /api/v1/reload`, `BrokerHandle::reload`):
//!   the file read and everything built again before anything changes, then each shard's part
//!   sent through `host_client.rs` and applied on the shard by `reload_shard.rs` (which also
//!   starts a shard's accept loops, at start and at a reload);
//! - `embed.rs`: what the host program does with a running broker: publish, retain, list
//!   (a request into a shard's inbox, `host_client.rs` and `host_request.rs`, answered by the
//!   shard's bus loop);
//! - `shard_tasks.rs`: what a shard runs: its root task, which starts the accept loops, the bus
//!   loop (including handed-off connections) and the keep-alive tick, then shuts the shard down;
//! - `accept_loop.rs`: the accept loop of one listener socket;
//! - `connection_task.rs`: the task running one connection's life: read its first packet for the
//!   core, move it to the client id's home shard, ask for authentication, then serve it
//!   (`served.rs`: `read_loop.rs` reading bytes into the core, `write_side.rs` writing its
//!   outbox, and after a close the broker decided, the lingering close, `linger.rs`);
//! - `authenticate.rs`: the authentication plugins' verdict on a CONNECT, computed on the shard's
//!   blocking pool when it may be slow (password hashes), so the shard's loop never waits on it;
//! - `topic_prefetch.rs`: for topic plugins that ask a service (`topic_http`), the answers a
//!   connection's next packets need, fetched on the blocking pool before the core handles them
//!   (it peeks at their topics with `protocol::peek_topics`);
//! - `bus_retry.rs`: bus sends a full lane refused, retried from a task of their own;
//! - `shard.rs`: the shard's context every task borrows (`ShardRuntime`: the core, the bus, the
//!   connections' wake-ups, applying the core's actions); it spawns nothing;
//! - `held_publishers.rs`: the publishers a shard holds while a subscriber is behind, and their
//!   wake-up when none is;
//! - `settings.rs`, `runtime_stats.rs`: what the shards share read-only, and the runtime's counters;
//! - `control.rs`: the control shard (one more executor, off the message path): gathers the data
//!   shards' snapshots (`snapshot.rs`) every second, publishes `$SYS` (`sys_topics.rs`) and serves
//!   Prometheus metrics (`prometheus.rs` over `http.rs`); it runs the admin API's connections.

mod accept_loop;
mod admin;
mod authenticate;
mod bridge_hooks;
mod bus_retry;
mod cluster_claim;
mod cluster_hooks;
mod connect_rate;
mod connection_task;
mod control;
mod embed;
mod facade;
mod held_publishers;
mod host_client;
mod host_request;
mod http;
mod journal_task;
mod lifecycle;
mod linger;
mod prometheus;
mod read_loop;
mod recovery;
mod reload;
mod reload_shard;
mod runtime_stats;
mod served;
mod settings;
mod shard;
mod shard_tasks;
mod snapshot;
mod sys_topics;
mod topic_prefetch;
mod write_side;

pub use crate::broker::{RetainedInfo, SessionInfo};
pub use embed::SubscriptionInfo;
pub use facade::{Broker, BrokerHandle, StartError};
pub use host_client::{HostError, ANSWER_WITHIN};
pub use reload::{ConfigOverrides, ReloadError, ReloadReport};
