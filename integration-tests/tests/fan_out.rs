//! Enhanced fan-out (`FanOutConsumer`, `FanOutSource`) against the stack's
//! Kinesis (kinesis-local, or LocalStack's): registration and explicit
//! deregistration, the starting positions, subscriptions cut by the server
//! and renewed before the session limit without losing or repeating a
//! record, and two applications reading one stream each through its own
//! registration.
//!
//! The loop's guarantees (restart from checkpoints, resharding, replays)
//! run with fan-out in `core_consumer.rs`, KPL de-aggregation in
//! `kpl_pipeline.rs`. Run with `cargo xtask it fan_out`.

// Test code: helpers may unwrap and panic like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::net::ToSocketAddrs;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use integration_tests::consumer::{STOP_WAIT, fast};
use integration_tests::proxy::CutProxy;
use integration_tests::{
    PutOptions, RunningConsumer, create_stream, example_binary, fast_shard_config, host_port,
    kinesis_client, put_records, sdk_config, stack, unique_name, wait_until,
};
use kinesis_connectors_core::{
    Batch, BufferLimits, EmitOutcome, Emitter, InitialPosition, MemoryBudget,
    MemoryCheckpointStore, Pipeline, RecordsPage, ShardContext, StreamConsumer, Utf8Transformer,
    async_trait,
};
use kinesis_connectors_kinesis::{Error, FanOutConsumer, FanOutSource};
use kinesis_connectors_testkit::{HookedSource, RecordingEmitter, SourceHooks};

/// The bound of every wait for records.
const WAIT: Duration = Duration::from_secs(120);
/// How long a new consumer needs to open its subscriptions here: a
/// discovery round and a subscribe call, with a wide margin.
const SUBSCRIBED: Duration = Duration::from_secs(3);
/// What the proxy counts: the `X-Amz-Target` of `SubscribeToShard`.
const SUBSCRIBE: &str = "Kinesis_20131202.SubscribeToShard";

/// A consumer named `application` of `stream` through `source`, emitting
/// UTF-8 strings to `emitter`, starting shards without checkpoint at
/// `initial`.
fn consumer(
    application: &str,
    stream: &str,
    source: FanOutSource,
    emitter: &RecordingEmitter<String>,
    initial: InitialPosition,
) -> StreamConsumer<Utf8Transformer> {
    let emitter = emitter.clone();
    let builder = fast(StreamConsumer::builder(
        application,
        stream,
        Arc::new(source),
        Arc::new(MemoryCheckpointStore::new()),
        move |_: &ShardContext| {
            Pipeline::builder(Utf8Transformer, Arc::new(emitter.clone()))
                .buffer_limits(
                    BufferLimits::default()
                        .with_max_records(50)
                        .with_max_age(Duration::from_millis(500)),
                )
                .build()
        },
    ));
    builder
        .shard_config(fast_shard_config().with_initial_position(initial))
        .build()
        .expect("consumer")
}

/// Writes `texts` with one partition key per record, 100 per call.
async fn put(client: &aws_sdk_kinesis::Client, stream: &str, texts: &[String]) {
    let records = texts
        .iter()
        .enumerate()
        .map(|(i, text)| (format!("pk-{i}"), text.clone()));
    put_records(
        client,
        stream,
        records,
        PutOptions {
            per_call: 100,
            ..PutOptions::default()
        },
    )
    .await
    .expect("write records");
}

fn texts(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}-{i}")).collect()
}

/// How often each item was emitted.
fn counts(items: &[String]) -> HashMap<&str, usize> {
    let mut counts = HashMap::new();
    for item in items {
        *counts.entry(item.as_str()).or_default() += 1;
    }
    counts
}

/// Waits until `emitter` has every one of `expected`, then checks it has
/// each exactly once and nothing else.
async fn assert_each_once(what: &str, emitter: &RecordingEmitter<String>, expected: &[String]) {
    assert_each_once_after(what, emitter, expected, 0).await;
}

/// [`assert_each_once`] for the items the emitter got after its first `from`.
async fn assert_each_once_after(
    what: &str,
    emitter: &RecordingEmitter<String>,
    expected: &[String],
    from: usize,
) {
    wait_until(what, WAIT, Duration::from_millis(100), || async {
        emitter.item_count() >= from + expected.len()
    })
    .await;
    // A little longer: a duplicate would show up now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let items = emitter.items().split_off(from);
    let counts = counts(&items);
    let missing: Vec<_> = expected
        .iter()
        .filter(|text| !counts.contains_key(text.as_str()))
        .take(10)
        .collect();
    assert!(missing.is_empty(), "{what}: missing {missing:?}");
    let repeated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).take(10).collect();
    assert!(
        repeated.is_empty(),
        "{what}: emitted more than once: {repeated:?}"
    );
    assert_eq!(items.len(), expected.len(), "{what}: unexpected records");
}

/// Puts rounds of probe records until one round arrives whole, and returns
/// how many items the emitter then holds. A round spans every shard (its
/// partition keys are those `put` gives any 30 records) and a shard's
/// records arrive in order, so a LATEST consumer's subscriptions are all
/// open then, and no earlier probe can arrive later. A fixed wait is not
/// enough: a registration a stopped consumer used may refuse new
/// subscriptions (`ResourceInUseException`) for a while.
async fn wait_subscribed(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    emitter: &RecordingEmitter<String>,
) -> usize {
    let deadline = std::time::Instant::now() + WAIT;
    let mut round = 0;
    loop {
        let probes = texts(&format!("probe{round}"), 0..30);
        put(client, stream, &probes).await;
        let round_end = std::time::Instant::now() + SUBSCRIBED;
        while std::time::Instant::now() < round_end {
            let items = emitter.items();
            if probes.iter().all(|probe| items.contains(probe)) {
                return items.len();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the LATEST consumer's subscriptions did not open within {WAIT:?}"
        );
        round += 1;
    }
}

/// A new stream of `shards` shards named after `prefix`.
async fn new_stream(client: &aws_sdk_kinesis::Client, prefix: &str, shards: i32) -> String {
    let stream = unique_name(prefix);
    create_stream(client, &stream, shards).await.unwrap();
    stream
}

/// Deletes `stream` with its registrations.
async fn delete_stream(client: &aws_sdk_kinesis::Client, stream: &str) {
    client
        .delete_stream()
        .stream_name(stream)
        .enforce_consumer_deletion(true)
        .send()
        .await
        .unwrap();
}

/// A Kinesis client that reaches the stack through `proxy`.
async fn client_through(proxy: &CutProxy) -> aws_sdk_kinesis::Client {
    let config = sdk_config().await;
    let conf = aws_sdk_kinesis::config::Builder::from(&config)
        .endpoint_url(proxy.url())
        .build();
    aws_sdk_kinesis::Client::from_conf(conf)
}

async fn kinesis_proxy() -> CutProxy {
    let (host, port) = host_port(&stack().kinesis_endpoint).expect("Kinesis endpoint");
    let upstream = (host.as_str(), port)
        .to_socket_addrs()
        .expect("resolve Kinesis")
        .next()
        .expect("an address");
    CutProxy::start(upstream, SUBSCRIBE).await.expect("proxy")
}

async fn listed(client: &aws_sdk_kinesis::Client, stream_arn: &str) -> Vec<String> {
    client
        .list_stream_consumers()
        .stream_arn(stream_arn)
        .send()
        .await
        .expect("ListStreamConsumers")
        .consumers()
        .iter()
        .map(|consumer| consumer.consumer_name().to_owned())
        .collect()
}

/// Registering twice gives the same consumer; reading through it and
/// stopping leaves it registered; `deregister` removes it (twice is fine);
/// a stream that does not exist is a clear, permanent error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_registration_is_idempotent_and_deregistration_explicit() {
    let client = kinesis_client().await;
    let stream = new_stream(&client, "efo-registration", 1).await;

    let first = FanOutConsumer::register(&client, &stream, "archiver")
        .await
        .unwrap();
    let again = FanOutConsumer::register(&client, &stream, "archiver")
        .await
        .unwrap();
    assert_eq!(first, again, "registering an existing name finds it");
    assert_eq!(first.stream_name(), stream);
    let by_arn = FanOutConsumer::from_arn(&client, first.arn())
        .await
        .unwrap();
    assert_eq!(by_arn, first);

    let emitter = RecordingEmitter::new();
    let running = RunningConsumer::start(consumer(
        "archiver",
        &stream,
        FanOutSource::new(client.clone(), &first),
        &emitter,
        InitialPosition::TrimHorizon,
    ));
    let expected = texts("registration", 0..20);
    put(&client, &stream, &expected).await;
    assert_each_once("read through the registration", &emitter, &expected).await;
    running.stop().await;
    assert_eq!(
        listed(&client, first.stream_arn()).await,
        vec!["archiver".to_owned()],
        "stopping the consumer leaves the registration alone"
    );

    first.deregister(&client).await.unwrap();
    wait_until("deregistered", WAIT, Duration::from_millis(200), || async {
        listed(&client, first.stream_arn()).await.is_empty()
    })
    .await;
    first
        .deregister(&client)
        .await
        .expect("deregistering twice is fine");
    match FanOutConsumer::from_arn(&client, first.arn()).await {
        Err(Error::Registration { code, .. }) => {
            assert_eq!(code.as_deref(), Some("ResourceNotFoundException"));
        }
        other => panic!("a deregistered consumer is not found, got {other:?}"),
    }

    let missing = FanOutConsumer::register(&client, &unique_name("no-such-stream"), "archiver")
        .await
        .expect_err("no stream, no registration");
    assert!(!missing.is_retryable(), "{missing}");
    assert!(
        missing.to_string().contains("DescribeStreamSummary"),
        "{missing}"
    );
    delete_stream(&client, &stream).await;
}

/// Shards without checkpoint start where `InitialPosition` says:
/// `AT_TIMESTAMP` skips what arrived before the time, `LATEST` what arrived
/// before the subscription.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_starts_at_timestamp_and_at_latest() {
    let client = kinesis_client().await;
    let stream = new_stream(&client, "efo-positions", 2).await;
    let registration = FanOutConsumer::register(&client, &stream, "positions")
        .await
        .unwrap();

    put(&client, &stream, &texts("before", 0..30)).await;
    // Arrival times have millisecond precision: leave a clear gap.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let from = SystemTime::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = texts("after", 0..30);
    put(&client, &stream, &after).await;

    let emitter = RecordingEmitter::new();
    let running = RunningConsumer::start(consumer(
        "positions-at",
        &stream,
        FanOutSource::new(client.clone(), &registration),
        &emitter,
        InitialPosition::AtTimestamp(from),
    ));
    assert_each_once("AT_TIMESTAMP", &emitter, &after).await;
    running.stop().await;

    // The same registration, free again: a LATEST consumer reads only what
    // is written once its subscriptions are open.
    let emitter = RecordingEmitter::new();
    let running = RunningConsumer::start(consumer(
        "positions-latest",
        &stream,
        FanOutSource::new(client.clone(), &registration),
        &emitter,
        InitialPosition::Latest,
    ));
    let probed = wait_subscribed(&client, &stream, &emitter).await;
    let late = texts("late", 0..30);
    put(&client, &stream, &late).await;
    assert_each_once_after("LATEST", &emitter, &late, probed).await;
    running.stop().await;
    delete_stream(&client, &stream).await;
}

/// A live producer while the proxy in front of Kinesis cuts every
/// connection three times, then while sessions are renewed every 5 s: every
/// record arrives exactly once, and the subscriptions counted on the wire
/// show both the resubscriptions after each cut and the renewals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_survives_cut_subscriptions_and_renews_sessions() {
    const SHARDS: u64 = 2;
    const CUTS: u64 = 3;
    let direct = kinesis_client().await;
    let stream = unique_name("efo-cuts");
    create_stream(&direct, &stream, SHARDS as i32)
        .await
        .unwrap();
    let registration = FanOutConsumer::register(&direct, &stream, "cuts")
        .await
        .unwrap();
    let proxy = kinesis_proxy().await;
    let client = client_through(&proxy).await;
    let source = FanOutSource::new(client, &registration)
        .session_limit(Duration::from_secs(5))
        .unwrap();
    let emitter = RecordingEmitter::new();
    let running = RunningConsumer::start(consumer(
        "cuts",
        &stream,
        source,
        &emitter,
        InitialPosition::TrimHorizon,
    ));

    let mut expected = Vec::new();
    let mut round = 0;
    for _ in 0..CUTS {
        let before = proxy.calls();
        for _ in 0..4 {
            let batch = texts(&format!("cut-round-{round}"), 0..25);
            put(&direct, &stream, &batch).await;
            expected.extend(batch);
            round += 1;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        proxy.cut().await;
        wait_until(
            "every shard subscribes again after the cut",
            WAIT,
            Duration::from_millis(100),
            || async { proxy.calls() >= before + SHARDS },
        )
        .await;
    }
    assert_each_once("through the cuts", &emitter, &expected).await;

    // No cuts now: the 5 s session limit alone renews each subscription.
    let before = proxy.calls();
    for _ in 0..12 {
        let batch = texts(&format!("renewal-round-{round}"), 0..10);
        put(&direct, &stream, &batch).await;
        expected.extend(batch);
        round += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_each_once("through the renewals", &emitter, &expected).await;
    let renewals = proxy.calls() - before;
    assert!(
        renewals >= SHARDS * 2,
        "{renewals} subscriptions in 12 s with a 5 s session limit on {SHARDS} shards"
    );
    running.stop().await;
    delete_stream(&direct, &stream).await;
}

/// Two applications, each with its own registration, read one stream at the
/// same time while records are written: each gets every record once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_two_registrations_each_read_the_whole_stream() {
    let client = kinesis_client().await;
    let stream = new_stream(&client, "efo-two", 2).await;
    let mut readers = Vec::new();
    for application in ["billing", "search"] {
        let registration = FanOutConsumer::register(&client, &stream, application)
            .await
            .unwrap();
        let emitter = RecordingEmitter::new();
        let running = RunningConsumer::start(consumer(
            application,
            &stream,
            FanOutSource::new(client.clone(), &registration),
            &emitter,
            InitialPosition::TrimHorizon,
        ));
        readers.push((application, emitter, running));
    }
    let mut expected = Vec::new();
    for round in 0..10 {
        let batch = texts(&format!("two-{round}"), 0..50);
        put(&client, &stream, &batch).await;
        expected.extend(batch);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (application, emitter, running) in readers {
        assert_each_once(application, &emitter, &expected).await;
        let report = running.stop_within(STOP_WAIT).await;
        integration_tests::consumer::assert_no_failures(&report);
    }
    delete_stream(&client, &stream).await;
}

/// Counts the records the source handed to the loop, and the largest page.
#[derive(Default)]
struct ReadCount {
    records: AtomicUsize,
    largest_page: AtomicUsize,
}

impl SourceHooks for ReadCount {
    fn on_page(&self, page: &mut RecordsPage) {
        self.records.fetch_add(page.records.len(), Ordering::SeqCst);
        self.largest_page
            .fetch_max(page.records.len(), Ordering::SeqCst);
    }
}

/// Sleeps before every batch it records, like a slow sink.
#[derive(Clone)]
struct SlowSink {
    recording: RecordingEmitter<String>,
    delay: Duration,
}

#[async_trait]
impl Emitter<String> for SlowSink {
    async fn emit(&self, batch: &Batch<String>) -> kinesis_connectors_core::Result<EmitOutcome> {
        tokio::time::sleep(self.delay).await;
        self.recording.emit(batch).await
    }
}

/// A producer writes three times faster than a slow emitter takes batches,
/// under a 2 MiB memory budget: the subscription is read only as fast as
/// the emitter goes, so the loop holds no more than the page it read ahead
/// and two batches, while the backlog waits at the server (or in the
/// connection's window); the budget's high-water mark stays within it, and
/// every record arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_a_slow_emitter_slows_the_subscription_within_the_memory_budget() {
    const RECORDS: usize = 1_500;
    const BATCH: usize = 50;
    let client = kinesis_client().await;
    let stream = new_stream(&client, "efo-backpressure", 1).await;
    let registration = FanOutConsumer::register(&client, &stream, "slow")
        .await
        .unwrap();

    let budget = MemoryBudget::new(2 * 1024 * 1024).unwrap();
    let source = Arc::new(HookedSource::new(
        FanOutSource::new(client.clone(), &registration),
        ReadCount::default(),
    ));
    let reads = Arc::clone(&source);
    // 50 records per 300 ms: ~170 records/s, a third of what the emulator
    // takes from the producer.
    let sink = SlowSink {
        recording: RecordingEmitter::new(),
        delay: Duration::from_millis(300),
    };
    let emitter = sink.clone();
    let consumer = fast(StreamConsumer::builder(
        "slow",
        &stream,
        source,
        Arc::new(MemoryCheckpointStore::new()),
        move |_: &ShardContext| {
            Pipeline::builder(Utf8Transformer, Arc::new(emitter.clone()))
                .buffer_limits(BufferLimits::default().with_max_records(BATCH))
                .build()
        },
    ))
    .memory_budget(budget.clone())
    .build()
    .unwrap();
    let running = RunningConsumer::start(consumer);
    tokio::time::sleep(SUBSCRIBED).await;

    let padding = "x".repeat(4_000);
    let expected: Vec<String> = (0..RECORDS)
        .map(|i| format!("slow-{i:05} {padding}"))
        .collect();
    for chunk in expected.chunks(100) {
        put(&client, &stream, chunk).await;
    }
    let read = reads.hooks().records.load(Ordering::SeqCst);
    let emitted = sink.recording.item_count();
    let largest = reads.hooks().largest_page.load(Ordering::SeqCst);
    eprintln!(
        "all {RECORDS} written: {read} read by the loop, {emitted} emitted; largest page \
         {largest}; budget high-water {} of {} bytes",
        budget.high_water(),
        budget.bytes()
    );
    // kinesis-mock puts what accumulated since the last event into the
    // next one, so a page may be large; the loop still holds no more
    // than the page it read ahead and the batches it buffers.
    assert!(
        read - emitted <= 2 * BATCH + 2 * largest,
        "{} records read ahead of a slow emitter (pages of at most {largest})",
        read - emitted
    );
    assert_each_once("behind a slow emitter", &sink.recording, &expected).await;
    running.stop().await;
    assert!(
        budget.high_water() <= budget.bytes(),
        "budget high-water {} over {}",
        budget.high_water(),
        budget.bytes()
    );
    delete_stream(&client, &stream).await;
}

/// Runs the `fan-out` command of the examples with `args`; its stdout.
async fn fan_out_command(args: &[&str]) -> String {
    let binary = tokio::task::spawn_blocking(|| example_binary("example-support", "fan-out"))
        .await
        .unwrap();
    let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(binary)
            .args(&args)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run fan-out")
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "fan-out failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The `fan-out` command registers a consumer (printing its ARN), lists it
/// as ACTIVE, and deregisters it; deregistering a missing one says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_command_registers_lists_and_deregisters() {
    let client = kinesis_client().await;
    let stream = new_stream(&client, "efo-command", 1).await;
    let arn = fan_out_command(&["register", "--stream", &stream, "--consumer", "cli"]).await;
    let registered = FanOutConsumer::find(&client, &stream, "cli")
        .await
        .unwrap()
        .expect("registered by the command");
    assert_eq!(arn.trim(), registered.arn());
    let found = FanOutConsumer::list(&client, &stream).await.unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, registered);
    let listed = fan_out_command(&["list", "--stream", &stream]).await;
    assert!(
        listed.contains(&format!("cli\tACTIVE\t{}", registered.arn())),
        "{listed}"
    );
    let removed = fan_out_command(&["deregister", "--stream", &stream, "--consumer", "cli"]).await;
    assert!(removed.contains(registered.arn()), "{removed}");
    wait_until("deregistered", WAIT, Duration::from_millis(200), || async {
        FanOutConsumer::find(&client, &stream, "cli")
            .await
            .unwrap()
            .is_none()
    })
    .await;
    let again = fan_out_command(&["deregister", "--stream", &stream, "--consumer", "cli"]).await;
    assert!(again.contains("nothing to deregister"), "{again}");
    delete_stream(&client, &stream).await;
}
