//! `redshift-manifest-demo`: the README's main job, run by `cargo xtask demo`.
//!
//! Produces events into a new input stream, then runs both stages of the
//! manifest pipeline with live progress until every event is a row, prints
//! a summary and exits non-zero unless rows == events with no duplicates.
//! The two phases are timed apart: producing is bound by the emulator's
//! `PutRecords` pace (kinesis-local: ~450 records/s), so only the second
//! phase measures the pipeline itself.
//! Every run uses new streams and tables (named after the run), so runs on
//! a kept stack do not mix.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Result, bail};
use clap::Parser;
use example_support::s3::s3_client;
use example_support::{init_tracing, load_config, sdk_config, shutdown_signal};
use indicatif::{ProgressBar, ProgressStyle};
use kinesis_connectors_core::CancellationToken;
use producer::{ProduceReport, ProducerConfig};
use redshift_manifest::{Config, Counts, Pipelines, count_objects};
use tracing::info;

/// Runs the manifest pipeline end to end on the stack in the environment.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The pipeline's configuration file.
    #[arg(
        long,
        short,
        default_value = "examples/redshift-manifest/config/redshift-manifest.toml"
    )]
    config: std::path::PathBuf,
    /// Events to produce.
    #[arg(long, default_value_t = 20_000)]
    count: u64,
    /// Shards of the input stream.
    #[arg(long, default_value_t = 2)]
    shards: i32,
    /// Gives up when the rows are not all there after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    init_tracing();
    match demo(Args::parse()).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("demo failed: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// What the demo checks at the end.
struct Summary {
    produced: u64,
    resent: u64,
    /// Producing every event into the input stream.
    produce_time: Duration,
    consumed: u64,
    objects: u64,
    manifests: u64,
    rows: u64,
    distinct: u64,
    /// From starting both stages (every event already in the stream) to the
    /// last row.
    load_time: Duration,
}

/// Items per second over `elapsed`.
fn per_second(items: u64, elapsed: Duration) -> f64 {
    items as f64 / elapsed.as_secs_f64().max(1e-9)
}

impl Summary {
    fn ok(&self) -> bool {
        self.rows == self.produced && self.distinct == self.produced
    }

    fn print(&self) {
        let duplicates = self.rows.saturating_sub(self.distinct);
        println!();
        println!("  demo summary");
        println!("  ─────────────────────────────────────");
        println!("  events produced     {:>12}", self.produced);
        println!("  re-sent (throttled) {:>12}", self.resent);
        println!("  records consumed    {:>12}", self.consumed);
        println!("  objects written     {:>12}", self.objects);
        println!("  manifests loaded    {:>12}", self.manifests);
        println!("  rows loaded         {:>12}", self.rows);
        println!("  duplicate rows      {:>12}", duplicates);
        println!(
            "  produce time        {:>10.1} s  ({:.0} events/s: the emulator's PutRecords pace)",
            self.produce_time.as_secs_f64(),
            per_second(self.produced, self.produce_time)
        );
        println!(
            "  load time           {:>10.1} s  (both stages, stream → S3 → rows)",
            self.load_time.as_secs_f64()
        );
        println!(
            "  pipeline records/s  {:>12.0}  (rows / load time)",
            per_second(self.rows, self.load_time)
        );
        println!(
            "  end to end          {:>10.1} s",
            (self.produce_time + self.load_time).as_secs_f64()
        );
        println!("  ─────────────────────────────────────");
        if self.ok() {
            println!("  OK: every event is exactly one row");
        } else {
            println!(
                "  FAILED: {} events, {} rows, {} distinct events loaded",
                self.produced, self.rows, self.distinct
            );
        }
    }
}

async fn demo(args: Args) -> Result<bool> {
    let mut config: Config = load_config(&args.config)?;
    let run = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    rename_for_run(&mut config, run);
    config.validate()?;
    let aws = sdk_config().await;
    let kinesis = aws_sdk_kinesis::Client::new(&aws);
    // Created before the consumers start, so they find its shards at once.
    let events = ProducerConfig::new(config.stage1.stream.clone(), args.count);
    producer::ensure_stream(&kinesis, &events.stream, args.shards).await?;

    let cancel = shutdown_signal();
    println!(
        "demo: {} events → stream {} → s3://{}/{} → stream {} → PostgreSQL",
        args.count, config.stage1.stream, config.s3.bucket, config.s3.prefix, config.stage2.stream,
    );
    let produced = produce_all(&kinesis, &events, &cancel).await?;
    println!(
        "demo: produced {} events in {:.1} s; starting both stages",
        produced.sent,
        produced.elapsed.as_secs_f64()
    );

    let started = Instant::now();
    let pipelines = Pipelines::start(&config, &aws, cancel.clone()).await?;
    let deadline = started + Duration::from_secs(args.timeout_secs);
    let (rows, distinct, complete) = watch(&pipelines, args.count, deadline, &cancel).await?;
    let load_time = complete.duration_since(started);
    cancel.cancel();
    let (stage1, _) = pipelines.join().await?;

    let s3 = s3_client(&aws, config.s3.force_path_style);
    let summary = Summary {
        produced: produced.sent,
        resent: produced.resent,
        produce_time: produced.elapsed,
        consumed: stage1.records_emitted(),
        objects: count_objects(&s3, &config.s3.bucket, &format!("{}/", config.s3.prefix)).await?,
        manifests: count_objects(&s3, &config.s3.bucket, &config.s3.manifest_prefix).await?,
        rows,
        distinct,
        load_time,
    };
    summary.print();
    Ok(summary.ok())
}

/// Writes every event into the input stream, with a progress bar (or a log
/// line every 2 s when stderr is not a terminal).
async fn produce_all(
    kinesis: &aws_sdk_kinesis::Client,
    events: &ProducerConfig,
    cancel: &CancellationToken,
) -> Result<ProduceReport> {
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(events.count);
        if let Ok(style) = ProgressStyle::with_template(
            "[{elapsed_precise}] {wide_bar} {pos}/{len} events produced ({per_sec})",
        ) {
            bar.set_style(style);
        }
        bar
    });
    let mut last_line = Instant::now();
    let mut sent = 0;
    let report = producer::produce(kinesis, events, cancel, |accepted| {
        sent += accepted;
        match &bar {
            Some(bar) => bar.set_position(sent),
            None if last_line.elapsed() >= Duration::from_secs(2) => {
                last_line = Instant::now();
                info!("{sent}/{} events produced", events.count);
            }
            None => {}
        }
    })
    .await?;
    if let Some(bar) = &bar {
        bar.finish();
    }
    Ok(report)
}

/// Gives this run its own streams, applications and tables.
fn rename_for_run(config: &mut Config, run: u64) {
    for stage in [&mut config.stage1, &mut config.stage2] {
        stage.stream = format!("{}-{run}", stage.stream);
        stage.application = format!("{}-{run}", stage.application);
    }
    config.s3.prefix = format!("{}/{run}", config.s3.prefix);
    config.s3.manifest_prefix = format!("{}/{run}/", config.s3.manifest_prefix);
    let database = &mut config.database;
    database.data_table = format!("{}_{run}", database.data_table);
    database.file_table = format!("{}_{run}", database.file_table);
}

/// Shows progress until every event is a row (and a moment longer, so
/// late duplicates would show); returns rows, distinct events loaded and
/// when the last event arrived.
async fn watch(
    pipelines: &Pipelines,
    count: u64,
    deadline: Instant,
    cancel: &CancellationToken,
) -> Result<(u64, u64, Instant)> {
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(count);
        if let Ok(style) =
            ProgressStyle::with_template("[{elapsed_precise}] {wide_bar} {pos}/{len} rows  {msg}")
        {
            bar.set_style(style);
        }
        bar
    });
    let mut last_line = Instant::now();
    let mut complete_since: Option<Instant> = None;
    loop {
        let (rows, distinct) = pipelines.rows().await?;
        let status = status_line(&pipelines.counts, rows, distinct, count);
        match &bar {
            Some(bar) => {
                bar.set_position(distinct.min(count));
                bar.set_message(status.clone());
            }
            None if last_line.elapsed() >= Duration::from_secs(2) => {
                last_line = Instant::now();
                info!("{distinct}/{count} rows  {status}");
            }
            None => {}
        }
        if distinct >= count {
            let since = *complete_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= Duration::from_secs(2) {
                if let Some(bar) = &bar {
                    bar.finish();
                }
                return Ok((rows, distinct, since));
            }
        }
        if cancel.is_cancelled() {
            bail!("interrupted with {distinct} of {count} events loaded");
        }
        if Instant::now() > deadline {
            bail!("timed out with {distinct} of {count} events loaded ({status})");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn status_line(counts: &Counts, rows: u64, distinct: u64, count: u64) -> String {
    format!(
        "read {} | objects {} | manifests {} | rows {} | lag {}",
        counts.records_archived(),
        counts.objects_written(),
        counts.manifests_loaded(),
        rows,
        count.saturating_sub(distinct)
    )
}
