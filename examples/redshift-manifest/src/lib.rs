//! The seed's two-stage manifest pipeline, in Rust.
//!
//! - **Stage 1** reads the input stream and writes one S3 object of JSON
//!   lines per batch (`S3Emitter`), then puts the object's URL on the
//!   manifest stream (`S3ManifestEmitter`).
//! - **Stage 2** reads the manifest stream and loads each batch of files in
//!   one transaction (`RedshiftManifestEmitter`): the file table makes every
//!   file load exactly once, however often batches are replayed.
//!
//! The loader is Redshift's `COPY … FROM 's3://…' MANIFEST` (`loader =
//! "redshift"`) or, for PostgreSQL/Aurora and the local stack, the
//! PostgreSQL loader that streams the objects into `COPY … FROM STDIN`.
//! [`Pipelines::start`] builds both consumers; [`Counts`] tells what they
//! did so far (the demo's live progress).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use aws_config::SdkConfig;
use example_support::ConsumerSettings;
use example_support::s3::{ensure_bucket, s3_client};
use kinesis_connectors_core::{
    Batch, CancellationToken, EmitOutcome, Emitter, Pipeline, StreamConsumer, StreamReport,
    Utf8Transformer, async_trait,
};
use kinesis_connectors_redshift::{
    CopyFormat, Credentials, PostgresLoader, RedshiftLoader, RedshiftManifestEmitter, TableName,
};
use kinesis_connectors_s3::{S3Emitter, S3ManifestEmitter};
use serde::Deserialize;
use sqlx::AssertSqlSafe;
use sqlx::postgres::{PgPool, PgPoolOptions};
use tokio::task::JoinHandle;
use tracing::info;

/// The example's configuration file; see `config/redshift-manifest.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the objects and manifests go.
    pub s3: S3Settings,
    /// Stage 1: the input stream → S3 objects + the manifest stream.
    pub stage1: ConsumerSettings,
    /// Stage 2: the manifest stream → the database. Its `stream` is the
    /// manifest stream stage 1 writes to.
    pub stage2: ConsumerSettings,
    /// Creates the manifest stream (one shard) when it does not exist.
    #[serde(default = "yes")]
    pub create_manifest_stream: bool,
    /// The database the files are loaded into.
    pub database: DatabaseSettings,
}

fn yes() -> bool {
    true
}

/// The bucket and key layout.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Settings {
    /// The bucket of the data files and manifests.
    pub bucket: String,
    /// Key prefix of the data files.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Key prefix of the manifests.
    #[serde(default = "default_manifest_prefix")]
    pub manifest_prefix: String,
    /// Gzip the data files (and `COPY … GZIP`).
    #[serde(default = "yes")]
    pub gzip: bool,
    /// Creates the bucket when it does not exist.
    #[serde(default)]
    pub create_bucket: bool,
    /// Path-style URLs (`http://host/bucket/key`), which S3 emulators need.
    #[serde(default)]
    pub force_path_style: bool,
}

fn default_prefix() -> String {
    "events".to_owned()
}

fn default_manifest_prefix() -> String {
    "manifests".to_owned()
}

/// The target database.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// How files are loaded.
    #[serde(default)]
    pub loader: LoaderKind,
    /// The connection URL (default: the `DATABASE_URL` environment variable).
    pub url: Option<String>,
    /// The table the events are loaded into (`schema.table` or `table`).
    pub data_table: String,
    /// The table of loaded files (the exactly-once guard).
    pub file_table: String,
    /// Creates both tables when missing (the data table with the
    /// producer's event columns).
    #[serde(default)]
    pub create_tables: bool,
    /// Redshift: the IAM role `COPY` uses to read S3 (default: the access
    /// keys of the SDK's credential chain).
    pub iam_role: Option<String>,
    /// Database connections (stage 2 uses one per shard at a time).
    #[serde(default = "default_connections")]
    pub max_connections: u32,
}

fn default_connections() -> u32 {
    4
}

/// How files get into the database.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoaderKind {
    /// `COPY … FROM STDIN` on PostgreSQL/Aurora (the objects are read here).
    #[default]
    Postgres,
    /// Redshift's server-side `COPY … FROM 's3://…' MANIFEST`.
    Redshift,
}

impl Config {
    /// Refuses configurations that cannot work, naming the setting.
    pub fn validate(&self) -> Result<()> {
        example_support::s3::check_bucket_name(&self.s3.bucket)?;
        self.stage1.validate("stage1")?;
        self.stage2.validate("stage2")?;
        ensure!(
            self.stage1.stream != self.stage2.stream,
            "stage2.stream is the manifest stream and must differ from the input stream stage1.stream ({})",
            self.stage1.stream
        );
        ensure!(
            self.stage1.application != self.stage2.application,
            "stage1.application and stage2.application must differ (they name separate checkpoints)"
        );
        TableName::parse(&self.database.data_table).context("database.data_table")?;
        TableName::parse(&self.database.file_table).context("database.file_table")?;
        ensure!(
            self.database.max_connections >= 1,
            "database.max_connections must be at least 1"
        );
        Ok(())
    }

    /// The database URL from the file or `DATABASE_URL`.
    pub fn database_url(&self) -> Result<String> {
        match &self.database.url {
            Some(url) => Ok(url.clone()),
            None => std::env::var("DATABASE_URL")
                .context("set database.url in the configuration file or DATABASE_URL"),
        }
    }
}

/// The data table's columns: the producer's event.
pub fn data_table_ddl(table: &TableName) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {table} (id BIGINT NOT NULL, user_id VARCHAR(64), \
         kind VARCHAR(16), amount_cents BIGINT, created_at TIMESTAMPTZ, payload VARCHAR(65535))"
    )
}

/// What the pipelines did so far; updated as batches are delivered.
#[derive(Debug, Default)]
pub struct Counts {
    records_archived: AtomicU64,
    objects_written: AtomicU64,
    manifests_loaded: AtomicU64,
}

impl Counts {
    /// Records stage 1 wrote to S3.
    pub fn records_archived(&self) -> u64 {
        self.records_archived.load(Ordering::Relaxed)
    }

    /// Objects stage 1 wrote (one per batch).
    pub fn objects_written(&self) -> u64 {
        self.objects_written.load(Ordering::Relaxed)
    }

    /// Batches of files stage 2 loaded (one manifest each).
    pub fn manifests_loaded(&self) -> u64 {
        self.manifests_loaded.load(Ordering::Relaxed)
    }
}

/// Wraps an emitter to count what it delivered.
struct Counted<E> {
    inner: E,
    counts: Arc<Counts>,
    stage: Stage,
}

#[derive(Clone, Copy)]
enum Stage {
    Archive,
    Load,
}

#[async_trait]
impl<T: Send + Sync, E: Emitter<T>> Emitter<T> for Counted<E> {
    async fn emit(&self, batch: &Batch<T>) -> kinesis_connectors_core::Result<EmitOutcome> {
        let outcome = self.inner.emit(batch).await?;
        if !batch.items.is_empty() {
            let counts = &self.counts;
            match self.stage {
                Stage::Archive => {
                    counts.objects_written.fetch_add(1, Ordering::Relaxed);
                    let records = batch.items.len() as u64;
                    counts
                        .records_archived
                        .fetch_add(records, Ordering::Relaxed);
                }
                Stage::Load => {
                    counts.manifests_loaded.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        Ok(outcome)
    }

    async fn shutdown(&self) -> kinesis_connectors_core::Result<()> {
        self.inner.shutdown().await
    }
}

/// Both stages, running.
pub struct Pipelines {
    /// What they did so far.
    pub counts: Arc<Counts>,
    /// The database connections (also for looking at the rows).
    pub pool: PgPool,
    /// The data table.
    pub data_table: TableName,
    stage1: JoinHandle<kinesis_connectors_core::Result<StreamReport>>,
    stage2: JoinHandle<kinesis_connectors_core::Result<StreamReport>>,
}

impl Pipelines {
    /// Creates what is missing (bucket, manifest stream, tables, as
    /// configured), then starts both consumers; they run until `cancel`.
    pub async fn start(
        config: &Config,
        aws: &SdkConfig,
        cancel: CancellationToken,
    ) -> Result<Self> {
        config.validate()?;
        let kinesis = aws_sdk_kinesis::Client::new(aws);
        let s3 = s3_client(aws, config.s3.force_path_style);
        ensure_bucket(&s3, &config.s3.bucket, config.s3.create_bucket).await?;
        if config.create_manifest_stream {
            producer::ensure_stream(&kinesis, &config.stage2.stream, 1).await?;
        }
        let url = config.database_url()?;
        let pool = PgPoolOptions::new()
            .max_connections(config.database.max_connections)
            .acquire_timeout(Duration::from_secs(30))
            .connect(&url)
            .await
            .with_context(|| {
                format!(
                    "cannot connect to the database at {}",
                    example_support::redact(&url)
                )
            })?;
        let data_table = TableName::parse(&config.database.data_table)?;
        let counts = Arc::new(Counts::default());

        let stage1 = stage1(config, aws, &kinesis, &s3, &counts).await?;
        let (stage2, file_table_ddl) = stage2(config, aws, &s3, &pool, &counts).await?;
        if config.database.create_tables {
            for ddl in [data_table_ddl(&data_table), file_table_ddl] {
                sqlx::raw_sql(AssertSqlSafe(ddl.clone()))
                    .execute(&pool)
                    .await
                    .with_context(|| format!("cannot create a table: {ddl}"))?;
            }
        }
        info!(
            input = config.stage1.stream,
            manifests = config.stage2.stream,
            bucket = config.s3.bucket,
            table = %data_table,
            "pipelines starting"
        );
        Ok(Self {
            counts,
            pool,
            data_table,
            stage1: tokio::spawn(stage1.run(cancel.clone())),
            stage2: tokio::spawn(stage2.run(cancel)),
        })
    }

    /// Rows in the data table, and distinct event ids among them.
    pub async fn rows(&self) -> Result<(u64, u64)> {
        let sql = format!(
            "SELECT count(*), count(DISTINCT id) FROM {}",
            self.data_table
        );
        let (rows, ids): (i64, i64) = sqlx::query_as(AssertSqlSafe(sql))
            .fetch_one(&self.pool)
            .await
            .context("counting the loaded rows")?;
        Ok((rows.max(0) as u64, ids.max(0) as u64))
    }

    /// Waits for both consumers (after `cancel`); fails when one of them
    /// could not run or a shard stopped on an error.
    pub async fn join(self) -> Result<(StreamReport, StreamReport)> {
        let stage1 = finished("stage 1", self.stage1).await?;
        let stage2 = finished("stage 2", self.stage2).await?;
        Ok((stage1, stage2))
    }
}

/// The report of a stage's consumer task, checked for failed shards.
async fn finished(
    name: &str,
    task: JoinHandle<kinesis_connectors_core::Result<StreamReport>>,
) -> Result<StreamReport> {
    let report = task
        .await
        .with_context(|| format!("{name} panicked"))?
        .with_context(|| format!("{name} could not run"))?;
    example_support::check_report(name, &report)?;
    Ok(report)
}

async fn stage1(
    config: &Config,
    aws: &SdkConfig,
    kinesis: &aws_sdk_kinesis::Client,
    s3: &aws_sdk_s3::Client,
    counts: &Arc<Counts>,
) -> Result<StreamConsumer<Utf8Transformer>> {
    let settings = &config.stage1;
    let objects = S3Emitter::builder(s3.clone(), &config.s3.bucket, Utf8Transformer)
        .prefix(&config.s3.prefix)
        // Redshift reads `FROM 's3://bucket/key'` as a key prefix: a suffix
        // keeps any key from being the start of another.
        .suffix(".jsonl")
        .gzip(config.s3.gzip)
        .build()?;
    let emitter = Arc::new(Counted {
        inner: S3ManifestEmitter::new(objects, kinesis.clone(), &config.stage2.stream)?,
        counts: counts.clone(),
        stage: Stage::Archive,
    });
    settings
        .consumer("stage1", aws, move |limits| {
            Pipeline::builder(Utf8Transformer, emitter.clone())
                .buffer_limits(limits)
                .build()
        })
        .await
}

async fn stage2(
    config: &Config,
    aws: &SdkConfig,
    s3: &aws_sdk_s3::Client,
    pool: &PgPool,
    counts: &Arc<Counts>,
) -> Result<(StreamConsumer<Utf8Transformer>, String)> {
    let database = &config.database;
    let builder = RedshiftManifestEmitter::builder(pool.clone(), s3.clone(), &config.s3.bucket)
        .manifest_prefix(&config.s3.manifest_prefix)
        .data_table(database.data_table.as_str())
        .file_table(database.file_table.as_str())
        .format(CopyFormat::JsonAuto)
        .gzip(config.s3.gzip);
    let builder = match database.loader {
        LoaderKind::Postgres => builder.loader(PostgresLoader::new(s3.clone())),
        LoaderKind::Redshift => {
            let credentials = match &database.iam_role {
                Some(role) => Credentials::iam_role(role.clone()),
                None => Credentials::from_provider(
                    aws.credentials_provider()
                        .context("no AWS credentials for Redshift's COPY: set database.iam_role or configure credentials")?,
                ),
            };
            builder
                .time_format("auto")
                .loader(RedshiftLoader::new(credentials))
        }
    };
    let emitter = builder.build()?;
    let file_table_ddl = emitter.file_table_ddl();
    let emitter = Arc::new(Counted {
        inner: emitter,
        counts: counts.clone(),
        stage: Stage::Load,
    });
    let consumer = config
        .stage2
        .consumer("stage2", aws, move |limits| {
            Pipeline::builder(Utf8Transformer, emitter.clone())
                .buffer_limits(limits)
                .build()
        })
        .await?;
    Ok((consumer, file_table_ddl))
}

/// Objects under `prefix` in `bucket`.
pub async fn count_objects(s3: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> Result<u64> {
    let mut count = 0;
    let mut token = None;
    loop {
        let page = s3
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_continuation_token(token)
            .send()
            .await
            .with_context(|| format!("cannot list s3://{bucket}/{prefix}"))?;
        count += page.contents().len() as u64;
        token = page.next_continuation_token().map(str::to_owned);
        if token.is_none() {
            return Ok(count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = include_str!("../config/redshift-manifest.toml");

    #[test]
    fn the_sample_configuration_is_valid() {
        let config: Config = example_support::parse_config(SAMPLE).unwrap();
        config.validate().unwrap();
        assert_eq!(config.database.loader, LoaderKind::Postgres);
        assert!(config.s3.gzip);
    }

    #[test]
    fn stages_must_use_different_streams_and_applications() {
        let mut config: Config = example_support::parse_config(SAMPLE).unwrap();
        config.stage2.stream = config.stage1.stream.clone();
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("stage2.stream"), "{error}");

        let mut config: Config = example_support::parse_config(SAMPLE).unwrap();
        config.stage2.application = config.stage1.application.clone();
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("application"), "{error}");
    }

    #[test]
    fn the_data_table_has_the_event_columns() {
        let table = TableName::parse("analytics.events").unwrap();
        assert_eq!(
            data_table_ddl(&table),
            "CREATE TABLE IF NOT EXISTS \"analytics\".\"events\" (id BIGINT NOT NULL, \
             user_id VARCHAR(64), kind VARCHAR(16), amount_cents BIGINT, \
             created_at TIMESTAMPTZ, payload VARCHAR(65535))"
        );
    }
}
