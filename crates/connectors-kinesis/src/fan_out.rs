//! The enhanced fan-out retrieval: a [`RecordSource`] over
//! `SubscribeToShard`.
//!
//! The loop still asks for records page by page: each `get_records` call
//! takes the next event of the shard's subscription. The "iterator" the
//! loop carries from page to page is the position the next event starts at
//! (tagged with the shard, as the polling iterators are), so everything the
//! loop does with iterators (start at a checkpoint, resume after a failure,
//! end at the shard's end) works unchanged: a call whose position is the
//! one the open subscription stands at reads on; any other position (a
//! restart from the checkpoint, a retry after a cut connection) subscribes
//! anew from there.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use aws_sdk_kinesis::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::operation::subscribe_to_shard::SubscribeToShardOutput;
use aws_sdk_kinesis::primitives::DateTime;
use aws_sdk_kinesis::types::error::SubscribeToShardEventStreamError;
use aws_sdk_kinesis::types::{
    ShardIteratorType, StartingPosition, SubscribeToShardEvent, SubscribeToShardEventStream,
};
use kinesis_connectors_aws::{ErrorClass, Service};
use kinesis_connectors_core::{
    Delivery, Error, RecordSource, RecordsPage, Result, SequenceNumber, ShardInfo, SourceErrorKind,
    StartPosition,
};
use tokio::time::Instant;

use crate::FanOutConsumer;
use crate::polling::{PollingSource, Tagged, classify, record_from_sdk, source_kind};

/// Kinesis ends every subscription after 5 minutes; the source subscribes
/// again from the last event's continuation a little before that, so the
/// server's cut is not part of the normal path.
pub const SESSION_LIMIT: Duration = Duration::from_secs(290);

/// How long one `get_records` waits for the next event before it returns
/// an empty page (the loop's read timeout is 30 s by default).
pub const EVENT_WAIT: Duration = Duration::from_secs(1);

/// How often a caught-up subscription of a closed shard may ask `GetRecords`
/// whether the shard was read to its end.
const END_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// A subscription no call read for this long is closed at the next
/// discovery round.
const IDLE_SESSION: Duration = Duration::from_secs(10);

/// Counter of `SubscribeToShard` calls that opened a subscription, labelled
/// `stream` and `shard_id`: one per shard per [`SESSION_LIMIT`] in a calm
/// run, more after cut connections and restarts.
pub const SUBSCRIPTIONS_METRIC: &str = "kinesis_connectors_fan_out_subscriptions_total";

/// Reads a stream with enhanced fan-out: `SubscribeToShard` pushes each
/// shard's records to this consumer's own registration at up to 2 MB/s per
/// shard, whatever other consumers of the stream read, with ~70 ms
/// propagation instead of the polling interval. Hand it to
/// [`StreamConsumer`](kinesis_connectors_core::StreamConsumer) as its
/// source, in place of a [`PollingSource`].
///
/// Polling stays the default retrieval: fan-out needs a registered
/// consumer ([`FanOutConsumer`]), which AWS bills per consumer-shard hour
/// and per GB and limits to 20 per stream, and an HTTP/2 connection to
/// Kinesis (the SDK's default client negotiates it). Choose fan-out when
/// several applications read one stream, or when latency matters.
///
/// What the loop guarantees with polling holds here too: checkpoints after
/// emit, leases, supervision, parents before children (each shard's last
/// event carries its `ChildShards`), graceful shutdown, KPL de-aggregation
/// (the same rules as [`PollingSource::deaggregate`]) and replay-stable
/// batches.
///
/// - **Sessions**: each subscription is renewed from the last event's
///   continuation sequence number after [`SESSION_LIMIT`], before Kinesis
///   ends it; a subscription the server or the network cut is renewed from
///   the same place after the loop's backoff. `ResourceInUseException` (a
///   subscription of this consumer on the shard is still open, in this or
///   another process) and throttling are backed off and retried.
/// - **Backpressure**: an event is read only when the shard's loop asks for
///   the next page, which it does once the previous page is processed and
///   the worker's memory budget has room. A slow emitter leaves the
///   subscription unread, and HTTP/2 flow control stops the server from
///   sending more: per shard, at most one decoded event plus the
///   connection's flow-control window is buffered.
/// - The `limit` of `get_records` does not apply: Kinesis sizes the events.
///
/// ```no_run
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use kinesis_connectors_core::{MemoryCheckpointStore, Pipeline, StreamConsumer, Utf8Transformer};
/// use kinesis_connectors_kinesis::{FanOutConsumer, FanOutSource};
/// use kinesis_connectors_testkit::RecordingEmitter;
///
/// let config = aws_config::load_from_env().await;
/// let client = aws_sdk_kinesis::Client::new(&config);
/// let registration = FanOutConsumer::register(&client, "orders", "orders-archiver").await?;
/// let consumer = StreamConsumer::builder(
///     "orders-archiver",
///     "orders",
///     Arc::new(FanOutSource::new(client, &registration)),
///     Arc::new(MemoryCheckpointStore::new()),
///     |_ctx: &_| Pipeline::builder(Utf8Transformer, Arc::new(RecordingEmitter::new())).build(),
/// )
/// .build()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct FanOutSource {
    client: aws_sdk_kinesis::Client,
    consumer_arn: String,
    stream: String,
    /// Lists shards, caches their hash-key ranges and de-aggregates, as the
    /// polling retrieval does.
    polling: PollingSource,
    /// The open subscription of each shard being read, between two calls.
    sessions: Arc<Mutex<HashMap<String, Session>>>,
    /// The shards the last `list_shards` found closed by resharding, with
    /// the children that listing showed.
    closed: Arc<Mutex<HashMap<String, Vec<String>>>>,
    session_limit: Duration,
    event_wait: Duration,
}

/// An open subscription, between two `get_records` calls.
struct Session {
    /// Holds the event stream (whose receiver type the SDK does not name).
    subscription: SubscribeToShardOutput,
    opened: Instant,
    /// The token a call carries to read on from this subscription.
    resume: String,
    /// When a call last put the subscription back.
    used: Instant,
    /// When the source last asked `GetRecords` whether this closed shard
    /// was read to its end (see [`FanOutSource::ended_without_event`]).
    end_checked: Option<Instant>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("opened", &self.opened)
            .field("resume", &self.resume)
            .finish_non_exhaustive()
    }
}

impl FanOutSource {
    /// A source reading the stream of `consumer` through `client`.
    pub fn new(client: aws_sdk_kinesis::Client, consumer: &FanOutConsumer) -> Self {
        Self {
            polling: PollingSource::new(client.clone()),
            client,
            consumer_arn: consumer.arn().to_owned(),
            stream: consumer.stream_name().to_owned(),
            sessions: Arc::default(),
            closed: Arc::default(),
            session_limit: SESSION_LIMIT,
            event_wait: EVENT_WAIT,
        }
    }

    /// Whether to de-aggregate KPL records (default: yes), as
    /// [`PollingSource::deaggregate`] describes.
    pub fn deaggregate(mut self, on: bool) -> Self {
        self.polling = self.polling.deaggregate(on);
        self
    }

    /// How long one subscription is read before the source subscribes again
    /// from its continuation (default [`SESSION_LIMIT`]; at most 5 minutes,
    /// when Kinesis ends it; at least 5 s, as Kinesis refuses a new
    /// subscription sooner after the last).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] outside 5 s..=5 min.
    pub fn session_limit(mut self, limit: Duration) -> Result<Self> {
        if !(Duration::from_secs(5)..=Duration::from_secs(300)).contains(&limit) {
            return Err(Error::Config(format!(
                "session_limit must be within 5 s..=5 min, got {limit:?}"
            )));
        }
        self.session_limit = limit;
        Ok(self)
    }

    /// How long one `get_records` waits for an event before it returns an
    /// empty page (default [`EVENT_WAIT`]); keep it well below the loop's
    /// read timeout.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when zero or over 10 s.
    pub fn event_wait(mut self, wait: Duration) -> Result<Self> {
        if wait.is_zero() || wait > Duration::from_secs(10) {
            return Err(Error::Config(format!(
                "event_wait must be within (0, 10 s], got {wait:?}"
            )));
        }
        self.event_wait = wait;
        Ok(self)
    }

    fn check_stream(&self, stream: &str) -> Result<()> {
        if stream == self.stream {
            return Ok(());
        }
        Err(Error::Config(format!(
            "this FanOutSource reads stream {} (the stream of consumer {}), not {stream}",
            self.stream, self.consumer_arn
        )))
    }

    /// The open subscription a call with `token` reads on, if there is one
    /// and it is not due for renewal; any other subscription of the shard is
    /// closed (dropping it resets its stream).
    fn take_session(&self, shard_id: &str, token: &str) -> Option<Session> {
        let session = self.sessions.lock().ok()?.remove(shard_id)?;
        (session.resume == token && session.opened.elapsed() < self.session_limit)
            .then_some(session)
    }

    fn keep(&self, shard_id: &str, mut session: Session) {
        session.used = Instant::now();
        if let Ok(mut sessions) = self.sessions.lock() {
            sessions.insert(shard_id.to_owned(), session);
        }
    }

    /// Whether a closed shard whose subscription is caught up was read to
    /// its end, and if so its children.
    ///
    /// Kinesis ends a closed shard's subscription with an event that names
    /// the children; an emulator may keep it open with empty events
    /// instead (kinesis-mock does). Once `ListShards` showed the shard
    /// closed, `GetRecords` from the subscription's position says whether
    /// anything is left, at most once a second: the subscription alone
    /// cannot tell "caught up" from "ended".
    async fn ended_without_event(
        &self,
        tagged: &Tagged<'_>,
        position: &StartPosition,
        session: &mut Session,
    ) -> Result<Option<Vec<String>>> {
        let listed_children = self
            .closed
            .lock()
            .ok()
            .and_then(|closed| closed.get(tagged.shard_id).cloned());
        let due = session
            .end_checked
            .is_none_or(|at| at.elapsed() >= END_CHECK_INTERVAL);
        let Some(listed_children) = listed_children.filter(|_| due) else {
            return Ok(None);
        };
        session.end_checked = Some(Instant::now());
        let iterator = self
            .polling
            .shard_iterator(tagged.stream, tagged.shard_id, position)
            .await?;
        let probe = self.polling.get_records(&iterator, 1).await?;
        if probe.next_iterator.is_some() || !probe.records.is_empty() {
            return Ok(None);
        }
        tracing::debug!(
            stream = tagged.stream,
            shard_id = tagged.shard_id,
            "closed shard read to its end; its subscription named no children"
        );
        Ok(Some(if probe.child_shards.is_empty() {
            listed_children
        } else {
            probe.child_shards
        }))
    }

    async fn subscribe(
        &self,
        shard_id: &str,
        position: &StartPosition,
        token: &str,
    ) -> Result<Session> {
        let output = self
            .client
            .subscribe_to_shard()
            .consumer_arn(&self.consumer_arn)
            .shard_id(shard_id)
            .starting_position(starting_position(position)?)
            .send()
            .await
            .map_err(classify)?;
        tracing::debug!(stream = %self.stream, shard_id, ?position, "subscribed to shard");
        ::metrics::counter!(
            SUBSCRIPTIONS_METRIC,
            "stream" => self.stream.clone(),
            "shard_id" => shard_id.to_owned()
        )
        .increment(1);
        Ok(Session {
            subscription: output,
            opened: Instant::now(),
            used: Instant::now(),
            resume: token.to_owned(),
            end_checked: None,
        })
    }

    /// The page for one event; keeps the subscription for the next call
    /// unless the shard ended.
    async fn page(
        &self,
        tagged: &Tagged<'_>,
        position: &StartPosition,
        mut session: Session,
        event: SubscribeToShardEvent,
    ) -> Result<RecordsPage> {
        let caught_up = event.records.is_empty() && event.millis_behind_latest <= 0;
        let named_no_children = event.child_shards.as_ref().is_none_or(Vec::is_empty);
        if caught_up
            && named_no_children
            && let Some(children) = self
                .ended_without_event(tagged, position, &mut session)
                .await?
        {
            return Ok(RecordsPage {
                records: Vec::new(),
                next_iterator: None,
                millis_behind_latest: Some(0),
                child_shards: children,
            });
        }
        let records = event
            .records
            .into_iter()
            .map(record_from_sdk)
            .collect::<Result<Vec<_>>>()?;
        let records = self.polling.unpack(tagged, records);
        let child_shards: Vec<String> = event
            .child_shards
            .unwrap_or_default()
            .into_iter()
            .map(|child| child.shard_id)
            .collect();
        // The last event of a closed shard has no continuation and names
        // the children; the server ends the subscription after it.
        let ended = event.continuation_sequence_number.is_empty() || !child_shards.is_empty();
        let next_iterator = if ended {
            None
        } else {
            let next = StartPosition::AfterSequence(SequenceNumber::parse(
                &event.continuation_sequence_number,
            )?);
            let token = tagged.tag(&encode_position(&next));
            session.resume.clone_from(&token);
            self.keep(tagged.shard_id, session);
            Some(token)
        };
        Ok(RecordsPage {
            records,
            next_iterator,
            millis_behind_latest: Some(event.millis_behind_latest),
            child_shards,
        })
    }
}

/// A page without records that leaves the position where it was.
fn nothing_yet(token: &str, millis_behind_latest: Option<i64>) -> RecordsPage {
    RecordsPage {
        records: Vec::new(),
        next_iterator: Some(token.to_owned()),
        millis_behind_latest,
        child_shards: Vec::new(),
    }
}

#[async_trait]
impl RecordSource for FanOutSource {
    async fn list_shards(&self, stream: &str) -> Result<Vec<ShardInfo>> {
        self.check_stream(stream)?;
        let shards = self.polling.list_shards(stream).await?;
        if let Ok(mut closed) = self.closed.lock() {
            *closed = closed_with_children(&shards);
        }
        // Discovery runs every round: the time to close subscriptions no
        // shard task reads any more (its lease moved to another worker,
        // whose subscription this one would hold off). One that is merely
        // waiting for a slow emitter is opened again where it stood.
        if let Ok(mut sessions) = self.sessions.lock() {
            sessions.retain(|_, session| {
                session.opened.elapsed() < self.session_limit
                    && session.used.elapsed() < IDLE_SESSION
            });
        }
        Ok(shards)
    }

    async fn shard_iterator(
        &self,
        stream: &str,
        shard_id: &str,
        position: &StartPosition,
    ) -> Result<String> {
        self.check_stream(stream)?;
        let tagged = Tagged {
            stream,
            shard_id,
            range: self.polling.range(stream, shard_id).await?,
            iterator: "",
        };
        Ok(tagged.tag(&encode_position(position)))
    }

    async fn get_records(&self, iterator: &str, _limit: u32) -> Result<RecordsPage> {
        let tagged = Tagged::parse(iterator).ok_or_else(|| not_a_token(iterator))?;
        let position = decode_position(tagged.iterator).ok_or_else(|| not_a_token(iterator))?;
        let mut session = match self.take_session(tagged.shard_id, iterator) {
            Some(session) => session,
            None => self.subscribe(tagged.shard_id, &position, iterator).await?,
        };
        match tokio::time::timeout(self.event_wait, session.subscription.event_stream.recv()).await
        {
            Ok(Ok(Some(SubscribeToShardEventStream::SubscribeToShardEvent(event)))) => {
                self.page(&tagged, &position, session, event).await
            }
            // Nothing pushed within the wait: caught up.
            Err(_elapsed) => {
                self.keep(tagged.shard_id, session);
                Ok(nothing_yet(iterator, Some(0)))
            }
            // An event kind newer than this SDK: skipped.
            Ok(Ok(Some(_))) => {
                self.keep(tagged.shard_id, session);
                Ok(nothing_yet(iterator, None))
            }
            // The server ended the subscription: the next call subscribes
            // again from the same position.
            Ok(Ok(None)) => {
                tracing::debug!(
                    stream = tagged.stream,
                    shard_id = tagged.shard_id,
                    "subscription ended by the server"
                );
                Ok(nothing_yet(iterator, None))
            }
            Ok(Err(error)) => Err(classify_event_error(error)),
        }
    }

    fn delivery(&self) -> Delivery {
        Delivery::Pushed
    }
}

/// Each closed shard of a listing, with the listed shards that name it as
/// a parent.
fn closed_with_children(shards: &[ShardInfo]) -> HashMap<String, Vec<String>> {
    shards
        .iter()
        .filter(|shard| shard.is_closed())
        .map(|parent| {
            let children = shards
                .iter()
                .filter(|shard| shard.parents().contains(&parent.shard_id))
                .map(|shard| shard.shard_id.clone())
                .collect();
            (parent.shard_id.clone(), children)
        })
        .collect()
}

fn not_a_token(text: &str) -> Error {
    Error::source(
        SourceErrorKind::Other,
        format!("{text:?} is not a position handed out by FanOutSource::shard_iterator"),
    )
}

/// A position as the text part of a token.
fn encode_position(position: &StartPosition) -> String {
    match position {
        StartPosition::TrimHorizon => "TRIM_HORIZON".to_owned(),
        StartPosition::Latest => "LATEST".to_owned(),
        StartPosition::AtTimestamp(at) => {
            let millis = at
                .duration_since(UNIX_EPOCH)
                .map_or(0, |since| since.as_millis());
            format!("AT_TIMESTAMP:{millis}")
        }
        StartPosition::AtSequence(seq) => format!("AT_SEQUENCE_NUMBER:{seq}"),
        StartPosition::AfterSequence(seq) => format!("AFTER_SEQUENCE_NUMBER:{seq}"),
    }
}

fn decode_position(text: &str) -> Option<StartPosition> {
    Some(match text.split_once(':') {
        None if text == "TRIM_HORIZON" => StartPosition::TrimHorizon,
        None if text == "LATEST" => StartPosition::Latest,
        Some(("AT_TIMESTAMP", millis)) => {
            StartPosition::AtTimestamp(UNIX_EPOCH + Duration::from_millis(millis.parse().ok()?))
        }
        Some(("AT_SEQUENCE_NUMBER", seq)) => {
            StartPosition::AtSequence(SequenceNumber::parse(seq).ok()?)
        }
        Some(("AFTER_SEQUENCE_NUMBER", seq)) => {
            StartPosition::AfterSequence(SequenceNumber::parse(seq).ok()?)
        }
        _ => return None,
    })
}

fn starting_position(position: &StartPosition) -> Result<StartingPosition> {
    let builder = StartingPosition::builder();
    let builder = match position {
        StartPosition::TrimHorizon => builder.r#type(ShardIteratorType::TrimHorizon),
        StartPosition::Latest => builder.r#type(ShardIteratorType::Latest),
        StartPosition::AtTimestamp(at) => builder
            .r#type(ShardIteratorType::AtTimestamp)
            .timestamp(DateTime::from(*at)),
        StartPosition::AtSequence(seq) => builder
            .r#type(ShardIteratorType::AtSequenceNumber)
            .sequence_number(seq.as_str()),
        StartPosition::AfterSequence(seq) => builder
            .r#type(ShardIteratorType::AfterSequenceNumber)
            .sequence_number(seq.as_str()),
    };
    builder
        .build()
        .map_err(|error| Error::source(SourceErrorKind::Other, error.to_string()))
}

/// An error inside the event stream: a cut connection or an unreadable
/// frame is transient (the next call subscribes again); an error event is
/// judged by its exception type, as a response with that code would be
/// (`ResourceInUseException`: another subscription of this consumer holds
/// the shard; back off and subscribe again).
fn classify_event_error<R: std::fmt::Debug>(
    error: SdkError<SubscribeToShardEventStreamError, R>,
) -> Error {
    let class = match &error {
        SdkError::ServiceError(service) => event_error_code(service.err())
            .and_then(|code| Service::Kinesis.class_of(code))
            .unwrap_or(ErrorClass::Other),
        _ => ErrorClass::Transient,
    };
    Error::source(
        source_kind(class),
        format!(
            "SubscribeToShard event stream: {}",
            DisplayErrorContext(error)
        ),
    )
}

/// The code of an error event: the SDK puts the exception type into the
/// variant, not always into the metadata.
fn event_error_code(error: &SubscribeToShardEventStreamError) -> Option<&str> {
    use SubscribeToShardEventStreamError as E;
    error.code().or(match error {
        E::ResourceInUseException(_) => Some("ResourceInUseException"),
        E::ResourceNotFoundException(_) => Some("ResourceNotFoundException"),
        E::InternalFailureException(_) => Some("InternalFailureException"),
        E::KmsThrottlingException(_) => Some("KMSThrottlingException"),
        E::KmsAccessDeniedException(_) => Some("KMSAccessDeniedException"),
        E::KmsDisabledException(_) => Some("KMSDisabledException"),
        E::KmsInvalidStateException(_) => Some("KMSInvalidStateException"),
        E::KmsNotFoundException(_) => Some("KMSNotFoundException"),
        E::KmsOptInRequired(_) => Some("KMSOptInRequired"),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_through_tokens() {
        let seq = SequenceNumber::parse("49590338271490256608559692538361571095921575989136588898")
            .unwrap();
        for position in [
            StartPosition::TrimHorizon,
            StartPosition::Latest,
            StartPosition::AtTimestamp(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)),
            StartPosition::AtSequence(seq.clone()),
            StartPosition::AfterSequence(seq),
        ] {
            assert_eq!(decode_position(&encode_position(&position)), Some(position));
        }
        assert_eq!(decode_position("AFTER_SEQUENCE_NUMBER:x"), None);
        assert_eq!(decode_position("EARLIEST"), None);
    }

    #[test]
    fn starting_positions_carry_what_subscribe_to_shard_needs() {
        let seq = SequenceNumber::parse("42").unwrap();
        let after = starting_position(&StartPosition::AfterSequence(seq)).unwrap();
        assert_eq!(after.r#type(), &ShardIteratorType::AfterSequenceNumber);
        assert_eq!(after.sequence_number(), Some("42"));
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let stamped = starting_position(&StartPosition::AtTimestamp(at)).unwrap();
        assert_eq!(stamped.timestamp(), Some(&DateTime::from(at)));
    }

    fn source() -> FanOutSource {
        let config = aws_sdk_kinesis::Config::builder()
            .behavior_version(aws_sdk_kinesis::config::BehaviorVersion::latest())
            .region(aws_sdk_kinesis::config::Region::new("us-east-1"))
            .build();
        let consumer = FanOutConsumer::for_tests(
            "c",
            "arn:aws:kinesis:us-east-1:000000000000:stream/orders/consumer/c:1",
            "arn:aws:kinesis:us-east-1:000000000000:stream/orders",
        );
        FanOutSource::new(aws_sdk_kinesis::Client::from_conf(config), &consumer)
    }

    #[tokio::test]
    async fn another_stream_is_a_configuration_error() {
        let error = source().list_shards("payments").await.unwrap_err();
        assert!(matches!(error, Error::Config(_)), "{error}");
        assert!(error.to_string().contains("orders"), "{error}");
    }

    #[tokio::test]
    async fn a_token_of_another_source_is_refused() {
        let error = source().get_records("AAAA", 10).await.unwrap_err();
        assert_eq!(error.source_kind(), Some(SourceErrorKind::Other));
    }

    #[test]
    fn error_events_are_judged_by_their_exception_type() {
        use aws_sdk_kinesis::types::error::{ResourceInUseException, ResourceNotFoundException};
        let event = |error| SdkError::<_, ()>::service_error(error, ());
        let in_use = classify_event_error(event(
            SubscribeToShardEventStreamError::ResourceInUseException(
                ResourceInUseException::builder()
                    .message("another subscription")
                    .build(),
            ),
        ));
        assert_eq!(
            in_use.source_kind(),
            Some(SourceErrorKind::Transient),
            "{in_use}"
        );
        let gone = classify_event_error(event(
            SubscribeToShardEventStreamError::ResourceNotFoundException(
                ResourceNotFoundException::builder()
                    .message("no shard")
                    .build(),
            ),
        ));
        assert_eq!(
            gone.source_kind(),
            Some(SourceErrorKind::NotFound),
            "{gone}"
        );
    }

    #[test]
    fn limits_are_checked() {
        assert!(source().session_limit(Duration::from_secs(1)).is_err());
        assert!(source().session_limit(Duration::from_secs(301)).is_err());
        assert!(source().session_limit(Duration::from_secs(60)).is_ok());
        assert!(source().event_wait(Duration::ZERO).is_err());
        assert!(source().event_wait(Duration::from_millis(500)).is_ok());
    }

    #[test]
    fn a_listing_names_each_closed_shards_children() {
        let closed = |id: &str| ShardInfo {
            ending_sequence_number: Some(SequenceNumber::parse("9").unwrap()),
            ..ShardInfo::open(id)
        };
        let child = |id: &str, parent: &str, adjacent: Option<&str>| ShardInfo {
            parent_shard_id: Some(parent.to_owned()),
            adjacent_parent_shard_id: adjacent.map(str::to_owned),
            ..ShardInfo::open(id)
        };
        // s0 split into s2 and s3; s1 and s3 merged into s4.
        let mut s3 = child("s3", "s0", None);
        s3.ending_sequence_number = Some(SequenceNumber::parse("9").unwrap());
        let listing = vec![
            closed("s0"),
            closed("s1"),
            child("s2", "s0", None),
            s3,
            child("s4", "s1", Some("s3")),
        ];
        let map = closed_with_children(&listing);
        assert_eq!(map.len(), 3);
        assert_eq!(map["s0"], vec!["s2".to_owned(), "s3".to_owned()]);
        assert_eq!(map["s1"], vec!["s4".to_owned()]);
        assert_eq!(map["s3"], vec!["s4".to_owned()]);
    }

    #[test]
    fn it_is_a_pushing_source() {
        assert_eq!(source().delivery(), Delivery::Pushed);
    }
}
