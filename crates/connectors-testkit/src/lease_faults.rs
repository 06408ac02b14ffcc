//! Lease stores that fail on purpose: a renewal applied but answered with
//! an error, and a store that goes down or turns slow.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use kinesis_connectors_core::{
    Checkpoint, CheckpointStore, Error, Lease, LeaseStore, Position, Result, ShardKey, StoredLease,
};

/// Wraps a lease store: the next renewal is applied by the inner store and
/// then answered with a chosen error, as a store answers whose reply was
/// lost to a timeout, or whose client retried an applied conditional write
/// and had it refused (`LeaseLost`). Everything else is passed through.
///
/// ```
/// use std::sync::Arc;
/// use kinesis_connectors_core::{Error, LeaseCoordinator, MemoryCheckpointStore, ShardAssigner, ShardInfo};
/// use kinesis_connectors_testkit::RenewalAppliedButFailed;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let store = Arc::new(RenewalAppliedButFailed::new(MemoryCheckpointStore::new()));
/// let worker = LeaseCoordinator::new(store.clone(), "app", "stream", "worker-1");
/// let lease = worker.acquire("stream", &[ShardInfo::open("shard-0")], &[]).await.unwrap().remove(0);
/// store.answer_next_renewal_with(Error::checkpoint_retryable("no reply in time"));
/// // The coordinator reads the lease back, sees its renewal, and renews again.
/// assert_eq!(worker.renew(&lease).await.unwrap().counter, lease.counter + 2);
/// # }
/// ```
#[derive(Debug)]
pub struct RenewalAppliedButFailed<S> {
    inner: S,
    next_answer: Mutex<Option<Error>>,
}

impl<S> RenewalAppliedButFailed<S> {
    /// Wraps `inner`; renewals pass through until
    /// [`answer_next_renewal_with`](Self::answer_next_renewal_with).
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            next_answer: Mutex::new(None),
        }
    }

    /// The next renewal is applied, then answered with `error`.
    pub fn answer_next_renewal_with(&self, error: Error) {
        *self
            .next_answer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(error);
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }
}

#[async_trait]
impl<S: LeaseStore> CheckpointStore for RenewalAppliedButFailed<S> {
    async fn get(&self, key: &ShardKey) -> Result<Option<Checkpoint>> {
        self.inner.get(key).await
    }

    async fn set(&self, key: &ShardKey, checkpoint: &Checkpoint) -> Result<()> {
        self.inner.set(key, checkpoint).await
    }

    async fn set_fenced(
        &self,
        key: &ShardKey,
        checkpoint: &Checkpoint,
        lease: &Lease,
    ) -> Result<()> {
        self.inner.set_fenced(key, checkpoint, lease).await
    }

    fn keeps_pending_batches(&self) -> bool {
        self.inner.keeps_pending_batches()
    }

    async fn pending_batch(&self, key: &ShardKey) -> Result<Option<Position>> {
        self.inner.pending_batch(key).await
    }

    async fn set_pending_batch(&self, key: &ShardKey, end: &Position, lease: &Lease) -> Result<()> {
        self.inner.set_pending_batch(key, end, lease).await
    }
}

#[async_trait]
impl<S: LeaseStore> LeaseStore for RenewalAppliedButFailed<S> {
    async fn list_leases(&self, application: &str, stream: &str) -> Result<Vec<StoredLease>> {
        self.inner.list_leases(application, stream).await
    }

    async fn create_lease(&self, key: &ShardKey, parent_shard_ids: &[String]) -> Result<()> {
        self.inner.create_lease(key, parent_shard_ids).await
    }

    async fn take_lease(
        &self,
        key: &ShardKey,
        expected_counter: u64,
        owner: &str,
    ) -> Result<Option<Lease>> {
        self.inner.take_lease(key, expected_counter, owner).await
    }

    async fn renew_lease(&self, key: &ShardKey, lease: &Lease) -> Result<Lease> {
        let renewed = self.inner.renew_lease(key, lease).await;
        let answer = self
            .next_answer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        match answer {
            Some(error) => Err(error),
            None => renewed,
        }
    }

    async fn release_lease(&self, key: &ShardKey, lease: &Lease) -> Result<()> {
        self.inner.release_lease(key, lease).await
    }
}

/// What an [`OutageStore`] does to calls now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Condition {
    Up,
    Down,
    Slow(Duration),
}

/// Wraps a lease store that can go down (every call fails at once with a
/// retryable error, as a refused connection) or turn slow (every call waits
/// first), for as long as a test says: share one `Arc` between several
/// workers and their outage is the same.
///
/// ```
/// use std::time::Duration;
/// use kinesis_connectors_core::{CheckpointStore, MemoryCheckpointStore, ShardKey};
/// use kinesis_connectors_testkit::OutageStore;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let store = OutageStore::new(MemoryCheckpointStore::new());
/// let key = ShardKey::new("app", "stream", "shard-0");
/// store.down();
/// assert!(store.get(&key).await.unwrap_err().is_retryable());
/// store.slow(Duration::from_millis(10));
/// assert!(store.get(&key).await.unwrap().is_none());
/// store.up();
/// # }
/// ```
#[derive(Debug)]
pub struct OutageStore<S> {
    inner: S,
    condition: Mutex<Condition>,
}

impl<S> OutageStore<S> {
    /// Wraps `inner`, up.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            condition: Mutex::new(Condition::Up),
        }
    }

    /// Every call fails at once with a retryable error from now on.
    pub fn down(&self) {
        self.set(Condition::Down);
    }

    /// Every call waits `delay` before it goes through, from now on.
    pub fn slow(&self, delay: Duration) {
        self.set(Condition::Slow(delay));
    }

    /// Calls go through again.
    pub fn up(&self) {
        self.set(Condition::Up);
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn set(&self, condition: Condition) {
        *self
            .condition
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = condition;
    }

    /// Lets a call through, late or not at all, as the condition says.
    async fn gate(&self) -> Result<()> {
        let condition = *self
            .condition
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match condition {
            Condition::Up => Ok(()),
            Condition::Down => Err(Error::checkpoint_retryable(
                "the lease store is down (OutageStore)",
            )),
            Condition::Slow(delay) => {
                tokio::time::sleep(delay).await;
                Ok(())
            }
        }
    }
}

#[async_trait]
impl<S: LeaseStore> CheckpointStore for OutageStore<S> {
    async fn get(&self, key: &ShardKey) -> Result<Option<Checkpoint>> {
        self.gate().await?;
        self.inner.get(key).await
    }

    async fn set(&self, key: &ShardKey, checkpoint: &Checkpoint) -> Result<()> {
        self.gate().await?;
        self.inner.set(key, checkpoint).await
    }

    async fn set_fenced(
        &self,
        key: &ShardKey,
        checkpoint: &Checkpoint,
        lease: &Lease,
    ) -> Result<()> {
        self.gate().await?;
        self.inner.set_fenced(key, checkpoint, lease).await
    }

    fn keeps_pending_batches(&self) -> bool {
        self.inner.keeps_pending_batches()
    }

    async fn pending_batch(&self, key: &ShardKey) -> Result<Option<Position>> {
        self.gate().await?;
        self.inner.pending_batch(key).await
    }

    async fn set_pending_batch(&self, key: &ShardKey, end: &Position, lease: &Lease) -> Result<()> {
        self.gate().await?;
        self.inner.set_pending_batch(key, end, lease).await
    }
}

#[async_trait]
impl<S: LeaseStore> LeaseStore for OutageStore<S> {
    async fn list_leases(&self, application: &str, stream: &str) -> Result<Vec<StoredLease>> {
        self.gate().await?;
        self.inner.list_leases(application, stream).await
    }

    async fn create_lease(&self, key: &ShardKey, parent_shard_ids: &[String]) -> Result<()> {
        self.gate().await?;
        self.inner.create_lease(key, parent_shard_ids).await
    }

    async fn take_lease(
        &self,
        key: &ShardKey,
        expected_counter: u64,
        owner: &str,
    ) -> Result<Option<Lease>> {
        self.gate().await?;
        self.inner.take_lease(key, expected_counter, owner).await
    }

    async fn renew_lease(&self, key: &ShardKey, lease: &Lease) -> Result<Lease> {
        self.gate().await?;
        self.inner.renew_lease(key, lease).await
    }

    async fn release_lease(&self, key: &ShardKey, lease: &Lease) -> Result<()> {
        self.gate().await?;
        self.inner.release_lease(key, lease).await
    }
}
