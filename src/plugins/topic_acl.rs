//! `topic_acl`: aMQTT's `TopicAccessControlListPlugin`: per-user lists of allowed topics.
//!
//! ```yaml
//! topic-check:
//!   enabled: true
//!   plugins: ['topic_acl']
//!   acl:                      # SUBSCRIBE: which filters each user may subscribe with
//!     alice: ['sensors/#', 'users/%u/#']
//!     anonymous: ['public/#']
//!   publish-acl:              # PUBLISH: which topics each user may publish to
//!     alice: ['sensors/alice/+', 'clients/%c/status']
//! ```
//!
//! Rules (aMQTT's, with the matching made exact):
//! - The key is the client's user name; clients without one use the key `anonymous`.
//! - A table that is absent places no restriction (aMQTT: no `publish-acl` means publishing is
//!   not checked, no `acl` means subscribing is not). In a table that is present, a user who is
//!   not listed, or whose list is empty or null, may do nothing.
//! - Entries are MQTT topic filters, matched with the broker's own matcher ([`TopicFilter`]): `+`
//!   is one level, `#` is the parent level and everything below it (`a/#` allows `a`), and a
//!   filter starting with a wildcard does not reach `$`-topics [MQTT-4.7.2-1] (list `$SYS/#` to
//!   allow those).
//! - PUBLISH to topic T is allowed when some entry matches T.
//! - SUBSCRIBE with filter F is allowed when some entry *covers* F: every topic F can match is
//!   matched by the entry ([`filter_covers`], Mosquitto's rule). So `a/+` allows `a/+` and `a/b`,
//!   but not `a/#` or `#`; `a/#` allows `a/+/c`. (aMQTT compares level by level and lets `a/+`
//!   allow `a/#`, which would leak everything below `a/`.)
//! - `%u` in an entry stands for the user name and `%c` for the client id (Mosquitto's patterns).
//!   An entry with `%u` never matches an anonymous client, and an entry never matches when the
//!   substituted value contains `/`, `+` or `#` (it would widen the entry).
//!
//! Cost: one hash lookup per check plus one match per entry of that user; entries with `%u`/`%c`
//! build their filter per check (a small allocation).

use std::collections::{BTreeMap, HashMap};

use crate::protocol::TopicFilter;

use super::{ClientInfo, TopicAction, TopicPlugin};

/// The key used for clients without a user name.
const ANONYMOUS: &str = "anonymous";

/// The built-in `topic_acl` plugin.
#[derive(Debug, Clone, Default)]
pub struct TopicAcl {
    subscribe: Option<AclTable>,
    publish: Option<AclTable>,
}

/// An entry that is not a valid topic filter, as found when the plugin is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclEntryError {
    /// `acl` or `publish-acl`.
    pub table: &'static str,
    pub user: String,
    pub index: usize,
    pub reason: String,
}

#[derive(Debug, Clone, Default)]
struct AclTable {
    by_user: HashMap<String, Vec<Entry>>,
}

#[derive(Debug, Clone)]
enum Entry {
    Filter(TopicFilter),
    /// Contains `%u` and/or `%c`; checked for validity at build time with placeholders filled in.
    Pattern(String),
}

impl TopicAcl {
    pub const NAME: &'static str = "topic_acl";

    /// Builds the plugin from the configuration's `acl` (SUBSCRIBE) and `publish-acl` (PUBLISH)
    /// tables; `None` for a table means no restriction of that kind.
    pub fn new(
        subscribe: Option<&BTreeMap<String, Vec<String>>>,
        publish: Option<&BTreeMap<String, Vec<String>>>,
    ) -> Result<Self, AclEntryError> {
        Ok(TopicAcl {
            subscribe: subscribe.map(|t| AclTable::new("acl", t)).transpose()?,
            publish: publish
                .map(|t| AclTable::new("publish-acl", t))
                .transpose()?,
        })
    }

    /// Whether neither table is configured (the plugin then allows everything).
    pub fn is_unrestricted(&self) -> bool {
        self.subscribe.is_none() && self.publish.is_none()
    }
}

impl AclTable {
    fn new(
        table: &'static str,
        raw: &BTreeMap<String, Vec<String>>,
    ) -> Result<Self, AclEntryError> {
        let mut by_user = HashMap::new();
        for (user, entries) in raw {
            let mut parsed = Vec::with_capacity(entries.len());
            for (index, entry) in entries.iter().enumerate() {
                let error = |reason: String| AclEntryError {
                    table,
                    user: user.clone(),
                    index,
                    reason,
                };
                if entry.contains("%u") || entry.contains("%c") {
                    // Validate the shape with a harmless stand-in for the placeholders.
                    let probe = entry.replace("%u", "u").replace("%c", "c");
                    TopicFilter::new(&probe)
                        .map_err(|e| error(format!("'{entry}' is not a topic filter: {e}")))?;
                    parsed.push(Entry::Pattern(entry.clone()));
                } else {
                    let filter = TopicFilter::new(entry)
                        .map_err(|e| error(format!("'{entry}' is not a topic filter: {e}")))?;
                    parsed.push(Entry::Filter(filter));
                }
            }
            by_user.insert(user.clone(), parsed);
        }
        Ok(AclTable { by_user })
    }

    fn allows(&self, client: &ClientInfo<'_>, action: TopicAction<'_>) -> bool {
        let key = client.username.unwrap_or(ANONYMOUS);
        let Some(entries) = self.by_user.get(key) else {
            return false;
        };
        entries.iter().any(|entry| match entry {
            Entry::Filter(filter) => entry_allows(filter, action),
            Entry::Pattern(pattern) => substitute(pattern, client)
                .and_then(|text| TopicFilter::new(&text).ok())
                .is_some_and(|filter| entry_allows(&filter, action)),
        })
    }
}

fn entry_allows(entry: &TopicFilter, action: TopicAction<'_>) -> bool {
    match action {
        TopicAction::Publish(topic) => entry.matches(topic),
        TopicAction::Subscribe(filter) => filter_covers(entry, filter),
    }
}

/// `%u` → user name, `%c` → client id; `None` when the entry cannot apply to this client.
fn substitute(pattern: &str, client: &ClientInfo<'_>) -> Option<String> {
    let unsafe_value = |v: &str| v.is_empty() || v.contains(['/', '+', '#']);
    let mut text = pattern.to_string();
    if pattern.contains("%u") {
        let user = client.username?;
        if unsafe_value(user) {
            return None;
        }
        text = text.replace("%u", user);
    }
    if pattern.contains("%c") {
        if unsafe_value(client.client_id) {
            return None;
        }
        text = text.replace("%c", client.client_id);
    }
    Some(text)
}

/// Whether every topic that `requested` can match is also matched by `allowed` (so granting the
/// subscription gives the client nothing the entry does not allow). Mosquitto's rule for
/// subscription ACLs.
pub fn filter_covers(allowed: &TopicFilter, requested: &TopicFilter) -> bool {
    let mut allowed_levels = allowed.levels();
    let mut requested_levels = requested.levels();
    let mut first = true;
    loop {
        match (allowed_levels.next(), requested_levels.next()) {
            // `#` takes what is left, except `$`-topics at the first level [MQTT-4.7.2-1].
            (Some("#"), Some(level)) => return !(first && level.starts_with('$')),
            // `a/#` also matches `a` itself.
            (Some("#"), None) | (None, None) => return true,
            (Some(allowed), Some(level)) => {
                let ok = match level {
                    "#" => false,
                    "+" => allowed == "+",
                    literal if allowed == "+" => !(first && literal.starts_with('$')),
                    literal => allowed == literal,
                };
                if !ok {
                    return false;
                }
            }
            (None, Some(_)) | (Some(_), None) => return false,
        }
        first = false;
    }
}

impl TopicPlugin for TopicAcl {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn allow(&self, client: &ClientInfo<'_>, action: TopicAction<'_>) -> bool {
        let table = match action {
            TopicAction::Subscribe(_) => &self.subscribe,
            TopicAction::Publish(_) => &self.publish,
        };
        table.as_ref().is_none_or(|t| t.allows(client, action))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::TopicName;

    fn name(s: &str) -> TopicName {
        TopicName::new(s).expect("topic name")
    }

    fn filter(s: &str) -> TopicFilter {
        TopicFilter::new(s).expect("filter")
    }

    fn covers(allowed: &str, requested: &str) -> bool {
        filter_covers(&filter(allowed), &filter(requested))
    }

    fn table(entries: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        entries
            .iter()
            .map(|(user, list)| {
                (
                    user.to_string(),
                    list.iter().map(|s| s.to_string()).collect(),
                )
            })
            .collect()
    }

    const ALICE: ClientInfo<'static> = ClientInfo {
        client_id: "alice-phone",
        username: Some("alice"),
    };
    const ANON: ClientInfo<'static> = ClientInfo {
        client_id: "anon-1",
        username: None,
    };

    fn may_subscribe(acl: &TopicAcl, client: &ClientInfo<'_>, f: &str) -> bool {
        acl.allow(client, TopicAction::Subscribe(&filter(f)))
    }

    fn may_publish(acl: &TopicAcl, client: &ClientInfo<'_>, t: &str) -> bool {
        acl.allow(client, TopicAction::Publish(&name(t)))
    }

    #[test]
    fn coverage_follows_topic_matching() {
        assert!(covers("a/b", "a/b"));
        assert!(covers("a/+", "a/b"));
        assert!(covers("a/+", "a/+"));
        assert!(
            !covers("a/+", "a/#"),
            "a/# reaches a/b/c, which a/+ does not allow"
        );
        assert!(!covers("a/+", "a/b/c"));
        assert!(!covers("a/+", "a"));
        assert!(covers("a/#", "a"), "a/# matches its parent");
        assert!(covers("a/#", "a/#"));
        assert!(covers("a/#", "a/+/c"));
        assert!(covers("a/#", "a/b/#"));
        assert!(!covers("a/#", "b/#"));
        assert!(
            !covers("a/+/#", "a/#"),
            "a/# matches a, which a/+/# does not"
        );
        assert!(covers("#", "a/b"));
        assert!(covers("#", "#"));
        assert!(covers("+/+", "+/b"));
        assert!(!covers("a/b", "a/+"));
        assert!(!covers("a/b", "a/b/c"));
        assert!(!covers("a/b/c", "a/b"));
    }

    #[test]
    fn wildcards_do_not_cover_dollar_topics() {
        assert!(!covers("#", "$SYS/#"));
        assert!(!covers("+/broker", "$SYS/broker"));
        assert!(covers("$SYS/#", "$SYS/broker/uptime"));
        // A wildcard first level of the request cannot reach `$` topics either.
        assert!(covers("#", "+/x"));
    }

    #[test]
    fn subscribe_acl_per_user_and_anonymous() {
        let acl = TopicAcl::new(
            Some(&table(&[
                ("alice", &["sensors/#", "chat/+"]),
                ("anonymous", &["public/#"]),
                ("bob", &[]),
            ])),
            None,
        )
        .expect("acl");
        assert!(may_subscribe(&acl, &ALICE, "sensors/kitchen/temp"));
        assert!(may_subscribe(&acl, &ALICE, "sensors/#"));
        assert!(may_subscribe(&acl, &ALICE, "chat/room1"));
        assert!(!may_subscribe(&acl, &ALICE, "chat/#"));
        assert!(!may_subscribe(&acl, &ALICE, "#"));
        assert!(!may_subscribe(&acl, &ALICE, "public/x"));
        assert!(may_subscribe(&acl, &ANON, "public/x"));
        assert!(!may_subscribe(&acl, &ANON, "sensors/x"));
        let bob = ClientInfo {
            client_id: "b",
            username: Some("bob"),
        };
        assert!(
            !may_subscribe(&acl, &bob, "public/x"),
            "empty list: nothing"
        );
        let carol = ClientInfo {
            client_id: "c",
            username: Some("carol"),
        };
        assert!(
            !may_subscribe(&acl, &carol, "public/x"),
            "unlisted: nothing"
        );
        // No publish-acl table: publishing is not restricted (aMQTT's backward compatibility).
        assert!(may_publish(&acl, &carol, "anything/at/all"));
    }

    #[test]
    fn publish_acl_matches_topics() {
        let acl = TopicAcl::new(
            None,
            Some(&table(&[("alice", &["sensors/alice/+", "$SYS/x"])])),
        )
        .expect("acl");
        assert!(may_publish(&acl, &ALICE, "sensors/alice/temp"));
        assert!(!may_publish(&acl, &ALICE, "sensors/bob/temp"));
        assert!(!may_publish(&acl, &ALICE, "sensors/alice/temp/raw"));
        assert!(may_publish(&acl, &ALICE, "$SYS/x"));
        assert!(!may_publish(&acl, &ANON, "sensors/alice/temp"));
        // No acl table: subscribing is not restricted.
        assert!(may_subscribe(&acl, &ANON, "#"));
    }

    #[test]
    fn hash_entries_do_not_reach_dollar_topics() {
        let acl = TopicAcl::new(None, Some(&table(&[("alice", &["#"])]))).expect("acl");
        assert!(may_publish(&acl, &ALICE, "a/b"));
        assert!(!may_publish(&acl, &ALICE, "$SYS/broker/uptime"));
    }

    #[test]
    fn user_and_client_id_placeholders() {
        let acl = TopicAcl::new(
            Some(&table(&[
                ("alice", &["users/%u/#", "clients/%c/+"]),
                ("anonymous", &["users/%u/#", "clients/%c/in"]),
            ])),
            None,
        )
        .expect("acl");
        assert!(may_subscribe(&acl, &ALICE, "users/alice/inbox"));
        assert!(!may_subscribe(&acl, &ALICE, "users/bob/inbox"));
        assert!(may_subscribe(&acl, &ALICE, "clients/alice-phone/in"));
        assert!(!may_subscribe(&acl, &ALICE, "clients/other/in"));
        // %u never matches an anonymous client; %c still does.
        assert!(!may_subscribe(&acl, &ANON, "users/anonymous/inbox"));
        assert!(may_subscribe(&acl, &ANON, "clients/anon-1/in"));
        // Values that would widen the entry make it inapplicable.
        let sneaky = ClientInfo {
            client_id: "#",
            username: Some("alice"),
        };
        assert!(!may_subscribe(&acl, &sneaky, "clients/#"));
        let slashy = ClientInfo {
            client_id: "x",
            username: Some("alice/../bob"),
        };
        let acl2 =
            TopicAcl::new(Some(&table(&[("alice/../bob", &["users/%u/#"])])), None).expect("acl");
        assert!(!may_subscribe(&acl2, &slashy, "users/alice/../bob/x"));
    }

    #[test]
    fn invalid_entries_are_reported_with_their_place() {
        let error = TopicAcl::new(None, Some(&table(&[("alice", &["ok/+", "bad/#/more"])])))
            .expect_err("invalid");
        assert_eq!(
            (error.table, error.user.as_str(), error.index),
            ("publish-acl", "alice", 1)
        );
        assert!(error.reason.contains("bad/#/more"), "{}", error.reason);
        let error =
            TopicAcl::new(Some(&table(&[("bob", &["a+%u/y"])])), None).expect_err("invalid");
        assert_eq!((error.table, error.index), ("acl", 0));
    }
}
