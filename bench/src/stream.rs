//! Streams for the scenarios: created, waited for, filled with events
//! spread evenly over the shards, deleted.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;

use crate::event;

/// Records per `PutRecords` call (the API maximum).
const PUT_BATCH: usize = 500;
/// Attempts for the records of one `PutRecords` call that were refused.
const PUT_ATTEMPTS: u32 = 10;
/// How long a new stream may stay CREATING.
const ACTIVE_WAIT: Duration = Duration::from_secs(60);

/// Creates `stream` with `shards` shards and waits until it is ACTIVE;
/// returns each shard's starting hash key, in shard order.
pub(crate) async fn create(client: &Client, stream: &str, shards: u32) -> Result<Vec<String>> {
    client
        .create_stream()
        .stream_name(stream)
        .shard_count(i32::try_from(shards)?)
        .send()
        .await
        .with_context(|| format!("CreateStream {stream}"))?;
    producer::wait_until_active(client, stream, ACTIVE_WAIT).await?;
    let listed = client
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .with_context(|| format!("ListShards {stream}"))?;
    let keys: Vec<String> = listed
        .shards()
        .iter()
        .filter_map(|s| s.hash_key_range().map(|r| r.starting_hash_key().to_owned()))
        .collect();
    if keys.len() != shards as usize {
        bail!("{stream} lists {} shards, not {shards}", keys.len());
    }
    Ok(keys)
}

/// Deletes `stream` (best effort: the emulator goes away with the bench).
pub(crate) async fn delete(client: &Client, stream: &str) {
    if let Err(e) = client.delete_stream().stream_name(stream).send().await {
        eprintln!("kc-bench: could not delete {stream}: {e}");
    }
}

/// Puts events `ids` to the shard starting at `hash_key`, `PUT_BATCH` per
/// call, each event built when its call is made (so its put time is fresh).
pub(crate) async fn put(
    client: &Client,
    stream: &str,
    hash_key: &str,
    ids: impl IntoIterator<Item = u64>,
    size: usize,
) -> Result<()> {
    let ids: Vec<u64> = ids.into_iter().collect();
    for chunk in ids.chunks(PUT_BATCH) {
        let mut entries: Vec<PutRecordsRequestEntry> = chunk
            .iter()
            .map(|&id| {
                PutRecordsRequestEntry::builder()
                    .data(Blob::new(event::encode(id, size)))
                    .partition_key(format!("pk-{id}"))
                    .explicit_hash_key(hash_key)
                    .build()
                    .context("a PutRecords entry")
            })
            .collect::<Result<_>>()?;
        for attempt in 1..=PUT_ATTEMPTS {
            let out = client
                .put_records()
                .stream_name(stream)
                .set_records(Some(entries.clone()))
                .send()
                .await
                .with_context(|| format!("PutRecords to {stream}"))?;
            if out.failed_record_count().unwrap_or(0) == 0 {
                break;
            }
            if attempt == PUT_ATTEMPTS {
                bail!(
                    "PutRecords to {stream}: records still refused after {PUT_ATTEMPTS} attempts"
                );
            }
            entries = entries
                .into_iter()
                .zip(out.records())
                .filter(|(_, result)| result.error_code().is_some())
                .map(|(entry, _)| entry)
                .collect();
            tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
        }
    }
    Ok(())
}

/// Fills a new `stream` of `shards` shards with events `0..records`, the
/// same number on every shard (event `i` on shard `i % shards`).
pub(crate) async fn preload(
    client: &Client,
    stream: &str,
    shards: u32,
    records: u64,
    size: usize,
) -> Result<()> {
    if shards == 0 || !records.is_multiple_of(u64::from(shards)) {
        bail!("--records ({records}) must be a multiple of --shards ({shards})");
    }
    let started = Instant::now();
    let keys = create(client, stream, shards).await?;
    let mut tasks = tokio::task::JoinSet::new();
    for (shard, key) in keys.into_iter().enumerate() {
        let client = client.clone();
        let stream = stream.to_owned();
        let n = u64::from(shards);
        tasks.spawn(async move {
            let ids = (0..records).filter(move |id| id % n == shard as u64);
            put(&client, &stream, &key, ids, size).await
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.context("a preload task panicked")??;
    }
    eprintln!(
        "kc-bench: preloaded {records} records of {size} bytes into {stream} ({shards} shards) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
