//! The loader seam: how files listed in S3 get into a table, inside the
//! emitter's transaction.

use std::fmt;

use async_trait::async_trait;
use sqlx::postgres::PgConnection;

use crate::copy::{CopyOptions, Credentials, RedshiftCopy};
use crate::error::{Error, classify_copy};
use crate::manifest::ManifestEntry;
use crate::sql::{Identifier, TableName, quote_literal};

/// What to load: a manifest listing the files, or one object.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum LoadSource<'a> {
    /// The manifest at `url`, already written to S3, and its entries.
    Manifest {
        /// The manifest's `s3://bucket/key` URL.
        url: &'a str,
        /// The files it lists.
        entries: &'a [ManifestEntry],
    },
    /// A single object ([`RedshiftBasicEmitter`](crate::RedshiftBasicEmitter)).
    Object {
        /// The object's `s3://bucket/key` URL.
        url: &'a str,
    },
}

impl LoadSource<'_> {
    /// The URL the load reads: the manifest, or the object.
    pub fn url(&self) -> &str {
        match self {
            Self::Manifest { url, .. } | Self::Object { url } => url,
        }
    }

    /// The files to load, each with whether it must exist.
    pub fn files(&self) -> Vec<ManifestEntry> {
        match self {
            Self::Manifest { entries, .. } => entries.to_vec(),
            Self::Object { url } => vec![ManifestEntry {
                url: (*url).to_owned(),
                mandatory: true,
            }],
        }
    }
}

/// One load: which files go into which table, in which format.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct LoadRequest<'a> {
    /// The data table.
    pub table: &'a TableName,
    /// The target columns, in file order; empty for "every column of the
    /// table, in table order".
    pub columns: &'a [Identifier],
    /// The files.
    pub source: LoadSource<'a>,
    /// The format and conversion options.
    pub options: &'a CopyOptions,
}

impl<'a> LoadRequest<'a> {
    /// A request to load `source` into `table`.
    pub fn new(
        table: &'a TableName,
        columns: &'a [Identifier],
        source: LoadSource<'a>,
        options: &'a CopyOptions,
    ) -> Self {
        Self {
            table,
            columns,
            source,
            options,
        }
    }
}

/// Loads files from S3 into a table, on the connection of the emitter's open
/// transaction.
///
/// The emitter has already skipped files that were loaded before and added
/// the new ones to its file table in the same transaction; the loader only
/// loads. It must not commit or roll back: when it fails the emitter rolls
/// the whole transaction back. Two implementations come with the crate:
/// [`RedshiftLoader`] (Redshift's server-side `COPY … FROM 's3://…'`) and
/// [`PostgresLoader`](crate::PostgresLoader) (streams the objects into
/// PostgreSQL's `COPY … FROM STDIN`).
#[async_trait]
pub trait Loader: Send + Sync + fmt::Debug {
    /// Loads the files of `request`; returns how many rows were loaded.
    ///
    /// Errors: a rejected load (bad data) is
    /// [`Error::CopyRejected`] naming the table and `request.source.url()`;
    /// connection losses and serialization failures are retryable.
    async fn load(&self, conn: &mut PgConnection, request: &LoadRequest<'_>) -> Result<u64, Error>;

    /// Checks the loader's own configuration against `options`; emitter
    /// builders call it so that mistakes show at `build()`.
    fn validate(&self, options: &CopyOptions) -> Result<(), Error> {
        let _ = options;
        Ok(())
    }
}

#[async_trait]
impl<L: Loader + ?Sized> Loader for std::sync::Arc<L> {
    async fn load(&self, conn: &mut PgConnection, request: &LoadRequest<'_>) -> Result<u64, Error> {
        (**self).load(conn, request).await
    }

    fn validate(&self, options: &CopyOptions) -> Result<(), Error> {
        (**self).validate(options)
    }
}

/// Redshift's own `COPY … FROM 's3://…'`: the cluster reads the files from
/// S3 itself, with the given [`Credentials`].
///
/// The statement (with secrets redacted) is logged at `debug` level:
///
/// ```text
/// COPY "public"."events" FROM 's3://bucket/manifests/…/1-9.manifest'
///   IAM_ROLE 'arn:aws:iam::123456789012:role/loader' MANIFEST JSON 'auto' GZIP
/// ```
#[derive(Debug, Clone)]
pub struct RedshiftLoader {
    credentials: Credentials,
    region: Option<String>,
}

impl RedshiftLoader {
    /// A loader authenticating to S3 with `credentials`.
    pub fn new(credentials: Credentials) -> Self {
        Self {
            credentials,
            region: None,
        }
    }

    /// `REGION '<region>'`: the bucket's region, when it differs from the
    /// cluster's.
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    fn statement_parts<'a>(&'a self, request: &'a LoadRequest<'a>) -> RedshiftCopy<'a> {
        RedshiftCopy {
            table: request.table,
            columns: request.columns,
            from: request.source.url(),
            manifest: matches!(request.source, LoadSource::Manifest { .. }),
            region: self.region.as_deref(),
            options: request.options,
        }
    }
}

#[async_trait]
impl Loader for RedshiftLoader {
    async fn load(&self, conn: &mut PgConnection, request: &LoadRequest<'_>) -> Result<u64, Error> {
        let credentials = self.credentials.resolve().await?;
        let parts = self.statement_parts(request);
        let statement = parts.statement(&credentials, false)?;
        tracing::debug!(
            statement = %parts.statement(&credentials, true)?,
            "running Redshift COPY"
        );
        let done = sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(conn)
            .await
            .map_err(|e| classify_copy(&request.table.quoted(), request.source.url(), e))?;
        Ok(done.rows_affected())
    }

    fn validate(&self, options: &CopyOptions) -> Result<(), Error> {
        options.validate()?;
        self.credentials.validate()?;
        if let Some(region) = &self.region {
            if region.trim().is_empty() {
                return Err(Error::Config("the COPY region is empty".to_owned()));
            }
            quote_literal(region)?;
        }
        Ok(())
    }
}
