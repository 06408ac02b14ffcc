//! Object key templates.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use kinesis_connectors_core::{Batch, Position};

use crate::error::Error;

/// The default key template.
pub const DEFAULT_KEY_TEMPLATE: &str =
    "{prefix}/{stream}/{yyyy}/{mm}/{dd}/{HH}/{shard}-{first_seq}-{last_seq}";

/// S3's limit on the length of a key, in bytes.
const MAX_KEY_BYTES: usize = 1024;

/// A value a placeholder stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Prefix,
    Application,
    Stream,
    Shard,
    FirstSeq,
    LastSeq,
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
}

impl Field {
    const ALL: &'static [(&'static str, Field)] = &[
        ("prefix", Field::Prefix),
        ("application", Field::Application),
        ("stream", Field::Stream),
        ("shard", Field::Shard),
        ("first_seq", Field::FirstSeq),
        ("last_seq", Field::LastSeq),
        ("yyyy", Field::Year),
        ("mm", Field::Month),
        ("dd", Field::Day),
        ("HH", Field::Hour),
        ("MI", Field::Minute),
        ("SS", Field::Second),
    ];

    fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, field)| *field)
    }

    fn known() -> String {
        Self::ALL
            .iter()
            .map(|(n, _)| format!("{{{n}}}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Field(Field),
}

/// A parsed key template; see [`S3EmitterBuilder::key_template`](crate::S3EmitterBuilder::key_template).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyTemplate {
    source: String,
    parts: Vec<Part>,
}

/// What a template is rendered from, besides the batch.
pub(crate) struct KeyValues<'a> {
    pub(crate) prefix: &'a str,
    pub(crate) application: &'a str,
    pub(crate) stream: &'a str,
    pub(crate) shard: &'a str,
    pub(crate) first: &'a Position,
    pub(crate) last: &'a Position,
    /// Seconds since the UNIX epoch of the batch's date.
    pub(crate) time: i64,
}

impl<'a> KeyValues<'a> {
    /// The values of `batch`, its date taken from `first_arrival` (the UNIX
    /// epoch when unknown).
    pub(crate) fn of<T>(prefix: &'a str, batch: &'a Batch<T>) -> Self {
        Self {
            prefix,
            application: &batch.context.application,
            stream: &batch.context.stream,
            shard: &batch.context.shard_id,
            first: &batch.first,
            last: &batch.last,
            time: batch.first_arrival.map_or(0, unix_seconds),
        }
    }
}

/// Whole seconds since the UNIX epoch (negative before it).
fn unix_seconds(at: SystemTime) -> i64 {
    match at.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => {
            // Round towards minus infinity so 0.5 s before the epoch is 1969.
            let d = before.duration();
            let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            -secs - i64::from(d.subsec_nanos() > 0)
        }
    }
}

/// Renders a position: the sequence number, and `_<sub>` for a record
/// de-aggregated from a KPL record, so batches of sub-records of one record
/// get distinct names.
fn write_position(out: &mut String, position: &Position) {
    out.push_str(position.sequence.as_str());
    if let Some(sub) = position.sub_sequence {
        let _ = write!(out, "_{sub}");
    }
}

impl KeyTemplate {
    /// Parses `template`: `{name}` placeholders, `{{` and `}}` for literal braces.
    ///
    /// The template must contain `{shard}` and `{first_seq}`, without which
    /// two batches could get the same key and one would overwrite the other.
    pub(crate) fn parse(template: &str) -> Result<Self, Error> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = template.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    let mut closed = false;
                    for c in chars.by_ref() {
                        if c == '}' {
                            closed = true;
                            break;
                        }
                        name.push(c);
                    }
                    if !closed {
                        return Err(Error::Config(format!(
                            "key template {template:?}: `{{{name}` is not closed"
                        )));
                    }
                    let field = Field::parse(&name).ok_or_else(|| {
                        Error::Config(format!(
                            "key template {template:?}: unknown placeholder {{{name}}}; known placeholders: {}",
                            Field::known()
                        ))
                    })?;
                    if !literal.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Field(field));
                }
                '}' => {
                    return Err(Error::Config(format!(
                        "key template {template:?}: unmatched `}}` (write `}}}}` for a literal brace)"
                    )));
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        let parsed = Self {
            source: template.to_owned(),
            parts,
        };
        for (required, name) in [(Field::Shard, "shard"), (Field::FirstSeq, "first_seq")] {
            if !parsed.parts.contains(&Part::Field(required)) {
                return Err(Error::Config(format!(
                    "key template {template:?} lacks {{{name}}}: without it two batches can get the same key and overwrite each other"
                )));
            }
        }
        Ok(parsed)
    }

    /// Whether a key names the batch's whole range (`{first_seq}` and
    /// `{last_seq}`): then two batches that differ in any record never share
    /// a key, even if a replay were cut elsewhere, so a file table that
    /// de-duplicates by key loads each record at most once.
    pub(crate) fn names_the_range(&self) -> bool {
        let has = |wanted: Field| {
            self.parts
                .iter()
                .any(|part| matches!(part, Part::Field(field) if *field == wanted))
        };
        has(Field::FirstSeq) && has(Field::LastSeq)
    }

    /// The template as written.
    pub(crate) fn source(&self) -> &str {
        &self.source
    }

    /// Renders the key; repeated `/` are collapsed and a leading `/` removed,
    /// so an empty `{prefix}` leaves no empty path segment.
    pub(crate) fn render(&self, values: &KeyValues<'_>, suffix: &str) -> String {
        let date = time::OffsetDateTime::from_unix_timestamp(values.time)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let mut raw = String::with_capacity(160);
        for part in &self.parts {
            match part {
                Part::Literal(text) => raw.push_str(text),
                Part::Field(field) => {
                    let _ = match field {
                        Field::Prefix => write!(raw, "{}", values.prefix),
                        Field::Application => write!(raw, "{}", values.application),
                        Field::Stream => write!(raw, "{}", values.stream),
                        Field::Shard => write!(raw, "{}", values.shard),
                        Field::FirstSeq => {
                            write_position(&mut raw, values.first);
                            Ok(())
                        }
                        Field::LastSeq => {
                            write_position(&mut raw, values.last);
                            Ok(())
                        }
                        Field::Year => write!(raw, "{:04}", date.year()),
                        Field::Month => write!(raw, "{:02}", u8::from(date.month())),
                        Field::Day => write!(raw, "{:02}", date.day()),
                        Field::Hour => write!(raw, "{:02}", date.hour()),
                        Field::Minute => write!(raw, "{:02}", date.minute()),
                        Field::Second => write!(raw, "{:02}", date.second()),
                    };
                }
            }
        }
        raw.push_str(suffix);
        let mut key = String::with_capacity(raw.len());
        for c in raw.chars() {
            if c == '/' && (key.is_empty() || key.ends_with('/')) {
                continue;
            }
            key.push(c);
        }
        key
    }

    /// Checks that keys rendered with `prefix` and `suffix` stay within S3's
    /// 1024-byte limit for Kinesis-sized names and sequence numbers.
    pub(crate) fn check_length(&self, prefix: &str, suffix: &str) -> Result<(), Error> {
        let longest = Position {
            sequence: kinesis_connectors_core::SequenceNumber::from(u64::MAX),
            sub_sequence: Some(u64::MAX),
        };
        // Stream names have at most 128 characters, shard ids about 20,
        // sequence numbers at most 128 digits (u64::MAX has 20: add the rest).
        let stream = "s".repeat(128);
        let shard = "shardId-000000000000";
        let application = "a".repeat(128);
        let values = KeyValues {
            prefix,
            application: &application,
            stream: &stream,
            shard,
            first: &longest,
            last: &longest,
            time: 0,
        };
        let extra = self
            .parts
            .iter()
            .filter(|p| matches!(p, Part::Field(Field::FirstSeq | Field::LastSeq)))
            .count()
            * (128 - 20);
        let length = self.render(&values, suffix).len() + extra;
        if length > MAX_KEY_BYTES {
            return Err(Error::Config(format!(
                "keys from template {:?} with prefix {prefix:?} can reach {length} bytes; S3 allows {MAX_KEY_BYTES}",
                self.source
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_templates_with_both_ends_name_the_range() {
        let named = |t: &str| KeyTemplate::parse(t).map(|t| t.names_the_range()).ok();
        assert_eq!(named(DEFAULT_KEY_TEMPLATE), Some(true));
        assert_eq!(named("{shard}/{first_seq}-{last_seq}"), Some(true));
        assert_eq!(named("{shard}/{first_seq}"), Some(false));
    }
    use kinesis_connectors_core::SequenceNumber;

    fn values<'a>(first: &'a Position, last: &'a Position, time: i64) -> KeyValues<'a> {
        KeyValues {
            prefix: "logs",
            application: "app",
            stream: "clicks",
            shard: "shardId-000000000001",
            first,
            last,
            time,
        }
    }

    fn pos(seq: &str, sub: Option<u64>) -> Position {
        Position {
            sequence: SequenceNumber::parse(seq).unwrap(),
            sub_sequence: sub,
        }
    }

    #[test]
    fn default_template_renders_every_part() {
        let template = KeyTemplate::parse(DEFAULT_KEY_TEMPLATE).unwrap();
        let first = pos(
            "49590338271490256608559692538361571095921575989136588898",
            None,
        );
        let last = pos(
            "49590338271490256608559692540925702759324208523137515618",
            None,
        );
        // 2024-02-29T13:05:09Z
        let key = template.render(&values(&first, &last, 1_709_211_909), "");
        assert_eq!(
            key,
            "logs/clicks/2024/02/29/13/shardId-000000000001-\
             49590338271490256608559692538361571095921575989136588898-\
             49590338271490256608559692540925702759324208523137515618"
        );
    }

    #[test]
    fn sub_sequences_minutes_seconds_application_and_braces() {
        let template =
            KeyTemplate::parse("{{x}}/{application}/{HH}{MI}{SS}/{shard}/{first_seq}-{last_seq}")
                .unwrap();
        let first = pos("7", Some(0));
        let last = pos("7", Some(3));
        let key = template.render(&values(&first, &last, 1_709_211_909), ".gz");
        assert_eq!(key, "{x}/app/130509/shardId-000000000001/7_0-7_3.gz");
    }

    #[test]
    fn empty_prefix_leaves_no_empty_segment() {
        let template = KeyTemplate::parse(DEFAULT_KEY_TEMPLATE).unwrap();
        let p = pos("1", None);
        let mut v = values(&p, &p, 0);
        v.prefix = "";
        assert_eq!(
            template.render(&v, ""),
            "clicks/1970/01/01/00/shardId-000000000001-1-1"
        );
        v.prefix = "a/b/";
        assert!(template.render(&v, "").starts_with("a/b/clicks/"));
    }

    #[test]
    fn times_before_the_epoch_and_out_of_range_do_not_panic() {
        assert_eq!(unix_seconds(UNIX_EPOCH), 0);
        let before = UNIX_EPOCH - std::time::Duration::from_millis(500);
        assert_eq!(unix_seconds(before), -1);
        let template = KeyTemplate::parse("{yyyy}/{shard}-{first_seq}").unwrap();
        let p = pos("1", None);
        assert!(
            template
                .render(&values(&p, &p, -1), "")
                .starts_with("1969/")
        );
        assert!(
            template
                .render(&values(&p, &p, i64::MAX), "")
                .starts_with("1970/")
        );
    }

    #[test]
    fn bad_templates_are_config_errors() {
        for (bad, needle) in [
            ("{prefix}/{shard}/{nope}", "unknown placeholder {nope}"),
            ("{prefix}/{shard}/{first_seq", "not closed"),
            ("{prefix}}/{shard}/{first_seq}x}", "unmatched"),
            ("{prefix}/{first_seq}", "lacks {shard}"),
            ("{prefix}/{shard}", "lacks {first_seq}"),
        ] {
            let err = KeyTemplate::parse(bad).unwrap_err();
            assert!(matches!(err, Error::Config(_)), "{bad}: {err}");
            assert!(err.to_string().contains(needle), "{bad}: {err}");
        }
    }

    #[test]
    fn overlong_keys_are_refused_up_front() {
        let template = KeyTemplate::parse(DEFAULT_KEY_TEMPLATE).unwrap();
        assert!(template.check_length("logs", ".gz").is_ok());
        let err = template.check_length(&"p".repeat(900), "").unwrap_err();
        assert!(err.to_string().contains("1024"), "{err}");
    }
}
