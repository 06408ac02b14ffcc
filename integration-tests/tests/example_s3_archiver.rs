//! Smoke test of the `s3-archiver` example on the local stack: the
//! producer fills a 2-shard stream, the archiver (its shipped config file,
//! names made unique) creates the bucket and writes gzipped JSON lines until
//! every event is in S3, then stops gracefully with its checkpoints in
//! Redis.
//!
//! Run with `cargo xtask it example_s3_archiver`.

// Test code: helpers may unwrap and panic like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod examples_common;

use std::collections::BTreeMap;
use std::io::Read as _;

use anyhow::{Context, Result, anyhow};
use aws_sdk_s3::error::DisplayErrorContext;
use examples_common::{
    EVENTS, Running, assert_checkpointed, expected_ids, produce_events, shipped_config, use_stream,
};
use integration_tests::{s3_client, sdk_config, unique_name};
use producer::Event;
use s3_archiver::Config;

/// Every event in the objects under `prefix`, by id, with the keys read.
async fn archived(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
) -> Result<(BTreeMap<u64, Event>, Vec<String>)> {
    let mut events = BTreeMap::new();
    let mut keys = Vec::new();
    let mut pages = s3
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| anyhow!("ListObjectsV2 {bucket}: {}", DisplayErrorContext(e)));
        let page = match page {
            Ok(page) => page,
            // Until the archiver created the bucket.
            Err(error) if format!("{error:#}").contains("NoSuchBucket") => break,
            Err(error) => return Err(error),
        };
        for object in page.contents() {
            let key = object.key().context("object without a key")?.to_owned();
            let body = s3
                .get_object()
                .bucket(bucket)
                .key(&key)
                .send()
                .await
                .map_err(|e| anyhow!("GetObject {key}: {}", DisplayErrorContext(e)))?
                .body
                .collect()
                .await?
                .into_bytes();
            let mut text = String::new();
            flate2::read::GzDecoder::new(&body[..])
                .read_to_string(&mut text)
                .with_context(|| format!("gunzip {key}"))?;
            for line in text.lines() {
                let event: Event =
                    serde_json::from_str(line).with_context(|| format!("a line of {key}"))?;
                events.insert(event.id, event);
            }
            keys.push(key);
        }
    }
    Ok((events, keys))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_s3_archiver_archives_every_event() {
    let stream = unique_name("ex-s3-archiver");
    let bucket = unique_name("ex-s3-archiver");
    let application = unique_name("ex-s3-archiver-app");
    let events = produce_events(&stream).await;

    let mut config: Config = shipped_config("s3-archiver");
    use_stream(&mut config.consumer, &application, &stream);
    config.s3.bucket = bucket.clone();
    assert!(config.s3.gzip && config.s3.create_bucket);
    let prefix = format!("{}/{stream}/", config.s3.prefix);

    let aws = sdk_config().await;
    let mut running =
        Running::start(|cancel| async move { s3_archiver::run(&config, &aws, cancel).await });
    let s3 = s3_client().await;
    let expected = expected_ids(&events, |_| true);
    let took = running
        .wait_until("every event in S3", || async {
            let (archived, _) = archived(&s3, &bucket, &prefix).await?;
            Ok((
                archived.len() == expected.len(),
                format!("{} of {} events", archived.len(), expected.len()),
            ))
        })
        .await;
    let report = running.stop("s3-archiver").await;

    let (archived, keys) = archived(&s3, &bucket, &prefix).await.unwrap();
    assert_eq!(
        archived.keys().copied().collect::<Vec<_>>(),
        (0..EVENTS).collect::<Vec<_>>()
    );
    for event in &events {
        let got = &archived[&event.id];
        assert_eq!(
            (&got.user_id, &got.kind, got.amount_cents, &got.payload),
            (
                &event.user_id,
                &event.kind,
                event.amount_cents,
                &event.payload
            ),
            "event {} archived as sent",
            event.id
        );
    }
    assert!(
        keys.iter().all(|k| k.ends_with(".jsonl.gz")),
        "gzipped JSON-lines objects: {keys:#?}"
    );
    assert_eq!(report.records_emitted(), EVENTS);
    assert_checkpointed(&application, &stream, &report).await;
    eprintln!(
        "s3-archiver: {EVENTS} events in {} objects after {took:?}",
        keys.len()
    );
}
