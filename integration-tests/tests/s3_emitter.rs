//! `S3Emitter` and `S3ManifestEmitter` on the local stack (kinesis-local for
//! Kinesis, moto for S3): pipelines from a 2-shard stream into S3 with gzip
//! off and on (every object compared record by record with what was written
//! to its shard), batches forced over the multipart threshold (gzip off and
//! on, both shards), a replay after
//! a restart that leaves exactly one object per sequence range, a manifest
//! stream whose records point at existing objects, and the testkit's emitter
//! conformance suite against the real services.
//!
//! Run with `cargo xtask it s3_emitter`. Every test uses its own bucket and
//! streams, so they may run in parallel with the other integration tests.

// Test code: helpers may unwrap and panic like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use aws_sdk_kinesis::error::DisplayErrorContext;
use integration_tests::consumer::{Retrieval, Utf8ConsumerSpec, utf8_consumer};
use integration_tests::records::{self, PutOptions, put_records};
use integration_tests::s3::list_objects;
use integration_tests::{
    RunningConsumer, create_stream, kinesis_client, s3_client, unique_name, wait_for_progress,
};
use kinesis_connectors_core::{
    BadRecordPolicy, Batch, BufferLimits, Checkpoint, CheckpointStore, EmitOutcome, Emitter,
    MemoryCheckpointStore, Position, SequenceNumber, ShardFailurePolicy, ShardKey, StreamConsumer,
    Utf8Transformer, async_trait,
};
use kinesis_connectors_s3::{S3Emitter, S3ManifestEmitter};
use kinesis_connectors_testkit::{EmitterCapabilities, EmitterConformance, emitter_conformance};

/// The bound of every wait for the pipeline to deliver.
const WAIT: Duration = Duration::from_secs(150);
/// The checkpoint namespace of every consumer here.
const APP: &str = "s3-emitter-it";
const MIB: usize = 1024 * 1024;

// ---------------------------------------------------------------------------
// Producing
// ---------------------------------------------------------------------------

/// A record Kinesis accepted, and where it went.
#[derive(Debug, Clone)]
struct Written {
    data: String,
    shard: String,
    sequence: SequenceNumber,
}

/// Writes `(partition key, data)` records with `PutRecords` (see
/// [`put_records`]); returns where each went.
async fn produce(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    records: Vec<(String, String)>,
) -> Result<Vec<Written>> {
    put_records(client, stream, records, PutOptions::default())
        .await?
        .into_iter()
        .map(|w| {
            Ok(Written {
                data: String::from_utf8(w.data)?,
                shard: w.shard_id,
                sequence: w.sequence,
            })
        })
        .collect()
}

/// `n` small records spread over 16 partition keys (so over every shard).
fn small_records(tag: &str, n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| (format!("pk-{:02}", i % 16), format!("{tag} record {i:05}")))
        .collect()
}

/// Written records by shard, in sequence order.
fn by_shard(written: &[Written]) -> HashMap<String, Vec<Written>> {
    let mut shards: HashMap<String, Vec<Written>> = HashMap::new();
    for w in written {
        shards.entry(w.shard.clone()).or_default().push(w.clone());
    }
    for records in shards.values_mut() {
        records.sort_by(|a, b| a.sequence.cmp(&b.sequence));
    }
    shards
}

// ---------------------------------------------------------------------------
// The consumer
// ---------------------------------------------------------------------------

fn consumer(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    store: Arc<dyn CheckpointStore>,
    emitter: Arc<dyn Emitter<String>>,
    limits: BufferLimits,
) -> StreamConsumer<Utf8Transformer> {
    utf8_consumer(Utf8ConsumerSpec {
        kinesis,
        retrieval: Retrieval::Polling,
        application: APP,
        stream,
        store,
        emitter,
        limits,
        bad_records: BadRecordPolicy::Stop,
        on_shard_failure: ShardFailurePolicy::default(),
    })
}

/// Polls `done` every 500 ms until it is done; fails after `WAIT` with the
/// last progress it reported.
async fn wait_until(what: &str, done: impl AsyncFnMut() -> Result<(bool, String)>) -> Duration {
    wait_for_progress(what, WAIT, Duration::from_millis(500), done).await
}

// ---------------------------------------------------------------------------
// S3
// ---------------------------------------------------------------------------

async fn create_bucket(s3: &aws_sdk_s3::Client, bucket: &str) -> Result<()> {
    s3.create_bucket()
        .bucket(bucket)
        .send()
        .await
        .map_err(|e| anyhow!("CreateBucket {bucket}: {}", DisplayErrorContext(e)))?;
    Ok(())
}

#[derive(Debug, Clone)]
struct Listed {
    key: String,
    size: i64,
    etag: String,
}

/// Every object under `prefix`, following continuation tokens.
async fn list(s3: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> Result<Vec<Listed>> {
    Ok(list_objects(s3, bucket, prefix)
        .await?
        .iter()
        .map(|object| Listed {
            key: object.key().unwrap_or_default().to_owned(),
            size: object.size().unwrap_or_default(),
            etag: object.e_tag().unwrap_or_default().to_owned(),
        })
        .collect())
}

/// An object's lines (gunzipped for `.gz` keys) and its `Content-Encoding`.
async fn read_lines(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> Result<(Vec<String>, Option<String>)> {
    let object = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| anyhow!("GetObject {key}: {}", DisplayErrorContext(e)))?;
    let encoding = object.content_encoding().map(str::to_owned);
    let body = object.body.collect().await?.into_bytes();
    let text = if key.ends_with(".gz") {
        let mut text = String::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_string(&mut text)
            .with_context(|| format!("gunzip {key}"))?;
        text
    } else {
        String::from_utf8(body.to_vec())?
    };
    Ok((text.lines().map(str::to_owned).collect(), encoding))
}

/// Lines in all objects under `prefix`.
async fn count_lines(s3: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> Result<usize> {
    let mut total = 0;
    for object in list(s3, bucket, prefix).await? {
        total += read_lines(s3, bucket, &object.key).await?.0.len();
    }
    Ok(total)
}

/// What a key of the default template says about its batch.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct KeyName {
    shard: String,
    first: SequenceNumber,
    last: SequenceNumber,
}

/// Parses `{prefix}/{stream}/{yyyy}/{mm}/{dd}/{HH}/{shard}-{first_seq}-{last_seq}[.gz]`.
fn parse_key(prefix: &str, stream: &str, key: &str) -> KeyName {
    let rest = key
        .strip_prefix(&format!("{prefix}/{stream}/"))
        .unwrap_or_else(|| panic!("key {key} is not under {prefix}/{stream}/"));
    let segments: Vec<&str> = rest.split('/').collect();
    assert_eq!(segments.len(), 5, "key {key}: yyyy/mm/dd/HH/name expected");
    let numbers: Vec<u32> = segments[..4]
        .iter()
        .map(|s| {
            s.parse()
                .unwrap_or_else(|_| panic!("key {key}: date part {s}"))
        })
        .collect();
    assert!(
        segments[0].len() == 4
            && numbers[0] >= 2024
            && (1..=12).contains(&numbers[1])
            && (1..=31).contains(&numbers[2])
            && numbers[3] < 24
            && segments[1..4].iter().all(|s| s.len() == 2),
        "key {key}: the date parts are not an arrival date"
    );
    let name = segments[4].strip_suffix(".gz").unwrap_or(segments[4]);
    let mut parts = name.rsplitn(3, '-');
    let (Some(last), Some(first), Some(shard)) = (parts.next(), parts.next(), parts.next()) else {
        panic!("key {key}: {{shard}}-{{first}}-{{last}} expected");
    };
    KeyName {
        shard: shard.to_owned(),
        first: SequenceNumber::parse(first).unwrap(),
        last: SequenceNumber::parse(last).unwrap(),
    }
}

/// Checks the objects under `prefix` against what was written: each object
/// holds exactly the records its shard got in its sequence range, in order;
/// every record is in exactly one object. Returns the objects by name.
async fn check_objects(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
    stream: &str,
    written: &[Written],
    gzip: bool,
) -> BTreeMap<KeyName, Listed> {
    let shards = by_shard(written);
    let mut names = BTreeMap::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for object in list(s3, bucket, prefix).await.unwrap() {
        assert_eq!(object.key.ends_with(".gz"), gzip, "key {}", object.key);
        let name = parse_key(prefix, stream, &object.key);
        let (lines, encoding) = read_lines(s3, bucket, &object.key).await.unwrap();
        assert_eq!(
            encoding.as_deref(),
            gzip.then_some("gzip"),
            "Content-Encoding of {}",
            object.key
        );
        let expected: Vec<&str> = shards
            .get(&name.shard)
            .unwrap_or_else(|| panic!("object {} names an unknown shard", object.key))
            .iter()
            .filter(|w| name.first <= w.sequence && w.sequence <= name.last)
            .map(|w| w.data.as_str())
            .collect();
        assert_eq!(
            lines, expected,
            "object {} holds its shard's records {}..={} in order",
            object.key, name.first, name.last
        );
        for line in lines {
            *seen.entry(line).or_default() += 1;
        }
        assert!(names.insert(name, object).is_none());
    }
    let dups: Vec<(&String, &usize)> = seen.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(dups.is_empty(), "records in more than one object: {dups:?}");
    let missing: Vec<&str> = written
        .iter()
        .filter(|w| !seen.contains_key(&w.data))
        .map(|w| w.data.as_str())
        .take(5)
        .collect();
    assert!(missing.is_empty(), "records in no object: {missing:?}");
    assert_eq!(seen.len(), written.len());
    names
}

/// Per shard, object ranges must not overlap: one object per sequence range.
fn assert_disjoint(names: &BTreeMap<KeyName, Listed>) {
    let mut previous: Option<&KeyName> = None;
    for name in names.keys() {
        if let Some(p) = previous.filter(|p| p.shard == name.shard) {
            assert!(
                p.last < name.first,
                "objects {p:?} and {name:?} overlap: a replay duplicated data"
            );
        }
        previous = Some(name);
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

async fn pipeline_to_s3(gzip: bool) {
    let kinesis = kinesis_client().await;
    let s3 = s3_client().await;
    let stream = unique_name("s3-it-src");
    let bucket = unique_name("s3-it");
    create_stream(&kinesis, &stream, 2).await.unwrap();
    create_bucket(&s3, &bucket).await.unwrap();
    let started = Instant::now();
    let written = produce(&kinesis, &stream, small_records("plain", 1_000))
        .await
        .unwrap();
    let shards = by_shard(&written);
    assert_eq!(shards.len(), 2, "records went to both shards");

    let prefix = "raw";
    let emitter = S3Emitter::builder(s3.clone(), &bucket, Utf8Transformer)
        .prefix(prefix)
        .gzip(gzip)
        .content_type("text/plain")
        .build()
        .unwrap();
    let limits = BufferLimits::default()
        .with_max_records(150)
        .with_max_age(Duration::from_secs(1));
    let store = Arc::new(MemoryCheckpointStore::new());
    let running = RunningConsumer::start(consumer(
        &kinesis,
        &stream,
        store,
        Arc::new(emitter),
        limits,
    ));
    let waited = wait_until("all records in S3", || async {
        let lines = count_lines(&s3, &bucket, prefix).await?;
        Ok((
            lines >= written.len(),
            format!("{lines} of {} lines", written.len()),
        ))
    })
    .await;
    let report = running.stop().await;
    let names = check_objects(&s3, &bucket, prefix, &stream, &written, gzip).await;
    assert_disjoint(&names);
    assert!(names.len() >= 8, "1000 records in batches of at most 150");
    assert!(names.keys().all(|n| shards.contains_key(&n.shard)));
    eprintln!(
        "gzip {gzip}: {} records in {} objects ({} emitted), delivered {waited:?} after writing; total {:?}",
        written.len(),
        names.len(),
        report.records_emitted(),
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_emitter_pipeline_into_s3_plain() {
    pipeline_to_s3(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_emitter_pipeline_into_s3_gzip() {
    pipeline_to_s3(true).await;
}

/// Record data that gzip cannot shrink much: `len` characters from a
/// 64-letter alphabet picked by xorshift (deflate gets to about 3/4 of it).
fn incompressible(seed: u64, len: usize) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(ALPHABET[(state >> 58) as usize])
        })
        .collect()
}

/// Writes 100 KiB records over 16 partition keys until each of the stream's
/// two shards holds at least `per_shard` bytes.
async fn produce_large(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    per_shard: usize,
) -> Vec<Written> {
    const RECORD: usize = 100 * 1024;
    const ROUND: usize = 32;
    let mut written = Vec::new();
    let mut bytes: HashMap<String, usize> = HashMap::new();
    for round in 0..20 {
        if bytes.len() == 2 && bytes.values().all(|&b| b >= per_shard) {
            return written;
        }
        let records = (0..ROUND)
            .map(|i| {
                let n = round * ROUND + i;
                let data = format!("{n:04} {}", incompressible(n as u64, RECORD - 5));
                (format!("pk-{:02}", n % 16), data)
            })
            .collect();
        for w in produce(kinesis, stream, records).await.unwrap() {
            *bytes.entry(w.shard.clone()).or_default() += w.data.len();
            written.push(w);
        }
    }
    panic!("20 rounds of {ROUND} records did not give both shards {per_shard} bytes: {bytes:?}");
}

/// A 2-shard pipeline whose batches (7.5 MiB) are larger than the part size
/// (5 MiB) even after gzip, so each shard's first object goes up in parts.
async fn large_batches_go_up_in_parts(gzip: bool) {
    let kinesis = kinesis_client().await;
    let s3 = s3_client().await;
    let stream = unique_name("s3-it-multipart");
    let bucket = unique_name("s3-it-multipart");
    create_stream(&kinesis, &stream, 2).await.unwrap();
    create_bucket(&s3, &bucket).await.unwrap();
    let started = Instant::now();
    let written = produce_large(&kinesis, &stream, 8 * MIB).await;
    let produced_in = started.elapsed();

    let prefix = "mp";
    let part_size = 5 * MIB;
    let emitter = S3Emitter::builder(s3.clone(), &bucket, Utf8Transformer)
        .prefix(prefix)
        .gzip(gzip)
        .part_size(part_size)
        .upload_concurrency(2)
        .build()
        .unwrap();
    // Every record is already in the stream, so batches fill to the byte
    // limit long before they age.
    let limits = BufferLimits::default()
        .with_max_records(10_000)
        .with_max_bytes(7 * MIB + MIB / 2)
        .with_max_age(Duration::from_secs(10));
    let consumer = consumer(
        &kinesis,
        &stream,
        Arc::new(MemoryCheckpointStore::new()),
        Arc::new(emitter),
        limits,
    );
    let status = consumer.status();
    let running = RunningConsumer::start(consumer);
    wait_until("the large batches in S3", || async {
        let lines = count_lines(&s3, &bucket, prefix).await?;
        Ok((
            lines >= written.len(),
            format!(
                "{lines} of {} lines; shards: {:?}",
                written.len(),
                status.shards()
            ),
        ))
    })
    .await;
    running.stop().await;

    let names = check_objects(&s3, &bucket, prefix, &stream, &written, gzip).await;
    assert_disjoint(&names);
    let multipart: Vec<(&KeyName, &Listed)> = names
        .iter()
        .filter(|(_, o)| o.size > part_size as i64)
        .collect();
    let shards: BTreeSet<&str> = multipart.iter().map(|(n, _)| n.shard.as_str()).collect();
    assert_eq!(
        shards.len(),
        2,
        "each shard has an object over the part size: {names:#?}"
    );
    // S3 (and moto) give multipart objects an ETag ending in -<parts>.
    for (_, object) in &multipart {
        assert!(
            object.etag.trim_matches('"').ends_with("-2"),
            "an object over the part size went up in 2 parts: {object:?}"
        );
    }
    let uploads = s3
        .list_multipart_uploads()
        .bucket(&bucket)
        .send()
        .await
        .map_err(|e| anyhow!("{}", DisplayErrorContext(e)))
        .unwrap();
    assert!(uploads.uploads().is_empty(), "no upload left open");
    eprintln!(
        "multipart, gzip {gzip}: {} records ({produced_in:?} to write) in {} objects, {} in parts; total {:?}",
        written.len(),
        names.len(),
        multipart.len(),
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_emitter_large_batches_go_up_in_parts() {
    large_batches_go_up_in_parts(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_emitter_large_gzip_batches_go_up_in_parts() {
    large_batches_go_up_in_parts(true).await;
}

/// Delegates to an emitter and counts the items it delivered.
struct Counting<E> {
    inner: E,
    items: AtomicUsize,
}

#[async_trait]
impl<E: Emitter<String>> Emitter<String> for Counting<E> {
    async fn emit(&self, batch: &Batch<String>) -> kinesis_connectors_core::Result<EmitOutcome> {
        let outcome = self.inner.emit(batch).await?;
        self.items.fetch_add(batch.len(), Ordering::SeqCst);
        Ok(outcome)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_emitter_a_replay_after_a_restart_overwrites_its_objects() {
    let kinesis = kinesis_client().await;
    let s3 = s3_client().await;
    let stream = unique_name("s3-it-replay");
    let bucket = unique_name("s3-it-replay");
    create_stream(&kinesis, &stream, 2).await.unwrap();
    create_bucket(&s3, &bucket).await.unwrap();
    let started = Instant::now();
    // Every record is in the stream before the consumers start, so batch
    // boundaries (100 records, the rest on age) are the same in both runs.
    let written = produce(&kinesis, &stream, small_records("replay", 800))
        .await
        .unwrap();
    let prefix = "replay";
    let limits = BufferLimits::default()
        .with_max_records(100)
        .with_max_age(Duration::from_secs(2));
    let s3_emitter = || {
        S3Emitter::builder(s3.clone(), &bucket, Utf8Transformer)
            .prefix(prefix)
            .build()
            .unwrap()
    };

    // First run: everything delivered and checkpointed.
    let first_store = Arc::new(MemoryCheckpointStore::new());
    let running = RunningConsumer::start(consumer(
        &kinesis,
        &stream,
        first_store.clone(),
        Arc::new(s3_emitter()),
        limits,
    ));
    wait_until("first run delivered", || async {
        let lines = count_lines(&s3, &bucket, prefix).await?;
        Ok((
            lines >= written.len(),
            format!("{lines} of {} lines", written.len()),
        ))
    })
    .await;
    running.stop().await;
    let before = check_objects(&s3, &bucket, prefix, &stream, &written, false).await;
    assert_disjoint(&before);

    // The restart finds checkpoints only after each shard's first object (as
    // if the later checkpoints were lost): every later batch is emitted again.
    let replay_store = Arc::new(MemoryCheckpointStore::new());
    let mut replayed_records = 0;
    let mut first_of_shard: BTreeMap<&str, &KeyName> = BTreeMap::new();
    for name in before.keys() {
        first_of_shard.entry(name.shard.as_str()).or_insert(name);
    }
    for name in first_of_shard.values() {
        let key = ShardKey::new(APP, stream.as_str(), name.shard.as_str());
        replay_store
            .set(&key, &Checkpoint::At(Position::new(name.last.clone())))
            .await
            .unwrap();
        replayed_records += by_shard(&written)[&name.shard]
            .iter()
            .filter(|w| w.sequence > name.last)
            .count();
    }
    let counting = Arc::new(Counting {
        inner: s3_emitter(),
        items: AtomicUsize::new(0),
    });
    let running = RunningConsumer::start(consumer(
        &kinesis,
        &stream,
        replay_store,
        counting.clone(),
        limits,
    ));
    wait_until("replay emitted", || async {
        let emitted = counting.items.load(Ordering::SeqCst);
        Ok((
            emitted >= replayed_records,
            format!("{emitted} of {replayed_records} records"),
        ))
    })
    .await;
    running.stop().await;
    assert_eq!(counting.items.load(Ordering::SeqCst), replayed_records);

    let after = check_objects(&s3, &bucket, prefix, &stream, &written, false).await;
    assert_disjoint(&after);
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>(),
        "the replay wrote the same objects, no new ones"
    );
    for (name, object) in &after {
        assert_eq!(
            object.etag, before[name].etag,
            "{name:?} has the same content"
        );
    }
    eprintln!(
        "replay: {} objects, {replayed_records} of {} records replayed onto the same keys; total {:?}",
        after.len(),
        written.len(),
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_emitter_conformance_on_the_stack() {
    let s3 = s3_client().await;
    let bucket = unique_name("s3-it-conformance");
    create_bucket(&s3, &bucket).await.unwrap();
    let started = Instant::now();
    let emitter = S3Emitter::builder(s3.clone(), &bucket, Utf8Transformer)
        .prefix("conformance")
        .gzip(true)
        .build()
        .unwrap();
    let (client, b) = (s3.clone(), bucket.clone());
    let suite =
        EmitterConformance::new(&emitter, |i| format!("item {i}")).delivered_count(move || {
            let (s3, bucket) = (client.clone(), b.clone());
            Box::pin(async move { count_lines(&s3, &bucket, "conformance").await.unwrap() })
        });
    let report = emitter_conformance::run_all(&suite, EmitterCapabilities::new()).await;
    assert!(report.is_success(), "{report}");
    let objects = list(&s3, &bucket, "conformance").await.unwrap();
    assert_eq!(
        objects.len(),
        8,
        "one object per non-empty batch: {objects:#?}"
    );
    eprintln!(
        "conformance: {} objects in {:?}",
        objects.len(),
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------
// Manifest
// ---------------------------------------------------------------------------

/// The data of every record of `stream`, from `TRIM_HORIZON`.
async fn read_stream(client: &aws_sdk_kinesis::Client, stream: &str) -> Result<Vec<String>> {
    records::read_stream(client, stream)
        .await?
        .iter()
        .map(records::utf8_data)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_emitter_manifest_records_point_at_existing_objects() {
    let kinesis = kinesis_client().await;
    let s3 = s3_client().await;
    let stream = unique_name("s3-it-msrc");
    let manifest = unique_name("s3-it-manifest");
    let bucket = unique_name("s3-it-manifest");
    create_stream(&kinesis, &stream, 2).await.unwrap();
    create_stream(&kinesis, &manifest, 1).await.unwrap();
    create_bucket(&s3, &bucket).await.unwrap();
    let started = Instant::now();
    let written = produce(&kinesis, &stream, small_records("manifest", 600))
        .await
        .unwrap();

    let prefix = "loads";
    let s3_emitter = S3Emitter::builder(s3.clone(), &bucket, Utf8Transformer)
        .prefix(prefix)
        .gzip(true)
        .build()
        .unwrap();
    let emitter = S3ManifestEmitter::new(s3_emitter, kinesis.clone(), &manifest).unwrap();
    let limits = BufferLimits::default()
        .with_max_records(100)
        .with_max_age(Duration::from_secs(1));
    let running = RunningConsumer::start(consumer(
        &kinesis,
        &stream,
        Arc::new(MemoryCheckpointStore::new()),
        Arc::new(emitter),
        limits,
    ));
    wait_until("all records in S3 and the manifest", || async {
        let lines = count_lines(&s3, &bucket, prefix).await?;
        let objects = list(&s3, &bucket, prefix).await?.len();
        let urls = read_stream(&kinesis, &manifest).await?.len();
        Ok((
            lines >= written.len() && urls >= objects,
            format!(
                "{lines} of {} lines, {urls} manifest records for {objects} objects",
                written.len()
            ),
        ))
    })
    .await;
    running.stop().await;

    let names = check_objects(&s3, &bucket, prefix, &stream, &written, true).await;
    let urls = read_stream(&kinesis, &manifest).await.unwrap();
    let distinct: BTreeSet<&String> = urls.iter().collect();
    assert_eq!(
        distinct.len(),
        urls.len(),
        "a clean run writes each record once"
    );
    let objects: BTreeSet<String> = names
        .values()
        .map(|o| format!("s3://{bucket}/{}", o.key))
        .collect();
    assert_eq!(
        distinct
            .iter()
            .map(|u| (*u).clone())
            .collect::<BTreeSet<_>>(),
        objects,
        "one manifest record per object"
    );
    for url in &distinct {
        let key = url
            .strip_prefix(&format!("s3://{bucket}/"))
            .unwrap_or_else(|| panic!("{url} is not in {bucket}"));
        s3.head_object()
            .bucket(&bucket)
            .key(key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{url} does not exist: {}", DisplayErrorContext(e)));
    }
    eprintln!(
        "manifest: {} records in {} objects, {} manifest records; total {:?}",
        written.len(),
        names.len(),
        urls.len(),
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_emitter_manifest_emitter_conformance_on_the_stack() {
    let kinesis = kinesis_client().await;
    let s3 = s3_client().await;
    let manifest = unique_name("s3-it-mconf");
    let bucket = unique_name("s3-it-mconf");
    create_stream(&kinesis, &manifest, 1).await.unwrap();
    create_bucket(&s3, &bucket).await.unwrap();
    let started = Instant::now();
    let s3_emitter = S3Emitter::builder(s3.clone(), &bucket, Utf8Transformer)
        .build()
        .unwrap();
    let emitter = S3ManifestEmitter::new(s3_emitter, kinesis.clone(), &manifest).unwrap();
    let (k, s, m, b) = (
        kinesis.clone(),
        s3.clone(),
        manifest.clone(),
        bucket.clone(),
    );
    // Delivered: the lines of the distinct objects the manifest points at.
    let suite =
        EmitterConformance::new(&emitter, |i| format!("item {i}")).delivered_count(move || {
            let (kinesis, s3, manifest, bucket) = (k.clone(), s.clone(), m.clone(), b.clone());
            Box::pin(async move {
                let urls: BTreeSet<String> = read_stream(&kinesis, &manifest)
                    .await
                    .unwrap()
                    .into_iter()
                    .collect();
                let mut total = 0;
                for url in urls {
                    let key = url.strip_prefix(&format!("s3://{bucket}/")).unwrap();
                    total += read_lines(&s3, &bucket, key).await.unwrap().0.len();
                }
                total
            })
        });
    let report = emitter_conformance::run_all(&suite, EmitterCapabilities::new()).await;
    assert!(report.is_success(), "{report}");
    eprintln!("manifest conformance: {:?}", started.elapsed());
}
