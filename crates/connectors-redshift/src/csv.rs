//! JSON lines to the CSV rows PostgreSQL's `COPY … (FORMAT csv)` reads: the
//! [`PostgresLoader`](crate::PostgresLoader) loads JSON this way because
//! PostgreSQL's `COPY` has no JSON input.

use std::collections::HashMap;

use serde_json::value::RawValue;

use crate::jsonpaths::JsonPath;

/// How a JSON line becomes a row.
#[derive(Debug)]
pub(crate) enum JsonMapping {
    /// Column names, matched to the object's keys.
    Auto(Vec<String>),
    /// One path per column.
    Paths(Vec<JsonPath>),
}

impl JsonMapping {
    /// Appends the CSV row of `line` to `out`.
    pub(crate) fn encode(&self, line: &str, out: &mut Vec<u8>) -> Result<(), String> {
        match self {
            Self::Auto(columns) => {
                let object: HashMap<String, &RawValue> =
                    serde_json::from_str(line).map_err(|e| format!("not a JSON object: {e}"))?;
                for (i, column) in columns.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    if let Some(value) = object.get(column) {
                        write_csv_value(value, out)?;
                    }
                }
            }
            Self::Paths(paths) => {
                let root: &RawValue =
                    serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
                for (i, path) in paths.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    if let Some(value) = path.find(root) {
                        write_csv_value(value, out)?;
                    }
                }
            }
        }
        out.push(b'\n');
        Ok(())
    }
}

/// Appends one JSON value as a CSV field: `null` as an empty unquoted field
/// (`NULL`), strings quoted (so `""` stays an empty string), numbers and
/// booleans as written, objects and arrays as their quoted JSON text.
fn write_csv_value(value: &RawValue, out: &mut Vec<u8>) -> Result<(), String> {
    let text = value.get().trim();
    match text.as_bytes().first() {
        None | Some(b'n') => {}
        Some(b'"') => {
            let string: String =
                serde_json::from_str(text).map_err(|e| format!("bad JSON string: {e}"))?;
            write_csv_quoted(&string, out);
        }
        Some(b'{' | b'[') => write_csv_quoted(text, out),
        Some(_) => out.extend_from_slice(text.as_bytes()),
    }
    Ok(())
}

fn write_csv_quoted(text: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for byte in text.bytes() {
        if byte == b'"' {
            out.push(b'"');
        }
        out.push(byte);
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jsonpaths::parse_json_paths_file;

    fn auto(columns: &[&str]) -> JsonMapping {
        JsonMapping::Auto(columns.iter().map(|c| (*c).to_owned()).collect())
    }

    fn row(mapping: &JsonMapping, line: &str) -> Result<String, String> {
        let mut out = Vec::new();
        mapping.encode(line, &mut out)?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn json_auto_rows() {
        let mapping = auto(&[
            "id", "name", "score", "ok", "tags", "missing", "empty", "big",
        ]);
        assert_eq!(
            row(
                &mapping,
                r#"{"id":7,"name":"a \"quoted\", name","score":1.5e3,"ok":true,"tags":["x", {"y":1}],"empty":"","big":123456789012345678901234567890,"extra":1}"#
            )
            .unwrap(),
            "7,\"a \"\"quoted\"\", name\",1.5e3,true,\"[\"\"x\"\", {\"\"y\"\":1}]\",,\"\",123456789012345678901234567890\n"
        );
        assert_eq!(
            row(&auto(&["a", "b"]), r#"{"a":null,"b":"line\nbreak"}"#).unwrap(),
            ",\"line\nbreak\"\n"
        );
        assert!(row(&mapping, "[1,2]").is_err());
        assert!(row(&mapping, "{\"id\":").is_err());
        assert!(row(&mapping, "42").is_err());
    }

    #[test]
    fn json_paths_rows() {
        let paths = parse_json_paths_file(
            br#"{"jsonpaths": ["$.id", "$['user']['name']", "$.tags[1]", "$.nope.deeper"]}"#,
        )
        .unwrap();
        let mapping = JsonMapping::Paths(paths);
        assert_eq!(
            row(
                &mapping,
                r#"{"id": 1, "user": {"name": "ann"}, "tags": ["a", "b"]}"#
            )
            .unwrap(),
            "1,\"ann\",\"b\",\n"
        );
    }
}
