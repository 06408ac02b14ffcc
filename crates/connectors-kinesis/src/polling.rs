//! The polling retrieval: a [`RecordSource`] over `ListShards`,
//! `GetShardIterator` and `GetRecords`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use aws_sdk_kinesis::config::http::HttpResponse;
use aws_sdk_kinesis::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::primitives::DateTime;
use aws_sdk_kinesis::types::ShardIteratorType;
use bytes::Bytes;
use kinesis_connectors_aws::{ErrorClass, Service};

use kinesis_connectors_core::kpl::{self, HashKeyRange};
use kinesis_connectors_core::{
    Error, Record, RecordSource, RecordsPage, Result, SequenceNumber, ShardInfo, SourceErrorKind,
    StartPosition, metrics,
};

/// Reads a stream with `ListShards`, `GetShardIterator` and `GetRecords`
/// (the polling retrieval: up to 5 calls per second per shard, shared by every
/// consumer of the stream). Hand it to
/// [`StreamConsumer`](kinesis_connectors_core::StreamConsumer) as its source.
///
/// Takes a client the caller built, so the endpoint, region and credentials
/// come from the caller's `SdkConfig` (and `AWS_ENDPOINT_URL_KINESIS` for
/// emulators).
///
/// KPL-aggregated records are de-aggregated by default (see
/// [`deaggregate`](Self::deaggregate)).
///
/// ```no_run
/// # async fn example() {
/// use kinesis_connectors_kinesis::PollingSource;
/// let config = aws_config::load_from_env().await;
/// let source = PollingSource::new(aws_sdk_kinesis::Client::new(&config));
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct PollingSource {
    client: aws_sdk_kinesis::Client,
    deaggregate: bool,
    /// Hash-key ranges seen by `list_shards`, by (stream, shard id), so
    /// `shard_iterator` can put the range into the iterator it returns.
    ranges: Arc<Mutex<HashMap<(String, String), HashKeyRange>>>,
}

/// Starts an iterator this source tagged with its shard (see [`Tagged`]).
/// `|` occurs neither in stream names, shard ids, nor Kinesis iterators
/// (base64), so the tag is told apart from a raw iterator unambiguously.
const TAG: &str = "kc1|";

/// What `get_records` needs to know about the shard behind an iterator.
///
/// `GetRecords` takes only an iterator, and the `RecordSource` seam hands
/// only the iterator to `get_records`, so the source carries the shard's
/// stream, id and hash-key range inside the iterator strings it returns
/// (from `shard_iterator`, and again in every `next_iterator`) and strips
/// them before calling Kinesis. That keeps `get_records` free of shared
/// state: no map from iterators to shards to grow with every page and leak
/// iterators the loop abandons (expired, shard ended).
pub(crate) struct Tagged<'a> {
    pub(crate) stream: &'a str,
    pub(crate) shard_id: &'a str,
    pub(crate) range: Option<HashKeyRange>,
    pub(crate) iterator: &'a str,
}

impl<'a> Tagged<'a> {
    pub(crate) fn parse(text: &'a str) -> Option<Self> {
        let mut parts = text.strip_prefix(TAG)?.splitn(4, '|');
        let stream = parts.next()?;
        let shard_id = parts.next()?;
        let range = parts.next()?;
        let iterator = parts.next()?;
        let range = match range.split_once('-') {
            Some((start, end)) => Some(HashKeyRange::parse(start, end)?),
            None => None,
        };
        Some(Self {
            stream,
            shard_id,
            range,
            iterator,
        })
    }

    pub(crate) fn tag(&self, iterator: &str) -> String {
        let range = self
            .range
            .map(|range| format!("{}-{}", range.start, range.end))
            .unwrap_or_default();
        format!("{TAG}{}|{}|{range}|{iterator}", self.stream, self.shard_id)
    }
}

impl PollingSource {
    /// A source reading through `client`.
    pub fn new(client: aws_sdk_kinesis::Client) -> Self {
        Self {
            client,
            deaggregate: true,
            ranges: Arc::default(),
        }
    }

    /// Whether to de-aggregate KPL records (default: yes).
    ///
    /// On, each sub-record of a KPL aggregate becomes its own `Record`: the
    /// parent's sequence number and arrival time, its index in the
    /// aggregate as `sub_sequence_number` (the loop checkpoints inside an
    /// aggregate and resumes at the next sub-record), its own partition key
    /// and explicit hash key. As the KCL does:
    ///
    /// - an aggregate with a sub-record whose hash key lies outside the
    ///   shard's range is dropped whole, all its sub-records counted in
    ///   `kinesis_connectors_kpl_sub_records_outside_shard_total` and
    ///   logged as a warning. The KPL packs only records it predicts for
    ///   one shard and, when the prediction was wrong (a stale shard map
    ///   after resharding), puts the whole aggregate again; the KCL drops
    ///   the misrouted copy whole, and so does this source. A producer that
    ///   packs records for several shards into one aggregate (possible with
    ///   the aws-kinesis-agg libraries) loses them with either consumer;
    ///   such input is read with `deaggregate(false)` and a transformer
    ///   that unpacks it;
    /// - a record that starts with the KPL magic but is not a valid
    ///   aggregate (checksum mismatch, bad protobuf, key index outside its
    ///   table) is handed on whole as an ordinary record, counted in
    ///   `kinesis_connectors_kpl_invalid_aggregates_total` and logged as a
    ///   warning; the pipeline's transformer and `BadRecordPolicy` decide
    ///   what happens to it.
    ///
    /// Off, aggregates are handed on as they are, one opaque record each.
    pub fn deaggregate(mut self, on: bool) -> Self {
        self.deaggregate = on;
        self
    }

    /// The shard's hash-key range, listing the stream once if the shard was
    /// not seen yet (a `ShardConsumer` used without a `StreamConsumer`).
    pub(crate) async fn range(&self, stream: &str, shard_id: &str) -> Result<Option<HashKeyRange>> {
        let key = (stream.to_owned(), shard_id.to_owned());
        if let Some(range) = self.cached_range(&key) {
            return Ok(Some(range));
        }
        self.list_shards(stream).await?;
        Ok(self.cached_range(&key))
    }

    fn cached_range(&self, key: &(String, String)) -> Option<HashKeyRange> {
        self.ranges
            .lock()
            .ok()
            .and_then(|ranges| ranges.get(key).copied())
    }

    /// The records of one response as the loop gets them: de-aggregated
    /// (see [`deaggregate`](Self::deaggregate)) unless that is off.
    pub(crate) fn unpack(&self, shard: &Tagged<'_>, records: Vec<Record>) -> Vec<Record> {
        if self.deaggregate {
            deaggregate_page(shard, records)
        } else {
            records
        }
    }
}

/// Replaces each aggregate by its sub-records, dropping the aggregates with
/// a sub-record that belongs to another shard.
fn deaggregate_page(tagged: &Tagged<'_>, records: Vec<Record>) -> Vec<Record> {
    // A page without aggregates, the usual one, is handed on as it is
    // instead of moved record by record into a second vector.
    if !records
        .iter()
        .any(|record| kpl::is_aggregated(&record.data))
    {
        return records;
    }
    let mut out = Vec::with_capacity(records.len());
    let mut outside = 0u64;
    for record in records {
        // Plain records skip `deaggregate` (which would clone them).
        if !kpl::is_aggregated(&record.data) {
            out.push(record);
            continue;
        }
        match kpl::deaggregate(&record) {
            // As the KCL does, an aggregate with any sub-record outside
            // the shard is dropped whole: the KPL only packs records
            // bound for one shard, and when its shard map was stale it
            // puts the whole aggregate again, to the right shards.
            Ok(subs) => match &tagged.range {
                Some(range) if !subs.iter().all(|sub| range.owns(sub)) => {
                    outside += subs.len() as u64;
                }
                _ => out.extend(subs),
            },
            Err(err) => {
                tracing::warn!(
                    stream = tagged.stream,
                    shard_id = tagged.shard_id,
                    error = %err,
                    "handing on a record that is not a valid KPL aggregate as an ordinary record"
                );
                ::metrics::counter!(
                    metrics::KPL_INVALID_AGGREGATES,
                    "stream" => tagged.stream.to_owned(),
                    "shard_id" => tagged.shard_id.to_owned()
                )
                .increment(1);
                out.push(record);
            }
        }
    }
    if outside > 0 {
        tracing::warn!(
            stream = tagged.stream,
            shard_id = tagged.shard_id,
            dropped = outside,
            "dropped KPL aggregates with a sub-record whose hash key belongs to another shard"
        );
        ::metrics::counter!(
            metrics::KPL_SUB_RECORDS_OUTSIDE_SHARD,
            "stream" => tagged.stream.to_owned(),
            "shard_id" => tagged.shard_id.to_owned()
        )
        .increment(outside);
    }
    out
}

/// Maps an SDK error to the loop's classes with the workspace's shared
/// classification: throttling and network trouble are retried, an expired
/// iterator is renewed, the rest stops the shard.
pub(crate) fn classify<E>(err: SdkError<E, HttpResponse>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let kind = source_kind(kinesis_connectors_aws::classify(Service::Kinesis, &err).class);
    Error::source(kind, DisplayErrorContext(err).to_string())
}

/// What the loop does after an error of `class`.
pub(crate) fn source_kind(class: ErrorClass) -> SourceErrorKind {
    match class {
        ErrorClass::Throttling => SourceErrorKind::Throttled,
        ErrorClass::Transient => SourceErrorKind::Transient,
        ErrorClass::ExpiredIterator => SourceErrorKind::ExpiredIterator,
        ErrorClass::NotFound => SourceErrorKind::NotFound,
        _ => SourceErrorKind::Other,
    }
}

fn parse_sequence(text: &str) -> Result<SequenceNumber> {
    SequenceNumber::parse(text)
}

/// The loop's record for one the SDK returned (from `GetRecords` or a
/// `SubscribeToShard` event).
pub(crate) fn record_from_sdk(record: aws_sdk_kinesis::types::Record) -> Result<Record> {
    Ok(Record {
        // Keeps the SDK's string: no allocation per record.
        sequence_number: SequenceNumber::try_from(record.sequence_number)?,
        data: Bytes::from(record.data.into_inner()),
        partition_key: record.partition_key.unwrap_or_default(),
        sub_sequence_number: None,
        approximate_arrival: record
            .approximate_arrival_timestamp
            .and_then(|at| SystemTime::try_from(at).ok()),
        explicit_hash_key: None,
    })
}

#[async_trait]
impl RecordSource for PollingSource {
    async fn list_shards(&self, stream: &str) -> Result<Vec<ShardInfo>> {
        let mut shards = Vec::new();
        let mut ranges = Vec::new();
        let mut next_token: Option<String> = None;
        loop {
            // The API refuses a stream name together with a next token.
            let request = match &next_token {
                Some(token) => self.client.list_shards().next_token(token),
                None => self.client.list_shards().stream_name(stream),
            };
            let output = request.send().await.map_err(classify)?;
            for shard in output.shards() {
                let ending = shard
                    .sequence_number_range()
                    .and_then(|range| range.ending_sequence_number())
                    .map(parse_sequence)
                    .transpose()?;
                let range = shard.hash_key_range().and_then(|range| {
                    HashKeyRange::parse(range.starting_hash_key(), range.ending_hash_key())
                });
                if let Some(range) = range {
                    ranges.push(((stream.to_owned(), shard.shard_id().to_owned()), range));
                }
                shards.push(ShardInfo {
                    shard_id: shard.shard_id().to_owned(),
                    parent_shard_id: shard.parent_shard_id().map(str::to_owned),
                    adjacent_parent_shard_id: shard.adjacent_parent_shard_id().map(str::to_owned),
                    ending_sequence_number: ending,
                    hash_key_range: range,
                });
            }
            match output.next_token() {
                Some(token) if !token.is_empty() => next_token = Some(token.to_owned()),
                _ => break,
            }
        }
        if let Ok(mut cache) = self.ranges.lock() {
            cache.extend(ranges);
        }
        Ok(shards)
    }

    async fn shard_iterator(
        &self,
        stream: &str,
        shard_id: &str,
        position: &StartPosition,
    ) -> Result<String> {
        let request = self
            .client
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard_id);
        let request = match position {
            StartPosition::TrimHorizon => {
                request.shard_iterator_type(ShardIteratorType::TrimHorizon)
            }
            StartPosition::Latest => request.shard_iterator_type(ShardIteratorType::Latest),
            StartPosition::AtTimestamp(at) => request
                .shard_iterator_type(ShardIteratorType::AtTimestamp)
                .timestamp(DateTime::from(*at)),
            StartPosition::AtSequence(seq) => request
                .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
                .starting_sequence_number(seq.as_str()),
            StartPosition::AfterSequence(seq) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(seq.as_str()),
        };
        let output = request.send().await.map_err(classify)?;
        let iterator = output.shard_iterator.ok_or_else(|| {
            Error::source(
                SourceErrorKind::Other,
                format!("GetShardIterator returned no iterator for shard {shard_id}"),
            )
        })?;
        if !self.deaggregate {
            return Ok(iterator);
        }
        let tagged = Tagged {
            stream,
            shard_id,
            range: self.range(stream, shard_id).await?,
            iterator: &iterator,
        };
        Ok(tagged.tag(&iterator))
    }

    async fn get_records(&self, iterator: &str, limit: u32) -> Result<RecordsPage> {
        let tagged = Tagged::parse(iterator);
        let iterator = tagged.as_ref().map_or(iterator, |tagged| tagged.iterator);
        let output = self
            .client
            .get_records()
            .shard_iterator(iterator)
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(classify)?;
        let records = output
            .records
            .into_iter()
            .map(record_from_sdk)
            .collect::<Result<Vec<_>>>()?;
        // An iterator this source did not tag (one a caller got from Kinesis
        // directly) is still de-aggregated, only without the shard's range.
        let untagged = Tagged {
            stream: "",
            shard_id: "",
            range: None,
            iterator,
        };
        let records = self.unpack(tagged.as_ref().unwrap_or(&untagged), records);
        let next_iterator = match &tagged {
            Some(tagged) => output.next_shard_iterator.map(|next| tagged.tag(&next)),
            None => output.next_shard_iterator,
        };
        Ok(RecordsPage {
            records,
            next_iterator,
            millis_behind_latest: output.millis_behind_latest,
            child_shards: output
                .child_shards
                .unwrap_or_default()
                .into_iter()
                .map(|child| child.shard_id)
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_kinesis::operation::get_records::{GetRecordsError, GetRecordsOutput};
    use aws_sdk_kinesis::operation::list_shards::ListShardsOutput;
    use aws_sdk_kinesis::types::error::{
        ExpiredIteratorException, ProvisionedThroughputExceededException,
    };
    use aws_sdk_kinesis::types::{SequenceNumberRange, Shard};
    use aws_smithy_mocks::{RuleMode, mock, mock_client};

    /// The hash-key range `0..=end`.
    fn hash_range(end: impl Into<String>) -> aws_sdk_kinesis::types::HashKeyRange {
        aws_sdk_kinesis::types::HashKeyRange::builder()
            .starting_hash_key("0")
            .ending_hash_key(end)
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn list_shards_follows_every_page() {
        let shard = |id: &str, end: Option<&str>| {
            Shard::builder()
                .shard_id(id)
                .hash_key_range(hash_range("1"))
                .sequence_number_range(
                    SequenceNumberRange::builder()
                        .starting_sequence_number("1")
                        .set_ending_sequence_number(end.map(str::to_owned))
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap()
        };
        let page1 = mock!(aws_sdk_kinesis::Client::list_shards)
            .match_requests(|r| r.stream_name() == Some("s") && r.next_token().is_none())
            .then_output(move || {
                ListShardsOutput::builder()
                    .shards(shard("shardId-0", Some("99")))
                    .next_token("t1")
                    .build()
            });
        let page2 = mock!(aws_sdk_kinesis::Client::list_shards)
            .match_requests(|r| r.next_token() == Some("t1") && r.stream_name().is_none())
            .then_output(move || {
                ListShardsOutput::builder()
                    .shards(shard("shardId-1", None))
                    .build()
            });
        let client = mock_client!(aws_sdk_kinesis, RuleMode::MatchAny, [&page1, &page2]);
        let shards = PollingSource::new(client).list_shards("s").await.unwrap();
        assert_eq!(shards.len(), 2);
        assert!(shards[0].is_closed());
        assert!(!shards[1].is_closed());
    }

    /// Error metadata as the SDK's deserializer fills it from a response.
    fn coded(code: &str) -> aws_sdk_kinesis::error::ErrorMetadata {
        aws_sdk_kinesis::error::ErrorMetadata::builder()
            .code(code)
            .build()
    }

    #[tokio::test]
    async fn get_records_errors_are_classified() {
        let throttled = mock!(aws_sdk_kinesis::Client::get_records).then_error(|| {
            GetRecordsError::ProvisionedThroughputExceededException(
                ProvisionedThroughputExceededException::builder()
                    .message("slow down")
                    .meta(coded("ProvisionedThroughputExceededException"))
                    .build(),
            )
        });
        let expired = mock!(aws_sdk_kinesis::Client::get_records).then_error(|| {
            GetRecordsError::ExpiredIteratorException(
                ExpiredIteratorException::builder()
                    .message("old")
                    .meta(coded("ExpiredIteratorException"))
                    .build(),
            )
        });
        let client = mock_client!(
            aws_sdk_kinesis,
            RuleMode::Sequential,
            [&throttled, &expired]
        );
        let source = PollingSource::new(client);
        let err = source.get_records("it", 10).await.unwrap_err();
        assert_eq!(err.source_kind(), Some(SourceErrorKind::Throttled));
        let err = source.get_records("it", 10).await.unwrap_err();
        assert_eq!(err.source_kind(), Some(SourceErrorKind::ExpiredIterator));
    }

    #[tokio::test]
    async fn server_errors_and_429_are_retried_whatever_their_code() {
        // Codes no table lists: the status decides (this used to stop the shard).
        for (status, kind) in [
            (503, SourceErrorKind::Transient),
            (500, SourceErrorKind::Transient),
            (429, SourceErrorKind::Throttled),
        ] {
            let rule = mock!(aws_sdk_kinesis::Client::get_records)
                .sequence()
                .http_status(
                    status,
                    Some(r#"{"__type":"BrandNewException","message":"new"}"#.to_owned()),
                )
                .build();
            let client = mock_client!(aws_sdk_kinesis, RuleMode::Sequential, [&rule], |c| c
                .retry_config(aws_sdk_kinesis::config::retry::RetryConfig::disabled()));
            let err = PollingSource::new(client)
                .get_records("it", 10)
                .await
                .unwrap_err();
            assert_eq!(err.source_kind(), Some(kind), "{status}: {err}");
            assert!(err.is_retryable(), "{status}: {err}");
        }
    }

    #[tokio::test]
    async fn get_records_converts_records_and_children() {
        let ok = mock!(aws_sdk_kinesis::Client::get_records).then_output(|| {
            GetRecordsOutput::builder()
                .records(
                    aws_sdk_kinesis::types::Record::builder()
                        .sequence_number("49590338271490256608559692538361571095921575989136588898")
                        .data(aws_sdk_kinesis::primitives::Blob::new("hi"))
                        .partition_key("pk")
                        .build()
                        .unwrap(),
                )
                .child_shards(
                    aws_sdk_kinesis::types::ChildShard::builder()
                        .shard_id("shardId-2")
                        .parent_shards("shardId-0")
                        .hash_key_range(hash_range("1"))
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap()
        });
        let client = mock_client!(aws_sdk_kinesis, [&ok]);
        let page = PollingSource::new(client)
            .get_records("it", 10)
            .await
            .unwrap();
        assert_eq!(page.records.len(), 1);
        assert_eq!(&page.records[0].data[..], b"hi");
        assert_eq!(page.records[0].partition_key, "pk");
        assert!(page.next_iterator.is_none());
        assert_eq!(page.child_shards, vec!["shardId-2".to_owned()]);
    }

    /// One shard owning the lower half of the hash keys.
    fn lower_half_shard() -> Shard {
        Shard::builder()
            .shard_id("shardId-0")
            .hash_key_range(hash_range((u128::MAX / 2).to_string()))
            .sequence_number_range(
                SequenceNumberRange::builder()
                    .starting_sequence_number("1")
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap()
    }

    fn kinesis_record(sequence: &str, data: Bytes) -> aws_sdk_kinesis::types::Record {
        aws_sdk_kinesis::types::Record::builder()
            .sequence_number(sequence)
            .data(aws_sdk_kinesis::primitives::Blob::new(data.to_vec()))
            .partition_key("aggregate-key")
            .approximate_arrival_timestamp(DateTime::from_secs(1_700_000_000))
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn aggregated_records_are_split_and_filtered_by_the_shards_range() {
        let mut aggregator = kpl::Aggregator::new();
        aggregator.push(Bytes::from_static(b"{\"n\":0}"), "a", None);
        // Explicit hash keys in the upper half belong to another shard.
        aggregator.push(
            Bytes::from_static(b"{\"n\":1}"),
            "b",
            Some(&u128::MAX.to_string()),
        );
        aggregator.push(Bytes::from_static(b"{\"n\":2}"), "c", Some("5"));
        let aggregate = aggregator.finish();
        let mut inside = kpl::Aggregator::new();
        inside.push(Bytes::from_static(b"{\"n\":0}"), "a", None);
        inside.push(Bytes::from_static(b"{\"n\":2}"), "c", Some("5"));
        let inside = inside.finish();
        let mut corrupt = aggregate.to_vec();
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0xff;
        let corrupt = Bytes::from(corrupt);

        let list = mock!(aws_sdk_kinesis::Client::list_shards).then_output(|| {
            ListShardsOutput::builder()
                .shards(lower_half_shard())
                .build()
        });
        let iterator = mock!(aws_sdk_kinesis::Client::get_shard_iterator).then_output(|| {
            aws_sdk_kinesis::operation::get_shard_iterator::GetShardIteratorOutput::builder()
                .shard_iterator("AAAA+/=")
                .build()
        });
        let page = {
            let (inside, aggregate, corrupt) = (inside.clone(), aggregate.clone(), corrupt.clone());
            mock!(aws_sdk_kinesis::Client::get_records)
                .match_requests(|r| r.shard_iterator() == Some("AAAA+/="))
                .then_output(move || {
                    GetRecordsOutput::builder()
                        .records(kinesis_record("6", inside.clone()))
                        .records(kinesis_record("7", aggregate.clone()))
                        .records(kinesis_record("8", Bytes::from_static(b"plain")))
                        .records(kinesis_record("9", corrupt.clone()))
                        .next_shard_iterator("BBBB")
                        .build()
                        .unwrap()
                })
        };
        let client = mock_client!(
            aws_sdk_kinesis,
            RuleMode::MatchAny,
            [&list, &iterator, &page]
        );
        let source = PollingSource::new(client);
        let shards = source.list_shards("s").await.unwrap();
        assert_eq!(
            shards[0].hash_key_range,
            Some(HashKeyRange {
                start: 0,
                end: u128::MAX / 2
            })
        );
        let it = source
            .shard_iterator("s", "shardId-0", &StartPosition::TrimHorizon)
            .await
            .unwrap();
        let page = source.get_records(&it, 100).await.unwrap();
        let got: Vec<_> = page
            .records
            .iter()
            .map(|r| {
                (
                    r.sequence_number.to_string(),
                    r.sub_sequence_number,
                    r.partition_key.as_str(),
                    r.explicit_hash_key.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("6".to_owned(), Some(0), "a", None),
                ("6".to_owned(), Some(1), "c", Some("5")),
                // Sub-record 1 of aggregate 7 lies outside the shard: the
                // whole aggregate is dropped, as the KCL drops it.
                ("8".to_owned(), None, "aggregate-key", None),
                // A bad checksum: handed on whole, as the KCL does.
                ("9".to_owned(), None, "aggregate-key", None),
            ]
        );
        assert_eq!(&page.records[1].data[..], b"{\"n\":2}");
        assert_eq!(page.records[3].data, corrupt);
        assert_eq!(
            page.records[0].approximate_arrival,
            SystemTime::try_from(DateTime::from_secs(1_700_000_000)).ok()
        );
        // The next iterator carries the shard along; Kinesis sees it bare.
        let next = page.next_iterator.unwrap();
        let tagged = Tagged::parse(&next).unwrap();
        assert_eq!(
            (tagged.stream, tagged.shard_id, tagged.iterator),
            ("s", "shardId-0", "BBBB")
        );
        assert_eq!(tagged.range, shards[0].hash_key_range);
    }

    #[tokio::test]
    async fn deaggregation_can_be_switched_off() {
        let aggregate = kpl::aggregate(&[Record::new("x", "k", 1u64), Record::new("y", "k", 1u64)]);
        let page = {
            let aggregate = aggregate.clone();
            mock!(aws_sdk_kinesis::Client::get_records).then_output(move || {
                GetRecordsOutput::builder()
                    .records(kinesis_record("7", aggregate.clone()))
                    .build()
                    .unwrap()
            })
        };
        let iterator = mock!(aws_sdk_kinesis::Client::get_shard_iterator).then_output(|| {
            aws_sdk_kinesis::operation::get_shard_iterator::GetShardIteratorOutput::builder()
                .shard_iterator("raw")
                .build()
        });
        let client = mock_client!(aws_sdk_kinesis, RuleMode::MatchAny, [&page, &iterator]);
        let off = PollingSource::new(client.clone()).deaggregate(false);
        let it = off
            .shard_iterator("s", "shardId-0", &StartPosition::Latest)
            .await
            .unwrap();
        assert_eq!(it, "raw");
        let records = off.get_records(&it, 10).await.unwrap().records;
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].data, aggregate);
        // On (the default), even an iterator from elsewhere is de-aggregated.
        let records = PollingSource::new(client)
            .get_records("raw", 10)
            .await
            .unwrap()
            .records;
        assert_eq!(records.len(), 2);
        assert_eq!(&records[1].data[..], b"y");
    }
}
