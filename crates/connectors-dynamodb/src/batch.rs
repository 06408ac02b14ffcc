//! Batch mode: duplicate keys collapsed, `BatchWriteItem` chunks written
//! concurrently, unprocessed items and retryable failures sent again.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
use kinesis_connectors_core::RejectedItem;
use tracing::debug;

use crate::emitter::{DynamoDbEmitter, Prepared, add};
use crate::error::{DynamoDbError, Result};
use crate::executor::{first_to_report, run_bounded};
use crate::item::{CHUNK_PAYLOAD_BYTES, KeyValue, MAX_BATCH_ITEMS, chunk_ranges, wire_size};

impl<T> DynamoDbEmitter<T> {
    /// Batch mode: collapse duplicate keys, chunk, write chunks concurrently.
    /// Returns the items DynamoDB refused alone (see
    /// [`isolate`](Self::isolate)).
    pub(crate) async fn write_batches(&self, prepared: Vec<Prepared>) -> Result<Vec<RejectedItem>> {
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
        let (written, mut failures, unsent) = run_bounded(self.max_in_flight, chunks, |chunk| {
            self.write_chunk_isolating(chunk)
        })
        .await;
        // Decided only now, when every chunk has answered: a lone item the
        // table refuses is the item's fault once the table took a write
        // (from this batch or an earlier one); else the refusal stands.
        let accepts = self.table_accepts_writes();
        let mut refused = Vec::new();
        for chunk in written {
            refused.extend(chunk.rejected);
            match chunk.lone_refusal {
                Some((item, _)) if accepts => refused.push(item),
                Some((_, failure)) => failures.push(failure),
                None => {}
            }
        }
        let not_written = failures.iter().map(|f| f.unconfirmed).sum::<usize>()
            + unsent.map(|chunk| chunk.len()).sum::<usize>();
        let Some(failure) = first_to_report(failures, ChunkFailure::is_retryable) else {
            return Ok(refused);
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

    /// Writes one chunk, sending unprocessed items again until none is left
    /// or the retry policy runs out.
    pub(crate) async fn write_chunk(
        &self,
        chunk: Vec<WriteRequest>,
    ) -> std::result::Result<(), ChunkFailure> {
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
                    let written = pending.len().saturating_sub(left.len());
                    if written > 0 {
                        self.note_accepted_write();
                    }
                    add(&self.counters.items_written, written);
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
                    self.retry_or_fail("BatchWriteItem", attempt, error)
                        .map_err(|error| ChunkFailure {
                            unconfirmed: pending.len(),
                            cause: ChunkError::Request(error),
                        })?;
                }
            }
            add(&self.counters.requests_retried, 1);
            tokio::time::sleep(delays.next_delay()).await;
        }
    }
}

/// A chunk whose every item was written or refused.
pub(crate) struct WrittenChunk {
    /// Items refused as invalid when sent alone.
    pub(crate) rejected: Vec<RejectedItem>,
    /// A chunk of one item refused as invalid: rejected if the table is known
    /// to accept writes once the whole batch has answered, else the failure.
    pub(crate) lone_refusal: Option<(RejectedItem, ChunkFailure)>,
}

/// A chunk of a batch that was not completely written.
pub(crate) struct ChunkFailure {
    /// Items of the chunk not confirmed written.
    pub(crate) unconfirmed: usize,
    /// What ended the chunk.
    pub(crate) cause: ChunkError,
}

/// What ended a chunk.
pub(crate) enum ChunkError {
    /// DynamoDB still left `left` items unprocessed after `attempts` sends.
    Unprocessed { left: usize, attempts: u32 },
    /// A request failed.
    Request(DynamoDbError),
}

impl ChunkFailure {
    /// Whether emitting the batch again may write the chunk.
    fn is_retryable(&self) -> bool {
        match &self.cause {
            ChunkError::Unprocessed { .. } => true,
            ChunkError::Request(error) => error.is_retryable(),
        }
    }

    /// Whether DynamoDB refused the chunk as invalid (`ValidationException`).
    pub(crate) fn is_validation(&self) -> bool {
        matches!(&self.cause, ChunkError::Request(error) if error.is_validation())
    }
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
