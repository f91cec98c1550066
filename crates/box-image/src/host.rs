//! (host: being written.)
