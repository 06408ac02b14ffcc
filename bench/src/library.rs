//! The library's consumers: `StreamConsumer` over `PollingSource`, events
//! decoded by `JsonViewTransformer` (borrowed strings) or `JsonTransformer`
//! (owned ones), batches handed to a counting emitter (or the S3 emitter,
//! counting after it), checkpoints in memory or Redis.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use example_support::s3::{ensure_bucket, s3_client};
use kinesis_checkpoint_redis::RedisCheckpointStore;
use kinesis_connectors_core::{
    Batch, BufferLimits, CancellationToken, CheckpointStore, EmitOutcome, Emitter, Encoder,
    JsonTransformer, JsonView, JsonViewTransformer, MemoryCheckpointStore, Pipeline, Record,
    ShardContext, StreamConsumer, StreamReport, Transformer, async_trait,
};
use kinesis_connectors_kinesis::PollingSource;
use kinesis_connectors_s3::S3Emitter;

use crate::event::{Event, EventRef};
use crate::measure::Clock;
use crate::target::Target;

/// Where checkpoints go.
#[derive(Debug, Clone)]
pub(crate) enum Checkpoints {
    /// `MemoryCheckpointStore`.
    Memory,
    /// `RedisCheckpointStore` at this URL.
    Redis(String),
}

/// How events are decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decode {
    /// `JsonViewTransformer<EventRef>`: strings borrowed from the payload,
    /// as the raw loop decodes them.
    View,
    /// `JsonTransformer<Event>`: owned strings.
    Owned,
}

/// What the counting emitter reads of an item.
pub(crate) trait BenchItem: Send + Sync + 'static {
    /// The event's id.
    fn id(&self) -> u64;
    /// When the event was put.
    fn sent_at_micros(&self) -> u64;
}

impl BenchItem for Event {
    fn id(&self) -> u64 {
        self.id
    }
    fn sent_at_micros(&self) -> u64 {
        self.sent_at_micros
    }
}

impl BenchItem for JsonView<EventRef<'static>> {
    fn id(&self) -> u64 {
        self.get().id
    }
    fn sent_at_micros(&self) -> u64 {
        self.get().sent_at_micros
    }
}

/// Where batches go.
#[derive(Debug, Clone)]
pub(crate) enum Sink {
    /// Counted and dropped.
    Count,
    /// `S3Emitter` (JSON lines) into this bucket, gzipped or not.
    S3 {
        /// The bucket (created when missing).
        bucket: String,
        /// Object key prefix of this run.
        prefix: String,
        /// Gzip the objects.
        gzip: bool,
    },
}

/// One library consumer.
#[derive(Debug, Clone)]
pub(crate) struct Setup {
    /// The stream.
    pub(crate) stream: String,
    /// The checkpoint namespace (fresh per run: no checkpoint to resume from).
    pub(crate) application: String,
    /// Checkpoint store.
    pub(crate) checkpoints: Checkpoints,
    /// Transformer.
    pub(crate) decode: Decode,
    /// Emitter.
    pub(crate) sink: Sink,
    /// Records per batch (and so per checkpoint).
    pub(crate) batch: usize,
}

/// A JSON transformer, noting when the first record reached it.
struct Timed<X> {
    json: X,
    clock: Arc<Clock>,
}

impl<X: Transformer> Transformer for Timed<X> {
    type Item = X::Item;

    fn to_item(&self, record: &Record) -> kinesis_connectors_core::Result<X::Item> {
        self.clock.saw_record();
        self.json.to_item(record)
    }
}

/// Counts each batch into the target once the inner emitter (if any) took
/// it, showing each event's put time to `visit`.
struct Counting<T> {
    inner: Option<Arc<dyn Emitter<T>>>,
    target: Arc<Target>,
    visit: Arc<dyn Fn(u64) + Send + Sync>,
}

#[async_trait]
impl<T: BenchItem> Emitter<T> for Counting<T> {
    async fn emit(&self, batch: &Batch<T>) -> kinesis_connectors_core::Result<EmitOutcome> {
        let outcome = match &self.inner {
            Some(inner) => inner.emit(batch).await?,
            None => EmitOutcome::delivered(),
        };
        let mut id_sum = 0;
        for event in &batch.items {
            id_sum += event.id();
            (self.visit)(event.sent_at_micros());
        }
        self.target.add(batch.len() as u64, id_sum);
        Ok(outcome)
    }

    async fn shutdown(&self) -> kinesis_connectors_core::Result<()> {
        match &self.inner {
            Some(inner) => inner.shutdown().await,
            None => Ok(()),
        }
    }
}

/// A running consumer: stop it with [`Running::stop`].
pub(crate) struct Running {
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<kinesis_connectors_core::Result<StreamReport>>,
}

impl Running {
    /// Cancels the consumer and waits for its report (its last checkpoints
    /// written); fails if a shard failed.
    pub(crate) async fn stop(self) -> Result<()> {
        self.cancel.cancel();
        let report = tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .context("the consumer did not stop within 60 s")?
            .context("the consumer task panicked")??;
        if let Some((shard, error)) = report.failures().next() {
            anyhow::bail!("shard {shard} failed: {error}");
        }
        Ok(())
    }
}

/// What a run is measured through: its clock, the count of what it
/// consumed, and a visitor shown every event's put time.
pub(crate) struct Probes {
    pub(crate) clock: Arc<Clock>,
    pub(crate) target: Arc<Target>,
    pub(crate) visit: Arc<dyn Fn(u64) + Send + Sync>,
}

/// Starts the consumer of `setup`, measured through `probes`.
pub(crate) async fn start(
    setup: &Setup,
    aws: &aws_config::SdkConfig,
    probes: Probes,
) -> Result<Running> {
    match setup.decode {
        Decode::View => {
            let json = JsonViewTransformer::<EventRef<'static>>::new();
            start_with(json, setup, aws, probes).await
        }
        Decode::Owned => start_with(JsonTransformer::<Event>::new(), setup, aws, probes).await,
    }
}

async fn start_with<X>(
    json: X,
    setup: &Setup,
    aws: &aws_config::SdkConfig,
    Probes {
        clock,
        target,
        visit,
    }: Probes,
) -> Result<Running>
where
    X: Encoder + Clone,
    X::Item: BenchItem,
{
    let store: Arc<dyn CheckpointStore> = match &setup.checkpoints {
        Checkpoints::Memory => Arc::new(MemoryCheckpointStore::new()),
        Checkpoints::Redis(url) => Arc::new(
            RedisCheckpointStore::connect(url)
                .await
                .with_context(|| format!("connecting to Redis at {url}"))?,
        ),
    };
    let inner: Option<Arc<dyn Emitter<X::Item>>> = match &setup.sink {
        Sink::Count => None,
        Sink::S3 {
            bucket,
            prefix,
            gzip,
        } => {
            let s3 = s3_client(aws, true);
            ensure_bucket(&s3, bucket, true).await?;
            Some(Arc::new(
                S3Emitter::builder(s3, bucket, json.clone())
                    .prefix(prefix)
                    .suffix(".jsonl")
                    .gzip(*gzip)
                    .build()?,
            ))
        }
    };
    let emitter: Arc<dyn Emitter<X::Item>> = Arc::new(Counting {
        inner,
        target,
        visit,
    });
    let limits = BufferLimits::default()
        .with_max_records(setup.batch)
        .with_max_bytes(256 * 1024 * 1024)
        .with_max_age(Duration::from_secs(600));
    let source = Arc::new(PollingSource::new(aws_sdk_kinesis::Client::new(aws)));
    let consumer = StreamConsumer::builder(
        &setup.application,
        &setup.stream,
        source,
        store,
        move |_: &ShardContext| {
            Pipeline::decode_only(
                Timed {
                    json: json.clone(),
                    clock: Arc::clone(&clock),
                },
                Arc::clone(&emitter),
            )
            .buffer_limits(limits)
            .build()
        },
    )
    .build()?;
    let cancel = CancellationToken::new();
    let task = tokio::spawn(consumer.run(cancel.clone()));
    Ok(Running { cancel, task })
}

/// Deletes the objects under `prefix` (what one run wrote), so that the
/// emulator's memory does not grow run after run.
pub(crate) async fn delete_objects(
    aws: &aws_config::SdkConfig,
    bucket: &str,
    prefix: &str,
) -> Result<u64> {
    let s3 = s3_client(aws, true);
    let mut deleted = 0;
    let listed = s3
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .send()
        .await
        .context("ListObjectsV2")?;
    for object in listed.contents() {
        if let Some(key) = object.key() {
            s3.delete_object().bucket(bucket).key(key).send().await?;
            deleted += 1;
        }
    }
    Ok(deleted)
}
