//! What a configuration reload changes in a running core ([`BrokerCore::reload`]): the topic and
//! event plugins, `allow-anonymous`, `max_qos` and the session queues' limits, and the
//! connections of users a reloaded password file no longer lists, closed when asked.
//!
//! Only settings the core reads at the moment it uses them: a connection, subscription or queued
//! message keeps what it was given (granted QoS, queued messages beyond a lowered limit).
//! The runtime swaps its own objects (authentication plugins, listeners, TLS) and the shared
//! memory budget; nothing here reads a file.

use std::collections::HashSet;
use std::sync::Arc;

use crate::plugins::CorePlugins;
use crate::protocol::QoS;

use super::session::QueueLimits;
use super::{BrokerCore, CloseReason};

/// The settings a reload gives every shard's core.
#[derive(Debug, Clone)]
pub struct CoreReload {
    /// New topic and event plugins; `None`: keep the running ones.
    pub plugins: Option<CorePlugins>,
    pub allow_anonymous: bool,
    pub max_qos: QoS,
    pub max_queued_messages: usize,
    pub max_queued_bytes: Option<usize>,
    /// Close the connections of these users (`reload.disconnect_removed`); empty: none.
    pub disconnect_users: HashSet<String>,
}

impl BrokerCore {
    /// Applies a reload: new CONNECTs, SUBSCRIBEs, PUBLISHes and queued messages see the new
    /// settings from now on; every session's queue gets the new limits (what is queued stays).
    /// Returns the client ids whose connections were closed because their user was removed (their
    /// wills published, persistent sessions kept, as for an administrator's kick).
    pub fn reload(&mut self, reload: &CoreReload) -> Vec<String> {
        if let Some(plugins) = &reload.plugins {
            self.settings.plugins = plugins.clone();
        }
        self.settings.allow_anonymous = reload.allow_anonymous;
        self.settings.max_qos = reload.max_qos;
        self.settings.max_queued_messages = reload.max_queued_messages;
        self.settings.max_queued_bytes = reload.max_queued_bytes;
        if self.queue_limits.max_messages != reload.max_queued_messages
            || self.queue_limits.max_bytes != reload.max_queued_bytes
        {
            self.queue_limits = Arc::new(QueueLimits {
                max_messages: reload.max_queued_messages,
                max_bytes: reload.max_queued_bytes,
                budget: self.settings.memory.clone(),
            });
            for (_, session) in self.sessions.iter_mut() {
                session.set_limits(self.queue_limits.clone());
            }
        }
        if reload.disconnect_users.is_empty() {
            return Vec::new();
        }
        let removed: Vec<(String, super::ConnId)> = self
            .sessions
            .iter()
            .filter_map(|(_, session)| {
                let user = session.username.as_deref()?;
                let conn = session.conn?;
                reload
                    .disconnect_users
                    .contains(user)
                    .then(|| (session.client_id.to_string(), conn))
            })
            .collect();
        for (client_id, conn) in &removed {
            log::info!(
                "client '{client_id}': its user is no longer in the password file \
                 (reload.disconnect_removed), disconnecting"
            );
            self.close(*conn, CloseReason::Kicked);
        }
        removed
            .into_iter()
            .map(|(client_id, _)| client_id)
            .collect()
    }
}
