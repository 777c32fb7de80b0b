//! OTLP trace files: OTLP/JSON `ExportTraceServiceRequest`s stored on disk, read as a
//! stream.
//!
//! Two layouts are read, and told apart by looking at the file:
//!
//! - [`Layout::Lines`]: JSON Lines, one request per line, as the OpenTelemetry Collector's
//!   file exporter writes them (`.jsonl`, `.ndjson`, or any file whose first non-blank line
//!   is a whole JSON value). The file is read line by line, so memory is bounded by the
//!   longest line; a bad line is reported as [`Error::Line`] and reading goes on.
//! - [`Layout::Documents`]: one request per file, pretty-printed or not (or several
//!   requests one after another). Each request is parsed on its own from the stream; a
//!   syntax error ends the file with [`Error::Json`], since nothing after it can be trusted.
//!
//! Requests are yielded as [`serde_json::Value`], not decoded further: this crate sits at
//! the bottom of the workspace, and the ingest path (`memlog-evals`) has its own decoder with
//! limits and validation. A request must be a JSON object whose `resourceSpans`, if
//! present, is an array; a request of another signal (`resourceLogs`, `resourceMetrics`) is
//! an error. Compressed files (the exporter's `zstd` option) are not read.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;
use serde_json::Value;
use serde_json::de::IoRead;

use crate::Error;

/// How a file holds its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Layout {
    /// One request per line (JSON Lines).
    Lines,
    /// One request per file, or several one after another, each possibly spread over many
    /// lines.
    Documents,
}

/// One request read from a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The request's position among the file's well-formed requests, from 0.
    pub index: usize,
    /// The request as OTLP/JSON.
    pub value: Value,
    /// The number of spans in it ([`span_count`]).
    pub spans: usize,
}

/// What a [`Reader`] has read so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Well-formed requests yielded.
    pub requests: usize,
    /// Spans in them.
    pub spans: usize,
    /// Lines or documents that were no trace request (each yielded as an error).
    pub malformed: usize,
}

/// The number of spans in an OTLP/JSON trace request:
/// `resourceSpans[*].scopeSpans[*].spans[*]`. Parts of the wrong shape count as empty.
pub fn span_count(request: &Value) -> usize {
    fn list(v: Option<&Value>) -> &[Value] {
        v.and_then(Value::as_array).map_or(&[], Vec::as_slice)
    }
    list(request.get("resourceSpans"))
        .iter()
        .flat_map(|rs| list(rs.get("scopeSpans")))
        .map(|ss| list(ss.get("spans")).len())
        .sum()
}

/// Counts the requests and spans of a file, reading it as a stream. Bad lines are counted in
/// [`Stats::malformed`]; only a read error or a syntax error in [`Layout::Documents`] fails.
pub fn summarise(path: impl AsRef<Path>) -> Result<Stats, Error> {
    let mut reader = Reader::open(path)?;
    for item in reader.by_ref() {
        match item {
            Ok(_) | Err(Error::Line { .. }) => {}
            Err(other) => return Err(other),
        }
    }
    Ok(reader.stats())
}

/// Reads the trace requests of one file, one at a time (see the module documentation).
///
/// Yields `Ok(request)` for each request, and `Err` for each bad line (reading goes on) or
/// for an I/O or syntax error (reading stops).
pub struct Reader {
    path: PathBuf,
    source: Source,
    stats: Stats,
    done: bool,
}

enum Source {
    Lines {
        reader: BufReader<File>,
        /// The number of the last line read, from 1.
        line: usize,
        buffer: String,
        /// The first line's request, parsed while detecting the layout.
        first: Option<(usize, Value)>,
    },
    Documents {
        stream: serde_json::StreamDeserializer<'static, IoRead<LineCounter>, Value>,
        /// Newlines consumed by `stream` so far.
        newlines: Arc<AtomicUsize>,
    },
}

impl Reader {
    /// Opens `path` and detects its [`Layout`]: JSON Lines if the name ends in `.jsonl` or
    /// `.ndjson`, or if the first non-blank line is a whole JSON value; otherwise documents.
    pub fn open(path: impl AsRef<Path>) -> Result<Reader, Error> {
        let path = path.as_ref().to_owned();
        let read_error = |source| Error::Read {
            path: path.clone(),
            source,
        };
        let mut reader = BufReader::new(File::open(&path).map_err(read_error)?);
        let by_name = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("jsonl") || e.eq_ignore_ascii_case("ndjson"));

        let mut buffer = String::new();
        let mut line = 0;
        let mut first = None;
        if !by_name {
            // Find the first non-blank line and see whether it stands alone.
            loop {
                buffer.clear();
                if reader.read_line(&mut buffer).map_err(read_error)? == 0 {
                    break;
                }
                line += 1;
                if buffer.trim().is_empty() {
                    continue;
                }
                match serde_json::from_str::<Value>(&buffer) {
                    Ok(value) => first = Some((line, value)),
                    Err(_) => {
                        reader.seek(SeekFrom::Start(0)).map_err(read_error)?;
                        let newlines = Arc::new(AtomicUsize::new(0));
                        let counter = LineCounter {
                            inner: reader,
                            newlines: Arc::clone(&newlines),
                        };
                        let stream =
                            serde_json::Deserializer::from_reader(counter).into_iter::<Value>();
                        return Ok(Reader {
                            path,
                            source: Source::Documents { stream, newlines },
                            stats: Stats::default(),
                            done: false,
                        });
                    }
                }
                break;
            }
        }
        Ok(Reader {
            path,
            source: Source::Lines {
                reader,
                line,
                buffer,
                first,
            },
            stats: Stats::default(),
            done: false,
        })
    }

    /// The layout detected.
    pub fn layout(&self) -> Layout {
        match self.source {
            Source::Lines { .. } => Layout::Lines,
            Source::Documents { .. } => Layout::Documents,
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What has been read so far; after the last item, the whole file's counts.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Checks that `value` is a trace request and wraps it, or says what it is instead.
    fn accept(&mut self, value: Value) -> Result<Request, String> {
        let Some(object) = value.as_object() else {
            return Err(format!("not a JSON object but {}", kind(&value)));
        };
        match object.get("resourceSpans") {
            Some(Value::Array(_)) => {}
            Some(other) => return Err(format!("resourceSpans is {}, not an array", kind(other))),
            None => {
                for (key, signal) in [("resourceLogs", "logs"), ("resourceMetrics", "metrics")] {
                    if object.contains_key(key) {
                        return Err(format!("an OTLP {signal} request, not traces"));
                    }
                }
            }
        }
        let spans = span_count(&value);
        let request = Request {
            index: self.stats.requests,
            value,
            spans,
        };
        self.stats.requests += 1;
        self.stats.spans += spans;
        Ok(request)
    }

    fn bad_line(&mut self, line: usize, message: String) -> Error {
        self.stats.malformed += 1;
        Error::Line {
            path: self.path.clone(),
            line,
            message,
        }
    }

    fn next_line(&mut self) -> Option<Result<Request, Error>> {
        let Source::Lines {
            reader,
            line,
            buffer,
            first,
        } = &mut self.source
        else {
            return None;
        };
        let (number, value) = match first.take() {
            Some(first) => first,
            None => loop {
                buffer.clear();
                match reader.read_line(buffer) {
                    Ok(0) => return None,
                    Ok(_) => *line += 1,
                    Err(source) => {
                        self.done = true;
                        return Some(Err(Error::Read {
                            path: self.path.clone(),
                            source,
                        }));
                    }
                }
                if buffer.trim().is_empty() {
                    continue;
                }
                let number = *line;
                match serde_json::from_str::<Value>(buffer) {
                    Ok(value) => break (number, value),
                    Err(e) => return Some(Err(self.bad_line(number, e.to_string()))),
                }
            },
        };
        Some(self.accept(value).map_err(|m| self.bad_line(number, m)))
    }

    fn next_document(&mut self) -> Option<Result<Request, Error>> {
        let Source::Documents { stream, newlines } = &mut self.source else {
            return None;
        };
        match stream.next()? {
            Ok(value) => {
                let ends_on = newlines.load(Ordering::Relaxed) + 1;
                let index = self.stats.requests + self.stats.malformed;
                Some(self.accept(value).map_err(|m| {
                    self.bad_line(
                        ends_on,
                        format!("request {} (ending on this line): {m}", index + 1),
                    )
                }))
            }
            Err(source) => {
                self.done = true;
                self.stats.malformed += 1;
                Some(Err(if source.is_io() {
                    Error::Read {
                        path: self.path.clone(),
                        source: source.into(),
                    }
                } else {
                    Error::Json {
                        path: self.path.clone(),
                        format: "OTLP/JSON",
                        source,
                    }
                }))
            }
        }
    }
}

impl Iterator for Reader {
    type Item = Result<Request, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = match self.source {
            Source::Lines { .. } => self.next_line(),
            Source::Documents { .. } => self.next_document(),
        };
        if item.is_none() {
            self.done = true;
        }
        item
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A reader that counts the newlines it hands out. serde_json's `IoRead` takes bytes one at
/// a time and looks at most one byte ahead, so after a value the count is the line the value
/// ended on (or the next one, if the peeked byte was a newline).
///
/// The count is shared (the stream owns the reader and does not lend it back).
struct LineCounter {
    inner: BufReader<File>,
    newlines: Arc<AtomicUsize>,
}

impl Read for LineCounter {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let newlines = buf[..n].iter().filter(|&&b| b == b'\n').count();
        self.newlines.fetch_add(newlines, Ordering::Relaxed);
        Ok(n)
    }
}
