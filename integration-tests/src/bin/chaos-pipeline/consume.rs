//! `chaos-pipeline consume`: the pipeline under test.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use example_support::s3::s3_client;
use example_support::{init_tracing, sdk_config};
use kinesis_checkpoint_redis::RedisCheckpointStore;
use kinesis_connectors_core::RecordSource;
use kinesis_connectors_core::{
    BufferLimits, CancellationToken, ConsumerStatus, Emitter, LeaseCoordinator, Pipeline,
    RetryPolicy, ShardAssigner, ShardConfig, ShardContext, ShardState, SingleWorker,
    StreamConsumer, Utf8Transformer,
};
use kinesis_connectors_kinesis::{FanOutConsumer, FanOutSource, PollingSource};
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
    "worker",
    "failover",
    "fan-out",
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

/// How often the consumer prints which shards it holds.
const STATUS_EVERY: Duration = Duration::from_millis(500);

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

    // `--fan-out NAME`: read with enhanced fan-out through the registration
    // NAME, registered (or found) at every start.
    let source: Arc<dyn RecordSource> = match args.optional("fan-out") {
        None => Arc::new(PollingSource::new(kinesis)),
        Some(name) => {
            let registration = FanOutConsumer::register(&kinesis, &stream, &name)
                .await
                .with_context(|| format!("registering fan-out consumer {name}"))?;
            Arc::new(FanOutSource::new(kinesis, &registration))
        }
    };
    let store = Arc::new(store);
    let assigner = assigner(&args, &store, &application, &stream)?;
    let consumer = StreamConsumer::builder(
        application,
        stream,
        source,
        store,
        move |_: &ShardContext| {
            Pipeline::builder(Utf8Transformer, Arc::clone(&emitter))
                .buffer_limits(limits)
                .build()
        },
    )
    .shard_config(config)
    .restart_backoff(RESTART_BACKOFF)
    .assigner(Arc::clone(&assigner))
    .build()
    .context("building the consumer")?;

    let cancel = CancellationToken::new();
    watch_stdin(None, cancel.clone());
    tokio::spawn(print_status(
        consumer.status(),
        assigner.worker_id().to_owned(),
        cancel.clone(),
    ));
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

/// `SingleWorker` (every shard, the default), or with `--worker ID` one of
/// several workers sharing the stream through leases in the Redis store,
/// expiring after `--failover` seconds (the coordinator's default without).
fn assigner(
    args: &Args,
    store: &Arc<RedisCheckpointStore>,
    application: &str,
    stream: &str,
) -> Result<Arc<dyn ShardAssigner>> {
    let failover = args.seconds("failover")?;
    let Some(worker) = args.optional("worker") else {
        if failover.is_some() {
            bail!("--failover needs --worker");
        }
        return Ok(Arc::new(SingleWorker::default()));
    };
    let mut leases = LeaseCoordinator::new(store.clone(), application, stream, worker);
    if let Some(failover) = failover {
        leases = leases.failover_time(failover);
    }
    Ok(Arc::new(leases))
}

/// Every 500 ms until `cancel`, one line of the shards this worker holds a
/// lease on and reads now, `{"status":{"worker":…,"held":…,"reading":…,
/// "shards":[…]}}`: the xtask measures how the shards are spread between
/// workers from these, and the list tells in the log who had which shard.
async fn print_status(status: ConsumerStatus, worker: String, cancel: CancellationToken) {
    while !cancel.is_cancelled() {
        let shards = status.shards();
        let held: Vec<&str> = shards
            .iter()
            .filter(|s| s.lease_held)
            .map(|s| s.shard_id.as_str())
            .collect();
        let reading = shards
            .iter()
            .filter(|s| s.state == ShardState::Reading)
            .count();
        report(&json!({
            "status": {
                "worker": worker,
                "held": held.len(),
                "reading": reading,
                "shards": held,
            }
        }));
        tokio::select! {
            () = cancel.cancelled() => {}
            () = tokio::time::sleep(STATUS_EVERY) => {}
        }
    }
}
