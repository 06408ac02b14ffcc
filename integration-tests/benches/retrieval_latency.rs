//! Propagation latency (put → emit) and consumer CPU per record of the two
//! retrievals, `PollingSource` (`GetRecords` polling) and `FanOutSource`
//! (enhanced fan-out, `SubscribeToShard`), against the Kinesis of the local
//! stack.
//!
//! Run it with the stack up:
//!
//! ```text
//! cargo xtask stack up
//! eval "$(cargo xtask stack env)"
//! cargo bench -p integration-tests --bench retrieval_latency
//! ```
//!
//! Each run creates a stream of 2 shards and a consumer of it, reads one
//! warm-up record on every shard (so startup is not measured), then a
//! producer writes one small text record with `PutRecord` every 20 ms (50
//! records/s, well below the ~450 records/s the emulator takes), 1,000
//! records per run, each carrying its send time in nanoseconds since the
//! UNIX epoch (taken just before `PutRecord`).
//!
//! - **Latency**: emit time − send time, taken in a custom emitter behind
//!   `BufferLimits::with_max_records(1)`, so that it holds no batching wait
//!   (it holds the `PutRecord` round trip, the retrieval's wait and the
//!   pipeline). p50, p99 and max per run.
//! - **CPU per record**: the producer runs on a thread of its own (a
//!   current-thread runtime with its own client), the consumer on the main
//!   runtime. User + system CPU of the whole process (`/proc/self/stat`)
//!   from the first measured put to the last record emitted, minus the
//!   producer thread's own (`/proc/thread-self/stat`), minus the same
//!   remainder in a producer-only run (no consumer; the baseline), divided
//!   by the records. Ticks of `getconf CLK_TCK`, normally 100 a second. The
//!   emulator's own CPU is not counted.
//!
//! Three retrievals are compared: polling with the library's default idle
//! delay (1 s), polling with a 200 ms idle delay (the smallest allowed) and
//! fan-out (default settings); every consumer has the library's default
//! discovery interval. Each round runs the baseline and the three
//! retrievals, interleaved; the table shows the medians of 3 rounds.
//! `RETRIEVAL_LATENCY_PUT_MS` and `RETRIEVAL_LATENCY_RECORDS` set another
//! put interval and record count. The idle delay applies only after a
//! poll that found nothing: at 25 records/s per shard that is rare and
//! shows in the tail (p99, max); a sparser load shows it in the median.
//!
//! Run without `--bench` (as `cargo test --benches` does), it is a smoke
//! test: one round of 150 records (3 s) per retrieval. Either way every
//! record put must be emitted exactly once, or it exits non-zero; without
//! the stack it fails with the message of `integration_tests::stack`.
//! Every stream it creates is deleted (with its fan-out consumers).

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use aws_sdk_kinesis::primitives::Blob;
use integration_tests::consumer::{FAST_IDLE_DELAY, STOP_WAIT, failures, fast_shard_config};
use integration_tests::{RunningConsumer, create_stream, kinesis_client, stack, unique_name};
use kinesis_connectors_core::{
    Batch, BufferLimits, EmitOutcome, Emitter, MemoryCheckpointStore, Pipeline, RecordSource,
    ShardConfig, ShardContext, StreamConsumer, Utf8Transformer, async_trait,
};
use kinesis_connectors_kinesis::{FanOutConsumer, FanOutSource, PollingSource};
use tokio::sync::{mpsc, oneshot};
use tokio::time::MissedTickBehavior;

/// Shards of every stream.
const SHARDS: i32 = 2;
/// One record every `PUT_INTERVAL` (`RETRIEVAL_LATENCY_PUT_MS`).
const PUT_INTERVAL: Duration = Duration::from_millis(20);
/// Records per run (`RETRIEVAL_LATENCY_RECORDS`) and rounds, with `--bench`
/// (20 s of records per run).
const BENCH_RECORDS: u64 = 1_000;
const BENCH_ROUNDS: usize = 3;
/// Records per run without `--bench` (3 s), one round.
const SMOKE_RECORDS: u64 = 150;
/// The bound of every wait for records to be emitted.
const WAIT: Duration = Duration::from_secs(60);
/// How long a run goes on after the last record arrived: a duplicate would
/// show up then.
const SETTLE: Duration = Duration::from_secs(1);
/// The checkpoint namespace (and fan-out consumer name) of every consumer.
const APP: &str = "retrieval-latency-bench";

/// How a run reads its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retrieval {
    /// `PollingSource`, `ShardConfig::default()` (idle delay 1 s).
    PollingDefault,
    /// `PollingSource`, idle delay 200 ms.
    PollingFast,
    /// `FanOutSource`, `ShardConfig::default()`.
    FanOut,
}

/// What a run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Run {
    /// The producer alone.
    Baseline,
    /// The producer and a consumer.
    Consumer(Retrieval),
}

impl Run {
    const ALL: [Self; 4] = [
        Self::Baseline,
        Self::Consumer(Retrieval::PollingDefault),
        Self::Consumer(Retrieval::PollingFast),
        Self::Consumer(Retrieval::FanOut),
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Baseline => "producer only (baseline)",
            Self::Consumer(Retrieval::PollingDefault) => "polling, idle 1 s (default)",
            Self::Consumer(Retrieval::PollingFast) => "polling, idle 200 ms",
            Self::Consumer(Retrieval::FanOut) => "fan-out (SubscribeToShard)",
        }
    }
}

/// The current time in nanoseconds since the UNIX epoch.
fn unix_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// What the emitter saw.
#[derive(Debug, Default)]
struct Seen {
    /// Latency in ns of every emit of each measured record (two entries:
    /// emitted twice).
    latencies: HashMap<u64, Vec<i64>>,
    /// Warm-up records emitted, per shard.
    warm: HashMap<String, usize>,
    /// Records that are neither.
    foreign: Vec<String>,
}

/// Takes the latency of every record it is given: `t <seq> <sent ns>` for a
/// measured record, `w` for a warm-up record.
struct LatencyEmitter(Arc<Mutex<Seen>>);

#[async_trait]
impl Emitter<String> for LatencyEmitter {
    async fn emit(&self, batch: &Batch<String>) -> kinesis_connectors_core::Result<EmitOutcome> {
        let now = unix_nanos();
        let mut seen = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for item in &batch.items {
            let mut fields = item.split(' ');
            match (fields.next(), fields.next(), fields.next()) {
                (Some("w"), None, None) => {
                    *seen
                        .warm
                        .entry(batch.context.shard_id.to_string())
                        .or_default() += 1;
                }
                (Some("t"), Some(seq), Some(sent)) => match (seq.parse(), sent.parse::<i64>()) {
                    (Ok(seq), Ok(sent)) => seen.latencies.entry(seq).or_default().push(now - sent),
                    _ => seen.foreign.push(item.clone()),
                },
                _ => seen.foreign.push(item.clone()),
            }
        }
        Ok(EmitOutcome::delivered())
    }
}

/// User + system CPU in clock ticks, from a `stat` file of `/proc`
/// (`/proc/self/stat`: the process, `/proc/thread-self/stat`: the calling
/// thread).
fn cpu_ticks(stat_file: &str) -> Result<u64> {
    let stat =
        std::fs::read_to_string(stat_file).with_context(|| format!("reading {stat_file}"))?;
    // Fields after the command name (in parentheses, which may hold spaces):
    // state is field 3, utime 14 and stime 15.
    let (_, rest) = stat
        .rsplit_once(')')
        .with_context(|| format!("{stat_file}: no command name"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |at: usize, name: &str| -> Result<u64> {
        fields
            .get(at)
            .with_context(|| format!("{stat_file}: no {name}"))?
            .parse()
            .with_context(|| format!("{stat_file}: bad {name}"))
    };
    Ok(field(11, "utime")? + field(12, "stime")?)
}

fn process_ticks() -> Result<u64> {
    cpu_ticks("/proc/self/stat")
}

/// Clock ticks per second (`getconf CLK_TCK`).
fn ticks_per_second() -> Result<u64> {
    let output = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .context("running getconf CLK_TCK")?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.trim()
        .parse()
        .with_context(|| format!("getconf CLK_TCK printed `{}`", text.trim()))
}

/// The load of every run.
#[derive(Debug, Clone, Copy)]
struct Load {
    interval: Duration,
    records: u64,
}

/// A request to the producer thread: put `load` to `stream`, answer with
/// the thread's CPU ticks for it.
struct Job {
    stream: String,
    load: Load,
    done: oneshot::Sender<Result<u64>>,
}

/// The producer: a thread of its own with a current-thread runtime and its
/// own client (whose connections are tasks of that runtime), so that its CPU
/// is the thread's.
struct Producer {
    jobs: mpsc::UnboundedSender<Job>,
}

impl Producer {
    fn start() -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (jobs, mut queue) = mpsc::unbounded_channel::<Job>();
        std::thread::Builder::new()
            .name("producer".to_owned())
            .spawn(move || {
                runtime.block_on(async move {
                    let client = kinesis_client().await;
                    while let Some(job) = queue.recv().await {
                        let result = async {
                            let before = cpu_ticks("/proc/thread-self/stat")?;
                            produce(&client, &job.stream, job.load).await?;
                            Ok(cpu_ticks("/proc/thread-self/stat")? - before)
                        }
                        .await;
                        // The bench may have given up waiting: nothing to tell.
                        let _ = job.done.send(result);
                    }
                });
            })?;
        Ok(Self { jobs })
    }

    /// Puts `load` to `stream`; the producer thread's CPU ticks meanwhile.
    async fn produce(&self, stream: &str, load: Load) -> Result<u64> {
        let (done, answer) = oneshot::channel();
        self.jobs
            .send(Job {
                stream: stream.to_owned(),
                load,
                done,
            })
            .map_err(|_| anyhow!("the producer thread is gone"))?;
        answer
            .await
            .map_err(|_| anyhow!("the producer thread dropped a job"))?
    }
}

/// Writes `load.records` measured records, one `PutRecord` every
/// `load.interval`.
async fn produce(client: &aws_sdk_kinesis::Client, stream: &str, load: Load) -> Result<()> {
    let mut ticks = tokio::time::interval(load.interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    for seq in 0..load.records {
        ticks.tick().await;
        let data = format!("t {seq} {}", unix_nanos());
        client
            .put_record()
            .stream_name(stream)
            .partition_key(format!("pk-{seq}"))
            .data(Blob::new(data))
            .send()
            .await
            .with_context(|| format!("PutRecord {seq} to {stream}"))?;
    }
    Ok(())
}

/// Waits (at most [`WAIT`]) until `done` holds of what the emitter saw.
async fn wait_seen(what: &str, seen: &Mutex<Seen>, done: impl Fn(&Seen) -> bool) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        if done(&seen.lock().unwrap_or_else(PoisonError::into_inner)) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{what}: not done within {WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// CPU ticks of a measured window.
#[derive(Debug, Clone, Copy)]
struct Cpu {
    /// The whole process.
    process: u64,
    /// The producer thread.
    producer: u64,
}

impl Cpu {
    /// The process's CPU but the producer's.
    fn rest(self) -> f64 {
        self.process as f64 - self.producer as f64
    }
}

/// What one run measured.
#[derive(Debug)]
struct Measured {
    run: Run,
    /// Distinct measured records emitted.
    emitted: u64,
    cpu: Cpu,
    /// The measured window.
    window: Duration,
    /// First latency of each record emitted, in ns, sorted.
    latencies: Vec<i64>,
    /// What went wrong (records lost, repeated or unknown).
    problems: Vec<String>,
}

impl Measured {
    /// The `p`-quantile (nearest rank) of the latencies, in ms.
    fn quantile_ms(&self, p: f64) -> Option<f64> {
        let n = self.latencies.len();
        if n == 0 {
            return None;
        }
        let rank = ((p * n as f64).ceil() as usize).clamp(1, n);
        Some(self.latencies[rank - 1] as f64 / 1e6)
    }
}

/// One run on a stream of its own, deleted afterwards.
async fn run_once(
    client: &aws_sdk_kinesis::Client,
    producer: &Producer,
    run: Run,
    load: Load,
) -> Result<Measured> {
    let stream = unique_name("bench-retrieval-latency");
    create_stream(client, &stream, SHARDS).await?;
    let measured = measure(client, producer, &stream, run, load).await;
    let deleted = client
        .delete_stream()
        .stream_name(&stream)
        .enforce_consumer_deletion(true)
        .send()
        .await
        .with_context(|| format!("DeleteStream {stream}"));
    let measured = measured.with_context(|| format!("{} on {stream}", run.label()))?;
    deleted?;
    Ok(measured)
}

async fn measure(
    client: &aws_sdk_kinesis::Client,
    producer: &Producer,
    stream: &str,
    run: Run,
    load: Load,
) -> Result<Measured> {
    let Run::Consumer(retrieval) = run else {
        let before = process_ticks()?;
        let started = Instant::now();
        let producer = producer.produce(stream, load).await?;
        return Ok(Measured {
            run,
            emitted: 0,
            cpu: Cpu {
                process: process_ticks()? - before,
                producer,
            },
            window: started.elapsed(),
            latencies: Vec::new(),
            problems: Vec::new(),
        });
    };
    let source: Arc<dyn RecordSource> = match retrieval {
        Retrieval::PollingDefault | Retrieval::PollingFast => {
            Arc::new(PollingSource::new(client.clone()))
        }
        Retrieval::FanOut => {
            let registration = FanOutConsumer::register(client, stream, APP).await?;
            Arc::new(FanOutSource::new(client.clone(), &registration))
        }
    };
    let config = match retrieval {
        Retrieval::PollingFast => fast_shard_config(),
        Retrieval::PollingDefault | Retrieval::FanOut => ShardConfig::default(),
    };
    let seen = Arc::new(Mutex::new(Seen::default()));
    let emitter: Arc<dyn Emitter<String>> = Arc::new(LatencyEmitter(Arc::clone(&seen)));
    let consumer = StreamConsumer::builder(
        APP,
        stream,
        source,
        Arc::new(MemoryCheckpointStore::new()),
        move |_: &ShardContext| {
            Pipeline::builder(Utf8Transformer, Arc::clone(&emitter))
                .buffer_limits(BufferLimits::default().with_max_records(1))
                .build()
        },
    )
    .shard_config(config)
    .build()?;
    let running = RunningConsumer::start(consumer);
    let window = consume(client, producer, stream, &seen, load).await;
    let report = running.stop_within(STOP_WAIT).await;
    let (cpu, window) = window?;

    let records = load.records;
    let mut problems: Vec<String> = failures(&report)
        .into_iter()
        .map(|failure| format!("shard failed: {failure}"))
        .collect();
    let seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
    let missing: Vec<u64> = (0..records)
        .filter(|seq| !seen.latencies.contains_key(seq))
        .collect();
    if !missing.is_empty() {
        problems.push(format!(
            "{} of {records} records never emitted, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(10)]
        ));
    }
    let repeated: Vec<(u64, usize)> = seen
        .latencies
        .iter()
        .filter(|(_, emits)| emits.len() > 1)
        .map(|(seq, emits)| (*seq, emits.len()))
        .collect();
    if !repeated.is_empty() {
        problems.push(format!(
            "{} records emitted more than once, e.g. (record, times) {:?}",
            repeated.len(),
            &repeated[..repeated.len().min(10)]
        ));
    }
    let unknown = seen.latencies.keys().filter(|seq| **seq >= records).count();
    if unknown > 0 || !seen.foreign.is_empty() {
        problems.push(format!(
            "{} records emitted that were never put, e.g. {:?}",
            unknown + seen.foreign.len(),
            seen.foreign.iter().take(3).collect::<Vec<_>>()
        ));
    }
    if let Some((shard, n)) = seen.warm.iter().find(|(_, n)| **n != 1) {
        problems.push(format!(
            "the warm-up record of {shard} was emitted {n} times"
        ));
    }
    let mut latencies: Vec<i64> = seen
        .latencies
        .values()
        .filter_map(|emits| emits.first().copied())
        .collect();
    latencies.sort_unstable();
    Ok(Measured {
        run,
        emitted: (records - missing.len() as u64),
        cpu,
        window,
        latencies,
        problems,
    })
}

/// With the consumer running: warms up, puts the measured records and waits
/// for them. Returns the CPU ticks and the length of the measured window
/// (first put to last record emitted).
async fn consume(
    client: &aws_sdk_kinesis::Client,
    producer: &Producer,
    stream: &str,
    seen: &Mutex<Seen>,
    load: Load,
) -> Result<(Cpu, Duration)> {
    let shards = client
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .with_context(|| format!("ListShards {stream}"))?;
    let mut shard_ids = Vec::new();
    for shard in shards.shards() {
        let hash_key = shard
            .hash_key_range()
            .map(|range| range.starting_hash_key().to_owned())
            .with_context(|| format!("{} has no hash key range", shard.shard_id()))?;
        client
            .put_record()
            .stream_name(stream)
            .partition_key("warm-up")
            .explicit_hash_key(hash_key)
            .data(Blob::new("w"))
            .send()
            .await
            .with_context(|| format!("PutRecord (warm-up of {})", shard.shard_id()))?;
        shard_ids.push(shard.shard_id().to_owned());
    }
    wait_seen("the warm-up records", seen, |seen| {
        shard_ids.iter().all(|id| seen.warm.contains_key(id))
    })
    .await?;

    let before = process_ticks()?;
    let started = Instant::now();
    let producer = producer.produce(stream, load).await?;
    wait_seen("the measured records", seen, |seen| {
        (0..load.records).all(|seq| seen.latencies.contains_key(&seq))
    })
    .await?;
    let window = started.elapsed();
    let process = process_ticks()? - before;
    tokio::time::sleep(SETTLE).await;
    Ok((Cpu { process, producer }, window))
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

fn show(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}"))
}

/// The emulator, as the stack's environment and install say, and whether
/// it is kinesis-mock.
fn emulator() -> (String, bool) {
    let env = stack();
    match env.kind.as_str() {
        "embedded" => {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .filter(|dir| !dir.is_empty())
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|| {
                    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target")
                });
            let package = target.join("stack/npm/node_modules/kinesis-local/package.json");
            let version = std::fs::read_to_string(package)
                .ok()
                .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
                .and_then(|json| json["version"].as_str().map(str::to_owned))
                .map_or_else(String::new, |v| format!(" {v}"));
            (
                format!(
                    "kinesis-local{version} (kinesis-mock) at {}",
                    env.kinesis_endpoint
                ),
                true,
            )
        }
        "localstack" => (
            format!("LocalStack's Kinesis at {}", env.kinesis_endpoint),
            false,
        ),
        other => (
            format!("{other} Kinesis at {}", env.kinesis_endpoint),
            false,
        ),
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

/// `name` as a number, or `default` when it is not set.
fn env_number(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .with_context(|| format!("{name}={value} is not a number")),
        Err(_) => Ok(default),
    }
}

async fn bench(full: bool) -> Result<()> {
    let wall = Instant::now();
    let (records, rounds) = if full {
        (BENCH_RECORDS, BENCH_ROUNDS)
    } else {
        (SMOKE_RECORDS, 1)
    };
    let load = Load {
        interval: Duration::from_millis(env_number(
            "RETRIEVAL_LATENCY_PUT_MS",
            PUT_INTERVAL.as_millis() as u64,
        )?),
        records: env_number("RETRIEVAL_LATENCY_RECORDS", records)?,
    };
    if load.records == 0 || load.interval.is_zero() {
        bail!("RETRIEVAL_LATENCY_RECORDS and RETRIEVAL_LATENCY_PUT_MS must be positive");
    }
    // Fails here, loudly, without the stack.
    let (emulator, kinesis_mock) = emulator();
    let client = kinesis_client().await;
    let producer = Producer::start()?;
    let tick_hz = ticks_per_second()?;
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let per_shard = 1.0 / load.interval.as_secs_f64() / f64::from(SHARDS);
    println!(
        "retrieval_latency{}: put → emit latency and CPU per record, PollingSource vs FanOutSource",
        if full { "" } else { " (smoke run)" }
    );
    println!("machine: {cpus} CPUs, {}", cpu_model());
    println!("emulator: {emulator}, on the same machine");
    println!(
        "load: {SHARDS} shards, one PutRecord of ~30 B every {} ms ({per_shard:.1} records/s per shard), \
         {} records per run; {rounds} round(s) of baseline, polling idle 1 s, polling idle {} ms, \
         fan-out (interleaved); figures are medians of the rounds",
        load.interval.as_millis(),
        load.records,
        FAST_IDLE_DELAY.as_millis()
    );
    println!(
        "latency: emit time − send time carried in the record (taken just before PutRecord), \
         in the emitter, batches of 1 record (no batching wait); after a warm-up record per shard"
    );
    println!(
        "CPU: user+sys of the process (/proc/self/stat, CLK_TCK {tick_hz}) from the first put to \
         the last record emitted, minus the producer thread's (/proc/thread-self/stat), minus that \
         remainder in the producer-only baseline, / records; the emulator's CPU is not counted"
    );
    if kinesis_mock {
        println!(
            "note: kinesis-mock pushes one SubscribeToShardEvent per shard per second (real \
             Kinesis pushes within ~70 ms): the fan-out latency here is mostly that cadence"
        );
    }
    println!();

    let mut all: Vec<Measured> = Vec::new();
    for round in 1..=rounds {
        for run in Run::ALL {
            let measured = run_once(&client, &producer, run, load).await?;
            let ms = |ticks: f64| ticks * 1e3 / tick_hz as f64;
            println!(
                "round {round} {:<28} {:>5} emitted  p50 {:>7} ms  p99 {:>7} ms  max {:>7} ms  \
                 CPU: process {:>5.0} ms, producer {:>5.0} ms, rest {:>5.0} ms in {:>5.1} s{}",
                measured.run.label(),
                measured.emitted,
                show(measured.quantile_ms(0.50), 1),
                show(measured.quantile_ms(0.99), 1),
                show(measured.quantile_ms(1.0), 1),
                ms(measured.cpu.process as f64),
                ms(measured.cpu.producer as f64),
                ms(measured.cpu.rest()),
                measured.window.as_secs_f64(),
                if measured.problems.is_empty() {
                    String::new()
                } else {
                    format!("  PROBLEMS: {}", measured.problems.join("; "))
                }
            );
            all.push(measured);
        }
    }

    let baseline_rest = median(
        all.iter()
            .filter(|m| m.run == Run::Baseline)
            .map(|m| m.cpu.rest())
            .collect(),
    )
    .unwrap_or(0.0);
    let per_record_us = |ticks: f64| ticks * 1e6 / tick_hz as f64 / load.records as f64;
    println!();
    println!(
        "{:<28} | {:>7} | {:>7} | {:>7} | {:>7} | {:>13}",
        "retrieval", "records", "p50 ms", "p99 ms", "max ms", "CPU µs/record"
    );
    println!("{}", "-".repeat(28 + 7 * 4 + 13 + 5 * 3));
    for run in Run::ALL {
        let runs: Vec<&Measured> = all.iter().filter(|m| m.run == run).collect();
        let of = |f: &dyn Fn(&Measured) -> Option<f64>| {
            median(runs.iter().filter_map(|m| f(m)).collect())
        };
        let (emitted, cpu) = match run {
            // The producer thread's own CPU per record, for scale.
            Run::Baseline => (
                "-".to_owned(),
                of(&|m| Some(per_record_us(m.cpu.producer as f64))),
            ),
            Run::Consumer(_) => (
                show(of(&|m| Some(m.emitted as f64)), 0),
                of(&|m| Some(per_record_us(m.cpu.rest() - baseline_rest))),
            ),
        };
        println!(
            "{:<28} | {:>7} | {:>7} | {:>7} | {:>7} | {:>13}",
            run.label(),
            emitted,
            show(of(&|m| m.quantile_ms(0.50)), 1),
            show(of(&|m| m.quantile_ms(0.99)), 1),
            show(of(&|m| m.quantile_ms(1.0)), 1),
            show(cpu, 0)
        );
    }
    println!();
    println!(
        "baseline row: the producer thread's CPU per record; the process's remainder there, \
         subtracted from each consumer run: {:.0} ms",
        baseline_rest * 1e3 / tick_hz as f64
    );
    println!(
        "CPU resolution: 1 tick = {:.0} ms = {:.1} µs/record over {} records",
        1e3 / tick_hz as f64,
        per_record_us(1.0),
        load.records
    );
    println!("total wall time: {:.1} s", wall.elapsed().as_secs_f64());

    let problems: Vec<String> = all
        .iter()
        .flat_map(|m| {
            m.problems
                .iter()
                .map(move |p| format!("{}: {p}", m.run.label()))
        })
        .collect();
    if !problems.is_empty() {
        bail!(
            "not every record put was emitted exactly once:\n{}",
            problems.join("\n")
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not.
    let full = std::env::args().any(|arg| arg == "--bench");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(bench(full))
}
