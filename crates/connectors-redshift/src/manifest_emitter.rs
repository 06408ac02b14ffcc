//! `RedshiftManifestEmitter`: the second stage of the manifest pipeline.

use std::fmt;

use async_trait::async_trait;
use kinesis_connectors_core::{Batch, EmitOutcome, Emitter};
use sqlx::postgres::PgPool;

use crate::config::{TargetConfig, given_table, target_methods};
use crate::error::Error;
use crate::manifest::manifest_key;
use crate::sql::{TableName, quote_literal};
use crate::target::{LoadReport, ManifestTarget, Staging, Target, batch_urls};

/// The default key prefix of manifests.
pub const DEFAULT_MANIFEST_PREFIX: &str = "manifests/";

/// Loads the S3 objects listed on a manifest stream (the `s3://bucket/key`
/// records [`S3ManifestEmitter`](kinesis_connectors_s3::S3ManifestEmitter)
/// writes) into a table, each file exactly once.
///
/// For every batch, in one transaction: `LOCK` the file table; select which
/// of the batch's files it already lists and drop those (a replayed batch
/// loads nothing twice); write a manifest of the rest to S3 under a key made
/// from the batch (`{prefix}{application}/{stream}/{shard}/{first}-{last}.manifest`);
/// insert the new files into the file table; load them through the
/// [`Loader`](crate::Loader) (`COPY <table> FROM '<manifest>' MANIFEST …` on
/// Redshift); commit. Any failure rolls everything back, so the file table
/// lists exactly the files whose rows are in the table.
///
/// Items that are not `s3://bucket/key` URLs are returned as rejected (to the
/// pipeline's bad-record policy); a URL repeated in a batch is loaded once.
/// See the [crate documentation](crate) for an example.
pub struct RedshiftManifestEmitter {
    target: Target,
    s3: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    mandatory: bool,
}

impl fmt::Debug for RedshiftManifestEmitter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedshiftManifestEmitter")
            .field("target", &self.target)
            .field("manifest_bucket", &self.bucket)
            .field("manifest_prefix", &self.prefix)
            .field("copy_mandatory", &self.mandatory)
            .finish_non_exhaustive()
    }
}

impl RedshiftManifestEmitter {
    /// Starts an emitter loading through `pool` (a pool you built, e.g. with
    /// `PgPoolOptions::new().connect(url)`), writing manifests to
    /// `manifest_bucket` through `s3`.
    pub fn builder(
        pool: PgPool,
        s3: aws_sdk_s3::Client,
        manifest_bucket: impl Into<String>,
    ) -> RedshiftManifestEmitterBuilder {
        RedshiftManifestEmitterBuilder {
            pool,
            s3,
            bucket: manifest_bucket.into(),
            prefix: DEFAULT_MANIFEST_PREFIX.to_owned(),
            mandatory: true,
            target: TargetConfig::default(),
        }
    }

    /// The key the manifest of `batch` is written under.
    pub fn manifest_key<I>(&self, batch: &Batch<I>) -> String {
        manifest_key(&self.prefix, batch)
    }

    /// The `CREATE TABLE IF NOT EXISTS` statement of a file table this
    /// emitter can use (one `VARCHAR(2048)` primary-key column); valid on
    /// Redshift and PostgreSQL.
    pub fn file_table_ddl(&self) -> String {
        self.target
            .files
            .as_ref()
            .map(crate::target::FileTable::ddl)
            .unwrap_or_default()
    }

    /// Loads the files `batch` lists, like [`Emitter::emit`], and reports
    /// what was loaded and skipped.
    pub async fn load<I: AsRef<str>>(&self, batch: &Batch<I>) -> Result<LoadReport, Error> {
        let (urls, repeated, rejected) = batch_urls(&batch.items);
        let mut report = if urls.is_empty() {
            LoadReport::default()
        } else {
            let staging = Staging::Manifest(ManifestTarget {
                s3: &self.s3,
                bucket: &self.bucket,
                key: self.manifest_key(batch),
                mandatory: self.mandatory,
            });
            self.target.load(&urls, staging).await?
        };
        report.skipped_files += repeated;
        report.rejected = rejected;
        Ok(report)
    }
}

#[async_trait]
impl<I: AsRef<str> + Send + Sync> Emitter<I> for RedshiftManifestEmitter {
    async fn emit(&self, batch: &Batch<I>) -> kinesis_connectors_core::Result<EmitOutcome> {
        let report = self.load(batch).await?;
        Ok(EmitOutcome::with_rejected(report.rejected))
    }
}

/// Builds a [`RedshiftManifestEmitter`]; see [`RedshiftManifestEmitter::builder`].
pub struct RedshiftManifestEmitterBuilder {
    pool: PgPool,
    s3: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    mandatory: bool,
    target: TargetConfig,
}

impl fmt::Debug for RedshiftManifestEmitterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedshiftManifestEmitterBuilder")
            .field("manifest_bucket", &self.bucket)
            .field("manifest_prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedshiftManifestEmitterBuilder {
    /// The table the files are loaded into (required): `"schema.table"`,
    /// `"table"` or a [`TableName`].
    pub fn data_table<N>(mut self, table: N) -> Self
    where
        N: TryInto<TableName>,
        N::Error: Into<Error>,
    {
        self.target.table = given_table(table);
        self
    }

    /// The table of loaded files (required): one row per loaded URL, in
    /// [`file_column`](Self::file_column). Create it with
    /// [`RedshiftManifestEmitter::file_table_ddl`] or your own DDL; on
    /// PostgreSQL give the column a primary key or unique constraint.
    pub fn file_table<N>(mut self, table: N) -> Self
    where
        N: TryInto<TableName>,
        N::Error: Into<Error>,
    {
        self.target.file_table = given_table(table);
        self
    }

    /// The key prefix of manifests (default `manifests/`; a `/` is added
    /// when missing; empty for the bucket's root).
    pub fn manifest_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The manifest entries' `mandatory` flag (default `true`: a missing
    /// file fails the load instead of being skipped).
    pub fn copy_mandatory(mut self, mandatory: bool) -> Self {
        self.mandatory = mandatory;
        self
    }

    /// Checks the configuration and builds the emitter.
    ///
    /// Fails with [`Error::Config`] when the data table, the file table or
    /// the loader is missing, a table or column name is invalid, the file
    /// table is the data table, the bucket is not a bucket name, the prefix
    /// starts with `/` or holds a backslash, or an option cannot be written
    /// into a `COPY`.
    pub fn build(self) -> Result<RedshiftManifestEmitter, Error> {
        let bucket = self.bucket;
        if bucket.is_empty()
            || bucket.contains('/')
            || bucket.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(Error::Config(format!(
                "manifest bucket {bucket:?} is not a bucket name (no `/`, no spaces; the key prefix goes in manifest_prefix)"
            )));
        }
        quote_literal(&bucket)?;
        let mut prefix = self.prefix;
        if prefix.starts_with('/') {
            return Err(Error::Config(format!(
                "manifest prefix {prefix:?} starts with `/`"
            )));
        }
        if prefix.chars().any(char::is_control) {
            return Err(Error::Config(format!(
                "manifest prefix {prefix:?} contains a control character"
            )));
        }
        quote_literal(&prefix)?;
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        let target = self.target.build(self.pool, "data_table", true)?;
        Ok(RedshiftManifestEmitter {
            target,
            s3: self.s3,
            bucket,
            prefix,
            mandatory: self.mandatory,
        })
    }
}

target_methods!(RedshiftManifestEmitterBuilder);
