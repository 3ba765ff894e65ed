//! Publishing of one client: the closed-loop window and the open-loop schedule, packet ids, and
//! encoding one stamped PUBLISH into the connection's write buffer.
//!
//! Decides what a publisher sends and when; it does no socket I/O (the worker flushes later).

use std::cmp::Reverse;
use std::sync::atomic::Ordering;

use amqtt::protocol::{ProtocolLevel, PublishRef, QoS};

use super::client::{mark_dirty, Awaiting, Client, Ctx, PubState, State};
use super::{PubShared, BATCH, OPEN_LOOP_MAX_INFLIGHT, WBUF_HIGH};
use crate::clock::now_ns;
use crate::payload::Header;

/// Lowest settled mark over a publisher's streams, or `floor` if higher.
pub(super) fn window_base(ps: &PubShared, floor: u64) -> u64 {
    ps.streams
        .iter()
        .map(|a| a.load(Ordering::SeqCst))
        .min()
        .unwrap_or(u64::MAX)
        .max(floor)
}

fn next_packet_id(p: &mut PubState) -> Option<u16> {
    for _ in 0..=u16::MAX {
        let id = p.next_packet_id;
        p.next_packet_id = p.next_packet_id.checked_add(1).unwrap_or(1);
        if !p.awaiting.contains_key(&id) {
            return Some(id);
        }
    }
    None
}

/// Encodes one PUBLISH stamped `sent_ns` straight into the write buffer (the payload is the
/// worker's padded one, stamped; the topic is borrowed); false if nothing could be encoded.
fn send_one(c: &mut Client, ctx: &mut Ctx, sent_ns: u64) -> bool {
    let Some(p) = c.publisher.as_mut() else {
        return false;
    };
    let qos = ctx.plan.qos;
    let packet_id = match qos {
        QoS::AtMostOnce => None,
        _ => match next_packet_id(p) {
            Some(id) => Some(id),
            None => return false,
        },
    };
    let header = Header {
        run_id: ctx.plan.run_id,
        publisher: p.id,
        seq: p.next_seq,
        sent_ns,
    };
    let stamped = header.stamp(&mut ctx.payload);
    let publish = PublishRef {
        dup: false,
        qos,
        retain: p.retain,
        topic: p.topic.as_bytes(),
        packet_id,
        payload: &ctx.payload,
        properties: None,
    };
    let encoded = if ctx.plan.protocol == ProtocolLevel::V5 {
        super::v5::encode_publish(&publish, &mut p.alias, &mut c.wbuf)
    } else {
        publish.encode(&mut c.wbuf).is_ok()
    };
    if !stamped || !encoded {
        ctx.c.errors.protocol += 1;
        return false;
    }
    if let Some(id) = packet_id {
        let stage = if qos == QoS::AtLeastOnce { 1 } else { 2 };
        p.awaiting.insert(id, Awaiting { stage, sent_ns });
    }
    p.next_seq += 1;
    ctx.c.sent += 1;
    if sent_ns >= ctx.t_warm && sent_ns < ctx.t_end {
        ctx.c.sent_window += 1;
    }
    ctx.shared.pubs[p.id as usize]
        .sent
        .store(p.next_seq, Ordering::Relaxed);
    true
}

pub(super) fn publish_closed(c: &mut Client, i: usize, ctx: &mut Ctx, inflight: u32, now: u64) {
    if c.state != State::Ready || now >= ctx.t_end {
        return;
    }
    let inflight = u64::from(inflight.max(1));
    let mut sent = 0;
    let mut stamp = None;
    loop {
        let Some(p) = c.publisher.as_mut() else {
            return;
        };
        if c.wbuf.len() >= WBUF_HIGH {
            p.wbuf_full = true;
            break; // retried after the socket drains
        }
        let unacknowledged = inflight.min(u64::from(p.receive_maximum));
        if ctx.plan.qos != QoS::AtMostOnce && p.awaiting.len() as u64 >= unacknowledged {
            break; // retried on PUBACK / PUBCOMP
        }
        let ps = &ctx.shared.pubs[p.id as usize];
        if !ps.streams.is_empty() && p.next_seq.saturating_sub(p.base) >= inflight {
            let base = window_base(ps, p.floor);
            if base > p.base {
                p.base = base;
                p.last_progress = now;
            }
            if p.next_seq.saturating_sub(p.base) >= inflight {
                p.blocked = true;
                break; // retried when a subscriber settles more
            }
        }
        p.blocked = false;
        if sent >= BATCH {
            if !p.queued {
                p.queued = true;
                ctx.ready.push(i);
            }
            break;
        }
        p.last_progress = now;
        // One clock read for the messages encoded here: they leave in one write, and a clock
        // read per message was ~7 % of the generator's CPU in pairs QoS 0 (`perf record`).
        let sent_ns = *stamp.get_or_insert_with(now_ns);
        if !send_one(c, ctx, sent_ns) {
            break;
        }
        sent += 1;
    }
    if sent > 0 {
        mark_dirty(c, i, ctx);
    }
}

pub(super) fn publish_open(c: &mut Client, i: usize, ctx: &mut Ctx, now: u64) {
    if c.state != State::Ready {
        return;
    }
    let mut sent = 0;
    loop {
        let Some(p) = c.publisher.as_mut() else {
            return;
        };
        if p.next_due >= ctx.t_end {
            break;
        }
        if p.next_due > now {
            ctx.schedule.push(Reverse((p.next_due, i)));
            break;
        }
        let unacknowledged = OPEN_LOOP_MAX_INFLIGHT.min(p.receive_maximum);
        if c.wbuf.len() >= WBUF_HIGH || p.awaiting.len() as u32 >= unacknowledged {
            // Behind schedule: try again shortly; the lateness shows up as latency.
            ctx.schedule.push(Reverse((now + 100_000, i)));
            break;
        }
        let due = p.next_due;
        if !send_one(c, ctx, due) {
            ctx.schedule.push(Reverse((now + 100_000, i)));
            break;
        }
        sent += 1;
        if let Some(p) = c.publisher.as_mut() {
            p.next_due = ctx.t_run + (p.offset_ns + p.period_ns * p.next_seq as f64) as u64;
        }
    }
    if sent > 0 {
        mark_dirty(c, i, ctx);
    }
}
