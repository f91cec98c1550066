//! box-supervisor: what a box's supervisor does while the box runs, kept apart from everything
//! else so that the long-lived process is small.
//!
//! A supervisor lives in two images of one process. The *full* image (`box __supervise`, in
//! box-engine) prepares the box (mount namespace, snapshot, database) and creates and starts
//! it; it then re-executes itself as the *lean* image (the `box-supervisor` binary, whose code
//! is this crate and little else), handing over its descriptors in an environment variable
//! ([`handover`]). The lean image only moves bytes ([`pump`]): the box's output to the log
//! ([`log`]) and to the attach clients ([`hub`]), a client's input to the box. When the box has
//! ended, the lean image hands everything back to the full image, which records the exit,
//! cleans up and applies the restart policy (and hands over again on a restart).

pub mod handover;
pub mod hub;
pub mod lean;
pub mod log;
pub mod pump;

/// Frame stream ids on the attach socket.
pub const FRAME_STDOUT: u8 = 1;
/// See [`FRAME_STDOUT`].
pub const FRAME_STDERR: u8 = 2;
/// See [`FRAME_STDOUT`]: the last frame, 4 bytes of exit code.
pub const FRAME_EXIT: u8 = 3;
/// See [`FRAME_STDOUT`]: the first frame, one byte (1: the box has a terminal): the hello is
/// taken, output from here on reaches this client.
pub const FRAME_ATTACHED: u8 = 4;
/// A client further behind than this many bytes of output is disconnected.
pub const CLIENT_BACKLOG: usize = 4 << 20;
