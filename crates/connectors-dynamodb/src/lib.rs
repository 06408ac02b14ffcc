//! DynamoDB emitter for kinesis-connectors: BatchWriteItem with retries of unprocessed items.
