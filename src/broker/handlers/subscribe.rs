//! SUBSCRIBE: add or replace the session's subscriptions, answer SUBACK, then send retained messages.
//!
//! A shared subscription (`$share/{group}/{filter}`, `shared.rs`) is checked by the topic checks
//! on its filter part; an invalid share name [MQTT-4.8.2-1/2] gets 0x80 (0x8F in MQTT 5:
//! [`InvalidShare::v5_reason_code`](crate::broker::InvalidShare::v5_reason_code)); its group
//! membership is announced to the other shards like a new filter (the SUBACK waits for their
//! confirmations); and no retained messages follow it (MQTT 5.0 §4.8.2).
//!
//! Granted QoS is the requested one capped by `max_qos` [MQTT-3.9.3]. A filter new to this shard is
//! announced to the other shards, and the SUBACK waits until they have confirmed: once the client
//! holds its SUBACK, a message published on any shard reaches it. A filter this shard already has,
//! but whose announcement (for another session) is not confirmed everywhere yet, is announced again
//! under this SUBSCRIBE's token: the bus keeps one sender's order, so its confirmation comes after
//! the earlier announcement took effect (found by the simulation, `simulation/reductions.rs`). Retained messages matching each
//! filter follow the SUBACK with RETAIN set [MQTT-3.3.1-6], also for a repeated subscription
//! [MQTT-3.8.4-3]. A filter that a topic-check plugin denies gets 0x80 in the SUBACK and changes
//! nothing (an existing subscription with the same filter stays); the other filters of the same
//! SUBSCRIBE are handled as usual. An MQTT 5 SUBACK with refusals says what they were in its
//! Reason String, unless the client set Request Problem Information to 0 [MQTT-3.1.2-29].

use std::num::NonZeroU32;

use crate::broker::connection::PendingReply;
use crate::broker::{packet_log, share_of, BrokerCore, ConnId, SubOptions};
use crate::persist::Record;
use crate::plugins::{ClientInfo, TopicAction};
use crate::protocol::v5::{self, ReasonCode, RetainHandling};
use crate::protocol::{Packet, SubAck, Subscribe, SubscribeReturnCode, TopicFilter};

pub(super) fn handle(broker: &mut BrokerCore, conn: ConnId, subscribe: Subscribe) {
    let requests = subscribe
        .filters
        .into_iter()
        .map(|r| (r.filter, SubOptions::qos(r.qos)))
        .collect();
    subscribe_filters(broker, conn, subscribe.packet_id, requests);
}

/// An MQTT 5 SUBSCRIBE: the same, with its subscription options and Subscription Identifier
/// kept (one for every filter of the packet, replacing a repeated subscription's [MQTT-3.8.2.1.2];
/// 0 or two of them: the decoder's protocol error 0x82).
pub(super) fn handle_v5(broker: &mut BrokerCore, conn: ConnId, subscribe: v5::Subscribe) {
    let id = subscribe
        .properties
        .subscription_identifiers
        .first()
        .copied()
        .and_then(NonZeroU32::new);
    let requests = subscribe
        .filters
        .into_iter()
        .map(|r| {
            let options = SubOptions {
                qos: r.qos,
                no_local: r.no_local,
                retain_as_published: r.retain_as_published,
                retain_handling: r.retain_handling,
                id,
            };
            (r.filter, options)
        })
        .collect();
    subscribe_filters(broker, conn, subscribe.packet_id, requests);
}

/// Subscribes the connection's session to each filter with its options (QoS as requested, capped
/// here), and queues the SUBACK (translated for an MQTT 5 client by `write`).
fn subscribe_filters(
    broker: &mut BrokerCore,
    conn: ConnId,
    packet_id: u16,
    requests: Vec<(TopicFilter, SubOptions)>,
) {
    let Some(key) = broker.session_of(conn) else {
        return;
    };
    let mark = broker.journal_mark();
    let mut return_codes = Vec::with_capacity(requests.len());
    let mut retained_for = Vec::with_capacity(requests.len());
    let mut new_filters = Vec::new();
    let plugins = broker.settings.plugins.clone();
    let identity = if plugins.checks_topics() || plugins.has_events() {
        broker.client_identity(conn)
    } else {
        None
    };
    let client = identity.as_ref().map(|(client_id, username)| ClientInfo {
        client_id,
        username: username.as_deref(),
    });
    let v5 = broker.is_v5(conn);
    // MQTT 5's codes, one per filter beside `return_codes` (MQTT 5 tells refusals apart), and
    // what the refusals were, for the SUBACK's Reason String.
    let mut reason_codes = Vec::with_capacity(requests.len());
    let mut problems = Vec::new();
    for (filter, asked) in requests {
        let share = match share_of(&filter) {
            Ok(share) => share,
            Err(invalid) => {
                log::log!(
                    target: packet_log::TARGET,
                    packet_log::refusal_level(broker.settings.log_packets),
                    "Refused SUBSCRIBE to '{}': invalid shared subscription ({})",
                    filter.as_str(),
                    invalid.0
                );
                return_codes.push(SubscribeReturnCode::Failure);
                reason_codes.push(invalid.v5_reason_code());
                problems.push(format!("'{}': {}", filter.as_str(), invalid.0));
                continue;
            }
        };
        if share.is_some() && asked.no_local {
            // [MQTT-3.8.3-4]: No Local on a shared subscription is a Protocol Error.
            broker.protocol_error_v5(conn, ReasonCode::PROTOCOL_ERROR);
            return;
        }
        // A shared subscription is checked on the filter after its share name.
        let checked = share.as_ref().map_or(&filter, |share| &share.filter);
        if plugins.checks_topics() {
            let allowed = client
                .as_ref()
                .is_some_and(|c| plugins.allow(c, TopicAction::Subscribe(checked)));
            if !allowed {
                broker.stats.subscribe_denied += 1;
                if let Some(c) = &client {
                    log::log!(
                        target: packet_log::TARGET,
                        packet_log::refusal_level(broker.settings.log_packets),
                        "Denied SUBSCRIBE from '{}'{} to '{}': topic check",
                        c.client_id,
                        packet_log::User(c.username),
                        filter.as_str()
                    );
                }
                return_codes.push(SubscribeReturnCode::Failure);
                if broker.settings.hide_denial_reason {
                    reason_codes.push(ReasonCode::UNSPECIFIED_ERROR);
                } else {
                    reason_codes.push(ReasonCode::NOT_AUTHORIZED);
                    problems.push(format!("'{}': denied by the topic checks", filter.as_str()));
                }
                continue;
            }
        }
        let granted = asked.qos.min(broker.settings.max_qos);
        let options = SubOptions {
            qos: granted,
            ..asked
        };
        let existed = broker
            .sessions
            .get_mut(key)
            .and_then(|session| session.subscriptions.insert(filter.clone(), options))
            .is_some();
        if let Some(client_id) = broker.persistent_client(key) {
            let filter = filter.clone();
            broker.journal(|| Record::Subscribe {
                client_id,
                filter,
                options,
            });
        }
        let created = broker.add_subscriber(key, &filter, options);
        if created || broker.is_announcing(&filter) {
            new_filters.push(filter.clone());
        }
        if let Some(client) = &client {
            plugins.subscribed(client, &filter, granted);
        }
        return_codes.push(SubscribeReturnCode::Success(granted));
        reason_codes.push(ReasonCode(granted as u8));
        // Retain Handling [MQTT-3.3.1-9/10/11]: 0 always (MQTT 3), 1 for a new subscription only,
        // 2 never; never on a shared subscription.
        let send_retained = share.is_none()
            && match options.retain_handling {
                RetainHandling::SendAtSubscribe => true,
                RetainHandling::SendIfNew => !existed,
                RetainHandling::DoNotSend => false,
            };
        if send_retained {
            retained_for.push((filter, granted));
        }
    }
    // A cluster node keeps a persistent session's subscriptions in its directory entry.
    broker.session_profile_changed(key);
    // Filters and share groups are announced to the other shards and the cluster link.
    let others = broker.shards - 1;
    let with_link = others + usize::from(broker.link.is_some());
    let shared = broker.shared_unannounced();
    let remaining = with_link * (new_filters.len() + shared);
    let token = (remaining > 0).then(|| broker.new_token());
    for filter in &new_filters {
        broker.broadcast_interest(filter, true, token);
    }
    broker.announce_shared(token);
    // Every announcement carries the token and each other participant confirms each one.
    let reply = PendingReply {
        token,
        remaining,
        reply: if v5 {
            v5::Packet::SubAck(v5::SubscriptionAck {
                packet_id,
                properties: v5::Properties {
                    // Only for a client that asks for problem information [MQTT-3.1.2-29].
                    reason_string: (!problems.is_empty() && broker.wants_problem_information(conn))
                        .then(|| problems.join("; ")),
                    ..v5::Properties::default()
                },
                reason_codes,
            })
            .into()
        } else {
            Packet::SubAck(SubAck {
                packet_id,
                return_codes,
            })
            .into()
        },
        retained_for,
        wait: broker.durable_wait(mark),
    };
    broker.reply_in_order(conn, reply);
}
