//! Plugins: who may connect, which topics a client may use, and hooks on what happens.
//!
//! Three traits, each called from one place with its own cost rules:
//!
//! | trait | decides / hears | called from | may block? |
//! | --- | --- | --- | --- |
//! | [`AuthPlugin`] | a CONNECT: allow, deny or abstain | the runtime, on a helper thread (the shard's blocking helper), before the core sees the CONNECT | yes (milliseconds: hashing, files) |
//! | [`TopicPlugin`] | each PUBLISH topic and each SUBSCRIBE filter (and each delivery, for a plugin that [checks receiving](TopicPlugin::checks_receive)) | the sans-IO core, on the shard's event loop | no: a few microseconds at most |
//! | [`AuthMethod`] (`enhanced_auth.rs`) | an MQTT 5 enhanced authentication exchange (AUTH), step by step: `SCRAM-SHA-256` ([`ScramSha256`], from `auth_file`'s password file) | the sans-IO core, on the shard's event loop | no: a few HMACs per step |
//! | [`EventPlugin`] (`events.rs`) | aMQTT's broker events: start and shutdown, client connected / disconnected, subscribed / unsubscribed, message received, retained message | start and stop: the thread that starts or stops the broker; the rest: the sans-IO core, on the shard's event loop | start and stop: yes; the rest: no (every message pays for it) |
//!
//! Plugins are named and chosen by aMQTT's configuration lists (`auth.plugins`,
//! `topic-check.plugins`); the built-ins are `auth_anonymous` ([`AnonymousAuth`]), `auth_file`
//! ([`FileAuth`]), `auth_cert` ([`CertAuth`]), `auth_jwt` ([`JwtAuth`]), `auth_http`
//! ([`HttpAuth`]), `topic_acl` ([`TopicAcl`]), `topic_taboo` ([`TopicTaboo`]), `topic_jwt`
//! ([`JwtTopics`]) and `topic_http` ([`HttpTopic`], [`TopicPrefetch`]). A program that embeds the broker adds its own with
//! [`crate::Broker::with_plugin`]: such a plugin is used where a configuration list names it, and
//! appended to its chain otherwise. [`build`] resolves the names at start; an unknown name is an
//! error naming the file, the key and the reason. Authentication plugins see the connection too
//! ([`Credentials`]: address, listener, transport, TLS client certificate).
//!
//! How answers combine (aMQTT's rules, made fail-closed):
//! - authentication: the client is refused (CONNACK 0x05, as Mosquitto answers 3.1.1 clients) as
//!   soon as one plugin denies; abstentions do not count; a plugin that returns an error or panics
//!   denies. (aMQTT once accepted a login when its plugin raised; we never do.)
//! - topic checks: every plugin must allow; a panic denies.
//! - events: a panicking hook is logged and skipped; it never affects the client.
//!
//! Plugins are shared by every shard (`Send + Sync`); a plugin with state must bring its own
//! synchronisation, and should keep it off the topic-check and event paths.

// TODO: plugin authors use these traits through `Broker::with_plugin`; the traits and their
// methods are documented, but not yet every field and built-in's helper item by item.
#![allow(missing_docs)]

mod auth_anonymous;
mod auth_cert;
mod auth_file;
mod auth_http;
mod auth_jwt;
pub mod enhanced_auth;
mod events;
pub mod password_file;
mod peer;
mod prefetch;
mod registry;
mod scram;
mod topic_acl;
mod topic_taboo;

use std::fmt;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;

use crate::protocol::{TopicFilter, TopicName};

pub use auth_anonymous::AnonymousAuth;
pub use auth_cert::CertAuth;
pub use auth_file::FileAuth;
pub use auth_http::{HttpAuth, HttpTopic};
pub use auth_jwt::{JwtAuth, JwtTopics};
pub use enhanced_auth::{AuthExchange, AuthMethod, AuthMethods, AuthStep};
pub use events::EventPlugin;
pub use peer::{PeerCertificate, Transport};
pub use prefetch::{Prefetchers, TopicAccess, TopicPrefetch, TopicQuery, TopicQueryRef};
pub use registry::{build, PluginError, PluginSet};
pub use scram::ScramSha256;
pub use topic_acl::{filter_covers, AclEntryError, AclTables, TopicAcl};
pub use topic_taboo::TopicTaboo;

/// The error type plugins return; it is logged, and the client is denied.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Who a connected client is, as the topic and event plugins see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientInfo<'a> {
    pub client_id: &'a str,
    /// `None` for an anonymous client (no user name in CONNECT).
    pub username: Option<&'a str>,
}

/// A CONNECT's credentials and the connection it came on, owned so they can travel to the helper
/// thread that authenticates. The core fills the first three; the runtime adds the rest (they keep
/// their defaults — no address, an empty listener name, `Tcp`, no certificate — where it does not,
/// e.g. in a unit test).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// As sent; empty when the client asked the broker to generate one.
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<Bytes>,
    /// The client's address, when the socket still knew it.
    pub remote_addr: Option<SocketAddr>,
    /// The name of the listener the client connected to (its key under `listeners:`).
    pub listener: String,
    pub transport: Transport,
    /// The client's TLS certificate, when it presented one (TLS and secure WebSocket listeners).
    pub certificate: Option<Arc<PeerCertificate>>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("remote_addr", &self.remote_addr)
            .field("listener", &self.listener)
            .field("transport", &self.transport)
            .field("certificate", &self.certificate)
            .finish()
    }
}

impl Credentials {
    pub fn of(connect: &crate::protocol::Connect) -> Self {
        Credentials {
            client_id: connect.client_id.clone(),
            username: connect.username.clone(),
            password: connect.password.clone(),
            ..Credentials::default()
        }
    }
}

/// One authentication plugin's answer (aMQTT's `True` / `False` / `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthDecision {
    Allow,
    Deny,
    /// No opinion (e.g. `auth_file` about a client without a user name): the other plugins decide.
    Abstain,
    /// Allowed until this moment (a token's `exp`): the connection is closed then. Counts as
    /// `Allow`; with several, the earliest wins.
    AllowUntil(SystemTime),
}

/// The outcome of the whole authentication chain: what the core receives with the CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthVerdict {
    Allowed,
    /// Allowed until this moment of the core's clock: refused if it has passed, closed when it
    /// passes (`CloseReason::CredentialsExpired`).
    AllowedUntil(Instant),
    /// CONNACK 0x05 (not authorized); the client's will is never published.
    Denied,
}

impl AuthVerdict {
    /// The verdict of a chain so far (`self`) followed by one more plugin's decision. A deadline
    /// on the wall clock becomes one on `Instant`'s clock (the core's).
    fn and(self, decision: AuthDecision) -> AuthVerdict {
        let deadline = |until: SystemTime| {
            Instant::now() + until.duration_since(SystemTime::now()).unwrap_or_default()
        };
        match (self, decision) {
            (AuthVerdict::Denied, _) | (_, AuthDecision::Deny) => AuthVerdict::Denied,
            (verdict, AuthDecision::Allow | AuthDecision::Abstain) => verdict,
            (AuthVerdict::Allowed, AuthDecision::AllowUntil(until)) => {
                AuthVerdict::AllowedUntil(deadline(until))
            }
            (AuthVerdict::AllowedUntil(first), AuthDecision::AllowUntil(until)) => {
                AuthVerdict::AllowedUntil(first.min(deadline(until)))
            }
        }
    }
}

/// Decides whether a CONNECT may proceed.
pub trait AuthPlugin: Send + Sync + 'static {
    /// The name configuration lists use (`auth.plugins: [NAME]`).
    fn name(&self) -> &str;

    /// The decision. Runs on a helper thread, never on a shard's event loop, so it may take
    /// milliseconds (hash verification, reading a file); a shard's other clients are not delayed.
    /// An error denies the client.
    fn authenticate(&self, credentials: &Credentials) -> Result<AuthDecision, BoxError>;

    /// The decision when it costs (almost) nothing, e.g. from a cache; `None` sends the CONNECT to
    /// [`AuthPlugin::authenticate`] on the helper thread. Runs on the event loop: must not block.
    fn quick_decision(&self, _credentials: &Credentials) -> Option<AuthDecision> {
        None
    }

    /// A CONNECT the chain did not deny goes to the core now, under `client_id`, with this
    /// password (`None` too where the client certificate authenticated it). Called once per such
    /// CONNECT, on the event loop (must not block), before the core answers it — after, for a
    /// client id the broker generates. It is followed by [`EventPlugin::client_disconnected`]
    /// when the connection ends, or [`refused`](AuthPlugin::refused). For plugins that keep
    /// something per client (`topic_jwt` keeps the topics of the token).
    fn accepted(&self, _client_id: &str, _password: Option<&[u8]>) {}

    /// The core refused the CONNECT announced by [`accepted`](AuthPlugin::accepted).
    fn refused(&self, _client_id: &str) {}
}

/// What a client wants to do with a topic.
#[derive(Debug, Clone, Copy)]
pub enum TopicAction<'a> {
    /// Subscribe with this filter (wildcards included).
    Subscribe(&'a TopicFilter),
    /// Publish to this topic (its will included, when it is published).
    Publish(&'a TopicName),
    /// Receive a message on this topic, matched by one of the client's subscriptions (retained
    /// messages after a SUBACK included). Asked only of plugins whose
    /// [`TopicPlugin::checks_receive`] is true.
    Receive(&'a TopicName),
}

impl TopicAction<'_> {
    /// The topic or filter as written.
    pub fn topic(&self) -> &str {
        match self {
            TopicAction::Subscribe(filter) => filter.as_str(),
            TopicAction::Publish(topic) | TopicAction::Receive(topic) => topic.as_str(),
        }
    }
}

/// Decides whether a client may publish to a topic or subscribe with a filter.
///
/// Called on the shard's event loop for every PUBLISH a client sends and every filter of every
/// SUBSCRIBE: it must be cheap (microseconds) and must not block. A denied SUBSCRIBE filter gets
/// SUBACK 0x80; a denied PUBLISH is acknowledged as usual but neither delivered nor retained (as
/// Mosquitto does), and counted. A plugin that [checks receiving](TopicPlugin::checks_receive) is
/// also asked at every delivery, per subscriber: a denied [`TopicAction::Receive`] skips that
/// subscriber (counted); that is the broker's hot path, so it must be cheaper still.
pub trait TopicPlugin: Send + Sync + 'static {
    /// The name configuration lists use (`topic-check.plugins: [NAME]`).
    fn name(&self) -> &str;

    /// `true` to allow.
    fn allow(&self, client: &ClientInfo<'_>, action: TopicAction<'_>) -> bool;

    /// Whether this plugin restricts what clients receive: asked once, when the broker starts;
    /// only then is [`allow`](TopicPlugin::allow) called with [`TopicAction::Receive`]. With no
    /// such plugin, deliveries skip the check (one branch).
    fn checks_receive(&self) -> bool {
        false
    }
}

/// A plugin of any kind, as [`crate::Broker::with_plugin`] takes it.
#[derive(Clone)]
pub enum Plugin {
    Auth(Arc<dyn AuthPlugin>),
    Topic(Arc<dyn TopicPlugin>),
    Events(Arc<dyn EventPlugin>),
}

impl Plugin {
    pub fn auth(plugin: impl AuthPlugin) -> Plugin {
        Plugin::Auth(Arc::new(plugin))
    }

    pub fn topic(plugin: impl TopicPlugin) -> Plugin {
        Plugin::Topic(Arc::new(plugin))
    }

    pub fn events(plugin: impl EventPlugin) -> Plugin {
        Plugin::Events(Arc::new(plugin))
    }

    pub fn name(&self) -> &str {
        match self {
            Plugin::Auth(p) => p.name(),
            Plugin::Topic(p) => p.name(),
            Plugin::Events(p) => p.name(),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Plugin::Auth(_) => "authentication",
            Plugin::Topic(_) => "topic-check",
            Plugin::Events(_) => "event",
        }
    }
}

impl fmt::Debug for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} plugin '{}'", self.kind(), self.name())
    }
}

/// The authentication chain, run by the runtime before the core sees a CONNECT.
#[derive(Clone, Default)]
pub struct Authenticator {
    plugins: Vec<Arc<dyn AuthPlugin>>,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.plugins.iter().map(|p| p.name()))
            .finish()
    }
}

impl Authenticator {
    pub fn new(plugins: Vec<Arc<dyn AuthPlugin>>) -> Self {
        Authenticator { plugins }
    }

    /// The plugins' names, in the order they are asked.
    pub fn names(&self) -> Vec<&str> {
        self.plugins.iter().map(|p| p.name()).collect()
    }

    /// The verdict if every plugin can give it without blocking (cheap: safe on the event loop);
    /// `None` when [`Authenticator::decide`] must run on a helper thread.
    pub fn quick_verdict(&self, credentials: &Credentials) -> Option<AuthVerdict> {
        let mut complete = true;
        let mut verdict = AuthVerdict::Allowed;
        for plugin in &self.plugins {
            match guarded(plugin.name(), || plugin.quick_decision(credentials)) {
                Err(()) => return Some(AuthVerdict::Denied),
                Ok(Some(AuthDecision::Deny)) => return Some(AuthVerdict::Denied),
                Ok(Some(decision)) => verdict = verdict.and(decision),
                Ok(None) => complete = false,
            }
        }
        complete.then_some(verdict)
    }

    /// Tells every plugin a CONNECT goes to the core ([`AuthPlugin::accepted`]).
    pub fn accepted(&self, client_id: &str, password: Option<&[u8]>) {
        for plugin in &self.plugins {
            let _ = guarded(plugin.name(), || plugin.accepted(client_id, password));
        }
    }

    /// Tells every plugin the core refused it ([`AuthPlugin::refused`]).
    pub fn refused(&self, client_id: &str) {
        for plugin in &self.plugins {
            let _ = guarded(plugin.name(), || plugin.refused(client_id));
        }
    }

    /// The verdict of the whole chain. May block for milliseconds: call it off the event loop.
    pub fn decide(&self, credentials: &Credentials) -> AuthVerdict {
        let mut verdict = AuthVerdict::Allowed;
        for plugin in &self.plugins {
            let decision = guarded(plugin.name(), || match plugin.quick_decision(credentials) {
                Some(decision) => Ok(decision),
                None => plugin.authenticate(credentials),
            });
            match decision {
                Ok(Ok(
                    decision @ (AuthDecision::Allow
                    | AuthDecision::Abstain
                    | AuthDecision::AllowUntil(_)),
                )) => verdict = verdict.and(decision),
                Ok(Ok(AuthDecision::Deny)) => {
                    log::debug!(
                        "authentication of '{}' (user {:?}) denied by plugin '{}'",
                        credentials.client_id,
                        credentials.username,
                        plugin.name()
                    );
                    return AuthVerdict::Denied;
                }
                Ok(Err(error)) => {
                    log::warn!(
                        "authentication plugin '{}' failed ({error}); denying client '{}'",
                        plugin.name(),
                        credentials.client_id
                    );
                    return AuthVerdict::Denied;
                }
                Err(()) => return AuthVerdict::Denied,
            }
        }
        verdict
    }
}

/// The topic-check and event plugins, as the core holds them in its settings. Cloning is cheap
/// (three reference counts), so a handler can hold them while it changes the core.
#[derive(Clone)]
pub struct CorePlugins {
    topic: Arc<[Arc<dyn TopicPlugin>]>,
    /// The topic plugins that check receiving (a subset of `topic`, usually empty).
    receive: Arc<[Arc<dyn TopicPlugin>]>,
    events: Arc<[Arc<dyn EventPlugin>]>,
    /// MQTT 5 enhanced authentication methods, by name.
    methods: AuthMethods,
}

impl Default for CorePlugins {
    fn default() -> Self {
        CorePlugins::new(Vec::new(), Vec::new())
    }
}

impl fmt::Debug for CorePlugins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CorePlugins")
            .field(
                "topic",
                &self.topic.iter().map(|p| p.name()).collect::<Vec<_>>(),
            )
            .field(
                "events",
                &self.events.iter().map(|p| p.name()).collect::<Vec<_>>(),
            )
            .field("methods", &self.methods)
            .finish()
    }
}

impl CorePlugins {
    pub fn new(topic: Vec<Arc<dyn TopicPlugin>>, events: Vec<Arc<dyn EventPlugin>>) -> Self {
        let receive: Vec<_> = topic
            .iter()
            .filter(|plugin| {
                guarded(plugin.name(), || plugin.checks_receive())
                    // A plugin that panics here would deny every delivery: it is asked anyway.
                    .unwrap_or(true)
            })
            .cloned()
            .collect();
        CorePlugins {
            topic: topic.into(),
            receive: receive.into(),
            events: events.into(),
            methods: AuthMethods::default(),
        }
    }

    /// The same plugins, offering these enhanced authentication methods.
    pub fn with_methods(mut self, methods: AuthMethods) -> Self {
        self.methods = methods;
        self
    }

    /// The enhanced authentication methods offered.
    pub fn methods(&self) -> &AuthMethods {
        &self.methods
    }

    /// Whether any topic check is configured (the core skips the work otherwise).
    pub fn checks_topics(&self) -> bool {
        !self.topic.is_empty()
    }

    /// Whether any topic plugin checks what clients receive (the delivery path skips the check
    /// otherwise).
    #[inline]
    pub fn checks_receive(&self) -> bool {
        !self.receive.is_empty()
    }

    /// Whether `client` may receive a message on `topic`: every plugin that checks receiving must
    /// allow; a panicking one denies. Call it only when [`checks_receive`](Self::checks_receive).
    pub fn allow_receive(&self, client: &ClientInfo<'_>, topic: &TopicName) -> bool {
        Self::all_allow(&self.receive, client, TopicAction::Receive(topic))
    }

    /// Whether any event plugin is configured.
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    pub fn topic_names(&self) -> Vec<&str> {
        self.topic.iter().map(|p| p.name()).collect()
    }

    /// Every topic plugin must allow; a panicking one denies.
    pub fn allow(&self, client: &ClientInfo<'_>, action: TopicAction<'_>) -> bool {
        Self::all_allow(&self.topic, client, action)
    }

    fn all_allow(
        plugins: &[Arc<dyn TopicPlugin>],
        client: &ClientInfo<'_>,
        action: TopicAction<'_>,
    ) -> bool {
        plugins.iter().all(|plugin| {
            let allowed = guarded(plugin.name(), || plugin.allow(client, action)).unwrap_or(false);
            if !allowed {
                log::debug!(
                    "client '{}' (user {:?}): {action:?} denied by plugin '{}'",
                    client.client_id,
                    client.username,
                    plugin.name()
                );
            }
            allowed
        })
    }
}

/// Runs a plugin's code, turning a panic into `Err(())` (logged). The panic hook still prints it.
fn guarded<R>(name: &str, f: impl FnOnce() -> R) -> Result<R, ()> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|_| {
        log::error!("plugin '{name}' panicked; treating it as a denial");
    })
}

#[cfg(test)]
mod tests;
