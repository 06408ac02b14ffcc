//! Several workers sharing a stream through leases in DynamoDB: the core's
//! `StreamConsumer` + `PollingSource` + `LeaseCoordinator` on the
//! `DynamoDbCheckpointStore`, against the stack (kinesis-local for Kinesis,
//! moto for DynamoDB). These are the on-the-stack versions of the core's
//! `tests/leases.rs`.
//!
//! Run with `cargo xtask it leases_dynamodb`. Every worker is a separate
//! tokio task with its own SDK clients and its own store; every test has its
//! own stream and lease table. Failover times are short (3 s; 6 s where a
//! graceful handover must be told apart from an expiry), every wait is
//! bounded, and the measured figures are printed.
//!
//! Each record's data is `r<index>`, unique in the stream.

// Test code: helpers may unwrap and panic like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use integration_tests::consumer::Retrieval;
use integration_tests::one_at_a_time::dynamodb_client;
use integration_tests::{
    PutOptions, Written, create_stream, kinesis_client, put_records, unique_name, wait_until,
};
use kinesis_checkpoint_dynamodb::DynamoDbCheckpointStore;
use kinesis_connectors_core::{
    BadRecordPolicy, BufferLimits, CancellationToken, Checkpoint, CheckpointStore, Error,
    LeaseCoordinator, LeaseStore, Pipeline, Position, Record, Result, SequenceNumber,
    ShardAssigner, ShardConfig, ShardContext, ShardInfo, ShardKey, ShardOutcome, StoredLease,
    StreamConsumer, StreamReport, Utf8Transformer, async_trait, kpl,
};
use kinesis_connectors_testkit::{BoxFuture, HookedStore, RecordingEmitter, StoreHooks};
use tokio::task::JoinHandle;

/// Failover time of most tests: leases are renewed every second.
const FAILOVER: Duration = Duration::from_secs(3);
/// How often each worker lists shards and leases (the minimum the core allows).
const DISCOVERY: Duration = Duration::from_secs(1);
/// The bound of every wait for records.
const WAIT: Duration = Duration::from_secs(120);
/// Records per `PutRecords` call.
const PUT_BATCH: usize = 500;
/// How often a wait checks again.
const POLL: Duration = Duration::from_millis(100);

// ---------------------------------------------------------------------------
// Stream, table, producer
// ---------------------------------------------------------------------------

/// A stream and its lease table, and the test's own view of the table.
struct Fixture {
    app: String,
    stream: String,
    table: String,
    kinesis: aws_sdk_kinesis::Client,
    dynamodb: aws_sdk_dynamodb::Client,
    store: DynamoDbCheckpointStore,
    /// How every worker reads (one registration shared by all workers).
    retrieval: Retrieval,
}

async fn fixture(prefix: &str, shards: i32) -> Fixture {
    fixture_reading(prefix, shards, false).await
}

/// A fixture whose workers read with enhanced fan-out when `fan_out`.
async fn fixture_reading(prefix: &str, shards: i32, fan_out: bool) -> Fixture {
    let kinesis = kinesis_client().await;
    let stream = unique_name(prefix);
    create_stream(&kinesis, &stream, shards).await.unwrap();
    let retrieval = Retrieval::on(fan_out, &kinesis, &stream, "leases").await;
    let app = format!("{stream}-app");
    let table = format!("{stream}-leases");
    let dynamodb = dynamodb_client().await;
    let store = DynamoDbCheckpointStore::builder(dynamodb.clone(), &app, &stream)
        .table(&table)
        .create_table_if_missing(true)
        .build()
        .await
        .unwrap();
    Fixture {
        app,
        stream,
        table,
        kinesis,
        dynamodb,
        store,
        retrieval,
    }
}

impl Fixture {
    async fn leases(&self) -> Vec<StoredLease> {
        self.store
            .list_leases(&self.app, &self.stream)
            .await
            .unwrap()
    }

    /// How many leases each owner holds, from the lease table.
    async fn owners(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for lease in self.leases().await {
            if let Some(owner) = lease.owner {
                *counts.entry(owner).or_default() += 1;
            }
        }
        counts
    }

    fn key(&self, shard_id: &str) -> ShardKey {
        ShardKey::new(&*self.app, &*self.stream, shard_id)
    }

    async fn drop_table(&self) {
        let _ = self
            .dynamodb
            .delete_table()
            .table_name(&self.table)
            .send()
            .await;
    }
}

/// Writes records `r<i>` for `i` in `range` with `PutRecords` (batches of
/// 500, refused entries sent again); returns where each landed.
async fn produce(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    range: Range<usize>,
) -> HashMap<usize, Written> {
    let records = range.clone().map(|i| (format!("pk-{i}"), format!("r{i}")));
    let options = PutOptions {
        per_call: PUT_BATCH,
        max_attempts: 30,
    };
    let written = put_records(client, stream, records, options)
        .await
        .expect("PutRecords kept failing");
    range.zip(written).collect()
}

// ---------------------------------------------------------------------------
// Workers
// ---------------------------------------------------------------------------

/// Makes a worker's fenced checkpoint writes hang, as if its process were
/// paused in the middle of one, until resumed.
///
/// The hanging write holds the shard's `LeaseHandle` (the consumer writes
/// checkpoints and renews under it), so the worker's renewals and discovery
/// rounds stop behind it, as they would in a paused process: its lease
/// expires for the other workers.
#[derive(Default)]
struct Pause {
    paused: AtomicBool,
    resume: CancellationToken,
    /// Writes that waited while paused.
    blocked: AtomicUsize,
    /// Writes that waited while paused and then got `LeaseLost`.
    refused_after_wake: AtomicUsize,
    /// The checkpoint of the first write that waited.
    in_flight: std::sync::Mutex<Option<Checkpoint>>,
}

impl Pause {
    fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
    }

    fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
        self.resume.cancel();
    }

    /// Waits while paused; true if it waited.
    async fn gate(&self, checkpoint: &Checkpoint) -> bool {
        if !self.paused.load(Ordering::SeqCst) {
            return false;
        }
        self.in_flight
            .lock()
            .unwrap()
            .get_or_insert_with(|| checkpoint.clone());
        self.blocked.fetch_add(1, Ordering::SeqCst);
        self.resume.cancelled().await;
        true
    }

    fn after<T>(&self, waited: bool, result: Result<T>) -> Result<T> {
        if waited && matches!(result, Err(Error::LeaseLost { .. })) {
            self.refused_after_wake.fetch_add(1, Ordering::SeqCst);
        }
        result
    }
}

/// A [`Pause`] in front of a worker's fenced writes.
struct Paused(Arc<Pause>);

#[async_trait]
impl StoreHooks for Paused {
    async fn around_fenced_write(
        &self,
        checkpoint: &Checkpoint,
        write: BoxFuture<'_, Result<()>>,
    ) -> Result<()> {
        let waited = self.0.gate(checkpoint).await;
        self.0.after(waited, write.await)
    }
}

/// One worker: its own task, SDK clients, store and lease coordinator.
struct Worker {
    id: String,
    cancel: CancellationToken,
    task: JoinHandle<Result<StreamReport>>,
    emitted: RecordingEmitter<String>,
}

fn spawn_worker(fx: &Fixture, id: &str, failover: Duration, pause: Option<Arc<Pause>>) -> Worker {
    let cancel = CancellationToken::new();
    let emitted = RecordingEmitter::new();
    let (app, stream, table, worker_id) = (
        fx.app.clone(),
        fx.stream.clone(),
        fx.table.clone(),
        id.to_owned(),
    );
    let (run_cancel, emitter) = (cancel.clone(), emitted.clone());
    let retrieval = fx.retrieval.clone();
    let task = tokio::spawn(async move {
        let kinesis = kinesis_client().await;
        let store = DynamoDbCheckpointStore::builder(dynamodb_client().await, &app, &stream)
            .table(&table)
            .build()
            .await
            .map_err(Error::from)?;
        let (checkpoints, leases): (Arc<dyn CheckpointStore>, Arc<dyn LeaseStore>) = match pause {
            Some(pause) => {
                let paused = Arc::new(HookedStore::with_hooks(store, Paused(pause)));
                (paused.clone(), paused)
            }
            None => {
                let store = Arc::new(store);
                (store.clone(), store)
            }
        };
        let coordinator =
            LeaseCoordinator::new(leases, &app, &stream, &worker_id).failover_time(failover);
        let consumer = StreamConsumer::builder(
            &app,
            &stream,
            retrieval.source(&kinesis),
            checkpoints,
            move |_: &ShardContext| {
                Pipeline::builder(Utf8Transformer, Arc::new(emitter.clone()))
                    .buffer_limits(
                        BufferLimits::default()
                            .with_max_records(250)
                            .with_max_age(Duration::from_millis(500)),
                    )
                    .bad_records(BadRecordPolicy::Stop)
                    .build()
            },
        )
        .assigner(Arc::new(coordinator))
        .discovery_interval(DISCOVERY)
        .shard_config(ShardConfig::default().with_idle_delay(Duration::from_millis(250)))
        .build()?;
        consumer.run(run_cancel).await
    });
    Worker {
        id: id.to_owned(),
        cancel,
        task,
        emitted,
    }
}

impl Worker {
    /// Shuts the worker down gracefully and returns its report (bounded).
    async fn stop(self) -> (String, StreamReport) {
        self.cancel.cancel();
        let report = tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .unwrap_or_else(|_| panic!("{} did not stop within 30 s of cancel", self.id))
            .unwrap_or_else(|e| panic!("{} panicked: {e}", self.id))
            .unwrap_or_else(|e| panic!("{} failed: {e}", self.id));
        (self.id, report)
    }
}

/// Every distinct record the workers emitted, and the total with replays.
fn emitted(workers: &[&RecordingEmitter<String>]) -> (HashSet<String>, usize) {
    let mut distinct = HashSet::new();
    let mut total = 0;
    for emitter in workers {
        for item in emitter.items() {
            total += 1;
            distinct.insert(item);
        }
    }
    (distinct, total)
}

/// Waits until every record of `ids` was emitted by one of `emitters`.
async fn wait_emitted(
    what: &str,
    emitters: &[&RecordingEmitter<String>],
    ids: Range<usize>,
) -> Duration {
    let wanted: Vec<String> = ids.map(|i| format!("r{i}")).collect();
    wait_until(what, WAIT, POLL, || {
        let (seen, _) = emitted(emitters);
        let done = wanted.iter().all(|id| seen.contains(id));
        async move { done }
    })
    .await
}

/// Shares of `workers` (0 for a worker holding nothing).
fn shares(owners: &BTreeMap<String, usize>, workers: &[&str]) -> Vec<usize> {
    workers
        .iter()
        .map(|w| owners.get(*w).copied().unwrap_or(0))
        .collect()
}

fn balanced(owners: &BTreeMap<String, usize>, workers: &[&str], shards: usize) -> bool {
    let shares = shares(owners, workers);
    let (min, max) = (
        shares.iter().copied().min().unwrap_or(0),
        shares.iter().copied().max().unwrap_or(0),
    );
    shares.iter().sum::<usize>() == shards && max - min <= 1 && owners.len() == workers.len()
}

fn assert_no_failures(id: &str, report: &StreamReport) {
    let failures: Vec<String> = report
        .failures()
        .map(|(shard, error)| format!("{shard}: {error}"))
        .collect();
    assert!(failures.is_empty(), "{id}: shards failed: {failures:#?}");
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_dynamodb_three_workers_share_eight_shards_and_emit_every_record() {
    three_workers_share_eight_shards(false).await;
}

/// The same with enhanced fan-out: leases move between live workers while
/// they balance, and each new owner subscribes where the old one stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_dynamodb_fan_out_three_workers_share_eight_shards_and_emit_every_record() {
    three_workers_share_eight_shards(true).await;
}

async fn three_workers_share_eight_shards(fan_out: bool) {
    const RECORDS: usize = 10_000;
    let fx = fixture_reading("leases-share", 8, fan_out).await;
    let names = ["w1", "w2", "w3"];
    let workers: Vec<Worker> = names
        .iter()
        .map(|w| spawn_worker(&fx, w, FAILOVER, None))
        .collect();
    let started = Instant::now();
    let written = produce(&fx.kinesis, &fx.stream, 0..RECORDS).await;
    assert_eq!(written.len(), RECORDS);
    let produced = started.elapsed();
    let emitters: Vec<&RecordingEmitter<String>> = workers.iter().map(|w| &w.emitted).collect();
    wait_emitted("all 10,000 records", &emitters, 0..RECORDS).await;
    let all_emitted = started.elapsed();
    let balance = wait_until(
        "shares within one shard",
        Duration::from_secs(30),
        POLL,
        || async { balanced(&fx.owners().await, &names, 8) },
    )
    .await;
    let owners = fx.owners().await;
    let shares = shares(&owners, &names);
    println!(
        "3 workers / 8 shards / {RECORDS} records: produced in {produced:?}, all emitted after {all_emitted:?}, \
         shares {shares:?} (balanced {balance:?} after that)"
    );
    assert!(
        balanced(&owners, &names, 8),
        "shares not within one shard: {owners:?}"
    );

    let mut per_worker = Vec::new();
    for worker in workers {
        let count = worker.emitted.item_count();
        let (id, report) = worker.stop().await;
        assert_no_failures(&id, &report);
        per_worker.push((id, count));
    }
    println!("emitted per worker (replays included): {per_worker:?}");
    let total: usize = per_worker.iter().map(|(_, c)| c).sum();
    println!(
        "{} emitted in total, {} replayed after lease moves",
        total,
        total - RECORDS
    );
    fx.drop_table().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_dynamodb_a_killed_workers_shards_are_taken_over_within_the_failover_bound() {
    let fx = fixture("leases-kill", 6).await;
    let names = ["survivor-a", "survivor-b", "victim"];
    let mut workers: Vec<Worker> = names
        .iter()
        .map(|w| spawn_worker(&fx, w, FAILOVER, None))
        .collect();
    produce(&fx.kinesis, &fx.stream, 0..1_500).await;
    {
        let emitters: Vec<&RecordingEmitter<String>> = workers.iter().map(|w| &w.emitted).collect();
        wait_emitted("the first 1,500 records", &emitters, 0..1_500).await;
    }
    wait_until("two shards each", Duration::from_secs(30), POLL, || async {
        shares(&fx.owners().await, &names) == vec![2, 2, 2]
    })
    .await;
    let victim_shards: Vec<String> = fx
        .leases()
        .await
        .into_iter()
        .filter(|l| l.owner.as_deref() == Some("victim"))
        .map(|l| l.shard_id)
        .collect();

    // Kill: abort the task, no shutdown, no release.
    let victim = workers.pop().unwrap();
    victim.task.abort();
    let killed = Instant::now();
    assert!(victim.task.await.unwrap_err().is_cancelled());
    let producer = {
        let (client, stream) = (fx.kinesis.clone(), fx.stream.clone());
        tokio::spawn(async move { produce(&client, &stream, 1_500..3_000).await })
    };
    // ARCHITECTURE.md's bound: failover + 2 lease scans (a scan is a third
    // of the failover time), whatever the discovery interval.
    let renewal = FAILOVER / 3;
    let scan = FAILOVER / 3;
    let bound = FAILOVER + scan * 2;
    wait_until(
        "the victim's shards to be taken over",
        bound * 3,
        POLL,
        || async {
            let leases = fx.leases().await;
            victim_shards.iter().all(|shard| {
                leases.iter().any(|l| {
                    &l.shard_id == shard
                        && l.owner
                            .as_deref()
                            .is_some_and(|o| o.starts_with("survivor"))
                })
            })
        },
    )
    .await;
    let took = killed.elapsed();
    println!(
        "victim's shards {victim_shards:?} taken over {took:?} after the kill \
         (bound: failover {FAILOVER:?} + 2 × lease scan {scan:?} = {bound:?}); owners now {:?}",
        fx.owners().await
    );
    // Each round of discovery and each take is a few requests: allow 20 %.
    assert!(
        took <= bound + bound / 5,
        "takeover took {took:?}, over the bound {bound:?}"
    );
    assert!(
        took >= FAILOVER - renewal,
        "taken over before the failover time: {took:?}"
    );

    producer.await.unwrap();
    let mut emitters: Vec<&RecordingEmitter<String>> = workers.iter().map(|w| &w.emitted).collect();
    emitters.push(&victim.emitted);
    let caught_up = wait_emitted("all 3,000 records", &emitters, 0..3_000).await;
    let (_, total) = emitted(&emitters);
    println!(
        "all 3,000 records emitted {caught_up:?} after the producer finished; {total} emissions in total"
    );
    for worker in workers {
        let (id, report) = worker.stop().await;
        assert_no_failures(&id, &report);
    }
    fx.drop_table().await;
}

#[tokio::test]
async fn leases_dynamodb_a_stale_lease_cannot_write_after_a_takeover() {
    let fx = fixture("leases-stale", 1).await;
    let shard = "shardId-000000000000";
    let key = fx.key(shard);
    let failover = Duration::from_secs(1);
    let shards = [ShardInfo::open(shard)];
    let sleepy = LeaseCoordinator::new(Arc::new(fx.store.clone()), &*fx.app, &*fx.stream, "sleepy")
        .failover_time(failover);
    let lease = sleepy
        .acquire(&fx.stream, &shards, &[])
        .await
        .unwrap()
        .remove(0);
    let at = |n: u64| Checkpoint::At(Position::new(n.into()));
    fx.store.set_fenced(&key, &at(100), &lease).await.unwrap();

    // Sleepy pauses (no renewals); awake takes over once the lease expired.
    let awake_store =
        DynamoDbCheckpointStore::builder(dynamodb_client().await, &fx.app, &fx.stream)
            .table(&fx.table)
            .build()
            .await
            .unwrap();
    let awake = LeaseCoordinator::new(
        Arc::new(awake_store.clone()),
        &*fx.app,
        &*fx.stream,
        "awake",
    )
    .failover_time(failover);
    let stopped = Instant::now();
    let theirs = loop {
        if let Some(lease) = awake.acquire(&fx.stream, &shards, &[]).await.unwrap().pop() {
            break lease;
        }
        assert!(
            stopped.elapsed() < failover * 5,
            "awake never took the expired lease"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let took = stopped.elapsed();
    println!("awake took the lease {took:?} after it stopped moving (failover {failover:?})");
    assert!(took >= failover, "taken before the failover time: {took:?}");
    awake_store
        .set_fenced(&key, &at(200), &theirs)
        .await
        .unwrap();

    // Sleepy wakes up with its old lease: every write is refused, older or newer.
    for checkpoint in [at(150), at(10_000), Checkpoint::ShardEnd] {
        let refused = fx.store.set_fenced(&key, &checkpoint, &lease).await;
        assert!(
            matches!(&refused, Err(Error::LeaseLost { owner: Some(owner), .. }) if owner == "awake"),
            "{checkpoint}: {refused:?}"
        );
    }
    assert!(matches!(
        sleepy.renew(&lease).await,
        Err(Error::LeaseLost { .. })
    ));
    sleepy.release(&lease).await.unwrap();
    assert_eq!(fx.store.get(&key).await.unwrap(), Some(at(200)));
    let leases = fx.leases().await;
    assert_eq!(leases[0].owner.as_deref(), Some("awake"), "{leases:?}");
    fx.drop_table().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_dynamodb_a_paused_worker_that_wakes_up_cannot_overwrite_a_newer_checkpoint() {
    let fx = fixture("leases-pause", 1).await;
    let shard = "shardId-000000000000";
    let key = fx.key(shard);
    let pause = Arc::new(Pause::default());
    let sleepy = spawn_worker(&fx, "sleepy", FAILOVER, Some(pause.clone()));
    let written = produce(&fx.kinesis, &fx.stream, 0..300).await;
    let last_of = |written: &HashMap<usize, Written>| {
        written.values().map(|w| w.sequence.clone()).max().unwrap()
    };
    let first_last = last_of(&written);
    wait_until("sleepy to checkpoint the first 300 records", WAIT, POLL, || async {
        matches!(fx.store.get(&key).await.unwrap(), Some(Checkpoint::At(p)) if p.sequence >= first_last)
    })
    .await;
    let awake = spawn_worker(&fx, "awake", FAILOVER, None);
    tokio::time::sleep(DISCOVERY * 2).await;
    assert_eq!(fx.owners().await.get("sleepy"), Some(&1));

    // Sleepy pauses: it reads and emits the next records, then hangs in its
    // checkpoint write (and its renewals and discovery behind it).
    pause.pause();
    let paused = Instant::now();
    let more = produce(&fx.kinesis, &fx.stream, 300..600).await;
    let second_last = last_of(&more);
    wait_until(
        "sleepy to block in a checkpoint write",
        WAIT,
        POLL,
        || async { pause.blocked.load(Ordering::SeqCst) >= 1 },
    )
    .await;
    wait_until(
        "awake to take the lease",
        Duration::from_secs(30),
        POLL,
        || async { fx.owners().await.get("awake") == Some(&1) },
    )
    .await;
    println!(
        "awake took the paused worker's lease {:?} after the pause began (failover {FAILOVER:?})",
        paused.elapsed()
    );
    wait_until("awake to checkpoint past the last record", WAIT, POLL, || async {
        matches!(fx.store.get(&key).await.unwrap(), Some(Checkpoint::At(p)) if p.sequence >= second_last)
    })
    .await;
    let newer = fx.store.get(&key).await.unwrap();

    // Sleepy wakes up: its in-flight write carries the old lease.
    pause.resume();
    wait_until(
        "sleepy's in-flight write to be refused",
        Duration::from_secs(30),
        POLL,
        || async { pause.refused_after_wake.load(Ordering::SeqCst) >= 1 },
    )
    .await;
    tokio::time::sleep(DISCOVERY * 2).await;
    assert_eq!(
        fx.store.get(&key).await.unwrap(),
        newer,
        "the newer checkpoint was overwritten"
    );
    let item = fx
        .dynamodb
        .get_item()
        .table_name(&fx.table)
        .key("leaseKey", AttributeValue::S(shard.to_owned()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    assert_eq!(
        item.get("leaseOwner"),
        Some(&AttributeValue::S("awake".into()))
    );
    println!(
        "sleepy: {} write(s) hung while paused (the first for {:?}), {} refused with LeaseLost after waking; \
         the checkpoint stayed {:?}",
        pause.blocked.load(Ordering::SeqCst),
        pause
            .in_flight
            .lock()
            .unwrap()
            .as_ref()
            .map(|c| c.to_string()),
        pause.refused_after_wake.load(Ordering::SeqCst),
        newer.map(|c| c.to_string())
    );

    let emitters = [&sleepy.emitted, &awake.emitted];
    wait_emitted("all 600 records", &emitters, 0..600).await;
    let (id, sleepy_report) = sleepy.stop().await;
    assert!(
        sleepy_report
            .shards
            .iter()
            .any(|r| r.shard_id == shard && matches!(r.outcome, ShardOutcome::LeaseLost)),
        "{id}: {:?}",
        sleepy_report.shards
    );
    let (id, report) = awake.stop().await;
    assert_no_failures(&id, &report);
    fx.drop_table().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_dynamodb_a_fourth_worker_joins_and_its_graceful_shutdown_hands_the_leases_over() {
    // Longer failover, so a handover at the next discovery round is clearly
    // not an expiry.
    let failover = Duration::from_secs(6);
    let fx = fixture("leases-join", 8).await;
    let three = ["w1", "w2", "w3"];
    let workers: Vec<Worker> = three
        .iter()
        .map(|w| spawn_worker(&fx, w, failover, None))
        .collect();
    produce(&fx.kinesis, &fx.stream, 0..2_000).await;
    {
        let emitters: Vec<&RecordingEmitter<String>> = workers.iter().map(|w| &w.emitted).collect();
        wait_emitted("the first 2,000 records", &emitters, 0..2_000).await;
    }
    wait_until(
        "three balanced workers",
        Duration::from_secs(30),
        POLL,
        || async { balanced(&fx.owners().await, &three, 8) },
    )
    .await;
    println!("before the join: {:?}", fx.owners().await);

    let fourth = spawn_worker(&fx, "w4", failover, None);
    let four = ["w1", "w2", "w3", "w4"];
    let rebalanced = wait_until("two shards each", Duration::from_secs(30), POLL, || async {
        shares(&fx.owners().await, &four) == vec![2, 2, 2, 2]
    })
    .await;
    println!("w4 joined: every worker holds 2 shards after {rebalanced:?}");
    produce(&fx.kinesis, &fx.stream, 2_000..2_800).await;
    {
        let mut emitters: Vec<&RecordingEmitter<String>> =
            workers.iter().map(|w| &w.emitted).collect();
        emitters.push(&fourth.emitted);
        wait_emitted("records 2,000..2,800", &emitters, 2_000..2_800).await;
    }

    let held_by_w4: Vec<StoredLease> = fx
        .leases()
        .await
        .into_iter()
        .filter(|l| l.owner.as_deref() == Some("w4"))
        .collect();
    let fourth_emitted = fourth.emitted.clone();
    let (id, report) = fourth.stop().await;
    let returned = Instant::now();
    let after = fx.leases().await;
    assert_no_failures(&id, &report);
    for shard in &report.shards {
        assert!(matches!(shard.outcome, ShardOutcome::Shutdown), "{shard:?}");
        assert_eq!(
            shard.stats.records_read, shard.stats.records_emitted,
            "{shard:?}"
        );
    }
    let mut free = 0;
    for held in &held_by_w4 {
        let now = after.iter().find(|l| l.shard_id == held.shard_id).unwrap();
        match now.owner.as_deref() {
            None => free += 1,
            Some("w4") => panic!(
                "{} still held by w4 after its shutdown returned",
                held.shard_id
            ),
            // Already taken by another worker's discovery round: handed over.
            Some(_) => assert!(now.counter > held.counter + 1, "{now:?}"),
        }
    }
    println!(
        "right after w4's shutdown returned: {free} of its {} leases free, {} already taken by another worker",
        held_by_w4.len(),
        held_by_w4.len() - free
    );
    wait_until("w1-w3 to hold all 8 shards", failover, POLL, || async {
        shares(&fx.owners().await, &three).iter().sum::<usize>() == 8
    })
    .await;
    let handed_over = returned.elapsed();
    println!(
        "w4's leases were taken over {handed_over:?} after its shutdown returned (failover {failover:?}); owners {:?}",
        fx.owners().await
    );
    assert!(
        handed_over < failover,
        "handover took the failover time: not released?"
    );

    produce(&fx.kinesis, &fx.stream, 2_800..3_200).await;
    let mut emitters: Vec<&RecordingEmitter<String>> = workers.iter().map(|w| &w.emitted).collect();
    emitters.push(&fourth_emitted);
    wait_emitted("all 3,200 records", &emitters, 0..3_200).await;
    for worker in workers {
        let (id, report) = worker.stop().await;
        assert_no_failures(&id, &report);
    }
    fx.drop_table().await;
}

/// Puts a lease item as the KCL writes it.
async fn put_kcl_lease(
    fx: &Fixture,
    shard_id: &str,
    checkpoint: &SequenceNumber,
    sub_sequence: u64,
) {
    let n = |v: u64| AttributeValue::N(v.to_string());
    fx.dynamodb
        .put_item()
        .table_name(&fx.table)
        .item("leaseKey", AttributeValue::S(shard_id.to_owned()))
        .item("checkpoint", AttributeValue::S(checkpoint.to_string()))
        .item("checkpointSubSequenceNumber", n(sub_sequence))
        .item("leaseOwner", AttributeValue::S("kcl-worker".into()))
        .item("leaseCounter", n(42))
        .item("ownerSwitchesSinceCheckpoint", n(0))
        .send()
        .await
        .unwrap();
}

/// Writes `count` records to a one-shard stream, puts a KCL lease whose
/// checkpoint is the record `at`, runs one worker until every later record
/// was emitted, and returns (records in shard order, emitted, takeover time).
async fn resume_from_kcl(
    prefix: &str,
    count: usize,
    at: usize,
) -> (Vec<(usize, Written)>, HashSet<String>, Duration, Fixture) {
    let fx = fixture(prefix, 1).await;
    let mut written: Vec<(usize, Written)> = produce(&fx.kinesis, &fx.stream, 0..count)
        .await
        .into_iter()
        .collect();
    written.sort_by(|a, b| a.1.sequence.cmp(&b.1.sequence));
    let (shard_id, checkpoint) = (
        written[at].1.shard_id.clone(),
        written[at].1.sequence.clone(),
    );
    put_kcl_lease(&fx, &shard_id, &checkpoint, 0).await;
    let worker = spawn_worker(&fx, "rust-worker", FAILOVER, None);
    let started = Instant::now();
    let took = wait_until(
        "the KCL worker's lease to be taken",
        Duration::from_secs(30),
        POLL,
        || async { fx.owners().await.get("rust-worker") == Some(&1) },
    )
    .await;
    let later: Vec<String> = written[at + 1..]
        .iter()
        .map(|(i, _)| format!("r{i}"))
        .collect();
    wait_until("every record after the KCL checkpoint", WAIT, POLL, || {
        let seen: HashSet<String> = worker.emitted.items().into_iter().collect();
        let done = later.iter().all(|id| seen.contains(id));
        async move { done }
    })
    .await;
    // Let a last batch through, if any, before stopping.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let emitted: HashSet<String> = worker.emitted.items().into_iter().collect();
    let (id, report) = worker.stop().await;
    assert_no_failures(&id, &report);
    println!(
        "{prefix}: KCL lease (owner kcl-worker, counter 42, checkpoint = record {at}) taken {took:?} after start \
         (failover {FAILOVER:?}); {} records emitted in {:?}",
        emitted.len(),
        started.elapsed()
    );
    (written, emitted, took, fx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_dynamodb_a_kcl_checkpoint_is_resumed_without_replaying_what_came_before() {
    let (written, emitted, took, fx) = resume_from_kcl("leases-kcl", 300, 100).await;
    assert!(
        took >= FAILOVER - DISCOVERY,
        "the KCL lease was taken before it expired: {took:?}"
    );
    let before: Vec<usize> = written[..100]
        .iter()
        .map(|(i, _)| *i)
        .filter(|i| emitted.contains(&format!("r{i}")))
        .collect();
    assert!(
        before.is_empty(),
        "records before the KCL checkpoint were emitted: {before:?}"
    );
    for (i, _) in &written[101..] {
        assert!(
            emitted.contains(&format!("r{i}")),
            "record r{i} after the checkpoint is missing"
        );
    }
    let at_checkpoint = format!("r{}", written[100].0);
    assert!(
        !emitted.contains(&at_checkpoint),
        "{at_checkpoint}, the record at the KCL checkpoint, was emitted again"
    );
    let item = fx
        .dynamodb
        .get_item()
        .table_name(&fx.table)
        .key("leaseKey", AttributeValue::S(written[0].1.shard_id.clone()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    let last = written.last().unwrap().1.sequence.to_string();
    assert_eq!(
        item.get("checkpoint"),
        Some(&AttributeValue::S(last.clone()))
    );
    assert_eq!(
        item.get("wholeRecordCheckpoint"),
        Some(&AttributeValue::S(last))
    );
    assert_eq!(
        item.get("checkpointSubSequenceNumber"),
        Some(&AttributeValue::N("0".into()))
    );
    assert_eq!(
        item.get("ownerSwitchesSinceCheckpoint"),
        Some(&AttributeValue::N("0".into()))
    );
    // Taken (43), then released at shutdown (44), plus renewals in between.
    let counter: u64 = match item.get("leaseCounter") {
        Some(AttributeValue::N(n)) => n.parse().unwrap(),
        other => panic!("leaseCounter: {other:?}"),
    };
    assert!(counter >= 44, "counter {counter}");
    assert!(
        !item.contains_key("leaseOwner"),
        "released at shutdown: {item:?}"
    );
    fx.drop_table().await;
}

/// A KCL application checkpointed inside a KPL aggregate (its sequence
/// number, sub-sequence 2): the worker that takes the lease over emits the
/// aggregate's sub-records from 3 on and what follows, each once, and
/// nothing before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_dynamodb_a_kcl_checkpoint_inside_an_aggregate_resumes_at_the_next_sub_record() {
    let fx = fixture("leases-kcl-agg", 1).await;
    produce(&fx.kinesis, &fx.stream, 0..10).await;
    let subs: Vec<Record> = (0..6)
        .map(|i| Record::new(format!("a{i}"), format!("pk-a{i}"), 0u64))
        .collect();
    let aggregate = put_records(
        &fx.kinesis,
        &fx.stream,
        [("pk-aggregate".to_owned(), kpl::aggregate(&subs))],
        PutOptions::default(),
    )
    .await
    .unwrap()
    .remove(0);
    produce(&fx.kinesis, &fx.stream, 10..20).await;
    put_kcl_lease(&fx, &aggregate.shard_id, &aggregate.sequence, 2).await;

    let worker = spawn_worker(&fx, "rust-worker", FAILOVER, None);
    let later: Vec<String> = (3..6)
        .map(|i| format!("a{i}"))
        .chain((10..20).map(|i| format!("r{i}")))
        .collect();
    wait_until("every item after the KCL checkpoint", WAIT, POLL, || {
        let seen: HashSet<String> = worker.emitted.items().into_iter().collect();
        let done = later.iter().all(|id| seen.contains(id));
        async move { done }
    })
    .await;
    // Let a last batch through, if any, before stopping.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut emitted = worker.emitted.items();
    let (id, report) = worker.stop().await;
    assert_no_failures(&id, &report);
    fx.drop_table().await;
    emitted.sort();
    let mut expected = later;
    expected.sort();
    assert_eq!(
        emitted, expected,
        "sub-records 0..=2 of the aggregate and the records before it are done; the rest comes once"
    );
}

/// The record at a KCL `(sequence, 0)` checkpoint was processed by the KCL
/// (for a record that is not KPL-aggregated, which this one is not) and is
/// not emitted again: the core treats a whole record as covered by a
/// checkpoint at its sequence number with any sub-sequence number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_dynamodb_the_record_at_a_kcl_checkpoint_is_not_emitted_again() {
    let (written, emitted, _, fx) = resume_from_kcl("leases-kcl-at", 20, 10).await;
    let at_checkpoint = format!("r{}", written[10].0);
    fx.drop_table().await;
    assert!(
        !emitted.contains(&at_checkpoint),
        "{at_checkpoint}, the record at the KCL checkpoint (sequence {}, sub-sequence 0), was emitted again",
        written[10].1.sequence
    );
}
