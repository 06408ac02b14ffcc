//! `S3Emitter` and `S3ManifestEmitter` against mocked S3 and Kinesis clients
//! (`aws-smithy-mocks`, no network): request building, key names, gzip,
//! multipart split, abort and part-upload concurrency, error classification,
//! rejected items, and the testkit's emitter conformance suite on an
//! in-memory "bucket". Network errors: `network_errors.rs`.

// Test code: helpers may unwrap and panic like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap};
use std::io::Read as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::error::ErrorMetadata;
use aws_sdk_s3::operation::abort_multipart_upload::AbortMultipartUploadOutput;
use aws_sdk_s3::operation::complete_multipart_upload::CompleteMultipartUploadOutput;
use aws_sdk_s3::operation::create_multipart_upload::CreateMultipartUploadOutput;
use aws_sdk_s3::operation::put_object::{PutObjectError, PutObjectOutput};
use aws_sdk_s3::operation::upload_part::{UploadPartError, UploadPartOutput};
use aws_sdk_s3::types::{ServerSideEncryption, StorageClass};
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use kinesis_connectors_core::{
    Batch, Emitter, Encoder, Position, Result as CoreResult, SequenceNumber, Transformer,
    Utf8Transformer,
};
use kinesis_connectors_s3::{Error, S3Emitter, S3ManifestEmitter};
use kinesis_connectors_testkit::{
    EmitterCapabilities, EmitterConformance, InFlightProbe, batch, emitter_conformance,
    shard_context,
};

const BUCKET: &str = "test-bucket";

/// One stored object.
#[derive(Debug, Clone)]
struct Object {
    body: Vec<u8>,
    content_encoding: Option<String>,
    content_type: Option<String>,
    storage_class: Option<StorageClass>,
    encryption: Option<ServerSideEncryption>,
    kms_key_id: Option<String>,
    multipart: bool,
}

/// An in-memory bucket that the mocked client writes to.
#[derive(Debug, Default)]
struct Bucket {
    objects: BTreeMap<String, Object>,
    /// Upload id → the upload in progress.
    uploads: HashMap<String, InProgress>,
    next_upload: usize,
    /// Every call, in order: `"PutObject key"`, `"UploadPart key #n"`, …
    calls: Vec<String>,
}

/// A multipart upload in progress: its key, part number → body, and the
/// object settings given at creation.
type InProgress = (String, BTreeMap<i32, Vec<u8>>, Object);

type Shared = Arc<Mutex<Bucket>>;

/// Whether an error is the expected variant.
type Expect = fn(&Error) -> bool;

/// The rules of a working bucket; `failures` come first and win.
fn bucket_rules(bucket: &Shared, failures: Vec<Rule>) -> Vec<Rule> {
    let mut rules = failures;
    let b = bucket.clone();
    rules.push(
        mock!(aws_sdk_s3::Client::put_object).then_compute_output(move |input| {
            let mut bucket = b.lock().unwrap();
            let key = input.key().unwrap().to_owned();
            bucket.calls.push(format!("PutObject {key}"));
            bucket.objects.insert(
                key,
                Object {
                    body: input.body().bytes().expect("in-memory body").to_vec(),
                    content_encoding: input.content_encoding().map(str::to_owned),
                    content_type: input.content_type().map(str::to_owned),
                    storage_class: input.storage_class().cloned(),
                    encryption: input.server_side_encryption().cloned(),
                    kms_key_id: input.ssekms_key_id().map(str::to_owned),
                    multipart: false,
                },
            );
            PutObjectOutput::builder().e_tag("\"etag\"").build()
        }),
    );
    let b = bucket.clone();
    rules.push(
        mock!(aws_sdk_s3::Client::create_multipart_upload).then_compute_output(move |input| {
            let mut bucket = b.lock().unwrap();
            let key = input.key().unwrap().to_owned();
            bucket.calls.push(format!("CreateMultipartUpload {key}"));
            bucket.next_upload += 1;
            let id = format!("upload-{}", bucket.next_upload);
            let settings = Object {
                body: Vec::new(),
                content_encoding: input.content_encoding().map(str::to_owned),
                content_type: input.content_type().map(str::to_owned),
                storage_class: input.storage_class().cloned(),
                encryption: input.server_side_encryption().cloned(),
                kms_key_id: input.ssekms_key_id().map(str::to_owned),
                multipart: true,
            };
            bucket
                .uploads
                .insert(id.clone(), (key, BTreeMap::new(), settings));
            CreateMultipartUploadOutput::builder().upload_id(id).build()
        }),
    );
    let b = bucket.clone();
    rules.push(
        mock!(aws_sdk_s3::Client::upload_part).then_compute_output(move |input| {
            let mut bucket = b.lock().unwrap();
            let number = input.part_number().unwrap();
            bucket
                .calls
                .push(format!("UploadPart {} #{number}", input.key().unwrap()));
            let body = input.body().bytes().expect("in-memory part").to_vec();
            let upload = bucket
                .uploads
                .get_mut(input.upload_id().unwrap())
                .expect("known upload");
            upload.1.insert(number, body);
            UploadPartOutput::builder()
                .e_tag(format!("\"etag-{number}\""))
                .build()
        }),
    );
    let b = bucket.clone();
    rules.push(
        mock!(aws_sdk_s3::Client::complete_multipart_upload).then_compute_output(move |input| {
            let mut bucket = b.lock().unwrap();
            bucket
                .calls
                .push(format!("CompleteMultipartUpload {}", input.key().unwrap()));
            let (key, parts, mut object) = bucket
                .uploads
                .remove(input.upload_id().unwrap())
                .expect("known upload");
            let listed = input.multipart_upload().unwrap().parts();
            let numbers: Vec<i32> = listed.iter().map(|p| p.part_number().unwrap()).collect();
            assert_eq!(
                numbers,
                (1..=parts.len() as i32).collect::<Vec<_>>(),
                "parts listed in order"
            );
            for part in listed {
                let n = part.part_number().unwrap();
                assert_eq!(part.e_tag(), Some(format!("\"etag-{n}\"").as_str()));
                object.body.extend_from_slice(&parts[&n]);
            }
            bucket.objects.insert(key, object);
            CompleteMultipartUploadOutput::builder().build()
        }),
    );
    let b = bucket.clone();
    rules.push(
        mock!(aws_sdk_s3::Client::abort_multipart_upload).then_compute_output(move |input| {
            let mut bucket = b.lock().unwrap();
            bucket.calls.push(format!(
                "AbortMultipartUpload {} {}",
                input.key().unwrap(),
                input.upload_id().unwrap()
            ));
            bucket.uploads.remove(input.upload_id().unwrap());
            AbortMultipartUploadOutput::builder().build()
        }),
    );
    rules
}

fn s3_client(rules: &[Rule]) -> aws_sdk_s3::Client {
    // The SDK's own retries are off: each test sees exactly the mocked answer.
    mock_client!(aws_sdk_s3, RuleMode::MatchAny, rules, |c| c
        .retry_config(RetryConfig::disabled()))
}

fn lines(body: &[u8]) -> Vec<String> {
    String::from_utf8(body.to_vec())
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn gunzip(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body)
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn strings(n: usize, prefix: &str) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// A batch of `items` at sequence numbers `first_seq..`, arrived at 2024-02-29T13:05:09Z.
fn dated_batch(items: Vec<String>, first_seq: u64) -> Batch<String> {
    let mut b = batch(shard_context("shardId-000000000003"), items, first_seq);
    b.first_arrival = Some(UNIX_EPOCH + Duration::from_secs(1_709_211_909));
    b
}

#[tokio::test]
async fn a_batch_becomes_one_object_named_after_it() {
    let bucket = Shared::default();
    let client = s3_client(&bucket_rules(&bucket, Vec::new()));
    let emitter = S3Emitter::builder(client, BUCKET, Utf8Transformer)
        .prefix("raw/")
        .suffix(".jsonl")
        .content_type("application/x-ndjson")
        .storage_class(StorageClass::StandardIa)
        .server_side_encryption(ServerSideEncryption::Aes256)
        .build()
        .unwrap();
    let b = dated_batch(strings(3, "item"), 100);
    assert_eq!(
        emitter.object_key(&b),
        "raw/test-stream/2024/02/29/13/shardId-000000000003-100-102.jsonl"
    );
    let outcome = emitter.emit(&b).await.unwrap();
    assert!(outcome.rejected.is_empty());

    let bucket = bucket.lock().unwrap();
    assert_eq!(
        bucket.calls,
        vec!["PutObject raw/test-stream/2024/02/29/13/shardId-000000000003-100-102.jsonl"]
    );
    let object = bucket.objects.values().next().unwrap();
    assert_eq!(lines(&object.body), strings(3, "item"));
    assert_eq!(object.body, b"item-0\nitem-1\nitem-2\n");
    assert_eq!(object.content_type.as_deref(), Some("application/x-ndjson"));
    assert_eq!(object.content_encoding, None);
    assert_eq!(object.storage_class, Some(StorageClass::StandardIa));
    assert_eq!(object.encryption, Some(ServerSideEncryption::Aes256));
    assert_eq!(object.kms_key_id, None);
}

#[tokio::test]
async fn gzip_adds_the_suffix_and_encoding_and_is_deterministic() {
    let bucket = Shared::default();
    let client = s3_client(&bucket_rules(&bucket, Vec::new()));
    let emitter = S3Emitter::builder(client, BUCKET, Utf8Transformer)
        .gzip(true)
        .build()
        .unwrap();
    let b = dated_batch(strings(500, "line"), 7);
    let upload = emitter.upload(&b).await.unwrap();
    let object = upload.object.clone().unwrap();
    assert_eq!(
        object.key,
        "test-stream/2024/02/29/13/shardId-000000000003-7-506.gz"
    );
    assert_eq!(
        object.url(),
        format!("s3://{BUCKET}/test-stream/2024/02/29/13/shardId-000000000003-7-506.gz")
    );
    assert_eq!(upload.records, 500);
    let first = bucket.lock().unwrap().objects[&object.key].clone();
    assert_eq!(first.content_encoding.as_deref(), Some("gzip"));
    assert_eq!(upload.bytes, first.body.len());
    assert_eq!(lines(&gunzip(&first.body)), strings(500, "line"));

    // A replay writes the same key with the same bytes.
    assert!(emitter.emit(&b).await.unwrap().rejected.is_empty());
    let bucket = bucket.lock().unwrap();
    assert_eq!(bucket.objects.len(), 1);
    assert_eq!(bucket.objects[&object.key].body, first.body);
}

#[tokio::test]
async fn the_gzip_level_turns_gzip_on_and_sets_how_hard_it_compresses() {
    let body = |level: Option<u32>| {
        let bucket = Shared::default();
        let client = s3_client(&bucket_rules(&bucket, Vec::new()));
        let builder = S3Emitter::builder(client, BUCKET, Utf8Transformer);
        let emitter = match level {
            Some(level) => builder.gzip_level(level),
            None => builder.gzip(true),
        }
        .build()
        .unwrap();
        let b = dated_batch(strings(2_000, "line"), 7);
        async move {
            let object = emitter.upload(&b).await.unwrap().object.unwrap();
            assert!(object.key.ends_with(".gz"), "{}", object.key);
            let stored = bucket.lock().unwrap().objects[&object.key].clone();
            assert_eq!(stored.content_encoding.as_deref(), Some("gzip"));
            assert_eq!(lines(&gunzip(&stored.body)), strings(2_000, "line"));
            stored.body
        }
    };
    let stored = body(Some(0)).await;
    let fast = body(Some(1)).await;
    let default = body(None).await;
    assert!(stored.len() > fast.len(), "level 0 stores");
    assert!(
        fast.len() >= default.len(),
        "level 1 compresses less than 6"
    );
    assert_eq!(body(Some(6)).await, default, "6 is the default");
}

#[tokio::test]
async fn sub_sequence_positions_give_distinct_keys() {
    let bucket = Shared::default();
    let client = s3_client(&bucket_rules(&bucket, Vec::new()));
    let emitter = S3Emitter::builder(client, BUCKET, Utf8Transformer)
        .key_template("{shard}/{first_seq}-{last_seq}")
        .build()
        .unwrap();
    let at = |sub| Position {
        sequence: SequenceNumber::from(42),
        sub_sequence: Some(sub),
    };
    let mut first = batch(shard_context("s"), strings(2, "a"), 1);
    first.first = at(0);
    first.last = at(1);
    let mut second = batch(shard_context("s"), strings(2, "b"), 1);
    second.first = at(2);
    second.last = at(3);
    assert!(emitter.emit(&first).await.unwrap().rejected.is_empty());
    assert!(emitter.emit(&second).await.unwrap().rejected.is_empty());
    let keys: Vec<String> = bucket.lock().unwrap().objects.keys().cloned().collect();
    assert_eq!(keys, vec!["s/42_0-42_1", "s/42_2-42_3"]);
}

#[tokio::test]
async fn missing_arrival_time_uses_the_epoch() {
    let bucket = Shared::default();
    let emitter = S3Emitter::builder(
        s3_client(&bucket_rules(&bucket, Vec::new())),
        BUCKET,
        Utf8Transformer,
    )
    .build()
    .unwrap();
    let b = batch(shard_context("s"), strings(1, "x"), 5);
    assert_eq!(emitter.object_key(&b), "test-stream/1970/01/01/00/s-5-5");
}

#[tokio::test]
async fn an_empty_batch_writes_nothing() {
    let bucket = Shared::default();
    let emitter = S3Emitter::builder(
        s3_client(&bucket_rules(&bucket, Vec::new())),
        BUCKET,
        Utf8Transformer,
    )
    .build()
    .unwrap();
    let empty = batch::<String>(shard_context("s"), Vec::new(), 9);
    let upload = emitter.upload(&empty).await.unwrap();
    assert_eq!(upload.object, None);
    assert!(emitter.emit(&empty).await.unwrap().rejected.is_empty());
    assert!(bucket.lock().unwrap().calls.is_empty());
}

/// Refuses to encode items containing "bad".
struct Picky;

impl Transformer for Picky {
    type Item = String;
    fn to_item(&self, record: &kinesis_connectors_core::Record) -> CoreResult<String> {
        Utf8Transformer.to_item(record)
    }
}

impl Encoder for Picky {
    fn from_item(&self, item: &String, out: &mut Vec<u8>) -> CoreResult<()> {
        if item.contains("bad") {
            out.extend_from_slice(b"partial garbage");
            return Err(kinesis_connectors_core::Error::transform("bad item"));
        }
        out.extend_from_slice(item.as_bytes());
        Ok(())
    }
}

#[tokio::test]
async fn items_that_cannot_be_encoded_are_rejected_not_written() {
    let bucket = Shared::default();
    let emitter = S3Emitter::builder(s3_client(&bucket_rules(&bucket, Vec::new())), BUCKET, Picky)
        .build()
        .unwrap();
    let items = vec!["ok-0".to_owned(), "bad-1".to_owned(), "ok-2".to_owned()];
    let outcome = emitter.emit(&dated_batch(items, 1)).await.unwrap();
    assert_eq!(outcome.rejected.len(), 1);
    assert_eq!(outcome.rejected[0].index, 1);
    assert!(
        outcome.rejected[0].reason.contains("bad item"),
        "{:?}",
        outcome.rejected
    );
    {
        let bucket = bucket.lock().unwrap();
        let object = bucket.objects.values().next().unwrap();
        assert_eq!(object.body, b"ok-0\nok-2\n");
    }

    // Nothing encodable: no object at all.
    let bucket = Shared::default();
    let emitter = S3Emitter::builder(s3_client(&bucket_rules(&bucket, Vec::new())), BUCKET, Picky)
        .build()
        .unwrap();
    let outcome = emitter
        .emit(&dated_batch(vec!["bad".to_owned(); 2], 1))
        .await
        .unwrap();
    assert_eq!(outcome.rejected.len(), 2);
    assert!(bucket.lock().unwrap().calls.is_empty());
}

const MIB: usize = 1024 * 1024;

/// `n` items of about `size` bytes, each distinct.
fn big_items(n: usize, size: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("{i:08}-{}", "x".repeat(size - 9)))
        .collect()
}

#[tokio::test]
async fn large_objects_are_split_into_parts_in_order() {
    let bucket = Shared::default();
    let emitter = S3Emitter::builder(
        s3_client(&bucket_rules(&bucket, Vec::new())),
        BUCKET,
        Utf8Transformer,
    )
    .part_size(5 * MIB)
    .upload_concurrency(2)
    .content_type("text/plain")
    .build()
    .unwrap();
    // 12 items of 1 MiB (+ newline each): 12 MiB + 12 bytes → 5 + 5 + 2 MiB.
    let items = big_items(12, MIB);
    let upload = emitter
        .upload(&dated_batch(items.clone(), 1))
        .await
        .unwrap();
    assert!(upload.multipart);
    assert_eq!(upload.bytes, 12 * MIB + 12);

    let bucket = bucket.lock().unwrap();
    let key = upload.object.unwrap().key;
    let mut parts: Vec<&String> = bucket
        .calls
        .iter()
        .filter(|c| c.starts_with("UploadPart"))
        .collect();
    parts.sort();
    assert_eq!(
        parts,
        vec![
            &format!("UploadPart {key} #1"),
            &format!("UploadPart {key} #2"),
            &format!("UploadPart {key} #3"),
        ]
    );
    assert_eq!(
        bucket.calls.first().unwrap(),
        &format!("CreateMultipartUpload {key}")
    );
    assert_eq!(
        bucket.calls.last().unwrap(),
        &format!("CompleteMultipartUpload {key}")
    );
    assert!(bucket.uploads.is_empty());
    let object = &bucket.objects[&key];
    assert!(object.multipart);
    assert_eq!(object.content_type.as_deref(), Some("text/plain"));
    assert_eq!(lines(&object.body), items);
}

#[tokio::test(start_paused = true)]
async fn part_uploads_respect_the_concurrency_bound() {
    // 28 items of 1 MiB (+ newline each): 28 MiB + 28 bytes → 6 parts of at
    // most 5 MiB.
    let items = big_items(28, MIB);
    // (upload_concurrency, most requests in flight at once)
    for (concurrency, peak) in [(1, 1), (2, 2), (4, 4), (8, 6)] {
        let bucket = Shared::default();
        // Every request is held 50 ms (paused time: no wall-clock cost), so
        // requests the emitter sends together overlap.
        let probe = InFlightProbe::new(Duration::from_millis(50));
        let rules = bucket_rules(&bucket, Vec::new());
        let client = mock_client!(aws_sdk_s3, RuleMode::MatchAny, &rules, |c| c
            .retry_config(RetryConfig::disabled())
            .http_client(probe.wrap(aws_smithy_mocks::create_mock_http_client())));
        let emitter = S3Emitter::builder(client, BUCKET, Utf8Transformer)
            .part_size(5 * MIB)
            .upload_concurrency(concurrency)
            .build()
            .unwrap();
        let upload = emitter
            .upload(&dated_batch(items.clone(), 1))
            .await
            .unwrap();
        assert!(upload.multipart);
        let key = upload.object.unwrap().key;

        let bucket = bucket.lock().unwrap();
        // CreateMultipartUpload before the parts and CompleteMultipartUpload
        // after them, one at a time: only UploadPart requests overlap.
        assert_eq!(
            bucket.calls.first().unwrap(),
            &format!("CreateMultipartUpload {key}")
        );
        assert_eq!(
            bucket.calls.last().unwrap(),
            &format!("CompleteMultipartUpload {key}")
        );
        let parts = bucket
            .calls
            .iter()
            .filter(|c| c.starts_with("UploadPart"))
            .count();
        assert_eq!(parts, 6, "{:?}", bucket.calls);
        assert_eq!(probe.requests(), 8, "create + 6 parts + complete");
        assert_eq!(
            probe.peak(),
            peak,
            "upload_concurrency({concurrency}) with 6 parts"
        );
        assert_eq!(lines(&bucket.objects[&key].body), items);
    }
}

#[tokio::test]
async fn encryption_kms_key_and_storage_class_reach_both_upload_paths() {
    let bucket = Shared::default();
    let emitter = S3Emitter::builder(
        s3_client(&bucket_rules(&bucket, Vec::new())),
        BUCKET,
        Utf8Transformer,
    )
    .server_side_encryption(ServerSideEncryption::AwsKms)
    .sse_kms_key_id("alias/archive")
    .storage_class(StorageClass::StandardIa)
    .content_type("text/plain")
    .part_size(5 * MIB)
    .build()
    .unwrap();
    // One small batch (PutObject), one of 6 MiB (CreateMultipartUpload).
    let small = emitter
        .upload(&dated_batch(strings(2, "s"), 1))
        .await
        .unwrap();
    let large = emitter
        .upload(&dated_batch(big_items(6, MIB), 100))
        .await
        .unwrap();
    assert!(!small.multipart);
    assert!(large.multipart);

    let bucket = bucket.lock().unwrap();
    for (upload, multipart) in [(small, false), (large, true)] {
        let object = &bucket.objects[&upload.object.unwrap().key];
        assert_eq!(object.multipart, multipart);
        assert_eq!(
            object.encryption,
            Some(ServerSideEncryption::AwsKms),
            "multipart: {multipart}"
        );
        assert_eq!(
            object.kms_key_id.as_deref(),
            Some("alias/archive"),
            "multipart: {multipart}"
        );
        assert_eq!(
            object.storage_class,
            Some(StorageClass::StandardIa),
            "multipart: {multipart}"
        );
        assert_eq!(object.content_type.as_deref(), Some("text/plain"));
    }
}

#[tokio::test]
async fn a_batch_at_the_part_size_is_a_single_put() {
    let bucket = Shared::default();
    let emitter = S3Emitter::builder(
        s3_client(&bucket_rules(&bucket, Vec::new())),
        BUCKET,
        Utf8Transformer,
    )
    .part_size(5 * MIB)
    .build()
    .unwrap();
    // Exactly 5 MiB: 5 items of MiB - 1 bytes plus a newline each.
    let upload = emitter
        .upload(&dated_batch(big_items(5, MIB - 1), 1))
        .await
        .unwrap();
    assert_eq!(upload.bytes, 5 * MIB);
    assert!(!upload.multipart);
    assert_eq!(bucket.lock().unwrap().calls.len(), 1);
}

fn coded(code: &str, message: &str) -> ErrorMetadata {
    ErrorMetadata::builder().code(code).message(message).build()
}

#[tokio::test]
async fn a_failed_part_aborts_the_upload() {
    let bucket = Shared::default();
    let failing_part = mock!(aws_sdk_s3::Client::upload_part)
        .match_requests(|input| input.part_number() == Some(2))
        .then_error(|| UploadPartError::generic(coded("InternalError", "we broke")));
    let emitter = S3Emitter::builder(
        s3_client(&bucket_rules(&bucket, vec![failing_part])),
        BUCKET,
        Utf8Transformer,
    )
    .part_size(5 * MIB)
    .upload_concurrency(1)
    .build()
    .unwrap();
    let b = dated_batch(big_items(12, MIB), 1);
    let key = emitter.object_key(&b);
    let err = emitter.upload(&b).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(
        matches!(
            err,
            Error::Request {
                operation: "UploadPart",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains(&key), "{err}");

    {
        let bucket = bucket.lock().unwrap();
        assert!(bucket.objects.is_empty(), "no object after a failed upload");
        assert!(
            bucket.uploads.is_empty(),
            "the upload was aborted: {bucket:?}"
        );
        assert_eq!(
            bucket.calls.last().unwrap(),
            &format!("AbortMultipartUpload {key} upload-1")
        );
        assert!(!bucket.calls.iter().any(|c| c.starts_with("Complete")));
        // With one part at a time, part 3 was never started.
        assert!(
            !bucket.calls.iter().any(|c| c.ends_with("#3")),
            "{:?}",
            bucket.calls
        );
    }

    // Through the Emitter trait: a retryable core error.
    let core = emitter.emit(&b).await.unwrap_err();
    assert!(core.is_retryable(), "{core}");
}

#[tokio::test]
async fn a_failed_completion_aborts_the_upload() {
    let bucket = Shared::default();
    let failing = mock!(aws_sdk_s3::Client::complete_multipart_upload).then_error(|| {
        aws_sdk_s3::operation::complete_multipart_upload::CompleteMultipartUploadError::generic(
            coded("AccessDenied", "no"),
        )
    });
    let emitter = S3Emitter::builder(
        s3_client(&bucket_rules(&bucket, vec![failing])),
        BUCKET,
        Utf8Transformer,
    )
    .part_size(5 * MIB)
    .build()
    .unwrap();
    let err = emitter
        .upload(&dated_batch(big_items(6, MIB), 1))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AccessDenied { .. }), "{err}");
    assert!(!err.is_retryable());
    let bucket = bucket.lock().unwrap();
    assert!(bucket.uploads.is_empty());
    assert!(
        bucket
            .calls
            .last()
            .unwrap()
            .starts_with("AbortMultipartUpload")
    );
}

#[tokio::test]
async fn errors_are_classified_and_name_the_bucket_and_key() {
    let cases: Vec<(Rule, Expect, bool)> = vec![
        (
            mock!(aws_sdk_s3::Client::put_object).then_error(|| {
                PutObjectError::generic(coded("NoSuchBucket", "The specified bucket does not exist"))
            }),
            |e| matches!(e, Error::NoSuchBucket { .. }),
            false,
        ),
        (
            mock!(aws_sdk_s3::Client::put_object)
                .then_error(|| PutObjectError::generic(coded("AccessDenied", "Access Denied"))),
            |e| matches!(e, Error::AccessDenied { .. }),
            false,
        ),
        (
            mock!(aws_sdk_s3::Client::put_object)
                .then_error(|| PutObjectError::generic(coded("InvalidArgument", "bad header"))),
            |e| matches!(e, Error::Request { retryable: false, .. }),
            false,
        ),
        (
            // A real 503 SlowDown response, parsed by the SDK.
            mock!(aws_sdk_s3::Client::put_object)
                .sequence()
                .http_status(
                    503,
                    Some(
                        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
                         <Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
                            .to_owned(),
                    ),
                )
                .repeatedly()
                .build(),
            |e| matches!(e, Error::Request { retryable: true, .. }),
            true,
        ),
        (
            // A 500 without a body.
            mock!(aws_sdk_s3::Client::put_object)
                .sequence()
                .http_status(500, None)
                .repeatedly()
                .build(),
            |e| matches!(e, Error::Request { retryable: true, .. }),
            true,
        ),
    ];
    for (rule, expected, retryable) in cases {
        let emitter = S3Emitter::builder(s3_client(&[rule]), "the-bucket", Utf8Transformer)
            .build()
            .unwrap();
        let b = dated_batch(strings(2, "x"), 1);
        let key = emitter.object_key(&b);
        let err = emitter.upload(&b).await.unwrap_err();
        assert!(expected(&err), "unexpected variant: {err:?}");
        assert_eq!(err.is_retryable(), retryable, "{err}");
        let text = err.to_string();
        assert!(text.contains("the-bucket"), "{text}");
        assert!(text.contains(&key), "{text}");
        let core = emitter.emit(&b).await.unwrap_err();
        assert_eq!(core.is_retryable(), retryable, "{core}");
    }
}

#[test]
fn bad_configurations_are_refused_clearly() {
    let client = s3_client(&[]);
    let build = |bucket: &str,
                 f: fn(
        kinesis_connectors_s3::S3EmitterBuilder<Utf8Transformer>,
    ) -> kinesis_connectors_s3::S3EmitterBuilder<Utf8Transformer>| {
        f(S3Emitter::builder(client.clone(), bucket, Utf8Transformer))
            .build()
            .unwrap_err()
            .to_string()
    };
    // The bucket name itself is wrong: the message quotes it (when there is one).
    let bucket_cases: Vec<(String, &str)> = vec![
        (build("", |b| b), "bucket name is empty"),
        (build("s3://b/p", |b| b), "bucket \"s3://b/p\" is a URL"),
        (build("a/b", |b| b), "bucket \"a/b\" is not a bucket name"),
    ];
    // Anything else: the message names the bucket of the emitter at fault.
    let named = |f| build("archive-bucket", f);
    let other_cases: Vec<(String, &str)> = vec![
        (
            named(|b| b.key_template("{prefix}/{shard}/{first_seq}/{hour}")),
            "unknown placeholder {hour}",
        ),
        (
            named(|b| b.key_template("{prefix}/{shard}/{first_seq")),
            "is not closed",
        ),
        (
            named(|b| b.key_template("{prefix}/{first_seq}")),
            "lacks {shard}",
        ),
        (named(|b| b.part_size(5 * MIB - 1)), "below S3's minimum"),
        (
            named(|b| b.part_size(kinesis_connectors_s3::MAX_PART_SIZE + 1)),
            "above S3's maximum",
        ),
        (named(|b| b.upload_concurrency(0)), "at least 1"),
        (
            named(|b| b.gzip_level(10)),
            "gzip level 10 is not within 0..=9",
        ),
        (named(|b| b.prefix("p".repeat(1000))), "1024"),
        (named(|b| b.sse_kms_key_id("k")), "KMS key"),
    ];
    for (message, needle) in bucket_cases.iter().chain(&other_cases) {
        assert!(
            message.contains(needle),
            "{message:?} should mention {needle:?}"
        );
        assert!(
            message.starts_with("invalid S3 emitter configuration: "),
            "{message}"
        );
    }
    for (message, _) in &other_cases {
        assert!(
            message.starts_with("invalid S3 emitter configuration: bucket \"archive-bucket\": "),
            "{message}"
        );
    }
    // Converted for the consumer loop, the message keeps the bucket.
    let core = kinesis_connectors_core::Error::from(
        S3Emitter::builder(client.clone(), "archive-bucket", Utf8Transformer)
            .upload_concurrency(0)
            .build()
            .unwrap_err(),
    );
    assert!(
        matches!(core, kinesis_connectors_core::Error::Config(_)),
        "{core:?}"
    );
    assert!(core.to_string().contains("\"archive-bucket\""), "{core}");
    assert!(
        S3Emitter::builder(client, BUCKET, Utf8Transformer)
            .server_side_encryption(ServerSideEncryption::AwsKms)
            .sse_kms_key_id("alias/k")
            .part_size(5 * MIB)
            .build()
            .is_ok()
    );
}

#[tokio::test]
async fn s3_emitter_passes_the_conformance_suite() {
    let bucket = Shared::default();
    let emitter = S3Emitter::builder(
        s3_client(&bucket_rules(&bucket, Vec::new())),
        BUCKET,
        Utf8Transformer,
    )
    .prefix("conformance")
    .gzip(true)
    .build()
    .unwrap();
    let counted = bucket.clone();
    let suite =
        EmitterConformance::new(&emitter, |i| format!("item-{i}")).delivered_count(move || {
            let bucket = counted.clone();
            Box::pin(async move {
                let bucket = bucket.lock().unwrap();
                bucket
                    .objects
                    .values()
                    .map(|o| lines(&gunzip(&o.body)).len())
                    .sum()
            })
        });
    let report = emitter_conformance::run_all(&suite, EmitterCapabilities::new()).await;
    assert!(report.is_success(), "{report}");
    assert!(bucket.lock().unwrap().objects.len() >= 6);
}

// ---------------------------------------------------------------------------
// S3ManifestEmitter
// ---------------------------------------------------------------------------

use aws_sdk_kinesis::operation::put_record::{PutRecordError, PutRecordOutput};

/// Manifest records put: (partition key, data).
type Manifest = Arc<Mutex<Vec<(String, String)>>>;

fn kinesis_client(manifest: &Manifest, failures: Vec<Rule>) -> aws_sdk_kinesis::Client {
    let m = manifest.clone();
    let mut rules = failures;
    rules.push(
        mock!(aws_sdk_kinesis::Client::put_record)
            .match_requests(|input| input.stream_name() == Some("manifest"))
            .then_compute_output(move |input| {
                let mut manifest = m.lock().unwrap();
                manifest.push((
                    input.partition_key().unwrap().to_owned(),
                    String::from_utf8(input.data().unwrap().as_ref().to_vec()).unwrap(),
                ));
                PutRecordOutput::builder()
                    .shard_id("shardId-000000000000")
                    .sequence_number(manifest.len().to_string())
                    .build()
                    .unwrap()
            }),
    );
    mock_client!(aws_sdk_kinesis, RuleMode::MatchAny, &rules, |c| {
        c.retry_config(aws_sdk_kinesis::config::retry::RetryConfig::disabled())
    })
}

#[tokio::test]
async fn manifest_records_follow_successful_uploads_only() {
    let bucket = Shared::default();
    let manifest = Manifest::default();
    let failing = mock!(aws_sdk_s3::Client::put_object)
        .match_requests(|input| input.key().is_some_and(|k| k.contains("-666-")))
        .then_error(|| PutObjectError::generic(coded("SlowDown", "slow down")));
    let s3 = S3Emitter::builder(
        s3_client(&bucket_rules(&bucket, vec![failing])),
        BUCKET,
        Utf8Transformer,
    )
    .build()
    .unwrap();
    let emitter =
        S3ManifestEmitter::new(s3, kinesis_client(&manifest, Vec::new()), "manifest").unwrap();

    let b = dated_batch(strings(3, "m"), 10);
    let key = emitter.s3().object_key(&b);
    assert!(emitter.emit(&b).await.unwrap().rejected.is_empty());
    assert_eq!(
        *manifest.lock().unwrap(),
        vec![(key.clone(), format!("s3://{BUCKET}/{key}"))]
    );
    assert!(bucket.lock().unwrap().objects.contains_key(&key));

    // Upload fails: no manifest record.
    let failing_batch = dated_batch(strings(3, "f"), 666);
    let err = emitter.emit(&failing_batch).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert_eq!(manifest.lock().unwrap().len(), 1);

    // Empty batch: neither object nor record.
    let outcome = emitter
        .emit(&batch::<String>(shard_context("s"), Vec::new(), 1))
        .await
        .unwrap();
    assert!(outcome.rejected.is_empty());
    assert_eq!(manifest.lock().unwrap().len(), 1);
    assert_eq!(bucket.lock().unwrap().objects.len(), 1);
}

#[tokio::test]
async fn manifest_failures_are_classified_and_name_the_object() {
    let throttled = mock!(aws_sdk_kinesis::Client::put_record).then_error(|| {
        PutRecordError::ProvisionedThroughputExceededException(
            aws_sdk_kinesis::types::error::ProvisionedThroughputExceededException::builder()
                .message("slow down")
                .meta(
                    aws_sdk_kinesis::error::ErrorMetadata::builder()
                        .code("ProvisionedThroughputExceededException")
                        .build(),
                )
                .build(),
        )
    });
    let missing = mock!(aws_sdk_kinesis::Client::put_record).then_error(|| {
        PutRecordError::generic(
            aws_sdk_kinesis::error::ErrorMetadata::builder()
                .code("ResourceNotFoundException")
                .message("Stream manifest not found")
                .build(),
        )
    });
    for (rule, retryable) in [(throttled, true), (missing, false)] {
        let bucket = Shared::default();
        let s3 = S3Emitter::builder(
            s3_client(&bucket_rules(&bucket, Vec::new())),
            BUCKET,
            Utf8Transformer,
        )
        .build()
        .unwrap();
        let emitter = S3ManifestEmitter::new(
            s3,
            kinesis_client(&Manifest::default(), vec![rule]),
            "manifest",
        )
        .unwrap();
        let b = dated_batch(strings(1, "x"), 1);
        let key = emitter.s3().object_key(&b);
        let err = emitter.upload(&b).await.unwrap_err();
        assert!(matches!(err, Error::Manifest { .. }), "{err}");
        assert_eq!(err.is_retryable(), retryable, "{err}");
        let text = err.to_string();
        assert!(text.contains(&format!("s3://{BUCKET}/{key}")), "{text}");
        assert!(text.contains("stream manifest"), "{text}");
        // The object itself was written.
        assert!(bucket.lock().unwrap().objects.contains_key(&key));
    }
    let err = S3ManifestEmitter::new(
        S3Emitter::builder(s3_client(&[]), BUCKET, Utf8Transformer)
            .build()
            .unwrap(),
        kinesis_client(&Manifest::default(), Vec::new()),
        " ",
    )
    .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
    let text = err.to_string();
    assert!(text.contains("manifest stream name is empty"), "{text}");
    assert!(text.contains(&format!("bucket {BUCKET:?}")), "{text}");

    // A key that leaves out an end of the batch could name two sets of
    // records; the second stage would skip the second as already loaded.
    let err = S3ManifestEmitter::new(
        S3Emitter::builder(s3_client(&[]), BUCKET, Utf8Transformer)
            .key_template("{prefix}/{shard}/{first_seq}")
            .build()
            .unwrap(),
        kinesis_client(&Manifest::default(), Vec::new()),
        "manifest",
    )
    .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("{first_seq}") && text.contains("{last_seq}") && text.contains(BUCKET),
        "{text}"
    );
}

#[tokio::test]
async fn manifest_emitter_passes_the_conformance_suite() {
    let bucket = Shared::default();
    let manifest = Manifest::default();
    let s3 = S3Emitter::builder(
        s3_client(&bucket_rules(&bucket, Vec::new())),
        BUCKET,
        Utf8Transformer,
    )
    .build()
    .unwrap();
    let emitter =
        S3ManifestEmitter::new(s3, kinesis_client(&manifest, Vec::new()), "manifest").unwrap();
    let (b, m) = (bucket.clone(), manifest.clone());
    // Delivered = lines of the distinct objects the manifest points at.
    let suite =
        EmitterConformance::new(&emitter, |i| format!("item-{i}")).delivered_count(move || {
            let (bucket, manifest) = (b.clone(), m.clone());
            Box::pin(async move {
                let bucket = bucket.lock().unwrap();
                let mut urls: Vec<String> = manifest
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|(_, u)| u.clone())
                    .collect();
                urls.sort();
                urls.dedup();
                urls.iter()
                    .map(|url| {
                        let key = url
                            .strip_prefix(&format!("s3://{BUCKET}/"))
                            .expect("a URL into the bucket");
                        lines(&bucket.objects[key].body).len()
                    })
                    .sum()
            })
        });
    let report = emitter_conformance::run_all(&suite, EmitterCapabilities::new()).await;
    assert!(report.is_success(), "{report}");
}
