//! The handshake between the runtime process and a box's init: small messages over a
//! SOCK_SEQPACKET socketpair (one message per datagram, EOF when the peer dies).

use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{socketpair, AddressFamily, MsgFlags, SockFlag, SockType};

use crate::error::{Context, Error, Result};

/// One step of the create handshake.
#[derive(Debug, PartialEq, Eq)]
pub enum Message {
    /// Runtime → init: id maps written, cgroup joined; go on.
    Go,
    /// Init → runtime: mounts are done, run the createRuntime/prestart hooks now.
    RunHooks,
    /// Init → runtime: the box is created and waits for start.
    Created,
    /// Runtime → init (`run` only): start now, no exec fifo needed.
    Start,
    /// Either way: setup failed, with the reason.
    Failed(String),
    /// Exec's intermediate process → runtime: the host pid of the process it cloned.
    Pid(i32),
}

const TAG_GO: u8 = 1;
const TAG_RUN_HOOKS: u8 = 2;
const TAG_CREATED: u8 = 3;
const TAG_START: u8 = 4;
const TAG_FAILED: u8 = 5;
const TAG_PID: u8 = 6;
const MAX_MESSAGE: usize = 4096;

/// One end of the handshake socket.
#[derive(Debug)]
pub struct Channel {
    fd: OwnedFd,
}

/// Makes a connected pair: (runtime end, init end). Both close on exec.
pub fn channel_pair() -> Result<(Channel, Channel)> {
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .ctx(|| "cannot create the handshake socketpair")?;
    Ok((Channel { fd: a }, Channel { fd: b }))
}

impl Channel {
    /// Sends one message.
    pub fn send(&self, msg: &Message) -> Result<()> {
        let mut buf = [0u8; MAX_MESSAGE];
        let len = match msg {
            Message::Go => encode_tag(&mut buf, TAG_GO),
            Message::RunHooks => encode_tag(&mut buf, TAG_RUN_HOOKS),
            Message::Created => encode_tag(&mut buf, TAG_CREATED),
            Message::Start => encode_tag(&mut buf, TAG_START),
            Message::Pid(pid) => {
                buf[0] = TAG_PID;
                buf[1..5].copy_from_slice(&pid.to_le_bytes());
                5
            }
            Message::Failed(why) => {
                buf[0] = TAG_FAILED;
                let bytes = why.as_bytes();
                let n = bytes.len().min(MAX_MESSAGE - 1);
                buf[1..=n].copy_from_slice(&bytes[..n]);
                n + 1
            }
        };
        // MSG_NOSIGNAL: a peer that died must give EPIPE, not kill us with SIGPIPE.
        nix::sys::socket::send(self.fd.as_raw_fd(), &buf[..len], MsgFlags::MSG_NOSIGNAL)
            .ctx(|| "cannot send on the handshake socket")?;
        Ok(())
    }

    /// Receives one message; `None` when the peer closed its end (it exited).
    pub fn recv(&self) -> Result<Option<Message>> {
        self.recv_with(MsgFlags::empty())
    }

    /// The reason the peer gave for failing, if one is already waiting (never blocks).
    pub fn pending_failure(&self) -> Option<String> {
        match self.recv_with(MsgFlags::MSG_DONTWAIT) {
            Ok(Some(Message::Failed(why))) => Some(why),
            _ => None,
        }
    }

    fn recv_with(&self, flags: MsgFlags) -> Result<Option<Message>> {
        let mut buf = [0u8; MAX_MESSAGE];
        let mut reset_seen = false;
        let n = loop {
            match nix::sys::socket::recv(self.fd.as_raw_fd(), &mut buf, flags) {
                Err(nix::errno::Errno::EINTR) => continue,
                // A peer that exits with our last message unread resets the connection, and
                // the kernel reports that before the messages it sent first (its "failed, and
                // why"): the error is reported once, so read on for what is queued.
                Err(nix::errno::Errno::ECONNRESET) if !reset_seen => reset_seen = true,
                other => break other.ctx(|| "cannot read the handshake socket")?,
            }
        };
        if n == 0 {
            return Ok(None);
        }
        let msg = match buf[0] {
            TAG_GO => Message::Go,
            TAG_RUN_HOOKS => Message::RunHooks,
            TAG_CREATED => Message::Created,
            TAG_START => Message::Start,
            TAG_FAILED => Message::Failed(String::from_utf8_lossy(&buf[1..n]).into_owned()),
            TAG_PID if n == 5 => Message::Pid(i32::from_le_bytes([buf[1], buf[2], buf[3], buf[4]])),
            other => {
                return Err(Error::Init(format!(
                    "unexpected handshake message tag {other}"
                )))
            }
        };
        Ok(Some(msg))
    }

    /// Waits for `expected`; a failure message or EOF becomes an error.
    pub fn expect(&self, expected: Message) -> Result<()> {
        match self.recv()? {
            Some(m) if m == expected => Ok(()),
            Some(Message::Failed(why)) => Err(Error::Init(why)),
            Some(other) => Err(Error::Init(format!(
                "handshake out of order: expected {expected:?}, got {other:?}"
            ))),
            None => Err(Error::Init(format!(
                "handshake peer exited while waiting for {expected:?}"
            ))),
        }
    }

    /// The raw descriptor (for poll).
    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }
}

fn encode_tag(buf: &mut [u8], tag: u8) -> usize {
    buf[0] = tag;
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_that_fails_and_exits_with_our_message_unread_still_tells_why() {
        let (runtime, init) = channel_pair().expect("socketpair");
        runtime.send(&Message::Go).unwrap();
        init.send(&Message::Failed("no such file".into())).unwrap();
        drop(init); // closed with the Go unread: the runtime's side sees a reset first
        match runtime.recv().unwrap() {
            Some(Message::Failed(why)) => assert_eq!(why, "no such file"),
            other => panic!("expected the failure, got {other:?}"),
        }
        assert!(matches!(runtime.recv(), Ok(None)));
    }

    #[test]
    fn messages_round_trip_over_the_pair() {
        let (a, b) = channel_pair().expect("socketpair");
        for msg in [
            Message::Go,
            Message::RunHooks,
            Message::Created,
            Message::Start,
            Message::Failed("mount /proc: EPERM".into()),
            Message::Pid(4242),
        ] {
            a.send(&msg).expect("send");
            assert_eq!(b.recv().expect("recv"), Some(msg));
        }
        drop(a);
        assert_eq!(b.recv().expect("recv after close"), None);
    }

    #[test]
    fn expect_turns_failure_into_error() {
        let (a, b) = channel_pair().expect("socketpair");
        a.send(&Message::Failed("no such file".into()))
            .expect("send");
        let err = b.expect(Message::Created).expect_err("must fail");
        assert!(err.to_string().contains("no such file"));
    }
}
