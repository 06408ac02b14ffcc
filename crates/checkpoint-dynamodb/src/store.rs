//! `DynamoDbCheckpointStore`: checkpoints and leases in a KCL lease table.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use kinesis_connectors_core::{
    Checkpoint, CheckpointStore, Error, InitialPosition, Lease, LeaseStore, Position, ShardKey,
    StoredLease,
};
use tracing::debug;

use crate::error::{DynamoDbCheckpointError, Result};
use crate::layout::{self, Expected, ExpectedLease, Expression, ItemState, attributes};
use crate::table;

/// Default for [`DynamoDbCheckpointStoreBuilder::max_write_attempts`].
const DEFAULT_WRITE_ATTEMPTS: u32 = 10;
/// Default for [`DynamoDbCheckpointStoreBuilder::table_ready_timeout`].
const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(120);

/// Checkpoints and shard leases of one application consuming one stream,
/// kept in a DynamoDB table laid out like the Kinesis Client Library's
/// single-stream lease table.
///
/// Implements [`CheckpointStore`] (with a fenced
/// [`set_fenced`](CheckpointStore::set_fenced), and pending batches for
/// replay-stable batches, fenced the same way) and [`LeaseStore`], so it
/// works both for a single worker and, with a
/// [`LeaseCoordinator`](kinesis_connectors_core::LeaseCoordinator), for
/// several workers sharing the stream. Cheap to clone (the SDK client is
/// shared).
///
/// The table is keyed by shard id only, so a store serves exactly the
/// application and stream it was built for: keys of any other application
/// or stream are refused with [`Error::Config`]. Build one store (and table)
/// per application and stream.
///
/// See the [crate documentation](crate) for the layout, the never-backwards
/// write and the lease protocol's failure cases.
#[derive(Debug, Clone)]
pub struct DynamoDbCheckpointStore {
    client: Client,
    table: String,
    application: String,
    stream: String,
    initial_sentinel: &'static str,
    max_write_attempts: u32,
}

/// Builds a [`DynamoDbCheckpointStore`]; see [`DynamoDbCheckpointStore::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct DynamoDbCheckpointStoreBuilder {
    client: Client,
    application: String,
    stream: String,
    table: Option<String>,
    check_table: bool,
    create_table_if_missing: bool,
    table_ready_timeout: Duration,
    initial_position: InitialPosition,
    max_write_attempts: u32,
}

impl DynamoDbCheckpointStore {
    /// A store for `application` consuming `stream`, talking to DynamoDB
    /// through `client` (endpoint, region, credentials and SDK retries come
    /// from the client's configuration).
    ///
    /// The table defaults to the application name, as in the KCL.
    pub fn builder(
        client: Client,
        application: impl Into<String>,
        stream: impl Into<String>,
    ) -> DynamoDbCheckpointStoreBuilder {
        DynamoDbCheckpointStoreBuilder {
            client,
            application: application.into(),
            stream: stream.into(),
            table: None,
            check_table: true,
            create_table_if_missing: false,
            table_ready_timeout: DEFAULT_READY_TIMEOUT,
            initial_position: InitialPosition::TrimHorizon,
            max_write_attempts: DEFAULT_WRITE_ATTEMPTS,
        }
    }

    /// The lease table.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The application whose checkpoints this store keeps.
    pub fn application(&self) -> &str {
        &self.application
    }

    /// The stream whose shards this store keeps checkpoints of.
    pub fn stream(&self) -> &str {
        &self.stream
    }
}

impl DynamoDbCheckpointStoreBuilder {
    /// The lease table's name (default: the application name, as in the KCL).
    pub fn table(mut self, table: impl Into<String>) -> Self {
        self.table = Some(table.into());
        self
    }

    /// Creates the table (hash key `leaseKey`, on-demand billing) when it
    /// does not exist, and waits until it is `ACTIVE` (default: `false`, a
    /// missing table is [`DynamoDbCheckpointError::TableNotFound`]).
    pub fn create_table_if_missing(mut self, create: bool) -> Self {
        self.create_table_if_missing = create;
        self
    }

    /// Whether [`build`](Self::build) checks the table with `DescribeTable`
    /// (default `true`): that it exists, has the lease table's key schema and
    /// is usable. Turn it off when the credentials may not describe tables;
    /// a missing table then shows at the first read or write.
    pub fn check_table(mut self, check: bool) -> Self {
        self.check_table = check;
        self
    }

    /// How long [`build`](Self::build) waits for the table to become
    /// `ACTIVE` (default 120 s).
    pub fn table_ready_timeout(mut self, timeout: Duration) -> Self {
        self.table_ready_timeout = timeout;
        self
    }

    /// The sentinel new leases record in `checkpoint` until the first
    /// checkpoint: `TRIM_HORIZON` (default), `LATEST` or `AT_TIMESTAMP`.
    /// Only a KCL application taking the table over reads it; set it to the
    /// consumer's initial position so the KCL would start where this
    /// application would. Leases of resharding children (shards with
    /// parents) always record `TRIM_HORIZON`, as the consumer reads them.
    pub fn new_lease_position(mut self, position: InitialPosition) -> Self {
        self.initial_position = position;
        self
    }

    /// How many read-then-conditional-write rounds a checkpoint write tries
    /// while other writers keep changing the item, before it fails with the
    /// retryable [`DynamoDbCheckpointError::Contention`] (default 10).
    pub fn max_write_attempts(mut self, attempts: u32) -> Self {
        self.max_write_attempts = attempts;
        self
    }

    /// Checks the configuration, then (unless [`check_table`](Self::check_table)
    /// is off) that the table exists with the lease table's key schema,
    /// creating it if asked to, and is usable.
    pub async fn build(self) -> Result<DynamoDbCheckpointStore> {
        if self.application.is_empty() || self.stream.is_empty() {
            return Err(DynamoDbCheckpointError::Config(
                "application and stream names must not be empty".into(),
            ));
        }
        if self.max_write_attempts == 0 {
            return Err(DynamoDbCheckpointError::Config(
                "max_write_attempts must be at least 1".into(),
            ));
        }
        let table = self.table.unwrap_or_else(|| self.application.clone());
        table::check_table_name(&table)?;
        if self.check_table {
            table::ensure_table(
                &self.client,
                &table,
                self.create_table_if_missing,
                self.table_ready_timeout,
            )
            .await?;
        } else if self.create_table_if_missing {
            return Err(DynamoDbCheckpointError::Config(
                "create_table_if_missing(true) needs check_table(true)".into(),
            ));
        }
        Ok(DynamoDbCheckpointStore {
            client: self.client,
            table,
            application: self.application,
            stream: self.stream,
            initial_sentinel: layout::initial_sentinel(self.initial_position),
            max_write_attempts: self.max_write_attempts,
        })
    }
}

/// Why a conditional `UpdateItem` did not write.
enum UpdateFailure {
    /// The condition failed; the item as it was, when DynamoDB returned it.
    Condition(Option<HashMap<String, AttributeValue>>),
    /// The request failed.
    Request(DynamoDbCheckpointError),
}

impl DynamoDbCheckpointStore {
    /// Fails unless `application` and `stream` are this store's.
    fn check_scope(&self, application: &str, stream: &str) -> Result<()> {
        if application == self.application && stream == self.stream {
            return Ok(());
        }
        Err(DynamoDbCheckpointError::Config(format!(
            "this DynamoDbCheckpointStore keeps application `{}`, stream `{}` in table `{}` \
             (the lease-table layout holds one stream per table, keyed by shard id); \
             it was asked for application `{application}`, stream `{stream}`: \
             build one store and table per application and stream",
            self.application, self.stream, self.table
        )))
    }

    fn check_key(&self, key: &ShardKey) -> Result<()> {
        self.check_scope(&key.application, &key.stream)
    }

    fn item_key(shard_id: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([(
            attributes::LEASE_KEY.to_owned(),
            AttributeValue::S(shard_id.to_owned()),
        )])
    }

    /// The raw item of `shard_id` (strongly consistent read).
    async fn read_item(&self, shard_id: &str) -> Result<Option<HashMap<String, AttributeValue>>> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::item_key(shard_id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| DynamoDbCheckpointError::request("GetItem", &self.table, e))?;
        Ok(output.item)
    }

    /// The item of `shard_id` (strongly consistent read).
    async fn read(&self, shard_id: &str) -> Result<Option<ItemState>> {
        self.read_item(shard_id)
            .await?
            .as_ref()
            .map(|item| ItemState::from_item(&self.table, item))
            .transpose()
    }

    /// Sends a conditional `UpdateItem`; returns the updated attributes.
    async fn update(
        &self,
        shard_id: &str,
        expression: Expression,
    ) -> Result<HashMap<String, AttributeValue>, UpdateFailure> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::item_key(shard_id)))
            .update_expression(expression.update)
            .set_condition_expression(expression.condition)
            .set_expression_attribute_names(Some(expression.names))
            .set_expression_attribute_values(Some(expression.values))
            .return_values(ReturnValue::UpdatedNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(output) => Ok(output.attributes.unwrap_or_default()),
            Err(error) => match error.as_service_error() {
                Some(e) if e.is_conditional_check_failed_exception() => {
                    let old = match e {
                        aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(failed) => {
                            failed.item.clone()
                        }
                        _ => None,
                    };
                    Err(UpdateFailure::Condition(old))
                }
                _ => Err(UpdateFailure::Request(DynamoDbCheckpointError::request(
                    "UpdateItem",
                    &self.table,
                    error,
                ))),
            },
        }
    }

    /// The owner recorded in an item DynamoDB returned with a failed condition.
    fn owner_of(item: Option<&HashMap<String, AttributeValue>>) -> Option<String> {
        match item?.get(attributes::LEASE_OWNER)? {
            AttributeValue::S(owner) => Some(owner.clone()),
            _ => None,
        }
    }

    /// The counter after a take or renewal, from the updated attributes.
    fn new_counter(updated: &HashMap<String, AttributeValue>, fallback: u64) -> u64 {
        match updated.get(attributes::LEASE_COUNTER) {
            Some(AttributeValue::N(text)) => text.parse().unwrap_or(fallback),
            _ => fallback,
        }
    }

    /// Writes `checkpoint` unless a newer one is stored; with `fence`, only
    /// while that lease holds the item (when the item is a lease at all).
    ///
    /// DynamoDB cannot compare sequence numbers (decimal strings of up to 128
    /// digits) numerically in a condition, so the stored checkpoint is read
    /// (strongly consistent), compared here, and the write is conditioned on
    /// the item still holding exactly what was read; when another writer got
    /// in between, the round starts over.
    async fn write_checkpoint(
        &self,
        key: &ShardKey,
        checkpoint: &Checkpoint,
        fence: Option<&Lease>,
    ) -> kinesis_connectors_core::Result<()> {
        self.check_key(key)?;
        let shard_id = key.shard_id.as_str();
        for attempt in 1..=self.max_write_attempts {
            let state = self.read(shard_id).await?;
            let lease = match (fence, &state) {
                (None, _) => None,
                (Some(lease), Some(state)) if state.is_lease() => {
                    if !state.held_by(lease) {
                        return Err(Error::LeaseLost {
                            shard_id: shard_id.to_owned(),
                            owner: state.owner.clone(),
                        });
                    }
                    Some(ExpectedLease {
                        owner: state.owner.clone(),
                        counter: state.counter_text.clone(),
                    })
                }
                // Not a lease (a single worker): it must stay one until written.
                (Some(_), state) => Some(ExpectedLease {
                    owner: None,
                    counter: state.as_ref().and_then(|s| s.counter_text.clone()),
                }),
            };
            let stored = match &state {
                Some(state) => state.checkpoint(&self.table)?,
                None => None,
            };
            if stored.as_ref().is_some_and(|stored| stored >= checkpoint) {
                debug!(shard_id, %checkpoint, stored = ?stored, "checkpoint not newer than the stored one; kept the stored one");
                return Ok(());
            }
            let expected = Expected {
                lease,
                ..Expected::of(state.as_ref())
            };
            match self
                .update(shard_id, layout::checkpoint_write(checkpoint, &expected))
                .await
            {
                Ok(_) => return Ok(()),
                Err(UpdateFailure::Condition(_)) => {
                    debug!(
                        shard_id,
                        attempt, "the item changed since it was read; reading again"
                    );
                }
                Err(UpdateFailure::Request(error)) => return Err(error.into()),
            }
        }
        Err(DynamoDbCheckpointError::Contention {
            table: self.table.clone(),
            lease_key: shard_id.to_owned(),
            attempts: self.max_write_attempts,
        }
        .into())
    }
}

#[async_trait]
impl CheckpointStore for DynamoDbCheckpointStore {
    async fn get(&self, key: &ShardKey) -> kinesis_connectors_core::Result<Option<Checkpoint>> {
        self.check_key(key)?;
        match self.read(&key.shard_id).await? {
            Some(state) => Ok(state.checkpoint(&self.table)?),
            None => Ok(None),
        }
    }

    async fn set(
        &self,
        key: &ShardKey,
        checkpoint: &Checkpoint,
    ) -> kinesis_connectors_core::Result<()> {
        self.write_checkpoint(key, checkpoint, None).await
    }

    async fn set_fenced(
        &self,
        key: &ShardKey,
        checkpoint: &Checkpoint,
        lease: &Lease,
    ) -> kinesis_connectors_core::Result<()> {
        self.write_checkpoint(key, checkpoint, Some(lease)).await
    }

    fn keeps_pending_batches(&self) -> bool {
        true
    }

    async fn pending_batch(
        &self,
        key: &ShardKey,
    ) -> kinesis_connectors_core::Result<Option<Position>> {
        self.check_key(key)?;
        match self.read_item(&key.shard_id).await? {
            Some(item) => Ok(layout::pending_batch_end(&self.table, &item)?),
            None => Ok(None),
        }
    }

    /// One conditional `UpdateItem` (no read first: a pending batch replaces
    /// the earlier one whatever it was), fenced like
    /// [`set_fenced`](CheckpointStore::set_fenced).
    async fn set_pending_batch(
        &self,
        key: &ShardKey,
        end: &Position,
        lease: &Lease,
    ) -> kinesis_connectors_core::Result<()> {
        self.check_key(key)?;
        let expression = layout::pending_batch_write(end, lease, self.initial_sentinel);
        match self.update(&key.shard_id, expression).await {
            Ok(_) => Ok(()),
            Err(UpdateFailure::Condition(old)) => Err(Error::LeaseLost {
                shard_id: key.shard_id.clone(),
                owner: Self::owner_of(old.as_ref()),
            }),
            Err(UpdateFailure::Request(error)) => Err(error.into()),
        }
    }
}

#[async_trait]
impl LeaseStore for DynamoDbCheckpointStore {
    async fn list_leases(
        &self,
        application: &str,
        stream: &str,
    ) -> kinesis_connectors_core::Result<Vec<StoredLease>> {
        self.check_scope(application, stream)?;
        let mut leases = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let output = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| DynamoDbCheckpointError::request("Scan", &self.table, e))?;
            for item in output.items() {
                leases.push(ItemState::from_item(&self.table, item)?.stored_lease(&self.table)?);
            }
            match output.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        leases.sort_by(|a, b| a.shard_id.cmp(&b.shard_id));
        Ok(leases)
    }

    async fn create_lease(
        &self,
        key: &ShardKey,
        parent_shard_ids: &[String],
    ) -> kinesis_connectors_core::Result<()> {
        self.check_key(key)?;
        // A child of a resharding is read from its first record whatever the
        // consumer's initial position (as KCL does): LATEST there would skip
        // everything written to it since the split.
        let initial = if parent_shard_ids.is_empty() {
            self.initial_sentinel
        } else {
            layout::sentinels::TRIM_HORIZON
        };
        let expression = layout::create_lease(parent_shard_ids, initial);
        match self.update(&key.shard_id, expression).await {
            Ok(_) | Err(UpdateFailure::Condition(_)) => Ok(()),
            Err(UpdateFailure::Request(error)) => Err(error.into()),
        }
    }

    async fn take_lease(
        &self,
        key: &ShardKey,
        expected_counter: u64,
        owner: &str,
    ) -> kinesis_connectors_core::Result<Option<Lease>> {
        self.check_key(key)?;
        let expression = layout::take_lease(expected_counter, owner);
        match self.update(&key.shard_id, expression).await {
            Ok(updated) => {
                let counter = Self::new_counter(&updated, expected_counter + 1);
                debug!(shard_id = %key.shard_id, owner, counter, "lease taken");
                Ok(Some(Lease {
                    shard_id: key.shard_id.clone(),
                    owner: owner.to_owned(),
                    counter,
                    expires_at: None,
                }))
            }
            Err(UpdateFailure::Condition(_)) => Ok(None),
            Err(UpdateFailure::Request(error)) => Err(error.into()),
        }
    }

    async fn renew_lease(
        &self,
        key: &ShardKey,
        lease: &Lease,
    ) -> kinesis_connectors_core::Result<Lease> {
        self.check_key(key)?;
        match self.update(&key.shard_id, layout::renew_lease(lease)).await {
            Ok(updated) => Ok(Lease {
                counter: Self::new_counter(&updated, lease.counter + 1),
                ..lease.clone()
            }),
            Err(UpdateFailure::Condition(old)) => Err(Error::LeaseLost {
                shard_id: key.shard_id.clone(),
                owner: Self::owner_of(old.as_ref()),
            }),
            Err(UpdateFailure::Request(error)) => Err(error.into()),
        }
    }

    async fn release_lease(
        &self,
        key: &ShardKey,
        lease: &Lease,
    ) -> kinesis_connectors_core::Result<()> {
        self.check_key(key)?;
        match self
            .update(&key.shard_id, layout::release_lease(lease))
            .await
        {
            // Not held any more: nothing of ours to release.
            Ok(_) | Err(UpdateFailure::Condition(_)) => Ok(()),
            Err(UpdateFailure::Request(error)) => Err(error.into()),
        }
    }
}
