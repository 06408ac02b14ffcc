//! Probes: whether a running service answers its own protocol (HTTP health
//! routes, `pg_isready`, redis `PING`), and which AWS services a LocalStack
//! really serves (its health report, then one real request each).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::state::Svc;
use super::{Kind, REGION, TEST_DATABASE};
use crate::install;
use crate::util::{self, HttpUrl, say};

/// Whether a running service answers its protocol.
pub(super) fn answers(svc: &Svc) -> bool {
    let get = |path: &str| {
        HttpUrl::parse(&svc.url())
            .and_then(|u| util::http(&u, "GET", path, &[], "", Duration::from_secs(5)))
            .is_ok_and(|(code, _)| code == 200)
    };
    match svc.kind {
        Kind::Kinesis => get("/healthcheck"),
        Kind::Kinesalite => {
            HttpUrl::parse(&svc.url()).is_ok_and(|url| localstack_request(&url, "kinesis").is_ok())
        }
        Kind::Moto => get("/moto-api/"),
        Kind::LocalStack => get("/_localstack/health"),
        Kind::Postgres => pg_isready(svc.port, TEST_DATABASE),
        Kind::Redis => redis_ping(svc.port),
    }
}

pub(super) fn pg_isready(port: u16, db: &str) -> bool {
    let Ok(bin) = install::pg_bin_dir() else {
        return false;
    };
    Command::new(bin.join("pg_isready"))
        .args([
            "-q",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "postgres",
            "-d",
            db,
            "-t",
            "2",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn redis_ping(port: u16) -> bool {
    let ping = || -> std::io::Result<bool> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(b"PING\r\n")?;
        let mut buf = [0u8; 16];
        let n = s.read(&mut buf)?;
        Ok(buf[..n].starts_with(b"+PONG"))
    };
    ping().unwrap_or(false)
}

/// The fake SigV4 `Authorization` header LocalStack routes a request by.
fn fake_auth(service: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential=test/20260101/{REGION}/{service}/aws4_request, \
         SignedHeaders=host, Signature=0000"
    )
}

/// One cheap real request to `service` (`kinesis`, `s3` or `dynamodb`) of a
/// LocalStack (or, for `kinesis`, of kinesalite).
pub(super) fn localstack_request(url: &HttpUrl, service: &str) -> std::result::Result<(), String> {
    let auth = fake_auth(service);
    let (method, target, content_type, body, timeout) = match service {
        // The first Kinesis call installs and starts kinesis-local.
        "kinesis" => (
            "POST",
            Some("Kinesis_20131202.ListStreams"),
            "application/x-amz-json-1.1",
            "{}",
            240,
        ),
        "dynamodb" => (
            "POST",
            Some("DynamoDB_20120810.ListTables"),
            "application/x-amz-json-1.0",
            "{}",
            120,
        ),
        "s3" => ("GET", None, "application/xml", "", 60),
        other => return Err(format!("no probe for {other}")),
    };
    // kinesalite refuses a signature without a date.
    let mut headers = vec![
        ("Authorization", auth.as_str()),
        ("X-Amz-Date", "20260101T000000Z"),
        ("Content-Type", content_type),
    ];
    if let Some(target) = target {
        headers.push(("X-Amz-Target", target));
    }
    match util::http(
        url,
        method,
        "/",
        &headers,
        body,
        Duration::from_secs(timeout),
    ) {
        Ok((200, _)) => Ok(()),
        Ok((code, body)) => Err(format!(
            "HTTP {code}: {}",
            body.chars().take(160).collect::<String>()
        )),
        Err(e) => Err(format!("{e:#}")),
    }
}

/// The AWS services of the LocalStack at `url` that the tests can use: those
/// its health reports available and that answer a real request.
pub(super) fn usable_localstack_services(url: &str) -> Result<Vec<String>> {
    let reported = localstack_services(url)?;
    let parsed = HttpUrl::parse(url)?;
    let wanted: Vec<&str> = ["kinesis", "s3", "dynamodb"]
        .into_iter()
        .filter(|s| reported.iter().any(|r| r == s))
        .collect();
    say(format!(
        "LocalStack at {url} reports {}; checking each with a real request …",
        if wanted.is_empty() {
            "none of kinesis, s3, dynamodb".to_owned()
        } else {
            wanted.join(", ")
        }
    ));
    let results: Vec<(&str, std::result::Result<(), String>)> = thread::scope(|scope| {
        let handles: Vec<_> = wanted
            .iter()
            .map(|&service| {
                let parsed = &parsed;
                scope.spawn(move || (service, localstack_request(parsed, service)))
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let mut usable = Vec::new();
    for (service, result) in results {
        match result {
            Ok(()) => usable.push(service.to_owned()),
            Err(why) => say(format!(
                "LocalStack at {url}: {service} is reported available but does not work ({why})"
            )),
        }
    }
    Ok(usable)
}

/// The services a LocalStack reports as available or running at `URL/_localstack/health`.
fn localstack_services(url: &str) -> Result<Vec<String>> {
    let parsed = HttpUrl::parse(url)?;
    let (code, body) = util::http(
        &parsed,
        "GET",
        "/_localstack/health",
        &[],
        "",
        Duration::from_secs(10),
    )
    .with_context(|| format!("no LocalStack answers at {url}"))?;
    if code != 200 {
        bail!("{url}/_localstack/health answered HTTP {code}: {body}");
    }
    let v: Value =
        serde_json::from_str(&body).with_context(|| format!("parsing {url}/_localstack/health"))?;
    let services = v["services"]
        .as_object()
        .context("no `services` in the LocalStack health answer")?;
    Ok(services
        .iter()
        .filter(|(_, status)| matches!(status.as_str(), Some("available" | "running")))
        .map(|(name, _)| name.clone())
        .collect())
}
