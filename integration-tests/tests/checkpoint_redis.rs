//! `RedisCheckpointStore` (kinesis-checkpoint-redis) against real Redis
//! servers: the testkit's checkpoint and lease conformance suites on the
//! stack's redis (and over TLS on a private one), the Go key and value
//! format, the Lua ordering against the core's, retryable errors while Redis
//! is down, a `StreamConsumer` on the stack's Kinesis riding out a Redis
//! outage without losing or regressing, and two workers sharing a stream
//! through Redis leases.
//!
//! Run with `cargo xtask it checkpoint_redis` (every test name starts with
//! `checkpoint_redis_`). Tests that stop Redis start their own
//! `redis-server` on a free 127.0.0.1 port and kill it by its pid, never the
//! stack's.

// Test code: helpers may unwrap and panic like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use integration_tests::consumer::FAST_DISCOVERY_INTERVAL;
use integration_tests::{
    PutOptions, RunningConsumer, STACK_MISSING, create_stream, fast_shard_config, kinesis_client,
    put_records, redis_url, unique_name, wait_until,
};
use kinesis_checkpoint_redis::RedisCheckpointStore;
use kinesis_checkpoint_redis::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use kinesis_checkpoint_redis::redis::{self, TlsCertificates};
use kinesis_connectors_core::{
    BadRecordPolicy, BufferLimits, Checkpoint, CheckpointStore, Error, Lease, LeaseCoordinator,
    LeaseStore, Pipeline, Position, RetryPolicy, SequenceNumber, ShardContext, ShardKey,
    StreamConsumer, Utf8Transformer, async_trait,
};
use kinesis_connectors_kinesis::PollingSource;
use kinesis_connectors_testkit::{
    CheckpointStoreCapabilities, LeaseCapabilities, RecordingEmitter, checkpoint_store_conformance,
    lease_conformance,
};

/// The bound of every wait in these tests.
const WAIT: Duration = Duration::from_secs(90);
/// How often a wait checks again.
const POLL: Duration = Duration::from_millis(50);

// ---------------------------------------------------------------------------
// Redis servers
// ---------------------------------------------------------------------------

async fn connect(url: &str) -> ConnectionManager {
    let client = redis::Client::open(url).expect("redis URL");
    ConnectionManager::new(client)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"))
}

/// A store on the stack's redis.
async fn stack_store() -> RedisCheckpointStore {
    RedisCheckpointStore::new(connect(&redis_url()).await)
}

/// A connection manager that gives up on a dead server within about a
/// second per call, so outages show up as retryable errors quickly.
fn impatient() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(200))
        .set_connection_timeout(Some(Duration::from_millis(500)))
        .set_response_timeout(Some(Duration::from_secs(1)))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A `redis-server` of this test alone, on 127.0.0.1, without persistence.
/// Stopped by its pid (SIGKILL), also when the test panics.
struct PrivateRedis {
    port: u16,
    args: Vec<String>,
    child: Option<Child>,
}

impl PrivateRedis {
    /// Plain Redis on `port`.
    async fn start(port: u16) -> Self {
        let args = vec!["--port".to_owned(), port.to_string()];
        Self::start_with(port, args).await
    }

    async fn start_with(port: u16, args: Vec<String>) -> Self {
        let mut redis = Self {
            port,
            args,
            child: None,
        };
        redis.restart().await;
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again, on the same port) and waits until it accepts connections.
    async fn restart(&mut self) {
        assert!(self.child.is_none(), "redis-server is already running");
        let child = Command::new("redis-server")
            .args(&self.args)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting redis-server: {e}; {STACK_MISSING}"));
        self.child = Some(child);
        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("redis-server on port {} exited: {status}", self.port);
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not listen within 10 s",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills the server (by its pid) and reaps it.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn at(sequence: impl Into<SequenceNumber>) -> Checkpoint {
    Checkpoint::At(Position::new(sequence.into()))
}

fn seq(digits: &str) -> SequenceNumber {
    SequenceNumber::parse(digits).unwrap()
}

async fn raw_get(connection: &mut ConnectionManager, key: &str) -> Option<String> {
    redis::cmd("GET")
        .arg(key)
        .query_async(connection)
        .await
        .unwrap()
}

async fn raw_set(connection: &mut ConnectionManager, key: &str, value: &str) {
    let () = redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query_async(connection)
        .await
        .unwrap();
}

// ---------------------------------------------------------------------------
// Conformance, format, ordering
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_redis_conformance_on_the_stack() {
    let started = Instant::now();
    let store = stack_store().await;
    let report =
        checkpoint_store_conformance::run_all(&store, CheckpointStoreCapabilities::new()).await;
    assert!(report.is_success(), "{report}");
    let prefixed = stack_store()
        .await
        .with_prefix(format!("{}:", unique_name("prefix")));
    let report =
        checkpoint_store_conformance::run_all(&prefixed, CheckpointStoreCapabilities::new()).await;
    assert!(report.is_success(), "{report}");
    eprintln!("checkpoint conformance (twice): {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_redis_lease_conformance_on_the_stack() {
    let started = Instant::now();
    let report =
        lease_conformance::run_all(Arc::new(stack_store().await), LeaseCapabilities::new()).await;
    assert!(report.is_success(), "{report}");
    eprintln!("lease conformance: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_redis_keys_and_values_follow_the_go_scheme() {
    let store = stack_store().await;
    let mut raw = store.connection().clone();
    let app = unique_name("go-app");
    let key = ShardKey::new(&*app, "orders", "shardId-000000000000");
    let redis_key = format!("{app}:checkpoint:orders:shardId-000000000000");
    assert_eq!(store.checkpoint_key(&key), redis_key);

    // What harlow/kinesis-connectors wrote: the plain sequence number.
    let go_value = "49590338271490256608559692538361571095921575989136588898";
    raw_set(&mut raw, &redis_key, go_value).await;
    assert_eq!(store.get(&key).await.unwrap(), Some(at(seq(go_value))));

    // Older positions, and sub-records of the record Go finished, are kept out.
    store.set(&key, &at(7u64)).await.unwrap();
    let sub = Checkpoint::At(Position {
        sequence: seq(go_value),
        sub_sequence: Some(3),
    });
    store.set(&key, &sub).await.unwrap();
    assert_eq!(
        raw_get(&mut raw, &redis_key).await.as_deref(),
        Some(go_value)
    );

    // A newer whole record is written in the Go format (Go can read it back).
    let newer = "49590338271490256608559692540925702759324208523137515618";
    store.set(&key, &at(seq(newer))).await.unwrap();
    assert_eq!(raw_get(&mut raw, &redis_key).await.as_deref(), Some(newer));

    // A sub-record position and SHARD_END in this crate's own format.
    let later = "49590338271490256608559692540925702759324208523137515619";
    let partial = Checkpoint::At(Position {
        sequence: seq(later),
        sub_sequence: Some(2),
    });
    store.set(&key, &partial).await.unwrap();
    assert_eq!(
        raw_get(&mut raw, &redis_key).await,
        Some(format!("{later}/2"))
    );
    store.set(&key, &Checkpoint::ShardEnd).await.unwrap();
    assert_eq!(
        raw_get(&mut raw, &redis_key).await.as_deref(),
        Some("SHARD_END")
    );

    // Leading zeros (never written by Kinesis, tolerated) compare as numbers.
    let padded = ShardKey::new(&*app, "orders", "padded");
    raw_set(&mut raw, &store.checkpoint_key(&padded), "00042").await;
    store.set(&padded, &at(41u64)).await.unwrap();
    assert_eq!(store.get(&padded).await.unwrap(), Some(at(42u64)));
    store.set(&padded, &at(43u64)).await.unwrap();
    assert_eq!(store.get(&padded).await.unwrap(), Some(at(43u64)));

    // A value that is no checkpoint is reported (permanently) and never overwritten.
    let corrupt = ShardKey::new(&*app, "orders", "corrupt");
    let corrupt_key = store.checkpoint_key(&corrupt);
    raw_set(&mut raw, &corrupt_key, "not-a-checkpoint").await;
    for error in [
        store.get(&corrupt).await.unwrap_err(),
        store.set(&corrupt, &at(1u64)).await.unwrap_err(),
    ] {
        assert!(!error.is_retryable(), "{error}");
        assert!(error.to_string().contains(&corrupt_key), "{error}");
    }
    assert_eq!(
        raw_get(&mut raw, &corrupt_key).await.as_deref(),
        Some("not-a-checkpoint")
    );

    // Lease layout: a hash per shard and a set of shard ids per stream.
    let prefix = format!("{}:", unique_name("layout"));
    let store = store.with_prefix(&*prefix);
    let child = ShardKey::new(&*app, "orders", "shardId-000000000002");
    store
        .create_lease(
            &child,
            &["shardId-000000000000".into(), "shardId-000000000001".into()],
        )
        .await
        .unwrap();
    let lease_key = format!("{prefix}{app}:lease:orders:shardId-000000000002");
    assert_eq!(store.lease_key(&child), lease_key);
    let hash: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(&lease_key)
        .query_async(&mut raw)
        .await
        .unwrap();
    let expected: HashMap<String, String> = [
        ("counter", "0"),
        ("parents", "2"),
        ("parent.0", "shardId-000000000000"),
        ("parent.1", "shardId-000000000001"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(hash, expected);
    let index: HashSet<String> = redis::cmd("SMEMBERS")
        .arg(format!("{prefix}{app}:leases:orders"))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(index, HashSet::from(["shardId-000000000002".to_owned()]));
    let taken = store
        .take_lease(&child, 0, "worker-a")
        .await
        .unwrap()
        .unwrap();
    store.release_lease(&child, &taken).await.unwrap();
    let hash: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(&lease_key)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(hash.get("counter").map(String::as_str), Some("2"));
    assert_eq!(
        hash.get("owner"),
        None,
        "a released lease has no owner field"
    );
}

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Checkpoints that often share lengths, prefixes and sequence numbers.
    fn checkpoint(&mut self, base: &str) -> Checkpoint {
        if self.below(12) == 0 {
            return Checkpoint::ShardEnd;
        }
        let digits = match self.below(4) {
            // Same length as `base`, differing in the last few digits.
            0 | 1 => {
                let keep = base.len() - 1 - self.below(3) as usize;
                let mut s = base[..keep].to_owned();
                while s.len() < base.len() {
                    s.push(char::from(b'0' + self.below(10) as u8));
                }
                s
            }
            // Another length: shorter or longer, large leading digits.
            2 => {
                let len = 1 + self.below(base.len() as u64 + 20) as usize;
                (0..len)
                    .map(|i| {
                        char::from(
                            b'0' + if i == 0 {
                                1 + self.below(9)
                            } else {
                                self.below(10)
                            } as u8,
                        )
                    })
                    .collect()
            }
            _ => base.to_owned(),
        };
        let sub_sequence = match self.below(3) {
            0 => None,
            1 => Some(self.below(12)),
            _ => Some(u64::MAX - self.below(3)),
        };
        Checkpoint::At(Position {
            sequence: seq(&digits),
            sub_sequence,
        })
    }
}

/// A pending batch (replay-stable batches) is fenced like a checkpoint:
/// after another worker took the lease, the old owner's write is refused
/// with `LeaseLost` and the stored pending batch stays as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_redis_a_pending_batch_with_a_stale_lease_is_refused_and_not_stored() {
    let store = stack_store().await;
    let mut raw = store.connection().clone();
    let app = unique_name("pending-app");
    let key = ShardKey::new(&*app, "orders", "shardId-000000000000");
    let pending_key = format!("{app}:pending:orders:shardId-000000000000");
    assert_eq!(store.pending_batch_key(&key), pending_key);
    assert!(store.keeps_pending_batches());
    assert_eq!(store.pending_batch(&key).await.unwrap(), None);

    store.create_lease(&key, &[]).await.unwrap();
    let mine = store
        .take_lease(&key, 0, "worker-a")
        .await
        .unwrap()
        .unwrap();
    let go_value = "49590338271490256608559692538361571095921575989136588898";
    let inside = Position {
        sequence: seq(go_value),
        sub_sequence: Some(3),
    };
    store.set_pending_batch(&key, &inside, &mine).await.unwrap();
    assert_eq!(
        raw_get(&mut raw, &pending_key).await,
        Some(format!("{go_value}/3"))
    );
    assert_eq!(
        store.pending_batch(&key).await.unwrap(),
        Some(inside.clone())
    );

    // Another worker takes the lease; the old owner's pending batch is refused.
    let theirs = store
        .take_lease(&key, mine.counter, "worker-b")
        .await
        .unwrap()
        .unwrap();
    let whole = Position::new(seq(go_value));
    let error = store
        .set_pending_batch(&key, &whole, &mine)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, kinesis_connectors_core::Error::LeaseLost { owner: Some(owner), .. } if owner == "worker-b"),
        "{error:?}"
    );
    assert_eq!(
        raw_get(&mut raw, &pending_key).await,
        Some(format!("{go_value}/3")),
        "the refused write stored nothing"
    );

    // The new owner's write goes through, whole records in the checkpoint format.
    store
        .set_pending_batch(&key, &whole, &theirs)
        .await
        .unwrap();
    assert_eq!(
        raw_get(&mut raw, &pending_key).await.as_deref(),
        Some(go_value)
    );
    assert_eq!(store.pending_batch(&key).await.unwrap(), Some(whole));
    // The checkpoint key is untouched by pending batches.
    assert_eq!(store.get(&key).await.unwrap(), None);
}

/// The Lua comparison in the scripts orders checkpoints exactly as the core
/// does (`Ord for Checkpoint`): lengths and digits of 56-digit sequence
/// numbers, sub-sequences up to `u64::MAX`, SHARD_END last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_redis_lua_ordering_matches_the_core_ordering() {
    let started = Instant::now();
    let store = stack_store().await;
    let app = unique_name("ordering");
    let base = "49590338271490256608559692538361571095921575989136588898";
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let pairs = 400;
    for i in 0..pairs {
        let (first, second) = (rng.checkpoint(base), rng.checkpoint(base));
        let key = ShardKey::new(&*app, "s", format!("pair-{i}"));
        store.set(&key, &first).await.unwrap();
        store.set(&key, &second).await.unwrap();
        let expected = std::cmp::max(first.clone(), second.clone());
        assert_eq!(
            store.get(&key).await.unwrap(),
            Some(expected),
            "set {first} then {second}"
        );
    }
    eprintln!("{pairs} ordered pairs: {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------
// Unreachable Redis
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_redis_unreachable_server_gives_retryable_errors_and_recovers() {
    let port = free_port();
    let mut server = PrivateRedis::start(port).await;
    let client = redis::Client::open(server.url()).unwrap();
    let store = RedisCheckpointStore::new(
        ConnectionManager::new_with_config(client.clone(), impatient())
            .await
            .unwrap(),
    );
    // The connection manager's defaults (6 reconnect attempts).
    let default_store = RedisCheckpointStore::new(ConnectionManager::new(client).await.unwrap());
    let key = ShardKey::new("unreachable-app", "s", "shard-0");
    store.create_lease(&key, &[]).await.unwrap();
    let lease = store.take_lease(&key, 0, "w").await.unwrap().unwrap();
    store.set_fenced(&key, &at(5u64), &lease).await.unwrap();
    assert_eq!(default_store.get(&key).await.unwrap(), Some(at(5u64)));

    server.stop();
    let mut slowest = Duration::ZERO;
    let mut check = |what: &str, started: Instant, error: kinesis_connectors_core::Error| {
        let took = started.elapsed();
        slowest = slowest.max(took);
        assert!(error.is_retryable(), "{what} while Redis is down: {error}");
        assert!(
            matches!(
                error,
                kinesis_connectors_core::Error::Checkpoint {
                    retryable: true,
                    ..
                }
            ),
            "{what}: {error:?}"
        );
        assert!(took < Duration::from_secs(5), "{what} took {took:?}");
    };
    let t = Instant::now();
    check("get", t, store.get(&key).await.unwrap_err());
    let t = Instant::now();
    check("set", t, store.set(&key, &at(6u64)).await.unwrap_err());
    let t = Instant::now();
    check(
        "set_fenced",
        t,
        store.set_fenced(&key, &at(6u64), &lease).await.unwrap_err(),
    );
    let t = Instant::now();
    check(
        "list_leases",
        t,
        store.list_leases("unreachable-app", "s").await.unwrap_err(),
    );
    let t = Instant::now();
    check(
        "create_lease",
        t,
        store.create_lease(&key, &[]).await.unwrap_err(),
    );
    let t = Instant::now();
    check(
        "take_lease",
        t,
        store.take_lease(&key, 1, "x").await.unwrap_err(),
    );
    let t = Instant::now();
    check(
        "renew_lease",
        t,
        store.renew_lease(&key, &lease).await.unwrap_err(),
    );
    let t = Instant::now();
    check(
        "release_lease",
        t,
        store.release_lease(&key, &lease).await.unwrap_err(),
    );
    let fast = slowest;
    // With the manager's defaults the first call fails at once (the dead
    // connection), the next waits for its reconnect attempts (6, with
    // backoff) to fail.
    let mut default_took = Vec::new();
    for _ in 0..2 {
        let t = Instant::now();
        let error = default_store.get(&key).await.unwrap_err();
        default_took.push(t.elapsed());
        assert!(error.is_retryable(), "{error}");
    }
    assert!(
        default_took
            .iter()
            .all(|took| *took < Duration::from_secs(20)),
        "{default_took:?}"
    );

    // Connecting to nothing fails retryably too (the URL itself is fine).
    let t = Instant::now();
    let error = RedisCheckpointStore::connect(&server.url())
        .await
        .unwrap_err();
    let connect_took = t.elapsed();
    assert!(error.is_retryable(), "{error}");
    let bad_url = RedisCheckpointStore::connect("redis://[::1")
        .await
        .unwrap_err();
    assert!(!bad_url.is_retryable(), "{bad_url}");

    // Back (empty: no persistence): the same stores work again.
    server.restart().await;
    let recovered = wait_until("the store answers again", WAIT, POLL, async || {
        store.get(&key).await.is_ok()
    })
    .await;
    assert_eq!(
        store.get(&key).await.unwrap(),
        None,
        "the restarted server is empty"
    );
    store.set(&key, &at(7u64)).await.unwrap();
    wait_until("the default store answers again", WAIT, POLL, async || {
        default_store.get(&key).await.is_ok()
    })
    .await;
    assert_eq!(default_store.get(&key).await.unwrap(), Some(at(7u64)));
    eprintln!(
        "down: slowest failing call {fast:?} (1 reconnect attempt), {default_took:?} with the \
         manager's defaults, connect {connect_took:?}; answering {recovered:?} after restart"
    );
}

// ---------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running openssl: {e}"));
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A CA and a server certificate for 127.0.0.1 signed by it, in a fresh directory.
fn certificates() -> PathBuf {
    let dir = std::env::temp_dir().join(unique_name("redis-tls"));
    std::fs::create_dir_all(&dir).unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=kinesis-connectors test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(&dir, &ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    openssl(&dir, &csr);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        &dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    );
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_redis_rediss_urls_work_over_rustls() {
    let started = Instant::now();
    // This test binary links rustls with both aws-lc-rs (AWS SDK) and ring
    // (sqlx): rustls cannot pick one, so one is installed below, as the
    // README says.
    let dir = certificates();
    let port = free_port();
    let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let _server = PrivateRedis::start_with(
        port,
        vec![
            "--port".into(),
            "0".into(),
            "--tls-port".into(),
            port.to_string(),
            "--tls-cert-file".into(),
            path("server.crt"),
            "--tls-key-file".into(),
            path("server.key"),
            "--tls-ca-cert-file".into(),
            path("ca.crt"),
            "--tls-auth-clients".into(),
            "no".into(),
        ],
    )
    .await;
    let url = format!("rediss://127.0.0.1:{port}");

    // rustls panics without a provider; `connect` turns that into an error.
    // (Only this test installs one, so this holds under `cargo test` too.)
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        match RedisCheckpointStore::connect(&url).await {
            Err(kinesis_checkpoint_redis::Error::ConnectPanicked(message)) => {
                assert!(message.contains("CryptoProvider"), "{message}");
            }
            other => panic!("connect without a crypto provider: {other:?}"),
        }
    }
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();

    // The system roots do not know the test CA: verification is on.
    let untrusted = RedisCheckpointStore::connect(&url).await;
    assert!(
        untrusted.is_err(),
        "connected to a server with an unknown CA"
    );

    let ca = std::fs::read(dir.join("ca.crt")).unwrap();
    let client = redis::Client::build_with_tls(
        url.as_str(),
        TlsCertificates {
            client_tls: None,
            root_cert: Some(ca),
        },
    )
    .unwrap();
    let store = RedisCheckpointStore::new(ConnectionManager::new(client).await.unwrap());
    let report =
        checkpoint_store_conformance::run_all(&store, CheckpointStoreCapabilities::new()).await;
    assert!(report.is_success(), "{report}");
    let report = lease_conformance::run_all(Arc::new(store), LeaseCapabilities::new()).await;
    assert!(report.is_success(), "{report}");
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("TLS: both suites in {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------
// A consumer on the stack's Kinesis
// ---------------------------------------------------------------------------

/// Writes records `"<id>"` with `PutRecords` and remembers where each went.
struct Producer {
    client: aws_sdk_kinesis::Client,
    stream: String,
    next_id: u64,
    /// id → (shard, sequence number)
    written: BTreeMap<u64, (String, SequenceNumber)>,
}

impl Producer {
    fn new(client: aws_sdk_kinesis::Client, stream: &str) -> Self {
        Self {
            client,
            stream: stream.to_owned(),
            next_id: 0,
            written: BTreeMap::new(),
        }
    }

    /// Writes `count` new records, 100 per call; refused entries (not
    /// written) are sent again.
    async fn put(&mut self, count: usize) -> Result<()> {
        let ids: Vec<u64> = (self.next_id..self.next_id + count as u64).collect();
        self.next_id += count as u64;
        let records = ids
            .iter()
            .map(|id| (format!("pk-{}", id % 16), id.to_string()));
        let options = PutOptions {
            per_call: 100,
            max_attempts: 30,
        };
        let written = put_records(&self.client, &self.stream, records, options).await?;
        for (id, w) in ids.into_iter().zip(written) {
            self.written.insert(id, (w.shard_id, w.sequence));
        }
        Ok(())
    }

    fn ids(&self) -> HashSet<u64> {
        self.written.keys().copied().collect()
    }

    /// The last sequence number written to each shard.
    fn last_per_shard(&self) -> BTreeMap<String, SequenceNumber> {
        let mut last: BTreeMap<String, SequenceNumber> = BTreeMap::new();
        for (shard, sequence) in self.written.values() {
            let entry = last
                .entry(shard.clone())
                .or_insert_with(|| sequence.clone());
            if sequence > entry {
                *entry = sequence.clone();
            }
        }
        last
    }
}

/// One checkpoint write the consumer attempted.
#[derive(Debug, Clone)]
struct Write {
    shard: String,
    checkpoint: Checkpoint,
    /// `None` if it succeeded, else whether the error was retryable and its text.
    error: Option<(bool, String)>,
}

/// A store that passes every call to Redis and records each checkpoint write.
#[derive(Clone)]
struct Spy {
    inner: Arc<RedisCheckpointStore>,
    writes: Arc<Mutex<Vec<Write>>>,
}

impl Spy {
    fn new(inner: Arc<RedisCheckpointStore>) -> Self {
        Self {
            inner,
            writes: Arc::default(),
        }
    }

    fn writes(&self) -> Vec<Write> {
        self.writes.lock().unwrap().clone()
    }

    fn failed(&self) -> usize {
        self.writes().iter().filter(|w| w.error.is_some()).count()
    }

    fn record(
        &self,
        key: &ShardKey,
        checkpoint: &Checkpoint,
        result: &kinesis_connectors_core::Result<()>,
    ) {
        self.writes.lock().unwrap().push(Write {
            shard: key.shard_id.clone(),
            checkpoint: checkpoint.clone(),
            error: result
                .as_ref()
                .err()
                .map(|e| (e.is_retryable(), e.to_string())),
        });
    }
}

#[async_trait]
impl CheckpointStore for Spy {
    async fn get(&self, key: &ShardKey) -> kinesis_connectors_core::Result<Option<Checkpoint>> {
        self.inner.get(key).await
    }

    async fn set(
        &self,
        key: &ShardKey,
        checkpoint: &Checkpoint,
    ) -> kinesis_connectors_core::Result<()> {
        let result = self.inner.set(key, checkpoint).await;
        self.record(key, checkpoint, &result);
        result
    }

    async fn set_fenced(
        &self,
        key: &ShardKey,
        checkpoint: &Checkpoint,
        lease: &Lease,
    ) -> kinesis_connectors_core::Result<()> {
        let result = self.inner.set_fenced(key, checkpoint, lease).await;
        self.record(key, checkpoint, &result);
        result
    }
}

/// A consumer of `stream` that flushes small batches often, retries fast
/// and looks for shards every second, so the tests finish quickly.
fn consumer(
    app: &str,
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    store: Arc<dyn CheckpointStore>,
    emitter: &RecordingEmitter<String>,
) -> kinesis_connectors_core::StreamConsumerBuilder<Utf8Transformer> {
    let emitter = emitter.clone();
    StreamConsumer::builder(
        app,
        stream,
        Arc::new(PollingSource::new(client.clone())),
        store,
        move |_: &ShardContext| {
            Pipeline::builder(Utf8Transformer, Arc::new(emitter.clone()))
                .buffer_limits(
                    BufferLimits::default()
                        .with_max_records(25)
                        .with_max_age(Duration::from_millis(300)),
                )
                .bad_records(BadRecordPolicy::Stop)
                .build()
        },
    )
    .shard_config(
        fast_shard_config().with_retry(
            RetryPolicy::new()
                .with_initial_delay(Duration::from_millis(50))
                .with_max_delay(Duration::from_millis(500))
                .with_max_attempts(10),
        ),
    )
    .discovery_interval(FAST_DISCOVERY_INTERVAL)
}

/// Emitted ids, each with how often it was emitted.
fn emitted(emitter: &RecordingEmitter<String>) -> HashMap<u64, usize> {
    let mut counts = HashMap::new();
    for item in emitter.items() {
        *counts
            .entry(item.parse::<u64>().expect("an id"))
            .or_default() += 1;
    }
    counts
}

async fn wait_for_ids(
    what: &str,
    emitter: &RecordingEmitter<String>,
    ids: &HashSet<u64>,
) -> Duration {
    wait_until(what, WAIT, POLL, async || {
        let seen = emitted(emitter);
        ids.iter().all(|id| seen.contains_key(id))
    })
    .await
}

/// Waits until Redis holds, for every shard, the checkpoint of its last record.
async fn wait_for_checkpoints(
    what: &str,
    store: &RedisCheckpointStore,
    app: &str,
    stream: &str,
    last: &BTreeMap<String, SequenceNumber>,
) -> Duration {
    wait_until(what, WAIT, POLL, async || {
        for (shard, sequence) in last {
            let key = ShardKey::new(app, stream, shard.as_str());
            if store.get(&key).await.ok().flatten() != Some(at(sequence.clone())) {
                return false;
            }
        }
        true
    })
    .await
}

/// The consumer keeps its in-memory checkpoint while Redis is down, retries
/// the write (retryable errors, with backoff) and, once a Redis comes back
/// on the same port — empty, without persistence — writes checkpoints again
/// that are never older than what it had written before; no record is lost
/// or emitted twice, and a new consumer resumes after the stored checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_redis_consumer_rides_out_an_outage() {
    let started = Instant::now();
    let app = unique_name("outage-app");
    let kinesis = kinesis_client().await;
    let stream = unique_name("redis-outage");
    create_stream(&kinesis, &stream, 2).await.unwrap();
    let mut server = PrivateRedis::start(free_port()).await;
    let client = redis::Client::open(server.url()).unwrap();
    let store = Arc::new(RedisCheckpointStore::new(
        ConnectionManager::new_with_config(client, impatient())
            .await
            .unwrap(),
    ));
    let spy = Spy::new(Arc::clone(&store));
    let emitter = RecordingEmitter::new();
    let running = RunningConsumer::start(
        consumer(&app, &kinesis, &stream, Arc::new(spy.clone()), &emitter)
            .build()
            .unwrap(),
    );
    let mut producer = Producer::new(kinesis.clone(), &stream);

    // 1. Redis up: records flow, checkpoints reach the last record of each shard.
    producer.put(200).await.unwrap();
    let phase1 = wait_for_ids(
        "records before the outage emitted",
        &emitter,
        &producer.ids(),
    )
    .await;
    wait_for_checkpoints(
        "checkpoints before the outage",
        &store,
        &app,
        &stream,
        &producer.last_per_shard(),
    )
    .await;
    let writes_before_outage = spy.writes().len();

    // 2. Redis down: writes fail retryably and keep being retried.
    server.stop();
    let down = Instant::now();
    producer.put(200).await.unwrap();
    wait_until(
        "failed checkpoint writes while Redis is down",
        WAIT,
        POLL,
        async || spy.failed() >= 3,
    )
    .await;
    let failed_then = spy.failed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let failed_later = spy.failed();
    assert!(
        failed_later > failed_then,
        "the consumer stopped retrying ({failed_then} failed writes, still {failed_later} 2 s later)"
    );
    assert!(
        !running.is_finished(),
        "the consumer ended while Redis was down"
    );
    let outage = down.elapsed();

    // 3. Redis back on the same port, empty: checkpoints resume and advance.
    server.restart().await;
    let back = Instant::now();
    producer.put(200).await.unwrap();
    let all = producer.ids();
    wait_for_ids("every record emitted after the outage", &emitter, &all).await;
    wait_for_checkpoints(
        "checkpoints after the outage",
        &store,
        &app,
        &stream,
        &producer.last_per_shard(),
    )
    .await;
    let recovery = back.elapsed();
    let report = running.stop().await;
    for shard in &report.shards {
        assert_eq!(
            shard.stats.records_read, shard.stats.records_emitted,
            "shard {}: {:?}",
            shard.shard_id, shard.stats
        );
    }

    // No record lost, none emitted twice (one consumer, nothing replayed).
    let seen = emitted(&emitter);
    let missing: Vec<&u64> = all.iter().filter(|id| !seen.contains_key(id)).collect();
    assert!(missing.is_empty(), "records lost: {missing:?}");
    let twice: Vec<(&u64, &usize)> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "records emitted more than once: {twice:?}"
    );

    // Never backwards: per shard, the checkpoints the consumer tried to write
    // never decrease (a retry repeats the same one) and the successful ones
    // increase strictly, across the outage too.
    let writes = spy.writes();
    let failures: Vec<&Write> = writes.iter().filter(|w| w.error.is_some()).collect();
    assert!(!failures.is_empty());
    for failure in &failures {
        let (retryable, text) = failure.error.as_ref().unwrap();
        assert!(*retryable, "a write failed permanently: {text}");
    }
    let mut shards: BTreeMap<&str, Vec<&Write>> = BTreeMap::new();
    for write in &writes {
        shards.entry(write.shard.as_str()).or_default().push(write);
    }
    for (shard, writes) in &shards {
        for pair in writes.windows(2) {
            assert!(
                pair[0].checkpoint <= pair[1].checkpoint,
                "{shard}: tried {} after {}",
                pair[1].checkpoint,
                pair[0].checkpoint
            );
        }
        let written: Vec<&Checkpoint> = writes
            .iter()
            .filter(|w| w.error.is_none())
            .map(|w| &w.checkpoint)
            .collect();
        for pair in written.windows(2) {
            assert!(
                pair[0] < pair[1],
                "{shard}: wrote {} after {}",
                pair[1],
                pair[0]
            );
        }
    }
    let failed_shards: HashSet<&str> = writes[writes_before_outage..]
        .iter()
        .filter(|w| w.error.is_some())
        .map(|w| w.shard.as_str())
        .collect();
    assert!(!failed_shards.is_empty());

    // 4. A new consumer resumes after the checkpoints in (the restarted) Redis.
    let checkpointed = producer.ids();
    producer.put(100).await.unwrap();
    let fresh: HashSet<u64> = producer.ids().difference(&checkpointed).copied().collect();
    let second = RecordingEmitter::new();
    let running = RunningConsumer::start(
        consumer(&app, &kinesis, &stream, store.clone(), &second)
            .build()
            .unwrap(),
    );
    wait_for_ids("records after the restart emitted", &second, &fresh).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    running.stop().await;
    let resumed: HashSet<u64> = emitted(&second).into_keys().collect();
    assert_eq!(
        resumed, fresh,
        "the second consumer read records before its checkpoint"
    );

    eprintln!(
        "outage test: {} records, phase 1 {phase1:?}, Redis down {outage:?} ({} failed writes, all \
         retryable), caught up {recovery:?} after restart, {} checkpoint writes; total {:?}",
        producer.written.len(),
        failures.len(),
        writes.len() - failures.len(),
        started.elapsed()
    );
}

/// Two workers split a 2-shard stream through Redis leases, then one stops
/// gracefully and the other takes its shard over, resuming after its
/// checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_redis_two_workers_share_a_stream_through_leases() {
    let started = Instant::now();
    let app = unique_name("lease-app");
    let kinesis = kinesis_client().await;
    let stream = unique_name("redis-leases");
    create_stream(&kinesis, &stream, 2).await.unwrap();
    let store = Arc::new(stack_store().await);
    let worker = |id: &str, emitter: &RecordingEmitter<String>| {
        let leases = LeaseCoordinator::new(store.clone(), &*app, &*stream, id)
            .failover_time(Duration::from_secs(3));
        RunningConsumer::start(
            consumer(&app, &kinesis, &stream, store.clone(), emitter)
                .assigner(Arc::new(leases))
                .build()
                .unwrap(),
        )
    };
    let (emitted_a, emitted_b) = (RecordingEmitter::new(), RecordingEmitter::new());
    let a = worker("worker-a", &emitted_a);
    let b = worker("worker-b", &emitted_b);
    let owners = async || -> BTreeMap<String, Option<String>> {
        store
            .list_leases(&app, &stream)
            .await
            .unwrap()
            .into_iter()
            .map(|l| (l.shard_id, l.owner))
            .collect()
    };
    let split = wait_until("each worker holds one lease", WAIT, POLL, async || {
        let owners = owners().await;
        owners.len() == 2
            && owners
                .values()
                .filter(|o| o.as_deref() == Some("worker-a"))
                .count()
                == 1
            && owners
                .values()
                .filter(|o| o.as_deref() == Some("worker-b"))
                .count()
                == 1
    })
    .await;
    // A worker whose lease was taken notices at its next renewal (every
    // second here) and stops that shard; let that happen before records
    // arrive, so no shard is read by both.
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let mut producer = Producer::new(kinesis.clone(), &stream);
    producer.put(200).await.unwrap();
    let first = producer.ids();
    wait_until(
        "every record emitted by one of the workers",
        WAIT,
        POLL,
        async || {
            let (a, b) = (emitted(&emitted_a), emitted(&emitted_b));
            first
                .iter()
                .all(|id| a.contains_key(id) || b.contains_key(id))
        },
    )
    .await;
    let by_shard = |emitter: &RecordingEmitter<String>| -> HashSet<String> {
        emitter
            .batches()
            .iter()
            .filter(|b| !b.items.is_empty())
            .map(|b| b.context.shard_id.to_string())
            .collect()
    };
    let shards_a = by_shard(&emitted_a);
    let shards_b = by_shard(&emitted_b);
    assert!(
        shards_a.is_disjoint(&shards_b),
        "both workers emitted records of one shard: {shards_a:?} / {shards_b:?}"
    );

    // Worker A stops gracefully: flush, checkpoint, release; B takes over.
    let report_a = a.stop().await;
    let handed_over: Vec<String> = report_a.shards.iter().map(|s| s.shard_id.clone()).collect();
    let a_checkpoints: BTreeMap<String, Option<Checkpoint>> = report_a
        .shards
        .iter()
        .map(|s| (s.shard_id.clone(), s.checkpoint.clone()))
        .collect();
    let takeover = wait_until("worker B holds both leases", WAIT, POLL, async || {
        owners()
            .await
            .values()
            .all(|o| o.as_deref() == Some("worker-b"))
    })
    .await;
    let before = producer.ids();
    producer.put(100).await.unwrap();
    let fresh: HashSet<u64> = producer.ids().difference(&before).copied().collect();
    wait_for_ids(
        "records after the handover emitted by B",
        &emitted_b,
        &fresh,
    )
    .await;
    b.stop().await;

    // B resumed A's shards after A's checkpoint: nothing A had checkpointed again.
    for batch in emitted_b.batches() {
        let shard = batch.context.shard_id.to_string();
        if let Some(Some(Checkpoint::At(done))) = a_checkpoints.get(&shard) {
            for source in &batch.sources {
                assert!(
                    source.position > *done,
                    "B emitted {} of {shard}, at or before A's checkpoint {done}",
                    source.position
                );
            }
        }
    }
    let all = producer.ids();
    let (a, b) = (emitted(&emitted_a), emitted(&emitted_b));
    let missing: Vec<&u64> = all
        .iter()
        .filter(|id| !a.contains_key(id) && !b.contains_key(id))
        .collect();
    assert!(missing.is_empty(), "records lost: {missing:?}");
    eprintln!(
        "leases: split in {split:?}, A handed over {handed_over:?}, B took over in {takeover:?}; total {:?}",
        started.elapsed()
    );
}

/// A single-worker consumer on a Redis store that holds a lease for its
/// shard (leases turned off after a run with them) stops with an error
/// that says so, instead of having every checkpoint refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_redis_a_single_worker_on_leased_keys_stops_with_a_clear_error() {
    let kinesis = kinesis_client().await;
    let stream = unique_name("redis-leased");
    let error = integration_tests::leases::single_worker_on_a_leased_store(
        &kinesis,
        &format!("{stream}-app"),
        &stream,
        Arc::new(stack_store().await),
        Arc::new(RecordingEmitter::<String>::new()),
    )
    .await;
    let text = error.to_string();
    assert!(matches!(error, Error::ShardFailed { .. }), "{text}");
    for needle in ["has a lease", "held by \"old-worker\"", "SingleWorker"] {
        assert!(text.contains(needle), "{needle:?} in {text}");
    }
}

/// A renewal Redis applied but whose reply was lost (a response timeout) or
/// refused on a retry is not a lost lease: the coordinator reads it back.
#[tokio::test]
async fn checkpoint_redis_an_applied_renewal_answered_with_an_error_keeps_the_lease() {
    let stream = unique_name("redis-renewal");
    integration_tests::leases::applied_renewals_keep_the_lease(
        stack_store().await,
        &format!("{stream}-app"),
        &stream,
    )
    .await;
}

#[tokio::test]
async fn checkpoint_redis_leases_outlive_a_store_outage_longer_than_failover() {
    let stream = unique_name("redis-outage");
    integration_tests::leases::leases_outlive_a_store_outage(
        stack_store().await,
        &format!("{stream}-app"),
        &stream,
    )
    .await;
}
