//! The pipeline traits: Transformer → Filter → Buffer → Emitter (and
//! Encoder, the way back to bytes for byte sinks).

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::Result;
use crate::record::{Position, Record, ShardContext};

/// Turns records into the user's items.
///
/// Synchronous on purpose: transforming is CPU work; I/O belongs in emitters.
/// Sinks that write bytes (S3 objects, streams, files) also need the way
/// back, [`Encoder`]; a pipeline that only decodes implements this trait
/// alone (so, e.g., a `Deserialize`-only type needs no `Serialize`).
pub trait Transformer: Send + Sync + 'static {
    /// The user's model of one record.
    type Item: Send + Sync + 'static;

    /// Decodes one record. An error is handled by the pipeline's
    /// [`BadRecordPolicy`]; it never stops other records by itself.
    fn to_item(&self, record: &Record) -> Result<Self::Item>;

    /// Decodes one record the pipeline has no other use for, so that the
    /// item may take its payload (`std::mem::take(&mut record.data)`)
    /// instead of sharing or copying it. The pipeline calls this one; the
    /// default calls [`to_item`](Self::to_item). On an error, leave
    /// `record.data` as it was: the bad-record policy hands it on.
    fn take_item(&self, record: &mut Record) -> Result<Self::Item> {
        self.to_item(record)
    }
}

/// Turns items back into bytes, for sinks that write bytes (S3 objects,
/// another stream, files). A separate trait from [`Transformer`] so that
/// decode-only pipelines never have to encode; the built-in transformers
/// implement both.
///
/// ```
/// use kinesis_connectors_core::{Encoder, Record, Result, Transformer};
///
/// /// Upper-cases text on the way in, writes it unchanged on the way out.
/// struct Shout;
///
/// impl Transformer for Shout {
///     type Item = String;
///     fn to_item(&self, record: &Record) -> Result<String> {
///         Ok(String::from_utf8_lossy(&record.data).to_uppercase())
///     }
/// }
///
/// impl Encoder for Shout {
///     fn from_item(&self, item: &String, out: &mut Vec<u8>) -> Result<()> {
///         out.extend_from_slice(item.as_bytes());
///         Ok(())
///     }
/// }
///
/// let item = Shout.to_item(&Record::new("hi", "pk", 1u64))?;
/// let mut out = Vec::new();
/// Shout.from_item(&item, &mut out)?;
/// assert_eq!(out, b"HI");
/// # Ok::<(), kinesis_connectors_core::Error>(())
/// ```
pub trait Encoder: Transformer {
    /// Appends the encoding of `item` to `out` (without a separator).
    // Named as the pair of `to_item`, after the seed libraries' transformers.
    #[allow(clippy::wrong_self_convention)]
    fn from_item(&self, item: &Self::Item, out: &mut Vec<u8>) -> Result<()>;
}

/// Decides which items go on to the emitter. Dropped records still advance
/// the checkpoint.
///
/// Closures implement it:
///
/// ```
/// use kinesis_connectors_core::Filter;
/// let only_even = |n: &u64| n % 2 == 0;
/// assert!(only_even.keep(&4));
/// assert!(!only_even.keep(&5));
/// ```
pub trait Filter<T>: Send + Sync + 'static {
    /// Whether to keep `item`.
    fn keep(&self, item: &T) -> bool;
}

impl<T, F> Filter<T> for F
where
    F: Fn(&T) -> bool + Send + Sync + 'static,
{
    fn keep(&self, item: &T) -> bool {
        self(item)
    }
}

/// The filter that keeps everything (the default).
#[derive(Debug, Clone, Copy, Default)]
pub struct AllPass;

impl<T> Filter<T> for AllPass {
    fn keep(&self, _item: &T) -> bool {
        true
    }
}

/// Where an item in a batch came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemSource {
    /// The record's position in its shard.
    pub position: Position,
    /// The record's partition key (forwarding emitters reuse it).
    pub partition_key: String,
    /// The record's explicit hash key, if the producer set one.
    pub explicit_hash_key: Option<String>,
    /// The size of the record's payload in bytes.
    pub size: usize,
}

impl ItemSource {
    /// The source of an item decoded from `record`.
    pub fn of(record: &Record) -> Self {
        Self {
            position: record.position(),
            partition_key: record.partition_key.clone(),
            explicit_hash_key: record.explicit_hash_key.clone(),
            size: record.data.len(),
        }
    }
}

impl From<Record> for ItemSource {
    /// The source of an item decoded from `record`, taking its partition
    /// and explicit hash keys instead of copying them.
    fn from(record: Record) -> Self {
        Self {
            size: record.data.len(),
            position: Position {
                sequence: record.sequence_number,
                sub_sequence: record.sub_sequence_number,
            },
            partition_key: record.partition_key,
            explicit_hash_key: record.explicit_hash_key,
        }
    }
}

/// A flushed buffer: the items to emit and the range of records they cover.
///
/// `first` and `last` include records that the filter dropped, so an emitter
/// can name its output after them and a replayed batch produces the same name
/// (idempotent delivery).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Batch<T> {
    /// The items, in shard order.
    pub items: Vec<T>,
    /// Where each item came from; `sources[i]` belongs to `items[i]`.
    pub sources: Vec<ItemSource>,
    /// The first record covered (kept or filtered).
    pub first: Position,
    /// The last record covered (kept or filtered).
    pub last: Position,
    /// How many records the batch covers, filtered ones included.
    pub record_count: usize,
    /// Payload bytes of the kept records.
    pub byte_size: usize,
    /// When the first covered record arrived in Kinesis, if known.
    pub first_arrival: Option<SystemTime>,
    /// The shard the batch came from.
    pub context: ShardContext,
}

impl<T> Batch<T> {
    /// A batch of `items` covering `first..=last` of a shard.
    ///
    /// ```
    /// use kinesis_connectors_core::{Batch, ItemSource, Position, Record, ShardContext};
    /// let record = Record::new("x", "pk", 1u64);
    /// let batch = Batch::new(
    ///     ShardContext::new("app", "stream", "shardId-0"),
    ///     vec![("x".to_owned(), ItemSource::of(&record))],
    ///     record.position(),
    ///     record.position(),
    /// );
    /// assert_eq!(batch.len(), 1);
    /// ```
    pub fn new(
        context: ShardContext,
        items: Vec<(T, ItemSource)>,
        first: Position,
        last: Position,
    ) -> Self {
        let byte_size = items.iter().map(|(_, s)| s.size).sum();
        let record_count = items.len();
        let (items, sources) = items.into_iter().unzip();
        Self {
            items,
            sources,
            first,
            last,
            record_count,
            byte_size,
            first_arrival: None,
            context,
        }
    }

    /// How many items the batch holds.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the batch holds no items (every covered record was filtered).
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// An item an emitter could not deliver on its own account (too large,
/// not convertible) while the rest of the batch was delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedItem {
    /// Index into [`Batch::items`].
    pub index: usize,
    /// Why it was rejected.
    pub reason: String,
}

/// What an emitter reports after delivering a batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use]
pub struct EmitOutcome {
    /// Items rejected one by one; they go to the pipeline's bad-record policy.
    pub rejected: Vec<RejectedItem>,
}

impl EmitOutcome {
    /// Every item was delivered.
    pub fn delivered() -> Self {
        Self::default()
    }

    /// Every item but `rejected` was delivered.
    pub fn with_rejected(rejected: Vec<RejectedItem>) -> Self {
        Self { rejected }
    }
}

/// Delivers batches to a sink (S3, Redshift, DynamoDB, another stream…).
///
/// Object safe: `Box<dyn Emitter<T>>` and `Arc<dyn Emitter<T>>` work.
/// The consumer checkpoints a batch only after `emit` returned `Ok`, and may
/// call `emit` again with the same batch after a failure or a restart, so
/// emitters should be idempotent per batch (e.g. name outputs after
/// `batch.first`/`batch.last`). Return retryable errors
/// ([`Error::emit_retryable`](crate::Error::emit_retryable)) for throttling
/// and network failures. Third-party emitters check themselves with the
/// testkit's `emitter_conformance`.
#[async_trait]
pub trait Emitter<T: Send + Sync>: Send + Sync {
    /// Delivers `batch`. An empty batch must succeed without side effects.
    async fn emit(&self, batch: &Batch<T>) -> Result<EmitOutcome>;

    /// Flushes and closes the sink; called when the shard task owning this
    /// pipeline stops after a graceful shutdown or at shard end (so once per
    /// shard for an emitter shared between shards).
    async fn shutdown(&self) -> Result<()> {
        Ok(())
    }
}

#[async_trait]
impl<T: Send + Sync, E: Emitter<T> + ?Sized> Emitter<T> for Arc<E> {
    async fn emit(&self, batch: &Batch<T>) -> Result<EmitOutcome> {
        (**self).emit(batch).await
    }
    async fn shutdown(&self) -> Result<()> {
        (**self).shutdown().await
    }
}

#[async_trait]
impl<T: Send + Sync, E: Emitter<T> + ?Sized> Emitter<T> for Box<E> {
    async fn emit(&self, batch: &Batch<T>) -> Result<EmitOutcome> {
        (**self).emit(batch).await
    }
    async fn shutdown(&self) -> Result<()> {
        (**self).shutdown().await
    }
}

/// A record the pipeline could not process, as handed to a dead-letter emitter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedRecord {
    /// The record's payload: the raw bytes for a transform failure, the
    /// re-encoded item for an item an emitter rejected.
    pub data: Bytes,
    /// The record's partition key.
    pub partition_key: String,
    /// The record's position in its shard.
    pub position: Position,
    /// Why it failed.
    pub error: String,
}

/// What the pipeline does with a record that cannot be transformed, or an
/// item an emitter rejected.
#[derive(Clone, Default)]
pub enum BadRecordPolicy {
    /// Log it (with shard and sequence number), count it, and go on (default).
    #[default]
    Skip,
    /// Send it with its error to this emitter, then go on. If the dead-letter
    /// emitter itself fails past its retries, the shard stops.
    DeadLetter(Arc<dyn Emitter<FailedRecord>>),
    /// Stop the shard with an error naming the record.
    Stop,
}

impl std::fmt::Debug for BadRecordPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Skip => "Skip",
            Self::DeadLetter(_) => "DeadLetter(..)",
            Self::Stop => "Stop",
        })
    }
}

/// One shard's pipeline: transformer, filter, buffer, emitter and what to do
/// with bad records. The stream consumer builds one per shard through the
/// factory the user gives it.
///
/// ```
/// use std::sync::Arc;
/// use kinesis_connectors_core::{
///     async_trait, Batch, BufferLimits, EmitOutcome, Emitter, Pipeline, Utf8Transformer,
/// };
///
/// struct Print;
/// #[async_trait]
/// impl Emitter<String> for Print {
///     async fn emit(&self, batch: &Batch<String>) -> kinesis_connectors_core::Result<EmitOutcome> {
///         for line in &batch.items {
///             println!("{line}");
///         }
///         Ok(EmitOutcome::delivered())
///     }
/// }
///
/// let pipeline = Pipeline::builder(Utf8Transformer, Arc::new(Print))
///     .filter(|line: &String| !line.is_empty())
///     .buffer_limits(BufferLimits::default().with_max_records(100))
///     .build()?;
/// # Ok::<(), kinesis_connectors_core::Error>(())
/// ```
pub struct Pipeline<T: Transformer> {
    pub(crate) transformer: T,
    /// Re-encodes an item an emitter rejected, for its dead letter; `None`
    /// for a decode-only pipeline.
    pub(crate) reencode: Option<Reencode<T>>,
    pub(crate) filter: Box<dyn Filter<T::Item>>,
    pub(crate) buffer: Box<dyn crate::buffer::Buffer<T::Item>>,
    pub(crate) emitter: Arc<dyn Emitter<T::Item>>,
    pub(crate) bad_records: BadRecordPolicy,
}

/// How a pipeline turns a rejected item back into bytes.
pub(crate) type Reencode<T> = fn(&T, &<T as Transformer>::Item, &mut Vec<u8>) -> Result<()>;

impl<T: Encoder> Pipeline<T> {
    /// Starts a pipeline decoding with `transformer` and delivering to
    /// `emitter`. An item the emitter rejects goes to the bad-record policy
    /// re-encoded with the transformer's [`Encoder`].
    pub fn builder(transformer: T, emitter: Arc<dyn Emitter<T::Item>>) -> PipelineBuilder<T> {
        PipelineBuilder::new(transformer, Some(T::from_item), emitter)
    }
}

impl<T: Transformer> Pipeline<T> {
    /// Starts a pipeline whose transformer only decodes (no [`Encoder`]:
    /// e.g. a `Deserialize`-only type for a DynamoDB or custom sink). The
    /// only difference from [`Pipeline::builder`]: the dead letter of an item
    /// an emitter rejected carries no payload, only its position, partition
    /// key and reason.
    pub fn decode_only(transformer: T, emitter: Arc<dyn Emitter<T::Item>>) -> PipelineBuilder<T> {
        PipelineBuilder::new(transformer, None, emitter)
    }
}

impl<T: Transformer> PipelineBuilder<T> {
    fn new(
        transformer: T,
        reencode: Option<Reencode<T>>,
        emitter: Arc<dyn Emitter<T::Item>>,
    ) -> Self {
        Self {
            transformer,
            reencode,
            emitter,
            filter: Box::new(AllPass),
            buffer: None,
            limits: crate::buffer::BufferLimits::default(),
            bad_records: BadRecordPolicy::default(),
        }
    }
}

impl<T: Transformer> std::fmt::Debug for Pipeline<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("bad_records", &self.bad_records)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Pipeline`]; see [`Pipeline::builder`] and [`Pipeline::decode_only`].
pub struct PipelineBuilder<T: Transformer> {
    transformer: T,
    reencode: Option<Reencode<T>>,
    emitter: Arc<dyn Emitter<T::Item>>,
    filter: Box<dyn Filter<T::Item>>,
    buffer: Option<Box<dyn crate::buffer::Buffer<T::Item>>>,
    limits: crate::buffer::BufferLimits,
    bad_records: BadRecordPolicy,
}

impl<T: Transformer> PipelineBuilder<T> {
    /// Keeps only the items `filter` accepts (default: all).
    pub fn filter(mut self, filter: impl Filter<T::Item>) -> Self {
        self.filter = Box::new(filter);
        self
    }

    /// Flush limits for the default [`RecordBuffer`](crate::RecordBuffer).
    pub fn buffer_limits(mut self, limits: crate::buffer::BufferLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Replaces the default buffer with a custom one.
    pub fn buffer(mut self, buffer: impl crate::buffer::Buffer<T::Item> + 'static) -> Self {
        self.buffer = Some(Box::new(buffer));
        self
    }

    /// What to do with records that fail to transform (default: skip and count).
    pub fn bad_records(mut self, policy: BadRecordPolicy) -> Self {
        self.bad_records = policy;
        self
    }

    /// Checks the configuration and builds the pipeline.
    pub fn build(self) -> Result<Pipeline<T>> {
        let buffer = match self.buffer {
            Some(buffer) => buffer,
            None => Box::new(crate::buffer::RecordBuffer::new(self.limits)?),
        };
        Ok(Pipeline {
            transformer: self.transformer,
            reencode: self.reencode,
            filter: self.filter,
            buffer,
            emitter: self.emitter,
            bad_records: self.bad_records,
        })
    }
}
