//! The Lua scripts: every conditional write is one script, so Redis runs
//! the check and the write atomically.
//!
//! Every script answers `{status, counter, detail}`: an integer status (see
//! the constants), the lease counter where one applies (else 0), and a
//! string or `false` (nil). Sequence numbers reach 128 digits and
//! sub-sequence numbers 20, beyond the doubles Lua computes with, so they
//! are compared as digit strings: by length after dropping leading zeros,
//! then byte by byte.

use std::sync::LazyLock;

use redis::Script;

/// The checkpoint was stored.
pub(crate) const WRITTEN: i64 = 1;
/// The stored checkpoint was as new or newer; nothing changed. Detail: the stored value.
pub(crate) const KEPT: i64 = 0;
/// The lease is not held with that owner and counter. Detail: the current owner.
pub(crate) const LOST: i64 = 2;
/// The stored checkpoint does not parse; nothing changed. Detail: the stored value.
pub(crate) const CORRUPT: i64 = 3;
/// The new checkpoint does not parse (a bug: the crate encodes it). Detail: the value.
pub(crate) const BAD_ARGUMENT: i64 = 4;
/// `take_lease`/`release_lease`: the lease changed hands; `create_lease`: it existed.
pub(crate) const UNCHANGED: i64 = 0;
/// `take_lease`/`renew_lease`/`release_lease`/`create_lease` did it.
pub(crate) const DONE: i64 = 1;

/// Parsing and ordering of stored checkpoints, shared by the writing scripts.
/// `parse` accepts exactly what `codec::decode_checkpoint` accepts.
const CHECKPOINT_LIB: &str = r#"
local function digits(s)
  local t = string.gsub(s, '^0+', '')
  if t == '' then return '0' end
  return t
end

local function cmp_num(a, b)
  a = digits(a)
  b = digits(b)
  if #a ~= #b then
    if #a < #b then return -1 else return 1 end
  end
  for i = 1, #a do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then
      if x < y then return -1 else return 1 end
    end
  end
  return 0
end

local U64_MAX = '18446744073709551615'

-- 'end' | 'at', sequence, sub-sequence (nil for a whole record); nil when malformed
local function parse(v)
  if v == 'SHARD_END' then return 'end' end
  local seq, sub = string.match(v, '^(%d+)/(%d+)$')
  if seq then
    if cmp_num(sub, U64_MAX) > 0 then return nil end
    return 'at', seq, sub
  end
  seq = string.match(v, '^(%d+)$')
  if seq then return 'at', seq, nil end
  return nil
end

-- SHARD_END after every position; a whole record after its sub-records
local function cmp(ka, sa, ua, kb, sb, ub)
  if ka == 'end' or kb == 'end' then
    if ka == kb then return 0 end
    if ka == 'end' then return 1 else return -1 end
  end
  local c = cmp_num(sa, sb)
  if c ~= 0 then return c end
  if ua == nil and ub == nil then return 0 end
  if ua == nil then return 1 end
  if ub == nil then return -1 end
  return cmp_num(ua, ub)
end

-- stores value at key unless the stored checkpoint is as new or newer
local function advance(key, value)
  local kn, sn, un = parse(value)
  if not kn then return {4, 0, value} end
  local stored = redis.call('GET', key)
  if stored then
    local ks, ss, us = parse(stored)
    if not ks then return {3, 0, stored} end
    if cmp(kn, sn, un, ks, ss, us) <= 0 then return {0, 0, stored} end
  end
  redis.call('SET', key, value)
  return {1, 0, false}
end
"#;

/// KEYS: checkpoint. ARGV: encoded checkpoint.
pub(crate) static SET_CHECKPOINT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{CHECKPOINT_LIB}\nreturn advance(KEYS[1], ARGV[1])\n"
    ))
});

/// KEYS: lease hash, checkpoint. ARGV: owner, counter, encoded checkpoint.
///
/// Without a lease hash the store is used by a single worker (no
/// coordinator created leases), and the write is not fenced.
pub(crate) static SET_FENCED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{CHECKPOINT_LIB}
local lease = redis.call('HMGET', KEYS[1], 'owner', 'counter')
local owner, counter = lease[1], lease[2]
if counter and (owner ~= ARGV[1] or counter ~= ARGV[2]) then
  return {{2, 0, owner}}
end
return advance(KEYS[2], ARGV[3])
"#
    ))
});

/// KEYS: lease hash, pending batch. ARGV: owner, counter, encoded position.
///
/// Fenced exactly like [`SET_FENCED`] (no lease hash: a single worker,
/// unfenced); the position replaces any earlier one, never compared: the
/// shard records the batch it is about to emit, whatever was recorded before.
pub(crate) static SET_PENDING_BATCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local lease = redis.call('HMGET', KEYS[1], 'owner', 'counter')
local owner, counter = lease[1], lease[2]
if counter and (owner ~= ARGV[1] or counter ~= ARGV[2]) then
  return {2, 0, owner}
end
redis.call('SET', KEYS[2], ARGV[3])
return {1, 0, false}
"#,
    )
});

/// KEYS: lease hash, lease index. ARGV: shard id, then (field, value)
/// pairs: the parent count and one field per parent (`codec::parent_fields`).
/// Adds the shard to the index even when the lease exists (repairs an index
/// someone trimmed).
pub(crate) static CREATE_LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
redis.call('SADD', KEYS[2], ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 1 then return {0, 0, false} end
redis.call('HSET', KEYS[1], 'counter', 0)
for i = 2, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
return {1, 0, false}
"#,
    )
});

/// KEYS: lease hash. ARGV: expected counter, new owner.
pub(crate) static TAKE_LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local counter = redis.call('HGET', KEYS[1], 'counter')
if not counter or counter ~= ARGV[1] then
  return {0, 0, redis.call('HGET', KEYS[1], 'owner')}
end
local new = redis.call('HINCRBY', KEYS[1], 'counter', 1)
redis.call('HSET', KEYS[1], 'owner', ARGV[2])
return {1, new, ARGV[2]}
"#,
    )
});

/// KEYS: lease hash. ARGV: owner, counter.
pub(crate) static RENEW_LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local lease = redis.call('HMGET', KEYS[1], 'owner', 'counter')
local owner, counter = lease[1], lease[2]
if not counter or owner ~= ARGV[1] or counter ~= ARGV[2] then
  return {2, 0, owner}
end
local new = redis.call('HINCRBY', KEYS[1], 'counter', 1)
return {1, new, owner}
"#,
    )
});

/// KEYS: lease hash. ARGV: owner, counter.
pub(crate) static RELEASE_LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local lease = redis.call('HMGET', KEYS[1], 'owner', 'counter')
local owner, counter = lease[1], lease[2]
if not counter or owner ~= ARGV[1] or counter ~= ARGV[2] then
  return {0, 0, owner}
end
redis.call('HDEL', KEYS[1], 'owner')
local new = redis.call('HINCRBY', KEYS[1], 'counter', 1)
return {1, new, false}
"#,
    )
});
