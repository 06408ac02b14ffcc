//! `cargo xtask`: project automation for kinesis-connectors.
//!
//! - `cargo xtask demo [--count N] [--keep] [--localstack [URL]]` — the
//!   manifest pipeline end to end on the local stack;
//! - `cargo xtask bench [--runs N] [--records N] [--smoke] [--keep]` — the
//!   consumer benchmark against a raw aws-sdk-kinesis loop;
//! - `cargo xtask chaos [--full] [FILTER]` — fault scenarios on the local
//!   stack (outages, stalls, panics, hangs, kill -9), one table;
//! - `cargo xtask stack up | down | status | env` — the local AWS stack;
//! - `cargo xtask it [FILTER] [--keep] [--localstack [URL]]` — integration tests;
//! - `cargo xtask tidy` — workspace hygiene rules;
//! - `cargo xtask deny` — cargo-deny's offline checks;
//! - `cargo xtask ci` — everything CI runs.
//!
//! Only std, anyhow and serde_json: this crate must compile in seconds.
//! See `xtask/README.md`.

mod bench;
mod chaos;
mod ci;
mod demo;
mod install;
mod it;
mod stack;
mod tidy;
mod util;

use std::process::ExitCode;

use anyhow::{Result, bail};

use crate::bench::BenchOptions;
use crate::chaos::ChaosOptions;
use crate::demo::DemoOptions;
use crate::it::ItOptions;
use crate::stack::Mode;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  demo [--count N] [--keep] [--localstack [URL]]
                                  the manifest pipeline end to end on the stack (default 20000 events)
  bench [--runs N] [--records N] [--smoke] [--keep]
                                  the consumer benchmark (kinesalite, moto, redis): CPU/record, peak RSS,
                                  first-record time and live latency, with ratios to a raw SDK loop;
                                  --smoke: debug build, few records (what CI runs)
  chaos [--full] [FILTER]         fault scenarios on the stack (outages, stalls, panics, hangs, kill -9);
                                  FILTER: only scenarios whose name contains it; --full: longer, for releases
  stack up [--localstack [URL]]   start (or reuse) the local stack on free 127.0.0.1 ports
  stack down                      stop every process the stack started
  stack status                    print each service, its pid, port and health
  stack env                       print `export VAR=value` lines: eval \"$(cargo xtask stack env)\"
  it [FILTER] [--keep] [--localstack [URL]]
                                  run the integration-tests package against the stack
  tidy                            check READMEs, lints, workspace dependencies, isolation
  deny                            cargo-deny's offline checks (bans, licenses, sources); installs cargo-deny
  ci                              fmt, clippy, tests, doctests, doc, deny, tidy, it, demo, chaos, bench --smoke,
                                  it --localstack

--localstack      start LocalStack on this machine (Python 3.13 venv under target/stack)
--localstack URL  use the LocalStack already running at URL (e.g. http://localhost:4566)
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match dispatch(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Parses `--localstack [URL]` out of `args`.
fn take_mode(args: &mut Vec<String>) -> Result<Mode> {
    let Some(i) = args
        .iter()
        .position(|a| a == "--localstack" || a.starts_with("--localstack="))
    else {
        return Ok(Mode::Embedded);
    };
    let flag = args.remove(i);
    if let Some(url) = flag.strip_prefix("--localstack=") {
        return Ok(Mode::LocalStackUrl(url.trim_end_matches('/').to_owned()));
    }
    if args
        .get(i)
        .is_some_and(|a| a.starts_with("http://") || a.starts_with("https://"))
    {
        let url = args.remove(i);
        if url.starts_with("https://") {
            bail!("use the plain http:// URL of LocalStack (port 4566 speaks both)");
        }
        return Ok(Mode::LocalStackUrl(url.trim_end_matches('/').to_owned()));
    }
    Ok(Mode::LocalStackHost)
}

fn dispatch(args: &[String]) -> Result<ExitCode> {
    let mut args = args.to_vec();
    let Some(command) = args.first().cloned() else {
        print!("{USAGE}");
        return Ok(ExitCode::FAILURE);
    };
    args.remove(0);
    match command.as_str() {
        "stack" => {
            let mode = take_mode(&mut args)?;
            let sub = args.first().map(String::as_str);
            let extra = args.get(1);
            if let Some(extra) = extra {
                bail!("unexpected argument `{extra}`\n\n{USAGE}");
            }
            match sub {
                Some("up") => {
                    let _lock = stack::lock()?;
                    let up = stack::up(&mode)?;
                    up.state.print_routes();
                    util::say(
                        "`eval \"$(cargo xtask stack env)\"` exports the endpoints; `cargo xtask stack down` stops it",
                    );
                }
                Some(other @ ("down" | "status" | "env")) if mode != Mode::Embedded => {
                    bail!("`stack {other}` takes no --localstack: it acts on the recorded stack")
                }
                Some("down") => {
                    let _lock = stack::lock()?;
                    stack::down()?;
                }
                Some("status") => {
                    if !stack::status()? {
                        return Ok(ExitCode::FAILURE);
                    }
                }
                Some("env") => stack::env()?,
                _ => bail!("`cargo xtask stack` needs up, down, status or env\n\n{USAGE}"),
            }
        }
        "it" => {
            let mode = take_mode(&mut args)?;
            let mut keep = false;
            let mut filter = None;
            for a in args {
                match a.as_str() {
                    "--keep" => keep = true,
                    flag if flag.starts_with('-') => bail!("unknown flag `{flag}`\n\n{USAGE}"),
                    _ if filter.is_some() => bail!("only one FILTER is supported\n\n{USAGE}"),
                    _ => filter = Some(a),
                }
            }
            it::run(&ItOptions { filter, keep, mode })?;
        }
        "demo" => {
            let mode = take_mode(&mut args)?;
            let mut opts = DemoOptions {
                count: demo::DEFAULT_COUNT,
                keep: false,
                mode,
            };
            let mut args = args.into_iter();
            while let Some(a) = args.next() {
                match a.as_str() {
                    "--keep" => opts.keep = true,
                    "--count" => {
                        let n = args.next().unwrap_or_default();
                        opts.count = n.parse().ok().filter(|&n| n > 0).ok_or_else(|| {
                            anyhow::anyhow!("--count needs a positive number, got `{n}`")
                        })?;
                    }
                    other => bail!("unexpected argument `{other}`\n\n{USAGE}"),
                }
            }
            demo::run(&opts)?;
        }
        "chaos" => {
            let mut opts = ChaosOptions::default();
            for a in args {
                match a.as_str() {
                    "--full" => opts.full = true,
                    flag if flag.starts_with('-') => bail!("unknown flag `{flag}`\n\n{USAGE}"),
                    _ if opts.filter.is_some() => bail!("only one FILTER is supported\n\n{USAGE}"),
                    _ => opts.filter = Some(a),
                }
            }
            chaos::run(&opts)?;
        }
        "bench" => {
            // `--smoke` picks the other defaults; --runs and --records,
            // wherever they stand, override either.
            let (mut runs, mut records, mut smoke, mut keep) = (None, None, false, false);
            let mut args = args.into_iter();
            while let Some(a) = args.next() {
                match a.as_str() {
                    "--smoke" => smoke = true,
                    "--keep" => keep = true,
                    flag @ ("--runs" | "--records") => {
                        let n = args.next().unwrap_or_default();
                        let value: u64 = n.parse().ok().filter(|&n| n > 0).ok_or_else(|| {
                            anyhow::anyhow!("{flag} needs a positive number, got `{n}`")
                        })?;
                        if flag == "--runs" {
                            runs = Some(u32::try_from(value)?);
                        } else {
                            records = Some(value);
                        }
                    }
                    other => bail!("unexpected argument `{other}`\n\n{USAGE}"),
                }
            }
            let base = if smoke {
                BenchOptions::smoke()
            } else {
                BenchOptions::default()
            };
            let opts = BenchOptions {
                runs: runs.unwrap_or(base.runs),
                records: records.unwrap_or(base.records),
                keep,
                ..base
            };
            bench::run(&opts)?;
        }
        "tidy" => {
            no_more(&args)?;
            tidy::run()?;
        }
        "deny" => {
            no_more(&args)?;
            ci::deny()?;
        }
        "ci" => {
            no_more(&args)?;
            ci::run()?;
        }
        "help" | "--help" | "-h" => print!("{USAGE}"),
        other => bail!("unknown command `{other}`\n\n{USAGE}"),
    }
    Ok(ExitCode::SUCCESS)
}

fn no_more(args: &[String]) -> Result<()> {
    if let Some(a) = args.first() {
        bail!("unexpected argument `{a}`\n\n{USAGE}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn parses_localstack_flags() -> Result<()> {
        let mut a = v(&["up"]);
        assert_eq!(take_mode(&mut a)?, Mode::Embedded);
        let mut a = v(&["up", "--localstack"]);
        assert_eq!(take_mode(&mut a)?, Mode::LocalStackHost);
        assert_eq!(a, v(&["up"]));
        let mut a = v(&["--localstack", "http://localhost:4566/", "my_test"]);
        assert_eq!(
            take_mode(&mut a)?,
            Mode::LocalStackUrl("http://localhost:4566".into())
        );
        assert_eq!(a, v(&["my_test"]));
        let mut a = v(&["--localstack", "my_test"]);
        assert_eq!(take_mode(&mut a)?, Mode::LocalStackHost);
        assert_eq!(a, v(&["my_test"]));
        let mut a = v(&["--localstack=http://h:1"]);
        assert_eq!(take_mode(&mut a)?, Mode::LocalStackUrl("http://h:1".into()));
        Ok(())
    }
}
