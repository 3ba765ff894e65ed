//! [`TopicName`] and [`TopicFilter`]: construction with validation [MQTT-4.7.1, 4.7.3] and
//! filter-to-name matching [MQTT-4.7.1-1/2/3, 4.7.2-1].
//!
//! Must not apply broker policy (ACLs, who may publish to `$SYS`); matching must not allocate.

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;

use super::{DecodeError, TopicFilter, TopicName};

/// Longest string a length-prefixed field can carry.
const MAX_LEN: usize = u16::MAX as usize;

/// Whether `b` is a topic name: UTF-8 without U+0000 [MQTT-1.5.3-1/2], not empty, no wildcards
/// [MQTT-4.7.3-1].
///
/// Every incoming PUBLISH comes through here, so the bytes are read once for everything a topic
/// name is checked for, and UTF-8 decoding runs only for names that are not ASCII: three passes
/// (UTF-8, then U+0000, then wildcards) were ~5 % of the broker's CPU in `pairs -n 8` QoS 0
/// (`perf record`). Invalid UTF-8 is reported first and U+0000 second, as
/// [`check_str`](super::strings::check_str) reports them for every other string.
pub(crate) fn check_name_bytes(b: &[u8]) -> Result<(), DecodeError> {
    let (mut non_ascii, mut null, mut wildcard) = (false, false, false);
    for &byte in b {
        non_ascii |= byte >= 0x80;
        null |= byte == 0;
        wildcard |= byte == b'+' || byte == b'#';
    }
    if non_ascii && std::str::from_utf8(b).is_err() {
        return Err(DecodeError::InvalidUtf8);
    }
    if null {
        return Err(DecodeError::NullCharacter);
    }
    if b.is_empty() {
        return Err(DecodeError::InvalidTopicName("empty"));
    }
    if b.len() > MAX_LEN {
        return Err(DecodeError::InvalidTopicName("longer than 65,535 bytes"));
    }
    if wildcard {
        return Err(DecodeError::InvalidTopicName(
            "contains a wildcard character",
        ));
    }
    Ok(())
}

impl TopicName {
    /// Keeps `b`, which [`check_name_bytes`] accepted.
    pub(crate) fn from_checked(b: Bytes) -> TopicName {
        TopicName(b)
    }

    /// Validates and copies `s`.
    pub fn new(s: &str) -> Result<TopicName, DecodeError> {
        check_name_bytes(s.as_bytes())?;
        Ok(TopicName(Bytes::copy_from_slice(s.as_bytes())))
    }

    /// Validates `b` (UTF-8 included) and keeps it without copying.
    pub fn from_bytes(b: Bytes) -> Result<TopicName, DecodeError> {
        check_name_bytes(&b)?;
        Ok(TopicName(b))
    }

    /// The topic name as text.
    pub fn as_str(&self) -> &str {
        // Validated on construction; re-checking is the price of holding `Bytes` without `unsafe`
        // (fast for short ASCII topics). The fallback is unreachable.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The topic name's UTF-8 bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// True for topics starting with `$` (e.g. `$SYS/...`), which a filter starting with a
    /// wildcard level does not match [MQTT-4.7.2-1].
    pub fn is_sys(&self) -> bool {
        self.0.first() == Some(&b'$')
    }

    /// The `/`-separated levels, empty levels included.
    pub fn levels(&self) -> std::str::Split<'_, char> {
        self.as_str().split('/')
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl FromStr for TopicName {
    type Err = DecodeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TopicName::new(s)
    }
}

impl TryFrom<&str> for TopicName {
    type Error = DecodeError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        TopicName::new(s)
    }
}

impl TopicFilter {
    /// Validates and copies `s`.
    pub fn new(s: &str) -> Result<TopicFilter, DecodeError> {
        if s.is_empty() {
            return Err(DecodeError::InvalidTopicFilter("empty"));
        }
        if s.len() > MAX_LEN {
            return Err(DecodeError::InvalidTopicFilter("longer than 65,535 bytes"));
        }
        if s.as_bytes().contains(&0) {
            return Err(DecodeError::NullCharacter);
        }
        let mut levels = s.split('/').peekable();
        while let Some(level) = levels.next() {
            if level.contains('#') && (level != "#" || levels.peek().is_some()) {
                return Err(DecodeError::InvalidTopicFilter(
                    "'#' must be alone in the last level",
                ));
            }
            if level.contains('+') && level != "+" {
                return Err(DecodeError::InvalidTopicFilter(
                    "'+' must be alone in its level",
                ));
            }
        }
        Ok(TopicFilter(s.to_owned()))
    }

    /// The filter as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `/`-separated levels, empty levels included.
    pub fn levels(&self) -> std::str::Split<'_, char> {
        self.0.split('/')
    }

    /// Whether `topic` matches this filter: `+` matches exactly one level (possibly empty), `#`
    /// matches the parent level and any number of child levels, and a topic starting with `$`
    /// is not matched by a filter whose first level is a wildcard [MQTT-4.7.2-1].
    pub fn matches(&self, topic: &TopicName) -> bool {
        let filter = self.0.as_bytes();
        if topic.is_sys() && matches!(filter.first(), Some(b'+' | b'#')) {
            return false;
        }
        let mut filter_levels = filter.split(|&b| b == b'/');
        let mut topic_levels = topic.as_bytes().split(|&b| b == b'/');
        loop {
            match (filter_levels.next(), topic_levels.next()) {
                (Some(b"#"), _) => return true,
                (None, None) => return true,
                (Some(b"+"), Some(_)) => {}
                (Some(f), Some(t)) if f == t => {}
                _ => return false,
            }
        }
    }
}

impl fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl FromStr for TopicFilter {
    type Err = DecodeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TopicFilter::new(s)
    }
}

impl TryFrom<&str> for TopicFilter {
    type Error = DecodeError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        TopicFilter::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> TopicName {
        TopicName::new(s).unwrap()
    }

    fn matches(filter: &str, topic: &str) -> bool {
        TopicFilter::new(filter).unwrap().matches(&name(topic))
    }

    /// Each rule, and the order in which they are reported when a name breaks several: UTF-8
    /// first and U+0000 second (as for every string), then empty, too long, wildcards.
    #[test]
    fn name_check_reports_each_rule_in_order() {
        use DecodeError::{InvalidTopicName, InvalidUtf8, NullCharacter};
        let long = vec![b'a'; MAX_LEN + 1];
        let cases: Vec<(&[u8], Result<(), DecodeError>)> = vec![
            (b"a/b/c", Ok(())),
            (b"/", Ok(())),
            ("caf\u{e9}/\u{1f600}".as_bytes(), Ok(())),
            (b"", Err(InvalidTopicName("empty"))),
            (&long, Err(InvalidTopicName("longer than 65,535 bytes"))),
            (
                b"sport/+",
                Err(InvalidTopicName("contains a wildcard character")),
            ),
            (b"#", Err(InvalidTopicName("contains a wildcard character"))),
            (b"a\0b", Err(NullCharacter)),
            (b"a+\0", Err(NullCharacter)),
            (b"\xff\xfe", Err(InvalidUtf8)),
            (b"\xc3", Err(InvalidUtf8)),
            (b"\xc3+", Err(InvalidUtf8)),
            (b"\xc3\0", Err(InvalidUtf8)),
            (b"ok\xe2\x82", Err(InvalidUtf8)),
        ];
        for (b, expected) in cases {
            assert_eq!(check_name_bytes(b), expected, "{b:?}");
        }
    }

    #[test]
    fn valid_names() {
        for s in [
            "a",
            "/",
            "//",
            "a/b/c",
            "/finance",
            "sport/",
            "$SYS/broker",
            "a b/é/世界",
            "$",
        ] {
            let t = name(s);
            assert_eq!(t.as_str(), s);
            assert_eq!(t.as_bytes(), s.as_bytes());
            assert_eq!(t.to_string(), s);
            assert_eq!(format!("{t:?}"), format!("{s:?}"));
            assert_eq!(s.parse::<TopicName>(), Ok(t.clone()));
            assert_eq!(TopicName::try_from(s), Ok(t.clone()));
            assert_eq!(
                TopicName::from_bytes(Bytes::copy_from_slice(s.as_bytes())),
                Ok(t)
            );
        }
        assert_eq!(name("a//b").levels().collect::<Vec<_>>(), ["a", "", "b"]);
    }

    #[test]
    fn invalid_names() {
        for s in ["+", "#", "a/+", "a/#", "a+b", "sport/tennis#"] {
            assert_eq!(
                TopicName::new(s),
                Err(DecodeError::InvalidTopicName(
                    "contains a wildcard character"
                ))
            );
        }
        assert_eq!(
            TopicName::new(""),
            Err(DecodeError::InvalidTopicName("empty"))
        );
        assert_eq!(TopicName::new("a\0b"), Err(DecodeError::NullCharacter));
        assert_eq!(
            TopicName::new(&"a".repeat(65_536)),
            Err(DecodeError::InvalidTopicName("longer than 65,535 bytes"))
        );
        assert!(TopicName::new(&"a".repeat(65_535)).is_ok());
        assert_eq!(
            TopicName::from_bytes(Bytes::from_static(&[b'a', 0xff])),
            Err(DecodeError::InvalidUtf8)
        );
        assert_eq!(
            TopicName::from_bytes(Bytes::from_static(b"a\0")),
            Err(DecodeError::NullCharacter)
        );
        assert_eq!(
            TopicName::from_bytes(Bytes::new()),
            Err(DecodeError::InvalidTopicName("empty"))
        );
    }

    #[test]
    fn from_bytes_does_not_copy() {
        let b = Bytes::from(b"x/y/z".to_vec());
        let t = TopicName::from_bytes(b.clone()).unwrap();
        assert_eq!(t.as_bytes().as_ptr(), b.as_ptr());
        assert_eq!(t.clone().as_bytes().as_ptr(), b.as_ptr());
    }

    #[test]
    fn is_sys() {
        assert!(name("$SYS/broker/uptime").is_sys());
        assert!(name("$foo").is_sys());
        assert!(!name("SYS/$").is_sys());
        assert!(!name("/$SYS").is_sys());
    }

    #[test]
    fn valid_filters() {
        for s in [
            "#",
            "+",
            "/",
            "+/+",
            "/+",
            "+/",
            "sport/#",
            "sport/+/player1",
            "sport/tennis/+",
            "+/tennis/#",
            "//",
            "$SYS/#",
            "a b/é",
            "/finance",
        ] {
            let f = TopicFilter::new(s).unwrap();
            assert_eq!(f.as_str(), s);
            assert_eq!(f.to_string(), s);
            assert_eq!(format!("{f:?}"), format!("{s:?}"));
            assert_eq!(s.parse::<TopicFilter>(), Ok(f.clone()));
            assert_eq!(TopicFilter::try_from(s), Ok(f));
        }
        let f = TopicFilter::new("a/+//#").unwrap();
        assert_eq!(f.levels().collect::<Vec<_>>(), ["a", "+", "", "#"]);
    }

    #[test]
    fn invalid_filters() {
        assert_eq!(
            TopicFilter::new(""),
            Err(DecodeError::InvalidTopicFilter("empty"))
        );
        for s in [
            "sport/tennis#",
            "sport/tennis/#/ranking",
            "#/",
            "##",
            "a/#b",
            "#/#",
        ] {
            assert_eq!(
                TopicFilter::new(s),
                Err(DecodeError::InvalidTopicFilter(
                    "'#' must be alone in the last level"
                )),
                "{s}"
            );
        }
        for s in ["sport+", "sport/+tennis", "++", "a/b+/c", "+a"] {
            assert_eq!(
                TopicFilter::new(s),
                Err(DecodeError::InvalidTopicFilter(
                    "'+' must be alone in its level"
                )),
                "{s}"
            );
        }
        assert_eq!(TopicFilter::new("a/\0"), Err(DecodeError::NullCharacter));
        assert!(TopicFilter::new(&"a".repeat(65_536)).is_err());
    }

    #[test]
    fn multi_level_wildcard_spec_examples() {
        // [MQTT-4.7.1.2]
        assert!(matches("sport/tennis/player1/#", "sport/tennis/player1"));
        assert!(matches(
            "sport/tennis/player1/#",
            "sport/tennis/player1/ranking"
        ));
        assert!(matches(
            "sport/tennis/player1/#",
            "sport/tennis/player1/score/wimbledon"
        ));
        assert!(!matches("sport/tennis/player1/#", "sport/tennis/player2"));
        assert!(!matches("sport/tennis/player1/#", "sport/tennis"));
        assert!(matches("sport/#", "sport"));
        assert!(matches("sport/#", "sport/"));
        assert!(matches("sport/#", "sport/tennis/player1"));
        assert!(!matches("sport/#", "sports"));
        assert!(!matches("sport/#", "/sport"));
    }

    #[test]
    fn hash_alone_matches_everything_but_dollar_topics() {
        for t in ["a", "/", "a/b/c", "/finance", "sport/", "//"] {
            assert!(matches("#", t), "{t}");
        }
        assert!(!matches("#", "$SYS"));
        assert!(!matches("#", "$SYS/broker/uptime"));
    }

    #[test]
    fn single_level_wildcard_spec_examples() {
        // [MQTT-4.7.1.3]
        assert!(matches("sport/tennis/+", "sport/tennis/player1"));
        assert!(matches("sport/tennis/+", "sport/tennis/player2"));
        assert!(!matches("sport/tennis/+", "sport/tennis/player1/ranking"));
        assert!(matches("sport/+", "sport/"));
        assert!(!matches("sport/+", "sport"));
        assert!(matches("+/+", "/finance"));
        assert!(matches("/+", "/finance"));
        assert!(!matches("+", "/finance"));
        assert!(matches("+", "finance"));
        assert!(matches("sport/+/player1", "sport/tennis/player1"));
        assert!(!matches("sport/+/player1", "sport/tennis/player2"));
        assert!(matches("+/tennis/#", "sport/tennis"));
        assert!(matches("+/tennis/#", "sport/tennis/player1/score"));
    }

    #[test]
    fn plus_matches_empty_levels() {
        assert!(!matches("+", "/"));
        assert!(matches("+/+", "/"));
        assert!(matches("a/+/b", "a//b"));
        assert!(matches("+//+", "//"));
        assert!(!matches("a/+/b", "a/b"));
        assert!(matches("+/", "x/"));
        assert!(!matches("+/", "x"));
    }

    #[test]
    fn dollar_topics() {
        // [MQTT-4.7.2-1]
        assert!(!matches("+/monitor/Clients", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/#", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/monitor/+", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/#", "$SYS"));
        assert!(!matches("+", "$SYS"));
        assert!(!matches("+/#", "$SYS/x"));
        // `$` further in is an ordinary character.
        assert!(matches("+/$SYS", "a/$SYS"));
        assert!(matches("a/#", "a/$b"));
    }

    #[test]
    fn literal_matching() {
        assert!(matches("a/b", "a/b"));
        assert!(matches("/finance", "/finance"));
        assert!(!matches("/finance", "finance"));
        assert!(!matches("a/b", "a/b/"));
        assert!(!matches("a/b/", "a/b"));
        assert!(!matches("a/b", "a"));
        assert!(!matches("a", "a/b"));
        assert!(!matches("A", "a"));
        assert!(matches("é/世界", "é/世界"));
    }
}
