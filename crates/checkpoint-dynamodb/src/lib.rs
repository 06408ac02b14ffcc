//! DynamoDB checkpoint store and shard leases for kinesis-connectors, in the Kinesis Client Library's lease-table layout.
