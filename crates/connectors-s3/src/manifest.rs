//! `S3ManifestEmitter`: an object per batch, then its URL on a manifest stream.

use std::fmt;

use async_trait::async_trait;
use aws_sdk_kinesis::primitives::Blob;
use kinesis_connectors_core::{Batch, EmitOutcome, Emitter, Encoder};

use crate::emitter::{ObjectLocation, S3Emitter, Upload};
use crate::error::{Error, classify_manifest};

/// Kinesis' limit on the length of a partition key, in characters.
const MAX_PARTITION_KEY_CHARS: usize = 256;

/// Uploads each batch like [`S3Emitter`], then puts the object's
/// `s3://bucket/key` URL onto a manifest Kinesis stream, the first stage of
/// the manifest pipeline (a second consumer of the manifest stream loads the
/// listed files, e.g. with Redshift `COPY`).
///
/// The manifest record is written only after the upload succeeded, with
/// `PutRecord`; its data is the URL (UTF-8, no newline) and its partition
/// key the object key (or, for keys longer than Kinesis' 256 characters, a
/// 64-bit FNV-1a hash of it in hex), so a replayed batch produces the same
/// record. A replay after a failure between the upload and the checkpoint
/// does put the record again: the manifest stream is at-least-once, and the
/// second stage deduplicates by URL (its file table).
pub struct S3ManifestEmitter<T: Encoder> {
    s3: S3Emitter<T>,
    kinesis: aws_sdk_kinesis::Client,
    stream: String,
}

impl<T: Encoder> fmt::Debug for S3ManifestEmitter<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3ManifestEmitter")
            .field("s3", &self.s3)
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

impl<T: Encoder> S3ManifestEmitter<T> {
    /// Uploads through `s3`, then writes manifest records to `stream` (a
    /// stream name, or a stream ARN starting with `arn:`) through `kinesis`.
    ///
    /// Fails with [`Error::Config`], naming the bucket, when `stream` is
    /// empty or when the key template lacks `{first_seq}` or `{last_seq}`
    /// (an object name must stand for exactly one batch, since the second
    /// stage loads each object once).
    pub fn new(
        s3: S3Emitter<T>,
        kinesis: aws_sdk_kinesis::Client,
        stream: impl Into<String>,
    ) -> Result<Self, Error> {
        let stream = stream.into();
        if stream.trim().is_empty() {
            return Err(Error::Config(format!(
                "manifest emitter for bucket {:?}: the manifest stream name is empty",
                s3.bucket()
            )));
        }
        // The second stage loads each object once, by its key: a key that
        // leaves out either end of the batch could name two different sets
        // of records, and the second would be skipped as already loaded.
        if !s3.names_the_batch_range() {
            return Err(Error::Config(format!(
                "manifest emitter for bucket {:?}: key template {:?} must contain both {{first_seq}} and {{last_seq}}, \
                 so that each object name stands for exactly one batch (the manifest pipeline loads each object once)",
                s3.bucket(),
                s3.key_template()
            )));
        }
        Ok(Self {
            s3,
            kinesis,
            stream,
        })
    }

    /// The emitter that uploads the objects.
    pub fn s3(&self) -> &S3Emitter<T> {
        &self.s3
    }

    /// The manifest stream.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Uploads `batch` and writes its manifest record; see
    /// [`S3Emitter::upload`]. Nothing is written for an empty batch.
    pub async fn upload(&self, batch: &Batch<T::Item>) -> Result<Upload, Error> {
        let upload = self.s3.upload(batch).await?;
        if let Some(object) = &upload.object {
            self.put_manifest(object).await?;
        }
        Ok(upload)
    }

    async fn put_manifest(&self, object: &ObjectLocation) -> Result<(), Error> {
        let url = object.url();
        let request = self.kinesis.put_record();
        let request = if self.stream.starts_with("arn:") {
            request.stream_arn(&self.stream)
        } else {
            request.stream_name(&self.stream)
        };
        request
            .partition_key(manifest_partition_key(&object.key))
            .data(Blob::new(url.as_bytes()))
            .send()
            .await
            .map_err(|e| classify_manifest(&self.stream, &url, e))?;
        tracing::debug!(stream = %self.stream, %url, "manifest record written");
        Ok(())
    }
}

#[async_trait]
impl<T: Encoder> Emitter<T::Item> for S3ManifestEmitter<T> {
    async fn emit(&self, batch: &Batch<T::Item>) -> kinesis_connectors_core::Result<EmitOutcome> {
        let upload = self.upload(batch).await?;
        Ok(EmitOutcome::with_rejected(upload.rejected))
    }
}

/// The partition key of the manifest record of `key`: the key itself when
/// Kinesis accepts it (1 to 256 characters), else its FNV-1a hash.
pub(crate) fn manifest_partition_key(key: &str) -> String {
    let chars = key.chars().count();
    if (1..=MAX_PARTITION_KEY_CHARS).contains(&chars) {
        return key.to_owned();
    }
    // FNV-1a (64 bit): stable across Rust versions, unlike std's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_keys_are_the_key_or_a_stable_hash() {
        assert_eq!(manifest_partition_key("a/b"), "a/b");
        let long = "k".repeat(300);
        let hashed = manifest_partition_key(&long);
        assert_eq!(hashed.len(), 16);
        assert_eq!(hashed, manifest_partition_key(&long));
        assert_ne!(hashed, manifest_partition_key(&"k".repeat(301)));
        // An empty key is hashed too: FNV-1a's offset basis.
        assert_eq!(manifest_partition_key(""), "cbf29ce484222325");
        let x256 = "é".repeat(256);
        assert_eq!(manifest_partition_key(&x256), x256);
    }
}
