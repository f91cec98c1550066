//! (compression: being written.)
