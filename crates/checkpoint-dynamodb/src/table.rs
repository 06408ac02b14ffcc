//! The lease table itself: checking its key schema, creating it, waiting
//! until it is `ACTIVE`.

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    TableDescription, TableStatus,
};
use tokio::time::{Instant, sleep};
use tracing::info;

use crate::error::{DynamoDbCheckpointError, Result};
use crate::layout::attributes::LEASE_KEY;

/// How often the status is polled while waiting; doubles up to the cap.
const FIRST_POLL: Duration = Duration::from_millis(200);
const MAX_POLL: Duration = Duration::from_secs(2);

/// Checks a DynamoDB table name: 3 to 255 of `a-z A-Z 0-9 _ - .`.
pub(crate) fn check_table_name(name: &str) -> Result<()> {
    let valid_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if (3..=255).contains(&name.len()) && valid_chars {
        Ok(())
    } else {
        Err(DynamoDbCheckpointError::Config(format!(
            "`{name}` is not a valid DynamoDB table name (3 to 255 characters of a-z, A-Z, 0-9, `_`, `-`, `.`); \
             the table defaults to the application name, set another one with `.table(..)`"
        )))
    }
}

/// Fails unless the table's only key is the hash key `leaseKey` of type S.
pub(crate) fn check_key_schema(table: &str, description: &TableDescription) -> Result<()> {
    let keys = description.key_schema();
    let hash_only = keys.len() == 1
        && keys[0].attribute_name() == LEASE_KEY
        && keys[0].key_type() == &KeyType::Hash;
    let string_key = description
        .attribute_definitions()
        .iter()
        .any(|d| d.attribute_name() == LEASE_KEY && d.attribute_type() == &ScalarAttributeType::S);
    if hash_only && string_key {
        return Ok(());
    }
    let found: Vec<String> = keys
        .iter()
        .map(|k| format!("{} ({})", k.attribute_name(), k.key_type().as_str()))
        .collect();
    Err(DynamoDbCheckpointError::Config(format!(
        "table `{table}` is not a lease table: its key must be the hash key `{LEASE_KEY}` of type S \
         (the Kinesis Client Library's layout), found {found:?}"
    )))
}

/// The table's description, `None` if it does not exist.
async fn describe(client: &Client, table: &str) -> Result<Option<TableDescription>> {
    match client.describe_table().table_name(table).send().await {
        Ok(output) => Ok(output.table),
        Err(error) => match DynamoDbCheckpointError::request("DescribeTable", table, error) {
            DynamoDbCheckpointError::TableNotFound { .. } => Ok(None),
            other => Err(other),
        },
    }
}

/// Makes sure the table exists with the lease-table key schema and is usable
/// (`ACTIVE` or `UPDATING`); creates it (on-demand billing) when asked to.
pub(crate) async fn ensure_table(
    client: &Client,
    table: &str,
    create_if_missing: bool,
    ready_timeout: Duration,
) -> Result<()> {
    let started = Instant::now();
    let mut poll = FIRST_POLL;
    let mut created = false;
    loop {
        let status = match describe(client, table).await? {
            Some(description) => {
                check_key_schema(table, &description)?;
                match description.table_status() {
                    Some(TableStatus::Active | TableStatus::Updating) => return Ok(()),
                    other => other.map_or_else(|| "UNKNOWN".to_owned(), |s| s.as_str().to_owned()),
                }
            }
            None if !create_if_missing => {
                return Err(DynamoDbCheckpointError::TableNotFound {
                    table: table.to_owned(),
                });
            }
            None if !created => {
                create(client, table).await?;
                created = true;
                "CREATING".to_owned()
            }
            // Created, but not visible yet (eventually consistent control plane).
            None => "CREATING".to_owned(),
        };
        let waited = started.elapsed();
        if waited >= ready_timeout {
            return Err(DynamoDbCheckpointError::TableNotActive {
                table: table.to_owned(),
                status,
                waited,
            });
        }
        sleep(poll.min(ready_timeout - waited)).await;
        poll = (poll * 2).min(MAX_POLL);
    }
}

/// Creates the lease table with on-demand billing; another worker creating
/// it at the same time is fine.
async fn create(client: &Client, table: &str) -> Result<()> {
    let definition = AttributeDefinition::builder()
        .attribute_name(LEASE_KEY)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .map_err(|e| DynamoDbCheckpointError::Config(e.to_string()))?;
    let key = KeySchemaElement::builder()
        .attribute_name(LEASE_KEY)
        .key_type(KeyType::Hash)
        .build()
        .map_err(|e| DynamoDbCheckpointError::Config(e.to_string()))?;
    let result = client
        .create_table()
        .table_name(table)
        .attribute_definitions(definition)
        .key_schema(key)
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await;
    match result {
        Ok(_) => {
            info!(table, "created the lease table");
            Ok(())
        }
        Err(error) => {
            let in_use = error
                .as_service_error()
                .is_some_and(|e| e.is_resource_in_use_exception());
            if in_use {
                // Someone else is creating it: wait for it like for ours.
                Ok(())
            } else {
                Err(DynamoDbCheckpointError::request(
                    "CreateTable",
                    table,
                    error,
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_checked() {
        assert!(check_table_name("my-app").is_ok());
        assert!(check_table_name("My_App.v2").is_ok());
        assert!(check_table_name("ab").is_err());
        assert!(check_table_name("my app").is_err());
        assert!(check_table_name(&"x".repeat(256)).is_err());
    }

    fn description(
        key: &str,
        key_type: KeyType,
        attribute: ScalarAttributeType,
    ) -> TableDescription {
        TableDescription::builder()
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(key)
                    .key_type(key_type)
                    .build()
                    .unwrap(),
            )
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(key)
                    .attribute_type(attribute)
                    .build()
                    .unwrap(),
            )
            .build()
    }

    #[test]
    fn only_lease_tables_are_accepted() {
        let good = description("leaseKey", KeyType::Hash, ScalarAttributeType::S);
        assert!(check_key_schema("t", &good).is_ok());
        let other_key = description("id", KeyType::Hash, ScalarAttributeType::S);
        let error = check_key_schema("t", &other_key)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            error.contains("leaseKey") && error.contains("id (HASH)"),
            "{error}"
        );
        let numeric = description("leaseKey", KeyType::Hash, ScalarAttributeType::N);
        assert!(check_key_schema("t", &numeric).is_err());
    }
}
