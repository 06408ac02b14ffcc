//! Writes the JSON events of a Kinesis stream into a DynamoDB table: each
//! record is one item (the JSON object's fields become attributes), keyed
//! by the attributes named in the configuration. Writes are full puts under
//! the item's key, so a batch replayed after a restart creates no extra
//! items. Checkpoints go to the store configured in `[consumer.checkpoints]`
//! (Redis by default), written only after the batch is in the table.
//!
//! The sink is generic: items are `serde_json::Value`s, so any stream of
//! JSON objects works (the producer's events have a numeric `id`). A record
//! that is not a JSON object, or whose key attributes are missing or of the
//! wrong type, is logged, counted and skipped on its own; the rest of its
//! batch is written.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use aws_config::SdkConfig;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType, TableDescription, TableStatus,
};
use example_support::ConsumerSettings;
use kinesis_connectors_core::{
    BoxError, CancellationToken, Emitter, JsonTransformer, Pipeline, StreamReport,
};
use kinesis_connectors_dynamodb::{DynamoDbEmitter, Item};
use serde::Deserialize;
use serde_json::Value;
use tracing::info;

/// How long a new table may take to become `ACTIVE`.
const TABLE_ACTIVE_TIMEOUT: Duration = Duration::from_secs(300);

/// The sink's configuration file: the consumer, then the table.
///
/// ```toml
/// [consumer]
/// application = "dynamodb-sink"   # checkpoint namespace
/// stream = "demo-events"
///
/// [consumer.checkpoints]
/// store = "redis"                 # "redis", "dynamodb" or "memory"
///
/// [dynamodb]
/// table = "demo-events"
/// partition_key = { name = "id", type = "number" }
/// # sort_key = { name = "created_at", type = "string" }
/// create_table = true             # on-demand billing; waits until ACTIVE
/// max_in_flight = 4               # BatchWriteItem requests of one batch at once
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Which stream, where to start, batch limits, checkpoint store.
    pub consumer: ConsumerSettings,
    /// Where the items go.
    pub dynamodb: DynamoDbSettings,
}

/// The `[dynamodb]` table: the target table and its key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DynamoDbSettings {
    /// The table (a name, or an ARN when the table exists).
    pub table: String,
    /// The table's partition key.
    pub partition_key: KeyAttribute,
    /// The table's sort key, if it has one.
    pub sort_key: Option<KeyAttribute>,
    /// Create the table (on-demand billing) when it does not exist, and wait
    /// until it is `ACTIVE`; otherwise a missing table is an error.
    #[serde(default)]
    pub create_table: bool,
    /// `BatchWriteItem` requests of one batch in flight at once.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
}

fn default_max_in_flight() -> usize {
    4
}

/// A key attribute: its name and type.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyAttribute {
    /// The attribute name, a field of every JSON event.
    pub name: String,
    /// Its type (default `string`).
    #[serde(rename = "type", default)]
    pub attribute_type: KeyAttributeType,
}

/// The type of a key attribute. Binary keys cannot come from JSON.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyAttributeType {
    /// A JSON string (DynamoDB `S`).
    #[default]
    #[serde(alias = "S")]
    String,
    /// A JSON number (DynamoDB `N`).
    #[serde(alias = "N")]
    Number,
}

impl KeyAttributeType {
    fn scalar(self) -> ScalarAttributeType {
        match self {
            Self::String => ScalarAttributeType::S,
            Self::Number => ScalarAttributeType::N,
        }
    }

    fn matches(self, value: &AttributeValue) -> bool {
        matches!(
            (self, value),
            (Self::String, AttributeValue::S(_)) | (Self::Number, AttributeValue::N(_))
        )
    }

    fn name(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Number => "number",
        }
    }
}

impl DynamoDbSettings {
    /// The key attributes: partition key, then sort key.
    pub fn keys(&self) -> Vec<KeyAttribute> {
        std::iter::once(self.partition_key.clone())
            .chain(self.sort_key.clone())
            .collect()
    }
}

impl Config {
    /// Refuses settings that cannot work, naming the field.
    pub fn validate(&self) -> Result<()> {
        self.consumer.validate("consumer")?;
        let table = &self.dynamodb.table;
        if table.starts_with("arn:") {
            ensure!(
                table.contains(":table/"),
                "dynamodb.table: the ARN {table:?} is not of the form arn:…:table/NAME"
            );
            ensure!(
                !self.dynamodb.create_table,
                "dynamodb.create_table needs a table name, not an ARN"
            );
        } else {
            ensure!(
                (3..=255).contains(&table.len())
                    && table
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')),
                "dynamodb.table must be 3 to 255 characters of a-z, A-Z, 0-9, `_`, `-` and `.`, got {table:?}"
            );
        }
        ensure!(
            !self.dynamodb.partition_key.name.is_empty(),
            "dynamodb.partition_key.name must not be empty"
        );
        if let Some(sort_key) = &self.dynamodb.sort_key {
            ensure!(
                !sort_key.name.is_empty(),
                "dynamodb.sort_key.name must not be empty"
            );
            ensure!(
                sort_key.name != self.dynamodb.partition_key.name,
                "dynamodb.sort_key must differ from the partition key ({})",
                sort_key.name
            );
        }
        ensure!(
            self.dynamodb.max_in_flight >= 1,
            "dynamodb.max_in_flight must be at least 1"
        );
        Ok(())
    }
}

/// Converts one JSON event into an item, checking its key attributes.
/// An error rejects this item only.
pub fn to_item(event: &Value, keys: &[KeyAttribute]) -> std::result::Result<Item, BoxError> {
    if !event.is_object() {
        return Err("the event is not a JSON object".into());
    }
    let item: Item = serde_dynamo::aws_sdk_dynamodb_1::to_item(event)?;
    for key in keys {
        match item.get(&key.name) {
            Some(value) if key.attribute_type.matches(value) => {}
            Some(_) => {
                return Err(format!(
                    "key attribute {:?} is not a {}",
                    key.name,
                    key.attribute_type.name()
                )
                .into());
            }
            None => return Err(format!("key attribute {:?} is missing", key.name).into()),
        }
    }
    Ok(item)
}

/// Fails unless `table` exists with the configured key; with `create_table`,
/// creates it when missing (on-demand billing) and waits until it is
/// `ACTIVE`.
pub async fn ensure_table(
    client: &aws_sdk_dynamodb::Client,
    settings: &DynamoDbSettings,
) -> Result<()> {
    let table = &settings.table;
    let keys = settings.keys();
    match client.describe_table().table_name(table).send().await {
        Ok(output) => {
            let description = output
                .table
                .with_context(|| format!("DescribeTable {table} returned no table"))?;
            check_key_schema(table, &description, &keys)?;
            return wait_active(client, table).await;
        }
        Err(error)
            if error
                .as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception()) => {}
        Err(error) => bail!(
            "cannot describe the table {table}: {}",
            DisplayErrorContext(error)
        ),
    }
    if !settings.create_table {
        bail!("the table {table} does not exist: create it, or set dynamodb.create_table = true");
    }
    info!(table, "creating the table (on-demand billing)");
    let mut request = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest);
    for (key, key_type) in keys.iter().zip([KeyType::Hash, KeyType::Range]) {
        request = request
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(&key.name)
                    .attribute_type(key.attribute_type.scalar())
                    .build()?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(&key.name)
                    .key_type(key_type)
                    .build()?,
            );
    }
    match request.send().await {
        Ok(_) => {}
        // Another worker created it in the meantime.
        Err(error)
            if error
                .as_service_error()
                .is_some_and(|e| e.is_resource_in_use_exception()) => {}
        Err(error) => bail!(
            "cannot create the table {table}: {}",
            DisplayErrorContext(error)
        ),
    }
    wait_active(client, table).await
}

/// Fails unless the table's key is the configured one.
fn check_key_schema(
    table: &str,
    description: &TableDescription,
    keys: &[KeyAttribute],
) -> Result<()> {
    let actual: Vec<&str> = description
        .key_schema()
        .iter()
        .map(|element| element.attribute_name())
        .collect();
    let expected: Vec<&str> = keys.iter().map(|k| k.name.as_str()).collect();
    ensure!(
        actual == expected,
        "the table {table} is keyed by {actual:?}, but dynamodb.partition_key / sort_key say {expected:?}"
    );
    for key in keys {
        let defined = description
            .attribute_definitions()
            .iter()
            .find(|d| d.attribute_name() == key.name)
            .map(|d| d.attribute_type());
        if let Some(scalar) = defined {
            ensure!(
                *scalar == key.attribute_type.scalar(),
                "the table {table}'s key attribute {:?} is of type {}, but the configuration says {}",
                key.name,
                scalar.as_str(),
                key.attribute_type.name()
            );
        }
    }
    Ok(())
}

/// Waits until `table` is `ACTIVE`.
async fn wait_active(client: &aws_sdk_dynamodb::Client, table: &str) -> Result<()> {
    let deadline = Instant::now() + TABLE_ACTIVE_TIMEOUT;
    loop {
        let status = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot describe the table {table}: {}",
                    DisplayErrorContext(e)
                )
            })?
            .table
            .and_then(|t| t.table_status);
        if status == Some(TableStatus::Active) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the table {table} is not ACTIVE after {} s (status {status:?})",
                TABLE_ACTIVE_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Writes the events of `config.consumer.stream` into the table until
/// `cancel` fires, then flushes, writes and checkpoints what was read and
/// returns the consumer's report.
pub async fn run(
    config: &Config,
    aws: &SdkConfig,
    cancel: CancellationToken,
) -> Result<StreamReport> {
    config.validate()?;
    let settings = &config.consumer;
    let client = aws_sdk_dynamodb::Client::new(aws);
    ensure_table(&client, &config.dynamodb).await?;

    let keys = config.dynamodb.keys();
    let key_names: Vec<String> = keys.iter().map(|k| k.name.clone()).collect();
    let emitter = Arc::new(
        DynamoDbEmitter::<Value>::builder(client, &config.dynamodb.table)
            .key_attributes(key_names)
            .max_in_flight(config.dynamodb.max_in_flight)
            .item_mapper(move |event: &Value| to_item(event, &keys))
            .build()
            .context("bad [dynamodb] settings")?,
    );
    let pipeline_emitter: Arc<dyn Emitter<Value>> = emitter.clone();
    let consumer = settings
        .consumer("consumer", aws, move |limits| {
            Pipeline::builder(
                JsonTransformer::<Value>::new(),
                Arc::clone(&pipeline_emitter),
            )
            .buffer_limits(limits)
            .build()
        })
        .await?;

    info!(
        stream = settings.stream,
        table = config.dynamodb.table,
        "writing events into DynamoDB"
    );
    let report = consumer.run(cancel).await?;
    let stats = emitter.stats();
    info!(
        items_written = stats.items_written,
        duplicates_collapsed = stats.duplicates_collapsed,
        items_rejected = stats.items_rejected,
        requests_retried = stats.requests_retried,
        "sink stopped"
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use example_support::{StoreKind, load_config, parse_config};
    use serde_json::json;

    const MINIMAL: &str = "[consumer]\napplication = \"a\"\nstream = \"s\"\n\
        [dynamodb]\ntable = \"events\"\npartition_key = { name = \"id\" }\n";

    #[test]
    fn the_shipped_config_file_is_valid() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/dynamodb-sink.toml");
        let config: Config = load_config(&path).unwrap();
        config.validate().unwrap();
        assert_eq!(config.consumer.checkpoints.store, StoreKind::Redis);
        assert_eq!(
            config.dynamodb.partition_key,
            KeyAttribute {
                name: "id".into(),
                attribute_type: KeyAttributeType::Number
            }
        );
        assert!(config.dynamodb.create_table);
    }

    #[test]
    fn defaults_and_unknown_keys() {
        let config: Config = parse_config(MINIMAL).unwrap();
        config.validate().unwrap();
        assert_eq!(
            config.dynamodb.partition_key.attribute_type,
            KeyAttributeType::String
        );
        assert_eq!(config.dynamodb.sort_key, None);
        assert!(!config.dynamodb.create_table);
        assert_eq!(config.dynamodb.max_in_flight, 4);

        let error = parse_config::<Config>(&format!("{MINIMAL}create_tabel = true\n")).unwrap_err();
        assert!(format!("{error:#}").contains("create_tabel"), "{error:#}");
        let error = parse_config::<Config>(
            &MINIMAL.replace("{ name = \"id\" }", "{ name = \"id\", type = \"bool\" }"),
        )
        .unwrap_err();
        assert!(format!("{error:#}").contains("bool"), "{error:#}");
        let config: Config =
            parse_config(&MINIMAL.replace("{ name = \"id\" }", "{ name = \"id\", type = \"N\" }"))
                .unwrap();
        assert_eq!(
            config.dynamodb.partition_key.attribute_type,
            KeyAttributeType::Number
        );
    }

    #[test]
    fn bad_settings_are_named() {
        let config: Config = parse_config(MINIMAL).unwrap();
        let check = |edit: &dyn Fn(&mut Config), field: &str| {
            let mut bad = config.clone();
            edit(&mut bad);
            let error = bad.validate().unwrap_err().to_string();
            assert!(error.contains(field), "{field}: {error}");
        };
        check(&|c| c.dynamodb.table = "a b".into(), "dynamodb.table");
        check(&|c| c.dynamodb.table = "ab".into(), "dynamodb.table");
        check(
            &|c| {
                c.dynamodb.table = "arn:aws:dynamodb:us-east-1:1:table/t".into();
                c.dynamodb.create_table = true;
            },
            "dynamodb.create_table",
        );
        check(&|c| c.dynamodb.partition_key.name.clear(), "partition_key");
        check(
            &|c| {
                c.dynamodb.sort_key = Some(KeyAttribute {
                    name: "id".into(),
                    attribute_type: KeyAttributeType::String,
                });
            },
            "dynamodb.sort_key",
        );
        check(&|c| c.dynamodb.max_in_flight = 0, "max_in_flight");
        check(&|c| c.consumer.application.clear(), "consumer.application");
    }

    #[test]
    fn events_become_items_and_bad_keys_are_rejected() {
        let keys = [
            KeyAttribute {
                name: "id".into(),
                attribute_type: KeyAttributeType::Number,
            },
            KeyAttribute {
                name: "user".into(),
                attribute_type: KeyAttributeType::String,
            },
        ];
        let item = to_item(
            &json!({"id": 7, "user": "u", "tags": ["a"], "n": 1.5}),
            &keys,
        )
        .unwrap();
        assert_eq!(item["id"], AttributeValue::N("7".into()));
        assert_eq!(item["user"], AttributeValue::S("u".into()));
        assert_eq!(item.len(), 4);

        let reason = |event: Value| to_item(&event, &keys).unwrap_err().to_string();
        assert!(reason(json!({"id": "7", "user": "u"})).contains("\"id\" is not a number"));
        assert!(reason(json!({"id": 7})).contains("\"user\" is missing"));
        assert!(reason(json!([1, 2])).contains("not a JSON object"));
        assert!(reason(json!("text")).contains("not a JSON object"));
    }
}
