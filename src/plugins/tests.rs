//! Tests of the plugin chains: how authentication, topic and event answers combine.

use super::*;

struct Fixed(
    &'static str,
    Option<AuthDecision>,
    Result<AuthDecision, &'static str>,
);

impl AuthPlugin for Fixed {
    fn name(&self) -> &str {
        self.0
    }
    fn authenticate(&self, _: &Credentials) -> Result<AuthDecision, BoxError> {
        self.2.map_err(|e| e.into())
    }
    fn quick_decision(&self, _: &Credentials) -> Option<AuthDecision> {
        self.1
    }
}

struct Panics;

impl AuthPlugin for Panics {
    fn name(&self) -> &str {
        "panics"
    }
    fn authenticate(&self, _: &Credentials) -> Result<AuthDecision, BoxError> {
        panic!("plugin bug")
    }
}

impl TopicPlugin for Panics {
    fn name(&self) -> &str {
        "panics"
    }
    fn allow(&self, _: &ClientInfo<'_>, _: TopicAction<'_>) -> bool {
        panic!("plugin bug")
    }
}

fn creds() -> Credentials {
    Credentials {
        client_id: "c".into(),
        username: Some("u".into()),
        password: Some(Bytes::from_static(b"p")),
        ..Credentials::default()
    }
}

fn chain(plugins: Vec<Arc<dyn AuthPlugin>>) -> Authenticator {
    Authenticator::new(plugins)
}

#[test]
fn one_deny_refuses_and_abstentions_do_not_count() {
    use AuthDecision::*;
    let allow = Arc::new(Fixed("a", None, Ok(Allow)));
    let abstain = Arc::new(Fixed("b", None, Ok(Abstain)));
    let deny = Arc::new(Fixed("c", None, Ok(Deny)));
    assert_eq!(
        chain(vec![allow.clone(), abstain.clone()]).decide(&creds()),
        AuthVerdict::Allowed
    );
    assert_eq!(
        chain(vec![abstain.clone()]).decide(&creds()),
        AuthVerdict::Allowed
    );
    assert_eq!(
        chain(vec![allow, abstain, deny]).decide(&creds()),
        AuthVerdict::Denied
    );
    assert_eq!(chain(vec![]).decide(&creds()), AuthVerdict::Allowed);
}

#[test]
fn failing_or_panicking_plugins_deny() {
    let allow: Arc<dyn AuthPlugin> = Arc::new(Fixed("a", None, Ok(AuthDecision::Allow)));
    let failing: Arc<dyn AuthPlugin> = Arc::new(Fixed("f", None, Err("database down")));
    assert_eq!(
        chain(vec![allow.clone(), failing]).decide(&creds()),
        AuthVerdict::Denied
    );
    assert_eq!(
        chain(vec![allow, Arc::new(Panics)]).decide(&creds()),
        AuthVerdict::Denied
    );
}

#[test]
fn quick_verdict_only_when_every_plugin_answers_quickly() {
    use AuthDecision::*;
    let quick_allow: Arc<dyn AuthPlugin> = Arc::new(Fixed("q", Some(Allow), Err("slow path")));
    let slow: Arc<dyn AuthPlugin> = Arc::new(Fixed("s", None, Ok(Allow)));
    let quick_deny: Arc<dyn AuthPlugin> = Arc::new(Fixed("d", Some(Deny), Ok(Allow)));
    assert_eq!(
        chain(vec![quick_allow.clone()]).quick_verdict(&creds()),
        Some(AuthVerdict::Allowed)
    );
    assert_eq!(
        chain(vec![quick_allow.clone(), slow.clone()]).quick_verdict(&creds()),
        None
    );
    // A quick denial settles it, whatever the slow plugins would say.
    assert_eq!(
        chain(vec![slow, quick_deny]).quick_verdict(&creds()),
        Some(AuthVerdict::Denied)
    );
    // `decide` uses the quick answer where there is one (the slow path here would fail).
    assert_eq!(
        chain(vec![quick_allow]).decide(&creds()),
        AuthVerdict::Allowed
    );
}

#[test]
fn a_panicking_topic_plugin_denies() {
    let plugins = CorePlugins::new(vec![Arc::new(Panics)], vec![]);
    let topic = TopicName::new("a/b").expect("topic");
    let client = ClientInfo {
        client_id: "c",
        username: None,
    };
    assert!(!plugins.allow(&client, TopicAction::Publish(&topic)));
    assert!(CorePlugins::default().allow(&client, TopicAction::Publish(&topic)));
}

#[test]
fn credentials_debug_hides_the_password() {
    let text = format!("{:?}", creds());
    assert!(
        text.contains("<redacted>") && !text.contains("b\"p\""),
        "{text}"
    );
}
