//! The `redshift-manifest` example binary on the stack, as a user runs it:
//! started with a config file, events produced into its input stream, every
//! event loaded into PostgreSQL exactly once, then SIGTERM: the binary
//! flushes, emits and checkpoints, and exits 0. Started again, it resumes
//! from its checkpoints and loads nothing twice.
//!
//! Run with `cargo xtask it example_redshift_manifest`. The test builds the
//! binary with the cargo that runs it (a link step when the library is built).

// Test code: helpers may unwrap and panic like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use integration_tests::{database_url, example_binary, kinesis_client, redis_url, unique_name};
use producer::ProducerConfig;
use redis::AsyncCommands;
use sqlx::AssertSqlSafe;
use sqlx::postgres::{PgPool, PgPoolOptions};

/// The bound of every wait.
const WAIT: Duration = Duration::from_secs(120);
const EVENTS: u64 = 400;

/// The shipped config file with this test's own names.
fn write_config(run: &str) -> (PathBuf, String, String, String) {
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples/redshift-manifest/config/redshift-manifest.toml"),
    )
    .unwrap();
    let input = format!("{run}-events");
    let table = format!("{}_events", run.replace('-', "_"));
    let text = shipped
        .replace("\"demo-events\"", &format!("\"{input}\""))
        .replace("\"demo-manifests\"", &format!("\"{run}-manifests\""))
        .replace("\"demo-archiver\"", &format!("\"{run}-archiver\""))
        .replace("\"demo-loader\"", &format!("\"{run}-loader\""))
        .replace("\"demo-lake\"", &format!("\"{run}-lake\""))
        .replace("\"demo_events\"", &format!("\"{table}\""))
        .replace(
            "\"demo_events_loaded_files\"",
            &format!("\"{table}_files\""),
        );
    assert!(text.contains(&input) && text.contains(&table), "{text}");
    let path = std::env::temp_dir().join(format!("{run}.toml"));
    std::fs::write(&path, text).unwrap();
    (path, input, format!("{run}-archiver"), table)
}

/// The example binary, built on a blocking thread.
async fn build_binary() -> PathBuf {
    tokio::task::spawn_blocking(|| example_binary("redshift-manifest", "redshift-manifest"))
        .await
        .unwrap()
}

fn start(binary: &Path, config: &Path) -> Child {
    Command::new(binary)
        .args(["--config".as_ref(), config.as_os_str()])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .spawn()
        .expect("start redshift-manifest")
}

/// Sends SIGTERM and waits (bounded) for a clean exit.
fn terminate(child: &mut Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(
                status.success(),
                "redshift-manifest exited with {status} after SIGTERM"
            );
            return;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            panic!("redshift-manifest did not exit within {WAIT:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The run's table in PostgreSQL, where the binary loads the events.
struct LoadedTable {
    pool: PgPool,
    table: String,
}

impl LoadedTable {
    async fn connect(table: &str) -> Self {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect(&database_url())
            .await
            .unwrap();
        Self {
            pool,
            table: table.to_owned(),
        }
    }

    /// `SELECT {what} FROM` the table.
    async fn count(&self, what: &str) -> i64 {
        let sql = format!("SELECT {what} FROM \"{}\"", self.table);
        match sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql))
            .fetch_one(&self.pool)
            .await
        {
            Ok(n) => n,
            // The binary creates the table when it starts.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => 0,
            Err(e) => panic!("{e}"),
        }
    }

    /// The rows loaded, duplicates included.
    async fn rows(&self) -> i64 {
        self.count("count(*)").await
    }

    /// The distinct events loaded.
    async fn distinct(&self) -> i64 {
        self.count("count(DISTINCT id)").await
    }

    /// Waits (bounded) until the running `child` has loaded `events`
    /// distinct events.
    async fn wait_for(&self, child: &mut Child, events: u64) {
        let started = Instant::now();
        while self.distinct().await < events as i64 {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("redshift-manifest exited early with {status}");
            }
            if started.elapsed() > WAIT {
                child.kill().ok();
                panic!("not every event was loaded within {WAIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_redshift_manifest_binary_loads_every_event_once_and_stops_on_sigterm() {
    let binary = build_binary().await;
    let run = unique_name("rsm");
    let (config, input, archiver, table) = write_config(&run);
    let kinesis = kinesis_client().await;
    let mut events = ProducerConfig::new(input.clone(), EVENTS);
    events.create_shards = Some(2);
    let cancel = kinesis_connectors_core::CancellationToken::new();
    producer::produce(&kinesis, &events, &cancel, |_| {})
        .await
        .unwrap();

    let loaded = LoadedTable::connect(&table).await;

    let mut child = start(&binary, &config);
    loaded.wait_for(&mut child, EVENTS).await;
    tokio::task::block_in_place(|| terminate(&mut child));
    assert_eq!(loaded.rows().await, EVENTS as i64, "duplicate rows");

    // Stage 1's checkpoints are in Redis under the Go library's key scheme.
    let mut redis = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis
        .keys(format!("{archiver}:checkpoint:{input}:*"))
        .await
        .unwrap();
    assert_eq!(keys.len(), 2, "one checkpoint per input shard: {keys:?}");

    // Started again: resumes from the checkpoints; nothing is loaded twice.
    let mut child = start(&binary, &config);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the restart exited early"
    );
    tokio::task::block_in_place(|| terminate(&mut child));
    assert_eq!(
        loaded.rows().await,
        EVENTS as i64,
        "the restart loaded rows again"
    );
    std::fs::remove_file(&config).ok();
}

/// Kills the binary with SIGKILL (no flush, no checkpoint) and reaps it.
fn kill_hard(child: &mut Child) {
    child.kill().expect("SIGKILL redshift-manifest");
    child.wait().expect("reap redshift-manifest");
}

/// Events for the kill loop, and how many SIGKILLs it survives. Enough for
/// several age-cut batches between kills at the shipped 1 s batch age.
const LIVE_EVENTS: u64 = 1_500;
const KILLS: u32 = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_redshift_manifest_killed_in_a_loop_with_live_traffic_loads_every_event_once() {
    let binary = build_binary().await;
    let run = unique_name("rsk");
    let (config, input, _, table) = write_config(&run);
    let kinesis = kinesis_client().await;
    let mut events = ProducerConfig::new(input.clone(), LIVE_EVENTS);
    events.create_shards = Some(2);
    // Slow enough that events keep arriving through every kill.
    events.rate = 60;
    producer::ensure_stream(&kinesis, &input, 2).await.unwrap();
    let cancel = kinesis_connectors_core::CancellationToken::new();
    let producing = {
        let kinesis = kinesis.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move { producer::produce(&kinesis, &events, &cancel, |_| {}).await })
    };

    let loaded = LoadedTable::connect(&table).await;

    // Kill at moments spread over a batch age and a checkpoint: a
    // deterministic spread (the run id seeds it) rather than a fixed beat.
    let seed = run
        .bytes()
        .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    for kill in 0..KILLS {
        let mut child = start(&binary, &config);
        let alive_ms = 2_500 + (seed.rotate_left(kill * 7) % 3_000);
        tokio::time::sleep(Duration::from_millis(alive_ms)).await;
        if let Some(status) = child.try_wait().unwrap() {
            panic!("redshift-manifest exited by itself with {status} (run {kill})");
        }
        tokio::task::block_in_place(|| kill_hard(&mut child));
    }
    let produced = producing.await.unwrap().unwrap();
    assert_eq!(produced.sent, LIVE_EVENTS);

    // Then run to completion.
    let mut child = start(&binary, &config);
    loaded.wait_for(&mut child, LIVE_EVENTS).await;
    // A moment more, so that late duplicates would show.
    tokio::time::sleep(Duration::from_secs(3)).await;
    tokio::task::block_in_place(|| terminate(&mut child));
    let (rows, distinct) = (loaded.rows().await, loaded.distinct().await);
    assert_eq!(
        (rows, distinct),
        (LIVE_EVENTS as i64, LIVE_EVENTS as i64),
        "rows, distinct events after {KILLS} SIGKILLs with live traffic"
    );
    std::fs::remove_file(&config).ok();
}
