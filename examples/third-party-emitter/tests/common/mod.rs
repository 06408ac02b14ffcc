//! Helpers shared by the integration tests: scripted shards, running a
//! pipeline into the emitter, reading back what it wrote.

// Each test binary uses a different subset of the helpers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kinesis_connectors_core::{
    BufferLimits, CancellationToken, Emitter, Lease, LeaseHandle, MemoryCheckpointStore, Pipeline,
    Record, RetryPolicy, SequenceNumber, ShardConfig, ShardConsumer, ShardContext, ShardEnv,
    ShardInfo, ShardOutcome, ShardReport, Utf8Transformer,
};
use kinesis_connectors_testkit::ScriptedSource;

pub(crate) const APPLICATION: &str = "files-test";
pub(crate) const STREAM: &str = "clicks";

/// 2024-05-17T09:00:00Z.
pub(crate) const BASE_ARRIVAL: u64 = 1_715_936_400;

/// The sequence number of record `i`: all of the same length, so file
/// names sort like positions.
pub(crate) fn sequence(i: usize) -> u64 {
    1_000 + i as u64
}

/// The payload of record `i`: a small JSON click; every fifth is a bot.
pub(crate) fn payload(i: usize) -> String {
    let user = if i % 5 == 4 { "bot" } else { "human" };
    format!(r#"{{"n":{i},"user":"{user}","page":"/p/{i}"}}"#)
}

/// Whether the test pipeline's filter keeps record `i`.
pub(crate) fn kept(i: usize) -> bool {
    i % 5 != 4
}

/// Records 0..n: record `i` arrives `i * 10` minutes after [`BASE_ARRIVAL`].
pub(crate) fn records(n: usize) -> Vec<Record> {
    (0..n)
        .map(|i| {
            let mut record = Record::new(payload(i), format!("pk-{}", i % 3), sequence(i));
            record.approximate_arrival =
                Some(UNIX_EPOCH + Duration::from_secs(BASE_ARRIVAL + 600 * i as u64));
            record
        })
        .collect()
}

/// A source with each of `shards` holding `records(n)`, all closed, so a
/// consumer reads to SHARD_END and returns.
pub(crate) fn closed_source(shards: &[&str], n: usize) -> ScriptedSource {
    let source = ScriptedSource::new();
    for shard in shards {
        source.add_shard(ShardInfo::open(*shard));
        source.append_records(shard, records(n));
        source.close_shard(shard, Vec::new());
    }
    source
}

pub(crate) fn shard_config() -> ShardConfig {
    ShardConfig::default()
        .with_idle_delay(Duration::from_millis(200))
        .with_retry(
            RetryPolicy::new()
                .with_initial_delay(Duration::from_millis(10))
                .with_max_delay(Duration::from_millis(100))
                .with_max_attempts(3),
        )
}

/// The test pipeline: UTF-8 lines, bots filtered out, `max_records` per batch.
pub(crate) fn pipeline(
    emitter: Arc<dyn Emitter<String>>,
    max_records: usize,
) -> Pipeline<Utf8Transformer> {
    Pipeline::builder(Utf8Transformer, emitter)
        .filter(|line: &String| !line.contains(r#""user":"bot""#))
        .buffer_limits(BufferLimits::default().with_max_records(max_records))
        .build()
        .expect("valid pipeline")
}

/// Runs a real `ShardConsumer` over `shard` of `source` into `emitter`
/// until SHARD_END, checkpointing in `store`.
pub(crate) async fn run_shard(
    source: &ScriptedSource,
    store: &MemoryCheckpointStore,
    shard: &str,
    emitter: Arc<dyn Emitter<String>>,
    max_records: usize,
) -> ShardReport {
    let consumer = ShardConsumer::new(
        ShardEnv::new(
            Arc::new(source.clone()),
            Arc::new(store.clone()),
            shard_config(),
        ),
        ShardContext::new(APPLICATION, STREAM, shard),
        LeaseHandle::new(Lease::unfenced(shard, "worker-1")),
        pipeline(emitter, max_records),
    );
    let report = tokio::time::timeout(
        Duration::from_secs(60),
        consumer.run(CancellationToken::new()),
    )
    .await
    .expect("the shard consumer reaches SHARD_END within a minute");
    assert!(
        matches!(report.outcome, ShardOutcome::ShardEnd { .. }),
        "{report:?}"
    );
    report
}

/// Every regular, non-hidden file under `root`, sorted.
pub(crate) fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let entry = entry.expect("directory entry");
            let path = entry.path();
            let kind = entry.file_type().expect("file type");
            if kind.is_dir() {
                pending.push(path);
            } else if kind.is_file() && !entry.file_name().to_string_lossy().starts_with('.') {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The content of `path`, gunzipped when its name ends in `.gz`.
pub(crate) fn content(path: &Path) -> Vec<u8> {
    let raw = std::fs::read(path).expect("readable file");
    if path.extension().is_some_and(|e| e == "gz") {
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut plain)
            .expect("valid gzip");
        plain
    } else {
        raw
    }
}

/// The lines of `path` (gunzipped if needed).
pub(crate) fn lines(path: &Path) -> Vec<String> {
    String::from_utf8(content(path))
        .expect("UTF-8 file")
        .lines()
        .map(str::to_owned)
        .collect()
}

/// How many lines the files under `root` hold in total.
pub(crate) fn count_lines(root: &Path) -> usize {
    files_under(root)
        .iter()
        .map(|path| content(path).iter().filter(|&&b| b == b'\n').count())
        .sum()
}

/// Every file under `root` with its raw bytes.
pub(crate) fn snapshot(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    files_under(root)
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).expect("readable file");
            (path, bytes)
        })
        .collect()
}

/// Sets a file's modification time `age` into the past.
pub(crate) fn age_file(path: &Path, age: Duration) {
    let file = std::fs::File::options()
        .write(true)
        .open(path)
        .expect("open for set_modified");
    file.set_modified(SystemTime::now() - age)
        .expect("set_modified");
}

/// The sequence number of record `i` as the file names spell it.
pub(crate) fn seq(i: usize) -> SequenceNumber {
    SequenceNumber::from(sequence(i))
}
