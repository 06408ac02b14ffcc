//! `chaos-pipeline drive`: creates the stream and the sink, produces events
//! with unique ids at a fixed rate, and reports what the sink holds.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use example_support::s3::{ensure_bucket, s3_client};
use example_support::sdk_config;
use integration_tests::{PutOptions, put_records};
use kinesis_connectors_core::CancellationToken;
use producer::ProducerConfig;
use serde_json::json;
use sqlx::AssertSqlSafe;
use sqlx::postgres::{PgPool, PgPoolOptions};

use crate::args::Args;
use crate::tally::{Counts, S3Tally, postgres_counts};
use crate::{Sink, report, watch_stdin};

/// The flags of `drive`.
pub(crate) const FLAGS: &[&str] = &[
    "stream", "shards", "sink", "bucket", "prefix", "table", "rate",
];

/// How often the sink is counted and a line printed.
const REPORT_EVERY: Duration = Duration::from_millis(500);
/// How often the producer sends what is due.
const SEND_EVERY: Duration = Duration::from_millis(100);
/// Bytes of filler per event: small, so kinesis-local's write pace is the
/// only limit.
const PAYLOAD_BYTES: usize = 64;

pub(crate) async fn run(args: Args) -> Result<()> {
    let stream = args.string("stream")?;
    let shards = i32::try_from(args.number("shards", 2)?).context("--shards")?;
    let rate = args.number("rate", 100)?;
    let sink = Sink::from_args(&args)?;

    let aws = sdk_config().await;
    let kinesis = aws_sdk_kinesis::Client::new(&aws);
    producer::ensure_stream(&kinesis, &stream, shards).await?;
    let s3 = s3_client(&aws, true);
    ensure_bucket(&s3, sink.bucket(), true).await?;
    let pool = match &sink {
        Sink::S3 { .. } => None,
        Sink::Postgres { table, .. } => Some(data_table(table).await?),
    };
    report(&json!({ "ready": true }));

    let stop = CancellationToken::new();
    let end = CancellationToken::new();
    watch_stdin(Some(stop.clone()), end.clone());
    let produced = Arc::new(AtomicU64::new(0));
    let producing = tokio::spawn(produce(
        kinesis,
        stream,
        rate,
        Arc::clone(&produced),
        stop.clone(),
    ));

    let mut s3_tally = S3Tally::default();
    // The S3 emitter puts a `/` between the prefix and the rest of the key.
    let listed = format!("{}/", sink.prefix());
    while !end.is_cancelled() {
        let counted = match (&sink, &pool) {
            (Sink::Postgres { table, .. }, Some(pool)) => postgres_counts(pool, table).await,
            _ => s3_tally.refresh(&s3, sink.bucket(), &listed).await,
        };
        // Read after counting: what is counted was produced by then.
        let sent = produced.load(Ordering::SeqCst);
        let still_producing = !producing.is_finished();
        match counted {
            Ok(Counts {
                rows,
                distinct,
                prefix,
            }) => report(&json!({
                "produced": sent,
                "producing": still_producing,
                "rows": rows,
                "distinct": distinct,
                "prefix": prefix,
                "unreadable": s3_tally.unreadable,
            })),
            // The driver talks to the real services; say so and try again.
            Err(error) => eprintln!("chaos-pipeline drive: counting failed: {error:#}"),
        }
        if producing.is_finished() && !stop.is_cancelled() {
            // The producer gave up on its own: that ends the run.
            return match producing.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(error)) => Err(error.context("producing failed")),
                Err(join) => Err(anyhow::anyhow!("the producer task failed: {join}")),
            };
        }
        tokio::select! {
            () = end.cancelled() => {}
            () = tokio::time::sleep(REPORT_EVERY) => {}
        }
    }
    Ok(())
}

/// Creates the data table (`id BIGINT`, what `JSON 'auto'` loads from the
/// events) and returns a pool on the real PostgreSQL.
async fn data_table(table: &str) -> Result<PgPool> {
    let url = std::env::var("DATABASE_URL").context("DATABASE_URL is not set")?;
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&url)
        .await
        .context("connecting to PostgreSQL")?;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE TABLE IF NOT EXISTS {table} (id BIGINT NOT NULL)"
    )))
    .execute(&pool)
    .await
    .with_context(|| format!("creating {table}"))?;
    Ok(pool)
}

/// Sends events 0, 1, 2, … at `rate` per second until `stop`, in small
/// requests every 100 ms so the pace is even; `produced` is the number of
/// events Kinesis accepted (all ids below it are in the stream).
async fn produce(
    kinesis: aws_sdk_kinesis::Client,
    stream: String,
    rate: u64,
    produced: Arc<AtomicU64>,
    stop: CancellationToken,
) -> Result<()> {
    let mut events = ProducerConfig::new(stream.clone(), u64::MAX);
    events.payload_bytes = PAYLOAD_BYTES;
    let started = Instant::now();
    let mut next = 0u64;
    while !stop.is_cancelled() {
        let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
        if due > next {
            let upto = due.min(next + 500);
            let mut records = Vec::new();
            for id in next..upto {
                let event = events.event(id);
                let data = serde_json::to_vec(&event).context("encoding an event")?;
                records.push((event.user_id, data));
            }
            put_records(&kinesis, &stream, records, PutOptions::default()).await?;
            next = upto;
            produced.store(next, Ordering::SeqCst);
        }
        tokio::select! {
            () = stop.cancelled() => {}
            () = tokio::time::sleep(SEND_EVERY) => {}
        }
    }
    Ok(())
}
