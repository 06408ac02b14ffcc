//! The scripted source behaves as documented: iterator positions, faults,
//! pages, live appends, shard ends with children, call records.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use kinesis_connectors_core::{
    CancellationToken, Lease, LeaseHandle, MemoryCheckpointStore, Pipeline, Record, RecordSource,
    RecordsPage, SequenceNumber, ShardConfig, ShardConsumer, ShardEnv, ShardInfo, ShardOutcome,
    SourceErrorKind, StartPosition, Utf8Transformer,
};
use kinesis_connectors_testkit::{Fault, RecordingEmitter, ScriptedSource, records, shard_context};

const STREAM: &str = "test-stream";

fn payloads(texts: &[&str]) -> Vec<(String, Bytes)> {
    texts
        .iter()
        .map(|t| (format!("pk-{t}"), Bytes::copy_from_slice(t.as_bytes())))
        .collect()
}

fn data(page: &RecordsPage) -> Vec<String> {
    page.records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.data).into_owned())
        .collect()
}

fn seq(n: u64) -> SequenceNumber {
    SequenceNumber::from(n)
}

// Helpers fail the test like the #[test] functions using them.
#[allow(clippy::unwrap_used)]
async fn iterator(source: &ScriptedSource, shard: &str, position: StartPosition) -> String {
    source
        .shard_iterator(STREAM, shard, &position)
        .await
        .unwrap()
}

/// The sequence numbers of the records read from `position` (one big page).
#[allow(clippy::unwrap_used)]
async fn read_from(source: &ScriptedSource, shard: &str, position: StartPosition) -> Vec<String> {
    let it = iterator(source, shard, position).await;
    let page = source.get_records(&it, 10_000).await.unwrap();
    page.records
        .iter()
        .map(|r| r.position().to_string())
        .collect()
}

#[tokio::test]
async fn iterator_positions() {
    let source = ScriptedSource::new();
    source.add_shard(ShardInfo::open("s"));
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
    let mut history = records(10, 3); // 10, 11, 12
    for (i, record) in history.iter_mut().enumerate() {
        record.approximate_arrival = Some(t0 + Duration::from_secs(10 * i as u64));
    }
    // An aggregated record 13 with three sub-records, then 14.
    for sub in 0..3 {
        let mut record = Record::new(format!("agg-{sub}"), "pk", 13u64);
        record.sub_sequence_number = Some(sub);
        record.approximate_arrival = Some(t0 + Duration::from_secs(30));
        history.push(record);
    }
    let mut last = Record::new("last", "pk", 14u64);
    last.approximate_arrival = Some(t0 + Duration::from_secs(40));
    history.push(last);
    source.append_records("s", history);

    let all = ["10", "11", "12", "13/0", "13/1", "13/2", "14"];
    assert_eq!(
        read_from(&source, "s", StartPosition::TrimHorizon).await,
        all
    );
    assert!(
        read_from(&source, "s", StartPosition::Latest)
            .await
            .is_empty()
    );
    assert_eq!(
        read_from(&source, "s", StartPosition::AtSequence(seq(11))).await,
        all[1..]
    );
    assert_eq!(
        read_from(&source, "s", StartPosition::AfterSequence(seq(11))).await,
        all[2..]
    );
    // Sub-records share the sequence number: AT starts at the first of
    // them, AFTER skips all of them.
    assert_eq!(
        read_from(&source, "s", StartPosition::AtSequence(seq(13))).await,
        all[3..]
    );
    assert_eq!(
        read_from(&source, "s", StartPosition::AfterSequence(seq(13))).await,
        ["14"]
    );
    // Numbers between or beyond the records.
    assert_eq!(
        read_from(&source, "s", StartPosition::AtSequence(seq(5))).await,
        all
    );
    assert!(
        read_from(&source, "s", StartPosition::AfterSequence(seq(14)))
            .await
            .is_empty()
    );
    // Timestamps: at or after.
    let at = |secs| StartPosition::AtTimestamp(t0 + Duration::from_secs(secs));
    assert_eq!(read_from(&source, "s", at(0)).await, all);
    assert_eq!(read_from(&source, "s", at(10)).await, all[1..]);
    assert_eq!(read_from(&source, "s", at(11)).await, all[2..]);
    assert_eq!(read_from(&source, "s", at(35)).await, ["14"]);
    assert!(read_from(&source, "s", at(41)).await.is_empty());

    let requests = source.iterator_requests("s");
    assert_eq!(requests.len(), 13);
    assert_eq!(requests[0], StartPosition::TrimHorizon);
    assert_eq!(requests[2], StartPosition::AtSequence(seq(11)));
}

#[tokio::test]
async fn latest_sees_only_later_records() {
    let source = ScriptedSource::new();
    source.add_shard(ShardInfo::open("s"));
    source.append("s", payloads(&["old"]));
    let it = iterator(&source, "s", StartPosition::Latest).await;
    source.append("s", payloads(&["new"]));
    let page = source.get_records(&it, 100).await.unwrap();
    assert_eq!(data(&page), ["new"]);
}

#[tokio::test]
async fn unknown_shards_and_bad_iterators_are_errors() {
    let source = ScriptedSource::new();
    let error = source
        .shard_iterator(STREAM, "nope", &StartPosition::TrimHorizon)
        .await
        .unwrap_err();
    assert_eq!(error.source_kind(), Some(SourceErrorKind::NotFound));
    assert!(source.iterator_requests("nope").is_empty());
    let error = source.get_records("garbage", 10).await.unwrap_err();
    assert_eq!(error.source_kind(), Some(SourceErrorKind::Other));
}

#[tokio::test]
async fn append_numbers_records_from_one_counter_across_shards() {
    let source = ScriptedSource::new();
    source.add_shard(ShardInfo::open("a"));
    source.add_shard(ShardInfo::open("b"));
    let first = source.append("a", payloads(&["1", "2"]));
    let second = source.append("b", payloads(&["3"]));
    let third = source.append("a", payloads(&["4"]));
    assert_eq!(first, [seq(1), seq(2)]);
    assert_eq!(second, [seq(3)]);
    assert_eq!(third, [seq(4)]);
    // append_records moves the counter past the numbers it was given.
    source.append_records("b", records(100, 2));
    assert_eq!(source.append("a", payloads(&["5"])), [seq(102)]);

    let stored = source.shard_records("a");
    assert_eq!(stored.len(), 4);
    assert!(stored.iter().all(|r| r.approximate_arrival.is_some()));
    assert_eq!(stored[0].partition_key, "pk-1");
    assert!(source.shard_records("unknown").is_empty());
}

#[tokio::test]
async fn faults_are_popped_one_per_call_without_advancing() {
    let source = ScriptedSource::new();
    source.add_shard(ShardInfo::open("s"));
    source.add_shard(ShardInfo::open("other"));
    source.append("s", payloads(&["a", "b"]));
    for fault in [
        Fault::Throttle,
        Fault::Transient,
        Fault::ExpiredIterator,
        Fault::NotFound,
        Fault::Fatal,
    ] {
        source.inject("s", fault);
    }
    let it = iterator(&source, "s", StartPosition::TrimHorizon).await;
    let mut kinds = Vec::new();
    for _ in 0..5 {
        let error = source.get_records(&it, 100).await.unwrap_err();
        kinds.push((error.source_kind(), error.is_retryable()));
    }
    assert_eq!(
        kinds,
        [
            (Some(SourceErrorKind::Throttled), true),
            (Some(SourceErrorKind::Transient), true),
            (Some(SourceErrorKind::ExpiredIterator), true),
            (Some(SourceErrorKind::NotFound), false),
            (Some(SourceErrorKind::Other), false),
        ]
    );
    // The same iterator still reads from the start.
    let page = source.get_records(&it, 100).await.unwrap();
    assert_eq!(data(&page), ["a", "b"]);
    assert_eq!(source.get_records_calls("s").len(), 6);
    // Faults are per shard.
    let other = iterator(&source, "other", StartPosition::TrimHorizon).await;
    assert!(source.get_records(&other, 100).await.is_ok());
}

#[tokio::test]
async fn list_shards_pops_its_own_faults_and_lists_in_insertion_order() {
    let source = ScriptedSource::new();
    source.add_shard(ShardInfo::open("b"));
    source.add_shard(ShardInfo::open("a"));
    source.inject_list_shards(Fault::Throttle);
    source.inject_list_shards(Fault::Fatal);
    let first = source.list_shards(STREAM).await.unwrap_err();
    assert_eq!(first.source_kind(), Some(SourceErrorKind::Throttled));
    let second = source.list_shards(STREAM).await.unwrap_err();
    assert_eq!(second.source_kind(), Some(SourceErrorKind::Other));
    let shards = source.list_shards(STREAM).await.unwrap();
    let ids: Vec<&str> = shards.iter().map(|s| s.shard_id.as_str()).collect();
    assert_eq!(ids, ["b", "a"]);
}

#[tokio::test]
async fn page_size_and_limit_cap_pages_and_millis_behind_counts_unread() {
    let source = ScriptedSource::new();
    source.add_shard(ShardInfo::open("s"));
    source.append("s", payloads(&["1", "2", "3", "4", "5"]));
    let it = iterator(&source, "s", StartPosition::TrimHorizon).await;

    let page = source.get_records(&it, 2).await.unwrap(); // the limit caps
    assert_eq!(data(&page), ["1", "2"]);
    assert_eq!(page.millis_behind_latest, Some(3_000));

    source.set_page_size(1); // now the page size caps
    let it = page.next_iterator.unwrap();
    let page = source.get_records(&it, 100).await.unwrap();
    assert_eq!(data(&page), ["3"]);
    assert_eq!(page.millis_behind_latest, Some(2_000));

    source.set_page_size(10);
    let page = source
        .get_records(page.next_iterator.as_deref().unwrap(), 100)
        .await
        .unwrap();
    assert_eq!(data(&page), ["4", "5"]);
    assert_eq!(page.millis_behind_latest, Some(0));
    assert!(page.next_iterator.is_some(), "an open shard never ends");
    assert!(page.child_shards.is_empty());
}

#[tokio::test]
async fn a_caught_up_open_shard_returns_empty_pages_then_new_records() {
    let source = ScriptedSource::new();
    source.add_shard(ShardInfo::open("s"));
    source.append("s", payloads(&["a"]));
    let it = iterator(&source, "s", StartPosition::TrimHorizon).await;
    let page = source.get_records(&it, 100).await.unwrap();
    let at_end = page.next_iterator.unwrap();

    let empty = source.get_records(&at_end, 100).await.unwrap();
    assert!(empty.records.is_empty());
    assert_eq!(empty.millis_behind_latest, Some(0));
    assert_eq!(empty.next_iterator.as_deref(), Some(at_end.as_str()));

    source.append("s", payloads(&["b", "c"]));
    let live = source
        .get_records(empty.next_iterator.as_deref().unwrap(), 100)
        .await
        .unwrap();
    assert_eq!(data(&live), ["b", "c"]);
}

#[tokio::test]
async fn a_closed_shard_ends_with_its_children_once_read() {
    let source = ScriptedSource::new();
    source.add_shard(ShardInfo::open("parent"));
    source.add_shard(ShardInfo::open("neighbour"));
    let sequences = source.append("parent", payloads(&["1", "2", "3"]));
    let children: Vec<ShardInfo> = ["left", "right"]
        .into_iter()
        .map(|id| {
            let mut child = ShardInfo::open(id);
            child.parent_shard_id = Some("parent".into());
            child
        })
        .collect();
    source.close_shard("parent", children.clone());
    source.set_page_size(2);

    let it = iterator(&source, "parent", StartPosition::TrimHorizon).await;
    let first = source.get_records(&it, 100).await.unwrap();
    assert_eq!(data(&first), ["1", "2"]);
    assert!(first.next_iterator.is_some(), "not read to the end yet");
    assert!(first.child_shards.is_empty());
    let last = source
        .get_records(first.next_iterator.as_deref().unwrap(), 100)
        .await
        .unwrap();
    assert_eq!(data(&last), ["3"]);
    assert_eq!(last.next_iterator, None);
    assert_eq!(last.child_shards, ["left", "right"]);

    // A reader starting after the last record ends at once.
    let after = iterator(
        &source,
        "parent",
        StartPosition::AfterSequence(sequences[2].clone()),
    )
    .await;
    let end = source.get_records(&after, 100).await.unwrap();
    assert!(end.records.is_empty());
    assert_eq!(end.next_iterator, None);
    assert_eq!(end.child_shards, ["left", "right"]);

    let shards = source.list_shards(STREAM).await.unwrap();
    let ids: Vec<&str> = shards.iter().map(|s| s.shard_id.as_str()).collect();
    assert_eq!(ids, ["parent", "neighbour", "left", "right"]);
    assert_eq!(shards[0].ending_sequence_number, Some(sequences[2].clone()));
    assert!(shards[0].is_closed());
    assert_eq!(shards[2], children[0]);

    // Children are live shards numbered after the parent.
    let child_seq = source.append("left", payloads(&["c"]));
    assert!(child_seq[0] > sequences[2]);
}

#[tokio::test]
async fn a_merge_lists_the_shared_child_once_and_empty_shards_get_an_ending_number() {
    let source = ScriptedSource::new();
    source.add_shard(ShardInfo::open("a"));
    source.add_shard(ShardInfo::open("b"));
    source.append("a", payloads(&["x"]));
    let mut merged = ShardInfo::open("merged");
    merged.parent_shard_id = Some("a".into());
    merged.adjacent_parent_shard_id = Some("b".into());
    source.close_shard("a", vec![merged.clone()]);
    source.close_shard("b", vec![merged.clone()]);
    let shards = source.list_shards(STREAM).await.unwrap();
    assert_eq!(shards.len(), 3);
    assert_eq!(shards[2], merged);
    // "b" had no records: its ending number is fresh, above "a"'s records.
    let b_end = shards[1].ending_sequence_number.clone().unwrap();
    assert!(b_end > seq(1));
    assert!(source.append("merged", payloads(&["y"]))[0] > b_end);

    let it = iterator(&source, "b", StartPosition::TrimHorizon).await;
    let page = source.get_records(&it, 100).await.unwrap();
    assert!(page.records.is_empty());
    assert_eq!(page.next_iterator, None);
    assert_eq!(page.child_shards, ["merged"]);
    assert_eq!(
        source.shard_info("b").unwrap().ending_sequence_number,
        Some(b_end)
    );
}

#[tokio::test(start_paused = true)]
async fn get_records_calls_are_timed_in_tokio_time() {
    let source = ScriptedSource::new();
    source.add_shard(ShardInfo::open("s"));
    let it = iterator(&source, "s", StartPosition::TrimHorizon).await;
    source.get_records(&it, 1).await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    source.inject("s", Fault::Throttle);
    source.get_records(&it, 1).await.unwrap_err();
    let calls = source.get_records_calls("s");
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1] - calls[0], Duration::from_secs(5));
    assert!(source.get_records_calls("unknown").is_empty());
}

#[test]
#[should_panic(expected = "ScriptedSource::append: no shard \"missing\"")]
fn appending_to_an_unknown_shard_panics() {
    ScriptedSource::new().append("missing", payloads(&["x"]));
}

#[test]
#[should_panic(expected = "is closed")]
fn appending_to_a_closed_shard_panics() {
    let source = ScriptedSource::new();
    source.add_shard(ShardInfo::open("s"));
    source.close_shard("s", Vec::new());
    source.append("s", payloads(&["x"]));
}

#[test]
#[should_panic(expected = "already added")]
fn adding_a_shard_twice_panics() {
    let source = ScriptedSource::new();
    source.add_shard(ShardInfo::open("s"));
    source.add_shard(ShardInfo::open("s"));
}

// ------------------------------------------------ driving the core's shard consumer

fn consumer_env(source: &ScriptedSource) -> ShardEnv {
    ShardEnv::new(
        Arc::new(source.clone()),
        Arc::new(MemoryCheckpointStore::new()),
        ShardConfig::default(),
    )
}

fn lease(shard: &str) -> LeaseHandle {
    LeaseHandle::new(Lease::unfenced(shard, "worker"))
}

#[tokio::test(start_paused = true)]
async fn the_shard_consumer_reads_a_scripted_shard_to_its_end() {
    let source = ScriptedSource::new();
    source.add_shard(ShardInfo::open("s"));
    source.append("s", payloads(&["a", "b", "c", "d", "e"]));
    source.set_page_size(2);
    // The iterator expires after the first page: the consumer must resume
    // after the last record it read.
    let mut child = ShardInfo::open("child");
    child.parent_shard_id = Some("s".into());
    source.close_shard("s", vec![child]);

    let emitter = RecordingEmitter::new();
    let pipeline = Pipeline::builder(Utf8Transformer, Arc::new(emitter.clone()))
        .build()
        .unwrap();
    let run = ShardConsumer::new(
        consumer_env(&source),
        shard_context("s"),
        lease("s"),
        pipeline,
    )
    .run(CancellationToken::new());
    let reader = tokio::spawn(run);
    // Inject once the first page was read.
    while source.get_records_calls("s").is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    source.inject("s", Fault::ExpiredIterator);
    let report = reader.await.unwrap();

    assert!(
        matches!(&report.outcome, ShardOutcome::ShardEnd { children } if children == &["child"]),
        "{:?}",
        report.outcome
    );
    assert_eq!(emitter.items(), ["a", "b", "c", "d", "e"]);
    assert_eq!(
        source.iterator_requests("s"),
        [
            StartPosition::TrimHorizon,
            StartPosition::AfterSequence(seq(2)),
        ]
    );
    // Never more than five calls per second.
    let calls = source.get_records_calls("s");
    assert_eq!(calls.len(), 4); // page, expired, page, last page
    for pair in calls.windows(2) {
        assert!(pair[1] - pair[0] >= Duration::from_millis(200));
    }
}

#[tokio::test(start_paused = true)]
async fn the_shard_consumer_sees_live_appends() {
    let source = ScriptedSource::new();
    source.add_shard(ShardInfo::open("s"));
    let emitter = RecordingEmitter::new();
    let pipeline = Pipeline::builder(Utf8Transformer, Arc::new(emitter.clone()))
        .buffer_limits(kinesis_connectors_core::BufferLimits::default().with_max_records(1))
        .build()
        .unwrap();
    let cancel = CancellationToken::new();
    let task = tokio::spawn(
        ShardConsumer::new(
            consumer_env(&source),
            shard_context("s"),
            lease("s"),
            pipeline,
        )
        .run(cancel.clone()),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(emitter.item_count(), 0);
    source.append("s", payloads(&["late"]));
    assert!(emitter.wait_for_items(1, Duration::from_secs(5)).await);
    assert_eq!(emitter.items(), ["late"]);
    cancel.cancel();
    let report = task.await.unwrap();
    assert!(matches!(report.outcome, ShardOutcome::Shutdown));
}
