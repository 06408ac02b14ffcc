//! Writing records to a stream with `PutRecords` and reading a whole stream
//! back with `GetRecords`.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use aws_sdk_kinesis::error::{DisplayErrorContext, SdkError};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, Record, ShardIteratorType};
use kinesis_connectors_core::SequenceNumber;

/// The most bytes of data one `PutRecords` call carries (the service's limit
/// is 5 MiB with the partition keys; 4 MiB of data stays well below it).
pub const MAX_PUT_BYTES: usize = 4 * 1024 * 1024;

/// A record Kinesis accepted, and where it went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The partition key it was written with.
    pub partition_key: String,
    /// Its data.
    pub data: Vec<u8>,
    /// The shard it went to.
    pub shard_id: String,
    /// Its sequence number in that shard.
    pub sequence: SequenceNumber,
}

/// How [`put_records`] sends records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutOptions {
    /// Records per `PutRecords` call (at most 500); a call also carries at
    /// most [`MAX_PUT_BYTES`] of data.
    pub per_call: usize,
    /// Calls per chunk before giving up on the entries still refused.
    pub max_attempts: u64,
}

impl Default for PutOptions {
    /// 500 records per call, 60 attempts.
    fn default() -> Self {
        Self {
            per_call: 500,
            max_attempts: 60,
        }
    }
}

/// Writes `(partition key, data)` records with `PutRecords`, in chunks of
/// `options.per_call` records (and at most [`MAX_PUT_BYTES`]), sending the
/// entries the service refused again (backing off 200 ms × attempt, at most
/// 2 s) until every record is accepted. Returns where each record went, in
/// the order of `records`.
pub async fn put_records<D: AsRef<[u8]>>(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    records: impl IntoIterator<Item = (String, D)>,
    options: PutOptions,
) -> Result<Vec<Written>> {
    let mut written = Vec::new();
    let mut chunk: Vec<(String, Vec<u8>)> = Vec::new();
    let mut bytes = 0;
    for (key, data) in records {
        let data = data.as_ref().to_vec();
        if !chunk.is_empty()
            && (chunk.len() >= options.per_call || bytes + data.len() > MAX_PUT_BYTES)
        {
            written.extend(put_chunk(client, stream, std::mem::take(&mut chunk), options).await?);
            bytes = 0;
        }
        bytes += data.len();
        chunk.push((key, data));
    }
    if !chunk.is_empty() {
        written.extend(put_chunk(client, stream, chunk, options).await?);
    }
    Ok(written)
}

/// One chunk: sent until every entry is accepted; the result in input order.
async fn put_chunk(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    chunk: Vec<(String, Vec<u8>)>,
    options: PutOptions,
) -> Result<Vec<Written>> {
    let mut accepted: Vec<Option<Written>> = vec![None; chunk.len()];
    let mut pending: Vec<usize> = (0..chunk.len()).collect();
    let mut attempt = 0u64;
    while !pending.is_empty() {
        attempt += 1;
        ensure!(
            attempt <= options.max_attempts,
            "PutRecords to {stream}: {} records still refused after {} attempts",
            pending.len(),
            options.max_attempts
        );
        let entries = pending
            .iter()
            .map(|&i| {
                PutRecordsRequestEntry::builder()
                    .partition_key(&chunk[i].0)
                    .data(Blob::new(chunk[i].1.clone()))
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let backoff = Duration::from_millis(200 * attempt.min(10));
        let output = match client
            .put_records()
            .stream_name(stream)
            .set_records(Some(entries))
            .send()
            .await
        {
            Ok(output) => output,
            // A service error refuses the request as a whole (throttled,
            // stream updating): nothing was written.
            Err(SdkError::ServiceError(e)) => {
                eprintln!("PutRecords refused ({:?}); retrying", e.err().meta().code());
                tokio::time::sleep(backoff).await;
                continue;
            }
            Err(e) => bail!("PutRecords to {stream}: {}", DisplayErrorContext(e)),
        };
        ensure!(
            output.records().len() == pending.len(),
            "PutRecords answered {} entries for {}",
            output.records().len(),
            pending.len()
        );
        let mut refused = Vec::new();
        for (&i, result) in pending.iter().zip(output.records()) {
            match (result.shard_id(), result.sequence_number()) {
                (Some(shard), Some(sequence)) if result.error_code().is_none() => {
                    accepted[i] = Some(Written {
                        partition_key: chunk[i].0.clone(),
                        data: chunk[i].1.clone(),
                        shard_id: shard.to_owned(),
                        sequence: SequenceNumber::parse(sequence)?,
                    });
                }
                _ => refused.push(i),
            }
        }
        pending = refused;
        if !pending.is_empty() {
            tokio::time::sleep(backoff).await;
        }
    }
    Ok(accepted.into_iter().flatten().collect())
}

/// Every record of every shard of `stream`, from `TRIM_HORIZON`, shard by
/// shard in the order `ListShards` gives them.
pub async fn read_stream(client: &aws_sdk_kinesis::Client, stream: &str) -> Result<Vec<Record>> {
    try_read_stream(client, stream)
        .await?
        .with_context(|| format!("stream {stream} does not exist"))
}

/// Like [`read_stream`], but `None` while the stream does not exist.
pub async fn try_read_stream(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
) -> Result<Option<Vec<Record>>> {
    let shards = match client.list_shards().stream_name(stream).send().await {
        Ok(shards) => shards,
        Err(error)
            if error
                .as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception()) =>
        {
            return Ok(None);
        }
        Err(error) => bail!("ListShards {stream}: {}", DisplayErrorContext(error)),
    };
    let mut records = Vec::new();
    for shard in shards.shards() {
        let mut iterator = client
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .map_err(|e| anyhow!("GetShardIterator: {}", DisplayErrorContext(e)))?
            .shard_iterator
            .context("no iterator")?;
        for call in 0.. {
            ensure!(call < 200, "{stream}/{} never caught up", shard.shard_id());
            let page = match client.get_records().shard_iterator(&iterator).send().await {
                Ok(page) => page,
                Err(SdkError::ServiceError(e))
                    if e.err().meta().code() == Some("ProvisionedThroughputExceededException") =>
                {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    continue;
                }
                Err(e) => bail!("GetRecords: {}", DisplayErrorContext(e)),
            };
            let empty = page.records().is_empty();
            records.extend(page.records().iter().cloned());
            match page.next_shard_iterator() {
                Some(next) if !(empty && page.millis_behind_latest().unwrap_or(0) == 0) => {
                    iterator = next.to_owned();
                }
                _ => break,
            }
        }
    }
    Ok(Some(records))
}

/// The data of `record` as UTF-8.
pub fn utf8_data(record: &Record) -> Result<String> {
    String::from_utf8(record.data().as_ref().to_vec()).context("record data is not UTF-8")
}
