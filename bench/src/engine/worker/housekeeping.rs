//! A worker's periodic duties: handing its progress histogram and counters to the engine,
//! connect timeouts, stalled closed-loop windows, and keep-alive pings.
//!
//! Called from the worker's loop (`worker.rs`) on its housekeeping timer; sends nothing but pings.

use std::sync::atomic::Ordering;

use amqtt::protocol::Packet;

use super::super::client::{close, mark_dirty, State};
use super::super::publishing::window_base;
use super::super::{Phase, CONNECT_TIMEOUT_NS};
use super::Worker;

impl Worker {
    pub(super) fn ping_interval(&self) -> u64 {
        (u64::from(self.ctx.plan.keep_alive.max(2)) * 1_000_000_000) / 2
    }

    pub(super) fn housekeeping(&mut self, now: u64) {
        let ctx = &mut self.ctx;
        // Progress histogram hand-over.
        if ctx.interval.count() > 0 {
            if let Ok(mut slot) = ctx.shared.workers[ctx.id].interval.lock() {
                match slot.as_mut() {
                    Some(h) => h.add(&ctx.interval),
                    None => *slot = Some(ctx.interval.clone()),
                }
            }
            ctx.interval.reset();
        }
        for (i, c) in self.clients.iter_mut().enumerate() {
            // Connect timeouts.
            if matches!(c.state, State::Connecting | State::AwaitConnAck)
                && now.saturating_sub(c.connect_start) > CONNECT_TIMEOUT_NS
            {
                ctx.c.errors.connect_timeout += 1;
                close(c, ctx, &self.poll, State::Closed);
                continue;
            }
            // Stalled closed-loop windows.
            if ctx.phase == Phase::Run {
                if let Some(p) = c.publisher.as_mut() {
                    if p.blocked {
                        let base = window_base(&ctx.shared.pubs[p.id as usize], p.floor);
                        if base > p.base {
                            p.base = base;
                            p.last_progress = now;
                        } else if now.saturating_sub(p.last_progress) > ctx.plan.stall_timeout_ns {
                            p.floor = p.next_seq;
                            p.last_progress = now;
                            ctx.c.errors.window_stalls += 1;
                        }
                        if !p.queued {
                            p.queued = true;
                            ctx.ready.push(i);
                        }
                    }
                }
            }
        }
    }

    pub(super) fn ping_all(&mut self) {
        for (i, c) in self.clients.iter_mut().enumerate() {
            if c.state == State::Ready && Packet::PingReq.encode(&mut c.wbuf).is_ok() {
                mark_dirty(c, i, &mut self.ctx);
            }
        }
    }

    pub(super) fn publish_counters(&self) {
        let ctx = &self.ctx;
        let w = &ctx.shared.workers[ctx.id];
        w.sent.store(ctx.c.sent, Ordering::Relaxed);
        w.sent_window.store(ctx.c.sent_window, Ordering::Relaxed);
        w.delivered.store(ctx.c.delivered, Ordering::Relaxed);
        w.delivered_window
            .store(ctx.c.delivered_window, Ordering::Relaxed);
        w.unique.store(ctx.c.unique, Ordering::Relaxed);
        w.errors.store(ctx.c.errors.total(), Ordering::Relaxed);
        w.settled.store(ctx.c.settled, Ordering::Relaxed);
        w.connected.store(ctx.c.connected, Ordering::Relaxed);
    }
}
