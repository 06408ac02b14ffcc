//! `S3Emitter`: one object per batch.

use std::fmt;

use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart, ServerSideEncryption, StorageClass,
};
use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _};
use kinesis_connectors_core::{
    Batch, Compression, DEFAULT_GZIP_LEVEL, EmitOutcome, Emitter, Encoder, RejectedItem,
    encode_body,
};

use crate::error::{Error, classify_s3};
use crate::key::{DEFAULT_KEY_TEMPLATE, KeyTemplate, KeyValues};

/// S3's smallest part size for every part of a multipart upload but the last.
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;
/// S3's largest part size.
pub const MAX_PART_SIZE: usize = 5 * 1024 * 1024 * 1024;
/// The default part size, and the object size above which uploads are multipart.
pub const DEFAULT_PART_SIZE: usize = 8 * 1024 * 1024;
/// How many parts of one object are uploaded at once by default.
pub const DEFAULT_UPLOAD_CONCURRENCY: usize = 4;
/// S3's limit on the number of parts of one object.
const MAX_PARTS: usize = 10_000;

/// Where an object was written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectLocation {
    /// The bucket.
    pub bucket: String,
    /// The object key.
    pub key: String,
}

impl ObjectLocation {
    /// The object's `s3://bucket/key` URL.
    pub fn url(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for ObjectLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

/// What [`S3Emitter::upload`] did with a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Upload {
    /// The object written, or `None` when there was nothing to write (an
    /// empty batch, or every item rejected).
    pub object: Option<ObjectLocation>,
    /// How many items the object holds.
    pub records: usize,
    /// The object's size in bytes (compressed, when gzip is on).
    pub bytes: usize,
    /// Whether the object went up as a multipart upload.
    pub multipart: bool,
    /// Items the transformer could not encode; they are not in the object.
    pub rejected: Vec<RejectedItem>,
}

/// Writes each batch as one S3 object, named after the batch so that a
/// replayed batch overwrites its own object instead of adding a copy.
///
/// See the [crate documentation](crate) for the key template, compression,
/// multipart uploads and errors.
pub struct S3Emitter<T: Encoder> {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    template: KeyTemplate,
    suffix: String,
    transformer: T,
    delimiter: Vec<u8>,
    gzip: bool,
    gzip_level: u32,
    content_type: Option<String>,
    server_side_encryption: Option<ServerSideEncryption>,
    sse_kms_key_id: Option<String>,
    storage_class: Option<StorageClass>,
    part_size: usize,
    upload_concurrency: usize,
}

impl<T: Encoder> fmt::Debug for S3Emitter<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Emitter")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("key_template", &self.template.source())
            .field("suffix", &self.suffix)
            .field("gzip", &self.gzip)
            .field("gzip_level", &self.gzip_level)
            .field("content_type", &self.content_type)
            .field("server_side_encryption", &self.server_side_encryption)
            .field("storage_class", &self.storage_class)
            .field("part_size", &self.part_size)
            .field("upload_concurrency", &self.upload_concurrency)
            .finish_non_exhaustive()
    }
}

impl<T: Encoder> S3Emitter<T> {
    /// Whether its keys name each batch's whole range (`{first_seq}` and
    /// `{last_seq}` in the key template): then one object name stands for
    /// one set of records, which a sink that loads each object once (a file
    /// table) needs.
    pub fn names_the_batch_range(&self) -> bool {
        self.template.names_the_range()
    }

    /// Starts an emitter writing to `bucket` through `client`, encoding
    /// items with `transformer` (one per line by default).
    ///
    /// The client carries the region, credentials and endpoint (from the
    /// caller's `SdkConfig`; emulators need `force_path_style(true)`).
    pub fn builder(
        client: aws_sdk_s3::Client,
        bucket: impl Into<String>,
        transformer: T,
    ) -> S3EmitterBuilder<T> {
        S3EmitterBuilder {
            client,
            bucket: bucket.into(),
            transformer,
            prefix: String::new(),
            key_template: DEFAULT_KEY_TEMPLATE.to_owned(),
            suffix: String::new(),
            delimiter: b"\n".to_vec(),
            gzip: false,
            gzip_level: DEFAULT_GZIP_LEVEL,
            content_type: None,
            server_side_encryption: None,
            sse_kms_key_id: None,
            storage_class: None,
            part_size: DEFAULT_PART_SIZE,
            upload_concurrency: DEFAULT_UPLOAD_CONCURRENCY,
        }
    }

    /// The bucket objects go to.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The key template, as given to the builder.
    pub fn key_template(&self) -> &str {
        self.template.source()
    }

    /// The key `batch` is written under (also for an empty batch, which is
    /// never written).
    pub fn object_key(&self, batch: &Batch<T::Item>) -> String {
        if batch.first_arrival.is_none() {
            tracing::warn!(
                shard_id = %batch.context.shard_id,
                first = %batch.first,
                "batch has no arrival time: its key's date parts use the UNIX epoch"
            );
        }
        let suffix = if self.gzip {
            format!("{}.gz", self.suffix)
        } else {
            self.suffix.clone()
        };
        self.template
            .render(&KeyValues::of(&self.prefix, batch), &suffix)
    }

    /// Encodes `batch` and writes it as one object: a single `PutObject`, or
    /// a multipart upload when the encoded object is larger than the part
    /// size. Items the transformer cannot encode are left out and reported
    /// in [`Upload::rejected`]. An empty batch writes nothing.
    ///
    /// This is [`Emitter::emit`] with the object's location in the result,
    /// for emitters built on top of this one (manifests, `COPY` loaders).
    pub async fn upload(&self, batch: &Batch<T::Item>) -> Result<Upload, Error> {
        if batch.is_empty() {
            return Ok(Upload {
                object: None,
                records: 0,
                bytes: 0,
                multipart: false,
                rejected: Vec::new(),
            });
        }
        let key = self.object_key(batch);
        let (body, records, rejected) = self.encode(batch, &key)?;
        if records == 0 {
            return Ok(Upload {
                object: None,
                records: 0,
                bytes: 0,
                multipart: false,
                rejected,
            });
        }
        let bytes = body.len();
        let multipart = bytes > self.part_size;
        if multipart {
            self.put_multipart(&key, Bytes::from(body)).await?;
        } else {
            self.put_single(&key, body).await?;
        }
        tracing::debug!(
            bucket = %self.bucket,
            key = %key,
            records,
            bytes,
            multipart,
            "uploaded batch"
        );
        Ok(Upload {
            object: Some(ObjectLocation {
                bucket: self.bucket.clone(),
                key,
            }),
            records,
            bytes,
            multipart,
            rejected,
        })
    }

    /// The object body: every item the transformer encodes, each followed by
    /// the delimiter, compressed when gzip is on.
    fn encode(
        &self,
        batch: &Batch<T::Item>,
        key: &str,
    ) -> Result<(Vec<u8>, usize, Vec<RejectedItem>), Error> {
        let compress_error = |source| Error::Compress {
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            source,
        };
        let compression = if self.gzip {
            Compression::Gzip {
                level: self.gzip_level,
            }
        } else {
            Compression::None
        };
        let (body, encoded) = encode_body(&self.transformer, batch, &self.delimiter, compression)
            .map_err(compress_error)?;
        let written = encoded.written;
        let rejected = encoded.into_rejected(format_args!("s3://{}/{key}", self.bucket));
        Ok((body, written, rejected))
    }

    async fn put_single(&self, key: &str, body: Vec<u8>) -> Result<(), Error> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(body))
            .set_content_type(self.content_type.clone())
            .set_content_encoding(self.gzip.then(|| "gzip".to_owned()))
            .set_server_side_encryption(self.server_side_encryption.clone())
            .set_ssekms_key_id(self.sse_kms_key_id.clone())
            .set_storage_class(self.storage_class.clone())
            .send()
            .await
            .map_err(|e| classify_s3("PutObject", &self.bucket, key, e))?;
        Ok(())
    }

    async fn put_multipart(&self, key: &str, body: Bytes) -> Result<(), Error> {
        let parts = body.len().div_ceil(self.part_size);
        if parts > MAX_PARTS {
            return Err(Error::TooLarge {
                bucket: self.bucket.clone(),
                key: key.to_owned(),
                size: body.len(),
                part_size: self.part_size,
                parts,
            });
        }
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .set_content_type(self.content_type.clone())
            .set_content_encoding(self.gzip.then(|| "gzip".to_owned()))
            .set_server_side_encryption(self.server_side_encryption.clone())
            .set_ssekms_key_id(self.sse_kms_key_id.clone())
            .set_storage_class(self.storage_class.clone())
            .send()
            .await
            .map_err(|e| classify_s3("CreateMultipartUpload", &self.bucket, key, e))?;
        let Some(upload_id) = created.upload_id() else {
            return Err(Error::Request {
                operation: "CreateMultipartUpload",
                bucket: self.bucket.clone(),
                key: key.to_owned(),
                code: None,
                retryable: true,
                message: "the response carried no upload id".to_owned(),
            });
        };
        match self.upload_parts(key, upload_id, body, parts).await {
            Ok(()) => Ok(()),
            Err(error) => {
                self.abort(key, upload_id, &error).await;
                Err(error)
            }
        }
    }

    /// Uploads the parts, at most `upload_concurrency` at once, then
    /// completes the upload. The first failure stops the other parts.
    async fn upload_parts(
        &self,
        key: &str,
        upload_id: &str,
        body: Bytes,
        parts: usize,
    ) -> Result<(), Error> {
        let part_size = self.part_size;
        let uploads = (0..parts).map(|index| {
            let start = index * part_size;
            let end = (start + part_size).min(body.len());
            let chunk = body.slice(start..end);
            // Part numbers run from 1 to 10,000.
            let number = i32::try_from(index + 1).unwrap_or(i32::MAX);
            async move {
                let output = self
                    .client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .part_number(number)
                    .body(ByteStream::from(chunk))
                    .send()
                    .await
                    .map_err(|e| classify_s3("UploadPart", &self.bucket, key, e))?;
                Ok::<_, Error>(
                    CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(output.e_tag)
                        .build(),
                )
            }
        });
        let mut completed: Vec<CompletedPart> = futures::stream::iter(uploads)
            .buffer_unordered(self.upload_concurrency)
            .try_collect()
            .await?;
        completed.sort_by_key(|part| part.part_number());
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(completed))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| classify_s3("CompleteMultipartUpload", &self.bucket, key, e))?;
        Ok(())
    }

    /// Aborts a failed multipart upload so that its parts are not left
    /// behind (and billed). A failed abort is logged: the caller reports the
    /// error that made the upload fail.
    async fn abort(&self, key: &str, upload_id: &str, cause: &Error) {
        let aborted = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await;
        match aborted {
            Ok(_) => tracing::debug!(
                bucket = %self.bucket,
                key,
                upload_id,
                error = %cause,
                "aborted the failed multipart upload"
            ),
            Err(error) => tracing::warn!(
                bucket = %self.bucket,
                key,
                upload_id,
                error = %cause,
                abort_error = %aws_sdk_s3::error::DisplayErrorContext(&error),
                "could not abort the failed multipart upload: its parts stay until a lifecycle rule removes them"
            ),
        }
    }
}

#[async_trait]
impl<T: Encoder> Emitter<T::Item> for S3Emitter<T> {
    async fn emit(&self, batch: &Batch<T::Item>) -> kinesis_connectors_core::Result<EmitOutcome> {
        let upload = self.upload(batch).await?;
        Ok(EmitOutcome::with_rejected(upload.rejected))
    }
}

/// Builds an [`S3Emitter`]; see [`S3Emitter::builder`].
pub struct S3EmitterBuilder<T: Encoder> {
    client: aws_sdk_s3::Client,
    bucket: String,
    transformer: T,
    prefix: String,
    key_template: String,
    suffix: String,
    delimiter: Vec<u8>,
    gzip: bool,
    gzip_level: u32,
    content_type: Option<String>,
    server_side_encryption: Option<ServerSideEncryption>,
    sse_kms_key_id: Option<String>,
    storage_class: Option<StorageClass>,
    part_size: usize,
    upload_concurrency: usize,
}

impl<T: Encoder> fmt::Debug for S3EmitterBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3EmitterBuilder")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("key_template", &self.key_template)
            .finish_non_exhaustive()
    }
}

impl<T: Encoder> S3EmitterBuilder<T> {
    /// The value of `{prefix}` in the key template (default empty; an empty
    /// prefix leaves no empty path segment).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The object key template (default
    /// `{prefix}/{stream}/{yyyy}/{mm}/{dd}/{HH}/{shard}-{first_seq}-{last_seq}`).
    ///
    /// Placeholders: `{prefix}`, `{application}`, `{stream}`, `{shard}`,
    /// `{first_seq}`, `{last_seq}` (a sequence number, with `_<sub>` for
    /// records de-aggregated from a KPL record), and the UTC date of the
    /// batch's first record: `{yyyy}`, `{mm}`, `{dd}`, `{HH}`, `{MI}`,
    /// `{SS}`. `{{` and `}}` stand for literal braces. The template must
    /// contain `{shard}` and `{first_seq}`.
    pub fn key_template(mut self, template: impl Into<String>) -> Self {
        self.key_template = template.into();
        self
    }

    /// Appended to every key, before `.gz` (default empty), e.g. `".jsonl"`.
    pub fn suffix(mut self, suffix: impl Into<String>) -> Self {
        self.suffix = suffix.into();
        self
    }

    /// Written after every item (default `\n`: newline-delimited objects).
    /// Empty when the transformer frames items itself.
    pub fn delimiter(mut self, delimiter: impl Into<Vec<u8>>) -> Self {
        self.delimiter = delimiter.into();
        self
    }

    /// Compresses objects with gzip (default off): keys get a `.gz` suffix
    /// and objects `Content-Encoding: gzip`.
    pub fn gzip(mut self, gzip: bool) -> Self {
        self.gzip = gzip;
        self
    }

    /// The gzip level, 0 to 9 (default 6, [`DEFAULT_GZIP_LEVEL`]); turns
    /// gzip on. Lower is faster and larger: on ~1 KiB JSON events level 2
    /// compresses 7 times as fast as 6 for 23 % larger objects (see the
    /// crate README's figures).
    pub fn gzip_level(mut self, level: u32) -> Self {
        self.gzip = true;
        self.gzip_level = level;
        self
    }

    /// The objects' `Content-Type` (default: none set, which S3 serves as
    /// `binary/octet-stream`).
    pub fn content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = Some(content_type.into());
        self
    }

    /// Server-side encryption for every object (default: the bucket's).
    pub fn server_side_encryption(mut self, encryption: ServerSideEncryption) -> Self {
        self.server_side_encryption = Some(encryption);
        self
    }

    /// The KMS key for `aws:kms` server-side encryption.
    pub fn sse_kms_key_id(mut self, key_id: impl Into<String>) -> Self {
        self.sse_kms_key_id = Some(key_id.into());
        self
    }

    /// The storage class of every object (default: `STANDARD`).
    pub fn storage_class(mut self, storage_class: StorageClass) -> Self {
        self.storage_class = Some(storage_class);
        self
    }

    /// The part size of multipart uploads, and the object size above which
    /// they are used (default 8 MiB, at least S3's minimum of 5 MiB).
    pub fn part_size(mut self, bytes: usize) -> Self {
        self.part_size = bytes;
        self
    }

    /// How many parts of one object are uploaded at once (default 4).
    pub fn upload_concurrency(mut self, parts: usize) -> Self {
        self.upload_concurrency = parts;
        self
    }

    /// Checks the configuration and builds the emitter.
    ///
    /// Fails with [`Error::Config`] for an empty or malformed bucket name, a
    /// key template with an unknown placeholder or without `{shard}` and
    /// `{first_seq}`, keys that could exceed S3's 1024 bytes, a part size
    /// outside S3's 5 MiB – 5 GiB, a gzip level above 9, a concurrency of 0, or a KMS key without
    /// `aws:kms` encryption. The message names the bucket, so that the
    /// emitter at fault can be told apart when a program builds several.
    pub fn build(self) -> Result<S3Emitter<T>, Error> {
        validate_bucket(&self.bucket)?;
        let template = self.check().map_err(|error| match error {
            Error::Config(problem) => Error::Config(format!("bucket {:?}: {problem}", self.bucket)),
            other => other,
        })?;
        Ok(S3Emitter {
            client: self.client,
            bucket: self.bucket,
            prefix: self.prefix,
            template,
            suffix: self.suffix,
            transformer: self.transformer,
            delimiter: self.delimiter,
            gzip: self.gzip,
            gzip_level: self.gzip_level,
            content_type: self.content_type,
            server_side_encryption: self.server_side_encryption,
            sse_kms_key_id: self.sse_kms_key_id,
            storage_class: self.storage_class,
            part_size: self.part_size,
            upload_concurrency: self.upload_concurrency,
        })
    }

    /// Checks everything but the bucket name; returns the parsed key template.
    fn check(&self) -> Result<KeyTemplate, Error> {
        let template = KeyTemplate::parse(&self.key_template)?;
        let suffix = if self.gzip {
            format!("{}.gz", self.suffix)
        } else {
            self.suffix.clone()
        };
        template.check_length(&self.prefix, &suffix)?;
        if self.gzip_level > 9 {
            return Err(Error::Config(format!(
                "gzip level {} is not within 0..=9",
                self.gzip_level
            )));
        }
        if self.part_size < MIN_PART_SIZE {
            return Err(Error::Config(format!(
                "part size {} bytes is below S3's minimum of {MIN_PART_SIZE} bytes (5 MiB)",
                self.part_size
            )));
        }
        if self.part_size > MAX_PART_SIZE {
            return Err(Error::Config(format!(
                "part size {} bytes is above S3's maximum of {MAX_PART_SIZE} bytes (5 GiB)",
                self.part_size
            )));
        }
        if self.upload_concurrency == 0 {
            return Err(Error::Config(
                "upload concurrency must be at least 1".to_owned(),
            ));
        }
        if self.sse_kms_key_id.is_some()
            && !matches!(
                self.server_side_encryption,
                Some(ServerSideEncryption::AwsKms | ServerSideEncryption::AwsKmsDsse)
            )
        {
            return Err(Error::Config(
                "a KMS key id needs server_side_encryption(ServerSideEncryption::AwsKms or AwsKmsDsse)"
                    .to_owned(),
            ));
        }
        Ok(template)
    }
}

/// A bucket must be a plain name: S3 checks the rest.
fn validate_bucket(bucket: &str) -> Result<(), Error> {
    if bucket.is_empty() {
        return Err(Error::Config("the bucket name is empty".to_owned()));
    }
    if bucket.contains("://") {
        return Err(Error::Config(format!(
            "bucket {bucket:?} is a URL: give the bucket's name, and the key prefix with `prefix`"
        )));
    }
    if bucket.contains('/') || bucket.chars().any(char::is_whitespace) || bucket.len() > 255 {
        return Err(Error::Config(format!(
            "bucket {bucket:?} is not a bucket name (no `/`, no spaces, at most 255 characters)"
        )));
    }
    Ok(())
}
