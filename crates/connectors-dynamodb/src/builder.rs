//! `DynamoDbEmitterBuilder`: the emitter's configuration, checked once.

use std::fmt;
use std::sync::atomic::AtomicBool;

use aws_sdk_dynamodb::Client;
use kinesis_connectors_core::{BoxError, RetryPolicy};

use crate::conditional::ConditionalPut;
use crate::emitter::{Counters, DEFAULT_MAX_IN_FLIGHT, DEFAULT_RETRY, DynamoDbEmitter, ItemMapper};
use crate::error::{DynamoDbError, Result};
use crate::item::{Item, KeySchema};

/// Builds a [`DynamoDbEmitter`]; see [`DynamoDbEmitter::builder`].
pub struct DynamoDbEmitterBuilder<T> {
    client: Client,
    table: String,
    key_attributes: Vec<String>,
    max_in_flight: usize,
    retry: RetryPolicy,
    mapper: Box<ItemMapper<T>>,
    conditional: Option<ConditionalPut>,
}

impl<T> fmt::Debug for DynamoDbEmitterBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DynamoDbEmitterBuilder")
            .field("table", &self.table)
            .field("key_attributes", &self.key_attributes)
            .field("max_in_flight", &self.max_in_flight)
            .field("retry", &self.retry)
            .field("conditional", &self.conditional)
            .finish_non_exhaustive()
    }
}

impl<T> DynamoDbEmitterBuilder<T> {
    pub(crate) fn new(client: Client, table: String, mapper: Box<ItemMapper<T>>) -> Self {
        Self {
            client,
            table,
            key_attributes: Vec::new(),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            retry: DEFAULT_RETRY,
            mapper,
            conditional: None,
        }
    }

    /// The table's key attributes: its partition key, then its sort key if
    /// it has one (required). Used to collapse duplicate keys within a batch
    /// and to reject items whose key DynamoDB would refuse.
    pub fn key_attributes<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.key_attributes = names.into_iter().map(Into::into).collect();
        self
    }

    /// How many requests of one batch may be in flight at once (default 4,
    /// at least 1): `BatchWriteItem` chunks, or `PutItem` calls in
    /// conditional mode. A chunk's resends of unprocessed items, its retries
    /// and the one-item sends that find an item DynamoDB refuses stay within
    /// its slot.
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n;
        self
    }

    /// How each request is retried after `UnprocessedItems`, throttling or a
    /// transient failure ([`DEFAULT_RETRY`] by default). `max_attempts`
    /// counts every send of a request; when it runs out the batch fails with
    /// a retryable error and the consumer's own retry policy takes over.
    /// These retries come on top of the SDK client's retry configuration.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Converts items with `mapper` instead of the default. An error rejects
    /// that item only.
    pub fn item_mapper(
        mut self,
        mapper: impl Fn(&T) -> std::result::Result<Item, BoxError> + Send + Sync + 'static,
    ) -> Self {
        self.mapper = Box::new(mapper);
        self
    }

    /// Writes each item with a conditional `PutItem` instead of
    /// `BatchWriteItem`; see [`ConditionalPut`] for what it costs.
    pub fn conditional_put(mut self, condition: ConditionalPut) -> Self {
        self.conditional = Some(condition);
        self
    }

    /// Checks the configuration and builds the emitter.
    ///
    /// # Errors
    ///
    /// [`DynamoDbError::Config`] naming the problem: a table name DynamoDB
    /// would refuse, key attributes not set (or more than two, empty,
    /// repeated), `max_in_flight` of 0, an invalid retry policy, or a
    /// condition with placeholders that are malformed or unused.
    pub fn build(self) -> Result<DynamoDbEmitter<T>> {
        validate_table_name(&self.table)?;
        let keys = KeySchema::new(self.key_attributes)?;
        if self.max_in_flight == 0 {
            return Err(DynamoDbError::Config(
                "max_in_flight must be at least 1".into(),
            ));
        }
        if let Err(error) = self.retry.validate() {
            return Err(DynamoDbError::Config(match error {
                kinesis_connectors_core::Error::Config(message) => message,
                other => other.to_string(),
            }));
        }
        if let Some(condition) = &self.conditional {
            condition.validate()?;
        }
        Ok(DynamoDbEmitter {
            client: self.client,
            table: self.table,
            keys,
            max_in_flight: self.max_in_flight,
            retry: self.retry,
            mapper: self.mapper,
            conditional: self.conditional,
            counters: Counters::default(),
            table_accepted_writes: AtomicBool::new(false),
        })
    }
}

/// A table name (3–255 of `a-z A-Z 0-9 _ - .`) or a table ARN.
fn validate_table_name(table: &str) -> Result<()> {
    if table.starts_with("arn:") {
        if table.len() <= 1024 && table.contains(":table/") {
            return Ok(());
        }
        return Err(DynamoDbError::Config(format!(
            "table ARN {table:?} is not of the form arn:…:table/NAME (at most 1024 characters)"
        )));
    }
    let valid_chars = table
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !(3..=255).contains(&table.len()) || !valid_chars {
        return Err(DynamoDbError::Config(format!(
            "table name {table:?} must be 3 to 255 characters of a-z, A-Z, 0-9, `_`, `-` and `.`"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_checked() {
        assert!(validate_table_name("orders").is_ok());
        assert!(validate_table_name("my.table-1_x").is_ok());
        assert!(validate_table_name("ab").is_err());
        assert!(validate_table_name("has space").is_err());
        assert!(validate_table_name(&"x".repeat(256)).is_err());
        assert!(
            validate_table_name("arn:aws:dynamodb:us-east-1:123456789012:table/orders").is_ok()
        );
        assert!(validate_table_name("arn:aws:s3:::bucket").is_err());
    }
}
