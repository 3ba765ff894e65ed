//! How keys may be spelled: aMQTT reads `-` and `_` in its keys alike (`max-connections` and
//! `max_connections`, `topic-check` and `topic_check`), and so do we, for its keys and ours. This
//! file rewrites, before serde sees the text, every configuration key to its `_` form, in place:
//! the same number of bytes, so every line and column serde reports stays the user's. It also
//! finds duplicate keys (the same key twice, or spelled both ways), pointing at the duplicate's
//! own line, and remembers how each key was written, so that errors name keys as the file does.
//!
//! Only configuration keys are rewritten, never names the user chose: listener names, the user
//! names of ACL tables and plugin class names keep their spelling (`NAME_MAPS` says where those
//! are). What must not live here: the schema itself (`raw.rs`), defaults and checks (`build.rs`).

use std::collections::HashMap;

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use super::ConfigError;

/// Keys whose mapping holds names chosen by the user (listener names, user names, plugin class
/// names, and the client's topic names), in their `_` form: the keys inside such a mapping are
/// kept as written. The same holds for the mappings listed under them (`plugins: [{class:
/// settings}]`, `acl: [{user: [..]}]`).
const NAME_MAPS: [&str; 8] = [
    "listeners",
    "bridges",
    "topics",
    "plugins",
    "acl",
    "publish_acl",
    "subscribe_acl",
    "receive_acl",
];

/// `text` with its configuration keys in `_` form, for a file that keeps no other record (the
/// client's); a duplicate key is an error as [`respell`] says.
pub(crate) fn respell_keys(text: &str, origin: &str) -> Result<String, ConfigError> {
    respell(text, origin).map(|spelled| spelled.text)
}

/// The configuration text with its keys in `_` form, and how the file spelled them.
#[derive(Debug, Default)]
pub(super) struct Spelled {
    /// The text to deserialize: the user's, with `-` in configuration keys made `_`.
    pub(super) text: String,
    /// Key path in `_` form (`listeners.my-tcp.max_connections`) → the path and the last key as
    /// the file writes them (`listeners.my-tcp.max-connections`, `max-connections`).
    written: HashMap<String, (String, String)>,
}

/// What a mapping's keys are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Configuration keys: spelled either way, compared in `_` form.
    Keys,
    /// Names chosen by the user: kept and compared as written.
    Names,
}

/// Where the walk is: one frame per open mapping or sequence.
enum Frame {
    Map {
        kind: Kind,
        /// The mapping's own path, in `_` form and as written.
        path: (String, String),
        /// The key whose value comes next (`_` form, as written); `None` when a key comes next.
        key: Option<(String, String)>,
        /// Keys met so far (`_` form) → as written, and the line.
        seen: HashMap<String, (String, usize)>,
    },
    Seq {
        /// What mappings listed here are.
        items: Kind,
        path: (String, String),
        index: usize,
    },
    /// A mapping or sequence used as a key (valid YAML, never a configuration key): skipped, its
    /// value walked as any other.
    Skip { depth: usize },
}

/// Rewrites the keys of `text` to their `_` form; a duplicate key is an error naming both lines.
/// Text the YAML scanner refuses is returned unchanged, for serde_yaml to report.
pub(super) fn respell(text: &str, origin: &str) -> Result<Spelled, ConfigError> {
    let mut walk = Walk {
        source: text,
        bytes: text.as_bytes().to_vec(),
        written: HashMap::new(),
        stack: Vec::new(),
        origin,
    };
    let mut parser = Parser::new_from_str(text);
    loop {
        let Ok((event, mark)) = parser.next_token() else {
            return Ok(Spelled {
                text: text.to_string(),
                written: HashMap::new(),
            });
        };
        match event {
            Event::StreamEnd | Event::DocumentEnd => break,
            event => walk.event(event, mark)?,
        }
    }
    match String::from_utf8(walk.bytes) {
        Ok(text) => Ok(Spelled {
            text,
            written: walk.written,
        }),
        // Only ASCII '-' became '_', so this cannot happen; keep the text as it was if it did.
        Err(_) => Ok(Spelled {
            text: text.to_string(),
            written: HashMap::new(),
        }),
    }
}

struct Walk<'a> {
    source: &'a str,
    bytes: Vec<u8>,
    written: HashMap<String, (String, String)>,
    stack: Vec<Frame>,
    origin: &'a str,
}

impl Walk<'_> {
    fn event(&mut self, event: Event, mark: Marker) -> Result<(), ConfigError> {
        if let Some(Frame::Skip { depth }) = self.stack.last_mut() {
            match event {
                Event::MappingStart(..) | Event::SequenceStart(..) => *depth += 1,
                Event::MappingEnd | Event::SequenceEnd => *depth -= 1,
                _ => {}
            }
            if matches!(self.stack.last(), Some(Frame::Skip { depth: 0 })) {
                // The key is complete: its mapping waits for the value.
                self.stack.pop();
                self.set_key(("?".into(), "?".into()));
            }
            return Ok(());
        }
        let wants_key = matches!(self.stack.last(), Some(Frame::Map { key: None, .. }));
        match event {
            Event::Scalar(text, style, ..) if wants_key => self.key(text, style, mark)?,
            Event::Alias(_) if wants_key => self.set_key(("*".into(), "*".into())),
            Event::MappingStart(..) | Event::SequenceStart(..) if wants_key => {
                self.stack.push(Frame::Skip { depth: 1 })
            }
            Event::Scalar(..) | Event::Alias(_) => self.value_done(),
            Event::MappingStart(..) => {
                let (kind, path) = self.child();
                self.stack.push(Frame::Map {
                    kind,
                    path,
                    key: None,
                    seen: HashMap::new(),
                });
            }
            Event::SequenceStart(..) => {
                let (_, path) = self.child();
                let items = match self.stack.last() {
                    Some(Frame::Map {
                        key: Some((key, _)),
                        kind: Kind::Keys,
                        ..
                    }) if NAME_MAPS.contains(&key.as_str()) => Kind::Names,
                    _ => Kind::Keys,
                };
                self.stack.push(Frame::Seq {
                    items,
                    path,
                    index: 0,
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
                self.value_done();
            }
            _ => {}
        }
        Ok(())
    }

    /// The kind and path of the mapping or sequence that starts now.
    fn child(&self) -> (Kind, (String, String)) {
        match self.stack.last() {
            None => (Kind::Keys, (String::new(), String::new())),
            Some(Frame::Map {
                kind,
                path,
                key: Some((key, written)),
                ..
            }) => {
                let child = if *kind == Kind::Keys && NAME_MAPS.contains(&key.as_str()) {
                    Kind::Names
                } else {
                    Kind::Keys
                };
                (child, (join(&path.0, key), join(&path.1, written)))
            }
            Some(Frame::Seq { items, path, index }) => (
                *items,
                (
                    format!("{}[{index}]", path.0),
                    format!("{}[{index}]", path.1),
                ),
            ),
            // A value always follows its key, and skipped nodes never get here.
            Some(Frame::Map { key: None, .. }) | Some(Frame::Skip { .. }) => {
                (Kind::Keys, (String::new(), String::new()))
            }
        }
    }

    /// A key of the innermost mapping: respelled, checked against the keys before it, recorded.
    fn key(&mut self, text: String, style: TScalarStyle, mark: Marker) -> Result<(), ConfigError> {
        let Some(Frame::Map {
            kind, path, seen, ..
        }) = self.stack.last_mut()
        else {
            return Ok(());
        };
        if text == "<<" {
            // A merge key: the merged mapping's keys are checked where they are written.
            self.set_key((text.clone(), text));
            return Ok(());
        }
        let normal = match kind {
            Kind::Keys => text.replace('-', "_"),
            Kind::Names => text.clone(),
        };
        let written_path = join(&path.1, &text);
        if let Some((first, line)) = seen.get(&normal) {
            let reason = if *first == text {
                format!(
                    "duplicate key (line {}, column {}); it is first set at line {line}",
                    mark.line(),
                    mark.col() + 1
                )
            } else {
                format!(
                    "'{text}' (line {}, column {}) and '{first}' (line {line}) are the same key \
                     spelled two ways ('-' and '_' are alike); keep one",
                    mark.line(),
                    mark.col() + 1
                )
            };
            return Err(ConfigError::Invalid {
                file: self.origin.to_string(),
                key: written_path,
                reason,
            });
        }
        seen.insert(normal.clone(), (text.clone(), mark.line()));
        self.written
            .insert(join(&path.0, &normal), (written_path, text.clone()));
        if *kind == Kind::Keys && normal != text {
            self.rewrite(&text, style, mark);
        }
        self.set_key((normal, text));
        Ok(())
    }

    /// Writes the `_` form of the key `text` over the one at `mark`, when the text there is the
    /// key as parsed (plain or simply quoted); an escaped key is left for serde to refuse.
    fn rewrite(&mut self, text: &str, style: TScalarStyle, mark: Marker) {
        let skip = match style {
            TScalarStyle::Plain => 0,
            TScalarStyle::SingleQuoted | TScalarStyle::DoubleQuoted => 1,
            TScalarStyle::Literal | TScalarStyle::Folded => return,
        };
        // The scanner counts characters (its docs say bytes): take the offset that holds the key,
        // as characters first.
        let as_chars = self
            .source
            .char_indices()
            .nth(mark.index() + skip)
            .map(|(byte, _)| byte);
        let key = text.as_bytes();
        let start = [as_chars, Some(mark.index() + skip)]
            .into_iter()
            .flatten()
            .find(|&start| self.bytes.get(start..start + key.len()) == Some(key));
        if let Some(start) = start {
            for byte in &mut self.bytes[start..start + key.len()] {
                if *byte == b'-' {
                    *byte = b'_';
                }
            }
        }
    }

    fn set_key(&mut self, key: (String, String)) {
        if let Some(Frame::Map { key: slot, .. }) = self.stack.last_mut() {
            *slot = Some(key);
        }
    }

    /// The innermost mapping or sequence has its value: the mapping waits for a key again, the
    /// sequence for its next item.
    fn value_done(&mut self) {
        match self.stack.last_mut() {
            Some(Frame::Map { key, .. }) => *key = None,
            Some(Frame::Seq { index, .. }) => *index += 1,
            _ => {}
        }
    }
}

/// `parent.key`, or `key` at the top (the form of serde_path_to_error's paths).
fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// `a` and `b` are equal when `-` and `_` are taken as the same character.
fn loosely_equal(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .all(|(x, y)| x == y || (matches!(x, b'-' | b'_') && matches!(y, b'-' | b'_')))
}

impl Spelled {
    /// `key` (a path in `_` form, or as our messages spell it) as the file writes it: the longest
    /// leading part of the path that the file contains is replaced by the file's spelling.
    pub(super) fn as_written(&self, key: &str) -> String {
        let mut best: Option<(usize, bool, &str)> = None;
        for (normal, (written, _)) in &self.written {
            let n = normal.len();
            let Some(head) = key.get(..n) else { continue };
            let boundary = matches!(key.as_bytes().get(n), None | Some(b'.') | Some(b'['));
            if !boundary || !loosely_equal(head, normal) {
                continue;
            }
            let exact = head == normal;
            let better = match best {
                None => true,
                Some((len, was_exact, _)) => n > len || (n == len && exact && !was_exact),
            };
            if better {
                best = Some((n, exact, written));
            }
        }
        match best {
            Some((n, _, written)) => format!("{written}{}", &key[n..]),
            None => key.to_string(),
        }
    }

    /// The key `name` under `parent` (both in `_` form) as the file writes it, if it does.
    pub(super) fn key_as_written(&self, parent: &str, name: &str) -> Option<&str> {
        let path = if parent == "." {
            name.to_string()
        } else {
            join(parent, name)
        };
        self.written.get(&path).map(|(_, key)| key.as_str())
    }

    /// `err` with its key as the file spells it (and, for an unknown key, the key's own spelling).
    pub(super) fn respell_error(&self, err: ConfigError) -> ConfigError {
        match err {
            ConfigError::Invalid { file, key, reason } => {
                let reason = self.respell_unknown(&key, reason);
                ConfigError::Invalid {
                    file,
                    key: self.as_written(&key),
                    reason,
                }
            }
            ConfigError::Unsupported { file, key, reason } => ConfigError::Unsupported {
                file,
                key: self.as_written(&key),
                reason,
            },
            ConfigError::Syntax { file, reason } => ConfigError::Syntax {
                file,
                reason: self.respell_unknown(".", reason),
            },
            other => other,
        }
    }

    /// "unknown key `max_conections`" as "unknown key `max-conections`" when so written; `key`
    /// is the unknown key's path (or its mapping's, at the top level: `.`).
    fn respell_unknown(&self, key: &str, reason: String) -> String {
        let Some(rest) = reason.strip_prefix("unknown key `") else {
            return reason;
        };
        let Some((name, tail)) = rest.split_once('`') else {
            return reason;
        };
        let own = self
            .written
            .get(key)
            .filter(|(_, written)| written.replace('-', "_") == name);
        let written = own
            .map(|(_, w)| w.as_str())
            .or_else(|| self.key_as_written(key, name));
        match written {
            Some(written) if written != name => format!("unknown key `{written}`{tail}"),
            _ => reason,
        }
    }
}
