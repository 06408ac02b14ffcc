//! S3 emitters for kinesis-connectors: one object per batch, and objects plus a manifest stream.
