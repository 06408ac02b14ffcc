//! Redis checkpoint store and shard leases for kinesis-connectors.
