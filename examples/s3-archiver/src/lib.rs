//! Archives a Kinesis stream into S3: every flushed batch of a shard becomes
//! one object of newline-delimited JSON (optionally gzipped), named after the
//! shard and the sequence range it covers, so a replayed batch overwrites its
//! object instead of duplicating it. Checkpoints go to the store configured
//! in `[consumer.checkpoints]` (Redis by default), written only after the
//! object is in S3.
//!
//! Records that are not JSON are logged, counted and skipped (the pipeline's
//! default `BadRecordPolicy::Skip`); their checkpoint still advances.

use std::sync::Arc;

use anyhow::{Context, Result, ensure};
use aws_config::SdkConfig;
use example_support::ConsumerSettings;
use example_support::s3::{check_bucket_name, ensure_bucket, s3_client};
use kinesis_connectors_core::{
    CancellationToken, Emitter, JsonTransformer, Pipeline, StreamReport,
};
use kinesis_connectors_s3::S3Emitter;
use serde::Deserialize;
use serde_json::Value;
use tracing::info;

/// The archiver's configuration file: the consumer, then the bucket.
///
/// ```toml
/// [consumer]
/// application = "s3-archiver"   # checkpoint namespace
/// stream = "demo-events"
///
/// [consumer.batch]
/// max_records = 1000            # records per object, at most
/// max_age_secs = 10             # an object at least this often while records arrive
///
/// [consumer.checkpoints]
/// store = "redis"               # "redis", "dynamodb" or "memory"
///
/// [s3]
/// bucket = "demo-archive"
/// prefix = "events"             # keys: events/<stream>/<yyyy>/<mm>/<dd>/<HH>/<shard>-<first>-<last>.jsonl[.gz]
/// gzip = true
/// create_bucket = true          # create the bucket when it does not exist
/// force_path_style = true       # emulators (moto, LocalStack) need path-style URLs
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Which stream, where to start, batch limits, checkpoint store.
    pub consumer: ConsumerSettings,
    /// Where the objects go.
    pub s3: S3Settings,
}

/// The `[s3]` table: where and how objects are written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Settings {
    /// The bucket.
    pub bucket: String,
    /// The first part of every key (empty: keys start with the stream name).
    #[serde(default)]
    pub prefix: String,
    /// Gzip each object (`Content-Encoding: gzip`, keys end in `.jsonl.gz`).
    #[serde(default)]
    pub gzip: bool,
    /// Create the bucket when it does not exist (otherwise that is an error).
    #[serde(default)]
    pub create_bucket: bool,
    /// Address the bucket in the URL path instead of the host name, as
    /// emulators on `127.0.0.1` need.
    #[serde(default)]
    pub force_path_style: bool,
}

impl Config {
    /// Refuses settings that cannot work, naming the field.
    pub fn validate(&self) -> Result<()> {
        self.consumer.validate("consumer")?;
        check_bucket_name(&self.s3.bucket)?;
        ensure!(
            !self.s3.prefix.starts_with('/'),
            "s3.prefix must not start with `/` (S3 keys have no leading slash), got {:?}",
            self.s3.prefix
        );
        Ok(())
    }
}

/// Archives `config.consumer.stream` into the bucket until `cancel` fires,
/// then flushes, uploads and checkpoints what was read and returns the
/// consumer's report.
pub async fn run(
    config: &Config,
    aws: &SdkConfig,
    cancel: CancellationToken,
) -> Result<StreamReport> {
    config.validate()?;
    let settings = &config.consumer;
    let s3 = s3_client(aws, config.s3.force_path_style);
    ensure_bucket(&s3, &config.s3.bucket, config.s3.create_bucket).await?;

    // One object per batch: compact JSON, one record per line.
    let emitter: Arc<dyn Emitter<Value>> = Arc::new(
        S3Emitter::builder(s3, &config.s3.bucket, JsonTransformer::<Value>::new())
            .prefix(&config.s3.prefix)
            .suffix(".jsonl")
            .gzip(config.s3.gzip)
            .content_type("application/x-ndjson")
            .build()
            .context("bad [s3] settings")?,
    );
    let consumer = settings
        .consumer("consumer", aws, move |limits| {
            Pipeline::builder(JsonTransformer::<Value>::new(), Arc::clone(&emitter))
                .buffer_limits(limits)
                .build()
        })
        .await?;

    info!(
        stream = settings.stream,
        bucket = config.s3.bucket,
        prefix = config.s3.prefix,
        gzip = config.s3.gzip,
        "archiving"
    );
    let report = consumer.run(cancel).await?;
    let totals = report.totals();
    info!(
        objects = totals.batches_emitted,
        records_skipped = totals.records_failed,
        "archiver stopped"
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use example_support::{StoreKind, load_config, parse_config};

    fn config_file() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/s3-archiver.toml")
    }

    #[test]
    fn the_shipped_config_file_is_valid() {
        let config: Config = load_config(&config_file()).unwrap();
        config.validate().unwrap();
        assert_eq!(config.consumer.checkpoints.store, StoreKind::Redis);
        assert!(config.s3.create_bucket);
    }

    #[test]
    fn defaults_and_unknown_keys() {
        let config: Config = parse_config(
            "[consumer]\napplication = \"a\"\nstream = \"s\"\n[s3]\nbucket = \"my-bucket\"\n",
        )
        .unwrap();
        config.validate().unwrap();
        assert!(!config.s3.gzip && !config.s3.create_bucket && !config.s3.force_path_style);
        assert_eq!(config.s3.prefix, "");

        let error = parse_config::<Config>(
            "[consumer]\napplication = \"a\"\nstream = \"s\"\n[s3]\nbucket = \"b\"\ngzipp = true\n",
        )
        .unwrap_err();
        assert!(format!("{error:#}").contains("gzipp"), "{error:#}");
        let error = parse_config::<Config>("[consumer]\napplication = \"a\"\nstream = \"s\"\n")
            .unwrap_err();
        assert!(format!("{error:#}").contains("s3"), "{error:#}");
    }

    #[test]
    fn bad_settings_are_named() {
        let config: Config = parse_config(
            "[consumer]\napplication = \"a\"\nstream = \"s\"\n[s3]\nbucket = \"my-bucket\"\n",
        )
        .unwrap();
        for bucket in ["My_Bucket", "ab", "-bucket", "bucket-", &"b".repeat(64)] {
            let mut bad = config.clone();
            bad.s3.bucket = bucket.to_owned();
            let error = bad.validate().unwrap_err().to_string();
            assert!(error.contains("s3.bucket"), "{bucket}: {error}");
        }
        let mut bad = config.clone();
        bad.s3.prefix = "/archive".to_owned();
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("s3.prefix")
        );
        let mut bad = config.clone();
        bad.consumer.stream = String::new();
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("consumer.stream")
        );
        let mut bad = config;
        bad.consumer.batch.max_age_secs = -1.0;
        let error = bad.validate().unwrap_err().to_string();
        assert!(error.contains("consumer.batch.max_age_secs"), "{error}");
    }
}
