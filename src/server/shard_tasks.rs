//! What a shard runs: its root task ([`run`]), which builds the shard's context and starts the
//! shard's tasks (one accept loop per listener socket, the bus loop, the keep-alive tick), then waits
//! for the stop signal and shuts the shard down. The bus loop also starts the tasks of connections
//! handed over by other shards.
//!
//! The wiring only: what the tasks do lives in `accept_loop.rs`, `connection_task.rs` and the
//! context (`shard.rs`); nothing else in `server/` but the façade imports from here.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use shards::{BusSender, Inbox, Lane as BusLane, ShardContext};

use super::journal_task;
use super::recovery::ShardStart;
use super::settings::SharedSettings;
use super::shard::{ShardMessage, ShardRuntime};
use super::snapshot::{self, ShardSnapshot};
use super::{bus_retry, cluster_claim, connection_task, host_request, reload_shard};
use crate::broker::BusMessage;

/// The shard's root future: starts its tasks, then waits for the stop signal and shuts down.
pub(crate) async fn run(
    ctx: ShardContext,
    shared: Arc<SharedSettings>,
    bus: BusSender<ShardMessage>,
    inbox: Inbox<ShardMessage>,
    sockets: Vec<std::net::TcpListener>,
    start: Option<ShardStart>,
) {
    let rt = Rc::new(ShardRuntime::new(ctx.id, shared.clone(), bus));
    // Persistence: the recovered state first, before any listener serves.
    let journal = start.map(|start| {
        restore(&rt, &start);
        // The recovered wills' bus messages, for the other shards' subscribers.
        let blocked = rt.apply_actions();
        bus_retry::send_blocked_later(&rt, blocked);
        shards::rt::spawn(journal_task::run(rt.clone(), start.journal))
    });
    for (socket, info) in sockets.into_iter().zip(shared.listeners.iter()) {
        reload_shard::start_listener(&rt, socket, info.clone());
    }
    shards::rt::spawn(bus_loop(rt.clone(), inbox)).detach();
    shards::rt::spawn(tick_loop(rt.clone())).detach();

    ctx.stopped().await;
    rt.stopping.set(true);
    // A closed executor must not leave a socket in the SO_REUSEPORT group that accepts
    // connections nobody serves.
    for listening in rt.listening.take() {
        listening.close();
    }
    rt.core.borrow_mut().shutdown();
    let blocked = rt.apply_actions();
    drop(blocked);
    if let Some(journal) = journal {
        // The sessions just went offline: their records, and everything not yet written, are
        // written and synced before the shard ends (a clean stop loses nothing).
        rt.journal_notify.notify();
        journal.await;
    }
    // Give writers a moment to flush and close.
    let deadline = Instant::now() + Duration::from_millis(500);
    while !rt.conns.borrow().is_empty() && Instant::now() < deadline {
        shards::rt::sleep(Duration::from_millis(5)).await;
    }
    log::debug!("shard {} stopped", ctx.id);
}

/// Puts a recovered state into the shard's core: its sessions and retained messages, and the
/// subscriptions the other shards recovered (see `recovery.rs`).
fn restore(rt: &Rc<ShardRuntime>, start: &ShardStart) {
    let mut core = rt.core.borrow_mut();
    let unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let now = Instant::now();
    core.set_wall_clock(now, unix_ms);
    core.restore(&start.state, now, unix_ms);
    for (shard, filter) in &start.remote_interest {
        core.restore_remote_interest(*shard, filter);
    }
    core.announce_interest_to_link();
    core.announce_sessions_to_link();
    core.publish_recovered_wills();
}

async fn bus_loop(rt: Rc<ShardRuntime>, inbox: Inbox<ShardMessage>) {
    loop {
        let first = inbox.recv().await;
        handle_bus(&rt, lane_message(first));
        for _ in 0..255 {
            match inbox.try_recv() {
                Some(next) => handle_bus(&rt, lane_message(next)),
                None => break,
            }
        }
        let blocked = rt.apply_actions();
        bus_retry::send_blocked_later(&rt, blocked);
        shards::rt::yield_if_needed().await;
    }
}

/// A message from another shard (broker traffic for the core, or a connection to serve here) or
/// from the host program.
fn handle_bus(rt: &Rc<ShardRuntime>, message: ShardMessage) {
    match message {
        ShardMessage::Core(BusMessage::SessionClaimed { token, claim }, _) => {
            cluster_claim::answered(rt, token, claim)
        }
        ShardMessage::Core(message, stamp) => {
            if let Some(at) = stamp {
                rt.note_publish_ingress(at, 0);
            }
            rt.core.borrow_mut().handle_bus(message)
        }
        ShardMessage::ResumePublishers => rt.held.resume(),
        ShardMessage::Host(request) => {
            let peer = |conn| rt.conns.borrow().get(&conn).map(|signal| signal.peer());
            host_request::answer(&rt.core, peer, *request)
        }
        ShardMessage::Reload(reload) => reload_shard::apply(rt, *reload),
        ShardMessage::HandOff(handoff) => {
            rt.stats.borrow_mut().handoffs_received += 1;
            connection_task::spawn_isolated(rt, connection_task::handed_off(rt.clone(), handoff));
        }
    }
}

fn lane_message(lane: BusLane<ShardMessage>) -> ShardMessage {
    match lane {
        BusLane::Control(m) | BusLane::Data(m) => m,
    }
}

async fn tick_loop(rt: Rc<ShardRuntime>) {
    let mut ticks: u64 = 0;
    loop {
        shards::rt::sleep(Duration::from_millis(250)).await;
        let now = Instant::now();
        rt.core.borrow_mut().handle_tick(now);
        let blocked = rt.apply_actions();
        bus_retry::send_blocked_later(&rt, blocked);
        ticks += 1;
        // Once a second: this shard's numbers for the control shard ($SYS, /metrics).
        if ticks.is_multiple_of(4) {
            if let Some(board) = &rt.shared.snapshots {
                let snapshot = ShardSnapshot::take(&rt.core.borrow(), *rt.stats.borrow(), now);
                snapshot::publish(board, rt.id, snapshot);
            }
        }
    }
}
