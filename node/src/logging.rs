//! Logging: `tracing` output on stderr (human-readable or JSON lines) at the level -v/-q
//! choose, and optionally every line at info and above appended to a log file.

use std::borrow::Cow;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, Result};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use ferry_actors::log_hold;

use crate::cli::LogFormat;

/// The log file, reopened by name on request so that it can be rotated by renaming.
#[derive(Clone)]
pub struct LogFile {
    path: PathBuf,
    file: Arc<Mutex<File>>,
}

impl LogFile {
    fn open(path: &Path) -> io::Result<File> {
        // Append mode: every write goes to the end even if the file was truncated under us
        // (copytruncate rotation), and lines of concurrent writers never overwrite each other.
        OpenOptions::new().create(true).append(true).open(path)
    }

    /// Reopens the file by its name (after it was renamed away for rotation).
    pub fn reopen(&self) {
        match Self::open(&self.path) {
            Ok(f) => *self.file.lock().unwrap_or_else(|p| p.into_inner()) = f,
            Err(e) => {
                tracing::error!(path = %self.path.display(), "cannot reopen the log file: {e}")
            }
        }
    }
}

/// Writes one log line at a time to the current file.
pub struct LogWriter(Arc<Mutex<File>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).flush()
    }
}

impl<'a> MakeWriter<'a> for LogFile {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        LogWriter(self.file.clone())
    }
}

/// A text log writer that shows control characters as escapes (`\n`, `\u{1b}`): a file
/// name holding a newline cannot forge a log line, nor an escape sequence drive the
/// terminal. Each write is one formatted event; only its final newline is kept.
struct Escaping<M>(M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Escaping<M> {
    type Writer = EscapingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        EscapingWriter(self.0.make_writer())
    }
}

/// The writer of [`Escaping`].
struct EscapingWriter<W>(W);

impl<W: Write> Write for EscapingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let (body, end) = match buf.strip_suffix(b"\n") {
            Some(body) => (body, &b"\n"[..]),
            None => (buf, &b""[..]),
        };
        // tracing formats text: anything else is shown as text too.
        let text = String::from_utf8_lossy(body);
        match crate::stdout::shown(&text) {
            Cow::Borrowed(_) if matches!(text, Cow::Borrowed(_)) => self.0.write_all(buf)?,
            shown => {
                let mut out = Vec::with_capacity(shown.len() + end.len());
                out.extend_from_slice(shown.as_bytes());
                out.extend_from_slice(end);
                self.0.write_all(&out)?;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

fn layer<W>(format: LogFormat, writer: W, ansi: bool) -> BoxedLayer
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let base = tracing_subscriber::fmt::layer().with_ansi(ansi);
    match format {
        LogFormat::Text => base
            .with_writer(Escaping(writer))
            .with_target(false)
            .boxed(),
        // JSON escapes control characters itself.
        LogFormat::Json => base
            .with_writer(writer)
            .json()
            .with_current_span(false)
            .boxed(),
    }
}

/// The filter for `level`: notify logs a harmless internal race at info (a watch already
/// gone when it is removed, at every shutdown), so below debug only its warnings show.
fn filter_for(level: &str) -> EnvFilter {
    match level {
        "info" => EnvFilter::new("info,notify=warn"),
        other => EnvFilter::new(other),
    }
}

/// Installs the global subscriber. `FERRY_LOG` (an `EnvFilter` directive) overrides the
/// console level. Returns the log file, if any, for reopening.
pub fn init(
    verbose: u8,
    quiet: bool,
    format: LogFormat,
    file: Option<&Path>,
) -> Result<Option<LogFile>> {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    let console_filter = EnvFilter::try_from_env("FERRY_LOG").unwrap_or_else(|_| filter_for(level));
    // Through `log_hold`: the Applier writes a batch's change lines together.
    let mut layers: Vec<BoxedLayer> = vec![layer(format, || log_hold::Stderr, false)
        .with_filter(console_filter)
        .boxed()];
    let log_file = match file {
        Some(path) => Some(LogFile {
            path: path.to_owned(),
            file: Arc::new(Mutex::new(LogFile::open(path).with_context(|| {
                format!("cannot open the log file {}", path.display())
            })?)),
        }),
        None => None,
    };
    if let Some(f) = log_file.clone() {
        let filter = if verbose > 1 { "debug" } else { "info" };
        layers.push(
            layer(format, f, false)
                .with_filter(filter_for(filter))
                .boxed(),
        );
    }
    tracing_subscriber::registry().with(layers).init();
    Ok(log_file)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// What `level`'s filter lets through of an info line from notify and one from Ferry.
    fn shown(level: &str) -> String {
        let out = Captured::default();
        let sink = out.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_writer(move || sink.clone())
                .with_filter(filter_for(level)),
        );
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: "notify::inotify", "unable to remove watch descriptor");
            tracing::info!(target: "ferry_actors::applier", "created");
        });
        let bytes = out.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn notifys_info_lines_are_hidden_below_debug_and_ferrys_are_not() {
        let info = shown("info");
        assert!(info.contains("created"), "{info}");
        assert!(!info.contains("watch descriptor"), "{info}");
        let debug = shown("debug");
        assert!(
            debug.contains("created") && debug.contains("watch descriptor"),
            "{debug}"
        );
    }
}
