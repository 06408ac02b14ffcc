//! The shard consumer: reads one shard and runs its records through a pipeline.
//!
//! Two tasks per shard: a reader that calls `GetRecords` (rate-limited,
//! backing off on throttling, renewing expired iterators) and hands each
//! page over a channel of one slot, and the processor that transforms,
//! filters, buffers, emits and checkpoints. The reader reserves the slot
//! before it calls Kinesis, so at most one page waits while a batch is being
//! emitted: memory per shard is bounded by one batch in flight plus one
//! read ahead, and reading overlaps emitting. Across shards, the reader also
//! reserves room for the page in the worker's [`MemoryBudget`]; the
//! reservation travels with the page, shrinks to what the buffer keeps, and
//! is given back once the batch is checkpointed. While any reader of the
//! worker waits for room, every processor flushes what it buffered, so
//! waiting always ends.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};

use crate::budget::{MemoryBudget, Reservation, caught_up_estimate, page_worst_case, record_cost};
use crate::checkpoint::{Checkpoint, CheckpointStore, ShardKey};
use crate::error::{Error, Result, SourceErrorKind};
use crate::lease::Lease;
use crate::metrics::ShardMetrics;
use crate::pipeline::{
    BadRecordPolicy, Batch, EmitOutcome, Emitter, FailedRecord, ItemSource, Pipeline, Transformer,
};
use crate::record::{Position, Record, SequenceNumber, ShardContext};
use crate::retry::RetryPolicy;
use crate::source::{Delivery, InitialPosition, RecordSource, RecordsPage, StartPosition};
use crate::status::{ConsumerStatus, ShardState};
use crate::timeout::within;

/// Kinesis allows five `GetRecords` calls per second per shard.
const MIN_CALL_INTERVAL: Duration = Duration::from_millis(200);

/// How a shard is read.
///
/// `#[non_exhaustive]` so that settings can be added without breaking you:
/// start from the defaults and change what you need,
/// `ShardConfig::default().with_idle_delay(Duration::from_millis(500))`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShardConfig {
    /// Records asked for per `GetRecords` call (default 10,000, the API maximum).
    pub max_records_per_call: u32,
    /// Records asked for by the first `GetRecords` call of each shard read
    /// (default 100; at most `max_records_per_call`). A full first page of
    /// 10,000 records takes Kinesis and the SDK about a second to produce
    /// and decode; a small one brings the first records into the pipeline
    /// within a few milliseconds of the iterator, and the next call, 200 ms
    /// later, asks for the full `max_records_per_call` again.
    pub first_call_records: u32,
    /// Pause after a call that found the shard caught up (default 1 s, at
    /// least 200 ms: never more than 5 calls per second per shard).
    pub idle_delay: Duration,
    /// Where a shard without a checkpoint starts (default `TRIM_HORIZON`).
    pub initial_position: InitialPosition,
    /// Backoff for throttling, transient errors and failed emits.
    pub retry: RetryPolicy,
    /// Limit on one `emit` call, and on the emitter's `shutdown` (default
    /// 5 min: a Redshift COPY or a large multipart upload may take minutes).
    /// A timed-out emit is a retryable failure.
    pub emit_timeout: Duration,
    /// Limit on one checkpoint read or write and one lease call (default 30 s).
    pub checkpoint_timeout: Duration,
    /// Limit on one `ListShards`, `GetShardIterator` or `GetRecords` call
    /// (default 30 s); a timed-out read is retried like a network error.
    pub read_timeout: Duration,
    /// Replay-stable batches (default on): before emitting a batch cut by
    /// time (its age, a shutdown, a read error) the shard records the
    /// batch's end in the checkpoint store, and after a crash, a takeover or
    /// a restart its first batch is cut exactly there, whatever the limits
    /// say. Batches cut by count, bytes or shard end are cut the same way
    /// on replay by themselves and cost nothing extra. Needs a store that
    /// keeps pending batches ([`CheckpointStore::keeps_pending_batches`]).
    pub replay_stable_batches: bool,
}

impl Default for ShardConfig {
    fn default() -> Self {
        Self {
            max_records_per_call: 10_000,
            first_call_records: 100,
            idle_delay: Duration::from_secs(1),
            initial_position: InitialPosition::TrimHorizon,
            retry: RetryPolicy::default(),
            emit_timeout: Duration::from_secs(300),
            checkpoint_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(30),
            replay_stable_batches: true,
        }
    }
}

impl ShardConfig {
    /// This configuration asking for `max_records_per_call` records per
    /// `GetRecords` call (1..=10,000).
    pub const fn with_max_records_per_call(mut self, max_records_per_call: u32) -> Self {
        self.max_records_per_call = max_records_per_call;
        self
    }

    /// This configuration asking for `records` records in a shard's first
    /// `GetRecords` call (1..=10,000; see
    /// [`first_call_records`](Self::first_call_records)). Equal to
    /// `max_records_per_call`, every call asks for the same.
    pub const fn with_first_call_records(mut self, records: u32) -> Self {
        self.first_call_records = records;
        self
    }

    /// This configuration pausing `idle_delay` after a call that found the
    /// shard caught up (at least 200 ms).
    pub const fn with_idle_delay(mut self, idle_delay: Duration) -> Self {
        self.idle_delay = idle_delay;
        self
    }

    /// This configuration starting shards without a checkpoint at `initial_position`.
    pub const fn with_initial_position(mut self, initial_position: InitialPosition) -> Self {
        self.initial_position = initial_position;
        self
    }

    /// This configuration retrying with `retry`.
    pub const fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// This configuration giving one emit (and the emitter's shutdown) at
    /// most `limit`.
    pub const fn with_emit_timeout(mut self, limit: Duration) -> Self {
        self.emit_timeout = limit;
        self
    }

    /// This configuration giving one checkpoint or lease call at most `limit`.
    pub const fn with_checkpoint_timeout(mut self, limit: Duration) -> Self {
        self.checkpoint_timeout = limit;
        self
    }

    /// This configuration with replay-stable batches on or off (see
    /// [`replay_stable_batches`](Self::replay_stable_batches)).
    pub const fn with_replay_stable_batches(mut self, on: bool) -> Self {
        self.replay_stable_batches = on;
        self
    }

    /// This configuration giving one read from the source at most `limit`.
    pub const fn with_read_timeout(mut self, limit: Duration) -> Self {
        self.read_timeout = limit;
        self
    }

    /// Checks the configuration against the service limits.
    pub fn validate(&self) -> Result<()> {
        for (name, limit) in [
            ("emit_timeout", self.emit_timeout),
            ("checkpoint_timeout", self.checkpoint_timeout),
            ("read_timeout", self.read_timeout),
        ] {
            if limit.is_zero() {
                return Err(Error::Config(format!("{name} must be positive")));
            }
        }
        if !(1..=10_000).contains(&self.max_records_per_call) {
            return Err(Error::Config(format!(
                "max_records_per_call must be within 1..=10000, got {}",
                self.max_records_per_call
            )));
        }
        if !(1..=10_000).contains(&self.first_call_records) {
            return Err(Error::Config(format!(
                "first_call_records must be within 1..=10000, got {}",
                self.first_call_records
            )));
        }
        if self.idle_delay < MIN_CALL_INTERVAL {
            return Err(Error::Config(format!(
                "idle_delay must be at least {MIN_CALL_INTERVAL:?} (5 GetRecords calls/s per shard), got {:?}",
                self.idle_delay
            )));
        }
        self.retry.validate()
    }
}

/// The lease a shard runs under, shared with the task that renews it.
///
/// Renewals and fenced checkpoint writes take turns on the lease (as the
/// Kinesis Client Library does): a renewal bumps the counter in the store and
/// here under one lock, so a checkpoint never goes out with a counter that a
/// renewal of this same worker has just made stale. A renewal that finds the
/// lease taken calls [`mark_lost`](Self::mark_lost), which stops the shard at
/// once without writing anything.
#[derive(Debug, Clone)]
pub struct LeaseHandle {
    current: Arc<tokio::sync::Mutex<Lease>>,
    lost: CancellationToken,
}

impl LeaseHandle {
    /// A handle for a freshly acquired lease.
    pub fn new(lease: Lease) -> Self {
        Self {
            current: Arc::new(tokio::sync::Mutex::new(lease)),
            lost: CancellationToken::new(),
        }
    }

    /// Exclusive access to the lease: hold it while renewing (and store the
    /// renewed lease through the guard) or while writing a fenced checkpoint.
    pub async fn lock(&self) -> tokio::sync::MutexGuard<'_, Lease> {
        self.current.lock().await
    }

    /// Marks the lease lost: the shard stops without writing.
    pub fn mark_lost(&self) {
        self.lost.cancel();
    }

    /// Whether the lease was lost.
    pub fn is_lost(&self) -> bool {
        self.lost.is_cancelled()
    }

    /// Whether both handles are clones of one handle (one take of a lease).
    pub(crate) fn same_lease(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.current, &other.current)
    }
}

/// Counts of what one shard task did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardStats {
    /// Records read from Kinesis.
    pub records_read: u64,
    /// Records dropped by the filter.
    pub records_filtered: u64,
    /// Items delivered by the emitter.
    pub records_emitted: u64,
    /// Records that failed to transform or were rejected by the emitter.
    pub records_failed: u64,
    /// Batches delivered.
    pub batches_emitted: u64,
    /// Checkpoints written.
    pub checkpoints_written: u64,
}

/// Why a shard task ended.
#[derive(Debug)]
#[non_exhaustive]
pub enum ShardOutcome {
    /// The shard was closed and fully processed; SHARD_END is checkpointed.
    ShardEnd {
        /// The shards created from this one.
        children: Vec<String>,
    },
    /// Shutdown was requested; everything read was emitted and checkpointed.
    Shutdown,
    /// Another worker took the lease; nothing more was written.
    LeaseLost,
    /// The shard stopped on an error; its checkpoint covers only emitted records.
    Failed(Error),
}

/// What a shard task did and how it ended.
#[derive(Debug)]
pub struct ShardReport {
    /// The shard.
    pub shard_id: String,
    /// How it ended.
    pub outcome: ShardOutcome,
    /// What it did.
    pub stats: ShardStats,
    /// The last checkpoint this task wrote or found.
    pub checkpoint: Option<Checkpoint>,
}

/// Everything one shard task needs besides its pipeline.
#[derive(Clone)]
pub struct ShardEnv {
    /// Where records come from.
    pub source: Arc<dyn RecordSource>,
    /// Where checkpoints go.
    pub store: Arc<dyn CheckpointStore>,
    /// How the shard is read.
    pub config: ShardConfig,
    /// The bytes of records this shard may hold, shared with the other
    /// shards of the worker.
    pub memory: MemoryBudget,
}

impl ShardEnv {
    /// An environment reading from `source` with `config`, checkpointing to
    /// `store`, under a [`MemoryBudget`] of its own at the default size.
    pub fn new(
        source: Arc<dyn RecordSource>,
        store: Arc<dyn CheckpointStore>,
        config: ShardConfig,
    ) -> Self {
        Self {
            source,
            store,
            config,
            memory: MemoryBudget::default(),
        }
    }

    /// This environment under `memory` (share one budget between shards).
    pub fn with_memory_budget(mut self, memory: MemoryBudget) -> Self {
        self.memory = memory;
        self
    }
}

impl std::fmt::Debug for ShardEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardEnv")
            .field("config", &self.config)
            .field("memory", &self.memory)
            .finish_non_exhaustive()
    }
}

/// Consumes one shard until it ends, shutdown is requested, the lease is
/// lost or an error stops it.
///
/// The stream consumer runs one per shard; it can also be used directly to
/// read a single shard.
pub struct ShardConsumer<T: Transformer> {
    env: ShardEnv,
    context: ShardContext,
    lease: LeaseHandle,
    pipeline: Pipeline<T>,
    status: ConsumerStatus,
}

impl<T: Transformer> ShardConsumer<T> {
    /// A consumer of `context.shard_id` running `pipeline` under `lease`.
    pub fn new(
        env: ShardEnv,
        context: ShardContext,
        lease: LeaseHandle,
        pipeline: Pipeline<T>,
    ) -> Self {
        let status = ConsumerStatus::new(&context.stream);
        Self {
            env,
            context,
            lease,
            pipeline,
            status,
        }
    }

    /// Reports this shard's state into `status` (the stream consumer's board).
    pub(crate) fn with_status(mut self, status: ConsumerStatus) -> Self {
        self.status = status;
        self
    }

    /// The live state of this shard while it runs.
    pub fn status(&self) -> ConsumerStatus {
        self.status.clone()
    }

    /// Runs until the shard ends, `cancel` fires, the lease is lost or an error stops it.
    pub async fn run(self, cancel: CancellationToken) -> ShardReport {
        let span = tracing::info_span!(
            "shard",
            stream = %self.context.stream,
            shard_id = %self.context.shard_id
        );
        let shard_id = self.context.shard_id.to_string();
        let mut processor = Processor::new(
            self.env,
            self.context,
            self.lease,
            self.pipeline,
            self.status,
            cancel,
        );
        let outcome = processor.run().instrument(span).await;
        ShardReport {
            shard_id,
            outcome,
            stats: processor.stats,
            checkpoint: processor.checkpointed,
        }
    }
}

/// What the reader hands to the processor: a page (or the error that ended
/// reading) and the room the page holds in the memory budget.
type Page = (Result<RecordsPage>, Reservation);

/// The state of one shard's processing half.
struct Processor<T: Transformer> {
    env: ShardEnv,
    context: ShardContext,
    key: ShardKey,
    lease: LeaseHandle,
    pipeline: Pipeline<T>,
    metrics: ShardMetrics,
    stats: ShardStats,
    /// The newest checkpoint stored; records it covers are skipped.
    checkpointed: Option<Checkpoint>,
    /// Shutdown: once it fires, store retries are bounded so `run` returns.
    cancel: CancellationToken,
    status: ConsumerStatus,
    /// Replaying: the end of a time-cut batch that may have been emitted
    /// before the last stop; the first batch is cut exactly there.
    replay_until: Option<Position>,
    /// Whether a record past `checkpointed` was read: then every later one is.
    past_checkpoint: bool,
    /// Whether time-cut batches record their end first.
    record_pending: bool,
    /// The budget held for records buffered since the last flush.
    buffered: Reservation,
    /// What those records cost.
    buffered_cost: usize,
}

/// Why a batch is cut.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// By the records alone (count, bytes, shard end, a replayed batch's
    /// recorded end): the same records make the same batch again.
    ByRecords,
    /// By time (age, shutdown, a read error): its end is recorded first.
    ByTime,
}

/// A write to the checkpoint store, fenced by the lease.
enum StoreWrite<'a> {
    Checkpoint(&'a Checkpoint),
    PendingBatch(&'a Position),
}

/// Stops the processing loop early.
enum Stop {
    LeaseLost,
    Failed(Error),
}

impl From<Error> for Stop {
    fn from(error: Error) -> Self {
        match error {
            Error::LeaseLost { .. } => Self::LeaseLost,
            other => Self::Failed(other),
        }
    }
}

impl From<Stop> for ShardOutcome {
    fn from(stop: Stop) -> Self {
        match stop {
            Stop::LeaseLost => Self::LeaseLost,
            Stop::Failed(error) => Self::Failed(error),
        }
    }
}

impl<T: Transformer> Processor<T> {
    fn new(
        env: ShardEnv,
        context: ShardContext,
        lease: LeaseHandle,
        pipeline: Pipeline<T>,
        status: ConsumerStatus,
        cancel: CancellationToken,
    ) -> Self {
        let key = ShardKey::new(&*context.application, &*context.stream, &*context.shard_id);
        let metrics = ShardMetrics::new(&context);
        let buffered = env.memory.nothing();
        Self {
            env,
            context,
            key,
            lease,
            pipeline,
            metrics,
            stats: ShardStats::default(),
            checkpointed: None,
            past_checkpoint: false,
            cancel,
            status,
            replay_until: None,
            record_pending: false,
            buffered,
            buffered_cost: 0,
        }
    }

    async fn run(&mut self) -> ShardOutcome {
        let cancel = self.cancel.clone();
        if let Err(error) = self.env.config.validate() {
            return ShardOutcome::Failed(error);
        }
        self.status
            .set_state(&self.context.shard_id, ShardState::Reading);
        self.checkpointed = match self.read_checkpoint(&cancel).await {
            Ok(checkpoint) => checkpoint,
            Err(Stop::LeaseLost) => return ShardOutcome::LeaseLost,
            Err(Stop::Failed(error)) => return ShardOutcome::Failed(error),
        };
        if let Err(stop) = self.prepare_replay(&cancel).await {
            return stop.into();
        }
        let start = match &self.checkpointed {
            Some(Checkpoint::ShardEnd) => {
                debug!("shard already finished");
                return ShardOutcome::ShardEnd {
                    children: Vec::new(),
                };
            }
            // A partly processed aggregated record is read again from its
            // start; its finished sub-records are skipped below.
            Some(Checkpoint::At(Position {
                sequence,
                sub_sequence: Some(_),
            })) => StartPosition::AtSequence(sequence.clone()),
            Some(Checkpoint::At(position)) => {
                StartPosition::AfterSequence(position.sequence.clone())
            }
            None => self.env.config.initial_position.into(),
        };
        info!(start = ?start, "shard consumer starting");

        let (pages_tx, pages_rx) = mpsc::channel::<Page>(1);
        let reader_stop = CancellationToken::new();
        let reader = Reader {
            source: Arc::clone(&self.env.source),
            stream: self.context.stream.to_string(),
            shard_id: self.context.shard_id.to_string(),
            start,
            config: self.env.config,
            memory: self.env.memory.clone(),
            stop: reader_stop.clone(),
            status: self.status.clone(),
        };
        let reader_task = tokio::spawn(reader.run(pages_tx).in_current_span());
        let _stop_reader = reader_stop.drop_guard();

        let outcome = self.process(pages_rx, &cancel).await;
        reader_task.abort();
        if matches!(
            outcome,
            ShardOutcome::Shutdown | ShardOutcome::ShardEnd { .. }
        ) && let Err(error) = within(
            self.env.config.emit_timeout,
            self.pipeline.emitter.shutdown(),
            |after| {
                Error::emit_retryable(format!("emitter shutdown did not finish within {after:?}"))
            },
        )
        .await
        {
            warn!(%error, "emitter shutdown failed");
        }
        match &outcome {
            ShardOutcome::ShardEnd { children } => info!(?children, "shard finished"),
            ShardOutcome::Shutdown => info!("shard stopped for shutdown"),
            ShardOutcome::LeaseLost => warn!("lease lost; shard stopped without writing"),
            ShardOutcome::Failed(error) => warn!(%error, "shard stopped on error"),
        }
        outcome
    }

    async fn process(
        &mut self,
        mut pages: mpsc::Receiver<Page>,
        cancel: &CancellationToken,
    ) -> ShardOutcome {
        let lost = self.lease.lost.clone();
        let mut waiting_for_memory = self.env.memory.waiting();
        let mut waiting_for_memory_in_replay = self.env.memory.waiting();
        loop {
            let deadline = self.pipeline.buffer.deadline();
            let buffering = !self.pipeline.buffer.is_empty();
            let replaying = self.replay_until.is_some();
            let step = tokio::select! {
                biased;
                () = lost.cancelled() => return ShardOutcome::LeaseLost,
                () = cancel.cancelled() => break,
                () = sleep_until(deadline.unwrap_or_else(Instant::now)),
                    if deadline.is_some() && !replaying => {
                    self.flush(Cut::ByTime).await
                }
                // A replayed batch ignores its age: it ends where it ended
                // before, unless it has aged and the budget is spent, so
                // that the reader could never bring its end.
                () = async {
                    sleep_until(deadline.unwrap_or_else(Instant::now)).await;
                    let _spent = waiting_for_memory_in_replay.wait_for(|n| *n > 0).await;
                }, if deadline.is_some() && replaying => {
                    self.replay_until = None;
                    warn!(
                        "the memory budget is spent and the replayed batch has reached its age: \
                         it is cut here, not where it was cut before"
                    );
                    self.flush(Cut::ByTime).await
                }
                // A reader of this worker waits for room in the budget: what
                // is buffered goes out now, so that its room comes back.
                true = async { waiting_for_memory.wait_for(|n| *n > 0).await.is_ok() },
                    if buffering && !replaying => {
                    debug!("the memory budget is spent; flushing early");
                    self.flush(Cut::ByTime).await
                }
                page = pages.recv() => match page {
                    Some((Ok(page), reservation)) => match self.handle_page(page, reservation).await {
                        Ok(Some(children)) => return match self.finish_shard().await {
                            Ok(()) => ShardOutcome::ShardEnd { children },
                            Err(stop) => stop.into(),
                        },
                        Ok(None) => Ok(()),
                        Err(stop) => Err(stop),
                    },
                    Some((Err(error), _)) => {
                        // Deliver what was read before giving up on the shard.
                        return match self.flush_unless_replaying().await {
                            Ok(()) => ShardOutcome::Failed(error),
                            Err(stop) => stop.into(),
                        };
                    }
                    None => Err(Stop::Failed(Error::Config(
                        "the shard reader stopped unexpectedly".into(),
                    ))),
                },
            };
            if let Err(stop) = step {
                return stop.into();
            }
        }
        match self.flush_unless_replaying().await {
            Ok(()) => ShardOutcome::Shutdown,
            Err(stop) => stop.into(),
        }
    }

    /// Flushes a batch cut by time, unless it is a replayed batch not yet at
    /// its recorded end: that one is left unemitted (and unacknowledged), so
    /// the next start cuts it where it was cut before.
    async fn flush_unless_replaying(&mut self) -> Result<(), Stop> {
        if self.replay_until.is_some() {
            debug!("stopping inside a replayed batch; it is read again on the next start");
            return Ok(());
        }
        self.flush(Cut::ByTime).await
    }

    /// Reads the pending batch recorded before the last stop, if replay-stable
    /// batches are on and the store keeps them.
    async fn prepare_replay(&mut self, cancel: &CancellationToken) -> Result<(), Stop> {
        if !self.env.config.replay_stable_batches {
            return Ok(());
        }
        if !self.env.store.keeps_pending_batches() {
            warn!(
                "replay-stable batches are on but the checkpoint store keeps no pending batches: \
                 a batch cut by time may be cut elsewhere when replayed"
            );
            return Ok(());
        }
        self.record_pending = true;
        let pending = self
            .read_with_retry("the pending batch", cancel, || {
                self.env.store.pending_batch(&self.key)
            })
            .await?;
        self.replay_until = match (pending, &self.checkpointed) {
            (Some(end), Some(Checkpoint::At(done))) if end > *done => Some(end),
            (Some(end), None) => Some(end),
            _ => None,
        };
        if let Some(end) = &self.replay_until {
            info!(end = %end, "replaying: the first batch ends where the unacknowledged one did");
        }
        Ok(())
    }

    /// Runs a page through the pipeline; `Some(children)` at shard end.
    /// The page's room in the budget shrinks to what the buffer keeps of it.
    async fn handle_page(
        &mut self,
        page: RecordsPage,
        reservation: Reservation,
    ) -> Result<Option<Vec<String>>, Stop> {
        if let Some(behind) = page.millis_behind_latest {
            self.metrics.millis_behind_latest.set(behind as f64);
            self.status.update(&self.context.shard_id, |shard| {
                shard.millis_behind_latest = Some(behind);
            });
        }
        // Per page, not per record: the counters and, once a record lies
        // past the checkpoint, the check that skips what a restart reads
        // again (a shard's records come in order, so the rest lie past it too).
        let (mut read, mut bytes) = (0u64, 0u64);
        let mut handled = Ok(());
        for record in page.records {
            if !self.past_checkpoint {
                if let Some(Checkpoint::At(done)) = &self.checkpointed
                    && record.position().is_covered_by(done)
                {
                    continue;
                }
                self.past_checkpoint = true;
            }
            read += 1;
            bytes += record.data.len() as u64;
            handled = self.handle_record(record).await;
            if handled.is_err() {
                break;
            }
        }
        self.stats.records_read += read;
        self.metrics.records_read.increment(read);
        self.metrics.bytes_read.increment(bytes);
        handled?;
        self.buffered.merge(reservation);
        self.buffered.shrink_to(self.buffered_cost);
        Ok(page.next_iterator.is_none().then_some(page.child_shards))
    }

    async fn handle_record(&mut self, mut record: Record) -> Result<(), Stop> {
        // Sized before the transformer may take the payload into the item.
        let size = record.data.len();
        let cost = record_cost(&record);
        let item = match self.pipeline.transformer.take_item(&mut record) {
            Ok(item) => {
                if self.pipeline.filter.keep(&item) {
                    Some(item)
                } else {
                    self.stats.records_filtered += 1;
                    self.metrics.records_filtered.increment(1);
                    None
                }
            }
            Err(error) => {
                let failed = FailedRecord {
                    data: record.data.clone(),
                    partition_key: record.partition_key.clone(),
                    position: record.position(),
                    error: error.to_string(),
                };
                self.bad_record(failed).await?;
                None
            }
        };
        // Failed and filtered records are pushed as `None`: the batch still
        // covers them, so the checkpoint moves past them.
        if item.is_some() {
            self.buffered_cost += cost;
        }
        let replayed_to_end = self
            .replay_until
            .as_ref()
            .is_some_and(|end| record.position() >= *end);
        self.pipeline.buffer.push(record, size, item);
        match &self.replay_until {
            // A replayed batch ends at its recorded end, whatever the limits.
            Some(_) if replayed_to_end => {
                self.replay_until = None;
                self.flush(Cut::ByRecords).await?;
            }
            Some(_) => {}
            None if self.pipeline.buffer.is_full() => self.flush(Cut::ByRecords).await?,
            None => {}
        }
        Ok(())
    }

    /// Applies the bad-record policy to one record.
    async fn bad_record(&mut self, failed: FailedRecord) -> Result<(), Stop> {
        self.stats.records_failed += 1;
        self.metrics.records_failed.increment(1);
        match self.pipeline.bad_records.clone() {
            BadRecordPolicy::Skip => {
                warn!(sequence = %failed.position, error = %failed.error, "skipping bad record");
                Ok(())
            }
            BadRecordPolicy::Stop => Err(Stop::Failed(Error::Transform {
                message: format!(
                    "shard {}: record {} failed: {}",
                    self.context.shard_id, failed.position, failed.error
                ),
                source: None,
            })),
            BadRecordPolicy::DeadLetter(dead_letter) => {
                warn!(sequence = %failed.position, error = %failed.error, "sending bad record to the dead-letter emitter");
                let position = failed.position.clone();
                let original_error = failed.error.clone();
                let source = ItemSource {
                    position: position.clone(),
                    partition_key: failed.partition_key.clone(),
                    explicit_hash_key: None,
                    size: failed.data.len(),
                };
                let batch = Batch::new(
                    self.context.clone(),
                    vec![(failed, source)],
                    position.clone(),
                    position,
                );
                let outcome = emit_with_retry(
                    &*dead_letter,
                    &batch,
                    &self.env.config,
                    &self.lease,
                    &self.status,
                )
                .await?;
                // A dead letter the dead-letter emitter refuses has nowhere
                // left to go: stop the shard rather than lose it silently.
                match outcome.rejected.into_iter().next() {
                    None => Ok(()),
                    Some(refused) => Err(Stop::Failed(Error::Transform {
                        message: format!(
                            "shard {}: the dead-letter emitter rejected record {} ({}); it had failed with: {}",
                            self.context.shard_id, batch.first, refused.reason, original_error
                        ),
                        source: None,
                    })),
                }
            }
        }
    }

    /// Emits whatever is buffered, then checkpoints past it.
    async fn flush(&mut self, cut: Cut) -> Result<(), Stop> {
        let Some(batch) = self.pipeline.buffer.take(&self.context) else {
            return Ok(());
        };
        if !batch.is_empty() {
            if cut == Cut::ByTime && self.record_pending {
                // Recorded before the emit: a crash after it replays the
                // same batch, which a sink naming outputs by range overwrites.
                self.store_write(StoreWrite::PendingBatch(&batch.last))
                    .await?;
            }
            let started = Instant::now();
            let outcome = emit_with_retry(
                &*self.pipeline.emitter,
                &batch,
                &self.env.config,
                &self.lease,
                &self.status,
            )
            .await
            .inspect_err(|_| self.metrics.emit_failures.increment(1))?;
            self.metrics
                .emit_latency
                .record(started.elapsed().as_secs_f64());
            let delivered = batch.len() - outcome.rejected.len().min(batch.len());
            self.stats.records_emitted += delivered as u64;
            self.stats.batches_emitted += 1;
            self.metrics.records_emitted.increment(delivered as u64);
            self.metrics.batches_emitted.increment(1);
            debug!(first = %batch.first, last = %batch.last, items = batch.len(), "batch emitted");
            self.rejected(&batch, outcome).await?;
        }
        let last = batch.last.clone();
        drop(batch);
        self.checkpoint(Checkpoint::At(last)).await?;
        // Emitted and checkpointed: the batch's room goes back to the budget.
        self.buffered_cost = 0;
        self.buffered.shrink_to(0);
        Ok(())
    }

    /// Hands items an emitter rejected one by one to the bad-record policy.
    async fn rejected(&mut self, batch: &Batch<T::Item>, outcome: EmitOutcome) -> Result<(), Stop> {
        for rejected in outcome.rejected {
            let (Some(item), Some(source)) = (
                batch.items.get(rejected.index),
                batch.sources.get(rejected.index),
            ) else {
                warn!(
                    index = rejected.index,
                    "emitter rejected an item index outside the batch"
                );
                continue;
            };
            let mut data = Vec::new();
            // A decode-only pipeline, or an item that cannot be encoded:
            // the dead letter carries the reason alone.
            if let Some(reencode) = self.pipeline.reencode
                && reencode(&self.pipeline.transformer, item, &mut data).is_err()
            {
                data.clear();
            }
            self.bad_record(FailedRecord {
                data: data.into(),
                partition_key: source.partition_key.clone(),
                position: source.position.clone(),
                error: rejected.reason,
            })
            .await?;
        }
        Ok(())
    }

    /// Reaching SHARD_END: everything is emitted, then the marker is written.
    async fn finish_shard(&mut self) -> Result<(), Stop> {
        self.replay_until = None;
        self.flush(Cut::ByRecords).await?;
        self.checkpoint(Checkpoint::ShardEnd).await
    }

    async fn read_checkpoint(
        &self,
        cancel: &CancellationToken,
    ) -> Result<Option<Checkpoint>, Stop> {
        self.read_with_retry("the checkpoint", cancel, || self.env.store.get(&self.key))
            .await
    }

    /// Runs a store read with its time limit, retrying retryable failures
    /// until shutdown.
    async fn read_with_retry<R, F, Fut>(
        &self,
        what: &str,
        cancel: &CancellationToken,
        mut read: F,
    ) -> Result<R, Stop>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<R>>,
    {
        let mut delays = self.env.config.retry.delays();
        loop {
            let attempt = within(self.env.config.checkpoint_timeout, read(), |after| {
                Error::checkpoint_retryable(format!(
                    "reading {what} did not finish within {after:?}"
                ))
            });
            match attempt.await {
                Ok(value) => return Ok(value),
                Err(error) if error.is_retryable() && !cancel.is_cancelled() => {
                    warn!(%error, "reading {what} failed; retrying");
                    sleep(delays.next_delay()).await;
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// Writes `checkpoint` (fenced by the lease) unless it is not newer than
    /// the stored one.
    async fn checkpoint(&mut self, checkpoint: Checkpoint) -> Result<(), Stop> {
        if self
            .checkpointed
            .as_ref()
            .is_some_and(|done| *done >= checkpoint)
        {
            return Ok(());
        }
        self.store_write(StoreWrite::Checkpoint(&checkpoint))
            .await?;
        debug!(%checkpoint, "checkpoint written");
        self.status.checkpointed(&self.context.shard_id);
        self.stats.checkpoints_written += 1;
        self.metrics.checkpoint_writes.increment(1);
        self.checkpointed = Some(checkpoint);
        Ok(())
    }

    /// Runs a fenced store write with its time limit. Retryable store errors
    /// are retried until shutdown, then a bounded number of times.
    async fn store_write(&mut self, write: StoreWrite<'_>) -> Result<(), Stop> {
        let what = match write {
            StoreWrite::Checkpoint(_) => "the checkpoint",
            StoreWrite::PendingBatch(_) => "the pending batch",
        };
        let mut delays = self.env.config.retry.delays();
        let mut attempts = 0;
        loop {
            if self.lease.is_lost() {
                return Err(Stop::LeaseLost);
            }
            attempts += 1;
            let lease = self.lease.lock().await;
            let unfenced = lease.is_unfenced();
            let call = match write {
                StoreWrite::Checkpoint(checkpoint) => {
                    self.env.store.set_fenced(&self.key, checkpoint, &lease)
                }
                StoreWrite::PendingBatch(end) => {
                    self.env.store.set_pending_batch(&self.key, end, &lease)
                }
            };
            let written = within(self.env.config.checkpoint_timeout, call, |after| {
                Error::checkpoint_retryable(format!(
                    "writing {what} did not finish within {after:?}"
                ))
            })
            .await;
            drop(lease);
            match written {
                Ok(()) => {
                    if attempts > 1 {
                        self.status
                            .set_state(&self.context.shard_id, ShardState::Reading);
                    }
                    return Ok(());
                }
                Err(error)
                    if error.is_retryable()
                        && (!self.cancel.is_cancelled()
                            || attempts < self.env.config.retry.max_attempts) =>
                {
                    warn!(%error, attempts, "writing {what} failed; retrying");
                    self.status.update(&self.context.shard_id, |shard| {
                        shard.state = ShardState::BackingOff;
                        shard.last_error = Some(error.to_string());
                    });
                    sleep(delays.next_delay()).await;
                }
                // The store keeps a lease for this shard, and this worker
                // holds none: a configuration error, not a lost lease.
                Err(Error::LeaseLost { shard_id, owner }) if unfenced => {
                    return Err(Stop::Failed(Error::UnexpectedLease { shard_id, owner }));
                }
                Err(error) => return Err(error.into()),
            }
        }
    }
}

/// Emits `batch`, retrying retryable failures with backoff up to the
/// policy's attempt limit; the error then names the batch's range.
async fn emit_with_retry<U: Send + Sync>(
    emitter: &dyn Emitter<U>,
    batch: &Batch<U>,
    config: &ShardConfig,
    lease: &LeaseHandle,
    status: &ConsumerStatus,
) -> Result<EmitOutcome> {
    let shard_id = &*batch.context.shard_id;
    let retry = &config.retry;
    let mut delays = retry.delays();
    let mut attempts = 0;
    let lease_lost = || Error::LeaseLost {
        shard_id: batch.context.shard_id.to_string(),
        owner: None,
    };
    loop {
        attempts += 1;
        let emitted = within(config.emit_timeout, emitter.emit(batch), |after| {
            Error::emit_retryable(format!("emit did not finish within {after:?}"))
        });
        // A lost lease interrupts the emit: another worker owns the shard.
        let error = tokio::select! {
            biased;
            () = lease.lost.cancelled() => return Err(lease_lost()),
            emitted = emitted => match emitted {
                Ok(outcome) => {
                    if attempts > 1 {
                        status.update(shard_id, |shard| {
                            shard.state = ShardState::Reading;
                            shard.consecutive_emit_failures = 0;
                            shard.last_error = None;
                        });
                    }
                    return Ok(outcome);
                }
                Err(error) => error,
            },
        };
        status.update(shard_id, |shard| {
            shard.state = ShardState::BackingOff;
            shard.consecutive_emit_failures += 1;
            shard.last_error = Some(error.to_string());
        });
        if error.is_retryable() && attempts < retry.max_attempts && !lease.is_lost() {
            let delay = delays.next_delay();
            warn!(%error, attempts, ?delay, first = %batch.first, last = %batch.last, "emit failed; retrying");
            tokio::select! {
                () = lease.lost.cancelled() => return Err(lease_lost()),
                () = sleep(delay) => {}
            }
            continue;
        }
        if lease.is_lost() {
            return Err(lease_lost());
        }
        return Err(Error::BatchFailed {
            shard_id: batch.context.shard_id.to_string(),
            first: batch.first.to_string(),
            last: batch.last.to_string(),
            attempts,
            source: Box::new(error),
        });
    }
}

/// The reading half of a shard task.
struct Reader {
    source: Arc<dyn RecordSource>,
    stream: String,
    shard_id: String,
    start: StartPosition,
    config: ShardConfig,
    memory: MemoryBudget,
    stop: CancellationToken,
    status: ConsumerStatus,
}

impl Reader {
    async fn run(self, pages: mpsc::Sender<Page>) {
        let mut last_read: Option<SequenceNumber> = None;
        let mut iterator: Option<String> = None;
        let mut next_call = Instant::now();
        let mut delays = self.config.retry.delays();
        // Whether the board shows this shard backing off a failed read.
        let mut backing_off = false;
        // When the last call found the shard caught up; until then a page
        // may hold the most a call returns.
        let mut caught_up_at: Option<Instant> = None;
        // A pushing source waits for records itself; only polling keeps to
        // the service's calls per second.
        let polled = self.source.delivery() == Delivery::Polled;
        // The first page is small, so that the first records come soon.
        let mut max_records = self
            .config
            .first_call_records
            .min(self.config.max_records_per_call);
        loop {
            // Wait for the processor to take the previous page before
            // reading the next one: one read ahead, no more.
            let permit = tokio::select! {
                () = self.stop.cancelled() => return,
                permit = pages.reserve() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
            };
            let page = loop {
                let current = match iterator.take() {
                    Some(current) => current,
                    None => {
                        // After an expired iterator, resume after the last
                        // record read, not the last checkpoint.
                        let position = match &last_read {
                            Some(sequence) => StartPosition::AfterSequence(sequence.clone()),
                            None => self.start.clone(),
                        };
                        let fresh = within(
                            self.config.read_timeout,
                            self.source
                                .shard_iterator(&self.stream, &self.shard_id, &position),
                            |after| self.timed_out("GetShardIterator", after),
                        );
                        match fresh.await {
                            Ok(fresh) => fresh,
                            Err(error) if error.is_retryable() => {
                                let delay = delays.next_delay();
                                warn!(%error, ?delay, "getting a shard iterator failed; retrying");
                                backing_off = self.backing_off(&error);
                                if self.pause(delay).await {
                                    return;
                                }
                                continue;
                            }
                            Err(error) => break (Err(error), self.memory.nothing()),
                        }
                    }
                };
                if self.pause_until(next_call).await {
                    return;
                }
                let estimate = caught_up_at.map_or(page_worst_case(max_records), |at| {
                    caught_up_estimate(at.elapsed(), max_records)
                });
                let Some(mut reservation) = self.reserve(estimate).await else {
                    return;
                };
                let result = within(
                    self.config.read_timeout,
                    self.source.get_records(&current, max_records),
                    |after| self.timed_out("GetRecords", after),
                )
                .await;
                next_call = Instant::now()
                    + if polled {
                        MIN_CALL_INTERVAL
                    } else {
                        Duration::ZERO
                    };
                match result {
                    Ok(page) => {
                        delays = self.config.retry.delays();
                        max_records = self.config.max_records_per_call;
                        if backing_off {
                            backing_off = false;
                            self.status.update(&self.shard_id, |shard| {
                                shard.state = ShardState::Reading;
                                shard.last_error = None;
                            });
                        }
                        let caught_up = page.millis_behind_latest.is_none_or(|behind| behind <= 0);
                        if polled && page.records.is_empty() && caught_up {
                            next_call = Instant::now() + self.config.idle_delay;
                        }
                        caught_up_at = caught_up.then(Instant::now);
                        let cost = page.records.iter().map(record_cost).sum();
                        // More than the shard's write limit allows (an
                        // emulator): the page takes what room is free. It
                        // does not wait, holding its records, for room that
                        // other waiting readers may hold.
                        reservation.try_grow_to(cost);
                        reservation.shrink_to(cost);
                        if let Some(last) = page.records.last() {
                            last_read = Some(last.sequence_number.clone());
                        }
                        iterator = page.next_iterator.clone();
                        break (Ok(page), reservation);
                    }
                    Err(error) if error.source_kind() == Some(SourceErrorKind::ExpiredIterator) => {
                        debug!("shard iterator expired; getting a new one");
                    }
                    Err(error) if error.is_retryable() => {
                        let delay = delays.next_delay();
                        warn!(%error, ?delay, "GetRecords failed; backing off");
                        backing_off = self.backing_off(&error);
                        iterator = Some(current);
                        if self.pause(delay).await {
                            return;
                        }
                    }
                    Err(error) => break (Err(error), self.memory.nothing()),
                }
            };
            let finished = page
                .0
                .as_ref()
                .map_or(true, |page| page.next_iterator.is_none());
            permit.send(page);
            if finished {
                return;
            }
        }
    }

    /// Reserves `bytes` for the next page; `None` if the reader was stopped
    /// while it waited for room.
    async fn reserve(&self, bytes: usize) -> Option<Reservation> {
        tokio::select! {
            () = self.stop.cancelled() => None,
            reservation = self.memory.reserve(bytes) => Some(reservation),
        }
    }

    /// Shows the shard backing off after `error`; returns true.
    fn backing_off(&self, error: &Error) -> bool {
        self.status.update(&self.shard_id, |shard| {
            shard.state = ShardState::BackingOff;
            shard.last_error = Some(error.to_string());
        });
        true
    }

    /// A read that did not answer in time: transient, retried with backoff.
    fn timed_out(&self, call: &str, after: Duration) -> Error {
        Error::source(
            SourceErrorKind::Transient,
            format!(
                "{call} on shard {} did not answer within {after:?}",
                self.shard_id
            ),
        )
    }

    /// Sleeps for `delay`; true if the reader was stopped meanwhile.
    async fn pause(&self, delay: Duration) -> bool {
        self.pause_until(Instant::now() + delay).await
    }

    /// Sleeps until `at`; true if the reader was stopped meanwhile.
    async fn pause_until(&self, at: Instant) -> bool {
        tokio::select! {
            () = self.stop.cancelled() => true,
            () = sleep_until(at) => false,
        }
    }
}
