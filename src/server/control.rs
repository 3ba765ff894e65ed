//! The control shard: one light executor beside the data shards (unpinned, confined to the process's
//! CPU mask). Every second it reads each data shard's snapshot (`snapshot.rs`), aggregates them and
//! feeds the two publishers:
//! - `$SYS/broker/...` every `sys_interval` (`sys_topics.rs`; the process's memory and CPU are read
//!   from `/proc/self` at that moment, not more often), published retained through the normal
//!   path: one bus message per topic to *every* data shard, which stores it and delivers it to its
//!   local subscribers;
//! - the Prometheus recorder (`prometheus.rs`), served at `/metrics` by `http.rs` when
//!   `metrics.bind` is configured;
//! - the admin API (`admin/`) when `admin` is configured: the connections here, the work on a
//!   thread of its own.
//!
//! It never sits on the message path: data shards do not wait for it, and it reaches them only
//! through their inboxes' data lanes (a full lane drops that `$SYS` update, counted in the log).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_lite::FutureExt;
use shards::{BusSender, SendError, ShardContext};

use crate::broker::{BusMessage, MemoryBudget, Message};
use crate::protocol::{QoS, TopicName};

use super::prometheus::process::ProcessStats;
use super::prometheus::{BrokerWide, BusDepth, Exporter};
use super::shard::ShardMessage;
use super::snapshot::{self, ShardSnapshot, SnapshotBoard, Totals};
use super::sys_topics::{self, LoadAverages, ProcessUsage, SysInput};

/// How often the control shard reads the snapshots (they are refreshed once a second).
const TICK: Duration = Duration::from_secs(1);
/// How often the exporter's upkeep runs.
const UPKEEP_EVERY: u64 = 5;

/// Everything the control shard is started with (moved to its thread).
pub(crate) struct ControlSetup {
    pub board: SnapshotBoard,
    pub bus: BusSender<ShardMessage>,
    /// `Duration::ZERO`: no `$SYS`.
    pub sys_interval: Duration,
    /// Bound, not yet listening on the control shard.
    pub metrics: Option<std::net::TcpListener>,
    /// The admin API (`admin/`), if configured.
    pub admin: Option<super::admin::AdminSetup>,
    pub started: Instant,
    /// The broker-wide memory budget (its gauges go to `/metrics`).
    pub memory: Arc<MemoryBudget>,
    /// The bridges' counters (their series go to `/metrics`).
    pub bridges: Vec<Arc<crate::bridge::BridgeStats>>,
    /// The cluster link's counters (`cluster:`), for `/metrics` and `$SYS`.
    pub cluster: Option<Arc<crate::cluster::ClusterStats>>,
}

/// The control shard's state between ticks.
struct Control {
    setup_bus: BusSender<ShardMessage>,
    board: SnapshotBoard,
    sys_interval: Duration,
    started: Instant,
    exporter: Option<Exporter>,
    memory: Arc<MemoryBudget>,
    bridges: Vec<Arc<crate::bridge::BridgeStats>>,
    cluster: Option<Arc<crate::cluster::ClusterStats>>,
    latest: Vec<ShardSnapshot>,
    load: LoadAverages,
    /// Memory and CPU of the process, read from `/proc/self` when `$SYS` is published.
    process: ProcessUsage,
    clients_maximum: u64,
    last_tick: Option<Instant>,
    last_sys: Option<Instant>,
    ticks: u64,
}

/// The control shard's root future: ends when the broker stops.
pub(crate) async fn run(ctx: ShardContext, setup: ControlSetup) {
    let shards = setup.board.len();
    let metrics_listener = match setup.metrics.map(shards::TcpAcceptor::new) {
        Some(Ok(listener)) => Some(listener),
        Some(Err(error)) => {
            log::error!("metrics endpoint unusable: {error}");
            None
        }
        None => None,
    };
    let control = Rc::new(RefCell::new(Control {
        setup_bus: setup.bus,
        board: setup.board,
        sys_interval: setup.sys_interval,
        started: setup.started,
        memory: setup.memory,
        bridges: setup.bridges,
        cluster: setup.cluster,
        exporter: metrics_listener.as_ref().map(|_| Exporter::new()),
        latest: vec![ShardSnapshot::default(); shards],
        load: LoadAverages::default(),
        process: ProcessUsage::default(),
        clients_maximum: 0,
        last_tick: None,
        last_sys: None,
        ticks: 0,
    }));
    // Every family exists (at zero) from the first scrape on, before the first tick.
    control.borrow().prime(Instant::now());
    if !setup.sys_interval.is_zero() {
        // The CPU baseline: the first `cpu/percent` covers the time from here.
        let mut control = control.borrow_mut();
        let at = Instant::now().saturating_duration_since(control.started);
        control.sample_process(at);
    }
    if let Some(listener) = metrics_listener {
        let for_render = control.clone();
        let render: Rc<dyn Fn() -> String> = Rc::new(move || {
            let control = for_render.borrow();
            match &control.exporter {
                Some(exporter) => exporter.render(&control.latest),
                None => String::new(),
            }
        });
        shards::rt::spawn(super::http::serve(listener, render)).detach();
    }
    if let Some(admin) = setup.admin {
        shards::rt::spawn(super::admin::serve(admin)).detach();
    }
    if setup.sys_interval.is_zero() {
        log::debug!("$SYS disabled (sys_interval: 0)");
    } else {
        log::debug!("$SYS published every {:?}", setup.sys_interval);
    }
    let ticking = async {
        loop {
            shards::rt::sleep(TICK).await;
            control.borrow_mut().tick(Instant::now());
        }
    };
    ticking.or(ctx.stopped()).await;
    log::debug!("control shard stopped");
}

impl Control {
    fn prime(&self, now: Instant) {
        if let Some(exporter) = &self.exporter {
            let totals = Totals::of(&self.latest);
            let uptime = now.saturating_duration_since(self.started);
            exporter.update(
                &self.latest,
                &self.bus_depths(),
                &totals,
                BrokerWide {
                    uptime_seconds: uptime.as_secs_f64(),
                    clients_maximum: 0,
                    memory: &self.memory,
                    bridges: &self.bridges,
                    cluster: self.cluster.as_deref(),
                },
                now,
            );
        }
    }

    fn tick(&mut self, now: Instant) {
        self.ticks += 1;
        self.latest = snapshot::read_all(&self.board);
        let totals = Totals::of(&self.latest);
        self.clients_maximum = self.clients_maximum.max(totals.sessions_online);
        let elapsed = self
            .last_tick
            .map_or(TICK, |last| now.saturating_duration_since(last));
        self.last_tick = Some(now);
        self.load.update(&totals, elapsed);
        let bus = self.bus_depths();
        let uptime = now.saturating_duration_since(self.started);
        if let Some(exporter) = &self.exporter {
            exporter.update(
                &self.latest,
                &bus,
                &totals,
                BrokerWide {
                    uptime_seconds: uptime.as_secs_f64(),
                    clients_maximum: self.clients_maximum,
                    memory: &self.memory,
                    bridges: &self.bridges,
                    cluster: self.cluster.as_deref(),
                },
                now,
            );
            if self.ticks.is_multiple_of(UPKEEP_EVERY) {
                exporter.run_upkeep();
            }
        }
        let due = !self.sys_interval.is_zero()
            && self.last_sys.is_none_or(|last| {
                now.saturating_duration_since(last) + TICK / 10 >= self.sys_interval
            });
        if due {
            self.last_sys = Some(now);
            let depths: Vec<usize> = bus.iter().map(|d| d.data).collect();
            let unix_time = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            self.sample_process(uptime);
            let messages = sys_topics::sys_messages(&SysInput {
                version: env!("CARGO_PKG_VERSION"),
                uptime,
                unix_time,
                shards: &self.latest,
                bus_depths: &depths,
                totals: &totals,
                clients_maximum: self.clients_maximum,
                load: &self.load,
                process: &self.process,
                cluster: self.cluster.as_deref(),
            });
            self.publish_sys(messages);
        }
    }

    /// Reads `/proc/self` (once per `$SYS` publication) into [`ProcessUsage`].
    fn sample_process(&mut self, at: Duration) {
        let stats = ProcessStats::read();
        self.process
            .update(stats.cpu_seconds, stats.resident_bytes, at);
    }

    fn bus_depths(&self) -> Vec<BusDepth> {
        (0..self.board.len())
            .map(|shard| BusDepth {
                data: self.setup_bus.data_len(shard),
                control: self.setup_bus.control_len(shard),
            })
            .collect()
    }

    /// Sends every `$SYS` message, retained, to every data shard.
    fn publish_sys(&self, messages: Vec<(String, String)>) {
        let mut dropped = 0usize;
        for (topic, payload) in messages {
            let topic = match TopicName::new(topic.as_str()) {
                Ok(topic) => topic,
                Err(error) => {
                    log::warn!("$SYS: invalid topic {topic}: {error:?}");
                    continue;
                }
            };
            let message = Message {
                topic,
                payload: Bytes::from(payload),
                qos: QoS::AtMostOnce,
                retain: true,
                properties: None,
            };
            for shard in 0..self.board.len() {
                let wrapped = ShardMessage::Core(BusMessage::Publish(message.clone()), None);
                match self.setup_bus.try_send_data(shard, wrapped) {
                    Ok(()) => {}
                    Err(SendError::Full(_)) => dropped += 1,
                    // The shard has stopped: the broker is shutting down.
                    Err(_) => return,
                }
            }
        }
        if dropped > 0 {
            log::warn!("$SYS: {dropped} update(s) dropped: shard inboxes full");
        }
    }
}

/// Whether the broker needs a control shard at all.
pub(crate) fn wanted(sys_interval: Duration, http: bool) -> bool {
    !sys_interval.is_zero() || http
}

/// A fresh snapshot board for `shards` data shards (shared with the data shards).
pub(crate) fn board(shards: usize) -> SnapshotBoard {
    snapshot::new_board(shards)
}
