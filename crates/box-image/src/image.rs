//! (image: being written.)
