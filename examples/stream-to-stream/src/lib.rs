//! Forwards a Kinesis stream into another one, optionally keeping only the
//! JSON events whose `kind` (or another configured field) is in a list: the
//! [`Filter`] trait in action. Records are forwarded byte for byte with
//! their original partition key (`RecordTransformer` on both sides), with
//! `PutRecords`. Dropped records still advance the checkpoint, which goes to
//! the store configured in `[consumer.checkpoints]` (Redis by default) once
//! the batch is in the target stream.
//!
//! Forwarding is at-least-once: a batch replayed after a restart is written
//! to the target stream again, so its consumers deduplicate (the producer's
//! events carry an `id`).

use std::collections::BTreeSet;
use std::sync::Arc;

use anyhow::{Context, Result, bail, ensure};
use aws_config::SdkConfig;
use aws_sdk_kinesis::error::DisplayErrorContext;
use example_support::ConsumerSettings;
use kinesis_connectors_core::{
    CancellationToken, Emitter, Filter, Pipeline, Record, RecordTransformer, StreamReport,
};
use kinesis_connectors_kinesis::KinesisEmitter;
use serde::Deserialize;
use serde_json::Value;
use tracing::info;

/// The forwarder's configuration file: the consumer, the target stream and
/// an optional filter.
///
/// ```toml
/// [consumer]
/// application = "stream-to-stream"   # checkpoint namespace
/// stream = "demo-events"
///
/// [consumer.checkpoints]
/// store = "redis"                    # "redis", "dynamodb" or "memory"
///
/// [target]
/// stream = "demo-purchases"
/// create_shards = 1                  # create the target with this many shards when missing
///
/// [filter]                           # leave the table out to forward everything
/// field = "kind"                     # a top-level string field of the JSON events
/// keep = ["cart", "purchase"]
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Which stream, where to start, batch limits, checkpoint store.
    pub consumer: ConsumerSettings,
    /// Where the records go.
    pub target: TargetSettings,
    /// Which records go; absent: all of them.
    pub filter: Option<FilterSettings>,
}

/// The `[target]` table: the stream records are forwarded to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSettings {
    /// The target stream (a name or an ARN).
    pub stream: String,
    /// Creates the target stream with this many shards when it does not
    /// exist; absent: a missing target stream is an error.
    pub create_shards: Option<i32>,
}

/// The `[filter]` table: keep only events whose `field` is one of `keep`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterSettings {
    /// A top-level string field of the JSON events (default `kind`).
    #[serde(default = "default_field")]
    pub field: String,
    /// The values to keep.
    pub keep: Vec<String>,
}

fn default_field() -> String {
    "kind".to_owned()
}

impl Config {
    /// Refuses settings that cannot work, naming the field.
    pub fn validate(&self) -> Result<()> {
        self.consumer.validate("consumer")?;
        ensure!(
            !self.target.stream.is_empty(),
            "target.stream must not be empty"
        );
        ensure!(
            self.target.stream != self.consumer.stream,
            "target.stream must differ from consumer.stream ({}): forwarding a stream into itself never ends",
            self.target.stream
        );
        if let Some(shards) = self.target.create_shards {
            ensure!(
                shards >= 1,
                "target.create_shards must be at least 1, got {shards}"
            );
            ensure!(
                !self.target.stream.starts_with("arn:"),
                "target.create_shards needs a stream name, not an ARN"
            );
        }
        if let Some(filter) = &self.filter {
            ensure!(!filter.field.is_empty(), "filter.field must not be empty");
            ensure!(
                !filter.keep.is_empty(),
                "filter.keep must list at least one value (leave out [filter] to forward everything)"
            );
        }
        Ok(())
    }
}

/// Keeps records whose payload is a JSON object with a string `field` in
/// the configured set; drops everything else (other values, other JSON,
/// payloads that are not JSON).
#[derive(Debug, Clone)]
pub struct FieldFilter {
    field: String,
    keep: BTreeSet<String>,
}

impl FieldFilter {
    /// Keeps records whose `field` is one of `keep`.
    pub fn new(
        field: impl Into<String>,
        keep: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            field: field.into(),
            keep: keep.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<&FilterSettings> for FieldFilter {
    fn from(settings: &FilterSettings) -> Self {
        Self::new(&settings.field, &settings.keep)
    }
}

impl Filter<Record> for FieldFilter {
    fn keep(&self, record: &Record) -> bool {
        serde_json::from_slice::<Value>(&record.data).is_ok_and(|event| {
            event
                .get(&self.field)
                .and_then(Value::as_str)
                .is_some_and(|value| self.keep.contains(value))
        })
    }
}

/// Fails unless the target stream exists; with `create_shards`, creates it
/// when missing and waits until it is `ACTIVE`.
pub async fn ensure_target(
    client: &aws_sdk_kinesis::Client,
    target: &TargetSettings,
) -> Result<()> {
    if let Some(shards) = target.create_shards {
        return producer::ensure_stream(client, &target.stream, shards).await;
    }
    let request = client.describe_stream_summary();
    let request = if target.stream.starts_with("arn:") {
        request.stream_arn(&target.stream)
    } else {
        request.stream_name(&target.stream)
    };
    match request.send().await {
        Ok(_) => Ok(()),
        Err(error)
            if error
                .as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception()) =>
        {
            bail!(
                "the target stream {} does not exist: create it, or set target.create_shards",
                target.stream
            )
        }
        Err(error) => bail!(
            "cannot describe the target stream {}: {}",
            target.stream,
            DisplayErrorContext(error)
        ),
    }
}

/// Forwards `config.consumer.stream` into `config.target.stream` until
/// `cancel` fires, then flushes, forwards and checkpoints what was read and
/// returns the consumer's report.
pub async fn run(
    config: &Config,
    aws: &SdkConfig,
    cancel: CancellationToken,
) -> Result<StreamReport> {
    config.validate()?;
    let settings = &config.consumer;
    let kinesis = aws_sdk_kinesis::Client::new(aws);
    ensure_target(&kinesis, &config.target).await?;

    // Records go out as they came in: same bytes, same partition key.
    let emitter: Arc<dyn Emitter<Record>> = Arc::new(
        KinesisEmitter::builder(kinesis.clone(), &config.target.stream, RecordTransformer)
            .build()
            .context("bad [target] settings")?,
    );
    let filter = config.filter.as_ref().map(FieldFilter::from);
    let consumer = settings
        .consumer("consumer", aws, move |limits| {
            let pipeline =
                Pipeline::builder(RecordTransformer, Arc::clone(&emitter)).buffer_limits(limits);
            match &filter {
                Some(filter) => pipeline.filter(filter.clone()).build(),
                None => pipeline.build(),
            }
        })
        .await?;

    info!(
        from = settings.stream,
        to = config.target.stream,
        filter = ?config.filter,
        "forwarding"
    );
    let report = consumer.run(cancel).await?;
    let totals = report.totals();
    info!(
        records_read = totals.records_read,
        records_filtered = totals.records_filtered,
        "forwarder stopped"
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use example_support::{StoreKind, load_config, parse_config};

    const MINIMAL: &str = "[consumer]\napplication = \"a\"\nstream = \"s\"\n\
        [target]\nstream = \"t\"\n";

    #[test]
    fn the_shipped_config_file_is_valid() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/stream-to-stream.toml");
        let config: Config = load_config(&path).unwrap();
        config.validate().unwrap();
        assert_eq!(config.consumer.checkpoints.store, StoreKind::Redis);
        let filter = config.filter.unwrap();
        assert_eq!(filter.field, "kind");
        assert!(!filter.keep.is_empty());
    }

    #[test]
    fn defaults_and_unknown_keys() {
        let config: Config = parse_config(MINIMAL).unwrap();
        config.validate().unwrap();
        assert!(config.filter.is_none());
        assert_eq!(config.target.create_shards, None);

        let config: Config = parse_config(&format!("{MINIMAL}[filter]\nkeep = [\"a\"]\n")).unwrap();
        assert_eq!(config.filter.unwrap().field, "kind");

        let error =
            parse_config::<Config>(&format!("{MINIMAL}[filter]\nkinds = [\"a\"]\n")).unwrap_err();
        assert!(format!("{error:#}").contains("kinds"), "{error:#}");
    }

    #[test]
    fn bad_settings_are_named() {
        let config: Config =
            parse_config(&format!("{MINIMAL}[filter]\nkeep = [\"cart\"]\n")).unwrap();
        let check = |edit: &dyn Fn(&mut Config), field: &str| {
            let mut bad = config.clone();
            edit(&mut bad);
            let error = bad.validate().unwrap_err().to_string();
            assert!(error.contains(field), "{field}: {error}");
        };
        check(&|c| c.target.stream = "s".into(), "must differ");
        check(&|c| c.target.stream.clear(), "target.stream");
        check(
            &|c| c.target.create_shards = Some(0),
            "target.create_shards",
        );
        check(
            &|c| {
                c.target.stream = "arn:aws:kinesis:us-east-1:1:stream/t".into();
                c.target.create_shards = Some(1);
            },
            "target.create_shards",
        );
        check(&|c| c.filter.as_mut().unwrap().keep.clear(), "filter.keep");
        check(
            &|c| c.filter.as_mut().unwrap().field.clear(),
            "filter.field",
        );
    }

    #[test]
    fn the_filter_keeps_listed_values_only() {
        let filter = FieldFilter::new("kind", ["cart", "purchase"]);
        let record = |data: &str| Record::new(data.to_owned(), "pk", 1u64);
        assert!(filter.keep(&record(r#"{"id":1,"kind":"cart"}"#)));
        assert!(filter.keep(&record(r#"{"kind":"purchase"}"#)));
        assert!(!filter.keep(&record(r#"{"kind":"click"}"#)));
        assert!(!filter.keep(&record(r#"{"kind":3}"#)));
        assert!(!filter.keep(&record(r#"{"id":1}"#)));
        assert!(!filter.keep(&record(r#"["cart"]"#)));
        assert!(!filter.keep(&record("cart")));

        let event = producer::Event::new(2, 10, 5);
        let data = serde_json::to_string(&event).unwrap();
        assert_eq!(event.kind, "cart");
        assert!(filter.keep(&record(&data)));
    }
}
