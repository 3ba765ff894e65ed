//! From names in the configuration to plugin chains, once, when the broker starts.
//!
//! - `auth.plugins` (default: `auth_anonymous`, then `auth_file` when `auth.password-file` is
//!   set) becomes the [`Authenticator`]; `topic-check.plugins`, when `topic-check.enabled`, the
//!   topic chain of [`CorePlugins`].
//! - A name is a built-in (`auth_anonymous`, `auth_file`, `auth_cert`, `auth_jwt`, `auth_http`,
//!   `topic_acl`, `topic_taboo`, `topic_jwt`, `topic_http`; `topic_jwt` also joins the
//!   authentication chain, last, and the event plugins: it reads the token at CONNECT and forgets
//!   it at the disconnection; the HTTP ones need their `plugins:` class settings) or a plugin
//!   the embedding program added with `Broker::with_plugin`. Added plugins a list does not name
//!   are appended to their chain (event plugins always are): adding one is enough to use it.
//! - Anything wrong is a [`PluginError`] naming the configuration file, the key and the reason:
//!   an unknown name, a name of the wrong kind, `auth_file` without a password file (or a password
//!   file that `auth.plugins` leaves unused), a malformed password file line, an ACL entry that is
//!   not a topic filter.

use std::collections::HashSet;
use std::sync::Arc;

use crate::config::BrokerConfig;

use super::{
    AclTables, AnonymousAuth, AuthMethod, AuthMethods, AuthPlugin, Authenticator, CertAuth,
    CorePlugins, EventPlugin, FileAuth, HttpAuth, HttpTopic, JwtAuth, JwtTopics, Plugin,
    Prefetchers, TopicAcl, TopicPlugin, TopicPrefetch, TopicTaboo,
};

const AUTH_BUILTINS: [&str; 5] = [
    AnonymousAuth::NAME,
    FileAuth::NAME,
    CertAuth::NAME,
    JwtAuth::NAME,
    HttpAuth::NAME,
];
const TOPIC_BUILTINS: [&str; 4] = [
    TopicAcl::NAME,
    TopicTaboo::NAME,
    JwtTopics::NAME,
    HttpTopic::NAME,
];

/// A plugin set-up problem found at start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginError {
    /// About a configuration key.
    #[error("{file}: key '{key}': {reason}")]
    Config {
        file: String,
        key: String,
        reason: String,
    },
    /// About the plugins added with `Broker::with_plugin`.
    #[error("plugin '{name}': {reason}")]
    Added { name: String, reason: String },
}

/// What the broker runs: the authentication chain for the runtime, topic checks and events for
/// the core.
#[derive(Debug, Clone, Default)]
pub struct PluginSet {
    pub authenticator: Authenticator,
    pub core: CorePlugins,
    /// The topic plugins whose answers the runtime fetches before the core asks (`topic_http`).
    pub prefetch: Prefetchers,
}

/// Resolves the configuration's plugin lists against the built-ins and `added`.
pub fn build(config: &BrokerConfig, added: &[Plugin]) -> Result<PluginSet, PluginError> {
    let file = config
        .source
        .as_ref()
        .map_or_else(|| "configuration".to_string(), |p| p.display().to_string());
    let error = |key: String, reason: String| PluginError::Config {
        file: file.clone(),
        key,
        reason,
    };
    check_added(added)?;

    let added_auth: Vec<&Arc<dyn AuthPlugin>> = added
        .iter()
        .filter_map(|p| match p {
            Plugin::Auth(p) => Some(p),
            _ => None,
        })
        .collect();
    let added_topic: Vec<&Arc<dyn TopicPlugin>> = added
        .iter()
        .filter_map(|p| match p {
            Plugin::Topic(p) => Some(p),
            _ => None,
        })
        .collect();
    let mut events: Vec<Arc<dyn EventPlugin>> = added
        .iter()
        .filter_map(|p| match p {
            Plugin::Events(p) => Some(p.clone()),
            _ => None,
        })
        .collect();

    // ---- authentication ----
    // The configuration resolved an absent `auth.plugins` to its default list already.
    let auth_names = &config.auth_plugins;
    if config.password_file.is_some() && !auth_names.iter().any(|n| n == FileAuth::NAME) {
        return Err(error(
            "auth.password-file".into(),
            format!(
                "a password file is set but auth.plugins does not list '{}', so it would not be \
                 checked; add '{}' to auth.plugins or remove the password file",
                FileAuth::NAME,
                FileAuth::NAME
            ),
        ));
    }
    let mut auth: Vec<Arc<dyn AuthPlugin>> = Vec::new();
    // MQTT 5 enhanced authentication: SCRAM-SHA-256 when the password file has SCRAM entries.
    let mut methods: Vec<Arc<dyn AuthMethod>> = Vec::new();
    let mut seen = HashSet::new();
    for (i, name) in auth_names.iter().enumerate() {
        let key = format!("auth.plugins[{i}]");
        if !seen.insert(name.as_str()) {
            return Err(error(key, format!("plugin '{name}' is listed twice")));
        }
        let plugin: Arc<dyn AuthPlugin> = match name.as_str() {
            AnonymousAuth::NAME => Arc::new(AnonymousAuth::new(config.allow_anonymous)),
            // Without `auth.cert.uri_domain`: any SPIFFE trust domain.
            CertAuth::NAME => Arc::new(CertAuth::new(
                config.contrib.cert.as_ref().map(|c| c.uri_domain.clone()),
            )),
            JwtAuth::NAME => {
                let Some(settings) = &config.contrib.jwt_user else {
                    return Err(error(key, format!("'{name}' needs its settings: auth.jwt")));
                };
                let plugin = JwtAuth::new(settings)
                    .map_err(|(setting, reason)| error(format!("auth.jwt.{setting}"), reason))?;
                Arc::new(plugin)
            }
            FileAuth::NAME => {
                let Some(path) = &config.password_file else {
                    return Err(error(
                        key,
                        format!("'{name}' needs auth.password-file (the file of users and hashes)"),
                    ));
                };
                let plugin = FileAuth::load(path)
                    .map_err(|e| error("auth.password-file".into(), e.to_string()))?;
                let scram = plugin.scram_method().map_err(|e| {
                    error(
                        "auth.password-file".into(),
                        format!("no randomness for SCRAM-SHA-256: {e}"),
                    )
                })?;
                if let Some(scram) = scram {
                    methods.push(Arc::new(scram));
                }
                Arc::new(plugin)
            }
            HttpAuth::NAME => {
                let Some(http) = &config.http_user else {
                    return Err(error(key, not_configured(name, "UserAuthHttpPlugin")));
                };
                let alone = auth_names.len() == 1 && added_auth.is_empty();
                Arc::new(HttpAuth::new(http.clone(), alone))
            }
            _ => match added_auth.iter().find(|p| p.name() == name) {
                Some(p) => Arc::clone(p),
                None => {
                    return Err(error(
                        key,
                        unknown(
                            name,
                            "authentication",
                            &AUTH_BUILTINS,
                            &added_auth_names(added),
                            added,
                        ),
                    ))
                }
            },
        };
        auth.push(plugin);
    }
    for plugin in &added_auth {
        if !seen.contains(plugin.name()) {
            auth.push(Arc::clone(plugin));
        }
    }

    // ---- topic checks ----
    let mut topic: Vec<Arc<dyn TopicPlugin>> = Vec::new();
    let mut prefetch: Vec<Arc<dyn TopicPrefetch>> = Vec::new();
    let mut seen = HashSet::new();
    let check = &config.topic_check;
    if check.enabled {
        for (i, name) in check.plugins.iter().enumerate() {
            let key = format!("topic-check.plugins[{i}]");
            if !seen.insert(name.as_str()) {
                return Err(error(key, format!("plugin '{name}' is listed twice")));
            }
            let plugin: Arc<dyn TopicPlugin> = match name.as_str() {
                TopicAcl::NAME => {
                    let acl = TopicAcl::new(AclTables {
                        acl: check.acl.as_ref(),
                        publish_acl: check.publish_acl.as_ref(),
                        subscribe_acl: check.subscribe_acl.as_ref(),
                        receive_acl: check.receive_acl.as_ref(),
                    })
                    .map_err(|e| {
                        error(
                            format!("topic-check.{}.{}[{}]", e.table, e.user, e.index),
                            e.reason,
                        )
                    })?;
                    if acl.is_unrestricted() {
                        log::warn!(
                            "{file}: topic_acl has no 'acl', 'publish-acl', 'subscribe-acl' nor \
                             'receive-acl': it allows everything"
                        );
                    } else {
                        log::info!("topic ACL active: {}", acl.describe());
                    }
                    Arc::new(acl)
                }
                TopicTaboo::NAME => Arc::new(TopicTaboo),
                JwtTopics::NAME => {
                    let Some(settings) = &config.contrib.jwt_topic else {
                        let reason = format!("'{name}' needs its settings: topic-check.jwt");
                        return Err(error(key, reason));
                    };
                    let plugin = JwtTopics::new(settings).map_err(|(setting, reason)| {
                        error(format!("topic-check.jwt.{setting}"), reason)
                    })?;
                    // It reads the token at CONNECT and forgets it at the disconnection.
                    let plugin = Arc::new(plugin);
                    auth.push(plugin.clone());
                    events.push(plugin.clone());
                    plugin
                }
                HttpTopic::NAME => {
                    let Some(http) = &config.http_topic else {
                        return Err(error(key, not_configured(name, "TopicAuthHttpPlugin")));
                    };
                    let alone = check.plugins.len() == 1 && added_topic.is_empty();
                    let plugin = Arc::new(HttpTopic::new(http.clone(), alone));
                    prefetch.push(plugin.clone());
                    plugin
                }
                _ => match added_topic.iter().find(|p| p.name() == name) {
                    Some(p) => Arc::clone(p),
                    None => {
                        let added_names: Vec<&str> = added_topic.iter().map(|p| p.name()).collect();
                        return Err(error(
                            key,
                            unknown(name, "topic-check", &TOPIC_BUILTINS, &added_names, added),
                        ));
                    }
                },
            };
            topic.push(plugin);
        }
    }
    for plugin in &added_topic {
        if !seen.contains(plugin.name()) {
            topic.push(Arc::clone(plugin));
        }
    }

    let set = PluginSet {
        authenticator: Authenticator::new(auth),
        core: CorePlugins::new(topic, events).with_methods(AuthMethods::new(methods)),
        prefetch: Prefetchers::new(prefetch),
    };
    log::info!(
        "plugins: authentication {:?}, enhanced authentication {:?}, topic checks {:?}",
        set.authenticator.names(),
        set.core.methods().names(),
        set.core.topic_names()
    );
    Ok(set)
}

/// The reason an HTTP plugin's name is listed without its settings.
fn not_configured(name: &str, class: &str) -> String {
    format!(
        "'{name}' takes its settings from aMQTT's 'amqtt.contrib.http.{class}' under 'plugins:', \
         which this file does not have"
    )
}

fn added_auth_names(added: &[Plugin]) -> Vec<&str> {
    added
        .iter()
        .filter(|p| matches!(p, Plugin::Auth(_)))
        .map(Plugin::name)
        .collect()
}

/// The reason for a name that is not a plugin of `kind`.
fn unknown(
    name: &str,
    kind: &str,
    builtins: &[&str],
    added: &[&str],
    all_added: &[Plugin],
) -> String {
    let other_kind = if AUTH_BUILTINS.contains(&name) {
        Some("an authentication plugin: list it under auth.plugins")
    } else if TOPIC_BUILTINS.contains(&name) {
        Some("a topic-check plugin: list it under topic-check.plugins")
    } else {
        all_added
            .iter()
            .find(|p| p.name() == name)
            .map(|p| match p {
                Plugin::Auth(_) => "an authentication plugin: list it under auth.plugins",
                Plugin::Topic(_) => "a topic-check plugin: list it under topic-check.plugins",
                Plugin::Events(_) => "an event plugin, which is always active and listed nowhere",
            })
    };
    if let Some(other) = other_kind {
        return format!("'{name}' is {other}");
    }
    let mut known: Vec<&str> = builtins.to_vec();
    known.extend_from_slice(added);
    format!(
        "unknown {kind} plugin '{name}' (known: {})",
        known.join(", ")
    )
}

/// Added plugins must have names, distinct from the built-ins and from other added plugins of the
/// same kind (one value may be added as an authentication and a topic-check plugin under one name).
fn check_added(added: &[Plugin]) -> Result<(), PluginError> {
    let mut names = HashSet::new();
    for plugin in added {
        let name = plugin.name();
        let reason = if name.is_empty() {
            Some("a plugin needs a name".to_string())
        } else if AUTH_BUILTINS.contains(&name) || TOPIC_BUILTINS.contains(&name) {
            Some("the name of a built-in plugin; choose another".to_string())
        } else if !names.insert((plugin.kind(), name)) {
            Some(format!(
                "two added {} plugins have this name",
                plugin.kind()
            ))
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(PluginError::Added {
                name: name.to_string(),
                reason,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::{AuthDecision, BoxError, ClientInfo, Credentials, TopicAction};
    use std::path::PathBuf;

    /// `mkpasswd -m sha-512 -S saltsaltsaltsalt hunter2`.
    const HUNTER2: &str = "$6$saltsaltsaltsalt$dJX0KuyM7nCXuBPN.nYtdrJDotQEB1rFBumzix6FHzliKxLBinGY49pMJNvCoNf9fHmNyZ1IgX/glbcKhuXoh.";

    fn config(yaml: &str) -> BrokerConfig {
        let mut c = BrokerConfig::from_yaml_str(yaml, "test.yaml").expect("config");
        c.source = Some(PathBuf::from("test.yaml"));
        c
    }

    fn config_error(c: &BrokerConfig, added: &[Plugin]) -> (String, String) {
        match build(c, added) {
            Err(PluginError::Config { file, key, reason }) => {
                assert_eq!(file, "test.yaml");
                (key, reason)
            }
            other => panic!("expected a configuration error, got {other:?}"),
        }
    }

    struct Named(&'static str);

    impl AuthPlugin for Named {
        fn name(&self) -> &str {
            self.0
        }
        fn authenticate(&self, _: &Credentials) -> Result<AuthDecision, BoxError> {
            Ok(AuthDecision::Deny)
        }
    }

    impl TopicPlugin for Named {
        fn name(&self) -> &str {
            self.0
        }
        fn allow(&self, _: &ClientInfo<'_>, _: TopicAction<'_>) -> bool {
            false
        }
    }

    impl EventPlugin for Named {
        fn name(&self) -> &str {
            self.0
        }
    }

    fn password_file(dir: &tempfile::TempDir) -> PathBuf {
        let path = dir.path().join("passwd");
        std::fs::write(&path, format!("alice:{HUNTER2}\n")).expect("write");
        path
    }

    #[test]
    fn defaults() {
        let set = build(&config(""), &[]).expect("builds");
        assert_eq!(set.authenticator.names(), vec!["auth_anonymous"]);
        assert!(!set.core.checks_topics() && !set.core.has_events());
    }

    #[test]
    fn scram_sha_256_is_offered_when_the_password_file_has_scram_entries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = password_file(&dir);
        let yaml = format!("auth:\n  password-file: {}\n", path.display());
        let set = build(&config(&yaml), &[]).expect("builds");
        assert!(set.core.methods().names().is_empty(), "no SCRAM entry");
        let entry = crate::plugins::password_file::hash_scram(b"pencil").expect("urandom");
        std::fs::write(&path, format!("alice:{HUNTER2}\nuser:{entry}\n")).expect("write");
        let set = build(&config(&yaml), &[]).expect("builds");
        assert_eq!(set.core.methods().names(), vec!["SCRAM-SHA-256"]);
        assert!(set.core.methods().get("SCRAM-SHA-1").is_none());
    }

    #[test]
    fn a_password_file_adds_auth_file_by_default() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = password_file(&dir);
        let set = build(
            &config(&format!("auth:\n  password-file: {}\n", path.display())),
            &[],
        )
        .expect("builds");
        assert_eq!(
            set.authenticator.names(),
            vec!["auth_anonymous", "auth_file"]
        );
    }

    #[test]
    fn unknown_and_misplaced_names_fail() {
        let (key, reason) = config_error(
            &config("auth:\n  plugins: [auth_anonymous, auth_ldap]\n"),
            &[],
        );
        assert_eq!(key, "auth.plugins[1]");
        assert!(
            reason.contains("unknown authentication plugin 'auth_ldap'"),
            "{reason}"
        );
        assert!(reason.contains("auth_anonymous, auth_file"), "{reason}");
        let (key, reason) = config_error(&config("auth:\n  plugins: [topic_acl]\n"), &[]);
        assert_eq!(key, "auth.plugins[0]");
        assert!(reason.contains("topic-check plugin"), "{reason}");
        let (key, reason) = config_error(
            &config("topic-check:\n  enabled: true\n  plugins: [topic_acl, topic_foo]\n"),
            &[],
        );
        assert_eq!(key, "topic-check.plugins[1]");
        assert!(
            reason.contains("unknown topic-check plugin 'topic_foo'"),
            "{reason}"
        );
        let (key, _) = config_error(
            &config("auth:\n  plugins: [auth_anonymous, auth_anonymous]\n"),
            &[],
        );
        assert_eq!(key, "auth.plugins[1]");
    }

    #[test]
    fn disabled_topic_checks_are_not_resolved() {
        let set = build(
            &config("topic-check:\n  enabled: false\n  plugins: [topic_whatever]\n"),
            &[],
        )
        .expect("builds");
        assert!(!set.core.checks_topics());
    }

    #[test]
    fn auth_file_and_password_file_go_together() {
        let (key, reason) = config_error(&config("auth:\n  plugins: [auth_file]\n"), &[]);
        assert_eq!(key, "auth.plugins[0]");
        assert!(reason.contains("needs auth.password-file"), "{reason}");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = password_file(&dir);
        let (key, reason) = config_error(
            &config(&format!(
                "auth:\n  password-file: {}\n  plugins: [auth_anonymous]\n",
                path.display()
            )),
            &[],
        );
        assert_eq!(key, "auth.password-file");
        assert!(reason.contains("does not list 'auth_file'"), "{reason}");
    }

    #[test]
    fn password_file_problems_name_the_file_and_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("passwd");
        std::fs::write(&path, format!("# users\nalice:{HUNTER2}\nbob\n")).expect("write");
        let (key, reason) = config_error(
            &config(&format!("auth:\n  password-file: {}\n", path.display())),
            &[],
        );
        assert_eq!(key, "auth.password-file");
        assert!(
            reason.starts_with(&format!("{}:3: ", path.display())),
            "{reason}"
        );
        let (_, reason) = config_error(
            &config("auth:\n  password-file: /nonexistent/passwd\n"),
            &[],
        );
        assert!(
            reason.contains("/nonexistent/passwd: cannot read"),
            "{reason}"
        );
    }

    #[test]
    fn invalid_acl_entries_name_their_key() {
        let (key, reason) = config_error(
            &config("topic-check:\n  enabled: true\n  plugins: [topic_acl]\n  acl:\n    alice: ['a/#', 'b/#/c']\n"),
            &[],
        );
        assert_eq!(key, "topic-check.acl.alice[1]");
        assert!(reason.contains("'b/#/c' is not a topic filter"), "{reason}");
    }

    #[test]
    fn added_plugins_are_used_where_named_and_appended_otherwise() {
        let added = [
            Plugin::auth(Named("ldap")),
            Plugin::auth(Named("token")),
            Plugin::topic(Named("quota")),
            Plugin::events(Named("audit")),
        ];
        let set = build(
            &config("auth:\n  plugins: [ldap, auth_anonymous]\n"),
            &added,
        )
        .expect("builds");
        assert_eq!(
            set.authenticator.names(),
            vec!["ldap", "auth_anonymous", "token"]
        );
        // Added topic plugins run even with topic-check disabled: adding one is the opt-in.
        assert_eq!(set.core.topic_names(), vec!["quota"]);
        assert!(set.core.has_events());
        let set = build(
            &config("topic-check:\n  enabled: true\n  plugins: [quota, topic_taboo]\n"),
            &added,
        )
        .expect("builds");
        assert_eq!(set.core.topic_names(), vec!["quota", "topic_taboo"]);
        let (key, reason) = config_error(&config("auth:\n  plugins: [quota]\n"), &added);
        assert_eq!(key, "auth.plugins[0]");
        assert!(reason.contains("topic-check plugin"), "{reason}");
    }

    #[test]
    fn added_plugins_need_distinct_names() {
        let clash = build(&config(""), &[Plugin::auth(Named("auth_file"))]);
        assert!(matches!(clash, Err(PluginError::Added { .. })), "{clash:?}");
        let twice = build(
            &config(""),
            &[Plugin::auth(Named("x")), Plugin::auth(Named("x"))],
        );
        assert!(matches!(twice, Err(PluginError::Added { .. })), "{twice:?}");
        // One name for an authentication and a topic-check plugin is fine.
        build(
            &config(""),
            &[Plugin::auth(Named("x")), Plugin::topic(Named("x"))],
        )
        .expect("builds");
    }
}
