//! Conditional puts: `PutItem` with a condition expression, one item at a
//! time: the condition ([`ConditionalPut`]) and the write path that uses it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use aws_sdk_dynamodb::types::AttributeValue;
use kinesis_connectors_core::RejectedItem;
use tracing::debug;

use crate::emitter::{DynamoDbEmitter, Prepared, add};
use crate::error::{DynamoDbError, Result};
use crate::executor::{first_to_report, run_bounded};
use crate::isolate::refused_item;
use crate::item::{Item, KeyValue};

/// Writes each item with `PutItem` and a condition expression instead of
/// `BatchWriteItem`, so that an item only replaces the stored one when the
/// condition holds, typically "only newer versions win"
/// ([`ConditionalPut::newer_version`]).
///
/// A put whose condition fails (`ConditionalCheckFailedException`) is not an
/// error: the stored item is newer, the item is skipped and counted in
/// [`DynamoDbEmitterStats::stale_skipped`](crate::DynamoDbEmitterStats::stale_skipped).
/// Items with the same primary key in one batch are written one after the
/// other in shard order, so the condition decides between them too; items
/// with different keys are written concurrently, at most
/// [`max_in_flight`](crate::DynamoDbEmitterBuilder::max_in_flight) at a time.
///
/// # Cost
///
/// - One request per item instead of one per 25: many more requests, and a
///   batch takes longer (roughly `items / max_in_flight` round trips).
/// - Write capacity is the same per written item (one write unit per KB),
///   but a put whose condition fails still consumes write capacity (at least
///   one unit), so replays and out-of-order duplicates are paid for.
/// - Use it only when several writers (shards, replays after a restart, other
///   applications) can write the same key out of order; plain batch mode is
///   already idempotent for replays of the same data.
///
/// ```
/// use kinesis_connectors_dynamodb::ConditionalPut;
///
/// // Keep the item with the highest `version` (a number attribute).
/// let newest_wins = ConditionalPut::newer_version("version");
///
/// // Any condition: values come from the item being written.
/// let custom = ConditionalPut::new("attribute_not_exists(#id) OR #ts < :ts")
///     .name("#id", "order_id")
///     .name("#ts", "updated_at")
///     .value_from_item(":ts", "updated_at");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionalPut {
    expression: String,
    names: HashMap<String, String>,
    values_from_item: Vec<(String, String)>,
}

impl ConditionalPut {
    /// A condition expression (DynamoDB syntax) using `#name` placeholders
    /// for attribute names ([`name`](Self::name)) and `:value` placeholders
    /// for values taken from the item being written
    /// ([`value_from_item`](Self::value_from_item)).
    pub fn new(expression: impl Into<String>) -> Self {
        Self {
            expression: expression.into(),
            names: HashMap::new(),
            values_from_item: Vec::new(),
        }
    }

    /// Writes an item only if no item with its key exists yet or the stored
    /// item's `version_attribute` is lower than the new one's (equal versions
    /// are skipped, which makes replays free of effect). The attribute should
    /// be a number; strings compare by their UTF-8 bytes.
    pub fn newer_version(version_attribute: impl Into<String>) -> Self {
        let attribute = version_attribute.into();
        Self::new("attribute_not_exists(#kc_version) OR #kc_version < :kc_version")
            .name("#kc_version", attribute.clone())
            .value_from_item(":kc_version", attribute)
    }

    /// Binds the placeholder `#placeholder` to the attribute name `attribute`.
    pub fn name(mut self, placeholder: impl Into<String>, attribute: impl Into<String>) -> Self {
        self.names.insert(placeholder.into(), attribute.into());
        self
    }

    /// Binds the placeholder `:placeholder` to the value of the item's
    /// attribute `attribute`; an item without it is rejected (per item).
    pub fn value_from_item(
        mut self,
        placeholder: impl Into<String>,
        attribute: impl Into<String>,
    ) -> Self {
        self.values_from_item
            .push((placeholder.into(), attribute.into()));
        self
    }

    /// The condition expression.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// Checks what DynamoDB would refuse for every item: an empty expression,
    /// placeholders without their `#` / `:` prefix, and placeholders that
    /// the expression does not use.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.expression.trim().is_empty() {
            return Err(DynamoDbError::Config(
                "the conditional-put expression must not be empty".into(),
            ));
        }
        for (placeholder, attribute) in &self.names {
            check_placeholder(&self.expression, placeholder, '#')?;
            if attribute.is_empty() {
                return Err(DynamoDbError::Config(format!(
                    "placeholder {placeholder} is bound to an empty attribute name"
                )));
            }
        }
        let mut seen = Vec::new();
        for (placeholder, attribute) in &self.values_from_item {
            check_placeholder(&self.expression, placeholder, ':')?;
            if attribute.is_empty() {
                return Err(DynamoDbError::Config(format!(
                    "placeholder {placeholder} is bound to an empty attribute name"
                )));
            }
            if seen.contains(&placeholder) {
                return Err(DynamoDbError::Config(format!(
                    "value placeholder {placeholder} is bound twice"
                )));
            }
            seen.push(placeholder);
        }
        Ok(())
    }

    /// The expression's value placeholders, filled from `item`.
    pub(crate) fn values_for(&self, item: &Item) -> Result<HashMap<String, AttributeValue>> {
        self.values_from_item
            .iter()
            .map(|(placeholder, attribute)| {
                item.get(attribute)
                    .map(|value| (placeholder.clone(), value.clone()))
                    .ok_or_else(|| {
                        DynamoDbError::invalid_item(
                            attribute,
                            format!("is missing; the put condition needs it for {placeholder}"),
                        )
                    })
            })
            .collect()
    }

    /// The name placeholders, if any.
    pub(crate) fn names(&self) -> Option<HashMap<String, String>> {
        (!self.names.is_empty()).then(|| self.names.clone())
    }
}

/// `placeholder` must start with `prefix`, have a name after it, and appear
/// in `expression` as a whole token (DynamoDB refuses unused placeholders).
fn check_placeholder(expression: &str, placeholder: &str, prefix: char) -> Result<()> {
    let valid_name = placeholder.strip_prefix(prefix).is_some_and(|rest| {
        !rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    });
    if !valid_name {
        return Err(DynamoDbError::Config(format!(
            "placeholder {placeholder:?} must be `{prefix}` followed by letters, digits or `_`"
        )));
    }
    let used = expression.match_indices(placeholder).any(|(at, _)| {
        expression[at + placeholder.len()..]
            .chars()
            .next()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'))
    });
    if !used {
        return Err(DynamoDbError::Config(format!(
            "placeholder {placeholder} is not used in the condition expression {expression:?}"
        )));
    }
    Ok(())
}

impl<T> DynamoDbEmitter<T> {
    /// Conditional mode: one `PutItem` per item; items sharing a key go one
    /// after the other in batch order, different keys concurrently. After a
    /// failure no put starts; the ones in flight finish. An item refused as
    /// invalid (`ValidationException`) is returned as rejected, unless every
    /// item of the batch was and the table never accepted a write from this
    /// emitter: then the table or the request is at fault, and the batch
    /// fails with one of those refusals.
    pub(crate) async fn write_conditional(
        &self,
        condition: &ConditionalPut,
        prepared: Vec<Prepared>,
    ) -> Result<Vec<RejectedItem>> {
        let items = prepared.len();
        let mut groups: Vec<Vec<(usize, Item)>> = Vec::new();
        let mut group_of: HashMap<KeyValue, usize> = HashMap::new();
        for Prepared { index, item, key } in prepared {
            match group_of.get(&key) {
                Some(&group) => groups[group].push((index, item)),
                None => {
                    group_of.insert(key, groups.len());
                    groups.push(vec![(index, item)]);
                }
            }
        }
        debug!(table = %self.table, keys = groups.len(), "writing with conditional PutItem");
        let failed = AtomicBool::new(false);
        let failed = &failed;
        let (refused, failures, _unsent) =
            run_bounded(self.max_in_flight, groups, |group| async move {
                let mut refused = Vec::new();
                for (index, item) in group {
                    if failed.load(Ordering::Relaxed) {
                        break;
                    }
                    match self.put_conditional(condition, item).await {
                        Ok(()) => {}
                        Err(error) if error.is_validation() => {
                            debug!(table = %self.table, index, %error, "item refused by DynamoDB");
                            refused.push((index, error));
                        }
                        Err(error) => {
                            failed.store(true, Ordering::Relaxed);
                            return Err(error);
                        }
                    }
                }
                Ok(refused)
            })
            .await;
        if let Some(error) = first_to_report(failures, DynamoDbError::is_retryable) {
            return Err(error);
        }
        let mut refused: Vec<(usize, DynamoDbError)> = refused.into_iter().flatten().collect();
        if refused.len() == items
            && !self.table_accepts_writes()
            && let Some((_, error)) = refused.pop()
        {
            return Err(error);
        }
        Ok(refused
            .iter()
            .map(|(index, error)| refused_item(&self.table, *index, error))
            .collect())
    }

    async fn put_conditional(&self, condition: &ConditionalPut, item: Item) -> Result<()> {
        let values = condition.values_for(&item)?;
        let values = (!values.is_empty()).then_some(values);
        let mut delays = self.retry.delays();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let result = self
                .client
                .put_item()
                .table_name(self.table.clone())
                .set_item(Some(item.clone()))
                .condition_expression(condition.expression())
                .set_expression_attribute_names(condition.names())
                .set_expression_attribute_values(values.clone())
                .send()
                .await;
            match result {
                Ok(_) => {
                    self.note_accepted_write();
                    add(&self.counters.items_written, 1);
                    return Ok(());
                }
                Err(error)
                    if error
                        .as_service_error()
                        .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
                {
                    // The stored item wins (e.g. it has a newer version);
                    // the table took the request, so it accepts writes.
                    self.note_accepted_write();
                    add(&self.counters.stale_skipped, 1);
                    return Ok(());
                }
                Err(error) => self.retry_or_fail("PutItem", attempt, error)?,
            }
            add(&self.counters.requests_retried, 1);
            tokio::time::sleep(delays.next_delay()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_version_is_valid() {
        let put = ConditionalPut::newer_version("version");
        put.validate().unwrap();
        assert_eq!(
            put.names().unwrap().get("#kc_version").map(String::as_str),
            Some("version")
        );
        let item: Item = [("version".to_owned(), AttributeValue::N("3".into()))].into();
        let values = put.values_for(&item).unwrap();
        assert_eq!(values[":kc_version"], AttributeValue::N("3".into()));
        let missing = put.values_for(&Item::new()).unwrap_err();
        assert!(missing.to_string().contains("`version`"), "{missing}");
    }

    #[test]
    fn bad_conditions_are_refused() {
        assert!(ConditionalPut::new(" ").validate().is_err());
        // Unused placeholder.
        assert!(
            ConditionalPut::new("#a < :b")
                .name("#c", "c")
                .validate()
                .is_err()
        );
        // A prefix of another placeholder does not count as used.
        assert!(
            ConditionalPut::new("#ab < :v")
                .name("#a", "a")
                .validate()
                .is_err()
        );
        // Wrong prefix.
        assert!(
            ConditionalPut::new("a < :v")
                .name("a", "a")
                .validate()
                .is_err()
        );
        assert!(
            ConditionalPut::new("#a < :v")
                .value_from_item("v", "a")
                .validate()
                .is_err()
        );
        assert!(
            ConditionalPut::new("#a < :v")
                .name("#a", "a")
                .value_from_item(":v", "a")
                .validate()
                .is_ok()
        );
    }
}
