//! The testkit's emitter conformance suite against a temporary directory:
//! every rule, with delivered items counted as lines in the files written.

// Test code: failures fail loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;

use kinesis_connectors_core::Utf8Transformer;
use kinesis_connectors_testkit::{
    BoxFuture, EmitterCapabilities, EmitterConformance, emitter_conformance,
};
use kinesis_emitter_files::RotatingFileEmitter;

/// Counts the lines under `root`: the suite's "delivered" items.
fn line_counter<'a>(root: PathBuf) -> impl Fn() -> BoxFuture<'a, usize> + Send + Sync + 'a {
    move || {
        let count = common::count_lines(&root);
        Box::pin(async move { count })
    }
}

/// A distinct, printable item per index.
fn item(i: usize) -> String {
    format!("item-{i}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_files_pass_emitter_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let emitter = RotatingFileEmitter::builder(dir.path(), Utf8Transformer)
        .build()
        .unwrap();
    let suite = EmitterConformance::new(&emitter, item)
        .delivered_count(line_counter(dir.path().to_path_buf()));
    let report = emitter_conformance::run_all(&suite, EmitterCapabilities::new()).await;
    assert!(report.is_success(), "{report}");
    // Nothing but output files: no temporary file left behind.
    for path in common::files_under(dir.path()) {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.ends_with(".jsonl"), "{path:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzipped_files_pass_emitter_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let emitter = RotatingFileEmitter::builder(dir.path(), Utf8Transformer)
        .gzip(true)
        .build()
        .unwrap();
    let suite = EmitterConformance::new(&emitter, item)
        .large_batch_size(5_000)
        .delivered_count(line_counter(dir.path().to_path_buf()));
    let report = emitter_conformance::run_all(&suite, EmitterCapabilities::new()).await;
    assert!(report.is_success(), "{report}");
    assert!(
        common::files_under(dir.path())
            .iter()
            .all(|p| p.to_string_lossy().ends_with(".jsonl.gz"))
    );
}

#[tokio::test(flavor = "current_thread")]
async fn the_suite_passes_without_counting_on_a_current_thread_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let emitter = RotatingFileEmitter::builder(dir.path(), Utf8Transformer)
        .max_files(1_000)
        .build()
        .unwrap();
    let suite = EmitterConformance::new(&emitter, item);
    let report = emitter_conformance::run_all(&suite, EmitterCapabilities::new()).await;
    assert!(report.is_success(), "{report}");
    // Eight batches with items (small, replayed small, large, filtered, two
    // sub-sequence halves, one per shard); the replay overwrote, the empty
    // batch wrote nothing.
    assert_eq!(common::files_under(dir.path()).len(), 8);
}
