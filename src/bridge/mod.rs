//! Bridges to other MQTT brokers (`bridges:` in the configuration, Mosquitto's model): each
//! bridge is one client of a remote broker and one session of this broker, and moves messages
//! between them by its `topics:` entries, prefixes swapped.
//!
//! - Threads, not shards: each bridge runs on a thread of its own (`run.rs`), the remote side on
//!   `src/client`'s driver, the local side on a blocking loopback connection (`local.rs`). A slow
//!   or unreachable remote never holds up a data shard.
//! - The local side is a persistent session of this broker (client id `local_client_id`) over
//!   loopback to a plain TCP listener: the broker queues the bridge's QoS 1/2 messages like any
//!   subscriber's, journals them with persistence on, and sends them again after a reconnect or a
//!   restart. The bridge acknowledges one to the broker only once the remote broker has (PUBACK,
//!   PUBCOMP): a message bound for the remote is never dropped between the two.
//! - The remote side (`mqtt`, `mqtts`, `ws`, `wss`) keeps its session (`clean_session: false` by
//!   default) and reconnects by itself; when a connection cannot be made at all the bridge retries
//!   with exponential back-off, 1 s to 60 s with jitter.
//! - `protocol_version`: both connections speak MQTT 3.1.1 or both speak MQTT 5 (`wire.rs` for
//!   the local session, `remote.rs` for the remote's options); at 5 a message's properties travel
//!   with it ([`crate::protocol::Message::properties`]) both ways.
//! - Loops (`both`, or `in` and `out` entries that overlap): at MQTT 5 both sessions subscribe
//!   with No Local, so no broker hands the bridge back its own copies. MQTT 3.1.1 has no "no
//!   local": the bridge remembers, for a minute, each copy it published on a side (topic and
//!   payload digest); when that side hands the copy back, it goes no further (`topics.rs`,
//!   [`topics::LoopGuard`]).
//! - State: `$SYS/broker/bridges/NAME/state` (retained `connected` / `disconnected`), why the last
//!   connection attempt failed ([`StateSink`]), and [`BridgeStats`] (Prometheus:
//!   `amqtt_bridge_connected`, `amqtt_bridge_messages_total`).
//!
//! What must not live here: knowledge of the shards (the server hands in the listener's address
//! and a function that publishes the state); MQTT framing beyond the local session's needs.

mod event;
mod local;
mod remote;
mod run;
pub(crate) mod topics;
mod wire;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::config::BridgeConfig;

/// How long a stopping bridge waits for the remote to acknowledge what it already forwarded, and
/// for this broker to acknowledge what it forwarded here.
pub const DRAIN_WITHIN: Duration = Duration::from_secs(3);

/// One bridge's counters and state, shared with the metrics.
#[derive(Debug, Default)]
pub struct BridgeStats {
    /// The bridge's name under `bridges:`.
    pub name: String,
    connected: AtomicBool,
    messages_out: AtomicU64,
    messages_in: AtomicU64,
    echoes_dropped: AtomicU64,
}

impl BridgeStats {
    fn new(name: &str) -> BridgeStats {
        BridgeStats {
            name: name.to_string(),
            ..BridgeStats::default()
        }
    }
    /// Connected to both brokers.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
    /// Messages the remote broker acknowledged (QoS 0: written to it).
    pub fn messages_out(&self) -> u64 {
        self.messages_out.load(Ordering::Relaxed)
    }
    /// Messages from the remote broker published here.
    pub fn messages_in(&self) -> u64 {
        self.messages_in.load(Ordering::Relaxed)
    }
    /// Copies a broker handed back to the bridge that published them (not forwarded again).
    pub fn echoes_dropped(&self) -> u64 {
        self.echoes_dropped.load(Ordering::Relaxed)
    }
}

/// Publishes a bridge's state where the operator sees it (`$SYS`): its name, connected, and
/// when not, why the last attempt failed (e.g. the remote's CONNACK refusal, named).
pub type StateSink = Box<dyn Fn(&str, bool, Option<&str>) + Send>;

/// The running bridges; [`stop`](Self::stop) ends them.
pub struct Bridges {
    running: Vec<(flume::Sender<event::Event>, JoinHandle<()>)>,
    stats: Vec<Arc<BridgeStats>>,
}

impl Bridges {
    /// Starts one thread per bridge; its local session connects to `local` (a plain TCP listener
    /// of this broker; its address with a loopback IP). `state` publishes each state change.
    pub fn start(
        configs: &[BridgeConfig],
        local: impl Fn(&BridgeConfig) -> Result<SocketAddr, String>,
        state: impl Fn() -> StateSink,
    ) -> Result<Bridges, String> {
        let mut bridges = Bridges {
            running: Vec::new(),
            stats: Vec::new(),
        };
        for config in configs {
            let stats = Arc::new(BridgeStats::new(&config.name));
            let started = local(config).and_then(|local| {
                let setup = run::Setup {
                    config: config.clone(),
                    local,
                    stats: Arc::clone(&stats),
                    state: state(),
                };
                run::spawn(setup)
                    .map_err(|e| format!("bridge '{}': cannot start: {e}", config.name))
            });
            match started {
                Ok(running) => {
                    bridges.running.push(running);
                    bridges.stats.push(stats);
                }
                Err(reason) => {
                    // The ones already running stop with the failed start.
                    bridges.stop();
                    return Err(reason);
                }
            }
        }
        Ok(bridges)
    }

    /// Every bridge's counters, in configuration order.
    pub fn stats(&self) -> &[Arc<BridgeStats>] {
        &self.stats
    }

    /// Stops every bridge (each drains for at most [`DRAIN_WITHIN`]) and waits for their threads,
    /// a second longer at most: one still connecting to an unresponsive remote is left to end by
    /// itself (it holds nothing that must be written).
    pub fn stop(self) {
        for (events, _) in &self.running {
            let _ = events.send(event::Event::Stop);
        }
        let deadline = std::time::Instant::now() + DRAIN_WITHIN + Duration::from_secs(1);
        for (_, thread) in self.running {
            while !thread.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if thread.is_finished() {
                let _ = thread.join();
            } else {
                log::warn!("a bridge did not stop in time (connecting?); not waiting for it");
            }
        }
    }
}
