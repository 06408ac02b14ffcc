//! Kinesis emitter for kinesis-connectors: forward records to another stream with PutRecords.
