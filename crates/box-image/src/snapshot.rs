//! (snapshot: being written.)
