//! Lease stores that fail on purpose: [`HookedStore`] passes every call
//! through to another store, with hooks where a test wants a call to fail,
//! wait or answer differently; [`RenewalAppliedButFailed`] (a renewal
//! applied but answered with an error) and [`OutageStore`] (a store that goes
//! down or turns slow) are two sets of such hooks.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use kinesis_connectors_core::{
    Checkpoint, CheckpointStore, Error, Lease, LeaseStore, Position, Result, ShardKey, StoredLease,
};

/// A call a [`HookedStore`] is about to pass through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreCall {
    /// `CheckpointStore::get`.
    Get,
    /// `CheckpointStore::set`.
    Set,
    /// `CheckpointStore::set_fenced`.
    SetFenced,
    /// `CheckpointStore::pending_batch`.
    PendingBatch,
    /// `CheckpointStore::set_pending_batch`.
    SetPendingBatch,
    /// `LeaseStore::list_leases`.
    ListLeases,
    /// `LeaseStore::create_lease`.
    CreateLease,
    /// `LeaseStore::take_lease`.
    TakeLease,
    /// `LeaseStore::renew_lease`.
    RenewLease,
    /// `LeaseStore::release_lease`.
    ReleaseLease,
}

/// What a [`HookedStore`] does around the calls it passes through; every
/// hook passes the call through unchanged unless a test overrides it.
#[async_trait]
pub trait StoreHooks: Send + Sync {
    /// Runs before every call; an error answers the call instead of the store.
    async fn before(&self, call: StoreCall) -> Result<()> {
        let _ = call;
        Ok(())
    }

    /// Runs a fenced checkpoint write (`write`, already past
    /// [`before`](Self::before)) and answers for it.
    async fn around_fenced_write(
        &self,
        checkpoint: &Checkpoint,
        write: BoxFuture<'_, Result<()>>,
    ) -> Result<()> {
        let _ = checkpoint;
        write.await
    }

    /// Runs a renewal (`renew`, already past [`before`](Self::before)) and
    /// answers for it.
    async fn around_renewal(&self, renew: BoxFuture<'_, Result<Lease>>) -> Result<Lease> {
        renew.await
    }
}

/// `inner` with `hooks` around its calls.
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use kinesis_connectors_core::{
///     CheckpointStore, MemoryCheckpointStore, Result, ShardKey, async_trait,
/// };
/// use kinesis_connectors_testkit::{HookedStore, StoreCall, StoreHooks};
///
/// /// Counts checkpoint reads.
/// #[derive(Default)]
/// struct Reads(AtomicUsize);
///
/// #[async_trait]
/// impl StoreHooks for Reads {
///     async fn before(&self, call: StoreCall) -> Result<()> {
///         if call == StoreCall::Get {
///             self.0.fetch_add(1, Ordering::SeqCst);
///         }
///         Ok(())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<()> {
/// let store = HookedStore::with_hooks(MemoryCheckpointStore::new(), Reads::default());
/// store.get(&ShardKey::new("app", "stream", "shard-0")).await?;
/// assert_eq!(store.hooks().0.load(Ordering::SeqCst), 1);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct HookedStore<S, H> {
    inner: S,
    hooks: H,
}

impl<S, H> HookedStore<S, H> {
    /// `inner` with `hooks` around its calls.
    pub fn with_hooks(inner: S, hooks: H) -> Self {
        Self { inner, hooks }
    }

    /// The hooks, to steer them or read what they saw.
    pub fn hooks(&self) -> &H {
        &self.hooks
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }
}

#[async_trait]
impl<S: LeaseStore, H: StoreHooks> CheckpointStore for HookedStore<S, H> {
    async fn get(&self, key: &ShardKey) -> Result<Option<Checkpoint>> {
        self.hooks.before(StoreCall::Get).await?;
        self.inner.get(key).await
    }

    async fn set(&self, key: &ShardKey, checkpoint: &Checkpoint) -> Result<()> {
        self.hooks.before(StoreCall::Set).await?;
        self.inner.set(key, checkpoint).await
    }

    async fn set_fenced(
        &self,
        key: &ShardKey,
        checkpoint: &Checkpoint,
        lease: &Lease,
    ) -> Result<()> {
        self.hooks.before(StoreCall::SetFenced).await?;
        let write = self.inner.set_fenced(key, checkpoint, lease);
        self.hooks.around_fenced_write(checkpoint, write).await
    }

    fn keeps_pending_batches(&self) -> bool {
        self.inner.keeps_pending_batches()
    }

    async fn pending_batch(&self, key: &ShardKey) -> Result<Option<Position>> {
        self.hooks.before(StoreCall::PendingBatch).await?;
        self.inner.pending_batch(key).await
    }

    async fn set_pending_batch(&self, key: &ShardKey, end: &Position, lease: &Lease) -> Result<()> {
        self.hooks.before(StoreCall::SetPendingBatch).await?;
        self.inner.set_pending_batch(key, end, lease).await
    }
}

#[async_trait]
impl<S: LeaseStore, H: StoreHooks> LeaseStore for HookedStore<S, H> {
    async fn list_leases(&self, application: &str, stream: &str) -> Result<Vec<StoredLease>> {
        self.hooks.before(StoreCall::ListLeases).await?;
        self.inner.list_leases(application, stream).await
    }

    async fn create_lease(&self, key: &ShardKey, parent_shard_ids: &[String]) -> Result<()> {
        self.hooks.before(StoreCall::CreateLease).await?;
        self.inner.create_lease(key, parent_shard_ids).await
    }

    async fn take_lease(
        &self,
        key: &ShardKey,
        expected_counter: u64,
        owner: &str,
    ) -> Result<Option<Lease>> {
        self.hooks.before(StoreCall::TakeLease).await?;
        self.inner.take_lease(key, expected_counter, owner).await
    }

    async fn renew_lease(&self, key: &ShardKey, lease: &Lease) -> Result<Lease> {
        self.hooks.before(StoreCall::RenewLease).await?;
        let renew = self.inner.renew_lease(key, lease);
        self.hooks.around_renewal(renew).await
    }

    async fn release_lease(&self, key: &ShardKey, lease: &Lease) -> Result<()> {
        self.hooks.before(StoreCall::ReleaseLease).await?;
        self.inner.release_lease(key, lease).await
    }
}

/// The hooks of [`RenewalAppliedButFailed`]: the next renewal's answer.
#[derive(Debug, Default)]
pub struct LostRenewalReply {
    next_answer: Mutex<Option<Error>>,
}

#[async_trait]
impl StoreHooks for LostRenewalReply {
    async fn around_renewal(&self, renew: BoxFuture<'_, Result<Lease>>) -> Result<Lease> {
        let renewed = renew.await;
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
}

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
pub type RenewalAppliedButFailed<S> = HookedStore<S, LostRenewalReply>;

impl<S> HookedStore<S, LostRenewalReply> {
    /// Wraps `inner`; renewals pass through until
    /// [`answer_next_renewal_with`](Self::answer_next_renewal_with).
    pub fn new(inner: S) -> Self {
        Self::with_hooks(inner, LostRenewalReply::default())
    }

    /// The next renewal is applied, then answered with `error`.
    pub fn answer_next_renewal_with(&self, error: Error) {
        *self
            .hooks
            .next_answer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(error);
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
pub type OutageStore<S> = HookedStore<S, Outage>;

/// The hooks of [`OutageStore`]: what calls meet now.
#[derive(Debug)]
pub struct Outage {
    condition: Mutex<Condition>,
}

impl Outage {
    fn set(&self, condition: Condition) {
        *self
            .condition
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = condition;
    }
}

#[async_trait]
impl StoreHooks for Outage {
    /// Lets a call through, late or not at all, as the condition says.
    async fn before(&self, _call: StoreCall) -> Result<()> {
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

impl<S> HookedStore<S, Outage> {
    /// Wraps `inner`, up.
    pub fn new(inner: S) -> Self {
        Self::with_hooks(
            inner,
            Outage {
                condition: Mutex::new(Condition::Up),
            },
        )
    }

    /// Every call fails at once with a retryable error from now on.
    pub fn down(&self) {
        self.hooks.set(Condition::Down);
    }

    /// Every call waits `delay` before it goes through, from now on.
    pub fn slow(&self, delay: Duration) {
        self.hooks.set(Condition::Slow(delay));
    }

    /// Calls go through again.
    pub fn up(&self) {
        self.hooks.set(Condition::Up);
    }
}
