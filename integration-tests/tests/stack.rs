//! Proves the local stack: each service answers real requests through the
//! clients the connectors use. Run with `cargo xtask it`; without the stack
//! these tests fail with a message saying how to start it.

use std::collections::BTreeSet;

use anyhow::{Context, Result, ensure};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType, TableStatus,
};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::ShardIteratorType;
use aws_sdk_s3::primitives::ByteStream;
use integration_tests::{
    create_stream, database_url, dynamodb_client, kinesis_client, redis_url, s3_client, stack,
    unique_name,
};
use redis::AsyncTypedCommands;
use sqlx::postgres::PgPoolOptions;

#[tokio::test]
async fn kinesis_two_shards_put_and_read_back() -> Result<()> {
    let client = kinesis_client().await;
    let stream = unique_name("it-stream");
    create_stream(&client, &stream, 2).await?;

    let mut sent = BTreeSet::new();
    for i in 0..20 {
        let data = format!("record-{i}");
        client
            .put_record()
            .stream_name(&stream)
            .partition_key(format!("key-{i}"))
            .data(Blob::new(data.clone()))
            .send()
            .await
            .with_context(|| format!("PutRecord {i}"))?;
        sent.insert(data);
    }

    let shards = client
        .list_shards()
        .stream_name(&stream)
        .send()
        .await
        .context("ListShards")?;
    ensure!(
        shards.shards().len() == 2,
        "expected 2 shards, got {}",
        shards.shards().len()
    );

    let mut received = BTreeSet::new();
    let mut shards_with_records = 0;
    for shard in shards.shards() {
        let mut iterator = client
            .get_shard_iterator()
            .stream_name(&stream)
            .shard_id(shard.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .context("GetShardIterator")?
            .shard_iterator()
            .map(str::to_owned);
        let mut from_this_shard = 0;
        // Read until an empty page: the records are all written already.
        for _ in 0..20 {
            let Some(it) = iterator.take() else { break };
            let page = client
                .get_records()
                .shard_iterator(it)
                .send()
                .await
                .context("GetRecords")?;
            for record in page.records() {
                received.insert(String::from_utf8(record.data().as_ref().to_vec())?);
                from_this_shard += 1;
            }
            if page.records().is_empty() {
                break;
            }
            iterator = page.next_shard_iterator().map(str::to_owned);
        }
        if from_this_shard > 0 {
            shards_with_records += 1;
        }
    }
    ensure!(received == sent, "read back {received:?}, sent {sent:?}");
    ensure!(
        shards_with_records == 2,
        "20 keys should land on both shards"
    );

    client
        .delete_stream()
        .stream_name(&stream)
        .send()
        .await
        .context("DeleteStream")?;
    Ok(())
}

#[tokio::test]
async fn s3_put_and_get_object() -> Result<()> {
    let client = s3_client().await;
    let bucket = unique_name("it-bucket");
    client
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .context("CreateBucket")?;
    let body = b"hello from the integration tests".to_vec();
    client
        .put_object()
        .bucket(&bucket)
        .key("dir/object.txt")
        .body(ByteStream::from(body.clone()))
        .send()
        .await
        .context("PutObject")?;
    let got = client
        .get_object()
        .bucket(&bucket)
        .key("dir/object.txt")
        .send()
        .await
        .context("GetObject")?;
    let bytes = got
        .body
        .collect()
        .await
        .context("reading the object")?
        .into_bytes();
    ensure!(
        bytes.as_ref() == body.as_slice(),
        "object content differs: {bytes:?}"
    );
    Ok(())
}

#[tokio::test]
async fn dynamodb_write_and_read_item() -> Result<()> {
    let client = dynamodb_client().await;
    let table = unique_name("it-table");
    client
        .create_table()
        .table_name(&table)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()?,
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()?,
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .context("CreateTable")?;
    for _ in 0..100 {
        let described = client
            .describe_table()
            .table_name(&table)
            .send()
            .await
            .context("DescribeTable")?;
        if described.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    client
        .put_item()
        .table_name(&table)
        .item("pk", AttributeValue::S("shard-0001".to_owned()))
        .item(
            "sequence",
            AttributeValue::S(
                "49590338271490256608559692538361571095921575989136588898".to_owned(),
            ),
        )
        .send()
        .await
        .context("PutItem")?;
    let got = client
        .get_item()
        .table_name(&table)
        .key("pk", AttributeValue::S("shard-0001".to_owned()))
        .consistent_read(true)
        .send()
        .await
        .context("GetItem")?;
    let item = got.item().context("the item was not found")?;
    ensure!(
        item.get("sequence")
            .and_then(|v| v.as_s().ok())
            .map(String::as_str)
            == Some("49590338271490256608559692538361571095921575989136588898"),
        "unexpected item {item:?}"
    );
    Ok(())
}

#[tokio::test]
async fn postgres_runs_sql() -> Result<()> {
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(&database_url())
        .await
        .context("connecting to PostgreSQL")?;
    let table = unique_name("it_sql").replace('-', "_");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {table} (id BIGINT PRIMARY KEY, body TEXT NOT NULL)"
    )))
    .execute(&pool)
    .await
    .context("CREATE TABLE")?;
    let mut tx = pool.begin().await?;
    for id in 1..=3_i64 {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {table} (id, body) VALUES ($1, $2)"
        )))
        .bind(id)
        .bind(format!("row {id}"))
        .execute(&mut *tx)
        .await
        .context("INSERT")?;
    }
    tx.commit().await?;
    let (count, last): (i64, String) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT count(*), max(body) FROM {table}"
    )))
    .fetch_one(&pool)
    .await
    .context("SELECT")?;
    ensure!(count == 3 && last == "row 3", "got ({count}, {last})");
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE {table}")))
        .execute(&pool)
        .await?;
    pool.close().await;
    Ok(())
}

#[tokio::test]
async fn redis_set_and_get() -> Result<()> {
    let client = redis::Client::open(redis_url()).context("parsing REDIS_URL")?;
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .context("connecting to redis")?;
    let key = unique_name("it-key");
    con.set(&key, "checkpoint-42").await.context("SET")?;
    let value = con.get(&key).await.context("GET")?;
    ensure!(
        value.as_deref() == Some("checkpoint-42"),
        "GET returned {value:?}"
    );
    con.del(&key).await.context("DEL")?;
    Ok(())
}

#[test]
fn the_stack_environment_is_complete() {
    let env = stack();
    assert!(
        env.kind == "embedded" || env.kind == "localstack",
        "KC_STACK should be embedded or localstack, got {}",
        env.kind
    );
}
