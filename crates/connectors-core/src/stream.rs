//! The stream consumer: discovers shards and runs one shard consumer each.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};

use crate::checkpoint::{CheckpointStore, ShardKey, parents_finished};
use crate::error::{Error, Result};
use crate::lease::{ShardAssigner, SingleWorker};
use crate::pipeline::{Pipeline, Transformer};
use crate::record::ShardContext;
use crate::shard::{
    LeaseHandle, ShardConfig, ShardConsumer, ShardEnv, ShardOutcome, ShardReport, ShardStats,
};
use crate::source::{InitialPosition, RecordSource, ShardInfo};

/// Builds the pipeline for one shard; called each time a shard task starts.
pub trait PipelineFactory<T: Transformer>: Send + Sync + 'static {
    /// A pipeline for the shard in `context`.
    fn pipeline(&self, context: &ShardContext) -> Result<Pipeline<T>>;
}

impl<T, F> PipelineFactory<T> for F
where
    T: Transformer,
    F: Fn(&ShardContext) -> Result<Pipeline<T>> + Send + Sync + 'static,
{
    fn pipeline(&self, context: &ShardContext) -> Result<Pipeline<T>> {
        self(context)
    }
}

/// What a stream consumer did, shard by shard, when it returned.
#[derive(Debug, Default)]
pub struct StreamReport {
    /// One report per shard task that ran, in the order they ended.
    pub shards: Vec<ShardReport>,
}

impl StreamReport {
    /// Reports of shard tasks that stopped on an error.
    pub fn failures(&self) -> impl Iterator<Item = (&str, &Error)> {
        self.shards
            .iter()
            .filter_map(|report| match &report.outcome {
                ShardOutcome::Failed(error) => Some((report.shard_id.as_str(), error)),
                _ => None,
            })
    }

    /// Items delivered across all shards.
    pub fn records_emitted(&self) -> u64 {
        self.totals().records_emitted
    }

    /// What all shard tasks did, added up.
    pub fn totals(&self) -> ShardStats {
        self.shards
            .iter()
            .fold(ShardStats::default(), |total, report| ShardStats {
                records_read: total.records_read + report.stats.records_read,
                records_filtered: total.records_filtered + report.stats.records_filtered,
                records_emitted: total.records_emitted + report.stats.records_emitted,
                records_failed: total.records_failed + report.stats.records_failed,
                batches_emitted: total.batches_emitted + report.stats.batches_emitted,
                checkpoints_written: total.checkpoints_written + report.stats.checkpoints_written,
            })
    }
}

/// Consumes every shard of a stream: discovers shards (and new ones after
/// resharding), starts children only after all their parents reached
/// SHARD_END, takes shards through a [`ShardAssigner`], and shuts down
/// gracefully on a [`CancellationToken`].
///
/// ```no_run
/// use std::sync::Arc;
/// use kinesis_connectors_core::{
///     async_trait, Batch, CancellationToken, EmitOutcome, Emitter, MemoryCheckpointStore,
///     Pipeline, RecordSource, ShardContext, StreamConsumer, Utf8Transformer,
/// };
///
/// struct Print;
/// #[async_trait]
/// impl Emitter<String> for Print {
///     async fn emit(&self, batch: &Batch<String>) -> kinesis_connectors_core::Result<EmitOutcome> {
///         batch.items.iter().for_each(|line| println!("{line}"));
///         Ok(EmitOutcome::delivered())
///     }
/// }
///
/// // `source`: `kinesis_connectors_kinesis::PollingSource` in production.
/// # async fn run(source: Arc<dyn RecordSource>) -> kinesis_connectors_core::Result<()> {
/// let consumer = StreamConsumer::builder(
///     "my-app",
///     "clicks",
///     source,
///     Arc::new(MemoryCheckpointStore::new()),
///     |_shard: &ShardContext| Pipeline::builder(Utf8Transformer, Arc::new(Print)).build(),
/// )
/// .build()?;
/// let cancel = CancellationToken::new();
/// let report = consumer.run(cancel).await?;
/// println!("{} records emitted", report.records_emitted());
/// # Ok(()) }
/// ```
pub struct StreamConsumer<T: Transformer> {
    application: String,
    stream: String,
    source: Arc<dyn RecordSource>,
    store: Arc<dyn CheckpointStore>,
    assigner: Arc<dyn ShardAssigner>,
    factory: Arc<dyn PipelineFactory<T>>,
    config: ShardConfig,
    discovery_interval: Duration,
}

impl<T: Transformer> std::fmt::Debug for StreamConsumer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamConsumer")
            .field("application", &self.application)
            .field("stream", &self.stream)
            .field("config", &self.config)
            .field("discovery_interval", &self.discovery_interval)
            .finish_non_exhaustive()
    }
}

/// Builds a [`StreamConsumer`]; see [`StreamConsumer::builder`].
pub struct StreamConsumerBuilder<T: Transformer> {
    consumer: StreamConsumer<T>,
}

impl<T: Transformer> StreamConsumer<T> {
    /// Starts a consumer named `application` (the checkpoint namespace) of `stream`.
    pub fn builder(
        application: impl Into<String>,
        stream: impl Into<String>,
        source: Arc<dyn RecordSource>,
        store: Arc<dyn CheckpointStore>,
        factory: impl PipelineFactory<T>,
    ) -> StreamConsumerBuilder<T> {
        StreamConsumerBuilder {
            consumer: StreamConsumer {
                application: application.into(),
                stream: stream.into(),
                source,
                store,
                assigner: Arc::new(SingleWorker::default()),
                factory: Arc::new(factory),
                config: ShardConfig::default(),
                discovery_interval: Duration::from_secs(60),
            },
        }
    }
}

impl<T: Transformer> StreamConsumerBuilder<T> {
    /// How shards are read (batch size, idle delay, retries, initial position).
    pub fn shard_config(mut self, config: ShardConfig) -> Self {
        self.consumer.config = config;
        self
    }

    /// Where shards without a checkpoint start (default `TRIM_HORIZON`).
    pub fn initial_position(mut self, position: InitialPosition) -> Self {
        self.consumer.config.initial_position = position;
        self
    }

    /// How often shards are listed again to find new ones (default 60 s).
    pub fn discovery_interval(mut self, interval: Duration) -> Self {
        self.consumer.discovery_interval = interval;
        self
    }

    /// Which shards this worker takes (default: all of them, [`SingleWorker`]).
    pub fn assigner(mut self, assigner: Arc<dyn ShardAssigner>) -> Self {
        self.consumer.assigner = assigner;
        self
    }

    /// Checks the configuration and builds the consumer.
    pub fn build(self) -> Result<StreamConsumer<T>> {
        let consumer = self.consumer;
        consumer.config.validate()?;
        if consumer.discovery_interval < Duration::from_secs(1) {
            return Err(Error::Config(format!(
                "discovery_interval must be at least 1 s (ListShards allows 100 calls/s per account), got {:?}",
                consumer.discovery_interval
            )));
        }
        if consumer.application.is_empty() || consumer.stream.is_empty() {
            return Err(Error::Config(
                "application and stream names must not be empty".into(),
            ));
        }
        Ok(consumer)
    }
}

/// A shard task the consumer started and has not seen end yet.
struct Running {
    lease: LeaseHandle,
}

/// Bookkeeping across discovery rounds.
#[derive(Default)]
struct State {
    running: HashMap<String, Running>,
    /// Leases held for shards waiting on their parents.
    waiting: HashMap<String, LeaseHandle>,
    /// Shards that reached SHARD_END, or that this run will not read.
    finished: HashSet<String>,
    /// Shards that stopped on an error; not restarted by this run.
    failed: HashSet<String>,
    /// Shards listed by the first discovery; only they start at the
    /// configured initial position.
    initial: Option<HashSet<String>>,
}

impl<T: Transformer> StreamConsumer<T> {
    /// Runs until `cancel` fires, then stops every shard gracefully (flush,
    /// emit, checkpoint), releases the leases and returns what each shard did.
    ///
    /// Individual shards that fail stop alone; their reports carry the error.
    pub async fn run(self, cancel: CancellationToken) -> Result<StreamReport> {
        let span = tracing::info_span!("stream_consumer", stream = %self.stream, application = %self.application);
        self.run_inner(cancel).instrument(span).await
    }

    async fn run_inner(self, cancel: CancellationToken) -> Result<StreamReport> {
        let env = ShardEnv {
            source: Arc::clone(&self.source),
            store: Arc::clone(&self.store),
            config: self.config,
        };
        let mut state = State::default();
        let mut tasks: JoinSet<ShardReport> = JoinSet::new();
        let mut report = StreamReport::default();
        let mut next_discovery = Instant::now();
        let renew_interval = self.assigner.renew_interval();
        let mut next_renewal = renew_interval.map(|every| Instant::now() + every);
        let mut delays = self.config.retry.delays();

        loop {
            if Instant::now() >= next_discovery {
                match self.discover(&env, &mut state, &mut tasks, &cancel).await {
                    Ok(()) => {
                        delays = self.config.retry.delays();
                        next_discovery = Instant::now() + self.discovery_interval;
                    }
                    Err(error) if error.is_retryable() => {
                        let delay = delays.next_delay();
                        warn!(%error, ?delay, "shard discovery failed; retrying");
                        next_discovery = Instant::now() + delay;
                    }
                    Err(error) => {
                        cancel.cancel();
                        self.drain(&mut state, &mut tasks, &mut report).await;
                        return Err(error);
                    }
                }
            }
            tokio::select! {
                () = cancel.cancelled() => break,
                () = sleep_until(next_discovery) => {}
                () = sleep_until(next_renewal.unwrap_or(next_discovery)), if next_renewal.is_some() => {
                    self.renew(&mut state).await;
                    next_renewal = renew_interval.map(|every| Instant::now() + every);
                }
                Some(joined) = tasks.join_next() => {
                    let shard_report = match joined {
                        Ok(shard_report) => shard_report,
                        Err(join_error) => {
                            warn!(error = %join_error, "a shard task panicked or was aborted");
                            continue;
                        }
                    };
                    if self.task_ended(&mut state, &shard_report).await {
                        // A shard ended: its children may be ready now.
                        next_discovery = Instant::now();
                    }
                    report.shards.push(shard_report);
                }
            }
        }
        self.drain(&mut state, &mut tasks, &mut report).await;
        Ok(report)
    }

    /// Lists shards, takes leases and starts every shard that may run.
    async fn discover(
        &self,
        env: &ShardEnv,
        state: &mut State,
        tasks: &mut JoinSet<ShardReport>,
        cancel: &CancellationToken,
    ) -> Result<()> {
        let shards = self.source.list_shards(&self.stream).await?;
        if state.initial.is_none() {
            state.initial = Some(shards.iter().map(|s| s.shard_id.clone()).collect());
        }
        let listed: HashSet<&str> = shards.iter().map(|s| s.shard_id.as_str()).collect();
        let mut held = Vec::with_capacity(state.running.len() + state.waiting.len());
        for handle in state
            .running
            .values()
            .map(|r| &r.lease)
            .chain(state.waiting.values())
        {
            held.push(handle.lock().await.clone());
        }
        let open: Vec<ShardInfo> = shards
            .iter()
            .filter(|s| {
                !state.finished.contains(&s.shard_id) && !state.failed.contains(&s.shard_id)
            })
            .cloned()
            .collect();
        for lease in self.assigner.acquire(&self.stream, &open, &held).await? {
            state
                .waiting
                .insert(lease.shard_id.clone(), LeaseHandle::new(lease));
        }
        for shard in &shards {
            let id = &shard.shard_id;
            if state.running.contains_key(id) || !state.waiting.contains_key(id) {
                continue;
            }
            let key = ShardKey::new(&*self.application, &*self.stream, id.as_str());
            // Parents no longer listed were trimmed away; nothing of theirs can be read.
            let parents: Vec<String> = shard
                .parents()
                .into_iter()
                .filter(|p| listed.contains(p.as_str()) && !state.finished.contains(p))
                .collect();
            if !parents_finished(&*self.store, &key, &parents).await? {
                debug!(shard = %id, ?parents, "waiting for parent shards to finish");
                continue;
            }
            let Some(handle) = state.waiting.remove(id) else {
                continue;
            };
            if handle.is_lost() {
                continue;
            }
            let mut config = self.config;
            // A shard with a parent still in the stream, or one that appeared
            // after the start, was created by resharding: without a checkpoint
            // it is read from its beginning (as KCL does), so nothing written
            // between parent and child is missed — also after a restart or a
            // takeover, when this worker's first listing already held it.
            let resharded = shard.parents().iter().any(|p| listed.contains(p.as_str()))
                || state
                    .initial
                    .as_ref()
                    .is_some_and(|initial| !initial.contains(id));
            if resharded {
                config.initial_position = InitialPosition::TrimHorizon;
            }
            let context = ShardContext::new(&self.application, &self.stream, id);
            let pipeline = match self.factory.pipeline(&context) {
                Ok(pipeline) => pipeline,
                Err(error) => {
                    warn!(shard = %id, %error, "building the shard's pipeline failed");
                    state.failed.insert(id.clone());
                    self.release(&handle).await;
                    continue;
                }
            };
            let shard_env = ShardEnv {
                config,
                ..env.clone()
            };
            let consumer = ShardConsumer::new(shard_env, context, handle.clone(), pipeline);
            info!(shard = %id, "starting shard");
            tasks.spawn(consumer.run(cancel.child_token()).in_current_span());
            state.running.insert(id.clone(), Running { lease: handle });
        }
        Ok(())
    }

    /// Books a finished shard task; true if it reached SHARD_END.
    async fn task_ended(&self, state: &mut State, report: &ShardReport) -> bool {
        let Some(running) = state.running.remove(&report.shard_id) else {
            return false;
        };
        match &report.outcome {
            ShardOutcome::ShardEnd { .. } => {
                state.finished.insert(report.shard_id.clone());
                self.release(&running.lease).await;
                true
            }
            ShardOutcome::Failed(error) => {
                warn!(shard = %report.shard_id, %error, "shard stopped on error; other shards go on");
                state.failed.insert(report.shard_id.clone());
                self.release(&running.lease).await;
                false
            }
            ShardOutcome::Shutdown => {
                // Graceful handoff: free the lease now rather than at expiry.
                self.release(&running.lease).await;
                false
            }
            ShardOutcome::LeaseLost => false,
        }
    }

    /// Renews every held lease; a lost one stops its shard at once.
    async fn renew(&self, state: &mut State) {
        let handles = state
            .running
            .values()
            .map(|r| &r.lease)
            .chain(state.waiting.values());
        for handle in handles {
            let mut lease = handle.lock().await;
            match self.assigner.renew(&lease).await {
                Ok(renewed) => *lease = renewed,
                Err(Error::LeaseLost { .. }) => {
                    info!(shard = %lease.shard_id, "lease taken by another worker");
                    handle.mark_lost();
                }
                Err(error) => warn!(shard = %lease.shard_id, %error, "lease renewal failed"),
            }
        }
        // Shards waiting on their parents simply drop a lost lease.
        state.waiting.retain(|_, handle| !handle.is_lost());
    }

    /// Gives a lease back unless it was lost (then it is not ours to give).
    async fn release(&self, handle: &LeaseHandle) {
        if handle.is_lost() {
            return;
        }
        let lease = handle.lock().await;
        if let Err(error) = self.assigner.release(&lease).await {
            warn!(shard = %lease.shard_id, %error, "releasing the lease failed");
        }
    }

    /// Waits for every shard task to stop, then releases all leases.
    async fn drain(
        &self,
        state: &mut State,
        tasks: &mut JoinSet<ShardReport>,
        report: &mut StreamReport,
    ) {
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(shard_report) => {
                    self.task_ended(state, &shard_report).await;
                    report.shards.push(shard_report);
                }
                Err(join_error) => {
                    warn!(error = %join_error, "a shard task panicked or was aborted")
                }
            }
        }
        for (_, running) in state.running.drain() {
            self.release(&running.lease).await;
        }
        for (_, handle) in state.waiting.drain() {
            self.release(&handle).await;
        }
        info!("stream consumer stopped");
    }
}
