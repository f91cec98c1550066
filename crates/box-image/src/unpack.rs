//! (unpack: being written.)
