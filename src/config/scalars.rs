//! Typed YAML scalars shared by the parts of the configuration schema (`raw`, `raw::plugins`,
//! `persistence`, the client's configuration): seconds with units, and YAML 1.1 booleans. Values
//! only: no defaults, no ranges (that is `build.rs`).

use std::fmt;

use serde::de::{self, Deserializer, Unexpected, Visitor};
use serde::Deserialize;

/// A number of seconds, integer or fractional (checked for sign later), or a number with a unit:
/// `500ms`, `1s`, `10min`, `2h` (as the durability issue writes `fsync_interval: 1s`). The client's
/// configuration (`src/client/config.rs`) reads its durations with it too.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seconds(pub(crate) f64);

/// Seconds in `text`: a number and an optional unit (`ms`, `s`, `min`, `h`).
fn parse_seconds(text: &str) -> Result<f64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let not_a_duration =
        || format!("'{text}' is not a duration (for example 1, 1s, 500ms or 10min)");
    if number.is_empty() {
        return Err(not_a_duration());
    }
    let scale = match unit.trim() {
        "" | "s" | "sec" => 1.0,
        "ms" => 0.001,
        "min" | "m" => 60.0,
        "h" => 3600.0,
        other => {
            return Err(format!(
                "unknown time unit '{other}' in '{text}' (use ms, s, min or h)"
            ))
        }
    };
    let value: f64 = number.parse().map_err(|_| not_a_duration())?;
    Ok(value * scale)
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SecondsVisitor;
        impl Visitor<'_> for SecondsVisitor {
            type Value = Seconds;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of seconds, or a duration such as 1s, 500ms or 10min")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Seconds, E> {
                Ok(Seconds(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Seconds, E> {
                Ok(Seconds(v as f64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Seconds, E> {
                Ok(Seconds(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Seconds, E> {
                parse_seconds(v).map(Seconds).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(SecondsVisitor)
    }
}

/// A boolean as PyYAML (YAML 1.1, which aMQTT reads with) takes it: `true`/`false`, and also
/// `yes`/`no` and `on`/`off` in any case. serde_yaml follows YAML 1.2, where a bare `on` or `yes`
/// is a string; `ssl: on` is how aMQTT's own examples switch TLS on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Bool(pub(super) bool);

impl<'de> Deserialize<'de> for Bool {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BoolVisitor;
        impl Visitor<'_> for BoolVisitor {
            type Value = Bool;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a boolean (true/false, yes/no or on/off)")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Bool, E> {
                Ok(Bool(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Bool, E> {
                match v.to_ascii_lowercase().as_str() {
                    "on" | "true" | "yes" => Ok(Bool(true)),
                    "off" | "false" | "no" => Ok(Bool(false)),
                    _ => Err(E::invalid_value(Unexpected::Str(v), &self)),
                }
            }
        }
        deserializer.deserialize_any(BoolVisitor)
    }
}
