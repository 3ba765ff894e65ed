//! How one log line looks: the three styles (`text`, `journal`, `json`), which one `auto` means
//! where the line goes, and whether standard error is the systemd journal.
//!
//! Pure formatting into a byte buffer: no lock, no file, no global state (that is `mod.rs`).

use std::fmt;
use std::io::Write;

use log::Level;
use serde::ser::{Serialize, SerializeStruct, Serializer};

use crate::config::LogFormat;

/// A [`LogFormat`] with `auto` decided: how lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// `[2026-01-31T12:00:00.123Z INFO  amqtt::server] message`.
    Text,
    /// `<6>[INFO  amqtt::server] message`: sd-daemon's priority prefix, no timestamp.
    Journal,
    /// `{"timestamp":"2026-01-31T12:00:00.123Z","level":"INFO","target":"…","message":"…"}`.
    Json,
}

impl Style {
    /// What `format` means for lines written to standard error (`to_file: false`) or to a file:
    /// `auto` is `journal` on standard error when `stderr_is_journal`, else `text`; a file is
    /// never the journal, so `auto` writes timestamps there.
    pub fn resolve(format: LogFormat, to_file: bool, stderr_is_journal: bool) -> Style {
        match format {
            LogFormat::Auto if !to_file && stderr_is_journal => Style::Journal,
            LogFormat::Auto | LogFormat::Text => Style::Text,
            LogFormat::Journal => Style::Journal,
            LogFormat::Json => Style::Json,
        }
    }
}

/// Whether standard error is the systemd journal. systemd sets `JOURNAL_STREAM=DEVICE:INODE` for
/// a service whose stdout or stderr it connects to the journal; as systemd.exec(5) advises, the
/// pair is compared with standard error's own, so that a program that inherited the variable but
/// writes its stderr elsewhere (a shell started from a service, `2>file`) keeps timestamps.
pub fn stderr_is_journal() -> bool {
    let Ok(value) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    // SAFETY: fstat writes one `stat` into the zeroed value owned by this frame.
    let stderr = unsafe {
        let mut stat: libc::stat = std::mem::zeroed();
        (libc::fstat(libc::STDERR_FILENO, &mut stat) == 0).then_some((stat.st_dev, stat.st_ino))
    };
    stderr.is_some_and(|(dev, ino)| journal_stream_names(&value, dev, ino))
}

/// Whether a `JOURNAL_STREAM` value (`DEVICE:INODE`, decimal) names this device and inode.
fn journal_stream_names(value: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = value.split_once(':') else {
        return false;
    };
    d.parse() == Ok(dev) && i.parse() == Ok(ino)
}

/// The syslog priority journald files a line under (sd-daemon(3): `<3>` error … `<7>` debug).
pub fn priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// One log line's parts, whether it is being logged now or was kept from before the destination
/// was known.
pub struct Line<'a> {
    /// When it was logged.
    pub at: jiff::Timestamp,
    /// Its level.
    pub level: Level,
    /// Its target (the module path unless the call named another).
    pub target: &'a str,
    /// The message.
    pub message: &'a dyn fmt::Display,
}

impl Line<'_> {
    /// Appends the line in `style` to `out`, with its newline.
    pub fn write(&self, style: Style, out: &mut Vec<u8>) {
        // Writing into a Vec fails only when a Display impl does, which would leave a cut line:
        // the newline still ends it.
        let start = out.len();
        let _ = match style {
            Style::Text => write!(
                out,
                "[{} {:<5} {}] {}",
                Millis(self.at),
                self.level,
                self.target,
                self.message
            ),
            Style::Journal => write!(
                out,
                "<{}>[{:<5} {}] {}",
                priority(self.level),
                self.level,
                self.target,
                self.message
            ),
            Style::Json => serde_json::to_writer(&mut *out, self).map_err(std::io::Error::from),
        };
        if style == Style::Journal && out[start..].contains(&b'\n') {
            // journald files each line on its own: every line of the message gets the priority.
            let prefix = format!("\n<{}>", priority(self.level));
            let text = out.split_off(start);
            for (n, piece) in text.split(|&b| b == b'\n').enumerate() {
                if n > 0 {
                    out.extend_from_slice(prefix.as_bytes());
                }
                out.extend_from_slice(piece);
            }
        }
        out.push(b'\n');
    }
}

impl Serialize for Line<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut line = serializer.serialize_struct("Line", 4)?;
        line.serialize_field("timestamp", &Text(&Millis(self.at)))?;
        line.serialize_field("level", self.level.as_str())?;
        line.serialize_field("target", self.target)?;
        line.serialize_field("message", &Text(self.message))?;
        line.end()
    }
}

/// A timestamp in RFC 3339, UTC, to the millisecond: `2026-01-31T12:00:00.123Z`.
struct Millis(jiff::Timestamp);

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.3}", self.0)
    }
}

/// Serializes anything displayable as a JSON string (escaped by serde_json), without first
/// making a `String` of it.
struct Text<'a>(&'a dyn fmt::Display);

impl Serialize for Text<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> jiff::Timestamp {
        "2026-01-31T12:00:00.123456Z".parse().expect("a timestamp")
    }

    fn line(style: Style, level: Level, message: &str) -> String {
        let mut out = Vec::new();
        Line {
            at: at(),
            level,
            target: "amqtt::server",
            message: &message,
        }
        .write(style, &mut out);
        String::from_utf8(out).expect("UTF-8")
    }

    #[test]
    fn text_has_the_utc_time_to_the_millisecond_level_and_target() {
        assert_eq!(
            line(Style::Text, Level::Info, "listening"),
            "[2026-01-31T12:00:00.123Z INFO  amqtt::server] listening\n"
        );
    }

    #[test]
    fn journal_lines_carry_the_priority_on_every_line_and_no_timestamp() {
        assert_eq!(
            line(Style::Journal, Level::Info, "listening"),
            "<6>[INFO  amqtt::server] listening\n"
        );
        assert_eq!(
            line(Style::Journal, Level::Debug, "SUBSCRIBE\n    a/b (QoS 1)"),
            "<7>[DEBUG amqtt::server] SUBSCRIBE\n<7>    a/b (QoS 1)\n"
        );
        for (level, prefix) in [
            (Level::Error, "<3>"),
            (Level::Warn, "<4>"),
            (Level::Debug, "<7>"),
            (Level::Trace, "<7>"),
        ] {
            assert!(
                line(Style::Journal, level, "m").starts_with(prefix),
                "{level}"
            );
        }
    }

    #[test]
    fn json_is_one_escaped_object_per_line() {
        let message = "quote \" backslash \\ newline \n tab \t control \u{1} é";
        let text = line(Style::Json, Level::Warn, message);
        assert!(
            text.ends_with("}\n") && text.matches('\n').count() == 1,
            "{text}"
        );
        let value: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(value["timestamp"], "2026-01-31T12:00:00.123Z");
        assert_eq!(value["level"], "WARN");
        assert_eq!(value["target"], "amqtt::server");
        assert_eq!(value["message"], message);
        assert_eq!(value.as_object().map(|o| o.len()), Some(4));
    }

    #[test]
    fn auto_is_journal_only_on_a_journal_stderr() {
        use LogFormat::*;
        assert_eq!(Style::resolve(Auto, false, true), Style::Journal);
        assert_eq!(Style::resolve(Auto, false, false), Style::Text);
        assert_eq!(Style::resolve(Auto, true, true), Style::Text);
        assert_eq!(Style::resolve(Text, false, true), Style::Text);
        assert_eq!(Style::resolve(Journal, true, false), Style::Journal);
        assert_eq!(Style::resolve(Json, false, true), Style::Json);
    }

    #[test]
    fn journal_stream_must_name_stderr_itself() {
        assert!(journal_stream_names("8:12345", 8, 12345));
        assert!(!journal_stream_names("8:12346", 8, 12345));
        assert!(!journal_stream_names("9:12345", 8, 12345));
        assert!(!journal_stream_names("", 8, 12345));
        assert!(!journal_stream_names("8", 8, 12345));
        assert!(!journal_stream_names("x:y", 8, 12345));
    }
}
