//! (reference: being written.)
