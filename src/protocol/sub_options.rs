//! What one subscription asked for: the granted QoS and MQTT 5's subscription options
//! [MQTT-3.8.3.1] (No Local, Retain As Published, Retain Handling) and Subscription Identifier
//! [MQTT-3.8.2.1.2]. The value of a broker session's `subscriptions` map and of the trie's
//! subscribers, and what the journal keeps of a subscription (`persist`: both layers use it).
//!
//! Plain data: what the options do is decided by the broker's SUBSCRIBE handler and routing.

use std::num::NonZeroU32;

use super::v5::RetainHandling;
use super::QoS;

/// One subscription's options; an MQTT 3 subscription is [`SubOptions::qos`] (every option off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubOptions {
    /// The granted QoS (the requested one capped by `max_qos`).
    pub qos: QoS,
    /// Messages its own client publishes are not delivered to it.
    pub no_local: bool,
    /// Forwarded messages keep the RETAIN flag they were published with.
    pub retain_as_published: bool,
    /// When retained messages are sent at SUBSCRIBE.
    pub retain_handling: RetainHandling,
    /// The Subscription Identifier given with the SUBSCRIBE, sent back with every message it
    /// matches.
    pub id: Option<NonZeroU32>,
}

impl SubOptions {
    /// An MQTT 3 subscription granted `qos`.
    pub fn qos(qos: QoS) -> Self {
        SubOptions {
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: RetainHandling::SendAtSubscribe,
            id: None,
        }
    }
}

impl SubOptions {
    /// Whether these are an MQTT 3 subscription's options (every option off, no identifier).
    pub fn is_plain(&self) -> bool {
        *self == SubOptions::qos(self.qos)
    }
}
