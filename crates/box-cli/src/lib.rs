//! Box command-line fronts: `box` (docker's verbs over box-image and, later, the engine) and
//! `box-runc` (runc's command line over box-runtime).

pub mod cmd;
pub mod runc;
pub mod table;
