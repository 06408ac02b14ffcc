//! The polling retrieval: a [`RecordSource`] over `ListShards`,
//! `GetShardIterator` and `GetRecords`.

use std::time::SystemTime;

use async_trait::async_trait;
use aws_sdk_kinesis::config::http::HttpResponse;
use aws_sdk_kinesis::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::primitives::DateTime;
use aws_sdk_kinesis::types::ShardIteratorType;
use bytes::Bytes;
use kinesis_connectors_aws::{ErrorClass, Service};

use kinesis_connectors_core::{
    Error, Record, RecordSource, RecordsPage, Result, SequenceNumber, ShardInfo, SourceErrorKind,
    StartPosition,
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
}

impl PollingSource {
    /// A source reading through `client`.
    pub fn new(client: aws_sdk_kinesis::Client) -> Self {
        Self { client }
    }
}

/// Maps an SDK error to the loop's classes with the workspace's shared
/// classification: throttling and network trouble are retried, an expired
/// iterator is renewed, the rest stops the shard.
fn classify<E>(err: SdkError<E, HttpResponse>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let kind = match kinesis_connectors_aws::classify(Service::Kinesis, &err).class {
        ErrorClass::Throttling => SourceErrorKind::Throttled,
        ErrorClass::Transient => SourceErrorKind::Transient,
        ErrorClass::ExpiredIterator => SourceErrorKind::ExpiredIterator,
        ErrorClass::NotFound => SourceErrorKind::NotFound,
        _ => SourceErrorKind::Other,
    };
    Error::source(kind, DisplayErrorContext(err).to_string())
}

fn parse_sequence(text: &str) -> Result<SequenceNumber> {
    SequenceNumber::parse(text)
}

#[async_trait]
impl RecordSource for PollingSource {
    async fn list_shards(&self, stream: &str) -> Result<Vec<ShardInfo>> {
        let mut shards = Vec::new();
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
                shards.push(ShardInfo {
                    shard_id: shard.shard_id().to_owned(),
                    parent_shard_id: shard.parent_shard_id().map(str::to_owned),
                    adjacent_parent_shard_id: shard.adjacent_parent_shard_id().map(str::to_owned),
                    ending_sequence_number: ending,
                });
            }
            match output.next_token() {
                Some(token) if !token.is_empty() => next_token = Some(token.to_owned()),
                _ => return Ok(shards),
            }
        }
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
        output.shard_iterator.ok_or_else(|| {
            Error::source(
                SourceErrorKind::Other,
                format!("GetShardIterator returned no iterator for shard {shard_id}"),
            )
        })
    }

    async fn get_records(&self, iterator: &str, limit: u32) -> Result<RecordsPage> {
        let output = self
            .client
            .get_records()
            .shard_iterator(iterator)
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(classify)?;
        let mut records = Vec::with_capacity(output.records.len());
        for record in output.records {
            records.push(Record {
                sequence_number: parse_sequence(&record.sequence_number)?,
                data: Bytes::from(record.data.into_inner()),
                partition_key: record.partition_key.unwrap_or_default(),
                sub_sequence_number: None,
                approximate_arrival: record
                    .approximate_arrival_timestamp
                    .and_then(|at| SystemTime::try_from(at).ok()),
                explicit_hash_key: None,
            });
        }
        Ok(RecordsPage {
            records,
            next_iterator: output.next_shard_iterator,
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

    #[tokio::test]
    async fn list_shards_follows_every_page() {
        let shard = |id: &str, end: Option<&str>| {
            Shard::builder()
                .shard_id(id)
                .hash_key_range(
                    aws_sdk_kinesis::types::HashKeyRange::builder()
                        .starting_hash_key("0")
                        .ending_hash_key("1")
                        .build()
                        .unwrap(),
                )
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
                        .hash_key_range(
                            aws_sdk_kinesis::types::HashKeyRange::builder()
                                .starting_hash_key("0")
                                .ending_hash_key("1")
                                .build()
                                .unwrap(),
                        )
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
}
