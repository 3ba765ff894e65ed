//! MQTT 5 enhanced authentication methods [MQTT-4.12]: the plugin side of the AUTH exchange.
//!
//! An [`AuthMethod`] is offered under its Authentication Method name (`SCRAM-SHA-256`: the
//! built-in `plugins/scram.rs`). For each CONNECT (or re-authentication, AUTH 0x19) that names it,
//! the broker core asks it for a fresh [`AuthExchange`], feeds it the client's Authentication Data
//! (the CONNECT's, then each AUTH 0x18's) and sends what it answers: [`AuthStep::Continue`] as
//! AUTH 0x18 Continue authentication, [`AuthStep::Success`] in the CONNACK 0x00 (or AUTH 0x00
//! Success after a re-authentication), [`AuthStep::Failure`] as a refusing CONNACK (or a
//! DISCONNECT). The core does the MQTT (`broker/handlers/auth.rs`); a method only reads and
//! writes its own messages, and is called on the event loop: each step must be cheap (no password
//! hashing, no I/O that can block).

use std::fmt;
use std::sync::Arc;

use crate::protocol::v5::ReasonCode;

/// What a method answers to the client's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthStep {
    /// Send this challenge (AUTH 0x18) and wait for the client's next AUTH.
    Continue(Vec<u8>),
    /// The client proved who it is: `user` (the user name the session gets, for the topic checks)
    /// and the method's final data for the client, if any.
    Success {
        user: Option<String>,
        data: Option<Vec<u8>>,
    },
    /// Refused, with this reason code: 0x86 Bad User Name or Password, 0x87 Not authorized.
    Failure(ReasonCode),
}

/// One authentication exchange of one connection (a CONNECT's, or a re-authentication's).
pub trait AuthExchange {
    /// The client's next Authentication Data (`None`: its packet carried none). After
    /// `Success` or `Failure` it is not called again.
    fn step(&mut self, data: Option<&[u8]>) -> AuthStep;
}

/// A challenge/response method the broker offers.
pub trait AuthMethod: Send + Sync {
    /// The Authentication Method name clients send, e.g. `SCRAM-SHA-256` (compared exactly).
    fn name(&self) -> &str;

    /// A new exchange, for one CONNECT or one re-authentication.
    fn start(&self) -> Box<dyn AuthExchange>;
}

/// The methods offered, by name. Cloning is cheap (one reference count).
#[derive(Clone, Default)]
pub struct AuthMethods {
    methods: Arc<[Arc<dyn AuthMethod>]>,
}

impl fmt::Debug for AuthMethods {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.methods.iter().map(|m| m.name()))
            .finish()
    }
}

impl AuthMethods {
    pub fn new(methods: Vec<Arc<dyn AuthMethod>>) -> Self {
        AuthMethods {
            methods: methods.into(),
        }
    }

    /// The method called `name`, if one is offered.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn AuthMethod>> {
        self.methods.iter().find(|m| m.name() == name)
    }

    pub fn names(&self) -> Vec<&str> {
        self.methods.iter().map(|m| m.name()).collect()
    }
}

/// An exchange under way on a connection: the method's name (a client may not switch methods
/// within one [MQTT-4.12.0-5] nor on re-authentication [MQTT-4.12.1-1]) and its state.
pub struct Exchange {
    pub method: String,
    state: Box<dyn AuthExchange>,
}

impl fmt::Debug for Exchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exchange")
            .field("method", &self.method)
            .finish_non_exhaustive()
    }
}

impl Exchange {
    /// Starts `method`'s exchange.
    pub fn start(method: &dyn AuthMethod) -> Self {
        let name = method.name().to_string();
        let state = super::guarded(&name, || method.start()).unwrap_or_else(|()| Box::new(Broken));
        Exchange {
            method: name,
            state,
        }
    }

    /// The method's answer to the client's `data`; a method that panics refuses (0x87).
    pub fn step(&mut self, data: Option<&[u8]>) -> AuthStep {
        let state = &mut self.state;
        super::guarded(&self.method, || state.step(data))
            .unwrap_or(AuthStep::Failure(ReasonCode::NOT_AUTHORIZED))
    }
}

/// The exchange of a method that panicked when asked for one: refuses.
struct Broken;

impl AuthExchange for Broken {
    fn step(&mut self, _: Option<&[u8]>) -> AuthStep {
        AuthStep::Failure(ReasonCode::NOT_AUTHORIZED)
    }
}
