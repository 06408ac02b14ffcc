//! A source that passes every call through to another, with hooks where a
//! test wants to slow a call down, stall it or look at what it answered.

use async_trait::async_trait;
use kinesis_connectors_core::{
    Delivery, RecordSource, RecordsPage, Result, ShardInfo, StartPosition,
};

/// What a [`HookedSource`] does around the calls it passes through; every
/// hook does nothing unless a test overrides it.
#[async_trait]
pub trait SourceHooks: Send + Sync {
    /// Runs before each `list_shards` call (sleep here for a slow listing).
    async fn before_list_shards(&self) {}

    /// Runs before each `get_records` call (sleep or never return here for
    /// a slow or stalled read).
    async fn before_get_records(&self) {}

    /// Sees, and may change, each page before the consumer gets it.
    fn on_page(&self, page: &mut RecordsPage) {
        let _ = page;
    }
}

/// `inner` with `hooks` around its calls.
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use bytes::Bytes;
/// use kinesis_connectors_core::{RecordSource, RecordsPage, ShardInfo, StartPosition};
/// use kinesis_connectors_testkit::{HookedSource, ScriptedSource, SourceHooks};
///
/// /// Counts the records handed out.
/// #[derive(Default)]
/// struct Count(AtomicUsize);
///
/// impl SourceHooks for Count {
///     fn on_page(&self, page: &mut RecordsPage) {
///         self.0.fetch_add(page.records.len(), Ordering::SeqCst);
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> kinesis_connectors_core::Result<()> {
/// let scripted = ScriptedSource::new();
/// scripted.add_shard(ShardInfo::open("shard-0"));
/// scripted.append("shard-0", vec![("pk".into(), Bytes::from("hello"))]);
/// let source = HookedSource::new(scripted, Count::default());
/// let iterator = source.shard_iterator("stream", "shard-0", &StartPosition::TrimHorizon).await?;
/// source.get_records(&iterator, 100).await?;
/// assert_eq!(source.hooks().0.load(Ordering::SeqCst), 1);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct HookedSource<S, H> {
    inner: S,
    hooks: H,
}

impl<S, H> HookedSource<S, H> {
    /// `inner` with `hooks` around its calls.
    pub fn new(inner: S, hooks: H) -> Self {
        Self { inner, hooks }
    }

    /// The hooks, to read what they counted.
    pub fn hooks(&self) -> &H {
        &self.hooks
    }

    /// The wrapped source.
    pub fn inner(&self) -> &S {
        &self.inner
    }
}

#[async_trait]
impl<S: RecordSource, H: SourceHooks> RecordSource for HookedSource<S, H> {
    async fn list_shards(&self, stream: &str) -> Result<Vec<ShardInfo>> {
        self.hooks.before_list_shards().await;
        self.inner.list_shards(stream).await
    }

    async fn shard_iterator(
        &self,
        stream: &str,
        shard_id: &str,
        position: &StartPosition,
    ) -> Result<String> {
        self.inner.shard_iterator(stream, shard_id, position).await
    }

    async fn get_records(&self, iterator: &str, limit: u32) -> Result<RecordsPage> {
        self.hooks.before_get_records().await;
        let mut page = self.inner.get_records(iterator, limit).await?;
        self.hooks.on_page(&mut page);
        Ok(page)
    }

    fn delivery(&self) -> Delivery {
        self.inner.delivery()
    }
}
