//! An SDK configuration pointing at a port nothing listens on, to test how
//! an emitter or store classifies network errors.

use std::net::TcpListener;
use std::time::Duration;

use aws_credential_types::Credentials;
use aws_smithy_runtime_api::client::behavior_version::BehaviorVersion;
use aws_types::SdkConfig;
use aws_types::region::Region;
use aws_types::sdk_config::{RetryConfig, SharedCredentialsProvider, TimeoutConfig};

/// An [`SdkConfig`] for `http://127.0.0.1:<port>` where nothing listens (a
/// port the OS handed out, then released), with dummy credentials, the SDK's
/// own retries off and short timeouts should the port not refuse at once.
///
/// Every call to a client built from it fails with a dispatch (connection)
/// failure, which an emitter must report as retryable.
///
/// ```
/// let config = kinesis_connectors_testkit::unreachable_sdk_config()?;
/// assert!(config.endpoint_url().is_some_and(|url| url.starts_with("http://127.0.0.1:")));
/// // let s3 = aws_sdk_s3::Client::new(&config);
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Errors
///
/// When no local port can be bound.
pub fn unreachable_sdk_config() -> std::io::Result<SdkConfig> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let credentials = Credentials::new("AKIDTEST", "secret", None, None, "testkit");
    Ok(SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(SharedCredentialsProvider::new(credentials))
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(2))
                .operation_attempt_timeout(Duration::from_secs(5))
                .operation_timeout(Duration::from_secs(5))
                .build(),
        )
        .build())
}
