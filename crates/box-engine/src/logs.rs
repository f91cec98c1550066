//! (logs: being written.)
