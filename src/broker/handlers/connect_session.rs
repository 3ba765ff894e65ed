//! What a CONNECT does to its session besides making or resuming it (`connect.rs` decides that):
//! a will its topic checks deny is dropped, and a persistent session is journaled. No CONNACK, no
//! connection state here.

use crate::broker::{packet_log, BrokerCore, SessionKey};
use crate::persist::Record;
use crate::plugins::{ClientInfo, TopicAction};
use crate::protocol::{SubOptions, TopicFilter};

/// A will whose topic the topic checks deny is dropped at CONNECT, not kept for later: a session
/// recovered after a restart publishes its will without a connection (so without a check), and
/// only wills that passed get journaled. (It is checked again when published, with the checks
/// in force then.)
pub(super) fn drop_will_the_topic_checks_deny(broker: &mut BrokerCore, key: SessionKey) {
    let plugins = &broker.settings.plugins;
    let Some(session) = broker.sessions.get_mut(key) else {
        return;
    };
    let Some(will) = session.will.as_deref() else {
        return;
    };
    if !plugins.checks_topics() {
        return;
    }
    let client = ClientInfo {
        client_id: &session.client_id,
        username: session.username.as_deref(),
    };
    if !plugins.allow(&client, TopicAction::Publish(&will.topic)) {
        log::log!(
            target: packet_log::TARGET,
            packet_log::refusal_level(broker.settings.log_packets),
            "Will of '{}'{} to '{}' dropped: topic check",
            session.client_id,
            packet_log::User(session.username.as_deref()),
            will.topic.as_str()
        );
        session.will = None;
    }
}

/// With persistence on, journals a persistent session that connected: it exists (and is online),
/// its will (and the will's delay, `will_delay` seconds), its Session Expiry Interval (MQTT 5);
/// and when it was a clean session until this CONNECT took it over, its subscriptions.
pub(super) fn journal_session(
    broker: &mut BrokerCore,
    key: SessionKey,
    was_persistent: bool,
    will_delay: u32,
) {
    let Some(client_id) = broker.persistent_client(key) else {
        return;
    };
    let Some(session) = broker.sessions.get(key) else {
        return;
    };
    let will = session.will.as_deref().cloned();
    let username = session.username.clone();
    let expiry = session.v5.then(|| session.expiry_secs());
    let subscriptions: Vec<(TopicFilter, SubOptions)> = if was_persistent {
        Vec::new()
    } else {
        (session.subscriptions.iter())
            .map(|(filter, options)| (filter.clone(), *options))
            .collect()
    };
    let id = client_id.clone();
    broker.journal(|| Record::SessionOpen { client_id: id });
    let id = client_id.clone();
    broker.journal(|| Record::SessionUser {
        client_id: id,
        username,
    });
    if let Some(interval_secs) = expiry {
        let client_id = client_id.clone();
        broker.journal(|| Record::SessionExpiry {
            client_id,
            interval_secs,
        });
    }
    for (filter, options) in subscriptions {
        let client_id = client_id.clone();
        broker.journal(|| Record::Subscribe {
            client_id,
            filter,
            options,
        });
    }
    let delayed = will.is_some() && will_delay > 0;
    if will.is_some() || was_persistent {
        let client_id = client_id.clone();
        broker.journal(|| Record::Will { client_id, will });
    }
    if delayed {
        broker.journal(|| Record::WillDelay {
            client_id,
            delay_secs: will_delay,
        });
    }
}
