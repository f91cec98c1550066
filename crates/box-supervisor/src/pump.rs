//! The I/O loop while the box runs: the box's output to the log and the attach clients, the
//! stdin holder's input to the box, until the box's init has exited and its output is drained.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use crate::hub::{ClientInput, Hub};
use crate::log::{LogWriter, Stream};
use crate::{FRAME_STDERR, FRAME_STDOUT};

/// A started box's descriptors, as the supervisor holds them (non-blocking).
#[derive(Debug)]
pub struct BoxIo {
    /// The box's init (our child).
    pub pid: i32,
    /// A pidfd of the init: readable when it exits.
    pub pidfd: Option<OwnedFd>,
    /// stdout pipe, or the pty master (everything comes as stdout).
    pub stdout: Option<OwnedFd>,
    /// stderr pipe (none with a pty).
    pub stderr: Option<OwnedFd>,
    /// The box's stdin: pipe write end, or a dup of the pty master.
    pub stdin: Option<OwnedFd>,
}

fn raw(fd: &Option<OwnedFd>) -> RawFd {
    fd.as_ref().map(|f| f.as_raw_fd()).unwrap_or(-1)
}

fn pollfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// The outcome of one `read(2)`/`write(2)` on a non-blocking descriptor.
enum Io {
    Done(usize),
    Again,
    Closed,
}

fn read_fd(fd: &OwnedFd, buf: &mut [u8]) -> Io {
    // SAFETY: `buf` is valid for writes of its length; `fd` is open.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    classify(n)
}

fn write_fd(fd: &OwnedFd, data: &[u8]) -> Io {
    // SAFETY: `data` is valid for reads of its length; `fd` is open.
    let n = unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
    classify(n)
}

fn classify(n: isize) -> Io {
    match n {
        0 => Io::Closed,
        n if n > 0 => Io::Done(n as usize),
        _ => match io::Error::last_os_error().raw_os_error() {
            Some(libc::EAGAIN | libc::EINTR) => Io::Again,
            _ => Io::Closed, // EIO from a pty master: the slave side is gone
        },
    }
}

/// How [`pump_until`] returned.
#[derive(Debug)]
pub enum Pumped {
    /// The init exited with this shell-style code and the output is drained.
    Exited(i32),
    /// The deadline came while the box runs (and no input was pending): its descriptors back.
    Running(BoxIo),
}

/// Runs the loop for `b` until its init has exited and the output is drained (or half a
/// second passed since the exit: without a pid namespace, orphans may hold the pipes).
/// Returns the init's shell-style exit code (255 when it vanished without one).
pub fn pump(hub: &mut Hub, log: &mut LogWriter, b: BoxIo) -> io::Result<i32> {
    match pump_until(hub, log, b, None)? {
        Pumped::Exited(code) => Ok(code),
        Pumped::Running(_) => unreachable!("no deadline was given"),
    }
}

/// [`pump`], but returning the box's descriptors at `deadline` if it is still running then
/// and nothing is waiting to go to its stdin (so that no state but the descriptors is lost).
pub fn pump_until(
    hub: &mut Hub,
    log: &mut LogWriter,
    mut b: BoxIo,
    deadline: Option<Instant>,
) -> io::Result<Pumped> {
    let mut buf = vec![0u8; 32 * 1024];
    let mut stdin_buf: Vec<u8> = Vec::new();
    let mut close_stdin_after = false;
    let mut exit: Option<i32> = None;
    let mut drain_deadline: Option<Instant> = None;
    let mut fds: Vec<libc::pollfd> = Vec::new();
    loop {
        if exit.is_none() {
            exit = reap(b.pid);
        }
        let quiet = exit.is_none() && stdin_buf.is_empty() && !close_stdin_after;
        if quiet && deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(Pumped::Running(b));
        }
        if exit.is_some() {
            let deadline =
                *drain_deadline.get_or_insert(Instant::now() + Duration::from_millis(500));
            if (b.stdout.is_none() && b.stderr.is_none()) || Instant::now() > deadline {
                break;
            }
            b.pidfd = None;
        }
        fds.clear();
        fds.push(pollfd(raw(&b.stdout), libc::POLLIN));
        fds.push(pollfd(raw(&b.stderr), libc::POLLIN));
        fds.push(pollfd(raw(&b.pidfd), libc::POLLIN));
        fds.push(pollfd(hub.listener.as_raw_fd(), libc::POLLIN));
        if stdin_buf.is_empty() {
            fds.push(pollfd(-1, 0));
        } else {
            fds.push(pollfd(raw(&b.stdin), libc::POLLOUT));
        }
        let client_base = fds.len();
        for c in &hub.clients {
            let mut ev = 0;
            // Input of the holder waits while the box's stdin is full.
            if stdin_buf.is_empty() && !c.input_closed {
                ev |= libc::POLLIN;
            }
            if !c.out.is_empty() {
                ev |= libc::POLLOUT;
            }
            fds.push(pollfd(c.sock.as_raw_fd(), ev));
        }
        let mut timeout = if exit.is_some() { 50 } else { 500 };
        if let Some(d) = deadline {
            let left = d.saturating_duration_since(Instant::now()).as_millis() as i32;
            timeout = timeout.min(left.max(1));
        }
        // SAFETY: `fds` is a valid array of pollfd of the given length.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for (i, stream, frame) in [
            (0, Stream::Stdout, FRAME_STDOUT),
            (1, Stream::Stderr, FRAME_STDERR),
        ] {
            if fds[i].revents == 0 {
                continue;
            }
            let slot = if i == 0 { &mut b.stdout } else { &mut b.stderr };
            let Some(fd) = slot.as_ref() else { continue };
            match read_fd(fd, &mut buf) {
                Io::Done(n) => {
                    let _ = log.write(stream, &buf[..n]);
                    hub.broadcast(frame, &buf[..n]);
                }
                Io::Again => {}
                Io::Closed => *slot = None,
            }
        }
        if fds[3].revents != 0 {
            hub.accept();
        }
        if !stdin_buf.is_empty() {
            if let Some(fd) = b.stdin.as_ref() {
                match write_fd(fd, &stdin_buf) {
                    Io::Done(n) => {
                        stdin_buf.drain(..n);
                    }
                    Io::Again => {}
                    Io::Closed => {
                        stdin_buf.clear();
                        b.stdin = None;
                    }
                }
            } else {
                stdin_buf.clear();
            }
            if stdin_buf.is_empty() && close_stdin_after {
                b.stdin = None;
            }
        }
        // Clients, from the back so removals keep earlier indexes valid.
        let count = hub.clients.len().min(fds.len() - client_base);
        for i in (0..count).rev() {
            let rev = fds[client_base + i].revents;
            if rev & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) == 0 {
                continue;
            }
            if hub.clients[i].input_closed {
                // Hung up after its end of input: gone for good.
                hub.remove(i);
                continue;
            }
            match hub.read_client(i, &mut buf) {
                ClientInput::Nothing => {}
                ClientInput::Stdin(n) => {
                    if b.stdin.is_some() {
                        stdin_buf.extend_from_slice(&buf[..n]);
                    }
                }
                ClientInput::Eof { closes_stdin } => {
                    if closes_stdin {
                        if stdin_buf.is_empty() {
                            b.stdin = None;
                        } else {
                            close_stdin_after = true;
                        }
                    }
                }
                ClientInput::Resize { rows, cols } => resize(&b, rows, cols),
                ClientInput::Gone => hub.remove(i),
            }
        }
        hub.flush();
    }
    Ok(Pumped::Exited(exit.unwrap_or(255)))
}

/// Sets the box's terminal size (the pty master is its stdout); a box without a terminal
/// ignores it.
fn resize(b: &BoxIo, rows: u16, cols: u16) {
    let Some(master) = b.stdout.as_ref() else {
        return;
    };
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize from a valid pointer; on a pipe it fails with ENOTTY.
    unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
}

/// Reaps every exited child (the supervisor is a subreaper: the box's orphans come to it);
/// returns the init's shell-style exit code once it is among them.
pub fn reap(init: i32) -> Option<i32> {
    let mut code = None;
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: waitpid writes the status into our local.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            break;
        }
        if pid == init {
            code = Some(if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else if libc::WIFSIGNALED(status) {
                128 + libc::WTERMSIG(status)
            } else {
                255
            });
        }
    }
    code
}
