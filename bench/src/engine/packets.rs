//! MQTT packets of one client: reading and decoding what the broker sends (CONNACK, SUBACK,
//! PUBLISH, the QoS 1/2 acknowledgements), answering it, sending SUBSCRIBE, and the delivery
//! accounting of received messages (trackers, latency, window hand-back to the publisher).
//!
//! Handles one client's packets as they arrive: it does not pace publishers or run the event loop.

use std::sync::atomic::Ordering;

use amqtt::protocol::v5;
use amqtt::protocol::{
    decode, peek_publish, ConnectReturnCode, Packet, ProtocolLevel, PubAck, PubComp, PubRec,
    PubRel, QoS, Subscribe, SubscribeFilter, SubscribeReturnCode, PROTOCOL_MAX_PACKET_SIZE,
};
use bytes::Buf;
use mio::Poll;

use super::client::{
    close, lost_connection, mark_dirty, note_tls_error, read_plain, read_tls, settle, Client, Conn,
    Ctx, State,
};
use super::{LatencyOrigin, Mode, Phase};
use crate::clock::now_ns;
use crate::payload::Header;
use crate::tracker::Outcome;

pub(super) fn read_and_handle(c: &mut Client, i: usize, ctx: &mut Ctx, poll: &Poll) {
    let eof = match c.stream.as_mut() {
        None => return,
        Some(Conn::Plain(s)) => read_plain(s, &mut c.rbuf, &mut ctx.scratch),
        Some(Conn::Tls(t)) => match read_tls(t, &mut c.rbuf, &mut ctx.scratch) {
            Ok(eof) => eof,
            Err(e) => {
                let what = if t.tls.is_handshaking() {
                    "TLS handshake with the broker failed"
                } else {
                    "TLS error"
                };
                note_tls_error(ctx, format!("{what}: {e}"));
                ctx.c.errors.tls += 1;
                close(c, ctx, poll, State::Closed);
                return;
            }
        },
    };
    let now = now_ns();
    let is_v5 = ctx.plan.protocol == ProtocolLevel::V5;
    loop {
        // A PUBLISH is read in place (`amqtt::protocol::peek_publish`: no reference-counted
        // slices, whose atomic updates were ~13 % of the generator's CPU at 2 M deliveries/s);
        // anything else, a malformed PUBLISH included, goes through `decode`. The buffer is taken
        // out for the call (the handler needs `c`): no copy, no allocation.
        let rbuf = std::mem::take(&mut c.rbuf);
        let found = if is_v5 {
            v5::peek_publish(&rbuf, PROTOCOL_MAX_PACKET_SIZE).map(|(p, _, length)| (p, length))
        } else {
            peek_publish(&rbuf, PROTOCOL_MAX_PACKET_SIZE)
        };
        let peeked = found.map(|(publish, length)| {
            on_publish(
                c,
                i,
                ctx,
                publish.qos,
                publish.packet_id,
                publish.payload,
                now,
            );
            length
        });
        c.rbuf = rbuf;
        if let Some(length) = peeked {
            c.rbuf.advance(length);
            continue;
        }
        let decoded = if is_v5 {
            v5::decode(&mut c.rbuf, PROTOCOL_MAX_PACKET_SIZE)
                .map(|p| p.map(|p| super::v5::to_v3(c, ctx, p)))
        } else {
            decode(&mut c.rbuf, PROTOCOL_MAX_PACKET_SIZE).map(|p| p.map(Some))
        };
        match decoded {
            // An MQTT 5 acknowledgement with a failure reason code, already counted.
            Ok(Some(None)) => {}
            Ok(Some(Some(packet))) => {
                if !handle_packet(c, i, ctx, poll, packet, now) {
                    return;
                }
            }
            Ok(None) => break,
            Err(_) => {
                ctx.c.errors.protocol += 1;
                close(c, ctx, poll, State::Closed);
                return;
            }
        }
    }
    if eof {
        lost_connection(c, ctx, poll);
    } else if c.wants_flush() {
        mark_dirty(c, i, ctx);
    }
}

/// Handles one packet from the broker; false if the connection was closed.
fn handle_packet(
    c: &mut Client,
    i: usize,
    ctx: &mut Ctx,
    poll: &Poll,
    packet: Packet,
    now: u64,
) -> bool {
    match packet {
        Packet::ConnAck(ack) if c.state == State::AwaitConnAck => {
            ctx.handshaking = ctx.handshaking.saturating_sub(1);
            if ack.code != ConnectReturnCode::Accepted {
                ctx.c.errors.connack_refused += 1;
                close(c, ctx, poll, State::Closed);
                return false;
            }
            ctx.c.connacks += 1;
            let lat = now.saturating_sub(c.connect_start);
            if ctx.phase == Phase::Storm {
                ctx.reconnect_latency.record_ns(lat);
                ctx.interval.record_ns(lat);
            } else {
                ctx.connect_latency.record_ns(lat);
                if ctx.phase == Phase::Connect {
                    ctx.interval.record_ns(lat);
                }
            }
            let cp = &ctx.plan.clients[c.plan];
            let persistent = !cp.clean_session;
            if persistent && c.connected_once && !ack.session_present {
                ctx.c.errors.session_lost += 1;
            }
            c.connected_once = true;
            let need_subscribe = match &c.subscriber {
                Some(s) if !cp.subscribe.is_empty() => {
                    !(persistent && ack.session_present && s.subscribed_once)
                        && (!cp.subscribe_at_run || ctx.phase >= Phase::Run)
                }
                _ => false,
            };
            if need_subscribe {
                send_subscribe(c, i, ctx, now);
                c.state = State::AwaitSubAck;
            } else {
                settle(c, ctx, State::Ready);
            }
            mark_dirty(c, i, ctx);
            true
        }
        Packet::SubAck(ack) if c.subscriber.is_some() => {
            if ack.return_codes.contains(&SubscribeReturnCode::Failure) {
                ctx.c.errors.suback_failed += 1;
            }
            if let Some(s) = c.subscriber.as_mut() {
                s.subscribed_once = true;
            }
            if c.state == State::AwaitSubAck {
                settle(c, ctx, State::Ready);
            }
            true
        }
        Packet::Publish(p) => {
            on_publish(c, i, ctx, p.qos, p.packet_id, &p.payload, now);
            true
        }
        Packet::PubRel(rel) => {
            if let Some(s) = c.subscriber.as_mut() {
                s.qos2.remove(&rel.packet_id);
            }
            let _ = Packet::PubComp(PubComp {
                packet_id: rel.packet_id,
            })
            .encode(&mut c.wbuf);
            mark_dirty(c, i, ctx);
            true
        }
        Packet::PubAck(PubAck { packet_id }) => ack_publish(c, i, ctx, packet_id, 1, now),
        Packet::PubRec(PubRec { packet_id }) => {
            let ok = match c.publisher.as_mut() {
                Some(p) => match p.awaiting.get_mut(&packet_id) {
                    Some(a) if a.stage == 2 => {
                        a.stage = 3;
                        true
                    }
                    // A repeated PUBREC for an id awaiting PUBCOMP: answer again.
                    Some(a) if a.stage == 3 => true,
                    _ => false,
                },
                None => false,
            };
            if !ok {
                ctx.c.errors.protocol += 1;
                return true;
            }
            let _ = Packet::PubRel(PubRel { packet_id }).encode(&mut c.wbuf);
            mark_dirty(c, i, ctx);
            true
        }
        Packet::PubComp(PubComp { packet_id }) => ack_publish(c, i, ctx, packet_id, 3, now),
        Packet::PingResp => true,
        _ => {
            ctx.c.errors.protocol += 1;
            close(c, ctx, poll, State::Closed);
            false
        }
    }
}

/// A PUBACK (`stage` 1) or PUBCOMP (`stage` 3) for one of our publishes, received at `now`.
fn ack_publish(
    c: &mut Client,
    i: usize,
    ctx: &mut Ctx,
    packet_id: u16,
    stage: u8,
    now: u64,
) -> bool {
    let Some(p) = c.publisher.as_mut() else {
        ctx.c.errors.protocol += 1;
        return true;
    };
    let sent_ns = match p.awaiting.get(&packet_id) {
        Some(a) if a.stage == stage => a.sent_ns,
        _ => {
            ctx.c.errors.protocol += 1;
            return true;
        }
    };
    p.awaiting.remove(&packet_id);
    if sent_ns >= ctx.t_warm && sent_ns < ctx.t_end {
        ctx.ack_latency.record_ns(now.saturating_sub(sent_ns));
    }
    if ctx.phase == Phase::Run && !p.queued {
        match ctx.plan.mode {
            Mode::Closed { .. } => {
                p.queued = true;
                ctx.ready.push(i);
            }
            Mode::Open { .. } => {}
        }
    }
    true
}

pub(super) fn send_subscribe(c: &mut Client, i: usize, ctx: &mut Ctx, now: u64) {
    let cp = &ctx.plan.clients[c.plan];
    let encoded = if ctx.plan.protocol == ProtocolLevel::V5 {
        super::v5::subscribe(&cp.subscribe, ctx.plan.qos).encode(&mut c.wbuf)
    } else {
        Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: cp
                .subscribe
                .iter()
                .map(|f| SubscribeFilter {
                    filter: f.clone(),
                    qos: ctx.plan.qos,
                })
                .collect(),
        })
        .encode(&mut c.wbuf)
    };
    if encoded.is_err() {
        ctx.c.errors.protocol += 1;
        return;
    }
    if let Some(s) = c.subscriber.as_mut() {
        s.subscribed_at = now;
    }
    mark_dirty(c, i, ctx);
}

/// Accounts for one received PUBLISH.
/// A PUBLISH from the broker: account for it and acknowledge it (QoS 1: PUBACK, QoS 2: PUBREC).
fn on_publish(
    c: &mut Client,
    i: usize,
    ctx: &mut Ctx,
    qos: QoS,
    packet_id: Option<u16>,
    payload: &[u8],
    now: u64,
) {
    on_delivery(c, ctx, payload, now);
    let ack = match (qos, packet_id) {
        (QoS::AtMostOnce, _) => None,
        (QoS::AtLeastOnce, Some(id)) => Some(Packet::PubAck(PubAck { packet_id: id })),
        (QoS::ExactlyOnce, Some(id)) => {
            if let Some(s) = c.subscriber.as_mut() {
                s.qos2.insert(id);
            }
            Some(Packet::PubRec(PubRec { packet_id: id }))
        }
        _ => {
            ctx.c.errors.protocol += 1;
            None
        }
    };
    if let Some(ack) = ack {
        if ack.encode(&mut c.wbuf).is_ok() {
            mark_dirty(c, i, ctx);
        }
    }
}

fn on_delivery(c: &mut Client, ctx: &mut Ctx, payload: &[u8], now: u64) {
    ctx.c.delivered += 1;
    if now >= ctx.t_warm && now < ctx.t_end {
        ctx.c.delivered_window += 1;
    }
    let Some(s) = c.subscriber.as_mut() else {
        ctx.c.errors.foreign += 1;
        return;
    };
    let Some(h) = Header::read(payload) else {
        ctx.c.errors.foreign += 1;
        return;
    };
    if h.run_id != ctx.plan.run_id {
        ctx.c.errors.foreign += 1;
        return;
    }
    let Ok(k) = s.streams.binary_search_by_key(&h.publisher, |&(p, _)| p) else {
        ctx.c.errors.foreign += 1;
        return;
    };
    let tracker = &mut s.trackers[k];
    let before = tracker.settled();
    let outcome = tracker.record(h.seq);
    if outcome == Outcome::Duplicate {
        return;
    }
    ctx.c.unique += 1;
    match ctx.plan.latency_origin {
        LatencyOrigin::Payload => {
            if h.sent_ns >= ctx.t_warm && h.sent_ns < ctx.t_end {
                let lat = now.saturating_sub(h.sent_ns);
                ctx.latency.record_ns(lat);
                ctx.interval.record_ns(lat);
            }
        }
        LatencyOrigin::Subscribe => {
            let lat = now.saturating_sub(s.subscribed_at);
            ctx.latency.record_ns(lat);
            ctx.interval.record_ns(lat);
        }
    }
    let after = tracker.settled();
    if after != before {
        let stream = s.streams[k].1 as usize;
        let ps = &ctx.shared.pubs[h.publisher as usize];
        if let Some(a) = ps.streams.get(stream) {
            a.store(after, Ordering::SeqCst);
        }
        // The owner (this thread or another) retries the publisher if it is blocked.
        if ps.worker < ctx.remote.len() && ctx.remote[ps.worker].last() != Some(&h.publisher) {
            ctx.remote[ps.worker].push(h.publisher);
        }
    }
}
