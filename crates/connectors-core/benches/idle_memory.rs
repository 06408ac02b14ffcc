//! Resident memory of a [`StreamConsumer`] idling on 100 open shards of the
//! testkit's scripted source.
//!
//! Each shard holds a few 1 KiB records, which the consumer reads at once and
//! keeps buffered (they are far below every flush limit); then every shard is
//! caught up and calls `GetRecords` once per idle delay (1 s). The consumer
//! runs on a multi-thread tokio runtime with 2 workers in real time; after
//! the idle period the bench reads `VmRSS` from `/proc/self/status`, cancels
//! the consumer, checks that the shutdown flushed every buffered record and
//! exits.
//!
//! Run with `cargo bench -p kinesis-connectors-core --bench idle_memory`
//! (idles 8 s; `IDLE_MEMORY_SECS` overrides it). Run without `--bench` (as
//! `cargo test --all-targets` does) it idles 2 s as a smoke test.
//! Linux only: elsewhere the RSS figures read as unavailable.

#[path = "support/proc_status.rs"]
mod proc_status;

use std::error::Error;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kinesis_connectors_core::{
    Batch, BytesTransformer, CancellationToken, EmitOutcome, Emitter, MemoryCheckpointStore,
    Pipeline, ShardConfig, ShardContext, ShardInfo, StreamConsumer, async_trait,
};
use kinesis_connectors_testkit::ScriptedSource;
use proc_status::status_bytes;

/// Open shards the consumer idles on.
const SHARDS: usize = 100;

/// Records appended to each shard before the consumer starts.
const RECORDS_PER_SHARD: usize = 3;

/// Size of each record's payload.
const RECORD_SIZE: usize = 1024;

type BoxResult<T> = Result<T, Box<dyn Error>>;

/// Delivers nothing.
struct NoopEmitter;

#[async_trait]
impl Emitter<Bytes> for NoopEmitter {
    async fn emit(&self, batch: &Batch<Bytes>) -> kinesis_connectors_core::Result<EmitOutcome> {
        std::hint::black_box(batch);
        Ok(EmitOutcome::delivered())
    }
}

/// A `kB` field of `/proc/self/status` (`VmRSS`, `VmHWM`), in MiB.
fn status_mib(field: &str) -> Option<f64> {
    status_bytes(field).map(|bytes| bytes as f64 / (1024.0 * 1024.0))
}

fn mib(value: Option<f64>) -> String {
    value.map_or_else(|| "unavailable".to_owned(), |v| format!("{v:.1} MiB"))
}

fn idle_seconds(bench: bool) -> BoxResult<u64> {
    match std::env::var("IDLE_MEMORY_SECS") {
        Ok(secs) => Ok(secs.parse()?),
        Err(_) if bench => Ok(8),
        Err(_) => Ok(2),
    }
}

fn main() -> BoxResult<()> {
    let bench = std::env::args().any(|arg| arg == "--bench");
    let idle = Duration::from_secs(idle_seconds(bench)?);
    let process_start = status_mib("VmRSS");

    let source = ScriptedSource::new();
    let shard_ids: Vec<String> = (0..SHARDS).map(|i| format!("shardId-{i:012}")).collect();
    for (i, shard_id) in shard_ids.iter().enumerate() {
        source.add_shard(ShardInfo::open(shard_id.as_str()));
        let records = (0..RECORDS_PER_SHARD)
            .map(|j| {
                let fill = b'a' + ((i + j) % 26) as u8;
                (format!("pk-{i}-{j}"), Bytes::from(vec![fill; RECORD_SIZE]))
            })
            .collect();
        source.append(shard_id, records);
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()?;
    let consumer = StreamConsumer::builder(
        "idle-memory-bench",
        "bench-stream",
        Arc::new(source.clone()),
        Arc::new(MemoryCheckpointStore::new()),
        |_shard: &ShardContext| Pipeline::builder(BytesTransformer, Arc::new(NoopEmitter)).build(),
    )
    .shard_config(ShardConfig::default())
    .build()?;
    let idle_delay = ShardConfig::default().idle_delay;
    let baseline = status_mib("VmRSS");

    let cancel = CancellationToken::new();
    let started = Instant::now();
    let task = runtime.spawn(consumer.run(cancel.clone()));
    runtime.block_on(async { tokio::time::sleep(idle).await });
    let idle_rss = status_mib("VmRSS");
    let peak_rss = status_mib("VmHWM");
    let calls: usize = shard_ids
        .iter()
        .map(|id| source.get_records_calls(id).len())
        .sum();
    let idled = started.elapsed();

    cancel.cancel();
    let report = runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), task).await })
        .map_err(|_| "the consumer did not stop within 10 s of the cancellation")???;
    let failures: Vec<String> = report
        .failures()
        .map(|(shard, error)| format!("{shard}: {error}"))
        .collect();
    if !failures.is_empty() {
        return Err(format!("shards failed: {failures:?}").into());
    }
    let expected = (SHARDS * RECORDS_PER_SHARD) as u64;
    if report.shards.len() != SHARDS || report.records_emitted() != expected {
        return Err(format!(
            "expected {SHARDS} shard reports and {expected} records emitted at shutdown, got {} and {}",
            report.shards.len(),
            report.records_emitted()
        )
        .into());
    }
    drop(runtime);

    println!(
        "idle_memory: {SHARDS} shards idle, RSS {} (baseline {})",
        mib(idle_rss),
        mib(baseline)
    );
    println!(
        "idle_memory: process start {}, peak (VmHWM) {}, consumer share {}",
        mib(process_start),
        mib(peak_rss),
        mib(idle_rss.zip(baseline).map(|(idle, base)| idle - base)),
    );
    println!(
        "idle_memory: {RECORDS_PER_SHARD} records of {RECORD_SIZE} B buffered per shard, \
         idled {:.1} s with idle delay {idle_delay:?}: {calls} GetRecords calls ({:.2} per shard per second); \
         shutdown flushed {} records",
        idled.as_secs_f64(),
        calls as f64 / SHARDS as f64 / idled.as_secs_f64(),
        report.records_emitted(),
    );
    Ok(())
}
