//! `PostgresLoader`: streams the listed S3 objects into PostgreSQL's
//! `COPY … FROM STDIN`, for PostgreSQL / Aurora targets and for running the
//! whole manifest pipeline against a local PostgreSQL.
//!
//! This module holds the loader's I/O (S3 reads, the catalog query, the
//! `COPY` statement and stream); the byte conversion it streams through is
//! in `file_decoder`, `csv` and `jsonpaths`.

use std::fmt;

use async_trait::async_trait;
use aws_sdk_s3::operation::get_object::GetObjectError;
use sqlx::postgres::{PgConnection, PgCopyIn};

use crate::copy::{CopyFormat, CopyOptions};
use crate::csv::JsonMapping;
use crate::error::{Error, classify_copy, classify_s3, classify_sql, s3_code, s3_read_error};
use crate::file_decoder::FileDecoder;
use crate::jsonpaths::{JsonPath, parse_json_paths_file};
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loader::LoadSource;
    use crate::sql::TableName;

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
