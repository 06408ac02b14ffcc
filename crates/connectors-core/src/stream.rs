//! The stream consumer: discovers shards and runs one shard consumer each.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::task::{Id, JoinError, JoinSet};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};

use crate::budget::MemoryBudget;
use crate::checkpoint::{CheckpointStore, ShardKey, parents_finished};
use crate::error::{BoxError, Error, Result, SourceErrorKind};
use crate::lease::{ShardAssigner, SingleWorker};
use crate::pipeline::{Pipeline, Transformer};
use crate::record::ShardContext;
use crate::renewal::{HeldLeases, Renewals};
use crate::retry::{Backoff, RetryPolicy};
use crate::shard::{
    LeaseHandle, ShardConfig, ShardConsumer, ShardEnv, ShardOutcome, ShardReport, ShardStats,
};
use crate::source::{InitialPosition, RecordSource, ShardInfo};
use crate::status::{ConsumerStatus, ShardState};
use crate::timeout::within;

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

/// What the stream consumer does when a shard task fails: its emit retries
/// ran out, a call failed for good, a record was bad under
/// [`BadRecordPolicy::Stop`](crate::BadRecordPolicy::Stop), its pipeline
/// could not be built, or user code panicked.
///
/// A failed shard is never parked silently: either it is restarted from its
/// checkpoint (its lease released while it waits, so another worker may take
/// it), or the whole consumer stops with the error so that an orchestrator
/// restarts the process and the failure is seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShardFailurePolicy {
    /// Restart every failed shard from its checkpoint after a capped
    /// backoff ([`StreamConsumerBuilder::restart_backoff`]), for as long as
    /// the consumer runs (default). An outage longer than the emit retry
    /// budget heals by itself once the sink is back.
    #[default]
    Restart,
    /// Restart after transient failures (emit retries exhausted on a
    /// retryable error: throttling, timeouts, 5xx, network); stop the whole
    /// consumer on a permanent one (access denied, a missing stream or
    /// bucket, a bad record under `BadRecordPolicy::Stop`, a panic).
    StopOnPermanent,
    /// Stop the whole consumer on any shard failure.
    StopOnAny,
}

/// Whether a shard's failure may heal by retrying: a batch that failed
/// after its attempts is transient when its last error was retryable.
fn is_transient(error: &Error) -> bool {
    match error {
        Error::BatchFailed { source, .. } => source.is_retryable(),
        other => other.is_retryable(),
    }
}

/// Reports kept per shard in a [`StreamReport`]: a shard restarted every
/// minute for months must not grow it without end.
pub const REPORTS_KEPT_PER_SHARD: usize = 16;

/// What a stream consumer did, shard by shard, when it returned.
#[derive(Debug, Default)]
pub struct StreamReport {
    /// Reports of the shard tasks that ran, in the order they ended: the
    /// last [`REPORTS_KEPT_PER_SHARD`] of each shard.
    pub shards: Vec<ShardReport>,
    /// Older reports left out of `shards`; their counts are still in
    /// [`totals`](Self::totals).
    pub reports_dropped: u64,
    dropped_totals: ShardStats,
}

impl StreamReport {
    /// Adds the report of a task that ended, dropping the shard's oldest
    /// one beyond [`REPORTS_KEPT_PER_SHARD`].
    fn push(&mut self, report: ShardReport) {
        let mut same_shard = self
            .shards
            .iter()
            .enumerate()
            .filter(|(_, kept)| kept.shard_id == report.shard_id);
        if let Some((oldest, _)) = same_shard.next()
            && same_shard.count() + 1 >= REPORTS_KEPT_PER_SHARD
        {
            let dropped = self.shards.remove(oldest);
            self.dropped_totals = add(self.dropped_totals, dropped.stats);
            self.reports_dropped += 1;
        }
        self.shards.push(report);
    }

    /// Reports of shard tasks that stopped on an error, restarted ones
    /// included (of the reports kept).
    pub fn failures(&self) -> impl Iterator<Item = (&str, &Error)> {
        self.shards
            .iter()
            .filter_map(|report| match &report.outcome {
                ShardOutcome::Failed(error) => Some((report.shard_id.as_str(), error)),
                _ => None,
            })
    }

    /// Failures a shard did not recover from before the consumer stopped:
    /// for each shard whose last task failed, that task's error. A failure
    /// followed by a restart that ran on is not among them
    /// ([`failures`](Self::failures) lists every one).
    pub fn unrecovered(&self) -> Vec<(&str, &Error)> {
        let mut last: Vec<(&str, &ShardOutcome)> = Vec::new();
        for report in &self.shards {
            match last.iter_mut().find(|(id, _)| *id == report.shard_id) {
                Some(entry) => entry.1 = &report.outcome,
                None => last.push((&report.shard_id, &report.outcome)),
            }
        }
        last.into_iter()
            .filter_map(|(shard, outcome)| match outcome {
                ShardOutcome::Failed(error) => Some((shard, error)),
                _ => None,
            })
            .collect()
    }

    /// Items delivered across all shards.
    pub fn records_emitted(&self) -> u64 {
        self.totals().records_emitted
    }

    /// What all shard tasks did, added up (dropped reports included).
    pub fn totals(&self) -> ShardStats {
        self.shards
            .iter()
            .fold(self.dropped_totals, |total, report| {
                add(total, report.stats)
            })
    }
}

fn add(a: ShardStats, b: ShardStats) -> ShardStats {
    ShardStats {
        records_read: a.records_read + b.records_read,
        records_filtered: a.records_filtered + b.records_filtered,
        records_emitted: a.records_emitted + b.records_emitted,
        records_failed: a.records_failed + b.records_failed,
        batches_emitted: a.batches_emitted + b.batches_emitted,
        checkpoints_written: a.checkpoints_written + b.checkpoints_written,
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
    memory: MemoryBudget,
    discovery_interval: Duration,
    on_failure: ShardFailurePolicy,
    restart_backoff: RetryPolicy,
    shutdown_timeout: Duration,
    status: ConsumerStatus,
}

/// The default backoff between restarts of a failed shard: 1 s doubling to
/// 60 s, with jitter.
const DEFAULT_RESTART_BACKOFF: RetryPolicy = RetryPolicy::new()
    .with_initial_delay(Duration::from_secs(1))
    .with_max_delay(Duration::from_secs(60));

impl<T: Transformer> std::fmt::Debug for StreamConsumer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamConsumer")
            .field("application", &self.application)
            .field("stream", &self.stream)
            .field("config", &self.config)
            .field("memory", &self.memory)
            .field("discovery_interval", &self.discovery_interval)
            .field("on_failure", &self.on_failure)
            .field("restart_backoff", &self.restart_backoff)
            .field("shutdown_timeout", &self.shutdown_timeout)
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
        let stream = stream.into();
        StreamConsumerBuilder {
            consumer: StreamConsumer {
                application: application.into(),
                status: ConsumerStatus::new(&stream),
                stream,
                source,
                store,
                assigner: Arc::new(SingleWorker::default()),
                factory: Arc::new(factory),
                config: ShardConfig::default(),
                memory: MemoryBudget::default(),
                discovery_interval: Duration::from_secs(60),
                on_failure: ShardFailurePolicy::default(),
                restart_backoff: DEFAULT_RESTART_BACKOFF,
                shutdown_timeout: Duration::from_secs(120),
            },
        }
    }
}

impl<T: Transformer> StreamConsumerBuilder<T> {
    /// The bytes of records all this worker's shards may hold at once
    /// (default [`MemoryBudget::DEFAULT_BYTES`], 256 MiB): pages read
    /// ahead, buffered records and batches until they are checkpointed.
    /// When it is spent, shards read less; nothing is dropped. Give two
    /// consumers in one process clones of one budget to share it.
    pub fn memory_budget(mut self, memory: MemoryBudget) -> Self {
        self.consumer.memory = memory;
        self
    }

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

    /// What happens when a shard fails (default
    /// [`ShardFailurePolicy::Restart`]).
    pub fn on_shard_failure(mut self, policy: ShardFailurePolicy) -> Self {
        self.consumer.on_failure = policy;
        self
    }

    /// The wait before a failed shard is restarted from its checkpoint; it
    /// grows with each failure in a row up to the policy's `max_delay`
    /// (default 1 s doubling to 60 s, with jitter). `max_attempts` is not
    /// used: restarts go on for as long as the consumer runs.
    pub fn restart_backoff(mut self, backoff: RetryPolicy) -> Self {
        self.consumer.restart_backoff = backoff;
        self
    }

    /// How long shutdown waits for the shards to flush, emit and checkpoint
    /// (default 2 min). Shards still busy then are stopped without their last
    /// checkpoint (their reports carry [`Error::ShutdownTimedOut`]); what
    /// they had not acknowledged is read again on the next start.
    pub fn shutdown_timeout(mut self, grace: Duration) -> Self {
        self.consumer.shutdown_timeout = grace;
        self
    }

    /// Checks the configuration and builds the consumer.
    pub fn build(self) -> Result<StreamConsumer<T>> {
        let consumer = self.consumer;
        consumer.config.validate()?;
        consumer.restart_backoff.validate()?;
        if consumer.shutdown_timeout.is_zero() {
            return Err(Error::Config("shutdown_timeout must be positive".into()));
        }
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
    /// The tokio task, to tell whose task panicked.
    task: Id,
}

/// A failed shard waiting to be started again.
struct Restart {
    /// Failures in a row (reset when a task of the shard ends otherwise).
    failures: u32,
    /// When it may start again.
    not_before: Instant,
    delays: Backoff,
}

/// A lease call that did not answer in time: retryable, like a lost
/// connection to the store.
fn lease_call_timed_out(what: &str, after: Duration) -> Error {
    Error::checkpoint_retryable(format!("{what} did not finish within {after:?}"))
}

/// When the next discovery round is due: after `interval`, or earlier when a
/// failed shard's restart comes first (a round that ran a moment before that
/// restart was due must not push it a whole interval away).
fn next_round(state: &State, interval: Duration) -> Instant {
    let now = Instant::now();
    let after_interval = now + interval;
    state
        .restarting
        .iter()
        .filter(|(shard_id, restart)| {
            restart.not_before > now && !state.running.contains_key(*shard_id)
        })
        .map(|(_, restart)| restart.not_before)
        .min()
        .map_or(after_interval, |restart| restart.min(after_interval))
}

/// What the consumer does after a shard task ended.
enum Ended {
    /// It reached SHARD_END: look for its children now.
    Finished,
    /// It failed and may start again at this instant.
    Restart(Instant),
    /// It failed and the policy stops the consumer.
    Stop(Error),
    /// Nothing to do (shutdown, lease lost, unknown task).
    Other,
}

/// The report of a shard task that ended without a report of its own: it
/// panicked (user code in its pipeline), or shutdown aborted it after the
/// grace period. Found by the task's id; `None` for an unknown task.
fn unreported(state: &State, join_error: JoinError, grace: Duration) -> Option<ShardReport> {
    let task = join_error.id();
    let shard_id = state
        .running
        .iter()
        .find(|(_, running)| running.task == task)
        .map(|(shard_id, _)| shard_id.clone())?;
    let error = if join_error.is_panic() {
        let payload = join_error.into_panic();
        let message = payload
            .downcast_ref::<&str>()
            .map(|m| (*m).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".to_owned());
        Error::Panicked {
            shard_id: shard_id.clone(),
            message,
        }
    } else {
        Error::ShutdownTimedOut {
            shard_id: shard_id.clone(),
            grace,
        }
    };
    Some(ShardReport {
        outcome: ShardOutcome::Failed(error),
        shard_id,
        stats: ShardStats::default(),
        checkpoint: None,
    })
}

/// Bookkeeping across discovery rounds.
#[derive(Default)]
struct State {
    running: HashMap<String, Running>,
    /// Leases held for shards waiting on their parents.
    waiting: HashMap<String, LeaseHandle>,
    /// Every lease held (running and waiting), as the renewal task sees them.
    held: HeldLeases,
    /// The last `ListShards`, for lease rounds between discoveries.
    listing: Vec<ShardInfo>,
    /// Shards that reached SHARD_END, or that this run will not read.
    finished: HashSet<String>,
    /// Failed shards and when each may start again.
    restarting: HashMap<String, Restart>,
    /// Shards listed by the first discovery; only they start at the
    /// configured initial position.
    initial: Option<HashSet<String>>,
}

impl<T: Transformer> StreamConsumer<T> {
    /// A live view of this consumer's shards (state, last error, restarts,
    /// lease, last checkpoint, lag), readable from another task while
    /// [`run`](Self::run) goes on: take it before calling `run`.
    pub fn status(&self) -> ConsumerStatus {
        self.status.clone()
    }

    /// Runs until `cancel` fires, then stops every shard gracefully (flush,
    /// emit, checkpoint), releases the leases and returns what each shard did.
    ///
    /// A shard that fails (or whose user code panics) is restarted from its
    /// checkpoint after a backoff, or stops the whole consumer with
    /// [`Error::ShardFailed`], as the [`ShardFailurePolicy`] says; every
    /// failed task has a report carrying its error.
    pub async fn run(self, cancel: CancellationToken) -> Result<StreamReport> {
        let span = tracing::info_span!("stream_consumer", stream = %self.stream, application = %self.application);
        self.run_inner(cancel).instrument(span).await
    }

    async fn run_inner(self, cancel: CancellationToken) -> Result<StreamReport> {
        let mut state = State::default();
        let mut tasks: JoinSet<ShardReport> = JoinSet::new();
        let mut report = StreamReport::default();
        // Renewals go on through the shutdown below, until every lease is released.
        let renewals = Renewals::start(Arc::clone(&self.assigner), state.held.clone());
        let outcome = self
            .supervise(&mut state, &mut tasks, &mut report, &cancel)
            .await;
        cancel.cancel();
        self.drain(&mut state, &mut tasks, &mut report).await;
        renewals.stop().await;
        outcome.map(|()| report)
    }

    /// Discovers shards, takes leases, starts shard tasks and books their
    /// ends until `cancel` fires (`Ok`) or something stops the consumer.
    async fn supervise(
        &self,
        state: &mut State,
        tasks: &mut JoinSet<ShardReport>,
        report: &mut StreamReport,
        cancel: &CancellationToken,
    ) -> Result<()> {
        let env = ShardEnv::new(
            Arc::clone(&self.source),
            Arc::clone(&self.store),
            self.config,
        )
        .with_memory_budget(self.memory.clone());
        let mut next_discovery = Instant::now();
        let scan_interval = self.assigner.lease_scan_interval();
        let mut next_acquire: Option<Instant> = None;
        let mut delays = self.config.retry.delays();

        loop {
            let now = Instant::now();
            if now >= next_discovery {
                match self.discover(&env, state, tasks, cancel).await {
                    Ok(()) => {
                        delays = self.config.retry.delays();
                        next_discovery = next_round(state, self.discovery_interval);
                        next_acquire = scan_interval.map(|every| Instant::now() + every);
                    }
                    Err(error) if error.is_retryable() => {
                        let delay = delays.next_delay();
                        warn!(%error, ?delay, "shard discovery failed; retrying");
                        next_discovery = Instant::now() + delay;
                    }
                    Err(error) => return Err(error),
                }
            } else if next_acquire.is_some_and(|at| now >= at) {
                // A lease round between discoveries, on the last listing:
                // expired leases are noticed within the lease timing, not
                // the discovery interval.
                let shards = std::mem::take(&mut state.listing);
                let assigned = self.assign(&env, state, tasks, cancel, &shards).await;
                state.listing = shards;
                match assigned {
                    Ok(()) => {}
                    Err(error) if error.is_retryable() => {
                        warn!(%error, "taking leases failed; trying again next round");
                    }
                    Err(error) => return Err(error),
                }
                next_acquire = scan_interval.map(|every| Instant::now() + every);
            }
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                () = sleep_until(next_discovery) => {}
                () = sleep_until(next_acquire.unwrap_or(next_discovery)), if next_acquire.is_some() => {}
                Some(joined) = tasks.join_next_with_id() => {
                    let shard_report = match joined {
                        Ok((_, shard_report)) => shard_report,
                        Err(join_error) => match unreported(state, join_error, self.shutdown_timeout) {
                            Some(shard_report) => shard_report,
                            None => continue,
                        },
                    };
                    let ended = self.task_ended(state, &shard_report).await;
                    report.push(shard_report);
                    match ended {
                        Ended::Finished => {
                            // A shard ended: its children may be ready now.
                            next_discovery = Instant::now();
                        }
                        Ended::Restart(at) => next_discovery = next_discovery.min(at),
                        Ended::Stop(error) => return Err(error),
                        Ended::Other => {}
                    }
                }
            }
        }
    }

    /// Lists shards, takes leases and starts every shard that may run.
    async fn discover(
        &self,
        env: &ShardEnv,
        state: &mut State,
        tasks: &mut JoinSet<ShardReport>,
        cancel: &CancellationToken,
    ) -> Result<()> {
        let shards = within(
            self.config.read_timeout,
            self.source.list_shards(&self.stream),
            |after| {
                Error::source(
                    SourceErrorKind::Transient,
                    format!("ListShards did not answer within {after:?}"),
                )
            },
        )
        .await?;
        if state.initial.is_none() {
            state.initial = Some(shards.iter().map(|s| s.shard_id.clone()).collect());
        }
        self.assign(env, state, tasks, cancel, &shards).await?;
        state.listing = shards;
        Ok(())
    }

    /// Takes leases of `shards` (the last listing) and starts every shard
    /// that may run.
    async fn assign(
        &self,
        env: &ShardEnv,
        state: &mut State,
        tasks: &mut JoinSet<ShardReport>,
        cancel: &CancellationToken,
        shards: &[ShardInfo],
    ) -> Result<()> {
        // Shards waiting on their parents simply drop a lost lease.
        state.waiting.retain(|shard_id, handle| {
            let held = !handle.is_lost();
            if !held {
                self.status.remove(shard_id);
                state.held.forget(shard_id);
            }
            held
        });
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
        let now = Instant::now();
        let open: Vec<ShardInfo> = shards
            .iter()
            .filter(|s| {
                !state.finished.contains(&s.shard_id)
                    && state
                        .restarting
                        .get(&s.shard_id)
                        .is_none_or(|restart| restart.not_before <= now)
            })
            .cloned()
            .collect();
        let acquired = within(
            self.config.checkpoint_timeout,
            self.assigner.acquire(&self.stream, &open, &held),
            |after| lease_call_timed_out("taking leases", after),
        )
        .await?;
        for lease in acquired {
            let shard_id = lease.shard_id.clone();
            let handle = LeaseHandle::new(lease);
            state.held.hold(&shard_id, &handle);
            state.waiting.insert(shard_id, handle);
        }
        for shard in shards {
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
                self.status.set_state(id, ShardState::WaitingOnParents);
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
                    self.release(&state.held, &handle).await;
                    return match self.failed(state, id, &error, false) {
                        Ended::Stop(stop) => Err(stop),
                        _ => Ok(()),
                    };
                }
            };
            let shard_env = ShardEnv {
                config,
                ..env.clone()
            };
            let consumer = ShardConsumer::new(shard_env, context, handle.clone(), pipeline)
                .with_status(self.status.clone());
            self.status.set_state(id, ShardState::Reading);
            info!(shard = %id, "starting shard");
            let task = tasks
                .spawn(consumer.run(cancel.child_token()).in_current_span())
                .id();
            state.running.insert(
                id.clone(),
                Running {
                    lease: handle,
                    task,
                },
            );
        }
        Ok(())
    }

    /// Books a finished shard task: releases its lease and says what next.
    async fn task_ended(&self, state: &mut State, report: &ShardReport) -> Ended {
        let Some(running) = state.running.remove(&report.shard_id) else {
            return Ended::Other;
        };
        match &report.outcome {
            ShardOutcome::ShardEnd { .. } => {
                state.restarting.remove(&report.shard_id);
                self.status
                    .set_state(&report.shard_id, ShardState::Finished);
                state.finished.insert(report.shard_id.clone());
                self.release(&state.held, &running.lease).await;
                Ended::Finished
            }
            ShardOutcome::Failed(error) => {
                // Released while it waits, so another worker may take it.
                self.release(&state.held, &running.lease).await;
                let progressed = report.stats.checkpoints_written > 0;
                self.failed(state, &report.shard_id, error, progressed)
            }
            ShardOutcome::Shutdown => {
                state.restarting.remove(&report.shard_id);
                self.status.remove(&report.shard_id);
                // Graceful handoff: free the lease now rather than at expiry.
                self.release(&state.held, &running.lease).await;
                Ended::Other
            }
            ShardOutcome::LeaseLost => {
                state.held.forget(&report.shard_id);
                state.restarting.remove(&report.shard_id);
                self.status.remove(&report.shard_id);
                Ended::Other
            }
        }
    }

    /// A shard failed: schedules its restart, or stops the consumer when the
    /// policy says so. `progressed`: the failed task wrote a checkpoint, so
    /// the backoff starts over.
    fn failed(&self, state: &mut State, shard_id: &str, error: &Error, progressed: bool) -> Ended {
        let stop = matches!(error, Error::UnexpectedLease { .. })
            || match self.on_failure {
                ShardFailurePolicy::Restart => false,
                ShardFailurePolicy::StopOnPermanent => !is_transient(error),
                ShardFailurePolicy::StopOnAny => true,
            };
        if stop {
            warn!(shard = %shard_id, %error, policy = ?self.on_failure, "shard failed; stopping the consumer");
            return Ended::Stop(Error::ShardFailed {
                shard_id: shard_id.to_owned(),
                source: BoxError::from(error.to_string()),
            });
        }
        let restart = state
            .restarting
            .entry(shard_id.to_owned())
            .or_insert_with(|| Restart {
                failures: 0,
                not_before: Instant::now(),
                delays: self.restart_backoff.delays(),
            });
        if progressed {
            restart.failures = 0;
            restart.delays = self.restart_backoff.delays();
        }
        restart.failures += 1;
        let delay = restart.delays.next_delay();
        restart.not_before = Instant::now() + delay;
        self.status
            .restarting(shard_id, &error.to_string(), SystemTime::now() + delay);
        warn!(
            shard = %shard_id,
            %error,
            failures = restart.failures,
            ?delay,
            "shard failed; restarting it from its checkpoint"
        );
        Ended::Restart(restart.not_before)
    }

    /// Stops renewing a lease and gives it back, unless it was lost (then
    /// it is not ours to give).
    async fn release(&self, held: &HeldLeases, handle: &LeaseHandle) {
        let lease = handle.lock().await;
        held.forget(&lease.shard_id);
        if handle.is_lost() {
            return;
        }
        let released = within(
            self.config.checkpoint_timeout,
            self.assigner.release(&lease),
            |after| lease_call_timed_out("releasing a lease", after),
        );
        if let Err(error) = released.await {
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
        // Shards get the grace period to flush, emit and checkpoint; then
        // they are aborted (their unacknowledged records are read again on
        // the next start: at-least-once still holds).
        let deadline = Instant::now() + self.shutdown_timeout;
        loop {
            let joined = match tokio::time::timeout_at(deadline, tasks.join_next_with_id()).await {
                Ok(Some(joined)) => joined,
                Ok(None) => break,
                Err(_) => {
                    let pending: Vec<&String> = state.running.keys().collect();
                    warn!(
                        grace = ?self.shutdown_timeout,
                        shards = ?pending,
                        "shutdown grace period over; stopping these shards without their last checkpoint"
                    );
                    tasks.abort_all();
                    continue;
                }
            };
            let shard_report = match joined {
                Ok((_, shard_report)) => shard_report,
                Err(join_error) => match unreported(state, join_error, self.shutdown_timeout) {
                    Some(shard_report) => shard_report,
                    None => continue,
                },
            };
            // Draining: a failure is reported, never restarted.
            self.status.remove(&shard_report.shard_id);
            if let Some(running) = state.running.remove(&shard_report.shard_id) {
                if matches!(shard_report.outcome, ShardOutcome::LeaseLost) {
                    // Another worker's now: not renewed, not given back.
                    state.held.forget(&shard_report.shard_id);
                } else {
                    self.release(&state.held, &running.lease).await;
                }
            }
            report.push(shard_report);
        }
        for (_, running) in state.running.drain() {
            self.release(&state.held, &running.lease).await;
        }
        for (shard_id, handle) in state.waiting.drain() {
            self.status.remove(&shard_id);
            self.release(&state.held, &handle).await;
        }
        // Shards waiting to restart hold no lease; they are no longer ours.
        for shard_id in state.restarting.keys() {
            self.status.remove(shard_id);
        }
        info!("stream consumer stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_keeps_the_last_reports_of_each_shard_and_counts_all() {
        let mut report = StreamReport::default();
        let ended = |shard: &str| ShardReport {
            shard_id: shard.to_owned(),
            outcome: ShardOutcome::Failed(Error::Config("boom".into())),
            stats: ShardStats {
                records_read: 1,
                ..ShardStats::default()
            },
            checkpoint: None,
        };
        for _ in 0..100 {
            report.push(ended("a"));
        }
        report.push(ended("b"));
        assert_eq!(report.shards.len(), REPORTS_KEPT_PER_SHARD + 1);
        assert_eq!(report.reports_dropped, 100 - REPORTS_KEPT_PER_SHARD as u64);
        assert_eq!(report.totals().records_read, 101);
        assert_eq!(report.unrecovered().len(), 2);
    }

    fn restart_at(not_before: Instant) -> Restart {
        Restart {
            failures: 1,
            not_before,
            delays: RetryPolicy::new().delays(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_next_round_comes_no_later_than_the_soonest_pending_restart() {
        let interval = Duration::from_secs(60);
        let now = Instant::now();
        let mut state = State::default();
        assert_eq!(next_round(&state, interval), now + interval);

        // Due in 2 s and 5 s: the round comes at the first.
        state
            .restarting
            .insert("b".into(), restart_at(now + Duration::from_secs(5)));
        state
            .restarting
            .insert("a".into(), restart_at(now + Duration::from_secs(2)));
        assert_eq!(next_round(&state, interval), now + Duration::from_secs(2));

        // A restart already past (the shard runs again, or its lease is
        // elsewhere) does not make rounds spin.
        state
            .restarting
            .insert("a".into(), restart_at(now - Duration::from_secs(1)));
        assert_eq!(next_round(&state, interval), now + Duration::from_secs(5));

        // Restarts later than the interval leave the interval.
        state
            .restarting
            .insert("b".into(), restart_at(now + Duration::from_secs(600)));
        assert_eq!(next_round(&state, interval), now + interval);
    }
}
