//! The cluster's session directory, as bytes: which node owns a client id (one message per
//! client id in the `<name>_sessions` stream, subject `<name>.sess.<hex client id>`), and the
//! hand-off a new owner asks of the old one (`<name>.handoff.<node>`, request and reply).
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
}

/// A directory entry: the node that owns the client id, and that node's run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub node: String,
    pub boot: u64,
}

pub fn encode_entry(entry: &Entry) -> Bytes {
    let mut out = BytesMut::with_capacity(9 + entry.node.len());
    out.put_u8(FORMAT);
    out.put_u64(entry.boot);
    out.put_slice(entry.node.as_bytes());
    out.freeze()
}

pub fn decode_entry(payload: &[u8]) -> Result<Entry, WireError> {
    let (boot, rest) = format_and_u64(payload)?;
    let node = String::from_utf8(rest.to_vec()).map_err(|_| WireError::Topic)?;
    Ok(Entry { node, boot })
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
        let entry = Entry {
            node: "node-b".into(),
            boot: 7,
        };
        assert_eq!(decode_entry(&encode_entry(&entry)), Ok(entry));
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
        assert_eq!(decode_entry(&[FORMAT, 0, 0]), Err(WireError::Truncated));
    }

    #[test]
    fn a_client_id_is_one_subject_token() {
        let names = Names::new("amqtt");
        let subject = names.session("a.b *>");
        assert_eq!(subject, "amqtt.sess.612e62202a3e");
        assert_ne!(names.session("ab"), names.session("a"));
    }
}
