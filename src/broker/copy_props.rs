//! What one subscriber's copy of a message carries besides the message (MQTT 5): when it expires,
//! from its Message Expiry Interval [MQTT-3.3.2-5], and the identifiers of the subscriptions it
//! matched [MQTT-3.3.4-3]. [`CopyProps`] is the borrowed form a delivery passes along,
//! [`KeptProps`] the boxed one a session keeps with a queued or unacknowledged copy; an MQTT 3
//! message on an MQTT 3 subscription has neither (no allocation, no clock).
//!
//! Plain data and arithmetic on the core's clock (`now` is passed in); nothing here reads a clock,
//! delivers or encodes.

use std::time::{Duration, Instant};

use crate::protocol::v5;

use super::Message;

/// What a copy carries, borrowed for one delivery.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyProps<'a> {
    /// When the message expires in the core's clock (`None`: never).
    pub expires_at: Option<Instant>,
    /// The identifiers of the recipient's subscriptions that matched, in ascending order.
    pub subscription_ids: &'a [u32],
}

/// [`CopyProps`] kept by a session with a copy that waits (queued, or unacknowledged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptProps {
    expires_at: Option<Instant>,
    subscription_ids: Box<[u32]>,
}

impl<'a> CopyProps<'a> {
    /// The copy of `message` that arrives `now` for subscriptions `subscription_ids`.
    pub fn arriving(message: &Message, now: Option<Instant>, subscription_ids: &'a [u32]) -> Self {
        CopyProps {
            expires_at: expires_at(message, now),
            subscription_ids,
        }
    }

    /// Nothing to carry (every MQTT 3 delivery).
    pub fn is_empty(&self) -> bool {
        self.expires_at.is_none() && self.subscription_ids.is_empty()
    }

    /// Whether the copy has expired `now` (never before the clock is known).
    pub fn expired(&self, now: Option<Instant>) -> bool {
        matches!((self.expires_at, now), (Some(at), Some(now)) if now >= at)
    }

    /// The boxed form a session keeps; `None` when there is nothing to keep.
    pub fn kept(&self) -> Option<Box<KeptProps>> {
        (!self.is_empty()).then(|| {
            Box::new(KeptProps {
                expires_at: self.expires_at,
                subscription_ids: self.subscription_ids.into(),
            })
        })
    }

    /// The PUBLISH properties of this hop `now`: the subscription identifiers and, for a copy
    /// that expires, what is left of its interval.
    pub fn hop(&self, now: Option<Instant>) -> v5::Hop<'a> {
        v5::Hop {
            subscription_ids: self.subscription_ids,
            message_expiry_interval: self
                .expires_at
                .zip(now)
                .map(|(at, now)| seconds_left(at, now)),
            ..v5::Hop::default()
        }
    }
}

impl KeptProps {
    /// The borrowed form.
    pub fn props(&self) -> CopyProps<'_> {
        CopyProps {
            expires_at: self.expires_at,
            subscription_ids: &self.subscription_ids,
        }
    }
}

/// The borrowed form of what a session keeps (`None`: nothing).
pub fn props_of(kept: Option<&KeptProps>) -> CopyProps<'_> {
    kept.map(KeptProps::props).unwrap_or_default()
}

/// When `message`, arriving `now`, expires: `None` without a Message Expiry Interval (or before
/// the clock is known).
pub fn expires_at(message: &Message, now: Option<Instant>) -> Option<Instant> {
    now?.checked_add(interval(message)?)
}

/// `message`'s Message Expiry Interval, if it has one.
pub fn interval(message: &Message) -> Option<Duration> {
    let seconds = message.properties.as_deref()?.message_expiry_interval?;
    Some(Duration::from_secs(u64::from(seconds)))
}

/// Whole seconds left until `at`, rounded up (a copy sent before it expires says at least 1): the
/// Message Expiry Interval sent with a copy that waited [MQTT-3.3.2-6].
pub fn seconds_left(at: Instant, now: Instant) -> u32 {
    let left = at.saturating_duration_since(now);
    let seconds = left.as_secs() + u64::from(left.subsec_nanos() > 0);
    u32::try_from(seconds.max(1)).unwrap_or(u32::MAX)
}

/// `message` with its Message Expiry Interval set to what is left of it at `now` (the properties
/// are copied only when it has one, and `now` is known): a retained message sent to a new
/// subscriber, a share group's message passed to another member.
pub fn with_interval_left(
    message: Message,
    expires_at: Option<Instant>,
    now: Option<Instant>,
) -> Message {
    let (Some(at), Some(now), Some(properties)) = (expires_at, now, message.properties.as_deref())
    else {
        return message;
    };
    let mut properties = properties.clone();
    properties.message_expiry_interval = Some(seconds_left(at, now));
    Message {
        properties: Some(std::sync::Arc::new(properties)),
        ..message
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{QoS, TopicName};
    use std::sync::Arc;

    fn message(expiry: Option<u32>) -> Message {
        Message {
            topic: TopicName::new("t").expect("topic"),
            payload: bytes::Bytes::from_static(b"x"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: expiry.map(|seconds| {
                Arc::new(v5::Properties {
                    message_expiry_interval: Some(seconds),
                    ..v5::Properties::default()
                })
            }),
        }
    }

    #[test]
    fn a_copy_expires_after_its_interval_and_says_what_is_left() {
        let t0 = Instant::now();
        let copy = CopyProps::arriving(&message(Some(10)), Some(t0), &[]);
        assert!(!copy.is_empty());
        assert!(!copy.expired(Some(t0 + Duration::from_millis(9_999))));
        assert!(copy.expired(Some(t0 + Duration::from_secs(10))));
        let hop = copy.hop(Some(t0 + Duration::from_millis(2_500)));
        assert_eq!(hop.message_expiry_interval, Some(8));
        assert_eq!(copy.hop(Some(t0)).message_expiry_interval, Some(10));
        assert_eq!(seconds_left(t0, t0 + Duration::from_secs(1)), 1);
    }

    #[test]
    fn a_copy_without_expiry_or_ids_keeps_nothing() {
        let t0 = Instant::now();
        let copy = CopyProps::arriving(&message(None), Some(t0), &[]);
        assert!(copy.is_empty() && copy.kept().is_none());
        assert!(!copy.expired(Some(t0 + Duration::from_secs(1_000_000))));
        // Before the core knows the time, nothing expires.
        assert!(CopyProps::arriving(&message(Some(1)), None, &[]).is_empty());
        let ids = CopyProps::arriving(&message(None), Some(t0), &[4, 9]);
        let kept = ids.kept().expect("ids are kept");
        assert_eq!(kept.props().subscription_ids, &[4, 9]);
        assert_eq!(props_of(None), CopyProps::default());
    }

    #[test]
    fn a_retained_copy_gets_the_interval_left() {
        let t0 = Instant::now();
        let m = message(Some(60));
        let at = expires_at(&m, Some(t0));
        let later = with_interval_left(m, at, Some(t0 + Duration::from_secs(20)));
        let left = later
            .properties
            .as_deref()
            .and_then(|p| p.message_expiry_interval);
        assert_eq!(left, Some(40));
        let plain = with_interval_left(message(None), None, Some(t0));
        assert!(plain.properties.is_none());
    }
}
