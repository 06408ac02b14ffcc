//! `KinesisEmitter`: forwards items to another stream with `PutRecords`.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use kinesis_connectors_core::{
    Batch, EmitOutcome, Emitter, Encoder, ItemSource, RejectedItem, RetryPolicy,
};

use crate::error::{Error, classify};

/// Kinesis' limit on the records of one `PutRecords` request.
pub const MAX_RECORDS_PER_REQUEST: usize = 500;
/// Kinesis' limit on the size of one `PutRecords` request (data plus
/// partition keys of all its records): 5 MiB.
pub const MAX_BYTES_PER_REQUEST: usize = 5 * 1024 * 1024;
/// Kinesis' limit on the size of one record (data plus partition key): 1 MiB.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;
/// Kinesis' limit on the length of a partition key, in characters.
pub const MAX_PARTITION_KEY_CHARS: usize = 256;
/// The largest explicit hash key, 2^128 - 1.
const MAX_HASH_KEY: &str = "340282366920938463463374607431768211455";

/// Computes a partition key from an item and where it came from.
type PartitionKeyFn<I> = dyn Fn(&I, &ItemSource) -> String + Send + Sync;
/// Computes an explicit hash key from an item and where it came from.
type HashKeyFn<I> = dyn Fn(&I, &ItemSource) -> Option<String> + Send + Sync;

/// The default retry policy of refused records: 100 ms doubling to 5 s, with
/// jitter, 8 attempts.
pub const DEFAULT_RETRY: RetryPolicy = RetryPolicy::new()
    .with_initial_delay(Duration::from_millis(100))
    .with_max_delay(Duration::from_secs(5))
    .with_max_attempts(8);

/// Forwards each item, encoded by the transformer, as one record of another
/// stream, with `PutRecords`.
///
/// See the [crate documentation](crate) for limits, partial failures and
/// ordering.
pub struct KinesisEmitter<T: Encoder> {
    client: aws_sdk_kinesis::Client,
    stream: String,
    transformer: T,
    partition_key: Option<Box<PartitionKeyFn<T::Item>>>,
    explicit_hash_key: Option<Box<HashKeyFn<T::Item>>>,
    retry: RetryPolicy,
}

impl<T: Encoder> fmt::Debug for KinesisEmitter<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KinesisEmitter")
            .field("stream", &self.stream)
            .field("custom_partition_key", &self.partition_key.is_some())
            .field(
                "custom_explicit_hash_key",
                &self.explicit_hash_key.is_some(),
            )
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

/// One record ready to send.
#[derive(Debug, Clone)]
struct Entry {
    /// Index of the item in the batch.
    index: usize,
    data: Vec<u8>,
    partition_key: String,
    explicit_hash_key: Option<String>,
    /// What the record counts against the request limit.
    size: usize,
}

impl Entry {
    fn to_request(&self, stream: &str) -> Result<PutRecordsRequestEntry, Error> {
        PutRecordsRequestEntry::builder()
            .data(Blob::new(self.data.clone()))
            .partition_key(&self.partition_key)
            .set_explicit_hash_key(self.explicit_hash_key.clone())
            .build()
            .map_err(|e| Error::Request {
                stream: stream.to_owned(),
                code: None,
                retryable: false,
                message: format!("record {} cannot be sent: {e}", self.index),
            })
    }
}

/// The last failure seen, for the final error.
#[derive(Debug, Default)]
struct LastFailure {
    code: String,
    message: String,
}

impl<T: Encoder> KinesisEmitter<T> {
    /// Starts an emitter writing to `stream` (a stream name, or a stream ARN
    /// starting with `arn:`) through `client`, encoding items with
    /// `transformer`.
    pub fn builder(
        client: aws_sdk_kinesis::Client,
        stream: impl Into<String>,
        transformer: T,
    ) -> KinesisEmitterBuilder<T> {
        KinesisEmitterBuilder {
            client,
            stream: stream.into(),
            transformer,
            partition_key: None,
            explicit_hash_key: None,
            retry: DEFAULT_RETRY,
        }
    }

    /// The target stream.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Encodes the items; those that cannot be sent are rejected one by one.
    fn prepare(&self, batch: &Batch<T::Item>) -> (Vec<Entry>, Vec<RejectedItem>) {
        let mut entries = Vec::with_capacity(batch.len());
        let mut rejected = Vec::new();
        for (index, (item, source)) in batch.items.iter().zip(&batch.sources).enumerate() {
            match self.entry(index, item, source) {
                Ok(entry) => entries.push(entry),
                Err(reason) => rejected.push(RejectedItem { index, reason }),
            }
        }
        // An item without a source (a malformed batch) cannot be routed.
        for index in batch.sources.len()..batch.items.len() {
            rejected.push(RejectedItem {
                index,
                reason: "the item has no source record to take a partition key from".to_owned(),
            });
        }
        (entries, rejected)
    }

    fn entry(&self, index: usize, item: &T::Item, source: &ItemSource) -> Result<Entry, String> {
        let mut data = Vec::new();
        self.transformer
            .from_item(item, &mut data)
            .map_err(|e| format!("could not be encoded: {e}"))?;
        let partition_key = match &self.partition_key {
            Some(f) => f(item, source),
            None => source.partition_key.clone(),
        };
        let chars = partition_key.chars().count();
        if !(1..=MAX_PARTITION_KEY_CHARS).contains(&chars) {
            return Err(format!(
                "partition key of {chars} characters: Kinesis takes 1 to {MAX_PARTITION_KEY_CHARS}"
            ));
        }
        let size = data.len() + partition_key.len();
        if size > MAX_RECORD_BYTES {
            return Err(format!(
                "record of {size} bytes (data {} + partition key {}) exceeds Kinesis' limit of {MAX_RECORD_BYTES} bytes (1 MiB) for stream {}",
                data.len(),
                partition_key.len(),
                self.stream
            ));
        }
        let explicit_hash_key = match &self.explicit_hash_key {
            Some(f) => f(item, source),
            None => source.explicit_hash_key.clone(),
        };
        if let Some(key) = &explicit_hash_key {
            check_hash_key(key)?;
        }
        Ok(Entry {
            index,
            data,
            partition_key,
            explicit_hash_key,
            size,
        })
    }

    /// Sends `entries` in requests of at most 500 records and 5 MiB, in
    /// order. Returns the entries to retry and the last failure; a failure
    /// that retrying cannot fix is returned as an error at once.
    async fn send(&self, entries: Vec<Entry>) -> Result<(Vec<Entry>, LastFailure), Error> {
        let mut failed = Vec::new();
        let mut last = LastFailure::default();
        let mut chunks = chunks(entries).into_iter();
        while let Some(chunk) = chunks.next() {
            let records = chunk
                .iter()
                .map(|entry| entry.to_request(&self.stream))
                .collect::<Result<Vec<_>, _>>()?;
            let request = self.client.put_records().set_records(Some(records));
            let request = if self.stream.starts_with("arn:") {
                request.stream_arn(&self.stream)
            } else {
                request.stream_name(&self.stream)
            };
            match request.send().await {
                Ok(output) => {
                    let results = output.records();
                    for (i, entry) in chunk.into_iter().enumerate() {
                        match results.get(i) {
                            Some(result) if result.error_code().is_none() => {}
                            Some(result) => {
                                last.code = result.error_code().unwrap_or_default().to_owned();
                                last.message =
                                    result.error_message().unwrap_or_default().to_owned();
                                failed.push(entry);
                            }
                            None => {
                                last.code = "MissingResult".to_owned();
                                last.message = format!(
                                    "PutRecords answered {} results for {} records",
                                    results.len(),
                                    i + 1
                                );
                                failed.push(entry);
                            }
                        }
                    }
                }
                Err(error) => {
                    let error = classify(&self.stream, error);
                    let Error::Request {
                        code,
                        retryable: true,
                        message,
                        ..
                    } = error
                    else {
                        return Err(error);
                    };
                    // Throttled as a whole: the rest would be too; try later.
                    last.code = code.unwrap_or_else(|| "RequestFailed".to_owned());
                    last.message = message;
                    failed.extend(chunk);
                    failed.extend(chunks.by_ref().flatten());
                }
            }
        }
        Ok((failed, last))
    }
}

/// Splits `entries` into `PutRecords` requests, keeping their order.
fn chunks(entries: Vec<Entry>) -> Vec<Vec<Entry>> {
    let mut chunks = Vec::new();
    let mut chunk: Vec<Entry> = Vec::new();
    let mut bytes = 0;
    for entry in entries {
        if !chunk.is_empty()
            && (chunk.len() == MAX_RECORDS_PER_REQUEST
                || bytes + entry.size > MAX_BYTES_PER_REQUEST)
        {
            chunks.push(std::mem::take(&mut chunk));
            bytes = 0;
        }
        bytes += entry.size;
        chunk.push(entry);
    }
    if !chunk.is_empty() {
        chunks.push(chunk);
    }
    chunks
}

/// An explicit hash key is a decimal number from 0 to 2^128 - 1.
fn check_hash_key(key: &str) -> Result<(), String> {
    let digits = key.trim_start_matches('0');
    let valid = !key.is_empty()
        && key.bytes().all(|b| b.is_ascii_digit())
        && (digits.len() < MAX_HASH_KEY.len()
            || (digits.len() == MAX_HASH_KEY.len() && digits <= MAX_HASH_KEY));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "explicit hash key {key:?} is not a decimal number from 0 to 2^128 - 1"
        ))
    }
}

#[async_trait]
impl<T: Encoder> Emitter<T::Item> for KinesisEmitter<T> {
    async fn emit(&self, batch: &Batch<T::Item>) -> kinesis_connectors_core::Result<EmitOutcome> {
        let (mut pending, rejected) = self.prepare(batch);
        let total = pending.len();
        let mut delays = self.retry.delays();
        let mut attempt = 0;
        while !pending.is_empty() {
            attempt += 1;
            let (failed, last) = self.send(pending).await?;
            if failed.is_empty() {
                break;
            }
            if attempt >= self.retry.max_attempts {
                return Err(Error::PartialFailure {
                    stream: self.stream.clone(),
                    failed: failed.len(),
                    total,
                    attempts: attempt,
                    code: last.code,
                    message: last.message,
                }
                .into());
            }
            let delay = delays.next_delay();
            tracing::debug!(
                stream = %self.stream,
                shard_id = %batch.context.shard_id,
                failed = failed.len(),
                total,
                attempt,
                code = %last.code,
                ?delay,
                "records refused; retrying only those"
            );
            tokio::time::sleep(delay).await;
            pending = failed;
        }
        Ok(EmitOutcome::with_rejected(rejected))
    }
}

/// Builds a [`KinesisEmitter`]; see [`KinesisEmitter::builder`].
pub struct KinesisEmitterBuilder<T: Encoder> {
    client: aws_sdk_kinesis::Client,
    stream: String,
    transformer: T,
    partition_key: Option<Box<PartitionKeyFn<T::Item>>>,
    explicit_hash_key: Option<Box<HashKeyFn<T::Item>>>,
    retry: RetryPolicy,
}

impl<T: Encoder> fmt::Debug for KinesisEmitterBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KinesisEmitterBuilder")
            .field("stream", &self.stream)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl<T: Encoder> KinesisEmitterBuilder<T> {
    /// Computes each record's partition key from the item and its source
    /// (default: the source record's partition key). A key that is empty or
    /// longer than 256 characters rejects the item.
    pub fn partition_key(
        mut self,
        f: impl Fn(&T::Item, &ItemSource) -> String + Send + Sync + 'static,
    ) -> Self {
        self.partition_key = Some(Box::new(f));
        self
    }

    /// Computes each record's explicit hash key, which routes the record
    /// instead of the partition key's hash (default: the source record's
    /// explicit hash key, if it had one). Return `None` to route by
    /// partition key; an invalid key rejects the item.
    pub fn explicit_hash_key(
        mut self,
        f: impl Fn(&T::Item, &ItemSource) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.explicit_hash_key = Some(Box::new(f));
        self
    }

    /// How records refused by `PutRecords` are retried (default
    /// [`DEFAULT_RETRY`]: 100 ms doubling to 5 s with jitter, 8 attempts).
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Checks the configuration and builds the emitter.
    ///
    /// Fails with [`Error::Config`] for an empty stream name or a retry
    /// policy that cannot make progress.
    pub fn build(self) -> Result<KinesisEmitter<T>, Error> {
        if self.stream.trim().is_empty() {
            return Err(Error::Config("the target stream name is empty".to_owned()));
        }
        self.retry
            .validate()
            .map_err(|e| Error::Config(e.to_string()))?;
        Ok(KinesisEmitter {
            client: self.client,
            stream: self.stream,
            transformer: self.transformer,
            partition_key: self.partition_key,
            explicit_hash_key: self.explicit_hash_key,
            retry: self.retry,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: usize, size: usize) -> Entry {
        Entry {
            index,
            data: Vec::new(),
            partition_key: String::new(),
            explicit_hash_key: None,
            size,
        }
    }

    #[test]
    fn chunks_respect_count_and_size_limits_in_order() {
        let sizes: Vec<usize> = chunks((0..1_201).map(|i| entry(i, 10)).collect())
            .iter()
            .map(Vec::len)
            .collect();
        assert_eq!(sizes, vec![500, 500, 201]);

        let mib = 1024 * 1024;
        let big: Vec<Entry> = (0..11).map(|i| entry(i, mib)).collect();
        let split = chunks(big);
        assert_eq!(
            split.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![5, 5, 1]
        );
        let order: Vec<usize> = split.iter().flatten().map(|e| e.index).collect();
        assert_eq!(order, (0..11).collect::<Vec<_>>());

        // Just over 5 MiB in total: the last record moves on.
        let mut uneven: Vec<Entry> = (0..5).map(|i| entry(i, mib)).collect();
        uneven[0].size += 1;
        assert_eq!(
            chunks(uneven).iter().map(Vec::len).collect::<Vec<_>>(),
            vec![4, 1]
        );
        assert!(chunks(Vec::new()).is_empty());
    }

    #[test]
    fn explicit_hash_keys_are_checked() {
        for good in [
            "0",
            "17",
            MAX_HASH_KEY,
            "000340282366920938463463374607431768211455",
        ] {
            assert!(check_hash_key(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-1",
            "1.5",
            "abc",
            "340282366920938463463374607431768211456",
            "1000000000000000000000000000000000000000",
        ] {
            assert!(check_hash_key(bad).is_err(), "{bad}");
        }
    }
}
