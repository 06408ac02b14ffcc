//! The record-source seam: what the consumer needs from Kinesis.
//!
//! `kinesis_connectors_kinesis::PollingSource` implements it with the AWS SDK
//! (the core stays free of it); the testkit's scripted source implements it with pages, throttling,
//! expired iterators and shard ends written by a test, so every rule of the
//! consumer loop is tested without a network.

use std::time::SystemTime;

use async_trait::async_trait;

use crate::error::Result;
use crate::kpl::HashKeyRange;
use crate::record::{Record, SequenceNumber};

/// Where to start reading a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartPosition {
    /// The oldest record still in the shard.
    TrimHorizon,
    /// Only records written after the iterator was made.
    Latest,
    /// The first record that arrived at or after this time.
    AtTimestamp(SystemTime),
    /// At this record (used to finish a partly processed aggregated record).
    AtSequence(SequenceNumber),
    /// Just after this record (used to resume from a checkpoint).
    AfterSequence(SequenceNumber),
}

/// Where to start a shard that has no checkpoint yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InitialPosition {
    /// The oldest record still in the shard (default: nothing is missed).
    #[default]
    TrimHorizon,
    /// Only records written from now on.
    Latest,
    /// Records that arrived at or after this time.
    AtTimestamp(SystemTime),
}

impl From<InitialPosition> for StartPosition {
    fn from(position: InitialPosition) -> Self {
        match position {
            InitialPosition::TrimHorizon => Self::TrimHorizon,
            InitialPosition::Latest => Self::Latest,
            InitialPosition::AtTimestamp(at) => Self::AtTimestamp(at),
        }
    }
}

/// A shard as listed by `ListShards`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    /// The shard id.
    pub shard_id: String,
    /// The parent, for a shard created by a split or merge.
    pub parent_shard_id: Option<String>,
    /// The second parent, for a shard created by a merge.
    pub adjacent_parent_shard_id: Option<String>,
    /// The last sequence number of a closed shard; `None` while the shard is open.
    pub ending_sequence_number: Option<SequenceNumber>,
    /// The hash keys the shard owns; `None` when the source does not know
    /// them. A reader that de-aggregates KPL records needs it to drop the
    /// sub-records that belong to another shard after resharding.
    pub hash_key_range: Option<HashKeyRange>,
}

impl ShardInfo {
    /// An open shard without parents.
    pub fn open(shard_id: impl Into<String>) -> Self {
        Self {
            shard_id: shard_id.into(),
            parent_shard_id: None,
            adjacent_parent_shard_id: None,
            ending_sequence_number: None,
            hash_key_range: None,
        }
    }

    /// The shard's parents (none, one after a split, two after a merge).
    pub fn parents(&self) -> Vec<String> {
        self.parent_shard_id
            .iter()
            .chain(self.adjacent_parent_shard_id.iter())
            .cloned()
            .collect()
    }

    /// Whether the shard was closed by resharding (no new records will arrive).
    pub fn is_closed(&self) -> bool {
        self.ending_sequence_number.is_some()
    }
}

/// One `GetRecords` response.
#[derive(Debug, Clone, Default)]
pub struct RecordsPage {
    /// The records, in shard order.
    pub records: Vec<Record>,
    /// The iterator for the next call; `None` once a closed shard is fully read.
    pub next_iterator: Option<String>,
    /// How far behind the tip of the shard this response is.
    pub millis_behind_latest: Option<i64>,
    /// The shards created from this one, reported at shard end.
    pub child_shards: Vec<String>,
}

/// How a source gets its records, which decides how the shard's reader
/// paces its calls to [`RecordSource::get_records`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Delivery {
    /// Every `get_records` call is a request to the service (`GetRecords`,
    /// at most 5 calls per second per shard, shared by every consumer of
    /// the stream): the reader waits 200 ms between calls, and
    /// [`idle_delay`](crate::ShardConfig::idle_delay) after a page that
    /// found the shard caught up.
    #[default]
    Polled,
    /// The service pushes records (enhanced fan-out's `SubscribeToShard`):
    /// `get_records` waits for the next pushed records itself and returns an
    /// empty page after a bounded wait, so the reader calls it again at once.
    /// Not calling it is what slows the subscription down.
    Pushed,
}

/// What the consumer needs from a stream: list shards, get iterators, get records.
///
/// Errors are [`Error::Source`](crate::Error::Source) values whose
/// [`SourceErrorKind`](crate::SourceErrorKind) tells the loop to back off
/// (throttled, transient), to renew the iterator (expired) or to stop.
#[async_trait]
pub trait RecordSource: Send + Sync {
    /// Every shard of the stream, open and closed, following all pages.
    async fn list_shards(&self, stream: &str) -> Result<Vec<ShardInfo>>;

    /// A shard iterator starting at `position`.
    async fn shard_iterator(
        &self,
        stream: &str,
        shard_id: &str,
        position: &StartPosition,
    ) -> Result<String>;

    /// Up to `limit` records from `iterator`.
    async fn get_records(&self, iterator: &str, limit: u32) -> Result<RecordsPage>;

    /// How this source gets its records (default: [`Delivery::Polled`]).
    fn delivery(&self) -> Delivery {
        Delivery::Polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_lists_both_merge_parents() {
        let mut shard = ShardInfo::open("c");
        assert!(shard.parents().is_empty());
        shard.parent_shard_id = Some("a".into());
        shard.adjacent_parent_shard_id = Some("b".into());
        assert_eq!(shard.parents(), vec!["a".to_owned(), "b".to_owned()]);
        assert!(!shard.is_closed());
    }
}
