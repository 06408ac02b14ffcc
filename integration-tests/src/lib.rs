//! Helpers for the tests that need the local AWS stack.
//!
//! Run them with `cargo xtask it` (it starts the stack, runs this package's
//! tests with the stack's environment and stops the stack), or start the stack
//! yourself:
//!
//! ```text
//! cargo xtask stack up
//! eval "$(cargo xtask stack env)"
//! cargo nextest run -p integration-tests
//! ```
//!
//! Beyond reaching the stack: [`consumer`] runs a `StreamConsumer` tuned to
//! finish fast and stops it with a bounded wait, [`records`] writes records
//! with `PutRecords` and reads a whole stream back, [`s3`] lists a bucket,
//! [`wait`] polls a condition with a bound, [`one_at_a_time`] serialises
//! DynamoDB requests and [`leases`] holds lease checks every lease store
//! runs.
//!
//! Every helper reads the environment that `cargo xtask stack env` prints
//! (`AWS_ENDPOINT_URL_KINESIS`, `AWS_ENDPOINT_URL_S3`,
//! `AWS_ENDPOINT_URL_DYNAMODB`, `REDIS_URL`, `DATABASE_URL`, …). When a
//! variable is missing or a service does not answer, the helper panics with a
//! message telling how to start the stack: a test that needs the stack fails
//! without it, it never passes or skips silently.

pub mod consumer;
pub mod leases;
pub mod one_at_a_time;
pub mod proxy;
pub mod records;
pub mod s3;
pub mod wait;

pub use consumer::{RunningConsumer, fast_shard_config};
pub use records::{PutOptions, Written, put_records, read_stream};
pub use wait::{wait_for_progress, wait_until};

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_kinesis::config::Credentials;

/// The message every helper fails with when the stack is absent.
pub const STACK_MISSING: &str = "the local stack is not running: run `cargo xtask it` \
     (or `cargo xtask stack up` and `eval \"$(cargo xtask stack env)\"`)";

/// The region used when `AWS_REGION` is not set.
pub const DEFAULT_REGION: &str = "us-east-1";

/// Where the services of the local stack are, as read from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackEnv {
    /// `KC_STACK`: `embedded` or `localstack` (`unknown` when unset).
    pub kind: String,
    /// Endpoint of Kinesis (`AWS_ENDPOINT_URL_KINESIS`, else `AWS_ENDPOINT_URL`).
    pub kinesis_endpoint: String,
    /// Endpoint of S3 (`AWS_ENDPOINT_URL_S3`, else `AWS_ENDPOINT_URL`).
    pub s3_endpoint: String,
    /// Endpoint of DynamoDB (`AWS_ENDPOINT_URL_DYNAMODB`, else `AWS_ENDPOINT_URL`).
    pub dynamodb_endpoint: String,
    /// `REDIS_URL`, e.g. `redis://127.0.0.1:6379`.
    pub redis_url: String,
    /// `DATABASE_URL`, e.g. `postgres://postgres@127.0.0.1:5432/kc_test`.
    pub database_url: String,
    /// `AWS_REGION` (default `us-east-1`).
    pub region: String,
}

impl StackEnv {
    /// Reads the stack's environment variables and checks that every service
    /// accepts TCP connections. The error names what is missing and contains
    /// [`STACK_MISSING`].
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
            .and_then(|env| env.check_reachable().map(|()| env))
            .map_err(|e| anyhow::anyhow!("{STACK_MISSING}: {e:#}"))
    }

    /// Builds the description from a variable lookup, without any network check.
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let general = var("AWS_ENDPOINT_URL");
        let endpoint = |name: &str| {
            var(name)
                .or_else(|| general.clone())
                .with_context(|| format!("{name} (or AWS_ENDPOINT_URL) is not set"))
        };
        Ok(Self {
            kind: var("KC_STACK").unwrap_or_else(|| "unknown".to_owned()),
            kinesis_endpoint: endpoint("AWS_ENDPOINT_URL_KINESIS")?,
            s3_endpoint: endpoint("AWS_ENDPOINT_URL_S3")?,
            dynamodb_endpoint: endpoint("AWS_ENDPOINT_URL_DYNAMODB")?,
            redis_url: var("REDIS_URL").context("REDIS_URL is not set")?,
            database_url: var("DATABASE_URL").context("DATABASE_URL is not set")?,
            region: var("AWS_REGION").unwrap_or_else(|| DEFAULT_REGION.to_owned()),
        })
    }

    /// Fails unless every endpoint accepts a TCP connection within 2 s.
    pub fn check_reachable(&self) -> Result<()> {
        let targets = [
            ("Kinesis", &self.kinesis_endpoint),
            ("S3", &self.s3_endpoint),
            ("DynamoDB", &self.dynamodb_endpoint),
            ("Redis", &self.redis_url),
            ("PostgreSQL", &self.database_url),
        ];
        for (service, url) in targets {
            let (host, port) =
                host_port(url).with_context(|| format!("{service}: bad URL `{url}`"))?;
            let addrs: Vec<SocketAddr> = (host.as_str(), port)
                .to_socket_addrs()
                .with_context(|| format!("{service}: cannot resolve {host}"))?
                .collect();
            let reachable = addrs
                .iter()
                .any(|a| TcpStream::connect_timeout(a, Duration::from_secs(2)).is_ok());
            if !reachable {
                bail!("{service} does not answer at {url}");
            }
        }
        Ok(())
    }
}

/// Host and port of a URL such as `http://h:1`, `redis://h:1/0` or
/// `postgres://user@h:1/db` (the scheme's default port when none is given).
pub fn host_port(url: &str) -> Result<(String, u16)> {
    let (scheme, rest) = url.split_once("://").context("no scheme")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let default_port = match scheme {
        "http" => 80,
        "https" => 443,
        "redis" => 6379,
        "postgres" | "postgresql" => 5432,
        other => bail!("unknown scheme `{other}`"),
    };
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        let (h, after) = v6.split_once(']').context("unclosed `[`")?;
        let port = after.strip_prefix(':').map(str::parse).transpose()?;
        (h, port)
    } else {
        match host_port.rsplit_once(':') {
            Some((h, p)) => (
                h,
                Some(p.parse().with_context(|| format!("bad port `{p}`"))?),
            ),
            None => (host_port, None),
        }
    };
    if host.is_empty() {
        bail!("no host");
    }
    Ok((host.to_owned(), port.unwrap_or(default_port)))
}

/// The stack's environment, checked once per test binary.
///
/// # Panics
///
/// When a variable is missing or a service does not answer, with a message
/// that contains [`STACK_MISSING`].
pub fn stack() -> &'static StackEnv {
    static STACK: OnceLock<Result<StackEnv, String>> = OnceLock::new();
    match STACK.get_or_init(|| StackEnv::from_env().map_err(|e| format!("{e:#}"))) {
        Ok(env) => env,
        Err(message) => stack_missing(message),
    }
}

/// Fails the calling test: the stack is required and absent.
#[allow(clippy::panic)] // failing loudly is the point: these tests must not pass without the stack
fn stack_missing(message: &str) -> ! {
    panic!("{message}")
}

/// An `SdkConfig` for the local stack: region from `AWS_REGION` (default
/// `us-east-1`), dummy static credentials, endpoints from the
/// `AWS_ENDPOINT_URL*` variables (read by aws-config per service).
///
/// # Panics
///
/// When the stack is not running (see [`stack`]).
pub async fn sdk_config() -> SdkConfig {
    let env = stack();
    let access_key = std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_else(|_| "test".to_owned());
    let secret_key = std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_else(|_| "test".to_owned());
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(env.region.clone()))
        .credentials_provider(Credentials::new(
            access_key,
            secret_key,
            None,
            None,
            "local-stack",
        ))
        .load()
        .await
}

/// A Kinesis client for the local stack.
///
/// # Panics
///
/// When the stack is not running (see [`stack`]).
pub async fn kinesis_client() -> aws_sdk_kinesis::Client {
    let config = sdk_config().await;
    let conf = aws_sdk_kinesis::config::Builder::from(&config)
        .endpoint_url(stack().kinesis_endpoint.clone())
        .build();
    aws_sdk_kinesis::Client::from_conf(conf)
}

/// An S3 client for the local stack, with path-style addressing.
///
/// # Panics
///
/// When the stack is not running (see [`stack`]).
pub async fn s3_client() -> aws_sdk_s3::Client {
    let config = sdk_config().await;
    let conf = aws_sdk_s3::config::Builder::from(&config)
        .endpoint_url(stack().s3_endpoint.clone())
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// A DynamoDB client for the local stack.
///
/// # Panics
///
/// When the stack is not running (see [`stack`]).
pub async fn dynamodb_client() -> aws_sdk_dynamodb::Client {
    let config = sdk_config().await;
    let conf = aws_sdk_dynamodb::config::Builder::from(&config)
        .endpoint_url(stack().dynamodb_endpoint.clone())
        .build();
    aws_sdk_dynamodb::Client::from_conf(conf)
}

/// `REDIS_URL` of the local stack.
///
/// # Panics
///
/// When the stack is not running (see [`stack`]).
pub fn redis_url() -> String {
    stack().redis_url.clone()
}

/// `DATABASE_URL` of the local stack's PostgreSQL (a test database, trust auth).
///
/// # Panics
///
/// When the stack is not running (see [`stack`]).
pub fn database_url() -> String {
    stack().database_url.clone()
}

/// A name unique to this test run and call: `prefix` (lowercased, characters
/// other than `a-z0-9` turned into `-`), a run id and a counter, at most 63
/// characters. Valid as an S3 bucket, Kinesis stream, DynamoDB table, Redis key
/// and, when `prefix` starts with a letter and `-` is replaced by `_`, SQL identifier.
pub fn unique_name(prefix: &str) -> String {
    static RUN: OnceLock<String> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let run = RUN.get_or_init(|| {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        // Time and pid: nextest runs each test in its own process.
        format!("{}-{}", base36(secs), base36(u64::from(std::process::id())))
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut clean: String = prefix
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    clean = clean.trim_matches('-').to_owned();
    if clean.is_empty() {
        clean = "kc".to_owned();
    }
    let suffix = format!("-{run}-{n}");
    clean.truncate(63 - suffix.len().min(60));
    let clean = clean.trim_end_matches('-');
    format!("{clean}{suffix}")
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8_lossy(&out).into_owned()
}

/// Creates a stream with `shard_count` shards and waits (at most 60 s) until it
/// is `ACTIVE`.
pub async fn create_stream(
    client: &aws_sdk_kinesis::Client,
    name: &str,
    shard_count: i32,
) -> Result<()> {
    client
        .create_stream()
        .stream_name(name)
        .shard_count(shard_count)
        .send()
        .await
        .with_context(|| format!("CreateStream {name}"))?;
    producer::wait_until_active(client, name, Duration::from_secs(60)).await
}

/// Builds the binary `binary` of the example package `package` with the
/// cargo that builds these tests (a link step once the library is built) and
/// returns its path, so a test can run the example as a user does.
///
/// # Panics
///
/// When the build fails.
#[allow(clippy::panic)] // a test that cannot build what it tests must fail
pub fn example_binary(package: &str, binary: &str) -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = std::process::Command::new(env!("CARGO"))
        .current_dir(&root)
        .args(["build", "-p", package, "--bin", binary])
        .stdin(std::process::Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo build -p {package}: {e}"));
    assert!(
        status.success(),
        "cargo build -p {package} --bin {binary} failed"
    );
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    target
        .join("debug")
        .join(format!("{binary}{}", std::env::consts::EXE_SUFFIX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_and_port() -> Result<()> {
        assert_eq!(
            host_port("http://127.0.0.1:4566")?,
            ("127.0.0.1".to_owned(), 4566)
        );
        assert_eq!(
            host_port("redis://127.0.0.1:7/0")?,
            ("127.0.0.1".to_owned(), 7)
        );
        assert_eq!(
            host_port("postgres://postgres@localhost:55/db")?,
            ("localhost".to_owned(), 55)
        );
        assert_eq!(host_port("postgres://u:p@h/db")?, ("h".to_owned(), 5432));
        assert_eq!(host_port("http://[::1]:9")?, ("::1".to_owned(), 9));
        assert!(host_port("nope").is_err());
        Ok(())
    }

    #[test]
    fn unique_names_are_valid_and_distinct() {
        let a = unique_name("My_Test.Bucket");
        let b = unique_name("My_Test.Bucket");
        assert_ne!(a, b);
        for name in [&a, &b, &unique_name(""), &unique_name(&"x".repeat(200))] {
            assert!(name.len() >= 3 && name.len() <= 63, "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{name}"
            );
            assert!(!name.starts_with('-') && !name.ends_with('-'), "{name}");
        }
        assert!(a.starts_with("my-test-bucket-"), "{a}");
    }

    #[test]
    fn missing_variables_are_named() {
        let err = StackEnv::from_lookup(|_| None).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("AWS_ENDPOINT_URL_KINESIS")));
        let full = StackEnv::from_lookup(|k| match k {
            "AWS_ENDPOINT_URL" => Some("http://127.0.0.1:1".to_owned()),
            "REDIS_URL" => Some("redis://127.0.0.1:2".to_owned()),
            "DATABASE_URL" => Some("postgres://postgres@127.0.0.1:3/db".to_owned()),
            _ => None,
        });
        assert!(full.is_ok_and(
            |env| env.s3_endpoint == "http://127.0.0.1:1" && env.region == DEFAULT_REGION
        ));
    }
}
