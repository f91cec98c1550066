//! (spec: being written.)
