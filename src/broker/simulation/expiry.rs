//! Session expiry in the simulation (issue #21): on one seed in four without persistence
//! ([`expiry_for`]), the broker's `session_expiry_interval` is a few seconds, so that persistent
//! sessions whose clients stay away across the fake clock's ticks expire. The model notes when
//! each persistent session went offline (the step in which the broker closed its connection) and
//! checks, after every tick and at every CONNECT that resumes one:
//! - a session is not discarded before its expiry (nothing it was owed is lost before then: the
//!   liveness check at the end holds every other session to what it was owed);
//! - a session due is discarded by the tick that passes its deadline, or by the CONNECT that
//!   comes first (which then reports no session present).
//!
//! An expired session ends in the model as a clean start ends one (`end_session`): what it was
//! owed is void. Persistent seeds keep sessions for ever (recovery stamps offline times from a
//! wall clock in milliseconds, coarser than this model's bounds).
//!
//! MQTT 5 clients (`v5_clients.rs`) ask for a persistent session with Session Expiry Interval
//! 0xFFFFFFFF, which the broker's setting caps: their sessions expire as MQTT 3 ones do. Message
//! expiry is `msg_expiry.rs`'.

use super::*;

/// How far the core's clock may lag the model's when a session goes offline: the core stamps it
/// with the latest `now` it was handed, and between ticks (which hand every core the time) the
/// harness moves the clock by nanoseconds only.
const CLOCK_SLACK: Duration = Duration::from_millis(1);

/// The broker's `session_expiry_interval` for `seed`: 2 to 31 seconds on one seed in four
/// without persistence, drawn from a generator of its own (the other seeds run as before).
pub(super) fn expiry_for(seed: u64, persistence: bool) -> Option<Duration> {
    if persistence || seed % 4 != 1 {
        return None;
    }
    let mut rng = Rng::new(seed ^ 0x5e55_10e5_e791_7e55);
    Some(Duration::from_secs(2 + rng.below(30) as u64))
}

impl Sim {
    /// When the offline persistent session of client `c` expires, if it does.
    fn expiry_due(&self, c: usize) -> Option<Instant> {
        let interval = self.cfg.settings.session_expiry_interval?;
        let session = self.sessions[c].as_ref()?;
        if session.clean || session.conn.is_some() {
            return None;
        }
        Some(session.offline_since? + interval)
    }

    fn core_holds_session(&self, c: usize) -> bool {
        let client = &self.clients[c];
        self.cores[client.home]
            .session_by_client_id
            .contains_key(client.id.as_str())
    }

    /// After the cores' tick: every session due is gone, none that is not due is.
    pub(super) fn check_expiry(&mut self) {
        for c in 0..self.clients.len() {
            let Some(due) = self.expiry_due(c) else {
                continue;
            };
            let held = self.core_holds_session(c);
            if held && self.now >= due + CLOCK_SLACK {
                fail!(
                    self,
                    "the session of {} outlived its expiry by {:?}",
                    self.clients[c].id,
                    self.now - due
                );
            }
            if !held {
                if self.now + CLOCK_SLACK < due {
                    fail!(
                        self,
                        "the session of {} was discarded {:?} before its expiry",
                        self.clients[c].id,
                        due - self.now
                    );
                }
                self.note(format!("{}: session expired", self.clients[c].id));
                self.end_session(c);
            }
        }
    }

    /// A CONNECT without clean session of client `c` was answered with `present`: a session due
    /// must not be resumed; one discarded then must have been due (the session-present check after
    /// this holds a session that is not due to being resumed).
    pub(super) fn expiry_at_connect(&mut self, c: usize, present: bool) {
        let Some(due) = self.expiry_due(c) else {
            return;
        };
        if self.now + CLOCK_SLACK < due {
            return;
        }
        if present && self.now >= due + CLOCK_SLACK {
            fail!(
                self,
                "the session of {} was resumed {:?} after its expiry",
                self.clients[c].id,
                self.now - due
            );
        }
        if !present {
            self.note(format!(
                "{}: session expired before its CONNECT",
                self.clients[c].id
            ));
            self.end_session(c);
        }
    }
}
