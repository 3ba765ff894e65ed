//! aMQTT's contrib HTTP plugins: an HTTP service decides who may connect (`auth_http`,
//! `amqtt.contrib.http.UserAuthHttpPlugin`) and which topics a client may publish to or
//! subscribe with (`topic_http`, `amqtt.contrib.http.TopicAuthHttpPlugin`).
//!
//! - The user check sends `username`, `password` and `client_id` to `user_uri`; the ACL check
//!   sends `username`, `client_id`, `topic` and `acc` (aMQTT's values: 2 publish, 4 subscribe)
//!   to `topic_uri`. How they are sent and read: [`request`].
//! - Fail closed: a service that is down, slower than `timeout`, or answers garbage denies; it is
//!   logged. "No opinion" (aMQTT's noop: a status other than 2xx/4xx in `status` mode, no `ok` in
//!   `json` mode) leaves the decision to the other plugins of the chain, and denies when the HTTP
//!   plugin is alone in it, as aMQTT documents.
//! - Answers are kept for `cache_ttl` ([`cache`]).
//! - Requests never run on a shard's event loop: the user check is an [`AuthPlugin`], which runs
//!   on the shard's blocking helper thread; the ACL check is fetched there too, before the core
//!   sees the packet ([`TopicPrefetch`]), and [`TopicPlugin::allow`] only reads the cache. One
//!   helper thread per shard: at most one request per shard at a time, so the service sees at
//!   most as many concurrent requests as the broker has shards.
//! - Deliveries (aMQTT's `acc` 1, receive) are not asked: they happen on the broker's hot path,
//!   which cannot wait for a request.
//!
//! What must not live here: configuration parsing (`src/config/http_plugin.rs`) and the runtime's
//! side of fetching ahead (`src/server/read_loop.rs`).

mod cache;
mod request;

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use sha2::{Digest, Sha512};

use self::cache::AnswerCache;
use self::request::{Answer, Param, Service};
use super::prefetch::{TopicAccess, TopicPrefetch, TopicQuery, TopicQueryRef};
use super::{
    AuthDecision, AuthPlugin, BoxError, ClientInfo, Credentials, TopicAction, TopicPlugin,
};
use crate::config::HttpPluginConfig;

/// aMQTT's `acc` values.
const ACC_PUBLISH: u8 = 2;
const ACC_SUBSCRIBE: u8 = 4;

/// The `auth_http` plugin: the HTTP service authenticates clients.
pub struct HttpAuth {
    service: Service,
    /// Salted digest of (client id, user name, password) → answer.
    answers: AnswerCache<[u8; 64]>,
    /// Random per process, so the digests in memory cannot be looked up in a precomputed table.
    salt: [u8; 16],
    /// Whether no other authentication plugin is in the chain: "no opinion" then denies.
    alone: bool,
}

impl HttpAuth {
    pub const NAME: &'static str = "auth_http";

    /// `alone`: no other authentication plugin is configured.
    pub fn new(config: HttpPluginConfig, alone: bool) -> Self {
        let ttl = config.cache_ttl;
        // `RandomState` keys come from the operating system's randomness.
        let mut salt = [0u8; 16];
        salt[..8].copy_from_slice(&RandomState::new().hash_one(1u8).to_le_bytes());
        salt[8..].copy_from_slice(&RandomState::new().hash_one(2u8).to_le_bytes());
        HttpAuth {
            service: Service::new(config),
            answers: AnswerCache::new(ttl),
            salt,
            alone,
        }
    }

    fn key(&self, credentials: &Credentials) -> [u8; 64] {
        let mut hasher = Sha512::new();
        hasher.update(self.salt);
        let username = credentials.username.as_deref().map(str::as_bytes);
        let password = credentials.password.as_deref();
        for part in [Some(credentials.client_id.as_bytes()), username, password] {
            match part {
                Some(bytes) => {
                    hasher.update([1]);
                    hasher.update((bytes.len() as u64).to_le_bytes());
                    hasher.update(bytes);
                }
                None => hasher.update([0]),
            }
        }
        hasher.finalize().into()
    }

    fn decision(&self, answer: Answer) -> AuthDecision {
        match answer {
            Answer::Granted => AuthDecision::Allow,
            Answer::Denied => AuthDecision::Deny,
            Answer::NoOpinion if self.alone => AuthDecision::Deny,
            Answer::NoOpinion => AuthDecision::Abstain,
        }
    }
}

impl AuthPlugin for HttpAuth {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn authenticate(&self, credentials: &Credentials) -> Result<AuthDecision, BoxError> {
        // aMQTT sends the password as text; one that is not UTF-8 cannot be sent as it is.
        let password = match credentials.password.as_deref().map(std::str::from_utf8) {
            Some(Err(_)) => {
                log::info!(
                    "{}: client '{}': the password is not UTF-8 text; denied",
                    Self::NAME,
                    credentials.client_id
                );
                return Ok(AuthDecision::Deny);
            }
            Some(Ok(text)) => Some(text),
            None => None,
        };
        let answer = self.service.ask(&[
            ("username", Param::Text(credentials.username.as_deref())),
            ("password", Param::Text(password)),
            ("client_id", Param::Text(Some(&credentials.client_id))),
        ])?;
        self.answers.insert(self.key(credentials), answer);
        Ok(self.decision(answer))
    }

    fn quick_decision(&self, credentials: &Credentials) -> Option<AuthDecision> {
        self.answers
            .get(&self.key(credentials))
            .map(|answer| self.decision(answer))
    }
}

/// The `topic_http` plugin: the HTTP service decides publishes and subscriptions.
pub struct HttpTopic {
    service: Service,
    answers: AnswerCache<TopicQuery>,
    /// Whether no other topic plugin is in the chain: "no opinion" then denies.
    alone: bool,
}

impl HttpTopic {
    pub const NAME: &'static str = "topic_http";

    /// `alone`: no other topic plugin is configured.
    pub fn new(config: HttpPluginConfig, alone: bool) -> Self {
        let ttl = config.cache_ttl;
        HttpTopic {
            service: Service::new(config),
            answers: AnswerCache::new(ttl),
            alone,
        }
    }
}

impl TopicPlugin for HttpTopic {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn allow(&self, client: &ClientInfo<'_>, action: TopicAction<'_>) -> bool {
        let access = match action {
            TopicAction::Publish(_) => TopicAccess::Publish,
            TopicAction::Subscribe(_) => TopicAccess::Subscribe,
            // Never asked: `checks_receive` is false.
            TopicAction::Receive(_) => return true,
        };
        let query = TopicQueryRef {
            client_id: client.client_id,
            username: client.username,
            access,
            topic: action.topic(),
        };
        match self.answers.get(&query) {
            Some(Answer::Granted) => true,
            Some(Answer::Denied) => false,
            // Defer to the other plugins, which must allow too; alone, deny.
            Some(Answer::NoOpinion) => !self.alone,
            None => {
                log::debug!(
                    "{}: no answer for client '{}' {access:?} '{}' (the service failed, or the \
                     packet was not fetched ahead, e.g. a will); denied",
                    Self::NAME,
                    client.client_id,
                    query.topic
                );
                false
            }
        }
    }
}

impl TopicPrefetch for HttpTopic {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn is_ready(&self, query: &TopicQueryRef<'_>) -> bool {
        self.answers.get(query).is_some()
    }

    fn fetch(&self, queries: &[TopicQuery]) {
        for (i, query) in queries.iter().enumerate() {
            let acc = match query.access {
                TopicAccess::Publish => ACC_PUBLISH,
                TopicAccess::Subscribe => ACC_SUBSCRIBE,
            };
            let asked = self.service.ask(&[
                ("username", Param::Text(query.username.as_deref())),
                ("client_id", Param::Text(Some(&query.client_id))),
                ("topic", Param::Text(Some(&query.topic))),
                ("acc", Param::Number(acc)),
            ]);
            match asked {
                Ok(answer) => self.answers.insert(query.clone(), answer),
                Err(error) => {
                    // The rest of this batch would most likely fail the same way, each after
                    // the timeout: they are not asked, and are denied.
                    log::warn!(
                        "{}: {error}; denying client '{}' {:?} '{}'{}",
                        Self::NAME,
                        query.client_id,
                        query.access,
                        query.topic,
                        match queries.len() - i - 1 {
                            0 => String::new(),
                            rest => format!(" and {rest} more check(s) of the same packets"),
                        }
                    );
                    return;
                }
            }
        }
    }
}

impl std::fmt::Debug for HttpAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpAuth")
            .field("url", &self.service.url())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for HttpTopic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpTopic")
            .field("url", &self.service.url())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
