//! (registry: being written.)
