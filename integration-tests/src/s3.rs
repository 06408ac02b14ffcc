//! Looking at what landed in S3.

use anyhow::{Result, anyhow};
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::types::Object;

/// Every object under `prefix` in `bucket`, following continuation tokens.
pub async fn list_objects(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
) -> Result<Vec<Object>> {
    let mut objects = Vec::new();
    let mut token = None;
    loop {
        let page = s3
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_continuation_token(token)
            .send()
            .await
            .map_err(|e| anyhow!("ListObjectsV2 {bucket}: {}", DisplayErrorContext(e)))?;
        objects.extend(page.contents().iter().cloned());
        match page.next_continuation_token() {
            Some(next) if page.is_truncated() != Some(false) => token = Some(next.to_owned()),
            _ => return Ok(objects),
        }
    }
}
