//! amqtt-bench: the MQTT load generator and broker comparison harness of amqtt-rs.
//!
//! Library layout (the `amqtt-bench` binary in `main.rs` is a thin CLI over it):
//! - [`engine`]: worker threads driving many non-blocking MQTT connections with `mio`; pacing
//!   (closed and open loop), delivery accounting, latency recording.
//! - [`scenario`]: `pairs`, `fanin`, `fanout`, `conns`, `retained`, `storm`: each builds an
//!   engine plan, walks it through its phases, samples the broker, and returns a [`report::Report`].
//! - [`report`]: the summary table, the JSON object, the live progress line.
//! - [`compare`]: starts brokers from command lines, runs a scenario matrix against each in turn,
//!   writes `RESULTS.md` and an SVG chart.
//! - [`simple`]: a blocking client for set-up and clean-up (retained preload, session removal,
//!   readiness probes).
//! - [`tls`]: the rustls client configuration for `mqtts://` (`--cafile`, `--insecure`).
//! - [`placement`]: shard-aware client ids (`--shards`, `--placement same|cross`), and which
//!   cluster node each client connects to (`--url a,b`).
//! - [`payload`], [`tracker`], [`stats`], [`url`], [`procstat`], [`clock`], [`sys`]: the small
//!   pieces (message header, loss/duplicate/order accounting, HDR percentiles, broker URLs,
//!   `/proc` sampling, the monotonic clock, Linux calls).
//!
//! The MQTT codec is amqtt's own (`amqtt::protocol`): the harness has no second one.

pub mod clock;
pub mod compare;
pub mod credentials;
pub mod engine;
pub mod payload;
pub mod placement;
pub mod procstat;
pub mod report;
pub mod scenario;
pub mod simple;
pub mod stats;
pub mod sys;
pub mod tls;
pub mod tracker;
pub mod url;
