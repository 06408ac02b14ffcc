//! `cargo xtask tidy`: workspace hygiene rules.
//!
//! - every workspace member has a `README.md` and `[lints] workspace = true`;
//! - every dependency of a member goes through `[workspace.dependencies]`
//!   (`x.workspace = true` or `x = { workspace = true, … }`);
//! - the dependency isolation table below holds.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::util::{self, say};

/// Crates that must stay out of a package's normal dependency graph, so that an
/// application only compiles the backends it uses. A row whose package does not
/// exist (yet) is skipped; a new backend crate is a one-line addition.
pub(crate) const ISOLATION: &[(&str, &[&str])] = &[
    (
        "kinesis-connectors-core",
        &["aws-sdk-s3", "aws-sdk-dynamodb", "sqlx", "redis"],
    ),
    (
        "kinesis-checkpoint-redis",
        &["aws-sdk-s3", "aws-sdk-dynamodb", "sqlx"],
    ),
    (
        "kinesis-checkpoint-dynamodb",
        &["aws-sdk-s3", "sqlx", "redis"],
    ),
    (
        "kinesis-connectors-dynamodb",
        &["sqlx", "redis", "aws-sdk-s3"],
    ),
    (
        "kinesis-connectors-s3",
        &["aws-sdk-dynamodb", "sqlx", "redis"],
    ),
    (
        "kinesis-connectors-kinesis",
        &["aws-sdk-s3", "aws-sdk-dynamodb", "sqlx", "redis"],
    ),
    (
        "kinesis-connectors-redshift",
        &["aws-sdk-dynamodb", "redis"],
    ),
    (
        "kinesis-emitter-files",
        &["aws-sdk-s3", "aws-sdk-dynamodb", "sqlx", "redis"],
    ),
    (
        "kinesis-connectors-testkit",
        &["aws-sdk-s3", "aws-sdk-dynamodb", "sqlx", "redis"],
    ),
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
    let mut problems: Vec<String> = Vec::new();
    say(format!(
        "tidy: checking {} workspace members",
        members.len()
    ));
    for m in &members {
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
    let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
    for (package, banned) in ISOLATION {
        if !names.contains(package) {
            say(format!(
                "tidy: isolation rule for {package} skipped: no such crate in the workspace yet"
            ));
            continue;
        }
        let found = isolation_violations(package, banned)?;
        if found.is_empty() {
            say(format!("tidy: {package} is free of {}", banned.join(", ")));
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

/// Names of the packages in `package`'s normal dependency graph.
fn normal_deps(package: &str) -> Result<Vec<String>> {
    let out = util::output(
        Command::new(cargo())
            .current_dir(util::root())
            .args([
                "tree", "-p", package, "-e", "normal", "--prefix", "none", "--target", "all",
            ])
            .args(["--format", "{p}"]),
    )?;
    let mut names: Vec<String> = out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}

/// One problem per banned crate found in `package`'s normal graph, with the path to it.
fn isolation_violations(package: &str, banned: &[&str]) -> Result<Vec<String>> {
    let deps = normal_deps(package)?;
    let mut problems = Vec::new();
    for bad in banned {
        if !deps.iter().any(|d| d == bad) {
            continue;
        }
        let path = util::output(Command::new(cargo()).current_dir(util::root()).args([
            "tree", "-p", package, "-e", "normal", "--target", "all", "-i", bad,
        ]))
        .unwrap_or_else(|e| format!("(could not print the path: {e:#})"));
        problems.push(format!(
            "{package} must not depend on {bad}, but it does (isolation rule); path (`cargo tree -p {package} -e normal -i {bad}`):\n{}",
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
        let mut names: Vec<&str> = ISOLATION.iter().map(|(p, _)| *p).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ISOLATION.len());
    }
}
