//! Smoke test of the `stream-to-stream` example on the local stack: the
//! producer fills a 2-shard stream, the forwarder (its shipped config file,
//! names made unique, the filter keeping `cart` and `purchase` events)
//! creates the target stream and forwards until every kept event is there,
//! byte for byte and with its partition key, then stops gracefully with its
//! checkpoints in Redis. No other event reaches the target.
//!
//! Run with `cargo xtask it example_stream_to_stream`.

// Test code: helpers may unwrap and panic like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod examples_common;

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use examples_common::{
    EVENTS, Running, assert_checkpointed, expected_ids, produce_events, shipped_config, use_stream,
};
use integration_tests::records::try_read_stream;
use integration_tests::{kinesis_client, sdk_config, unique_name};
use producer::Event;
use stream_to_stream::Config;

/// One record of the target stream.
#[derive(Debug)]
struct Forwarded {
    partition_key: String,
    event: Event,
}

/// Every record of every shard of `stream` from `TRIM_HORIZON`, by event
/// id (a duplicate is an error); empty while the stream does not exist.
async fn read_stream(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
) -> Result<BTreeMap<u64, Forwarded>> {
    let mut seen = BTreeMap::new();
    for record in try_read_stream(client, stream).await?.unwrap_or_default() {
        let event: Event = serde_json::from_slice(record.data().as_ref())
            .context("a forwarded record is not an event")?;
        let forwarded = Forwarded {
            partition_key: record.partition_key().unwrap_or_default().to_owned(),
            event,
        };
        if let Some(earlier) = seen.insert(forwarded.event.id, forwarded) {
            bail!("event {} forwarded twice", earlier.event.id);
        }
    }
    Ok(seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_stream_to_stream_forwards_the_kept_kinds() {
    let source = unique_name("ex-s2s-source");
    let target = unique_name("ex-s2s-target");
    let application = unique_name("ex-s2s-app");
    let events = produce_events(&source).await;

    let mut config: Config = shipped_config("stream-to-stream");
    use_stream(&mut config.consumer, &application, &source);
    config.target.stream = target.clone();
    assert!(config.target.create_shards.is_some());
    let filter = config.filter.clone().expect("the shipped config filters");
    assert_eq!(filter.field, "kind");
    let expected = expected_ids(&events, |e| filter.keep.contains(&e.kind));
    assert!(
        !expected.is_empty() && expected.len() < events.len(),
        "the filter keeps some events and drops others"
    );

    let aws = sdk_config().await;
    let mut running =
        Running::start(|cancel| async move { stream_to_stream::run(&config, &aws, cancel).await });
    let kinesis = kinesis_client().await;
    let took = running
        .wait_until("every kept event in the target stream", || async {
            let seen = read_stream(&kinesis, &target).await?;
            Ok((
                seen.len() >= expected.len(),
                format!("{} of {} events", seen.len(), expected.len()),
            ))
        })
        .await;
    let report = running.stop("stream-to-stream").await;

    let seen = read_stream(&kinesis, &target).await.unwrap();
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        expected.iter().copied().collect::<Vec<_>>(),
        "exactly the kept events"
    );
    for event in events.iter().filter(|e| expected.contains(&e.id)) {
        let forwarded = &seen[&event.id];
        let got = &forwarded.event;
        // `created_at` is the time of sending, not part of the id's event.
        assert_eq!(
            (&got.user_id, &got.kind, got.amount_cents, &got.payload),
            (
                &event.user_id,
                &event.kind,
                event.amount_cents,
                &event.payload
            ),
            "event {} forwarded as sent",
            event.id
        );
        assert_eq!(
            forwarded.partition_key, event.user_id,
            "the source's partition key"
        );
    }
    assert_eq!(report.records_emitted(), expected.len() as u64);
    let filtered = report.totals().records_filtered;
    assert_eq!(filtered, EVENTS - expected.len() as u64);
    assert_checkpointed(&application, &source, &report).await;
    eprintln!(
        "stream-to-stream: {} of {EVENTS} events forwarded after {took:?}",
        expected.len()
    );
}
