//! `cargo xtask bench [--runs N] [--records N] [--smoke] [--keep]`: the
//! consumer benchmark. Builds `kc-bench` (release), starts kinesalite, moto
//! and redis on 127.0.0.1, preloads a stream, runs every scenario as its own
//! process several times, interleaved, and prints one table of medians with
//! ratios to the raw aws-sdk-kinesis loop built and run alongside.
//!
//! CPU time on a shared 2-core machine wanders by ±20 % from run to run
//! (the emulator runs on the other core), so the raw loop and the two
//! no-op library scenarios also run once under callgrind: instructions per record are
//! the same on every run and show the library's own overhead exactly.
//!
//! `--smoke` (what CI runs) checks the machinery with a debug build and a
//! few thousand records: its figures mean nothing and are not printed as
//! results.

use std::fmt::Write as _;
use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::install;
use crate::it::{use_stack_env, with_stack};
use crate::stack::{self, Mode};
use crate::tidy::cargo;
use crate::util::{self, say, secs};

/// Options of `cargo xtask bench`.
#[derive(Debug, Clone)]
pub(crate) struct BenchOptions {
    /// Runs of each scenario.
    pub(crate) runs: u32,
    /// Records preloaded (a multiple of [`SHARDS`]).
    pub(crate) records: u64,
    /// A debug build, few records, one run: the machinery, not figures.
    pub(crate) smoke: bool,
    /// Leave the stack running afterwards.
    pub(crate) keep: bool,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            runs: 15,
            records: 100_000,
            smoke: false,
            keep: false,
        }
    }
}

impl BenchOptions {
    /// What CI runs.
    pub(crate) fn smoke() -> Self {
        Self {
            runs: 1,
            records: 4_000,
            smoke: true,
            keep: false,
        }
    }
}

/// Shards of every benchmark stream.
const SHARDS: u64 = 4;
/// Bytes per record.
const RECORD_SIZE: usize = 1024;
/// Records per batch (and checkpoint) of the library scenarios; divides
/// the records of every shard, so no batch waits for its age.
const BATCH: u64 = 5_000;
/// A scenario process running longer than this has stalled.
const PROCESS_LIMIT: Duration = Duration::from_secs(420);

/// The scenarios of `kc-bench consume`, the baseline first.
const SCENARIOS: [(&str, &str); 6] = [
    ("raw", "raw aws-sdk-kinesis loop (baseline)"),
    (
        "memory",
        "library, typed JSON (borrowed strings), no-op emitter, memory checkpoints",
    ),
    (
        "redis",
        "library, typed JSON (borrowed strings), no-op emitter, Redis checkpoints",
    ),
    (
        "memory-owned",
        "library, typed JSON (owned strings), no-op emitter, memory checkpoints",
    ),
    ("s3-plain", "library, JSON lines to S3 (moto), plain"),
    ("s3-gzip", "library, JSON lines to S3 (moto), gzip"),
];

/// What one scenario process reported.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    records: f64,
    cpu_micros: f64,
    peak_rss_kib: f64,
    first_record_ms: f64,
    wall_ms: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
}

impl Sample {
    fn parse(line: &str) -> Result<Self> {
        let v: Value = serde_json::from_str(line).with_context(|| format!("a report: {line}"))?;
        let num = |k: &str| {
            v[k].as_f64()
                .with_context(|| format!("the report has no number `{k}`: {line}"))
        };
        Ok(Self {
            records: num("records")?,
            cpu_micros: num("cpu_micros")?,
            peak_rss_kib: num("peak_rss_kib")?,
            first_record_ms: num("first_record_ms")?,
            wall_ms: num("wall_ms")?,
            p50_ms: v["latency_p50_ms"].as_f64(),
            p99_ms: v["latency_p99_ms"].as_f64(),
        })
    }

    fn cpu_per_record(&self) -> f64 {
        self.cpu_micros / self.records.max(1.0)
    }
}

/// The median of `values` (the mean of the middle two for an even count).
fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if !n.is_multiple_of(2) {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn median_of(samples: &[Sample], f: impl Fn(&Sample) -> f64) -> f64 {
    median(&mut samples.iter().map(f).collect::<Vec<_>>())
}

pub(crate) fn run(opts: &BenchOptions) -> Result<()> {
    if opts.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let per_shard = opts.records / SHARDS;
    let batch = BATCH.min(per_shard).max(1);
    if per_shard == 0 || !opts.records.is_multiple_of(SHARDS) || !per_shard.is_multiple_of(batch) {
        bail!(
            "--records must be a multiple of {SHARDS} (shards) whose share per shard is below \
             {BATCH} or a multiple of it (so every batch fills), got {}",
            opts.records
        );
    }
    let _lock = stack::lock()?;
    let binary = build(opts.smoke)?;
    with_stack(&Mode::Bench, opts.keep, |env| {
        let stream = format!("kc-bench-{}", std::process::id());
        say(format!(
            "preloading {} records of {RECORD_SIZE} bytes into {stream} ({SHARDS} shards) …",
            opts.records
        ));
        let mut preload = Command::new(&binary);
        preload.args(["preload", "--stream", &stream]).args([
            "--shards",
            &SHARDS.to_string(),
            "--records",
            &opts.records.to_string(),
            "--size",
            &RECORD_SIZE.to_string(),
        ]);
        run_logged(&mut preload, env, "preload")?;

        let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); SCENARIOS.len()];
        let total = opts.runs as usize * SCENARIOS.len();
        let mut done = 0;
        for run in 0..opts.runs as usize {
            // Interleaved, each round in another order, so that a slow
            // moment of the machine does not land on one scenario only.
            for k in 0..SCENARIOS.len() {
                let i = (k + run) % SCENARIOS.len();
                let (name, _) = SCENARIOS[i];
                let mut cmd = Command::new(&binary);
                cmd.args(["consume", "--scenario", name, "--stream", &stream])
                    .args(["--records", &opts.records.to_string()])
                    .args(["--batch", &batch.to_string()]);
                let sample = scenario_output(&mut cmd, env, name)?;
                done += 1;
                say(format!(
                    "[{done}/{total}] run {}: {name:<9} {:>6.2} µs/record CPU, {:>5.0} MiB peak RSS, first record {:>5.2} s, last {:>5.2} s",
                    run + 1,
                    sample.cpu_per_record(),
                    sample.peak_rss_kib / 1024.0,
                    sample.first_record_ms / 1e3,
                    sample.wall_ms / 1e3
                ));
                samples[i].push(sample);
            }
        }

        say(
            "counting instructions under callgrind (raw, memory, redis, memory-owned; about 20 s each) …",
        );
        let valgrind = install::ensure_program("valgrind", "valgrind")?;
        let mut instructions = Vec::new();
        for name in ["raw", "memory", "redis", "memory-owned"] {
            let mut cmd = Command::new(&valgrind);
            cmd.args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
                .arg(&binary)
                .args(["consume", "--scenario", name, "--stream", &stream])
                .args(["--records", &opts.records.to_string()])
                .args(["--batch", &batch.to_string()]);
            let log = run_logged(&mut cmd, env, &format!("callgrind-{name}"))?;
            let count = collected_instructions(&fs::read_to_string(&log)?).with_context(|| {
                format!(
                    "callgrind printed no instruction count; see {}",
                    log.display()
                )
            })?;
            say(format!(
                "  {name}: {:.0} instructions/record",
                count as f64 / opts.records as f64
            ));
            instructions.push((name, count as f64 / opts.records as f64));
        }

        let gzip = util::output(
            Command::new(&binary)
                .args(["gzip", "--records", &batch.to_string()])
                .current_dir(util::root()),
        )?;

        let (rate, seconds) = if opts.smoke {
            ("200", "5")
        } else {
            ("400", "15")
        };
        let mut live: Vec<(&str, Vec<Sample>)> = vec![("raw", Vec::new()), ("library", Vec::new())];
        for run in 0..opts.runs.min(3) as usize {
            for k in 0..live.len() {
                let i = (k + run) % live.len();
                let name = live[i].0;
                say(format!(
                    "live traffic, run {}: {name} ({rate} records/s for {seconds} s) …",
                    run + 1
                ));
                let mut cmd = Command::new(&binary);
                cmd.args([
                    "live",
                    "--consumer",
                    name,
                    "--rate",
                    rate,
                    "--seconds",
                    seconds,
                ]);
                let sample = scenario_output(&mut cmd, env, &format!("live-{name}"))?;
                say(format!(
                    "  put → user code p50 {:.0} ms, p99 {:.0} ms",
                    sample.p50_ms.unwrap_or(f64::NAN),
                    sample.p99_ms.unwrap_or(f64::NAN)
                ));
                live[i].1.push(sample);
            }
        }

        let mut table = table(opts, &samples, &live);
        let _ = writeln!(table);
        let _ = writeln!(
            table,
            "| instructions per record (callgrind, one run) | count | × raw |"
        );
        let _ = writeln!(table, "|---|---|---|");
        let base = instructions.first().map_or(f64::NAN, |(_, n)| *n);
        for (name, n) in &instructions {
            let _ = writeln!(table, "| {name} | {n:.0} | {} |", ratio(*n, base));
        }
        let _ = writeln!(table);
        let _ = writeln!(
            table,
            "encoding one {batch}-record object, one core (`kc-bench gzip`):"
        );
        let _ = writeln!(table);
        table.push_str(&gzip);
        println!();
        print!("{table}");
        let report = util::target_dir().join("bench/report.md");
        if let Some(dir) = report.parent() {
            fs::create_dir_all(dir)?;
        }
        fs::write(&report, &table).with_context(|| format!("writing {}", report.display()))?;
        say(format!("table written to {}", report.display()));
        Ok(())
    })
}

/// Builds `kc-bench` and returns the binary's path.
fn build(smoke: bool) -> Result<std::path::PathBuf> {
    let t = Instant::now();
    let mut cmd = Command::new(cargo());
    cmd.current_dir(util::root())
        .args(["build", "-p", "kc-bench"]);
    if !smoke {
        cmd.arg("--release");
    }
    say(format!("building the benchmark: {}", util::show(&cmd)));
    if !util::run_status(&mut cmd)?.success() {
        bail!("kc-bench does not build");
    }
    say(format!("built in {}", secs(t.elapsed())));
    Ok(util::target_dir()
        .join(if smoke { "debug" } else { "release" })
        .join(format!("kc-bench{}", std::env::consts::EXE_SUFFIX)))
}

/// Runs one scenario process and returns its report.
fn scenario_output(
    cmd: &mut Command,
    env: &[(&'static str, String)],
    name: &str,
) -> Result<Sample> {
    let (stdout, log) = run_scenario(cmd, env, name)?;
    match stdout
        .lines()
        .find_map(|l| l.strip_prefix("kc-bench-report "))
    {
        Some(line) => Sample::parse(line),
        None => bail!(
            "{name} printed no report; log {}:\n{}",
            log.display(),
            util::tail(&log, 20)
        ),
    }
}

/// Runs a process that prints no report (the preloader, callgrind);
/// returns the log of its stderr.
fn run_logged(
    cmd: &mut Command,
    env: &[(&'static str, String)],
    name: &str,
) -> Result<std::path::PathBuf> {
    run_scenario(cmd, env, name).map(|(_, log)| log)
}

/// The instruction count callgrind prints at exit (`Collected : N`).
fn collected_instructions(log: &str) -> Option<u64> {
    log.lines()
        .find_map(|l| l.split_once("Collected :").map(|(_, n)| n.trim()))
        .and_then(|n| n.parse().ok())
}

/// Runs one process with the stack's environment, at most
/// [`PROCESS_LIMIT`], its stderr in a log file; returns its stdout and
/// the log's path.
fn run_scenario(
    cmd: &mut Command,
    env: &[(&'static str, String)],
    name: &str,
) -> Result<(String, std::path::PathBuf)> {
    use_stack_env(cmd, env);
    let log = util::logs_dir().join(format!("bench-{name}.log"));
    let err = fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "warn");
    }
    let child = cmd
        .current_dir(util::root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(err)
        .spawn()
        .with_context(|| format!("running {}", util::show(cmd)))?;
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(PROCESS_LIMIT) {
        Ok(output) => output.with_context(|| format!("waiting for {name}"))?,
        Err(_) => {
            util::signal(pid, "KILL", false);
            bail!(
                "{name} did not finish within {}: killed (pid {pid}); log {}:\n{}",
                secs(PROCESS_LIMIT),
                log.display(),
                util::tail(&log, 20)
            );
        }
    };
    if !output.status.success() {
        bail!(
            "{name} failed ({}); log {}:\n{}",
            output.status,
            log.display(),
            util::tail(&log, 20)
        );
    }
    Ok((String::from_utf8_lossy(&output.stdout).into_owned(), log))
}

/// The CPU model and core count, for the table's heading.
fn machine() -> String {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim())
        .to_owned();
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    format!("{model}, {cores} cores")
}

fn ratio(value: f64, base: f64) -> String {
    if base > 0.0 && value.is_finite() {
        format!("{:.2}×", value / base)
    } else {
        "—".to_owned()
    }
}

fn table(opts: &BenchOptions, samples: &[Vec<Sample>], live: &[(&str, Vec<Sample>)]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}{} records of {RECORD_SIZE} B on {SHARDS} shards (kinesalite), {} run(s) per scenario, medians; {}",
        if opts.smoke {
            "SMOKE RUN (debug build, figures mean nothing): "
        } else {
            ""
        },
        opts.records,
        opts.runs,
        machine()
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| scenario | CPU µs/record | × raw | records/s per core | peak RSS MiB | × raw | first record s | × raw | last record s |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    let base = &samples[0];
    let base_cpu = median_of(base, Sample::cpu_per_record);
    let base_rss = median_of(base, |s| s.peak_rss_kib);
    let base_first = median_of(base, |s| s.first_record_ms);
    for ((_, label), runs) in SCENARIOS.iter().zip(samples) {
        let cpu = median_of(runs, Sample::cpu_per_record);
        let rss = median_of(runs, |s| s.peak_rss_kib);
        let first = median_of(runs, |s| s.first_record_ms);
        let last = median_of(runs, |s| s.wall_ms);
        let _ = writeln!(
            out,
            "| {label} | {cpu:.2} | {} | {:.0} | {:.0} | {} | {:.2} | {} | {:.2} |",
            ratio(cpu, base_cpu),
            1e6 / cpu,
            rss / 1024.0,
            ratio(rss, base_rss),
            first / 1e3,
            ratio(first, base_first),
            last / 1e3
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| live traffic, put → user code | p50 ms | p99 ms | runs |"
    );
    let _ = writeln!(out, "|---|---|---|---|");
    for (name, runs) in live {
        let p50 = median_of(runs, |s| s.p50_ms.unwrap_or(f64::NAN));
        let p99 = median_of(runs, |s| s.p99_ms.unwrap_or(f64::NAN));
        let _ = writeln!(out, "| {name} | {p50:.0} | {p99:.0} | {} |", runs.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&mut []).is_nan());
    }

    #[test]
    fn callgrind_counts_are_read() {
        let log = "==1== Events    : Ir\n==1== Collected : 3236576013\n==1==\n";
        assert_eq!(collected_instructions(log), Some(3_236_576_013));
        assert_eq!(collected_instructions("no count"), None);
    }

    #[test]
    fn reports_parse_and_give_cpu_per_record() -> Result<()> {
        let s = Sample::parse(
            r#"{"scenario":"raw","records":1000,"cpu_micros":4000,"peak_rss_kib":2048,"first_record_ms":12.5,"wall_ms":900.0,"latency_p50_ms":null,"latency_p99_ms":null}"#,
        )?;
        assert_eq!(s.cpu_per_record(), 4.0);
        assert_eq!(s.p50_ms, None);
        assert!(Sample::parse(r#"{"records":1}"#).is_err());
        Ok(())
    }

    #[test]
    fn the_table_has_a_row_per_scenario_with_ratios_to_raw() {
        let sample = |cpu: f64| Sample {
            records: 100.0,
            cpu_micros: cpu * 100.0,
            peak_rss_kib: 1024.0,
            first_record_ms: 100.0,
            wall_ms: 1000.0,
            p50_ms: Some(5.0),
            p99_ms: Some(9.0),
        };
        let samples: Vec<Vec<Sample>> = (0..SCENARIOS.len())
            .map(|i| vec![sample(2.0 + i as f64)])
            .collect();
        let table = table(
            &BenchOptions::default(),
            &samples,
            &[("raw", vec![sample(1.0)])],
        );
        assert!(
            table.contains("| raw aws-sdk-kinesis loop (baseline) | 2.00 | 1.00× | 500000 |"),
            "{table}"
        );
        assert!(table.contains("| 3.00 | 1.50× |"), "{table}");
        assert!(table.contains("| raw | 5 | 9 | 1 |"), "{table}");
    }
}
