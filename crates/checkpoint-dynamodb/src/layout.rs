//! The Kinesis Client Library's single-stream lease-table layout: attribute
//! names, how checkpoints and leases map onto them, and the update and
//! condition expressions every write uses.
//!
//! Everything here is pure (no requests), so the mapping and the expressions
//! are unit tested directly.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use kinesis_connectors_core::{
    Checkpoint, InitialPosition, Lease, Position, SequenceNumber, StoredLease,
};

use crate::error::{DynamoDbCheckpointError, Result};

/// Attribute names of the lease table.
///
/// All but [`WHOLE_RECORD_CHECKPOINT`], [`PENDING_BATCH_END`] and
/// [`PENDING_BATCH_END_SUB_SEQUENCE_NUMBER`] are the Kinesis Client Library's
/// (KCL 1.x and 2.x, single-stream mode), with the same types, so a KCL
/// application and this store can hand a table back and forth.
pub mod attributes {
    /// `S`, the table's hash key: the shard id (`shardId-000000000000`).
    pub const LEASE_KEY: &str = "leaseKey";
    /// `S`: the checkpointed sequence number, or one of the sentinels
    /// `TRIM_HORIZON`, `LATEST`, `AT_TIMESTAMP` (no checkpoint yet) and
    /// `SHARD_END` (the shard is finished).
    pub const CHECKPOINT: &str = "checkpoint";
    /// `N`: the sub-sequence number of the checkpoint (the index inside a
    /// KPL-aggregated record); `0` for whole records.
    pub const CHECKPOINT_SUB_SEQUENCE_NUMBER: &str = "checkpointSubSequenceNumber";
    /// `S`: the worker holding the lease; absent when the lease is free.
    pub const LEASE_OWNER: &str = "leaseOwner";
    /// `N`: bumped by every take, renewal and release; the fencing token.
    pub const LEASE_COUNTER: &str = "leaseCounter";
    /// `N`: how often the lease changed hands since the last checkpoint.
    pub const OWNER_SWITCHES_SINCE_CHECKPOINT: &str = "ownerSwitchesSinceCheckpoint";
    /// `SS`: the shard's parents (absent for shards without parents).
    pub const PARENT_SHARD_IDS: &str = "parentShardIds";
    /// `S`, this crate's own addition (the KCL ignores it): present when the
    /// checkpoint covers the *whole* record `checkpoint` (every sub-record of
    /// an aggregated one), and then equal to `checkpoint`. Without it, a
    /// sub-sequence number `0` reads as "sub-record 0 done", which is what
    /// the KCL's own `(sequence, 0)` checkpoints may mean; see the crate
    /// documentation.
    pub const WHOLE_RECORD_CHECKPOINT: &str = "wholeRecordCheckpoint";
    /// `S`, this crate's own addition (the KCL ignores it): the sequence
    /// number of the last record of a batch cut by time that was about to be
    /// emitted (the core's pending batch, for replay-stable batches).
    /// Deliberately not the KCL's `pendingCheckpoint`, which records a
    /// checkpoint a KCL record processor was about to make.
    pub const PENDING_BATCH_END: &str = "pendingBatchEnd";
    /// `N`, this crate's own addition: the sub-sequence number of
    /// [`PENDING_BATCH_END`] when the batch ends inside a KPL-aggregated
    /// record; absent when it ends after the whole record (so a whole
    /// record and its sub-record 0 stay apart, and a replay ends exactly
    /// where the first attempt did).
    pub const PENDING_BATCH_END_SUB_SEQUENCE_NUMBER: &str = "pendingBatchEndSubSequenceNumber";
}

/// The `checkpoint` sentinels the KCL writes.
pub mod sentinels {
    /// Read from the oldest record; no checkpoint yet.
    pub const TRIM_HORIZON: &str = "TRIM_HORIZON";
    /// Read from the newest record; no checkpoint yet.
    pub const LATEST: &str = "LATEST";
    /// Read from a timestamp; no checkpoint yet.
    pub const AT_TIMESTAMP: &str = "AT_TIMESTAMP";
    /// The shard was read to its end.
    pub const SHARD_END: &str = "SHARD_END";
}

use attributes::*;

/// The sentinel a new lease records, from the consumer's initial position.
pub(crate) fn initial_sentinel(position: InitialPosition) -> &'static str {
    match position {
        InitialPosition::TrimHorizon => sentinels::TRIM_HORIZON,
        InitialPosition::Latest => sentinels::LATEST,
        InitialPosition::AtTimestamp(_) => sentinels::AT_TIMESTAMP,
    }
}

/// One item of the table as read, with the raw values the conditional
/// writes compare against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ItemState {
    pub(crate) lease_key: String,
    /// `checkpoint` as stored.
    pub(crate) checkpoint: Option<String>,
    /// `checkpointSubSequenceNumber` as stored (the number's text).
    pub(crate) sub_sequence: Option<String>,
    /// `wholeRecordCheckpoint` as stored.
    pub(crate) whole_record: Option<String>,
    pub(crate) owner: Option<String>,
    /// `leaseCounter` as stored (the number's text).
    pub(crate) counter_text: Option<String>,
    pub(crate) counter: Option<u64>,
    pub(crate) parents: Vec<String>,
}

/// An error about one attribute of an item.
fn malformed(
    table: &str,
    lease_key: &str,
    attribute: &'static str,
    problem: impl Into<String>,
) -> DynamoDbCheckpointError {
    DynamoDbCheckpointError::MalformedItem {
        table: table.to_owned(),
        lease_key: lease_key.to_owned(),
        attribute,
        problem: problem.into(),
    }
}

fn string_attribute(
    table: &str,
    lease_key: &str,
    item: &HashMap<String, AttributeValue>,
    attribute: &'static str,
) -> Result<Option<String>> {
    match item.get(attribute) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(AttributeValue::S(text)) => Ok(Some(text.clone())),
        Some(other) => Err(malformed(
            table,
            lease_key,
            attribute,
            format!("must be a string (S), got {other:?}"),
        )),
    }
}

fn number_attribute(
    table: &str,
    lease_key: &str,
    item: &HashMap<String, AttributeValue>,
    attribute: &'static str,
) -> Result<Option<(String, u64)>> {
    match item.get(attribute) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(AttributeValue::N(text)) => text
            .parse::<u64>()
            .map(|n| Some((text.clone(), n)))
            .map_err(|_| {
                malformed(
                    table,
                    lease_key,
                    attribute,
                    format!("must be a non-negative integer, got {text:?}"),
                )
            }),
        Some(other) => Err(malformed(
            table,
            lease_key,
            attribute,
            format!("must be a number (N), got {other:?}"),
        )),
    }
}

impl ItemState {
    /// Reads an item; fails on attributes of the wrong type.
    pub(crate) fn from_item(table: &str, item: &HashMap<String, AttributeValue>) -> Result<Self> {
        let lease_key = match item.get(LEASE_KEY) {
            Some(AttributeValue::S(key)) => key.clone(),
            other => {
                return Err(malformed(
                    table,
                    "?",
                    LEASE_KEY,
                    format!("must be a string (S), got {other:?}"),
                ));
            }
        };
        let key = lease_key.as_str();
        let counter = number_attribute(table, key, item, LEASE_COUNTER)?;
        let sub_sequence = number_attribute(table, key, item, CHECKPOINT_SUB_SEQUENCE_NUMBER)?;
        let parents = match item.get(PARENT_SHARD_IDS) {
            None | Some(AttributeValue::Null(_)) => Vec::new(),
            Some(AttributeValue::Ss(ids)) => {
                let mut ids = ids.clone();
                ids.sort();
                ids
            }
            Some(other) => {
                return Err(malformed(
                    table,
                    key,
                    PARENT_SHARD_IDS,
                    format!("must be a string set (SS), got {other:?}"),
                ));
            }
        };
        Ok(Self {
            checkpoint: string_attribute(table, key, item, CHECKPOINT)?,
            sub_sequence: sub_sequence.map(|(text, _)| text),
            whole_record: string_attribute(table, key, item, WHOLE_RECORD_CHECKPOINT)?,
            owner: string_attribute(table, key, item, LEASE_OWNER)?,
            counter_text: counter.as_ref().map(|(text, _)| text.clone()),
            counter: counter.map(|(_, n)| n),
            parents,
            lease_key,
        })
    }

    /// The checkpoint the item holds; `None` for no checkpoint or a
    /// `TRIM_HORIZON` / `LATEST` / `AT_TIMESTAMP` sentinel.
    pub(crate) fn checkpoint(&self, table: &str) -> Result<Option<Checkpoint>> {
        let Some(text) = self.checkpoint.as_deref() else {
            return Ok(None);
        };
        match text {
            sentinels::TRIM_HORIZON | sentinels::LATEST | sentinels::AT_TIMESTAMP => Ok(None),
            sentinels::SHARD_END => Ok(Some(Checkpoint::ShardEnd)),
            digits => {
                let sequence = SequenceNumber::parse(digits).map_err(|_| {
                    malformed(
                        table,
                        &self.lease_key,
                        CHECKPOINT,
                        format!(
                            "must be a sequence number or TRIM_HORIZON, LATEST, AT_TIMESTAMP, SHARD_END; got {digits:?}"
                        ),
                    )
                })?;
                let sub = match self.sub_sequence.as_deref() {
                    None => 0,
                    Some(text) => text.parse::<u64>().map_err(|_| {
                        malformed(
                            table,
                            &self.lease_key,
                            CHECKPOINT_SUB_SEQUENCE_NUMBER,
                            format!("must be a non-negative integer, got {text:?}"),
                        )
                    })?,
                };
                let whole = sub == 0 && self.whole_record.as_deref() == Some(digits);
                Ok(Some(Checkpoint::At(Position {
                    sequence,
                    sub_sequence: (!whole).then_some(sub),
                })))
            }
        }
    }

    /// Whether the item is a lease: it has an owner, or its counter moved
    /// (a lease that was taken and released). Items only ever written by
    /// [`CheckpointStore::set`](kinesis_connectors_core::CheckpointStore::set)
    /// or created and never taken are not, so a single worker without a
    /// lease coordinator writes fenced checkpoints to them freely.
    pub(crate) fn is_lease(&self) -> bool {
        self.owner.is_some() || self.counter.is_some_and(|c| c > 0)
    }

    /// Whether `lease` (owner and counter) still holds this item.
    pub(crate) fn held_by(&self, lease: &Lease) -> bool {
        self.owner.as_deref() == Some(lease.owner.as_str()) && self.counter == Some(lease.counter)
    }

    /// The lease as the core's coordinator sees it.
    pub(crate) fn stored_lease(&self, table: &str) -> Result<StoredLease> {
        Ok(StoredLease {
            shard_id: self.lease_key.clone(),
            owner: self.owner.clone(),
            counter: self.counter.unwrap_or(0),
            checkpoint: self.checkpoint(table)?,
            parent_shard_ids: self.parents.clone(),
        })
    }
}

/// The attributes a checkpoint is written as: `checkpoint`,
/// `checkpointSubSequenceNumber`, and whether `wholeRecordCheckpoint` is set.
pub(crate) fn checkpoint_attributes(checkpoint: &Checkpoint) -> (String, u64, bool) {
    match checkpoint {
        Checkpoint::ShardEnd => (sentinels::SHARD_END.to_owned(), 0, false),
        Checkpoint::At(Position {
            sequence,
            sub_sequence: None,
        }) => (sequence.as_str().to_owned(), 0, true),
        Checkpoint::At(Position {
            sequence,
            sub_sequence: Some(sub),
        }) => (sequence.as_str().to_owned(), *sub, false),
    }
}

/// An `UpdateItem`'s expressions with their placeholders.
///
/// Placeholders are the attribute names themselves (`#leaseCounter`) and
/// descriptive value names (`:expectedCounter`), so requests read well in
/// logs and tests.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Expression {
    pub(crate) update: String,
    pub(crate) condition: Option<String>,
    pub(crate) names: HashMap<String, String>,
    pub(crate) values: HashMap<String, AttributeValue>,
}

impl Expression {
    fn name(&mut self, attribute: &str) -> String {
        let placeholder = format!("#{attribute}");
        self.names.insert(placeholder.clone(), attribute.to_owned());
        placeholder
    }

    fn value(&mut self, name: &str, value: AttributeValue) -> String {
        let placeholder = format!(":{name}");
        self.values.insert(placeholder.clone(), value);
        placeholder
    }

    fn number(&mut self, name: &str, n: u64) -> String {
        self.value(name, AttributeValue::N(n.to_string()))
    }

    /// `#attribute = :name`, or `attribute_not_exists(#attribute)` when
    /// `expected` is `None`.
    fn pin(&mut self, attribute: &str, name: &str, expected: Option<AttributeValue>) -> String {
        let attribute = self.name(attribute);
        match expected {
            Some(value) => {
                let value = self.value(name, value);
                format!("{attribute} = {value}")
            }
            None => format!("attribute_not_exists({attribute})"),
        }
    }
}

/// What a conditional checkpoint write expects to find: the raw values read
/// just before (the KCL's attributes stay authoritative; no extra sortable
/// copy of the checkpoint exists that could go stale when a KCL worker
/// writes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Expected {
    pub(crate) checkpoint: Option<String>,
    pub(crate) sub_sequence: Option<String>,
    pub(crate) whole_record: Option<String>,
    /// For fenced writes: owner and counter as read (for a held lease, the
    /// writer's own).
    pub(crate) lease: Option<ExpectedLease>,
}

/// Owner and counter a fenced write expects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ExpectedLease {
    pub(crate) owner: Option<String>,
    pub(crate) counter: Option<String>,
}

impl Expected {
    /// The values `state` holds (`None`: the item does not exist).
    pub(crate) fn of(state: Option<&ItemState>) -> Self {
        state.map_or_else(Self::default, |state| Self {
            checkpoint: state.checkpoint.clone(),
            sub_sequence: state.sub_sequence.clone(),
            whole_record: state.whole_record.clone(),
            lease: None,
        })
    }
}

/// Writes `checkpoint` if the item still holds what `expected` says.
///
/// Also resets `ownerSwitchesSinceCheckpoint` (as the KCL does on a
/// checkpoint) and gives an item created here a `leaseCounter` of 0, so the
/// KCL can read every item this store writes.
pub(crate) fn checkpoint_write(checkpoint: &Checkpoint, expected: &Expected) -> Expression {
    let mut e = Expression::default();
    let (text, sub, whole) = checkpoint_attributes(checkpoint);
    let cp = e.name(CHECKPOINT);
    let cp_value = e.value("checkpoint", AttributeValue::S(text));
    let sub_name = e.name(CHECKPOINT_SUB_SEQUENCE_NUMBER);
    let sub_value = e.number("subSequenceNumber", sub);
    let switches = e.name(OWNER_SWITCHES_SINCE_CHECKPOINT);
    let counter = e.name(LEASE_COUNTER);
    let zero = e.number("zero", 0);
    let whole_name = e.name(WHOLE_RECORD_CHECKPOINT);
    let mut update = format!(
        "SET {cp} = {cp_value}, {sub_name} = {sub_value}, {switches} = {zero}, {counter} = if_not_exists({counter}, {zero})"
    );
    if whole {
        update.push_str(&format!(", {whole_name} = {cp_value}"));
    } else {
        update.push_str(&format!(" REMOVE {whole_name}"));
    }
    e.update = update;

    let mut conditions = vec![
        e.pin(
            CHECKPOINT,
            "expectedCheckpoint",
            expected.checkpoint.clone().map(AttributeValue::S),
        ),
        e.pin(
            CHECKPOINT_SUB_SEQUENCE_NUMBER,
            "expectedSubSequenceNumber",
            expected.sub_sequence.clone().map(AttributeValue::N),
        ),
        e.pin(
            WHOLE_RECORD_CHECKPOINT,
            "expectedWholeRecord",
            expected.whole_record.clone().map(AttributeValue::S),
        ),
    ];
    if let Some(lease) = &expected.lease {
        conditions.push(e.pin(
            LEASE_OWNER,
            "expectedOwner",
            lease.owner.clone().map(AttributeValue::S),
        ));
        conditions.push(e.pin(
            LEASE_COUNTER,
            "expectedCounter",
            lease.counter.clone().map(AttributeValue::N),
        ));
    }
    e.condition = Some(conditions.join(" AND "));
    e
}

/// The pending batch's end an item holds, if any.
pub(crate) fn pending_batch_end(
    table: &str,
    item: &HashMap<String, AttributeValue>,
) -> Result<Option<Position>> {
    let lease_key = match item.get(LEASE_KEY) {
        Some(AttributeValue::S(key)) => key.as_str(),
        _ => "?",
    };
    let Some(sequence) = string_attribute(table, lease_key, item, PENDING_BATCH_END)? else {
        return Ok(None);
    };
    let sequence = SequenceNumber::parse(&sequence).map_err(|_| {
        malformed(
            table,
            lease_key,
            PENDING_BATCH_END,
            format!("must be a sequence number, got {sequence:?}"),
        )
    })?;
    let sub_sequence = number_attribute(
        table,
        lease_key,
        item,
        PENDING_BATCH_END_SUB_SEQUENCE_NUMBER,
    )?
    .map(|(_, sub)| sub);
    Ok(Some(Position {
        sequence,
        sub_sequence,
    }))
}

/// Records `end` as the pending batch, only while `lease` holds the item or
/// the item is no lease at all (no owner, counter absent or 0: a single
/// worker), the same fence [`checkpoint_write`] puts on `set_fenced`, in one
/// request: the pending batch is never compared with what was stored, so
/// nothing needs to be read first.
///
/// An item created here gets what [`create_lease`] gives a new lease
/// (`leaseCounter` 0, `checkpoint` the `initial` sentinel, sub-sequence and
/// owner switches 0), so the KCL can read it. The checkpoint attributes of
/// an existing item are untouched.
pub(crate) fn pending_batch_write(end: &Position, lease: &Lease, initial: &str) -> Expression {
    let mut e = Expression::default();
    let end_name = e.name(PENDING_BATCH_END);
    let end_value = e.value(
        "pendingBatchEnd",
        AttributeValue::S(end.sequence.as_str().to_owned()),
    );
    let end_sub = e.name(PENDING_BATCH_END_SUB_SEQUENCE_NUMBER);
    let counter = e.name(LEASE_COUNTER);
    let cp = e.name(CHECKPOINT);
    let sub = e.name(CHECKPOINT_SUB_SEQUENCE_NUMBER);
    let switches = e.name(OWNER_SWITCHES_SINCE_CHECKPOINT);
    let zero = e.number("zero", 0);
    let initial = e.value("initialCheckpoint", AttributeValue::S(initial.to_owned()));
    let mut set = format!(
        "SET {end_name} = {end_value}, {counter} = if_not_exists({counter}, {zero}), {cp} = if_not_exists({cp}, {initial}), {sub} = if_not_exists({sub}, {zero}), {switches} = if_not_exists({switches}, {zero})"
    );
    e.update = match end.sub_sequence {
        Some(index) => {
            let index = e.number("pendingBatchEndSubSequenceNumber", index);
            set.push_str(&format!(", {end_sub} = {index}"));
            set
        }
        None => format!("{set} REMOVE {end_sub}"),
    };
    let held = held(&mut e, lease);
    let owner = e.name(LEASE_OWNER);
    e.condition = Some(format!(
        "({held}) OR (attribute_not_exists({owner}) AND (attribute_not_exists({counter}) OR {counter} = {zero}))"
    ));
    e
}

/// Creates a free lease unless the item has one: every attribute only if
/// missing, so an existing lease (or checkpoint) is left as it is.
pub(crate) fn create_lease(parents: &[String], initial: &str) -> Expression {
    let mut e = Expression::default();
    let counter = e.name(LEASE_COUNTER);
    let cp = e.name(CHECKPOINT);
    let sub = e.name(CHECKPOINT_SUB_SEQUENCE_NUMBER);
    let switches = e.name(OWNER_SWITCHES_SINCE_CHECKPOINT);
    let zero = e.number("zero", 0);
    let initial = e.value("initialCheckpoint", AttributeValue::S(initial.to_owned()));
    let mut update = format!(
        "SET {counter} = if_not_exists({counter}, {zero}), {cp} = if_not_exists({cp}, {initial}), {sub} = if_not_exists({sub}, {zero}), {switches} = if_not_exists({switches}, {zero})"
    );
    if !parents.is_empty() {
        let name = e.name(PARENT_SHARD_IDS);
        let mut ids = parents.to_vec();
        ids.sort();
        ids.dedup();
        let value = e.value("parentShardIds", AttributeValue::Ss(ids));
        update.push_str(&format!(", {name} = if_not_exists({name}, {value})"));
    }
    e.update = update;
    e
}

/// Takes the lease for `owner` if its counter is still `expected_counter`.
pub(crate) fn take_lease(expected_counter: u64, owner: &str) -> Expression {
    let mut e = Expression::default();
    let owner_name = e.name(LEASE_OWNER);
    let owner_value = e.value("owner", AttributeValue::S(owner.to_owned()));
    let counter = e.name(LEASE_COUNTER);
    let one = e.number("one", 1);
    let switches = e.name(OWNER_SWITCHES_SINCE_CHECKPOINT);
    let expected = e.number("expectedCounter", expected_counter);
    e.update = format!(
        "SET {owner_name} = {owner_value}, {counter} = {counter} + {one} ADD {switches} {one}"
    );
    e.condition = Some(format!("{counter} = {expected}"));
    e
}

/// The condition "`lease` still holds the item".
fn held(e: &mut Expression, lease: &Lease) -> String {
    let owner = e.pin(
        LEASE_OWNER,
        "expectedOwner",
        Some(AttributeValue::S(lease.owner.clone())),
    );
    let counter = e.pin(
        LEASE_COUNTER,
        "expectedCounter",
        Some(AttributeValue::N(lease.counter.to_string())),
    );
    format!("{owner} AND {counter}")
}

/// Bumps the counter of a lease `lease` still holds.
pub(crate) fn renew_lease(lease: &Lease) -> Expression {
    let mut e = Expression::default();
    let counter = e.name(LEASE_COUNTER);
    let one = e.number("one", 1);
    e.update = format!("SET {counter} = {counter} + {one}");
    e.condition = Some(held(&mut e, lease));
    e
}

/// Frees a lease `lease` still holds (the owner is removed, as the KCL's
/// eviction does) and bumps its counter.
pub(crate) fn release_lease(lease: &Lease) -> Expression {
    let mut e = Expression::default();
    let owner = e.name(LEASE_OWNER);
    let counter = e.name(LEASE_COUNTER);
    let one = e.number("one", 1);
    e.update = format!("REMOVE {owner} SET {counter} = {counter} + {one}");
    e.condition = Some(held(&mut e, lease));
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "app";
    const SEQ: &str = "49590338271490256608559692538361571095921575989136588898";

    fn s(text: &str) -> AttributeValue {
        AttributeValue::S(text.to_owned())
    }

    fn n(value: u64) -> AttributeValue {
        AttributeValue::N(value.to_string())
    }

    fn kcl_item(checkpoint: &str, sub: u64) -> HashMap<String, AttributeValue> {
        HashMap::from([
            (LEASE_KEY.to_owned(), s("shardId-000000000000")),
            (CHECKPOINT.to_owned(), s(checkpoint)),
            (CHECKPOINT_SUB_SEQUENCE_NUMBER.to_owned(), n(sub)),
            (LEASE_OWNER.to_owned(), s("kcl-worker")),
            (LEASE_COUNTER.to_owned(), n(42)),
            (OWNER_SWITCHES_SINCE_CHECKPOINT.to_owned(), n(0)),
        ])
    }

    fn at(sequence: &str, sub: Option<u64>) -> Checkpoint {
        Checkpoint::At(Position {
            sequence: SequenceNumber::parse(sequence).unwrap_or_else(|e| panic!("{e}")),
            sub_sequence: sub,
        })
    }

    fn read(item: &HashMap<String, AttributeValue>) -> Option<Checkpoint> {
        ItemState::from_item(TABLE, item)
            .and_then(|state| state.checkpoint(TABLE))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn kcl_items_read_as_checkpoints_and_leases() {
        let item = kcl_item(SEQ, 0);
        let state = ItemState::from_item(TABLE, &item).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(state.owner.as_deref(), Some("kcl-worker"));
        assert_eq!(state.counter, Some(42));
        assert!(state.is_lease());
        // A KCL `(seq, 0)` may be sub-record 0 of an aggregated record: read
        // conservatively (at worst one record is delivered again).
        assert_eq!(read(&item), Some(at(SEQ, Some(0))));
        assert_eq!(read(&kcl_item(SEQ, 3)), Some(at(SEQ, Some(3))));
        for sentinel in ["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"] {
            assert_eq!(read(&kcl_item(sentinel, 0)), None, "{sentinel}");
        }
        assert_eq!(read(&kcl_item("SHARD_END", 0)), Some(Checkpoint::ShardEnd));
        let lease = state.stored_lease(TABLE).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(lease.shard_id, "shardId-000000000000");
        assert_eq!(lease.counter, 42);
        assert!(lease.parent_shard_ids.is_empty());
    }

    #[test]
    fn the_whole_record_marker_applies_only_to_its_own_sequence_number() {
        let mut item = kcl_item(SEQ, 0);
        item.insert(WHOLE_RECORD_CHECKPOINT.to_owned(), s(SEQ));
        assert_eq!(read(&item), Some(at(SEQ, None)));
        // A KCL worker checkpointed later without knowing the marker.
        item.insert(CHECKPOINT.to_owned(), s("1234"));
        assert_eq!(read(&item), Some(at("1234", Some(0))));
        // A sub-sequence number above 0 is never a whole record.
        let mut item = kcl_item(SEQ, 2);
        item.insert(WHOLE_RECORD_CHECKPOINT.to_owned(), s(SEQ));
        assert_eq!(read(&item), Some(at(SEQ, Some(2))));
    }

    #[test]
    fn checkpoints_round_trip_through_the_layout() {
        for checkpoint in [
            at(SEQ, None),
            at(SEQ, Some(0)),
            at(SEQ, Some(7)),
            at("9", None),
            Checkpoint::ShardEnd,
        ] {
            let (text, sub, whole) = checkpoint_attributes(&checkpoint);
            let mut item = HashMap::from([
                (LEASE_KEY.to_owned(), s("shard")),
                (CHECKPOINT.to_owned(), s(&text)),
                (CHECKPOINT_SUB_SEQUENCE_NUMBER.to_owned(), n(sub)),
            ]);
            if whole {
                item.insert(WHOLE_RECORD_CHECKPOINT.to_owned(), s(&text));
            }
            assert_eq!(read(&item), Some(checkpoint.clone()), "{checkpoint}");
        }
    }

    #[test]
    fn malformed_items_name_the_attribute() {
        let mut item = kcl_item("not-a-number", 0);
        let error = ItemState::from_item(TABLE, &item)
            .and_then(|state| state.checkpoint(TABLE))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("`checkpoint`"), "{error}");
        item.insert(LEASE_COUNTER.to_owned(), s("42"));
        let error = ItemState::from_item(TABLE, &item)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("`leaseCounter`"), "{error}");
        assert!(error.contains("shardId-000000000000"), "{error}");
        item.insert(LEASE_COUNTER.to_owned(), n(1));
        item.insert(PARENT_SHARD_IDS.to_owned(), s("shardId-1"));
        assert!(ItemState::from_item(TABLE, &item).is_err());
    }

    #[test]
    fn only_owned_or_used_items_are_leases() {
        let plain = ItemState {
            counter: Some(0),
            ..ItemState::default()
        };
        assert!(!plain.is_lease());
        let released = ItemState {
            counter: Some(3),
            ..ItemState::default()
        };
        assert!(released.is_lease());
        let held = ItemState {
            owner: Some("w".into()),
            counter: Some(3),
            ..ItemState::default()
        };
        assert!(held.held_by(&Lease {
            shard_id: "s".into(),
            owner: "w".into(),
            counter: 3,
            expires_at: None,
        }));
        assert!(!held.held_by(&Lease {
            shard_id: "s".into(),
            owner: "w".into(),
            counter: 2,
            expires_at: None,
        }));
    }

    #[test]
    fn checkpoint_writes_are_conditioned_on_what_was_read() {
        let expected = Expected {
            checkpoint: Some("100".into()),
            sub_sequence: Some("0".into()),
            whole_record: Some("100".into()),
            lease: None,
        };
        let e = checkpoint_write(&at(SEQ, None), &expected);
        assert_eq!(
            e.update,
            "SET #checkpoint = :checkpoint, #checkpointSubSequenceNumber = :subSequenceNumber, \
             #ownerSwitchesSinceCheckpoint = :zero, #leaseCounter = if_not_exists(#leaseCounter, :zero), \
             #wholeRecordCheckpoint = :checkpoint"
        );
        assert_eq!(
            e.condition.as_deref(),
            Some(
                "#checkpoint = :expectedCheckpoint AND #checkpointSubSequenceNumber = :expectedSubSequenceNumber \
                 AND #wholeRecordCheckpoint = :expectedWholeRecord"
            )
        );
        assert_eq!(e.values.get(":checkpoint"), Some(&s(SEQ)));
        assert_eq!(e.values.get(":subSequenceNumber"), Some(&n(0)));
        assert_eq!(e.values.get(":expectedCheckpoint"), Some(&s("100")));
        assert_eq!(
            e.names.get("#wholeRecordCheckpoint").map(String::as_str),
            Some(WHOLE_RECORD_CHECKPOINT)
        );
        // Every placeholder is used and every used placeholder is defined.
        assert_placeholders_match(&e);
    }

    #[test]
    fn a_first_checkpoint_expects_no_item_and_sub_records_drop_the_marker() {
        let e = checkpoint_write(&at(SEQ, Some(4)), &Expected::of(None));
        assert!(
            e.update.ends_with(" REMOVE #wholeRecordCheckpoint"),
            "{}",
            e.update
        );
        assert_eq!(
            e.condition.as_deref(),
            Some(
                "attribute_not_exists(#checkpoint) AND attribute_not_exists(#checkpointSubSequenceNumber) \
                 AND attribute_not_exists(#wholeRecordCheckpoint)"
            )
        );
        assert_eq!(e.values.get(":subSequenceNumber"), Some(&n(4)));
        assert_placeholders_match(&e);
        let end = checkpoint_write(&Checkpoint::ShardEnd, &Expected::of(None));
        assert_eq!(end.values.get(":checkpoint"), Some(&s("SHARD_END")));
        assert_placeholders_match(&end);
    }

    #[test]
    fn fenced_writes_also_pin_owner_and_counter() {
        let expected = Expected {
            checkpoint: Some("TRIM_HORIZON".into()),
            sub_sequence: Some("0".into()),
            whole_record: None,
            lease: Some(ExpectedLease {
                owner: Some("worker-1".into()),
                counter: Some("17".into()),
            }),
        };
        let e = checkpoint_write(&at("5", None), &expected);
        let condition = e.condition.clone().unwrap_or_default();
        assert!(
            condition.ends_with(
                "attribute_not_exists(#wholeRecordCheckpoint) AND #leaseOwner = :expectedOwner AND #leaseCounter = :expectedCounter"
            ),
            "{condition}"
        );
        assert_eq!(e.values.get(":expectedOwner"), Some(&s("worker-1")));
        assert_eq!(e.values.get(":expectedCounter"), Some(&n(17)));
        assert_placeholders_match(&e);
        // A fenced write to an item that is no lease expects it to stay one.
        let unleased = Expected {
            lease: Some(ExpectedLease::default()),
            ..Expected::default()
        };
        let e = checkpoint_write(&at("5", None), &unleased);
        let condition = e.condition.clone().unwrap_or_default();
        assert!(
            condition.ends_with(
                "attribute_not_exists(#leaseOwner) AND attribute_not_exists(#leaseCounter)"
            ),
            "{condition}"
        );
        assert_placeholders_match(&e);
    }

    #[test]
    fn lease_expressions() {
        let lease = Lease {
            shard_id: "shardId-000000000001".into(),
            owner: "worker-1".into(),
            counter: 9,
            expires_at: None,
        };
        let take = take_lease(8, "worker-1");
        assert_eq!(
            take.update,
            "SET #leaseOwner = :owner, #leaseCounter = #leaseCounter + :one ADD #ownerSwitchesSinceCheckpoint :one"
        );
        assert_eq!(
            take.condition.as_deref(),
            Some("#leaseCounter = :expectedCounter")
        );
        assert_eq!(take.values.get(":expectedCounter"), Some(&n(8)));
        assert_placeholders_match(&take);

        let renew = renew_lease(&lease);
        assert_eq!(renew.update, "SET #leaseCounter = #leaseCounter + :one");
        assert_eq!(
            renew.condition.as_deref(),
            Some("#leaseOwner = :expectedOwner AND #leaseCounter = :expectedCounter")
        );
        assert_eq!(renew.values.get(":expectedCounter"), Some(&n(9)));
        assert_placeholders_match(&renew);

        let release = release_lease(&lease);
        assert_eq!(
            release.update,
            "REMOVE #leaseOwner SET #leaseCounter = #leaseCounter + :one"
        );
        assert_eq!(release.condition, renew.condition);
        assert_placeholders_match(&release);

        let create = create_lease(&["b".into(), "a".into()], "TRIM_HORIZON");
        assert!(create.condition.is_none());
        assert!(
            create
                .update
                .contains("#parentShardIds = if_not_exists(#parentShardIds, :parentShardIds)")
        );
        assert_eq!(
            create.values.get(":parentShardIds"),
            Some(&AttributeValue::Ss(vec!["a".into(), "b".into()]))
        );
        assert_eq!(
            create.values.get(":initialCheckpoint"),
            Some(&s("TRIM_HORIZON"))
        );
        assert_placeholders_match(&create);
        let orphan = create_lease(&[], "LATEST");
        assert!(!orphan.update.contains("parentShardIds"));
        assert_placeholders_match(&orphan);
    }

    #[test]
    fn pending_batches_are_fenced_like_checkpoints_and_keep_whole_records_apart() {
        let lease = Lease {
            shard_id: "shardId-000000000001".into(),
            owner: "worker-1".into(),
            counter: 9,
            expires_at: None,
        };
        let whole = Position::new(SequenceNumber::parse(SEQ).unwrap_or_else(|e| panic!("{e}")));
        let e = pending_batch_write(&whole, &lease, "TRIM_HORIZON");
        assert_eq!(
            e.update,
            "SET #pendingBatchEnd = :pendingBatchEnd, #leaseCounter = if_not_exists(#leaseCounter, :zero), \
             #checkpoint = if_not_exists(#checkpoint, :initialCheckpoint), \
             #checkpointSubSequenceNumber = if_not_exists(#checkpointSubSequenceNumber, :zero), \
             #ownerSwitchesSinceCheckpoint = if_not_exists(#ownerSwitchesSinceCheckpoint, :zero) \
             REMOVE #pendingBatchEndSubSequenceNumber"
        );
        assert_eq!(
            e.condition.as_deref(),
            Some(
                "(#leaseOwner = :expectedOwner AND #leaseCounter = :expectedCounter) OR \
                 (attribute_not_exists(#leaseOwner) AND (attribute_not_exists(#leaseCounter) OR #leaseCounter = :zero))"
            )
        );
        assert_eq!(e.values.get(":pendingBatchEnd"), Some(&s(SEQ)));
        assert_eq!(e.values.get(":expectedOwner"), Some(&s("worker-1")));
        assert_eq!(e.values.get(":expectedCounter"), Some(&n(9)));
        assert!(!e.update.contains("pendingCheckpoint"), "{}", e.update);
        assert_placeholders_match(&e);

        let inside = Position {
            sub_sequence: Some(0),
            ..whole.clone()
        };
        let e = pending_batch_write(&inside, &lease, "LATEST");
        assert!(
            e.update.ends_with(
                ", #pendingBatchEndSubSequenceNumber = :pendingBatchEndSubSequenceNumber"
            ),
            "{}",
            e.update
        );
        assert_eq!(
            e.values.get(":pendingBatchEndSubSequenceNumber"),
            Some(&n(0))
        );
        assert_eq!(e.values.get(":initialCheckpoint"), Some(&s("LATEST")));
        assert_placeholders_match(&e);

        // Read back: the sub-sequence number's absence means the whole record.
        let mut item = kcl_item(SEQ, 0);
        assert_eq!(
            pending_batch_end(TABLE, &item).unwrap_or_else(|e| panic!("{e}")),
            None
        );
        item.insert(PENDING_BATCH_END.to_owned(), s(SEQ));
        assert_eq!(
            pending_batch_end(TABLE, &item).unwrap_or_else(|e| panic!("{e}")),
            Some(whole)
        );
        item.insert(PENDING_BATCH_END_SUB_SEQUENCE_NUMBER.to_owned(), n(0));
        assert_eq!(
            pending_batch_end(TABLE, &item).unwrap_or_else(|e| panic!("{e}")),
            Some(inside)
        );
        item.insert(PENDING_BATCH_END.to_owned(), s("SHARD_END"));
        let error = pending_batch_end(TABLE, &item)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("`pendingBatchEnd`"), "{error}");
    }

    #[test]
    fn initial_positions_map_to_kcl_sentinels() {
        assert_eq!(
            initial_sentinel(InitialPosition::TrimHorizon),
            "TRIM_HORIZON"
        );
        assert_eq!(initial_sentinel(InitialPosition::Latest), "LATEST");
        assert_eq!(
            initial_sentinel(InitialPosition::AtTimestamp(std::time::UNIX_EPOCH)),
            "AT_TIMESTAMP"
        );
    }

    /// DynamoDB refuses placeholders that are defined but unused, or used
    /// but undefined.
    fn assert_placeholders_match(e: &Expression) {
        let text = format!("{} {}", e.update, e.condition.as_deref().unwrap_or(""));
        let used = |prefix: char| -> std::collections::BTreeSet<String> {
            text.split(|c: char| !(c.is_ascii_alphanumeric() || c == prefix))
                .filter(|token| token.starts_with(prefix) && token.len() > 1)
                .map(str::to_owned)
                .collect()
        };
        let names: std::collections::BTreeSet<String> = e.names.keys().cloned().collect();
        let values: std::collections::BTreeSet<String> = e.values.keys().cloned().collect();
        assert_eq!(used('#'), names, "names of {text}");
        assert_eq!(used(':'), values, "values of {text}");
    }
}
