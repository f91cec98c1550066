//! The hand-over between a supervisor's two images (see the crate docs): the descriptors and
//! the little state the next image needs travel across `execve(2)` — the descriptors by
//! number, cleared of `FD_CLOEXEC`, the rest in the environment variable [`ENV`] as
//! space-separated `key=value` words:
//!
//! `listen=FD log=FD holder=N|- clients=FD:HELLO:EOF,… backoff=MS tty=0|1` and, towards the lean image,
//! `pid=PID pidfd=FD out=FD err=FD in=FD` (`-` for none), or back towards the full image,
//! `exit=CODE`. A client's HELLO is its hello byte, or `-` before it said hello; EOF is 1 when
//! it has shut down its sending side, else 0.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use crate::hub::{Client, Hub};
use crate::log::LogWriter;
use crate::pump::BoxIo;

/// The environment variable that carries the hand-over state.
pub const ENV: &str = "BOX_SUPERVISOR_HANDOVER";

/// What one image hands to the next.
#[derive(Debug)]
pub struct Handover {
    /// The attach socket and its clients.
    pub hub: Hub,
    /// The box's log.
    pub log: LogWriter,
    /// Towards the lean image: the running box's descriptors.
    pub running: Option<BoxIo>,
    /// Back towards the full image: the init's exit code.
    pub exit: Option<i32>,
    /// The restart back-off to use next, in milliseconds.
    pub backoff_ms: u64,
}

fn fd_word(fd: Option<RawFd>) -> String {
    fd.map(|f| f.to_string()).unwrap_or_else(|| "-".into())
}

impl Handover {
    /// Every descriptor that must survive the exec.
    fn fds(&self) -> Vec<RawFd> {
        let mut fds = vec![self.hub.listener.as_raw_fd(), self.log.as_raw_fd()];
        fds.extend(self.hub.clients.iter().map(|c| c.sock.as_raw_fd()));
        if let Some(b) = &self.running {
            for fd in [&b.pidfd, &b.stdout, &b.stderr, &b.stdin]
                .into_iter()
                .flatten()
            {
                fds.push(fd.as_raw_fd());
            }
        }
        fds
    }

    /// The [`ENV`] value describing this state.
    pub fn encode(&self) -> String {
        let clients: Vec<String> = self
            .hub
            .clients
            .iter()
            .map(|c| {
                let hello = c.hello.map(|h| (h as char).to_string());
                format!(
                    "{}:{}:{}",
                    c.sock.as_raw_fd(),
                    hello.as_deref().unwrap_or("-"),
                    u8::from(c.input_closed)
                )
            })
            .collect();
        let mut words = vec![
            format!("listen={}", self.hub.listener.as_raw_fd()),
            format!("log={}", self.log.as_raw_fd()),
            format!(
                "holder={}",
                self.hub
                    .holder
                    .map(|h| h.to_string())
                    .unwrap_or_else(|| "-".into())
            ),
            format!("clients={}", clients.join(",")),
            format!("backoff={}", self.backoff_ms),
            format!("tty={}", u8::from(self.hub.tty)),
        ];
        if let Some(b) = &self.running {
            let raw = |f: &Option<OwnedFd>| f.as_ref().map(|f| f.as_raw_fd());
            words.push(format!("pid={}", b.pid));
            words.push(format!("pidfd={}", fd_word(raw(&b.pidfd))));
            words.push(format!("out={}", fd_word(raw(&b.stdout))));
            words.push(format!("err={}", fd_word(raw(&b.stderr))));
            words.push(format!("in={}", fd_word(raw(&b.stdin))));
        }
        if let Some(code) = self.exit {
            words.push(format!("exit={code}"));
        }
        words.join(" ")
    }

    /// Replaces this process's image with `program args…`, handing this state over. Returns
    /// only on failure, with every descriptor still ours and close-on-exec again.
    pub fn exec(&self, program: &Path, args: &[String]) -> io::Error {
        let fds = self.fds();
        for fd in &fds {
            set_cloexec(*fd, false);
        }
        let err = Command::new(program)
            .args(args)
            .env(ENV, self.encode())
            .exec();
        for fd in &fds {
            set_cloexec(*fd, true);
        }
        err
    }

    /// Takes over the state described by `value` (the [`ENV`] variable of this image): every
    /// descriptor named in it is checked to be open and becomes ours (close-on-exec again).
    ///
    /// # Safety
    /// The descriptors named in `value` must be ones the previous image handed over and that
    /// nothing else in this process owns — true only for the value found in [`ENV`] at start.
    pub unsafe fn decode(value: &str) -> io::Result<Handover> {
        let get = |key: &str| -> io::Result<&str> {
            value
                .split(' ')
                .find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
                .ok_or_else(|| bad(&format!("no {key}")))
        };
        let int = |key: &str| -> io::Result<Option<i64>> {
            match get(key)? {
                "-" => Ok(None),
                s => s
                    .parse()
                    .map(Some)
                    .map_err(|_| bad(&format!("{key}={s} is not a number"))),
            }
        };
        let fd = |key: &str| -> io::Result<Option<OwnedFd>> {
            int(key)?.map(|n| take_fd(n as RawFd)).transpose()
        };
        let listener = UnixListener::from(fd("listen")?.ok_or_else(|| bad("listen=-"))?);
        let mut hub = Hub::new(listener)?;
        hub.tty = get("tty")? == "1";
        let clients = get("clients")?;
        for entry in clients.split(',').filter(|e| !e.is_empty()) {
            let bad_entry = || bad(&format!("client {entry:?}"));
            let mut parts = entry.split(':');
            let (Some(n), Some(hello), Some(eof), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(bad_entry());
            };
            let n: RawFd = n.parse().map_err(|_| bad_entry())?;
            let hello = match hello.as_bytes() {
                b"-" => None,
                [h] => Some(*h),
                _ => return Err(bad_entry()),
            };
            let sock = UnixStream::from(take_fd(n)?);
            sock.set_nonblocking(true)?;
            hub.clients.push(Client::new(sock, hello, eof == "1"));
        }
        hub.holder = int("holder")?
            .map(|h| h as usize)
            .filter(|h| *h < hub.clients.len());
        let log = LogWriter::from_fd(fd("log")?.ok_or_else(|| bad("log=-"))?);
        let running = match get("pid") {
            Ok(_) => Some(BoxIo {
                pid: int("pid")?.ok_or_else(|| bad("pid=-"))? as i32,
                pidfd: fd("pidfd")?,
                stdout: fd("out")?,
                stderr: fd("err")?,
                stdin: fd("in")?,
            }),
            Err(_) => None,
        };
        let exit = match get("exit") {
            Ok(_) => int("exit")?.map(|c| c as i32),
            Err(_) => None,
        };
        Ok(Handover {
            hub,
            log,
            running,
            exit,
            backoff_ms: int("backoff")?.unwrap_or(0) as u64,
        })
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("bad supervisor hand-over state: {what}"),
    )
}

fn set_cloexec(fd: RawFd, on: bool) {
    // SAFETY: F_SETFD on a descriptor this process holds.
    unsafe { libc::fcntl(fd, libc::F_SETFD, if on { libc::FD_CLOEXEC } else { 0 }) };
}

/// Takes ownership of handed-over descriptor `n` after checking that it is open.
fn take_fd(n: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_GETFD only inspects the descriptor number.
    if n < 3 || unsafe { libc::fcntl(n, libc::F_GETFD) } < 0 {
        return Err(bad(&format!("descriptor {n} is not open")));
    }
    set_cloexec(n, true);
    // SAFETY: the caller of `decode` guarantees nothing else owns the handed-over descriptors.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket_pair() -> (UnixStream, UnixStream) {
        UnixStream::pair().unwrap()
    }

    #[test]
    fn state_survives_encode_and_decode() {
        let dir = std::env::temp_dir().join(format!("box-handover-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let listener = UnixListener::bind(dir.join("s")).unwrap();
        let mut hub = Hub::new(listener).unwrap();
        let (a, _a_peer) = socket_pair();
        let (b, _b_peer) = socket_pair();
        hub.clients.push(Client::new(a, Some(b'w'), false));
        hub.clients.push(Client::new(b, None, true));
        hub.holder = Some(0);
        hub.tty = true;
        let log = LogWriter::open(&dir.join("log")).unwrap();
        let (r, w) = {
            let mut fds = [0; 2];
            // SAFETY: pipe2 fills the two-element array.
            assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
            // SAFETY: both are new descriptors we own.
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
        };
        let h = Handover {
            hub,
            log,
            running: Some(BoxIo {
                pid: 42,
                pidfd: None,
                stdout: Some(r),
                stderr: None,
                stdin: Some(w),
            }),
            exit: None,
            backoff_ms: 400,
        };
        let text = h.encode();
        // Pretend to be the next image: it owns the same descriptors under the same numbers.
        let fds = h.fds();
        std::mem::forget(h);
        // SAFETY: the descriptors were forgotten above, so the decoded state is their only owner.
        let back = unsafe { Handover::decode(&text) }.unwrap();
        assert_eq!(back.fds(), fds);
        assert_eq!(back.hub.holder, Some(0));
        assert!(back.hub.tty);
        assert_eq!(back.hub.clients[0].hello, Some(b'w'));
        assert_eq!(back.hub.clients[1].hello, None);
        assert!(!back.hub.clients[0].input_closed && back.hub.clients[1].input_closed);
        let io = back.running.as_ref().unwrap();
        assert_eq!(io.pid, 42);
        assert!(io.pidfd.is_none() && io.stderr.is_none());
        assert!(io.stdout.is_some() && io.stdin.is_some());
        assert_eq!(back.exit, None);
        assert_eq!(back.backoff_ms, 400);
        drop(back);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn exit_state_and_bad_input() {
        // SAFETY: no descriptor is named (only `-`), or the decode fails before taking any.
        unsafe {
            assert!(Handover::decode("listen=- log=1 holder=- clients= backoff=0 tty=0").is_err());
            assert!(Handover::decode("log=9999").is_err());
            assert!(
                Handover::decode("listen=9999 log=9998 holder=- clients= backoff=0 tty=0").is_err()
            );
        }
    }
}
