//! The lease protocol: balancing, expiry, fencing and handoff between
//! several workers sharing one stream, on the in-memory lease store.

// Test code: helpers outside #[test] fns fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kinesis_connectors_core::{
    Batch, BufferLimits, CancellationToken, Checkpoint, CheckpointStore, EmitOutcome, Emitter,
    Error, Lease, LeaseCoordinator, LeaseStore, MemoryCheckpointStore, Pipeline, Position,
    RecordSource, ShardAssigner, ShardConfig, ShardContext, ShardInfo, ShardKey, ShardOutcome,
    StreamConsumer, StreamReport, Utf8Transformer, async_trait,
};
use kinesis_connectors_testkit::{
    HookedSource, LeaseCapabilities, OutageStore, RecordingEmitter, RenewalAppliedButFailed,
    ScriptedSource, SourceHooks, lease_conformance,
};

const APP: &str = "test-app";
const STREAM: &str = "test-stream";

fn shards(n: usize) -> Vec<ShardInfo> {
    (0..n)
        .map(|i| ShardInfo::open(format!("shard-{i}")))
        .collect()
}

fn coordinator(store: &MemoryCheckpointStore, worker: &str) -> LeaseCoordinator {
    coordinator_on(Arc::new(store.clone()), worker)
}

/// The tests' lease timing: failover 10 s, renewals and lease scans every 3.3 s.
fn coordinator_on(store: Arc<dyn LeaseStore>, worker: &str) -> LeaseCoordinator {
    LeaseCoordinator::new(store, APP, STREAM, worker).failover_time(Duration::from_secs(10))
}

async fn owners(store: &dyn LeaseStore) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for lease in store.list_leases(APP, STREAM).await.unwrap() {
        if let Some(owner) = lease.owner {
            *counts.entry(owner).or_default() += 1;
        }
    }
    counts
}

#[tokio::test(start_paused = true)]
async fn the_memory_store_passes_lease_conformance() {
    let report = lease_conformance::run_all(
        Arc::new(MemoryCheckpointStore::new()),
        LeaseCapabilities::new(),
    )
    .await;
    assert!(report.is_success(), "{report}");
}

#[tokio::test(start_paused = true)]
async fn workers_converge_to_balanced_shares_one_lease_at_a_time() {
    let store = MemoryCheckpointStore::new();
    let all = shards(8);
    let workers: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|w| coordinator(&store, w))
        .collect();
    let mut held: HashMap<usize, Vec<Lease>> = HashMap::new();
    // The first worker alone takes everything.
    held.insert(0, workers[0].acquire(STREAM, &all, &[]).await.unwrap());
    assert_eq!(held[&0].len(), 8);
    for round in 0..12 {
        for (i, worker) in workers.iter().enumerate().skip(1) {
            let mine = held.entry(i).or_default();
            let taken = worker.acquire(STREAM, &all, mine).await.unwrap();
            assert!(
                taken.len() <= 1,
                "round {round}: took {} leases at once by stealing",
                taken.len()
            );
            mine.extend(taken);
        }
        // Owners keep renewing; a renewal of a stolen lease is lost.
        for (i, worker) in workers.iter().enumerate() {
            let mine = held.entry(i).or_default();
            let mut kept = Vec::new();
            for lease in mine.drain(..) {
                if let Ok(renewed) = worker.renew(&lease).await {
                    kept.push(renewed);
                }
            }
            *mine = kept;
        }
        tokio::time::advance(Duration::from_secs(3)).await;
    }
    let counts = owners(&store).await;
    let shares: Vec<usize> = ["a", "b", "c"]
        .iter()
        .map(|w| counts.get(*w).copied().unwrap_or(0))
        .collect();
    assert_eq!(shares.iter().sum::<usize>(), 8);
    let (min, max) = (shares.iter().min().unwrap(), shares.iter().max().unwrap());
    assert!(max - min <= 1, "shares not within one shard: {shares:?}");
}

#[tokio::test(start_paused = true)]
async fn an_abandoned_lease_is_taken_after_failover_and_its_old_owner_is_fenced() {
    let store = MemoryCheckpointStore::new();
    let all = shards(1);
    let first = coordinator(&store, "first");
    let second = coordinator(&store, "second");
    let lease = first.acquire(STREAM, &all, &[]).await.unwrap().remove(0);
    let key = ShardKey::new(APP, STREAM, "shard-0");
    store
        .set_fenced(&key, &Checkpoint::At(Position::new(5u64.into())), &lease)
        .await
        .unwrap();
    assert!(second.acquire(STREAM, &all, &[]).await.unwrap().is_empty());
    tokio::time::advance(Duration::from_secs(9)).await;
    assert!(
        second.acquire(STREAM, &all, &[]).await.unwrap().is_empty(),
        "taken before failover"
    );
    tokio::time::advance(Duration::from_secs(2)).await;
    let taken = second.acquire(STREAM, &all, &[]).await.unwrap();
    assert_eq!(taken.len(), 1);
    store
        .set_fenced(&key, &Checkpoint::At(Position::new(9u64.into())), &taken[0])
        .await
        .unwrap();
    // The paused first worker wakes up: it cannot overwrite the newer checkpoint.
    let late = store
        .set_fenced(&key, &Checkpoint::At(Position::new(7u64.into())), &lease)
        .await;
    assert!(matches!(
        late,
        Err(kinesis_connectors_core::Error::LeaseLost { .. })
    ));
    assert!(first.renew(&lease).await.is_err());
    assert_eq!(
        store.get(&key).await.unwrap(),
        Some(Checkpoint::At(Position::new(9u64.into())))
    );
}

#[tokio::test(start_paused = true)]
async fn parents_are_taken_before_children() {
    let store = MemoryCheckpointStore::new();
    let mut all = shards(10);
    all[1].parent_shard_id = Some("shard-0".into());
    // a holds three, b holds three: a's target is four, so it takes one more.
    let mut held_by_a = Vec::new();
    for (i, owner) in [(2, "a"), (3, "a"), (4, "a"), (7, "b"), (8, "b"), (9, "b")] {
        let key = ShardKey::new(APP, STREAM, format!("shard-{i}"));
        store.create_lease(&key, &[]).await.unwrap();
        let lease = store.take_lease(&key, 0, owner).await.unwrap().unwrap();
        if owner == "a" {
            held_by_a.push(lease);
        }
    }
    let a = coordinator(&store, "a");
    let wanted: Vec<ShardInfo> = [1, 0, 2, 3, 4, 7, 8, 9]
        .iter()
        .map(|&i| all[i].clone())
        .collect();
    let taken = a.acquire(STREAM, &wanted, &held_by_a).await.unwrap();
    let ids: Vec<&str> = taken.iter().map(|l| l.shard_id.as_str()).collect();
    assert_eq!(
        ids,
        vec!["shard-0"],
        "the child was preferred over its parent"
    );
}

/// Waits until `n` distinct items arrived (replays after a lease moves
/// repeat some items).
async fn wait_for_distinct(
    emitter: &RecordingEmitter<String>,
    n: usize,
    timeout: Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if emitter.items().into_iter().collect::<HashSet<_>>().len() >= n {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn consumer(
    source: &ScriptedSource,
    store: &MemoryCheckpointStore,
    emitter: &RecordingEmitter<String>,
    worker: &str,
) -> StreamConsumer<Utf8Transformer> {
    consumer_discovering_every(source, store, emitter, worker, Duration::from_secs(2))
}

fn consumer_discovering_every(
    source: &ScriptedSource,
    store: &MemoryCheckpointStore,
    emitter: &RecordingEmitter<String>,
    worker: &str,
    discovery: Duration,
) -> StreamConsumer<Utf8Transformer> {
    let store = Arc::new(store.clone());
    consumer_with(
        Arc::new(source.clone()),
        store.clone(),
        coordinator_on(store, worker),
        Arc::new(emitter.clone()),
        discovery,
    )
}

/// A worker of the tests, from its parts.
fn consumer_with(
    source: Arc<dyn RecordSource>,
    checkpoints: Arc<dyn CheckpointStore>,
    leases: LeaseCoordinator,
    emitter: Arc<dyn Emitter<String>>,
    discovery: Duration,
) -> StreamConsumer<Utf8Transformer> {
    StreamConsumer::builder(APP, STREAM, source, checkpoints, move |_: &ShardContext| {
        Pipeline::builder(Utf8Transformer, Arc::clone(&emitter))
            .buffer_limits(
                BufferLimits::default()
                    .with_max_records(50)
                    .with_max_age(Duration::from_secs(1)),
            )
            .build()
    })
    .assigner(Arc::new(leases))
    .discovery_interval(discovery)
    .shard_config(ShardConfig::default().with_idle_delay(Duration::from_millis(500)))
    .build()
    .unwrap()
}

fn produce(source: &ScriptedSource, shard_count: usize, from: usize, per_shard: usize) -> usize {
    for s in 0..shard_count {
        source.append(
            &format!("shard-{s}"),
            (from..from + per_shard)
                .map(|i| (format!("pk-{i}"), Bytes::from(format!("s{s}-{i}"))))
                .collect(),
        );
    }
    shard_count * per_shard
}

#[tokio::test(start_paused = true)]
async fn three_workers_share_eight_shards_and_a_fourth_joins_then_leaves_gracefully() {
    let source = ScriptedSource::new();
    for shard in shards(8) {
        source.add_shard(shard);
    }
    let total = produce(&source, 8, 0, 100);
    let store = MemoryCheckpointStore::new();
    let emitter = RecordingEmitter::new();
    let mut cancels = Vec::new();
    let mut tasks = Vec::new();
    for worker in ["w1", "w2", "w3"] {
        let cancel = CancellationToken::new();
        tasks.push(tokio::spawn(
            consumer(&source, &store, &emitter, worker).run(cancel.clone()),
        ));
        cancels.push(cancel);
    }
    assert!(wait_for_distinct(&emitter, total, Duration::from_secs(300)).await);
    tokio::time::sleep(Duration::from_secs(60)).await;
    let counts = owners(&store).await;
    let shares: Vec<usize> = ["w1", "w2", "w3"]
        .iter()
        .map(|w| counts.get(*w).copied().unwrap_or(0))
        .collect();
    assert_eq!(shares.iter().sum::<usize>(), 8, "{counts:?}");
    assert!(
        shares.iter().max().unwrap() - shares.iter().min().unwrap() <= 1,
        "{shares:?}"
    );

    // A fourth worker joins: within a bounded time everyone holds 2.
    let cancel4 = CancellationToken::new();
    let task4 = tokio::spawn(consumer(&source, &store, &emitter, "w4").run(cancel4.clone()));
    tokio::time::sleep(Duration::from_secs(90)).await;
    let counts = owners(&store).await;
    for worker in ["w1", "w2", "w3", "w4"] {
        assert_eq!(
            counts.get(worker).copied().unwrap_or(0),
            2,
            "after rebalancing: {counts:?}"
        );
    }
    let more = produce(&source, 8, 100, 10);
    assert!(wait_for_distinct(&emitter, total + more, Duration::from_secs(60)).await);

    // w4 shuts down gracefully: its leases are free at once, not after failover.
    cancel4.cancel();
    task4.await.unwrap().unwrap();
    let leases = store.list_leases(APP, STREAM).await.unwrap();
    assert!(leases.iter().all(|l| l.owner.as_deref() != Some("w4")));
    assert_eq!(leases.iter().filter(|l| l.owner.is_none()).count(), 2);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let counts = owners(&store).await;
    assert_eq!(
        counts.values().sum::<usize>(),
        8,
        "freed leases were not taken promptly: {counts:?}"
    );

    for cancel in &cancels {
        cancel.cancel();
    }
    let mut reports: Vec<StreamReport> = Vec::new();
    for task in tasks {
        reports.push(task.await.unwrap().unwrap());
    }
    // No record lost; duplicates only where a lease moved (replay after the checkpoint).
    let items: HashSet<String> = emitter.items().into_iter().collect();
    assert_eq!(items.len(), total + more);
    for s in 0..8 {
        let key = ShardKey::new(APP, STREAM, format!("shard-{s}"));
        assert!(matches!(
            store.get(&key).await.unwrap(),
            Some(Checkpoint::At(_))
        ));
    }
}

/// The failover bound of ARCHITECTURE.md: a killed worker's shards are read
/// again by another within `failover + 2 × acquire interval` of the kill,
/// whatever the discovery interval (60 s here, longer than the bound).
#[tokio::test(start_paused = true)]
async fn a_killed_worker_loses_its_shards_to_the_others_within_the_failover_bound() {
    let source = ScriptedSource::new();
    for shard in shards(4) {
        source.add_shard(shard);
    }
    let total = produce(&source, 4, 0, 20);
    let store = MemoryCheckpointStore::new();
    let emitter = RecordingEmitter::new();
    let discovery = Duration::from_secs(60);
    let survivor_cancel = CancellationToken::new();
    let survivor = tokio::spawn(
        consumer_discovering_every(&source, &store, &emitter, "survivor", discovery)
            .run(survivor_cancel.clone()),
    );
    let victim = tokio::spawn(
        consumer_discovering_every(&source, &store, &emitter, "victim", discovery)
            .run(CancellationToken::new()),
    );
    assert!(wait_for_distinct(&emitter, total, Duration::from_secs(120)).await);
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(owners(&store).await.get("victim").copied().unwrap_or(0) > 0);
    victim.abort();
    let killed_at = tokio::time::Instant::now();
    let more = produce(&source, 4, 20, 5);
    let timing = coordinator(&store, "any");
    let failover = timing.lease_expiry().unwrap();
    let (renewal, acquire) = (
        timing.renew_interval().unwrap(),
        timing.lease_scan_interval().unwrap(),
    );
    let bound = failover + acquire * 2;
    let deadline = killed_at + bound * 2;
    loop {
        if owners(&store).await.get("survivor").copied().unwrap_or(0) == 4 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "shards not taken over within twice the bound {bound:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = killed_at.elapsed();
    assert!(
        took <= bound,
        "taken over {took:?} after the kill, over the bound {bound:?}"
    );
    // The victim's last renewal came up to one renewal interval before the kill.
    assert!(
        took >= failover - renewal,
        "taken over before failover: {took:?}"
    );
    assert!(wait_for_distinct(&emitter, total + more, Duration::from_secs(60)).await);
    let items: HashSet<String> = emitter.items().into_iter().collect();
    assert_eq!(items.len(), total + more, "records lost");
    survivor_cancel.cancel();
    survivor.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_renewal_applied_but_answered_with_an_error_keeps_the_lease() {
    let key = ShardKey::new(APP, STREAM, "shard-0");
    let answers = [
        Error::LeaseLost {
            shard_id: "shard-0".into(),
            owner: Some("a".into()),
        },
        Error::checkpoint_retryable("the reply did not come in time"),
    ];
    for answer in answers {
        let memory = MemoryCheckpointStore::new();
        let store = Arc::new(RenewalAppliedButFailed::new(memory.clone()));
        let a = LeaseCoordinator::new(store.clone(), APP, STREAM, "a");
        let lease = a.acquire(STREAM, &shards(1), &[]).await.unwrap().remove(0);
        store.answer_next_renewal_with(answer);
        let renewed = a.renew(&lease).await.unwrap();
        assert_eq!(
            renewed.counter,
            lease.counter + 2,
            "the applied renewal, then one more"
        );
        let checkpoint = Checkpoint::At(Position::new("7".parse().unwrap()));
        memory
            .set_fenced(&key, &checkpoint, &renewed)
            .await
            .unwrap();
    }

    // A lease another worker took is lost, read back or not.
    let memory = MemoryCheckpointStore::new();
    let a = coordinator(&memory, "a");
    let lease = a.acquire(STREAM, &shards(1), &[]).await.unwrap().remove(0);
    memory
        .take_lease(&key, lease.counter, "b")
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        a.renew(&lease).await,
        Err(Error::LeaseLost { .. })
    ));
}

/// Six shards, three workers on one lease store behind an [`OutageStore`].
struct Outage {
    source: ScriptedSource,
    store: Arc<OutageStore<MemoryCheckpointStore>>,
    emitter: RecordingEmitter<String>,
    workers: Vec<(
        CancellationToken,
        tokio::task::JoinHandle<kinesis_connectors_core::Result<StreamReport>>,
    )>,
}

const WORKERS: [&str; 3] = ["w1", "w2", "w3"];

impl Outage {
    async fn start(source: Arc<dyn RecordSource>, scripted: ScriptedSource) -> Self {
        let store = Arc::new(OutageStore::new(MemoryCheckpointStore::new()));
        let emitter = RecordingEmitter::new();
        let workers = WORKERS
            .iter()
            .map(|worker| {
                let cancel = CancellationToken::new();
                let consumer = consumer_with(
                    Arc::clone(&source),
                    store.clone(),
                    coordinator_on(store.clone(), worker),
                    Arc::new(emitter.clone()),
                    Duration::from_secs(60),
                );
                (cancel.clone(), tokio::spawn(consumer.run(cancel)))
            })
            .collect();
        Self {
            source: scripted,
            store,
            emitter,
            workers,
        }
    }

    async fn owners(&self) -> HashMap<String, usize> {
        owners(self.store.inner()).await
    }

    /// Waits (bounded) until each worker holds two shards.
    async fn wait_balanced(&self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let counts = self.owners().await;
            if WORKERS.iter().all(|w| counts.get(*w) == Some(&2)) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not balanced within {within:?}: {counts:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Stops every worker gracefully; none may have stopped by itself.
    async fn stop(self) -> Vec<StreamReport> {
        let mut reports = Vec::new();
        for (cancel, task) in self.workers {
            assert!(!task.is_finished(), "a worker stopped by itself");
            cancel.cancel();
            reports.push(task.await.unwrap().unwrap());
        }
        reports
    }
}

/// After a lease-store outage three times the failover time, no worker takes
/// every shard (each one's view of the leases went blind with the store), a
/// worker never takes its own running lease, and the shards end up spread
/// and read again, with nothing lost.
#[tokio::test(start_paused = true)]
async fn a_lease_store_down_longer_than_failover_does_not_hand_every_shard_to_one_worker() {
    let source = ScriptedSource::new();
    for shard in shards(6) {
        source.add_shard(shard);
    }
    let mut total = produce(&source, 6, 0, 20);
    let run = Outage::start(Arc::new(source.clone()), source.clone()).await;
    assert!(wait_for_distinct(&run.emitter, total, Duration::from_secs(120)).await);
    run.wait_balanced(Duration::from_secs(120)).await;

    run.store.down();
    total += produce(&run.source, 6, 20, 10);
    tokio::time::sleep(Duration::from_secs(30)).await;
    run.store.up();
    let back = tokio::time::Instant::now();
    // For two failover times after the store is back, nobody holds more
    // than its share plus one (one balancing take).
    let mut most = 0;
    while back.elapsed() < Duration::from_secs(20) {
        let counts = run.owners().await;
        most = most.max(counts.values().copied().max().unwrap_or(0));
        assert!(
            most <= 3,
            "one worker took {most} of 6 shards after the outage: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    total += produce(&run.source, 6, 30, 10);
    assert!(
        wait_for_distinct(&run.emitter, total, Duration::from_secs(120)).await,
        "records lost after the outage"
    );
    run.wait_balanced(Duration::from_secs(60)).await;
    let reports = run.stop().await;
    // Leases the workers could not renew through the outage were dropped
    // (LeaseLost) and taken back; no shard failed.
    for report in &reports {
        assert!(
            report.unrecovered().is_empty(),
            "{:?}",
            report.unrecovered()
        );
    }
}

/// A `ListShards` slower than the failover time does not hold renewals up:
/// every lease stays with its worker, nothing is read twice.
#[tokio::test(start_paused = true)]
async fn a_listing_slower_than_failover_does_not_delay_renewals() {
    let source = ScriptedSource::new();
    for shard in shards(6) {
        source.add_shard(shard);
    }
    let total = produce(&source, 6, 0, 20);
    let slow = Arc::new(HookedSource::new(
        source.clone(),
        SlowListing(Duration::from_secs(25)),
    ));
    let run = Outage::start(slow, source.clone()).await;
    assert!(wait_for_distinct(&run.emitter, total, Duration::from_secs(300)).await);
    run.wait_balanced(Duration::from_secs(300)).await;
    let before = run.owners().await;
    let more = produce(&run.source, 6, 20, 20);
    // Several slow discoveries (every 60 s, 25 s each).
    tokio::time::sleep(Duration::from_secs(200)).await;
    assert_eq!(
        run.owners().await,
        before,
        "leases moved while every worker was alive"
    );
    assert!(wait_for_distinct(&run.emitter, total + more, Duration::from_secs(60)).await);
    // Records written after the workers settled were read once each.
    let late = run
        .emitter
        .items()
        .into_iter()
        .filter(|item| item.rsplit('-').next().unwrap().parse::<usize>().unwrap() >= 20)
        .count();
    assert_eq!(late, more, "records emitted twice");
    for report in run.stop().await {
        assert!(report.failures().next().is_none());
    }
}

/// Lists shards slowly; reads as fast as the scripted source.
struct SlowListing(Duration);

#[async_trait]
impl SourceHooks for SlowListing {
    async fn before_list_shards(&self) {
        tokio::time::sleep(self.0).await;
    }
}

/// Emits at once, except while `slow` is set: then each batch takes 25 s,
/// two and a half failover times.
#[derive(Clone)]
struct SlowWhenTold {
    inner: RecordingEmitter<String>,
    slow: Arc<std::sync::atomic::AtomicBool>,
}

#[async_trait]
impl Emitter<String> for SlowWhenTold {
    async fn emit(&self, batch: &Batch<String>) -> kinesis_connectors_core::Result<EmitOutcome> {
        if self.slow.load(std::sync::atomic::Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_secs(25)).await;
        }
        self.inner.emit(batch).await
    }
}

/// A graceful shutdown whose last batch takes longer than the failover time
/// keeps renewing: nobody takes the leases meanwhile, the final checkpoint
/// is accepted and the next owner does not read the batch again.
#[tokio::test(start_paused = true)]
async fn a_shutdown_longer_than_failover_keeps_its_leases_and_its_last_checkpoint() {
    let source = ScriptedSource::new();
    // One shard: the newcomer's share is none of it, so only expiry
    // could move the lease, never balancing.
    for shard in shards(1) {
        source.add_shard(shard);
    }
    let total = produce(&source, 1, 0, 20);
    let store = MemoryCheckpointStore::new();
    let recorded = RecordingEmitter::new();
    let slow = SlowWhenTold {
        inner: recorded.clone(),
        slow: Arc::new(std::sync::atomic::AtomicBool::new(false)),
    };
    let leaving_cancel = CancellationToken::new();
    let leaving = tokio::spawn(
        consumer_with(
            Arc::new(source.clone()),
            Arc::new(store.clone()),
            coordinator(&store, "leaving"),
            Arc::new(slow.clone()),
            Duration::from_secs(2),
        )
        .run(leaving_cancel.clone()),
    );
    assert!(wait_for_distinct(&recorded, total, Duration::from_secs(60)).await);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let staying_cancel = CancellationToken::new();
    let staying =
        tokio::spawn(consumer(&source, &store, &recorded, "staying").run(staying_cancel.clone()));
    let more = produce(&source, 1, 20, 10);
    slow.slow.store(true, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    leaving_cancel.cancel();
    let report = leaving.await.unwrap().unwrap();
    assert!(
        report.failures().next().is_none(),
        "the shutdown failed: {:?}",
        report.failures().collect::<Vec<_>>()
    );
    assert!(
        report
            .shards
            .iter()
            .all(|shard| !matches!(shard.outcome, ShardOutcome::LeaseLost)),
        "a lease was taken during the shutdown"
    );
    assert!(wait_for_distinct(&recorded, total + more, Duration::from_secs(60)).await);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        recorded.items().len(),
        total + more,
        "records emitted twice"
    );
    staying_cancel.cancel();
    staying.await.unwrap().unwrap();
}

/// The coordinator's side of an outage: leases it watched before the store
/// went down are not expired when it comes back, however long it was down
/// (nobody could renew meanwhile); they expire only after another failover
/// time of watching.
#[tokio::test(start_paused = true)]
async fn leases_unrenewable_during_an_outage_are_not_taken_when_the_store_returns() {
    let store = Arc::new(OutageStore::new(MemoryCheckpointStore::new()));
    let owner = coordinator_on(store.clone(), "owner");
    let watcher = coordinator_on(store.clone(), "watcher");
    // One shard, so balancing never moves it: only expiry could.
    let all = shards(1);
    let taken = owner.acquire(STREAM, &all, &[]).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert!(watcher.acquire(STREAM, &all, &[]).await.unwrap().is_empty());

    store.down();
    for _ in 0..9 {
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(watcher.acquire(STREAM, &all, &[]).await.is_err());
    }
    store.up();
    let back = tokio::time::Instant::now();
    assert!(
        watcher.acquire(STREAM, &all, &[]).await.unwrap().is_empty(),
        "the first listing after a 27 s outage took leases whose owner could not renew"
    );
    // The owner renews again; the watcher keeps watching and takes nothing.
    let mut held = taken;
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_secs(3)).await;
        for lease in &mut held {
            *lease = owner.renew(lease).await.unwrap();
        }
        assert!(watcher.acquire(STREAM, &all, &[]).await.unwrap().is_empty());
    }
    // The owner goes away for good: now its leases expire.
    let mut took = Vec::new();
    while took.is_empty() {
        tokio::time::sleep(Duration::from_secs(3)).await;
        took.extend(watcher.acquire(STREAM, &all, &[]).await.unwrap());
        assert!(back.elapsed() < Duration::from_secs(60), "never taken");
    }
}

/// A worker whose own renewals failed for a while never takes its own
/// lease back while it holds it (that would stop its own shard).
#[tokio::test(start_paused = true)]
async fn a_worker_never_takes_a_lease_it_holds() {
    let store = MemoryCheckpointStore::new();
    let worker = coordinator(&store, "worker");
    let all = shards(1);
    let held = worker.acquire(STREAM, &all, &[]).await.unwrap();
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(
            worker
                .acquire(STREAM, &all, &held)
                .await
                .unwrap()
                .is_empty(),
            "took its own held lease"
        );
    }
    // Not held any more (its shard stopped): taken back at once.
    assert_eq!(worker.acquire(STREAM, &all, &[]).await.unwrap().len(), 1);
}
