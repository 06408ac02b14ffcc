//! Lease checks every lease store on the stack runs.

use std::sync::Arc;

use kinesis_connectors_core::{
    Checkpoint, CheckpointStore, Error, LeaseCoordinator, LeaseStore, Position, SequenceNumber,
    ShardAssigner, ShardInfo, ShardKey,
};
use kinesis_connectors_testkit::RenewalAppliedButFailed;

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
