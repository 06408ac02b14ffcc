//! The Redshift emitters on the local stack, loading into the stack's
//! PostgreSQL through `PostgresLoader` (moto for S3, kinesis-local for the
//! streams): the two-stage manifest pipeline loads every record exactly once;
//! replayed manifest batches, a consumer killed mid-way and restarted, and a
//! consumer replaying the whole manifest stream load zero duplicate rows; a
//! bad row rolls back the whole batch (no file-table entry, no partial rows)
//! and surfaces an error naming the manifest; hostile table and column names
//! stay names; CSV, delimited and JSONPaths files load; and the testkit's
//! emitter conformance suite passes for both emitters.
//!
//! Run with `cargo xtask it redshift`. Every test uses its own bucket,
//! streams and tables, so they may run in parallel with the other
//! integration tests.

// Test code: helpers may unwrap and panic like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use integration_tests::consumer::{Retrieval, Utf8ConsumerSpec, failures, utf8_consumer};
use integration_tests::s3::list_objects;
use integration_tests::{
    PutOptions, RunningConsumer, create_stream, database_url, kinesis_client, put_records,
    s3_client, unique_name, wait_until,
};
use kinesis_connectors_core::{
    BadRecordPolicy, Batch, BufferLimits, EmitOutcome, Emitter, Error, MemoryCheckpointStore,
    ShardFailurePolicy, StreamConsumer, Utf8Transformer, async_trait,
};
use kinesis_connectors_redshift::{
    CopyFormat, Error as RedshiftError, PostgresLoader, RedshiftBasicEmitter,
    RedshiftManifestEmitter, TableName,
};
use kinesis_connectors_s3::{S3Emitter, S3ManifestEmitter};
use kinesis_connectors_testkit::{
    EmitterCapabilities, EmitterConformance, batch, emitter_conformance, shard_context,
};
use sqlx::AssertSqlSafe;
use sqlx::postgres::{PgPool, PgPoolOptions};

/// The bound of every wait for rows to arrive.
const WAIT: Duration = Duration::from_secs(150);
/// How often a wait checks again.
const POLL: Duration = Duration::from_millis(200);
/// How long a stop waits for the consumer's report (shards may be loading).
const STOP_WAIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// PostgreSQL and S3
// ---------------------------------------------------------------------------

async fn pool() -> PgPool {
    PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(20))
        .connect(&database_url())
        .await
        .expect("connect to the stack's PostgreSQL")
}

/// A unique SQL name: `prefix` plus the run id, `-` turned into `_`.
fn sql_name(prefix: &str) -> String {
    unique_name(prefix).replace('-', "_")
}

async fn execute(pool: &PgPool, sql: String) {
    sqlx::raw_sql(AssertSqlSafe(sql.clone()))
        .execute(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

async fn scalar(pool: &PgPool, sql: String) -> i64 {
    sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql.clone()))
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Rows and distinct ids in `table`.
async fn counts(pool: &PgPool, table: &TableName) -> (i64, i64) {
    let rows = scalar(pool, format!("SELECT count(*) FROM {table}")).await;
    let ids = scalar(pool, format!("SELECT count(DISTINCT id) FROM {table}")).await;
    (rows, ids)
}

async fn rows(pool: &PgPool, table: &TableName) -> i64 {
    scalar(pool, format!("SELECT count(*) FROM {table}")).await
}

/// A data table `(id BIGINT NOT NULL, key TEXT, payload TEXT)`.
async fn data_table(pool: &PgPool, prefix: &str) -> TableName {
    let table = TableName::new(sql_name(prefix)).unwrap();
    execute(
        pool,
        format!("CREATE TABLE {table} (id BIGINT NOT NULL, key TEXT, payload TEXT)"),
    )
    .await;
    table
}

async fn create_bucket(s3: &aws_sdk_s3::Client, prefix: &str) -> String {
    let bucket = unique_name(prefix);
    s3.create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "CreateBucket {bucket}: {}",
                aws_sdk_s3::error::DisplayErrorContext(e)
            )
        });
    bucket
}

/// Writes `body` to `s3://bucket/key`; returns the URL.
async fn put_object(s3: &aws_sdk_s3::Client, bucket: &str, key: &str, body: &str) -> String {
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body.as_bytes().to_vec()))
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PutObject {key}: {}",
                aws_sdk_s3::error::DisplayErrorContext(e)
            )
        });
    format!("s3://{bucket}/{key}")
}

async fn get_object(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> String {
    let object = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "GetObject {key}: {}",
                aws_sdk_s3::error::DisplayErrorContext(e)
            )
        });
    let bytes = object.body.collect().await.unwrap().into_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// How many objects are under `prefix`.
async fn count_objects(s3: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> usize {
    list_objects(s3, bucket, prefix).await.unwrap().len()
}

/// A JSON line of the data table's shape.
fn json_row(id: u64) -> String {
    format!(
        r#"{{"id":{id},"key":"pk-{}","payload":"record {id}"}}"#,
        id % 16
    )
}

/// A file of JSON lines with the ids in `ids`.
fn json_file(ids: impl IntoIterator<Item = u64>) -> String {
    ids.into_iter().map(|id| json_row(id) + "\n").collect()
}

/// A manifest emitter loading into `data` through PostgreSQL, with a fresh
/// file table (created here).
async fn manifest_emitter(
    pool: &PgPool,
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    data: &TableName,
) -> (RedshiftManifestEmitter, TableName) {
    let files = TableName::new(sql_name("rs_files")).unwrap();
    let emitter = build_manifest_emitter(pool, s3, bucket, data, &files);
    execute(pool, emitter.file_table_ddl()).await;
    (emitter, files)
}

/// A manifest emitter loading into `data` with the existing file table
/// `files`.
fn build_manifest_emitter(
    pool: &PgPool,
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    data: &TableName,
    files: &TableName,
) -> RedshiftManifestEmitter {
    RedshiftManifestEmitter::builder(pool.clone(), s3.clone(), bucket)
        .data_table(data.clone())
        .file_table(files.clone())
        .format(CopyFormat::JsonAuto)
        .loader(PostgresLoader::new(s3.clone()))
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------
// Kinesis
// ---------------------------------------------------------------------------

/// A consumer of `stream` with short delays so the tests finish fast.
fn consumer(
    kinesis: &aws_sdk_kinesis::Client,
    application: &str,
    stream: &str,
    store: &MemoryCheckpointStore,
    emitter: Arc<dyn Emitter<String>>,
    max_records: usize,
    on_shard_failure: ShardFailurePolicy,
) -> StreamConsumer<Utf8Transformer> {
    utf8_consumer(Utf8ConsumerSpec {
        kinesis,
        retrieval: Retrieval::Polling,
        application,
        stream,
        store: Arc::new(store.clone()),
        emitter,
        limits: BufferLimits::default()
            .with_max_records(max_records)
            .with_max_age(Duration::from_secs(1)),
        bad_records: BadRecordPolicy::Stop,
        on_shard_failure,
    })
}

/// Wraps an emitter: counts items of successful emits, keeps error
/// messages, and can hold each acknowledgement back for `ack_delay` after
/// the batch committed (the window in which a killed consumer has loaded
/// a batch without checkpointing it).
struct Tracked {
    inner: Arc<dyn Emitter<String>>,
    ack_delay: Duration,
    emitted: AtomicUsize,
    committed_unacked: AtomicBool,
    errors: Mutex<Vec<String>>,
}

impl Tracked {
    fn new(inner: Arc<dyn Emitter<String>>, ack_delay: Duration) -> Arc<Self> {
        Arc::new(Self {
            inner,
            ack_delay,
            emitted: AtomicUsize::new(0),
            committed_unacked: AtomicBool::new(false),
            errors: Mutex::new(Vec::new()),
        })
    }

    fn emitted(&self) -> usize {
        self.emitted.load(Ordering::SeqCst)
    }

    fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }
}

#[async_trait]
impl Emitter<String> for Tracked {
    async fn emit(&self, batch: &Batch<String>) -> kinesis_connectors_core::Result<EmitOutcome> {
        match self.inner.emit(batch).await {
            Ok(outcome) => {
                self.committed_unacked.store(true, Ordering::SeqCst);
                tokio::time::sleep(self.ack_delay).await;
                self.committed_unacked.store(false, Ordering::SeqCst);
                self.emitted.fetch_add(batch.len(), Ordering::SeqCst);
                Ok(outcome)
            }
            Err(error) => {
                self.errors.lock().unwrap().push(error.to_string());
                Err(error)
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// Stage 1 (stream → `S3ManifestEmitter`, gzipped objects) and stage 2
/// (manifest stream → `RedshiftManifestEmitter` + `PostgresLoader`) running
/// together load every record exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redshift_two_stage_pipeline_loads_every_record_once() {
    const RECORDS: u64 = 1_500;
    let started = Instant::now();
    let kinesis = kinesis_client().await;
    let s3 = s3_client().await;
    let pool = pool().await;
    let bucket = create_bucket(&s3, "rs-pipeline").await;
    let input = unique_name("rs-input");
    let manifests = unique_name("rs-manifests");
    create_stream(&kinesis, &input, 2).await.unwrap();
    create_stream(&kinesis, &manifests, 1).await.unwrap();
    let data = data_table(&pool, "rs_pipeline").await;

    // Stage 1: gzipped JSON lines, one object per batch, URL on the manifest stream.
    let objects = S3Emitter::builder(s3.clone(), &bucket, Utf8Transformer)
        .prefix("data")
        .suffix(".jsonl")
        .gzip(true)
        .build()
        .unwrap();
    let stage1_emitter: Arc<dyn Emitter<String>> =
        Arc::new(S3ManifestEmitter::new(objects, kinesis.clone(), &manifests).unwrap());
    let stage1 = RunningConsumer::start(consumer(
        &kinesis,
        "rs-stage1",
        &input,
        &MemoryCheckpointStore::new(),
        stage1_emitter,
        100,
        ShardFailurePolicy::default(),
    ));

    // Stage 2: a few files per COPY.
    let files = TableName::new(sql_name("rs_pipeline_files")).unwrap();
    let loader = RedshiftManifestEmitter::builder(pool.clone(), s3.clone(), &bucket)
        .manifest_prefix("manifests")
        .data_table(data.clone())
        .file_table(files.clone())
        .format(CopyFormat::JsonAuto)
        .gzip(true)
        .loader(PostgresLoader::new(s3.clone()))
        .build()
        .unwrap();
    execute(&pool, loader.file_table_ddl()).await;
    let stage2 = RunningConsumer::start(consumer(
        &kinesis,
        "rs-stage2",
        &manifests,
        &MemoryCheckpointStore::new(),
        Arc::new(loader),
        4,
        ShardFailurePolicy::default(),
    ));

    let records: Vec<(String, String)> = (0..RECORDS)
        .map(|id| (format!("pk-{:02}", id % 16), json_row(id)))
        .collect();
    put_records(&kinesis, &input, records, PutOptions::default())
        .await
        .unwrap();
    let produced = started.elapsed();

    let waited = wait_until("every record loaded", WAIT, POLL, || async {
        rows(&pool, &data).await >= RECORDS as i64
    })
    .await;
    // Let anything in flight land, then compare.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let report1 = stage1.stop_within(STOP_WAIT).await;
    let report2 = stage2.stop_within(STOP_WAIT).await;
    assert!(
        failures(&report1).is_empty(),
        "stage 1: {:?}",
        failures(&report1)
    );
    assert!(
        failures(&report2).is_empty(),
        "stage 2: {:?}",
        failures(&report2)
    );

    assert_eq!(counts(&pool, &data).await, (RECORDS as i64, RECORDS as i64));
    let max_id = scalar(&pool, format!("SELECT max(id) FROM {data}")).await;
    assert_eq!(max_id, RECORDS as i64 - 1);
    let objects = count_objects(&s3, &bucket, "data/").await;
    let loaded_files = rows(&pool, &files).await;
    assert_eq!(
        loaded_files, objects as i64,
        "the file table lists every object stage 1 wrote"
    );
    assert!(count_objects(&s3, &bucket, "manifests/").await > 0);
    eprintln!(
        "two-stage pipeline: {RECORDS} records, {objects} objects; produced in {produced:?}, \
         all loaded {waited:?} later ({:?} in all)",
        started.elapsed()
    );
}

/// Emitting the same manifest batch again loads nothing; a batch mixing
/// loaded, repeated, new and malformed items loads only the new file.
#[tokio::test]
async fn redshift_replayed_manifest_batches_load_nothing_twice() {
    let s3 = s3_client().await;
    let pool = pool().await;
    let bucket = create_bucket(&s3, "rs-replay").await;
    let data = data_table(&pool, "rs_replay").await;
    let (emitter, files) = manifest_emitter(&pool, &s3, &bucket, &data).await;
    let f1 = put_object(&s3, &bucket, "in/f1.jsonl", &json_file(1..=3)).await;
    let f2 = put_object(&s3, &bucket, "in/f2.jsonl", &json_file(4..=6)).await;
    let f3 = put_object(&s3, &bucket, "in/f3.jsonl", &json_file(7..=9)).await;

    let first = batch(
        shard_context("shardId-000000000000"),
        vec![f1.clone(), f2.clone()],
        10,
    );
    let report = emitter.load(&first).await.unwrap();
    assert_eq!(report.loaded_files, [f1.clone(), f2.clone()]);
    assert_eq!(report.rows, 6);
    let key = emitter.manifest_key(&first);
    assert_eq!(
        key,
        "manifests/test-app/test-stream/shardId-000000000000/10-11.manifest"
    );
    assert_eq!(
        report.source.as_deref(),
        Some(&*format!("s3://{bucket}/{key}"))
    );
    assert_eq!(
        get_object(&s3, &bucket, &key).await,
        format!(
            r#"{{"entries":[{{"url":"{f1}","mandatory":true}},{{"url":"{f2}","mandatory":true}}]}}"#
        )
    );
    assert_eq!(counts(&pool, &data).await, (6, 6));

    // The same batch again: nothing new, nothing written.
    let replay = emitter.load(&first).await.unwrap();
    assert!(replay.loaded_files.is_empty(), "{replay:?}");
    assert_eq!(
        (replay.skipped_files, replay.rows, replay.source),
        (2, 0, None)
    );
    assert_eq!(counts(&pool, &data).await, (6, 6));

    // Through the Emitter trait too.
    let outcome = Emitter::<String>::emit(&emitter, &first).await.unwrap();
    assert!(outcome.rejected.is_empty());
    assert_eq!(counts(&pool, &data).await, (6, 6));

    // Loaded, new, repeated and malformed items in one batch.
    let mixed = batch(
        shard_context("shardId-000000000000"),
        vec![f2.clone(), f3.clone(), f3.clone(), "not a url".to_owned()],
        12,
    );
    let report = emitter.load(&mixed).await.unwrap();
    assert_eq!(report.loaded_files, std::slice::from_ref(&f3));
    assert_eq!(report.skipped_files, 2);
    assert_eq!(
        report.rejected.iter().map(|r| r.index).collect::<Vec<_>>(),
        [3]
    );
    assert_eq!(
        get_object(&s3, &bucket, &emitter.manifest_key(&mixed)).await,
        format!(r#"{{"entries":[{{"url":"{f3}","mandatory":true}}]}}"#)
    );
    assert_eq!(counts(&pool, &data).await, (9, 9));
    assert_eq!(rows(&pool, &files).await, 3);
}

/// A consumer killed while a loaded batch is not yet checkpointed, restarted
/// from its checkpoints, and then a consumer replaying the whole manifest
/// stream from an empty checkpoint store: zero duplicate rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redshift_restarted_consumers_load_no_duplicates() {
    const FILES: u64 = 60;
    const ROWS_PER_FILE: u64 = 10;
    const REPEATED: u64 = 20;
    let started = Instant::now();
    let kinesis = kinesis_client().await;
    let s3 = s3_client().await;
    let pool = pool().await;
    let bucket = create_bucket(&s3, "rs-restart").await;
    let stream = unique_name("rs-restart");
    create_stream(&kinesis, &stream, 2).await.unwrap();
    let data = data_table(&pool, "rs_restart").await;
    let (_, files) = manifest_emitter(&pool, &s3, &bucket, &data).await;
    // Each phase is a process of its own, with its own connections.
    let killed_process = self::pool().await;
    let emitter: Arc<dyn Emitter<String>> = Arc::new(build_manifest_emitter(
        &killed_process,
        &s3,
        &bucket,
        &data,
        &files,
    ));

    // The manifest stream as an at-least-once stage 1 leaves it: every URL
    // once, then some of them again.
    let mut urls = Vec::new();
    for file in 0..FILES {
        let ids = file * ROWS_PER_FILE..(file + 1) * ROWS_PER_FILE;
        urls.push(
            put_object(
                &s3,
                &bucket,
                &format!("in/{file:03}.jsonl"),
                &json_file(ids),
            )
            .await,
        );
    }
    let mut records: Vec<(String, String)> = urls
        .iter()
        .enumerate()
        .map(|(i, url)| (format!("pk-{i}"), url.clone()))
        .collect();
    records.extend(records[..REPEATED as usize].to_vec());
    put_records(&kinesis, &stream, records, PutOptions::default())
        .await
        .unwrap();
    let total_rows = (FILES * ROWS_PER_FILE) as i64;
    let store = MemoryCheckpointStore::new();

    // Phase A: killed (no graceful shutdown) while a batch is committed but
    // not acknowledged, once a third of the rows are in.
    let tracked = Tracked::new(Arc::clone(&emitter), Duration::from_millis(400));
    let (_cancel, handle) = RunningConsumer::start(consumer(
        &kinesis,
        "rs-restart",
        &stream,
        &store,
        tracked.clone(),
        3,
        ShardFailurePolicy::default(),
    ))
    .into_parts();
    wait_until(
        "a third of the rows, and a batch in flight",
        WAIT,
        POLL,
        || async {
            rows(&pool, &data).await >= total_rows / 3
                && tracked.committed_unacked.load(Ordering::SeqCst)
        },
    )
    .await;
    handle.abort();
    assert!(handle.await.is_err_and(|e| e.is_cancelled()));
    let after_kill = counts(&pool, &data).await;
    assert_eq!(after_kill.0, after_kill.1, "duplicates before the restart");
    assert!(
        after_kill.0 < total_rows,
        "everything loaded before the kill"
    );

    // The killed process's connections (an aborted COPY, a transaction
    // holding the file-table lock) die with it: the server rolls them back.
    killed_process.close().await;

    // Phase B: restart from the checkpoints; the unacknowledged batch comes again.
    let emitter: Arc<dyn Emitter<String>> = Arc::new(build_manifest_emitter(
        &self::pool().await,
        &s3,
        &bucket,
        &data,
        &files,
    ));
    let tracked = Tracked::new(Arc::clone(&emitter), Duration::ZERO);
    let running = RunningConsumer::start(consumer(
        &kinesis,
        "rs-restart",
        &stream,
        &store,
        tracked.clone(),
        3,
        ShardFailurePolicy::default(),
    ));
    wait_until("every row after the restart", WAIT, POLL, || async {
        rows(&pool, &data).await >= total_rows
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let report = running.stop_within(STOP_WAIT).await;
    assert!(failures(&report).is_empty(), "{:?}", failures(&report));
    assert_eq!(counts(&pool, &data).await, (total_rows, total_rows));

    // Phase C: checkpoints lost: the whole manifest stream again.
    let tracked = Tracked::new(Arc::clone(&emitter), Duration::ZERO);
    let fresh = MemoryCheckpointStore::new();
    let running = RunningConsumer::start(consumer(
        &kinesis,
        "rs-restart",
        &stream,
        &fresh,
        tracked.clone(),
        7,
        ShardFailurePolicy::default(),
    ));
    let manifest_records = (FILES + REPEATED) as usize;
    wait_until("the whole manifest stream replayed", WAIT, POLL, || async {
        tracked.emitted() >= manifest_records
    })
    .await;
    let report = running.stop_within(STOP_WAIT).await;
    assert!(failures(&report).is_empty(), "{:?}", failures(&report));
    assert_eq!(counts(&pool, &data).await, (total_rows, total_rows));
    assert_eq!(rows(&pool, &files).await, FILES as i64);
    eprintln!(
        "restart: {total_rows} rows from {FILES} files (+{REPEATED} repeated URLs), \
         killed at {} rows, replayed twice: no duplicates ({:?})",
        after_kill.0,
        started.elapsed()
    );
}

/// A bad row in one file rolls back the whole batch (no rows from the good
/// file, no file-table entry) and the error names the manifest; through a
/// consumer the shard stops with that error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redshift_a_bad_row_rolls_back_the_whole_batch() {
    let kinesis = kinesis_client().await;
    let s3 = s3_client().await;
    let pool = pool().await;
    let bucket = create_bucket(&s3, "rs-bad-row").await;
    let data = data_table(&pool, "rs_bad_row").await;
    let (emitter, files) = manifest_emitter(&pool, &s3, &bucket, &data).await;
    let good = put_object(&s3, &bucket, "in/good.jsonl", &json_file(1..=5)).await;
    let bad = put_object(
        &s3,
        &bucket,
        "in/bad.jsonl",
        &format!(
            "{}\n{{\"id\":\"not-a-number\"}}\n{}\n",
            json_row(6),
            json_row(7)
        ),
    )
    .await;

    let both = batch(
        shard_context("shardId-000000000000"),
        vec![good.clone(), bad.clone()],
        1,
    );
    let error = emitter.load(&both).await.unwrap_err();
    assert!(!error.is_retryable(), "{error}");
    let manifest = format!("s3://{bucket}/{}", emitter.manifest_key(&both));
    match &error {
        RedshiftError::CopyRejected {
            manifest: named,
            code,
            message,
            ..
        } => {
            assert_eq!(named, &manifest);
            assert_eq!(code.as_deref(), Some("22P02"), "{message}");
            assert!(message.contains("not-a-number"), "{message}");
            assert!(message.contains("line 7"), "{message}");
        }
        other => panic!("expected CopyRejected, got {other:?}"),
    }
    assert!(error.to_string().contains(&manifest), "{error}");
    assert_eq!(rows(&pool, &data).await, 0, "no partial rows");
    assert_eq!(rows(&pool, &files).await, 0, "no file-table entry");

    // A line that is not JSON: rejected by the loader itself, with its line.
    let broken = put_object(
        &s3,
        &bucket,
        "in/broken.jsonl",
        &format!("{}\n{{\"id\":", json_row(8)),
    )
    .await;
    let batch_broken = batch(
        shard_context("shardId-000000000000"),
        vec![good.clone(), broken.clone()],
        5,
    );
    let error = emitter.load(&batch_broken).await.unwrap_err();
    let text = error.to_string();
    assert!(!error.is_retryable(), "{text}");
    assert!(text.contains(&format!("{broken} line 2")), "{text}");
    assert!(
        text.contains(&emitter.manifest_key(&batch_broken)),
        "{text}"
    );
    assert_eq!(
        (rows(&pool, &data).await, rows(&pool, &files).await),
        (0, 0)
    );

    // The good file alone loads; the connection is still usable after the failures.
    let alone = batch(shard_context("shardId-000000000000"), vec![good.clone()], 9);
    assert_eq!(emitter.load(&alone).await.unwrap().rows, 5);

    // Through a consumer: the shard stops, the report carries the manifest.
    let stream = unique_name("rs-bad-row");
    create_stream(&kinesis, &stream, 1).await.unwrap();
    put_records(
        &kinesis,
        &stream,
        vec![("pk".to_owned(), bad.clone())],
        PutOptions::default(),
    )
    .await
    .unwrap();
    // `StopOnPermanent`: the rejected COPY is permanent, so the consumer
    // stops by itself instead of restarting the shard.
    let tracked = Tracked::new(Arc::new(emitter), Duration::ZERO);
    let (_cancel, handle) = RunningConsumer::start(consumer(
        &kinesis,
        "rs-bad-row",
        &stream,
        &MemoryCheckpointStore::new(),
        tracked.clone(),
        10,
        ShardFailurePolicy::StopOnPermanent,
    ))
    .into_parts();
    let stopped = tokio::time::timeout(WAIT, handle)
        .await
        .expect("the consumer stops by itself on the rejected COPY")
        .expect("the consumer task does not panic");
    let error = stopped.expect_err("the consumer returns the shard's error");
    let text = error.to_string();
    assert!(matches!(error, Error::ShardFailed { .. }), "{text}");
    assert!(text.contains("manifests/rs-bad-row/"), "{text}");
    assert!(text.contains("not-a-number"), "{text}");
    assert_eq!(tracked.errors().len(), 1, "a rejected COPY is not retried");
    assert_eq!(rows(&pool, &data).await, 5);
    assert_eq!(rows(&pool, &files).await, 1);
}

/// Table, schema-less file table and column names made to break out of
/// their quotes are just names: the load lands in the oddly named tables and
/// the table the names try to drop survives.
#[tokio::test]
async fn redshift_hostile_names_cannot_inject_sql() {
    let s3 = s3_client().await;
    let pool = pool().await;
    let bucket = create_bucket(&s3, "rs-hostile").await;
    let victim = TableName::new(sql_name("rs_victim")).unwrap();
    execute(&pool, format!("CREATE TABLE {victim} (x INT)")).await;
    let drop = format!("; DROP TABLE {victim}; --");
    let data = TableName::new(format!("{}\"{drop}", sql_name("rs_data"))).unwrap();
    let files = TableName::new(format!("{}\"{drop}", sql_name("rs_files"))).unwrap();
    let id_column = format!("id\"{drop}");
    let text_column = "select";
    execute(
        &pool,
        format!(
            "CREATE TABLE {data} ({} BIGINT, {} TEXT)",
            kinesis_connectors_redshift::Identifier::new(id_column.clone()).unwrap(),
            kinesis_connectors_redshift::Identifier::new(text_column).unwrap()
        ),
    )
    .await;
    let emitter = RedshiftManifestEmitter::builder(pool.clone(), s3.clone(), &bucket)
        .data_table(data.clone())
        .file_table(files.clone())
        .file_column(format!("file\"{drop}"))
        .columns([id_column.clone(), text_column.to_owned()])
        .loader(PostgresLoader::new(s3.clone()))
        .build()
        .unwrap();
    execute(&pool, emitter.file_table_ddl()).await;
    let line = serde_json::json!({ id_column.as_str(): 1, text_column: "it's; fine" }).to_string();
    let url = put_object(
        &s3,
        &bucket,
        "in/odd'; DROP TABLE x; --.jsonl",
        &(line + "\n"),
    )
    .await;

    let report = emitter
        .load(&batch(shard_context("shardId-0"), vec![url.clone()], 1))
        .await
        .unwrap();
    assert_eq!(report.rows, 1);
    // The replay path (SELECT from the file table) with the same names.
    let replay = emitter
        .load(&batch(shard_context("shardId-0"), vec![url], 1))
        .await
        .unwrap();
    assert_eq!(replay.skipped_files, 1);
    assert_eq!(rows(&pool, &data).await, 1);
    assert_eq!(
        scalar(
            &pool,
            format!("SELECT count(*) FROM {data} WHERE \"select\" = 'it''s; fine'")
        )
        .await,
        1
    );
    assert_eq!(
        rows(&pool, &victim).await,
        0,
        "the victim table still exists"
    );
}

/// CSV, delimited and JSONPaths files through the PostgreSQL loader, and
/// optional files that do not exist.
#[tokio::test]
async fn redshift_csv_delimited_and_json_paths_files_load() {
    let s3 = s3_client().await;
    let pool = pool().await;
    let bucket = create_bucket(&s3, "rs-formats").await;
    let data = data_table(&pool, "rs_formats").await;
    let files = TableName::new(sql_name("rs_formats_files")).unwrap();
    let emitter = |format: CopyFormat, prefix: &str| {
        RedshiftManifestEmitter::builder(pool.clone(), s3.clone(), &bucket)
            .manifest_prefix(prefix)
            .data_table(data.clone())
            .file_table(files.clone())
            .columns(["id", "key", "payload"])
            .format(format)
            .copy_mandatory(false)
            .loader(PostgresLoader::new(s3.clone()))
            .build()
            .unwrap()
    };
    let csv = emitter(CopyFormat::Csv, "csv");
    execute(&pool, csv.file_table_ddl()).await;
    let url = put_object(
        &s3,
        &bucket,
        "in/a.csv",
        "1,a,\"x, \"\"quoted\"\"\"\n2,b,\n",
    )
    .await;
    let missing = format!("s3://{bucket}/in/missing.csv");
    let report = csv
        .load(&batch(shard_context("s"), vec![url, missing], 1))
        .await
        .unwrap();
    assert_eq!(report.rows, 2);

    let piped = emitter(CopyFormat::Delimited('|'), "piped");
    let url = put_object(&s3, &bucket, "in/b.txt", "3|c|p\n4|d|\\N").await;
    assert_eq!(
        piped
            .load(&batch(shard_context("s"), vec![url], 1))
            .await
            .unwrap()
            .rows,
        2
    );

    let paths = put_object(
        &s3,
        &bucket,
        "paths.json",
        r#"{"jsonpaths": ["$.event.id", "$['meta']['key']", "$.tags[1]"]}"#,
    )
    .await;
    let nested = emitter(CopyFormat::json_paths(paths), "nested");
    let url = put_object(
        &s3,
        &bucket,
        "in/c.jsonl",
        "{\"event\":{\"id\":5},\"meta\":{\"key\":\"e\"},\"tags\":[\"t0\",\"t1\"]}\n{\"event\":{\"id\":6}}\n",
    )
    .await;
    assert_eq!(
        nested
            .load(&batch(shard_context("s"), vec![url], 1))
            .await
            .unwrap()
            .rows,
        2
    );

    let all: Vec<(i64, Option<String>, Option<String>)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT id, key, payload FROM {data} ORDER BY id"
    )))
    .fetch_all(&pool)
    .await
    .unwrap();
    let text = |s: &str| Some(s.to_owned());
    assert_eq!(
        all,
        [
            (1, text("a"), text("x, \"quoted\"")),
            (2, text("b"), None),
            (3, text("c"), text("p")),
            (4, text("d"), None),
            (5, text("e"), text("t1")),
            (6, None, None),
        ]
    );
}

/// The testkit's conformance suite against `RedshiftManifestEmitter` on
/// PostgreSQL: each item is the URL of an object holding one row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redshift_manifest_emitter_conformance() {
    const LARGE: usize = 40;
    let s3 = s3_client().await;
    let pool = pool().await;
    let bucket = create_bucket(&s3, "rs-conformance").await;
    let data = data_table(&pool, "rs_conformance").await;
    let (emitter, _files) = manifest_emitter(&pool, &s3, &bucket, &data).await;
    // Items used by the suite: small 10, replay 10, LARGE, filtered 5,
    // sub-sequence 8, two shards 20.
    let mut urls = Vec::new();
    for i in 0..(LARGE + 53) as u64 {
        urls.push(put_object(&s3, &bucket, &format!("in/{i:04}.jsonl"), &json_file([i])).await);
    }
    let counter_pool = pool.clone();
    let counter_table = data.clone();
    let suite = EmitterConformance::new(&emitter, |i| urls[i].clone())
        .large_batch_size(LARGE)
        .delivered_count(move || {
            let pool = counter_pool.clone();
            let table = counter_table.clone();
            Box::pin(async move { rows(&pool, &table).await as usize })
        });
    let report = emitter_conformance::run_all(&suite, EmitterCapabilities::new()).await;
    assert!(report.is_success(), "{report}");
}

/// The conformance suite against `RedshiftBasicEmitter` (S3 object per
/// batch, then `COPY` of it) with a file table: replays load nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redshift_basic_emitter_conformance() {
    let s3 = s3_client().await;
    let pool = pool().await;
    let bucket = create_bucket(&s3, "rs-basic").await;
    let data = data_table(&pool, "rs_basic").await;
    let files = TableName::new(sql_name("rs_basic_files")).unwrap();
    let objects = S3Emitter::builder(s3.clone(), &bucket, Utf8Transformer)
        .prefix("basic")
        .suffix(".jsonl")
        .gzip(true)
        .build()
        .unwrap();
    let emitter = RedshiftBasicEmitter::builder(objects, pool.clone())
        .table(data.clone())
        .file_table(files.clone())
        .gzip(true)
        .loader(PostgresLoader::new(s3.clone()))
        .build()
        .unwrap();
    execute(&pool, emitter.file_table_ddl()).await;
    let counter_pool = pool.clone();
    let counter_table = data.clone();
    let suite =
        EmitterConformance::new(&emitter, |i| json_row(i as u64)).delivered_count(move || {
            let pool = counter_pool.clone();
            let table = counter_table.clone();
            Box::pin(async move { rows(&pool, &table).await as usize })
        });
    let report = emitter_conformance::run_all(&suite, EmitterCapabilities::new()).await;
    assert!(report.is_success(), "{report}");
    let (rows, ids) = counts(&pool, &data).await;
    assert_eq!(rows, ids, "no id was loaded twice");
    assert_eq!(
        scalar(&pool, format!("SELECT count(*) FROM {files}")).await as usize,
        count_objects(&s3, &bucket, "basic/").await,
        "one file-table row per object"
    );
}
