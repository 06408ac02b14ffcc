//! `PostgresLoader`: streams the listed S3 objects into PostgreSQL's
//! `COPY … FROM STDIN`, for PostgreSQL / Aurora targets and for running the
//! whole manifest pipeline against a local PostgreSQL.

use std::collections::HashMap;
use std::fmt;
use std::io::Write as _;

use async_trait::async_trait;
use aws_sdk_s3::operation::get_object::GetObjectError;
use serde_json::value::RawValue;
use sqlx::postgres::{PgConnection, PgCopyIn};

use crate::copy::{CopyFormat, CopyOptions};
use crate::error::{Error, classify_copy, classify_s3, classify_sql, s3_code, s3_read_error};
use crate::loader::{LoadRequest, Loader};
use crate::manifest::{ManifestEntry, parse_s3_url};
use crate::sql::Identifier;

/// How much converted data is collected before it is sent to the server.
const SEND_CHUNK_BYTES: usize = 256 * 1024;

/// Streams the files of each load from S3 into PostgreSQL's
/// `COPY <table> FROM STDIN`, on the emitter's transaction.
///
/// PostgreSQL (and Aurora PostgreSQL) cannot read S3 in `COPY` itself; this
/// loader reads each listed object with `GetObject` (gunzipping it when the
/// options say `GZIP`) and converts it on the fly:
///
/// | format | sent as |
/// |---|---|
/// | `JSON 'auto'` | one CSV row per JSON line; each column takes the value of the key with the column's name (missing key or `null` → `NULL`; objects and arrays → their JSON text) |
/// | `JSON 's3://…jsonpaths'` | the same, the values picked by the JSONPaths file (`$.a`, `$['a']`, `$.a.b`, `$.a[0]`); one path per column |
/// | `CSV` | unchanged, `FORMAT csv` |
/// | `DELIMITER '<c>'` | unchanged, PostgreSQL's `FORMAT text` with that delimiter (backslash escapes, `\N` for `NULL`) |
///
/// Without configured columns, JSON formats load every column of the table
/// (from `pg_attribute`, in table order, generated columns excepted).
/// `TIMEFORMAT`, `TRUNCATECOLUMNS` and `MAXERROR` are Redshift options with
/// no equivalent here and are ignored: PostgreSQL parses ISO timestamps
/// itself, and any bad row fails the whole load. A mandatory file that is
/// missing fails the load ([`Error::CopyRejected`]); a missing optional one
/// is skipped.
#[derive(Clone)]
pub struct PostgresLoader {
    s3: aws_sdk_s3::Client,
}

impl fmt::Debug for PostgresLoader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresLoader").finish_non_exhaustive()
    }
}

impl PostgresLoader {
    /// A loader reading the objects through `s3`.
    pub fn new(s3: aws_sdk_s3::Client) -> Self {
        Self { s3 }
    }

    /// How rows are produced and which columns they fill.
    async fn plan(
        &self,
        conn: &mut PgConnection,
        request: &LoadRequest<'_>,
    ) -> Result<Plan, Error> {
        let format = &request.options.format;
        if !format.is_json() {
            return Ok(Plan {
                columns: request.columns.to_vec(),
                mapping: None,
            });
        }
        let columns = if request.columns.is_empty() {
            table_columns(conn, request).await?
        } else {
            request.columns.to_vec()
        };
        let mapping = match format {
            CopyFormat::JsonPaths(url) => {
                let paths = self.json_paths(url).await?;
                if paths.len() != columns.len() {
                    return Err(Error::Config(format!(
                        "the JSONPaths file {url} has {} path(s) for {} column(s) of {}",
                        paths.len(),
                        columns.len(),
                        request.table
                    )));
                }
                JsonMapping::Paths(paths)
            }
            _ => JsonMapping::Auto(columns.iter().map(|c| c.as_str().to_owned()).collect()),
        };
        Ok(Plan {
            columns,
            mapping: Some(mapping),
        })
    }

    /// Reads and parses a JSONPaths file (`{"jsonpaths": ["$.a", …]}`).
    async fn json_paths(&self, url: &str) -> Result<Vec<JsonPath>, Error> {
        let Some((bucket, key)) = parse_s3_url(url) else {
            return Err(Error::Config(format!(
                "the JSONPaths file {url:?} is not an s3://bucket/key URL"
            )));
        };
        let object = self
            .s3
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| classify_s3("GetObject", url, e))?;
        let bytes = object
            .body
            .collect()
            .await
            .map_err(|e| s3_read_error(url, e))?
            .into_bytes();
        parse_json_paths_file(&bytes)
            .map_err(|message| Error::Config(format!("the JSONPaths file {url}: {message}")))
    }

    /// Streams every file into `copy`.
    async fn stream(
        &self,
        copy: &mut PgCopyIn<&mut PgConnection>,
        files: &[ManifestEntry],
        mapping: Option<&JsonMapping>,
        request: &LoadRequest<'_>,
    ) -> Result<(), Error> {
        let table = request.table.quoted();
        let manifest = request.source.url();
        let rejected = |message: String| Error::CopyRejected {
            table: table.clone(),
            manifest: manifest.to_owned(),
            code: None,
            message,
        };
        let mut out = Vec::with_capacity(SEND_CHUNK_BYTES + 4096);
        for entry in files {
            let Some((bucket, key)) = parse_s3_url(&entry.url) else {
                return Err(rejected(format!(
                    "{:?} is not an s3://bucket/key URL",
                    entry.url
                )));
            };
            let object = match self.s3.get_object().bucket(bucket).key(key).send().await {
                Ok(object) => object,
                Err(error) if is_missing(&error) => {
                    if entry.mandatory {
                        return Err(rejected(format!(
                            "the mandatory file {} does not exist",
                            entry.url
                        )));
                    }
                    tracing::warn!(url = %entry.url, "optional file does not exist: skipped");
                    continue;
                }
                Err(error) => return Err(classify_s3("GetObject", &entry.url, error)),
            };
            let mut decoder = FileDecoder::new(&entry.url, mapping, request.options.gzip);
            let mut body = object.body;
            while let Some(chunk) = body
                .try_next()
                .await
                .map_err(|e| s3_read_error(&entry.url, e))?
            {
                decoder.push(&chunk, &mut out).map_err(&rejected)?;
                if out.len() >= SEND_CHUNK_BYTES {
                    copy.send(std::mem::take(&mut out))
                        .await
                        .map_err(|e| classify_copy(&table, manifest, e))?;
                }
            }
            decoder.finish(&mut out).map_err(&rejected)?;
        }
        if !out.is_empty() {
            copy.send(out)
                .await
                .map_err(|e| classify_copy(&table, manifest, e))?;
        }
        Ok(())
    }
}

#[async_trait]
impl Loader for PostgresLoader {
    async fn load(&self, conn: &mut PgConnection, request: &LoadRequest<'_>) -> Result<u64, Error> {
        let table = request.table.quoted();
        let manifest = request.source.url();
        let plan = self.plan(conn, request).await?;
        let statement = copy_from_stdin(request, &plan.columns)?;
        let files = request.source.files();
        tracing::debug!(%statement, files = files.len(), %manifest, "running PostgreSQL COPY FROM STDIN");
        let mut copy = conn
            .copy_in_raw(&statement)
            .await
            .map_err(|e| classify_copy(&table, manifest, e))?;
        match self
            .stream(&mut copy, &files, plan.mapping.as_ref(), request)
            .await
        {
            Ok(()) => copy
                .finish()
                .await
                .map_err(|e| classify_copy(&table, manifest, e)),
            Err(error) => {
                if let Err(abort) = copy.abort(error.to_string()).await {
                    tracing::debug!(error = %abort, "aborting the COPY failed; the transaction is rolled back anyway");
                }
                Err(error)
            }
        }
    }

    fn validate(&self, options: &CopyOptions) -> Result<(), Error> {
        options.validate()?;
        if options.time_format.is_some() || options.truncate_columns || options.max_error.is_some()
        {
            tracing::warn!(
                "TIMEFORMAT, TRUNCATECOLUMNS and MAXERROR are Redshift options: the PostgreSQL loader ignores them"
            );
        }
        Ok(())
    }
}

/// Whether `GetObject` failed because the object does not exist.
fn is_missing(
    error: &aws_sdk_s3::error::SdkError<GetObjectError, aws_sdk_s3::config::http::HttpResponse>,
) -> bool {
    if error
        .as_service_error()
        .is_some_and(GetObjectError::is_no_such_key)
    {
        return true;
    }
    s3_code(error).as_deref() == Some("NoSuchKey")
        || (s3_code(error).is_none()
            && error
                .raw_response()
                .is_some_and(|r| r.status().as_u16() == 404))
}

/// The columns of the request's table, in table order.
async fn table_columns(
    conn: &mut PgConnection,
    request: &LoadRequest<'_>,
) -> Result<Vec<Identifier>, Error> {
    let table = request.table.quoted();
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT attname::text FROM pg_catalog.pg_attribute \
         WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped AND attgenerated = '' \
         ORDER BY attnum",
    )
    .bind(&table)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| classify_sql("reading the columns of", &table, e, false))?;
    if names.is_empty() {
        return Err(Error::Config(format!(
            "table {table} has no columns to load"
        )));
    }
    names.into_iter().map(Identifier::new).collect()
}

/// The `COPY … FROM STDIN` statement for `request` into `columns`.
fn copy_from_stdin(request: &LoadRequest<'_>, columns: &[Identifier]) -> Result<String, Error> {
    let mut sql = format!("COPY {}", request.table.quoted());
    if !columns.is_empty() {
        let names: Vec<String> = columns.iter().map(Identifier::quoted).collect();
        sql.push_str(&format!(" ({})", names.join(", ")));
    }
    sql.push_str(" FROM STDIN WITH (");
    match &request.options.format {
        CopyFormat::JsonAuto | CopyFormat::JsonPaths(_) | CopyFormat::Csv => {
            sql.push_str("FORMAT csv");
        }
        CopyFormat::Delimited('\t') => sql.push_str("FORMAT text, DELIMITER E'\\t'"),
        CopyFormat::Delimited(c) if c.is_ascii() && !matches!(c, '\'' | '\\') => {
            sql.push_str(&format!("FORMAT text, DELIMITER '{c}'"));
        }
        CopyFormat::Delimited(c) => {
            return Err(Error::Config(format!("delimiter {c:?} is not supported")));
        }
    }
    sql.push(')');
    Ok(sql)
}

/// The columns a load fills and, for JSON, how rows are made.
struct Plan {
    columns: Vec<Identifier>,
    mapping: Option<JsonMapping>,
}

/// How a JSON line becomes a row.
#[derive(Debug)]
enum JsonMapping {
    /// Column names, matched to the object's keys.
    Auto(Vec<String>),
    /// One path per column.
    Paths(Vec<JsonPath>),
}

impl JsonMapping {
    /// Appends the CSV row of `line` to `out`.
    fn encode(&self, line: &str, out: &mut Vec<u8>) -> Result<(), String> {
        match self {
            Self::Auto(columns) => {
                let object: HashMap<String, &RawValue> =
                    serde_json::from_str(line).map_err(|e| format!("not a JSON object: {e}"))?;
                for (i, column) in columns.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    if let Some(value) = object.get(column) {
                        write_csv_value(value, out)?;
                    }
                }
            }
            Self::Paths(paths) => {
                let root: &RawValue =
                    serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
                for (i, path) in paths.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    if let Some(value) = path.find(root) {
                        write_csv_value(value, out)?;
                    }
                }
            }
        }
        out.push(b'\n');
        Ok(())
    }
}

/// Appends one JSON value as a CSV field: `null` as an empty unquoted field
/// (`NULL`), strings quoted (so `""` stays an empty string), numbers and
/// booleans as written, objects and arrays as their quoted JSON text.
fn write_csv_value(value: &RawValue, out: &mut Vec<u8>) -> Result<(), String> {
    let text = value.get().trim();
    match text.as_bytes().first() {
        None | Some(b'n') => {}
        Some(b'"') => {
            let string: String =
                serde_json::from_str(text).map_err(|e| format!("bad JSON string: {e}"))?;
            write_csv_quoted(&string, out);
        }
        Some(b'{' | b'[') => write_csv_quoted(text, out),
        Some(_) => out.extend_from_slice(text.as_bytes()),
    }
    Ok(())
}

fn write_csv_quoted(text: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for byte in text.bytes() {
        if byte == b'"' {
            out.push(b'"');
        }
        out.push(byte);
    }
    out.push(b'"');
}

/// One step of a JSONPath expression.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Member(String),
    Index(usize),
}

/// A JSONPath expression of the subset Redshift accepts: `$` followed by
/// `.name`, `['name']` / `["name"]` and `[index]` steps.
#[derive(Debug, Clone, PartialEq, Eq)]
struct JsonPath(Vec<Step>);

impl JsonPath {
    fn parse(text: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("JSONPath {text:?}: {why}");
        let mut rest = text
            .trim()
            .strip_prefix('$')
            .ok_or_else(|| bad("must start with `$`"))?;
        let mut steps = Vec::new();
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('.') {
                let end = after.find(['.', '[']).unwrap_or(after.len());
                let name = &after[..end];
                if name.is_empty() {
                    return Err(bad("empty member name after `.`"));
                }
                steps.push(Step::Member(name.to_owned()));
                rest = &after[end..];
            } else if let Some(after) = rest.strip_prefix('[') {
                let quote = after.chars().next().filter(|c| matches!(c, '\'' | '"'));
                if let Some(quote) = quote {
                    let inner = &after[1..];
                    let end = inner
                        .find(quote)
                        .ok_or_else(|| bad("unterminated quoted member name"))?;
                    steps.push(Step::Member(inner[..end].to_owned()));
                    rest = inner[end + 1..]
                        .strip_prefix(']')
                        .ok_or_else(|| bad("expected `]` after a quoted member name"))?;
                } else {
                    let end = after.find(']').ok_or_else(|| bad("unterminated `[`"))?;
                    let index = after[..end]
                        .trim()
                        .parse::<usize>()
                        .map_err(|_| bad("array index must be a non-negative integer"))?;
                    steps.push(Step::Index(index));
                    rest = &after[end + 1..];
                }
            } else {
                return Err(bad("expected `.` or `[`"));
            }
        }
        Ok(Self(steps))
    }

    /// The value at this path in `root`, if there is one.
    fn find<'a>(&self, root: &'a RawValue) -> Option<&'a RawValue> {
        let mut current = root;
        for step in &self.0 {
            current = match step {
                Step::Member(name) => {
                    let object: HashMap<String, &'a RawValue> =
                        serde_json::from_str(current.get()).ok()?;
                    object.get(name).copied()?
                }
                Step::Index(index) => {
                    let array: Vec<&'a RawValue> = serde_json::from_str(current.get()).ok()?;
                    array.get(*index).copied()?
                }
            };
        }
        Some(current)
    }
}

/// Parses `{"jsonpaths": ["$.a", …]}`.
fn parse_json_paths_file(bytes: &[u8]) -> Result<Vec<JsonPath>, String> {
    let document: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let paths = document
        .get("jsonpaths")
        .and_then(serde_json::Value::as_array)
        .ok_or("expected an object with a \"jsonpaths\" array")?;
    if paths.is_empty() {
        return Err("the \"jsonpaths\" array is empty".to_owned());
    }
    paths
        .iter()
        .map(|path| {
            path.as_str()
                .ok_or_else(|| format!("path {path} is not a string"))
                .and_then(JsonPath::parse)
        })
        .collect()
}

/// Turns one object's bytes (possibly gzipped) into `COPY` input.
struct FileDecoder<'a> {
    url: &'a str,
    gunzip: Option<flate2::write::MultiGzDecoder<Vec<u8>>>,
    rows: Rows<'a>,
}

/// What to do with the plain bytes of a file.
enum Rows<'a> {
    /// Send as they are; end the file with a newline if it lacks one.
    Raw {
        wrote: bool,
        ends_with_newline: bool,
    },
    /// JSON lines, converted to CSV rows.
    Json {
        mapping: &'a JsonMapping,
        pending: Vec<u8>,
        line: u64,
    },
}

impl<'a> FileDecoder<'a> {
    fn new(url: &'a str, mapping: Option<&'a JsonMapping>, gzip: bool) -> Self {
        let rows = match mapping {
            Some(mapping) => Rows::Json {
                mapping,
                pending: Vec::new(),
                line: 0,
            },
            None => Rows::Raw {
                wrote: false,
                ends_with_newline: false,
            },
        };
        Self {
            url,
            gunzip: gzip.then(|| flate2::write::MultiGzDecoder::new(Vec::new())),
            rows,
        }
    }

    /// Takes the next bytes of the object; appends complete rows to `out`.
    fn push(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        match &mut self.gunzip {
            Some(gunzip) => {
                gunzip
                    .write_all(data)
                    .map_err(|e| format!("{} is not valid gzip: {e}", self.url))?;
                let plain = std::mem::take(gunzip.get_mut());
                self.rows.push(self.url, &plain, out)
            }
            None => self.rows.push(self.url, data, out),
        }
    }

    /// The object ended: flushes what is left.
    fn finish(mut self, out: &mut Vec<u8>) -> Result<(), String> {
        if let Some(gunzip) = self.gunzip.take() {
            let rest = gunzip
                .finish()
                .map_err(|e| format!("{} is not valid gzip: {e}", self.url))?;
            self.rows.push(self.url, &rest, out)?;
        }
        self.rows.finish(self.url, out)
    }
}

impl Rows<'_> {
    fn push(&mut self, url: &str, data: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        match self {
            Self::Raw {
                wrote,
                ends_with_newline,
            } => {
                if let Some(&last) = data.last() {
                    out.extend_from_slice(data);
                    *wrote = true;
                    *ends_with_newline = last == b'\n';
                }
                Ok(())
            }
            Self::Json {
                mapping,
                pending,
                line,
            } => {
                pending.extend_from_slice(data);
                let mut start = 0;
                while let Some(offset) = pending[start..].iter().position(|&b| b == b'\n') {
                    let end = start + offset;
                    *line += 1;
                    encode_line(mapping, url, *line, &pending[start..end], out)?;
                    start = end + 1;
                }
                pending.drain(..start);
                Ok(())
            }
        }
    }

    fn finish(&mut self, url: &str, out: &mut Vec<u8>) -> Result<(), String> {
        match self {
            Self::Raw {
                wrote,
                ends_with_newline,
            } => {
                if *wrote && !*ends_with_newline {
                    out.push(b'\n');
                }
                Ok(())
            }
            Self::Json {
                mapping,
                pending,
                line,
            } => {
                if pending.is_empty() {
                    return Ok(());
                }
                *line += 1;
                let last = std::mem::take(pending);
                encode_line(mapping, url, *line, &last, out)
            }
        }
    }
}

/// Converts one JSON line; blank lines are skipped.
fn encode_line(
    mapping: &JsonMapping,
    url: &str,
    line: u64,
    bytes: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    let text =
        std::str::from_utf8(bytes).map_err(|e| format!("{url} line {line}: not UTF-8: {e}"))?;
    let start = out.len();
    mapping.encode(text, out).map_err(|e| {
        out.truncate(start);
        format!("{url} line {line}: {e}")
    })
}

#[cfg(test)]
mod tests {
    use flate2::write::GzEncoder;

    use super::*;
    use crate::loader::LoadSource;
    use crate::sql::TableName;

    fn auto(columns: &[&str]) -> JsonMapping {
        JsonMapping::Auto(columns.iter().map(|c| (*c).to_owned()).collect())
    }

    fn row(mapping: &JsonMapping, line: &str) -> Result<String, String> {
        let mut out = Vec::new();
        mapping.encode(line, &mut out)?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn json_auto_rows() {
        let mapping = auto(&[
            "id", "name", "score", "ok", "tags", "missing", "empty", "big",
        ]);
        assert_eq!(
            row(
                &mapping,
                r#"{"id":7,"name":"a \"quoted\", name","score":1.5e3,"ok":true,"tags":["x", {"y":1}],"empty":"","big":123456789012345678901234567890,"extra":1}"#
            )
            .unwrap(),
            "7,\"a \"\"quoted\"\", name\",1.5e3,true,\"[\"\"x\"\", {\"\"y\"\":1}]\",,\"\",123456789012345678901234567890\n"
        );
        assert_eq!(
            row(&auto(&["a", "b"]), r#"{"a":null,"b":"line\nbreak"}"#).unwrap(),
            ",\"line\nbreak\"\n"
        );
        assert!(row(&mapping, "[1,2]").is_err());
        assert!(row(&mapping, "{\"id\":").is_err());
        assert!(row(&mapping, "42").is_err());
    }

    #[test]
    fn json_paths_parse_and_find() {
        assert_eq!(
            JsonPath::parse("$.a.b[2]['c d'][\"e\"]").unwrap(),
            JsonPath(vec![
                Step::Member("a".into()),
                Step::Member("b".into()),
                Step::Index(2),
                Step::Member("c d".into()),
                Step::Member("e".into()),
            ])
        );
        for bad in ["a", "$.", "$[", "$['a'", "$[x]", "$a", "$[-1]"] {
            assert!(JsonPath::parse(bad).is_err(), "{bad}");
        }
        let paths = parse_json_paths_file(
            br#"{"jsonpaths": ["$.id", "$['user']['name']", "$.tags[1]", "$.nope.deeper"]}"#,
        )
        .unwrap();
        let mapping = JsonMapping::Paths(paths);
        assert_eq!(
            row(
                &mapping,
                r#"{"id": 1, "user": {"name": "ann"}, "tags": ["a", "b"]}"#
            )
            .unwrap(),
            "1,\"ann\",\"b\",\n"
        );
        assert!(parse_json_paths_file(br#"{"paths": []}"#).is_err());
        assert!(parse_json_paths_file(br#"{"jsonpaths": []}"#).is_err());
        assert!(parse_json_paths_file(br#"{"jsonpaths": [1]}"#).is_err());
        assert!(parse_json_paths_file(b"nope").is_err());
    }

    #[test]
    fn json_lines_across_chunks_with_line_numbers() {
        let mapping = auto(&["id"]);
        let mut decoder = FileDecoder::new("s3://b/k", Some(&mapping), false);
        let mut out = Vec::new();
        decoder.push(b"{\"id\":1}\n{\"i", &mut out).unwrap();
        decoder
            .push(b"d\":2}\r\n\n   \n{\"id\":3}", &mut out)
            .unwrap();
        decoder.finish(&mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "1\n2\n3\n");

        let mut decoder = FileDecoder::new("s3://b/k", Some(&mapping), false);
        let mut out = Vec::new();
        decoder
            .push(b"{\"id\":1}\n\nnot json\n", &mut out)
            .map(drop)
            .unwrap_err();
        let mut decoder = FileDecoder::new("s3://b/k", Some(&mapping), false);
        let error = decoder
            .push(b"{\"id\":1}\n\nnot json\n", &mut Vec::new())
            .unwrap_err();
        assert!(error.starts_with("s3://b/k line 3: "), "{error}");
    }

    #[test]
    fn raw_files_end_with_a_newline_and_gzip_is_undone() {
        let mut out = Vec::new();
        let mut decoder = FileDecoder::new("s3://b/k", None, false);
        decoder.push(b"a,b\nc,d", &mut out).unwrap();
        decoder.finish(&mut out).unwrap();
        let decoder = FileDecoder::new("s3://b/k2", None, false);
        decoder.finish(&mut out).unwrap();
        assert_eq!(out, b"a,b\nc,d\n");

        let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(b"{\"id\":1}\n{\"id\":2}\n").unwrap();
        let compressed = gz.finish().unwrap();
        let mapping = auto(&["id"]);
        let mut decoder = FileDecoder::new("s3://b/k.gz", Some(&mapping), true);
        let mut out = Vec::new();
        for chunk in compressed.chunks(5) {
            decoder.push(chunk, &mut out).unwrap();
        }
        decoder.finish(&mut out).unwrap();
        assert_eq!(out, b"1\n2\n");

        let mut decoder = FileDecoder::new("s3://b/k.gz", Some(&mapping), true);
        let error = decoder
            .push(b"definitely not gzip", &mut Vec::new())
            .and_then(|()| decoder.finish(&mut Vec::new()))
            .unwrap_err();
        assert!(error.contains("not valid gzip"), "{error}");
    }

    #[test]
    fn copy_from_stdin_statements() {
        let table = TableName::qualified("s", "t\"x").unwrap();
        let columns = vec![
            Identifier::new("a").unwrap(),
            Identifier::new("b c").unwrap(),
        ];
        let statement = |format: CopyFormat, columns: &[Identifier]| {
            let options = CopyOptions::new(format);
            let request = LoadRequest::new(
                &table,
                columns,
                LoadSource::Object { url: "s3://b/k" },
                &options,
            );
            copy_from_stdin(&request, columns).unwrap()
        };
        assert_eq!(
            statement(CopyFormat::JsonAuto, &columns),
            "COPY \"s\".\"t\"\"x\" (\"a\", \"b c\") FROM STDIN WITH (FORMAT csv)"
        );
        assert_eq!(
            statement(CopyFormat::Csv, &[]),
            "COPY \"s\".\"t\"\"x\" FROM STDIN WITH (FORMAT csv)"
        );
        assert_eq!(
            statement(CopyFormat::Delimited('|'), &[]),
            "COPY \"s\".\"t\"\"x\" FROM STDIN WITH (FORMAT text, DELIMITER '|')"
        );
        assert_eq!(
            statement(CopyFormat::Delimited('\t'), &columns),
            "COPY \"s\".\"t\"\"x\" (\"a\", \"b c\") FROM STDIN WITH (FORMAT text, DELIMITER E'\\t')"
        );
    }
}
