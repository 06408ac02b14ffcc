//! `RedshiftBasicEmitter`: an S3 object per batch, then `COPY` of that object.

use std::fmt;

use async_trait::async_trait;
use kinesis_connectors_core::{Batch, EmitOutcome, Emitter, Encoder};
use kinesis_connectors_s3::S3Emitter;
use sqlx::postgres::PgPool;

use crate::config::{TargetConfig, given_table, target_methods};
use crate::error::Error;
use crate::sql::TableName;
use crate::target::{LoadReport, Staging, Target};

/// Uploads each batch as one S3 object with an [`S3Emitter`], then loads
/// that object into a table (`COPY <table> FROM 's3://bucket/key' …` on
/// Redshift).
///
/// Without a file table, a replayed batch (a retry after the `COPY`
/// committed but before the checkpoint was written) is loaded again:
/// at-least-once. With [`file_table`](RedshiftBasicEmitterBuilder::file_table),
/// the object's URL is recorded in the same transaction as the `COPY`, and a
/// replay — which writes the same key, since the S3 emitter names objects
/// after the batch — loads nothing.
///
/// Redshift reads `FROM 's3://bucket/key'` as a key **prefix**: give the S3
/// emitter a suffix (e.g. `.jsonl`) so that no object key is the beginning
/// of another, and set [`gzip`](RedshiftBasicEmitterBuilder::gzip) exactly
/// when the S3 emitter compresses.
pub struct RedshiftBasicEmitter<T: Encoder> {
    s3: S3Emitter<T>,
    target: Target,
}

impl<T: Encoder> fmt::Debug for RedshiftBasicEmitter<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedshiftBasicEmitter")
            .field("s3", &self.s3)
            .field("target", &self.target)
            .finish()
    }
}

impl<T: Encoder> RedshiftBasicEmitter<T> {
    /// Starts an emitter uploading through `s3` and loading through `pool`
    /// (a pool you built, e.g. with `PgPoolOptions::new().connect(url)`).
    pub fn builder(s3: S3Emitter<T>, pool: PgPool) -> RedshiftBasicEmitterBuilder<T> {
        RedshiftBasicEmitterBuilder {
            s3,
            pool,
            target: TargetConfig::default(),
        }
    }

    /// The emitter that uploads the objects.
    pub fn s3(&self) -> &S3Emitter<T> {
        &self.s3
    }

    /// The `CREATE TABLE IF NOT EXISTS` statement of the file table, when
    /// one is configured (empty otherwise).
    pub fn file_table_ddl(&self) -> String {
        self.target
            .files
            .as_ref()
            .map(crate::target::FileTable::ddl)
            .unwrap_or_default()
    }

    /// Uploads and loads `batch`, like [`Emitter::emit`], and reports what
    /// was loaded.
    pub async fn load(&self, batch: &Batch<T::Item>) -> Result<LoadReport, Error> {
        let upload = self.s3.upload(batch).await?;
        let mut report = match &upload.object {
            Some(object) => self.target.load(&[object.url()], Staging::Objects).await?,
            None => LoadReport::default(),
        };
        report.rejected = upload.rejected;
        Ok(report)
    }
}

#[async_trait]
impl<T: Encoder> Emitter<T::Item> for RedshiftBasicEmitter<T> {
    async fn emit(&self, batch: &Batch<T::Item>) -> kinesis_connectors_core::Result<EmitOutcome> {
        let report = self.load(batch).await?;
        Ok(EmitOutcome::with_rejected(report.rejected))
    }
}

/// Builds a [`RedshiftBasicEmitter`]; see [`RedshiftBasicEmitter::builder`].
pub struct RedshiftBasicEmitterBuilder<T: Encoder> {
    s3: S3Emitter<T>,
    pool: PgPool,
    target: TargetConfig,
}

impl<T: Encoder> fmt::Debug for RedshiftBasicEmitterBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedshiftBasicEmitterBuilder")
            .field("s3", &self.s3)
            .finish_non_exhaustive()
    }
}

impl<T: Encoder> RedshiftBasicEmitterBuilder<T> {
    /// The table the objects are loaded into (required): `"schema.table"`,
    /// `"table"` or a [`TableName`].
    pub fn table<N>(mut self, table: N) -> Self
    where
        N: TryInto<TableName>,
        N::Error: Into<Error>,
    {
        self.target.table = given_table(table);
        self
    }

    /// A table of loaded files (optional): makes replays load nothing; see
    /// [`RedshiftBasicEmitter`].
    pub fn file_table<N>(mut self, table: N) -> Self
    where
        N: TryInto<TableName>,
        N::Error: Into<Error>,
    {
        self.target.file_table = given_table(table);
        self
    }

    /// Checks the configuration and builds the emitter.
    ///
    /// Fails with [`Error::Config`] when the table or the loader is missing,
    /// a table or column name is invalid, an option cannot be written into a
    /// `COPY`, or a file table is set with a key template lacking
    /// `{first_seq}` or `{last_seq}`.
    pub fn build(self) -> Result<RedshiftBasicEmitter<T>, Error> {
        let target = self.target.build(self.pool, "table", false)?;
        // The file table skips an object already loaded, by its key: a key
        // that leaves out an end of the batch could stand for other records.
        if target.files.is_some() && !self.s3.names_the_batch_range() {
            return Err(Error::Config(format!(
                "with a file table, the S3 key template {:?} must contain both {{first_seq}} and {{last_seq}}, \
                 so that each object name stands for exactly one batch",
                self.s3.key_template()
            )));
        }
        Ok(RedshiftBasicEmitter {
            s3: self.s3,
            target,
        })
    }
}

target_methods!(RedshiftBasicEmitterBuilder<T: Encoder>);
