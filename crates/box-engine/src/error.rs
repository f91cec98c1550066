//! (error: being written.)
