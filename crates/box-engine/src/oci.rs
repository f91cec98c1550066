//! (oci: being written.)
