//! (content: being written.)
