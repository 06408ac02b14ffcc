//! Running a `StreamConsumer` in a test: a consumer tuned to finish fast,
//! started in a task and stopped with a bounded wait.

use std::sync::Arc;
use std::time::Duration;

use kinesis_connectors_core::RecordSource;
use kinesis_connectors_core::{
    BadRecordPolicy, BufferLimits, CancellationToken, CheckpointStore, Emitter, Pipeline,
    ShardConfig, ShardContext, ShardFailurePolicy, StreamConsumer, StreamConsumerBuilder,
    StreamReport, Transformer, Utf8Transformer,
};
use kinesis_connectors_kinesis::{FanOutConsumer, FanOutSource, PollingSource};
use tokio::task::JoinHandle;

/// The idle delay of [`fast_shard_config`]: how long a shard task waits after
/// an empty page.
pub const FAST_IDLE_DELAY: Duration = Duration::from_millis(200);

/// The discovery interval of [`fast`]: the smallest the core accepts.
pub const FAST_DISCOVERY_INTERVAL: Duration = Duration::from_secs(1);

/// How long [`RunningConsumer::stop`] waits for the report after cancel.
pub const STOP_WAIT: Duration = Duration::from_secs(30);

/// The default shard configuration with a short idle delay
/// ([`FAST_IDLE_DELAY`]), so the tests finish fast.
pub fn fast_shard_config() -> ShardConfig {
    ShardConfig::default().with_idle_delay(FAST_IDLE_DELAY)
}

/// `builder` with [`fast_shard_config`] and a discovery interval of
/// [`FAST_DISCOVERY_INTERVAL`].
pub fn fast<T: Transformer>(builder: StreamConsumerBuilder<T>) -> StreamConsumerBuilder<T> {
    builder
        .shard_config(fast_shard_config())
        .discovery_interval(FAST_DISCOVERY_INTERVAL)
}

/// How a test consumer reads its stream: the tests of what the loop
/// guarantees run with both retrievals.
#[derive(Debug, Clone, Default)]
pub enum Retrieval {
    /// `GetRecords` ([`PollingSource`]).
    #[default]
    Polling,
    /// Enhanced fan-out through this registration ([`FanOutSource`]).
    FanOut(FanOutConsumer),
}

impl Retrieval {
    /// Polling, or fan-out through a consumer named `name` registered on
    /// `stream` now, as `fan_out` says.
    ///
    /// # Panics
    ///
    /// When the registration fails.
    #[allow(clippy::expect_used)] // test support: a failed registration fails the test
    pub async fn on(
        fan_out: bool,
        kinesis: &aws_sdk_kinesis::Client,
        stream: &str,
        name: &str,
    ) -> Self {
        if !fan_out {
            return Self::Polling;
        }
        let consumer = FanOutConsumer::register(kinesis, stream, name)
            .await
            .expect("registering the fan-out consumer");
        Self::FanOut(consumer)
    }

    /// The source that reads with this retrieval through `kinesis`.
    pub fn source(&self, kinesis: &aws_sdk_kinesis::Client) -> Arc<dyn RecordSource> {
        match self {
            Self::Polling => Arc::new(PollingSource::new(kinesis.clone())),
            Self::FanOut(consumer) => Arc::new(FanOutSource::new(kinesis.clone(), consumer)),
        }
    }
}

/// What a consumer of UTF-8 records ([`utf8_consumer`]) is made of.
#[derive(Clone)]
pub struct Utf8ConsumerSpec<'a> {
    /// The Kinesis client the consumer reads with.
    pub kinesis: &'a aws_sdk_kinesis::Client,
    /// How it reads.
    pub retrieval: Retrieval,
    /// The application name (checkpoint namespace).
    pub application: &'a str,
    /// The stream read.
    pub stream: &'a str,
    /// Where checkpoints go.
    pub store: Arc<dyn CheckpointStore>,
    /// Where every shard's pipeline emits.
    pub emitter: Arc<dyn Emitter<String>>,
    /// The buffer limits of every pipeline.
    pub limits: BufferLimits,
    /// What a pipeline does with a record that is not UTF-8.
    pub bad_records: BadRecordPolicy,
    /// What the consumer does with a shard whose task failed.
    pub on_shard_failure: ShardFailurePolicy,
}

/// A consumer of `spec.stream` whose pipelines turn records into `String`s
/// ([`Utf8Transformer`]) and emit them to `spec.emitter`, with [`fast`]
/// settings.
///
/// # Panics
///
/// When the core refuses the configuration.
#[allow(clippy::expect_used)] // test support: a bad configuration fails the test
pub fn utf8_consumer(spec: Utf8ConsumerSpec<'_>) -> StreamConsumer<Utf8Transformer> {
    let Utf8ConsumerSpec {
        kinesis,
        retrieval,
        application,
        stream,
        store,
        emitter,
        limits,
        bad_records,
        on_shard_failure,
    } = spec;
    fast(StreamConsumer::builder(
        application,
        stream,
        retrieval.source(kinesis),
        store,
        move |_: &ShardContext| {
            Pipeline::builder(Utf8Transformer, Arc::clone(&emitter))
                .buffer_limits(limits)
                .bad_records(bad_records.clone())
                .build()
        },
    ))
    .on_shard_failure(on_shard_failure)
    .build()
    .expect("consumer configuration")
}

/// `"<shard>: <error>"` for every shard of `report` that failed.
pub fn failures(report: &StreamReport) -> Vec<String> {
    report
        .failures()
        .map(|(shard, error)| format!("{shard}: {error}"))
        .collect()
}

/// Fails unless every shard of `report` ended without an error.
///
/// # Panics
///
/// When a shard failed, listing the failures.
pub fn assert_no_failures(report: &StreamReport) {
    let failures = failures(report);
    assert!(failures.is_empty(), "shards failed: {failures:#?}");
}

/// A consumer running in a task, with the token that stops it.
#[derive(Debug)]
pub struct RunningConsumer {
    cancel: CancellationToken,
    handle: JoinHandle<kinesis_connectors_core::Result<StreamReport>>,
}

impl RunningConsumer {
    /// Spawns `consumer.run(cancel)` on the test's runtime.
    pub fn start<T: Transformer>(consumer: StreamConsumer<T>) -> Self {
        let cancel = CancellationToken::new();
        let handle = tokio::spawn(consumer.run(cancel.clone()));
        Self { cancel, handle }
    }

    /// Whether the consumer's task has ended (it should not before a stop).
    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    /// Cancels the consumer, waits (at most [`STOP_WAIT`]) for its report and
    /// checks that no shard failed.
    ///
    /// # Panics
    ///
    /// When the consumer does not stop in time, panicked, returned an error
    /// or a shard failed.
    pub async fn stop(self) -> StreamReport {
        let report = self.stop_within(STOP_WAIT).await;
        assert_no_failures(&report);
        report
    }

    /// Cancels the consumer and waits (at most `limit`) for its report,
    /// without looking at the shards' outcomes.
    ///
    /// # Panics
    ///
    /// When the consumer does not stop in time, panicked or returned an error.
    #[allow(clippy::panic)] // test support: a consumer that does not stop fails the test
    pub async fn stop_within(self, limit: Duration) -> StreamReport {
        self.cancel.cancel();
        match tokio::time::timeout(limit, self.handle).await {
            Err(_) => panic!("the consumer did not stop within {limit:?} of cancel"),
            Ok(Err(e)) => panic!("the consumer task panicked: {e:?}"),
            Ok(Ok(Err(e))) => panic!("the consumer returned an error: {e:?}"),
            Ok(Ok(Ok(report))) => report,
        }
    }

    /// The token and the task, to abort the consumer instead of stopping it.
    pub fn into_parts(
        self,
    ) -> (
        CancellationToken,
        JoinHandle<kinesis_connectors_core::Result<StreamReport>>,
    ) {
        (self.cancel, self.handle)
    }
}
