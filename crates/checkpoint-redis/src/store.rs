//! `RedisCheckpointStore`: checkpoints and leases in Redis.

use std::collections::HashMap;

use async_trait::async_trait;
use kinesis_connectors_core::{
    Checkpoint, CheckpointStore, Lease, LeaseStore, Position, ShardKey, StoredLease,
};
use redis::aio::ConnectionManager;
use redis::{Script, Value};
use tracing::debug;

use crate::codec::{
    Keys, decode_lease, decode_stored_checkpoint, decode_stored_position, encode_checkpoint,
    encode_position, parent_fields,
};
use crate::error::{Error, Result};
use crate::scripts;

/// Checkpoints and shard leases in Redis, for one or several workers.
///
/// Keys (with the default, empty prefix):
///
/// | key | type | holds |
/// |---|---|---|
/// | `{app}:checkpoint:{stream}:{shard}` | string | the checkpoint: `<sequence>`, `<sequence>/<sub-sequence>` or `SHARD_END` |
/// | `{app}:lease:{stream}:{shard}` | hash | `owner` (absent when free), `counter`, `parents`, `parent.0`, … |
/// | `{app}:leases:{stream}` | set | the shard ids that have a lease |
/// | `{app}:pending:{stream}:{shard}` | string | the pending batch's last position: `<sequence>` or `<sequence>/<sub-sequence>` |
///
/// The checkpoint key and its plain sequence-number value are those of
/// harlow/kinesis-connectors (Go), so a Go application's checkpoints are
/// picked up as they are. Every conditional write is one Lua script, so a
/// checkpoint never moves backwards even with concurrent writers, and
/// [`set_fenced`](CheckpointStore::set_fenced) checks the lease and writes
/// the checkpoint atomically; so does
/// [`set_pending_batch`](CheckpointStore::set_pending_batch) with the pending
/// batch, which makes the store keep replay-stable batches.
///
/// Cloning is cheap: clones share the connection.
#[derive(Debug, Clone)]
pub struct RedisCheckpointStore {
    connection: ConnectionManager,
    keys: Keys,
}

impl RedisCheckpointStore {
    /// A store on `connection`, with the default key scheme (no prefix).
    ///
    /// The [`ConnectionManager`] reconnects by itself after Redis went away;
    /// meanwhile calls fail with retryable errors. Its response timeout
    /// (default 500 ms) bounds every call.
    pub fn new(connection: ConnectionManager) -> Self {
        Self {
            connection,
            keys: Keys::default(),
        }
    }

    /// Connects to `url` (`redis://host:port/db`, `rediss://…` for TLS,
    /// `redis+unix:///path`) with the connection manager's default
    /// configuration. Fails if Redis does not answer, after the manager's
    /// connection attempts (6 with backoff: up to about 12 s), with a
    /// retryable error.
    ///
    /// For other timeouts, retries or a lazy first connection, build the
    /// [`ConnectionManager`] yourself and call [`new`](Self::new).
    pub async fn connect(url: &str) -> Result<Self> {
        let client = redis::Client::open(url)?;
        // rustls panics when it cannot pick a crypto provider; run the first
        // connection in its own task so that becomes an error, not a crash.
        let connection = tokio::spawn(ConnectionManager::new(client))
            .await
            .map_err(|join| {
                if join.is_panic() {
                    let payload = join.into_panic();
                    let message = payload
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| payload.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".to_owned());
                    Error::ConnectPanicked(message)
                } else {
                    Error::ConnectPanicked(join.to_string())
                }
            })??;
        Ok(Self::new(connection))
    }

    /// Puts `prefix` in front of every key, verbatim (include your own
    /// separator: `"prod:"` gives `prod:{app}:checkpoint:…`). Keep the
    /// default empty prefix to share checkpoints with the Go library.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.keys = Keys::new(prefix);
        self
    }

    /// The key prefix (empty by default).
    pub fn prefix(&self) -> &str {
        self.keys.prefix()
    }

    /// The Redis key of a shard's checkpoint (a string).
    pub fn checkpoint_key(&self, key: &ShardKey) -> String {
        self.keys.checkpoint(key)
    }

    /// The Redis key of a shard's lease (a hash).
    pub fn lease_key(&self, key: &ShardKey) -> String {
        self.keys.lease(key)
    }

    /// The Redis key of a shard's pending batch (a string).
    pub fn pending_batch_key(&self, key: &ShardKey) -> String {
        self.keys.pending_batch(key)
    }

    /// The Redis key of the set of shard ids with a lease in `stream`.
    pub fn lease_index_key(&self, application: &str, stream: &str) -> String {
        self.keys.lease_index(application, stream)
    }

    /// The connection this store uses.
    pub fn connection(&self) -> &ConnectionManager {
        &self.connection
    }

    async fn invoke(&self, script: &Script, keys: &[&str], args: &[&str]) -> Result<Reply> {
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(*key);
        }
        for arg in args {
            invocation.arg(*arg);
        }
        let mut connection = self.connection.clone();
        let value: Value = invocation.invoke_async(&mut connection).await?;
        Reply::decode(value)
    }

    async fn read_checkpoint(&self, key: &ShardKey) -> Result<Option<Checkpoint>> {
        let redis_key = self.keys.checkpoint(key);
        let mut connection = self.connection.clone();
        let value: Value = redis::cmd("GET")
            .arg(&redis_key)
            .query_async(&mut connection)
            .await?;
        match value {
            Value::Nil => Ok(None),
            Value::BulkString(bytes) => decode_stored_checkpoint(&redis_key, &bytes).map(Some),
            other => Err(Error::UnexpectedReply(format!(
                "GET {redis_key} answered {other:?}"
            ))),
        }
    }

    async fn read_pending_batch(&self, key: &ShardKey) -> Result<Option<Position>> {
        let redis_key = self.keys.pending_batch(key);
        let mut connection = self.connection.clone();
        let value: Value = redis::cmd("GET")
            .arg(&redis_key)
            .query_async(&mut connection)
            .await?;
        match value {
            Value::Nil => Ok(None),
            Value::BulkString(bytes) => decode_stored_position(&redis_key, &bytes).map(Some),
            other => Err(Error::UnexpectedReply(format!(
                "GET {redis_key} answered {other:?}"
            ))),
        }
    }

    /// Records `end` while `lease` holds the shard (or no lease exists), in
    /// one script so a worker that lost the lease cannot slip a write in.
    async fn write_pending_batch(
        &self,
        key: &ShardKey,
        end: &Position,
        lease: &Lease,
    ) -> Result<()> {
        let reply = self
            .invoke_fenced(
                &scripts::SET_PENDING_BATCH,
                key,
                &self.keys.pending_batch(key),
                lease,
                &encode_position(end),
            )
            .await?;
        match reply.status {
            scripts::WRITTEN => Ok(()),
            scripts::LOST => Err(lease_lost(key, reply.detail)),
            status => Err(Error::UnexpectedReply(format!(
                "pending-batch script status {status}"
            ))),
        }
    }

    /// Interprets the reply of a checkpoint-writing script.
    fn written(&self, key: &ShardKey, checkpoint: &Checkpoint, reply: Reply) -> Result<()> {
        match reply.status {
            scripts::WRITTEN => Ok(()),
            scripts::KEPT => {
                debug!(shard = %key, %checkpoint, stored = ?reply.detail, "stored checkpoint is as new or newer; kept it");
                Ok(())
            }
            scripts::LOST => Err(lease_lost(key, reply.detail)),
            scripts::CORRUPT => Err(Error::InvalidCheckpoint {
                key: self.keys.checkpoint(key),
                value: reply.detail.unwrap_or_default(),
            }),
            scripts::BAD_ARGUMENT => Err(Error::UnexpectedReply(format!(
                "the checkpoint script could not parse {:?}",
                reply.detail
            ))),
            status => Err(Error::UnexpectedReply(format!(
                "checkpoint script status {status}"
            ))),
        }
    }

    async fn write_checkpoint(&self, key: &ShardKey, checkpoint: &Checkpoint) -> Result<()> {
        let value = encode_checkpoint(checkpoint);
        let reply = self
            .invoke(
                &scripts::SET_CHECKPOINT,
                &[&self.keys.checkpoint(key)],
                &[&value],
            )
            .await?;
        self.written(key, checkpoint, reply)
    }

    async fn write_fenced(
        &self,
        key: &ShardKey,
        checkpoint: &Checkpoint,
        lease: &Lease,
    ) -> Result<()> {
        let reply = self
            .invoke_fenced(
                &scripts::SET_FENCED,
                key,
                &self.keys.checkpoint(key),
                lease,
                &encode_checkpoint(checkpoint),
            )
            .await?;
        self.written(key, checkpoint, reply)
    }

    /// Runs a script that writes `value` to `target` only while `lease`
    /// still holds `key`'s lease (KEYS: lease, target; ARGV: owner, counter,
    /// value).
    async fn invoke_fenced(
        &self,
        script: &Script,
        key: &ShardKey,
        target: &str,
        lease: &Lease,
        value: &str,
    ) -> Result<Reply> {
        let counter = lease.counter.to_string();
        self.invoke(
            script,
            &[&self.keys.lease(key), target],
            &[&lease.owner, &counter, value],
        )
        .await
    }

    async fn leases(&self, application: &str, stream: &str) -> Result<Vec<StoredLease>> {
        let index = self.keys.lease_index(application, stream);
        let mut connection = self.connection.clone();
        let members: Value = redis::cmd("SMEMBERS")
            .arg(&index)
            .query_async(&mut connection)
            .await?;
        let mut shard_ids: Vec<String> = redis::from_redis_value(members)
            .map_err(|e| Error::UnexpectedReply(format!("SMEMBERS {index}: {e}")))?;
        shard_ids.sort();
        if shard_ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<(String, String)> = shard_ids
            .iter()
            .map(|shard_id| {
                let key = ShardKey::new(application, stream, shard_id.as_str());
                (self.keys.lease(&key), self.keys.checkpoint(&key))
            })
            .collect();
        // One MULTI/EXEC: every lease with its checkpoint as of one moment.
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (lease_key, checkpoint_key) in &keys {
            pipe.cmd("HGETALL").arg(lease_key);
            pipe.cmd("GET").arg(checkpoint_key);
        }
        let replies: Vec<Value> = pipe.query_async(&mut connection).await?;
        if replies.len() != 2 * keys.len() {
            return Err(Error::UnexpectedReply(format!(
                "{} replies to {} commands listing leases",
                replies.len(),
                2 * keys.len()
            )));
        }
        let mut leases = Vec::with_capacity(keys.len());
        let mut replies = replies.into_iter();
        for (shard_id, (lease_key, checkpoint_key)) in shard_ids.iter().zip(&keys) {
            let (Some(hash), Some(checkpoint)) = (replies.next(), replies.next()) else {
                break;
            };
            let fields: HashMap<String, String> =
                redis::from_redis_value(hash).map_err(|e| Error::InvalidLease {
                    key: lease_key.clone(),
                    reason: e.to_string(),
                })?;
            let checkpoint = match checkpoint {
                Value::Nil => None,
                Value::BulkString(bytes) => Some(decode_stored_checkpoint(checkpoint_key, &bytes)?),
                other => {
                    return Err(Error::UnexpectedReply(format!(
                        "GET {checkpoint_key} answered {other:?}"
                    )));
                }
            };
            if let Some(lease) = decode_lease(lease_key, shard_id, &fields, checkpoint)? {
                leases.push(lease);
            }
        }
        Ok(leases)
    }

    async fn create(&self, key: &ShardKey, parents: &[String]) -> Result<()> {
        let fields = parent_fields(parents);
        let mut args: Vec<&str> = Vec::with_capacity(1 + 2 * fields.len());
        args.push(&key.shard_id);
        for (field, value) in &fields {
            args.push(field);
            args.push(value);
        }
        let reply = self
            .invoke(
                &scripts::CREATE_LEASE,
                &[
                    &self.keys.lease(key),
                    &self.keys.lease_index(&key.application, &key.stream),
                ],
                &args,
            )
            .await?;
        match reply.status {
            scripts::DONE | scripts::UNCHANGED => Ok(()),
            status => Err(Error::UnexpectedReply(format!(
                "create-lease script status {status}"
            ))),
        }
    }

    async fn take(&self, key: &ShardKey, expected: u64, owner: &str) -> Result<Option<Lease>> {
        let expected = expected.to_string();
        let reply = self
            .invoke(
                &scripts::TAKE_LEASE,
                &[&self.keys.lease(key)],
                &[&expected, owner],
            )
            .await?;
        match reply.status {
            scripts::DONE => Ok(Some(Lease {
                shard_id: key.shard_id.clone(),
                owner: owner.to_owned(),
                counter: reply.counter,
                expires_at: None,
            })),
            scripts::UNCHANGED => Ok(None),
            status => Err(Error::UnexpectedReply(format!(
                "take-lease script status {status}"
            ))),
        }
    }

    async fn renew(&self, key: &ShardKey, lease: &Lease) -> Result<Lease> {
        let counter = lease.counter.to_string();
        let reply = self
            .invoke(
                &scripts::RENEW_LEASE,
                &[&self.keys.lease(key)],
                &[&lease.owner, &counter],
            )
            .await?;
        match reply.status {
            scripts::DONE => Ok(Lease {
                counter: reply.counter,
                ..lease.clone()
            }),
            scripts::LOST => Err(lease_lost(key, reply.detail)),
            status => Err(Error::UnexpectedReply(format!(
                "renew-lease script status {status}"
            ))),
        }
    }

    async fn release(&self, key: &ShardKey, lease: &Lease) -> Result<()> {
        let counter = lease.counter.to_string();
        let reply = self
            .invoke(
                &scripts::RELEASE_LEASE,
                &[&self.keys.lease(key)],
                &[&lease.owner, &counter],
            )
            .await?;
        match reply.status {
            scripts::DONE => Ok(()),
            scripts::UNCHANGED => {
                debug!(shard = %key, owner = ?reply.detail, "lease already gone; nothing to release");
                Ok(())
            }
            status => Err(Error::UnexpectedReply(format!(
                "release-lease script status {status}"
            ))),
        }
    }
}

#[async_trait]
impl CheckpointStore for RedisCheckpointStore {
    async fn get(&self, key: &ShardKey) -> kinesis_connectors_core::Result<Option<Checkpoint>> {
        Ok(self.read_checkpoint(key).await?)
    }

    async fn set(
        &self,
        key: &ShardKey,
        checkpoint: &Checkpoint,
    ) -> kinesis_connectors_core::Result<()> {
        Ok(self.write_checkpoint(key, checkpoint).await?)
    }

    async fn set_fenced(
        &self,
        key: &ShardKey,
        checkpoint: &Checkpoint,
        lease: &Lease,
    ) -> kinesis_connectors_core::Result<()> {
        Ok(self.write_fenced(key, checkpoint, lease).await?)
    }

    fn keeps_pending_batches(&self) -> bool {
        true
    }

    async fn pending_batch(
        &self,
        key: &ShardKey,
    ) -> kinesis_connectors_core::Result<Option<Position>> {
        Ok(self.read_pending_batch(key).await?)
    }

    async fn set_pending_batch(
        &self,
        key: &ShardKey,
        end: &Position,
        lease: &Lease,
    ) -> kinesis_connectors_core::Result<()> {
        Ok(self.write_pending_batch(key, end, lease).await?)
    }
}

#[async_trait]
impl LeaseStore for RedisCheckpointStore {
    async fn list_leases(
        &self,
        application: &str,
        stream: &str,
    ) -> kinesis_connectors_core::Result<Vec<StoredLease>> {
        Ok(self.leases(application, stream).await?)
    }

    async fn create_lease(
        &self,
        key: &ShardKey,
        parent_shard_ids: &[String],
    ) -> kinesis_connectors_core::Result<()> {
        Ok(self.create(key, parent_shard_ids).await?)
    }

    async fn take_lease(
        &self,
        key: &ShardKey,
        expected_counter: u64,
        owner: &str,
    ) -> kinesis_connectors_core::Result<Option<Lease>> {
        Ok(self.take(key, expected_counter, owner).await?)
    }

    async fn renew_lease(
        &self,
        key: &ShardKey,
        lease: &Lease,
    ) -> kinesis_connectors_core::Result<Lease> {
        Ok(self.renew(key, lease).await?)
    }

    async fn release_lease(
        &self,
        key: &ShardKey,
        lease: &Lease,
    ) -> kinesis_connectors_core::Result<()> {
        Ok(self.release(key, lease).await?)
    }
}

/// A script found `key`'s lease held by `owner` (or by nobody).
fn lease_lost(key: &ShardKey, owner: Option<String>) -> Error {
    Error::LeaseLost {
        shard_id: key.shard_id.clone(),
        owner,
    }
}

/// A script's `{status, counter, detail}` answer.
#[derive(Debug, PartialEq, Eq)]
struct Reply {
    status: i64,
    counter: u64,
    detail: Option<String>,
}

impl Reply {
    /// Accepts RESP2 and RESP3 forms: Lua `false` arrives as nil (RESP2) or
    /// a boolean (RESP3).
    fn decode(value: Value) -> Result<Self> {
        let unexpected =
            |value: &Value| Error::UnexpectedReply(format!("script answered {value:?}"));
        let Value::Array(items) = &value else {
            return Err(unexpected(&value));
        };
        let [status, counter, detail] = items.as_slice() else {
            return Err(unexpected(&value));
        };
        let (Value::Int(status), Value::Int(counter)) = (status, counter) else {
            return Err(unexpected(&value));
        };
        let counter = u64::try_from(*counter).map_err(|_| unexpected(&value))?;
        let detail = match detail {
            Value::Nil | Value::Boolean(false) => None,
            Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
            Value::SimpleString(text) => Some(text.clone()),
            _ => return Err(unexpected(&value)),
        };
        Ok(Self {
            status: *status,
            counter,
            detail,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn script_replies_decode_in_resp2_and_resp3() {
        let resp2 = Value::Array(vec![Value::Int(2), Value::Int(0), bulk("worker-b")]);
        assert_eq!(
            Reply::decode(resp2).unwrap(),
            Reply {
                status: 2,
                counter: 0,
                detail: Some("worker-b".into())
            }
        );
        for no_detail in [Value::Nil, Value::Boolean(false)] {
            let reply = Value::Array(vec![Value::Int(1), Value::Int(7), no_detail]);
            assert_eq!(
                Reply::decode(reply).unwrap(),
                Reply {
                    status: 1,
                    counter: 7,
                    detail: None
                }
            );
        }
    }

    #[test]
    fn odd_script_replies_are_errors() {
        for odd in [
            Value::Nil,
            Value::Okay,
            Value::Int(1),
            Value::Array(vec![Value::Int(1), Value::Int(0)]),
            Value::Array(vec![bulk("1"), Value::Int(0), Value::Nil]),
            Value::Array(vec![Value::Int(1), Value::Int(-1), Value::Nil]),
            Value::Array(vec![Value::Int(1), Value::Int(0), Value::Int(5)]),
        ] {
            assert!(
                matches!(Reply::decode(odd.clone()), Err(Error::UnexpectedReply(_))),
                "{odd:?}"
            );
        }
    }
}
