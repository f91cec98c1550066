//! (digest: being written.)
