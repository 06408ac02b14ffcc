//! Fills a Kinesis stream with synthetic JSON events ([`Event`]).
//!
//! The events are deterministic in their id (user, kind, amount, payload),
//! so a consumer's output can be checked against them; `created_at` is the
//! time of sending. Records go out with `PutRecords` in requests of at most
//! 500 records and 5 MiB; entries the service rejects (throttling) are sent
//! again with backoff, so every event arrives.
//!
//! With `aggregate = true` (`--aggregate`) events are packed into KPL
//! aggregates as the Kinesis Producer Library writes them, one per user in
//! each request: the aggregate's partition key is its events' own, so each
//! event lands on the shard it would have landed on alone.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, StreamStatus};
use kinesis_connectors_core::CancellationToken;
use kinesis_connectors_core::kpl::Aggregator;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tracing::{info, warn};

/// Most records in one `PutRecords` request.
const MAX_RECORDS_PER_REQUEST: usize = 500;
/// Most bytes (data plus partition keys) in one `PutRecords` request.
const MAX_BYTES_PER_REQUEST: usize = 5 * 1024 * 1024;
/// Largest payload accepted, well under the 1 MiB record limit.
const MAX_PAYLOAD_BYTES: usize = 900 * 1024;
/// Most bytes of one record (data plus partition key).
const MAX_RECORD_BYTES: usize = 1024 * 1024;
/// Events gathered for one request when aggregating: at most 100 users'
/// aggregates of a few dozen events each, well under 500 records.
const MAX_AGGREGATED_EVENTS_PER_REQUEST: usize = 5_000;
/// Event bytes gathered for one request when aggregating, leaving room under
/// 5 MiB for the aggregates' framing and tables.
const MAX_AGGREGATED_BYTES_PER_REQUEST: usize = 4 * 1024 * 1024;
/// Attempts per request before the producer gives up on rejected entries.
const MAX_ATTEMPTS: u32 = 10;

/// The producer's configuration file.
///
/// ```toml
/// stream = "demo-events"
/// count = 20000          # events to send
/// rate = 0               # events per second; 0 = as fast as the stream takes them
/// payload_bytes = 200    # size of each event's `payload` field
/// partition_keys = 100   # distinct users (the partition key)
/// first_id = 0           # id of the first event
/// create_shards = 2      # create the stream with this many shards when missing
/// aggregate = false      # pack events into KPL aggregates (one per user per request)
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProducerConfig {
    /// The stream to fill.
    pub stream: String,
    /// How many events to send.
    #[serde(default = "default_count")]
    pub count: u64,
    /// Events per second (0: unlimited).
    #[serde(default)]
    pub rate: u64,
    /// Bytes in each event's payload field.
    #[serde(default = "default_payload_bytes")]
    pub payload_bytes: usize,
    /// Distinct partition keys (users).
    #[serde(default = "default_partition_keys")]
    pub partition_keys: u64,
    /// Id of the first event (runs that follow each other use new ids).
    #[serde(default)]
    pub first_id: u64,
    /// Creates the stream with this many shards when it does not exist.
    pub create_shards: Option<i32>,
    /// Packs events into KPL aggregates instead of one record per event.
    #[serde(default)]
    pub aggregate: bool,
}

fn default_count() -> u64 {
    10_000
}

fn default_payload_bytes() -> usize {
    200
}

fn default_partition_keys() -> u64 {
    100
}

impl ProducerConfig {
    /// A configuration for `count` events into `stream`, other fields default.
    pub fn new(stream: impl Into<String>, count: u64) -> Self {
        Self {
            stream: stream.into(),
            count,
            rate: 0,
            payload_bytes: default_payload_bytes(),
            partition_keys: default_partition_keys(),
            first_id: 0,
            create_shards: None,
            aggregate: false,
        }
    }

    /// Refuses settings that cannot work, naming the field.
    pub fn validate(&self) -> Result<()> {
        ensure!(!self.stream.is_empty(), "stream must not be empty");
        ensure!(self.partition_keys > 0, "partition_keys must be at least 1");
        ensure!(
            self.payload_bytes <= MAX_PAYLOAD_BYTES,
            "payload_bytes must be at most {MAX_PAYLOAD_BYTES} (a Kinesis record holds 1 MiB), got {}",
            self.payload_bytes
        );
        if let Some(shards) = self.create_shards {
            ensure!(
                shards >= 1,
                "create_shards must be at least 1, got {shards}"
            );
        }
        Ok(())
    }

    /// The event with index `index` (0-based) of this run.
    pub fn event(&self, index: u64) -> Event {
        Event::new(
            self.first_id + index,
            self.partition_keys,
            self.payload_bytes,
        )
    }
}

/// One synthetic event, as JSON on the stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Unique per event.
    pub id: u64,
    /// The partition key.
    pub user_id: String,
    /// `click`, `view`, `cart` or `purchase`.
    pub kind: String,
    /// A deterministic amount.
    pub amount_cents: u64,
    /// When the event was made (RFC 3339, UTC).
    pub created_at: String,
    /// Filler of the configured size.
    pub payload: String,
}

const KINDS: [&str; 4] = ["click", "view", "cart", "purchase"];
const FILLER: &str = "abcdefghijklmnopqrstuvwxyz0123456789";

impl Event {
    /// The event `id` among `users` users with a payload of `payload_bytes`.
    pub fn new(id: u64, users: u64, payload_bytes: usize) -> Self {
        let created_at = OffsetDateTime::now_utc()
            .format(&Rfc3339)
            .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned());
        let offset = (id % FILLER.len() as u64) as usize;
        let payload = FILLER
            .chars()
            .cycle()
            .skip(offset)
            .take(payload_bytes)
            .collect();
        Self {
            id,
            user_id: format!("user-{}", id % users.max(1)),
            kind: KINDS[(id % KINDS.len() as u64) as usize].to_owned(),
            amount_cents: id.wrapping_mul(7919) % 10_000,
            created_at,
            payload,
        }
    }
}

/// What a run sent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProduceReport {
    /// Events accepted by the stream.
    pub sent: u64,
    /// Entries sent again after the stream rejected them.
    pub resent: u64,
    /// How long it took.
    pub elapsed: Duration,
}

impl ProduceReport {
    /// Events per second.
    pub fn rate(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Creates `stream` with `shards` shards unless it exists, then waits (at
/// most a minute) until it is `ACTIVE`.
pub async fn ensure_stream(client: &Client, stream: &str, shards: i32) -> Result<()> {
    let exists = client
        .describe_stream_summary()
        .stream_name(stream)
        .send()
        .await;
    match exists {
        Ok(_) => {}
        Err(error)
            if error
                .as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception()) =>
        {
            info!(stream, shards, "creating the stream");
            client
                .create_stream()
                .stream_name(stream)
                .shard_count(shards)
                .send()
                .await
                .with_context(|| format!("cannot create the stream {stream}"))?;
        }
        Err(error) => {
            return Err(error).with_context(|| format!("cannot describe the stream {stream}"));
        }
    }
    wait_until_active(client, stream, Duration::from_secs(60)).await
}

/// Waits until `stream` is `ACTIVE` (polling every 100 ms), at most `timeout`.
pub async fn wait_until_active(client: &Client, stream: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let summary = client
            .describe_stream_summary()
            .stream_name(stream)
            .send()
            .await
            .with_context(|| format!("cannot describe the stream {stream}"))?;
        let status = summary
            .stream_description_summary()
            .map(|s| s.stream_status().clone());
        if status == Some(StreamStatus::Active) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the stream {stream} is not ACTIVE after {timeout:?} (status {status:?})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends `config.count` events, calling `progress` with the number of
/// events accepted after each request. Stops early (reporting what was
/// sent) when `cancel` fires.
pub async fn produce(
    client: &Client,
    config: &ProducerConfig,
    cancel: &CancellationToken,
    mut progress: impl FnMut(u64),
) -> Result<ProduceReport> {
    config.validate()?;
    if let Some(shards) = config.create_shards {
        ensure_stream(client, &config.stream, shards).await?;
    }
    let started = Instant::now();
    let mut report = ProduceReport {
        sent: 0,
        resent: 0,
        elapsed: Duration::ZERO,
    };
    let mut next = 0;
    while next < config.count && !cancel.is_cancelled() {
        let (max_events, max_bytes) = if config.aggregate {
            (
                MAX_AGGREGATED_EVENTS_PER_REQUEST,
                MAX_AGGREGATED_BYTES_PER_REQUEST,
            )
        } else {
            (MAX_RECORDS_PER_REQUEST, MAX_BYTES_PER_REQUEST)
        };
        let mut events = Vec::new();
        let mut bytes = 0;
        while next < config.count && events.len() < max_events {
            let event = config.event(next);
            let data = serde_json::to_vec(&event).context("encoding an event")?;
            let size = data.len() + event.user_id.len();
            if !events.is_empty() && bytes + size > max_bytes {
                break;
            }
            bytes += size;
            events.push((event.user_id, data));
            next += 1;
        }
        let count = events.len() as u64;
        let records = if config.aggregate {
            aggregate_by_key(events)
        } else {
            events
        };
        let entries = records
            .into_iter()
            .map(|(partition_key, data)| {
                PutRecordsRequestEntry::builder()
                    .data(Blob::new(data))
                    .partition_key(partition_key)
                    .build()
                    .context("building a PutRecords entry")
            })
            .collect::<Result<Vec<_>>>()?;
        report.resent += put_all(client, &config.stream, entries).await?;
        report.sent += count;
        progress(count);
        if config.rate > 0 {
            let due = Duration::from_secs_f64(report.sent as f64 / config.rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = cancel.cancelled() => {}
                }
            }
        }
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Packs `(partition key, data)` events into KPL aggregates, one per key
/// (more when one would pass 1 MiB), in event order within each key.
/// Each aggregate is sent with its events' partition key, so Kinesis routes
/// it exactly as it would route each of them.
fn aggregate_by_key(events: Vec<(String, Vec<u8>)>) -> Vec<(String, Vec<u8>)> {
    let mut by_key: BTreeMap<String, Vec<Aggregator>> = BTreeMap::new();
    for (key, data) in events {
        let aggregators = by_key.entry(key.clone()).or_default();
        let full = aggregators.last().is_none_or(|last| {
            last.encoded_len_with(data.len(), &key, None) + key.len() > MAX_RECORD_BYTES
        });
        if full {
            aggregators.push(Aggregator::new());
        }
        if let Some(last) = aggregators.last_mut() {
            last.push(data.into(), &key, None);
        }
    }
    by_key
        .into_iter()
        .flat_map(|(key, aggregators)| {
            aggregators
                .into_iter()
                .map(move |aggregator| (key.clone(), aggregator.finish().to_vec()))
        })
        .collect()
}

/// Sends `entries`, then again those the service rejected, with backoff.
/// Returns how many entries were sent again.
async fn put_all(
    client: &Client,
    stream: &str,
    mut entries: Vec<PutRecordsRequestEntry>,
) -> Result<u64> {
    let mut resent = 0;
    let mut delay = Duration::from_millis(100);
    for attempt in 1..=MAX_ATTEMPTS {
        let output = client
            .put_records()
            .stream_name(stream)
            .set_records(Some(entries.clone()))
            .send()
            .await;
        let output = match output {
            Ok(output) => output,
            Err(error) if attempt < MAX_ATTEMPTS && is_throttling(&error) => {
                warn!(stream, attempt, "PutRecords throttled; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
                continue;
            }
            Err(error) => {
                return Err(error).with_context(|| format!("PutRecords into {stream} failed"));
            }
        };
        if output.failed_record_count().unwrap_or(0) == 0 {
            return Ok(resent);
        }
        entries = entries
            .into_iter()
            .zip(output.records())
            .filter(|(_, result)| result.error_code().is_some())
            .map(|(entry, _)| entry)
            .collect();
        resent += entries.len() as u64;
        warn!(
            stream,
            attempt,
            failed = entries.len(),
            "some records were rejected; sending them again"
        );
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
    bail!(
        "{} records were still rejected by {stream} after {MAX_ATTEMPTS} attempts",
        entries.len()
    )
}

fn is_throttling(
    error: &aws_sdk_kinesis::error::SdkError<
        aws_sdk_kinesis::operation::put_records::PutRecordsError,
    >,
) -> bool {
    error.as_service_error().is_some_and(|e| {
        e.is_provisioned_throughput_exceeded_exception() || e.is_kms_throttling_exception()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_deterministic_in_their_id() {
        let a = Event::new(42, 10, 50);
        let b = Event::new(42, 10, 50);
        assert_eq!(
            (a.id, &a.user_id, &a.kind, a.amount_cents, &a.payload),
            (b.id, &b.user_id, &b.kind, b.amount_cents, &b.payload)
        );
        assert_eq!(a.user_id, "user-2");
        assert_eq!(a.kind, "cart");
        assert_eq!(a.payload.len(), 50);
        assert!(a.created_at.ends_with('Z'), "{}", a.created_at);
    }

    #[test]
    fn config_file_defaults_and_validation() {
        let config: ProducerConfig =
            example_support::parse_config("stream = \"s\"\ncount = 5\n").unwrap();
        assert_eq!(config.payload_bytes, 200);
        assert!(config.validate().is_ok());
        assert_eq!(config.event(3).id, 3);

        let mut bad = config.clone();
        bad.partition_keys = 0;
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("partition_keys")
        );
        bad = config.clone();
        bad.payload_bytes = 2 * 1024 * 1024;
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("payload_bytes")
        );
        bad = config;
        bad.create_shards = Some(0);
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("create_shards")
        );
    }

    #[test]
    fn aggregates_hold_each_users_events_in_order() {
        use kinesis_connectors_core::{Record, kpl};
        let events: Vec<(String, Vec<u8>)> = (0..50)
            .map(|i| (format!("user-{}", i % 3), format!("e{i}").into_bytes()))
            .collect();
        let records = aggregate_by_key(events.clone());
        assert_eq!(records.len(), 3);
        let mut read = Vec::new();
        for (key, data) in records {
            for sub in kpl::deaggregate(&Record::new(data, key.clone(), 1u64)).unwrap() {
                assert_eq!(sub.partition_key, key);
                read.push((key.clone(), sub.data.to_vec()));
            }
        }
        let mut expected = events;
        expected.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(read, expected);
    }
}
