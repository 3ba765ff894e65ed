//! `auth_jwt` and `topic_jwt` on tokens signed here (HS256 with `jsonwebtoken`, RS256 and ES256
//! with keys from `rcgen`): algorithms, claims, expiry and the refusals.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};

use super::*;
use crate::config::JwtTopicSettings;
use crate::plugins::{ClientInfo, EventPlugin, TopicAction, TopicPlugin};
use crate::protocol::{TopicFilter, TopicName};

const SECRET: &str = "a-secret-long-enough-for-hs256";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn hs256(claims: &Value, secret: &str) -> String {
    encode(
        &Header::default(),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign")
}

fn user_settings(secret_key: &str, algorithm: &str) -> JwtUserSettings {
    JwtUserSettings {
        secret_key: secret_key.into(),
        user_claim: "username".into(),
        algorithm: algorithm.into(),
    }
}

fn connect(username: Option<&str>, token: Option<&str>) -> Credentials {
    Credentials {
        client_id: "c1".into(),
        username: username.map(Into::into),
        password: token.map(|t| Bytes::copy_from_slice(t.as_bytes())),
        ..Credentials::default()
    }
}

fn decide(plugin: &JwtAuth, username: Option<&str>, token: Option<&str>) -> AuthDecision {
    plugin
        .authenticate(&connect(username, token))
        .expect("no error")
}

#[test]
fn hs256_token_naming_the_user_is_allowed_until_its_exp() {
    let plugin = JwtAuth::new(&user_settings(SECRET, "HS256")).expect("plugin");
    let exp = now() + 3600;
    let token = hs256(&json!({"username": "alice", "exp": exp}), SECRET);
    assert_eq!(
        decide(&plugin, Some("alice"), Some(&token)),
        AuthDecision::AllowUntil(UNIX_EPOCH + Duration::from_secs(exp))
    );
    // No `exp`: allowed with no deadline (PyJWT does not require it).
    let token = hs256(&json!({"username": "alice"}), SECRET);
    assert_eq!(
        decide(&plugin, Some("alice"), Some(&token)),
        AuthDecision::Allow
    );
}

#[test]
fn refusals() {
    let plugin = JwtAuth::new(&user_settings(SECRET, "HS256")).expect("plugin");
    let good = hs256(&json!({"username": "alice"}), SECRET);
    let cases: Vec<(&str, Option<&str>, Option<String>)> = vec![
        ("another user", Some("bob"), Some(good.clone())),
        ("no user name", None, Some(good.clone())),
        ("no password", Some("alice"), None),
        ("not a token", Some("alice"), Some("hunter2".into())),
        (
            "wrong key",
            Some("alice"),
            Some(hs256(&json!({"username": "alice"}), "another-secret")),
        ),
        (
            "expired",
            Some("alice"),
            Some(hs256(
                &json!({"username": "alice", "exp": now() - 5}),
                SECRET,
            )),
        ),
        (
            "not yet valid",
            Some("alice"),
            Some(hs256(
                &json!({"username": "alice", "nbf": now() + 600}),
                SECRET,
            )),
        ),
        (
            "exp not an integer",
            Some("alice"),
            Some(hs256(&json!({"username": "alice", "exp": "soon"}), SECRET)),
        ),
        (
            "an audience",
            Some("alice"),
            Some(hs256(&json!({"username": "alice", "aud": "x"}), SECRET)),
        ),
        (
            "no user claim, no user name",
            None,
            Some(hs256(&json!({"sub": "alice"}), SECRET)),
        ),
        (
            "user claim not a string",
            Some("1"),
            Some(hs256(&json!({"username": 1}), SECRET)),
        ),
    ];
    for (case, username, token) in cases {
        assert_eq!(
            decide(&plugin, username, token.as_deref()),
            AuthDecision::Deny,
            "{case}"
        );
    }
    // A token of another algorithm than the configured one: refused (no algorithm confusion).
    let hs512 = encode(
        &Header::new(Algorithm::HS512),
        &json!({"username": "alice"}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign");
    assert_eq!(
        decide(&plugin, Some("alice"), Some(&hs512)),
        AuthDecision::Deny
    );
}

/// A key pair made by rcgen: (private key PKCS#8 PEM, public key PEM).
fn key_pair(alg: &'static rcgen::SignatureAlgorithm) -> (String, String) {
    let pair = rcgen::KeyPair::generate_for(alg).expect("key pair");
    (pair.serialize_pem(), pair.public_key_pem())
}

/// (RS256 is tested with keys and tokens from PyJWT and `cryptography`, in
/// tests/python/test_jwt_auth.py: rcgen with `ring` makes no RSA keys.)
#[test]
fn es256_and_eddsa_verify_with_the_pem_public_key() {
    for (algorithm, rcgen_alg) in [
        (Algorithm::ES256, &rcgen::PKCS_ECDSA_P256_SHA256),
        (Algorithm::EdDSA, &rcgen::PKCS_ED25519),
    ] {
        let name = format!("{algorithm:?}");
        let (private, public) = key_pair(rcgen_alg);
        let key = match algorithm {
            Algorithm::ES256 => EncodingKey::from_ec_pem(private.as_bytes()),
            _ => EncodingKey::from_ed_pem(private.as_bytes()),
        }
        .expect("encoding key");
        let token =
            encode(&Header::new(algorithm), &json!({"username": "dev"}), &key).expect("sign");
        let plugin = JwtAuth::new(&user_settings(&public, &name)).expect("plugin");
        assert_eq!(
            decide(&plugin, Some("dev"), Some(&token)),
            AuthDecision::Allow,
            "{name}"
        );
        // Another key pair's public key refuses it.
        let (_, other) = key_pair(rcgen_alg);
        let plugin = JwtAuth::new(&user_settings(&other, &name)).expect("plugin");
        assert_eq!(
            decide(&plugin, Some("dev"), Some(&token)),
            AuthDecision::Deny,
            "{name}"
        );
    }
}

#[test]
fn settings_problems_name_the_setting() {
    let error =
        |secret: &str, algorithm: &str| match JwtAuth::new(&user_settings(secret, algorithm)) {
            Err(error) => error,
            Ok(_) => panic!("{algorithm} with {secret:?} should be refused"),
        };
    assert_eq!(error(SECRET, "ES256K").0, "algorithm");
    assert!(error(SECRET, "ES512").1.contains("not supported"));
    assert!(error(SECRET, "HS999").1.contains("unknown algorithm"));
    assert_eq!(error(SECRET, "RS256").0, "secret_key");
    assert_eq!(error("", "HS256").0, "secret_key");
}

fn topic_plugin() -> JwtTopics {
    JwtTopics::new(&JwtTopicSettings {
        secret_key: SECRET.into(),
        publish_claim: "publish_acl".into(),
        subscribe_claim: "subscribe_acl".into(),
        receive_claim: "receive_acl".into(),
        algorithm: "HS256".into(),
    })
    .expect("plugin")
}

fn client(id: &str) -> ClientInfo<'_> {
    ClientInfo {
        client_id: id,
        username: None,
    }
}

fn publish(plugin: &JwtTopics, id: &str, topic: &str) -> bool {
    let topic = TopicName::new(topic).expect("topic");
    TopicPlugin::allow(plugin, &client(id), TopicAction::Publish(&topic))
}

fn subscribe(plugin: &JwtTopics, id: &str, filter: &str) -> bool {
    let filter = TopicFilter::new(filter).expect("filter");
    TopicPlugin::allow(plugin, &client(id), TopicAction::Subscribe(&filter))
}

fn receive(plugin: &JwtTopics, id: &str, topic: &str) -> bool {
    let topic = TopicName::new(topic).expect("topic");
    TopicPlugin::allow(plugin, &client(id), TopicAction::Receive(&topic))
}

/// What the runtime does for a CONNECT the core accepts.
fn connect_with(plugin: &JwtTopics, id: &str, token: &str) -> AuthDecision {
    let mut credentials = connect(None, Some(token));
    credentials.client_id = id.into();
    let decision = AuthPlugin::authenticate(plugin, &credentials).expect("no error");
    plugin.accepted(id, Some(token.as_bytes()));
    decision
}

#[test]
fn topic_claims_grant_publish_subscribe_and_receive() {
    let plugin = topic_plugin();
    let exp = now() + 60;
    let token = hs256(
        &json!({
            "exp": exp,
            "publish_acl": ["my/topic/#", "my/+/other"],
            "subscribe_acl": ["my/+/other", "not a filter/#/x", 7],
            "receive_acl": ["#"],
        }),
        SECRET,
    );
    assert!(
        !publish(&plugin, "c1", "my/topic"),
        "nothing before CONNECT"
    );
    assert_eq!(
        connect_with(&plugin, "c1", &token),
        AuthDecision::AllowUntil(UNIX_EPOCH + Duration::from_secs(exp))
    );
    assert!(publish(&plugin, "c1", "my/topic/a/b"));
    assert!(publish(&plugin, "c1", "my/x/other"));
    assert!(!publish(&plugin, "c1", "your/topic"));
    assert!(subscribe(&plugin, "c1", "my/x/other"));
    assert!(subscribe(&plugin, "c1", "my/+/other"));
    // aMQTT's matcher would let `my/+/other` grant `my/#`; a grant must cover the filter.
    assert!(!subscribe(&plugin, "c1", "my/#"));
    assert!(receive(&plugin, "c1", "any/thing"));
    assert!(!receive(&plugin, "c1", "$SYS/broker/uptime"));
    // Another client id holds nothing.
    assert!(!publish(&plugin, "c2", "my/topic"));
    EventPlugin::client_disconnected(&plugin, &client("c1"));
    assert!(
        !publish(&plugin, "c1", "my/topic"),
        "released at disconnection"
    );
}

#[test]
fn takeover_keeps_the_new_grants_and_bad_tokens_grant_nothing() {
    let plugin = topic_plugin();
    let first = hs256(&json!({"publish_acl": ["a"]}), SECRET);
    let second = hs256(&json!({"publish_acl": ["b"]}), SECRET);
    connect_with(&plugin, "c1", &first);
    // The same client id connects again: admitted, then the old connection closes.
    connect_with(&plugin, "c1", &second);
    EventPlugin::client_disconnected(&plugin, &client("c1"));
    assert!(publish(&plugin, "c1", "b") && !publish(&plugin, "c1", "a"));
    // A takeover by a client whose token does not verify leaves nothing.
    let forged = hs256(&json!({"publish_acl": ["#"]}), "not-the-secret");
    assert_eq!(connect_with(&plugin, "c1", &forged), AuthDecision::Abstain);
    EventPlugin::client_disconnected(&plugin, &client("c1"));
    assert!(!publish(&plugin, "c1", "b") && !publish(&plugin, "c1", "x"));
    // A CONNECT the core refuses releases what it was admitted with.
    connect_with(&plugin, "c3", &second);
    AuthPlugin::refused(&plugin, "c3");
    assert!(!publish(&plugin, "c3", "b"));
    // The same token on two connections at once: both get its grants.
    let mut credentials = connect(None, Some(&first));
    credentials.client_id = "c4".into();
    AuthPlugin::authenticate(&plugin, &credentials).expect("no error");
    credentials.client_id = "c5".into();
    AuthPlugin::authenticate(&plugin, &credentials).expect("no error");
    plugin.accepted("c4", Some(first.as_bytes()));
    plugin.accepted("c5", Some(first.as_bytes()));
    assert!(publish(&plugin, "c4", "a") && publish(&plugin, "c5", "a"));
    let _: Arc<dyn TopicPlugin> = Arc::new(topic_plugin());
}

#[test]
fn the_configuration_builds_them_and_names_what_is_wrong() {
    use crate::config::BrokerConfig;
    use crate::plugins::{build, PluginError};
    let config = |yaml: &str| BrokerConfig::from_yaml_str(yaml, "t.yaml").expect("config");
    let set = build(
        &config(
            "plugins:\n  amqtt.contrib.jwt.UserAuthJwtPlugin: {secret_key: s, user_claim: u}\n  \
             amqtt.contrib.jwt.TopicAuthJwtPlugin: {secret_key: s, publish_claim: p, \
             subscribe_claim: s, receive_claim: r}\n",
        ),
        &[],
    )
    .expect("builds");
    // topic_jwt reads the token at CONNECT (last in the chain) and hears disconnections.
    assert_eq!(set.authenticator.names(), ["auth_jwt", "topic_jwt"]);
    assert_eq!(set.core.topic_names(), ["topic_jwt"]);
    assert!(set.core.checks_receive() && set.core.has_events());
    let key_of = |yaml: &str| match build(&config(yaml), &[]) {
        Err(PluginError::Config { key, reason, .. }) => (key, reason),
        other => panic!("expected an error, got {other:?}"),
    };
    let (key, reason) = key_of(
        "auth:\n  plugins: [auth_jwt]\n  jwt: {secret_key: s, user_claim: u, algorithm: ES512}\n",
    );
    assert_eq!(key, "auth.jwt.algorithm");
    assert!(reason.contains("not supported"), "{reason}");
    let (key, reason) = key_of("auth:\n  plugins: [auth_jwt]\n");
    assert_eq!(key, "auth.plugins[0]");
    assert!(reason.contains("needs its settings: auth.jwt"), "{reason}");
    let (key, _) = key_of(
        "topic-check:\n  enabled: true\n  plugins: [topic_jwt]\n  jwt: {secret_key: not-a-pem, \
         publish_claim: p, subscribe_claim: s, receive_claim: r, algorithm: RS256}\n",
    );
    assert_eq!(key, "topic-check.jwt.secret_key");
}

#[test]
#[ignore = "a measurement, not a check: run by hand"]
fn measure_verification_costs() {
    let claims = json!({"username": "alice", "exp": now() + 3600});
    let mut cases = vec![("HS256", hs256(&claims, SECRET), SECRET.to_string())];
    for (name, algorithm, rcgen_alg) in [
        ("ES256", Algorithm::ES256, &rcgen::PKCS_ECDSA_P256_SHA256),
        ("EdDSA", Algorithm::EdDSA, &rcgen::PKCS_ED25519),
    ] {
        let (private, public) = key_pair(rcgen_alg);
        let key = match algorithm {
            Algorithm::ES256 => EncodingKey::from_ec_pem(private.as_bytes()),
            _ => EncodingKey::from_ed_pem(private.as_bytes()),
        }
        .expect("encoding key");
        let token = encode(&Header::new(algorithm), &claims, &key).expect("sign");
        cases.push((name, token, public));
    }
    for (name, token, key) in cases {
        let plugin = JwtAuth::new(&user_settings(&key, name)).expect("plugin");
        let n = 1000;
        let started = std::time::Instant::now();
        for _ in 0..n {
            assert_ne!(
                decide(&plugin, Some("alice"), Some(&token)),
                AuthDecision::Deny
            );
        }
        eprintln!("{name}: {:?} per CONNECT", started.elapsed() / n);
    }
}
