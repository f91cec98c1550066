//! logs: a box's log file `<data>/boxes/<id>/ctr.log` in the CRI log format — one record per
//! line or piece of a line, `<RFC 3339 nano time> <stdout|stderr> <F|P> <data>\n` (F: the record
//! ends a line, P: a partial line continued by the next record of the same stream) — written by
//! the supervisor ([`LogWriter`]) and read back by `box logs` ([`read`]).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use box_supervisor::log::{format_rfc3339, LogWriter, Stream};

/// One parsed record of the log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    /// When the supervisor read the data.
    pub time: SystemTime,
    /// The time exactly as written (RFC 3339, UTC, nanoseconds).
    pub time_text: &'a str,
    /// Which stream.
    pub stream: Stream,
    /// Whether the record ends a line (`F`) rather than being part of one (`P`).
    pub full: bool,
    /// The bytes, without the line's newline.
    pub data: &'a [u8],
}

/// Parses one record (without its trailing newline); `None` if it is not a record.
pub fn parse_record(line: &[u8]) -> Option<Record<'_>> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let time_text = std::str::from_utf8(parts.next()?).ok()?;
    let stream = match parts.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let full = match parts.next()? {
        b"F" => true,
        b"P" => false,
        _ => return None,
    };
    let data = parts.next().unwrap_or(b"");
    Some(Record {
        time: parse_rfc3339(time_text)?,
        time_text,
        stream,
        full,
        data,
    })
}

/// What `box logs` asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogQuery {
    /// Only the last N lines (counted over both streams); `None`: everything.
    pub tail: Option<usize>,
    /// Only records stamped at or after this time.
    pub since: Option<SystemTime>,
    /// Prefix every line with its RFC 3339 time and a space.
    pub timestamps: bool,
    /// At the end of the file, wait for more until the stop condition says the box is done.
    pub follow: bool,
}

/// How often `follow` looks for new records (and asks the stop condition) at the end of the file.
pub const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// Writes the log at `path` to `stdout`/`stderr` as `query` asks. With `query.follow`, at the
/// end of the file it asks `stopped` (e.g. "has the box exited?") every [`FOLLOW_POLL`]: once it
/// says yes, what was written meanwhile is read and `read` returns. A missing file is an empty
/// log (a box that never started), waited on when following.
pub fn read(
    path: &Path,
    query: &LogQuery,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
    mut stopped: impl FnMut() -> bool,
) -> io::Result<()> {
    let mut file = loop {
        match File::open(path) {
            Ok(f) => break f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if !query.follow || stopped() {
                    // One more look: the box may have written its first record meanwhile.
                    match File::open(path) {
                        Ok(f) => break f,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                        Err(e) => return Err(with_path(e, "cannot open log file", path)),
                    }
                }
                std::thread::sleep(FOLLOW_POLL);
            }
            Err(e) => return Err(with_path(e, "cannot open log file", path)),
        }
    };
    let start = match query.tail {
        Some(n) => tail_offset(&mut file, n, query.since)?,
        None => 0,
    };
    file.seek(SeekFrom::Start(start))?;
    let mut out = Printer {
        query,
        at_line_start: [true, true],
        outs: [stdout, stderr],
    };
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut finishing = false;
    loop {
        let n = file.read(&mut buf)?;
        if n > 0 {
            pending.extend_from_slice(&buf[..n]);
            let mut used = 0;
            while let Some(i) = pending[used..].iter().position(|b| *b == b'\n') {
                out.record(&pending[used..used + i])?;
                used += i + 1;
            }
            pending.drain(..used);
            continue;
        }
        // End of file.
        out.flush()?;
        if !query.follow || finishing {
            return Ok(());
        }
        if stopped() {
            // Drain what the supervisor wrote before it recorded the exit.
            finishing = true;
            continue;
        }
        std::thread::sleep(FOLLOW_POLL);
    }
}

/// Where to start reading so that the last `n` lines (of records at or after `since`) are shown:
/// the offset of the n-th last record that starts a line.
fn tail_offset(file: &mut File, n: usize, since: Option<SystemTime>) -> io::Result<u64> {
    if n == 0 {
        return file.seek(SeekFrom::End(0));
    }
    let mut starts: std::collections::VecDeque<u64> = std::collections::VecDeque::with_capacity(n);
    let mut at_line_start = [true, true];
    let mut reader = io::BufReader::with_capacity(64 * 1024, &mut *file);
    let mut line = Vec::new();
    let mut offset = 0u64;
    loop {
        line.clear();
        let got = io::BufRead::read_until(&mut reader, b'\n', &mut line)?;
        if got == 0 || line.last() != Some(&b'\n') {
            break;
        }
        if let Some(rec) = parse_record(&line[..line.len() - 1]) {
            let i = rec.stream.index();
            let shown = since.is_none_or(|s| rec.time >= s);
            if at_line_start[i] && shown {
                if starts.len() == n {
                    starts.pop_front();
                }
                starts.push_back(offset);
            }
            at_line_start[i] = rec.full;
        }
        offset += got as u64;
    }
    Ok(starts.front().copied().unwrap_or(offset))
}

/// Turns records into the output streams, keeping track of where lines start.
struct Printer<'q, 'o> {
    query: &'q LogQuery,
    at_line_start: [bool; 2],
    outs: [&'o mut dyn Write; 2],
}

impl Printer<'_, '_> {
    fn record(&mut self, line: &[u8]) -> io::Result<()> {
        let Some(rec) = parse_record(line) else {
            return Ok(()); // not ours (a torn or foreign line): skipped
        };
        let i = rec.stream.index();
        let starts_line = self.at_line_start[i];
        self.at_line_start[i] = rec.full;
        if let Some(since) = self.query.since {
            if rec.time < since {
                return Ok(());
            }
        }
        let out = &mut self.outs[i];
        if self.query.timestamps && starts_line {
            out.write_all(rec.time_text.as_bytes())?;
            out.write_all(b" ")?;
        }
        out.write_all(rec.data)?;
        if rec.full {
            out.write_all(b"\n")?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        for o in self.outs.iter_mut() {
            o.flush()?;
        }
        Ok(())
    }
}

/// Parses an RFC 3339 time: `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` (`t`/space for `T`, `z`).
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if !t.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        t.parse().ok()
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos: u32 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        for (k, c) in b[i..i + digits].iter().enumerate() {
            if k < 9 {
                nanos = nanos * 10 + u32::from(c - b'0');
            }
        }
        for _ in digits..9 {
            nanos *= 10;
        }
        i += digits;
    }
    let offset_secs = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let h = num(i + 1..i + 3)?;
            let m = num(i + 4..i + 6)?;
            let v = h * 3600 + m * 60;
            if *sign == b'+' {
                v
            } else {
                -v
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + min * 60 + sec - offset_secs;
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}

// Howard Hinnant's days-from-civil algorithm (the inverse of the runtime's formatter).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses `box logs --since` as docker does: an RFC 3339 time, a Unix time (`1700000000`,
/// `1700000000.5`), or a duration before `now` (`90s`, `10m`, `1h30m`, `2d`).
pub fn parse_since(s: &str, now: SystemTime) -> Option<SystemTime> {
    let s = s.trim();
    if let Some(t) = parse_rfc3339(s) {
        return Some(t);
    }
    if let Ok(secs) = s.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Some(UNIX_EPOCH + Duration::from_secs_f64(secs));
        }
        return None;
    }
    let mut total = Duration::ZERO;
    let mut digits = String::new();
    let mut any = false;
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let n: u64 = digits.parse().ok()?;
        digits.clear();
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return None,
        };
        total += Duration::from_secs(n.checked_mul(unit)?);
        any = true;
    }
    if !digits.is_empty() || !any {
        return None;
    }
    now.checked_sub(total)
}

fn with_path(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}
