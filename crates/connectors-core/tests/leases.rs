//! The lease protocol: balancing, expiry, fencing and handoff between
//! several workers sharing one stream, on the in-memory lease store.

// Test code: helpers outside #[test] fns fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kinesis_connectors_core::{
    BufferLimits, CancellationToken, Checkpoint, CheckpointStore, Error, Lease, LeaseCoordinator,
    LeaseStore, MemoryCheckpointStore, Pipeline, Position, ShardAssigner, ShardConfig,
    ShardContext, ShardInfo, ShardKey, StreamConsumer, StreamReport, Utf8Transformer,
};
use kinesis_connectors_testkit::{
    LeaseCapabilities, RecordingEmitter, RenewalAppliedButFailed, ScriptedSource, lease_conformance,
};

const APP: &str = "test-app";
const STREAM: &str = "test-stream";

fn shards(n: usize) -> Vec<ShardInfo> {
    (0..n)
        .map(|i| ShardInfo::open(format!("shard-{i}")))
        .collect()
}

fn coordinator(store: &MemoryCheckpointStore, worker: &str) -> LeaseCoordinator {
    LeaseCoordinator::new(Arc::new(store.clone()), APP, STREAM, worker)
        .failover_time(Duration::from_secs(10))
}

async fn owners(store: &MemoryCheckpointStore) -> HashMap<String, usize> {
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
    let emitter = emitter.clone();
    StreamConsumer::builder(
        APP,
        STREAM,
        Arc::new(source.clone()),
        Arc::new(store.clone()),
        move |_: &ShardContext| {
            Pipeline::builder(Utf8Transformer, Arc::new(emitter.clone()))
                .buffer_limits(
                    BufferLimits::default()
                        .with_max_records(50)
                        .with_max_age(Duration::from_secs(1)),
                )
                .build()
        },
    )
    .assigner(Arc::new(coordinator(store, worker)))
    .discovery_interval(Duration::from_secs(2))
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

#[tokio::test(start_paused = true)]
async fn a_killed_worker_loses_its_shards_to_the_others_within_failover() {
    let source = ScriptedSource::new();
    for shard in shards(4) {
        source.add_shard(shard);
    }
    let total = produce(&source, 4, 0, 20);
    let store = MemoryCheckpointStore::new();
    let emitter = RecordingEmitter::new();
    let survivor_cancel = CancellationToken::new();
    let survivor =
        tokio::spawn(consumer(&source, &store, &emitter, "survivor").run(survivor_cancel.clone()));
    let victim =
        tokio::spawn(consumer(&source, &store, &emitter, "victim").run(CancellationToken::new()));
    assert!(wait_for_distinct(&emitter, total, Duration::from_secs(120)).await);
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(owners(&store).await.get("victim").copied().unwrap_or(0) > 0);
    victim.abort();
    let killed_at = tokio::time::Instant::now();
    let more = produce(&source, 4, 20, 5);
    // Failover (10 s) plus one renewal period and a discovery round.
    let deadline = killed_at + Duration::from_secs(10 + 4 + 3);
    loop {
        if owners(&store).await.get("survivor").copied().unwrap_or(0) == 4 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "shards not taken over in time"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let took = killed_at.elapsed();
    assert!(
        took >= Duration::from_secs(10),
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
