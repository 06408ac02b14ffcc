//! Buffers: collect items until a batch is worth emitting.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::pipeline::{Batch, ItemSource};
use crate::record::{Position, Record, ShardContext};

/// Collects a shard's items between flushes.
///
/// The consumer pushes every record it reads (`None` for one the filter
/// dropped, so the batch still covers it), asks [`is_full`](Self::is_full)
/// after each push, and also flushes at [`deadline`](Self::deadline) even
/// when no record arrives.
pub trait Buffer<T>: Send + Sync {
    /// Adds one record's item (`None` if it was filtered out). The buffer
    /// takes the record, so that the item's [`ItemSource`] can keep its
    /// partition key without copying it. `size` is the payload's size as
    /// read: the transformer may have moved `record.data` into the item
    /// ([`Transformer::take_item`](crate::Transformer::take_item)).
    fn push(&mut self, record: Record, size: usize, item: Option<T>);

    /// Whether the buffer reached a size limit and must be flushed now.
    /// (Age is not checked here: the consumer flushes at
    /// [`deadline`](Self::deadline) between pages, which keeps the clock off
    /// the per-record path.)
    fn is_full(&self) -> bool;

    /// When the buffer must be flushed even if no more records arrive.
    fn deadline(&self) -> Option<Instant>;

    /// Whether no record was pushed since the last flush.
    fn is_empty(&self) -> bool;

    /// Takes everything pushed since the last flush as a batch.
    fn take(&mut self, context: &ShardContext) -> Option<Batch<T>>;
}

/// When a [`RecordBuffer`] flushes: on ANY of the limits.
///
/// `#[non_exhaustive]` so that limits can be added without breaking you:
/// start from the defaults and change what you need,
/// `BufferLimits::default().with_max_records(500)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BufferLimits {
    /// Kept items per batch (default 1,000).
    pub max_records: usize,
    /// Payload bytes of kept items per batch (default 5 MiB).
    pub max_bytes: usize,
    /// Age of the oldest buffered record (default 30 s); fires while the shard is idle.
    pub max_age: Duration,
}

impl Default for BufferLimits {
    fn default() -> Self {
        Self {
            max_records: 1_000,
            max_bytes: 5 * 1024 * 1024,
            max_age: Duration::from_secs(30),
        }
    }
}

impl BufferLimits {
    /// These limits with at most `max_records` kept items per batch.
    pub const fn with_max_records(mut self, max_records: usize) -> Self {
        self.max_records = max_records;
        self
    }

    /// These limits with at most `max_bytes` payload bytes per batch.
    pub const fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// These limits flushing once the oldest buffered record is `max_age` old.
    pub const fn with_max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// Checks that every limit can be reached.
    pub fn validate(&self) -> Result<()> {
        if self.max_records == 0 || self.max_bytes == 0 || self.max_age.is_zero() {
            return Err(Error::Config(format!(
                "buffer limits must be positive, got {self:?}"
            )));
        }
        Ok(())
    }
}

/// The room a [`RecordBuffer`] makes for items when a batch opens, at most.
const RESERVED_BYTES: usize = 1024 * 1024;

/// The default buffer: flushes on a record count, a byte count or an age,
/// whichever comes first.
///
/// ```
/// use std::time::Duration;
/// use kinesis_connectors_core::{Buffer, BufferLimits, Record, RecordBuffer};
/// let mut buffer = RecordBuffer::new(BufferLimits::default().with_max_records(2))?;
/// buffer.push(Record::new("a", "k", 1u64), 1, Some("a"));
/// assert!(!buffer.is_full());
/// buffer.push(Record::new("b", "k", 2u64), 1, Some("b"));
/// assert!(buffer.is_full());
/// # Ok::<(), kinesis_connectors_core::Error>(())
/// ```
#[derive(Debug)]
pub struct RecordBuffer<T> {
    limits: BufferLimits,
    items: Vec<T>,
    sources: Vec<ItemSource>,
    first: Option<Position>,
    /// The last record's position when the filter dropped it; a kept last
    /// record's is its source's.
    last_filtered: Option<Position>,
    record_count: usize,
    byte_size: usize,
    first_arrival: Option<SystemTime>,
    opened_at: Option<Instant>,
}

impl<T> RecordBuffer<T> {
    /// An empty buffer with these limits.
    pub fn new(limits: BufferLimits) -> Result<Self> {
        limits.validate()?;
        Ok(Self {
            limits,
            items: Vec::new(),
            sources: Vec::new(),
            first: None,
            last_filtered: None,
            record_count: 0,
            byte_size: 0,
            first_arrival: None,
            opened_at: None,
        })
    }

    /// The limits this buffer flushes on.
    pub fn limits(&self) -> BufferLimits {
        self.limits
    }
}

impl<T: Send + Sync> Buffer<T> for RecordBuffer<T> {
    fn push(&mut self, record: Record, size: usize, item: Option<T>) {
        if self.first.is_none() {
            self.first = Some(record.position());
            self.first_arrival = record.approximate_arrival;
            self.opened_at = Some(Instant::now());
            // A batch grows to its record limit, usually: room for that up
            // front (at most about 1 MiB of items) instead of regrowing
            // from empty.
            let room = self
                .limits
                .max_records
                .min(RESERVED_BYTES / std::mem::size_of::<T>().max(1));
            self.items.reserve(room);
            self.sources.reserve(room);
        }
        match item {
            Some(item) => {
                self.byte_size += size;
                self.items.push(item);
                let mut source = ItemSource::from(record);
                source.size = size;
                self.sources.push(source);
                self.last_filtered = None;
            }
            None => {
                self.last_filtered = Some(Position {
                    sequence: record.sequence_number,
                    sub_sequence: record.sub_sequence_number,
                })
            }
        }
        self.record_count += 1;
    }

    fn is_full(&self) -> bool {
        self.items.len() >= self.limits.max_records || self.byte_size >= self.limits.max_bytes
    }

    fn deadline(&self) -> Option<Instant> {
        self.opened_at.map(|at| at + self.limits.max_age)
    }

    fn is_empty(&self) -> bool {
        self.record_count == 0
    }

    fn take(&mut self, context: &ShardContext) -> Option<Batch<T>> {
        let first = self.first.take()?;
        let last = match self.last_filtered.take() {
            Some(last) => last,
            None => self
                .sources
                .last()
                .map_or_else(|| first.clone(), |source| source.position.clone()),
        };
        let mut batch = Batch::new(context.clone(), Vec::new(), first, last);
        batch.items = std::mem::take(&mut self.items);
        batch.sources = std::mem::take(&mut self.sources);
        batch.record_count = std::mem::take(&mut self.record_count);
        batch.byte_size = std::mem::take(&mut self.byte_size);
        batch.first_arrival = self.first_arrival.take();
        self.opened_at = None;
        Some(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> ShardContext {
        ShardContext::new("a", "s", "shard")
    }

    #[test]
    fn flushes_on_bytes() {
        let limits = BufferLimits {
            max_bytes: 10,
            ..BufferLimits::default()
        };
        let mut buffer = RecordBuffer::new(limits).unwrap();
        buffer.push(Record::new("12345", "k", 1u64), 5, Some(1));
        assert!(!buffer.is_full());
        buffer.push(Record::new("67890", "k", 2u64), 5, Some(2));
        assert!(buffer.is_full());
    }

    #[test]
    fn filtered_records_are_covered_but_not_counted() {
        let mut buffer = RecordBuffer::new(BufferLimits::default()).unwrap();
        buffer.push(Record::new("a", "k", 1u64), 1, None);
        buffer.push(Record::new("b", "k", 2u64), 1, Some("b"));
        buffer.push(Record::new("c", "k", 3u64), 1, None);
        let batch = buffer.take(&ctx()).unwrap();
        assert_eq!(batch.items, vec!["b"]);
        assert_eq!(batch.record_count, 3);
        assert_eq!(batch.byte_size, 1);
        assert_eq!(batch.first, Position::new(1u64.into()));
        assert_eq!(batch.last, Position::new(3u64.into()));
        assert_eq!(batch.sources[0].position, Position::new(2u64.into()));
        assert!(buffer.is_empty());
        assert!(buffer.take(&ctx()).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn age_deadline_starts_with_the_first_record() {
        let limits = BufferLimits {
            max_age: Duration::from_secs(5),
            ..BufferLimits::default()
        };
        let mut buffer = RecordBuffer::<u8>::new(limits).unwrap();
        assert!(buffer.deadline().is_none());
        let before = Instant::now();
        buffer.push(Record::new("a", "k", 1u64), 1, None);
        let deadline = buffer.deadline().unwrap();
        assert!(deadline >= before + Duration::from_secs(5));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(deadline <= Instant::now());
        assert!(
            !buffer.is_full(),
            "age is the deadline's job, not is_full's"
        );
    }

    #[test]
    fn zero_limits_are_rejected() {
        let limits = BufferLimits {
            max_records: 0,
            ..BufferLimits::default()
        };
        assert!(matches!(
            RecordBuffer::<u8>::new(limits),
            Err(Error::Config(_))
        ));
    }
}
