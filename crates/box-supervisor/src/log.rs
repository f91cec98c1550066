//! The writing side of a box's log file (`<data>/boxes/<id>/ctr.log`, the CRI log format: one
//! record per line or piece of a line, `<RFC 3339 nano time> <stdout|stderr> <F|P> <data>\n`;
//! F ends a line, P is a partial line continued by the next record of the same stream).
//! box-engine's `logs` module reads it back.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// Which output stream a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The box's standard output (also everything from a terminal).
    Stdout,
    /// The box's standard error.
    Stderr,
}

impl Stream {
    /// The name used in the log file.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    /// 0 for stdout, 1 for stderr (for per-stream arrays).
    pub fn index(self) -> usize {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }
}

/// Formats `time` as RFC 3339 UTC with nanoseconds, as the log records carry it.
pub fn format_rfc3339(time: SystemTime) -> String {
    let d = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    box_runtime::state::rfc3339(d.as_secs(), d.subsec_nanos())
}

/// Appends records to a box's log file. Every record goes out in one `write(2)` on an
/// `O_APPEND` descriptor, so a reader never waits on a buffer and a crash loses at most the
/// record being written.
#[derive(Debug)]
pub struct LogWriter {
    file: File,
    buf: Vec<u8>,
}

impl LogWriter {
    /// Opens (creating, mode 0640) the log file at `path` for appending.
    pub fn open(path: &Path) -> io::Result<LogWriter> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot open log file {}: {e}", path.display()),
                )
            })?;
        Ok(LogWriter::from_fd(file.into()))
    }

    /// A writer on a descriptor already open for appending (one handed over, see
    /// [`crate::handover`]).
    pub fn from_fd(fd: OwnedFd) -> LogWriter {
        LogWriter {
            file: File::from(fd),
            buf: Vec::with_capacity(512),
        }
    }

    /// Logs a chunk read from `stream`, stamped now: one F record per complete line, and a P
    /// record for a trailing piece without its newline (the next chunk of that stream goes on).
    pub fn write(&mut self, stream: Stream, chunk: &[u8]) -> io::Result<()> {
        self.write_at(SystemTime::now(), stream, chunk)
    }

    /// [`LogWriter::write`] with a given time (tests, replays).
    pub fn write_at(&mut self, time: SystemTime, stream: Stream, chunk: &[u8]) -> io::Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        let stamp = format_rfc3339(time);
        self.buf.clear();
        let mut rest = chunk;
        while !rest.is_empty() {
            let (data, full, next) = match rest.iter().position(|b| *b == b'\n') {
                Some(i) => (&rest[..i], true, &rest[i + 1..]),
                None => (rest, false, &rest[rest.len()..]),
            };
            self.buf.extend_from_slice(stamp.as_bytes());
            self.buf.push(b' ');
            self.buf.extend_from_slice(stream.as_str().as_bytes());
            self.buf
                .extend_from_slice(if full { b" F " } else { b" P " });
            self.buf.extend_from_slice(data);
            self.buf.push(b'\n');
            rest = next;
        }
        self.file.write_all(&self.buf)
    }
}

impl AsRawFd for LogWriter {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}
