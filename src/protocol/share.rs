//! The syntax of a shared subscription's filter, `$share/{ShareName}/{filter}` (MQTT 5.0 §4.8.2,
//! which brokers also accept from MQTT 3.1.1 clients): split off the share name and check it.
//!
//! Syntax only: what a share group means (who gets a message) is the broker's
//! (`broker/shared.rs`). A filter that does not start with `$share/` is an ordinary filter, even
//! one that starts with `$share` (no `/`): [MQTT-4.8.2-1] names the prefix with its slash.

use super::TopicFilter;

/// What starts a shared subscription's filter [MQTT-4.8.2-1].
pub const SHARE_PREFIX: &str = "$share/";

/// A topic filter read as a possible shared subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Share<'a> {
    /// An ordinary filter.
    NotShared,
    /// `$share/{group}/{filter}`: both parts checked.
    Shared {
        /// The share name: at least one character, no `/`, `+` or `#`.
        group: &'a str,
        /// The filter after the share name: a valid, non-empty topic filter.
        filter: TopicFilter,
    },
    /// Starts with `$share/` but breaks [MQTT-4.8.2-1/2]; says why.
    Invalid(&'static str),
}

impl TopicFilter {
    /// Whether the filter starts with `$share/` (cheap: no parsing, no allocation).
    pub fn is_shared(&self) -> bool {
        self.0.starts_with(SHARE_PREFIX)
    }

    /// The filter read as a shared subscription: its share name and the filter after it, checked
    /// against [MQTT-4.8.2-1] (a share name of at least one character) and [MQTT-4.8.2-2] (no
    /// `/`, `+` or `#` in it, followed by `/` and a topic filter).
    pub fn share(&self) -> Share<'_> {
        let Some(rest) = self.0.strip_prefix(SHARE_PREFIX) else {
            return Share::NotShared;
        };
        let Some((group, filter)) = rest.split_once('/') else {
            return Share::Invalid("no '/' and topic filter after the share name");
        };
        if group.is_empty() {
            return Share::Invalid("empty share name");
        }
        if group.contains(['+', '#']) {
            return Share::Invalid("'+' or '#' in the share name");
        }
        if filter.is_empty() {
            return Share::Invalid("empty topic filter after the share name");
        }
        // Every level of `filter` is a level of `self`, which was validated whole: the part after
        // the share name is a valid filter as it stands.
        Share::Shared {
            group,
            filter: TopicFilter(filter.to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(s: &str) -> Share<'static> {
        let filter = TopicFilter::new(s).expect("a valid filter");
        match filter.share() {
            Share::NotShared => Share::NotShared,
            Share::Invalid(why) => Share::Invalid(why),
            Share::Shared { group, filter } => Share::Shared {
                group: Box::leak(group.to_owned().into_boxed_str()),
                filter,
            },
        }
    }

    fn shared(group: &'static str, filter: &str) -> Share<'static> {
        Share::Shared {
            group,
            filter: TopicFilter::new(filter).expect("a valid filter"),
        }
    }

    #[test]
    fn a_share_name_and_a_filter_are_split() {
        assert_eq!(share("$share/g/a/b"), shared("g", "a/b"));
        assert_eq!(share("$share/group-1/#"), shared("group-1", "#"));
        assert_eq!(share("$share/g/+/x/#"), shared("g", "+/x/#"));
        assert_eq!(share("$share/g/$SYS/#"), shared("g", "$SYS/#"));
        assert_eq!(
            share("$share/g//"),
            shared("g", "/"),
            "'/' is a valid filter"
        );
        assert!(TopicFilter::new("$share/g/t").expect("valid").is_shared());
    }

    #[test]
    fn ordinary_filters_are_not_shared() {
        for s in [
            "a/b",
            "#",
            "$share",
            "$sharex/g/t",
            "$SYS/#",
            "+/$share/g/t",
        ] {
            assert_eq!(share(s), Share::NotShared, "{s}");
            assert!(!TopicFilter::new(s).expect("valid").is_shared(), "{s}");
        }
    }

    #[test]
    fn invalid_share_names_are_refused() {
        // [MQTT-4.8.2-1]: at least one character; [MQTT-4.8.2-2]: no '/', '+', '#', then a
        // '/' and a filter.
        for s in [
            "$share/",
            "$share//t",
            "$share/g",
            "$share/g/",
            "$share/+/t",
            "$share/#",
        ] {
            assert!(matches!(share(s), Share::Invalid(_)), "{s}");
        }
    }
}
