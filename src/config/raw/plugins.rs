//! aMQTT's `plugins:` section, both forms, turned into the settings the older keys give:
//!
//! - aMQTT 0.10: a list of entry-point names (`auth_anonymous`, `auth_file`, `topic_taboo`,
//!   `topic_acl`, `broker_sys`, `event_logger_plugin`, `packet_logger_plugin`) saying which
//!   plugins are loaded; their settings stay in `auth:`, `topic-check:` and `sys_interval`.
//! - aMQTT 0.11+: a mapping of dotted class names to their settings
//!   (`amqtt.plugins.authentication.FileAuthPlugin: {password_file: ...}`), or a list of such
//!   names and single-entry mappings (0.12 accepts both).
//!
//! [`apply`] writes what each plugin configures into the same raw fields `auth:`, `topic-check:`,
//! `sys_interval`, `connection_messages` and `persistence:` fill, so both forms make the same
//! broker. When a file configures one thing both ways the file is refused, naming both keys.
//! Unknown names and settings are errors listing the known ones; aMQTT's contrib plugins that we
//! do not provide are refused by name. What must not live here: the plugins themselves
//! (`src/plugins`), or any I/O.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::{AclTable, RawAuth, RawConfig, RawTopicCheck};
use crate::config::contrib::{CertSettings, JwtTopicSettings, JwtUserSettings};
use crate::config::http_plugin::{HttpClass, HttpPluginConfig, RawHttp};
use crate::config::persistence::{session_db, SessionDb};
use crate::config::scalars::{Bool, Seconds};
use crate::config::{ConfigError, AUTH_ANONYMOUS, AUTH_FILE, DEFAULT_SYS_INTERVAL};

/// The built-in topic plugins' names in `topic-check.plugins`.
const TOPIC_ACL: &str = "topic_acl";
const TOPIC_TABOO: &str = "topic_taboo";
/// The contrib plugins' names (`contrib.rs`).
const TOPIC_JWT: &str = "topic_jwt";
const AUTH_JWT: &str = "auth_jwt";
const AUTH_CERT: &str = "auth_cert";
/// The HTTP plugins' names in `auth.plugins` and `topic-check.plugins`.
const AUTH_HTTP: &str = "auth_http";
const TOPIC_HTTP: &str = "topic_http";

/// aMQTT 0.10's entry-point names.
const ENTRY_POINTS: [&str; 7] = [
    AUTH_ANONYMOUS,
    AUTH_FILE,
    TOPIC_TABOO,
    TOPIC_ACL,
    "broker_sys",
    "event_logger_plugin",
    "packet_logger_plugin",
];

/// aMQTT 0.11+'s built-in plugin classes, all provided, and the contrib ones we provide
/// (`contrib.rs`, `http_plugin.rs`; the cert class is `UserAuthCertPlugin` in aMQTT 0.12.1,
/// renamed later).
const CLASSES: [&str; 14] = [
    "amqtt.plugins.authentication.AnonymousAuthPlugin",
    "amqtt.plugins.authentication.FileAuthPlugin",
    "amqtt.plugins.topic_checking.TopicTabooPlugin",
    "amqtt.plugins.topic_checking.TopicAccessControlListPlugin",
    "amqtt.plugins.sys.broker.BrokerSysPlugin",
    "amqtt.plugins.logging_amqtt.EventLoggerPlugin",
    "amqtt.plugins.logging_amqtt.PacketLoggerPlugin",
    "amqtt.contrib.persistence.SessionDBPlugin",
    "amqtt.contrib.jwt.UserAuthJwtPlugin",
    "amqtt.contrib.jwt.TopicAuthJwtPlugin",
    "amqtt.contrib.cert.CertificateAuthPlugin",
    "amqtt.contrib.cert.UserAuthCertPlugin",
    HTTP_USER,
    HTTP_TOPIC,
];

/// aMQTT's contrib HTTP plugins (`src/config/http_plugin.rs`).
const HTTP_USER: &str = "amqtt.contrib.http.UserAuthHttpPlugin";
const HTTP_TOPIC: &str = "amqtt.contrib.http.TopicAuthHttpPlugin";

/// aMQTT's contrib plugin classes that amqtt-rs does not provide (yet): refused by name.
const NOT_PROVIDED: [&str; 7] = [
    "amqtt.contrib.ldap.UserAuthLdapPlugin",
    "amqtt.contrib.ldap.TopicAuthLdapPlugin",
    "amqtt.contrib.auth_db.UserAuthDBPlugin",
    "amqtt.contrib.auth_db.TopicAuthDBPlugin",
    "amqtt.contrib.shadows.ShadowPlugin",
    "amqtt.contrib.django.plugins.DjangoAuthPlugin",
    "amqtt.contrib.django.plugins.UserTopicACLPlugin",
];

/// `plugins:` as written, in file order.
#[derive(Debug, Default)]
pub(in crate::config) struct RawPlugins(pub(super) Vec<Entry>);

/// One plugin of the section and where it is written (`plugins[0]`, `plugins.<class>`).
#[derive(Debug)]
pub(super) struct Entry {
    key: String,
    plugin: Plugin,
}

/// A plugin with its settings (absent settings are aMQTT's defaults).
#[derive(Debug)]
enum Plugin {
    /// A 0.10 entry-point name: the plugin is loaded, configured by the older keys.
    EntryPoint(&'static str),
    AnonymousAuth(AnonymousAuth),
    FileAuth(FileAuth),
    TopicTaboo,
    TopicAcl(TopicAcl),
    BrokerSys(BrokerSys),
    EventLogger,
    PacketLogger,
    SessionDb(SessionDb),
    JwtUser(JwtUserSettings),
    JwtTopic(JwtTopicSettings),
    Cert(CertSettings),
    /// `UserAuthHttpPlugin` or `TopicAuthHttpPlugin`.
    Http(HttpClass, RawHttp),
    /// A contrib class listed in [`NOT_PROVIDED`].
    NotProvided(&'static str),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct AnonymousAuth {
    allow_anonymous: Option<Bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileAuth {
    password_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct TopicAcl {
    acl: Option<AclTable>,
    publish_acl: Option<AclTable>,
    subscribe_acl: Option<BTreeMap<String, Vec<String>>>,
    receive_acl: Option<BTreeMap<String, Vec<String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct BrokerSys {
    sys_interval: Option<Seconds>,
}

/// The settings of a plugin that has none: absent, null or `{}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoSettings {}

// ---------------------------------------------------------------------------------------------
// Reading the section (both forms), with serde's key paths and positions.
// ---------------------------------------------------------------------------------------------

fn known_names() -> String {
    let quoted: Vec<String> = ENTRY_POINTS
        .iter()
        .chain(CLASSES.iter())
        .chain(NOT_PROVIDED.iter())
        .map(|n| format!("'{n}'"))
        .collect();
    quoted.join(", ")
}

fn unknown<E: de::Error>(name: &str) -> E {
    E::custom(format!(
        "unknown plugin '{name}'; known plugins: {}",
        known_names()
    ))
}

/// Reads the settings of the class `name` (the value under it).
struct Settings<'a>(&'a str);

impl<'de> DeserializeSeed<'de> for Settings<'_> {
    type Value = Plugin;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Plugin, D::Error> {
        fn settings<'de, T: Deserialize<'de> + Default, D: Deserializer<'de>>(
            d: D,
        ) -> Result<T, D::Error> {
            Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
        }
        /// Settings without defaults: absent or null is an error naming the class.
        fn required<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
            d: D,
            name: &str,
        ) -> Result<T, D::Error> {
            Option::<T>::deserialize(d)?
                .ok_or_else(|| de::Error::custom(format!("plugin '{name}' needs its settings")))
        }
        /// `plugin`, which takes no settings.
        fn bare<'de, D: Deserializer<'de>>(d: D, plugin: Plugin) -> Result<Plugin, D::Error> {
            settings::<NoSettings, D>(d).map(|_| plugin)
        }
        let name = self.0;
        let plugin = match name {
            "amqtt.plugins.authentication.AnonymousAuthPlugin" => {
                Plugin::AnonymousAuth(settings(d)?)
            }
            "amqtt.plugins.authentication.FileAuthPlugin" => Plugin::FileAuth(settings(d)?),
            "amqtt.plugins.topic_checking.TopicTabooPlugin" => bare(d, Plugin::TopicTaboo)?,
            "amqtt.plugins.topic_checking.TopicAccessControlListPlugin" => {
                Plugin::TopicAcl(settings(d)?)
            }
            "amqtt.plugins.sys.broker.BrokerSysPlugin" => Plugin::BrokerSys(settings(d)?),
            "amqtt.plugins.logging_amqtt.EventLoggerPlugin" => bare(d, Plugin::EventLogger)?,
            "amqtt.plugins.logging_amqtt.PacketLoggerPlugin" => bare(d, Plugin::PacketLogger)?,
            "amqtt.contrib.persistence.SessionDBPlugin" => Plugin::SessionDb(settings(d)?),
            "amqtt.contrib.jwt.UserAuthJwtPlugin" => Plugin::JwtUser(required(d, name)?),
            "amqtt.contrib.jwt.TopicAuthJwtPlugin" => Plugin::JwtTopic(required(d, name)?),
            "amqtt.contrib.cert.CertificateAuthPlugin"
            | "amqtt.contrib.cert.UserAuthCertPlugin" => Plugin::Cert(required(d, name)?),
            HTTP_USER => Plugin::Http(HttpClass::User, settings(d)?),
            HTTP_TOPIC => Plugin::Http(HttpClass::Topic, settings(d)?),
            other => match NOT_PROVIDED.iter().find(|n| **n == other) {
                Some(class) => {
                    serde::de::IgnoredAny::deserialize(d)?;
                    Plugin::NotProvided(class)
                }
                None => return Err(unknown(other)),
            },
        };
        Ok(plugin)
    }
}

/// Reads `class: settings` pairs into `out`; `prefix` is the path of the mapping.
fn read_classes<'de, A: MapAccess<'de>>(
    mut map: A,
    prefix: &str,
    out: &mut Vec<Entry>,
) -> Result<(), A::Error> {
    while let Some(name) = map.next_key::<String>()? {
        let plugin = map.next_value_seed(Settings(&name))?;
        if out.iter().any(|e| e.plugin.same_as(&plugin)) {
            return Err(de::Error::custom(format!(
                "plugin '{name}' is listed twice"
            )));
        }
        out.push(Entry {
            key: format!("{prefix}.{name}"),
            plugin,
        });
    }
    Ok(())
}

impl<'de> Deserialize<'de> for RawPlugins {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PluginsVisitor;
        impl<'de> Visitor<'de> for PluginsVisitor {
            type Value = RawPlugins;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a mapping of plugin class names to settings, or a list of plugin names",
                )
            }
            fn visit_unit<E: de::Error>(self) -> Result<RawPlugins, E> {
                Ok(RawPlugins::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawPlugins, A::Error> {
                let mut out = Vec::new();
                read_classes(map, "plugins", &mut out)?;
                Ok(RawPlugins(out))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawPlugins, A::Error> {
                let mut out = Vec::new();
                let mut index = 0;
                while seq
                    .next_element_seed(Item {
                        index,
                        out: &mut out,
                    })?
                    .is_some()
                {
                    index += 1;
                }
                Ok(RawPlugins(out))
            }
        }
        deserializer.deserialize_any(PluginsVisitor)
    }
}

/// One item of the list form: a name (entry point, or class without settings) or a mapping of
/// classes to settings.
struct Item<'a> {
    index: usize,
    out: &'a mut Vec<Entry>,
}

impl<'de> DeserializeSeed<'de> for Item<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Item<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a plugin name, or a mapping of a plugin class name to its settings")
    }
    fn visit_str<E: de::Error>(self, name: &str) -> Result<(), E> {
        let plugin = match ENTRY_POINTS.iter().find(|n| **n == name) {
            Some(entry_point) => Plugin::EntryPoint(entry_point),
            None => Settings(name).deserialize(de::value::UnitDeserializer::<E>::new())?,
        };
        if self.out.iter().any(|e| e.plugin.same_as(&plugin)) {
            return Err(E::custom(format!("plugin '{name}' is listed twice")));
        }
        self.out.push(Entry {
            key: format!("plugins[{}]", self.index),
            plugin,
        });
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        read_classes(map, &format!("plugins[{}]", self.index), self.out)
    }
}

impl Plugin {
    /// The same plugin (settings aside).
    fn same_as(&self, other: &Plugin) -> bool {
        match (self, other) {
            (Plugin::EntryPoint(a), Plugin::EntryPoint(b)) => a == b,
            (Plugin::NotProvided(a), Plugin::NotProvided(b)) => a == b,
            (Plugin::Http(a, _), Plugin::Http(b, _)) => a == b,
            _ => std::mem::discriminant(self) == std::mem::discriminant(other),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Applying it: the plugins' settings written where the older keys put theirs.
// ---------------------------------------------------------------------------------------------

/// What the section adds that no older key says: whether aMQTT's packet logger is loaded.
#[derive(Debug, Default)]
pub(in crate::config) struct Applied {
    /// `PacketLoggerPlugin` / `packet_logger_plugin`: packets are logged when the log level
    /// is DEBUG.
    pub(in crate::config) packet_logger: bool,
    /// `UserAuthHttpPlugin`'s settings, when it is listed (`auth_http` in the auth chain).
    pub(in crate::config) http_user: Option<HttpPluginConfig>,
    /// `TopicAuthHttpPlugin`'s settings, when it is listed (`topic_http` in the topic chain).
    pub(in crate::config) http_topic: Option<HttpPluginConfig>,
}

/// Moves the `plugins:` section of `raw` into the fields the older keys fill; refuses a thing
/// configured both ways, a contrib plugin we do not provide, and a plugin missing a setting.
pub(in crate::config) fn apply(raw: &mut RawConfig, origin: &str) -> Result<Applied, ConfigError> {
    let mut applied = Applied::default();
    let Some(RawPlugins(entries)) = raw.plugins.take() else {
        return Ok(applied);
    };
    let invalid = |key: &str, reason: String| ConfigError::Invalid {
        file: origin.to_string(),
        key: key.to_string(),
        reason,
    };
    let both = |key: &str, old: &str, what: &str| {
        invalid(
            key,
            format!(
                "configures {what}, and so does '{old}' in this file: keep one of the two \
                 (aMQTT 0.11+ writes it under 'plugins', older files use '{old}')"
            ),
        )
    };
    // What the older keys set, before the plugins fill them.
    let old_auth_plugins = raw.auth.as_ref().is_some_and(|a| a.plugins.is_some());
    let old_topic_check = raw.topic_check.is_some();
    let mut auth_chain: Vec<String> = Vec::new();
    let mut topic_chain: Vec<String> = Vec::new();
    let mut has_class = false;
    let mut has_sys = false;

    for Entry { key, plugin } in entries {
        has_class |= !matches!(plugin, Plugin::EntryPoint(_));
        match plugin {
            Plugin::EntryPoint(name) if name == AUTH_ANONYMOUS || name == AUTH_FILE => {
                if old_auth_plugins {
                    return Err(both(&key, "auth.plugins", "the authentication plugins"));
                }
                let has_file = raw.auth.as_ref().is_some_and(|a| a.password_file.is_some());
                if name == AUTH_FILE && !has_file {
                    // aMQTT 0.10 loads it and it finds no file: it checks nobody.
                    log::info!(
                        "{origin}: {key}: '{AUTH_FILE}' has no auth.password-file to check \
                         passwords against; it is not used"
                    );
                    continue;
                }
                auth_chain.push(name.to_string());
            }
            Plugin::EntryPoint(name) if name == TOPIC_ACL || name == TOPIC_TABOO => {
                if raw
                    .topic_check
                    .as_ref()
                    .is_some_and(|t| t.plugins.is_some())
                {
                    return Err(both(&key, "topic-check.plugins", "the topic plugins"));
                }
                topic_chain.push(name.to_string());
            }
            // Loaded, configured by `sys_interval` (0.10 loads every entry point anyway).
            Plugin::EntryPoint("broker_sys") => has_sys = true,
            Plugin::EntryPoint("event_logger_plugin") | Plugin::EventLogger => {
                if raw.connection_messages == Some(Bool(false)) {
                    return Err(both(
                        &key,
                        "connection_messages",
                        "connect and disconnect logging",
                    ));
                }
                raw.connection_messages = Some(Bool(true));
            }
            Plugin::EntryPoint("packet_logger_plugin") | Plugin::PacketLogger => {
                applied.packet_logger = true
            }
            // Every name of ENTRY_POINTS has its arm above.
            Plugin::EntryPoint(other) => {
                return Err(invalid(&key, format!("unknown plugin '{other}'")))
            }
            Plugin::AnonymousAuth(settings) => {
                if old_auth_plugins {
                    return Err(both(&key, "auth.plugins", "the authentication plugins"));
                }
                let auth = raw.auth.get_or_insert_with(RawAuth::default);
                if let Some(allow) = settings.allow_anonymous {
                    if auth.allow_anonymous.is_some() {
                        return Err(both(
                            &format!("{key}.allow_anonymous"),
                            "auth.allow-anonymous",
                            "anonymous access",
                        ));
                    }
                    auth.allow_anonymous = Some(allow);
                } else if auth.allow_anonymous.is_none() {
                    auth.allow_anonymous = Some(Bool(true));
                }
                auth_chain.push(AUTH_ANONYMOUS.to_string());
            }
            Plugin::FileAuth(settings) => {
                if old_auth_plugins {
                    return Err(both(&key, "auth.plugins", "the authentication plugins"));
                }
                let auth = raw.auth.get_or_insert_with(RawAuth::default);
                if auth.password_file.is_some() {
                    return Err(both(&key, "auth.password-file", "the password file"));
                }
                let Some(file) = settings.password_file else {
                    return Err(invalid(
                        &format!("{key}.password_file"),
                        "required: the file of user names and password hashes".to_string(),
                    ));
                };
                auth.password_file = Some(file);
                auth_chain.push(AUTH_FILE.to_string());
            }
            Plugin::TopicTaboo => {
                if old_topic_check {
                    return Err(both(&key, "topic-check", "topic checking"));
                }
                topic_chain.push(TOPIC_TABOO.to_string());
            }
            Plugin::TopicAcl(settings) => {
                if old_topic_check {
                    return Err(both(&key, "topic-check", "topic checking"));
                }
                let check = raw.topic_check.get_or_insert_with(RawTopicCheck::default);
                check.acl = settings.acl;
                check.publish_acl = settings.publish_acl;
                check.subscribe_acl = settings.subscribe_acl;
                check.receive_acl = settings.receive_acl;
                topic_chain.push(TOPIC_ACL.to_string());
            }
            Plugin::BrokerSys(settings) => {
                if raw.sys_interval.is_some() {
                    return Err(both(&key, "sys_interval", "the $SYS interval"));
                }
                has_sys = true;
                raw.sys_interval = Some(
                    settings
                        .sys_interval
                        .unwrap_or(Seconds(DEFAULT_SYS_INTERVAL.as_secs_f64())),
                );
            }
            Plugin::JwtUser(_) | Plugin::Cert(_) if old_auth_plugins => {
                return Err(both(&key, "auth.plugins", "the authentication plugins"));
            }
            Plugin::JwtUser(settings) => {
                let auth = raw.auth.get_or_insert_with(RawAuth::default);
                if auth.jwt.is_some() {
                    return Err(both(&key, "auth.jwt", "the JWT settings"));
                }
                auth.jwt = Some(settings);
                auth_chain.push(AUTH_JWT.to_string());
            }
            Plugin::Cert(settings) => {
                let auth = raw.auth.get_or_insert_with(RawAuth::default);
                if auth.cert.is_some() {
                    return Err(both(&key, "auth.cert", "the certificate settings"));
                }
                auth.cert = Some(settings);
                auth_chain.push(AUTH_CERT.to_string());
            }
            Plugin::JwtTopic(settings) => {
                if old_topic_check {
                    return Err(both(&key, "topic-check", "topic checking"));
                }
                let check = raw.topic_check.get_or_insert_with(RawTopicCheck::default);
                check.jwt = Some(settings);
                topic_chain.push(TOPIC_JWT.to_string());
            }
            Plugin::SessionDb(settings) => {
                if raw.persistence.is_some() {
                    return Err(both(&key, "persistence", "persistence"));
                }
                raw.persistence = Some(session_db(&key, settings, origin));
            }
            Plugin::Http(class, settings) => {
                let (configured_above, old, what) = match class {
                    HttpClass::User => (
                        old_auth_plugins,
                        "auth.plugins",
                        "the authentication plugins",
                    ),
                    HttpClass::Topic => (old_topic_check, "topic-check", "topic checking"),
                };
                if configured_above {
                    return Err(both(&key, old, what));
                }
                let checked = settings
                    .check(class)
                    .map_err(|(name, reason)| invalid(&format!("{key}.{name}"), reason))?;
                match class {
                    HttpClass::User => {
                        applied.http_user = Some(checked);
                        auth_chain.push(AUTH_HTTP.to_string());
                    }
                    HttpClass::Topic => {
                        applied.http_topic = Some(checked);
                        topic_chain.push(TOPIC_HTTP.to_string());
                    }
                }
            }
            Plugin::NotProvided(class) => {
                return Err(ConfigError::Unsupported {
                    file: origin.to_string(),
                    key,
                    reason: format!(
                        "'{class}' is one of aMQTT's contrib plugins, not provided by amqtt-rs yet \
                         (see the README's list of plugins); remove it"
                    ),
                })
            }
        }
    }

    if !auth_chain.is_empty() {
        raw.auth.get_or_insert_with(RawAuth::default).plugins = Some(auth_chain);
    }
    if !topic_chain.is_empty() {
        let check = raw.topic_check.get_or_insert_with(RawTopicCheck::default);
        if has_class {
            // 0.11+: a listed topic plugin is active. 0.10: `topic-check.enabled` decides.
            check.enabled = Some(Bool(true));
        } else if check.enabled != Some(Bool(true)) {
            log::info!(
                "{origin}: plugins: topic plugins are listed but topic-check.enabled is not true, \
                 so topics are not checked"
            );
        }
        check.plugins = Some(topic_chain);
    }
    if has_class && !has_sys && raw.sys_interval.is_none() {
        // aMQTT 0.11+ publishes $SYS only with its BrokerSysPlugin listed.
        raw.sys_interval = Some(Seconds(0.0));
    }
    Ok(applied)
}
