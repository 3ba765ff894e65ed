//! Topic checks whose answers need I/O (an HTTP service: `auth_http`'s ACL), fetched before the
//! core asks for them.
//!
//! [`TopicPlugin::allow`](super::TopicPlugin::allow) runs on the shard's event loop and must not
//! block. A plugin that asks a service therefore also implements [`TopicPrefetch`]: before the
//! core handles a connection's PUBLISH or SUBSCRIBE, the runtime (`src/server/read_loop.rs`)
//! asks [`TopicPrefetch::is_ready`] for each of its topics; for those that are not, it runs
//! [`TopicPrefetch::fetch`] on the shard's blocking helper thread while that connection's reading
//! waits (its packets stay in order; the shard's other connections go on). Then `allow` finds the
//! answers in the plugin's cache. An answer missing at `allow` time (the service failed or timed
//! out) denies.
//!
//! Brokers without such a plugin pay one branch per read ([`Prefetchers::is_empty`]).

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// What a client wants to do with a topic, owned so it can travel to the helper thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicQuery {
    pub client_id: Arc<str>,
    /// `None` for an anonymous client.
    pub username: Option<Arc<str>>,
    pub access: TopicAccess,
    /// The topic name (publish) or filter (subscribe) as written.
    pub topic: String,
}

/// A [`TopicQuery`] borrowed: how the event loop asks, without copying the topic. It hashes as
/// the owned query does, so a cache keyed by `TopicQuery` can be looked up with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TopicQueryRef<'a> {
    pub client_id: &'a str,
    pub username: Option<&'a str>,
    pub access: TopicAccess,
    pub topic: &'a str,
}

impl TopicQuery {
    pub fn borrowed(&self) -> TopicQueryRef<'_> {
        TopicQueryRef {
            client_id: &self.client_id,
            username: self.username.as_deref(),
            access: self.access,
            topic: &self.topic,
        }
    }
}

impl Hash for TopicQuery {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.borrowed().hash(state)
    }
}

/// The access a [`TopicQuery`] asks about (deliveries are never fetched: see the README).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopicAccess {
    Publish,
    Subscribe,
}

/// A topic plugin whose answers are fetched ahead of [`TopicPlugin::allow`](super::TopicPlugin).
pub trait TopicPrefetch: Send + Sync + 'static {
    fn name(&self) -> &str;

    /// Whether `allow` can answer `query` from what it holds. Runs on the event loop: must not
    /// block.
    fn is_ready(&self, query: &TopicQueryRef<'_>) -> bool;

    /// Fetches the answers to `queries` (none of them ready), blocking; runs on a helper thread.
    /// A failure is the plugin's to log; what it could not fetch stays missing, and is denied.
    fn fetch(&self, queries: &[TopicQuery]);
}

/// The topic plugins that fetch ahead, as every shard holds them.
#[derive(Clone, Default)]
pub struct Prefetchers(Arc<[Arc<dyn TopicPrefetch>]>);

impl fmt::Debug for Prefetchers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|p| p.name()))
            .finish()
    }
}

impl Prefetchers {
    pub fn new(plugins: Vec<Arc<dyn TopicPrefetch>>) -> Self {
        Prefetchers(plugins.into())
    }

    /// No plugin fetches ahead (the usual case): the runtime skips all of this.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether some plugin still has to fetch `query`.
    pub fn missing(&self, query: &TopicQueryRef<'_>) -> bool {
        self.0.iter().any(|p| !p.is_ready(query))
    }

    /// Has every plugin fetch what it is missing of `queries`. Blocking: call it on a helper
    /// thread. A panicking plugin is logged (its answers stay missing, so they deny).
    pub fn fetch(&self, queries: &[TopicQuery]) {
        for plugin in self.0.iter() {
            let wanted: Vec<TopicQuery> = queries
                .iter()
                .filter(|q| !plugin.is_ready(&q.borrowed()))
                .cloned()
                .collect();
            if !wanted.is_empty() {
                let _ = super::guarded(plugin.name(), || plugin.fetch(&wanted));
            }
        }
    }
}
