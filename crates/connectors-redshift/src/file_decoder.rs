//! One S3 object's bytes, as they arrive, turned into `COPY … FROM STDIN`
//! input: gunzipped when the load says `GZIP`, cut into lines, and JSON lines
//! converted to CSV rows. Kept apart from the
//! [`PostgresLoader`](crate::PostgresLoader)'s I/O so it is tested on plain
//! byte chunks.

use std::io::Write as _;

use crate::csv::JsonMapping;

/// Turns one object's bytes (possibly gzipped) into `COPY` input.
pub(crate) struct FileDecoder<'a> {
    url: &'a str,
    gunzip: Option<flate2::write::MultiGzDecoder<Vec<u8>>>,
    rows: Rows<'a>,
}

/// What to do with the plain bytes of a file.
enum Rows<'a> {
    /// Send as they are; end the file with a newline if it lacks one.
    Raw {
        wrote: bool,
        ends_with_newline: bool,
    },
    /// JSON lines, converted to CSV rows.
    Json {
        mapping: &'a JsonMapping,
        pending: Vec<u8>,
        line: u64,
    },
}

impl<'a> FileDecoder<'a> {
    pub(crate) fn new(url: &'a str, mapping: Option<&'a JsonMapping>, gzip: bool) -> Self {
        let rows = match mapping {
            Some(mapping) => Rows::Json {
                mapping,
                pending: Vec::new(),
                line: 0,
            },
            None => Rows::Raw {
                wrote: false,
                ends_with_newline: false,
            },
        };
        Self {
            url,
            gunzip: gzip.then(|| flate2::write::MultiGzDecoder::new(Vec::new())),
            rows,
        }
    }

    /// Takes the next bytes of the object; appends complete rows to `out`.
    pub(crate) fn push(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        match &mut self.gunzip {
            Some(gunzip) => {
                gunzip
                    .write_all(data)
                    .map_err(|e| format!("{} is not valid gzip: {e}", self.url))?;
                let plain = std::mem::take(gunzip.get_mut());
                self.rows.push(self.url, &plain, out)
            }
            None => self.rows.push(self.url, data, out),
        }
    }

    /// The object ended: flushes what is left.
    pub(crate) fn finish(mut self, out: &mut Vec<u8>) -> Result<(), String> {
        if let Some(gunzip) = self.gunzip.take() {
            let rest = gunzip
                .finish()
                .map_err(|e| format!("{} is not valid gzip: {e}", self.url))?;
            self.rows.push(self.url, &rest, out)?;
        }
        self.rows.finish(self.url, out)
    }
}

impl Rows<'_> {
    fn push(&mut self, url: &str, data: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        match self {
            Self::Raw {
                wrote,
                ends_with_newline,
            } => {
                if let Some(&last) = data.last() {
                    out.extend_from_slice(data);
                    *wrote = true;
                    *ends_with_newline = last == b'\n';
                }
                Ok(())
            }
            Self::Json {
                mapping,
                pending,
                line,
            } => {
                pending.extend_from_slice(data);
                let mut start = 0;
                while let Some(offset) = pending[start..].iter().position(|&b| b == b'\n') {
                    let end = start + offset;
                    *line += 1;
                    encode_line(mapping, url, *line, &pending[start..end], out)?;
                    start = end + 1;
                }
                pending.drain(..start);
                Ok(())
            }
        }
    }

    fn finish(&mut self, url: &str, out: &mut Vec<u8>) -> Result<(), String> {
        match self {
            Self::Raw {
                wrote,
                ends_with_newline,
            } => {
                if *wrote && !*ends_with_newline {
                    out.push(b'\n');
                }
                Ok(())
            }
            Self::Json {
                mapping,
                pending,
                line,
            } => {
                if pending.is_empty() {
                    return Ok(());
                }
                *line += 1;
                let last = std::mem::take(pending);
                encode_line(mapping, url, *line, &last, out)
            }
        }
    }
}

/// Converts one JSON line; blank lines are skipped.
fn encode_line(
    mapping: &JsonMapping,
    url: &str,
    line: u64,
    bytes: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    let text =
        std::str::from_utf8(bytes).map_err(|e| format!("{url} line {line}: not UTF-8: {e}"))?;
    let start = out.len();
    mapping.encode(text, out).map_err(|e| {
        out.truncate(start);
        format!("{url} line {line}: {e}")
    })
}

#[cfg(test)]
mod tests {
    use flate2::write::GzEncoder;

    use super::*;

    fn by_id() -> JsonMapping {
        JsonMapping::Auto(vec!["id".to_owned()])
    }

    #[test]
    fn json_lines_across_chunks_with_line_numbers() {
        let mapping = by_id();
        let mut decoder = FileDecoder::new("s3://b/k", Some(&mapping), false);
        let mut out = Vec::new();
        decoder.push(b"{\"id\":1}\n{\"i", &mut out).unwrap();
        decoder
            .push(b"d\":2}\r\n\n   \n{\"id\":3}", &mut out)
            .unwrap();
        decoder.finish(&mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "1\n2\n3\n");

        let mut decoder = FileDecoder::new("s3://b/k", Some(&mapping), false);
        let mut out = Vec::new();
        decoder
            .push(b"{\"id\":1}\n\nnot json\n", &mut out)
            .map(drop)
            .unwrap_err();
        let mut decoder = FileDecoder::new("s3://b/k", Some(&mapping), false);
        let error = decoder
            .push(b"{\"id\":1}\n\nnot json\n", &mut Vec::new())
            .unwrap_err();
        assert!(error.starts_with("s3://b/k line 3: "), "{error}");
    }

    #[test]
    fn raw_files_end_with_a_newline_and_gzip_is_undone() {
        let mut out = Vec::new();
        let mut decoder = FileDecoder::new("s3://b/k", None, false);
        decoder.push(b"a,b\nc,d", &mut out).unwrap();
        decoder.finish(&mut out).unwrap();
        let decoder = FileDecoder::new("s3://b/k2", None, false);
        decoder.finish(&mut out).unwrap();
        assert_eq!(out, b"a,b\nc,d\n");

        let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(b"{\"id\":1}\n{\"id\":2}\n").unwrap();
        let compressed = gz.finish().unwrap();
        let mapping = by_id();
        let mut decoder = FileDecoder::new("s3://b/k.gz", Some(&mapping), true);
        let mut out = Vec::new();
        for chunk in compressed.chunks(5) {
            decoder.push(chunk, &mut out).unwrap();
        }
        decoder.finish(&mut out).unwrap();
        assert_eq!(out, b"1\n2\n");

        let mut decoder = FileDecoder::new("s3://b/k.gz", Some(&mapping), true);
        let error = decoder
            .push(b"definitely not gzip", &mut Vec::new())
            .and_then(|()| decoder.finish(&mut Vec::new()))
            .unwrap_err();
        assert!(error.contains("not valid gzip"), "{error}");
    }
}
