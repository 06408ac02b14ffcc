//! `kc-bench`: the processes `cargo xtask bench` runs, one scenario per
//! process so that CPU and peak RSS are the scenario's alone.
//!
//! - `kc-bench preload` fills a stream with ~1 KiB JSON events;
//! - `kc-bench consume --scenario S` reads them all from TRIM_HORIZON with
//!   the raw aws-sdk-kinesis loop (`raw`) or the library (`memory`,
//!   `memory-owned`, `redis`, `s3-gzip`, `s3-plain`) and prints one report
//!   line;
//! - `kc-bench live --consumer raw|library` puts events at a steady rate
//!   to a new stream while consuming it and reports put → user code
//!   latency;
//! - `kc-bench gzip` prints what encoding S3 objects costs per record,
//!   plain and at several gzip levels.
//!
//! Endpoints and credentials come from the environment (`cargo xtask stack
//! env` prints them). See `bench/README.md`.

mod event;
mod gzip;
mod library;
mod measure;
mod raw;
mod stream;
mod target;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};

use crate::library::{Checkpoints, Decode, Probes, Setup, Sink};
use crate::measure::{Clock, Report, quantile};
use crate::target::Target;

/// The first seconds of live traffic, not measured.
const WARM_UP: Duration = Duration::from_secs(3);

/// A run longer than this has stalled.
const RUN_LIMIT: Duration = Duration::from_secs(300);

#[derive(Debug, Parser)]
#[command(about = "Benchmark processes for `cargo xtask bench`")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Creates a stream and fills it with events.
    Preload {
        /// The stream to create.
        #[arg(long)]
        stream: String,
        /// Its shards.
        #[arg(long, default_value_t = 4)]
        shards: u32,
        /// Events in all (a multiple of --shards: every shard gets as many).
        #[arg(long, default_value_t = 100_000)]
        records: u64,
        /// Bytes per event.
        #[arg(long, default_value_t = 1024)]
        size: usize,
    },
    /// Reads a preloaded stream from TRIM_HORIZON to its last event.
    Consume {
        /// Which consumer.
        #[arg(long, value_enum)]
        scenario: Scenario,
        /// The preloaded stream.
        #[arg(long)]
        stream: String,
        /// Events it holds.
        #[arg(long, default_value_t = 100_000)]
        records: u64,
        /// Records per batch and checkpoint (library scenarios).
        #[arg(long, default_value_t = 5_000)]
        batch: usize,
        /// The bucket of the S3 scenarios.
        #[arg(long, default_value = "kc-bench")]
        bucket: String,
    },
    /// Prints the cost of encoding S3 objects, plain and gzipped (no stack needed).
    Gzip {
        /// Events per object.
        #[arg(long, default_value_t = 10_000)]
        records: u64,
        /// Bytes per event.
        #[arg(long, default_value_t = 1024)]
        size: usize,
    },
    /// Puts events at a steady rate to a new stream while consuming it.
    Live {
        /// Which consumer.
        #[arg(long, value_enum)]
        consumer: LiveConsumer,
        /// Events per second, all shards together.
        #[arg(long, default_value_t = 400)]
        rate: u64,
        /// Seconds of traffic (the first 3 are not measured).
        #[arg(long, default_value_t = 15)]
        seconds: u64,
        /// Shards of the new stream.
        #[arg(long, default_value_t = 4)]
        shards: u32,
        /// Bytes per event.
        #[arg(long, default_value_t = 1024)]
        size: usize,
    },
}

/// The consumers of `consume`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// The hand-written aws-sdk-kinesis loop.
    Raw,
    /// The library, checkpoints in memory.
    Memory,
    /// The same with owned strings (`JsonTransformer`).
    MemoryOwned,
    /// The library, checkpoints in Redis (`REDIS_URL`).
    Redis,
    /// The library into S3, gzipped JSON lines.
    S3Gzip,
    /// The library into S3, plain JSON lines.
    S3Plain,
}

/// The consumers of `live`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LiveConsumer {
    /// The hand-written aws-sdk-kinesis loop.
    Raw,
    /// The library with default settings, one record per batch.
    Library,
}

fn main() -> Result<()> {
    let clock = Arc::new(Clock::start());
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let aws = aws_config::load_from_env().await;
        match args.command {
            Command::Preload {
                stream,
                shards,
                records,
                size,
            } => {
                let client = aws_sdk_kinesis::Client::new(&aws);
                stream::preload(&client, &stream, shards, records, size).await
            }
            Command::Consume {
                scenario,
                stream,
                records,
                batch,
                bucket,
            } => consume(&aws, clock, scenario, &stream, records, batch, &bucket).await,
            Command::Live {
                consumer,
                rate,
                seconds,
                shards,
                size,
            } => live(&aws, clock, consumer, rate, seconds, shards, size).await,
            Command::Gzip { records, size } => {
                print!("{}", gzip::table(records, size)?);
                Ok(())
            }
        }
    })
}

/// A name no earlier run used (checkpoint namespaces, streams, prefixes).
fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), event::now_micros())
}

fn redis_url() -> Result<String> {
    std::env::var("REDIS_URL").context(
        "REDIS_URL is not set: run under `cargo xtask bench`, or export the stack's \
         endpoints with `eval \"$(cargo xtask stack env)\"`",
    )
}

async fn consume(
    aws: &aws_config::SdkConfig,
    clock: Arc<Clock>,
    scenario: Scenario,
    stream: &str,
    records: u64,
    batch: usize,
    bucket: &str,
) -> Result<()> {
    let target = Arc::new(Target::new(records));
    let name = scenario
        .to_possible_value()
        .map(|v| v.get_name().to_owned())
        .unwrap_or_default();
    if scenario == Scenario::Raw {
        let client = aws_sdk_kinesis::Client::new(aws);
        let reader = tokio::spawn({
            let (stream, clock, target) =
                (stream.to_owned(), Arc::clone(&clock), Arc::clone(&target));
            async move { raw::read(&client, &stream, clock, target, |_| {}).await }
        });
        let done = tokio::select! {
            done = target.wait(RUN_LIMIT) => done,
            read = reader => match read.context("the raw loop panicked")? {
                Ok(never) => match never {},
                Err(error) => Err(error),
            },
        };
        let report = Report::now(&name, &clock, target.count())?;
        done?;
        target.check()?;
        return report.print();
    }
    let prefix = unique("run");
    let setup = Setup {
        stream: stream.to_owned(),
        application: unique("kc-bench"),
        checkpoints: match scenario {
            Scenario::Redis => Checkpoints::Redis(redis_url()?),
            _ => Checkpoints::Memory,
        },
        decode: match scenario {
            Scenario::MemoryOwned => Decode::Owned,
            _ => Decode::View,
        },
        sink: match scenario {
            Scenario::S3Gzip | Scenario::S3Plain => Sink::S3 {
                bucket: bucket.to_owned(),
                prefix: prefix.clone(),
                gzip: scenario == Scenario::S3Gzip,
            },
            _ => Sink::Count,
        },
        batch,
    };
    let probes = Probes {
        clock: Arc::clone(&clock),
        target: Arc::clone(&target),
        visit: Arc::new(|_| {}),
    };
    let running = library::start(&setup, aws, probes).await?;
    let done = target.wait(RUN_LIMIT).await;
    let report = Report::now(&name, &clock, target.count())?;
    let stopped = running.stop().await;
    done?;
    stopped?;
    target.check()?;
    if let Sink::S3 { bucket, .. } = &setup.sink {
        library::delete_objects(aws, bucket, &prefix).await?;
    }
    report.print()
}

async fn live(
    aws: &aws_config::SdkConfig,
    clock: Arc<Clock>,
    consumer: LiveConsumer,
    rate: u64,
    seconds: u64,
    shards: u32,
    size: usize,
) -> Result<()> {
    if rate == 0 || seconds <= WARM_UP.as_secs() {
        bail!(
            "--rate must be positive and --seconds above the {} s warm-up, got {rate} and {seconds}",
            WARM_UP.as_secs()
        );
    }
    let client = aws_sdk_kinesis::Client::new(aws);
    let stream = unique("kc-bench-live");
    let keys = stream::create(&client, &stream, shards).await?;
    let records = rate * seconds;
    let target = Arc::new(Target::new(records));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(records as usize)));
    // Only events put after the first seconds of traffic count: before,
    // a consumer may still be in its pause after the empty pages of the
    // empty stream, which says nothing about steady state.
    let measured_from = Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX));
    let note = {
        let latencies = Arc::clone(&latencies);
        let measured_from = Arc::clone(&measured_from);
        move |sent_at_micros: u64| {
            if sent_at_micros < measured_from.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            let ms = event::now_micros().saturating_sub(sent_at_micros) as f64 / 1e3;
            latencies
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(ms);
        }
    };
    let name = match consumer {
        LiveConsumer::Raw => "live-raw",
        LiveConsumer::Library => "live-library",
    };
    let result = async {
        let stop = match consumer {
            LiveConsumer::Raw => {
                let reader = tokio::spawn({
                    let (client, stream, clock, target) = (
                        client.clone(),
                        stream.clone(),
                        Arc::clone(&clock),
                        Arc::clone(&target),
                    );
                    async move {
                        raw::read(&client, &stream, clock, target, move |e| {
                            note(e.sent_at_micros)
                        })
                        .await
                    }
                });
                Stop::Raw(reader)
            }
            LiveConsumer::Library => {
                let setup = Setup {
                    stream: stream.clone(),
                    application: unique("kc-bench-live"),
                    checkpoints: Checkpoints::Memory,
                    decode: Decode::View,
                    sink: Sink::Count,
                    batch: 1,
                };
                let probes = Probes {
                    clock: Arc::clone(&clock),
                    target: Arc::clone(&target),
                    visit: Arc::new(note),
                };
                Stop::Library(library::start(&setup, aws, probes).await?)
            }
        };
        // Let the consumer reach its polling rhythm before traffic starts.
        tokio::time::sleep(Duration::from_secs(2)).await;
        measured_from.store(
            event::now_micros() + WARM_UP.as_micros() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        produce(&client, &stream, &keys, rate, seconds, size).await?;
        let done = target.wait(Duration::from_secs(60)).await;
        let mut report = Report::now(name, &clock, target.count())?;
        stop.stop().await?;
        done?;
        target.check()?;
        let mut sorted = latencies
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        sorted.sort_by(f64::total_cmp);
        report.latency_p50_ms = quantile(&sorted, 0.50);
        report.latency_p99_ms = quantile(&sorted, 0.99);
        report.print()
    }
    .await;
    stream::delete(&client, &stream).await;
    result
}

/// How a live consumer is stopped.
enum Stop {
    Raw(tokio::task::JoinHandle<Result<std::convert::Infallible>>),
    Library(library::Running),
}

impl Stop {
    async fn stop(self) -> Result<()> {
        match self {
            Stop::Raw(reader) => {
                reader.abort();
                Ok(())
            }
            Stop::Library(running) => running.stop().await,
        }
    }
}

/// Puts `rate * seconds` events, a slice every 50 ms, round robin over the
/// shards whose starting hash keys are `keys`.
async fn produce(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    keys: &[String],
    rate: u64,
    seconds: u64,
    size: usize,
) -> Result<()> {
    const TICK: Duration = Duration::from_millis(50);
    let per_tick = (rate / 20).max(1);
    let total = rate * seconds;
    let mut ticks = tokio::time::interval(TICK);
    let mut next = 0;
    while next < total {
        ticks.tick().await;
        let end = (next + per_tick).min(total);
        let mut puts = tokio::task::JoinSet::new();
        for (shard, key) in keys.iter().enumerate() {
            let n = keys.len() as u64;
            let ids: Vec<u64> = (next..end).filter(|id| id % n == shard as u64).collect();
            let (client, stream, key) = (client.clone(), stream.to_owned(), key.clone());
            puts.spawn(async move { stream::put(&client, &stream, &key, ids, size).await });
        }
        while let Some(done) = puts.join_next().await {
            done.context("a put task panicked")??;
        }
        next = end;
    }
    Ok(())
}
