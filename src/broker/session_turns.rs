//! A session's turns: a connection's end ([`BrokerCore::close`]: will, offline or removed), a
//! session forgotten with its subscriptions and queue, and a resumed session's re-sends.
//!
//! Must not: decide why a connection ends (its callers do) or write anything but the
//! DISCONNECT, the re-sent packets and the journal records of these turns.

use std::time::Duration;

use super::connection::ConnectionState;
use super::session::Resend;
use super::{copy_props, mqtt5, BrokerCore, CloseReason, ConnId, SessionKey};
use crate::persist::Record;
use crate::plugins::ClientInfo;
use crate::protocol::{Packet, PublishRef};

impl BrokerCore {
    /// Ends a connection: session goes offline (or away when clean), will published if the reason
    /// calls for it, outbox flushed then closed by the runtime. Idempotent.
    pub(super) fn close(&mut self, conn: ConnId, reason: CloseReason) {
        let Some(connection) = self.connections.get_mut(&conn) else {
            return;
        };
        if connection.state == ConnectionState::Closing {
            return;
        }
        if connection.is_authenticating() {
            // No CONNACK yet, so no DISCONNECT either, and no session.
            connection.state = ConnectionState::Closing;
            connection.close_reason = Some(reason);
            self.request_flush(conn);
            return;
        }
        let v5_goodbye = connection
            .v5
            .as_ref()
            .and_then(|_| mqtt5::disconnect_reason(reason));
        let will_delay = connection.v5.as_ref().map_or(0, |link| link.will_delay);
        if let Some(code) = v5_goodbye {
            self.write_v5(conn, &mqtt5::disconnect(code));
        }
        let Some(connection) = self.connections.get_mut(&conn) else {
            return;
        };
        connection.state = ConnectionState::Closing;
        connection.close_reason = Some(reason);
        connection.pending_replies = None;
        let key = connection.session;
        log::debug!(
            "connection {conn} on shard {} closed: {reason:?}",
            self.shard
        );
        self.request_flush(conn);
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        if session.conn != Some(conn) {
            return;
        }
        session.conn = None;
        let will = session.will.take();
        let clean = session.clean;
        // A will that waits for its delay stays journaled: a restart publishes it when it is due.
        let delays_will = will_delay > 0 && reason.publishes_will();
        if !clean {
            let client_id = session.client_id.clone();
            let at_unix_ms = self.unix_ms_now();
            if will.is_some() && !delays_will {
                let client_id = client_id.clone();
                self.journal(|| Record::Will {
                    client_id,
                    will: None,
                });
            }
            self.journal(|| Record::SessionOffline {
                client_id,
                at_unix_ms,
            });
        }
        // Offline, it no longer holds publishers back (its queue keeps its limits).
        self.caught_up(key);
        self.shared_presence_changed(key);
        if self.settings.plugins.has_events() {
            if let Some((client_id, username)) = self.client_identity(conn) {
                self.settings.plugins.client_disconnected(&ClientInfo {
                    client_id: &client_id,
                    username: username.as_deref(),
                });
            }
        }
        if reason.publishes_will() {
            if let Some(will) = will {
                if delays_will && !clean {
                    // A session that outlives its connection keeps a delayed will [MQTT-3.1.3-9].
                    self.delay_will(key, Duration::from_secs(will_delay.into()), will);
                } else if self.publish_will_of(conn, *will) {
                    self.stats.wills_published += 1;
                }
            }
        }
        if clean {
            self.remove_session(key);
        } else {
            self.session_went_offline(key);
        }
    }

    /// Forgets a session: its subscriptions (here and the other shards' interest), its queue
    /// (memory given back to the budget) and its expiry.
    pub(super) fn remove_session(&mut self, key: SessionKey) {
        if !self.sessions.contains(key) {
            return;
        }
        self.forget_expiry(key);
        // The session ends before its will's delay [MQTT-3.1.3-9].
        self.publish_delayed_will(key);
        let session = self.sessions.remove(key);
        self.caught_up(key);
        self.session_by_client_id.remove(&session.client_id);
        if !session.clean {
            let client_id = session.client_id.clone();
            self.journal(|| Record::SessionDrop { client_id });
            self.session_dropped(session.client_id.clone());
            self.session_profile_gone(session.client_id.clone());
        }
        for filter in session.subscriptions.keys() {
            self.remove_subscriber(key, filter);
        }
        self.redistribute_shared(&session);
    }

    /// Re-sends a resumed session's unacknowledged messages, then its queue.
    pub(super) fn resume_session(&mut self, key: SessionKey, conn: ConnId) {
        self.shared_presence_changed(key);
        let Some(session) = self.sessions.get(key) else {
            return;
        };
        let mut resent = false;
        for resend in session.resend_inflight() {
            resent = true;
            match resend {
                Resend::Publish(publish, properties, kept) => self.write_publish(
                    conn,
                    PublishRef {
                        properties: properties.as_deref(),
                        ..publish.borrowed()
                    },
                    &copy_props::props_of(kept.as_deref()).hop(self.clock),
                ),
                Resend::PubRel(pubrel) => self.write(conn, &Packet::PubRel(pubrel)),
            }
        }
        // Their packet ids and released flags may still be on the way to the disk: sent before
        // that and the broker restarted, they would go out again differently (a second delivery).
        if resent && self.persistent_client(key).is_some() {
            self.hold_outbox_until_durable(conn);
        }
        self.fill_window(key);
    }
}
