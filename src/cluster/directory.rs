//! The cluster's session directory, as bytes: which node owns a client id (one message per
//! client id in the `<name>_sessions` stream, subject `<name>.sess.<hex client id>`) and what
//! re-creates its persistent session elsewhere (its [`Profile`]); the hand-off a new owner asks
//! of the old one (`<name>.handoff.<node>`, request and reply); and the late hand-over of the
//! messages a restarted node still held for a session that moved meanwhile
//! (`<name>.late.<node>`, request and reply).
//!
//! An entry's stream sequence is its fencing token: a node writes an entry only over the one it
//! read (the `Nats-Expected-Last-Subject-Sequence` header: JetStream refuses a stale write), and
//! a node gives up a client id only for a claim newer than the entry it holds. Plain functions
//! over bytes, as `wire.rs`: no I/O.

use bytes::{BufMut, Bytes, BytesMut};

use super::wire::{Names, WireError, FORMAT};

/// The header that makes a JetStream publish a compare-and-set on its subject.
pub const EXPECTED_LAST_SEQUENCE: &str = "Nats-Expected-Last-Subject-Sequence";

impl Names {
    /// The session directory's stream.
    pub fn sessions_stream(&self) -> String {
        format!("{}_sessions", self.prefix)
    }
    /// Every directory entry's subject.
    pub fn sessions_all(&self) -> String {
        format!("{}.sess.*", self.prefix)
    }
    /// The directory entry of `client_id` (hex: any client id is one NATS token then).
    pub fn session(&self, client_id: &str) -> String {
        let hex: String = client_id.bytes().map(|b| format!("{b:02x}")).collect();
        format!("{}.sess.{hex}", self.prefix)
    }
    /// Hand-off requests for the sessions `node` owns.
    pub fn handoff(&self, node: &str) -> String {
        format!("{}.handoff.{node}", self.prefix)
    }
    /// Late hand-overs for the sessions `node` owns (`late.rs`).
    pub fn late(&self, node: &str) -> String {
        format!("{}.late.{node}", self.prefix)
    }
}

/// A directory entry: the node that owns the client id, that node's run, and its session's
/// profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub node: String,
    pub boot: u64,
    pub profile: Profile,
}

/// What an entry keeps of its client's persistent session: what a node needs to make it again
/// when the owner is dead (its records without messages: `BrokerCore::session_profile`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Profile {
    /// No persistent session (a clean one, or none yet).
    None,
    /// The session's records: its client id, user, MQTT 5 expiry and subscriptions.
    Records(Bytes),
    /// Over [`crate::broker::MAX_PROFILE_BYTES`]: not kept; a claim that finds the owner dead
    /// starts a new session.
    TooLarge,
}

impl Profile {
    /// The profile of a session whose records are `records` (`None`: no persistent session).
    pub fn of(records: Option<Bytes>) -> Profile {
        match records {
            None => Profile::None,
            Some(r) if r.len() > crate::broker::MAX_PROFILE_BYTES => Profile::TooLarge,
            Some(r) => Profile::Records(r),
        }
    }
}

/// The node's name, a 0 byte (never in a name: `cluster.node` is letters, digits, `-` and `_`),
/// the profile's kind and its records. An entry without the 0 byte (written before profiles
/// existed) reads as [`Profile::None`].
pub fn encode_entry(entry: &Entry) -> Bytes {
    let records = match &entry.profile {
        Profile::Records(records) => &records[..],
        Profile::None | Profile::TooLarge => &[],
    };
    let mut out = BytesMut::with_capacity(11 + entry.node.len() + records.len());
    out.put_u8(FORMAT);
    out.put_u64(entry.boot);
    out.put_slice(entry.node.as_bytes());
    out.put_u8(0);
    out.put_u8(match entry.profile {
        Profile::None => 0,
        Profile::Records(_) => 1,
        Profile::TooLarge => 2,
    });
    out.put_slice(records);
    out.freeze()
}

pub fn decode_entry(payload: &Bytes) -> Result<Entry, WireError> {
    let (boot, rest) = format_and_u64(payload)?;
    let (node, profile) = match rest.iter().position(|&b| b == 0) {
        None => (rest, Profile::None),
        Some(end) => {
            let start = payload.len() - rest.len() + end + 2;
            let profile = match rest.get(end + 1) {
                Some(0) => Profile::None,
                Some(1) => Profile::Records(payload.slice(start..)),
                Some(2) => Profile::TooLarge,
                Some(_) | None => return Err(WireError::Truncated),
            };
            (&rest[..end], profile)
        }
    };
    let node = String::from_utf8(node.to_vec()).map_err(|_| WireError::Topic)?;
    Ok(Entry {
        node,
        boot,
        profile,
    })
}

/// A hand-off request: the claim's entry sequence, and the client id.
pub fn encode_handoff(seq: u64, client_id: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(9 + client_id.len());
    out.put_u8(FORMAT);
    out.put_u64(seq);
    out.put_slice(client_id.as_bytes());
    out.freeze()
}

pub fn decode_handoff(payload: &[u8]) -> Result<(u64, String), WireError> {
    let (seq, rest) = format_and_u64(payload)?;
    let client_id = String::from_utf8(rest.to_vec()).map_err(|_| WireError::Topic)?;
    Ok((seq, client_id))
}

/// The old owner's answer to a hand-off request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandedOff {
    /// Given up: the session's records (`None`: no persistent session was there).
    Released(Option<Bytes>),
    /// The old owner holds a newer entry than the claim: it gave nothing up.
    Stale,
}

pub fn encode_handed_off(answer: &HandedOff) -> Bytes {
    let mut out = BytesMut::new();
    out.put_u8(FORMAT);
    match answer {
        HandedOff::Stale => out.put_u8(2),
        HandedOff::Released(None) => out.put_u8(0),
        HandedOff::Released(Some(records)) => {
            out.put_u8(1);
            out.put_slice(records);
        }
    }
    out.freeze()
}

pub fn decode_handed_off(payload: &Bytes) -> Result<HandedOff, WireError> {
    match payload.as_ref() {
        [FORMAT, 0] => Ok(HandedOff::Released(None)),
        [FORMAT, 1, ..] => Ok(HandedOff::Released(Some(payload.slice(2..)))),
        [FORMAT, 2] => Ok(HandedOff::Stale),
        [FORMAT, ..] | [] => Err(WireError::Truncated),
        [other, ..] => Err(WireError::Format(*other)),
    }
}

/// A late hand-over: the client id (length first) and its session's records.
pub fn encode_late(client_id: &str, records: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(3 + client_id.len() + records.len());
    out.put_u8(FORMAT);
    out.put_u16(client_id.len() as u16);
    out.put_slice(client_id.as_bytes());
    out.put_slice(records);
    out.freeze()
}

pub fn decode_late(payload: &Bytes) -> Result<(String, Bytes), WireError> {
    match payload.as_ref() {
        [FORMAT, a, b, rest @ ..] => {
            let len = usize::from(u16::from_be_bytes([*a, *b]));
            let id = rest.get(..len).ok_or(WireError::Truncated)?;
            let client_id = String::from_utf8(id.to_vec()).map_err(|_| WireError::Topic)?;
            Ok((client_id, payload.slice(3 + len..)))
        }
        [FORMAT, ..] | [] => Err(WireError::Truncated),
        [other, ..] => Err(WireError::Format(*other)),
    }
}

/// The new owner's answer to a late hand-over: `true` when it took the messages in (or the
/// session is gone there), `false` when the client id is not its own.
pub fn encode_late_answer(taken: bool) -> Bytes {
    Bytes::from(vec![FORMAT, u8::from(taken)])
}

pub fn decode_late_answer(payload: &[u8]) -> Result<bool, WireError> {
    match payload {
        [FORMAT, taken] => Ok(*taken == 1),
        [FORMAT, ..] | [] => Err(WireError::Truncated),
        [other, ..] => Err(WireError::Format(*other)),
    }
}

fn format_and_u64(payload: &[u8]) -> Result<(u64, &[u8]), WireError> {
    match payload.split_first() {
        Some((&FORMAT, rest)) if rest.len() >= 8 => {
            let (n, rest) = rest.split_at(8);
            let mut a = [0; 8];
            a.copy_from_slice(n);
            Ok((u64::from_be_bytes(a), rest))
        }
        Some((&FORMAT, _)) | None => Err(WireError::Truncated),
        Some((&other, _)) => Err(WireError::Format(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_requests_and_answers_read_back() {
        for profile in [
            Profile::None,
            Profile::TooLarge,
            Profile::Records(Bytes::from_static(b"rec\0ords")),
        ] {
            let entry = Entry {
                node: "node-b".into(),
                boot: 7,
                profile,
            };
            assert_eq!(decode_entry(&encode_entry(&entry)), Ok(entry));
        }
        // An entry from before profiles: the node is the rest.
        let old = Bytes::from_static(&[FORMAT, 0, 0, 0, 0, 0, 0, 0, 3, b'n', b'1']);
        let entry = decode_entry(&old).expect("an old entry reads");
        assert_eq!((&*entry.node, entry.profile), ("n1", Profile::None));
        let late = encode_late("dev/1", b"records");
        assert_eq!(
            decode_late(&late),
            Ok(("dev/1".into(), Bytes::from_static(b"records")))
        );
        assert_eq!(decode_late(&late.slice(..5)), Err(WireError::Truncated));
        assert_eq!(decode_late_answer(&encode_late_answer(true)), Ok(true));
        assert_eq!(decode_late_answer(&encode_late_answer(false)), Ok(false));
        assert_eq!(
            decode_handoff(&encode_handoff(12, "dev/1 x")),
            Ok((12, "dev/1 x".into()))
        );
        for answer in [
            HandedOff::Stale,
            HandedOff::Released(None),
            HandedOff::Released(Some(Bytes::from_static(b"records"))),
        ] {
            assert_eq!(decode_handed_off(&encode_handed_off(&answer)), Ok(answer));
        }
        assert_eq!(
            decode_handed_off(&Bytes::from_static(&[9, 0])),
            Err(WireError::Format(9))
        );
        assert_eq!(
            decode_entry(&Bytes::from_static(&[FORMAT, 0, 0])),
            Err(WireError::Truncated)
        );
    }

    #[test]
    fn a_client_id_is_one_subject_token() {
        let names = Names::new("amqtt");
        let subject = names.session("a.b *>");
        assert_eq!(subject, "amqtt.sess.612e62202a3e");
        assert_ne!(names.session("ab"), names.session("a"));
    }
}
