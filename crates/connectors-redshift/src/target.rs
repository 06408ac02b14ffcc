//! The transaction both emitters run: skip files already in the file table,
//! write the manifest, record the new files, load them, commit.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use aws_sdk_s3::primitives::ByteStream;
use kinesis_connectors_core::RejectedItem;
use sqlx::AssertSqlSafe;
use sqlx::postgres::{PgConnection, PgPool};

use crate::copy::CopyOptions;
use crate::error::{Error, classify_s3, classify_sql};
use crate::loader::{LoadRequest, LoadSource, Loader};
use crate::manifest::{Manifest, ManifestEntry, parse_s3_url};
use crate::sql::{Identifier, TableName, quote_literal};

/// Bound parameters per file-table statement (PostgreSQL allows 65,535).
const FILES_PER_STATEMENT: usize = 500;

/// What one emit did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct LoadReport {
    /// The `s3://` URL the `COPY` read (the manifest, or the basic emitter's
    /// object), or `None` when nothing was loaded.
    pub source: Option<String>,
    /// The files loaded by this emit (each now in the file table).
    pub loaded_files: Vec<String>,
    /// Files skipped because the file table lists them as loaded, or
    /// because they were repeated in the batch.
    pub skipped_files: usize,
    /// Rows the database reported loaded.
    pub rows: u64,
    /// Items that could not be used (not an S3 URL, or not encodable for the
    /// basic emitter's object); handed to the pipeline's bad-record policy.
    pub rejected: Vec<RejectedItem>,
}

/// The table of loaded files: one row per loaded `s3://` URL.
#[derive(Debug, Clone)]
pub(crate) struct FileTable {
    pub(crate) table: TableName,
    pub(crate) column: Identifier,
    pub(crate) lock: bool,
}

impl FileTable {
    /// `CREATE TABLE IF NOT EXISTS <table> (<column> VARCHAR(2048) NOT NULL PRIMARY KEY)`.
    pub(crate) fn ddl(&self) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {} ({} VARCHAR(2048) NOT NULL PRIMARY KEY)",
            self.table.quoted(),
            self.column.quoted()
        )
    }
}

/// Where the manifest of a load goes.
pub(crate) struct ManifestTarget<'a> {
    pub(crate) s3: &'a aws_sdk_s3::Client,
    pub(crate) bucket: &'a str,
    pub(crate) key: String,
    pub(crate) mandatory: bool,
}

/// How the files reach the loader.
pub(crate) enum Staging<'a> {
    /// Written into one manifest, loaded with one `COPY … MANIFEST`.
    Manifest(ManifestTarget<'a>),
    /// Each file loaded on its own (`COPY … FROM '<object>'`).
    Objects,
}

/// The data table, how it is loaded, and the optional file table.
pub(crate) struct Target {
    pub(crate) pool: PgPool,
    pub(crate) table: TableName,
    pub(crate) columns: Vec<Identifier>,
    pub(crate) options: CopyOptions,
    pub(crate) loader: Arc<dyn Loader>,
    pub(crate) files: Option<FileTable>,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("table", &self.table)
            .field("columns", &self.columns)
            .field("options", &self.options)
            .field("loader", &self.loader)
            .field("file_table", &self.files)
            .finish_non_exhaustive()
    }
}

impl Target {
    /// Loads the files at `urls` (distinct, normalized `s3://bucket/key`) in
    /// one transaction; files in the file table are skipped.
    pub(crate) async fn load(
        &self,
        urls: &[String],
        staging: Staging<'_>,
    ) -> Result<LoadReport, Error> {
        let table = self.table.quoted();
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| classify_sql("BEGIN", &table, e, false))?;
        match self.load_in(&mut tx, urls, staging).await {
            Ok(report) if report.loaded_files.is_empty() => {
                // Nothing was written: end the transaction (and its lock).
                if let Err(error) = tx.rollback().await {
                    tracing::debug!(%error, "ending a transaction that wrote nothing failed");
                }
                Ok(report)
            }
            Ok(report) => {
                tx.commit()
                    .await
                    .map_err(|e| classify_sql("COMMIT", &table, e, true))?;
                tracing::info!(
                    table = %table,
                    source = report.source.as_deref().unwrap_or_default(),
                    files = report.loaded_files.len(),
                    skipped = report.skipped_files,
                    rows = report.rows,
                    "loaded"
                );
                Ok(report)
            }
            Err(error) => {
                if let Err(rollback) = tx.rollback().await {
                    tracing::debug!(error = %rollback, "rollback failed; the server rolls back when the connection closes");
                }
                tracing::warn!(table = %table, %error, "load failed and was rolled back");
                Err(error)
            }
        }
    }

    async fn load_in(
        &self,
        conn: &mut PgConnection,
        urls: &[String],
        staging: Staging<'_>,
    ) -> Result<LoadReport, Error> {
        let new: Vec<String> = match &self.files {
            Some(files) => {
                if files.lock {
                    let file_table = files.table.quoted();
                    sqlx::raw_sql(AssertSqlSafe(format!("LOCK {file_table}")))
                        .execute(&mut *conn)
                        .await
                        .map_err(|e| classify_sql("LOCK", &file_table, e, false))?;
                }
                let loaded = loaded_files(conn, files, urls).await?;
                urls.iter()
                    .filter(|u| !loaded.contains(*u))
                    .cloned()
                    .collect()
            }
            None => urls.to_vec(),
        };
        let mut report = LoadReport {
            skipped_files: urls.len() - new.len(),
            ..LoadReport::default()
        };
        if new.is_empty() {
            return Ok(report);
        }
        let mut rows = 0;
        match staging {
            Staging::Manifest(target) => {
                let entries: Vec<ManifestEntry> = new
                    .iter()
                    .map(|url| ManifestEntry {
                        url: url.clone(),
                        mandatory: target.mandatory,
                    })
                    .collect();
                let url = write_manifest(&target, &entries).await?;
                if let Some(files) = &self.files {
                    insert_files(conn, files, &new).await?;
                }
                let source = LoadSource::Manifest {
                    url: &url,
                    entries: &entries,
                };
                rows += self
                    .loader
                    .load(
                        conn,
                        &LoadRequest::new(&self.table, &self.columns, source, &self.options),
                    )
                    .await?;
                report.source = Some(url);
            }
            Staging::Objects => {
                if let Some(files) = &self.files {
                    insert_files(conn, files, &new).await?;
                }
                for url in &new {
                    let source = LoadSource::Object { url };
                    rows += self
                        .loader
                        .load(
                            conn,
                            &LoadRequest::new(&self.table, &self.columns, source, &self.options),
                        )
                        .await?;
                }
                report.source = new.last().cloned();
            }
        }
        report.rows = rows;
        report.loaded_files = new;
        Ok(report)
    }
}

/// Which of `urls` the file table lists.
async fn loaded_files(
    conn: &mut PgConnection,
    files: &FileTable,
    urls: &[String],
) -> Result<HashSet<String>, Error> {
    let table = files.table.quoted();
    let column = files.column.quoted();
    let mut loaded = HashSet::new();
    for chunk in urls.chunks(FILES_PER_STATEMENT) {
        let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT {column} FROM {table} WHERE {column} IN ({})",
            placeholders.join(", ")
        );
        let mut query = sqlx::query_scalar::<_, String>(AssertSqlSafe(sql)).persistent(false);
        for url in chunk {
            query = query.bind(url.as_str());
        }
        let found = query
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| classify_sql("SELECT from the file table", &table, e, false))?;
        loaded.extend(found);
    }
    Ok(loaded)
}

/// Records `urls` as loaded.
async fn insert_files(
    conn: &mut PgConnection,
    files: &FileTable,
    urls: &[String],
) -> Result<(), Error> {
    let table = files.table.quoted();
    let column = files.column.quoted();
    for chunk in urls.chunks(FILES_PER_STATEMENT) {
        let values: Vec<String> = (1..=chunk.len()).map(|i| format!("(${i})")).collect();
        let sql = format!(
            "INSERT INTO {table} ({column}) VALUES {}",
            values.join(", ")
        );
        let mut query = sqlx::query(AssertSqlSafe(sql)).persistent(false);
        for url in chunk {
            query = query.bind(url.as_str());
        }
        query
            .execute(&mut *conn)
            .await
            .map_err(|e| classify_sql("INSERT into the file table", &table, e, true))?;
    }
    Ok(())
}

/// Writes the manifest of `entries`; returns its URL.
async fn write_manifest(
    target: &ManifestTarget<'_>,
    entries: &[ManifestEntry],
) -> Result<String, Error> {
    let url = format!("s3://{}/{}", target.bucket, target.key);
    // The URL goes into the COPY as a literal: refuse it before writing.
    quote_literal(&url)?;
    let body = Manifest::new(entries.to_vec()).to_json();
    target
        .s3
        .put_object()
        .bucket(target.bucket)
        .key(&target.key)
        .content_type("application/json")
        .body(ByteStream::from(body.into_bytes()))
        .send()
        .await
        .map_err(|e| classify_s3("PutObject", &url, e))?;
    tracing::debug!(%url, files = entries.len(), "manifest written");
    Ok(url)
}

/// The distinct S3 URLs among `items`, normalized to `s3://bucket/key`, and
/// the items that are not S3 URLs. Repeats are dropped (and counted).
pub(crate) fn batch_urls<I: AsRef<str>>(items: &[I]) -> (Vec<String>, usize, Vec<RejectedItem>) {
    let mut seen = HashSet::new();
    let mut urls = Vec::new();
    let mut repeated = 0;
    let mut rejected = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let text = item.as_ref();
        match parse_s3_url(text) {
            Some((bucket, key)) => {
                let url = format!("s3://{bucket}/{key}");
                if seen.insert(url.clone()) {
                    urls.push(url);
                } else {
                    repeated += 1;
                }
            }
            None => {
                let shown: String = text.chars().take(200).collect();
                rejected.push(RejectedItem {
                    index,
                    reason: format!("not an s3://bucket/key URL: {shown:?}"),
                });
            }
        }
    }
    (urls, repeated, rejected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_urls_are_normalized_deduplicated_and_checked() {
        let items = [
            "s3://b/k1",
            " s3://b/k2\n",
            "s3://b/k1",
            "not a url",
            "s3://b/k2",
            "s3://b/",
        ];
        let (urls, repeated, rejected) = batch_urls(&items);
        assert_eq!(urls, ["s3://b/k1", "s3://b/k2"]);
        assert_eq!(repeated, 2);
        assert_eq!(rejected.iter().map(|r| r.index).collect::<Vec<_>>(), [3, 5]);
        assert!(rejected[0].reason.contains("not a url"), "{rejected:?}");
    }

    #[test]
    fn file_table_ddl() {
        let files = FileTable {
            table: TableName::qualified("etl", "loaded \"files\"").unwrap(),
            column: Identifier::new("file").unwrap(),
            lock: true,
        };
        assert_eq!(
            files.ddl(),
            "CREATE TABLE IF NOT EXISTS \"etl\".\"loaded \"\"files\"\"\" (\"file\" VARCHAR(2048) NOT NULL PRIMARY KEY)"
        );
    }
}
