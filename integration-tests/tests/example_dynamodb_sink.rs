//! Smoke test of the `dynamodb-sink` example on the local stack: the
//! producer fills a 2-shard stream, the sink (its shipped config file, names
//! made unique) creates the table keyed by the numeric `id` and writes one
//! item per event until every event is in the table, then stops gracefully
//! with its checkpoints in Redis.
//!
//! Run with `cargo xtask it example_dynamodb_sink`.

// Test code: helpers may unwrap and panic like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod examples_common;

use std::collections::BTreeMap;

use anyhow::{Context, Result, anyhow};
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::{AttributeValue, BillingMode};
use dynamodb_sink::Config;
use examples_common::{
    EVENTS, Running, assert_checkpointed, expected_ids, produce_events, shipped_config, use_stream,
};
use integration_tests::{dynamodb_client, sdk_config, unique_name};

type Item = std::collections::HashMap<String, AttributeValue>;

/// Every item of the table by its numeric `id`; empty while the table
/// does not exist yet.
async fn items(client: &aws_sdk_dynamodb::Client, table: &str) -> Result<BTreeMap<u64, Item>> {
    let mut pages = client
        .scan()
        .table_name(table)
        .consistent_read(true)
        .into_paginator()
        .send();
    let mut items = BTreeMap::new();
    while let Some(page) = pages.next().await {
        let page = match page {
            Ok(page) => page,
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                break;
            }
            Err(error) => return Err(anyhow!("Scan {table}: {}", DisplayErrorContext(error))),
        };
        for item in page.items() {
            let id = match item.get("id") {
                Some(AttributeValue::N(n)) => n.parse::<u64>().context("a numeric id")?,
                other => anyhow::bail!("an item without a numeric id: {other:?}"),
            };
            items.insert(id, item.clone());
        }
    }
    Ok(items)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_dynamodb_sink_writes_every_event() {
    let stream = unique_name("ex-dynamodb-sink");
    let table = unique_name("ex-dynamodb-sink");
    let application = unique_name("ex-dynamodb-sink-app");
    let events = produce_events(&stream).await;

    let mut config: Config = shipped_config("dynamodb-sink");
    use_stream(&mut config.consumer, &application, &stream);
    config.dynamodb.table = table.clone();
    assert!(config.dynamodb.create_table);
    assert_eq!(config.dynamodb.partition_key.name, "id");

    let aws = sdk_config().await;
    let mut running =
        Running::start(|cancel| async move { dynamodb_sink::run(&config, &aws, cancel).await });
    let client = dynamodb_client().await;
    let expected = expected_ids(&events, |_| true);
    let took = running
        .wait_until("every event in the table", || async {
            let items = items(&client, &table).await?;
            Ok((
                items.len() == expected.len(),
                format!("{} of {} items", items.len(), expected.len()),
            ))
        })
        .await;
    let report = running.stop("dynamodb-sink").await;

    let items = items(&client, &table).await.unwrap();
    assert_eq!(
        items.keys().copied().collect::<Vec<_>>(),
        (0..EVENTS).collect::<Vec<_>>()
    );
    for event in &events {
        let item = &items[&event.id];
        let s = |name: &str| match item.get(name) {
            Some(AttributeValue::S(s)) => s.clone(),
            other => panic!("{name} of item {}: {other:?}", event.id),
        };
        assert_eq!(s("user_id"), event.user_id);
        assert_eq!(s("kind"), event.kind);
        assert_eq!(s("payload"), event.payload);
        assert_eq!(
            item.get("amount_cents"),
            Some(&AttributeValue::N(event.amount_cents.to_string()))
        );
    }
    let description = client
        .describe_table()
        .table_name(&table)
        .send()
        .await
        .unwrap()
        .table
        .unwrap();
    assert_eq!(
        description
            .billing_mode_summary()
            .and_then(|b| b.billing_mode()),
        Some(&BillingMode::PayPerRequest),
        "the table was created on demand"
    );
    assert_eq!(report.records_emitted(), EVENTS);
    assert_checkpointed(&application, &stream, &report).await;
    eprintln!("dynamodb-sink: {EVENTS} items after {took:?}");
}
