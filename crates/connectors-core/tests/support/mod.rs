//! What several of these test files share (`mod support;`): a checkpoint
//! store whose writes a test can fail or hang, and the sub-records of a
//! KPL aggregate.

// Each test file uses a part of these helpers.
#![allow(dead_code)]

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

use kinesis_connectors_core::{
    Checkpoint, CheckpointStore, Error, Lease, MemoryCheckpointStore, Position, Record, Result,
    ShardKey, async_trait,
};

/// What an [`InterceptedStore`] does with one checkpoint write.
pub(crate) enum Write {
    /// Passes it to the inner store.
    Pass,
    /// Fails it with this error; nothing is written.
    Fail(Error),
    /// Never answers.
    Hang,
}

/// A checkpoint store over a [`MemoryCheckpointStore`] whose `set` first
/// asks a hook, given how many writes came before this one, whether to
/// pass, fail or hang it. Reads go straight to the inner store. It keeps no
/// pending batches unless built [`keeping_pending_batches`](Self::keeping_pending_batches).
pub(crate) struct InterceptedStore {
    inner: MemoryCheckpointStore,
    hook: Box<dyn Fn(usize) -> Write + Send + Sync>,
    writes: AtomicUsize,
    pending_batches: bool,
}

impl InterceptedStore {
    pub(crate) fn new(
        inner: &MemoryCheckpointStore,
        hook: impl Fn(usize) -> Write + Send + Sync + 'static,
    ) -> Self {
        Self {
            inner: inner.clone(),
            hook: Box::new(hook),
            writes: AtomicUsize::new(0),
            pending_batches: false,
        }
    }

    /// Keeps pending batches in the inner store, as the inner store does.
    pub(crate) fn keeping_pending_batches(mut self) -> Self {
        self.pending_batches = true;
        self
    }

    /// How many checkpoint writes were asked for (passed, failed or hung).
    pub(crate) fn writes(&self) -> usize {
        self.writes.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl CheckpointStore for InterceptedStore {
    async fn get(&self, key: &ShardKey) -> Result<Option<Checkpoint>> {
        self.inner.get(key).await
    }
    async fn set(&self, key: &ShardKey, checkpoint: &Checkpoint) -> Result<()> {
        match (self.hook)(self.writes.fetch_add(1, Ordering::SeqCst)) {
            Write::Pass => self.inner.set(key, checkpoint).await,
            Write::Fail(error) => Err(error),
            Write::Hang => std::future::pending().await,
        }
    }
    // A consumer asks for pending batches only from a store that keeps them.
    fn keeps_pending_batches(&self) -> bool {
        self.pending_batches && self.inner.keeps_pending_batches()
    }
    async fn pending_batch(&self, key: &ShardKey) -> Result<Option<Position>> {
        self.inner.pending_batch(key).await
    }
    async fn set_pending_batch(&self, key: &ShardKey, end: &Position, lease: &Lease) -> Result<()> {
        self.inner.set_pending_batch(key, end, lease).await
    }
}

/// The sub-records `s{i}` (partition key `pk`) of one KPL aggregate at
/// `sequence`, as a reader yields them after de-aggregation.
pub(crate) fn sub_records(sequence: u64, subs: Range<u64>) -> Vec<Record> {
    subs.map(|i| {
        let mut record = Record::new(format!("s{i}"), "pk", sequence);
        record.sub_sequence_number = Some(i);
        record
    })
    .collect()
}
