//! `chaos-pipeline consume`: the pipeline under test.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use example_support::s3::s3_client;
use example_support::{init_tracing, sdk_config};
use kinesis_checkpoint_redis::RedisCheckpointStore;
use kinesis_connectors_core::{
    BufferLimits, CancellationToken, Emitter, Pipeline, RetryPolicy, ShardConfig, ShardContext,
    StreamConsumer, Utf8Transformer,
};
use kinesis_connectors_kinesis::PollingSource;
use kinesis_connectors_redshift::{PostgresLoader, RedshiftBasicEmitter};
use kinesis_connectors_s3::S3Emitter;
use serde_json::json;
use sqlx::AssertSqlSafe;
use sqlx::postgres::PgPoolOptions;

use crate::args::Args;
use crate::faults::{Fault, Faulty};
use crate::{Sink, report, watch_stdin};

/// The flags of `consume`.
pub(crate) const FLAGS: &[&str] = &[
    "stream",
    "app",
    "sink",
    "bucket",
    "prefix",
    "table",
    "panic-after",
    "panics",
    "hang-after",
    "hang-secs",
    "emit-timeout",
    "read-timeout",
];

/// Emit retries far shorter than any outage the xtask injects (about 1 s
/// in all), so an outage always outlasts them and the shard fails: the
/// scenarios test the restart from the checkpoint, not the retry loop.
const EMIT_RETRY: RetryPolicy = RetryPolicy::new()
    .with_initial_delay(Duration::from_millis(100))
    .with_max_delay(Duration::from_millis(500))
    .with_max_attempts(4);

/// Restarts of a failed shard: 1 s doubling to 4 s (plus jitter), so a
/// healed sink is noticed within seconds instead of the default 60 s cap.
const RESTART_BACKOFF: RetryPolicy = RetryPolicy::new()
    .with_initial_delay(Duration::from_secs(1))
    .with_max_delay(Duration::from_secs(4));

pub(crate) async fn run(args: Args) -> Result<()> {
    init_tracing();
    let stream = args.string("stream")?;
    let application = args.string("app")?;
    let sink = Sink::from_args(&args)?;
    let fault = Fault::from_args(&args)?;
    let mut config = ShardConfig::default()
        .with_idle_delay(Duration::from_millis(200))
        .with_retry(EMIT_RETRY);
    if let Some(limit) = args.seconds("emit-timeout")? {
        config = config.with_emit_timeout(limit);
    }
    if let Some(limit) = args.seconds("read-timeout")? {
        config = config.with_read_timeout(limit);
    }

    let aws = sdk_config().await;
    let kinesis = aws_sdk_kinesis::Client::new(&aws);
    let s3 = s3_client(&aws, true);
    let redis_url = std::env::var("REDIS_URL").context("REDIS_URL is not set")?;
    let store = RedisCheckpointStore::connect(&redis_url)
        .await
        .context("connecting to Redis")?;

    let objects = S3Emitter::builder(s3.clone(), sink.bucket(), Utf8Transformer)
        .prefix(sink.prefix())
        .suffix(".jsonl")
        .build()
        .context("building the S3 emitter")?;
    let emitter: Arc<dyn Emitter<String>> = match &sink {
        Sink::S3 { .. } => Arc::new(objects),
        Sink::Postgres { table, .. } => {
            let url = std::env::var("DATABASE_URL").context("DATABASE_URL is not set")?;
            // A short acquire timeout: while PostgreSQL is down, each emit
            // fails within 2 s, so the retries run out and the shard fails.
            let pool = PgPoolOptions::new()
                .max_connections(2)
                .acquire_timeout(Duration::from_secs(2))
                .connect(&url)
                .await
                .context("connecting to PostgreSQL")?;
            let loader = RedshiftBasicEmitter::builder(objects, pool.clone())
                .table(table.as_str())
                .file_table(format!("{table}_files").as_str())
                .loader(PostgresLoader::new(s3.clone()))
                .build()
                .context("building the PostgreSQL emitter")?;
            sqlx::raw_sql(AssertSqlSafe(loader.file_table_ddl()))
                .execute(&pool)
                .await
                .context("creating the file table")?;
            Arc::new(loader)
        }
    };
    let emitter: Arc<dyn Emitter<String>> = Arc::new(Faulty::new(emitter, fault));
    let limits = BufferLimits::default()
        .with_max_records(200)
        .with_max_age(Duration::from_secs(1));

    let consumer = StreamConsumer::builder(
        application,
        stream,
        Arc::new(PollingSource::new(kinesis)),
        Arc::new(store),
        move |_: &ShardContext| {
            Pipeline::builder(Utf8Transformer, Arc::clone(&emitter))
                .buffer_limits(limits)
                .build()
        },
    )
    .shard_config(config)
    .restart_backoff(RESTART_BACKOFF)
    .build()
    .context("building the consumer")?;

    let cancel = CancellationToken::new();
    watch_stdin(None, cancel.clone());
    let outcome = consumer.run(cancel).await.context("the consumer stopped")?;
    let unrecovered: Vec<String> = outcome
        .unrecovered()
        .into_iter()
        .map(|(shard, error)| format!("{shard}: {error}"))
        .collect();
    report(&json!({
        "report": {
            "records_emitted": outcome.records_emitted(),
            "shard_failures": outcome.failures().count(),
            "unrecovered": unrecovered,
        }
    }));
    Ok(())
}
