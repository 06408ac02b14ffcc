//! Lease checks every lease store on the stack runs, and a single-worker
//! consumer meeting a store that holds leases.

use std::sync::Arc;
use std::time::Duration;

use kinesis_connectors_core::{
    BadRecordPolicy, BufferLimits, Checkpoint, CheckpointStore, Emitter, Error, LeaseCoordinator,
    LeaseStore, Position, SequenceNumber, ShardAssigner, ShardFailurePolicy, ShardInfo, ShardKey,
};

use crate::RunningConsumer;
use crate::consumer::{Retrieval, Utf8ConsumerSpec, utf8_consumer};
use kinesis_connectors_testkit::{OutageStore, RenewalAppliedButFailed};

/// Checks that a renewal `store` applied but answered with an error (a
/// reply lost to a timeout; a retried conditional write refused as
/// `LeaseLost`) does not lose the lease: the coordinator reads it back,
/// renews again from the applied counter, and fenced checkpoints go on;
/// the lease as it was before is fenced out. `application` and `stream`
/// are fresh names the store accepts.
///
/// # Panics
///
/// When a step fails: the store does not answer, or the lease is lost.
#[allow(clippy::expect_used, clippy::panic)] // test support: what does not hold fails the test
pub async fn applied_renewals_keep_the_lease<S>(store: S, application: &str, stream: &str)
where
    S: LeaseStore + 'static,
{
    let store = Arc::new(RenewalAppliedButFailed::new(store));
    let shard = ShardInfo::open("shardId-000000000000");
    let key = ShardKey::new(application, stream, shard.shard_id.as_str());
    let worker = LeaseCoordinator::new(store.clone(), application, stream, "worker-a");
    let mut lease = worker
        .acquire(stream, std::slice::from_ref(&shard), &[])
        .await
        .expect("acquire")
        .pop()
        .expect("the free lease is taken");
    let answers = [
        Error::LeaseLost {
            shard_id: shard.shard_id.clone(),
            owner: Some("worker-a".to_owned()),
        },
        Error::checkpoint_retryable("the reply did not come in time"),
    ];
    for (sequence, answer) in (1u64..).zip(answers) {
        let before = lease.clone();
        store.answer_next_renewal_with(answer);
        lease = worker
            .renew(&before)
            .await
            .unwrap_or_else(|e| panic!("an applied renewal was taken for a loss: {e}"));
        assert_eq!(
            lease.counter,
            before.counter + 2,
            "the applied renewal, then one more"
        );
        let checkpoint = Checkpoint::At(Position::new(SequenceNumber::from(sequence)));
        store
            .set_fenced(&key, &checkpoint, &lease)
            .await
            .expect("a checkpoint under the renewed lease");
        assert!(
            matches!(
                store.set_fenced(&key, &checkpoint, &before).await,
                Err(Error::LeaseLost { .. })
            ),
            "the lease as it was before the renewals is fenced out"
        );
    }
}

/// Runs a single-worker consumer (it takes no leases) of `stream`, a new
/// one-shard stream with records whose lease a worker `old-worker` holds in
/// `store`, emitting to `emitter`, and returns the error the consumer stopped with by itself, as
/// a consumer with leases turned off after a run with them meets it.
///
/// # Panics
///
/// When the stack does not answer, or the consumer does not stop by itself
/// with an error within a minute.
#[allow(clippy::expect_used, clippy::panic)] // test support: what does not hold fails the test
pub async fn single_worker_on_a_leased_store<S>(
    kinesis: &aws_sdk_kinesis::Client,
    application: &str,
    stream: &str,
    store: Arc<S>,
    emitter: Arc<dyn Emitter<String>>,
) -> kinesis_connectors_core::Error
where
    S: CheckpointStore + LeaseStore + 'static,
{
    crate::create_stream(kinesis, stream, 1)
        .await
        .expect("create the stream");
    let records = (0..5).map(|i| (format!("pk-{i}"), format!("record {i}")));
    crate::put_records(kinesis, stream, records, crate::PutOptions::default())
        .await
        .expect("write the records");
    let key = ShardKey::new(application, stream, "shardId-000000000000");
    store
        .create_lease(&key, &[])
        .await
        .expect("create the lease");
    store
        .take_lease(&key, 0, "old-worker")
        .await
        .expect("take the lease")
        .expect("the new lease is free");
    let consumer = utf8_consumer(Utf8ConsumerSpec {
        kinesis,
        retrieval: Retrieval::Polling,
        application,
        stream,
        store,
        emitter,
        limits: BufferLimits::default().with_max_age(Duration::from_millis(300)),
        bad_records: BadRecordPolicy::Stop,
        on_shard_failure: ShardFailurePolicy::default(),
    });
    let (_cancel, handle) = RunningConsumer::start(consumer).into_parts();
    match tokio::time::timeout(Duration::from_secs(60), handle).await {
        Err(_) => panic!("the single-worker consumer did not stop by itself within a minute"),
        Ok(joined) => joined
            .expect("the consumer task does not panic")
            .expect_err("the consumer stops with an error"),
    }
}

/// Checks, on `store`, that three workers' leases survive an outage of the
/// store longer than the failover time: when it returns, a watching
/// worker takes none of the leases whose owners could not renew during it
/// (so no worker takes every shard), and takes them only once their owner
/// stays away for a failover time of watching. Real time, failover 1.5 s.
///
/// # Panics
///
/// When a step fails: the store does not answer, or a lease moves.
#[allow(clippy::expect_used, clippy::panic)] // test support: what does not hold fails the test
pub async fn leases_outlive_a_store_outage<S>(store: S, application: &str, stream: &str)
where
    S: LeaseStore + 'static,
{
    const FAILOVER: Duration = Duration::from_millis(1500);
    let store = Arc::new(OutageStore::new(store));
    let worker = |name: &str| {
        LeaseCoordinator::new(store.clone(), application, stream, name).failover_time(FAILOVER)
    };
    let owners = [worker("owner-1"), worker("owner-2")];
    let watcher = worker("watcher");
    let shards: Vec<ShardInfo> = (0..2)
        .map(|i| ShardInfo::open(format!("shard-{i}")))
        .collect();
    let mut held = Vec::new();
    for (owner, shard) in owners.iter().zip(&shards) {
        let taken = owner
            .acquire(stream, std::slice::from_ref(shard), &[])
            .await
            .expect("taking a lease");
        assert_eq!(taken.len(), 1, "{} took {taken:?}", owner.worker_id());
        held.push(taken);
    }
    let watch = || async {
        watcher
            .acquire(stream, &shards, &[])
            .await
            .expect("the watcher's lease round")
    };
    assert!(watch().await.is_empty(), "taken while their owners renew");

    store.down();
    let scan = FAILOVER / 3;
    for _ in 0..9 {
        tokio::time::sleep(scan).await;
        assert!(watcher.acquire(stream, &shards, &[]).await.is_err());
    }
    store.up();
    assert!(
        watch().await.is_empty(),
        "the first lease round after an outage of 3 × failover took leases nobody could renew"
    );
    for _ in 0..6 {
        tokio::time::sleep(scan).await;
        for (owner, leases) in owners.iter().zip(&mut held) {
            for lease in leases.iter_mut() {
                *lease = owner.renew(lease).await.expect("renewing after the outage");
            }
        }
        assert!(
            watch().await.is_empty(),
            "taken while their owners renew again"
        );
    }
    // The owners stop for good: their leases expire within failover + 2 scans.
    let stopped = tokio::time::Instant::now();
    let mut taken = Vec::new();
    while taken.len() < 2 {
        tokio::time::sleep(scan).await;
        taken.extend(watch().await);
        assert!(
            stopped.elapsed() < FAILOVER * 4,
            "abandoned leases not taken within 4 × failover: {taken:?}"
        );
    }
    assert!(
        stopped.elapsed() >= FAILOVER,
        "taken before the failover time"
    );
}
