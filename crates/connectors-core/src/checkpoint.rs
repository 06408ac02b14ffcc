//! Checkpoints: how far each shard has been processed, per application.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::lease::{Lease, LeaseStore, StoredLease};
use crate::record::Position;

/// Identifies one shard's checkpoint: the application that consumes it, the
/// stream and the shard.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardKey {
    /// The application (consumer) name.
    pub application: String,
    /// The stream name.
    pub stream: String,
    /// The shard id.
    pub shard_id: String,
}

impl ShardKey {
    /// The key of `shard_id` in `stream`, consumed by `application`.
    pub fn new(
        application: impl Into<String>,
        stream: impl Into<String>,
        shard_id: impl Into<String>,
    ) -> Self {
        Self {
            application: application.into(),
            stream: stream.into(),
            shard_id: shard_id.into(),
        }
    }
}

impl fmt::Display for ShardKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.application, self.stream, self.shard_id)
    }
}

/// How far a shard has been processed.
///
/// Checkpoints are totally ordered: positions by sequence number, then
/// sub-sequence; [`Checkpoint::ShardEnd`] after every position.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Checkpoint {
    /// Every record up to and including this position was emitted.
    At(Position),
    /// The shard was closed and every record in it was emitted; its children may start.
    ShardEnd,
}

impl Checkpoint {
    /// The position, unless this is the SHARD_END marker.
    pub fn position(&self) -> Option<&Position> {
        match self {
            Self::At(position) => Some(position),
            Self::ShardEnd => None,
        }
    }

    /// Whether this is the SHARD_END marker.
    pub fn is_shard_end(&self) -> bool {
        matches!(self, Self::ShardEnd)
    }
}

impl Ord for Checkpoint {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        use std::cmp::Ordering;
        match (self, other) {
            (Self::ShardEnd, Self::ShardEnd) => Ordering::Equal,
            (Self::ShardEnd, Self::At(_)) => Ordering::Greater,
            (Self::At(_), Self::ShardEnd) => Ordering::Less,
            (Self::At(a), Self::At(b)) => a.cmp(b),
        }
    }
}

impl PartialOrd for Checkpoint {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::At(position) => position.fmt(f),
            Self::ShardEnd => f.write_str("SHARD_END"),
        }
    }
}

/// Where checkpoints are kept (Redis, DynamoDB, memory…).
///
/// Object safe, so `Arc<dyn CheckpointStore>` works. Implementations must
/// never move a checkpoint backwards: `set` with a checkpoint older than the
/// stored one leaves the stored one in place and returns `Ok(())` (a replayed
/// batch is not an error). Unreachable stores return retryable errors.
/// Third-party stores check themselves with the testkit's
/// `checkpoint_store_conformance`.
#[async_trait]
pub trait CheckpointStore: Send + Sync {
    /// The stored checkpoint, or `None` if the shard was never checkpointed.
    async fn get(&self, key: &ShardKey) -> Result<Option<Checkpoint>>;

    /// Stores `checkpoint` unless a newer one is already stored.
    async fn set(&self, key: &ShardKey, checkpoint: &Checkpoint) -> Result<()>;

    /// Stores `checkpoint` only while `lease` is still held with the same
    /// counter; otherwise fails with [`Error::LeaseLost`] and writes nothing.
    ///
    /// Stores without leases have nothing to fence against and just `set`;
    /// stores that keep leases (so several workers can share a stream)
    /// override this with an atomic conditional write.
    async fn set_fenced(
        &self,
        key: &ShardKey,
        checkpoint: &Checkpoint,
        lease: &Lease,
    ) -> Result<()> {
        let _ = lease;
        self.set(key, checkpoint).await
    }

    /// Whether this store keeps pending batches
    /// ([`set_pending_batch`](Self::set_pending_batch)); without them a batch
    /// cut by time (age, shutdown) may be cut elsewhere when replayed after
    /// a crash, so sinks that name outputs by batch range can load records
    /// twice. Stores that keep them override this and the two methods below.
    fn keeps_pending_batches(&self) -> bool {
        false
    }

    /// The last position of a batch that was about to be emitted when it
    /// was recorded, if one was recorded after the stored checkpoint's
    /// position; the consumer cuts its first batch exactly there on start.
    /// A pending position at or before the checkpoint is stale and may be
    /// returned or not.
    async fn pending_batch(&self, key: &ShardKey) -> Result<Option<Position>> {
        let _ = key;
        Ok(None)
    }

    /// Records `end` as the last position of the batch about to be emitted,
    /// only while `lease` is still held with the same counter (as
    /// [`set_fenced`](Self::set_fenced)); replaces any earlier pending batch.
    async fn set_pending_batch(&self, key: &ShardKey, end: &Position, lease: &Lease) -> Result<()> {
        let _ = (end, lease);
        Err(Error::Config(format!(
            "this checkpoint store keeps no pending batches (shard {})",
            key.shard_id
        )))
    }
}

#[async_trait]
impl<S: CheckpointStore + ?Sized> CheckpointStore for Arc<S> {
    async fn get(&self, key: &ShardKey) -> Result<Option<Checkpoint>> {
        (**self).get(key).await
    }
    async fn set(&self, key: &ShardKey, checkpoint: &Checkpoint) -> Result<()> {
        (**self).set(key, checkpoint).await
    }
    async fn set_fenced(
        &self,
        key: &ShardKey,
        checkpoint: &Checkpoint,
        lease: &Lease,
    ) -> Result<()> {
        (**self).set_fenced(key, checkpoint, lease).await
    }
    fn keeps_pending_batches(&self) -> bool {
        (**self).keeps_pending_batches()
    }
    async fn pending_batch(&self, key: &ShardKey) -> Result<Option<Position>> {
        (**self).pending_batch(key).await
    }
    async fn set_pending_batch(&self, key: &ShardKey, end: &Position, lease: &Lease) -> Result<()> {
        (**self).set_pending_batch(key, end, lease).await
    }
}

/// A checkpoint and lease store in process memory: for tests, for
/// pipelines that may start over after a restart, and for several workers
/// inside one process (clones share the same state).
///
/// ```
/// use kinesis_connectors_core::{Checkpoint, CheckpointStore, MemoryCheckpointStore, Position, ShardKey};
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let store = MemoryCheckpointStore::new();
/// let key = ShardKey::new("app", "orders", "shardId-000000000000");
/// store.set(&key, &Checkpoint::At(Position::new(7u64.into()))).await?;
/// store.set(&key, &Checkpoint::At(Position::new(3u64.into()))).await?; // ignored: older
/// assert_eq!(store.get(&key).await?, Some(Checkpoint::At(Position::new(7u64.into()))));
/// # Ok::<(), kinesis_connectors_core::Error>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Default, Clone)]
pub struct MemoryCheckpointStore {
    state: Arc<Mutex<MemoryState>>,
}

#[derive(Debug, Default)]
struct MemoryState {
    checkpoints: HashMap<ShardKey, Checkpoint>,
    pending: HashMap<ShardKey, Position>,
    leases: HashMap<ShardKey, MemoryLease>,
}

#[derive(Debug, Clone, Default)]
struct MemoryLease {
    owner: Option<String>,
    counter: u64,
    parents: Vec<String>,
}

impl MemoryState {
    fn set(&mut self, key: &ShardKey, checkpoint: &Checkpoint) {
        match self.checkpoints.get(key) {
            Some(stored) if stored >= checkpoint => {}
            _ => {
                self.checkpoints.insert(key.clone(), checkpoint.clone());
            }
        }
    }

    /// The stored lease if `lease` still holds it.
    fn held(&mut self, key: &ShardKey, lease: &Lease) -> Result<&mut MemoryLease> {
        match self.leases.get_mut(key) {
            Some(stored)
                if stored.owner.as_deref() == Some(lease.owner.as_str())
                    && stored.counter == lease.counter =>
            {
                Ok(stored)
            }
            stored => Err(Error::LeaseLost {
                shard_id: key.shard_id.clone(),
                owner: stored.and_then(|s| s.owner.clone()),
            }),
        }
    }
}

impl MemoryCheckpointStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every stored checkpoint, for inspection in tests.
    pub fn snapshot(&self) -> HashMap<ShardKey, Checkpoint> {
        self.lock().checkpoints.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        // Every update is a single insert or field write, so a panic while
        // holding the lock cannot leave the state half-updated.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl CheckpointStore for MemoryCheckpointStore {
    async fn get(&self, key: &ShardKey) -> Result<Option<Checkpoint>> {
        Ok(self.lock().checkpoints.get(key).cloned())
    }

    async fn set(&self, key: &ShardKey, checkpoint: &Checkpoint) -> Result<()> {
        self.lock().set(key, checkpoint);
        Ok(())
    }

    async fn set_fenced(
        &self,
        key: &ShardKey,
        checkpoint: &Checkpoint,
        lease: &Lease,
    ) -> Result<()> {
        let mut state = self.lock();
        // Without a lease record this store is used by a single worker.
        if state.leases.contains_key(key) {
            state.held(key, lease)?;
        }
        state.set(key, checkpoint);
        Ok(())
    }

    fn keeps_pending_batches(&self) -> bool {
        true
    }

    async fn pending_batch(&self, key: &ShardKey) -> Result<Option<Position>> {
        Ok(self.lock().pending.get(key).cloned())
    }

    async fn set_pending_batch(&self, key: &ShardKey, end: &Position, lease: &Lease) -> Result<()> {
        let mut state = self.lock();
        if state.leases.contains_key(key) {
            state.held(key, lease)?;
        }
        state.pending.insert(key.clone(), end.clone());
        Ok(())
    }
}

#[async_trait]
impl LeaseStore for MemoryCheckpointStore {
    async fn list_leases(&self, application: &str, stream: &str) -> Result<Vec<StoredLease>> {
        let state = self.lock();
        let mut leases: Vec<StoredLease> = state
            .leases
            .iter()
            .filter(|(key, _)| key.application == application && key.stream == stream)
            .map(|(key, lease)| StoredLease {
                shard_id: key.shard_id.clone(),
                owner: lease.owner.clone(),
                counter: lease.counter,
                checkpoint: state.checkpoints.get(key).cloned(),
                parent_shard_ids: lease.parents.clone(),
            })
            .collect();
        leases.sort_by(|a, b| a.shard_id.cmp(&b.shard_id));
        Ok(leases)
    }

    async fn create_lease(&self, key: &ShardKey, parent_shard_ids: &[String]) -> Result<()> {
        self.lock()
            .leases
            .entry(key.clone())
            .or_insert_with(|| MemoryLease {
                parents: parent_shard_ids.to_vec(),
                ..MemoryLease::default()
            });
        Ok(())
    }

    async fn take_lease(
        &self,
        key: &ShardKey,
        expected_counter: u64,
        owner: &str,
    ) -> Result<Option<Lease>> {
        let mut state = self.lock();
        let Some(stored) = state.leases.get_mut(key) else {
            return Ok(None);
        };
        if stored.counter != expected_counter {
            return Ok(None);
        }
        stored.counter += 1;
        stored.owner = Some(owner.to_owned());
        Ok(Some(Lease {
            shard_id: key.shard_id.clone(),
            owner: owner.to_owned(),
            counter: stored.counter,
            expires_at: None,
        }))
    }

    async fn renew_lease(&self, key: &ShardKey, lease: &Lease) -> Result<Lease> {
        let mut state = self.lock();
        let stored = state.held(key, lease)?;
        stored.counter += 1;
        Ok(Lease {
            counter: stored.counter,
            ..lease.clone()
        })
    }

    async fn release_lease(&self, key: &ShardKey, lease: &Lease) -> Result<()> {
        let mut state = self.lock();
        if let Ok(stored) = state.held(key, lease) {
            stored.owner = None;
            stored.counter += 1;
        }
        Ok(())
    }
}

/// Whether every parent of a shard reached SHARD_END in `store`, so the
/// shard itself may start.
pub(crate) async fn parents_finished(
    store: &dyn CheckpointStore,
    key: &ShardKey,
    parents: &[String],
) -> Result<bool, Error> {
    for parent in parents {
        let parent_key = ShardKey::new(&*key.application, &*key.stream, parent.as_str());
        match store.get(&parent_key).await? {
            Some(Checkpoint::ShardEnd) => {}
            _ => return Ok(false),
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(n: u64) -> Checkpoint {
        Checkpoint::At(Position::new(n.into()))
    }

    #[test]
    fn checkpoints_are_ordered_with_shard_end_last() {
        assert!(at(9) < at(10));
        assert!(at(u64::MAX) < Checkpoint::ShardEnd);
        assert_eq!(Checkpoint::ShardEnd.to_string(), "SHARD_END");
    }

    #[tokio::test]
    async fn memory_store_never_moves_backwards() {
        let store = MemoryCheckpointStore::new();
        let key = ShardKey::new("a", "s", "shard-1");
        assert_eq!(store.get(&key).await.unwrap(), None);
        store.set(&key, &at(10)).await.unwrap();
        store.set(&key, &at(9)).await.unwrap();
        assert_eq!(store.get(&key).await.unwrap(), Some(at(10)));
        store.set(&key, &Checkpoint::ShardEnd).await.unwrap();
        store.set(&key, &at(11)).await.unwrap();
        assert_eq!(store.get(&key).await.unwrap(), Some(Checkpoint::ShardEnd));
    }

    #[tokio::test]
    async fn parents_must_all_reach_shard_end() {
        let store = MemoryCheckpointStore::new();
        let child = ShardKey::new("a", "s", "child");
        let parents = vec!["p1".to_owned(), "p2".to_owned()];
        assert!(!parents_finished(&store, &child, &parents).await.unwrap());
        store
            .set(&ShardKey::new("a", "s", "p1"), &Checkpoint::ShardEnd)
            .await
            .unwrap();
        store
            .set(&ShardKey::new("a", "s", "p2"), &at(4))
            .await
            .unwrap();
        assert!(!parents_finished(&store, &child, &parents).await.unwrap());
        store
            .set(&ShardKey::new("a", "s", "p2"), &Checkpoint::ShardEnd)
            .await
            .unwrap();
        assert!(parents_finished(&store, &child, &parents).await.unwrap());
        assert!(parents_finished(&store, &child, &[]).await.unwrap());
    }
}
