//! The attach socket and its clients (`<run>/boxes/<id>/attach.sock`, unix stream).
//!
//! The client sends one hello byte: `r` read-only; `w` wants stdin (granted when nobody holds
//! it); `W` takes stdin over (the previous holder is disconnected); `o`/`O` like `w`/`W`, and
//! the end of this client's input (EOF) closes the box's stdin (`box run -i` with piped input);
//! `z` a terminal-size channel: it gets no output, and each 4 bytes it sends (rows, columns: 2
//! bytes big-endian each) resize the box's terminal.
//! Then the supervisor sends frames — 1 byte stream ([`crate::FRAME_ATTACHED`],
//! [`crate::FRAME_STDOUT`], [`crate::FRAME_STDERR`], [`crate::FRAME_EXIT`]), 4 bytes
//! big-endian length, data — and a stdin holder's bytes go to the box's stdin. The first frame,
//! "attached" (one byte: 1 when the box has a terminal, else 0), says the hello was taken:
//! everything the box writes after it reaches the client. The exit frame carries the box's exit code
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
    /// A size channel's bytes short of a whole record.
    partial: Vec<u8>,
}

impl Client {
    /// A client just connected (or handed over with this state).
    pub fn new(sock: UnixStream, hello: Option<u8>, input_closed: bool) -> Client {
        Client {
            sock,
            hello,
            out: Vec::new(),
            input_closed,
            partial: Vec::new(),
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
    /// A size channel asked for this terminal size (the last whole record it sent).
    Resize {
        /// Rows.
        rows: u16,
        /// Columns.
        cols: u16,
    },
    /// The connection failed: drop the client.
    Gone,
}

/// The hello of a terminal-size channel.
pub const HELLO_RESIZE: u8 = b'z';

/// The attach socket and its clients: output broadcast, one stdin holder.
#[derive(Debug)]
pub struct Hub {
    /// The attach socket (non-blocking).
    pub listener: UnixListener,
    /// The connected clients.
    pub clients: Vec<Client>,
    /// Index into `clients` of the stdin holder.
    pub holder: Option<usize>,
    /// The box (or session) has a terminal: told to each client in its "attached" frame.
    pub tty: bool,
}

impl Hub {
    /// A hub with no clients yet on `listener` (made non-blocking here).
    pub fn new(listener: UnixListener) -> io::Result<Hub> {
        listener.set_nonblocking(true)?;
        Ok(Hub {
            listener,
            clients: Vec::new(),
            holder: None,
            tty: false,
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
        let watching = |c: &&mut Client| c.hello.is_some_and(|h| h != HELLO_RESIZE);
        for c in self.clients.iter_mut().filter(watching) {
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
        let c = &mut self.clients[i];
        if c.hello == Some(HELLO_RESIZE) {
            c.partial.extend_from_slice(&buf[..n]);
            let whole = c.partial.len() / 4 * 4;
            if whole == 0 {
                return ClientInput::Nothing;
            }
            let r = &c.partial[whole - 4..whole];
            let input = ClientInput::Resize {
                rows: u16::from_be_bytes([r[0], r[1]]),
                cols: u16::from_be_bytes([r[2], r[3]]),
            };
            c.partial.drain(..whole);
            return input;
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
        let tty = u8::from(self.tty);
        self.clients[i]
            .out
            .extend_from_slice(&[FRAME_ATTACHED, 0, 0, 0, 1, tty]);
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

    /// Keeps accepting (and dropping input of) clients for `d`, or until `stop` says so: the
    /// back-off between restarts, cut short by a stop request.
    pub fn serve_until(&mut self, d: Duration, mut stop: impl FnMut() -> bool) {
        let end = Instant::now() + d;
        while Instant::now() < end && !stop() {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn hub_with_client() -> (Hub, UnixStream, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "box-hub-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let _ = std::fs::remove_file(dir.join("s"));
        let mut hub = Hub::new(UnixListener::bind(dir.join("s")).unwrap()).unwrap();
        let (ours, theirs) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        hub.clients.push(Client::new(ours, None, false));
        (hub, theirs, dir)
    }

    fn read_until_input(hub: &mut Hub) -> ClientInput {
        let mut buf = [0u8; 64];
        for _ in 0..100 {
            match hub.read_client(0, &mut buf) {
                ClientInput::Nothing => std::thread::sleep(Duration::from_millis(5)),
                other => return other,
            }
        }
        ClientInput::Nothing
    }

    #[test]
    fn size_channel_gets_resizes_and_no_output() {
        let (mut hub, mut peer, dir) = hub_with_client();
        peer.write_all(&[HELLO_RESIZE, 0, 30, 0, 100, 0]).unwrap();
        assert_eq!(
            read_until_input(&mut hub),
            ClientInput::Resize {
                rows: 30,
                cols: 100
            }
        );
        // The rest of a record comes later.
        peer.write_all(&[40, 0, 120]).unwrap();
        assert_eq!(
            read_until_input(&mut hub),
            ClientInput::Resize {
                rows: 40,
                cols: 120
            }
        );
        hub.broadcast(crate::FRAME_STDOUT, b"not for a size channel");
        hub.flush();
        peer.set_nonblocking(true).unwrap();
        let mut got = [0u8; 64];
        let n = peer.read(&mut got).unwrap();
        assert_eq!(&got[..n], &[FRAME_ATTACHED, 0, 0, 0, 1, 0], "only the ack");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn watcher_keeps_receiving_after_its_input_ends() {
        let (mut hub, peer, dir) = hub_with_client();
        (&peer).write_all(b"r").unwrap();
        peer.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(
            read_until_input(&mut hub),
            ClientInput::Eof {
                closes_stdin: false
            }
        );
        assert!(hub.clients[0].input_closed);
        hub.broadcast(crate::FRAME_STDOUT, b"hi");
        let mut all = Vec::new();
        hub.clients.clear();
        (&peer).read_to_end(&mut all).unwrap();
        assert_eq!(
            all,
            [FRAME_ATTACHED, 0, 0, 0, 1, 0, 1, 0, 0, 0, 2, b'h', b'i']
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
