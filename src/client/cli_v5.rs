//! The MQTT 5 options `amqtt_pub` and `amqtt_sub` share, spelled as mosquitto's clients spell
//! them: `-V`/`--protocol-version` (`31`, `311`, `5`, `mqttv31`, `mqttv311`, `mqttv5`) and
//! `-D`/`--property COMMAND IDENTIFIER VALUE` (`-D COMMAND user-property NAME VALUE`), where
//! COMMAND is `connect`, `publish`, `disconnect` or `will` and IDENTIFIER a property's name as the
//! specification writes it with `-` between words. Parsing only: what each property means is the
//! client's business ([`super::state`]).

use bytes::Bytes;

use crate::protocol::v5::{Kind, Properties};
use crate::protocol::{ProtocolLevel, QoS};

/// `-V`'s value: mosquitto's spellings of the three protocol versions.
pub fn parse_protocol_version(text: &str) -> Result<ProtocolLevel, String> {
    match text.to_ascii_lowercase().as_str() {
        "31" | "mqttv31" => Ok(ProtocolLevel::V31),
        "311" | "mqttv311" => Ok(ProtocolLevel::V311),
        "5" | "mqttv5" => Ok(ProtocolLevel::V5),
        _ => Err(format!(
            "'{text}' is not a protocol version: use 31, 311, 5, mqttv31, mqttv311 or mqttv5"
        )),
    }
}

/// The properties `-D` gave, one set per packet they go in.
#[derive(Debug, Clone, Default)]
pub struct CliProperties {
    /// `-D connect ...`
    pub connect: Properties,
    /// `-D publish ...`
    pub publish: Properties,
    /// `-D disconnect ...`
    pub disconnect: Properties,
    /// `-D will ...`
    pub will: Properties,
}

impl CliProperties {
    /// No `-D` was given.
    pub fn is_empty(&self) -> bool {
        self.connect.is_empty()
            && self.publish.is_empty()
            && self.disconnect.is_empty()
            && self.will.is_empty()
    }
}

/// The words of every `-D` in order (clap hands them over as one list) into properties, each
/// checked against the packet it goes in: COMMAND IDENTIFIER VALUE, or COMMAND user-property
/// NAME VALUE.
pub fn parse_properties(words: &[String]) -> Result<CliProperties, String> {
    let mut parsed = CliProperties::default();
    let mut words = words;
    while !words.is_empty() {
        let [command, identifier, tail @ ..] = words else {
            return Err("-D needs COMMAND IDENTIFIER VALUE".into());
        };
        let values = if identifier == "user-property" { 2 } else { 1 };
        if tail.len() < values {
            return Err(format!(
                "-D {command} {identifier}: needs {values} value(s)"
            ));
        }
        let (rest, next) = tail.split_at(values);
        words = next;
        let (properties, kind) = match command.to_ascii_lowercase().as_str() {
            "connect" => (&mut parsed.connect, Kind::Connect),
            "publish" => (&mut parsed.publish, Kind::Publish),
            "disconnect" => (&mut parsed.disconnect, Kind::Disconnect),
            "will" => (&mut parsed.will, Kind::Will),
            other => {
                return Err(format!(
                    "-D {other}: the command must be connect, publish, disconnect or will"
                ))
            }
        };
        let context = format!("-D {command} {identifier}");
        set_property(properties, identifier, rest).map_err(|e| format!("{context}: {e}"))?;
        properties
            .body_len(kind)
            .map_err(|_| format!("{context}: not a property of {}", kind.name()))?;
    }
    Ok(parsed)
}

/// Sets property `identifier` from its value words (two for user-property, else one).
fn set_property(p: &mut Properties, identifier: &str, values: &[String]) -> Result<(), String> {
    if identifier == "user-property" {
        return match values {
            [name, value] => {
                p.user_properties.push((name.clone(), value.clone()));
                Ok(())
            }
            _ => Err("needs a NAME and a VALUE".into()),
        };
    }
    let [value] = values else {
        return Err("needs exactly one VALUE".into());
    };
    let text = || Some(value.clone());
    let binary = || Some(Bytes::from(value.clone().into_bytes()));
    match identifier {
        "payload-format-indicator" => p.payload_format_utf8 = Some(flag(value)?),
        "message-expiry-interval" => p.message_expiry_interval = Some(number(value)?),
        "content-type" => p.content_type = text(),
        "response-topic" => p.response_topic = text(),
        "correlation-data" => p.correlation_data = binary(),
        "session-expiry-interval" => p.session_expiry_interval = Some(number(value)?),
        "authentication-method" => p.authentication_method = text(),
        "authentication-data" => p.authentication_data = binary(),
        "request-problem-information" => p.request_problem_information = Some(flag(value)?),
        "request-response-information" => p.request_response_information = Some(flag(value)?),
        "will-delay-interval" => p.will_delay_interval = Some(number(value)?),
        "reason-string" => p.reason_string = text(),
        "receive-maximum" => p.receive_maximum = Some(nonzero(number(value)?)?),
        "topic-alias-maximum" => p.topic_alias_maximum = Some(number(value)?),
        "maximum-packet-size" => p.maximum_packet_size = Some(nonzero(number(value)?)?),
        "topic-alias" => {
            return Err("this client sets topic aliases itself (see --topic-alias)".into())
        }
        "subscription-identifier"
        | "assigned-client-identifier"
        | "server-keep-alive"
        | "response-information"
        | "server-reference"
        | "maximum-qos"
        | "retain-available"
        | "wildcard-subscription-available"
        | "subscription-identifier-available"
        | "shared-subscription-available" => {
            return Err("only a server (or a subscription) sends this property".into())
        }
        _ => return Err("unknown property".into()),
    }
    Ok(())
}

fn number<T: std::str::FromStr>(value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("'{value}' is not a number in range"))
}

fn nonzero<T: Default + PartialEq>(value: T) -> Result<T, String> {
    if value == T::default() {
        Err("0 is not allowed".into())
    } else {
        Ok(value)
    }
}

fn flag(value: &str) -> Result<bool, String> {
    match value {
        "0" => Ok(false),
        "1" => Ok(true),
        _ => Err(format!("'{value}' must be 0 or 1")),
    }
}

/// One received message by a mosquitto_sub `-F` format: `%t` topic, `%p` payload, `%q` QoS,
/// `%r` retain flag (0/1), `%l` payload length, `%x`/`%X` payload in hex, and the MQTT 5 properties
/// when present: `%P` user properties (`key:value`, space-separated), `%C` content type, `%D`
/// correlation data, `%E` message expiry interval, `%F` payload format indicator, `%R` response
/// topic, `%S` subscription identifiers; `%%` a percent sign; `\n`, `\t`, `\\` escapes.
pub fn format_message(
    format: &str,
    topic: &str,
    payload: &[u8],
    qos: QoS,
    retain: bool,
    properties: Option<&Properties>,
) -> Vec<u8> {
    let default = Properties::default();
    let p = properties.unwrap_or(&default);
    let mut out = Vec::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        match c {
            '%' => match chars.next() {
                Some('t') => out.extend_from_slice(topic.as_bytes()),
                Some('p') => out.extend_from_slice(payload),
                Some('q') => out.extend_from_slice((qos as u8).to_string().as_bytes()),
                Some('r') => out.push(if retain { b'1' } else { b'0' }),
                Some('l') => out.extend_from_slice(payload.len().to_string().as_bytes()),
                Some('x') => payload
                    .iter()
                    .for_each(|b| out.extend_from_slice(format!("{b:02x}").as_bytes())),
                Some('X') => payload
                    .iter()
                    .for_each(|b| out.extend_from_slice(format!("{b:02X}").as_bytes())),
                Some('P') => {
                    let pairs: Vec<String> = p
                        .user_properties
                        .iter()
                        .map(|(k, v)| format!("{k}:{v}"))
                        .collect();
                    out.extend_from_slice(pairs.join(" ").as_bytes());
                }
                Some('C') => {
                    out.extend_from_slice(p.content_type.as_deref().unwrap_or("").as_bytes())
                }
                Some('D') => out.extend_from_slice(p.correlation_data.as_deref().unwrap_or(b"")),
                Some('E') => {
                    if let Some(e) = p.message_expiry_interval {
                        out.extend_from_slice(e.to_string().as_bytes());
                    }
                }
                Some('F') => {
                    if let Some(utf8) = p.payload_format_utf8 {
                        out.push(if utf8 { b'1' } else { b'0' });
                    }
                }
                Some('R') => {
                    out.extend_from_slice(p.response_topic.as_deref().unwrap_or("").as_bytes())
                }
                Some('S') => {
                    let ids: Vec<String> = p
                        .subscription_identifiers
                        .iter()
                        .map(u32::to_string)
                        .collect();
                    out.extend_from_slice(ids.join(" ").as_bytes());
                }
                Some('%') => out.push(b'%'),
                Some(other) => {
                    out.push(b'%');
                    out.extend_from_slice(other.to_string().as_bytes());
                }
                None => out.push(b'%'),
            },
            '\\' => match chars.next() {
                Some('n') => out.push(b'\n'),
                Some('t') => out.push(b'\t'),
                Some('\\') => out.push(b'\\'),
                Some(other) => {
                    out.push(b'\\');
                    out.extend_from_slice(other.to_string().as_bytes());
                }
                None => out.push(b'\\'),
            },
            c => out.extend_from_slice(c.to_string().as_bytes()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split(' ').map(String::from).collect()
    }

    fn parse_properties(occurrences: &[Vec<String>]) -> Result<CliProperties, String> {
        super::parse_properties(&occurrences.concat())
    }

    #[test]
    fn protocol_versions_as_mosquitto_spells_them() {
        for (text, level) in [
            ("31", ProtocolLevel::V31),
            ("mqttv31", ProtocolLevel::V31),
            ("311", ProtocolLevel::V311),
            ("MQTTv311", ProtocolLevel::V311),
            ("5", ProtocolLevel::V5),
            ("mqttv5", ProtocolLevel::V5),
        ] {
            assert_eq!(parse_protocol_version(text), Ok(level), "{text}");
        }
        assert!(parse_protocol_version("4").unwrap_err().contains("mqttv5"));
    }

    #[test]
    fn properties_go_to_their_packet() {
        let parsed = parse_properties(&[
            words("connect session-expiry-interval 60"),
            words("publish user-property k v"),
            words("publish user-property k w"),
            words("PUBLISH message-expiry-interval 30"),
            words("publish content-type text/plain"),
            words("publish correlation-data abc"),
            words("disconnect session-expiry-interval 0"),
            words("will will-delay-interval 5"),
        ])
        .unwrap();
        assert_eq!(parsed.connect.session_expiry_interval, Some(60));
        assert_eq!(
            parsed.publish.user_properties,
            vec![("k".into(), "v".into()), ("k".into(), "w".into())]
        );
        assert_eq!(parsed.publish.message_expiry_interval, Some(30));
        assert_eq!(parsed.publish.content_type.as_deref(), Some("text/plain"));
        assert_eq!(
            parsed.publish.correlation_data.as_deref(),
            Some(&b"abc"[..])
        );
        assert_eq!(parsed.disconnect.session_expiry_interval, Some(0));
        assert_eq!(parsed.will.will_delay_interval, Some(5));
    }

    #[test]
    fn bad_properties_say_which_and_why() {
        let cases = [
            (
                "publish session-expiry-interval 5",
                "not a property of PUBLISH",
            ),
            ("connect receive-maximum 0", "0 is not allowed"),
            ("connect receive-maximum 70000", "not a number"),
            ("publish user-property k", "needs 2 value(s)"),
            ("publish no-such-thing 1", "unknown property"),
            ("subscribe user-property k v", "must be connect"),
            ("publish topic-alias 1", "topic aliases itself"),
            ("publish payload-format-indicator 2", "must be 0 or 1"),
        ];
        for (given, expected) in cases {
            let err = parse_properties(&[words(given)]).unwrap_err();
            assert!(err.contains(expected), "{given}: {err}");
        }
    }

    #[test]
    fn format_prints_properties_when_present() {
        let p = Properties {
            user_properties: vec![("a".into(), "1".into()), ("b".into(), "2".into())],
            content_type: Some("text/plain".into()),
            message_expiry_interval: Some(30),
            ..Properties::default()
        };
        let line = format_message(
            "%t %p %q%r %P|%C|%E|%R%%\\n",
            "x/y",
            b"hi",
            QoS::AtLeastOnce,
            true,
            Some(&p),
        );
        assert_eq!(
            String::from_utf8(line).unwrap(),
            "x/y hi 11 a:1 b:2|text/plain|30|%\n"
        );
        let bare = format_message("%P|%E|%x", "t", b"\x01\xab", QoS::AtMostOnce, false, None);
        assert_eq!(String::from_utf8(bare).unwrap(), "||01ab");
    }
}
