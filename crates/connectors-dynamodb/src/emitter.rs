//! `DynamoDbEmitter`: batches of items into a DynamoDB table.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use kinesis_connectors_core::{Batch, BoxError, EmitOutcome, Emitter, RejectedItem, RetryPolicy};
use serde::Serialize;
use tracing::{debug, warn};

use crate::conditional::ConditionalPut;
use crate::error::{DynamoDbError, RequestErrorKind, Result, classify};
use crate::item::{
    CHUNK_PAYLOAD_BYTES, Item, KeySchema, KeyValue, MAX_BATCH_ITEMS, MAX_ITEM_BYTES, chunk_ranges,
    item_size, wire_size,
};

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

#[derive(Debug, Default)]
struct Counters {
    items_written: AtomicU64,
    duplicates_collapsed: AtomicU64,
    items_rejected: AtomicU64,
    stale_skipped: AtomicU64,
    requests_retried: AtomicU64,
}

fn add(counter: &AtomicU64, n: usize) {
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
    client: Client,
    table: String,
    keys: KeySchema,
    max_in_flight: usize,
    retry: RetryPolicy,
    mapper: Box<ItemMapper<T>>,
    conditional: Option<ConditionalPut>,
    counters: Counters,
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

    /// Batch mode: collapse duplicate keys, chunk, write chunks concurrently.
    /// Returns the items DynamoDB refused alone (see
    /// [`isolate`](Self::isolate)).
    async fn write_batches(&self, prepared: Vec<Prepared>) -> Result<Vec<RejectedItem>> {
        let (items, collapsed) = collapse_duplicates(prepared);
        add(&self.counters.duplicates_collapsed, collapsed);
        let batch_items = items.len();
        let ranges = chunk_ranges(
            items.iter().map(|p| wire_size(&p.item)),
            MAX_BATCH_ITEMS,
            CHUNK_PAYLOAD_BYTES,
        );
        debug!(
            table = %self.table,
            items = batch_items,
            collapsed,
            chunks = ranges.len(),
            "writing with BatchWriteItem"
        );
        let mut items = items.into_iter();
        let mut chunks = Vec::with_capacity(ranges.len());
        for range in ranges {
            let chunk = items
                .by_ref()
                .take(range.len())
                .map(|Prepared { index, item, .. }| {
                    PutRequest::builder()
                        .set_item(Some(item))
                        .build()
                        .map(|put| (index, WriteRequest::builder().put_request(put).build()))
                        .map_err(|e| DynamoDbError::Conversion {
                            source: Box::new(e),
                        })
                })
                .collect::<Result<Vec<_>>>()?;
            chunks.push(chunk);
        }
        let (refused, failures, unsent) = run_bounded(self.max_in_flight, chunks, |chunk| {
            self.write_chunk_isolating(chunk)
        })
        .await;
        let not_written = failures.iter().map(|f| f.unconfirmed).sum::<usize>()
            + unsent.map(|chunk| chunk.len()).sum::<usize>();
        let Some(failure) = first_to_report(failures, ChunkFailure::is_retryable) else {
            return Ok(refused.into_iter().flatten().collect());
        };
        debug!(
            table = %self.table,
            not_written,
            batch_items,
            "items not confirmed written"
        );
        Err(match failure.cause {
            ChunkError::Unprocessed { left, attempts } => DynamoDbError::UnprocessedItems {
                table: self.table.clone(),
                not_written,
                batch_items,
                left,
                attempts,
            },
            ChunkError::Request(error) => error,
        })
    }

    /// Writes one chunk of `(batch index, request)`; when DynamoDB refuses
    /// a chunk of several items as invalid, finds the items at fault (see
    /// [`isolate`](Self::isolate)) and returns them.
    async fn write_chunk_isolating(
        &self,
        chunk: Vec<(usize, WriteRequest)>,
    ) -> std::result::Result<Vec<RejectedItem>, ChunkFailure> {
        let requests = chunk.iter().map(|(_, request)| request.clone()).collect();
        match self.write_chunk(requests).await {
            Ok(()) => Ok(Vec::new()),
            Err(failure) if chunk.len() > 1 && failure.is_validation() => {
                self.isolate(chunk, failure).await
            }
            Err(failure) => Err(failure),
        }
    }

    /// Sends each item of a chunk DynamoDB refused as invalid on its own, one
    /// after the other in the chunk's slot (each send retried like a chunk):
    /// the items it refuses alone become rejected items, the others are
    /// written. If it refuses every item, the table or the request is at
    /// fault, not the items, and the chunk's `failure` stands.
    ///
    /// DynamoDB validates a request before writing any of it, so the chunk
    /// was normally refused at its first send; if it was refused only when
    /// sending unprocessed items again, the items written before are put
    /// again, which leaves them as they were.
    async fn isolate(
        &self,
        chunk: Vec<(usize, WriteRequest)>,
        failure: ChunkFailure,
    ) -> std::result::Result<Vec<RejectedItem>, ChunkFailure> {
        let items = chunk.len();
        debug!(table = %self.table, items, "chunk refused as invalid; sending its items alone");
        let mut rejected = Vec::new();
        for (sent, (index, request)) in chunk.into_iter().enumerate() {
            match self.write_chunk(vec![request]).await {
                Ok(()) => {}
                Err(ChunkFailure {
                    cause: ChunkError::Request(error),
                    ..
                }) if error.is_validation() => {
                    debug!(table = %self.table, index, %error, "item refused by DynamoDB");
                    rejected.push(refused_item(&self.table, index, &error));
                }
                Err(failure) => {
                    let written = sent - rejected.len();
                    return Err(ChunkFailure {
                        unconfirmed: items - written,
                        ..failure
                    });
                }
            }
        }
        if rejected.len() == items {
            warn!(
                table = %self.table,
                items,
                "DynamoDB refuses every item of the chunk, even alone; failing the batch"
            );
            return Err(failure);
        }
        Ok(rejected)
    }

    /// Writes one chunk, sending unprocessed items again until none is left
    /// or the retry policy runs out.
    async fn write_chunk(&self, chunk: Vec<WriteRequest>) -> std::result::Result<(), ChunkFailure> {
        let mut pending = chunk;
        let mut delays = self.retry.delays();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let result = self
                .client
                .batch_write_item()
                .request_items(self.table.clone(), pending.clone())
                .send()
                .await;
            match result {
                Ok(output) => {
                    let left = output
                        .unprocessed_items
                        .and_then(|mut tables| tables.remove(&self.table))
                        .unwrap_or_default();
                    add(
                        &self.counters.items_written,
                        pending.len().saturating_sub(left.len()),
                    );
                    if left.is_empty() {
                        return Ok(());
                    }
                    if attempt >= self.retry.max_attempts {
                        return Err(ChunkFailure {
                            unconfirmed: left.len(),
                            cause: ChunkError::Unprocessed {
                                left: left.len(),
                                attempts: attempt,
                            },
                        });
                    }
                    debug!(
                        table = %self.table,
                        attempt,
                        left = left.len(),
                        of = pending.len(),
                        "unprocessed items; sending them again"
                    );
                    pending = left;
                }
                Err(error) => {
                    let kind = classify(&error);
                    if !kind.is_retryable() || attempt >= self.retry.max_attempts {
                        return Err(ChunkFailure {
                            unconfirmed: pending.len(),
                            cause: ChunkError::Request(DynamoDbError::request(
                                "BatchWriteItem",
                                &self.table,
                                attempt,
                                kind,
                                error,
                            )),
                        });
                    }
                    log_retry("BatchWriteItem", &self.table, attempt, kind, &error);
                }
            }
            add(&self.counters.requests_retried, 1);
            tokio::time::sleep(delays.next_delay()).await;
        }
    }

    /// Conditional mode: one `PutItem` per item; items sharing a key go one
    /// after the other in batch order, different keys concurrently. After a
    /// failure no put starts; the ones in flight finish. An item refused as
    /// invalid (`ValidationException`) is returned as rejected, unless every
    /// item of the batch was: then the table or the request is at fault, and
    /// the batch fails with one of those refusals.
    async fn write_conditional(
        &self,
        condition: &ConditionalPut,
        prepared: Vec<Prepared>,
    ) -> Result<Vec<RejectedItem>> {
        let items = prepared.len();
        let mut groups: Vec<Vec<(usize, Item)>> = Vec::new();
        let mut group_of: HashMap<KeyValue, usize> = HashMap::new();
        for Prepared { index, item, key } in prepared {
            match group_of.get(&key) {
                Some(&group) => groups[group].push((index, item)),
                None => {
                    group_of.insert(key, groups.len());
                    groups.push(vec![(index, item)]);
                }
            }
        }
        debug!(table = %self.table, keys = groups.len(), "writing with conditional PutItem");
        let failed = AtomicBool::new(false);
        let failed = &failed;
        let (refused, failures, _unsent) =
            run_bounded(self.max_in_flight, groups, |group| async move {
                let mut refused = Vec::new();
                for (index, item) in group {
                    if failed.load(Ordering::Relaxed) {
                        break;
                    }
                    match self.put_conditional(condition, item).await {
                        Ok(()) => {}
                        Err(error) if error.is_validation() => {
                            debug!(table = %self.table, index, %error, "item refused by DynamoDB");
                            refused.push((index, error));
                        }
                        Err(error) => {
                            failed.store(true, Ordering::Relaxed);
                            return Err(error);
                        }
                    }
                }
                Ok(refused)
            })
            .await;
        if let Some(error) = first_to_report(failures, DynamoDbError::is_retryable) {
            return Err(error);
        }
        let mut refused: Vec<(usize, DynamoDbError)> = refused.into_iter().flatten().collect();
        if refused.len() == items
            && let Some((_, error)) = refused.pop()
        {
            return Err(error);
        }
        Ok(refused
            .iter()
            .map(|(index, error)| refused_item(&self.table, *index, error))
            .collect())
    }

    async fn put_conditional(&self, condition: &ConditionalPut, item: Item) -> Result<()> {
        let values = condition.values_for(&item)?;
        let values = (!values.is_empty()).then_some(values);
        let mut delays = self.retry.delays();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let result = self
                .client
                .put_item()
                .table_name(self.table.clone())
                .set_item(Some(item.clone()))
                .condition_expression(condition.expression())
                .set_expression_attribute_names(condition.names())
                .set_expression_attribute_values(values.clone())
                .send()
                .await;
            match result {
                Ok(_) => {
                    add(&self.counters.items_written, 1);
                    return Ok(());
                }
                Err(error)
                    if error
                        .as_service_error()
                        .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
                {
                    // The stored item wins (e.g. it has a newer version).
                    add(&self.counters.stale_skipped, 1);
                    return Ok(());
                }
                Err(error) => {
                    let kind = classify(&error);
                    if !kind.is_retryable() || attempt >= self.retry.max_attempts {
                        return Err(DynamoDbError::request(
                            "PutItem",
                            &self.table,
                            attempt,
                            kind,
                            error,
                        ));
                    }
                    log_retry("PutItem", &self.table, attempt, kind, &error);
                }
            }
            add(&self.counters.requests_retried, 1);
            tokio::time::sleep(delays.next_delay()).await;
        }
    }
}

fn log_retry<E: std::error::Error + 'static, R: fmt::Debug>(
    operation: &str,
    table: &str,
    attempt: u32,
    kind: RequestErrorKind,
    error: &aws_sdk_dynamodb::error::SdkError<E, R>,
) {
    warn!(
        table,
        attempt,
        %kind,
        error = %aws_sdk_dynamodb::error::DisplayErrorContext(error),
        "{operation} failed; retrying"
    );
}

/// A chunk of a batch that was not completely written.
struct ChunkFailure {
    /// Items of the chunk not confirmed written.
    unconfirmed: usize,
    /// What ended the chunk.
    cause: ChunkError,
}

/// What ended a chunk.
enum ChunkError {
    /// DynamoDB still left `left` items unprocessed after `attempts` sends.
    Unprocessed { left: usize, attempts: u32 },
    /// A request failed.
    Request(DynamoDbError),
}

impl ChunkFailure {
    fn is_retryable(&self) -> bool {
        match &self.cause {
            ChunkError::Unprocessed { .. } => true,
            ChunkError::Request(error) => error.is_retryable(),
        }
    }

    fn is_validation(&self) -> bool {
        matches!(&self.cause, ChunkError::Request(error) if error.is_validation())
    }
}

/// The item at `index` of the batch, which DynamoDB refused as invalid on
/// its own: the reason names the table and gives DynamoDB's message.
fn refused_item(table: &str, index: usize, error: &DynamoDbError) -> RejectedItem {
    let reason = match error.service_message() {
        Some(message) => {
            format!("table `{table}` refused the item (ValidationException): {message}")
        }
        None => error.to_string(),
    };
    RejectedItem { index, reason }
}

/// Runs `start(input)` for each input, at most `max_in_flight` at a time.
/// After the first failure no more start and the ones in flight finish, so
/// nothing is left half-done. Returns every success and every failure, in
/// the order they came, and the inputs never started.
async fn run_bounded<I, F, Fut, O, E>(
    max_in_flight: usize,
    inputs: I,
    mut start: F,
) -> (Vec<O>, Vec<E>, I::IntoIter)
where
    I: IntoIterator,
    F: FnMut(I::Item) -> Fut,
    Fut: Future<Output = std::result::Result<O, E>>,
{
    let mut inputs = inputs.into_iter();
    let mut in_flight = FuturesUnordered::new();
    let mut successes = Vec::new();
    let mut failures = Vec::new();
    loop {
        while failures.is_empty() && in_flight.len() < max_in_flight {
            match inputs.next() {
                Some(input) => in_flight.push(start(input)),
                None => break,
            }
        }
        match in_flight.next().await {
            Some(Ok(success)) => successes.push(success),
            Some(Err(failure)) => failures.push(failure),
            None => return (successes, failures, inputs),
        }
    }
}

/// The failure a batch reports: the first one, unless it is retryable and
/// a later one is not (retrying the batch would then be in vain).
fn first_to_report<E>(failures: Vec<E>, is_retryable: impl Fn(&E) -> bool) -> Option<E> {
    let mut failures = failures.into_iter();
    let first = failures.next()?;
    if !is_retryable(&first) {
        return Some(first);
    }
    Some(
        failures
            .find(|failure| !is_retryable(failure))
            .unwrap_or(first),
    )
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
struct Prepared {
    index: usize,
    item: Item,
    key: KeyValue,
}

/// Keeps, for each primary key, only the last item, in the order of those
/// last items; returns them and how many were dropped.
fn collapse_duplicates(prepared: Vec<Prepared>) -> (Vec<Prepared>, usize) {
    let mut last: HashMap<&KeyValue, usize> = HashMap::with_capacity(prepared.len());
    for (i, p) in prepared.iter().enumerate() {
        last.insert(&p.key, i);
    }
    let keep: Vec<bool> = prepared
        .iter()
        .enumerate()
        .map(|(i, p)| last.get(&p.key) == Some(&i))
        .collect();
    let collapsed = prepared.len() - last.len();
    let items = prepared
        .into_iter()
        .zip(keep)
        .filter_map(|(p, keep)| keep.then_some(p))
        .collect();
    (items, collapsed)
}

/// Builds a [`DynamoDbEmitter`]; see [`DynamoDbEmitter::builder`].
pub struct DynamoDbEmitterBuilder<T> {
    client: Client,
    table: String,
    key_attributes: Vec<String>,
    max_in_flight: usize,
    retry: RetryPolicy,
    mapper: Box<ItemMapper<T>>,
    conditional: Option<ConditionalPut>,
}

impl<T> fmt::Debug for DynamoDbEmitterBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DynamoDbEmitterBuilder")
            .field("table", &self.table)
            .field("key_attributes", &self.key_attributes)
            .field("max_in_flight", &self.max_in_flight)
            .field("retry", &self.retry)
            .field("conditional", &self.conditional)
            .finish_non_exhaustive()
    }
}

impl<T> DynamoDbEmitterBuilder<T> {
    fn new(client: Client, table: String, mapper: Box<ItemMapper<T>>) -> Self {
        Self {
            client,
            table,
            key_attributes: Vec::new(),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            retry: DEFAULT_RETRY,
            mapper,
            conditional: None,
        }
    }

    /// The table's key attributes: its partition key, then its sort key if
    /// it has one (required). Used to collapse duplicate keys within a batch
    /// and to reject items whose key DynamoDB would refuse.
    pub fn key_attributes<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.key_attributes = names.into_iter().map(Into::into).collect();
        self
    }

    /// How many requests of one batch may be in flight at once (default 4,
    /// at least 1): `BatchWriteItem` chunks, or `PutItem` calls in
    /// conditional mode. A chunk's resends of unprocessed items, its retries
    /// and the one-item sends that find an item DynamoDB refuses stay within
    /// its slot.
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n;
        self
    }

    /// How each request is retried after `UnprocessedItems`, throttling or a
    /// transient failure ([`DEFAULT_RETRY`] by default). `max_attempts`
    /// counts every send of a request; when it runs out the batch fails with
    /// a retryable error and the consumer's own retry policy takes over.
    /// These retries come on top of the SDK client's retry configuration.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Converts items with `mapper` instead of the default. An error rejects
    /// that item only.
    pub fn item_mapper(
        mut self,
        mapper: impl Fn(&T) -> std::result::Result<Item, BoxError> + Send + Sync + 'static,
    ) -> Self {
        self.mapper = Box::new(mapper);
        self
    }

    /// Writes each item with a conditional `PutItem` instead of
    /// `BatchWriteItem`; see [`ConditionalPut`] for what it costs.
    pub fn conditional_put(mut self, condition: ConditionalPut) -> Self {
        self.conditional = Some(condition);
        self
    }

    /// Checks the configuration and builds the emitter.
    ///
    /// # Errors
    ///
    /// [`DynamoDbError::Config`] naming the problem: a table name DynamoDB
    /// would refuse, key attributes not set (or more than two, empty,
    /// repeated), `max_in_flight` of 0, an invalid retry policy, or a
    /// condition with placeholders that are malformed or unused.
    pub fn build(self) -> Result<DynamoDbEmitter<T>> {
        validate_table_name(&self.table)?;
        let keys = KeySchema::new(self.key_attributes)?;
        if self.max_in_flight == 0 {
            return Err(DynamoDbError::Config(
                "max_in_flight must be at least 1".into(),
            ));
        }
        if let Err(error) = self.retry.validate() {
            return Err(DynamoDbError::Config(match error {
                kinesis_connectors_core::Error::Config(message) => message,
                other => other.to_string(),
            }));
        }
        if let Some(condition) = &self.conditional {
            condition.validate()?;
        }
        Ok(DynamoDbEmitter {
            client: self.client,
            table: self.table,
            keys,
            max_in_flight: self.max_in_flight,
            retry: self.retry,
            mapper: self.mapper,
            conditional: self.conditional,
            counters: Counters::default(),
        })
    }
}

/// A table name (3–255 of `a-z A-Z 0-9 _ - .`) or a table ARN.
fn validate_table_name(table: &str) -> Result<()> {
    if table.starts_with("arn:") {
        if table.len() <= 1024 && table.contains(":table/") {
            return Ok(());
        }
        return Err(DynamoDbError::Config(format!(
            "table ARN {table:?} is not of the form arn:…:table/NAME (at most 1024 characters)"
        )));
    }
    let valid_chars = table
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !(3..=255).contains(&table.len()) || !valid_chars {
        return Err(DynamoDbError::Config(format!(
            "table name {table:?} must be 3 to 255 characters of a-z, A-Z, 0-9, `_`, `-` and `.`"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_checked() {
        assert!(validate_table_name("orders").is_ok());
        assert!(validate_table_name("my.table-1_x").is_ok());
        assert!(validate_table_name("ab").is_err());
        assert!(validate_table_name("has space").is_err());
        assert!(validate_table_name(&"x".repeat(256)).is_err());
        assert!(
            validate_table_name("arn:aws:dynamodb:us-east-1:123456789012:table/orders").is_ok()
        );
        assert!(validate_table_name("arn:aws:s3:::bucket").is_err());
    }

    #[test]
    fn a_permanent_failure_is_reported_before_retryable_ones() {
        let retryable = |e: &(&str, bool)| e.1;
        assert_eq!(first_to_report(Vec::new(), retryable), None);
        assert_eq!(
            first_to_report(vec![("a", true), ("b", true)], retryable),
            Some(("a", true))
        );
        assert_eq!(
            first_to_report(vec![("a", true), ("b", false), ("c", false)], retryable),
            Some(("b", false))
        );
        assert_eq!(
            first_to_report(vec![("a", false), ("b", false)], retryable),
            Some(("a", false))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn run_bounded_starts_nothing_after_a_failure_and_lets_the_rest_finish() {
        // Input n sleeps n ms; 2 fails. With 3 in flight: 1, 2 and 3 start;
        // 1 ends at 1 ms and 4 starts; 2 fails at 2 ms; 3 and 4 still finish
        // (at 3 and 5 ms); 5 never starts.
        let started = std::sync::Mutex::new(Vec::new());
        let finished = std::sync::Mutex::new(Vec::new());
        let (successes, failures, unsent) = run_bounded(3, 1..=5u64, |n| {
            started.lock().unwrap().push(n);
            let finished = &finished;
            async move {
                tokio::time::sleep(Duration::from_millis(n)).await;
                finished.lock().unwrap().push(n);
                if n == 2 { Err(n) } else { Ok(n * 10) }
            }
        })
        .await;
        assert_eq!(successes, [10, 30, 40]);
        assert_eq!(failures, [2]);
        assert_eq!(unsent.collect::<Vec<_>>(), [5]);
        assert_eq!(*started.lock().unwrap(), [1, 2, 3, 4]);
        assert_eq!(*finished.lock().unwrap(), [1, 2, 3, 4]);

        // Without failures everything runs, at most 2 at a time.
        let running = AtomicU64::new(0);
        let peak = AtomicU64::new(0);
        let (_, failures, mut unsent) = run_bounded(2, 0..7u64, |_| async {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(1)).await;
            running.fetch_sub(1, Ordering::SeqCst);
            Ok::<(), ()>(())
        })
        .await;
        assert!(failures.is_empty());
        assert_eq!(unsent.next(), None);
        assert_eq!(peak.load(Ordering::SeqCst), 2);
    }
}
