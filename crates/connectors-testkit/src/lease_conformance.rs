//! The lease conformance suite: the atomic rules every [`LeaseStore`] must
//! follow so that several workers can share a stream safely.

use std::time::Duration;

use kinesis_connectors_core::{
    Checkpoint, Error, Lease, LeaseCoordinator, LeaseStore, Position, ShardAssigner, ShardInfo,
    ShardKey,
};

use crate::conformance::{broken, must, unique_run_id};

const SUITE: &str = "lease store";

fn at(n: u64) -> Checkpoint {
    Checkpoint::At(Position::new(n.into()))
}

fn expect_lost<T: std::fmt::Debug>(
    rule: &str,
    call: &str,
    result: kinesis_connectors_core::Result<T>,
) {
    match result {
        Err(Error::LeaseLost { .. }) => {}
        other => broken(
            SUITE,
            rule,
            &format!("{call} should fail with LeaseLost, got {other:?}"),
        ),
    }
}

/// Checks the lease rules against `store`: create, acquire, renew, take over
/// with a stale counter, fenced checkpoints after loss, release, and the
/// [`LeaseCoordinator`] expiring an abandoned lease.
///
/// Uses a fresh application name per call, so it can run against a shared
/// store. Takes an `Arc` because the coordinator shares the store.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let store = std::sync::Arc::new(kinesis_connectors_core::MemoryCheckpointStore::new());
/// kinesis_connectors_testkit::lease_conformance(store).await;
/// # });
/// ```
pub async fn lease_conformance(store: std::sync::Arc<dyn LeaseStore>) {
    let app = format!("lease-conformance-{}", unique_run_id());
    let stream = "stream";
    let key = ShardKey::new(&*app, stream, "shard-0");
    let child = ShardKey::new(&*app, stream, "shard-1");

    // create: a free lease with counter 0; creating twice changes nothing.
    must(
        SUITE,
        "create",
        "create_lease",
        store.create_lease(&key, &[]).await,
    );
    must(
        SUITE,
        "create",
        "create_lease",
        store.create_lease(&child, &["shard-0".to_owned()]).await,
    );
    must(
        SUITE,
        "create",
        "create_lease (again)",
        store.create_lease(&key, &[]).await,
    );
    let leases = must(
        SUITE,
        "create",
        "list_leases",
        store.list_leases(&app, stream).await,
    );
    let Some(created) = leases.iter().find(|l| l.shard_id == "shard-0") else {
        broken(
            SUITE,
            "create",
            &format!("created lease missing from {leases:?}"),
        )
    };
    if created.owner.is_some() {
        broken(
            SUITE,
            "create",
            &format!("a new lease must be free: {created:?}"),
        );
    }
    match leases.iter().find(|l| l.shard_id == "shard-1") {
        Some(l) if l.parent_shard_ids == vec!["shard-0".to_owned()] => {}
        other => broken(SUITE, "create", &format!("parents not kept: {other:?}")),
    }

    // acquire: take with the seen counter succeeds and bumps it; a second
    // take with the same (now stale) counter fails.
    let Some(mine) = must(
        SUITE,
        "acquire",
        "take_lease",
        store.take_lease(&key, created.counter, "worker-a").await,
    ) else {
        broken(
            SUITE,
            "acquire",
            "taking a free lease with its current counter failed",
        )
    };
    if mine.owner != "worker-a" || mine.counter <= created.counter {
        broken(
            SUITE,
            "acquire",
            &format!("take must set owner and bump the counter: {mine:?}"),
        );
    }
    let stale = must(
        SUITE,
        "acquire",
        "take_lease (stale)",
        store.take_lease(&key, created.counter, "worker-b").await,
    );
    if stale.is_some() {
        broken(SUITE, "acquire", "a take with a stale counter succeeded");
    }

    // renew: bumps the counter; renewing with the old counter is lost.
    let renewed = must(
        SUITE,
        "renew",
        "renew_lease",
        store.renew_lease(&key, &mine).await,
    );
    if renewed.counter <= mine.counter || renewed.owner != "worker-a" {
        broken(
            SUITE,
            "renew",
            &format!("renew must keep the owner and bump the counter: {renewed:?}"),
        );
    }
    expect_lost(
        "renew",
        "renew_lease with a stale counter",
        store.renew_lease(&key, &mine).await,
    );

    // fenced checkpoints: written while held; refused with a stale lease.
    must(
        SUITE,
        "fenced-checkpoint",
        "set_fenced",
        store.set_fenced(&key, &at(10), &renewed).await,
    );
    if must(SUITE, "fenced-checkpoint", "get", store.get(&key).await) != Some(at(10)) {
        broken(
            SUITE,
            "fenced-checkpoint",
            "a fenced write by the holder was not stored",
        );
    }

    // take over: another worker takes the lease with the counter it saw.
    let seen = must(
        SUITE,
        "take-over",
        "list_leases",
        store.list_leases(&app, stream).await,
    );
    let counter = seen
        .iter()
        .find(|l| l.shard_id == "shard-0")
        .map_or(0, |l| l.counter);
    let Some(theirs) = must(
        SUITE,
        "take-over",
        "take_lease",
        store.take_lease(&key, counter, "worker-b").await,
    ) else {
        broken(
            SUITE,
            "take-over",
            "taking a held lease with its current counter failed",
        )
    };
    expect_lost(
        "take-over",
        "renew_lease by the old owner",
        store.renew_lease(&key, &renewed).await,
    );
    expect_lost(
        "fenced-checkpoint",
        "set_fenced by the old owner",
        store.set_fenced(&key, &at(20), &renewed).await,
    );
    if must(SUITE, "fenced-checkpoint", "get", store.get(&key).await) != Some(at(10)) {
        broken(
            SUITE,
            "fenced-checkpoint",
            "a fenced write after losing the lease changed the checkpoint",
        );
    }
    must(
        SUITE,
        "fenced-checkpoint",
        "set_fenced",
        store.set_fenced(&key, &at(20), &theirs).await,
    );
    let listed = must(
        SUITE,
        "fenced-checkpoint",
        "list_leases",
        store.list_leases(&app, stream).await,
    );
    match listed.iter().find(|l| l.shard_id == "shard-0") {
        Some(l) if l.checkpoint == Some(at(20)) && l.owner.as_deref() == Some("worker-b") => {}
        other => broken(
            SUITE,
            "fenced-checkpoint",
            &format!("list_leases must show owner and checkpoint: {other:?}"),
        ),
    }

    // release: frees the lease; releasing a lost lease is a no-op.
    must(
        SUITE,
        "release",
        "release_lease (lost)",
        store.release_lease(&key, &renewed).await,
    );
    must(
        SUITE,
        "release",
        "release_lease",
        store.release_lease(&key, &theirs).await,
    );
    let after = must(
        SUITE,
        "release",
        "list_leases",
        store.list_leases(&app, stream).await,
    );
    match after.iter().find(|l| l.shard_id == "shard-0") {
        Some(l) if l.owner.is_none() => {}
        other => broken(
            SUITE,
            "release",
            &format!("a released lease must be free: {other:?}"),
        ),
    }
    expect_lost(
        "release",
        "set_fenced after release",
        store.set_fenced(&key, &at(30), &theirs).await,
    );

    // expire: a coordinator takes a lease whose owner stopped renewing, once
    // the failover time has passed on its own clock, and not before.
    let expire_key = ShardKey::new(&*app, "expiry-stream", "shard-0");
    must(
        SUITE,
        "expire",
        "create_lease",
        store.create_lease(&expire_key, &[]).await,
    );
    let Some(abandoned) = must(
        SUITE,
        "expire",
        "take_lease",
        store.take_lease(&expire_key, 0, "gone").await,
    ) else {
        broken(SUITE, "expire", "taking a new lease failed")
    };
    let failover = Duration::from_millis(300);
    let coordinator = LeaseCoordinator::new(store.clone(), &*app, "expiry-stream", "survivor")
        .failover_time(failover);
    let shards = [ShardInfo::open("shard-0")];
    let early = must(
        SUITE,
        "expire",
        "acquire",
        coordinator.acquire("expiry-stream", &shards, &[]).await,
    );
    if !early.is_empty() {
        broken(
            SUITE,
            "expire",
            "a lease was taken before its failover time passed",
        );
    }
    tokio::time::sleep(failover + Duration::from_millis(50)).await;
    let late: Vec<Lease> = must(
        SUITE,
        "expire",
        "acquire",
        coordinator.acquire("expiry-stream", &shards, &[]).await,
    );
    if late.len() != 1 || late[0].owner != "survivor" {
        broken(
            SUITE,
            "expire",
            &format!("an abandoned lease was not taken after failover: {late:?}"),
        );
    }
    expect_lost(
        "expire",
        "set_fenced by the abandoned owner",
        store.set_fenced(&expire_key, &at(1), &abandoned).await,
    );
}
