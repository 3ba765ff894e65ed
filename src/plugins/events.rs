//! Event plugins: the [`EventPlugin`] trait (aMQTT's `broker_*` events) and how [`CorePlugins`]
//! calls every installed one, a panicking hook logged and skipped.
//!
//! Who calls what: the broker's lifecycle events (`broker_pre_start` ... `broker_post_shutdown`)
//! come from the thread that starts or stops the broker ([`crate::Broker::start`],
//! [`crate::BrokerHandle::stop`]); every other event from the sans-IO core, on the event loop of
//! the shard where it happens. Nothing here decides anything for a client.

use crate::protocol::{Message, QoS, TopicFilter};

use super::{guarded, ClientInfo, CorePlugins};

/// Hears what happens in the broker: aMQTT's events, one method each, all no-ops by default.
///
/// | method | aMQTT event | when |
/// | --- | --- | --- |
/// | [`broker_pre_start`](Self::broker_pre_start) | `broker_pre_start` | plugins resolved, nothing bound yet |
/// | [`broker_post_start`](Self::broker_post_start) | `broker_post_start` | listeners bound, shards running |
/// | [`broker_pre_shutdown`](Self::broker_pre_shutdown) | `broker_pre_shutdown` | stop asked, clients still connected |
/// | [`broker_post_shutdown`](Self::broker_post_shutdown) | `broker_post_shutdown` | every shard has stopped |
/// | [`client_connected`](Self::client_connected) | `broker_client_connected` | CONNACK 0x00 written |
/// | [`client_disconnected`](Self::client_disconnected) | `broker_client_disconnected` | an accepted client's connection ended |
/// | [`subscribed`](Self::subscribed) | `broker_client_subscribed` | a SUBSCRIBE filter granted |
/// | [`unsubscribed`](Self::unsubscribed) | `broker_client_unsubscribed` | an UNSUBSCRIBE removed a filter the session held |
/// | [`message_received`](Self::message_received) | `broker_message_received` | a client's PUBLISH passed the topic checks |
/// | [`retained_message`](Self::retained_message) | `broker_retained_message` | a topic's retained message set or deleted |
///
/// The lifecycle hooks run on the thread that starts or stops the broker and may take their
/// time. Every other hook runs on the shard's event loop, inline with the packet that caused it
/// (`message_received` once per accepted PUBLISH): keep it to counting, logging or handing off
/// to a channel. A hook that blocks stalls the shard's other clients, and one that calls
/// [`crate::BrokerHandle`]'s blocking methods from there may wait for its own shard for ever.
pub trait EventPlugin: Send + Sync + 'static {
    fn name(&self) -> &str;

    /// The plugins are resolved and the configuration checked; no listener is bound yet.
    fn broker_pre_start(&self) {}

    /// Every listener is bound and every shard runs: clients can connect.
    fn broker_post_start(&self) {}

    /// [`crate::BrokerHandle::stop`] (or dropping the handle) was called; clients are still
    /// connected.
    fn broker_pre_shutdown(&self) {}

    /// Every shard has stopped and every connection is closed (their `client_disconnected`
    /// came before).
    fn broker_post_shutdown(&self) {}

    /// A CONNECT was accepted (CONNACK 0x00 written).
    fn client_connected(&self, _client: &ClientInfo<'_>) {}

    /// An accepted client's connection ended, for whatever reason.
    fn client_disconnected(&self, _client: &ClientInfo<'_>) {}

    /// A PUBLISH from a client passed the topic checks and is being routed (not called for what
    /// the host publishes with [`crate::BrokerHandle::publish`], as aMQTT's `broadcast_message`
    /// fires no event either).
    fn message_received(&self, _client: &ClientInfo<'_>, _message: &Message) {}

    /// A subscription was granted (not called for filters refused with 0x80).
    fn subscribed(&self, _client: &ClientInfo<'_>, _filter: &TopicFilter, _granted: QoS) {}

    /// An UNSUBSCRIBE removed this filter from the client's session (not called for a filter
    /// the session did not hold).
    fn unsubscribed(&self, _client: &ClientInfo<'_>, _filter: &TopicFilter) {}

    /// A topic's retained message was set, or deleted when `message.payload` is empty: by a
    /// client's retained PUBLISH or will, or by the host ([`crate::BrokerHandle::retain_message`]).
    /// Called once per update, on the shard that made it (every shard then applies it to its
    /// copy). The broker's own `$SYS` topics are not reported.
    fn retained_message(&self, _message: &Message) {}
}

impl CorePlugins {
    pub fn broker_pre_start(&self) {
        self.each_event(|p| p.broker_pre_start());
    }

    pub fn broker_post_start(&self) {
        self.each_event(|p| p.broker_post_start());
    }

    pub fn broker_pre_shutdown(&self) {
        self.each_event(|p| p.broker_pre_shutdown());
    }

    pub fn broker_post_shutdown(&self) {
        self.each_event(|p| p.broker_post_shutdown());
    }

    pub fn client_connected(&self, client: &ClientInfo<'_>) {
        self.each_event(|p| p.client_connected(client));
    }

    pub fn client_disconnected(&self, client: &ClientInfo<'_>) {
        self.each_event(|p| p.client_disconnected(client));
    }

    pub fn message_received(&self, client: &ClientInfo<'_>, message: &Message) {
        self.each_event(|p| p.message_received(client, message));
    }

    pub fn subscribed(&self, client: &ClientInfo<'_>, filter: &TopicFilter, granted: QoS) {
        self.each_event(|p| p.subscribed(client, filter, granted));
    }

    pub fn unsubscribed(&self, client: &ClientInfo<'_>, filter: &TopicFilter) {
        self.each_event(|p| p.unsubscribed(client, filter));
    }

    pub fn retained_message(&self, message: &Message) {
        self.each_event(|p| p.retained_message(message));
    }

    fn each_event(&self, call: impl Fn(&dyn super::EventPlugin)) {
        for plugin in self.events.iter() {
            let _ = guarded(plugin.name(), || call(plugin.as_ref()));
        }
    }
}
