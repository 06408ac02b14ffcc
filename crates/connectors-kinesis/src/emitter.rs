//! `KinesisEmitter`: forwards items to another stream with `PutRecords`.

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use bytes::Bytes;
use kinesis_connectors_core::kpl::{self, Aggregator, HashKeyRange};
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

/// How a [`KinesisEmitter`] packs items into KPL aggregates
/// ([`KinesisEmitterBuilder::aggregate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Aggregation {
    /// Most bytes of one aggregate, its partition key included (default and
    /// largest: 1 MiB, Kinesis' record limit).
    pub max_bytes: usize,
    /// Most items in one aggregate (default 1,000).
    pub max_records: usize,
}

impl Default for Aggregation {
    fn default() -> Self {
        Self {
            max_bytes: MAX_RECORD_BYTES,
            max_records: 1_000,
        }
    }
}

impl Aggregation {
    /// Sets [`max_bytes`](Self::max_bytes).
    pub const fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Sets [`max_records`](Self::max_records).
    pub const fn with_max_records(mut self, max_records: usize) -> Self {
        self.max_records = max_records;
        self
    }
}

/// The open shards of the target stream and the hash keys each owns.
type ShardMap = Vec<(String, HashKeyRange)>;

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
    aggregation: Option<Aggregation>,
    /// The target's shards, listed when first needed and dropped when an
    /// aggregate landed on a shard other than predicted (resharding).
    shard_map: Mutex<Option<ShardMap>>,
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
            .field("aggregation", &self.aggregation)
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
    /// For a KPL aggregate: the items it packs (sent again one by one,
    /// re-packed, if it must be retried) and the shard it was packed for.
    aggregate: Option<Packed>,
}

/// The contents of an aggregated [`Entry`].
#[derive(Debug, Clone)]
struct Packed {
    parts: Vec<Entry>,
    shard_id: String,
}

impl Entry {
    /// The entries to send again if this one failed: its parts, for an aggregate.
    fn unpack(self) -> Vec<Entry> {
        match self.aggregate {
            Some(packed) => packed.parts,
            None => vec![self],
        }
    }
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

/// An aggregate being filled for one shard.
struct OpenAggregate {
    shard_id: String,
    aggregator: Aggregator,
    parts: Vec<Entry>,
}

impl OpenAggregate {
    fn new(shard_id: String) -> Self {
        Self {
            shard_id,
            aggregator: Aggregator::new(),
            parts: Vec::new(),
        }
    }

    /// Whether `entry` fits, counting the aggregate's own partition key (its
    /// first item's) against the record limit as Kinesis does.
    fn fits(&self, entry: &Entry, limits: Aggregation) -> bool {
        let key_len = self
            .parts
            .first()
            .map_or(entry.partition_key.len(), |first| first.partition_key.len());
        self.aggregator.len() < limits.max_records
            && self.aggregator.encoded_len_with(
                entry.data.len(),
                &entry.partition_key,
                entry.explicit_hash_key.as_deref(),
            ) + key_len
                <= limits.max_bytes.min(MAX_RECORD_BYTES)
    }

    fn push(&mut self, entry: Entry) {
        self.aggregator.push(
            Bytes::from(entry.data.clone()),
            &entry.partition_key,
            entry.explicit_hash_key.as_deref(),
        );
        self.parts.push(entry);
    }

    /// The record to send: the aggregate, or its only item as it is.
    fn seal(self) -> Option<Entry> {
        let Self {
            shard_id,
            aggregator,
            mut parts,
        } = self;
        if parts.len() < 2 {
            return parts.pop();
        }
        let first = &parts[0];
        // The first item's hash key routes the aggregate to the shard all
        // its items belong to.
        let explicit_hash_key =
            kpl::effective_hash_key(&first.partition_key, first.explicit_hash_key.as_deref())
                .map(|key| key.to_string());
        let data = aggregator.finish().to_vec();
        Some(Entry {
            index: first.index,
            size: data.len() + first.partition_key.len(),
            partition_key: first.partition_key.clone(),
            explicit_hash_key,
            data,
            aggregate: Some(Packed { parts, shard_id }),
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
            aggregation: None,
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
            aggregate: None,
        })
    }

    /// The target's open shards, listing them if no map is cached.
    async fn shard_map(&self) -> Result<ShardMap, Error> {
        if let Some(map) = self.shard_map.lock().ok().and_then(|map| map.clone()) {
            return Ok(map);
        }
        let mut map = Vec::new();
        let mut next_token: Option<String> = None;
        loop {
            let request = match &next_token {
                Some(token) => self.client.list_shards().next_token(token),
                None if self.stream.starts_with("arn:") => {
                    self.client.list_shards().stream_arn(&self.stream)
                }
                None => self.client.list_shards().stream_name(&self.stream),
            };
            let output = request
                .send()
                .await
                .map_err(|e| classify(&self.stream, e))?;
            for shard in output.shards() {
                let open = shard
                    .sequence_number_range()
                    .is_none_or(|range| range.ending_sequence_number().is_none());
                let range = shard.hash_key_range().and_then(|range| {
                    HashKeyRange::parse(range.starting_hash_key(), range.ending_hash_key())
                });
                if let (true, Some(range)) = (open, range) {
                    map.push((shard.shard_id().to_owned(), range));
                }
            }
            match output.next_token() {
                Some(token) if !token.is_empty() => next_token = Some(token.to_owned()),
                _ => break,
            }
        }
        if let Ok(mut cached) = self.shard_map.lock() {
            *cached = Some(map.clone());
        }
        Ok(map)
    }

    /// Packs entries into aggregates, one group per target shard, in batch
    /// order within each shard (Kinesis orders records per shard, not
    /// across shards). An aggregate is sent with the first item's partition
    /// key and, as explicit hash key, that item's hash key, so it lands on
    /// the shard every item in it belongs to and a de-aggregating reader
    /// keeps them all. A group of one, and an item too big to be packed,
    /// go out as plain records.
    async fn pack(&self, entries: Vec<Entry>) -> Result<Vec<Entry>, Error> {
        let Some(limits) = self.aggregation else {
            return Ok(entries);
        };
        if entries.len() < 2 {
            return Ok(entries);
        }
        let map = self.shard_map().await?;
        let mut out = Vec::new();
        // Aggregates being filled, one per shard, in order of their first item.
        let mut open: Vec<OpenAggregate> = Vec::new();
        for entry in entries {
            let hash_key =
                kpl::effective_hash_key(&entry.partition_key, entry.explicit_hash_key.as_deref());
            let shard = hash_key.and_then(|key| map.iter().find(|(_, range)| range.contains(key)));
            let Some((shard_id, _)) = shard else {
                // No open shard listed for it (the map is behind): Kinesis routes it alone.
                out.push(entry);
                continue;
            };
            let slot = match open.iter().position(|o| o.shard_id == *shard_id) {
                Some(slot) => slot,
                None => {
                    open.push(OpenAggregate::new(shard_id.clone()));
                    open.len() - 1
                }
            };
            if !open[slot].fits(&entry, limits) {
                let fresh = OpenAggregate::new(open[slot].shard_id.clone());
                out.extend(std::mem::replace(&mut open[slot], fresh).seal());
                if !open[slot].fits(&entry, limits) {
                    out.push(entry);
                    continue;
                }
            }
            open[slot].push(entry);
        }
        out.extend(open.into_iter().flat_map(OpenAggregate::seal));
        Ok(out)
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
                            Some(result)
                                if result.error_code().is_none()
                                    && entry.aggregate.as_ref().is_some_and(|packed| {
                                        result.shard_id().is_some_and(|id| id != packed.shard_id)
                                    }) =>
                            {
                                // Resharded since the listing: readers of that
                                // shard may drop some of its items. Send them
                                // again, grouped on a fresh listing.
                                last.code = "AggregateMisrouted".to_owned();
                                last.message = format!(
                                    "an aggregate packed for shard {} landed on {}",
                                    entry.aggregate.as_ref().map_or("", |p| p.shard_id.as_str()),
                                    result.shard_id().unwrap_or_default()
                                );
                                if let Ok(mut map) = self.shard_map.lock() {
                                    *map = None;
                                }
                                failed.push(entry);
                            }
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
        let (entries, rejected) = self.prepare(batch);
        let total = entries.len();
        let mut pending = self.pack(entries).await?;
        let mut delays = self.retry.delays();
        let mut attempt = 0;
        while !pending.is_empty() {
            attempt += 1;
            let (failed, last) = self.send(pending).await?;
            if failed.is_empty() {
                break;
            }
            // Items, not aggregates, are what the batch sent and what is retried.
            let failed: Vec<Entry> = failed.into_iter().flat_map(Entry::unpack).collect();
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
            pending = self.pack(failed).await?;
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
    aggregation: Option<Aggregation>,
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

    /// Packs items into KPL aggregates instead of one record per item, as the
    /// Kinesis Producer Library does: fewer, larger records (Kinesis bills
    /// and throttles per record and per 25 KiB), read back item by item by
    /// any KPL-aware consumer (`PollingSource`, the KCL, `aws-kinesis-agg`).
    ///
    /// Items are grouped by the target shard their hash key falls into
    /// (`ListShards` of the target, listed once and again after
    /// resharding), and each aggregate carries its first item's hash key as
    /// its explicit hash key, so every item lands on the shard it would have
    /// landed on alone: a de-aggregating reader drops an aggregate that
    /// holds an item outside its shard. An aggregate that lands elsewhere anyway (the target was
    /// resharded since it was listed) is sent again, re-grouped on a fresh
    /// listing. A group of one item goes out as a plain record.
    pub fn aggregate(mut self, limits: Aggregation) -> Self {
        self.aggregation = Some(limits);
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
        if let Some(limits) = self.aggregation
            && (limits.max_records < 1 || limits.max_bytes <= kpl::FRAMING_LEN)
        {
            return Err(Error::Config(format!(
                "aggregation limits {limits:?} leave no room for an item"
            )));
        }
        Ok(KinesisEmitter {
            client: self.client,
            stream: self.stream,
            transformer: self.transformer,
            partition_key: self.partition_key,
            explicit_hash_key: self.explicit_hash_key,
            retry: self.retry,
            aggregation: self.aggregation,
            shard_map: Mutex::new(None),
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
            aggregate: None,
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
