//! `cargo xtask demo [--count N] [--keep] [--localstack [URL]]`: the README's
//! main job. Builds the demo, starts the stack, runs the manifest pipeline
//! end to end (`redshift-manifest-demo`: produce, archive to S3, load into
//! PostgreSQL exactly once, check rows == events) and stops the stack.

use std::process::Command;
use std::time::Instant;

use anyhow::{Result, bail};

use crate::it::{use_stack_env, with_stack};
use crate::stack::{self, Mode};
use crate::tidy::cargo;
use crate::util::{self, say, secs};

/// Options of `cargo xtask demo`.
#[derive(Debug, Clone)]
pub(crate) struct DemoOptions {
    /// Events to produce.
    pub(crate) count: u64,
    /// Leave the stack running afterwards.
    pub(crate) keep: bool,
    /// Which stack to run on.
    pub(crate) mode: Mode,
}

/// The events the demo produces by default.
pub(crate) const DEFAULT_COUNT: u64 = 20_000;

const PACKAGE: &str = "redshift-manifest";
const BINARY: &str = "redshift-manifest-demo";

pub(crate) fn run(opts: &DemoOptions) -> Result<()> {
    let _lock = stack::lock()?;
    let t = Instant::now();
    let mut build = Command::new(cargo());
    build
        .current_dir(util::root())
        .args(["build", "-p", PACKAGE, "--bin", BINARY]);
    say(format!("building the demo: {}", util::show(&build)));
    if !util::run_status(&mut build)?.success() {
        bail!("the demo does not build");
    }
    say(format!("demo built in {}", secs(t.elapsed())));
    let binary = util::target_dir()
        .join("debug")
        .join(format!("{BINARY}{}", std::env::consts::EXE_SUFFIX));

    with_stack(&opts.mode, opts.keep, |env| {
        let mut demo = Command::new(&binary);
        demo.current_dir(util::root())
            .args(["--count", &opts.count.to_string()]);
        use_stack_env(&mut demo, env);
        if std::env::var_os("RUST_LOG").is_none() {
            // The demo draws its own progress; keep the libraries' logs to warnings.
            demo.env("RUST_LOG", "warn,redshift_manifest_demo=info");
        }
        say(format!("running: {}", util::show(&demo)));
        let status = util::run_status(&mut demo)?;
        if !status.success() {
            bail!("the demo failed ({status})");
        }
        if opts.keep {
            say(
                "the stack stays up; its connection details (`eval \"$(cargo xtask stack env)\"` exports them):",
            );
            for (name, value) in env {
                say(format!("  {name}={value}"));
            }
            say(
                "look around, e.g. psql \"$DATABASE_URL\" -c '\\dt', redis-cli -u \"$REDIS_URL\" keys '*',",
            );
            say("  aws --endpoint-url \"$AWS_ENDPOINT_URL_S3\" s3 ls s3://demo-lake --recursive");
        }
        Ok(())
    })
}
