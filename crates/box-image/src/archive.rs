//! (archive: being written.)
