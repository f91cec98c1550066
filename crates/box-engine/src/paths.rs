//! (paths: being written.)
