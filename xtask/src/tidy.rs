//! `cargo xtask tidy`: workspace hygiene rules.
//!
//! - every workspace member has a `README.md` and `[lints] workspace = true`;
//! - every dependency of a member goes through `[workspace.dependencies]`
//!   (`x.workspace = true` or `x = { workspace = true, … }`);
//! - the dependency isolation table below holds.
//!
//! The first two only read files, so they also run as `#[test]`s over the
//! real workspace (`cargo test -p xtask` catches a violation); the isolation
//! table needs `cargo tree` and runs in `cargo xtask tidy` only.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::util::{self, say};

/// Every crate of the AWS SDK for Rust: the service SDKs, the smithy runtime
/// under them and the shared config, credential, type and signing crates.
/// Patterns are exact names or `prefix*`; not `aws-*`, which would also match
/// `aws-lc-rs`, a crypto library rustls may use that is no SDK crate.
const AWS_SDK: &[&str] = &[
    "aws-sdk-*",
    "aws-smithy-*",
    "aws-config",
    "aws-types",
    "aws-credential-types",
    "aws-runtime",
    "aws-sigv4",
];

/// One row of the isolation table: crates that must stay out of `package`'s
/// normal dependency graph, so that an application compiles only the
/// backends it uses.
struct Rule {
    package: &'static str,
    /// Whether no crate of [`AWS_SDK`] may appear either: for crates that must
    /// build without any SDK (the core, third-party emitters).
    no_aws: bool,
    /// Banned crates: exact names or `prefix*`.
    banned: &'static [&'static str],
}

impl Rule {
    const fn new(package: &'static str, banned: &'static [&'static str]) -> Self {
        Self {
            package,
            no_aws: false,
            banned,
        }
    }

    const fn no_aws(package: &'static str, banned: &'static [&'static str]) -> Self {
        Self {
            package,
            no_aws: true,
            banned,
        }
    }

    /// What the rule bans, one entry per problem it can report: the AWS SDK
    /// as one group (one cause usually pulls many of its crates), then each
    /// banned pattern.
    fn bans(&self) -> Vec<Ban> {
        let aws = self.no_aws.then(|| Ban {
            label: format!("any AWS SDK crate ({})", AWS_SDK.join(", ")),
            patterns: AWS_SDK,
        });
        aws.into_iter()
            .chain(self.banned.iter().map(|pattern| Ban {
                label: (*pattern).to_owned(),
                patterns: std::slice::from_ref(pattern),
            }))
            .collect()
    }

    /// The bans for messages: `any AWS SDK crate, sqlx, redis`.
    fn describe(&self) -> String {
        let aws = self.no_aws.then_some("any AWS SDK crate");
        aws.into_iter()
            .chain(self.banned.iter().copied())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Something one rule bans: a crate, a `prefix*` family, or the AWS SDK.
struct Ban {
    label: String,
    patterns: &'static [&'static str],
}

impl Ban {
    fn matches(&self, name: &str) -> bool {
        self.patterns.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == *p,
        })
    }
}

/// The isolation table. A row whose package does not exist (yet) is skipped;
/// a new crate is a one-line addition. Examples obey it too: each compiles
/// only the SDKs of the backends it shows.
const ISOLATION: &[Rule] = &[
    Rule::no_aws("kinesis-connectors-core", &["sqlx", "redis"]),
    Rule::new(
        "kinesis-connectors-aws",
        &[
            "aws-sdk-s3",
            "aws-sdk-dynamodb",
            "aws-sdk-kinesis",
            "sqlx",
            "redis",
        ],
    ),
    Rule::new(
        "kinesis-checkpoint-redis",
        &["aws-sdk-s3", "aws-sdk-dynamodb", "sqlx"],
    ),
    Rule::new(
        "kinesis-checkpoint-dynamodb",
        &["aws-sdk-s3", "sqlx", "redis"],
    ),
    Rule::new(
        "kinesis-connectors-dynamodb",
        &["sqlx", "redis", "aws-sdk-s3"],
    ),
    Rule::new(
        "kinesis-connectors-s3",
        &["aws-sdk-dynamodb", "sqlx", "redis"],
    ),
    Rule::new(
        "kinesis-connectors-kinesis",
        &["aws-sdk-s3", "aws-sdk-dynamodb", "sqlx", "redis"],
    ),
    Rule::new(
        "kinesis-connectors-redshift",
        &["aws-sdk-dynamodb", "redis"],
    ),
    Rule::new(
        "kinesis-connectors-testkit",
        &["aws-sdk-s3", "aws-sdk-dynamodb", "sqlx", "redis"],
    ),
    // The third-party emitter example: what an emitter crate outside this
    // workspace compiles, so no SDK at all.
    Rule::no_aws("kinesis-emitter-files", &["sqlx", "redis"]),
    // With default features: each example turns on what it uses.
    Rule::new(
        "example-support",
        &["aws-sdk-s3", "aws-sdk-dynamodb", "sqlx", "redis"],
    ),
    Rule::new(
        "producer",
        &["aws-sdk-s3", "aws-sdk-dynamodb", "sqlx", "redis"],
    ),
    // S3, Redis checkpoints.
    Rule::new("s3-archiver", &["aws-sdk-dynamodb", "sqlx"]),
    // DynamoDB, Redis checkpoints.
    Rule::new("dynamodb-sink", &["aws-sdk-s3", "sqlx"]),
    // Kinesis to Kinesis, Redis checkpoints.
    Rule::new(
        "stream-to-stream",
        &["aws-sdk-s3", "aws-sdk-dynamodb", "sqlx"],
    ),
    // redshift-manifest uses every backend: no row.
];

/// A workspace member from `cargo metadata`.
struct Member {
    name: String,
    manifest: PathBuf,
}

fn members() -> Result<Vec<Member>> {
    let root = util::root();
    let out = util::output(
        Command::new(cargo())
            .args([
                "metadata",
                "--no-deps",
                "--format-version",
                "1",
                "--manifest-path",
            ])
            .arg(root.join("Cargo.toml")),
    )?;
    let v: Value = serde_json::from_str(&out).context("parsing `cargo metadata`")?;
    let ids: Vec<&str> = v["workspace_members"]
        .as_array()
        .context("`cargo metadata` has no workspace_members")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let packages = v["packages"]
        .as_array()
        .context("`cargo metadata` has no packages")?;
    let mut members = Vec::new();
    for p in packages {
        if !p["id"].as_str().is_some_and(|id| ids.contains(&id)) {
            continue;
        }
        members.push(Member {
            name: p["name"]
                .as_str()
                .context("package without a name")?
                .to_owned(),
            manifest: PathBuf::from(
                p["manifest_path"]
                    .as_str()
                    .context("package without manifest_path")?,
            ),
        });
    }
    members.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(members)
}

/// The cargo this xtask was started by.
pub(crate) fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

/// Runs every tidy rule; fails listing all problems.
pub(crate) fn run() -> Result<()> {
    let members = members()?;
    say(format!(
        "tidy: checking {} workspace members",
        members.len()
    ));
    let mut problems = file_problems(&members)?;
    let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
    for rule in ISOLATION {
        if !names.contains(&rule.package) {
            say(format!(
                "tidy: isolation rule for {} skipped: no such crate in the workspace yet",
                rule.package
            ));
            continue;
        }
        let found = isolation_violations(rule)?;
        if found.is_empty() {
            say(format!(
                "tidy: {} is free of {}",
                rule.package,
                rule.describe()
            ));
        }
        problems.extend(found);
    }
    if !problems.is_empty() {
        bail!(
            "tidy found {} problem(s):\n  - {}",
            problems.len(),
            problems.join("\n  - ")
        );
    }
    say("tidy: all rules hold");
    Ok(())
}

/// The rules that only read the members' files: a `README.md` next to each
/// manifest, and what [`check_manifest`] checks.
fn file_problems(members: &[Member]) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    for m in members {
        let dir = m.manifest.parent().unwrap_or(Path::new("."));
        if !dir.join("README.md").is_file() {
            problems.push(format!("{}: no README.md in {}", m.name, dir.display()));
        }
        let text = fs::read_to_string(&m.manifest)
            .with_context(|| format!("reading {}", m.manifest.display()))?;
        for p in check_manifest(&text) {
            problems.push(format!("{} ({}): {p}", m.name, m.manifest.display()));
        }
    }
    Ok(problems)
}

/// `package`'s normal dependency graph, from `cargo tree -p <package>`.
///
/// One package at a time, so features are resolved as `cargo build -p
/// <package>` resolves them: only what this package and its dependencies
/// turn on, never what another workspace member enables on a shared crate
/// (a workspace-wide graph would blame an example for another's features).
/// `-e normal` also leaves dev-dependencies out of the feature resolution;
/// `--target all` counts target-specific dependencies of every platform.
fn normal_graph(package: &str) -> Result<Graph> {
    let out = util::output(
        Command::new(cargo())
            .current_dir(util::root())
            .args([
                "tree", "-p", package, "-e", "normal", "--prefix", "depth", "--target", "all",
            ])
            .args(["--format", "{p}"]),
    )?;
    Ok(Graph::parse(&out))
}

/// A dependency graph as `cargo tree --prefix depth --format {p}` prints it.
#[derive(Debug, Default)]
struct Graph {
    /// Each crate with the crates it depends on.
    edges: BTreeMap<String, BTreeSet<String>>,
    /// The package the tree starts from.
    root: Option<String>,
}

impl Graph {
    /// Reads `<depth><name> v<version> …` lines. A crate already shown is
    /// printed again without its dependencies (`(*)`), so every edge appears
    /// exactly under the one full listing of its crate.
    fn parse(tree: &str) -> Self {
        let mut graph = Graph::default();
        let mut path: Vec<String> = Vec::new();
        for line in tree.lines() {
            let digits = line.bytes().take_while(u8::is_ascii_digit).count();
            let (Ok(depth), Some(name)) = (
                line[..digits].parse::<usize>(),
                line[digits..].split_whitespace().next(),
            ) else {
                continue;
            };
            path.truncate(depth);
            match path.last() {
                Some(parent) => {
                    graph
                        .edges
                        .entry(parent.clone())
                        .or_default()
                        .insert(name.to_owned());
                }
                None => graph.root = Some(name.to_owned()),
            }
            graph.edges.entry(name.to_owned()).or_default();
            path.push(name.to_owned());
        }
        graph
    }

    /// Every crate with its distance from the root (direct dependencies are 1).
    fn distances(&self) -> BTreeMap<&str, usize> {
        let mut distance = BTreeMap::new();
        let mut queue = VecDeque::new();
        if let Some(root) = &self.root {
            distance.insert(root.as_str(), 0);
            queue.push_back((root.as_str(), 0));
        }
        while let Some((name, depth)) = queue.pop_front() {
            for dep in self.edges.get(name).into_iter().flatten() {
                if !distance.contains_key(dep.as_str()) {
                    distance.insert(dep.as_str(), depth + 1);
                    queue.push_back((dep.as_str(), depth + 1));
                }
            }
        }
        distance
    }

    /// The crates `ban` matches, nearest to the root first (then by name).
    fn matching(&self, ban: &Ban) -> Vec<String> {
        let mut found: Vec<(usize, &str)> = self
            .distances()
            .into_iter()
            .filter(|(name, depth)| *depth > 0 && ban.matches(name))
            .map(|(name, depth)| (depth, name))
            .collect();
        found.sort_unstable();
        found.into_iter().map(|(_, name)| name.to_owned()).collect()
    }
}

/// How many crates of a banned family a problem names.
const FAMILY_SHOWN: usize = 4;

/// One problem per ban of `rule` found in its package's normal graph, with
/// the `cargo tree -i` path to the banned crate nearest the package (for a
/// family such as the AWS SDK, that one shows where the family comes in).
fn isolation_violations(rule: &Rule) -> Result<Vec<String>> {
    let package = rule.package;
    let graph = normal_graph(package)?;
    let mut problems = Vec::new();
    for ban in rule.bans() {
        let found = graph.matching(&ban);
        let Some(nearest) = found.first() else {
            continue;
        };
        let path = util::output(Command::new(cargo()).current_dir(util::root()).args([
            "tree", "-p", package, "-e", "normal", "--target", "all", "-i", nearest,
        ]))
        .unwrap_or_else(|e| format!("(could not print the path: {e:#})"));
        // A family names how many of its crates come in and the nearest few;
        // the path below shows where the family enters.
        let what = match found.as_slice() {
            [only] if *only == ban.label => String::new(),
            few if few.len() <= FAMILY_SHOWN => format!(" ({})", few.join(", ")),
            many => format!(
                " ({} crates: {}, …)",
                many.len(),
                many[..FAMILY_SHOWN].join(", ")
            ),
        };
        problems.push(format!(
            "{package} must not depend on {}, but it does{what} (isolation rule); path (`cargo tree -p {package} -e normal -i {nearest}`):\n{}",
            ban.label,
            indent(&path, "      ")
        ));
    }
    Ok(problems)
}

fn indent(text: &str, prefix: &str) -> String {
    text.lines()
        .map(|l| format!("{prefix}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// What the manifest says about one dependency.
#[derive(Default)]
struct Dep {
    workspace: bool,
    written: Vec<String>,
}

/// Checks a member manifest: `[lints] workspace = true` and every dependency
/// inherited from the workspace. Returns the problems found.
pub(crate) fn check_manifest(text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let mut table: Vec<String> = Vec::new();
    let mut lints_workspace = false;
    // (dependency table, name) -> what was written
    let mut deps: BTreeMap<(String, String), Dep> = BTreeMap::new();
    for entry in logical_lines(text) {
        let line = entry.trim();
        if line.starts_with('[') {
            let inner = line.trim_start_matches('[').trim_end_matches(']');
            table = split_key(inner);
            continue;
        }
        let Some((key, value)) = split_once_outside(line, '=') else {
            continue;
        };
        let key = split_key(key.trim());
        let value = value.trim();
        let mut full = table.clone();
        full.extend(key);
        if full == ["lints", "workspace"] && value == "true" {
            lints_workspace = true;
        }
        // Dependency tables: [dependencies], [dev-dependencies], [build-dependencies],
        // and the same under [target.'cfg(..)'].
        let (kind_at, rest) = match full.first().map(String::as_str) {
            Some("target") if full.len() >= 3 => (2, &full[3..]),
            _ => (0, full.get(1..).unwrap_or(&[])),
        };
        let Some(kind) = full.get(kind_at) else {
            continue;
        };
        if !is_dep_table(kind) || rest.is_empty() {
            continue;
        }
        let table_name = full[..=kind_at].join(".");
        let dep = deps.entry((table_name, rest[0].clone())).or_default();
        match &rest[1..] {
            // name = "1.0" or name = { … }
            [] => {
                if value.starts_with('{') {
                    let fields = inline_table(value);
                    if fields.iter().any(|(k, v)| k == "workspace" && v == "true") {
                        dep.workspace = true;
                    }
                    for (k, v) in fields {
                        if matches!(k.as_str(), "version" | "path" | "git" | "registry") {
                            dep.written.push(format!("{k} = {v}"));
                        }
                    }
                } else {
                    dep.written.push(format!("version {value}"));
                }
            }
            // name.workspace = true, name.features = […], name.version = "…"
            [field] => {
                if field == "workspace" && value == "true" {
                    dep.workspace = true;
                } else if matches!(field.as_str(), "version" | "path" | "git" | "registry") {
                    dep.written.push(format!("{field} = {value}"));
                }
            }
            _ => {}
        }
    }
    if !lints_workspace {
        problems.push("no `[lints] workspace = true`".to_owned());
    }
    for ((table, name), dep) in deps {
        if !dep.workspace || !dep.written.is_empty() {
            let what = if dep.written.is_empty() {
                String::new()
            } else {
                format!(" ({})", dep.written.join(", "))
            };
            problems.push(format!(
                "[{table}] {name} does not come from [workspace.dependencies]{what}: \
                 add it to the root Cargo.toml and write `{name}.workspace = true`"
            ));
        }
    }
    problems
}

fn is_dep_table(name: &str) -> bool {
    matches!(
        name,
        "dependencies"
            | "dev-dependencies"
            | "build-dependencies"
            | "dev_dependencies"
            | "build_dependencies"
    )
}

/// Splits a TOML text into logical lines: comments removed, and a value that
/// spans several lines (an array or inline table) joined into one.
fn logical_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut depth: i32 = 0;
    let mut in_multiline_string: Option<&str> = None;
    for raw in text.lines() {
        if let Some(delim) = in_multiline_string {
            current.push('\n');
            current.push_str(raw);
            if raw.contains(delim) {
                in_multiline_string = None;
            }
            continue;
        }
        let line = strip_comment(raw);
        if let Some(delim) = ["\"\"\"", "'''"]
            .into_iter()
            .find(|d| line.matches(d).count() % 2 == 1)
        {
            in_multiline_string = Some(delim);
        }
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(line.trim());
        depth += bracket_balance(&line);
        if depth <= 0 && in_multiline_string.is_none() {
            if !current.trim().is_empty() {
                out.push(std::mem::take(&mut current));
            }
            current.clear();
            depth = 0;
        }
    }
    if !current.trim().is_empty() {
        out.push(current);
    }
    out
}

/// Calls `f` for each character outside TOML strings (with its byte index).
fn outside_strings(s: &str, mut f: impl FnMut(usize, char) -> bool) {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' && q == '"' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None => {
                if c == '"' || c == '\'' {
                    quote = Some(c);
                } else if !f(i, c) {
                    return;
                }
            }
        }
    }
}

fn strip_comment(line: &str) -> String {
    let mut end = line.len();
    outside_strings(line, |i, c| {
        if c == '#' {
            end = i;
            false
        } else {
            true
        }
    });
    line[..end].to_owned()
}

fn bracket_balance(line: &str) -> i32 {
    let mut depth = 0;
    let trimmed = line.trim_start();
    // A table header `[a.b]` / `[[bin]]` is balanced on its own line.
    if trimmed.starts_with('[') && !trimmed.contains('=') {
        return 0;
    }
    outside_strings(line, |_, c| {
        match c {
            '[' | '{' => depth += 1,
            ']' | '}' => depth -= 1,
            _ => {}
        }
        true
    });
    depth
}

fn split_once_outside(s: &str, sep: char) -> Option<(&str, &str)> {
    let mut at = None;
    outside_strings(s, |i, c| {
        if c == sep {
            at = Some(i);
            false
        } else {
            true
        }
    });
    at.map(|i| (&s[..i], &s[i + sep.len_utf8()..]))
}

/// Splits a dotted key (`a."b.c".d`) into unquoted parts.
fn split_key(key: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut start = 0;
    outside_strings(key, |i, c| {
        if c == '.' {
            parts.push(&key[start..i]);
            start = i + 1;
        }
        true
    });
    parts.push(&key[start..]);
    parts
        .into_iter()
        .map(|p| p.trim().trim_matches('"').trim_matches('\'').to_owned())
        .collect()
}

/// The top-level `key = value` pairs of an inline table `{ … }`.
fn inline_table(value: &str) -> Vec<(String, String)> {
    let inner = value.trim().trim_start_matches('{').trim_end_matches('}');
    let mut fields = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    let mut cuts = Vec::new();
    outside_strings(inner, |i, c| {
        match c {
            '[' | '{' => depth += 1,
            ']' | '}' => depth -= 1,
            ',' if depth == 0 => cuts.push(i),
            _ => {}
        }
        true
    });
    cuts.push(inner.len());
    for cut in cuts {
        let part = &inner[start..cut];
        start = cut + 1;
        if let Some((k, v)) = split_once_outside(part, '=') {
            fields.push((split_key(k.trim()).join("."), v.trim().to_owned()));
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[package]
name = "x" # a comment with = sign
version.workspace = true

[dependencies]
anyhow.workspace = true
tokio = { workspace = true, features = ["rt", "macros"] }
serde = { workspace = true, features = [
    "derive",
] }

[dependencies.bytes]
workspace = true
optional = true

[target.'cfg(unix)'.dev-dependencies]
libc.workspace = true

[lints]
workspace = true
"#;

    #[test]
    fn accepts_a_tidy_manifest() {
        assert_eq!(check_manifest(GOOD), Vec::<String>::new());
    }

    #[test]
    fn rejects_versions_outside_the_workspace() {
        let bad = r#"
[dependencies]
anyhow = "1.0"
serde = { version = "1", features = ["derive"] }
tokio.version = "1"
local = { path = "../local" }
ok.workspace = true

[dependencies.bytes]
version = "1"

[target."cfg(windows)".build-dependencies]
cc = "1"
"#;
        let problems = check_manifest(bad);
        let joined = problems.join("\n");
        for name in ["anyhow", "serde", "tokio", "local", "bytes", "cc"] {
            assert!(
                joined.contains(&format!("] {name} does not come")),
                "{name} not flagged: {joined}"
            );
        }
        assert!(!joined.contains("] ok "), "{joined}");
        assert!(joined.contains("no `[lints] workspace = true`"), "{joined}");
        assert_eq!(problems.len(), 7, "{joined}");
    }

    #[test]
    fn rejects_workspace_plus_version() {
        let bad = "[lints]\nworkspace = true\n[dev-dependencies]\nx = { workspace = true, version = \"1\" }\n";
        assert_eq!(check_manifest(bad).len(), 1);
    }

    #[test]
    fn splits_keys_and_inline_tables() {
        assert_eq!(
            split_key("target.'cfg(unix)'.dependencies"),
            ["target", "cfg(unix)", "dependencies"]
        );
        assert_eq!(split_key("a.\"b.c\""), ["a", "b.c"]);
        let fields = inline_table(r#"{ workspace = true, features = ["a", "b,c"] }"#);
        assert_eq!(fields.len(), 2);
        assert_eq!(fields[0], ("workspace".to_owned(), "true".to_owned()));
    }

    #[test]
    fn the_isolation_table_names_each_package_once() {
        let mut names: Vec<&str> = ISOLATION.iter().map(|r| r.package).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ISOLATION.len());
    }

    /// The file rules of `cargo xtask tidy` over the real workspace, so that
    /// `cargo test -p xtask` fails on a missing README, a member without the
    /// workspace lints or a dependency that bypasses `[workspace.dependencies]`.
    #[test]
    fn the_workspace_members_pass_the_file_rules() -> Result<()> {
        let members = members()?;
        assert!(
            members.iter().any(|m| m.name == "xtask"),
            "`cargo metadata` did not list this workspace"
        );
        let problems = file_problems(&members)?;
        assert!(
            problems.is_empty(),
            "tidy file rules fail:\n  - {}",
            problems.join("\n  - ")
        );
        Ok(())
    }

    #[test]
    fn the_aws_sdk_family_is_the_sdk_only() {
        let rule = Rule::no_aws("x", &["sqlx"]);
        let bans = rule.bans();
        assert_eq!(bans.len(), 2);
        for name in [
            "aws-sdk-kinesis",
            "aws-smithy-runtime-api",
            "aws-config",
            "aws-types",
            "aws-credential-types",
            "aws-runtime",
            "aws-sigv4",
        ] {
            assert!(bans[0].matches(name), "{name}");
        }
        for name in ["aws-lc-rs", "aws-lc-sys", "sqlx-core", "sdk-aws"] {
            assert!(!bans[0].matches(name), "{name}");
        }
        assert!(bans[1].matches("sqlx") && !bans[1].matches("sqlx-core"));
        assert_eq!(rule.describe(), "any AWS SDK crate, sqlx");
    }

    #[test]
    fn finds_the_banned_crate_nearest_the_package() {
        // `b` is listed in full under `a` (depth 2) before it shows up again,
        // deduplicated, as a direct dependency: its dependency `aws-sdk-x` is
        // still two steps from the root, not three.
        let tree = "\
0root v0.1.0 (/w/root)
1a v1.0.0
2b v1.0.0
3aws-sdk-x v1.0.0
4aws-smithy-types v1.0.0
3aws-smithy-types v1.0.0
1b v1.0.0 (*)
1aws-config v1.0.0
2aws-types v1.0.0
1serde v1.0.0 (proc-macro)
";
        let graph = Graph::parse(tree);
        assert_eq!(graph.root.as_deref(), Some("root"));
        let distances = graph.distances();
        assert_eq!(distances["b"], 1);
        assert_eq!(distances["aws-sdk-x"], 2);
        let aws = &Rule::no_aws("root", &[]).bans()[0];
        assert_eq!(
            graph.matching(aws),
            ["aws-config", "aws-sdk-x", "aws-smithy-types", "aws-types"]
        );
        let none = &Rule::new("root", &["redis"]).bans()[0];
        assert!(graph.matching(none).is_empty());
    }
}
