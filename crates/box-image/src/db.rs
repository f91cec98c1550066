//! (db: being written.)
