//! A topic trie: topic filters in, the values stored under every filter that matches a topic out.
//!
//! Matching walks the topic's levels once (O(levels × branching on `+`/`#`)), never the list of
//! filters, and uses no regular expressions. The rules, as [MQTT-4.7] states them:
//! - `sport/tennis/+` matches `sport/tennis/player1` but not `sport/tennis/player1/ranking`;
//! - `sport/#` matches `sport`, `sport/tennis` and `sport/tennis/player1`;
//! - `+` matches an empty level: `+/finance` matches `/finance`;
//! - a topic starting with `$` is never matched by a filter whose first level is `+` or `#`
//!   [MQTT-4.7.2-1], so `#` does not see `$SYS/broker/uptime` but `$SYS/#` does.
//!
//! The trie is generic over the value kept per filter: the broker stores its subscribers there, and
//! the remote-interest table stores a reference count. It knows nothing of sessions or shards.

use std::collections::HashMap;

use crate::protocol::TopicFilter;

/// The trie's level maps hash with foldhash (seeded per process), not SipHash: hashing was ≈ 10 %
/// of the broker's instructions per publish (callgrind, 8 pairs QoS 0).
type LevelMap<V> = HashMap<Box<[u8]>, Node<V>, foldhash::fast::RandomState>;

/// One level of the trie.
#[derive(Debug)]
struct Node<V> {
    /// Value for a filter ending exactly here.
    value: Option<V>,
    /// Children by literal level text (its UTF-8 bytes: matching walks a topic's bytes, so that
    /// a publish costs no UTF-8 re-validation of its topic).
    literal: LevelMap<V>,
    /// Child for a `+` level.
    plus: Option<Box<Node<V>>>,
    /// Value for a filter whose next (and last) level is `#`.
    hash: Option<V>,
}

impl<V> Default for Node<V> {
    fn default() -> Self {
        Node {
            value: None,
            literal: LevelMap::default(),
            plus: None,
            hash: None,
        }
    }
}

impl<V> Node<V> {
    fn is_empty(&self) -> bool {
        self.value.is_none()
            && self.literal.is_empty()
            && self.plus.is_none()
            && self.hash.is_none()
    }
}

/// Topic filters mapped to values of type `V`.
#[derive(Debug)]
pub struct TopicTrie<V> {
    root: Node<V>,
    filters: usize,
}

impl<V> Default for TopicTrie<V> {
    fn default() -> Self {
        TopicTrie {
            root: Node::default(),
            filters: 0,
        }
    }
}

impl<V> TopicTrie<V> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of distinct filters stored.
    pub fn len(&self) -> usize {
        self.filters
    }

    pub fn is_empty(&self) -> bool {
        self.filters == 0
    }

    /// The value stored for `filter`, created with `make` when the filter is new.
    /// Returns the value and whether it was just created.
    pub fn entry(&mut self, filter: &TopicFilter, make: impl FnOnce() -> V) -> (&mut V, bool) {
        let mut node = &mut self.root;
        let mut levels = filter.as_str().split('/').peekable();
        while let Some(level) = levels.next() {
            let last = levels.peek().is_none();
            if level == "#" && last {
                let created = node.hash.is_none();
                if created {
                    self.filters += 1;
                }
                return (node.hash.get_or_insert_with(make), created);
            }
            node = if level == "+" {
                node.plus.get_or_insert_with(Box::default)
            } else {
                node.literal.entry(level.as_bytes().into()).or_default()
            };
        }
        let created = node.value.is_none();
        if created {
            self.filters += 1;
        }
        (node.value.get_or_insert_with(make), created)
    }

    /// The value stored for exactly this filter.
    pub fn get(&self, filter: &TopicFilter) -> Option<&V> {
        let mut node = &self.root;
        let mut levels = filter.as_str().split('/').peekable();
        while let Some(level) = levels.next() {
            let last = levels.peek().is_none();
            if level == "#" && last {
                return node.hash.as_ref();
            }
            node = if level == "+" {
                node.plus.as_deref()?
            } else {
                node.literal.get(level.as_bytes())?
            };
        }
        node.value.as_ref()
    }

    /// The value stored for exactly this filter.
    pub fn get_mut(&mut self, filter: &TopicFilter) -> Option<&mut V> {
        let mut node = &mut self.root;
        let mut levels = filter.as_str().split('/').peekable();
        while let Some(level) = levels.next() {
            let last = levels.peek().is_none();
            if level == "#" && last {
                return node.hash.as_mut();
            }
            node = if level == "+" {
                node.plus.as_deref_mut()?
            } else {
                node.literal.get_mut(level.as_bytes())?
            };
        }
        node.value.as_mut()
    }

    /// Removes the filter and returns its value; empty branches are pruned.
    pub fn remove(&mut self, filter: &TopicFilter) -> Option<V> {
        let levels: Vec<&str> = filter.as_str().split('/').collect();
        let removed = Self::remove_in(&mut self.root, &levels);
        if removed.is_some() {
            self.filters -= 1;
        }
        removed
    }

    fn remove_in(node: &mut Node<V>, levels: &[&str]) -> Option<V> {
        let Some((&level, rest)) = levels.split_first() else {
            return node.value.take();
        };
        if level == "#" && rest.is_empty() {
            return node.hash.take();
        }
        if level == "+" {
            let child = node.plus.as_deref_mut()?;
            let removed = Self::remove_in(child, rest);
            if child.is_empty() {
                node.plus = None;
            }
            removed
        } else {
            let child = node.literal.get_mut(level.as_bytes())?;
            let removed = Self::remove_in(child, rest);
            if child.is_empty() {
                node.literal.remove(level.as_bytes());
            }
            removed
        }
    }

    /// Calls `visit` with the value of every filter that matches the topic name `topic`.
    pub fn for_each_match<'a>(&'a self, topic: &[u8], mut visit: impl FnMut(&'a V)) {
        let dollar = topic.first() == Some(&b'$');
        let mut levels: [&[u8]; 32] = [b""; 32];
        let mut count = 0;
        let mut overflow = Vec::new();
        for level in topic.split(|&b| b == b'/') {
            if count < levels.len() {
                levels[count] = level;
            } else {
                overflow.push(level);
            }
            count += 1;
        }
        if overflow.is_empty() {
            Self::match_in(&self.root, &levels[..count], dollar, &mut visit);
        } else {
            let all: Vec<&[u8]> = levels.iter().copied().chain(overflow).collect();
            Self::match_in(&self.root, &all, dollar, &mut visit);
        }
    }

    /// True when at least one filter matches the topic name `topic`.
    pub fn matches_any(&self, topic: &[u8]) -> bool {
        let mut any = false;
        self.for_each_match(topic, |_| any = true);
        any
    }

    fn match_in<'a>(
        node: &'a Node<V>,
        levels: &[&[u8]],
        first_is_dollar: bool,
        visit: &mut impl FnMut(&'a V),
    ) {
        // `#` matches this level's parent and everything below, except a leading `$` level.
        if !first_is_dollar {
            if let Some(value) = &node.hash {
                visit(value);
            }
        }
        let Some((&level, rest)) = levels.split_first() else {
            if let Some(value) = &node.value {
                visit(value);
            }
            return;
        };
        if let Some(child) = node.literal.get(level) {
            Self::match_in(child, rest, false, visit);
        }
        if !first_is_dollar {
            if let Some(child) = &node.plus {
                Self::match_in(child, rest, false, visit);
            }
        }
    }

    /// Every stored filter with its value (for diagnostics and tests).
    pub fn iter(&self) -> Vec<(String, &V)> {
        let mut out = Vec::new();
        Self::collect(&self.root, &mut Vec::new(), &mut out);
        out
    }

    fn collect<'a>(node: &'a Node<V>, path: &mut Vec<String>, out: &mut Vec<(String, &'a V)>) {
        if let Some(value) = &node.value {
            out.push((path.join("/"), value));
        }
        if let Some(value) = &node.hash {
            let mut p = path.clone();
            p.push("#".into());
            out.push((p.join("/"), value));
        }
        if let Some(child) = &node.plus {
            path.push("+".into());
            Self::collect(child, path, out);
            path.pop();
        }
        for (level, child) in &node.literal {
            path.push(String::from_utf8_lossy(level).into_owned());
            Self::collect(child, path, out);
            path.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::TopicName;

    fn filter(s: &str) -> TopicFilter {
        TopicFilter::new(s).expect("valid filter")
    }

    fn topic(s: &str) -> TopicName {
        TopicName::new(s).expect("valid topic")
    }

    fn matches(filters: &[&str], t: &str) -> Vec<String> {
        let mut trie = TopicTrie::new();
        for f in filters {
            trie.entry(&filter(f), || f.to_string());
        }
        let mut out = Vec::new();
        trie.for_each_match(topic(t).as_bytes(), |v: &String| out.push(v.clone()));
        out.sort();
        out
    }

    #[test]
    fn spec_examples_for_multi_level_wildcard() {
        let f = ["sport/tennis/player1/#"];
        assert_eq!(matches(&f, "sport/tennis/player1"), f);
        assert_eq!(matches(&f, "sport/tennis/player1/ranking"), f);
        assert_eq!(matches(&f, "sport/tennis/player1/score/wimbledon"), f);
        assert!(matches(&f, "sport/tennis/player2").is_empty());
        assert_eq!(matches(&["sport/#"], "sport"), ["sport/#"]);
        assert_eq!(matches(&["#"], "a/b/c"), ["#"]);
    }

    #[test]
    fn spec_examples_for_single_level_wildcard() {
        let f = ["sport/tennis/+"];
        assert_eq!(matches(&f, "sport/tennis/player1"), f);
        assert!(matches(&f, "sport/tennis/player1/ranking").is_empty());
        assert!(matches(&["sport/+"], "sport").is_empty());
        assert_eq!(matches(&["sport/+"], "sport/"), ["sport/+"]);
        assert_eq!(matches(&["+/+"], "/finance"), ["+/+"]);
        assert_eq!(matches(&["/+"], "/finance"), ["/+"]);
        assert!(matches(&["+"], "/finance").is_empty());
        assert_eq!(matches(&["+/+/#"], "a/b"), ["+/+/#"]);
    }

    #[test]
    fn dollar_topics_are_not_matched_by_leading_wildcards() {
        assert!(matches(&["#"], "$SYS/broker").is_empty());
        assert!(matches(&["+/broker"], "$SYS/broker").is_empty());
        assert_eq!(matches(&["$SYS/#"], "$SYS/broker"), ["$SYS/#"]);
        assert_eq!(matches(&["$SYS/+"], "$SYS/broker"), ["$SYS/+"]);
        assert_eq!(matches(&["a/+"], "a/$b"), ["a/+"]);
    }

    #[test]
    fn overlapping_filters_all_match() {
        let got = matches(&["a/b", "a/+", "a/#", "#", "+/b", "b/#"], "a/b");
        assert_eq!(got, ["#", "+/b", "a/#", "a/+", "a/b"]);
    }

    #[test]
    fn remove_prunes_and_counts() {
        let mut trie = TopicTrie::new();
        for f in ["a/b", "a/+", "a/#", "#", "a/b/c"] {
            trie.entry(&filter(f), || 1u32);
        }
        assert_eq!(trie.len(), 5);
        assert_eq!(trie.remove(&filter("a/b")), Some(1));
        assert_eq!(trie.remove(&filter("a/b")), None);
        assert_eq!(trie.remove(&filter("x/y")), None);
        assert_eq!(trie.len(), 4);
        for f in ["a/+", "a/#", "#", "a/b/c"] {
            assert!(trie.remove(&filter(f)).is_some());
        }
        assert!(trie.is_empty());
        assert!(trie.root.is_empty());
    }

    #[test]
    fn deep_topics_beyond_the_inline_buffer_match() {
        let deep: Vec<String> = (0..40).map(|i| i.to_string()).collect();
        let t = deep.join("/");
        let mut f = deep[..39].join("/");
        f.push_str("/+");
        assert_eq!(matches(&[&f], &t), [f.clone()]);
        assert_eq!(matches(&["0/#"], &t), ["0/#"]);
    }

    #[test]
    fn entry_reports_creation_once() {
        let mut trie = TopicTrie::new();
        assert!(trie.entry(&filter("a/+"), || 0).1);
        let (v, created) = trie.entry(&filter("a/+"), || 0);
        assert!(!created);
        *v += 1;
        assert_eq!(trie.get_mut(&filter("a/+")), Some(&mut 1));
        assert_eq!(trie.iter().len(), 1);
    }
}
