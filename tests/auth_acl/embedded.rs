//! Plugins added by an embedding program through `Broker::with_plugin`: authentication, topic
//! checks and events, a panicking plugin, and a clash with a built-in plugin's name.

// ---- plugins added by an embedding program -------------------------------------------------

use super::*;
use amqtt::plugins::{
    AuthDecision, AuthPlugin, BoxError, ClientInfo, Credentials, EventPlugin, Plugin, TopicAction,
    TopicPlugin,
};

/// Allows the password `let-me-in`, denies any other, abstains for anonymous clients.
struct Token;

impl AuthPlugin for Token {
    fn name(&self) -> &str {
        "token"
    }
    fn authenticate(&self, c: &Credentials) -> Result<AuthDecision, BoxError> {
        Ok(match (&c.username, c.password.as_deref()) {
            (None, _) => AuthDecision::Abstain,
            (Some(_), Some(b"let-me-in")) => AuthDecision::Allow,
            (Some(_), _) => AuthDecision::Deny,
        })
    }
}

/// A plugin with a bug.
struct Broken;

impl AuthPlugin for Broken {
    fn name(&self) -> &str {
        "broken"
    }
    fn authenticate(&self, _: &Credentials) -> Result<AuthDecision, BoxError> {
        panic!("a bug in a plugin")
    }
}

struct NoSecrets;

impl TopicPlugin for NoSecrets {
    fn name(&self) -> &str {
        "no_secrets"
    }
    fn allow(&self, _: &ClientInfo<'_>, action: TopicAction<'_>) -> bool {
        !action.topic().starts_with("secret/")
    }
}

struct Connections(Arc<AtomicU64>);

impl EventPlugin for Connections {
    fn name(&self) -> &str {
        "connections"
    }
    fn client_connected(&self, _: &ClientInfo<'_>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// A broker on the `default` listener; `yaml` may go on with that listener's keys.
pub(super) fn start_with(yaml: &str, plugins: Vec<Plugin>) -> (BrokerHandle, SocketAddr) {
    let text = format!("listeners:\n  default:\n    bind: 127.0.0.1:0\n{yaml}");
    let mut config = BrokerConfig::from_yaml_str(&text, "test.yaml").expect("config");
    config.shards = ShardCount::Fixed(2);
    config.pin_shards = false;
    let broker = plugins
        .into_iter()
        .fold(Broker::new(config).expect("broker"), Broker::with_plugin)
        .start()
        .expect("starts");
    let addr = broker.address("default").expect("listener");
    (broker, addr)
}

#[test]
fn plugins_added_through_the_builder_authenticate_check_topics_and_hear_events() {
    let _serial = serial();
    let connected = Arc::new(AtomicU64::new(0));
    let (_broker, addr) = start_with(
        "",
        vec![
            Plugin::auth(Token),
            Plugin::topic(NoSecrets),
            Plugin::events(Connections(connected.clone())),
        ],
    );
    let mut ok = expect_connack(
        addr,
        login("a", Some("anyone"), Some("let-me-in")),
        ConnectReturnCode::Accepted,
    );
    expect_connack(
        addr,
        login("b", Some("anyone"), Some("guess")),
        ConnectReturnCode::NotAuthorized,
    );
    expect_connack(addr, login("c", None, None), ConnectReturnCode::Accepted);
    assert_eq!(
        subscribe(
            &mut ok,
            &[("secret/#", QoS::AtMostOnce), ("open/#", QoS::AtMostOnce)]
        ),
        [
            SubscribeReturnCode::Failure,
            SubscribeReturnCode::Success(QoS::AtMostOnce)
        ]
    );
    assert_eq!(
        connected.load(Ordering::Relaxed),
        2,
        "refused clients are not reported"
    );
}

#[test]
fn a_panicking_auth_plugin_denies_and_the_broker_goes_on() {
    let _serial = serial();
    let (_broker, addr) = start_with(
        "auth:\n  plugins: [auth_anonymous, broken]\n",
        vec![Plugin::auth(Broken)],
    );
    for i in 0..3 {
        expect_connack(
            addr,
            login(&format!("c{i}"), Some("u"), Some("p")),
            ConnectReturnCode::NotAuthorized,
        );
    }
    expect_connack(
        addr,
        login("anon", None, None),
        ConnectReturnCode::NotAuthorized,
    );
}

#[test]
fn an_added_plugin_with_a_builtin_name_fails_at_start() {
    let _serial = serial();
    struct Impostor;
    impl AuthPlugin for Impostor {
        fn name(&self) -> &str {
            "auth_file"
        }
        fn authenticate(&self, _: &Credentials) -> Result<AuthDecision, BoxError> {
            Ok(AuthDecision::Allow)
        }
    }
    let config = BrokerConfig::from_yaml_str(
        "listeners:\n  default:\n    bind: 127.0.0.1:0\n",
        "test.yaml",
    )
    .expect("config");
    let error = match Broker::new(config)
        .expect("broker")
        .with_plugin(Plugin::auth(Impostor))
        .start()
    {
        Ok(_) => panic!("started"),
        Err(error) => error.to_string(),
    };
    assert!(
        error.contains("plugin 'auth_file'") && error.contains("built-in"),
        "{error}"
    );
}
