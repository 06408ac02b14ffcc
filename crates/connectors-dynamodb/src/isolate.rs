//! Finding the items DynamoDB refuses: a chunk refused as invalid is sent
//! again item by item, and the items refused alone are rejected.

use aws_sdk_dynamodb::types::WriteRequest;
use kinesis_connectors_core::RejectedItem;
use tracing::{debug, warn};

use crate::batch::{ChunkError, ChunkFailure, WrittenChunk};
use crate::emitter::DynamoDbEmitter;
use crate::error::DynamoDbError;

impl<T> DynamoDbEmitter<T> {
    /// Writes one chunk of `(batch index, request)`; when DynamoDB refuses
    /// a chunk of several items as invalid, finds the items at fault (see
    /// [`isolate`](Self::isolate)) and returns them. A refused chunk of one
    /// item comes back as a `lone_refusal`, for the batch to decide once all
    /// its chunks answered.
    pub(crate) async fn write_chunk_isolating(
        &self,
        chunk: Vec<(usize, WriteRequest)>,
    ) -> std::result::Result<WrittenChunk, ChunkFailure> {
        let requests = chunk.iter().map(|(_, request)| request.clone()).collect();
        match self.write_chunk(requests).await {
            Ok(()) => Ok(WrittenChunk {
                rejected: Vec::new(),
                lone_refusal: None,
            }),
            Err(failure) if failure.is_validation() => match chunk.as_slice() {
                [(index, _)] => {
                    let item = match &failure.cause {
                        ChunkError::Request(error) => refused_item(&self.table, *index, error),
                        ChunkError::Unprocessed { .. } => return Err(failure),
                    };
                    Ok(WrittenChunk {
                        rejected: Vec::new(),
                        lone_refusal: Some((item, failure)),
                    })
                }
                _ => Ok(WrittenChunk {
                    rejected: self.isolate(chunk, failure).await?,
                    lone_refusal: None,
                }),
            },
            Err(failure) => Err(failure),
        }
    }

    /// Sends each item of a chunk DynamoDB refused as invalid on its own, one
    /// after the other in the chunk's slot (each send retried like a chunk):
    /// the items it refuses alone become rejected items, the others are
    /// written. If it refuses every item and has never accepted a write to
    /// the table, the table or the request is at fault, not the items, and
    /// the chunk's `failure` stands.
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
        if rejected.len() == items && !self.table_accepts_writes() {
            warn!(
                table = %self.table,
                items,
                "DynamoDB refuses every item of the chunk, even alone; failing the batch"
            );
            return Err(failure);
        }
        Ok(rejected)
    }
}

/// The item at `index` of the batch, which DynamoDB refused as invalid on
/// its own: the reason names the table and gives DynamoDB's message.
pub(crate) fn refused_item(table: &str, index: usize, error: &DynamoDbError) -> RejectedItem {
    let reason = match error.service_message() {
        Some(message) => {
            format!("table `{table}` refused the item (ValidationException): {message}")
        }
        None => error.to_string(),
    };
    RejectedItem { index, reason }
}
