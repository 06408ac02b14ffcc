//! Enhanced fan-out consumers: registering one on a stream, finding it,
//! waiting until it is ACTIVE, and deregistering it.
//!
//! Nothing here runs by itself: the [`FanOutSource`](crate::FanOutSource)
//! reads through a consumer the application registered, and never
//! deregisters it, because other processes (other workers of the same
//! application, a deployment that is starting) may share the registration.

use std::time::Duration;

use aws_sdk_kinesis::config::http::HttpResponse;
use aws_sdk_kinesis::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::types::ConsumerStatus;
use kinesis_connectors_aws::Service;
use tokio::time::{Instant, sleep};

use crate::{Error, Result};

/// How long [`FanOutConsumer::register`] and [`FanOutConsumer::from_arn`]
/// wait for a consumer to become ACTIVE. AWS takes seconds; the bound only
/// keeps a stuck registration from hanging the caller.
pub const ACTIVE_WAIT: Duration = Duration::from_secs(120);

/// How often the status is asked while waiting for ACTIVE.
const STATUS_POLL: Duration = Duration::from_millis(500);

/// An enhanced fan-out consumer registered on a stream (what
/// `RegisterStreamConsumer` creates): each one gets its own 2 MB/s per
/// shard, pushed with `SubscribeToShard`, whatever the stream's other
/// consumers read.
///
/// Registration is explicit and deregistration is never automatic: register
/// once per application (at deployment, or at every start: registering a
/// name that exists returns the existing consumer), hand the consumer to
/// [`FanOutSource::new`](crate::FanOutSource::new), and call
/// [`deregister`](Self::deregister) only when no process of the application
/// reads through it any more. A stream takes at most 20 consumers, and AWS
/// bills each consumer per shard-hour.
///
/// ```no_run
/// # async fn example() -> Result<(), kinesis_connectors_kinesis::Error> {
/// use kinesis_connectors_kinesis::{FanOutConsumer, FanOutSource};
/// let config = aws_config::load_from_env().await;
/// let client = aws_sdk_kinesis::Client::new(&config);
/// let consumer = FanOutConsumer::register(&client, "orders", "orders-archiver").await?;
/// let source = FanOutSource::new(client.clone(), &consumer);
/// // … later, once no worker of "orders-archiver" runs any more:
/// consumer.deregister(&client).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FanOutConsumer {
    name: String,
    arn: String,
    stream_arn: String,
}

impl FanOutConsumer {
    /// Registers the consumer `name` on `stream`, or finds it if it is
    /// registered already, and waits until it is ACTIVE (at most
    /// [`ACTIVE_WAIT`]).
    ///
    /// # Errors
    ///
    /// [`Error::Registration`] when a call fails (the stream does not
    /// exist, access is denied, the stream has 20 consumers already, …);
    /// [`Error::NotActive`] when the consumer is being deleted or did not
    /// become ACTIVE in time.
    pub async fn register(
        client: &aws_sdk_kinesis::Client,
        stream: &str,
        name: &str,
    ) -> Result<Self> {
        let stream_arn = stream_arn(client, stream, name).await?;
        let registered = client
            .register_stream_consumer()
            .stream_arn(&stream_arn)
            .consumer_name(name)
            .send()
            .await;
        let arn = match registered {
            Ok(output) => output.consumer.map(|consumer| consumer.consumer_arn),
            // Registered already (by an earlier start, or another worker a
            // moment ago): use that registration.
            Err(error) if error.code() == Some("ResourceInUseException") => None,
            Err(error) => return Err(registration_error("RegisterStreamConsumer", name, error)),
        };
        let consumer = match arn {
            Some(arn) => Self {
                name: name.to_owned(),
                arn,
                stream_arn,
            },
            None => {
                Self::describe(client, Lookup::Name(&stream_arn, name))
                    .await?
                    .0
            }
        };
        consumer.wait_until_active(client).await?;
        Ok(consumer)
    }

    /// The consumer `name` of `stream` as it is now, in whatever status;
    /// `None` when no such consumer is registered. Waits for nothing.
    ///
    /// # Errors
    ///
    /// [`Error::Registration`] when a call fails (the stream does not
    /// exist, access is denied, …).
    pub async fn find(
        client: &aws_sdk_kinesis::Client,
        stream: &str,
        name: &str,
    ) -> Result<Option<Self>> {
        let stream_arn = stream_arn(client, stream, name).await?;
        match Self::describe(client, Lookup::Name(&stream_arn, name)).await {
            Ok((consumer, _)) => Ok(Some(consumer)),
            Err(Error::Registration { code, .. })
                if code.as_deref() == Some("ResourceNotFoundException") =>
            {
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }

    /// Every consumer registered on `stream`, with its status (`ACTIVE`,
    /// `CREATING`, `DELETING`), following all pages.
    ///
    /// # Errors
    ///
    /// [`Error::Registration`] when a call fails.
    pub async fn list(
        client: &aws_sdk_kinesis::Client,
        stream: &str,
    ) -> Result<Vec<(Self, ConsumerStatus)>> {
        let stream_arn = stream_arn(client, stream, "(listing)").await?;
        let mut consumers = Vec::new();
        let mut next_token: Option<String> = None;
        loop {
            let output = client
                .list_stream_consumers()
                .stream_arn(&stream_arn)
                .set_next_token(next_token.take())
                .send()
                .await
                .map_err(|error| registration_error("ListStreamConsumers", "(listing)", error))?;
            for consumer in output.consumers.unwrap_or_default() {
                consumers.push((
                    Self {
                        name: consumer.consumer_name,
                        arn: consumer.consumer_arn,
                        stream_arn: stream_arn.clone(),
                    },
                    consumer.consumer_status,
                ));
            }
            match output.next_token {
                Some(token) if !token.is_empty() => next_token = Some(token),
                _ => return Ok(consumers),
            }
        }
    }

    /// The consumer registered with the ARN `arn` (one registered by other
    /// means: the console, CloudFormation, the CLI), once it is ACTIVE (at
    /// most [`ACTIVE_WAIT`]).
    ///
    /// # Errors
    ///
    /// As [`register`](Self::register); a consumer that does not exist is
    /// an [`Error::Registration`] with code `ResourceNotFoundException`.
    pub async fn from_arn(client: &aws_sdk_kinesis::Client, arn: &str) -> Result<Self> {
        let (consumer, _) = Self::describe(client, Lookup::Arn(arn)).await?;
        consumer.wait_until_active(client).await?;
        Ok(consumer)
    }

    /// Deregisters the consumer: its subscriptions end, in every process
    /// that reads through it. The library never calls this by itself.
    ///
    /// # Errors
    ///
    /// [`Error::Registration`] when `DeregisterStreamConsumer` fails; a
    /// consumer that is gone already is not an error.
    pub async fn deregister(&self, client: &aws_sdk_kinesis::Client) -> Result<()> {
        match client
            .deregister_stream_consumer()
            .consumer_arn(&self.arn)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(error) if error.code() == Some("ResourceNotFoundException") => Ok(()),
            Err(error) => Err(registration_error(
                "DeregisterStreamConsumer",
                &self.name,
                error,
            )),
        }
    }

    /// The consumer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The consumer's ARN, which `SubscribeToShard` takes.
    pub fn arn(&self) -> &str {
        &self.arn
    }

    /// The ARN of the stream the consumer is registered on.
    pub fn stream_arn(&self) -> &str {
        &self.stream_arn
    }

    /// The name of the stream the consumer is registered on (the last part
    /// of [`stream_arn`](Self::stream_arn)).
    pub fn stream_name(&self) -> &str {
        self.stream_arn
            .rsplit_once(":stream/")
            .map_or(self.stream_arn.as_str(), |(_, name)| name)
    }

    async fn describe(
        client: &aws_sdk_kinesis::Client,
        lookup: Lookup<'_>,
    ) -> Result<(Self, ConsumerStatus)> {
        let request = client.describe_stream_consumer();
        let (request, shown) = match lookup {
            Lookup::Arn(arn) => (request.consumer_arn(arn), arn),
            Lookup::Name(stream_arn, name) => {
                (request.stream_arn(stream_arn).consumer_name(name), name)
            }
        };
        let description = request
            .send()
            .await
            .map_err(|error| registration_error("DescribeStreamConsumer", shown, error))?
            .consumer_description
            .ok_or_else(|| Error::Registration {
                call: "DescribeStreamConsumer",
                consumer: shown.to_owned(),
                code: None,
                retryable: true,
                message: "no consumer description in the answer".to_owned(),
            })?;
        Ok((
            Self {
                name: description.consumer_name,
                arn: description.consumer_arn,
                stream_arn: description.stream_arn,
            },
            description.consumer_status,
        ))
    }

    async fn wait_until_active(&self, client: &aws_sdk_kinesis::Client) -> Result<()> {
        let started = Instant::now();
        loop {
            let (_, status) = Self::describe(client, Lookup::Arn(&self.arn)).await?;
            let waited = started.elapsed();
            if status == ConsumerStatus::Active {
                return Ok(());
            }
            // Deleting never becomes ACTIVE; anything else may, in time.
            if status == ConsumerStatus::Deleting || waited >= ACTIVE_WAIT {
                return Err(Error::NotActive {
                    consumer: self.name.clone(),
                    status: status.as_str().to_owned(),
                    waited,
                });
            }
            sleep(STATUS_POLL).await;
        }
    }
}

/// The ARN of `stream` (registrations name streams by ARN); `consumer`
/// names the registration in errors.
async fn stream_arn(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    consumer: &str,
) -> Result<String> {
    client
        .describe_stream_summary()
        .stream_name(stream)
        .send()
        .await
        .map_err(|error| registration_error("DescribeStreamSummary", consumer, error))?
        .stream_description_summary
        .map(|summary| summary.stream_arn)
        .ok_or_else(|| Error::Registration {
            call: "DescribeStreamSummary",
            consumer: consumer.to_owned(),
            code: None,
            retryable: true,
            message: format!("no description of stream {stream} in the answer"),
        })
}

/// How `DescribeStreamConsumer` names the consumer.
enum Lookup<'a> {
    Arn(&'a str),
    Name(&'a str, &'a str),
}

fn registration_error<E>(
    call: &'static str,
    consumer: &str,
    error: SdkError<E, HttpResponse>,
) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let classification = kinesis_connectors_aws::classify(Service::Kinesis, &error);
    Error::Registration {
        call,
        consumer: consumer.to_owned(),
        code: classification.code,
        retryable: classification.class.is_retryable(),
        message: DisplayErrorContext(error).to_string(),
    }
}

#[cfg(test)]
impl FanOutConsumer {
    /// A consumer as a description would name it, without a call.
    pub(crate) fn for_tests(name: &str, arn: &str, stream_arn: &str) -> Self {
        Self {
            name: name.into(),
            arn: arn.into(),
            stream_arn: stream_arn.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_name_is_the_end_of_the_stream_arn() {
        let consumer = FanOutConsumer {
            name: "c".into(),
            arn: "arn:aws:kinesis:us-east-1:000000000000:stream/orders/consumer/c:1".into(),
            stream_arn: "arn:aws:kinesis:us-east-1:000000000000:stream/orders".into(),
        };
        assert_eq!(consumer.stream_name(), "orders");
    }
}
