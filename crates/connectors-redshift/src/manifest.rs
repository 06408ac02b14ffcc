//! Redshift manifest documents, their deterministic keys, and S3 URLs.

use kinesis_connectors_core::{Batch, Position};

/// One file of a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ManifestEntry {
    /// The file's `s3://bucket/key` URL.
    pub url: String,
    /// Whether the `COPY` must fail when the file is missing (Redshift's
    /// `mandatory`).
    pub mandatory: bool,
}

/// A Redshift manifest: the files one `COPY … MANIFEST` loads.
///
/// ```
/// use kinesis_connectors_redshift::{Manifest, ManifestEntry};
/// let manifest = Manifest::new(vec![ManifestEntry { url: "s3://b/k".into(), mandatory: true }]);
/// assert_eq!(manifest.to_json(), r#"{"entries":[{"url":"s3://b/k","mandatory":true}]}"#);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Manifest {
    /// The files, in load order.
    pub entries: Vec<ManifestEntry>,
}

impl Manifest {
    /// A manifest of `entries`.
    pub fn new(entries: Vec<ManifestEntry>) -> Self {
        Self { entries }
    }

    /// The manifest document: `{"entries":[{"url":…,"mandatory":…},…]}`,
    /// compact, entries in order.
    pub fn to_json(&self) -> String {
        let mut json = String::from("{\"entries\":[");
        for (i, entry) in self.entries.iter().enumerate() {
            if i > 0 {
                json.push(',');
            }
            json.push_str("{\"url\":");
            push_json_string(&mut json, &entry.url);
            json.push_str(",\"mandatory\":");
            json.push_str(if entry.mandatory { "true" } else { "false" });
            json.push('}');
        }
        json.push_str("]}");
        json
    }
}

/// Appends `value` as a JSON string.
fn push_json_string(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Splits `s3://bucket/key` into bucket and key (both non-empty; the bucket
/// without `/`). Surrounding whitespace is ignored.
pub(crate) fn parse_s3_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.trim().strip_prefix("s3://")?;
    let (bucket, key) = rest.split_once('/')?;
    if bucket.is_empty() || key.is_empty() || bucket.chars().any(char::is_whitespace) {
        return None;
    }
    Some((bucket, key))
}

/// A key part made of safe characters only: `[A-Za-z0-9._-]`, anything
/// else becomes `_`.
fn key_part(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A position in a key: the sequence number, `_<sub>` for KPL sub-records.
fn key_position(position: &Position) -> String {
    match position.sub_sequence {
        Some(sub) => format!("{}_{sub}", position.sequence),
        None => position.sequence.to_string(),
    }
}

/// The manifest key of `batch`:
/// `{prefix}{application}/{stream}/{shard}/{first}-{last}.manifest`.
///
/// Everything comes from the batch, so a replayed batch writes the same key.
/// Application, stream and shard are reduced to `[A-Za-z0-9._-]`.
pub(crate) fn manifest_key<T>(prefix: &str, batch: &Batch<T>) -> String {
    format!(
        "{prefix}{}/{}/{}/{}-{}.manifest",
        key_part(&batch.context.application),
        key_part(&batch.context.stream),
        key_part(&batch.context.shard_id),
        key_position(&batch.first),
        key_position(&batch.last),
    )
}

#[cfg(test)]
mod tests {
    use kinesis_connectors_core::{ItemSource, Record, ShardContext};

    use super::*;

    fn entry(url: &str, mandatory: bool) -> ManifestEntry {
        ManifestEntry {
            url: url.to_owned(),
            mandatory,
        }
    }

    #[test]
    fn manifest_documents() {
        assert_eq!(Manifest::default().to_json(), "{\"entries\":[]}");
        let manifest = Manifest::new(vec![
            entry("s3://data/raw/shardId-000000000000-1-5.jsonl", true),
            entry("s3://data/raw/shardId-000000000001-2-7.jsonl", true),
        ]);
        assert_eq!(
            manifest.to_json(),
            "{\"entries\":[\
             {\"url\":\"s3://data/raw/shardId-000000000000-1-5.jsonl\",\"mandatory\":true},\
             {\"url\":\"s3://data/raw/shardId-000000000001-2-7.jsonl\",\"mandatory\":true}]}"
        );
        let optional = Manifest::new(vec![entry("s3://b/k", false)]);
        assert_eq!(
            optional.to_json(),
            "{\"entries\":[{\"url\":\"s3://b/k\",\"mandatory\":false}]}"
        );
    }

    #[test]
    fn manifest_urls_are_escaped_as_json() {
        let odd = Manifest::new(vec![entry("s3://b/a\"b\\c\nd\u{1}é", true)]);
        let json = odd.to_json();
        assert_eq!(
            json,
            "{\"entries\":[{\"url\":\"s3://b/a\\\"b\\\\c\\nd\\u0001é\",\"mandatory\":true}]}"
        );
        let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed["entries"][0]["url"], "s3://b/a\"b\\c\nd\u{1}é");
    }

    #[test]
    fn s3_urls() {
        assert_eq!(parse_s3_url("s3://b/k/x"), Some(("b", "k/x")));
        assert_eq!(parse_s3_url("  s3://b/k\n"), Some(("b", "k")));
        assert_eq!(parse_s3_url("s3://b/"), None);
        assert_eq!(parse_s3_url("s3:///k"), None);
        assert_eq!(parse_s3_url("s3://b"), None);
        assert_eq!(parse_s3_url("https://b/k"), None);
        assert_eq!(parse_s3_url("s3://b c/k"), None);
    }

    #[test]
    fn manifest_keys_follow_the_batch() {
        let record = Record::new("s3://b/k", "pk", 100u64);
        let mut last = Record::new("s3://b/k2", "pk", 200u64);
        last.sub_sequence_number = Some(3);
        let batch = Batch::new(
            ShardContext::new("loader app", "manifests", "shardId-000000000001"),
            vec![
                ("s3://b/k".to_owned(), ItemSource::of(&record)),
                ("s3://b/k2".to_owned(), ItemSource::of(&last)),
            ],
            record.position(),
            last.position(),
        );
        assert_eq!(
            manifest_key("manifests/", &batch),
            "manifests/loader_app/manifests/shardId-000000000001/100-200_3.manifest"
        );
        assert_eq!(
            manifest_key("", &batch),
            "loader_app/manifests/shardId-000000000001/100-200_3.manifest"
        );
    }
}
