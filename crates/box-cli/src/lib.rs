//! Box command-line fronts: `box-runc` (runc's CLI over box-runtime); `box` comes with the engine.

pub mod runc;
