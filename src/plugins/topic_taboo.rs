//! `topic_taboo`: aMQTT's `TopicTabooPlugin`, a demonstration plugin kept for compatibility.
//!
//! Denies publishing to, and subscribing with, the exact strings `prohibited`, `top-secret` and
//! `data/classified`, except for the user `admin`. As in aMQTT the comparison is by string, not by
//! topic matching: a subscription to `#` or `data/+` is allowed (and then receives messages that
//! others may not send there, because nobody but `admin` can publish to them). The list is fixed,
//! as in aMQTT; use `topic_acl` for real access control.

use super::{ClientInfo, TopicAction, TopicPlugin};

/// The taboo topics and filters.
pub const TABOO: [&str; 3] = ["prohibited", "top-secret", "data/classified"];
/// The user the taboo does not apply to.
pub const ADMIN: &str = "admin";

/// The built-in `topic_taboo` plugin.
#[derive(Debug, Clone, Default)]
pub struct TopicTaboo;

impl TopicTaboo {
    pub const NAME: &'static str = "topic_taboo";
}

impl TopicPlugin for TopicTaboo {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn allow(&self, client: &ClientInfo<'_>, action: TopicAction<'_>) -> bool {
        client.username == Some(ADMIN) || !TABOO.contains(&action.topic())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{TopicFilter, TopicName};

    fn client(username: Option<&'static str>) -> ClientInfo<'static> {
        ClientInfo {
            client_id: "c",
            username,
        }
    }

    fn publish(username: Option<&'static str>, topic: &str) -> bool {
        let topic = TopicName::new(topic).expect("topic");
        TopicTaboo.allow(&client(username), TopicAction::Publish(&topic))
    }

    fn subscribe(username: Option<&'static str>, filter: &str) -> bool {
        let filter = TopicFilter::new(filter).expect("filter");
        TopicTaboo.allow(&client(username), TopicAction::Subscribe(&filter))
    }

    #[test]
    fn taboo_topics_are_denied_to_everyone_but_admin() {
        for topic in TABOO {
            assert!(!publish(None, topic), "{topic}");
            assert!(!publish(Some("alice"), topic), "{topic}");
            assert!(!subscribe(Some("alice"), topic), "{topic}");
            assert!(publish(Some("admin"), topic), "{topic}");
            assert!(subscribe(Some("admin"), topic), "{topic}");
        }
    }

    #[test]
    fn other_topics_and_wildcards_are_allowed() {
        assert!(publish(None, "prohibited/not"));
        assert!(publish(None, "data/public"));
        assert!(subscribe(None, "data/+"));
        assert!(subscribe(None, "#"));
    }
}
