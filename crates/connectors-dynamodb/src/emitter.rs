//! `DynamoDbEmitter`: batches of items into a DynamoDB table. The write
//! paths live beside it: `batch` (`BatchWriteItem` chunks), `isolate` (items
//! of a refused chunk sent alone), `conditional` (`PutItem` with a
//! condition), `executor` (bounded concurrency); the builder in `builder`.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use kinesis_connectors_core::{Batch, BoxError, EmitOutcome, Emitter, RejectedItem, RetryPolicy};
use serde::Serialize;
use tracing::{debug, warn};

use crate::builder::DynamoDbEmitterBuilder;
use crate::conditional::ConditionalPut;
use crate::error::{DynamoDbError, Result, classify};
use crate::item::{Item, KeySchema, KeyValue, MAX_ITEM_BYTES, item_size};

/// Turns one of the user's items into a DynamoDB item; an error rejects
/// that item only (see [`DynamoDbEmitterBuilder::item_mapper`]).
pub type ItemMapper<T> = dyn Fn(&T) -> std::result::Result<Item, BoxError> + Send + Sync;

/// The default number of requests in flight per batch.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 4;

/// The default retry policy of unprocessed items, throttled and transient
/// request failures: 50 ms doubling up to 5 s (plus up to 100 % jitter),
/// 10 attempts per request.
pub const DEFAULT_RETRY: RetryPolicy = RetryPolicy::new()
    .with_initial_delay(Duration::from_millis(50))
    .with_max_delay(Duration::from_secs(5))
    .with_max_attempts(10);

/// Counters of what an emitter did since it was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DynamoDbEmitterStats {
    /// Items DynamoDB confirmed written (each collapsed duplicate counts
    /// once, as the item that was written). Items of a failed batch that
    /// were written count now, and again when the batch is emitted again.
    pub items_written: u64,
    /// Items replaced by a later item with the same primary key in the same
    /// batch (batch mode).
    pub duplicates_collapsed: u64,
    /// Items rejected one by one: not convertible, too large, bad key, or
    /// refused by DynamoDB (`ValidationException`) when sent alone.
    pub items_rejected: u64,
    /// Conditional puts skipped because the condition failed (the stored
    /// item was newer).
    pub stale_skipped: u64,
    /// Requests sent again: after `UnprocessedItems`, throttling or a
    /// transient failure.
    pub requests_retried: u64,
}

/// What [`DynamoDbEmitterStats`] reports, counted by every write path.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) items_written: AtomicU64,
    pub(crate) duplicates_collapsed: AtomicU64,
    pub(crate) items_rejected: AtomicU64,
    pub(crate) stale_skipped: AtomicU64,
    pub(crate) requests_retried: AtomicU64,
}

/// Adds `n` to a counter.
pub(crate) fn add(counter: &AtomicU64, n: usize) {
    counter.fetch_add(n as u64, Ordering::Relaxed);
}

/// Writes batches of items into one DynamoDB table.
///
/// - Items are converted with `serde_dynamo` (or the
///   [`item_mapper`](DynamoDbEmitterBuilder::item_mapper) you give).
/// - Within a batch, items with the same primary key collapse to the last
///   one (DynamoDB refuses a `BatchWriteItem` with duplicate keys, and the
///   last one is what writing them in order would leave).
/// - The rest goes out with `BatchWriteItem` in chunks of at most 25 items
///   and 16 MiB ([`MAX_REQUEST_BYTES`](crate::MAX_REQUEST_BYTES)), up to
///   [`max_in_flight`](DynamoDbEmitterBuilder::max_in_flight) chunks at a
///   time.
/// - `UnprocessedItems` are sent again with capped exponential backoff and
///   jitter; so are throttled (`ProvisionedThroughputExceededException`,
///   `ThrottlingException`, `RequestLimitExceeded`) and transient failures
///   (timeouts, connection errors, 5xx). When the
///   [`retry`](DynamoDbEmitterBuilder::retry) policy of a chunk runs out, no
///   further chunk starts, the chunks in flight finish, and the batch fails
///   with a retryable error; for unprocessed items,
///   [`DynamoDbError::UnprocessedItems`] names how many items of the batch
///   are not confirmed written. The consumer then emits the whole batch
///   again. Other failures (a missing table, denied access…) fail the batch
///   for good.
/// - An item that cannot be converted, is over 400 KB, or has a missing or
///   invalid key attribute is returned in
///   [`EmitOutcome::rejected`](kinesis_connectors_core::EmitOutcome) for the
///   pipeline's [`BadRecordPolicy`](kinesis_connectors_core::BadRecordPolicy);
///   the rest of the batch is written.
/// - DynamoDB may still refuse a chunk with `ValidationException` because of
///   one item these checks cannot see (an empty set, a number of more than
///   38 digits, nesting deeper than 32 levels…). The emitter then sends each
///   item of that chunk alone (one after the other, in the chunk's
///   `max_in_flight` slot, retried like a chunk): the ones DynamoDB refuses
///   alone are rejected the same way, with its message as the reason, and
///   the others are written. If it refuses every item of the chunk, the
///   fault is the table's (a key schema other than `key_attributes`, say),
///   so nothing is rejected and the batch fails for good, as it does when a
///   chunk of one item is refused: one item alone cannot be told apart from
///   a table-level problem.
/// - Optionally, [`conditional_put`](DynamoDbEmitterBuilder::conditional_put)
///   writes each item with `PutItem` and a condition (only newer versions
///   win). A put refused with `ValidationException` rejects its item, unless
///   every put of the batch is refused: then the batch fails for good.
///
/// Every write is a full put of the item under its key, so emitting a batch
/// again (a retry, a replay after a restart) leaves the table as it was:
/// no extra items.
///
/// ```no_run
/// # async fn doc(client: aws_sdk_dynamodb::Client) -> Result<(), kinesis_connectors_dynamodb::DynamoDbError> {
/// use kinesis_connectors_dynamodb::DynamoDbEmitter;
///
/// #[derive(serde::Serialize)]
/// struct Click { user: String, at_ms: u64, page: String }
///
/// let emitter = DynamoDbEmitter::<Click>::builder(client, "clicks")
///     .key_attributes(["user", "at_ms"])
///     .max_in_flight(4)
///     .build()?;
/// # Ok(()) }
/// ```
pub struct DynamoDbEmitter<T> {
    pub(crate) client: Client,
    pub(crate) table: String,
    pub(crate) keys: KeySchema,
    pub(crate) max_in_flight: usize,
    pub(crate) retry: RetryPolicy,
    pub(crate) mapper: Box<ItemMapper<T>>,
    pub(crate) conditional: Option<ConditionalPut>,
    pub(crate) counters: Counters,
    /// Whether DynamoDB has accepted a write to the table from this emitter:
    /// then an item it refuses as invalid is the item's fault, even alone,
    /// not the table's or the request's.
    pub(crate) table_accepted_writes: AtomicBool,
}

impl<T> DynamoDbEmitter<T> {
    /// Records that DynamoDB accepted a write to the table.
    pub(crate) fn note_accepted_write(&self) {
        self.table_accepted_writes.store(true, Ordering::Relaxed);
    }

    /// Whether DynamoDB has accepted a write to the table (see
    /// `table_accepted_writes`).
    pub(crate) fn table_accepts_writes(&self) -> bool {
        self.table_accepted_writes.load(Ordering::Relaxed)
    }
}

impl<T> fmt::Debug for DynamoDbEmitter<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DynamoDbEmitter")
            .field("table", &self.table)
            .field("key_attributes", &self.keys.attributes)
            .field("max_in_flight", &self.max_in_flight)
            .field("retry", &self.retry)
            .field("conditional", &self.conditional)
            .finish_non_exhaustive()
    }
}

impl<T: Serialize> DynamoDbEmitter<T> {
    /// Starts an emitter writing to `table` through `client`, converting
    /// items with `serde_dynamo` (structs become items, fields attributes).
    ///
    /// [`key_attributes`](DynamoDbEmitterBuilder::key_attributes) must be set
    /// before [`build`](DynamoDbEmitterBuilder::build).
    pub fn builder(client: Client, table: impl Into<String>) -> DynamoDbEmitterBuilder<T> {
        DynamoDbEmitterBuilder::new(
            client,
            table.into(),
            Box::new(|item: &T| {
                serde_dynamo::aws_sdk_dynamodb_1::to_item(item).map_err(BoxError::from)
            }),
        )
    }
}

impl<T> DynamoDbEmitter<T> {
    /// Starts an emitter converting items with `mapper` instead of
    /// `serde_dynamo`, for item types that do not implement `Serialize`.
    /// An error from `mapper` rejects that item only.
    pub fn builder_with_mapper(
        client: Client,
        table: impl Into<String>,
        mapper: impl Fn(&T) -> std::result::Result<Item, BoxError> + Send + Sync + 'static,
    ) -> DynamoDbEmitterBuilder<T> {
        DynamoDbEmitterBuilder::new(client, table.into(), Box::new(mapper))
    }

    /// The table written to.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// What the emitter did since it was built.
    pub fn stats(&self) -> DynamoDbEmitterStats {
        let c = &self.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        DynamoDbEmitterStats {
            items_written: load(&c.items_written),
            duplicates_collapsed: load(&c.duplicates_collapsed),
            items_rejected: load(&c.items_rejected),
            stale_skipped: load(&c.stale_skipped),
            requests_retried: load(&c.requests_retried),
        }
    }

    /// Converts and checks every item; the ones DynamoDB would refuse are
    /// rejected here, one by one, so they cannot fail a whole request.
    fn prepare(&self, items: &[T]) -> (Vec<Prepared>, Vec<RejectedItem>) {
        let mut prepared = Vec::with_capacity(items.len());
        let mut rejected = Vec::new();
        for (index, item) in items.iter().enumerate() {
            match self.prepare_one(item) {
                Ok((item, key)) => prepared.push(Prepared { index, item, key }),
                Err(error) => {
                    debug!(table = %self.table, index, %error, "item rejected");
                    rejected.push(RejectedItem {
                        index,
                        reason: error.to_string(),
                    });
                }
            }
        }
        add(&self.counters.items_rejected, rejected.len());
        (prepared, rejected)
    }

    fn prepare_one(&self, item: &T) -> Result<(Item, KeyValue)> {
        let item = (self.mapper)(item).map_err(|source| DynamoDbError::Conversion { source })?;
        let size = item_size(&item);
        if size > MAX_ITEM_BYTES {
            return Err(DynamoDbError::ItemTooLarge { size });
        }
        let key = self.keys.key_of(&item)?;
        if let Some(conditional) = &self.conditional {
            conditional.values_for(&item)?;
        }
        Ok((item, key))
    }

    /// After `attempt` sends of `operation` failed with `error`: the error
    /// to give up with when it is not retryable or the attempts are spent;
    /// otherwise logs the retry and returns `Ok`.
    pub(crate) fn retry_or_fail<E>(
        &self,
        operation: &'static str,
        attempt: u32,
        error: SdkError<E, HttpResponse>,
    ) -> Result<()>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let kind = classify(&error);
        if !kind.is_retryable() || attempt >= self.retry.max_attempts {
            return Err(DynamoDbError::request(
                operation,
                &self.table,
                attempt,
                kind,
                error,
            ));
        }
        warn!(
            table = %self.table,
            attempt,
            %kind,
            error = %DisplayErrorContext(&error),
            "{operation} failed; retrying"
        );
        Ok(())
    }
}

#[async_trait]
impl<T: Send + Sync> Emitter<T> for DynamoDbEmitter<T> {
    async fn emit(&self, batch: &Batch<T>) -> kinesis_connectors_core::Result<EmitOutcome> {
        if batch.is_empty() {
            return Ok(EmitOutcome::delivered());
        }
        let (prepared, mut rejected) = self.prepare(&batch.items);
        let written = match &self.conditional {
            None => self.write_batches(prepared).await,
            Some(condition) => self.write_conditional(condition, prepared).await,
        };
        match written {
            Ok(refused) => {
                add(&self.counters.items_rejected, refused.len());
                rejected.extend(refused);
                Ok(EmitOutcome::with_rejected(rejected))
            }
            Err(error) => {
                debug!(
                    table = %self.table,
                    shard_id = %batch.context.shard_id,
                    first = %batch.first,
                    last = %batch.last,
                    %error,
                    "batch not written"
                );
                Err(error.into())
            }
        }
    }
}

/// An item ready to write, with its index in the batch and its primary key.
pub(crate) struct Prepared {
    pub(crate) index: usize,
    pub(crate) item: Item,
    pub(crate) key: KeyValue,
}
