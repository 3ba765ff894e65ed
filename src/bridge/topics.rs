//! What a bridge carries and where: the routes of its `topics:` entries (a filter on the side a
//! message comes from, the prefix swapped for the other side's), and the loop guard that drops
//! the copy of a message the bridge itself published when the other side hands it back. Pure:
//! no I/O, time passed in.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use crate::config::BridgeTopic;
use crate::protocol::{Message, QoS, TopicFilter, TopicName};

/// One direction of one `topics:` entry.
#[derive(Debug, Clone)]
struct Route {
    /// On the side messages come from: its prefix + the pattern.
    filter: TopicFilter,
    /// Removed from a matching topic…
    from_prefix: String,
    /// …and replaced by this one.
    to_prefix: String,
    /// The highest QoS forwarded.
    qos: QoS,
}

/// Both directions of a bridge's `topics:`.
#[derive(Debug, Clone)]
pub(crate) struct Routes {
    out: Vec<Route>,
    inbound: Vec<Route>,
}

impl Routes {
    /// The routes of `topics` (in order: the first entry that matches a message applies); an
    /// error when a prefix and a pattern do not make a valid filter.
    pub(crate) fn new(topics: &[BridgeTopic]) -> Result<Routes, String> {
        let mut routes = Routes {
            out: Vec::new(),
            inbound: Vec::new(),
        };
        for topic in topics {
            let qos = QoS::from_u8(topic.qos).unwrap_or(QoS::AtMostOnce);
            let route = |from: &str, to: &str| -> Result<Route, String> {
                let text = format!("{from}{}", topic.pattern);
                let filter =
                    TopicFilter::new(&text).map_err(|e| format!("topic filter '{text}': {e}"))?;
                Ok(Route {
                    filter,
                    from_prefix: from.to_string(),
                    to_prefix: to.to_string(),
                    qos,
                })
            };
            if topic.direction.out() {
                routes
                    .out
                    .push(route(&topic.local_prefix, &topic.remote_prefix)?);
            }
            if topic.direction.inbound() {
                routes
                    .inbound
                    .push(route(&topic.remote_prefix, &topic.local_prefix)?);
            }
        }
        Ok(routes)
    }

    /// What the bridge's local session subscribes to (each filter once, at its highest QoS).
    pub(crate) fn local_filters(&self) -> Vec<(TopicFilter, QoS)> {
        filters(&self.out)
    }

    /// What the bridge subscribes to at the remote broker.
    pub(crate) fn remote_filters(&self) -> Vec<(TopicFilter, QoS)> {
        filters(&self.inbound)
    }

    /// Both directions are used: a message may come back (the loop guard is needed).
    pub(crate) fn two_way(&self) -> bool {
        !self.out.is_empty() && !self.inbound.is_empty()
    }

    /// A local message as it is published at the remote broker, if an `out` entry matches.
    pub(crate) fn outbound(&self, message: &Message) -> Option<Message> {
        forward(&self.out, message)
    }

    /// A remote message as it is published here, if an `in` entry matches.
    pub(crate) fn inbound(&self, message: &Message) -> Option<Message> {
        forward(&self.inbound, message)
    }
}

fn filters(routes: &[Route]) -> Vec<(TopicFilter, QoS)> {
    let mut out: Vec<(TopicFilter, QoS)> = Vec::new();
    for route in routes {
        match out.iter_mut().find(|(f, _)| *f == route.filter) {
            Some((_, qos)) => *qos = (*qos).max(route.qos),
            None => out.push((route.filter.clone(), route.qos)),
        }
    }
    out
}

fn forward(routes: &[Route], message: &Message) -> Option<Message> {
    let route = routes.iter().find(|r| r.filter.matches(&message.topic))?;
    let rest = message.topic.as_str().strip_prefix(&route.from_prefix)?;
    let topic = TopicName::new(&format!("{}{rest}", route.to_prefix)).ok()?;
    Some(Message {
        topic,
        payload: message.payload.clone(),
        qos: message.qos.min(route.qos),
        retain: message.retain,
        properties: message.properties.clone(),
    })
}

/// How long a forwarded copy is remembered for its echo.
pub(crate) const ECHO_WINDOW: Duration = Duration::from_secs(60);
/// Copies remembered at most (the oldest are forgotten first).
const ECHO_LIMIT: usize = 100_000;

/// The copies a bridge published on one side, for a short window: when that side hands one back
/// (its subscription matches what the bridge published there), it is an echo and goes no
/// further. Counted: each copy published cancels exactly one echo, so a client publishing the same
/// payload on the same topic meanwhile is still forwarded once the echoes are used up.
#[derive(Debug, Default)]
pub(crate) struct LoopGuard {
    /// (topic, payload digest) → when each remembered copy was published, oldest first.
    copies: HashMap<(TopicName, u64), VecDeque<Instant>>,
    /// Every copy in publishing order, to forget them when the window has passed.
    order: VecDeque<(Instant, (TopicName, u64))>,
}

fn digest(payload: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    payload.hash(&mut hasher);
    hasher.finish()
}

impl LoopGuard {
    /// The bridge published `message` on this side at `now`.
    pub(crate) fn published(&mut self, message: &Message, now: Instant) {
        self.expire(now);
        let key = (message.topic.clone(), digest(&message.payload));
        self.copies.entry(key.clone()).or_default().push_back(now);
        self.order.push_back((now, key));
        if self.order.len() > ECHO_LIMIT {
            if let Some((at, key)) = self.order.pop_front() {
                self.forget(at, key);
            }
        }
    }

    /// `message` came from this side: whether it is the echo of a copy the bridge published
    /// (that copy is then used up).
    pub(crate) fn is_echo(&mut self, message: &Message, now: Instant) -> bool {
        self.expire(now);
        let key = (message.topic.clone(), digest(&message.payload));
        let Some(times) = self.copies.get_mut(&key) else {
            return false;
        };
        times.pop_front();
        if times.is_empty() {
            self.copies.remove(&key);
        }
        true
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if now.saturating_duration_since(*at) < ECHO_WINDOW {
                break;
            }
            if let Some((at, key)) = self.order.pop_front() {
                self.forget(at, key);
            }
        }
    }

    /// The copy published at `at` leaves the window, unless its echo used it up already (then
    /// the key's oldest copy is a later one, and stays).
    fn forget(&mut self, at: Instant, key: (TopicName, u64)) {
        if let Some(times) = self.copies.get_mut(&key) {
            if times.front().is_some_and(|first| *first <= at) {
                times.pop_front();
            }
            if times.is_empty() {
                self.copies.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BridgeDirection;

    fn topic(pattern: &str, direction: BridgeDirection, local: &str, remote: &str) -> BridgeTopic {
        BridgeTopic {
            pattern: pattern.into(),
            direction,
            qos: 1,
            local_prefix: local.into(),
            remote_prefix: remote.into(),
        }
    }

    fn message(topic: &str, payload: &str, qos: QoS) -> Message {
        Message {
            topic: TopicName::new(topic).unwrap(),
            payload: payload.to_string().into(),
            qos,
            retain: false,
            properties: None,
        }
    }

    #[test]
    fn prefixes_are_swapped_each_way_and_qos_capped() {
        let routes = Routes::new(&[
            topic("sensors/#", BridgeDirection::Out, "", "site1/"),
            topic("cmd/#", BridgeDirection::In, "local/", "remote/"),
        ])
        .unwrap();
        let out = routes
            .outbound(&message("sensors/t", "1", QoS::ExactlyOnce))
            .unwrap();
        assert_eq!(out.topic.as_str(), "site1/sensors/t");
        assert_eq!(out.qos, QoS::AtLeastOnce);
        assert!(routes
            .outbound(&message("cmd/x", "1", QoS::AtMostOnce))
            .is_none());
        let inbound = routes
            .inbound(&message("remote/cmd/go", "1", QoS::AtMostOnce))
            .unwrap();
        assert_eq!(inbound.topic.as_str(), "local/cmd/go");
        assert_eq!(inbound.qos, QoS::AtMostOnce);
        assert!(routes
            .inbound(&message("cmd/go", "1", QoS::AtMostOnce))
            .is_none());
        let local: Vec<String> = routes
            .local_filters()
            .iter()
            .map(|(f, _)| f.as_str().to_string())
            .collect();
        assert_eq!(local, ["sensors/#"]);
        let remote: Vec<String> = routes
            .remote_filters()
            .iter()
            .map(|(f, _)| f.as_str().to_string())
            .collect();
        assert_eq!(remote, ["remote/cmd/#"]);
        assert!(routes.two_way());
    }

    #[test]
    fn both_subscribes_each_side_and_an_invalid_combination_is_refused() {
        let routes = Routes::new(&[topic("a/+", BridgeDirection::Both, "l/", "r/")]).unwrap();
        assert_eq!(routes.local_filters()[0].0.as_str(), "l/a/+");
        assert_eq!(routes.remote_filters()[0].0.as_str(), "r/a/+");
        assert!(Routes::new(&[topic("#", BridgeDirection::Out, "x", "")]).is_err());
    }

    #[test]
    fn the_guard_drops_one_echo_per_copy_within_the_window() {
        let mut guard = LoopGuard::default();
        let now = Instant::now();
        let m = message("a/b", "p", QoS::AtLeastOnce);
        guard.published(&m, now);
        assert!(!guard.is_echo(&message("a/b", "other", QoS::AtLeastOnce), now));
        assert!(guard.is_echo(&m, now));
        assert!(!guard.is_echo(&m, now), "one copy cancels one echo");
        guard.published(&m, now);
        assert!(
            !guard.is_echo(&m, now + ECHO_WINDOW),
            "forgotten after the window"
        );
        assert!(guard.copies.is_empty() && guard.order.is_empty());
    }
}
