//! `topic_jwt`: aMQTT's `TopicAuthJwtPlugin` — a client may publish to, subscribe with and receive
//! on the topic filters its token lists.
//!
//! aMQTT decodes the password at every topic check; we decode it once, and keep what it grants
//! per connected client id, where the event loop reads it:
//! 1. At CONNECT, on the blocking helper, [`JwtTopics`] as an authentication plugin (appended to
//!    the chain, it always abstains: aMQTT's topic plugin does not decide who connects, though a
//!    token's `exp` ends the connection as with `auth_jwt`) verifies the token and files its
//!    grants under the token, as pending.
//! 2. The runtime then admits them under the client id ([`AuthPlugin::accepted`]), before the core
//!    answers the CONNECT (the will and a resumed session's queue are checked with them), or
//!    after it for a client id the broker generates (whose will is then checked without them,
//!    and dropped). A client without a valid token is admitted too, with nothing.
//! 3. When the connection ends ([`EventPlugin::client_disconnected`]), or the core refuses the
//!    CONNECT ([`AuthPlugin::refused`]), the client id's grants are released. A client id may be
//!    admitted twice (a new connection takes over the old one, which closes after): the grants
//!    are the newest, and leave with the last of the two. (So a CONNECT the core refuses after the
//!    plugins allowed it — a client id MQTT 3.1 forbids, an anonymous client while anonymous
//!    access is off — leaves a live connection with that id holding the refused token's grants
//!    until it reconnects.)
//!
//! Matching: publishing and receiving on a topic need a listed filter matching it (MQTT's rules,
//! `$` topics not matched by a leading wildcard); subscribing with a filter needs a listed filter
//! covering every topic it can match ([`filter_covers`]; aMQTT compares the filter as if it were a
//! topic, which lets `a/+` grant `a/#`). A claim that is absent or not a list grants nothing; its
//! entries that are not topic filters are skipped. A client with no valid token is denied
//! everything. Cost on the event loop: a read lock of one of [`BUCKETS`] maps and a scan of the
//! claim's list.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;

use super::{Claims, Verifier};
use crate::config::JwtTopicSettings;
use crate::plugins::{
    filter_covers, AuthDecision, AuthPlugin, BoxError, ClientInfo, Credentials, EventPlugin,
    TopicAction, TopicPlugin,
};
use crate::protocol::TopicFilter;

/// Independent maps of admitted clients (by a hash of the client id): shards reading grants at
/// every delivery rarely touch the same lock.
const BUCKETS: usize = 16;
/// Pending grants whose CONNECT never got an answer (the connection dropped in between) are
/// forgotten after this long, looked at when the pending map has grown past `PENDING_SWEEP`.
const PENDING_TTL: Duration = Duration::from_secs(60);
const PENDING_SWEEP: usize = 256;

/// What one token grants.
#[derive(Debug, Default)]
struct Grants {
    publish: Vec<TopicFilter>,
    subscribe: Vec<TopicFilter>,
    receive: Vec<TopicFilter>,
}

/// Grants verified at CONNECT, by token, until the runtime admits them: `count` CONNECTs with
/// this token are waiting.
struct Pending {
    grants: Arc<Grants>,
    count: usize,
    since: Instant,
}

/// Grants of a connected client id; `connections`: how many of its connections hold them (two
/// while a new one takes over).
struct Admitted {
    grants: Arc<Grants>,
    connections: usize,
}

/// The `topic_jwt` plugin.
pub struct JwtTopics {
    verifier: Verifier,
    settings: JwtTopicSettings,
    pending: Mutex<HashMap<Bytes, Pending>>,
    admitted: [RwLock<HashMap<Box<str>, Admitted>>; BUCKETS],
}

impl JwtTopics {
    pub const NAME: &'static str = "topic_jwt";

    /// The plugin, or which setting is wrong and why.
    pub fn new(settings: &JwtTopicSettings) -> Result<JwtTopics, (&'static str, String)> {
        Ok(JwtTopics {
            verifier: Verifier::new(&settings.secret_key, &settings.algorithm)?,
            settings: settings.clone(),
            pending: Mutex::default(),
            admitted: Default::default(),
        })
    }

    fn bucket(&self, client_id: &str) -> &RwLock<HashMap<Box<str>, Admitted>> {
        use std::hash::BuildHasher;
        let hash = foldhash::fast::FixedState::default().hash_one(client_id);
        &self.admitted[(hash % BUCKETS as u64) as usize]
    }

    /// The filters of `claim`.
    fn filters(claims: &Claims, claim: &str) -> Vec<TopicFilter> {
        let Some(Value::Array(list)) = claims.get(claim) else {
            return Vec::new();
        };
        list.iter()
            .filter_map(|entry| {
                let filter = entry.as_str().and_then(|s| TopicFilter::new(s).ok());
                if filter.is_none() {
                    log::debug!("topic_jwt: '{claim}' entry {entry} is not a topic filter");
                }
                filter
            })
            .collect()
    }

    /// Whether `client` holds grants allowing `action`.
    fn allows(&self, client: &ClientInfo<'_>, action: TopicAction<'_>) -> bool {
        let admitted = self.bucket(client.client_id).read();
        let admitted = admitted.unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(entry) = admitted.get(client.client_id) else {
            return false;
        };
        let grants = &entry.grants;
        match action {
            TopicAction::Publish(topic) => grants.publish.iter().any(|f| f.matches(topic)),
            TopicAction::Receive(topic) => grants.receive.iter().any(|f| f.matches(topic)),
            TopicAction::Subscribe(filter) => {
                grants.subscribe.iter().any(|f| filter_covers(f, filter))
            }
        }
    }

    fn release(&self, client_id: &str) {
        let mut admitted = self.bucket(client_id).write();
        let admitted = admitted.as_mut().unwrap_or_else(|p| p.get_mut());
        if let Some(entry) = admitted.get_mut(client_id) {
            entry.connections -= 1;
            if entry.connections == 0 {
                admitted.remove(client_id);
            }
        }
    }
}

impl TopicPlugin for JwtTopics {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn allow(&self, client: &ClientInfo<'_>, action: TopicAction<'_>) -> bool {
        self.allows(client, action)
    }

    /// aMQTT's plugin checks receiving (`receive_claim` is required).
    fn checks_receive(&self) -> bool {
        true
    }
}

impl AuthPlugin for JwtTopics {
    fn name(&self) -> &str {
        Self::NAME
    }

    /// Files the token's grants as pending; abstains (see the module documentation).
    fn authenticate(&self, credentials: &Credentials) -> Result<AuthDecision, BoxError> {
        // Without a valid token, no topic is allowed.
        let Some((claims, expiry)) = self.verifier.verify_connect(Self::NAME, credentials) else {
            return Ok(AuthDecision::Abstain);
        };
        let Some(token) = credentials.password.clone() else {
            return Ok(AuthDecision::Abstain);
        };
        let grants = Arc::new(Grants {
            publish: Self::filters(&claims, &self.settings.publish_claim),
            subscribe: Self::filters(&claims, &self.settings.subscribe_claim),
            receive: Self::filters(&claims, &self.settings.receive_claim),
        });
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.len() >= PENDING_SWEEP {
            pending.retain(|_, p| p.since.elapsed() < PENDING_TTL);
        }
        let entry = pending.entry(token).or_insert_with(|| Pending {
            grants,
            count: 0,
            since: Instant::now(),
        });
        entry.count += 1;
        Ok(expiry.map_or(AuthDecision::Abstain, AuthDecision::AllowUntil))
    }

    fn accepted(&self, client_id: &str, password: Option<&[u8]>) {
        let grants = password.and_then(|token| {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            let entry = pending.get_mut(token)?;
            entry.count -= 1;
            let grants = Arc::clone(&entry.grants);
            if entry.count == 0 {
                pending.remove(token);
            }
            Some(grants)
        });
        // Without a valid token the client is admitted too, with nothing: every connection
        // admitted is released once, and a takeover by a client without a token leaves nothing.
        let grants = grants.unwrap_or_default();
        let mut admitted = self.bucket(client_id).write();
        let admitted = admitted.as_mut().unwrap_or_else(|p| p.get_mut());
        let entry = admitted
            .entry(client_id.into())
            .or_insert_with(|| Admitted {
                grants: Arc::clone(&grants),
                connections: 0,
            });
        entry.grants = grants;
        entry.connections += 1;
    }

    fn refused(&self, client_id: &str) {
        self.release(client_id);
    }
}

impl EventPlugin for JwtTopics {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn client_disconnected(&self, client: &ClientInfo<'_>) {
        self.release(client.client_id);
    }
}
