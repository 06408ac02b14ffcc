//! KPL interoperability with `aws-kinesis-agg` (AWS's Python aggregation
//! library, PyPI): Python aggregates records that the Rust side
//! de-aggregates, and de-aggregates what Rust aggregated, payloads and keys
//! byte for byte; given the same keys, both write the same aggregate bytes.
//!
//! Needs no stack, only Python ≥ 3.9 with `venv` and the package registry:
//! the first run creates `target/kpl-interop-venv` with pinned versions.
//! Run with `cargo xtask it kpl_interop` (the filter matches the test's
//! name) or `cargo test -p integration-tests --test kpl_interop`.

// Test code: helpers may unwrap and panic like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use bytes::Bytes;
use kinesis_connectors_core::{Record, kpl};
use serde_json::{Value, json};

/// Pinned so every run compares against the same implementation.
// six: aws-kinesis-agg imports it without declaring it.
const REQUIREMENTS: &[&str] = &["aws-kinesis-agg==1.2.3", "protobuf==7.36.2", "six==1.17.0"];

/// Reads a JSON request on stdin, answers JSON on stdout: Python's
/// aggregate of `records`, and Python's de-aggregation of each of `rust`.
const SCRIPT: &str = r#"
import base64, json, sys
from aws_kinesis_agg.aggregator import RecordAggregator
from aws_kinesis_agg.deaggregator import deaggregate_records

request = json.load(sys.stdin)
aggregator = RecordAggregator()
for r in request["records"]:
    full = aggregator.add_user_record(r["pk"], bytes.fromhex(r["data"]), r.get("ehk"))
    assert full is None, "the test records fit in one aggregate"
pk, ehk, data = aggregator.clear_and_get().get_contents()
out = {"aggregate": {"pk": pk, "ehk": ehk, "data": data.hex()}, "deaggregated": []}
for hex_data in request["rust"]:
    event = {"kinesis": {"kinesisSchemaVersion": "1.0", "sequenceNumber": "1",
                         "approximateArrivalTimestamp": 0, "partitionKey": "outer",
                         "data": base64.b64encode(bytes.fromhex(hex_data)).decode()}}
    out["deaggregated"].append([
        {"pk": u["kinesis"]["partitionKey"], "ehk": u["kinesis"]["explicitHashKey"],
         "sub": u["kinesis"].get("subSequenceNumber"),
         "data": base64.b64decode(u["kinesis"]["data"]).hex()}
        for u in deaggregate_records([event])
    ])
json.dump(out, sys.stdout)
"#;

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

fn run(command: &mut Command, what: &str) {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The venv's python, creating the venv on first use.
fn python() -> PathBuf {
    let venv = target_dir().join("kpl-interop-venv");
    let python = venv.join("bin/python");
    let marker = venv.join("installed.txt");
    let wanted = REQUIREMENTS.join(" ");
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(wanted.as_str()) {
        return python;
    }
    let system = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let _ = std::fs::remove_dir_all(&venv);
    let created = Command::new(&system)
        .args(["-m", "venv"])
        .arg(&venv)
        .output();
    match created {
        Ok(out) if out.status.success() => {}
        other => panic!(
            "kpl_interop needs Python >= 3.9 with venv to run aws-kinesis-agg: `{system} -m venv` failed ({other:?}). \
             Install python3 and python3-venv (Debian/Ubuntu: `sudo apt-get install python3-venv`), \
             or point PYTHON at a python3."
        ),
    }
    let mut pip = Command::new(venv.join("bin/pip"));
    pip.args(["install", "--disable-pip-version-check", "--quiet"])
        .args(REQUIREMENTS);
    run(
        &mut pip,
        "pip install aws-kinesis-agg (needs access to PyPI)",
    );
    std::fs::write(&marker, wanted).unwrap();
    python
}

fn ask_python(request: &Value) -> Value {
    let mut child = Command::new(python())
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A write error means Python stopped early; its stderr says why.
    let _ = child
        .stdin
        .take()
        .unwrap()
        .write_all(request.to_string().as_bytes());
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "the aws-kinesis-agg script failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Records with shared and unicode keys, empty and binary payloads.
fn records(with_hash_keys: bool) -> Vec<Record> {
    (0u64..40)
        .map(|i| {
            let data: Vec<u8> = match i % 4 {
                0 => Vec::new(),
                1 => (0..=255u8).collect(),
                2 => format!("{{\"n\":{i},\"text\":\"ünïcödé\"}}").into_bytes(),
                _ => vec![b'x'; 1000 + i as usize],
            };
            let mut record = Record::new(data, format!("ключ-{}", i % 7), 1u64);
            if with_hash_keys {
                record.explicit_hash_key = Some((u128::MAX / 40 * u128::from(i)).to_string());
            }
            record
        })
        .collect()
}

#[test]
fn kpl_interop_rust_and_aws_kinesis_agg_read_each_others_aggregates() {
    let plain = records(false);
    let keyed = records(true);
    let request = json!({
        "records": plain.iter().map(|r| json!({"pk": r.partition_key, "data": hex(&r.data)})).collect::<Vec<_>>(),
        "rust": [hex(&kpl::aggregate(&plain)), hex(&kpl::aggregate(&keyed))],
    });
    let answer = ask_python(&request);

    // Python's aggregate, de-aggregated by Rust.
    let python = &answer["aggregate"];
    let data = Bytes::from(unhex(python["data"].as_str().unwrap()));
    let outer = Record::new(data.clone(), python["pk"].as_str().unwrap(), 9u64);
    let subs = kpl::deaggregate(&outer).unwrap();
    assert_eq!(subs.len(), plain.len());
    for (i, (sub, sent)) in subs.iter().zip(&plain).enumerate() {
        assert_eq!(sub.data, sent.data, "sub-record {i}");
        assert_eq!(sub.partition_key, sent.partition_key);
        assert_eq!(sub.sub_sequence_number, Some(i as u64));
        // aws-kinesis-agg writes no explicit hash key for a record without
        // one (or, in other versions, the partition key's hash: same routing).
        if let Some(ehk) = sub.explicit_hash_key.as_deref() {
            assert_eq!(
                ehk.parse::<u128>().ok(),
                kpl::effective_hash_key(&sent.partition_key, None),
                "sub-record {i}"
            );
        }
    }
    // Given the same keys, Rust writes the same bytes.
    assert_eq!(hex(&kpl::aggregate(&subs)), hex(&data));

    // Rust's aggregates, de-aggregated by Python.
    for (sent, got) in [&plain, &keyed]
        .into_iter()
        .zip(answer["deaggregated"].as_array().unwrap())
    {
        let got = got.as_array().unwrap();
        assert_eq!(got.len(), sent.len());
        for (i, (user, record)) in got.iter().zip(sent.iter()).enumerate() {
            assert_eq!(user["data"].as_str().unwrap(), hex(&record.data), "{i}");
            assert_eq!(user["pk"].as_str().unwrap(), record.partition_key, "{i}");
            assert_eq!(
                user["ehk"].as_str(),
                record.explicit_hash_key.as_deref(),
                "{i}"
            );
            assert_eq!(user["sub"].as_u64(), Some(i as u64));
        }
    }
}
