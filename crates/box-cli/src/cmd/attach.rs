//! `box attach` (and the Akuma `peek`/`grab`): a client of the box supervisor's attach socket.
//! Many clients may watch one box at once; one of them holds the box's stdin (`--takeover`
//! takes it over and the supervisor drops the previous holder). Detach keys (ctrl-p ctrl-q by
//! default) end the client and leave the box running. A box that has already ended is shown
//! post mortem: its recorded output (from its log) and its exit code.

use std::io::{IsTerminal, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use box_engine::db::{BoxRecord, BoxState};
use box_engine::engine::Engine;
use box_engine::paths::Paths;
use box_engine::supervisor;
use box_supervisor::hub::HELLO_RESIZE;

/// Docker's default detach sequence: ctrl-p ctrl-q.
pub const DEFAULT_DETACH_KEYS: &str = "ctrl-p,ctrl-q";

/// How a client attaches.
#[derive(Debug, Clone)]
pub struct AttachFlags {
    /// Forward our stdin to the box (when the box keeps its stdin open).
    pub stdin: bool,
    /// Take stdin over from its current holder.
    pub takeover: bool,
    /// The detach sequence as bytes (empty: none).
    pub detach_keys: Vec<u8>,
}

impl AttachFlags {
    /// Flags from the command line's `--no-stdin`, `--takeover` and `--detach-keys`.
    pub fn new(no_stdin: bool, takeover: bool, detach_keys: &str) -> Result<AttachFlags> {
        Ok(AttachFlags {
            stdin: !no_stdin,
            takeover,
            detach_keys: parse_detach_keys(detach_keys)?,
        })
    }
}

/// Parses docker's detach-key syntax: comma-separated keys, each a single character or
/// `ctrl-X` (X one of a-z, @, [, \, ], ^, _). An empty string means no detach keys.
pub fn parse_detach_keys(spec: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    if spec.is_empty() {
        return Ok(out);
    }
    for key in spec.split(',') {
        let key = key.trim();
        let lower = key.to_ascii_lowercase();
        if let Some(rest) = lower.strip_prefix("ctrl-") {
            let b = match rest.as_bytes() {
                [c @ b'a'..=b'z'] => c - b'a' + 1,
                [b'@'] => 0,
                [b'['] => 27,
                [b'\\'] => 28,
                [b']'] => 29,
                [b'^'] => 30,
                [b'_'] => 31,
                _ => bail!("--detach-keys: {key:?} is not a key (ctrl-a … ctrl-z, ctrl-@, ctrl-[, ctrl-\\, ctrl-], ctrl-^, ctrl-_)"),
            };
            out.push(b);
        } else if key.len() == 1 {
            out.push(key.as_bytes()[0]);
        } else {
            bail!("--detach-keys: {key:?} is not a key (a single character or ctrl-X)");
        }
    }
    Ok(out)
}

/// `box attach BOX`: relays the running box's output (and our stdin, when it holds it) until
/// the box ends (returns its exit code) or the detach keys are typed (returns 0, the box keeps
/// running). A box that has ended is shown post mortem.
pub fn attach(engine: &Engine, name: &str, flags: &AttachFlags) -> Result<i32> {
    let rec = engine.get(name)?;
    if rec.state == BoxState::Paused {
        eprintln!(
            "box: {} is paused: its output resumes after `box unpause {}`",
            rec.name, rec.name
        );
    }
    if !rec.state.is_active() {
        return post_mortem(engine, &rec);
    }
    let wants_stdin = flags.stdin && rec.spec.stdin_open;
    let hello = match (wants_stdin, flags.takeover) {
        (false, _) => b'r',
        (true, false) => b'w',
        (true, true) => b'W',
    };
    let stream = match supervisor::connect_attach(engine.paths(), &rec.id, hello) {
        Ok(s) => s,
        Err(e) => {
            // It may have ended between the look-up and the connect.
            let now = engine.get(&rec.id)?;
            if !now.state.is_active() {
                return post_mortem(engine, &now);
            }
            return Err(e.into());
        }
    };
    let size = size_channel(engine.paths(), &rec.id, rec.spec.tty);
    match relay(stream, size, wants_stdin, rec.spec.tty, flags)? {
        Relayed::Exited(code) => Ok(code),
        Relayed::Detached => Ok(0),
        Relayed::Dropped => {
            let now = engine.get(&rec.id)?;
            if now.state.is_active() {
                eprintln!(
                    "box: detached from {}: another client took its stdin over",
                    rec.name
                );
                Ok(0)
            } else {
                Ok(now.exit_code.unwrap_or(255))
            }
        }
    }
}

/// An ended box: its recorded output (stdout and stderr kept apart), then its exit code on
/// stderr; returns the code.
fn post_mortem(engine: &Engine, rec: &BoxRecord) -> Result<i32> {
    print_recorded_output(&engine.paths().log_path(&rec.id))?;
    let code = rec.exit_code.unwrap_or(255);
    match rec.state {
        BoxState::Created => eprintln!("box: {} has not started yet", rec.name),
        _ => eprintln!("box: {} exited with code {code}", rec.name),
    }
    Ok(code)
}

/// The whole of a box's or session's log (none yet: nothing), stdout and stderr kept apart.
pub(crate) fn print_recorded_output(log: &std::path::Path) -> Result<()> {
    if !log.exists() {
        return Ok(());
    }
    let query = box_engine::logs::LogQuery {
        tail: None,
        since: None,
        timestamps: false,
        follow: false,
    };
    box_engine::logs::read(
        log,
        &query,
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
        || true,
    )?;
    Ok(())
}

/// How a relay ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Relayed {
    /// The box ended with this code.
    Exited(i32),
    /// The detach keys were typed.
    Detached,
    /// The supervisor closed the stream without an exit frame (stdin taken over, or the
    /// supervisor went away).
    Dropped,
}

/// Watches for the detach sequence in a byte stream; bytes that might start it are held back
/// until it is clear they do not.
struct DetachMatcher {
    keys: Vec<u8>,
    matched: usize,
}

impl DetachMatcher {
    /// Feeds `input`; returns the bytes to forward and whether the sequence was completed.
    fn feed(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(input.len());
        if self.keys.is_empty() {
            out.extend_from_slice(input);
            return (out, false);
        }
        for &b in input {
            if b == self.keys[self.matched] {
                self.matched += 1;
                if self.matched == self.keys.len() {
                    return (out, true);
                }
            } else {
                out.extend_from_slice(&self.keys[..self.matched]);
                self.matched = 0;
                if b == self.keys[0] {
                    self.matched = 1;
                } else {
                    out.push(b);
                }
            }
        }
        (out, false)
    }
}

/// Puts the terminal on fd 0 in raw mode and restores it when dropped.
struct RawTerminal(Option<nix::sys::termios::Termios>);

impl RawTerminal {
    fn enter(want: bool) -> RawTerminal {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        if !want || !std::io::stdin().is_terminal() {
            return RawTerminal(None);
        }
        let Ok(saved) = tcgetattr(std::io::stdin()) else {
            return RawTerminal(None);
        };
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        let _ = tcsetattr(std::io::stdin(), SetArg::TCSANOW, &raw);
        RawTerminal(Some(saved))
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        use nix::sys::termios::{tcsetattr, SetArg};
        if let Some(t) = &self.0 {
            let _ = tcsetattr(std::io::stdin(), SetArg::TCSANOW, t);
        }
    }
}

/// A terminal-size channel to box `id` (see `box_supervisor::hub`), when the box has a terminal
/// and so do we; [`relay`] keeps the box's terminal the size of ours through it.
pub fn size_channel(paths: &Paths, id: &str, tty: bool) -> Option<UnixStream> {
    if !tty || !std::io::stdin().is_terminal() {
        return None;
    }
    supervisor::connect_attach(paths, id, HELLO_RESIZE).ok()
}

/// Sends our terminal's size over `channel` now and after every SIGWINCH (from a thread of its
/// own; SIGWINCH is blocked in this thread and the threads it starts later, so that thread is
/// the one that takes it).
fn follow_terminal_size(mut channel: UnixStream) {
    use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGWINCH);
    if pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None).is_err() {
        return;
    }
    let mut send = move || -> bool {
        let mut size = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes a winsize into our local.
        if unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut size) } < 0 {
            return false;
        }
        let mut record = [0u8; 4];
        record[..2].copy_from_slice(&size.ws_row.to_be_bytes());
        record[2..].copy_from_slice(&size.ws_col.to_be_bytes());
        channel.write_all(&record).is_ok()
    };
    if !send() {
        return;
    }
    std::thread::spawn(move || {
        while set.wait().is_ok() {
            if !send() {
                break;
            }
        }
    });
}

/// How long [`relay`] waits, after the exit frame, for the supervisor to record the end.
const END_RECORD_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Copies the attach stream to our stdout/stderr until the exit frame (and the end of the
/// stream, which follows once the box's end is recorded); our stdin goes to the
/// box when `forward_stdin`, and is read for the detach keys whenever it is a terminal.
pub fn relay(
    stream: UnixStream,
    size: Option<UnixStream>,
    forward_stdin: bool,
    tty: bool,
    flags: &AttachFlags,
) -> Result<Relayed> {
    if let Some(channel) = size {
        follow_terminal_size(channel);
    }
    let stdin_is_tty = std::io::stdin().is_terminal();
    let watch_keys = stdin_is_tty && flags.stdin && !flags.detach_keys.is_empty();
    let _raw = RawTerminal::enter(tty && (forward_stdin || watch_keys));
    let detached = Arc::new(AtomicBool::new(false));
    if forward_stdin || watch_keys {
        let mut to_box = stream
            .try_clone()
            .context("cannot clone the attach stream")?;
        let detached = Arc::clone(&detached);
        let mut matcher = DetachMatcher {
            keys: if watch_keys {
                flags.detach_keys.clone()
            } else {
                Vec::new()
            },
            matched: 0,
        };
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            let mut input = std::io::stdin();
            loop {
                let n = match input.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        // End of our input: the supervisor closes the box's stdin for an
                        // `o`/`O` client (`run -i` with piped input); others just stop sending.
                        let _ = to_box.shutdown(std::net::Shutdown::Write);
                        break;
                    }
                    Ok(n) => n,
                };
                let (forward, detach) = matcher.feed(&buf[..n]);
                if forward_stdin && !forward.is_empty() && to_box.write_all(&forward).is_err() {
                    break;
                }
                if detach {
                    detached.store(true, Ordering::SeqCst);
                    let _ = to_box.shutdown(std::net::Shutdown::Both);
                    break;
                }
            }
        });
    }
    let mut reader = std::io::BufReader::new(stream);
    loop {
        let frame = match supervisor::read_frame(&mut reader) {
            Ok(f) => f,
            Err(_) if detached.load(Ordering::SeqCst) => return Ok(Relayed::Detached),
            Err(e) => return Err(anyhow!(e).context("cannot read from the box's supervisor")),
        };
        let Some((kind, data)) = frame else {
            if detached.load(Ordering::SeqCst) {
                return Ok(Relayed::Detached);
            }
            return Ok(Relayed::Dropped);
        };
        match kind {
            supervisor::FRAME_STDOUT => {
                let mut out = std::io::stdout().lock();
                out.write_all(&data)?;
                out.flush()?;
            }
            supervisor::FRAME_STDERR => {
                let mut err = std::io::stderr().lock();
                err.write_all(&data)?;
                err.flush()?;
            }
            supervisor::FRAME_EXIT if data.len() == 4 => {
                // The supervisor closes the stream once the end is recorded (and a `--rm` box
                // removed): wait for that, so the caller finds the box's final state.
                let _ = reader.get_ref().set_read_timeout(Some(END_RECORD_WAIT));
                while let Ok(Some(_)) = supervisor::read_frame(&mut reader) {}
                return Ok(Relayed::Exited(i32::from_be_bytes([
                    data[0], data[1], data[2], data[3],
                ])));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys_parse() {
        assert_eq!(parse_detach_keys("ctrl-p,ctrl-q").unwrap(), vec![16, 17]);
        assert_eq!(
            parse_detach_keys("ctrl-@,x,ctrl-_").unwrap(),
            vec![0, b'x', 31]
        );
        assert!(parse_detach_keys("ctrl-1").is_err());
        assert!(parse_detach_keys("abc").is_err());
        assert!(parse_detach_keys("").unwrap().is_empty());
    }

    #[test]
    fn matcher_holds_back_a_prefix_and_releases_it() {
        let mut m = DetachMatcher {
            keys: vec![16, 17],
            matched: 0,
        };
        assert_eq!(m.feed(b"ab\x10"), (b"ab".to_vec(), false));
        assert_eq!(m.feed(b"c"), (b"\x10c".to_vec(), false));
        assert_eq!(m.feed(b"\x10\x10"), (b"\x10".to_vec(), false));
        assert_eq!(m.feed(b"\x11rest"), (Vec::new(), true));
    }
}
