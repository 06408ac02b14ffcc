//! What the example binaries share, so each example shows only its pipeline.
//!
//! - [`ConfigArgs`] and [`load_config`]: every example reads a TOML file
//!   (`--config`, or the example's default path); connections (endpoints,
//!   credentials, `REDIS_URL`, `DATABASE_URL`) come from the environment.
//! - [`ConsumerSettings`]: the consumer part of a config file (application,
//!   stream, where to start, batch limits, checkpoint store).
//! - [`CheckpointSettings::open`]: a Redis, DynamoDB or in-memory store,
//!   with multi-worker leases when asked for. Redis and DynamoDB are the
//!   `redis` and `dynamodb` features, so each example compiles only the
//!   stores it offers.
//! - [`shutdown_signal`]: Ctrl-C and SIGTERM cancel the consumer, which
//!   flushes, emits and checkpoints before it returns.
//! - [`ConsumerSettings::consumer`]: the `StreamConsumer` those settings
//!   describe, given how to build a shard's pipeline; polling or enhanced
//!   fan-out by [`RetrievalSettings`]. The `fan-out` binary registers,
//!   lists and deregisters fan-out consumers.
//! - `s3` (feature `s3`): an S3 client for emulators (path-style URLs) and
//!   bucket checks.
//! - [`init_tracing`], [`sdk_config`], [`Progress`] and [`check_report`].

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[cfg(feature = "s3")]
pub mod s3;

use anyhow::{Context, Result, bail, ensure};
use aws_config::{BehaviorVersion, Region, SdkConfig, meta::region::RegionProviderChain};
use indicatif::{ProgressBar, ProgressStyle};
#[cfg(feature = "dynamodb")]
use kinesis_checkpoint_dynamodb::DynamoDbCheckpointStore;
#[cfg(feature = "redis")]
use kinesis_checkpoint_redis::RedisCheckpointStore;
use kinesis_connectors_core::{
    BufferLimits, CancellationToken, CheckpointStore, InitialPosition, LeaseCoordinator,
    MemoryCheckpointStore, Pipeline, RecordSource, ShardAssigner, ShardContext, SingleWorker,
    StreamConsumer, StreamReport, Transformer,
};
use kinesis_connectors_kinesis::{FanOutConsumer, FanOutSource, PollingSource};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tracing::{info, warn};

/// The command line every example accepts.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArgs {
    /// The TOML configuration file.
    #[arg(long, short)]
    pub config: PathBuf,
}

/// Reads and parses a TOML configuration file; errors name the file and,
/// for syntax errors, the line.
pub fn load_config<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the configuration file {}", path.display()))?;
    parse_config(&text).with_context(|| format!("bad configuration in {}", path.display()))
}

/// Parses TOML configuration text.
pub fn parse_config<T: DeserializeOwned>(text: &str) -> Result<T> {
    Ok(toml::from_str(text)?)
}

/// Logs to stderr, filtered by `RUST_LOG` (default: `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A second call (several examples in one test process) keeps the first.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

/// The AWS configuration from the environment (`AWS_ENDPOINT_URL_*`,
/// credentials chain), with `us-east-1` when no region is configured.
pub async fn sdk_config() -> SdkConfig {
    let region = RegionProviderChain::default_provider().or_else(Region::new("us-east-1"));
    aws_config::defaults(BehaviorVersion::latest())
        .region(region)
        .load()
        .await
}

/// A token cancelled on the first Ctrl-C or SIGTERM. A second signal ends
/// the process at once (exit status 130), for a shutdown that hangs.
pub fn shutdown_signal() -> CancellationToken {
    let cancel = CancellationToken::new();
    let token = cancel.clone();
    tokio::spawn(async move {
        let mut signals = 0;
        while let Some(name) = next_signal().await {
            signals += 1;
            if signals > 1 {
                warn!(
                    signal = name,
                    "second signal: exiting without a graceful shutdown"
                );
                std::process::exit(130);
            }
            info!(
                signal = name,
                "shutting down: flushing, emitting and checkpointing what was read"
            );
            token.cancel();
        }
    });
    cancel
}

/// Waits for SIGINT or SIGTERM; `None` when signals cannot be listened to.
async fn next_signal() -> Option<&'static str> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut interrupt), Ok(mut terminate)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            warn!("cannot listen to SIGINT/SIGTERM; stop the process another way");
            return None;
        };
        tokio::select! {
            _ = interrupt.recv() => Some("SIGINT"),
            _ = terminate.recv() => Some("SIGTERM"),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.ok().map(|()| "Ctrl-C")
    }
}

/// The consumer part of an example's configuration file.
///
/// ```toml
/// application = "clicks-archiver"   # checkpoint namespace
/// stream = "clicks"
/// initial_position = "trim_horizon" # or "latest"
/// discovery_interval_secs = 60
///
/// [batch]
/// max_records = 1000
/// max_bytes = 8388608
/// max_age_secs = 5
///
/// [checkpoints]
/// store = "redis"                   # "redis", "dynamodb" or "memory"
///
/// [retrieval]
/// kind = "polling"                  # or "fan_out" (enhanced fan-out)
/// consumer = "clicks-archiver"      # fan-out registration (default: application)
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerSettings {
    /// The application name: the checkpoint namespace.
    pub application: String,
    /// The stream to consume.
    pub stream: String,
    /// Where shards without a checkpoint start.
    #[serde(default)]
    pub initial_position: StartFrom,
    /// How often shards are listed again (resharding), in seconds.
    #[serde(default = "default_discovery_secs")]
    pub discovery_interval_secs: u64,
    /// When a batch is flushed.
    #[serde(default)]
    pub batch: BatchSettings,
    /// Where checkpoints (and leases) are kept.
    #[serde(default)]
    pub checkpoints: CheckpointSettings,
    /// How the stream is read.
    #[serde(default)]
    pub retrieval: RetrievalSettings,
}

/// How an example reads its stream: polling (`GetRecords`, the default) or
/// enhanced fan-out through a registration that the example registers (or
/// finds) at start and never deregisters (`fan-out deregister` does).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrievalSettings {
    /// `polling` or `fan_out`.
    #[serde(default)]
    pub kind: RetrievalKind,
    /// The fan-out registration's name (default: the application name).
    pub consumer: Option<String>,
}

/// The retrieval of [`RetrievalSettings`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetrievalKind {
    /// `PollingSource`.
    #[default]
    Polling,
    /// `FanOutSource`.
    FanOut,
}

impl RetrievalSettings {
    /// The source these settings describe for `stream`; registers the
    /// fan-out consumer (or finds it registered) first.
    pub async fn source(
        &self,
        client: aws_sdk_kinesis::Client,
        application: &str,
        stream: &str,
    ) -> Result<Arc<dyn RecordSource>> {
        Ok(match self.kind {
            RetrievalKind::Polling => Arc::new(PollingSource::new(client)),
            RetrievalKind::FanOut => {
                let name = self.consumer.as_deref().unwrap_or(application);
                let registration = FanOutConsumer::register(&client, stream, name)
                    .await
                    .with_context(|| format!("registering fan-out consumer {name} on {stream}"))?;
                info!(
                    consumer = name,
                    arn = registration.arn(),
                    "reading with enhanced fan-out"
                );
                Arc::new(FanOutSource::new(client, &registration))
            }
        })
    }
}

fn default_discovery_secs() -> u64 {
    60
}

impl ConsumerSettings {
    /// The discovery interval as a duration.
    pub fn discovery_interval(&self) -> Duration {
        Duration::from_secs(self.discovery_interval_secs)
    }

    /// Refuses settings that cannot work; `table` is where they are in the
    /// file (e.g. `consumer`), for the messages.
    pub fn validate(&self, table: &str) -> Result<()> {
        ensure!(
            !self.application.is_empty(),
            "{table}.application must not be empty"
        );
        ensure!(!self.stream.is_empty(), "{table}.stream must not be empty");
        ensure!(
            self.discovery_interval_secs >= 1,
            "{table}.discovery_interval_secs must be at least 1"
        );
        // The limits' own message names `batch.…`; prefix the table.
        self.batch
            .limits()
            .map_err(|error| anyhow::anyhow!("{table}.{error}"))?;
        Ok(())
    }

    /// The stream consumer these settings describe: reads `stream` with
    /// the Kinesis client of `aws`, keeps checkpoints in the configured
    /// store and builds each shard's pipeline with `pipeline(batch limits)`.
    /// `table` names the settings in errors.
    pub async fn consumer<T, F>(
        &self,
        table: &str,
        aws: &SdkConfig,
        pipeline: F,
    ) -> Result<StreamConsumer<T>>
    where
        T: Transformer,
        F: Fn(BufferLimits) -> kinesis_connectors_core::Result<Pipeline<T>> + Send + Sync + 'static,
    {
        self.validate(table)?;
        let limits = self.batch.limits()?;
        let checkpoints = self
            .checkpoints
            .open(&self.application, &self.stream, aws)
            .await
            .with_context(|| format!("{table}.checkpoints"))?;
        let source = self
            .retrieval
            .source(
                aws_sdk_kinesis::Client::new(aws),
                &self.application,
                &self.stream,
            )
            .await
            .with_context(|| format!("{table}.retrieval"))?;
        StreamConsumer::builder(
            &self.application,
            &self.stream,
            source,
            checkpoints.store,
            move |_: &ShardContext| pipeline(limits),
        )
        .assigner(checkpoints.assigner)
        .initial_position(self.initial_position.into())
        .discovery_interval(self.discovery_interval())
        .build()
        .with_context(|| format!("bad [{table}] settings"))
    }
}

/// Where shards without a checkpoint start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartFrom {
    /// The oldest record in the shard.
    #[default]
    TrimHorizon,
    /// Records written from now on.
    Latest,
}

impl From<StartFrom> for InitialPosition {
    fn from(start: StartFrom) -> Self {
        match start {
            StartFrom::TrimHorizon => InitialPosition::TrimHorizon,
            StartFrom::Latest => InitialPosition::Latest,
        }
    }
}

/// When a batch is flushed: whichever limit is reached first.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchSettings {
    /// Records per batch.
    pub max_records: usize,
    /// Bytes per batch.
    pub max_bytes: usize,
    /// Seconds a record may wait in the buffer.
    pub max_age_secs: f64,
}

impl Default for BatchSettings {
    fn default() -> Self {
        let limits = BufferLimits::default();
        Self {
            max_records: limits.max_records,
            max_bytes: limits.max_bytes,
            max_age_secs: limits.max_age.as_secs_f64(),
        }
    }
}

impl BatchSettings {
    /// The limits of the core's `RecordBuffer`; errors on a negative or
    /// non-finite age.
    pub fn limits(&self) -> Result<BufferLimits> {
        let max_age = Duration::try_from_secs_f64(self.max_age_secs).with_context(|| {
            format!(
                "batch.max_age_secs must be a non-negative number of seconds, got {}",
                self.max_age_secs
            )
        })?;
        Ok(BufferLimits::default()
            .with_max_records(self.max_records)
            .with_max_bytes(self.max_bytes)
            .with_max_age(max_age))
    }
}

/// Where checkpoints are kept, and whether several workers share the
/// stream through leases in the same store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointSettings {
    /// The backend.
    #[serde(default)]
    pub store: StoreKind,
    /// Redis: the URL (default: the `REDIS_URL` environment variable).
    pub redis_url: Option<String>,
    /// Redis: the key prefix (default: the application name, giving the
    /// `{app}:checkpoint:{stream}:{shard}` keys of the Go library).
    pub redis_prefix: Option<String>,
    /// DynamoDB: the lease table (default: the application name, as in the
    /// KCL). Created on demand when missing.
    pub dynamodb_table: Option<String>,
    /// Share the stream with other workers through leases (Redis or
    /// DynamoDB). Off: this worker takes every shard.
    #[serde(default)]
    pub leases: bool,
    /// This worker's name in the leases (default: host name and process id).
    pub worker_id: Option<String>,
    /// Seconds a lease may go unrenewed before other workers take it.
    #[serde(default = "default_failover_secs")]
    pub failover_secs: u64,
}

fn default_failover_secs() -> u64 {
    10
}

impl Default for CheckpointSettings {
    fn default() -> Self {
        Self {
            store: StoreKind::default(),
            redis_url: None,
            redis_prefix: None,
            dynamodb_table: None,
            leases: false,
            worker_id: None,
            failover_secs: default_failover_secs(),
        }
    }
}

/// A checkpoint backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// `kinesis-checkpoint-redis`.
    #[default]
    Redis,
    /// `kinesis-checkpoint-dynamodb`, in the KCL lease-table layout.
    Dynamodb,
    /// In process memory: a restart starts over.
    Memory,
}

impl StoreKind {
    /// The stores this build can open, as written in a config file.
    pub fn available() -> Vec<&'static str> {
        let mut stores = Vec::new();
        if cfg!(feature = "redis") {
            stores.push("\"redis\"");
        }
        if cfg!(feature = "dynamodb") {
            stores.push("\"dynamodb\"");
        }
        stores.push("\"memory\"");
        stores
    }
}

/// A checkpoint store and the matching shard assigner.
pub struct Checkpoints {
    /// Where checkpoints go.
    pub store: Arc<dyn CheckpointStore>,
    /// Which shards this worker takes.
    pub assigner: Arc<dyn ShardAssigner>,
}

impl CheckpointSettings {
    /// Connects the configured store for `application` reading `stream`.
    /// `aws` is only read by the DynamoDB store.
    #[cfg_attr(not(feature = "dynamodb"), allow(unused_variables))]
    pub async fn open(
        &self,
        application: &str,
        stream: &str,
        aws: &SdkConfig,
    ) -> Result<Checkpoints> {
        let worker_id = self.worker_id.clone().unwrap_or_else(default_worker_id);
        let failover = Duration::from_secs(self.failover_secs);
        let leased =
            |leases: Arc<dyn kinesis_connectors_core::LeaseStore>| -> Arc<dyn ShardAssigner> {
                if self.leases {
                    Arc::new(
                        LeaseCoordinator::new(leases, application, stream, worker_id.clone())
                            .failover_time(failover),
                    )
                } else {
                    Arc::new(SingleWorker::new(worker_id.clone()))
                }
            };
        match self.store {
            #[cfg(feature = "redis")]
            StoreKind::Redis => {
                let url = match &self.redis_url {
                    Some(url) => url.clone(),
                    None => std::env::var("REDIS_URL").context(
                        "checkpoints.store is \"redis\" but neither checkpoints.redis_url nor REDIS_URL is set",
                    )?,
                };
                let store = RedisCheckpointStore::connect(&url)
                    .await
                    .with_context(|| format!("cannot connect to Redis at {}", redact(&url)))?;
                let store = match &self.redis_prefix {
                    Some(prefix) => store.with_prefix(prefix.clone()),
                    None => store,
                };
                let store = Arc::new(store);
                Ok(Checkpoints {
                    store: store.clone(),
                    assigner: leased(store),
                })
            }
            #[cfg(feature = "dynamodb")]
            StoreKind::Dynamodb => {
                let client = aws_sdk_dynamodb::Client::new(aws);
                let mut builder = DynamoDbCheckpointStore::builder(client, application, stream)
                    .create_table_if_missing(true);
                if let Some(table) = &self.dynamodb_table {
                    builder = builder.table(table.clone());
                }
                let store = Arc::new(
                    builder
                        .build()
                        .await
                        .context("cannot open the DynamoDB checkpoint table")?,
                );
                Ok(Checkpoints {
                    store: store.clone(),
                    assigner: leased(store),
                })
            }
            #[cfg(not(feature = "redis"))]
            StoreKind::Redis => bail!(not_built("redis")),
            #[cfg(not(feature = "dynamodb"))]
            StoreKind::Dynamodb => bail!(not_built("dynamodb")),
            StoreKind::Memory => {
                if self.leases {
                    bail!(
                        "checkpoints.leases needs a shared store: set checkpoints.store to \"redis\" or \"dynamodb\""
                    );
                }
                let store = Arc::new(MemoryCheckpointStore::new());
                Ok(Checkpoints {
                    store: store.clone(),
                    assigner: leased(store),
                })
            }
        }
    }
}

/// The error for a store this example was built without.
#[cfg(not(all(feature = "redis", feature = "dynamodb")))]
fn not_built(store: &str) -> String {
    format!(
        "checkpoints.store is \"{store}\" but this example was built without that store \
         (the `{store}` feature of example-support); use one of: {}",
        StoreKind::available().join(", ")
    )
}

/// `host-pid`, unique per worker process on a network.
fn default_worker_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".to_owned());
    format!("{host}-{}", std::process::id())
}

/// A URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, rest)), Some(_)) => {
            let (credentials, host) = rest.rsplit_once('@').unwrap_or(("", rest));
            let user = credentials.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}")
        }
        _ => url.to_owned(),
    }
}

/// The body of a consumer example's `main`: logging, the config file
/// (checked with `validate`, errors naming the file), the AWS
/// configuration, Ctrl-C/SIGTERM as the shutdown signal, then `run` until
/// it returns, and the report checked with [`check_report`].
pub async fn run_example<C, F>(
    name: &str,
    args: &ConfigArgs,
    validate: impl FnOnce(&C) -> Result<()>,
    run: F,
) -> Result<()>
where
    C: DeserializeOwned,
    F: AsyncFnOnce(&C, &SdkConfig, CancellationToken) -> Result<StreamReport>,
{
    init_tracing();
    let config: C = load_config(&args.config)?;
    validate(&config).with_context(|| format!("bad configuration in {}", args.config.display()))?;
    let aws = sdk_config().await;
    let report = run(&config, &aws, shutdown_signal()).await?;
    check_report(name, &report)
}

/// Logs what the consumer did and fails when a shard was still failed when
/// it stopped (failures healed by a restart are only counted).
pub fn check_report(name: &str, report: &StreamReport) -> Result<()> {
    let failures: Vec<String> = report
        .unrecovered()
        .into_iter()
        .map(|(shard, error)| format!("{shard}: {error}"))
        .collect();
    info!(
        consumer = name,
        records_emitted = report.records_emitted(),
        shards = report.shards.len(),
        shard_failures = report.failures().count(),
        "consumer stopped"
    );
    if failures.is_empty() {
        Ok(())
    } else {
        bail!("{name}: shards stopped on errors: {}", failures.join("; "))
    }
}

/// Progress of a long job: a bar on a terminal, a log line every few
/// seconds otherwise (CI logs, pipes).
pub struct Progress {
    bar: Option<ProgressBar>,
    label: String,
    total: u64,
    done: u64,
    last_line: Instant,
}

/// How often a log line is written when stderr is not a terminal.
const LINE_EVERY: Duration = Duration::from_secs(2);

impl Progress {
    /// Progress towards `total` units of `label` (e.g. "records").
    pub fn new(total: u64, label: &str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            if let Ok(style) = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg} ({per_sec}, eta {eta})",
            ) {
                bar.set_style(style);
            }
            bar.set_message(label.to_owned());
            bar
        });
        Self {
            bar,
            label: label.to_owned(),
            total,
            done: 0,
            last_line: Instant::now(),
        }
    }

    /// Counts `n` more units done.
    pub fn inc(&mut self, n: u64) {
        self.done += n;
        match &self.bar {
            Some(bar) => bar.inc(n),
            None if self.last_line.elapsed() >= LINE_EVERY => {
                self.last_line = Instant::now();
                info!("{}/{} {}", self.done, self.total, self.label);
            }
            None => {}
        }
    }

    /// Units done so far.
    pub fn done(&self) -> u64 {
        self.done
    }

    /// Ends the bar (or writes the last line).
    pub fn finish(&self) {
        match &self.bar {
            Some(bar) => bar.finish(),
            None => info!("{}/{} {}", self.done, self.total, self.label),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_settings_have_defaults_and_reject_unknown_keys() {
        let settings: ConsumerSettings =
            parse_config("application = \"a\"\nstream = \"s\"\n").unwrap();
        assert_eq!(settings.initial_position, StartFrom::TrimHorizon);
        assert_eq!(settings.checkpoints.store, StoreKind::Redis);
        assert!(!settings.checkpoints.leases);
        assert_eq!(settings.discovery_interval(), Duration::from_secs(60));
        let limits = settings.batch.limits().unwrap();
        assert_eq!(limits.max_records, BufferLimits::default().max_records);

        let error =
            parse_config::<ConsumerSettings>("application = \"a\"\nstream = \"s\"\nstrem = 1\n")
                .unwrap_err();
        assert!(format!("{error:#}").contains("strem"), "{error:#}");
    }

    #[test]
    fn retrieval_is_polling_unless_fan_out_is_asked_for() {
        let settings: ConsumerSettings =
            parse_config("application = \"a\"\nstream = \"s\"\n").unwrap();
        assert_eq!(settings.retrieval.kind, RetrievalKind::Polling);
        let settings: ConsumerSettings = parse_config(
            "application = \"a\"\nstream = \"s\"\n[retrieval]\nkind = \"fan_out\"\nconsumer = \"c\"\n",
        )
        .unwrap();
        assert_eq!(settings.retrieval.kind, RetrievalKind::FanOut);
        assert_eq!(settings.retrieval.consumer.as_deref(), Some("c"));
        let error = parse_config::<ConsumerSettings>(
            "application = \"a\"\nstream = \"s\"\n[retrieval]\nkind = \"efo\"\n",
        )
        .unwrap_err();
        assert!(format!("{error:#}").contains("efo"), "{error:#}");
    }

    #[test]
    fn a_negative_age_is_a_clear_error() {
        let batch = BatchSettings {
            max_age_secs: -1.0,
            ..BatchSettings::default()
        };
        let error = batch.limits().unwrap_err();
        assert!(error.to_string().contains("max_age_secs"), "{error}");
    }

    #[test]
    fn a_missing_file_is_named() {
        let error = load_config::<ConsumerSettings>(Path::new("/nonexistent/x.toml")).unwrap_err();
        assert!(error.to_string().contains("/nonexistent/x.toml"), "{error}");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("redis://user:secret@host:6379/0"),
            "redis://user:***@host:6379/0"
        );
        assert_eq!(redact("redis://host:6379"), "redis://host:6379");
    }

    #[tokio::test]
    async fn memory_store_refuses_leases() {
        let settings = CheckpointSettings {
            store: StoreKind::Memory,
            leases: true,
            ..CheckpointSettings::default()
        };
        let aws = SdkConfig::builder().build();
        let error = settings.open("app", "stream", &aws).await.err().unwrap();
        assert!(error.to_string().contains("shared store"), "{error}");
    }

    #[cfg(not(all(feature = "redis", feature = "dynamodb")))]
    #[tokio::test]
    async fn a_store_left_out_of_the_build_is_a_clear_error() {
        let missing = if cfg!(feature = "redis") {
            StoreKind::Dynamodb
        } else {
            StoreKind::Redis
        };
        let settings = CheckpointSettings {
            store: missing,
            ..CheckpointSettings::default()
        };
        let aws = SdkConfig::builder().build();
        let error = settings.open("app", "stream", &aws).await.err().unwrap();
        let text = error.to_string();
        assert!(text.contains("built without that store"), "{text}");
        assert!(text.contains("\"memory\""), "{text}");
    }
}
