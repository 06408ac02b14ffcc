//! S3 helpers the examples share: a client for emulators, bucket checks.

use anyhow::{Result, bail};
use aws_config::SdkConfig;
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
use tracing::info;

/// S3's bucket naming rules: 3 to 63 characters of `a-z`, `0-9`, `.` and
/// `-`, starting and ending with a letter or digit.
pub fn check_bucket_name(bucket: &str) -> Result<()> {
    let valid_chars = bucket
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-');
    let valid_ends = bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
    if (3..=63).contains(&bucket.len()) && valid_chars && valid_ends {
        Ok(())
    } else {
        bail!(
            "s3.bucket must be 3 to 63 characters of lowercase letters, digits, `.` and `-`, \
             starting and ending with a letter or digit; got {bucket:?}"
        )
    }
}

/// An S3 client from `aws`, with path-style addressing when asked for.
pub fn s3_client(aws: &SdkConfig, force_path_style: bool) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::config::Builder::from(aws)
        .force_path_style(force_path_style)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// Fails unless `bucket` exists; with `create`, creates it when missing (in
/// the client's region).
pub async fn ensure_bucket(client: &aws_sdk_s3::Client, bucket: &str, create: bool) -> Result<()> {
    let error = match client.head_bucket().bucket(bucket).send().await {
        Ok(_) => return Ok(()),
        Err(error) => error,
    };
    if !error.as_service_error().is_some_and(|e| e.is_not_found()) {
        bail!(
            "cannot check the bucket {bucket}: {}",
            DisplayErrorContext(error)
        );
    }
    if !create {
        bail!("the bucket {bucket} does not exist: create it, or set s3.create_bucket = true");
    }
    info!(bucket, "creating the bucket");
    let mut request = client.create_bucket().bucket(bucket);
    // us-east-1 is the default location and must not be named.
    if let Some(region) = client.config().region().map(|r| r.as_ref())
        && region != "us-east-1"
    {
        request = request.create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(region))
                .build(),
        );
    }
    match request.send().await {
        Ok(_) => Ok(()),
        // Another worker created it in the meantime.
        Err(error)
            if error
                .as_service_error()
                .is_some_and(|e| e.is_bucket_already_owned_by_you()) =>
        {
            Ok(())
        }
        Err(error) => bail!(
            "cannot create the bucket {bucket}: {}",
            DisplayErrorContext(error)
        ),
    }
}
