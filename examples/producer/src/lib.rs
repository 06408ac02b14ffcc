//! Fills a Kinesis stream with synthetic JSON events ([`Event`]).
//!
//! The events are deterministic in their id (user, kind, amount, payload),
//! so a consumer's output can be checked against them; `created_at` is the
//! time of sending. Records go out with `PutRecords` in requests of at most
//! 500 records and 5 MiB; entries the service rejects (throttling) are sent
//! again with backoff, so every event arrives.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, StreamStatus};
use kinesis_connectors_core::CancellationToken;
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
        let mut entries = Vec::new();
        let mut bytes = 0;
        while next < config.count && entries.len() < MAX_RECORDS_PER_REQUEST {
            let event = config.event(next);
            let data = serde_json::to_vec(&event).context("encoding an event")?;
            let size = data.len() + event.user_id.len();
            if !entries.is_empty() && bytes + size > MAX_BYTES_PER_REQUEST {
                break;
            }
            bytes += size;
            entries.push(
                PutRecordsRequestEntry::builder()
                    .data(Blob::new(data))
                    .partition_key(event.user_id)
                    .build()
                    .context("building a PutRecords entry")?,
            );
            next += 1;
        }
        let count = entries.len() as u64;
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
}
