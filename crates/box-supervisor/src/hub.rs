//! The attach socket and its clients (`<run>/boxes/<id>/attach.sock`, unix stream).
//!
//! The client sends one hello byte: `r` read-only; `w` wants stdin (granted when nobody holds
//! it); `W` takes stdin over (the previous holder is disconnected); `o`/`O` like `w`/`W`, and
//! the end of this client's input (EOF) closes the box's stdin (`box run -i` with piped input).
//! Then the supervisor sends frames — 1 byte stream ([`crate::FRAME_ATTACHED`],
//! [`crate::FRAME_STDOUT`], [`crate::FRAME_STDERR`], [`crate::FRAME_EXIT`]), 4 bytes
//! big-endian length, data — and a stdin holder's bytes go to the box's stdin. The first frame,
//! "attached" (empty), says the hello was taken: everything the box writes after it reaches
//! the client. The exit frame carries the box's exit code
//! (4 bytes BE) and is the last one; the socket closes after it. A client that falls more than
//! [`crate::CLIENT_BACKLOG`] bytes behind is disconnected. Detach keys are the client's
//! business (it just disconnects).

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use crate::{CLIENT_BACKLOG, FRAME_ATTACHED, FRAME_EXIT};

/// One attach client.
#[derive(Debug)]
pub struct Client {
    /// The connection (non-blocking).
    pub sock: UnixStream,
    /// Its hello byte, once received.
    pub hello: Option<u8>,
    /// Frames not yet written to it.
    pub out: Vec<u8>,
    /// It has shut down its sending side (it still receives output).
    pub input_closed: bool,
}

impl Client {
    /// A client just connected (or handed over with this state).
    pub fn new(sock: UnixStream, hello: Option<u8>, input_closed: bool) -> Client {
        Client {
            sock,
            hello,
            out: Vec::new(),
            input_closed,
        }
    }
}

/// What reading from a client gave.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientInput {
    /// Nothing for the box (a hello, or bytes from a client not holding stdin).
    Nothing,
    /// This many bytes at the start of the buffer go to the box's stdin.
    Stdin(usize),
    /// The client has shut down its sending side; `closes_stdin` when that ends the box's
    /// stdin (an `o`/`O` holder).
    Eof {
        /// Whether the box's stdin closes with it.
        closes_stdin: bool,
    },
    /// The connection failed: drop the client.
    Gone,
}

/// The attach socket and its clients: output broadcast, one stdin holder.
#[derive(Debug)]
pub struct Hub {
    /// The attach socket (non-blocking).
    pub listener: UnixListener,
    /// The connected clients.
    pub clients: Vec<Client>,
    /// Index into `clients` of the stdin holder.
    pub holder: Option<usize>,
}

impl Hub {
    /// A hub with no clients yet on `listener` (made non-blocking here).
    pub fn new(listener: UnixListener) -> io::Result<Hub> {
        listener.set_nonblocking(true)?;
        Ok(Hub {
            listener,
            clients: Vec::new(),
            holder: None,
        })
    }

    /// Accepts every pending connection.
    pub fn accept(&mut self) {
        while let Ok((sock, _)) = self.listener.accept() {
            if sock.set_nonblocking(true).is_ok() {
                self.clients.push(Client::new(sock, None, false));
            }
        }
    }

    /// Queues one frame for every client that has said hello, and writes what they take.
    pub fn broadcast(&mut self, stream: u8, data: &[u8]) {
        let len = (data.len() as u32).to_be_bytes();
        for c in self.clients.iter_mut().filter(|c| c.hello.is_some()) {
            c.out.push(stream);
            c.out.extend_from_slice(&len);
            c.out.extend_from_slice(data);
        }
        self.flush();
    }

    /// Writes what each client can take; drops those gone or too far behind.
    pub fn flush(&mut self) {
        let mut i = 0;
        while i < self.clients.len() {
            let c = &mut self.clients[i];
            let mut dead = false;
            while !c.out.is_empty() {
                match c.sock.write(&c.out) {
                    Ok(0) => {
                        dead = true;
                        break;
                    }
                    Ok(n) => {
                        c.out.drain(..n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        dead = true;
                        break;
                    }
                }
            }
            if dead || c.out.len() > CLIENT_BACKLOG {
                self.remove(i);
            } else {
                i += 1;
            }
        }
    }

    /// Whether some client still has output queued.
    pub fn has_queued_output(&self) -> bool {
        self.clients.iter().any(|c| !c.out.is_empty())
    }

    /// Drops client `i` (the last one takes its index).
    pub fn remove(&mut self, i: usize) {
        self.clients.swap_remove(i);
        let last = self.clients.len();
        self.holder = match self.holder {
            Some(h) if h == i => None,
            Some(h) if h == last => Some(i),
            other => other,
        };
    }

    /// Reads from client `i`: its hello, stdin bytes (when it holds stdin), or its end.
    pub fn read_client(&mut self, i: usize, buf: &mut [u8]) -> ClientInput {
        let c = &mut self.clients[i];
        let n = match c.sock.read(buf) {
            Ok(0) => {
                c.input_closed = true;
                let closes_stdin = self.holder == Some(i) && matches!(c.hello, Some(b'o' | b'O'));
                return ClientInput::Eof { closes_stdin };
            }
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                return ClientInput::Nothing
            }
            Err(_) => return ClientInput::Gone,
        };
        let mut n = n;
        if c.hello.is_none() {
            self.set_hello(i, buf[0]);
            buf.copy_within(1..n, 0);
            n -= 1;
        }
        if self.holder == Some(i) && n > 0 {
            ClientInput::Stdin(n)
        } else {
            ClientInput::Nothing
        }
    }

    /// Records client `i`'s hello: `w`/`o` take stdin when it is free, `W`/`O` take it over.
    pub fn set_hello(&mut self, i: usize, h: u8) {
        self.clients[i].hello = Some(h);
        self.clients[i]
            .out
            .extend_from_slice(&[FRAME_ATTACHED, 0, 0, 0, 0]);
        match h {
            b'w' | b'o' if self.holder.is_none() => self.holder = Some(i),
            b'W' | b'O' => {
                if let Some(old) = self.holder {
                    if old != i {
                        let _ = self.clients[old].sock.shutdown(std::net::Shutdown::Both);
                    }
                }
                self.holder = Some(i);
            }
            _ => {}
        }
    }

    /// Waits for the first client and reads only its hello byte (whatever follows is stdin,
    /// left in the socket for the pump).
    pub fn wait_first_client(&mut self, limit: Duration) -> io::Result<()> {
        let end = Instant::now() + limit;
        loop {
            self.accept();
            if !self.clients.is_empty() {
                break;
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "nobody attached to the box in time",
                ));
            }
            let mut pfd = libc::pollfd {
                fd: self.listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(1000) as libc::c_int) };
        }
        let sock = &mut self.clients[0].sock;
        sock.set_nonblocking(false)?;
        sock.set_read_timeout(Some(end.saturating_duration_since(Instant::now())))?;
        let mut hello = [0u8; 1];
        let got = sock.read_exact(&mut hello);
        sock.set_read_timeout(None)?;
        sock.set_nonblocking(true)?;
        got.map_err(|e| {
            io::Error::new(e.kind(), format!("the attached client sent no hello: {e}"))
        })?;
        self.set_hello(0, hello[0]);
        self.flush();
        Ok(())
    }

    /// Keeps accepting (and dropping input of) clients for `d`: the back-off between restarts.
    pub fn serve_for(&mut self, d: Duration) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            self.accept();
            self.flush();
            std::thread::sleep(Duration::from_millis(20).min(end - Instant::now()));
        }
    }

    /// Writes queued output for up to `limit` (blocking briefly); true when nothing is left.
    pub fn drain(&mut self, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        self.flush();
        while self.has_queued_output() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(5));
            self.flush();
        }
        !self.has_queued_output()
    }

    /// Sends every client the exit frame (best effort, up to a second). The connections stay
    /// open until the hub is dropped: the supervisor drops it once the end is recorded, so a
    /// client reading on to the end of its stream knows the box's final state is in place.
    pub fn finish(&mut self, code: i32) {
        self.accept();
        self.broadcast(FRAME_EXIT, &code.to_be_bytes());
        self.drain(Duration::from_secs(1));
    }
}
