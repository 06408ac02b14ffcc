//! Throughput of the record pipeline (transform → filter → buffer → emit)
//! for 1 KiB records, single-threaded.
//!
//! Two groups, each with a passthrough ([`BytesTransformer`]) and a typed JSON
//! ([`JsonTransformer`] decoding into `Event`, and the emitter re-encoding
//! every item as newline-delimited JSON, as a byte sink such as S3 does) case:
//!
//! - `pipeline_stages`: the per-record path alone, as the shard consumer runs
//!   it: `to_item` → `keep` → `push` → `is_full` → `take` → `emit`, through
//!   the same trait objects a [`Pipeline`] holds, on a current-thread tokio
//!   runtime.
//! - `shard_consumer`: a whole [`ShardConsumer`] (reader task, one-slot page
//!   channel, metrics, checkpoints in a [`MemoryCheckpointStore`]) reading a
//!   closed scripted shard to its end. The loop waits at least 200 ms between
//!   `GetRecords` calls, so it runs on a current-thread runtime with paused
//!   tokio time: idle waits advance the clock at once and the wall time
//!   criterion measures is the CPU work.
//!
//! Run with `cargo bench -p kinesis-connectors-core --bench pipeline`.
//! Criterion measures wall time, which another busy process on the machine
//! inflates; with `PIPELINE_BENCH_CLOCK=cpu` it measures the on-CPU time of
//! the bench thread instead (Linux, `/proc/thread-self/schedstat`; every
//! case runs on that one thread), reported as groups `pipeline_stages_cpu`
//! and `shard_consumer_cpu`.

// Benches are not tests (clippy's allow-*-in-tests does not cover them):
// a failed setup has nothing to fall back on and must abort the run loudly.
#![allow(clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{Criterion, SamplingMode, Throughput, criterion_group};
use kinesis_connectors_core::{
    Batch, Buffer, BufferLimits, BytesTransformer, CancellationToken, EmitOutcome, Emitter, Filter,
    JsonTransformer, Lease, LeaseHandle, MemoryCheckpointStore, Pipeline, Record, RecordBuffer,
    Result, ShardConfig, ShardConsumer, ShardContext, ShardEnv, ShardInfo, ShardOutcome,
    Transformer, async_trait, encode_lines,
};
use kinesis_connectors_testkit::ScriptedSource;
use serde::{Deserialize, Serialize};
use tokio::runtime::Runtime;

/// Records per benchmark iteration: two full `GetRecords` pages of 10,000.
const RECORDS: usize = 20_000;

/// The shard every benchmark reads.
const SHARD: &str = "shardId-000000000000";

/// A realistic click-stream event of about 1 KiB as compact JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Event {
    event_id: String,
    event_type: String,
    occurred_at: String,
    received_at_ms: u64,
    user_id: u64,
    session_id: String,
    anonymous: bool,
    page: Page,
    device: Device,
    geo: Geo,
    cart: Vec<LineItem>,
    total_cents: i64,
    tags: Vec<String>,
    experiment_ids: Vec<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Page {
    url: String,
    referrer: Option<String>,
    title: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Device {
    user_agent: String,
    os: String,
    browser: String,
    screen_width: u32,
    screen_height: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Geo {
    ip: String,
    country: String,
    city: String,
    latitude: f64,
    longitude: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LineItem {
    sku: String,
    quantity: u32,
    unit_price_cents: i64,
}

/// Event `i`, varied so that no two payloads are equal.
fn event(i: usize) -> Event {
    let n = i as u64;
    let cart: Vec<LineItem> = (0..3)
        .map(|k| LineItem {
            sku: format!("SKU-{:08}", (n * 7 + k) % 100_000_000),
            quantity: 1 + (i as u32 + k as u32) % 4,
            unit_price_cents: 1_999 + ((n + k) % 500) as i64,
        })
        .collect();
    let total_cents = cart
        .iter()
        .map(|item| item.unit_price_cents * i64::from(item.quantity))
        .sum();
    Event {
        event_id: format!(
            "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
            n.wrapping_mul(2_654_435_761) & 0xffff_ffff,
            n % 0xffff,
            n % 0xfff,
            (n / 7) % 0xfff,
            n.wrapping_mul(0x9e37_79b9_7f4a) & 0xffff_ffff_ffff
        ),
        event_type: ["page_view", "add_to_cart", "checkout"][i % 3].to_owned(),
        occurred_at: format!("2025-06-{:02}T{:02}:{:02}:{:02}.{:03}Z", 1 + i % 28, i % 24, i % 60, (i / 60) % 60, i % 1000),
        received_at_ms: 1_748_736_000_000 + n * 17,
        user_id: 10_000_000 + n % 1_000_003,
        session_id: format!("sess-{:016x}", n.wrapping_mul(0x2545_f491_4f6c_dd1d)),
        anonymous: i.is_multiple_of(5),
        page: Page {
            url: format!("https://shop.example.com/products/{}/water-bottles?ref=home", n % 9_973),
            referrer: (!i.is_multiple_of(4)).then(|| format!("https://www.search.example.org/search?q=insulated+bottle+{}", n % 101)),
            title: "Water bottles | Example Shop".to_owned(),
        },
        device: Device {
            user_agent: "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36".to_owned(),
            os: "Windows 10".to_owned(),
            browser: "Chrome 126".to_owned(),
            screen_width: 1920,
            screen_height: 1080,
        },
        geo: Geo {
            ip: format!("203.0.{}.{}", (i / 256) % 256, i % 256),
            country: "GB".to_owned(),
            city: "Manchester".to_owned(),
            latitude: 53.480_759 + (i % 1000) as f64 * 1e-5,
            longitude: -2.242_631 - (i % 1000) as f64 * 1e-5,
        },
        cart,
        total_cents,
        tags: vec!["summer-sale".to_owned(), "returning-visitor".to_owned(), format!("cohort-{}", i % 12)],
        experiment_ids: vec![1_042, 1_057, 2_001 + (i as u32 % 7)],
    }
}

/// A closed scripted shard holding [`RECORDS`] JSON events of about 1 KiB.
fn scripted_shard() -> ScriptedSource {
    let source = ScriptedSource::new();
    source.add_shard(ShardInfo::open(SHARD));
    let records = (0..RECORDS)
        .map(|i| {
            let json = serde_json::to_vec(&event(i)).expect("events encode as JSON");
            (format!("user-{}", i % 1_000), Bytes::from(json))
        })
        .collect();
    source.append(SHARD, records);
    // Closed: a shard consumer reads it to SHARD_END and returns.
    source.close_shard(SHARD, Vec::new());
    let sizes: Vec<usize> = source
        .shard_records(SHARD)
        .iter()
        .map(|r| r.data.len())
        .collect();
    let mean = sizes.iter().sum::<usize>() / sizes.len();
    assert!(
        (960..=1_088).contains(&mean),
        "events should be about 1 KiB, mean {mean} B"
    );
    eprintln!(
        "pipeline bench: {RECORDS} records of {}..={} B (mean {mean} B) per iteration",
        sizes.iter().min().unwrap_or(&0),
        sizes.iter().max().unwrap_or(&0),
    );
    source
}

/// Delivers nothing; keeps the batch alive for the optimizer.
struct NoopEmitter;

#[async_trait]
impl<T: Send + Sync + 'static> Emitter<T> for NoopEmitter {
    async fn emit(&self, batch: &Batch<T>) -> Result<EmitOutcome> {
        black_box(batch);
        Ok(EmitOutcome::delivered())
    }
}

/// Re-encodes every item as newline-delimited JSON (what a byte sink such as
/// S3 does), then drops the bytes.
struct JsonLinesEmitter<T>(JsonTransformer<T>);

#[async_trait]
impl<T> Emitter<T> for JsonLinesEmitter<T>
where
    T: Serialize + for<'de> Deserialize<'de> + Send + Sync + 'static,
{
    async fn emit(&self, batch: &Batch<T>) -> Result<EmitOutcome> {
        let mut body = Vec::with_capacity(batch.byte_size + batch.len());
        encode_lines(&self.0, &batch.items, &mut body)?;
        black_box(body);
        Ok(EmitOutcome::delivered())
    }
}

/// One shard's stages held as a [`Pipeline`] holds them (boxed filter and
/// buffer, shared emitter), driven record by record as the consumer does.
struct Stages<T: Transformer> {
    transformer: T,
    filter: Box<dyn Filter<T::Item>>,
    buffer: Box<dyn Buffer<T::Item>>,
    emitter: Arc<dyn Emitter<T::Item>>,
    context: ShardContext,
}

impl<T: Transformer> Stages<T> {
    fn new(
        transformer: T,
        filter: impl Filter<T::Item>,
        emitter: Arc<dyn Emitter<T::Item>>,
    ) -> Self {
        Self {
            transformer,
            filter: Box::new(filter),
            buffer: Box::new(
                RecordBuffer::new(BufferLimits::default()).expect("default limits are valid"),
            ),
            emitter,
            context: ShardContext::new("bench-app", "bench-stream", SHARD),
        }
    }

    /// Runs `records` through transform → filter → buffer → emit and flushes
    /// the rest; returns the number of items emitted.
    async fn run(&mut self, records: &[Record]) -> usize {
        let mut emitted = 0;
        for record in records {
            let item = match self.transformer.to_item(record) {
                Ok(item) => self.filter.keep(&item).then_some(item),
                Err(error) => panic!("bench records are valid: {error}"),
            };
            // The loop owns each record it read; a clone stands in for that.
            self.buffer.push(record.clone(), record.data.len(), item);
            if self.buffer.is_full() {
                emitted += self.flush().await;
            }
        }
        emitted + self.flush().await
    }

    async fn flush(&mut self) -> usize {
        let Some(batch) = self.buffer.take(&self.context) else {
            return 0;
        };
        let outcome = self.emitter.emit(&batch).await.expect("no-op emit");
        batch.len() - outcome.rejected.len()
    }
}

/// Keeps every record (checked, so the filter is not optimized away).
fn keep_bytes(payload: &Bytes) -> bool {
    !payload.is_empty()
}

/// Keeps every event of the bench data (none is a heartbeat).
fn keep_event(event: &Event) -> bool {
    event.event_type != "heartbeat"
}

fn current_thread(paused: bool) -> Runtime {
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_time();
    if paused {
        builder.start_paused(true);
    }
    builder.build().expect("a current-thread runtime")
}

fn pipeline_stages<M: Clock>(c: &mut Criterion<M>) {
    let source = scripted_shard();
    let records = source.shard_records(SHARD);
    let runtime = current_thread(false);

    let mut group = c.benchmark_group(format!("pipeline_stages{}", M::SUFFIX));
    group
        .throughput(Throughput::Elements(RECORDS as u64))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));

    let mut passthrough = Stages::new(BytesTransformer, keep_bytes, Arc::new(NoopEmitter));
    assert_eq!(runtime.block_on(passthrough.run(&records)), RECORDS);
    group.bench_function("passthrough", |b| {
        b.iter(|| runtime.block_on(passthrough.run(black_box(&records))));
    });

    let mut typed = Stages::new(
        JsonTransformer::<Event>::new(),
        keep_event,
        Arc::new(JsonLinesEmitter(JsonTransformer::<Event>::new())),
    );
    assert_eq!(runtime.block_on(typed.run(&records)), RECORDS);
    group.bench_function("typed_json", |b| {
        b.iter(|| runtime.block_on(typed.run(black_box(&records))));
    });
    group.finish();
}

/// Reads the whole scripted shard with a fresh [`ShardConsumer`] and
/// checkpoint store; returns the items emitted.
async fn consume<T: Transformer>(source: &ScriptedSource, pipeline: Pipeline<T>) -> u64 {
    let env = ShardEnv::new(
        Arc::new(source.clone()),
        Arc::new(MemoryCheckpointStore::new()),
        ShardConfig::default(),
    );
    let context = ShardContext::new("bench-app", "bench-stream", SHARD);
    let lease = LeaseHandle::new(Lease::unfenced(SHARD, "bench-worker"));
    let report = ShardConsumer::new(env, context, lease, pipeline)
        .run(CancellationToken::new())
        .await;
    match report.outcome {
        ShardOutcome::ShardEnd { .. } => report.stats.records_emitted,
        other => panic!("the bench shard should reach SHARD_END, got {other:?}"),
    }
}

fn shard_consumer<M: Clock>(c: &mut Criterion<M>) {
    let source = scripted_shard();
    let runtime = current_thread(true);

    let mut group = c.benchmark_group(format!("shard_consumer{}", M::SUFFIX));
    group
        .throughput(Throughput::Elements(RECORDS as u64))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));

    let passthrough = || {
        Pipeline::builder(BytesTransformer, Arc::new(NoopEmitter))
            .filter(keep_bytes)
            .build()
            .expect("a valid pipeline")
    };
    assert_eq!(
        runtime.block_on(consume(&source, passthrough())),
        RECORDS as u64
    );
    group.bench_function("passthrough", |b| {
        b.iter(|| runtime.block_on(consume(&source, passthrough())));
    });

    let typed = || {
        Pipeline::builder(
            JsonTransformer::<Event>::new(),
            Arc::new(JsonLinesEmitter(JsonTransformer::<Event>::new())),
        )
        .filter(keep_event)
        .build()
        .expect("a valid pipeline")
    };
    assert_eq!(runtime.block_on(consume(&source, typed())), RECORDS as u64);
    group.bench_function("typed_json", |b| {
        b.iter(|| runtime.block_on(consume(&source, typed())));
    });
    group.finish();
}

/// A criterion measurement, with the suffix of its group names (so the
/// saved baselines of the two clocks are never compared with each other).
trait Clock: Measurement<Value = Duration> + 'static {
    const SUFFIX: &'static str;
}

impl Clock for WallTime {
    const SUFFIX: &'static str = "";
}

/// On-CPU time of the bench thread, from `/proc/thread-self/schedstat`
/// (nanoseconds the scheduler ran the thread).
struct ThreadCpuTime;

fn thread_cpu_nanos() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat")
        .expect("PIPELINE_BENCH_CLOCK=cpu needs Linux /proc/thread-self/schedstat");
    stat.split_whitespace()
        .next()
        .and_then(|nanos| nanos.parse().ok())
        .expect("schedstat starts with the on-CPU time in ns")
}

impl Measurement for ThreadCpuTime {
    type Intermediate = u64;
    type Value = Duration;

    fn start(&self) -> u64 {
        thread_cpu_nanos()
    }

    fn end(&self, start: u64) -> Duration {
        Duration::from_nanos(thread_cpu_nanos().saturating_sub(start))
    }

    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }

    fn zero(&self) -> Duration {
        Duration::ZERO
    }

    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_nanos() as f64
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        // Durations in ns, formatted exactly as wall time is.
        let wall: &'static WallTime = &WallTime;
        wall.formatter()
    }
}

impl Clock for ThreadCpuTime {
    const SUFFIX: &'static str = "_cpu";
}

criterion_group!(wall_clock, pipeline_stages, shard_consumer);
criterion_group!(
    name = cpu_clock;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = pipeline_stages, shard_consumer
);

fn main() {
    match std::env::var("PIPELINE_BENCH_CLOCK").as_deref() {
        Ok("cpu") => cpu_clock(),
        Ok("wall") | Err(_) => wall_clock(),
        Ok(other) => panic!("PIPELINE_BENCH_CLOCK must be `wall` or `cpu`, not {other:?}"),
    }
    Criterion::default().configure_from_args().final_summary();
}
