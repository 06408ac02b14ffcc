//! A [`RecordSource`] whose shards, records, resharding and failures are
//! written by the test.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use kinesis_connectors_core::{
    Delivery, Error, Record, RecordSource, RecordsPage, Result, SequenceNumber, ShardInfo,
    SourceErrorKind, StartPosition,
};
use tokio::time::Instant;

/// Prefix of the iterators a [`ScriptedSource`] hands out.
const ITERATOR_PREFIX: &str = "scripted-iterator";

/// How long a pushing [`ScriptedSource`] waits on a caught-up shard before
/// it returns an empty page (see [`ScriptedSource::set_delivery`]).
pub const PUSH_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// A failure a [`ScriptedSource`] returns instead of a response.
///
/// Each one becomes an [`Error::Source`] of the matching
/// [`SourceErrorKind`]; see [`Fault::to_error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Fault {
    /// `ProvisionedThroughputExceeded`: [`SourceErrorKind::Throttled`].
    Throttle,
    /// A network error or a 5xx: [`SourceErrorKind::Transient`].
    Transient,
    /// `ExpiredIteratorException`: [`SourceErrorKind::ExpiredIterator`].
    ExpiredIterator,
    /// `ResourceNotFoundException`: [`SourceErrorKind::NotFound`].
    NotFound,
    /// Anything not retryable: [`SourceErrorKind::Other`].
    Fatal,
}

impl Fault {
    /// The error kind this fault produces.
    pub fn kind(self) -> SourceErrorKind {
        match self {
            Self::Throttle => SourceErrorKind::Throttled,
            Self::Transient => SourceErrorKind::Transient,
            Self::ExpiredIterator => SourceErrorKind::ExpiredIterator,
            Self::NotFound => SourceErrorKind::NotFound,
            Self::Fatal => SourceErrorKind::Other,
        }
    }

    /// The error this fault produces: `Error::source(self.kind(), ..)`.
    ///
    /// ```
    /// use kinesis_connectors_core::SourceErrorKind;
    /// use kinesis_connectors_testkit::Fault;
    /// let error = Fault::Throttle.to_error();
    /// assert_eq!(error.source_kind(), Some(SourceErrorKind::Throttled));
    /// assert!(error.is_retryable());
    /// assert!(!Fault::Fatal.to_error().is_retryable());
    /// ```
    pub fn to_error(self) -> Error {
        Error::source(self.kind(), format!("scripted fault: {}", self.kind()))
    }
}

/// One scripted shard.
#[derive(Debug)]
struct ScriptedShard {
    info: ShardInfo,
    records: Vec<Record>,
    children: Vec<String>,
    faults: VecDeque<Fault>,
    calls: Vec<Instant>,
    iterator_requests: Vec<StartPosition>,
}

impl ScriptedShard {
    fn new(info: ShardInfo) -> Self {
        Self {
            info,
            records: Vec::new(),
            children: Vec::new(),
            faults: VecDeque::new(),
            calls: Vec::new(),
            iterator_requests: Vec::new(),
        }
    }

    /// The index of the first record at `position`.
    fn index_of(&self, position: &StartPosition) -> usize {
        let first = |pred: &dyn Fn(&Record) -> bool| {
            self.records
                .iter()
                .position(pred)
                .unwrap_or(self.records.len())
        };
        match position {
            StartPosition::TrimHorizon => 0,
            StartPosition::Latest => self.records.len(),
            StartPosition::AtTimestamp(at) => {
                first(&|r| r.approximate_arrival.is_some_and(|arrival| arrival >= *at))
            }
            StartPosition::AtSequence(sequence) => first(&|r| r.sequence_number >= *sequence),
            StartPosition::AfterSequence(sequence) => first(&|r| r.sequence_number > *sequence),
        }
    }
}

/// Everything behind the [`ScriptedSource`]'s lock.
#[derive(Debug)]
struct State {
    /// In insertion order, as `list_shards` returns them.
    shards: Vec<ScriptedShard>,
    /// The next sequence number [`ScriptedSource::append`] assigns.
    next_sequence: u64,
    /// At most this many records per page (`None`: as many as asked for).
    page_size: Option<usize>,
    list_shards_faults: VecDeque<Fault>,
    delivery: Delivery,
}

impl State {
    fn shard(&self, shard_id: &str) -> Option<&ScriptedShard> {
        self.shards.iter().find(|s| s.info.shard_id == shard_id)
    }

    fn shard_mut(&mut self, shard_id: &str) -> Option<&mut ScriptedShard> {
        self.shards.iter_mut().find(|s| s.info.shard_id == shard_id)
    }

    /// The shard a test named; a missing one is a bug in the test.
    // A scripting call naming a shard that was never added cannot do
    // anything sensible, and the test must not go on as if it had worked.
    #[allow(clippy::panic)]
    #[track_caller]
    fn scripted_shard(&mut self, shard_id: &str, call: &str) -> &mut ScriptedShard {
        match self.shard_mut(shard_id) {
            Some(shard) => shard,
            None => {
                panic!("ScriptedSource::{call}: no shard {shard_id:?}; add it with add_shard first")
            }
        }
    }

    /// Keeps [`ScriptedSource::append`]'s counter above every sequence
    /// number already in a shard.
    fn bump_counter_past(&mut self, sequence: &SequenceNumber) {
        if let Ok(value) = sequence.as_str().parse::<u64>() {
            self.next_sequence = self.next_sequence.max(value.saturating_add(1));
        }
    }
}

/// A [`RecordSource`] for tests: shards, records, resharding and failures
/// are scripted by the test, and every call is recorded.
///
/// Clones share the same state, so a test keeps one clone to script and
/// inspect while the consumer reads through another (`Arc::new(source.clone())`).
///
/// - Iterators are opaque strings naming a shard and an index into its
///   records; `TrimHorizon` is index 0, `Latest` the current length,
///   `AtTimestamp(t)` the first record that arrived at or after `t` (records
///   without an arrival time never match), `AtSequence(s)` the first record
///   with a sequence number `>= s`, `AfterSequence(s)` the first with a
///   sequence number `> s` (sub-records of `s` are not after it). An unknown
///   shard is a [`SourceErrorKind::NotFound`] error.
/// - `get_records` first pops one injected [`Fault`] of the shard, if any,
///   and returns its error without advancing. Otherwise it returns up to
///   `min(limit, page size)` records from the iterator's index, with
///   `millis_behind_latest = Some(records still unread × 1000)`. A caught-up
///   open shard returns an empty page, an iterator at the same index and
///   `Some(0)`; records appended later are returned by the next call. Once a
///   closed shard is read to its end the page has no next iterator and
///   `child_shards` lists the children given to [`close_shard`](Self::close_shard).
/// - `list_shards` first pops one fault injected with
///   [`inject_list_shards`](Self::inject_list_shards), then returns every
///   shard in the order it was added (children included).
///
/// ```
/// use bytes::Bytes;
/// use kinesis_connectors_core::{RecordSource, ShardInfo, StartPosition};
/// use kinesis_connectors_testkit::{Fault, ScriptedSource};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> kinesis_connectors_core::Result<()> {
/// let source = ScriptedSource::new();
/// source.add_shard(ShardInfo::open("shard-0"));
/// source.append("shard-0", vec![("pk".into(), Bytes::from("hello"))]);
/// source.inject("shard-0", Fault::Throttle);
///
/// let iterator = source.shard_iterator("stream", "shard-0", &StartPosition::TrimHorizon).await?;
/// assert!(source.get_records(&iterator, 100).await.is_err()); // the throttle
/// let page = source.get_records(&iterator, 100).await?;
/// assert_eq!(page.records[0].data, "hello");
/// assert_eq!(source.get_records_calls("shard-0").len(), 2);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ScriptedSource {
    state: Arc<Mutex<State>>,
}

impl Default for ScriptedSource {
    fn default() -> Self {
        Self::new()
    }
}

impl ScriptedSource {
    /// A source without shards; [`append`](Self::append) numbers records from 1.
    pub fn new() -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                shards: Vec::new(),
                next_sequence: 1,
                page_size: None,
                list_shards_faults: VecDeque::new(),
                delivery: Delivery::Polled,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update is complete before any assertion can fire, so a
        // poisoned lock still guards consistent state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a shard (e.g. `ShardInfo::open("shard-0")`) without records.
    ///
    /// A shard added with an `ending_sequence_number` is closed from the
    /// start, without children.
    ///
    /// # Panics
    ///
    /// If a shard with the same id was already added.
    #[track_caller]
    pub fn add_shard(&self, shard: ShardInfo) {
        let mut state = self.lock();
        let exists = state.shard(&shard.shard_id).is_some();
        assert!(
            !exists,
            "ScriptedSource::add_shard: shard {:?} was already added",
            shard.shard_id
        );
        state.shards.push(ScriptedShard::new(shard));
    }

    /// Appends records to an open shard, like `PutRecords`: each gets the
    /// next number of one counter shared by all shards (so records of a
    /// child always sort after those of its parent) and
    /// `approximate_arrival = SystemTime::now()`. Returns the assigned
    /// sequence numbers, in order.
    ///
    /// # Panics
    ///
    /// If the shard was not added or is closed.
    #[track_caller]
    pub fn append(&self, shard_id: &str, records: Vec<(String, Bytes)>) -> Vec<SequenceNumber> {
        let mut state = self.lock();
        let first = state.next_sequence;
        let shard = state.scripted_shard(shard_id, "append");
        assert!(
            !shard.info.is_closed(),
            "ScriptedSource::append: shard {shard_id:?} is closed"
        );
        let now = SystemTime::now();
        let mut assigned = Vec::with_capacity(records.len());
        for (offset, (partition_key, data)) in records.into_iter().enumerate() {
            let sequence = SequenceNumber::from(first + offset as u64);
            let mut record = Record::new(data, partition_key, sequence.clone());
            record.approximate_arrival = Some(now);
            shard.records.push(record);
            assigned.push(sequence);
        }
        state.next_sequence = first + assigned.len() as u64;
        assigned
    }

    /// Appends records exactly as given: the caller picks sequence numbers
    /// (and sub-sequence numbers, arrival times) and keeps them increasing.
    /// Works on closed shards too, to script a shard's whole history.
    ///
    /// Later [`append`](Self::append) calls number their records past the
    /// largest sequence number given here.
    ///
    /// # Panics
    ///
    /// If the shard was not added.
    #[track_caller]
    pub fn append_records(&self, shard_id: &str, records: Vec<Record>) {
        let mut state = self.lock();
        let last = records.last().map(|r| r.sequence_number.clone());
        state
            .scripted_shard(shard_id, "append_records")
            .records
            .extend(records);
        if let Some(last) = last {
            state.bump_counter_past(&last);
        }
    }

    /// Closes a shard, as a split or merge does, and adds `children` (with
    /// their parent ids set by the caller) to the listing unless a shard with
    /// the same id is already listed (the second parent of a merge).
    ///
    /// The shard's `ending_sequence_number` becomes its last record's
    /// sequence number (a fresh number from the counter if it has none).
    /// A reader that has read every record then gets a page without a next
    /// iterator and with `child_shards` = the children's ids.
    ///
    /// # Panics
    ///
    /// If the shard was not added or is already closed.
    #[track_caller]
    pub fn close_shard(&self, shard_id: &str, children: Vec<ShardInfo>) {
        let mut state = self.lock();
        let fresh = SequenceNumber::from(state.next_sequence);
        let shard = state.scripted_shard(shard_id, "close_shard");
        assert!(
            !shard.info.is_closed(),
            "ScriptedSource::close_shard: shard {shard_id:?} is already closed"
        );
        let (ending, used_fresh) = match shard.records.last() {
            Some(last) => (last.sequence_number.clone(), false),
            None => (fresh.clone(), true),
        };
        shard.info.ending_sequence_number = Some(ending);
        shard.children = children.iter().map(|c| c.shard_id.clone()).collect();
        if used_fresh {
            state.bump_counter_past(&fresh);
        }
        for child in children {
            if state.shard(&child.shard_id).is_none() {
                state.shards.push(ScriptedShard::new(child));
            }
        }
    }

    /// Returns at most `n` records per `GetRecords` call, whatever the limit
    /// asked for (default: as many as the limit).
    pub fn set_page_size(&self, n: usize) {
        self.lock().page_size = Some(n);
    }

    /// Makes the source say it pushes records ([`Delivery::Pushed`], like
    /// enhanced fan-out) instead of being polled (the default). A pushing
    /// source's `get_records` on a caught-up open shard waits
    /// [`PUSH_WAIT`] before it returns the empty page, as a subscription
    /// waits for the next event.
    pub fn set_delivery(&self, delivery: Delivery) {
        self.lock().delivery = delivery;
    }

    /// Queues a fault for the shard: each `GetRecords` call on it pops one
    /// queued fault, if any, and fails with it instead of reading.
    ///
    /// # Panics
    ///
    /// If the shard was not added.
    #[track_caller]
    pub fn inject(&self, shard_id: &str, fault: Fault) {
        self.lock()
            .scripted_shard(shard_id, "inject")
            .faults
            .push_back(fault);
    }

    /// Queues a fault for `list_shards`: each call pops one, if any, and
    /// fails with it.
    pub fn inject_list_shards(&self, fault: Fault) {
        self.lock().list_shards_faults.push_back(fault);
    }

    /// When each `GetRecords` call on the shard happened (failed ones
    /// included), in tokio time so paused-time tests can check pacing.
    pub fn get_records_calls(&self, shard_id: &str) -> Vec<Instant> {
        self.lock()
            .shard(shard_id)
            .map(|s| s.calls.clone())
            .unwrap_or_default()
    }

    /// Every position an iterator was requested at for the shard, in order.
    pub fn iterator_requests(&self, shard_id: &str) -> Vec<StartPosition> {
        self.lock()
            .shard(shard_id)
            .map(|s| s.iterator_requests.clone())
            .unwrap_or_default()
    }

    /// The shard's records as scripted so far (empty for an unknown shard).
    pub fn shard_records(&self, shard_id: &str) -> Vec<Record> {
        self.lock()
            .shard(shard_id)
            .map(|s| s.records.clone())
            .unwrap_or_default()
    }

    /// The shard as `list_shards` would list it, without popping faults.
    pub fn shard_info(&self, shard_id: &str) -> Option<ShardInfo> {
        self.lock().shard(shard_id).map(|s| s.info.clone())
    }
}

fn encode_iterator(shard_id: &str, index: usize) -> String {
    format!("{ITERATOR_PREFIX}:{shard_id}:{index}")
}

fn decode_iterator(iterator: &str) -> Result<(&str, usize)> {
    let invalid = || {
        Error::source(
            SourceErrorKind::Other,
            format!("invalid shard iterator {iterator:?}: not made by this ScriptedSource"),
        )
    };
    let rest = iterator
        .strip_prefix(ITERATOR_PREFIX)
        .and_then(|rest| rest.strip_prefix(':'))
        .ok_or_else(invalid)?;
    let (shard_id, index) = rest.rsplit_once(':').ok_or_else(invalid)?;
    let index = index.parse().map_err(|_| invalid())?;
    Ok((shard_id, index))
}

fn not_found(shard_id: &str) -> Error {
    Error::source(
        SourceErrorKind::NotFound,
        format!("shard {shard_id:?} not found in the ScriptedSource"),
    )
}

#[async_trait]
impl RecordSource for ScriptedSource {
    async fn list_shards(&self, _stream: &str) -> Result<Vec<ShardInfo>> {
        let mut state = self.lock();
        if let Some(fault) = state.list_shards_faults.pop_front() {
            return Err(fault.to_error());
        }
        Ok(state.shards.iter().map(|s| s.info.clone()).collect())
    }

    async fn shard_iterator(
        &self,
        _stream: &str,
        shard_id: &str,
        position: &StartPosition,
    ) -> Result<String> {
        let mut state = self.lock();
        let shard = state
            .shard_mut(shard_id)
            .ok_or_else(|| not_found(shard_id))?;
        shard.iterator_requests.push(position.clone());
        Ok(encode_iterator(shard_id, shard.index_of(position)))
    }

    async fn get_records(&self, iterator: &str, limit: u32) -> Result<RecordsPage> {
        let page = self.read_page(iterator, limit)?;
        let waits = self.delivery() == Delivery::Pushed
            && page.records.is_empty()
            && page.next_iterator.is_some();
        if waits {
            tokio::time::sleep(PUSH_WAIT).await;
        }
        Ok(page)
    }

    fn delivery(&self) -> Delivery {
        self.lock().delivery
    }
}

impl ScriptedSource {
    /// One page from `iterator`, without waiting.
    fn read_page(&self, iterator: &str, limit: u32) -> Result<RecordsPage> {
        let (shard_id, index) = decode_iterator(iterator)?;
        let mut state = self.lock();
        let page_size = state.page_size;
        let shard = state
            .shard_mut(shard_id)
            .ok_or_else(|| not_found(shard_id))?;
        shard.calls.push(Instant::now());
        if let Some(fault) = shard.faults.pop_front() {
            return Err(fault.to_error());
        }
        let len = shard.records.len();
        let start = index.min(len);
        let wanted = usize::try_from(limit).unwrap_or(usize::MAX);
        let take = page_size.map_or(wanted, |size| size.min(wanted));
        let end = start.saturating_add(take).min(len);
        let records = shard.records[start..end].to_vec();
        let unread = i64::try_from(len - end).unwrap_or(i64::MAX);
        let (next_iterator, child_shards) = if shard.info.is_closed() && end == len {
            (None, shard.children.clone())
        } else {
            (Some(encode_iterator(shard_id, end)), Vec::new())
        };
        Ok(RecordsPage {
            records,
            next_iterator,
            millis_behind_latest: Some(unread.saturating_mul(1000)),
            child_shards,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iterators_round_trip_even_with_colons_in_shard_ids() {
        let it = encode_iterator("odd:shard", 42);
        assert_eq!(decode_iterator(&it).ok(), Some(("odd:shard", 42)));
        assert!(decode_iterator("nope").is_err());
        assert!(decode_iterator("scripted-iterator:s:x").is_err());
    }

    #[test]
    fn fault_kinds() {
        assert_eq!(Fault::Throttle.kind(), SourceErrorKind::Throttled);
        assert_eq!(Fault::Transient.kind(), SourceErrorKind::Transient);
        assert_eq!(
            Fault::ExpiredIterator.kind(),
            SourceErrorKind::ExpiredIterator
        );
        assert_eq!(Fault::NotFound.kind(), SourceErrorKind::NotFound);
        assert_eq!(Fault::Fatal.kind(), SourceErrorKind::Other);
    }
}
