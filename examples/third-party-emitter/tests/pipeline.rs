//! Real consumers (`ShardConsumer`, `StreamConsumer`) over the testkit's
//! `ScriptedSource`, writing through `RotatingFileEmitter`: file names and
//! contents record by record, replays, gzip and retention.

// Test code: failures fail loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{STREAM, files_under, kept, lines, payload, seq};
use kinesis_connectors_core::{
    CancellationToken, Checkpoint, CheckpointStore, MemoryCheckpointStore, Position, ShardContext,
    ShardKey, StreamConsumer, Utf8Transformer,
};
use kinesis_emitter_files::RotatingFileEmitter;

const SHARD: &str = "shardId-000000000000";

fn emitter(dir: &Path) -> Arc<RotatingFileEmitter<Utf8Transformer>> {
    Arc::new(
        RotatingFileEmitter::builder(dir, Utf8Transformer)
            .build()
            .unwrap(),
    )
}

/// The file name of the batch covering records `first..=last`.
fn name(shard: &str, first: usize, last: usize, extension: &str) -> String {
    format!("{shard}-{}-{}.{extension}", seq(first), seq(last))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_consumer_writes_every_kept_record_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let source = common::closed_source(&[SHARD], 12);
    let store = MemoryCheckpointStore::new();
    let report = common::run_shard(&source, &store, SHARD, emitter(dir.path()), 4).await;
    assert_eq!(report.stats.records_read, 12);
    assert_eq!(report.stats.records_filtered, 2); // records 4 and 9
    assert_eq!(report.stats.records_emitted, 10);

    // Batches flush at 4 kept records; a filtered record joins the next
    // batch's range (4 and 9 are bots). Records arrive every 10 minutes from
    // 09:00, so the third batch (first record 9 at 10:30) goes into the 10
    // o'clock directory.
    let hour = |h: &str| dir.path().join(STREAM).join("2024/05/17").join(h);
    let expected = [
        (
            hour("09").join(name(SHARD, 0, 3, "jsonl")),
            vec![0, 1, 2, 3],
        ),
        (
            hour("09").join(name(SHARD, 4, 8, "jsonl")),
            vec![5, 6, 7, 8],
        ),
        (hour("10").join(name(SHARD, 9, 11, "jsonl")), vec![10, 11]),
    ];
    let mut expected_files: Vec<_> = expected.iter().map(|(p, _)| p.clone()).collect();
    expected_files.sort();
    assert_eq!(files_under(dir.path()), expected_files);
    for (path, records) in &expected {
        let want: Vec<String> = records.iter().map(|&i| payload(i)).collect();
        assert_eq!(&lines(path), &want, "{path:?}");
    }
    assert!(
        (0..12)
            .filter(|&i| !kept(i))
            .all(|i| !files_under(dir.path())
                .iter()
                .any(|p| lines(p).contains(&payload(i)))),
        "filtered records are in no file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_consumer_shares_one_emitter_between_shards() {
    let dir = tempfile::tempdir().unwrap();
    let shards = ["shardId-000000000000", "shardId-000000000001"];
    let source = common::closed_source(&shards, 7);
    let store = MemoryCheckpointStore::new();
    let emitter = emitter(dir.path());
    let consumer = StreamConsumer::builder(
        common::APPLICATION,
        STREAM,
        Arc::new(source),
        Arc::new(store.clone()),
        move |_: &ShardContext| Ok(common::pipeline(emitter.clone(), 100)),
    )
    .shard_config(common::shard_config())
    .build()
    .unwrap();
    let cancel = CancellationToken::new();
    let run = tokio::spawn(consumer.run(cancel.clone()));
    for shard in shards {
        let key = ShardKey::new(common::APPLICATION, STREAM, shard);
        let mut waited = Duration::ZERO;
        while store.get(&key).await.unwrap() != Some(Checkpoint::ShardEnd) {
            assert!(waited < Duration::from_secs(60), "{shard} never ended");
            tokio::time::sleep(Duration::from_millis(20)).await;
            waited += Duration::from_millis(20);
        }
    }
    cancel.cancel();
    let report = run.await.unwrap().unwrap();
    assert_eq!(report.failures().count(), 0);
    assert_eq!(report.records_emitted(), 12);

    // One batch per shard (7 records, 1 filtered), both in the 09 directory.
    let nine = dir.path().join(STREAM).join("2024/05/17/09");
    let want: Vec<String> = (0..7).filter(|&i| kept(i)).map(payload).collect();
    for shard in shards {
        assert_eq!(lines(&nine.join(name(shard, 0, 6, "jsonl"))), want);
    }
    assert_eq!(files_under(dir.path()).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_overwrite_their_files_instead_of_duplicating() {
    let dir = tempfile::tempdir().unwrap();
    let source = common::closed_source(&[SHARD], 12);
    let first_run = MemoryCheckpointStore::new();
    common::run_shard(&source, &first_run, SHARD, emitter(dir.path()), 4).await;
    let before = common::snapshot(dir.path());
    assert_eq!(common::count_lines(dir.path()), 10);

    // Checkpoints lost: the whole shard is read and emitted again.
    let lost = MemoryCheckpointStore::new();
    common::run_shard(&source, &lost, SHARD, emitter(dir.path()), 4).await;
    assert_eq!(common::snapshot(dir.path()), before);
    assert_eq!(common::count_lines(dir.path()), 10);

    // A crash after the second batch: the restart resumes after its
    // checkpoint and rewrites only the third batch, with the same name.
    let resumed = MemoryCheckpointStore::new();
    let key = ShardKey::new(common::APPLICATION, STREAM, SHARD);
    resumed
        .set(&key, &Checkpoint::At(Position::new(seq(8))))
        .await
        .unwrap();
    let report = common::run_shard(&source, &resumed, SHARD, emitter(dir.path()), 4).await;
    assert_eq!(report.stats.batches_emitted, 1);
    assert_eq!(common::snapshot(dir.path()), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzipped_files_hold_the_records_and_replay_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let gzip = || {
        Arc::new(
            RotatingFileEmitter::builder(dir.path(), Utf8Transformer)
                .gzip(true)
                .build()
                .unwrap(),
        )
    };
    let source = common::closed_source(&[SHARD], 12);
    common::run_shard(&source, &MemoryCheckpointStore::new(), SHARD, gzip(), 100).await;
    let files = files_under(dir.path());
    let only = dir
        .path()
        .join(STREAM)
        .join("2024/05/17/09")
        .join(name(SHARD, 0, 11, "jsonl.gz"));
    assert_eq!(files, std::slice::from_ref(&only));
    let raw = std::fs::read(&only).unwrap();
    assert_eq!(&raw[..2], &[0x1f, 0x8b], "gzip magic");
    let want: Vec<String> = (0..12).filter(|&i| kept(i)).map(payload).collect();
    assert_eq!(lines(&only), want);

    common::run_shard(&source, &MemoryCheckpointStore::new(), SHARD, gzip(), 100).await;
    assert_eq!(std::fs::read(&only).unwrap(), raw, "same bytes on replay");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_files_keeps_the_newest_files_of_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let emitter = Arc::new(
        RotatingFileEmitter::builder(dir.path(), Utf8Transformer)
            .max_files(2)
            .build()
            .unwrap(),
    );
    let source = common::closed_source(&[SHARD], 12);
    // Batches of 2 kept records: 0-1, 2-3, 4-6, 7-8, 9-11 (ranges include
    // the filtered 4 and 9); written one after another, so the last two are
    // the newest.
    common::run_shard(&source, &MemoryCheckpointStore::new(), SHARD, emitter, 2).await;
    let names: Vec<String> = files_under(dir.path())
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [name(SHARD, 7, 8, "jsonl"), name(SHARD, 9, 11, "jsonl")]
    );
    // Both are in the 10 o'clock directory (records 7 and 9 arrived at 10:10
    // and 10:30): the emptied 09 directory was removed.
    let day = dir.path().join(STREAM).join("2024/05/17");
    assert!(!day.join("09").exists());
    assert!(day.join("10").is_dir());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_age_deletes_old_files_and_leaves_other_files_alone() {
    let dir = tempfile::tempdir().unwrap();
    let stream_dir = dir.path().join(STREAM);
    // An old output file from an earlier run, an old file that is not
    // ours, and another stream's old file.
    let old_hour = stream_dir.join("2024/01/01/00");
    std::fs::create_dir_all(&old_hour).unwrap();
    let old = old_hour.join("shardId-000000000000-1-2.jsonl");
    let notes = old_hour.join("notes.txt");
    let other_stream = dir
        .path()
        .join("other/2024/01/01/00/shardId-000000000000-1-2.jsonl");
    std::fs::create_dir_all(other_stream.parent().unwrap()).unwrap();
    for path in [&old, &notes, &other_stream] {
        std::fs::write(path, b"old\n").unwrap();
        common::age_file(path, Duration::from_secs(7 * 24 * 3600));
    }
    let emitter = Arc::new(
        RotatingFileEmitter::builder(dir.path(), Utf8Transformer)
            .max_age(Duration::from_secs(24 * 3600))
            .build()
            .unwrap(),
    );
    let source = common::closed_source(&[SHARD], 3);
    common::run_shard(&source, &MemoryCheckpointStore::new(), SHARD, emitter, 100).await;
    assert!(!old.exists(), "the old output file is deleted");
    assert!(notes.exists(), "files with another extension are kept");
    assert!(other_stream.exists(), "retention stays within its stream");
    assert!(
        stream_dir
            .join("2024/05/17/09")
            .join(name(SHARD, 0, 2, "jsonl"))
            .exists()
    );
}
