//! (layers: being written.)
