//! `topic_acl`: aMQTT's `TopicAccessControlListPlugin`: per-user lists of allowed topics.
//!
//! ```yaml
//! topic-check:
//!   enabled: true
//!   plugins: ['topic_acl']
//!   acl:                      # PUBLISH and SUBSCRIBE, unless a table below says otherwise
//!     alice: ['sensors/#', 'users/%u/#']
//!     anonymous: ['public/#']
//!   publish-acl:              # PUBLISH: which topics each user may publish to
//!     alice: ['sensors/alice/+', 'clients/%c/status']
//!   subscribe-acl:            # SUBSCRIBE: which filters each user may subscribe with
//!     alice: ['sensors/#']
//!   receive-acl:              # delivery: which topics each user may receive
//!     alice: ['sensors/#']
//! ```
//!
//! Which table governs what:
//! - PUBLISH (a client's publishes and its will): `publish-acl` when given, else `acl`, else
//!   nothing (publishing is unrestricted).
//! - SUBSCRIBE: `subscribe-acl` when given, else `acl`, else nothing.
//! - Receiving: `receive-acl` when given (checked at each delivery, for each subscriber, retained
//!   messages sent after a SUBACK included), else nothing: a subscription the other tables granted
//!   receives everything it matches.
//!
//! So `acl` alone governs both publishing and subscribing, as aMQTT's documentation and ours say
//! ("topics on which the user can publish and subscribe"). This differs from aMQTT's code, which
//! leaves publishing open when `publish-acl` is absent (its "backward compatibility"): a user
//! confined to `alice/#` there could still publish to any topic.
//!
//! Rules within a table (aMQTT's, with the matching made exact):
//! - The key is the client's user name; clients without one use the key `anonymous`. (aMQTT's
//!   documentation reserves the user `admin` for full access; we do not: list it like any other.)
//! - In a table that is present, a user who is not listed, or whose list is empty or null, may do
//!   nothing of that kind.
//! - Entries are MQTT topic filters, matched with the broker's own matcher ([`TopicFilter`]): `+`
//!   is one level, `#` is the parent level and everything below it (`a/#` allows `a`), and a
//!   filter starting with a wildcard does not reach `$`-topics [MQTT-4.7.2-1] (list `$SYS/#` to
//!   allow those).
//! - PUBLISH to (or receiving from) topic T is allowed when some entry matches T.
//! - SUBSCRIBE with filter F is allowed when some entry *covers* F: every topic F can match is
//!   matched by the entry ([`filter_covers`], Mosquitto's rule). So `a/+` allows `a/+` and `a/b`,
//!   but not `a/#` or `#`; `a/#` allows `a/+/c`. (aMQTT compares level by level and lets `a/+`
//!   allow `a/#`, which would leak everything below `a/`.)
//! - `%u` in an entry stands for the user name and `%c` for the client id (Mosquitto's patterns).
//!   An entry with `%u` never matches an anonymous client, and an entry never matches when the
//!   substituted value contains `/`, `+` or `#` (it would widen the entry).
//!
//! Cost: one hash lookup per check plus one match per entry of that user; entries with `%u`/`%c`
//! build their filter per check (a small allocation). Without `receive-acl` the plugin says so
//! ([`TopicPlugin::checks_receive`]) and deliveries pay nothing.

use std::collections::{BTreeMap, HashMap};

use crate::protocol::TopicFilter;

use super::{ClientInfo, TopicAction, TopicPlugin};

/// The key used for clients without a user name.
const ANONYMOUS: &str = "anonymous";

/// The tables of the `topic-check` section, as configured (`None`: the key is absent).
#[derive(Debug, Clone, Copy, Default)]
pub struct AclTables<'a> {
    /// `acl`: publishing and subscribing, where the two tables below are absent.
    pub acl: Option<&'a BTreeMap<String, Vec<String>>>,
    /// `publish-acl`: publishing (a will included).
    pub publish_acl: Option<&'a BTreeMap<String, Vec<String>>>,
    /// `subscribe-acl`: subscribing.
    pub subscribe_acl: Option<&'a BTreeMap<String, Vec<String>>>,
    /// `receive-acl`: what each user's subscriptions deliver.
    pub receive_acl: Option<&'a BTreeMap<String, Vec<String>>>,
}

/// The built-in `topic_acl` plugin.
#[derive(Debug, Clone, Default)]
pub struct TopicAcl {
    subscribe: Option<Governing>,
    publish: Option<Governing>,
    receive: Option<Governing>,
}

/// A table and the configuration key it came from (for the start log).
#[derive(Debug, Clone)]
struct Governing {
    key: &'static str,
    table: AclTable,
}

/// An entry that is not a valid topic filter, as found when the plugin is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclEntryError {
    /// `acl`, `publish-acl`, `subscribe-acl` or `receive-acl`.
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

    /// Builds the plugin from the configuration's tables (see the module documentation for which
    /// one governs what).
    pub fn new(tables: AclTables<'_>) -> Result<Self, AclEntryError> {
        let build = |key: &'static str, raw: Option<&BTreeMap<String, Vec<String>>>| {
            raw.map(|raw| AclTable::new(key, raw).map(|table| Governing { key, table }))
                .transpose()
        };
        let acl = build("acl", tables.acl)?;
        let publish = build("publish-acl", tables.publish_acl)?.or_else(|| acl.clone());
        let subscribe = build("subscribe-acl", tables.subscribe_acl)?.or(acl);
        let receive = build("receive-acl", tables.receive_acl)?;
        Ok(TopicAcl {
            subscribe,
            publish,
            receive,
        })
    }

    /// Whether no table is configured (the plugin then allows everything).
    pub fn is_unrestricted(&self) -> bool {
        self.subscribe.is_none() && self.publish.is_none() && self.receive.is_none()
    }

    /// Which table governs what, for the start log: `publish governed by 'acl' (no publish-acl),
    /// subscribe by 'acl', receive unrestricted`.
    pub fn describe(&self) -> String {
        let publish = match self.publish.as_ref().map(|g| g.key) {
            Some("acl") => "publish governed by 'acl' (no publish-acl)".to_string(),
            Some(key) => format!("publish governed by '{key}'"),
            None => "publish unrestricted (neither publish-acl nor acl)".to_string(),
        };
        let by = |kind: &str, rule: &Option<Governing>| match rule {
            Some(g) => format!("{kind} by '{}'", g.key),
            None => format!("{kind} unrestricted"),
        };
        format!(
            "{publish}, {}, {}",
            by("subscribe", &self.subscribe),
            by("receive", &self.receive)
        )
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
        TopicAction::Publish(topic) | TopicAction::Receive(topic) => entry.matches(topic),
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
        let rule = match action {
            TopicAction::Subscribe(_) => &self.subscribe,
            TopicAction::Publish(_) => &self.publish,
            TopicAction::Receive(_) => &self.receive,
        };
        rule.as_ref().is_none_or(|g| g.table.allows(client, action))
    }

    fn checks_receive(&self) -> bool {
        self.receive.is_some()
    }
}

#[cfg(test)]
mod tests;
