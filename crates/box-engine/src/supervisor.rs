//! (supervisor: being written.)
