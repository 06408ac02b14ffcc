//! The JSONPaths subset Redshift's `COPY … JSON 's3://…jsonpaths'` accepts,
//! evaluated here because PostgreSQL's `COPY` has no JSON input at all: the
//! [`PostgresLoader`](crate::PostgresLoader) picks each column's value with it.

use std::collections::HashMap;

use serde_json::value::RawValue;

/// One step of a JSONPath expression.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Member(String),
    Index(usize),
}

/// A JSONPath expression of the subset Redshift accepts: `$` followed by
/// `.name`, `['name']` / `["name"]` and `[index]` steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JsonPath(Vec<Step>);

impl JsonPath {
    fn parse(text: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("JSONPath {text:?}: {why}");
        let mut rest = text
            .trim()
            .strip_prefix('$')
            .ok_or_else(|| bad("must start with `$`"))?;
        let mut steps = Vec::new();
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('.') {
                let end = after.find(['.', '[']).unwrap_or(after.len());
                let name = &after[..end];
                if name.is_empty() {
                    return Err(bad("empty member name after `.`"));
                }
                steps.push(Step::Member(name.to_owned()));
                rest = &after[end..];
            } else if let Some(after) = rest.strip_prefix('[') {
                let quote = after.chars().next().filter(|c| matches!(c, '\'' | '"'));
                if let Some(quote) = quote {
                    let inner = &after[1..];
                    let end = inner
                        .find(quote)
                        .ok_or_else(|| bad("unterminated quoted member name"))?;
                    steps.push(Step::Member(inner[..end].to_owned()));
                    rest = inner[end + 1..]
                        .strip_prefix(']')
                        .ok_or_else(|| bad("expected `]` after a quoted member name"))?;
                } else {
                    let end = after.find(']').ok_or_else(|| bad("unterminated `[`"))?;
                    let index = after[..end]
                        .trim()
                        .parse::<usize>()
                        .map_err(|_| bad("array index must be a non-negative integer"))?;
                    steps.push(Step::Index(index));
                    rest = &after[end + 1..];
                }
            } else {
                return Err(bad("expected `.` or `[`"));
            }
        }
        Ok(Self(steps))
    }

    /// The value at this path in `root`, if there is one.
    pub(crate) fn find<'a>(&self, root: &'a RawValue) -> Option<&'a RawValue> {
        let mut current = root;
        for step in &self.0 {
            current = match step {
                Step::Member(name) => {
                    let object: HashMap<String, &'a RawValue> =
                        serde_json::from_str(current.get()).ok()?;
                    object.get(name).copied()?
                }
                Step::Index(index) => {
                    let array: Vec<&'a RawValue> = serde_json::from_str(current.get()).ok()?;
                    array.get(*index).copied()?
                }
            };
        }
        Some(current)
    }
}

/// Parses `{"jsonpaths": ["$.a", …]}`.
pub(crate) fn parse_json_paths_file(bytes: &[u8]) -> Result<Vec<JsonPath>, String> {
    let document: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let paths = document
        .get("jsonpaths")
        .and_then(serde_json::Value::as_array)
        .ok_or("expected an object with a \"jsonpaths\" array")?;
    if paths.is_empty() {
        return Err("the \"jsonpaths\" array is empty".to_owned());
    }
    paths
        .iter()
        .map(|path| {
            path.as_str()
                .ok_or_else(|| format!("path {path} is not a string"))
                .and_then(JsonPath::parse)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_paths_parse() {
        assert_eq!(
            JsonPath::parse("$.a.b[2]['c d'][\"e\"]").unwrap(),
            JsonPath(vec![
                Step::Member("a".into()),
                Step::Member("b".into()),
                Step::Index(2),
                Step::Member("c d".into()),
                Step::Member("e".into()),
            ])
        );
        for bad in ["a", "$.", "$[", "$['a'", "$[x]", "$a", "$[-1]"] {
            assert!(JsonPath::parse(bad).is_err(), "{bad}");
        }
        assert!(parse_json_paths_file(br#"{"paths": []}"#).is_err());
        assert!(parse_json_paths_file(br#"{"jsonpaths": []}"#).is_err());
        assert!(parse_json_paths_file(br#"{"jsonpaths": [1]}"#).is_err());
        assert!(parse_json_paths_file(b"nope").is_err());
    }
}
