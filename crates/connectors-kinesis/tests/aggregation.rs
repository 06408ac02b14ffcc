//! `KinesisEmitter` with KPL aggregation against a mocked two-shard stream:
//! items are packed per target shard, every item lands (inside its
//! aggregate) on the shard it would have landed on alone, limits hold, and an
//! aggregate that lands elsewhere after resharding is sent again.

// Test code: helpers may unwrap and panic like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_kinesis::config::retry::RetryConfig;
use aws_sdk_kinesis::operation::list_shards::ListShardsOutput;
use aws_sdk_kinesis::operation::put_records::PutRecordsOutput;
use aws_sdk_kinesis::types::{HashKeyRange as ApiRange, PutRecordsResultEntry, Shard};
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use kinesis_connectors_core::kpl::{self, HashKeyRange};
use kinesis_connectors_core::{Emitter, Record, RetryPolicy, Utf8Transformer};
use kinesis_connectors_kinesis::{Aggregation, KinesisEmitter};
use kinesis_connectors_testkit::{batch, shard_context};

const HALF: u128 = u128::MAX / 2;

fn shards() -> [(&'static str, HashKeyRange); 2] {
    [
        (
            "shardId-low",
            HashKeyRange {
                start: 0,
                end: HALF,
            },
        ),
        (
            "shardId-high",
            HashKeyRange {
                start: HALF + 1,
                end: u128::MAX,
            },
        ),
    ]
}

/// What the fake stream stored: (shard, record).
type Stored = Arc<Mutex<Vec<(String, Record)>>>;

fn list_rule(calls: &Arc<Mutex<usize>>) -> Rule {
    let calls = calls.clone();
    mock!(aws_sdk_kinesis::Client::list_shards).then_compute_output(move |_| {
        *calls.lock().unwrap() += 1;
        let mut output = ListShardsOutput::builder();
        for (id, range) in shards() {
            output = output.shards(
                Shard::builder()
                    .shard_id(id)
                    .hash_key_range(
                        ApiRange::builder()
                            .starting_hash_key(range.start.to_string())
                            .ending_hash_key(range.end.to_string())
                            .build()
                            .unwrap(),
                    )
                    .build()
                    .unwrap(),
            );
        }
        output.build()
    })
}

/// Routes like Kinesis; the first `misroute` aggregates are reported on the
/// wrong shard (and not stored), as after a reshard the emitter did not know.
fn put_rule(stored: &Stored, misroute: usize) -> Rule {
    let stored = stored.clone();
    let misroute = Arc::new(Mutex::new(misroute));
    mock!(aws_sdk_kinesis::Client::put_records).then_compute_output(move |input| {
        let mut results = Vec::new();
        for entry in input.records() {
            let key =
                kpl::effective_hash_key(entry.partition_key().unwrap(), entry.explicit_hash_key())
                    .unwrap();
            let (mut shard, _) = shards()
                .into_iter()
                .find(|(_, range)| range.contains(key))
                .unwrap();
            let data = entry.data().as_ref().to_vec();
            let mut left = misroute.lock().unwrap();
            if kpl::is_aggregated(&data) && *left > 0 {
                *left -= 1;
                shard = "shardId-new";
            } else {
                let record = Record::new(data, entry.partition_key().unwrap(), 1u64);
                stored.lock().unwrap().push((shard.to_owned(), record));
            }
            results.push(
                PutRecordsResultEntry::builder()
                    .shard_id(shard)
                    .sequence_number("1")
                    .build(),
            );
        }
        PutRecordsOutput::builder()
            .set_records(Some(results))
            .build()
            .unwrap()
    })
}

fn emitter(rules: &[Rule], limits: Aggregation) -> KinesisEmitter<Utf8Transformer> {
    let client = mock_client!(aws_sdk_kinesis, RuleMode::MatchAny, rules, |c| c
        .retry_config(RetryConfig::disabled()));
    KinesisEmitter::builder(client, "target", Utf8Transformer)
        .retry(
            RetryPolicy::new()
                .with_initial_delay(Duration::from_millis(1))
                .with_max_attempts(3),
        )
        .aggregate(limits)
        .build()
        .unwrap()
}

/// Every item as a de-aggregating reader of each shard sees it: an
/// aggregate with a sub-record outside the shard's range dropped whole, as
/// `PollingSource` and the KCL do.
fn read_back(stored: &Stored) -> Vec<(String, String)> {
    let ranges = shards();
    let mut items = Vec::new();
    for (shard, record) in stored.lock().unwrap().iter() {
        let range = ranges.iter().find(|(id, _)| id == shard).unwrap().1;
        let subs = kpl::deaggregate(record).unwrap();
        if kpl::is_aggregated(&record.data) && !subs.iter().all(|sub| range.owns(sub)) {
            continue;
        }
        for sub in subs {
            items.push((
                String::from_utf8(sub.data.to_vec()).unwrap(),
                sub.partition_key,
            ));
        }
    }
    items.sort();
    items
}

fn expected(n: usize) -> Vec<(String, String)> {
    let mut items: Vec<_> = (0..n)
        .map(|i| (format!("r-{i}"), format!("pk-{}", i % 8)))
        .collect();
    items.sort();
    items
}

#[tokio::test]
async fn items_are_packed_per_shard_and_land_where_they_belong() {
    let stored = Stored::default();
    let calls = Arc::new(Mutex::new(0));
    let emitter = emitter(
        &[list_rule(&calls), put_rule(&stored, 0)],
        Aggregation::default(),
    );
    let items: Vec<String> = (0..200).map(|i| format!("r-{i}")).collect();
    let outcome = emitter
        .emit(&batch(shard_context("s"), items, 1))
        .await
        .unwrap();
    assert!(outcome.rejected.is_empty());
    // pk-0..pk-7 hash into both halves: one aggregate per shard.
    let records = stored.lock().unwrap().len();
    assert_eq!(records, 2, "{:?}", stored.lock().unwrap());
    assert!(
        stored
            .lock()
            .unwrap()
            .iter()
            .all(|(_, r)| kpl::is_aggregated(&r.data))
    );
    assert_eq!(read_back(&stored), expected(200));
    assert_eq!(*calls.lock().unwrap(), 1);
    // The shard map is kept.
    let outcome = emitter
        .emit(&batch(shard_context("s"), vec!["again".to_owned()], 1))
        .await
        .unwrap();
    assert!(outcome.rejected.is_empty());
    assert_eq!(*calls.lock().unwrap(), 1);
}

#[tokio::test]
async fn limits_split_aggregates() {
    let stored = Stored::default();
    let calls = Arc::new(Mutex::new(0));
    let limits = Aggregation::default()
        .with_max_records(10)
        .with_max_bytes(200);
    let emitter = emitter(&[list_rule(&calls), put_rule(&stored, 0)], limits);
    let items: Vec<String> = (0..100).map(|i| format!("r-{i}")).collect();
    let outcome = emitter
        .emit(&batch(shard_context("s"), items, 1))
        .await
        .unwrap();
    assert!(outcome.rejected.is_empty());
    for (_, record) in stored.lock().unwrap().iter() {
        assert!(record.data.len() + record.partition_key.len() <= 200);
        assert!(kpl::deaggregate(record).unwrap().len() <= 10);
    }
    assert_eq!(read_back(&stored), expected(100));
}

#[tokio::test]
async fn an_aggregate_landing_on_another_shard_is_sent_again_on_a_fresh_listing() {
    let stored = Stored::default();
    let calls = Arc::new(Mutex::new(0));
    let emitter = emitter(
        &[list_rule(&calls), put_rule(&stored, 1)],
        Aggregation::default(),
    );
    let items: Vec<String> = (0..50).map(|i| format!("r-{i}")).collect();
    let outcome = emitter
        .emit(&batch(shard_context("s"), items, 1))
        .await
        .unwrap();
    assert!(outcome.rejected.is_empty());
    assert_eq!(read_back(&stored), expected(50));
    assert_eq!(*calls.lock().unwrap(), 2, "listed again after the misroute");
}
