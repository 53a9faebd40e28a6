//! Logging: human-readable by default, JSON lines with `--log-format json`.
//! The level comes from `RUST_LOG` (default `info`).
//!
//! Values logged may come from requests (a source id in the path, an
//! integration key, delivery ids, error messages quoting the body). JSON
//! lines escape them by construction; the text format escapes them too: every
//! line break and control character inside an event is written as an escape
//! (`\n`, `\r`, `\u{1b}`, ...), so one event is always exactly one line and a
//! request cannot forge log lines. (ANSI colours are off for the same reason.)

use std::io::{self, Write};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match format {
        LogFormat::Json => builder
            .with_writer(io::stderr)
            .json()
            .flatten_event(true)
            .try_init(),
        LogFormat::Text => builder
            .with_ansi(false)
            .with_writer(OneLine(io::stderr))
            .try_init(),
    };
}

/// Escapes control characters in a formatted event, keeping its final newline.
pub fn escape_event(event: &[u8]) -> Vec<u8> {
    let (body, end) = match event.strip_suffix(b"\n") {
        Some(b) => (b, &b"\n"[..]),
        None => (event, &b""[..]),
    };
    let mut out = Vec::with_capacity(event.len() + 8);
    for chunk in body.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() && c != '\t' {
                out.extend_from_slice(c.escape_debug().to_string().as_bytes());
            } else {
                let mut b = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
        }
        for b in chunk.invalid() {
            out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
        }
    }
    out.extend_from_slice(end);
    out
}

/// A writer factory whose writers escape each event (the text formatter
/// writes one event per `write`).
#[derive(Clone, Copy)]
pub struct OneLine<F>(pub F);

impl<'a, F, W> MakeWriter<'a> for OneLine<F>
where
    F: Fn() -> W + 'static,
    W: Write,
{
    type Writer = Escaping<W>;
    fn make_writer(&'a self) -> Self::Writer {
        Escaping((self.0)())
    }
}

pub struct Escaping<W>(W);

impl<W: Write> Write for Escaping<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_all(&escape_event(buf))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::escape_event;

    #[test]
    fn an_event_stays_one_line() {
        assert_eq!(
            escape_event(b"INFO push: source=x\nFORGED line\r\x1b[31m\n"),
            b"INFO push: source=x\\nFORGED line\\r\\u{1b}[31m\n".to_vec()
        );
        assert_eq!(
            escape_event("tab\tand é\n".as_bytes()),
            "tab\tand é\n".as_bytes()
        );
        assert_eq!(escape_event(b"bad \xff"), b"bad \\xff".to_vec());
    }
}
