//! `DynamoDbCheckpointStore` against the stack's DynamoDB (moto): the
//! testkit's checkpoint and lease conformance suites, the KCL lease-table
//! layout as written and as read, and the table checks.
//!
//! Run with `cargo xtask it checkpoint_dynamodb`. Every test uses its own
//! tables, so they may run in parallel with the other integration tests.
//!
//! The store holds one application and stream per table (the KCL layout is
//! keyed by shard id only) and refuses other keys, while the conformance
//! suites use fresh application and stream names. They therefore run on
//! [`TablePerStream`], which routes each application and stream to its own
//! store and table, created on first use: every call still goes through the
//! real store and its KCL-layout table.

// Test code: helpers may unwrap and panic like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{AttributeValue, BillingMode, KeyType};
use integration_tests::one_at_a_time::dynamodb_client;
use integration_tests::unique_name;
use kinesis_checkpoint_dynamodb::{DynamoDbCheckpointError, DynamoDbCheckpointStore};
use kinesis_connectors_core::{
    Checkpoint, CheckpointStore, Error, Lease, LeaseCoordinator, LeaseStore, Position, Result,
    SequenceNumber, ShardAssigner, ShardInfo, ShardKey, StoredLease, async_trait,
};
use kinesis_connectors_testkit::{
    CheckpointStoreCapabilities, LeaseCapabilities, checkpoint_store_conformance, lease_conformance,
};

/// A Kinesis-sized sequence number and a later one.
const SEQ_A: &str = "49590338271490256608559692538361571095921575989136588898";
const SEQ_B: &str = "49590338271490256608559692540925702759324208523137515618";

fn at(sequence: &str, sub: Option<u64>) -> Checkpoint {
    Checkpoint::At(Position {
        sequence: SequenceNumber::parse(sequence).unwrap(),
        sub_sequence: sub,
    })
}

/// Routes each (application, stream) to its own `DynamoDbCheckpointStore`
/// on its own table, created on first use.
struct TablePerStream {
    prefix: &'static str,
    stores: tokio::sync::Mutex<HashMap<(String, String), Arc<DynamoDbCheckpointStore>>>,
}

impl TablePerStream {
    fn new(prefix: &'static str) -> Self {
        Self {
            prefix,
            stores: tokio::sync::Mutex::default(),
        }
    }

    async fn store(&self, application: &str, stream: &str) -> Arc<DynamoDbCheckpointStore> {
        let mut stores = self.stores.lock().await;
        let key = (application.to_owned(), stream.to_owned());
        if let Some(store) = stores.get(&key) {
            return Arc::clone(store);
        }
        let store = DynamoDbCheckpointStore::builder(dynamodb_client().await, application, stream)
            .table(unique_name(self.prefix))
            .create_table_if_missing(true)
            .build()
            .await
            .unwrap_or_else(|e| panic!("building the store for {application}/{stream}: {e}"));
        let store = Arc::new(store);
        stores.insert(key, Arc::clone(&store));
        store
    }

    async fn tables(&self) -> Vec<String> {
        let stores = self.stores.lock().await;
        stores.values().map(|s| s.table().to_owned()).collect()
    }
}

#[async_trait]
impl CheckpointStore for TablePerStream {
    async fn get(&self, key: &ShardKey) -> Result<Option<Checkpoint>> {
        self.store(&key.application, &key.stream)
            .await
            .get(key)
            .await
    }
    async fn set(&self, key: &ShardKey, checkpoint: &Checkpoint) -> Result<()> {
        self.store(&key.application, &key.stream)
            .await
            .set(key, checkpoint)
            .await
    }
    async fn set_fenced(
        &self,
        key: &ShardKey,
        checkpoint: &Checkpoint,
        lease: &Lease,
    ) -> Result<()> {
        self.store(&key.application, &key.stream)
            .await
            .set_fenced(key, checkpoint, lease)
            .await
    }
    fn keeps_pending_batches(&self) -> bool {
        // Every store it routes to is a `DynamoDbCheckpointStore`, which does.
        true
    }
    async fn pending_batch(&self, key: &ShardKey) -> Result<Option<Position>> {
        self.store(&key.application, &key.stream)
            .await
            .pending_batch(key)
            .await
    }
    async fn set_pending_batch(&self, key: &ShardKey, end: &Position, lease: &Lease) -> Result<()> {
        self.store(&key.application, &key.stream)
            .await
            .set_pending_batch(key, end, lease)
            .await
    }
}

#[async_trait]
impl LeaseStore for TablePerStream {
    async fn list_leases(&self, application: &str, stream: &str) -> Result<Vec<StoredLease>> {
        self.store(application, stream)
            .await
            .list_leases(application, stream)
            .await
    }
    async fn create_lease(&self, key: &ShardKey, parent_shard_ids: &[String]) -> Result<()> {
        self.store(&key.application, &key.stream)
            .await
            .create_lease(key, parent_shard_ids)
            .await
    }
    async fn take_lease(
        &self,
        key: &ShardKey,
        expected_counter: u64,
        owner: &str,
    ) -> Result<Option<Lease>> {
        self.store(&key.application, &key.stream)
            .await
            .take_lease(key, expected_counter, owner)
            .await
    }
    async fn renew_lease(&self, key: &ShardKey, lease: &Lease) -> Result<Lease> {
        self.store(&key.application, &key.stream)
            .await
            .renew_lease(key, lease)
            .await
    }
    async fn release_lease(&self, key: &ShardKey, lease: &Lease) -> Result<()> {
        self.store(&key.application, &key.stream)
            .await
            .release_lease(key, lease)
            .await
    }
}

async fn delete_tables(tables: Vec<String>) {
    let client = dynamodb_client().await;
    for table in tables {
        let _ = client.delete_table().table_name(table).send().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_dynamodb_the_store_passes_checkpoint_store_conformance_on_moto() {
    let started = Instant::now();
    let router = TablePerStream::new("cp-conformance");
    let report =
        checkpoint_store_conformance::run_all(&router, CheckpointStoreCapabilities::new()).await;
    assert!(report.is_success(), "{report}");
    let tables = router.tables().await;
    println!(
        "checkpoint store conformance: passed in {:?} over {} tables",
        started.elapsed(),
        tables.len()
    );
    delete_tables(tables).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_dynamodb_the_store_passes_lease_conformance_on_moto() {
    let started = Instant::now();
    let router = Arc::new(TablePerStream::new("lease-conformance"));
    let report = lease_conformance::run_all(router.clone(), LeaseCapabilities::new()).await;
    assert!(report.is_success(), "{report}");
    let tables = router.tables().await;
    println!(
        "lease conformance: passed in {:?} over {} tables",
        started.elapsed(),
        tables.len()
    );
    delete_tables(tables).await;
}

/// A store on a fresh table of its own.
async fn fresh_store(prefix: &str) -> (DynamoDbCheckpointStore, aws_sdk_dynamodb::Client) {
    let client = dynamodb_client().await;
    let store = DynamoDbCheckpointStore::builder(client.clone(), "kcl-app", "kcl-stream")
        .table(unique_name(prefix))
        .create_table_if_missing(true)
        .build()
        .await
        .unwrap();
    (store, client)
}

async fn raw_item(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    shard_id: &str,
) -> HashMap<String, AttributeValue> {
    client
        .get_item()
        .table_name(table)
        .key("leaseKey", AttributeValue::S(shard_id.to_owned()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .unwrap_or_else(|| panic!("no item for {shard_id} in {table}"))
}

fn s(text: &str) -> AttributeValue {
    AttributeValue::S(text.to_owned())
}

fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

#[tokio::test]
async fn checkpoint_dynamodb_the_table_is_created_on_demand_and_written_in_the_kcl_layout() {
    let (store, client) = fresh_store("kcl-layout").await;
    let table = store.table().to_owned();
    let description = client
        .describe_table()
        .table_name(&table)
        .send()
        .await
        .unwrap()
        .table
        .unwrap();
    let keys = description.key_schema();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].attribute_name(), "leaseKey");
    assert_eq!(keys[0].key_type(), &KeyType::Hash);
    assert_eq!(
        description
            .billing_mode_summary()
            .and_then(|b| b.billing_mode()),
        Some(&BillingMode::PayPerRequest)
    );

    let parent = ShardKey::new("kcl-app", "kcl-stream", "shardId-000000000000");
    let child = ShardKey::new("kcl-app", "kcl-stream", "shardId-000000000001");
    store.create_lease(&parent, &[]).await.unwrap();
    store
        .create_lease(&child, &["shardId-000000000000".to_owned()])
        .await
        .unwrap();
    let created = raw_item(&client, &table, "shardId-000000000001").await;
    assert_eq!(created.get("checkpoint"), Some(&s("TRIM_HORIZON")));
    assert_eq!(created.get("checkpointSubSequenceNumber"), Some(&n(0)));
    assert_eq!(created.get("leaseCounter"), Some(&n(0)));
    assert_eq!(created.get("ownerSwitchesSinceCheckpoint"), Some(&n(0)));
    assert_eq!(
        created.get("parentShardIds"),
        Some(&AttributeValue::Ss(vec!["shardId-000000000000".to_owned()]))
    );
    assert!(!created.contains_key("leaseOwner"));
    assert_eq!(
        store.get(&child).await.unwrap(),
        None,
        "TRIM_HORIZON is no checkpoint"
    );

    let lease = store
        .take_lease(&parent, 0, "worker-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(lease.counter, 1);
    let lease = store.renew_lease(&parent, &lease).await.unwrap();
    store
        .set_fenced(&parent, &at(SEQ_A, Some(3)), &lease)
        .await
        .unwrap();
    let item = raw_item(&client, &table, "shardId-000000000000").await;
    assert_eq!(item.get("leaseKey"), Some(&s("shardId-000000000000")));
    assert_eq!(item.get("checkpoint"), Some(&s(SEQ_A)));
    assert_eq!(item.get("checkpointSubSequenceNumber"), Some(&n(3)));
    assert_eq!(item.get("leaseOwner"), Some(&s("worker-1")));
    assert_eq!(
        item.get("leaseCounter"),
        Some(&n(2)),
        "take + renewal; the checkpoint does not bump it"
    );
    assert_eq!(item.get("ownerSwitchesSinceCheckpoint"), Some(&n(0)));
    assert!(!item.contains_key("wholeRecordCheckpoint"));

    store
        .set_fenced(&parent, &at(SEQ_B, None), &lease)
        .await
        .unwrap();
    let item = raw_item(&client, &table, "shardId-000000000000").await;
    assert_eq!(item.get("checkpoint"), Some(&s(SEQ_B)));
    assert_eq!(item.get("checkpointSubSequenceNumber"), Some(&n(0)));
    assert_eq!(item.get("wholeRecordCheckpoint"), Some(&s(SEQ_B)));
    assert_eq!(store.get(&parent).await.unwrap(), Some(at(SEQ_B, None)));

    store
        .set_fenced(&parent, &Checkpoint::ShardEnd, &lease)
        .await
        .unwrap();
    store.release_lease(&parent, &lease).await.unwrap();
    let item = raw_item(&client, &table, "shardId-000000000000").await;
    assert_eq!(item.get("checkpoint"), Some(&s("SHARD_END")));
    assert!(
        !item.contains_key("leaseOwner"),
        "a released lease has no owner: {item:?}"
    );
    assert_eq!(item.get("leaseCounter"), Some(&n(3)));
    let leases = store.list_leases("kcl-app", "kcl-stream").await.unwrap();
    assert_eq!(leases.len(), 2);
    assert_eq!(leases[0].checkpoint, Some(Checkpoint::ShardEnd));
    assert_eq!(
        leases[1].parent_shard_ids,
        vec!["shardId-000000000000".to_owned()]
    );
    delete_tables(vec![table]).await;
}

#[tokio::test]
async fn checkpoint_dynamodb_kcl_items_are_read_fenced_and_never_overwritten_backwards() {
    let (store, client) = fresh_store("kcl-items").await;
    let table = store.table().to_owned();
    let put = |shard: &str, checkpoint: &str, sub: u64, owner: Option<&str>, counter: u64| {
        let mut request = client
            .put_item()
            .table_name(&table)
            .item("leaseKey", s(shard))
            .item("checkpoint", s(checkpoint))
            .item("checkpointSubSequenceNumber", n(sub))
            .item("leaseCounter", n(counter))
            .item("ownerSwitchesSinceCheckpoint", n(0));
        if let Some(owner) = owner {
            request = request.item("leaseOwner", s(owner));
        }
        request.send()
    };
    let key = |shard: &str| ShardKey::new("kcl-app", "kcl-stream", shard);
    put("shardId-000000000000", SEQ_B, 0, Some("kcl-worker"), 42)
        .await
        .unwrap();
    put("shardId-000000000001", "LATEST", 0, None, 5)
        .await
        .unwrap();
    put("shardId-000000000002", SEQ_A, 7, None, 0)
        .await
        .unwrap();
    put("shardId-000000000003", "SHARD_END", 0, None, 9)
        .await
        .unwrap();

    assert_eq!(
        store.get(&key("shardId-000000000000")).await.unwrap(),
        Some(at(SEQ_B, Some(0)))
    );
    assert_eq!(store.get(&key("shardId-000000000001")).await.unwrap(), None);
    assert_eq!(
        store.get(&key("shardId-000000000002")).await.unwrap(),
        Some(at(SEQ_A, Some(7)))
    );
    assert_eq!(
        store.get(&key("shardId-000000000003")).await.unwrap(),
        Some(Checkpoint::ShardEnd)
    );

    // Older than the KCL's checkpoint (numerically; SEQ_A is not a prefix
    // issue, it is smaller): kept.
    store
        .set(&key("shardId-000000000000"), &at(SEQ_A, None))
        .await
        .unwrap();
    store
        .set(&key("shardId-000000000002"), &at(SEQ_A, Some(6)))
        .await
        .unwrap();
    store
        .set(&key("shardId-000000000003"), &at(SEQ_B, None))
        .await
        .unwrap();
    assert_eq!(
        raw_item(&client, &table, "shardId-000000000000")
            .await
            .get("checkpoint"),
        Some(&s(SEQ_B))
    );
    assert_eq!(
        store.get(&key("shardId-000000000002")).await.unwrap(),
        Some(at(SEQ_A, Some(7)))
    );
    assert_eq!(
        store.get(&key("shardId-000000000003")).await.unwrap(),
        Some(Checkpoint::ShardEnd)
    );

    // The KCL worker holds shard 0: nobody else writes there.
    let intruder = Lease {
        shard_id: "shardId-000000000000".into(),
        owner: "intruder".into(),
        counter: 42,
        expires_at: None,
    };
    let refused = store
        .set_fenced(
            &key("shardId-000000000000"),
            &at("9".repeat(60).as_str(), None),
            &intruder,
        )
        .await;
    assert!(
        matches!(&refused, Err(Error::LeaseLost { owner: Some(owner), .. }) if owner == "kcl-worker"),
        "{refused:?}"
    );

    // The KCL's leases are taken by a coordinator after the failover time.
    let coordinator = LeaseCoordinator::new(
        Arc::new(store.clone()),
        "kcl-app",
        "kcl-stream",
        "rust-worker",
    )
    .failover_time(Duration::from_millis(500));
    let shards: Vec<ShardInfo> = (0..4)
        .map(|i| ShardInfo::open(format!("shardId-00000000000{i}")))
        .collect();
    let first = coordinator
        .acquire("kcl-stream", &shards, &[])
        .await
        .unwrap();
    let ids: Vec<&str> = first.iter().map(|l| l.shard_id.as_str()).collect();
    assert_eq!(
        ids,
        vec!["shardId-000000000001", "shardId-000000000002"],
        "only free leases at first"
    );
    // Listed every 125 ms, as the stream consumer does: a coordinator judges
    // expiry only while it watches the store.
    let mut later = Vec::new();
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(125)).await;
        later = coordinator
            .acquire("kcl-stream", &shards, &first)
            .await
            .unwrap();
        if !later.is_empty() {
            break;
        }
    }
    assert_eq!(later.len(), 1, "{later:?}");
    assert_eq!(later[0].shard_id, "shardId-000000000000");
    assert_eq!(later[0].counter, 43);
    store
        .set_fenced(
            &key("shardId-000000000000"),
            &at("9".repeat(60).as_str(), None),
            &later[0],
        )
        .await
        .unwrap();
    let item = raw_item(&client, &table, "shardId-000000000000").await;
    assert_eq!(item.get("leaseOwner"), Some(&s("rust-worker")));
    assert_eq!(item.get("checkpoint"), Some(&s(&"9".repeat(60))));
    delete_tables(vec![table]).await;
}

/// A pending batch (replay-stable batches) is written as this crate's own
/// attributes on the lease item, fenced like a checkpoint: after another
/// worker took the lease, the old owner's write is refused with `LeaseLost`
/// and leaves the item as it was.
#[tokio::test]
async fn checkpoint_dynamodb_a_pending_batch_with_a_stale_lease_is_refused_and_not_stored() {
    let (store, client) = fresh_store("pending").await;
    let table = store.table().to_owned();
    let key = ShardKey::new("kcl-app", "kcl-stream", "shardId-000000000000");
    store.create_lease(&key, &[]).await.unwrap();
    let mine = store
        .take_lease(&key, 0, "worker-a")
        .await
        .unwrap()
        .unwrap();
    store
        .set_fenced(&key, &at(SEQ_A, None), &mine)
        .await
        .unwrap();
    let inside = Position {
        sequence: SequenceNumber::parse(SEQ_B).unwrap(),
        sub_sequence: Some(3),
    };
    store.set_pending_batch(&key, &inside, &mine).await.unwrap();
    assert_eq!(
        store.pending_batch(&key).await.unwrap(),
        Some(inside.clone())
    );
    let item = raw_item(&client, &table, "shardId-000000000000").await;
    assert_eq!(item.get("pendingBatchEnd"), Some(&s(SEQ_B)));
    assert_eq!(item.get("pendingBatchEndSubSequenceNumber"), Some(&n(3)));
    assert!(!item.contains_key("pendingCheckpoint"), "{item:?}");
    // The KCL's attributes are untouched: the checkpoint and the counter.
    assert_eq!(item.get("checkpoint"), Some(&s(SEQ_A)));
    assert_eq!(item.get("wholeRecordCheckpoint"), Some(&s(SEQ_A)));
    assert_eq!(item.get("leaseCounter"), Some(&n(mine.counter)));
    assert_eq!(item.get("leaseOwner"), Some(&s("worker-a")));

    // Another worker takes the lease; the old owner's pending batch is refused.
    let theirs = store
        .take_lease(&key, mine.counter, "worker-b")
        .await
        .unwrap()
        .unwrap();
    let whole = Position::new(SequenceNumber::parse(SEQ_B).unwrap());
    let error = store
        .set_pending_batch(&key, &whole, &mine)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::LeaseLost { owner: Some(owner), .. } if owner == "worker-b"),
        "{error:?}"
    );
    assert_eq!(store.pending_batch(&key).await.unwrap(), Some(inside));
    let after = raw_item(&client, &table, "shardId-000000000000").await;
    assert_eq!(after.get("pendingBatchEnd"), Some(&s(SEQ_B)));
    assert_eq!(after.get("pendingBatchEndSubSequenceNumber"), Some(&n(3)));

    // The new owner's write goes through; a whole record has no sub-sequence.
    store
        .set_pending_batch(&key, &whole, &theirs)
        .await
        .unwrap();
    assert_eq!(store.pending_batch(&key).await.unwrap(), Some(whole));
    let item = raw_item(&client, &table, "shardId-000000000000").await;
    assert!(
        !item.contains_key("pendingBatchEndSubSequenceNumber"),
        "{item:?}"
    );
    assert_eq!(store.get(&key).await.unwrap(), Some(at(SEQ_A, None)));
    delete_tables(vec![table]).await;
}

#[tokio::test]
async fn checkpoint_dynamodb_keys_of_another_stream_are_refused_with_a_config_error() {
    let (store, _client) = fresh_store("other-stream").await;
    let error = store
        .set(
            &ShardKey::new("kcl-app", "another-stream", "shardId-000000000000"),
            &at("1", None),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::Config(m) if m.contains("kcl-stream") && m.contains("another-stream")),
        "{error}"
    );
    let error = store
        .list_leases("another-app", "kcl-stream")
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Config(_)), "{error}");
    delete_tables(vec![store.table().to_owned()]).await;
}

#[tokio::test]
async fn checkpoint_dynamodb_a_missing_table_is_a_clear_error_unless_created() {
    let table = unique_name("missing-table");
    let error = DynamoDbCheckpointStore::builder(dynamodb_client().await, "app", "stream")
        .table(&table)
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(&error, DynamoDbCheckpointError::TableNotFound { table: t } if *t == table),
        "{error}"
    );
    println!("{error}");
    // A table with another key schema is refused too.
    let client = dynamodb_client().await;
    client
        .create_table()
        .table_name(&table)
        .attribute_definitions(
            aws_sdk_dynamodb::types::AttributeDefinition::builder()
                .attribute_name("id")
                .attribute_type(aws_sdk_dynamodb::types::ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            aws_sdk_dynamodb::types::KeySchemaElement::builder()
                .attribute_name("id")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap();
    let error = DynamoDbCheckpointStore::builder(client, "app", "stream")
        .table(&table)
        .create_table_if_missing(true)
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(error, DynamoDbCheckpointError::Config(_)),
        "{error}"
    );
    println!("{error}");
    delete_tables(vec![table]).await;
}

/// A single-worker consumer on a DynamoDB lease table that holds a lease
/// for its shard (leases turned off after a run with them, or a KCL
/// application's table) stops with an error that says so, instead of
/// having every checkpoint refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_dynamodb_a_single_worker_on_a_lease_table_stops_with_a_clear_error() {
    let kinesis = integration_tests::kinesis_client().await;
    let stream = unique_name("ddb-leased");
    let app = format!("{stream}-app");
    let store = DynamoDbCheckpointStore::builder(dynamodb_client().await, &app, &stream)
        .table(unique_name("ddb-leased"))
        .create_table_if_missing(true)
        .build()
        .await
        .unwrap();
    let table = store.table().to_owned();
    let error = integration_tests::leases::single_worker_on_a_leased_store(
        &kinesis,
        &app,
        &stream,
        Arc::new(store),
        Arc::new(kinesis_connectors_testkit::RecordingEmitter::<String>::new()),
    )
    .await;
    delete_tables(vec![table]).await;
    let text = error.to_string();
    assert!(
        matches!(error, kinesis_connectors_core::Error::ShardFailed { .. }),
        "{text}"
    );
    for needle in ["has a lease", "held by \"old-worker\"", "SingleWorker"] {
        assert!(text.contains(needle), "{needle:?} in {text}");
    }
}

/// A renewal DynamoDB applied but answered with an error (an SDK retry of
/// the applied conditional update refused, a reply lost to a timeout) is
/// not a lost lease: the coordinator reads it back, as the KCL does.
#[tokio::test]
async fn checkpoint_dynamodb_an_applied_renewal_answered_with_an_error_keeps_the_lease() {
    let stream = unique_name("ddb-renewal");
    let app = format!("{stream}-app");
    let store = DynamoDbCheckpointStore::builder(dynamodb_client().await, &app, &stream)
        .table(unique_name("ddb-renewal"))
        .create_table_if_missing(true)
        .build()
        .await
        .unwrap();
    let table = store.table().to_owned();
    integration_tests::leases::applied_renewals_keep_the_lease(store, &app, &stream).await;
    delete_tables(vec![table]).await;
}

/// Leases watched before an outage longer than the failover time are not
/// taken when DynamoDB returns (see `integration_tests::leases`).
#[tokio::test]
async fn checkpoint_dynamodb_leases_outlive_a_store_outage_longer_than_failover() {
    let stream = unique_name("ddb-outage");
    let app = format!("{stream}-app");
    let store = DynamoDbCheckpointStore::builder(dynamodb_client().await, &app, &stream)
        .table(unique_name("ddb-outage"))
        .create_table_if_missing(true)
        .build()
        .await
        .unwrap();
    let table = store.table().to_owned();
    integration_tests::leases::leases_outlive_a_store_outage(store, &app, &stream).await;
    delete_tables(vec![table]).await;
}
