//! Emitters for tests: one that records what it was given, one that fails
//! on purpose, one that rejects chosen items.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use kinesis_connectors_core::{
    Batch, EmitOutcome, Emitter, Error, ItemSource, Position, RejectedItem, Result, ShardContext,
};
use tokio::sync::Notify;

/// One batch a [`RecordingEmitter`] received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedBatch<T> {
    /// The shard the batch came from.
    pub context: ShardContext,
    /// The batch's items, in order.
    pub items: Vec<T>,
    /// Where each item came from.
    pub sources: Vec<ItemSource>,
    /// The first record the batch covers.
    pub first: Position,
    /// The last record the batch covers.
    pub last: Position,
    /// How many records the batch covers, filtered ones included.
    pub record_count: usize,
}

impl<T: Clone> RecordedBatch<T> {
    fn of(batch: &Batch<T>) -> Self {
        Self {
            context: batch.context.clone(),
            items: batch.items.clone(),
            sources: batch.sources.clone(),
            first: batch.first.clone(),
            last: batch.last.clone(),
            record_count: batch.record_count,
        }
    }
}

struct Recording<T> {
    batches: Mutex<Vec<RecordedBatch<T>>>,
    items: AtomicUsize,
    emitted: Notify,
    shutdown: AtomicBool,
}

/// An emitter that keeps every batch it is given, in order, and always
/// succeeds. Clones share the recording, so a test keeps one clone and
/// hands another to the pipeline.
///
/// It records every call, empty batches and replays included, so a test can
/// check exactly what the consumer emitted (it is therefore not idempotent:
/// run [`EmitterConformance`](crate::EmitterConformance) on it without
/// `delivered_count`).
///
/// ```
/// use std::time::Duration;
/// use kinesis_connectors_core::Emitter;
/// use kinesis_connectors_testkit::{batch, shard_context, RecordingEmitter};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> kinesis_connectors_core::Result<()> {
/// let emitter = RecordingEmitter::new();
/// let _ = emitter.emit(&batch(shard_context("shard-0"), vec![1, 2], 5)).await?;
/// assert!(emitter.wait_for_items(2, Duration::from_secs(1)).await);
/// assert_eq!(emitter.items(), vec![1, 2]);
/// assert_eq!(emitter.batches()[0].first.to_string(), "5");
/// # Ok(()) }
/// ```
pub struct RecordingEmitter<T> {
    recording: Arc<Recording<T>>,
}

impl<T> Clone for RecordingEmitter<T> {
    fn clone(&self) -> Self {
        Self {
            recording: Arc::clone(&self.recording),
        }
    }
}

impl<T> fmt::Debug for RecordingEmitter<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordingEmitter")
            .field("batches", &self.lock().len())
            .field("items", &self.recording.items.load(Ordering::SeqCst))
            .field(
                "shutdown_called",
                &self.recording.shutdown.load(Ordering::SeqCst),
            )
            .finish()
    }
}

impl<T: Clone> Default for RecordingEmitter<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> RecordingEmitter<T> {
    fn lock(&self) -> MutexGuard<'_, Vec<RecordedBatch<T>>> {
        // Each update is one push; a poisoned lock still guards a whole list.
        self.recording
            .batches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl<T: Clone> RecordingEmitter<T> {
    /// An emitter that has recorded nothing yet.
    pub fn new() -> Self {
        Self {
            recording: Arc::new(Recording {
                batches: Mutex::new(Vec::new()),
                items: AtomicUsize::new(0),
                emitted: Notify::new(),
                shutdown: AtomicBool::new(false),
            }),
        }
    }

    /// Every `emit` call so far, in order.
    pub fn batches(&self) -> Vec<RecordedBatch<T>> {
        self.lock().clone()
    }

    /// The items of all batches so far, in order.
    pub fn items(&self) -> Vec<T> {
        self.lock()
            .iter()
            .flat_map(|batch| batch.items.iter().cloned())
            .collect()
    }

    /// How many items all batches so far held.
    pub fn item_count(&self) -> usize {
        self.recording.items.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` items were emitted; `false` if `timeout`
    /// (in tokio time) passed first.
    pub async fn wait_for_items(&self, n: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let emitted = self.recording.emitted.notified();
            tokio::pin!(emitted);
            // Register before checking, so an emit between the check and the
            // wait still wakes us.
            emitted.as_mut().enable();
            if self.item_count() >= n {
                return true;
            }
            if tokio::time::timeout_at(deadline, emitted).await.is_err() {
                return self.item_count() >= n;
            }
        }
    }

    /// Whether [`Emitter::shutdown`] was called.
    pub fn shutdown_called(&self) -> bool {
        self.recording.shutdown.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl<T: Clone + Send + Sync + 'static> Emitter<T> for RecordingEmitter<T> {
    async fn emit(&self, batch: &Batch<T>) -> Result<EmitOutcome> {
        self.lock().push(RecordedBatch::of(batch));
        self.recording
            .items
            .fetch_add(batch.items.len(), Ordering::SeqCst);
        self.recording.emitted.notify_waiters();
        Ok(EmitOutcome::delivered())
    }

    async fn shutdown(&self) -> Result<()> {
        self.recording.shutdown.store(true, Ordering::SeqCst);
        Ok(())
    }
}

/// An emitter that fails its first `n` calls (or every call), then
/// delegates to an inner emitter: for testing retries, backoff and what a
/// consumer does when a batch cannot be delivered.
///
/// Failures are [`Error::emit_retryable`] or [`Error::emit_permanent`];
/// `shutdown` always delegates.
///
/// ```
/// use kinesis_connectors_core::Emitter;
/// use kinesis_connectors_testkit::{batch, shard_context, FailingEmitter, RecordingEmitter};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let recording = RecordingEmitter::new();
/// let emitter = FailingEmitter::fail_times(recording.clone(), 1, true);
/// let batch = batch(shard_context("shard-0"), vec!["a"], 1);
/// assert!(emitter.emit(&batch).await.is_err_and(|e| e.is_retryable()));
/// assert!(emitter.emit(&batch).await.is_ok());
/// assert_eq!(emitter.calls(), 2);
/// assert_eq!(recording.item_count(), 1);
/// # }
/// ```
#[derive(Debug)]
pub struct FailingEmitter<E> {
    inner: E,
    /// `None`: fail forever.
    failures: Option<usize>,
    retryable: bool,
    calls: AtomicUsize,
}

impl<E> FailingEmitter<E> {
    /// Fails the first `n` calls, then delegates to `inner`.
    pub fn fail_times(inner: E, n: usize, retryable: bool) -> Self {
        Self {
            inner,
            failures: Some(n),
            retryable,
            calls: AtomicUsize::new(0),
        }
    }

    /// Fails every call; `inner` only receives `shutdown`.
    pub fn fail_forever(inner: E, retryable: bool) -> Self {
        Self {
            inner,
            failures: None,
            retryable,
            calls: AtomicUsize::new(0),
        }
    }

    /// How many times `emit` was called, failed calls included.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// The wrapped emitter.
    pub fn inner(&self) -> &E {
        &self.inner
    }
}

#[async_trait]
impl<T: Send + Sync, E: Emitter<T>> Emitter<T> for FailingEmitter<E> {
    async fn emit(&self, batch: &Batch<T>) -> Result<EmitOutcome> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if self.failures.is_none_or(|n| call <= n) {
            let message = format!(
                "scripted emit failure (call {call}, batch {}..={})",
                batch.first, batch.last
            );
            return Err(if self.retryable {
                Error::emit_retryable(message)
            } else {
                Error::emit_permanent(message)
            });
        }
        self.inner.emit(batch).await
    }

    async fn shutdown(&self) -> Result<()> {
        self.inner.shutdown().await
    }
}

/// Why a [`RejectingEmitter`] rejects an item, or `None` to deliver it.
type RejectFn<T> = dyn Fn(&T) -> Option<String> + Send + Sync;

/// An emitter that rejects the items a predicate picks (reporting them in
/// [`EmitOutcome::rejected`]) and delivers the others to an inner emitter:
/// for testing what a pipeline does with items a sink refuses one by one.
///
/// The inner emitter receives a batch with the same context, `first`,
/// `last` and `record_count` holding only the accepted items. If it fails,
/// the whole call fails; items the inner emitter rejects are reported too.
///
/// ```
/// use kinesis_connectors_core::Emitter;
/// use kinesis_connectors_testkit::{batch, shard_context, RecordingEmitter, RejectingEmitter};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> kinesis_connectors_core::Result<()> {
/// let recording = RecordingEmitter::new();
/// let emitter = RejectingEmitter::new(recording.clone(), |n: &u32| {
///     (*n > 9).then(|| format!("{n} is too big"))
/// });
/// let outcome = emitter.emit(&batch(shard_context("shard-0"), vec![1, 20, 3], 1)).await?;
/// assert_eq!(outcome.rejected[0].index, 1);
/// assert_eq!(recording.items(), vec![1, 3]);
/// # Ok(()) }
/// ```
pub struct RejectingEmitter<E, T> {
    inner: E,
    reject: Box<RejectFn<T>>,
}

impl<E: fmt::Debug, T> fmt::Debug for RejectingEmitter<E, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RejectingEmitter")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<E, T> RejectingEmitter<E, T> {
    /// Rejects each item for which `reject` returns a reason; delivers the
    /// rest to `inner`.
    pub fn new(inner: E, reject: impl Fn(&T) -> Option<String> + Send + Sync + 'static) -> Self {
        Self {
            inner,
            reject: Box::new(reject),
        }
    }

    /// The wrapped emitter.
    pub fn inner(&self) -> &E {
        &self.inner
    }
}

#[async_trait]
impl<T: Clone + Send + Sync, E: Emitter<T>> Emitter<T> for RejectingEmitter<E, T> {
    async fn emit(&self, batch: &Batch<T>) -> Result<EmitOutcome> {
        let mut rejected = Vec::new();
        let mut kept = Vec::new();
        // Index in the kept batch → index in the original batch.
        let mut original_index = Vec::new();
        for (index, (item, source)) in batch.items.iter().zip(&batch.sources).enumerate() {
            match (self.reject)(item) {
                Some(reason) => rejected.push(RejectedItem { index, reason }),
                None => {
                    kept.push((item.clone(), source.clone()));
                    original_index.push(index);
                }
            }
        }
        let mut accepted = Batch::new(
            batch.context.clone(),
            kept,
            batch.first.clone(),
            batch.last.clone(),
        );
        accepted.record_count = batch.record_count;
        accepted.first_arrival = batch.first_arrival;
        let outcome = self.inner.emit(&accepted).await?;
        rejected.extend(outcome.rejected.into_iter().filter_map(|r| {
            original_index.get(r.index).map(|&index| RejectedItem {
                index,
                reason: r.reason,
            })
        }));
        rejected.sort_by_key(|r| r.index);
        Ok(EmitOutcome::with_rejected(rejected))
    }

    async fn shutdown(&self) -> Result<()> {
        self.inner.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{batch, shard_context};

    #[tokio::test]
    async fn fail_forever_never_reaches_the_inner_emitter() {
        let recording = RecordingEmitter::new();
        let emitter = FailingEmitter::fail_forever(recording.clone(), false);
        let b = batch(shard_context("s"), vec![1u8], 1);
        for _ in 0..3 {
            let result = emitter.emit(&b).await;
            assert!(result.is_err_and(|e| !e.is_retryable()));
        }
        assert_eq!(emitter.calls(), 3);
        assert_eq!(recording.item_count(), 0);
        assert!(emitter.shutdown().await.is_ok());
        assert!(recording.shutdown_called());
    }

    #[tokio::test(start_paused = true)]
    async fn wait_for_items_times_out_in_tokio_time() {
        let recording = RecordingEmitter::<u8>::new();
        let started = tokio::time::Instant::now();
        assert!(!recording.wait_for_items(1, Duration::from_secs(30)).await);
        assert!(started.elapsed() >= Duration::from_secs(30));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wait_for_items_wakes_on_emit() {
        let recording = RecordingEmitter::new();
        let writer = recording.clone();
        let task = tokio::spawn(async move {
            for i in 0..5u32 {
                tokio::task::yield_now().await;
                let _ = writer
                    .emit(&batch(shard_context("s"), vec![i], u64::from(i) + 1))
                    .await;
            }
        });
        assert!(recording.wait_for_items(5, Duration::from_secs(10)).await);
        assert!(task.await.is_ok());
        assert_eq!(recording.items(), vec![0, 1, 2, 3, 4]);
        assert_eq!(recording.batches().len(), 5);
    }

    #[tokio::test]
    async fn rejecting_maps_inner_rejections_to_original_indices() {
        struct RejectFirst;
        #[async_trait]
        impl Emitter<u32> for RejectFirst {
            async fn emit(&self, batch: &Batch<u32>) -> Result<EmitOutcome> {
                Ok(EmitOutcome::with_rejected(
                    batch
                        .items
                        .first()
                        .map(|_| RejectedItem {
                            index: 0,
                            reason: "first".into(),
                        })
                        .into_iter()
                        .collect(),
                ))
            }
        }
        let emitter = RejectingEmitter::new(RejectFirst, |n: &u32| (*n == 0).then(String::new));
        let outcome = emitter
            .emit(&batch(shard_context("s"), vec![0, 7, 8], 1))
            .await;
        let indices: Vec<usize> = outcome
            .map(|o| o.rejected.iter().map(|r| r.index).collect())
            .unwrap_or_default();
        assert_eq!(indices, vec![0, 1]);
    }
}
