//! Peak resident memory of one worker reading a backlog through 1, 100 and
//! 1,000 shards under a [`MemoryBudget`], each count in a process of its own.
//!
//! Every shard of the testkit's scripted source holds a share of the same
//! backlog of 1 KiB records (all pointing at one static payload, so the
//! source itself stays small); a wrapper copies each payload as it hands a
//! page out, as a real `GetRecords` response owns its bytes. The pipelines
//! keep the payload as it is (`BytesTransformer`, t = 0) and the emitter
//! holds nothing beyond the batch (e = 0), so the budget's formula says
//!
//! ```text
//! peak RSS − baseline ≤ budget + shards × per-shard cost
//! ```
//!
//! where the baseline is the process after the source is loaded and before
//! the consumer starts. Each child prints its figures; the parent prints a
//! table and exits non-zero when a child reads less than the whole backlog
//! or goes over the bound. `WORKER_MEMORY_BUDGET_MIB` sets another budget
//! (64 MiB by default, 8 MiB in the smoke test); a budget too large to bite shows what the shards
//! hold without one.
//!
//! Run with `cargo bench -p kinesis-connectors-core --bench worker_memory`
//! (400,000 records per count). Run without `--bench` (as `cargo test
//! --all-targets` does) it reads 20,000 records through 1 and 100 shards
//! under an 8 MiB budget as a smoke test. Linux only: elsewhere the RSS figures read as unavailable
//! and nothing is checked.

#[path = "support/proc_status.rs"]
mod proc_status;

use std::error::Error;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kinesis_connectors_core::{
    Batch, BytesTransformer, CancellationToken, EmitOutcome, Emitter, MemoryBudget,
    MemoryCheckpointStore, Pipeline, RecordsPage, ShardContext, ShardInfo, StreamConsumer,
    async_trait,
};
use kinesis_connectors_testkit::{HookedSource, ScriptedSource, SourceHooks};
use proc_status::status_bytes;

const MIB: usize = 1024 * 1024;

/// The budget every run reads under, unless `WORKER_MEMORY_BUDGET_MIB` says
/// otherwise (a large one shows what the shards hold without a bound).
const DEFAULT_BUDGET: usize = 64 * MIB;

/// The smoke test's budget: smaller than its backlog, so that the budget
/// bites there too (and part-full batches do not wait for their age).
const SMOKE_BUDGET: usize = 8 * MIB;

fn budget_bytes(bench: bool) -> BoxResult<usize> {
    match std::env::var("WORKER_MEMORY_BUDGET_MIB") {
        Ok(mib) => Ok(mib.parse::<usize>()? * MIB),
        Err(_) if bench => Ok(DEFAULT_BUDGET),
        Err(_) => Ok(SMOKE_BUDGET),
    }
}

/// What a shard costs besides the records it holds: its two tasks, its
/// pipeline and buffer, its status and lease entries, and the runtime's
/// share (the `idle_memory` bench measures an idle shard well below this).
const PER_SHARD_ALLOWANCE: usize = 96 * 1024;

/// The allocator's and runtime's share that does not grow with shards or
/// records (thread stacks, arenas).
const FIXED_ALLOWANCE: usize = 24 * MIB;

const RECORD_SIZE: usize = 1024;

static PAYLOAD: [u8; RECORD_SIZE] = [b'x'; RECORD_SIZE];

type BoxResult<T> = Result<T, Box<dyn Error>>;

/// Gives every record of a page its own payload, as a real `GetRecords`
/// response owns its bytes.
struct OwnPayloads;

impl SourceHooks for OwnPayloads {
    fn on_page(&self, page: &mut RecordsPage) {
        for record in &mut page.records {
            record.data = Bytes::copy_from_slice(&record.data);
        }
    }
}

/// Counts what it is given, after a short pause like a sink's round trip.
struct Counting(Arc<AtomicU64>);

#[async_trait]
impl Emitter<Bytes> for Counting {
    async fn emit(&self, batch: &Batch<Bytes>) -> kinesis_connectors_core::Result<EmitOutcome> {
        tokio::time::sleep(Duration::from_millis(2)).await;
        self.0.fetch_add(batch.len() as u64, Ordering::Relaxed);
        Ok(EmitOutcome::delivered())
    }
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / MIB as f64
}

/// One count of shards, in this process: prints a `result` line.
fn child(shards: usize, records: usize, budget: usize) -> BoxResult<()> {
    let source = ScriptedSource::new();
    source.set_page_size(10_000);
    let per_shard = records / shards;
    for i in 0..shards {
        let id = format!("shardId-{i:012}");
        source.add_shard(ShardInfo::open(id.as_str()));
        let backlog = (0..per_shard)
            .map(|j| (format!("pk-{j}"), Bytes::from_static(&PAYLOAD)))
            .collect();
        source.append(&id, backlog);
    }
    let total = (per_shard * shards) as u64;
    let emitted = Arc::new(AtomicU64::new(0));
    let budget = MemoryBudget::new(budget)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()?;
    let emitter = Arc::new(Counting(Arc::clone(&emitted)));
    let consumer = StreamConsumer::builder(
        "worker-memory-bench",
        "bench-stream",
        Arc::new(HookedSource::new(source, OwnPayloads)),
        Arc::new(MemoryCheckpointStore::new()),
        move |_: &ShardContext| {
            Pipeline::builder(
                BytesTransformer,
                Arc::clone(&emitter) as Arc<dyn Emitter<Bytes>>,
            )
            .build()
        },
    )
    .memory_budget(budget.clone())
    .build()?;
    let baseline = status_bytes("VmRSS");

    let started = Instant::now();
    let cancel = CancellationToken::new();
    let task = runtime.spawn(consumer.run(cancel.clone()));
    // Batches below their limits go at their age (30 s) when the budget has
    // room: allow for that on top of the reading itself.
    let deadline = started + Duration::from_secs(300);
    while emitted.load(Ordering::Relaxed) < total && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let elapsed = started.elapsed();
    cancel.cancel();
    let report = runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(30), task).await })
        .map_err(|_| "the consumer did not stop within 30 s of the cancellation")???;
    let peak = status_bytes("VmHWM");
    let read = emitted.load(Ordering::Relaxed);
    if let Some((shard, error)) = report.failures().next() {
        return Err(format!("shard {shard} failed: {error}").into());
    }
    let (Some(baseline), Some(peak)) = (baseline, peak) else {
        println!("result {shards} unavailable");
        return Ok(());
    };
    println!(
        "result {shards} {read} {total} {baseline} {peak} {} {:.3}",
        budget.high_water(),
        elapsed.as_secs_f64()
    );
    Ok(())
}

/// What a child printed.
struct Measured {
    shards: usize,
    read: u64,
    total: u64,
    baseline: usize,
    peak: usize,
    high_water: usize,
    seconds: f64,
}

fn parse(line: &str) -> Option<Measured> {
    let mut fields = line.strip_prefix("result ")?.split_whitespace();
    Some(Measured {
        shards: fields.next()?.parse().ok()?,
        read: fields.next()?.parse().ok()?,
        total: fields.next()?.parse().ok()?,
        baseline: fields.next()?.parse().ok()?,
        peak: fields.next()?.parse().ok()?,
        high_water: fields.next()?.parse().ok()?,
        seconds: fields.next()?.parse().ok()?,
    })
}

fn main() -> BoxResult<()> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|arg| arg == "--child") {
        let shards = args.get(at + 1).ok_or("--child needs a shard count")?;
        let records = args.get(at + 2).ok_or("--child needs a record count")?;
        let budget = args.get(at + 3).ok_or("--child needs a budget")?;
        return child(shards.parse()?, records.parse()?, budget.parse()?);
    }
    let bench = args.iter().any(|arg| arg == "--bench");
    let budget = budget_bytes(bench)?;
    let (counts, records): (&[usize], usize) = if bench {
        (&[1, 100, 1_000], 400_000)
    } else {
        (&[1, 100], 20_000)
    };
    println!(
        "worker_memory: {records} records of {RECORD_SIZE} B per run, budget {:.0} MiB, \
         bound = budget + shards × {} KiB + {:.0} MiB",
        mib(budget),
        PER_SHARD_ALLOWANCE / 1024,
        mib(FIXED_ALLOWANCE)
    );
    println!(
        "{:>7} {:>10} {:>10} {:>11} {:>11} {:>10} {:>9} {:>10}",
        "shards",
        "records",
        "base MiB",
        "peak MiB",
        "growth MiB",
        "bound MiB",
        "budget hw",
        "records/s"
    );
    let mut failures = Vec::new();
    for &shards in counts {
        let output = Command::new(std::env::current_exe()?)
            .args([
                "--child",
                &shards.to_string(),
                &records.to_string(),
                &budget.to_string(),
            ])
            .output()?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            failures.push(format!(
                "{shards} shards: the run failed ({}): {}{}",
                output.status,
                stdout,
                String::from_utf8_lossy(&output.stderr)
            ));
            continue;
        }
        let Some(measured) = stdout.lines().find_map(parse) else {
            println!("{shards:>7} RSS unavailable on this platform");
            continue;
        };
        let growth = measured.peak.saturating_sub(measured.baseline);
        let bound = budget + shards * PER_SHARD_ALLOWANCE + FIXED_ALLOWANCE;
        println!(
            "{:>7} {:>10} {:>10.1} {:>11.1} {:>11.1} {:>10.1} {:>9.1} {:>10.0}",
            measured.shards,
            measured.read,
            mib(measured.baseline),
            mib(measured.peak),
            mib(growth),
            mib(bound),
            mib(measured.high_water),
            measured.read as f64 / measured.seconds
        );
        if measured.read < measured.total {
            failures.push(format!(
                "{shards} shards: {} of {} records read",
                measured.read, measured.total
            ));
        }
        if growth > bound {
            failures.push(format!(
                "{shards} shards: grew {:.1} MiB, over the bound of {:.1} MiB",
                mib(growth),
                mib(bound)
            ));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n").into())
    }
}
