//! (engine: being written.)
